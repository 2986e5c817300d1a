"""Budgeted compression: the smallest plan whose accuracy drop on data stays within a budget.

What :meth:`BudgetSearch.run` does (everything measured on the data, nothing estimated
from formulas):

1. **Sensitivity.**  For every tensor in play — those the fixed-flag rule would make
   lossy, plus (``every_tensor``) biases and small kernels — every candidate is encoded
   for real, so its size is its true stored bytes, and the model's drop is measured with
   only that tensor changed (a Keras model reruns only the layers downstream of it).
   Candidates: k-means at 1–8 bits, entropy-coded uniform steps, SVD rank ladders with
   k-means or uniform factors, magnitude pruning with k-means values and kept DCT
   coefficients (:func:`candidates_for`); float16 and finer steps for the small tensors
   (:func:`small_candidates`).  Where the evaluator reports a layer's inputs
   (:meth:`nnzip.evaluate.Evaluator.calibration_layers`: Keras Dense and Conv2D, ONNX
   MatMul, Gemm and Conv) each candidate also has a *data-aware* twin
   (:mod:`nnzip.calibrate`: importance-weighted codebooks with GPTQ-style error feedback,
   activation-aware low rank), and every candidate of such a layer comes with its bias
   corrected so the layer's mean output is unchanged.  Candidates whose rebuilt
   values are equal share one measurement.  Per tensor only the *front* is kept
   (:func:`_pareto`): lossless storage first, then each trial smaller than every trial
   with a lower drop.
2. **Allocation.**  Per-tensor drops are treated as additive.  For a target total drop,
   :func:`_allocate` solves a knapsack exactly up to its discretisation: drops (negative
   ones as 0) are rounded up to units of target/400, and a dynamic program over those
   400 units picks one front entry per tensor with the fewest total bytes whose units
   fit.  (Not a Lagrangian sweep, which would reach only plans on the convex hull.)
3. **Check.**  Drops interact, so every allocated plan is measured on the data as a
   whole, and it *fits* when its measured drop plus a noise margin (``margin`` paired
   standard errors of the combination's own per-sample drop, as measured; default
   :data:`nnzip.scoring.DEFAULT_MARGIN`, 2) is within the budget.  Ten rounds choose
   targets (:meth:`BudgetSearch._targets`): from 4 × the budget the target grows 4-fold
   while the plan fits, then is bisected between the last fitting and the first failing
   target.  With a margin, ten more rounds start from the budget itself (doubling, then
   bisecting; a target whose plan was measured already costs no round) and allocate on
   the drop plus ``margin`` times the standard error of the combination, predicted from
   the trials' per-sample differences (:meth:`BudgetSearch._allocate_combined`; a sum of
   the trials' own errors would count the noise several times over): the margin is part
   of what the check bounds, and a trial that changes many predictions both ways has a
   drop near 0 but is not free under it.  The smallest fitting plan of
   each pass (the lossless plan to start) is then refined greedily
   (:meth:`BudgetSearch._refine`, up to 12 rounds): each round measures, for every
   tensor, the plan with that tensor on its next smaller front entry and takes the
   smallest one that fits, until none does.  Measured drops need not grow with the
   target, so the result is the smallest plan measured within the budget by any
   round (:meth:`BudgetSearch._smallest_fitting`), never one larger than a plan it
   measured to fit.  The margin keeps the search from choosing plans that fit only
   through the search data's sampling noise; as the lossless plan is where it starts,
   the result always fits on the search data.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from . import calibrate
from . import chains
from .errors import ConfigError, NoSaving
from .scoring import DEFAULT_MARGIN, CalibratedLayer, Dataset, Evaluator, standard_error
from . import formats
from .model import Model
from .pipeline import EncodedTensor, TensorPlan, encode_tensor
from .stages.base import LossyRangeError
from .plan import KERAS_WEIGHT_NAMES, is_lossy_candidate, layer_weight, lossless_plan

#: Uniform quantization steps tried, in units of the tensor's standard deviation
#: (entropy-coded: about 1 to 5 bits per weight on the samples).
UNIFORM_STEPS = (2.0, 1.41, 1.0, 0.71, 0.5, 0.35, 0.25, 0.18, 0.125)
#: Uniform steps tried on biases, in units of the bias's standard deviation (finer than for
#: kernels: a bias shifts every output of its layer).
BIAS_STEPS = (0.5, 0.25, 0.125, 0.0625, 0.03125)
#: Samples used to gather layer-input statistics.
CALIBRATION_SAMPLES = 1024
#: Estimates of a combination's standard error at which the noise pass linearises its
#: margin (:meth:`BudgetSearch._allocate_combined`), as fractions of 2 × target / margin,
#: the largest estimate that leaves the drops any room.
ERROR_SCALES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)

Log = Callable[[str], None]


@dataclass
class Candidate:
    """One way to store one tensor."""

    label: str
    plan: TensorPlan
    #: "weights" (plain) or "data" (calibrated values before the same chain).
    mode: str = "weights"
    #: For data-aware variants: the settings used to prepare the values.
    bits: int | None = None
    rank: int | None = None
    #: For uniform quantization: the step.
    step: float | None = None


@dataclass
class Trial:
    """A candidate, encoded and measured."""

    candidate: Candidate
    encoded: EncodedTensor
    stored_bytes: int
    drop: float
    #: New bias values (bias correction), stored losslessly with the bias tensor.
    bias: np.ndarray | None = None
    #: Standard error of the measured drop (paired, :meth:`nnzip.scoring.Evaluator.drop_error`):
    #: a trial that flips many predictions both ways has a drop near 0 and a large error.
    error: float = 0.0
    #: Each sample's share of the drop (:meth:`nnzip.scoring.Evaluator.drop_differences`,
    #: float32), so that a combination's error can be predicted from its trials' samples;
    #: None for the lossless trial (no change) and where they were not kept.
    differences: np.ndarray | None = None


@dataclass
class SearchResult:
    """The chosen encoding per tensor, with what was measured."""

    encoded: dict[str, EncodedTensor]
    choices: dict[str, str]
    baseline: float
    measured: float
    #: Measured drop on the search data.
    drop: float
    #: The drop plus the noise margin, which the budget bounds.
    drop_bound: float
    margin: float
    metric: str
    evaluations: int
    seconds: float
    #: Samples held out of the search that the plan was checked on (0: no check).
    holdout_samples: int = 0
    #: The plan's drop on those samples (None without the check).
    holdout_drop: float | None = None

    def to_json(self, max_drop: float) -> dict:
        """The record kept in the header's ``plan`` member (each tensor's choice is in its own ``stats``)."""
        held = {"holdout_samples": self.holdout_samples, "holdout_drop": round(self.holdout_drop, 6)} if self.holdout_samples else {}
        return {
            "search": {
                "metric": self.metric,
                "max_drop": max_drop,
                "baseline": round(self.baseline, 6),
                "result": round(self.measured, 6),
                "drop": round(self.drop, 6),
                "drop_bound": round(self.drop_bound, 6),
                "margin": self.margin,
                "evaluations": self.evaluations,
                "seconds": round(self.seconds, 1),
                **held,
            }
        }


# --- candidates ---------------------------------------------------------------------------


def candidates_for(array: np.ndarray, calibrated: bool) -> list[Candidate]:
    """The candidate ladder for one tensor (data-aware twins when *calibrated*)."""
    rows = math.prod(array.shape[:-1])
    cols = array.shape[-1]
    out: list[Candidate] = []
    for bits in range(1, 9):
        out.append(Candidate(f"kmeans{bits}", chains.chain(chains.dense(), chains.kmeans(bits)), bits=bits))
        if calibrated:
            out.append(Candidate(f"kmeans{bits}+gptq", chains.chain(chains.dense(), chains.kmeans(bits)), "data", bits=bits))
    spread = float(np.std(array))
    for factor in UNIFORM_STEPS if spread > 0 else ():
        step = factor * spread
        plan = chains.chain(chains.dense(), chains.uniform(step))
        out.append(Candidate(f"uniform{factor:g}sd", plan, step=step))
        if calibrated:
            out.append(Candidate(f"uniform{factor:g}sd+gptq", plan, "data", step=step))
    for rank in _rank_ladder(rows, cols):
        factor_stages = [(f"kmeans{bits}", chains.kmeans(bits)) for bits in (4, 6, 8)]
        factor_stages += [(f"uniform{f:g}sd", chains.uniform_sd(f)) for f in (0.71, 0.35, 0.18)]
        for label, stage in factor_stages:
            plan = chains.chain(chains.svd(rank), stage)
            out.append(Candidate(f"svd{rank}+{label}", plan, rank=rank))
            if calibrated:
                out.append(Candidate(f"aasvd{rank}+{label}", plan, "data", rank=rank))
    for prune in (0.5, 0.7, 0.8, 0.9, 0.95):
        for bits in (3, 4, 5, 6):
            out.append(Candidate(f"prune{prune}+kmeans{bits}", chains.chain(chains.csr(prune), chains.kmeans(bits))))
    for keep in (0.2, 0.4):
        plan = chains.chain(chains.fft(keep, "largest", "dct"), chains.kmeans(5))
        out.append(Candidate(f"dct{keep}+kmeans5", plan))
    return out


def _rank_ladder(rows: int, cols: int) -> list[int]:
    """Ranks that save space: powers of two and their 1.5x, below m·n/(m+n+1)."""
    limit = (rows * cols) // (rows + cols + 1)
    ranks = sorted({r for base in (1, 2, 4, 8, 16, 32, 64, 128, 256) for r in (base, base * 3 // 2) if 1 <= r < limit})
    return [r for r in ranks if r >= 2]


def small_candidates(array: np.ndarray, bias: bool) -> list[Candidate]:
    """The ladder for a tensor the fixed-flag rule keeps exact (a bias, or a kernel under
    :data:`nnzip.plan.MIN_LOSSY_ELEMENTS` elements): float16, uniform steps, and for kernels k-means.

    Whether any of them is taken is decided by the measured drop, as for the large tensors.
    """
    out: list[Candidate] = []
    if array.dtype.str in ("<f4", "<f8"):
        out.append(Candidate("float16", chains.chain(chains.dense(), chains.cast("<f2"))))
    spread = float(np.std(array))
    for factor in (BIAS_STEPS if bias else UNIFORM_STEPS) if spread > 0 else ():
        out.append(Candidate(f"uniform{factor:g}sd", chains.chain(chains.dense(), chains.uniform(factor * spread)), step=factor * spread))
    if not bias:
        for bits in range(1, 9):
            if 2**bits < array.size:  # more levels than values: no smaller than the values themselves
                out.append(Candidate(f"kmeans{bits}", chains.chain(chains.dense(), chains.kmeans(bits)), bits=bits))
    return out


def describe(label: str) -> str:
    """A candidate's label in words: ``kmeans3+gptq`` -> "3-bit k-means fitted to the layer's inputs"."""
    base, _, extra = label.partition("+")
    words = {"lossless": "lossless storage", "float16": "float16"}.get(base)
    if words is None:
        words = _describe_part(base)
    if base.startswith(("svd", "aasvd")) and extra:
        return f"{words}, factors in {_describe_part(extra)}"
    if base.startswith(("prune", "dct")) and extra:
        return f"{words}, the rest in {_describe_part(extra)}"
    return words + (" fitted to the layer's inputs" if extra == "gptq" else "")


def _describe_part(part: str) -> str:
    """One piece of a label in words (``kmeans4``, ``uniform0.5sd``, ``svd8``, ``prune0.9``, ``dct0.2``)."""
    for prefix, template in (("kmeans", "{}-bit k-means"), ("aasvd", "data-aware rank-{} SVD"), ("svd", "rank-{} SVD")):
        if part.startswith(prefix):
            return template.format(part[len(prefix):])
    if part.startswith("uniform"):
        return f"uniform steps of {part[len('uniform'):].removesuffix('sd')} standard deviations"
    if part.startswith("prune"):
        return f"the smallest {float(part[5:]):.0%} of weights pruned"
    if part.startswith("dct"):
        return f"the largest {float(part[3:]):.0%} of DCT coefficients kept"
    return part


# --- the search ---------------------------------------------------------------------------


#: The held-out check's shrinking steps (:meth:`BudgetSearch._confirm`): shares of the budget
#: the search data's drop must fit in, then 0 for the lossless plan.
HOLDOUT_SHRINK = (1.0, 0.5, 0.25, 0.125, 0.0)
#: Rounding slack of the held-out comparison with the budget (far below one sample of any data set).
HOLDOUT_TOLERANCE = 1e-9


class BudgetSearch:
    """Runs the three steps for one model on one data set.

    *jobs* threads encode and measure candidates at once (the numpy and numba kernels
    release the GIL); the result is the same for any number.  With *every_tensor*,
    biases and small kernels are in play too (:func:`small_candidates`); without it
    only the tensors the fixed-flag rule would touch (:func:`nnzip.plan.is_lossy_candidate`).
    *log* gets a line per tensor and per combination; *detail*, when given (``-v``), a
    line per candidate too.  *holdout*, when given, scores the same model on samples the
    search never sees; the chosen plan must keep its drop there within the budget too
    (:meth:`_confirm`).
    """

    def __init__(self, model: Model, evaluator: Evaluator, data: Dataset | None, log: Log | None = None, margin: float = DEFAULT_MARGIN,
                 jobs: int = 1, every_tensor: bool = True, detail: Log | None = None, holdout: Evaluator | None = None):
        self.model, self.evaluator, self.data, self.margin = model, evaluator, data, margin
        self.holdout = holdout
        self.log = log or (lambda message: None)
        self.detail = detail or (lambda message: None)
        self.jobs, self.every_tensor = max(1, int(jobs)), every_tensor
        self.evaluations = 0
        self._lock = threading.Lock()
        self.baseline_samples = self._samples(model.tensors)
        self.baseline = float(np.mean(self.baseline_samples))
        self.layers = self._calibrated_layers()
        #: bias tensor -> the calibrated kernel whose trials may correct it.
        self.bias_of_kernel = {info.bias: kernel for kernel, info in self.layers.items() if info.bias is not None}
        self._roles = self._tensor_roles()
        self._large, self._small = self.tensors_in_play()
        self._plans: dict[tuple, dict] = {}
        self._biases: dict[tuple, EncodedTensor] = {}
        self._pool: ThreadPoolExecutor | None = None

    def _samples(self, tensors: dict[str, np.ndarray], changed: set[str] | None = None) -> np.ndarray:
        with self._lock:  # counted the same with any number of threads
            self.evaluations += 1
        if changed is None:
            return self.evaluator.per_sample(tensors)
        return self.evaluator.per_sample_changed(tensors, changed)

    def _map(self, function, items: list) -> list:
        """``[function(item) for item in items]``, on the worker threads when there are several (same order)."""
        if self._pool is None or len(items) < 2:
            return [function(item) for item in items]
        return list(self._pool.map(function, items))

    # step 0: layer input statistics --------------------------------------------------------

    def _calibrated_layers(self) -> dict[str, CalibratedLayer]:
        """Kernel tensor name -> its layer, with input statistics when data-aware steps apply (the evaluator measures them)."""
        if self.data is None or not self.evaluator.supports_calibration:
            return {}
        tensors, source = self.model.tensors, self.model.source_format
        return self.evaluator.calibration_layers(CALIBRATION_SAMPLES, lambda name: is_lossy_candidate(tensors[name], layer_weight(source, name)))

    def _tensor_roles(self) -> dict[str, tuple[str, str]]:
        """Tensor name -> (layer, weight name such as ``kernel`` or ``bias``), where the architecture says."""
        roles = {info.bias: (info.layer, "bias") for info in self.layers.values() if info.bias is not None}
        roles.update({kernel: (info.layer, "kernel") for kernel, info in self.layers.items()})
        roles.update(self.evaluator.weight_roles())
        return roles

    # which tensors are in play -----------------------------------------------------------------

    def tensors_in_play(self) -> tuple[list[str], list[str]]:
        """(tensors the fixed-flag rule would make lossy, the biases and small kernels also in play).

        The second list is empty without *every_tensor*.  Never in play: optimizer state,
        tensors an ONNX graph uses as shapes or indices, non-float or non-finite tensors, and
        variables that are neither kernels nor biases (normalisation statistics and scales).
        """
        optimizer = formats.optimizer_prefix(self.model.source_format)
        exact = formats.exact_names(self.model)  # e.g. an ONNX model's shapes and indices
        tensors = self.model.tensors
        allowed = [n for n in tensors if not (optimizer and n.startswith(optimizer)) and n not in exact]
        large = [n for n in allowed if is_lossy_candidate(tensors[n], layer_weight(self.model.source_format, n))]
        if not self.every_tensor:
            return large, []
        small = []
        for name in allowed:
            array, role = tensors[name], self._roles.get(name, ("", ""))[1]
            if name in large or array.dtype.kind != "f" or array.size < 2 or not np.isfinite(array).all():
                continue
            if role == "bias" or role in KERAS_WEIGHT_NAMES:
                small.append(name)
        return large, small

    def display(self, name: str) -> str:
        """A tensor as a newcomer reads it: ``conv2's kernel`` (or its name when the layer is unknown)."""
        layer, role = self._roles.get(name, (None, None))
        return f"{layer}'s {role}" if layer and layer != name else name

    def _words(self, drop: float) -> str:
        """A measured drop in words: accuracy points, relative error, or the hook's score."""
        if self.evaluator.metric == "accuracy":
            return f"drop {100 * drop:.2f} points" if drop >= 0 else f"gain {-100 * drop:.2f} points"
        if self.evaluator.metric == "mse":
            return f"error {100 * drop:+.2f}%"
        return f"score drop {drop:.5g}"

    # step 1: sensitivity ----------------------------------------------------------------------

    def trials_for(self, name: str, progress: Callable[[str, int], None] | None = None) -> list[Trial]:
        """Encode and measure every candidate of one tensor.

        Candidates are encoded on the worker threads, those whose rebuilt values equal an
        earlier one's share its measurement, and the rest are measured on the threads,
        rerunning only the layers downstream of the tensor's layer.
        """
        array = self.model.tensors[name]
        layer = self.layers.get(name)
        calibrated = layer is not None and layer.stats is not None
        candidates = self.candidates(name)
        cache = _Factorisations(array, layer, self.model.tensors.get(layer.bias) if calibrated else None)
        if any(c.plan.transform == "svd" and c.mode != "data" for c in candidates):
            cache.plain()  # shared by the threads: computed once, before them
        if any(c.rank is not None and c.mode == "data" for c in candidates):
            cache.aware()
        encoded = self._map(lambda candidate: self._encode(name, array, candidate, layer, cache), candidates)
        built = [item for item in encoded if item is not None]
        unique: dict[bytes, tuple] = {}
        for item in built:
            unique.setdefault(item[3], item)
        measured = dict(zip(unique, self._map(lambda item: self._trial_drop(name, item), list(unique.values()))))
        self.evaluations += len(unique)
        trials = []
        for candidate, result, bias, key in built:
            drop, error, differences = measured[key]
            trials.append(Trial(candidate, result, sum(len(blob) for blob in result.blobs), drop, bias, error, differences))
            self.detail(f"trying {describe(candidate.label)} on {self.display(name)}: {self._words(trials[-1].drop)}, "
                        f"{trials[-1].stored_bytes:,} bytes")
        if progress:
            progress(name, len(candidates))
        return trials

    def candidates(self, name: str) -> list[Candidate]:
        """The candidate ladder of one tensor in play."""
        array = self.model.tensors[name]
        layer = self.layers.get(name)
        if name in self._large:
            return candidates_for(array, layer is not None and layer.stats is not None)
        return small_candidates(array, self._roles.get(name, ("", ""))[1] == "bias")

    def _encode(self, name: str, array: np.ndarray, candidate: Candidate, layer: CalibratedLayer | None, cache: "_Factorisations"):
        """(candidate, encoding, corrected bias or None, digest of the rebuilt values), or None when it does not apply."""
        if candidate.mode == "data" and candidate.rank is not None and not _svd_view_is_layer_matrix(array, layer):
            return None  # activation-aware SVD needs the svd stage's matrix to be the layer's (in, out) one
        try:
            plan = candidate.plan
            if candidate.mode == "data":
                values, decomposition = self._prepare(array, candidate, layer, cache)
            else:
                values, decomposition = array, (cache.plain() if plan.transform == "svd" else None)
            if decomposition is not None:  # factor once per tensor, not once per candidate
                plan = replace(plan, transform_params={**plan.transform_params, "decomposition": decomposition})
            encoded = encode_tensor(name, values, plan)
        except (NoSaving, LossyRangeError):
            return None  # e.g. a rank that does not save space for this shape, or values a step cannot reach
        bias = None
        if layer is not None and layer.bias is not None and layer.stats is not None:
            bias = calibrate.corrected_bias(self.model.tensors[layer.bias], _as_matrix(array, layer.layout),
                                            _as_matrix(encoded.reconstruction, layer.layout), layer.stats)
        digest = hashlib.blake2b(np.ascontiguousarray(encoded.reconstruction).tobytes(), digest_size=16)
        if bias is not None:
            digest.update(np.ascontiguousarray(bias).tobytes())
        return candidate, encoded, bias, digest.digest()

    def _trial_drop(self, name: str, item: tuple) -> tuple[float, float, np.ndarray]:
        """The measured drop of one encoded candidate, its standard error and each sample's share of it
        (only its tensor, and its corrected bias, changed)."""
        _, encoded, bias, _ = item
        tensors = dict(self.model.tensors)
        tensors[name] = encoded.reconstruction
        changed = {name}
        if bias is not None:
            tensors[self.layers[name].bias] = bias
            changed.add(self.layers[name].bias)
        samples = self.evaluator.per_sample_changed(tensors, changed)
        differences = self.evaluator.drop_differences(self.baseline_samples, samples)
        return self.evaluator.drop(self.baseline, float(np.mean(samples))), standard_error(differences), differences.astype(np.float32)

    def _prepare(self, array: np.ndarray, candidate: Candidate, layer: CalibratedLayer, cache: "_Factorisations"):
        """Data-aware values for a candidate, and their SVD when it is known: (values, decomposition or None).

        GPTQ-style error feedback onto an importance-weighted k-means codebook or onto
        the uniform grid, or the activation-aware low-rank matrix.
        """
        stats = layer.stats
        if candidate.rank is not None:
            if not _svd_view_is_layer_matrix(array, layer):
                raise ConfigError("the svd stage's matrix view of this kernel is not the layer's (in, out) matrix")
            u, s, vt = cache.aware().decomposition(candidate.rank)
            if layer.layout != "last":  # the stored (out, in) matrix is the transpose
                u, vt = vt.T, u.T
            return ((u * s) @ vt).astype(array.dtype).reshape(array.shape), (u, s, vt)
        from .stages import ArraySpec, get_stage
        from .stages.base import decode_floats

        matrix = cache.folded
        if candidate.step is not None:
            # Every multiple of the step the weights (and their compensated errors) can reach.
            reach = np.abs(matrix).max() * 2 + candidate.step
            levels = np.arange(-np.ceil(reach / candidate.step), np.ceil(reach / candidate.step) + 1)
            codebook = levels * candidate.step
        else:
            importance = _from_matrix(np.broadcast_to(stats.importance()[:, None], matrix.shape), array.shape, layer.layout)
            _, config = get_stage("kmeans").encode(_from_matrix(matrix, array.shape, layer.layout), ArraySpec.of(array),
                                                   {"bits": candidate.bits, "weights": importance})
            codebook = decode_floats(config["codebook"], "<f4", 256)
        quantized = calibrate.quantize_with_error_feedback(matrix, stats, codebook)
        return _from_matrix(quantized, array.shape, layer.layout).astype(array.dtype), None

    # step 2 and 3: allocation and check -----------------------------------------------------

    def run(self, max_drop: float, progress: Callable[[int, int, str], None] | None = None) -> SearchResult:
        """Search; every tensor not in play stays lossless."""
        started = time.monotonic()
        names = [n for n in self.model.tensors if n in set(self._large) | set(self._small)]  # file order
        self.evaluator.prepare_changes(names)
        lossless = {n: encode_tensor(n, a, lossless_plan(a)) for n, a in self.model.tensors.items()}
        options: dict[str, list[Trial]] = {}
        tried: dict[str, list[Trial]] = {}
        total = sum(len(self.candidates(n)) for n in names)
        done = [0]

        def tick(name: str, count: int) -> None:
            done[0] += count
            if progress:
                progress(done[0], total, f"1/2 trying {self.display(name)}")

        self._pool = ThreadPoolExecutor(self.jobs, "nnzip-search") if self.jobs > 1 else None
        try:
            for name in names:
                baseline_trial = Trial(Candidate("lossless", lossless_plan(self.model.tensors[name])), lossless[name], sum(map(len, lossless[name].blobs)), 0.0)
                tried[name] = [baseline_trial, *self.trials_for(name, tick)]
                options[name] = _pareto(baseline_trial, tried[name][1:])
                self.log(self._front_words(name, options[name]))
            best = self._choose(options, max_drop, progress, tried)
            best, held = self._confirm(best, max_drop, options, tried)
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
        encoded = dict(lossless)
        choices = {}
        for name, trial in best["trials"].items():
            encoded[name] = trial.encoded
            choices[name] = trial.candidate.label
        for name, trial in best["trials"].items():
            if trial.bias is not None:
                bias_name = self.layers[name].bias
                encoded[bias_name] = self._bias_encoding(bias_name, trial, best["trials"].get(bias_name))
        return SearchResult(encoded, choices, self.baseline, best["measured"], best["raw_drop"], best["drop"], self.margin,
                            self.evaluator.metric, self.evaluations, time.monotonic() - started, *held)

    def _confirm(self, plan: dict, max_drop: float, options: dict[str, list[Trial]],
                 tried: dict[str, list[Trial]]) -> tuple[dict, tuple[int, float | None]]:
        """Check *plan* on the held-out samples; while its drop there is over *max_drop*, shrink it.

        The search data chose the plan, so its drop there is biased low (of hundreds of
        measured plans the smallest within the budget is the luckiest); the held-out
        samples chose nothing, so their drop is an unbiased estimate.  It is a point
        estimate (no margin: the search data's margin already bounds the noise, and a
        quarter of the data could not carry another).  Shrinking takes what :meth:`_choose`
        picks from the same *options* and *tried* (step 2 again, no new trials) within a
        half, a quarter, then an eighth of the budget on the search data, then the lossless
        plan: at most five held-out runs.  Returns the plan and (held-out samples, its
        held-out drop), (0, None) without a check.
        """
        if self.holdout is None:
            return plan, (0, None)
        reference = self.holdout.per_sample(self.model.tensors)
        baseline = float(np.mean(reference))
        count = int(np.size(reference))
        checked: set[tuple] = set()
        for share in HOLDOUT_SHRINK:
            if 0 < share < 1:
                self.log(f"choosing again within {share:g} x the budget on the search data")
                plan = self._choose(options, max_drop * share, None, tried)
            elif share == 0:
                plan = self._measured_plan({name: trials[0] for name, trials in options.items()})
            key = self._plan_key(plan["trials"])
            if key in checked:
                continue
            checked.add(key)
            changed = not all(t.candidate.label == "lossless" for t in plan["trials"].values())
            drop = self.holdout.drop(baseline, float(np.mean(self.holdout.per_sample(self._combined(plan["trials"]))))) if changed else 0.0
            # A held-out drop is a count over N (2 strips of 100 are 1.0 - 0.98 = 0.020000000000000018):
            # a drop of exactly the budget must fit, so compare with a rounding tolerance.
            fits = drop <= max_drop + HOLDOUT_TOLERANCE
            self.log(f"checked on the {count:,} held-out samples: {plan['bytes']:,} bytes, measured {self._words(drop)} there: "
                     + ("within the budget" if fits else "over the budget, shrinking"))
            if fits:
                return plan, (count, drop)
        return plan, (count, drop)

    def _front_words(self, name: str, front: list[Trial]) -> str:
        """The step-1 summary of one tensor in words."""
        lossless = front[0].stored_bytes
        if len(front) == 1:
            return f"{self.display(name)}: nothing smaller than lossless storage ({lossless:,} bytes)"
        smallest = front[-1]
        ways = "1 way to store it is" if len(front) == 2 else f"{len(front) - 1} ways to store it are"
        return (f"{self.display(name)}: {ways} smaller than lossless ({lossless:,} bytes) "
                f"and no worse than a smaller one; the smallest, {describe(smallest.candidate.label)}, "
                f"takes {smallest.stored_bytes:,} bytes ({self._words(smallest.drop)})")

    def _choose(self, options: dict[str, list[Trial]], max_drop: float, progress: Callable[[int, int, str], None] | None = None,
                tried: dict[str, list[Trial]] | None = None) -> dict:
        """Pick the plan: allocation targets searched on the *measured* drop, greedy refinement, then the smallest plan that fit.

        The summed per-tensor drops only guide (drops interact), so every candidate plan
        is measured.  A first pass of targets allocates on the drops alone; with a noise
        margin, a second pass allocates on the drop plus the margin times the standard
        error *of the combination* predicted from its trials' per-sample differences
        (:meth:`_allocate_combined`), which is what the check bounds (a trial that flips
        many predictions both ways measures a drop near 0 but is far from free under the
        margin), choosing among every trial in *tried* (lossless first, as in *options*;
        *options* themselves without it).  The smallest fitting plan of each pass is
        refined, and the result is the smallest plan measured within the budget by any of
        them, the lossless plan to start with.
        """
        lossless = self._measured_plan({n: t[0] for n, t in options.items()})
        best = self._targets(options, max_drop, lossless, 0.0, progress)
        refined = self._refine(best, options, max_drop)
        tried = tried or options
        if self.margin > 0 and any(t.error > 0 for trials in tried.values() for t in trials):
            fronts = {n: _pareto(trials[0], trials[1:], self.margin) for n, trials in tried.items()}
            aware = self._targets(tried, max_drop, lossless, self.margin, progress)
            if aware["bytes"] < best["bytes"]:
                self._refine(aware, fronts, max_drop)
        if progress:
            progress(10, 10, "")
        return self._smallest_fitting(refined, max_drop)

    def _targets(self, options: dict[str, list[Trial]], max_drop: float, best: dict, noise: float,
                 progress: Callable[[int, int, str], None] | None = None, rounds: int = 10) -> dict:
        """The smallest fitting plan among *rounds* measured allocations (or *best*).

        On the drops alone (*noise* 0, *options* the drop fronts) the target starts at 4 ×
        the budget and grows 4-fold while the plan fits, then is bisected between the last
        fitting and the first failing target.  With the noise term (*options* every trial)
        a target bounds the predicted drop plus *noise* standard errors of the
        combination (:meth:`_allocate_combined`); it starts at the budget itself and
        doubles while the plan fits (the prediction is near the measurement, and mostly
        above it: two changes that flip one sample count it twice).  The measured drop
        need not grow with the target, so the fitting plan kept is the smallest measured,
        not the last.  With the noise term a target whose allocation was measured already
        costs no round (up to 3 × *rounds* targets); on the drops alone every target is a
        round, as before the noise pass existed, so that pass's plan, and what refining
        it gives, are what they were.
        """
        low, high, expanding = 0.0, (1 if noise else 4) * max(max_drop, 1e-9), True
        growth = 2 if noise else 4
        measured = 0
        for _ in range(3 * rounds):
            if measured == rounds:
                break
            target = high if expanding else (low + high) / 2
            allocation = self._allocate_combined(options, target) if noise else _allocate(options, target)
            fresh = self._plan_key(allocation) not in self._plans
            plan = self._measured_plan(allocation)
            fits = plan["drop"] <= max_drop
            if fresh or not noise:
                measured += 1
                if progress:
                    progress(measured, rounds, "2/2 combining")
                self.log(f"combining choices whose drops {self._noise_words(noise)}add up to {self._target_words(target)}: {plan['bytes']:,} bytes, "
                         f"measured {self._words(plan['raw_drop'])} ({self._words(plan['drop'])} with the noise margin): "
                         + ("within the budget" if fits else "over the budget"))
            if fits:
                if plan["bytes"] < best["bytes"]:
                    best = plan
                low, high = target, (high * growth if expanding else high)
            else:
                high, expanding = target, False
        return best

    def _noise_words(self, noise: float) -> str:
        """The noise term of a target in words ("" on the drops alone)."""
        return f"plus {noise:g} standard error{'' if noise == 1 else 's'} of their combination " if noise else ""

    def _allocate_combined(self, tried: dict[str, list[Trial]], target: float) -> dict[str, Trial]:
        """The fewest-bytes allocation whose predicted drop plus margin × its predicted standard error fits *target*.

        The standard error of a combination is not additive (it is the spread of the summed
        per-sample differences, :meth:`predicted_bound`; summing the trials' errors counts
        it several times over), so it is bounded by a linear cost the knapsack can take:
        for any estimate S > 0, √V ≤ S/2 + V/(2S) (equality at V = S²), and V ≈ Σ errorᵢ²
        for changes that flip different samples.  For each estimate in
        :data:`ERROR_SCALES`, trials cost drop + margin × error²/(2S) against a target
        lowered by margin × S/2; of the allocations found, the smallest whose bound
        predicted from the per-sample differences fits *target* is taken (the lossless
        plan when none does).  The plan is then measured, as every plan is.
        """
        margin = self.margin
        lossless = {name: trials[0] for name, trials in tried.items()}
        best, best_rank = lossless, (sum(t.stored_bytes for t in lossless.values()), 0.0)
        for fraction in ERROR_SCALES:
            scale = fraction * 2 * target / margin
            room = target - margin * scale / 2

            def cost(trial: Trial, scale: float = scale) -> float:
                return max(trial.drop, 0.0) + margin * trial.error ** 2 / (2 * scale)

            fronts = {name: _pareto(trials[0], trials[1:], cost=cost) for name, trials in tried.items()}
            allocation = _allocate(fronts, room, cost=cost)
            bound = self.predicted_bound(allocation)
            rank = (sum(t.stored_bytes for t in allocation.values()), bound)
            if bound <= target and rank < best_rank:
                best, best_rank = allocation, rank
        return best

    def predicted_bound(self, trials: dict[str, Trial]) -> float:
        """A combination's drop plus the margin × its standard error, predicted from its trials without measuring it.

        The drop is the trials' drops added (negative ones as 0, as the allocation counts
        them); the error is the paired standard error of the summed per-sample
        differences (:attr:`Trial.differences`), which counts each sample's change once
        and lets changes that cancel on a sample cancel.  A trial without differences
        adds its error in quadrature.
        """
        changed = [t for t in trials.values() if t.candidate.label != "lossless"]
        drop = sum(max(t.drop, 0.0) for t in changed)
        vectors = [t.differences for t in changed if t.differences is not None]
        variance = sum(t.error ** 2 for t in changed if t.differences is None)
        if vectors:
            variance += standard_error(np.sum(vectors, axis=0, dtype=np.float64)) ** 2
        return drop + self.margin * math.sqrt(variance)

    def _smallest_fitting(self, preferred: dict, max_drop: float) -> dict:
        """The fewest-bytes plan measured within the budget; on a tie *preferred*, then the lower drop.

        Every measured plan is in ``self._plans``, so the search never returns a plan
        larger than one it measured within the budget, whatever order the targets and
        refinements measured them in (ties broken by the choices' labels: the same for any
        number of threads).
        """
        fitting = [p for p in self._plans.values() if p["drop"] <= max_drop]
        return min(fitting, key=lambda p: (p["bytes"], p is not preferred, p["drop"], [t.candidate.label for t in p["trials"].values()]))

    def _target_words(self, target: float) -> str:
        if self.evaluator.metric == "accuracy":
            return f"{100 * target:.3f} points"
        return f"{100 * target:.3f}%" if self.evaluator.metric == "mse" else f"{target:.5g}"

    def _refine(self, plan: dict, options: dict[str, list[Trial]], max_drop: float, rounds: int = 12) -> dict:
        """Greedy descent: move one tensor to its next smaller option while the measured drop fits."""
        for _ in range(rounds):
            steps = []
            for name, front in options.items():
                current = plan["trials"][name]
                smaller = [t for t in front if t.stored_bytes < current.stored_bytes]
                if smaller:
                    steps.append((name, max(smaller, key=lambda t: t.stored_bytes)))  # the nearest smaller option
            measured = self._map(lambda step: self._measured_plan({**plan["trials"], step[0]: step[1]}), steps)
            improved, moved = None, None
            for (name, step), candidate in zip(steps, measured):
                if candidate["drop"] <= max_drop and (improved is None or candidate["bytes"] < improved["bytes"]):
                    improved, moved = candidate, (name, step)
            if improved is None:
                break
            self.log(f"smaller: {self.display(moved[0])} in {describe(moved[1].candidate.label)}: {improved['bytes']:,} bytes, "
                     f"measured {self._words(improved['raw_drop'])} ({self._words(improved['drop'])} with the noise margin): within the budget")
            plan = improved
        return plan

    @staticmethod
    def _plan_key(trials: dict[str, Trial]) -> tuple:
        """The identity of a combination: which trial each tensor takes."""
        return tuple((name, id(trial)) for name, trial in trials.items())

    def _measured_plan(self, trials: dict[str, Trial]) -> dict:
        """Measure a combination; its ``drop`` includes the noise margin (margin × standard error).

        A combination measured before is not measured again (the bisection often lands on
        the same one); the lossless combination is the model itself.
        """
        key = self._plan_key(trials)
        if key in self._plans:
            return self._plans[key]
        changed = {name for name, trial in trials.items() if trial.candidate.label != "lossless"}
        changed |= {self.layers[name].bias for name, trial in trials.items() if trial.bias is not None}
        samples = self._samples(self._combined(trials), changed) if changed else self.baseline_samples
        measured = float(np.mean(samples))
        raw = self.evaluator.drop(self.baseline, measured)
        error = self.evaluator.drop_error(self.baseline_samples, samples)
        plan = self._plans[key] = {
            "trials": trials,
            "measured": measured,
            "raw_drop": raw,
            "drop": raw + self.margin * error,
            "bytes": self._plan_bytes(trials),
        }
        return plan

    def _plan_bytes(self, trials: dict[str, Trial]) -> int:
        """Stored bytes of the tensors in play under *trials* (a corrected bias counted as it is stored)."""
        total = 0
        for name, trial in trials.items():
            kernel = trials.get(self.bias_of_kernel.get(name, ""))
            if kernel is not None and kernel.bias is not None:
                total += sum(map(len, self._bias_encoding(name, kernel, trial).blobs))
            else:
                total += trial.stored_bytes
        return total

    def _bias_encoding(self, bias_name: str, kernel: Trial, own: Trial | None) -> EncodedTensor:
        """A kernel trial's corrected bias, stored as the bias's own choice says (lossless without one)."""
        key = (id(kernel), id(own))
        if key not in self._biases:
            plan = own.candidate.plan if own is not None and own.candidate.label != "lossless" else lossless_plan(kernel.bias)
            try:
                self._biases[key] = encode_tensor(bias_name, kernel.bias, plan)
            except (NoSaving, LossyRangeError):  # the corrected values do not suit the bias's choice
                self._biases[key] = encode_tensor(bias_name, kernel.bias, lossless_plan(kernel.bias))
        return self._biases[key]

    def _combined(self, trials: dict[str, Trial]) -> dict[str, np.ndarray]:
        tensors = dict(self.model.tensors)
        for name, trial in trials.items():
            tensors[name] = trial.encoded.reconstruction
        for name, trial in trials.items():
            if trial.bias is not None:
                bias_name = self.layers[name].bias
                tensors[bias_name] = self._bias_encoding(bias_name, trial, trials.get(bias_name)).reconstruction
        return tensors


class _Factorisations:
    """Per-tensor work shared by its candidates, done on first use."""

    def __init__(self, array: np.ndarray, layer: CalibratedLayer | None, bias: np.ndarray | None):
        self.view = _as_matrix(array)  # the svd stage's matrix view
        self.matrix = _as_matrix(array, layer.layout) if layer is not None else self.view  # the layer's (in, out) matrix
        self.layer = layer
        self._plain = self._aware = None
        self.folded = self.matrix
        if layer is not None and layer.stats is not None:
            # Inputs constant on the data carry no information the bias cannot: zero their
            # rows (cheap to store); the bias correction in _trial adds their constant back.
            self.folded, _ = calibrate.fold_constant_inputs(self.matrix, bias, layer.stats)

    def plain(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The thin SVD of the tensor's matrix view."""
        if self._plain is None:
            self._plain = np.linalg.svd(self.view.astype(np.float64), full_matrices=False)
        return self._plain

    def aware(self) -> calibrate.ActivationAwareSVD:
        """The activation-aware factorisation of the (folded) matrix."""
        if self._aware is None:
            self._aware = calibrate.ActivationAwareSVD(self.folded, self.layer.stats)
        return self._aware


def _pareto(lossless: Trial, trials: list[Trial], noise: float = 0.0, cost: Callable[[Trial], float] | None = None) -> list[Trial]:
    """The lossless trial, then the trials smaller than it that no other trial beats on both size and cost
    (*cost*, by default :func:`_cost` with *noise*).

    The lossless trial comes first whatever the others measured: it changes no output,
    so it is the one choice that is always within any budget (the fallback of
    :meth:`BudgetSearch._choose`), even when a lossy trial measured a drop of 0 or less.
    """
    cost = cost or (lambda t: _cost(t, noise))
    ordered = sorted(trials, key=lambda t: (cost(t), t.stored_bytes))
    front, smallest = [lossless], lossless.stored_bytes
    for trial in ordered:
        if trial.stored_bytes < smallest:
            front.append(trial)
            smallest = trial.stored_bytes
    return front


def _cost(trial: Trial, noise: float = 0.0) -> float:
    """What a trial spends of an allocation's target: its drop (negative as 0), plus *noise* × its standard error."""
    return max(trial.drop, 0.0) + noise * trial.error


def _allocate(options: dict[str, list[Trial]], target: float, bins: int = 400, noise: float = 0.0,
              cost: Callable[[Trial], float] | None = None) -> dict[str, Trial]:
    """Smallest total bytes whose summed costs fit *target*: a knapsack over bins.

    The cost of a trial is *cost* (by default :func:`_cost`: its drop, plus *noise*
    standard errors).  Exact up to the discretisation (costs rounded up to target/bins), unlike a
    Lagrangian sweep, which only reaches plans on the convex hull.  Each front's
    first trial is lossless (drop 0, error 0), so a solution always exists.
    """
    unit = max(target, 1e-12) / bins
    names = list(options)
    cost_of = cost or (lambda t: _cost(t, noise))
    units = {n: [min(bins + 1, math.ceil(cost_of(t) / unit - 1e-9)) for t in options[n]] for n in names}
    cost = np.zeros(bins + 1)  # cost[b]: fewest bytes for the tensors so far with at most b drop units
    choices = []
    for name in names:
        table = np.full((len(options[name]), bins + 1), np.inf)
        for i, (trial, u) in enumerate(zip(options[name], units[name])):
            if u <= bins:
                table[i, u:] = cost[: bins + 1 - u] + trial.stored_bytes
        choices.append(np.argmin(table, axis=0))
        cost = table.min(axis=0)
    pick, remaining = {}, bins
    for name, choice in zip(reversed(names), reversed(choices)):
        index = int(choice[remaining])
        pick[name] = options[name][index]
        remaining -= units[name][index]
    return {name: pick[name] for name in names}


def _svd_view_is_layer_matrix(array: np.ndarray, layer: CalibratedLayer) -> bool:
    """Whether the svd stage's matrix view of *array* is its layer's (in, out) matrix or that matrix's transpose."""
    return layer.layout == "last" or array.ndim == 2


def _as_matrix(array: np.ndarray, layout: str = "last") -> np.ndarray:
    """The (in, out) matrix of a kernel.

    "last": (…, out) -> (prod(…), out): Dense kernels as they are, Conv2D HWIO as
    (kh·kw·in, out).  "first": (out, …) -> (prod(…), out): ONNX Gemm transB=1 (out, in)
    and Conv OIHW as (in·kh·kw, out), the order of onnx_eval's im2col patches.
    """
    array = np.asarray(array)
    if layout == "first":
        return array.reshape(array.shape[0], -1).T
    return array.reshape(-1, array.shape[-1])


def _from_matrix(matrix: np.ndarray, shape: tuple[int, ...], layout: str) -> np.ndarray:
    """Inverse of :func:`_as_matrix`: the kernel of *shape* whose (in, out) matrix is *matrix*."""
    if layout == "first":
        return np.ascontiguousarray(np.asarray(matrix).T).reshape(shape)
    return np.asarray(matrix).reshape(shape)

