"""The public face of numpy inference: :func:`build_model` and :class:`NumpyModel`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nnzip.errors import NnzipError
from nnzip.infer.config import KERAS2, KERAS3, detect_flavour, load_config, parse_model
from nnzip.infer.errors import DataShapeError, UnsupportedModelError
from nnzip.infer.graph import GET_WEIGHTS, WEIGHT_ORDERS, Graph
from nnzip.infer.registry import Shape, one_line


def build_model(
    model_config: dict | str,
    layer_weights: Mapping[str, Any],
    keras_version: str | None = None,
    weight_order: str = GET_WEIGHTS,
) -> "NumpyModel":
    """Build a numpy model from a Keras ``model_config`` and per-layer weights.

    model_config: the Keras ``model_config`` JSON (the root attribute ``model_config`` of a
    legacy .h5 file, i.e. ``{"class_name": "Sequential"|"Functional"|"Model", "config": {...}}``),
    as dict or JSON string; Keras 2 / tf.keras and Keras 3 forms are both accepted.
    layer_weights: layer name -> that layer's weight arrays in Keras ``layer.get_weights()`` order
    (e.g. Dense: [kernel, bias]; BatchNormalization: [gamma, beta, moving_mean, moving_variance]
    minus those disabled by center/scale). Layers without weights may be left out. A nested
    model (a model used as a layer) takes a flat list or a dict inner layer -> arrays.
    keras_version: the Keras version that wrote the config (e.g. the ``keras_version``
    attribute of the .h5 file); only the major version is used, to pick semantics that
    changed between Keras 2 and 3 (``hard_sigmoid``). Guessed from the config when None.
    weight_order: order of a nested model's flat list: ``"get_weights"`` (``model.get_weights()``,
    layer by layer) or ``"h5"`` (a legacy .h5 group's ``weight_names``: trainable weights of
    all inner layers first, then moving statistics etc.). A list that only fits the other
    order is taken in that order. Only nested models are affected.

    Raises UnsupportedModelError for layers or options that are not implemented and
    ModelWeightsError when the weights do not fit the config.
    """
    if weight_order not in WEIGHT_ORDERS:
        raise ValueError(f"weight_order must be one of {WEIGHT_ORDERS}, got {weight_order!r}")
    config = load_config(model_config)
    flavour = _flavour(keras_version) or detect_flavour(config)
    try:
        graph = Graph(parse_model(config), flavour)
    except NnzipError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError) as exc:
        # the config is untrusted JSON: a shape we did not foresee is a bad input, not a crash
        raise UnsupportedModelError(f"malformed model_config ({one_line(exc)})") from None
    graph.bind(layer_weights, weight_order)
    return NumpyModel(graph)


def _flavour(keras_version: str | None) -> str | None:
    if not keras_version:
        return None
    major = str(keras_version).strip().split(".")[0]
    return KERAS2 if major in ("1", "2") else KERAS3


def _with_batch(shape: Shape) -> tuple[int | None, ...]:
    return (None,) + tuple(shape)


class NumpyModel:
    """A Keras model evaluated with numpy in float32, in batches.

    Built by :func:`build_model`. Inputs are cast to float32; models with several inputs
    take a list (in input order) or a dict keyed by input layer name.
    """

    def __init__(self, graph: Graph):
        """Wrap a graph whose weights are already bound (use :func:`build_model`)."""
        self._graph = graph

    @property
    def input_shape(self) -> tuple | list[tuple]:
        """Input shape with None for the batch axis (a list of shapes for multi-input models)."""
        shapes = [_with_batch(s) for s in self._graph.input_shapes]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self) -> tuple | list[tuple]:
        """Output shape with None for the batch axis (a list of shapes for multi-output models)."""
        shapes = [_with_batch(s) for s in self._graph.output_shapes]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def input_names(self) -> list[str]:
        """Names of the input layers, in input order."""
        return self._graph.input_names

    @property
    def layer_names(self) -> list[str]:
        """Names of the model's layers in config order (input layers excluded)."""
        return self._graph.layer_names()

    def weight_layout(self, order: str = GET_WEIGHTS) -> dict[str, list[str]]:
        """Layer name -> names of its expected weights in order, e.g. ``["kernel", "bias"]``.

        Every layer is listed, weightless ones with an empty list; a nested model lists
        its inner weights as ``inner_layer/weight`` in ``order`` (see :func:`build_model`).
        """
        if order not in WEIGHT_ORDERS:
            raise ValueError(f"order must be one of {WEIGHT_ORDERS}, got {order!r}")
        return self._graph.weight_layout(order)

    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray | list[np.ndarray]:
        """Model output for ``x`` (a list of outputs for multi-output models)."""
        inputs = self._inputs(x)
        parts = [self._graph.run(batch) for batch in _batches(inputs, batch_size)]
        outputs = [np.concatenate([p[i] for p in parts]) for i in range(len(self._graph.outputs))]
        return outputs[0] if len(outputs) == 1 else outputs

    def layer_outputs(self, x: Any, layers: Sequence[str] | None = None,
                      batch_size: int = 256) -> dict[str, np.ndarray]:
        """Output of every layer (or of the named ``layers``) for ``x``, for per-layer error reports.

        Keys are layer names; a layer called more than once also reports ``name:i`` for its
        i-th call, and layers inside a nested model are reported as ``outer/inner``.
        """
        known = self._graph.labels()
        wanted = set(known) if layers is None else set(layers)
        missing = sorted(wanted - set(known))
        if missing:
            raise KeyError(f"no such layer output: {', '.join(missing[:5])}")
        parts: dict[str, list[Any]] = {}

        def record(label: str, value: Any) -> None:
            if label in wanted:
                parts.setdefault(label, []).append(value)

        for batch in _batches(self._inputs(x), batch_size):
            self._graph.run(batch, record)
        order = [label for label in known if label in wanted]
        return {label: _concat(parts[label]) for label in order}

    def layer_inputs(self, x: Any, layers: Sequence[str], batch_size: int = 256) -> dict[str, np.ndarray]:
        """The input of each named top-level, single-input layer for ``x`` (for calibration).

        Keys are the requested labels (a layer name, or ``name:i`` for its i-th call).
        """
        wanted = set(layers)
        missing = sorted(wanted - set(self._graph.labels()))
        if missing:
            raise KeyError(f"no such layer: {', '.join(missing[:5])}")
        parts: dict[str, list[np.ndarray]] = {}

        def record(label: str, args: list[np.ndarray]) -> None:
            if label in wanted:
                if len(args) != 1:
                    raise UnsupportedModelError(f"layer {label!r} has {len(args)} inputs; calibration needs one")
                parts.setdefault(label, []).append(args[0])

        for batch in _batches(self._inputs(x), batch_size):
            self._graph.run(batch, record_inputs=record)
        return {label: np.concatenate(parts[label]) for label in layers if label in parts}

    def forward_cache(self, x: Any, layers: Sequence[str], batch_size: int = 256,
                      max_bytes: int | None = None) -> "ForwardCache":
        """Run ``x`` once and keep what :meth:`predict_changed` needs to rerun only the part of the
        model that a change to one or more of *layers* can alter.

        For each layer, the values its downstream part reads from upstream (its input, and
        what side branches feed in) are kept per batch.  Layers whose kept values would pass
        *max_bytes* in total are left out (a change to them reruns the whole model).
        """
        graph = self._graph
        inputs = self._inputs(x)
        count = inputs[0].shape[0]
        keys: set = set()
        covered = set()
        for layer in dict.fromkeys(layers):
            if layer not in graph.layers:
                continue
            more = keys | graph.frontier(graph.dependent_nodes({layer}))
            if max_bytes is not None and count * sum(graph.value_bytes(k) for k in more) > max_bytes:
                continue
            keys, covered = more, covered | {layer}
        batches = []
        for batch in _batches(inputs, batch_size):
            capture = dict.fromkeys(keys)
            graph.run(batch, capture=capture)
            batches.append(capture)
        return ForwardCache(frozenset(covered), batches)

    def predict_changed(self, cache: "ForwardCache", layers: set[str]) -> np.ndarray | list[np.ndarray]:
        """Model output for the inputs *cache* was made from, when only *layers* differ from the
        weights it was made with: only their nodes and those downstream run, batch by batch as
        :meth:`predict` does, so the result is the same to the bit."""
        if not cache.covers(layers):
            raise ValueError(f"the forward cache does not cover layers {sorted(set(layers) - cache.layers)}")
        nodes = self._graph.dependent_nodes(set(layers))
        parts = [self._graph.run_nodes(nodes, batch) for batch in cache.batches]
        outputs = [np.concatenate([p[i] for p in parts]) for i in range(len(self._graph.outputs))]
        return outputs[0] if len(outputs) == 1 else outputs

    def _inputs(self, x: Any) -> list[np.ndarray]:
        names, shapes = self._graph.input_names, self._graph.input_shapes
        if isinstance(x, Mapping):
            missing = [n for n in names if n not in x]
            if missing:
                raise DataShapeError(f"missing model inputs: {', '.join(missing)}")
            arrays = [x[n] for n in names]
        elif len(names) > 1 or (isinstance(x, (list, tuple)) and len(x) == 1
                                and isinstance(x[0], np.ndarray)):
            arrays = list(x)
        else:
            arrays = [x]
        if len(arrays) != len(names):
            raise DataShapeError(f"model takes {len(names)} inputs, got {len(arrays)}")
        arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
        for name, array, shape in zip(names, arrays, shapes):
            if array.ndim != len(shape) + 1 or any(
                    d is not None and d != a for d, a in zip(shape, array.shape[1:])):
                raise DataShapeError(f"input {name!r} has shape {array.shape}, expected {_with_batch(shape)}")
        if len({a.shape[0] for a in arrays}) > 1:
            raise DataShapeError("model inputs have different batch sizes")
        return arrays


def _batches(inputs: list[np.ndarray], batch_size: int):
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = inputs[0].shape[0]
    for start in range(0, max(n, 1), batch_size):
        yield [a[start:start + batch_size] for a in inputs]


def _concat(values: list[Any]) -> Any:
    if isinstance(values[0], list):  # nested multi-output model: a list of outputs
        return [np.concatenate([v[i] for v in values]) for i in range(len(values[0]))]
    return np.concatenate(values)


class ForwardCache:
    """Per-batch values of one forward pass, kept so that a weight change reruns only downstream layers.

    Made by :meth:`NumpyModel.forward_cache`; valid for the inputs and the weights it was made
    with, for changes to the layers in :attr:`layers`.
    """

    def __init__(self, layers: frozenset[str], batches: list[dict]):
        self.layers, self.batches = layers, batches

    def covers(self, layers: set[str]) -> bool:
        """Whether a change to *layers* can be rerun from this cache (else run the whole model)."""
        return bool(layers) and set(layers) <= self.layers

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached arrays."""
        return sum(a.nbytes for batch in self.batches for outs in batch.values() for a in outs)
