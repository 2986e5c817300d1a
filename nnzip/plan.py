"""Chooses each tensor's representation from user settings (flags, per-layer overrides, plan files).

A :class:`Settings` is what a user can ask for one tensor (``bits=4``,
``prune=0.8``, ``rank=32`` …).  Global flags give the default settings;
``--layer NAME:key=value,…`` and a JSON plan file (``spec/plan.md``) override
them for tensors whose name matches.
:func:`tensor_plan` turns the settings for one tensor into a
:class:`nnzip.pipeline.TensorPlan` (which stages, which parameters).

Small tensors (biases, normalisation statistics: fewer than
:data:`MIN_LOSSY_ELEMENTS` elements or fewer than two dimensions) and
non-float tensors are always stored losslessly: they are a sliver of the file
and a model is far more sensitive to them.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .errors import ConfigError
from .pipeline import TensorPlan

#: Tensors with fewer elements than this are kept lossless whatever the settings.
MIN_LOSSY_ELEMENTS = 1024


@dataclass(frozen=True)
class Settings:
    """What to do with one tensor; ``None`` means "not asked for"."""

    lossless: bool = False
    bits: int | None = None          # k-means codebook of 2**bits entries
    prune: float | None = None       # fraction of entries removed by magnitude (csr)
    rank: int | None = None          # SVD rank
    energy: float | None = None      # SVD rank by kept energy fraction
    fft_keep: float | None = None    # fraction of DCT/FFT coefficients kept
    fft_select: str = "largest"      # "low" or "largest"
    fft_transform: str = "dct"       # "dct" or "rfft"
    float16: bool = False            # cast kept values to float16 (when no k-means)
    uniform: float | None = None     # uniform quantization step, in standard deviations of the values

    def to_json(self) -> dict:
        """Non-default fields as JSON."""
        default = asdict(Settings())
        return {k: v for k, v in asdict(self).items() if v != default[k]}


_FIELD_TYPES = {"lossless": bool, "bits": int, "prune": float, "rank": int, "energy": float, "fft_keep": float, "fft_select": str, "fft_transform": str, "float16": bool, "uniform": float}


def parse_settings(items: dict[str, Any], base: Settings, where: str) -> Settings:
    """Apply JSON-ish ``{key: value}`` overrides to *base*, checking every key and value."""
    changes = {}
    for key, value in items.items():
        key = key.replace("-", "_")
        if key not in _FIELD_TYPES:
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {', '.join(_FIELD_TYPES)})")
        changes[key] = _coerce(key, value, where)
    return validate(replace(base, **changes), where)


def _coerce(key: str, value: Any, where: str) -> Any:
    kind = _FIELD_TYPES[key]
    if value is None:
        return None
    if kind is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
        return bool(value)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key} must be a {kind.__name__}, got {value!r}") from None


def validate(settings: Settings, where: str = "settings") -> Settings:
    """Reject out-of-range or contradictory settings with a message naming them."""
    s = settings
    if s.bits is not None and not 1 <= s.bits <= 8:
        raise ConfigError(f"{where}: bits must be in 1..8, got {s.bits}")
    for name in ("prune", "energy", "fft_keep"):
        value = getattr(s, name)
        if value is not None and not 0.0 < value <= 1.0 and not (name == "prune" and value == 0.0):
            raise ConfigError(f"{where}: {name} must be in (0, 1], got {value}")
    if s.rank is not None and s.rank < 1:
        raise ConfigError(f"{where}: rank must be at least 1, got {s.rank}")
    transforms = [n for n in ("prune", "rank", "energy", "fft_keep") if getattr(s, n) is not None]
    if len(transforms) > 1:
        raise ConfigError(f"{where}: choose one of prune, rank, energy, fft_keep (got {', '.join(transforms)})")
    if s.fft_select not in ("low", "largest") or s.fft_transform not in ("dct", "rfft"):
        raise ConfigError(f"{where}: fft_select must be low|largest and fft_transform dct|rfft")
    values = [n for n in ("bits", "float16", "uniform") if getattr(s, n) not in (None, False)]
    if len(values) > 1:
        raise ConfigError(f"{where}: choose one of bits, float16, uniform (got {', '.join(values)})")
    if s.uniform is not None and not s.uniform > 0:
        raise ConfigError(f"{where}: uniform must be a positive step (in standard deviations), got {s.uniform}")
    return s


def parse_layer_override(text: str) -> tuple[str, dict[str, str]]:
    """Parse ``NAME:key=value,key=value`` from ``--layer``."""
    name, sep, rest = text.rpartition(":")
    if not sep or not name or not rest:
        raise ConfigError(f"--layer {text!r}: expected NAME:key=value[,key=value...]")
    items = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--layer {text!r}: {item!r} is not key=value")
        items[key.strip()] = value.strip()
    return name, items


@dataclass
class PlanRules:
    """Default settings plus ordered overrides; the last matching override wins."""

    default: Settings
    overrides: list[tuple[str, dict[str, Any]]]

    def settings_for(self, tensor_name: str) -> Settings:
        """The settings that apply to *tensor_name*."""
        settings = self.default
        for pattern, items in self.overrides:
            if matches(pattern, tensor_name):
                settings = parse_settings(items, settings, f"override {pattern!r}")
        return settings

    def to_json(self) -> dict:
        """The rules as given (recorded in the header for inspect)."""
        return {"default": self.default.to_json(), "overrides": [{"match": p, "settings": i} for p, i in self.overrides]}


def matches(pattern: str, tensor_name: str) -> bool:
    """True when *pattern* is the tensor name, one of its path components, or a glob matching it."""
    return pattern == tensor_name or pattern in tensor_name.split("/") or fnmatch.fnmatchcase(tensor_name, pattern)


def load_plan_file(path: str | os.PathLike, base: Settings) -> PlanRules:
    """Read a JSON plan file: ``{"default": {...}, "tensors": [{"match": "dense_1", "settings": {...}}]}``."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read plan file {os.fspath(path)}: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"default", "tensors"}:
        raise ConfigError(f"plan file {os.fspath(path)}: expected an object with 'default' and 'tensors'")
    default = parse_settings(data.get("default", {}), base, "plan default")
    overrides = []
    for item in data.get("tensors", []):
        if not isinstance(item, dict) or not isinstance(item.get("match"), str) or not isinstance(item.get("settings"), dict):
            raise ConfigError(f"plan file {os.fspath(path)}: each tensors entry needs 'match' and 'settings'")
        parse_settings(item["settings"], default, f"plan entry {item['match']!r}")  # validate early
        overrides.append((item["match"], item["settings"]))
    return PlanRules(default, overrides)


def is_lossy_candidate(array: np.ndarray) -> bool:
    """Whether lossy stages may touch this tensor at all (float, at least 2-D, not tiny)."""
    return array.dtype.kind == "f" and array.ndim >= 2 and array.size >= MIN_LOSSY_ELEMENTS


def tensor_plan(array: np.ndarray, settings: Settings) -> TensorPlan:
    """The stage chain for one tensor under *settings*."""
    if settings.lossless or not is_lossy_candidate(array):
        return lossless_plan(array)
    if settings.rank is not None:
        transform, params = "svd", {"rank": settings.rank}
    elif settings.energy is not None:
        transform, params = "svd", {"energy": settings.energy}
    elif settings.prune:
        transform, params = "csr", {"prune": settings.prune}
    elif settings.fft_keep is not None:
        transform, params = "fft", {"keep": settings.fft_keep, "select": settings.fft_select, "transform": settings.fft_transform}
    else:
        transform, params = "dense", {}
    values: list[tuple[str, dict]] = []
    if settings.bits is not None:
        values.append(("kmeans", {"bits": settings.bits}))
    elif settings.uniform is not None:
        values.append(("uniform", {"step_sd": settings.uniform}))
    elif settings.float16:
        values.append(("cast", {"dtype": "<f2"}))
    if transform == "dense" and not values:
        return lossless_plan(array)
    return TensorPlan(transform, params, values)


#: Float tensors with at least this many elements are split into byte planes when stored
#: losslessly; below it, the planes' extra parts, blobs and header entries cost more than
#: the ~17 % the split saves (measured on the samples' biases and BatchNormalization vectors).
MIN_BYTEPLANES_ELEMENTS = 256


def lossless_plan(array: np.ndarray) -> TensorPlan:
    """Bit-exact storage: larger float tensors split into byte planes, others as they are."""
    if array.dtype.kind == "f" and array.size >= MIN_BYTEPLANES_ELEMENTS:
        return TensorPlan("byteplanes")
    return TensorPlan("dense")
