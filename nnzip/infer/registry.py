"""The table of supported Keras layer classes and the small types their builders share.

A builder turns one layer config into a :class:`LayerImpl`: how to compute the layer's
output from its inputs and weights, its output shape, and the names and shapes of the
weights it expects. Shapes here never include the batch axis; unknown sizes are None.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nnzip.infer.activations import Activation, get_activation
from nnzip.infer.errors import UnsupportedModelError

Shape = tuple[int | None, ...]
Forward = Callable[[list[np.ndarray], list[np.ndarray]], np.ndarray]


def _no_weights(in_shapes: list[Shape]) -> list[Shape]:
    """Weight shapes of a layer without weights: none."""
    return []


@dataclass(frozen=True)
class LayerImpl:
    """How to run one configured layer: forward(inputs, weights) -> output, plus shape rules."""

    forward: Forward
    output_shape: Callable[[list[Shape]], Shape]
    weight_names: tuple[str, ...] = ()
    weight_shapes: Callable[[list[Shape]], list[Shape | None]] = _no_weights  # None: not checked
    min_inputs: int = 1
    max_inputs: int | None = 1
    input_rank: int | None = None  # required rank of the input (without the batch axis)
    min_rank: int = 0
    non_trainable: tuple[str, ...] = ()  # weights Keras never trains (e.g. moving statistics)


@dataclass(frozen=True)
class LayerContext:
    """What a builder knows besides the config: the layer's name, class and config flavour."""

    name: str
    class_name: str
    flavour: str
    config: dict = field(repr=False)

    def unsupported(self, what: str) -> UnsupportedModelError:
        """An error naming this layer, its class and the unsupported option ``what``."""
        return UnsupportedModelError(f"{self.class_name} layer {self.name!r}: {what} is not supported")

    def get(self, key: str, default: Any = None) -> Any:
        """Config value, with ``default`` also standing in for an explicit null."""
        value = self.config.get(key)
        return default if value is None else value

    def activation(self, key: str = "activation") -> Activation:
        """The numpy function for the activation named by config ``key``."""
        fn = get_activation(self.config.get(key), self.flavour)
        if fn is None:
            raise self.unsupported(f"activation {self.config.get(key)!r}")
        return fn

    def require_channels_last(self) -> None:
        """Reject layers configured for channels_first data."""
        fmt = self.config.get("data_format")
        if fmt not in (None, "channels_last"):
            raise self.unsupported(f"data_format={fmt!r}")

    def ints(self, key: str, rank: int, default: Any = None, minimum: int = 1) -> tuple[int, ...]:
        """An int or list-of-ints config value as a tuple of ``rank`` ints, each >= ``minimum``."""
        value = self.get(key, default)
        if _is_int(value):
            value = [value] * rank
        if (isinstance(value, Sequence) and len(value) == rank
                and all(_is_int(v) and v >= minimum for v in value)):
            return tuple(int(v) for v in value)
        raise self.unsupported(f"{key}={value!r}")

    def number(self, key: str, default: Any = None, optional: bool = False) -> float | None:
        """A real-number config value (None allowed only if ``optional``)."""
        value = self.get(key, default)
        if value is None and optional:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
            return float(value)
        raise self.unsupported(f"{key}={value!r}")

    def positive_int(self, key: str, default: Any = None) -> int:
        """A config value that must be a positive int."""
        return self.ints(key, 1, default)[0]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


Builder = Callable[[LayerContext], LayerImpl]

BUILDERS: dict[str, Builder] = {}
"""Keras layer class name -> builder; filled by the layer modules via :func:`register`."""


def register(*class_names: str) -> Callable[[Builder], Builder]:
    """Decorator registering a builder for the given Keras layer class names."""
    def wrap(builder: Builder) -> Builder:
        for class_name in class_names:
            BUILDERS[class_name] = builder
        return builder
    return wrap


def build_impl(ctx: LayerContext) -> LayerImpl:
    """Build the implementation of one layer, or raise UnsupportedModelError naming it."""
    builder = BUILDERS.get(ctx.class_name)
    if builder is None:
        raise UnsupportedModelError(f"unsupported layer class {ctx.class_name!r} (layer {ctx.name!r})")
    _check_dtype_policy(ctx)
    for key in ("lora_rank", "quantization_config"):
        if ctx.config.get(key):
            raise ctx.unsupported(key)
    try:
        return builder(ctx)
    except UnsupportedModelError:
        raise
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise UnsupportedModelError(
            f"{ctx.class_name} layer {ctx.name!r}: invalid config ({one_line(exc)})"
        ) from None


def one_line(exc: BaseException) -> str:
    """An exception as ``Type: message`` on one line."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _check_dtype_policy(ctx: LayerContext) -> None:
    dtype = ctx.config.get("dtype")
    name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    class_name = dtype.get("class_name", "") if isinstance(dtype, dict) else ""
    if "Quantized" in class_name or (isinstance(name, str) and name.startswith(("int", "float8", "uint"))):
        raise ctx.unsupported(f"quantized dtype policy {name!r}")
