"""Chooses each tensor's representation from user settings (flags, per-layer overrides, plan files).

A :class:`Settings` is what a user can ask for one tensor (``bits=4``,
``prune=0.8``, ``rank=32`` …).  Global flags give the default settings;
``--layer NAME:key=value,…`` and a JSON plan file (``spec/plan.md``) override
them for tensors whose name matches.
:func:`choose_plan` turns the settings for one tensor into a
:class:`nnzip.pipeline.TensorPlan` (which stages, which parameters) and a note
saying why a lossy setting was not applied.

Which tensors lossy settings touch (:func:`is_lossy_candidate`):

* only float tensors of at least two dimensions and :data:`MIN_LOSSY_ELEMENTS`
  elements: biases, normalisation vectors and counters are a sliver of the file
  and a model is far more sensitive to them;
* only finite ones: a tensor holding NaN or ±infinity (attention masks, running
  statistics) is stored bit for bit, with a note, since no lossy stage can
  represent those values;
* tensors a file carries as raw bits (:func:`nnzip.formats.element_types`): bfloat16 ones are
  planned on their exact float32 values and marked ``widen`` (the decoder rounds back to
  bfloat16, spec/container.md §4.5); 8- and 4-bit floats stay exact, with a note;
* in Keras files, only *layer weights* — decided by what the file says a
  variable is, not by its shape (:func:`layer_weight`).  A legacy ``.h5`` names
  each variable (``…/dense/kernel:0``): ``kernel``, ``recurrent_kernel``,
  ``depthwise_kernel``, ``pointwise_kernel`` and ``embeddings`` are weights;
  ``bias``, ``gamma``, ``beta``, ``moving_mean``, ``moving_variance``, ``mean``,
  ``variance``, ``count``, states, counters and seed-generator states are not.  A
  Keras 3 ``.weights.h5`` or ``.keras`` file numbers the variables of each layer
  (``layers/dense/vars/0``) under a group named after the layer's class; for
  Keras' own layers the class fixes which numbers are weights (:data:`KERAS_VARS_WEIGHTS`:
  ``Dense`` variable 0, ``SeparableConv2D`` 0 and 1, an LSTM/GRU cell 0 and 1;
  ``Normalization``, ``BatchNormalization`` and seed generators none).  Optimizer
  state is never a layer weight.  Where the file does not say (a custom
  layer's unknown variable name or class, safetensors, npz), the shape rule
  alone decides.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import math
import os
import re
from dataclasses import asdict, dataclass, replace
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import chains, formats
from .errors import ConfigError
from .pipeline import TensorPlan, widen_values
from .stages.uniform import MAX_RDO

#: Tensors with fewer elements than this are kept lossless whatever the settings.
MIN_LOSSY_ELEMENTS = 1024
#: Element types the ``cast`` stage (``--float16``) takes; others are left as they are.
CAST_INPUTS = ("<f4", "<f8")


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
    uniform_step: float | None = None  # uniform quantization step, absolute: the same step for every tensor
    rdo: float | None = None         # with uniform: rate-distortion weight of RDOQ, in squared steps per bit
    dq: bool = False                 # with uniform/uniform_step: dependent (trellis) quantization, the `dq` stage

    def to_json(self) -> dict:
        """Non-default fields as JSON."""
        default = asdict(Settings())
        return {k: v for k, v in asdict(self).items() if v != default[k]}


_FIELD_TYPES = {"lossless": bool, "bits": int, "prune": float, "rank": int, "energy": float, "fft_keep": float, "fft_select": str, "fft_transform": str, "float16": bool, "uniform": float, "uniform_step": float, "rdo": float, "dq": bool}


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
    values = [n for n in ("bits", "float16", "uniform", "uniform_step") if getattr(s, n) not in (None, False)]
    if len(values) > 1:
        raise ConfigError(f"{where}: choose one of bits, float16, uniform, uniform_step (got {', '.join(values)})")
    if s.rdo is not None and not 0 <= s.rdo <= MAX_RDO:
        raise ConfigError(f"{where}: rdo must be from 0 to {MAX_RDO} (squared steps per bit; 0.12 suits most weights), got {s.rdo}")
    if s.uniform is not None and not s.uniform > 0:
        raise ConfigError(f"{where}: uniform must be a positive step (in standard deviations), got {s.uniform}")
    if s.dq and s.uniform is None and s.uniform_step is None:
        raise ConfigError(f"{where}: dq is a way of rounding uniform or uniform_step: give one of them too")
    if s.dq and s.rdo:
        raise ConfigError(f"{where}: rdo and dq are two ways of rounding: choose one")
    if s.uniform_step is not None and not (math.isfinite(s.uniform_step) and s.uniform_step > 0):
        raise ConfigError(f"{where}: uniform_step must be a positive finite step, got {s.uniform_step}")
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


def close_matches(pattern: str, names: Sequence[str]) -> str:
    """For a pattern that matched nothing: ``; close matches: dense_1, dense_1/kernel`` (layer names and full tensor names), or ''."""
    words = dict.fromkeys([part for name in names for part in name.split("/")] + list(names))
    close = difflib.get_close_matches(pattern, list(words), n=5, cutoff=0.6)
    return f"; close matches: {', '.join(close)}" if close else "; no close match"


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


#: Last component of a Keras variable name (``:0`` suffix removed) that is a layer weight.
KERAS_WEIGHT_NAMES = frozenset({"kernel", "recurrent_kernel", "depthwise_kernel", "pointwise_kernel", "embeddings"})
#: ... that is known not to be one: offsets, scales, statistics, states and counters.
KERAS_OTHER_NAMES = frozenset({
    "bias", "recurrent_bias", "gamma", "beta", "moving_mean", "moving_variance", "mean", "variance", "count",
    "adapt_mean", "adapt_variance", "state", "states", "seed_generator_state", "iteration", "iterations", "counter",
    "kernel_scale", "embeddings_scale", "learning_rate",
})
#: Keras 3 ``vars`` layout: snake-cased layer class -> the variable numbers that are layer
#: weights (Keras saves a layer's trainable variables first, in the order it creates them).
KERAS_VARS_WEIGHTS: dict[str, tuple[int, ...]] = {
    **dict.fromkeys(("dense", "einsum_dense", "embedding", "conv1d", "conv2d", "conv3d", "conv1d_transpose", "conv2d_transpose",
                     "conv3d_transpose", "depthwise_conv1d", "depthwise_conv2d",
                     # multi-head and grouped-query attention's projections (EinsumDense layers)
                     "query_dense", "key_dense", "value_dense", "output_dense"), (0,)),
    "separable_conv1d": (0, 1),
    "separable_conv2d": (0, 1),
    **dict.fromkeys(("batch_normalization", "layer_normalization", "group_normalization", "unit_normalization", "rms_normalization",
                     "normalization", "seed_generator"), ()),
}
#: Layers whose ``cell`` sub-object holds kernel (0), recurrent kernel (1) and bias (2).
_KERAS_RNN_LAYERS = frozenset({"lstm", "gru", "simple_rnn", "conv_lstm1d", "conv_lstm2d", "conv_lstm3d", "forward_layer", "backward_layer"})
_DEDUPLICATED = re.compile(r"_\d+$")  # Keras names a second ``dense`` group ``dense_1``


def layer_weight(source_format: str, name: str) -> bool | None:
    """What *source_format* says tensor *name* is: a layer weight (True), a variable that is not
    one (False: statistics, states, counters, optimizer state), or nothing (None: the shape rule decides)."""
    optimizer = formats.optimizer_prefix(source_format)
    if optimizer and name.startswith(optimizer):
        return False
    parts = name.split("/")
    if source_format == "keras-h5":
        variable = re.sub(r":\d+$", "", parts[-1])
        return True if variable in KERAS_WEIGHT_NAMES else False if variable in KERAS_OTHER_NAMES else None
    if source_format in ("keras-weights-h5", "keras-v3"):
        return _vars_layer_weight(parts)
    return None


def _vars_layer_weight(parts: list[str]) -> bool | None:
    """A ``…/<owner>/vars/<i>`` dataset of the Keras 3 layout, judged by its owner's class."""
    if len(parts) < 3 or parts[-2] != "vars" or not parts[-1].isdigit():
        return None
    owner = _DEDUPLICATED.sub("", parts[-3])
    if owner == "cell" and len(parts) >= 4 and _DEDUPLICATED.sub("", parts[-4]) in _KERAS_RNN_LAYERS:
        return int(parts[-1]) in (0, 1)
    weights = KERAS_VARS_WEIGHTS.get(owner)
    return None if weights is None else int(parts[-1]) in weights


def _shape_allows(array: np.ndarray) -> bool:
    return array.dtype.kind == "f" and array.ndim >= 2 and array.size >= MIN_LOSSY_ELEMENTS


def is_lossy_candidate(array: np.ndarray, weight: bool | None = None) -> bool:
    """Whether lossy stages may touch this tensor at all (module docstring): float, at least 2-D,
    not tiny, finite, and not a variable its file says is no layer weight (*weight* False,
    from :func:`layer_weight`)."""
    return _shape_allows(array) and weight is not False and bool(np.isfinite(array).all())


def exclusion_note(array: np.ndarray, weight: bool | None = None, element: str | None = None) -> str:
    """Why lossy settings leave a tensor that the shape rule would pick exact, or "" (nothing worth saying).

    *element* is the real type of a tensor carried as raw bits: the accuracy-budget search
    (which calls this for every tensor it leaves alone) does not take those yet.
    """
    if element is not None and array.ndim >= 2 and array.size >= MIN_LOSSY_ELEMENTS and weight is not False:
        return f"kept exact: {element}: the accuracy-budget search does not quantize this type yet (fixed settings do)"
    if not _shape_allows(array):
        return ""  # biases and small tensors: exact by the documented rule, every time
    if weight is False:
        return "kept exact: the Keras file says it is not a layer weight (a statistic, state or counter)"
    if not np.isfinite(array).all():
        return "kept exact: it holds NaN or infinity, which lossy stages cannot represent"
    return ""


def asks_lossy(settings: Settings) -> bool:
    """Whether *settings* ask for any lossy stage."""
    s = settings
    return not s.lossless and (any(v is not None for v in (s.bits, s.rank, s.energy, s.fft_keep, s.uniform, s.uniform_step)) or bool(s.prune) or s.float16)


def choose_plan(array: np.ndarray, settings: Settings, weight: bool | None = None,
                element: str | None = None) -> tuple[TensorPlan, str]:
    """The stage chain for one tensor under *settings*, and a note when a lossy setting was not applied.

    *weight* is what the file says the tensor is (:func:`layer_weight`); *element* its real
    element type when the file carries it as raw bits (:func:`nnzip.formats.element_types`).
    """
    if not asks_lossy(settings):
        return lossless_plan(array), ""
    if element is not None:
        return _bit_pattern_plan(array, settings, weight, element)
    if not is_lossy_candidate(array, weight):
        return lossless_plan(array), exclusion_note(array, weight)
    return _lossy_plan(array, settings)


def _transform_step(settings: Settings) -> chains.Step:
    """The transform *settings* ask for (at most one, :func:`validate`); dense when none."""
    if settings.rank is not None:
        return chains.svd(settings.rank)
    if settings.energy is not None:
        return chains.svd_energy(settings.energy)
    if settings.prune:
        return chains.csr(settings.prune)
    if settings.fft_keep is not None:
        return chains.fft(settings.fft_keep, settings.fft_select, settings.fft_transform)
    return chains.dense()


def _lossy_plan(array: np.ndarray, settings: Settings) -> tuple[TensorPlan, str]:
    """The chain of a lossy candidate: the asked transform, then the asked value stage (at most one)."""
    transform = _transform_step(settings)
    values: list[chains.Step] = []
    note = ""
    if settings.bits is not None:
        values.append(chains.kmeans(settings.bits))
    elif settings.dq and array.dtype.str in chains.DQ_INPUTS:
        values.append(chains.dq(settings.uniform_step, settings.uniform))
    elif settings.uniform is not None:
        values.append(chains.uniform_sd(settings.uniform, settings.rdo))
    elif settings.uniform_step is not None:
        values.append(chains.uniform(settings.uniform_step, settings.rdo))
    elif settings.float16:
        if array.dtype.str in CAST_INPUTS:
            values.append(chains.cast("<f2"))
        else:  # a float16 tensor is already as small as --float16 makes it: leave it be
            note = f"already {array.dtype.name}: --float16 leaves it as it is"
    plan = chains.chain(transform, *values)
    if chains.is_exact(plan):  # e.g. --float16 on a float16 tensor: nothing lossy left to do
        return lossless_plan(array), note
    return plan, note


def _bit_pattern_plan(array: np.ndarray, settings: Settings, weight: bool | None, element: str) -> tuple[TensorPlan, str]:
    """Lossy settings for a tensor carried as raw bits (*element*: ``"bfloat16"``, ``"float8_e4m3fn"`` …).

    bfloat16 is widened to float32 exactly, planned like a float32 tensor and marked
    ``widen`` so that the decoder rounds the result back to bfloat16 (spec/container.md §4.5):
    every lossy setting applies but ``--float16``, which would not make a 16-bit type smaller.
    Other element types (8- and 4-bit floats) have no lossy stage: kept exact, with a note
    whenever the shape rule would have picked them.
    """
    widened = widen_values(array, "bfloat16") if element == "bfloat16" else None
    if widened is None or settings.float16:
        if array.ndim < 2 or array.size < MIN_LOSSY_ELEMENTS or weight is False:
            return lossless_plan(array), ""
        if widened is not None:
            return lossless_plan(array), "already bfloat16: --float16 leaves it as it is"
        return lossless_plan(array), f"kept exact: {element}: no lossy stage takes that type; stored bit for bit"
    plan, note = choose_plan(widened, settings, weight)
    if chains.is_exact(plan):
        return lossless_plan(array), note
    return replace(plan, widen="bfloat16"), note


#: Float tensors with at least this many elements are split into byte planes when stored
#: losslessly; below it, the planes' extra parts, blobs and header entries cost more than
#: the ~17 % the split saves (measured on the samples' biases and BatchNormalization vectors).
MIN_BYTEPLANES_ELEMENTS = 256


def lossless_plan(array: np.ndarray) -> TensorPlan:
    """Bit-exact storage: larger float tensors split into byte planes, others as they are."""
    if array.dtype.kind == "f" and array.size >= MIN_BYTEPLANES_ELEMENTS:
        return chains.chain(chains.byteplanes())
    return chains.chain(chains.dense())
