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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import chains, formats
from .container import write_container
from .encoder import encode_model
from .errors import ConfigError, NnzipError, NoSaving
from .model import Model
from .outputs import atomic_output, check_writable
from .pipeline import TensorPlan
from .plan import close_matches, is_lossy_candidate, layer_weight, matches
from .stages.base import LossyRangeError
from .workers import Progress

if TYPE_CHECKING:
    from .evaluate import Evaluator

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


@dataclass
class SweepReport:
    """What :func:`run` measured (``nnzip sweep`` prints it): the original's score and one point per setting."""

    #: The model file, as the caller named it.
    model: Path
    method: str
    layer: str | None
    metric: str
    #: The original model's score on the data.
    baseline: float
    points: list[SweepPoint]
    #: Where :meth:`save` writes the CSV and the plot (both checked writable before the sweep ran).
    csv_path: Path | None = None
    plot_path: Path | None = None
    force: bool = False

    def save(self) -> None:
        """Write the CSV and the plot (when asked for; the plot only when there are points), each atomically."""
        if self.csv_path is not None:
            with atomic_output(self.csv_path, self.force) as temporary:
                write_csv(self.points, temporary)
        if self.plot_path is not None and self.points:
            with atomic_output(self.plot_path, self.force) as temporary:
                plot(self.points, temporary, f"{self.model.name}: {self.method}{' (' + self.layer + ')' if self.layer else ''}", self.baseline)


def run(model: str | os.PathLike, data: str | os.PathLike, method: str, *, layer: str | None = None, eval_hook: str | None = None,
        metric: str | None = None, csv_path: str | os.PathLike | None = None, plot_path: str | os.PathLike | None = None, force: bool = False,
        progress: Progress | None = None) -> SweepReport:
    """Sweep *method*'s ladder on the model file *model*, scored on *data* (what ``nnzip sweep`` runs).

    *layer* narrows the targets to the tensors it matches (a pattern matching none is an
    error naming the close matches); *eval_hook* and *metric* are verify's.  *csv_path* and
    *plot_path* are checked writable (with *force*) before the model is read; :meth:`SweepReport.save` writes them.

    >>> import nnzip
    >>> report = nnzip.api.sweep("mlp.h5", "fashion-mnist-test.npz", "kmeans")    # doctest: +SKIP
    >>> [(p.setting, p.value) for p in report.points][:2]                          # doctest: +SKIP
    [(1, 0.41), (2, 0.78)]
    """
    from .evaluate import load_data, make_evaluator

    model_path = Path(model)
    csv_path, plot_path = (Path(path) if path is not None else None for path in (csv_path, plot_path))
    for path in (csv_path, plot_path):
        if path is not None:
            check_writable(path, force)
    source = formats.read_model(model_path)
    check_selection(layer, list(source.tensors))
    evaluator = make_evaluator(source, load_data(data), eval_hook, metric)
    baseline = evaluator.measure(source.tensors)
    points = run_sweep(source, model_path.name, evaluator, method, layer, progress)
    return SweepReport(model_path, method, layer, evaluator.metric, baseline, points, csv_path, plot_path, force)


def check_selection(pattern: str | None, names: list[str]) -> None:
    """``sweep --layer``: a pattern matching no tensor at all is an error naming the close matches (as compress's --layer)."""

    if pattern is not None and not any(matches(pattern, name) for name in names):
        raise NnzipError(f"--layer {pattern!r} matches no tensor{close_matches(pattern, names)}")


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
        return chains.chain(chains.dense(), chains.kmeans(int(setting)))
    if method == "prune":
        return chains.chain(chains.csr(setting))
    if method == "fft":
        return chains.chain(chains.fft(setting, "largest", "dct"))
    return chains.chain(chains.svd(int(setting)))


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
            header, blobs, reports = encode_model(model, filename, plans=plans)
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
