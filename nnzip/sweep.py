"""The 2017 study's experiments as a command: quality against one method's setting.

For one method (SVD rank, fraction pruned, k-means bits, fraction of DCT
coefficients kept) and each setting on its ladder, the chosen tensors — every
lossy-eligible weight matrix, or the layer named by ``--layer`` — are encoded for
real; the model is run on the data with the rebuilt weights; and the size of
the complete ``.nnz`` file that setting gives is recorded.  Other tensors stay
lossless, and so does a target a setting cannot apply to (an SVD rank that would
not save space on a small matrix): the point lists it in ``fallbacks`` and its
``tensor_error`` averages only the tensors the setting changed.
"""

from __future__ import annotations

import csv
import io as _io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import api
from .container import write_container
from .errors import ConfigError, NoSaving
from .evaluate import Evaluator
from .model import Model
from .pipeline import TensorPlan
from .stages.base import LossyRangeError
from . import formats
from .plan import is_lossy_candidate, layer_weight, matches

METHODS = ("svd", "prune", "kmeans", "fft")


@dataclass
class SweepPoint:
    """One setting, measured."""

    method: str
    setting: float
    metric: str
    value: float
    file_bytes: int
    tensor_error: float
    #: Target tensors the setting could not apply to (stored losslessly instead).
    fallbacks: tuple[str, ...] = ()


def settings_for(method: str, shape: tuple[int, ...]) -> list[float]:
    """The ladder of settings for *method* on a tensor of *shape* (largest in the study's style)."""
    if method == "kmeans":
        return list(range(1, 9))
    if method == "prune":
        return [0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98]
    if method == "fft":
        return [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9]
    if method == "svd":
        from .stages.base import ArraySpec
        from .stages.svd import SVD

        spec = ArraySpec(np.dtype("<f4"), (math.prod(shape[:-1]), shape[-1]))
        return [r for r in (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192) if SVD.saves_space(spec, r)] or [1]
    raise ConfigError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")


def plan_for(method: str, setting: float) -> TensorPlan:
    """The stage chain one sweep setting stands for (float32 values, as the study kept them)."""
    if method == "kmeans":
        return TensorPlan("dense", {}, [("kmeans", {"bits": int(setting)})])
    if method == "prune":
        return TensorPlan("csr", {"prune": setting})
    if method == "fft":
        return TensorPlan("fft", {"keep": setting, "select": "largest", "transform": "dct"})
    return TensorPlan("svd", {"rank": int(setting)})


def targets(model: Model, layer: str | None) -> list[str]:
    """The tensors a sweep changes: lossy-eligible ones, optionally only those matching *layer*."""
    exact = formats.exact_names(model)  # e.g. an ONNX model's shapes and indices
    names = [n for n, a in model.tensors.items() if is_lossy_candidate(a, layer_weight(model.source_format, n)) and n not in exact and (layer is None or matches(layer, n))]
    if not names:
        raise ConfigError(f"no weight matrix matches --layer {layer!r}" if layer else "the model has no weight matrix to compress")
    return names


def run_sweep(model: Model, filename: str, evaluator: Evaluator, method: str, layer: str | None = None, progress=None) -> list[SweepPoint]:
    """Measure every setting of *method*; one point per setting that applies to the targets."""
    names = targets(model, layer)
    # The ladder follows the largest target; smaller ones fall back where a setting cannot apply.
    ladder = settings_for(method, max((model.tensors[n].shape for n in names), key=math.prod))
    points = []
    for index, setting in enumerate(ladder):
        if progress:
            progress(index, len(ladder), f"{method}={setting}")
        plans = {name: plan_for(method, setting) for name in names}
        try:
            header, blobs, reports = api.encode_model(model, filename, plans=plans)
        except (NoSaving, LossyRangeError):  # the setting does not suit a target's values: no point for it
            continue
        rebuilt = dict(model.tensors)
        rebuilt.update(_reconstructions(model, blobs, header))
        size = write_container(_io.BytesIO(), header, blobs)
        applied = [r for r in reports if r.name in names and not r.note]
        fallbacks = tuple(r.name for r in reports if r.name in names and r.note)
        error = float(np.mean([r.error for r in applied])) if applied else 0.0
        points.append(SweepPoint(method, setting, evaluator.metric, evaluator.measure(rebuilt), size, error, fallbacks))
    if progress:
        progress(len(ladder), len(ladder), "")
    return points


def _reconstructions(model: Model, blobs: list[bytes], header: dict) -> dict[str, np.ndarray]:
    """Decode the tensors of an in-memory encoding, exactly as a reader would."""
    from .pipeline import decode_tensor

    sizes = [len(b) for b in blobs]
    return {entry["name"]: decode_tensor(entry, lambda i: blobs[i], sizes) for entry in header["tensors"]}


def write_csv(points: list[SweepPoint], path: Path) -> None:
    """Write the points as CSV (method, setting, metric, value, file_bytes, tensor_error, kept_lossless)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "setting", "metric", "value", "file_bytes", "tensor_error", "kept_lossless"])
        for p in points:
            writer.writerow([p.method, p.setting, p.metric, f"{p.value:.6g}", p.file_bytes, f"{p.tensor_error:.6g}", " ".join(p.fallbacks)])


def plot(points: list[SweepPoint], path: Path, title: str, baseline: float) -> None:
    """Quality and real file size against the setting, as a PNG (needs matplotlib: ``pip install nnzip[plot]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'nnzip[plot]'") from None
    method = points[0].method
    xs = [p.setting for p in points]
    fig, left = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    left.plot(xs, [p.value for p in points], "o-", color="tab:blue", label=points[0].metric)
    left.axhline(baseline, color="tab:blue", linestyle=":", linewidth=1, label=f"original ({baseline:.4g})")
    left.set_xlabel({"svd": "rank", "prune": "fraction pruned", "kmeans": "bits per weight (k-means)", "fft": "fraction of DCT coefficients kept"}[method])
    left.set_ylabel(points[0].metric, color="tab:blue")
    if method in ("svd",):
        left.set_xscale("log", base=2)
    right = left.twinx()
    right.plot(xs, [p.file_bytes / 1024 for p in points], "s--", color="tab:red", label=".nnz size")
    right.set_ylabel(".nnz file size (KiB)", color="tab:red")
    left.set_title(title)
    lines = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(lines, [line.get_label() for line in lines], loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
