"""What scoring weights on data is, below every way of doing it: the data set, the comparison, the
:class:`Evaluator` interface (with :class:`CalibratedLayer`, what an evaluator reports of a layer).

:mod:`nnzip.evaluate` (numpy inference of Keras models, ``--eval`` hooks) and
:mod:`nnzip.onnx_eval` (onnxruntime) implement the interface; the budget search
(:mod:`nnzip.search`) and ``verify`` use it.  Kept apart so that those modules import it
rather than each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from . import calibrate
from .errors import InputError, os_reason


@dataclass
class Dataset:
    """Inputs ``x`` and optional labels ``y``; ``arrays`` keeps every array of the file as stored (ONNX inputs by name)."""

    x: np.ndarray
    y: np.ndarray | None
    arrays: dict[str, np.ndarray] | None = None
    #: False when the file has no array ``x`` (``x`` is then its first array): only ONNX models, fed by input name, take it.
    has_x: bool = True


def load_data(path: str | os.PathLike) -> Dataset:
    """Read ``x`` (and ``y`` if present) from a ``.npz`` or HDF5 file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(8)
    except OSError as exc:
        raise InputError(f"cannot open data file {path}: {os_reason(exc)}") from None
    has_x = True
    try:
        if magic == b"\x89HDF\r\n\x1a\n":
            with h5py.File(path, "r") as h5:
                arrays = {k: np.asarray(h5[k][()]) for k in ("x", "y") if k in h5 and isinstance(h5[k], h5py.Dataset)}
        else:
            with np.load(path, allow_pickle=False) as npz:
                stored = {k: npz[k] for k in npz.files}
            arrays = {k: stored[k] for k in ("x", "y") if k in stored}
            has_x = "x" in arrays
            if "x" not in arrays and len(set(stored) - {"y"}):  # ONNX inputs named as the model's inputs
                arrays["x"] = stored[next(k for k in stored if k != "y")]
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read data file {path} (expected .npz or .h5 with arrays x and y): {exc}") from None
    if "x" not in arrays:
        raise InputError(f"data file {path} has no array 'x'")
    named = None
    if magic != b"\x89HDF\r\n\x1a\n":  # arrays with one row per sample, for models with named inputs
        named = {k: v for k, v in stored.items() if k != "y" and v.ndim and len(v) == len(arrays["x"])}
    x, y = arrays["x"].astype(np.float32, copy=False), arrays.get("y")
    if y is not None and len(y) != len(x):
        raise InputError(f"data file {path}: x has {len(x)} samples but y has {len(y)}")
    if len(x) == 0:
        raise InputError(f"data file {path} holds no samples")
    return Dataset(x, None if y is None else _labels(y), named, has_x)


def _labels(y: np.ndarray) -> np.ndarray:
    """Integer class labels from labels of shape (N,), (N, 1) or one-hot (N, C)."""
    if y.ndim == 2:
        y = y[:, 0] if y.shape[1] == 1 else np.argmax(y, axis=1)
    return y.astype(np.int64, copy=False)


@dataclass
class Comparison:
    """Original vs rebuilt weights on one data set."""

    metric: str
    original: float
    rebuilt: float
    agreement: float | None
    layer_errors: dict[str, float]
    #: How the drop is counted: "absolute" (in the metric's units) or "relative" (a fraction of the original).
    drop_kind: str = "absolute"

    @property
    def drop(self) -> float:
        """Loss of quality (positive = worse), see :func:`quality_drop`."""
        return quality_drop(self.metric, self.drop_kind, self.original, self.rebuilt)

    def to_json(self) -> dict:
        """JSON form for ``verify --json``."""
        return {
            "metric": self.metric,
            "original": self.original,
            "rebuilt": self.rebuilt,
            "drop": self.drop,
            "drop_kind": "relative" if self.metric == "mse" else self.drop_kind,  # an MSE drop is always relative
            "top1_agreement": self.agreement,
            "layer_output_errors": self.layer_errors,
        }


def quality_drop(metric: str, kind: str, reference: float, value: float) -> float:
    """Quality lost going from *reference* to *value*; positive means worse.

    MSE is lower-is-better and its drop is relative; every other metric is
    higher-is-better, its drop absolute unless *kind* is ``"relative"``.

    >>> quality_drop("accuracy", "absolute", 0.9, 0.85) == 0.9 - 0.85
    True
    >>> quality_drop("score", "relative", 20.0, 19.0)
    0.05
    """
    if metric == "mse":
        return (value - reference) / max(reference, 1e-12)
    if kind == "relative":
        return (reference - value) / max(abs(reference), 1e-12)
    return reference - value


#: The default noise margin (``--margin``): a plan is accepted when its drop on the search
#: data plus this many paired standard errors of that drop is within the budget.  Another
#: split's drop differs from the search data's by the sampling errors of both (about √2
#: standard errors, the search data's own being one), and the search keeps the smallest of
#: many measured plans, which favours plans whose noise fell their way: 2 = √2 × 1.41 puts
#: the budget about 1.4 standard errors of that difference above the search's drop (92 %
#: one-sided, before that selection).  README "Accuracy budgets" gives the evidence.
DEFAULT_MARGIN = 2.0


#: The default share of the data held out of the search (``--holdout``): the search picks its
#: plan on the rest, then checks the plan's drop on this part, which no choice was made on
#: (the smallest of many measured plans is luckier on the data it was picked on than its
#: standard error says; README "Accuracy budgets").
DEFAULT_HOLDOUT = 0.25
#: Fewer held-out samples than this measure nothing useful: the search then uses all the data.
MIN_HOLDOUT_SAMPLES = 50


def split_holdout(data: Dataset, fraction: float) -> tuple[Dataset, Dataset | None]:
    """The search part and the held-out part of *data* (None when that part would be under :data:`MIN_HOLDOUT_SAMPLES`).

    Held out: sample i when ``floor((i + 1) * fraction) > floor(i * fraction)``, an even
    spread over the file (every 4th sample for 1/4), so sorted or grouped data lands in
    both parts alike; the same samples for the same file and fraction.
    """
    count = len(data.x)
    index = np.arange(count)
    held = np.floor((index + 1) * fraction) > np.floor(index * fraction)
    if int(held.sum()) < MIN_HOLDOUT_SAMPLES:
        return data, None
    return _rows(data, ~held), _rows(data, held)


def _rows(data: Dataset, keep: np.ndarray) -> Dataset:
    """*data* restricted to the samples where *keep* is true (named per-sample arrays too)."""
    arrays = None if data.arrays is None else {name: array[keep] for name, array in data.arrays.items()}
    return Dataset(data.x[keep], None if data.y is None else data.y[keep], arrays, data.has_x)


def standard_error(differences: np.ndarray) -> float:
    """Standard error of the mean of per-sample *differences* (0 for fewer than two samples)."""
    differences = np.asarray(differences, dtype=np.float64)
    if differences.size < 2:
        return 0.0
    return float(np.std(differences, ddof=1) / np.sqrt(differences.size))


@dataclass
class CalibratedLayer:
    """A layer whose kernel the budget search may fit to the data: its tensor names and its input statistics."""

    layer: str
    kernel: str
    bias: str | None
    stats: calibrate.LayerStatistics | None = None
    #: How the kernel is the (in, out) matrix the statistics are for: "last" (Keras: the
    #: last axis is the output) or "first" (ONNX Gemm transB=1 and Conv OIHW: the first is).
    layout: str = "last"


class Evaluator:
    """Scores tensor sets on a data set; subclasses know how to run the model.

    The budget search asks an evaluator three things beyond scores, all answered "nothing
    known" here: :attr:`supports_calibration`, :meth:`weight_roles` and :meth:`calibration_layers`.
    """

    metric: str = "score"
    #: "absolute" or "relative": how :meth:`drop` counts (MSE is always relative).
    drop_kind: str = "absolute"
    #: Whether :meth:`calibration_layers` can measure layer inputs on the data (the search's data-aware candidates).
    supports_calibration: bool = False

    def weight_roles(self) -> dict[str, tuple[str, str]]:
        """Tensor name -> (its layer, its weight name such as ``kernel``, ``bias`` or ``gamma``), where the architecture says.

        Keyed by tensor, not by layer, because a layer may hold two weights of one name
        (a Bidirectional layer's two kernels).  Empty when the evaluator does not know the layers.
        """
        return {}

    def calibration_layers(self, samples: int, eligible: Callable[[str], bool]) -> dict[str, CalibratedLayer]:
        """Kernel tensor name -> its layer, with statistics of the layer's inputs on the first *samples* samples.

        Only layers whose kernel *eligible* accepts; empty when the evaluator cannot run
        single layers (then the search offers weight-only candidates).
        """
        return {}

    def per_sample(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        """The metric per sample (1/0 correct, or squared error), or one overall value."""
        raise NotImplementedError

    def prepare_changes(self, names: list[str]) -> None:
        """Get ready to score tensor sets that differ from the model's own in a few of *names*
        (:meth:`per_sample_changed`); evaluators that cannot reuse work do nothing."""

    def per_sample_changed(self, tensors: dict[str, np.ndarray], changed: set[str]) -> np.ndarray:
        """As :meth:`per_sample`, for *tensors* equal to the model's own except at the names in *changed*.

        The result is the same as :meth:`per_sample`'s; an evaluator may compute less to get it.
        """
        return self.per_sample(tensors)

    def measure(self, tensors: dict[str, np.ndarray]) -> float:
        """The metric (accuracy, MSE or hook score) of *tensors* on the data."""
        return float(np.mean(self.per_sample(tensors)))

    def drop(self, reference: float, value: float) -> float:
        """Quality lost going from metric *reference* to *value* (as :attr:`Comparison.drop`)."""
        return quality_drop(self.metric, self.drop_kind, reference, value)

    def drop_differences(self, reference: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """Each sample's share of the drop from *reference* to *samples* (per-sample results on the same data).

        Their mean is :meth:`drop` of the two means, for every metric and drop kind, so the
        differences of several changes to a model can be added sample by sample to predict
        the drop of the combination and its paired standard error (:func:`standard_error`).
        """
        reference = np.asarray(reference, dtype=np.float64)
        samples = np.asarray(samples, dtype=np.float64)
        scale = max(float(np.mean(reference)), 1e-12) if self.metric == "mse" else 1.0
        difference = (samples - reference) / scale if self.metric == "mse" else reference - samples
        if self.metric != "mse" and self.drop_kind == "relative":
            difference = difference / max(abs(float(np.mean(reference))), 1e-12)
        return difference

    def drop_error(self, reference: np.ndarray, samples: np.ndarray) -> float:
        """Standard error of the drop between two per-sample results on the same data.

        Paired: only samples whose outcome changed add to it, so a plan that changes
        few predictions has a small error even when both accuracies are noisy.
        """
        return standard_error(self.drop_differences(reference, samples))

    def compare(self, original: dict[str, np.ndarray], rebuilt: dict[str, np.ndarray]) -> Comparison:
        """Run both weight sets and compare them."""
        return Comparison(self.metric, self.measure(original), self.measure(rebuilt), None, {}, self.drop_kind)
