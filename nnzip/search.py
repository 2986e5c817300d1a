"""Budgeted compression: the smallest plan whose accuracy drop on data stays within a budget.

The search has three steps (all measured, nothing estimated from formulas):

1. **Sensitivity.**  For every lossy-eligible tensor and every candidate
   representation (k-means at 1–8 bits; entropy-coded uniform steps; SVD rank
   ladders with k-means factors;
   magnitude pruning with k-means values; kept DCT coefficients), encode the
   tensor for real — its true stored bytes — and measure the model's drop on the
   data with only that tensor changed.  For Dense and Conv2D kernels the
   candidates are *data-aware* (:mod:`nnzip.calibrate`): importance-weighted
   codebooks with GPTQ-style error feedback, activation-aware low rank, bias
   correction.  Both a weight-only and a data-aware variant are tried; the
   measurements decide.
2. **Allocation.**  Per-tensor drops are treated as additive; for a Lagrange
   multiplier λ each tensor takes the candidate minimising ``bytes + λ·drop``,
   and λ is swept to find the smallest total size whose summed drop fits a
   target.
3. **Check.**  The combined plan is evaluated on the data.  The target is
   bisected (drops interact, so the sum is only a guide), then single tensors are
   stepped down greedily, and the smallest plan whose *measured* drop plus a
   noise margin (``margin`` standard errors of the paired drop, default 1) is
   within the budget wins.  The margin keeps the search from choosing plans that
   fit the budget only through the search data's sampling noise; the lossless
   plan is the fallback, so the result always meets the budget on the search data.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from . import calibrate
from .errors import ConfigError
from .evaluate import Dataset, Evaluator, KerasEvaluator
from . import io as model_io
from .model import Model
from .pipeline import EncodedTensor, TensorPlan, encode_tensor
from .plan import is_lossy_candidate, layer_weight, lossless_plan

#: Layer classes whose kernel gets data-aware candidates.
CALIBRATED_LAYERS = {"Dense", "Conv2D"}
#: Uniform quantization steps tried, in units of the tensor's standard deviation
#: (entropy-coded: about 1 to 5 bits per weight on the samples).
UNIFORM_STEPS = (2.0, 1.41, 1.0, 0.71, 0.5, 0.35, 0.25, 0.18, 0.125)
#: Samples used to gather layer-input statistics.
CALIBRATION_SAMPLES = 1024
#: A plan is accepted when drop + DEFAULT_MARGIN × (standard error of the drop) fits the
#: budget, so that it holds on unseen data and not only on the search data's noise.
DEFAULT_MARGIN = 1.0

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


@dataclass
class LayerTensors:
    """The kernel and bias tensor names of one layer, and its input statistics."""

    layer: str
    class_name: str
    config: dict
    kernel: str
    bias: str | None
    stats: calibrate.LayerStatistics | None = None
    #: How the kernel is the (in, out) matrix the statistics are for: "last" (Keras: the
    #: last axis is the output) or "first" (ONNX Gemm transB=1 and Conv OIHW: the first is).
    layout: str = "last"


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

    def to_json(self, max_drop: float) -> dict:
        """The record kept in the header's ``plan`` member (each tensor's choice is in its own ``stats``)."""
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
            }
        }


# --- candidates ---------------------------------------------------------------------------


def candidates_for(array: np.ndarray, calibrated: bool) -> list[Candidate]:
    """The candidate ladder for one tensor (data-aware twins when *calibrated*)."""
    rows = math.prod(array.shape[:-1])
    cols = array.shape[-1]
    out: list[Candidate] = []
    for bits in range(1, 9):
        out.append(Candidate(f"kmeans{bits}", TensorPlan("dense", {}, [("kmeans", {"bits": bits})]), bits=bits))
        if calibrated:
            out.append(Candidate(f"kmeans{bits}+gptq", TensorPlan("dense", {}, [("kmeans", {"bits": bits})]), "data", bits=bits))
    spread = float(np.std(array))
    for factor in UNIFORM_STEPS if spread > 0 else ():
        step = factor * spread
        plan = TensorPlan("dense", {}, [("uniform", {"step": step})])
        out.append(Candidate(f"uniform{factor:g}sd", plan, step=step))
        if calibrated:
            out.append(Candidate(f"uniform{factor:g}sd+gptq", plan, "data", step=step))
    for rank in _rank_ladder(rows, cols):
        factor_stages = [(f"kmeans{bits}", ("kmeans", {"bits": bits})) for bits in (4, 6, 8)]
        factor_stages += [(f"uniform{f:g}sd", ("uniform", {"step_sd": f})) for f in (0.71, 0.35, 0.18)]
        for label, stage in factor_stages:
            plan = TensorPlan("svd", {"rank": rank}, [stage])
            out.append(Candidate(f"svd{rank}+{label}", plan, rank=rank))
            if calibrated:
                out.append(Candidate(f"aasvd{rank}+{label}", plan, "data", rank=rank))
    for prune in (0.5, 0.7, 0.8, 0.9, 0.95):
        for bits in (3, 4, 5, 6):
            out.append(Candidate(f"prune{prune}+kmeans{bits}", TensorPlan("csr", {"prune": prune}, [("kmeans", {"bits": bits})])))
    for keep in (0.2, 0.4):
        plan = TensorPlan("fft", {"keep": keep, "select": "largest", "transform": "dct"}, [("kmeans", {"bits": 5})])
        out.append(Candidate(f"dct{keep}+kmeans5", plan))
    return out


def _rank_ladder(rows: int, cols: int) -> list[int]:
    """Ranks that save space: powers of two and their 1.5x, below m·n/(m+n+1)."""
    limit = (rows * cols) // (rows + cols + 1)
    ranks = sorted({r for base in (1, 2, 4, 8, 16, 32, 64, 128, 256) for r in (base, base * 3 // 2) if 1 <= r < limit})
    return [r for r in ranks if r >= 2]


# --- the search ---------------------------------------------------------------------------


class BudgetSearch:
    """Runs the three steps for one model on one data set."""

    def __init__(self, model: Model, evaluator: Evaluator, data: Dataset | None, log: Log | None = None, margin: float = DEFAULT_MARGIN):
        self.model, self.evaluator, self.data, self.margin = model, evaluator, data, margin
        self.log = log or (lambda message: None)
        self.evaluations = 0
        self.baseline_samples = self._samples(model.tensors)
        self.baseline = float(np.mean(self.baseline_samples))
        self.layers = self._calibrated_layers()

    def _samples(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        self.evaluations += 1
        return self.evaluator.per_sample(tensors)

    def _measure(self, tensors: dict[str, np.ndarray]) -> float:
        return float(np.mean(self._samples(tensors)))

    def _drop(self, tensors: dict[str, np.ndarray]) -> float:
        return self.evaluator.drop(self.baseline, self._measure(tensors))

    # step 0: layer input statistics --------------------------------------------------------

    def _calibrated_layers(self) -> dict[str, LayerTensors]:
        """Kernel tensor name -> its layer, with input statistics when data-aware steps apply."""
        if hasattr(self.evaluator, "layer_inputs") and self.data is not None:  # ONNX: MatMul/Gemm inputs from onnxruntime
            return {kernel: LayerTensors(kernel, "Dense", {}, kernel, bias, stats, layout)
                    for kernel, (bias, layout, stats) in self.evaluator.layer_inputs(CALIBRATION_SAMPLES).items()
                    if is_lossy_candidate(self.model.tensors[kernel])}
        if not isinstance(self.evaluator, KerasEvaluator) or self.data is None:
            return {}
        # layer_weights only indexes the mapping it is given: names in, names out.
        names = model_io.layer_weights(self.model, {n: n for n in self.model.tensors})
        classes = {layer["config"].get("name"): layer for layer in _config_layers(self.evaluator.config)}
        found: dict[str, LayerTensors] = {}
        for layer, tensor_names in names.items():
            spec = classes.get(layer)
            if spec is None or spec["class_name"] not in CALIBRATED_LAYERS or not isinstance(tensor_names, list) or not tensor_names:
                continue
            config = spec["config"]
            bias = tensor_names[1] if config.get("use_bias", True) and len(tensor_names) > 1 else None
            if is_lossy_candidate(self.model.tensors[tensor_names[0]], layer_weight(self.model.source_format, tensor_names[0])):
                found[tensor_names[0]] = LayerTensors(layer, spec["class_name"], config, tensor_names[0], bias)
        if found:
            self._gather_statistics(found)
        return found

    def _gather_statistics(self, layers: dict[str, LayerTensors]) -> None:
        x = self.data.x[:CALIBRATION_SAMPLES]
        network = self.evaluator.network(self.model.tensors)
        inputs = network.layer_inputs(x, [info.layer for info in layers.values()])
        for info in layers.values():
            values = inputs[info.layer]
            if info.class_name == "Conv2D":
                config = info.config
                patches = calibrate.conv_patches(values, tuple(config["kernel_size"]), tuple(config["strides"]), config["padding"], tuple(config.get("dilation_rate", (1, 1))))
                info.stats = calibrate.LayerStatistics(patches)
            else:
                info.stats = calibrate.LayerStatistics.of(values)

    # step 1: sensitivity ----------------------------------------------------------------------

    def trials_for(self, name: str) -> list[Trial]:
        """Encode and measure every candidate of one tensor."""
        array = self.model.tensors[name]
        layer = self.layers.get(name)
        calibrated = layer is not None and layer.stats is not None
        cache = _Factorisations(array, layer, self.model.tensors.get(layer.bias) if calibrated else None)
        trials = []
        for candidate in candidates_for(array, calibrated):
            try:
                trials.append(self._trial(name, array, candidate, layer, cache))
            except ConfigError:
                continue  # e.g. a rank that does not save space for this shape
        return trials

    def _trial(self, name: str, array: np.ndarray, candidate: Candidate, layer: LayerTensors | None, cache: "_Factorisations") -> Trial:
        plan = candidate.plan
        if candidate.mode == "data":
            values, decomposition = self._prepare(array, candidate, layer, cache)
        else:
            values, decomposition = array, (cache.plain() if plan.transform == "svd" else None)
        if decomposition is not None:  # factor once per tensor, not once per candidate
            plan = replace(plan, transform_params={**plan.transform_params, "decomposition": decomposition})
        encoded = encode_tensor(name, values, plan)
        tensors = dict(self.model.tensors)
        tensors[name] = encoded.reconstruction
        bias = None
        if layer is not None and layer.bias is not None and layer.stats is not None:
            bias = calibrate.corrected_bias(self.model.tensors[layer.bias], _as_matrix(array, layer.layout),
                                            _as_matrix(encoded.reconstruction, layer.layout), layer.stats)
            tensors[layer.bias] = bias
        stored = sum(len(blob) for blob in encoded.blobs)
        return Trial(candidate, encoded, stored, self._drop(tensors), bias)

    def _prepare(self, array: np.ndarray, candidate: Candidate, layer: LayerTensors, cache: "_Factorisations"):
        """Data-aware values for a candidate, and their SVD when it is known: (values, decomposition or None).

        GPTQ-style error feedback onto an importance-weighted k-means codebook or onto
        the uniform grid, or the activation-aware low-rank matrix.
        """
        stats = layer.stats
        if candidate.rank is not None:
            if layer.layout != "last" and array.ndim != 2:
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
        """Search; every tensor not eligible for lossy storage stays lossless."""
        started = time.monotonic()
        optimizer = model_io.optimizer_prefix(self.model.source_format)
        exact = model_io.exact_names(self.model)  # e.g. an ONNX model's shapes and indices
        names = [
            n
            for n, a in self.model.tensors.items()
            if is_lossy_candidate(a, layer_weight(self.model.source_format, n)) and not (optimizer and n.startswith(optimizer)) and n not in exact
        ]
        lossless = {n: encode_tensor(n, a, lossless_plan(a)) for n, a in self.model.tensors.items()}
        options: dict[str, list[Trial]] = {}
        for index, name in enumerate(names):
            if progress:
                progress(index, len(names), name)
            baseline_trial = Trial(Candidate("lossless", lossless_plan(self.model.tensors[name])), lossless[name], sum(map(len, lossless[name].blobs)), 0.0)
            options[name] = _pareto(baseline_trial, self.trials_for(name))
            self.log(f"{name}: {len(options[name])} useful candidates")
        if progress:
            progress(len(names), len(names), "")
        best = self._choose(options, max_drop)
        encoded = dict(lossless)
        choices = {}
        for name, trial in best["trials"].items():
            encoded[name] = trial.encoded
            choices[name] = trial.candidate.label
            if trial.bias is not None:
                bias_name = self.layers[name].bias
                encoded[bias_name] = encode_tensor(bias_name, trial.bias, lossless_plan(trial.bias))
        return SearchResult(encoded, choices, self.baseline, best["measured"], best["raw_drop"], best["drop"], self.margin,
                            self.evaluator.metric, self.evaluations, time.monotonic() - started)

    def _choose(self, options: dict[str, list[Trial]], max_drop: float) -> dict:
        """Pick the plan: allocation targets bisected on the *measured* drop, then greedy refinement.

        The summed per-tensor drops only guide (drops interact), so every
        candidate plan is measured; the smallest measured-feasible one wins, the
        lossless plan to start with.
        """
        lossless = {n: t[0] for n, t in options.items()}
        best = self._measured_plan(lossless)
        low, high, expanding = 0.0, 4 * max(max_drop, 1e-9), True
        for _ in range(10):
            target = high if expanding else (low + high) / 2
            plan = self._measured_plan(_allocate(options, target))
            self.log(f"target {target:.5f}: {plan['bytes']} bytes, drop {plan['raw_drop']:.5f} (with margin {plan['drop']:.5f})")
            if plan["drop"] <= max_drop:
                best = min(best, plan, key=lambda p: p["bytes"])
                low, high = target, (high * 4 if expanding else high)
            else:
                high, expanding = target, False
        return self._refine(best, options, max_drop)

    def _refine(self, plan: dict, options: dict[str, list[Trial]], max_drop: float, rounds: int = 12) -> dict:
        """Greedy descent: move one tensor to its next smaller option while the measured drop fits."""
        for _ in range(rounds):
            improved = None
            for name, front in options.items():
                current = plan["trials"][name]
                smaller = [t for t in front if t.stored_bytes < current.stored_bytes]
                if not smaller:
                    continue
                step = max(smaller, key=lambda t: t.stored_bytes)  # the nearest smaller option
                candidate = self._measured_plan({**plan["trials"], name: step})
                if candidate["drop"] <= max_drop and (improved is None or candidate["bytes"] < improved["bytes"]):
                    improved = candidate
            if improved is None:
                break
            self.log(f"refined: {improved['bytes']} bytes, drop {improved['raw_drop']:.5f} (with margin {improved['drop']:.5f})")
            plan = improved
        return plan

    def _measured_plan(self, trials: dict[str, Trial]) -> dict:
        """Measure a combination; its ``drop`` includes the noise margin (margin × standard error)."""
        samples = self._samples(self._combined(trials))
        measured = float(np.mean(samples))
        raw = self.evaluator.drop(self.baseline, measured)
        error = self.evaluator.drop_error(self.baseline_samples, samples)
        return {
            "trials": trials,
            "measured": measured,
            "raw_drop": raw,
            "drop": raw + self.margin * error,
            "bytes": sum(t.stored_bytes for t in trials.values()),
        }

    def _combined(self, trials: dict[str, Trial]) -> dict[str, np.ndarray]:
        tensors = dict(self.model.tensors)
        for name, trial in trials.items():
            tensors[name] = trial.encoded.reconstruction
            if trial.bias is not None:
                tensors[self.layers[name].bias] = trial.bias
        return tensors


class _Factorisations:
    """Per-tensor work shared by its candidates, done on first use."""

    def __init__(self, array: np.ndarray, layer: LayerTensors | None, bias: np.ndarray | None):
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


def _pareto(lossless: Trial, trials: list[Trial]) -> list[Trial]:
    """The lossless trial, then the trials smaller than it that no other trial beats on both size and drop.

    The lossless trial comes first whatever the others measured: it changes no output,
    so it is the one choice that is always within any budget (the fallback of
    :meth:`BudgetSearch._choose`), even when a lossy trial measured a drop of 0 or less.
    """
    ordered = sorted(trials, key=lambda t: (max(t.drop, 0.0), t.stored_bytes))
    front, smallest = [lossless], lossless.stored_bytes
    for trial in ordered:
        if trial.stored_bytes < smallest:
            front.append(trial)
            smallest = trial.stored_bytes
    return front


def _allocate(options: dict[str, list[Trial]], target: float, bins: int = 400) -> dict[str, Trial]:
    """Smallest total bytes whose summed (non-negative) drops fit *target*: a knapsack over drop bins.

    Exact up to the discretisation (drops rounded up to target/bins), unlike a
    Lagrangian sweep, which only reaches plans on the convex hull.  Each front's
    first trial is lossless (drop 0), so a solution always exists.
    """
    unit = max(target, 1e-12) / bins
    names = list(options)
    units = {n: [min(bins + 1, math.ceil(max(t.drop, 0.0) / unit - 1e-9)) for t in options[n]] for n in names}
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


def _config_layers(config: dict) -> list[dict]:
    """Layer entries of a Sequential or Functional model_config, nested models flattened."""
    layers = []
    for layer in config.get("config", {}).get("layers", []):
        if layer.get("class_name") in ("Sequential", "Functional", "Model"):
            layers += _config_layers(layer)
        else:
            layers.append(layer)
    return layers

