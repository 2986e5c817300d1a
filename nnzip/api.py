"""The public operations: compress, decompress, inspect, verify.

The CLI is a thin layer over these; library users call them directly
(``import nnzip; nnzip.compress("model.h5")``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import re
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from . import __version__, formats
from .container import BlobSpool, open_container, write_container, write_spooled
from .errors import ConfigError, FormatError, NnzipError, NoSaving
from .stages.base import LossyRangeError
from .limits import DEFAULT_LIMITS, DecodeLimits
from .model import LazyTensors, Model
from .outputs import atomic_output, check_writable
from .pipeline import (EncodedTensor, TensorPlan, check_file_cost, check_tensor_entry, decode_tensor, encode_tensor, logical_values, part_blobs,
                       serialized_bytes, serialized_entropy)
from .plan import PlanRules, Settings, choose_plan, exclusion_note, layer_weight, lossless_plan

if TYPE_CHECKING:
    from .distributed import Scheduler
    from .evaluate import Comparison

NNZ_SUFFIX = ".nnz"

#: Called with (done, total, tensor name) as tensors are processed.
Progress = Callable[[int, int, str], None]


@dataclass
class TensorReport:
    """What happened to one tensor during compression."""

    name: str
    shape: tuple[int, ...]
    method: str
    original_bytes: int
    stored_bytes: int
    error: float
    note: str = ""


@dataclass
class CompressReport:
    """Summary of a compression run, as :func:`nnzip.compress` returns it.

    >>> import io, numpy as np, nnzip
    >>> report = nnzip.compress({"w": np.zeros((64, 64), np.float32)}, io.BytesIO())
    >>> report.original_bytes, report.ratio > 10, report.tensors[0].error
    (16384, True, 0.0)
    """

    output: Path
    original_bytes: int
    file_bytes: int
    tensors: list[TensorReport] = field(default_factory=list)
    #: True when the file decodes to more than rule 4.7's default cap for its size, so that
    #: decompress, inspect and verify need the ``max_output`` (``--max-output``) compress was given.
    needs_max_output: bool = False

    @property
    def ratio(self) -> float:
        """Source tensor bytes (kept tensors) / output file bytes."""
        return self.original_bytes / max(self.file_bytes, 1)


@dataclass
class Workers:
    """Where the work runs: *tensors* encodes or decodes whole tensors, *chunks* the chunks of one part.

    Two executors, so that a tensor's task waiting for its chunks never starves the pool that
    would run them.  Any :class:`concurrent.futures.Executor` can stand in for either (a
    ``dask.distributed`` client's, say): nnzip only calls ``submit`` and ``map``.  ``None``
    runs the work inline.  The bytes written never depend on them.
    """

    tensors: Executor | None = None
    chunks: Executor | None = None
    #: How many tensors may be in flight at once (each holds its source and its blobs).
    window: int = 1
    #: A :class:`nnzip.distributed.Cluster` when the tensors go to a dask cluster: it says what
    #: travels (file slices, not closures over open files) and *tensors* submits there.
    remote: object | None = None


@contextlib.contextmanager
def workers(jobs: int | None, scheduler: Scheduler | None = None) -> Iterator[Workers]:
    """Thread pools of *jobs* workers (None: ``os.cpu_count()``), or inline work for one job.

    Threads suffice: the compiled coders release the GIL (numba ``nogil=True``) and numpy
    does for large operations, so no data is copied between processes.  With *scheduler*,
    the tensors go to that dask cluster's workers instead (:mod:`nnzip.distributed`) and
    *jobs* is not used.
    """
    if scheduler is not None:
        from .distributed import cluster_workers

        with cluster_workers(scheduler) as pool:
            yield pool
        return
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if type(jobs) is not int or jobs < 1:
        raise ConfigError(f"jobs must be a positive integer, not {jobs!r}")
    if jobs == 1:
        yield Workers()
        return
    with ThreadPoolExecutor(jobs, "nnzip-tensor") as tensors, ThreadPoolExecutor(jobs, "nnzip-chunk") as chunks:
        yield Workers(tensors, chunks, jobs)


def _in_order(executor: Executor | None, function: Callable, items: Iterable, window: int) -> Iterator:
    """``function(item)`` for each item, in order, with at most *window* computed ahead on *executor*."""
    if executor is None:
        yield from map(function, items)
        return
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(executor.submit(function, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


#: Tensors in flight (encoded or decoded ahead) may hold this many source bytes together, or
#: the largest tensor's when that is more (one tensor always runs): bounded memory whatever --jobs.
WINDOW_MIN_BYTES = 64 * 2**20


def _in_order_within(executor: Executor | None, function: Callable, items: Iterable, window: int, budget: int,
                     weight: Callable) -> Iterator:
    """As :func:`_in_order`, and the items in flight weigh at most *budget* together (one always runs)."""
    if executor is None:
        yield from map(function, items)
        return
    pending: collections.deque = collections.deque()
    held = 0
    for item in items:
        size = weight(item)
        while pending and (len(pending) >= window or held + size > budget):
            future, done = pending.popleft()
            held -= done
            yield future.result()
        pending.append((executor.submit(function, item), size))
        held += size
    while pending:
        yield pending.popleft()[0].result()


def tensor_bytes(model: Model, name: str) -> int:
    """Bytes of one tensor's values, without reading a lazily read one."""
    if isinstance(model.tensors, LazyTensors):
        return model.tensors.nbytes_of(name)
    return int(model.tensors[name].nbytes)


def default_output(source: Path) -> Path:
    """``model.h5`` -> ``model.nnz`` (gzip/zstd habit: beside the source)."""
    return source.with_suffix(NNZ_SUFFIX)


#: Elements per block of the error statistics: two float64 blocks of 8 MiB, whatever the tensor's size.
ERROR_BLOCK = 2**20


def relative_error(original: np.ndarray, rebuilt: np.ndarray) -> float:
    """``||original - rebuilt||_F / ||original||_F`` (0 for bit-identical copies, also of zeros and NaN).

    Values near the float range's end are scaled before squaring so the norms do not
    overflow; the result is ``inf`` only when non-finite values differ or the original is 0.
    The sums run over blocks of :data:`ERROR_BLOCK` elements in float64, so the working
    memory is a few MiB, not three float64 copies of the tensor (bounded memory, §4.4).
    """
    if _same_view(original, rebuilt):  # a lossless encoding hands back (a view of) its input itself
        return 0.0
    original, rebuilt = np.asarray(original), np.asarray(rebuilt)
    if original.shape != rebuilt.shape:
        original, rebuilt = np.broadcast_arrays(original, rebuilt)
    if not original.size:
        return 0.0
    with np.errstate(over="ignore", invalid="ignore"):  # NaN and huge values are handled below
        diff, norm = (math.sqrt(total) for total in _square_sums(original, rebuilt))
        if diff == 0.0:
            return 0.0
        if math.isfinite(diff) and math.isfinite(norm):
            return diff / norm if norm else math.inf
        return _scaled_relative_error(original, rebuilt)


def _blocks(original: np.ndarray, rebuilt: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Both arrays flattened, as float64 blocks of at most :data:`ERROR_BLOCK` elements."""
    a, b = original.reshape(-1), rebuilt.reshape(-1)
    for start in range(0, a.size, ERROR_BLOCK):
        yield a[start:start + ERROR_BLOCK].astype(np.float64), b[start:start + ERROR_BLOCK].astype(np.float64)


def _square_sums(original: np.ndarray, rebuilt: np.ndarray, scale: float = 1.0) -> tuple[float, float]:
    """(sum of (original - rebuilt)**2, sum of original**2), both divided by scale**2 first, blockwise."""
    diff = norm = 0.0
    for a, b in _blocks(original, rebuilt):
        if scale != 1.0:
            a /= scale
            b /= scale
        np.subtract(a, b, out=b)
        diff += float(b.dot(b))
        norm += float(a.dot(a))
    return diff, norm


def _scaled_relative_error(original: np.ndarray, rebuilt: np.ndarray) -> float:
    """The relative error where the plain sums overflowed or met NaN/infinity."""
    if original.dtype == rebuilt.dtype and _same_bits(original, rebuilt):
        return 0.0
    scale = 0.0
    for a, b in _blocks(original, rebuilt):
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            return math.inf
        scale = max(scale, float(np.abs(a).max()), float(np.abs(b).max()))
    diff, norm = (math.sqrt(total) for total in _square_sums(original, rebuilt, scale))
    return diff / norm if norm else math.inf


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether *b* is *a* or a view of the very same memory, type and layout (so equal bit for bit)."""
    if a is b:
        return True
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return False
    return (a.dtype == b.dtype and a.shape == b.shape and a.strides == b.strides
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays of one dtype and shape hold the very same bytes (NaN payloads included), blockwise."""
    a, b = a.reshape(-1), b.reshape(-1)
    step = max(1, ERROR_BLOCK // max(a.itemsize, 1))
    return all(np.ascontiguousarray(a[i:i + step]).tobytes() == np.ascontiguousarray(b[i:i + step]).tobytes()
               for i in range(0, a.size, step))


#: Configuration fields worth showing per stage in ``inspect``'s method column.
_SHOWN_FIELDS = {
    "svd": ("rank",),
    "csr": ("index_coding",),
    "fft": ("transform", "select"),
    "kmeans": ("bits",),
    "uniform": (),
    "cast": ("dtype",),
}


def describe_chain(entry: dict) -> str:
    """Human form of a tensor's chain, e.g. ``csr(density=0.2,index_coding=gaps) > kmeans(bits=4)``."""
    transform = entry["transform"]
    text = _stage_text(transform, _density(entry))
    if "widen" in entry:  # the chain ran on the values of a bfloat16 tensor (spec/container.md §4.5)
        text = f"{entry['widen']}: {text}"
    values = [_stage_text(codec) for part in entry["parts"] for codec in part["codecs"] if codec["name"] in ("kmeans", "cast", "uniform")]
    for value in dict.fromkeys(values):
        text += f" > {value}"
    return text


def _density(entry: dict) -> dict:
    """For pruning and kept coefficients: the fraction of the tensor's entries stored."""
    kept = entry["transform"]["configuration"].get("kept")
    size = math.prod(entry["shape"])
    if entry["transform"]["name"] in ("csr", "fft") and isinstance(kept, int) and size:
        return {"density": round(kept / size, 4)}
    return {}


def _stage_text(ref: dict, extra: dict | None = None) -> str:
    config = ref.get("configuration", {})
    shown = {**(extra or {}), **{k: config[k] for k in _SHOWN_FIELDS.get(ref["name"], ()) if k in config}}
    inner = ",".join(f"{k}={v}" for k, v in shown.items())
    return f"{ref['name']}({inner})" if inner else ref["name"]


# --- compress ---------------------------------------------------------------------------


@dataclass
class Budget:
    """``--data``/``--max-drop``: search for the smallest plan within an accuracy budget.

    >>> import nnzip
    >>> budget = nnzip.Budget("fashion-mnist-val.npz", max_drop=0.005)   # half an accuracy point
    >>> nnzip.compress("mlp.h5", "mlp.nnz", budget=budget)                # doctest: +SKIP
    """

    data: str | os.PathLike
    max_drop: float
    #: ``package.module:function`` scoring a weight dict, for files without an architecture.
    eval_hook: str | None = None
    #: "accuracy" or "mse"; default: chosen from the data and the model's output.
    metric: str | None = None
    #: Called with one line of search progress at a time.
    log: Callable[[str], None] | None = None
    #: Standard errors of the measured drop added before comparing with max_drop.
    margin: float = 1.0
    #: Called with one line per candidate tried (``-v``), in words.
    detail: Callable[[str], None] | None = None
    #: With False, only tensors the fixed-flag rule makes lossy are in play (not biases and small kernels).
    every_tensor: bool = True


def compress(
    source: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    rules: PlanRules | None = None,
    budget: Budget | None = None,
    keep_optimizer: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    plans: dict[str, TensorPlan] | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
    jobs: int | None = 1,
    scheduler: Scheduler | None = None,
    strip: bool = False,
) -> CompressReport:
    """Compress a model file into a ``.nnz`` container that :func:`decompress` reads within *limits*.

    *rules* gives per-tensor settings (default: lossless).  With *budget*, the
    plan is searched on the budget's data instead (rules are then not used).
    *plans*, when given, fixes the exact stage chain of named tensors.
    Whatever is written passes the reader's own checks under *limits* (its header
    cap, blob count, rule 4.7's decoded-size cap for the file's final size, every
    rule of §3-§5); a file that would not is refused and nothing is left behind.
    *jobs* worker threads (None: one per core) code the chunks of large parts; the file's
    bytes are the same whatever it is, and the same with *scheduler* (a dask cluster whose
    workers encode the tensors, reading them from the shared file system: :mod:`nnzip.distributed`).
    *strip* leaves out what the rebuilt file does not
    need to load and run: Keras' training configuration (:func:`strip_structure`) and the
    header's informative ``plan`` and per-tensor ``stats`` (:func:`strip_informative`).
    """
    source = Path(source)
    output = Path(output) if output is not None else default_output(source)
    if budget is not None and scheduler is not None:
        raise ConfigError("--scheduler spreads fixed settings over a cluster; the --max-drop search runs on this machine: drop one of them")
    if output.resolve() == source.resolve():
        raise NnzipError(f"output {output} would overwrite the input")
    check_writable(output, force, source)  # before reading the model or a long search, not only at the end
    # Without a budget search, compression streams: tensors are read when encoded (lazily, where
    # the format allows) and their blobs spooled to an unnamed temporary file beside the output.
    model = formats.read_model(source, keep_optimizer=keep_optimizer, limits=limits, lazy=budget is None)
    if strip:
        strip_structure(model)
    spool = None
    try:
        if budget is not None:
            header, blobs, reports = encode_with_budget(model, source.name, budget, progress, jobs)
        else:
            spool = BlobSpool(output.parent if str(output.parent) else None)
            with workers(jobs, scheduler) as pool:
                header, blobs, reports = encode_model(model, source.name, rules, plans, progress, pool, spool, source)
        if strip:
            header = strip_informative(header)
        with atomic_output(output, force, source) as temporary:
            with open(temporary, "wb") as handle:
                size = write_spooled(handle, header, spool) if spool is not None else write_container(handle, header, blobs)
            decoded = _check_readable(temporary, output, limits)
    finally:
        if spool is not None:
            spool.close()
    return CompressReport(output, model.nbytes, size, reports, decoded > DEFAULT_LIMITS.output_cap(size))


def _check_readable(path: Path, output: Path, limits: DecodeLimits) -> int:
    """Run the reader's own checks on a file just written; returns its decoded tensor bytes.

    The writer applies the reader's caps this way rather than copying them, so that
    every rule a reader adds is one the writer keeps.
    """
    try:
        with open_container(path) as container:
            check_header(container.header, container.file_size, limits)
            return sum(math.prod(entry["shape"]) * np.dtype(entry["dtype"]).itemsize for entry in container.header["tensors"])
    except FormatError as exc:
        hint = ""
        if "rule 4.7" in str(exc):
            hint = "; to write it anyway give compress --max-output SIZE, and the same option to decompress, inspect and verify"
        raise NnzipError(f"{output} not written: nnzip decompress would refuse it ({exc}){hint}") from None


def encode_model(
    model: Model,
    filename: str,
    rules: PlanRules | None = None,
    plans: dict[str, TensorPlan] | None = None,
    progress: Progress | None = None,
    pool: Workers | None = None,
    spool: BlobSpool | None = None,
    source: Path | None = None,
) -> tuple[dict, list[bytes], list[TensorReport]]:
    """Encode every tensor of *model*; returns (header without blob table, blobs, reports).

    A lossy setting that cannot apply to a tensor (NaN or infinity in it, not a layer
    weight, already float16, a stage refusing its values) leaves that tensor exact and
    says why in its report's note; it never stops the run.  Only a *plans* entry's own
    value stages failing is an error (the caller chose that chain).  *pool* encodes
    tensors and chunks in parallel; the result is the same without it.  With *spool*,
    each tensor's blobs go to it as soon as the tensor is encoded and are dropped, with its
    reconstruction (streaming: only the tensors in flight are held); the returned blob list
    is then empty.  *source*, the file *model* was read from, lets the workers of a dask
    *pool* read its tensors themselves.
    """
    rules = rules or PlanRules(Settings(lossless=True), [])
    plans = plans or {}
    pool = pool or Workers()
    encoded = []
    total = len(model.tensors)
    optimizer = formats.optimizer_prefix(model.source_format)
    exact = formats.exact_names(model)  # e.g. an ONNX model's shapes and indices: not weights
    elements = formats.element_types(model)  # bfloat16 and 8-bit floats carried as raw bits

    streaming = spool is not None

    def jobs():
        for index, name in enumerate(model.tensors):
            if progress:
                progress(index, total, name)
            if (optimizer and name.startswith(optimizer)) or name in exact:
                yield TensorJob(name, streaming=streaming)  # kept optimizer state is for resuming training: exact
            elif name in plans:
                yield TensorJob(name, plan=plans[name], streaming=streaming)
            else:
                yield TensorJob(name, settings=rules.settings_for(name), weight=layer_weight(model.source_format, name),
                                element=elements.get(name), streaming=streaming)

    def encode(job):
        return encode_job(job, model.tensors[job.name], pool.chunks)

    # A dask pool runs a module-level function on what can travel (nnzip.distributed).
    if pool.remote is None:
        # Each job reads (lazily, where the format allows) and plans its own tensor, and the
        # tensors in flight are bounded by bytes, so only they are in memory however far ahead the jobs are.
        sizes = {name: tensor_bytes(model, name) for name in model.tensors}
        budget = max([WINDOW_MIN_BYTES, *sizes.values()])
        results = _in_order_within(pool.tensors, encode, jobs(), pool.window, budget, lambda job: sizes[job.name])
    else:  # a dask pool runs a module-level function on what can travel (nnzip.distributed)
        function, items = pool.remote.encoding(model, source, jobs())
        results = _in_order(pool.tensors, function, items, pool.window)
    reports, blobs = [], []
    for item, report in results:
        encoded.append(item)
        reports.append(report)
        if spool is None:
            blobs.extend(item.blobs)
        else:
            for blob in item.blobs:
                spool.add(blob)
            item.blobs = [b""] * len(item.blobs)  # only their number is used from here on (_header)
    if progress:
        progress(total, total, "")
    return _header(model, filename, encoded, rules.to_json()), blobs, reports


@dataclass(frozen=True)
class TensorJob:
    """What encoding one tensor needs besides its values: small plain data, so that it can go to a dask worker.

    With neither *plan* nor *settings* the tensor is stored exactly (kept optimizer state, a
    format's non-weights).
    """

    name: str
    #: The caller's own chain (``plans``): used as it is, its value stages may not fall back.
    plan: TensorPlan | None = None
    #: The settings to choose a chain from (:func:`nnzip.plan.choose_plan`).
    settings: Settings | None = None
    #: What the file says the tensor is (:func:`nnzip.plan.layer_weight`).
    weight: bool | None = None
    #: The element type a raw-bits tensor stands for (``"bfloat16"``, 8-bit floats: :func:`nnzip.formats.element_types`).
    element: str | None = None
    #: Drop the reconstruction once its error is recorded (the caller spools the blobs).
    streaming: bool = False


def encode_job(job: TensorJob, array: np.ndarray, executor: Executor | None = None) -> tuple[EncodedTensor, TensorReport]:
    """Choose the chain for *array*, encode it (with fallbacks) and record its error; chunks on *executor*."""
    note = ""
    if job.plan is not None:
        plan = job.plan
    elif job.settings is None:
        plan = lossless_plan(array)
    else:
        plan, note = choose_plan(array, job.settings, job.weight, job.element)
    item, fallback = _encode_with_fallback(job.name, array, plan, strict=job.plan is not None, executor=executor)
    report = _statistics(job.name, array, item, "; ".join(filter(None, (note, fallback))))
    if job.streaming:
        item.reconstruction = None  # its error is recorded; the source array goes with this job
    return item, report


def encode_with_budget(model: Model, filename: str, budget: Budget, progress: Progress | None = None,
                       jobs: int | None = 1) -> tuple[dict, list[bytes], list[TensorReport]]:
    """Search the smallest plan within *budget* (see :mod:`nnzip.search`) and encode it.

    *jobs* threads (None: one per core) try candidates at once; the plan is the same for any number.

    Tensors the search may not touch for a reason worth telling (NaN or infinity, not a
    layer weight: :func:`nnzip.plan.exclusion_note`) get that note in their report.
    """
    from .evaluate import load_data, make_evaluator
    from .search import BudgetSearch

    data = load_data(budget.data)
    evaluator = make_evaluator(model, data, budget.eval_hook, budget.metric)
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    search = BudgetSearch(model, evaluator, data, budget.log, budget.margin, jobs, budget.every_tensor, budget.detail)
    result = search.run(budget.max_drop, progress)
    encoded = [result.encoded[name] for name in model.tensors]
    optimizer = formats.optimizer_prefix(model.source_format)
    exact = formats.exact_names(model)
    elements = {name: e for name, e in formats.element_types(model).items() if name not in exact}
    notes = {name: exclusion_note(array, layer_weight(model.source_format, name), elements.get(name)) for name, array in model.tensors.items()
             if not (optimizer and name.startswith(optimizer)) and name not in result.choices}
    reports = _add_statistics(model, encoded, notes)
    for item in encoded:  # which candidate the search picked, next to the tensor's error
        if item.entry["name"] in result.choices:
            item.entry["stats"]["choice"] = result.choices[item.entry["name"]]
    _record_bias_corrections(model, result, search.layers, reports)
    return _header(model, filename, encoded, result.to_json(budget.max_drop)), [b for item in encoded for b in item.blobs], reports


def _record_bias_corrections(model: Model, result, layers: dict, reports: list[TensorReport]) -> None:
    """Mark each bias the search changed (bias correction) with ``stats.bias_correction`` (rule 3.9).

    The value names the weight tensor whose lossy storage the new bias compensates, so
    ``inspect`` can say why a tensor no lossy option touches differs from the source; the
    compress report gets a note saying the same.
    """
    by_name = {report.name: report for report in reports}
    for kernel in result.choices:
        bias = getattr(layers.get(kernel), "bias", None)
        if bias is None or bias not in result.encoded or _same_bits(model.tensors[bias], result.encoded[bias].reconstruction):
            continue
        result.encoded[bias].entry["stats"]["bias_correction"] = kernel
        note = f"changed by bias correction to offset the error of {kernel} (stored exact)"
        by_name[bias].note = "; ".join(filter(None, (by_name[bias].note, note)))


def _statistics(name: str, array: np.ndarray, item: EncodedTensor, note: str) -> TensorReport:
    """Record one tensor's error in its header entry (null when not finite, rule 8 of §6); return its report."""
    error = relative_error(logical_values(item.entry, array), logical_values(item.entry, item.reconstruction))
    item.entry["stats"] = {"error": round(error, 8) if math.isfinite(error) else None}
    return TensorReport(name, array.shape, describe_chain(item.entry), array.nbytes, sum(len(b) for b in item.blobs), error, note)


def _add_statistics(model: Model, encoded: list[EncodedTensor], notes: dict[str, str]) -> list[TensorReport]:
    """Record each tensor's error and bytes in its header entry; return the per-tensor reports.

    The header is strict JSON (rule 8 of §6: no NaN or Infinity), so an error that is
    not a finite number is recorded as null.
    """
    reports = []
    for item in encoded:
        name = item.entry["name"]
        array = model.tensors[name]
        error = relative_error(logical_values(item.entry, array), logical_values(item.entry, item.reconstruction))
        stored = sum(len(b) for b in item.blobs)
        item.entry["stats"] = {"error": round(error, 8) if math.isfinite(error) else None}
        reports.append(TensorReport(name, array.shape, describe_chain(item.entry), array.nbytes, stored, error, notes.get(name, "")))
    return reports


def _encode_with_fallback(name: str, array: np.ndarray, plan: TensorPlan, strict: bool = False,
                          executor: Executor | None = None) -> tuple[EncodedTensor, str]:
    """Encode by *plan*; returns the encoding and a note on what fell back.

    A transform that would not save space falls back to dense storage; value stages that
    refuse the values (or a lossy chain whose rebuilt values overflow to infinity) fall
    back to lossless storage, unless *strict* (the caller fixed the chain itself).
    """
    try:
        item = encode_tensor(name, array, plan, executor)
    except (NoSaving, LossyRangeError) as exc:  # the chain does not suit these values; a bad parameter propagates
        if plan.transform == "dense" and (strict or not plan.value_stages):
            raise type(exc)(f"tensor {name}: {exc}") from None
        if plan.transform == "dense":
            return encode_tensor(name, array, lossless_plan(array), executor), f"kept exact: {exc}"
        fallback = TensorPlan("dense", {}, plan.value_stages, widen=plan.widen) if plan.value_stages else lossless_plan(array)
        item, more = _encode_with_fallback(name, array, fallback, strict, executor)
        return item, "; ".join(filter(None, (f"{plan.transform} skipped: {exc}", more)))
    if _lossy(plan) and _overflowed(array, item.reconstruction):
        stages = " > ".join([plan.transform] + [stage for stage, _ in plan.value_stages])
        return encode_tensor(name, array, lossless_plan(array), executor), f"kept exact: {stages} rebuilt values beyond {array.dtype.name}'s range"
    return item, ""


def _lossy(plan: TensorPlan) -> bool:
    return bool(plan.value_stages) or plan.transform not in ("dense", "byteplanes")


def _overflowed(original: np.ndarray, rebuilt: np.ndarray) -> bool:
    """Whether a lossy reconstruction turned finite values into NaN or infinity."""
    if original.dtype.kind != "f":
        return False
    a, b = original.reshape(-1), np.asarray(rebuilt).reshape(-1)
    # block by block: four boolean temporaries of one block, not of the tensor
    return any(bool((~np.isfinite(b[i:i + ERROR_BLOCK]) & np.isfinite(a[i:i + ERROR_BLOCK])).any()) for i in range(0, a.size, ERROR_BLOCK))


def strip_structure(model: Model) -> list[str]:
    """Drop from *model*'s structure what a rebuilt file does not need to load and run; returns what was dropped.

    ``keras-h5``: the root attribute ``training_config``; ``keras-v3``: the ``compile_config``
    member of ``config.json`` (rewritten as ``json.dumps`` writes it, as Keras does).  Keras
    then loads the rebuilt file uncompiled; its weights and predictions are unchanged.  Other
    formats carry nothing of the kind and are left as they are.
    """
    if model.source_format == "keras-h5":
        attrs = model.structure["attrs"]
        kept = [record for record in attrs if record["name"] != "training_config"]
        model.structure["attrs"] = kept
        return ["training_config"] if len(kept) != len(attrs) else []
    if model.source_format == "keras-v3":
        import base64

        for member in model.structure["members"]:
            if member["name"] == "config.json" and "data" in member:
                try:
                    config = json.loads(base64.b64decode(member["data"]))
                except ValueError:
                    return []  # not JSON: Keras could not load it either; keep it as it is
                if not isinstance(config, dict) or "compile_config" not in config:
                    return []
                del config["compile_config"]
                member["data"] = base64.b64encode(json.dumps(config).encode("utf-8")).decode("ascii")
                return ["config.json/compile_config"]
    return []


def strip_informative(header: dict) -> dict:
    """*header* without ``plan`` and the tensors' ``stats``: only shown by ``inspect``, never needed to decode or rebuild.

    On the smallest budget-searched file (``samples/softmax.h5``, 1.8 KB) the search's record
    and the errors take about a third of the stored header.  ``source.dropped`` stays (verify
    reads it), as do ``writer`` (it costs nothing after zlib) and ``source.filename`` (it gives
    the rebuilt file's suffix, rule 3.6).
    """
    tensors = [{key: value for key, value in entry.items() if key != "stats"} for entry in header["tensors"]]
    return {**{key: value for key, value in header.items() if key != "plan"}, "tensors": tensors}


def _header(model: Model, filename: str, encoded: list[EncodedTensor], plan: dict) -> dict:
    entries, blob_index = [], 0
    for item in encoded:
        entry = dict(item.entry)
        # A part's "blob" is the position of its (first) blob in item.blobs; chunks follow it.
        entry["parts"] = [{**part, "blob": blob_index + part["blob"]} for part in entry["parts"]]
        blob_index += len(item.blobs)
        entries.append(entry)
    return {
        "format": "nnzip",
        "writer": f"nnzip {__version__}",
        "source": {
            "format": model.source_format,
            "filename": filename,
            "structure": model.structure,
            "dropped": [d.to_json() for d in model.dropped],
        },
        "plan": plan,
        "tensors": entries,
    }


# --- decompress -------------------------------------------------------------------------


def check_header(header: dict, file_size: int, limits: DecodeLimits = DEFAULT_LIMITS) -> None:
    """Container-level header checks (spec/container.md §3) beyond the blob table, within *limits*.

    Every member that decompress, inspect or verify reads is checked here, the informative
    ones (rules 3.5-3.9) included, so that nothing downstream meets a value of the wrong type.
    """
    if not isinstance(header, dict) or header.get("format") != "nnzip":
        raise FormatError("rule 3.1: header 'format' must be \"nnzip\"")
    source = header.get("source")
    source_format = formats.get_format(source.get("format")) if isinstance(source, dict) else None
    if source_format is None:
        shown = source.get("format") if isinstance(source, dict) else source
        raise FormatError(f"rule 3.2: unknown source format {_shown(shown)}")
    _check_informative(header)
    source_format.check_structure(source.get("structure"))
    tensors = header.get("tensors")
    if not isinstance(tensors, list):
        raise FormatError("rule 3.3: header 'tensors' must be a list")
    names = [t.get("name") if isinstance(t, dict) else None for t in tensors]
    if names != source_format.tensor_names(source["structure"]):
        raise FormatError("rule 3.3: the tensors must be exactly the structure's tensors (§5), in order")
    sizes = blob_sizes(header)
    # Each entry's own rules (§4) first: parts must be a list of objects.
    checked, known = [], set(names)  # strings: the names equal the structure's (rule 3.3)
    for entry in tensors:
        checked.append(check_tensor_entry(entry, sizes, limits))
        _check_stats(entry, known)
    check_file_cost(checked, sizes, limits)  # rule 4.8.2 summed over the file
    referenced = sorted(index for entry in tensors for part in entry["parts"] for index in part_blobs(part))
    if referenced != list(range(len(sizes))):
        raise FormatError("rule 3.4: every blob must be referenced by exactly one part")
    decoded = sum(math.prod(entry["shape"]) * np.dtype(entry["dtype"]).itemsize for entry in tensors)
    cap = limits.output_cap(file_size)
    if decoded > cap:
        raise FormatError(f"rule 4.7: the tensors would take {decoded:,} bytes from a {file_size:,}-byte file (cap {cap:,})")


#: Longest informative label (``writer``, ``stats.choice``, the search's ``metric``), in characters.
MAX_LABEL_CHARS = 1024
#: Largest ``plan`` member, as the writer encodes it (compact JSON, ASCII with ``\\u`` escapes).
MAX_PLAN_CHARS = 2**20
#: Largest ``source.filename``, in bytes: POSIX NAME_MAX.
MAX_FILENAME_BYTES = 255
#: The numbers of ``plan.search`` (rule 3.8) that ``inspect`` prints.
_SEARCH_NUMBERS = ("max_drop", "baseline", "result", "drop", "drop_bound", "margin", "seconds")


def _check_informative(header: dict) -> None:
    """Rules 3.5-3.8: the members only shown to users, or used to pick file names."""
    if "writer" in header and not _is_label(header["writer"]):
        raise FormatError(f"rule 3.5: header 'writer' must be a string of at most {MAX_LABEL_CHARS} characters, not {_shown(header['writer'])}")
    source = header["source"]
    if "filename" in source:
        _check_filename(source["filename"])
    if "dropped" in source:
        _check_dropped(source["dropped"])
    if "plan" in header:
        _check_plan(header["plan"])


def _check_filename(filename: object) -> None:
    """Rule 3.6: a base name a POSIX file system could hold, so it can never name a directory."""
    try:
        # surrogateescape: U+DC80-U+DCFF stand for the undecodable bytes of a POSIX name, as os.fsencode does
        raw = filename.encode("utf-8", "surrogateescape") if isinstance(filename, str) else None
    except UnicodeEncodeError:
        raw = None
    if raw is None or not 0 < len(raw) <= MAX_FILENAME_BYTES or b"\0" in raw or b"/" in raw or raw in (b".", b".."):
        raise FormatError(f"rule 3.6: source.filename must be a base name of 1-{MAX_FILENAME_BYTES} bytes without NUL or '/' "
                          f"(not '.' or '..'), not {_shown(filename)}")


def _check_dropped(dropped: object) -> None:
    """Rule 3.7: the records ``inspect`` lists as dropped optimizer state."""
    if not isinstance(dropped, list):
        raise FormatError(f"rule 3.7: source.dropped must be a list, not {_shown(dropped)}")
    for index, record in enumerate(dropped):
        if not (isinstance(record, dict) and isinstance(record.get("path"), str) and _is_count(record.get("tensors")) and _is_count(record.get("bytes"))):
            raise FormatError(f"rule 3.7: source.dropped[{index}] must be an object with a string 'path' and non-negative integers "
                              f"'tensors' and 'bytes', not {_shown(record)}")


def _check_plan(plan: object) -> None:
    """Rule 3.8: ``plan`` is an object of bounded size; its ``search`` record has what ``inspect`` prints."""
    if not isinstance(plan, dict):
        raise FormatError(f"rule 3.8: header 'plan' must be an object, not {_shown(plan)}")
    size = len(json.dumps(plan, separators=(",", ":")))
    if size > MAX_PLAN_CHARS:
        raise FormatError(f"rule 3.8: header 'plan' takes {size:,} characters, more than {MAX_PLAN_CHARS:,}")
    if "search" not in plan:
        return
    search = plan["search"]
    if not (isinstance(search, dict) and _is_label(search.get("metric")) and all(_is_number(search.get(k)) for k in _SEARCH_NUMBERS)
            and _is_count(search.get("evaluations"))):
        raise FormatError(f"rule 3.8: plan.search must be an object with a string 'metric', numbers {', '.join(map(repr, _SEARCH_NUMBERS))} "
                          f"and a non-negative integer 'evaluations', not {_shown(search)}")


def _check_stats(entry: dict, names: set) -> None:
    """Rule 3.9: a tensor's informative ``stats``, which ``inspect`` prints (*names*: the file's tensor names)."""
    if "stats" not in entry:
        return
    stats = entry["stats"]
    where = f"tensor {_shown(entry['name'])}"
    if not isinstance(stats, dict):
        raise FormatError(f"rule 3.9: {where}: 'stats' must be an object, not {_shown(stats)}")
    if "error" in stats and not (_is_number(stats["error"]) and stats["error"] >= 0):
        raise FormatError(f"rule 3.9: {where}: stats.error must be a non-negative number, not {_shown(stats['error'])}")
    if "choice" in stats and not _is_label(stats["choice"]):
        raise FormatError(f"rule 3.9: {where}: stats.choice must be a string of at most {MAX_LABEL_CHARS} characters, not {_shown(stats['choice'])}")
    if "bias_correction" in stats:
        kernel = stats["bias_correction"]
        if not isinstance(kernel, str) or kernel == entry["name"] or kernel not in names:
            raise FormatError(f"rule 3.9: {where}: stats.bias_correction must name another tensor of the file, not {_shown(kernel)}")


def _is_label(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_LABEL_CHARS


def _is_count(value: object) -> bool:
    """An integer as spec/container.md §1 defines it (not a boolean, not 2.0), at least 0."""
    return type(value) is int and value >= 0


def _is_number(value: object) -> bool:
    """A finite JSON number (integer or not), never a boolean."""
    return type(value) in (int, float) and math.isfinite(value)


def _shown(value: object, limit: int = 60) -> str:
    """repr of an untrusted header value, cut for a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def blob_sizes(header: dict) -> list[int]:
    """The size of every blob, from the (already checked) blob table."""
    return [entry["size"] for entry in header["blobs"]]


def read_tensors(path: str | os.PathLike, limits: DecodeLimits = DEFAULT_LIMITS) -> tuple[dict, dict[str, np.ndarray]]:
    """Decode every tensor of a ``.nnz`` file within *limits*; returns (header, name -> array)."""
    with open_container(path) as container:
        header = container.header
        check_header(header, container.file_size, limits)
        sizes = blob_sizes(header)
        tensors = {entry["name"]: decode_tensor(entry, container.blob, sizes, limits) for entry in header["tensors"]}
    return header, tensors


def decompress(
    source: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    force: bool = False,
    progress: Progress | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
    jobs: int | None = 1,
    scheduler: Scheduler | None = None,
) -> Path:
    """Rebuild the source-format file from a ``.nnz`` within *limits*; returns the path written.

    *jobs* worker threads (None: one per core) decode the chunks of large parts; with
    *scheduler*, the workers of that dask cluster decode the tensors (:mod:`nnzip.distributed`).
    """
    source = Path(source)
    with open_container(source) as container:
        header = container.header
        check_header(header, container.file_size, limits)
        output = Path(output) if output is not None else default_decompressed(source, header)
        entries = {entry["name"]: entry for entry in header["tensors"]}
        sizes, total = blob_sizes(header), len(entries)
        done, order, futures, handed = 0, list(entries), {}, set()
        positions = {name: index for index, name in enumerate(order)}
        decoded = {name: math.prod(entry["shape"]) * np.dtype(entry["dtype"]).itemsize for name, entry in entries.items()}
        budget = max([WINDOW_MIN_BYTES, *decoded.values()])

        def tensor(name: str) -> np.ndarray:
            nonlocal done
            if progress:
                progress(done, total, name)
            done += 1
            if pool.tensors is None:
                return decode_tensor(entries[name], container.blob, sizes, limits)
            # Decode the next tensors (in header order, the order writers ask for them) meanwhile, as
            # many as --jobs and the byte budget allow (WINDOW_MIN_BYTES or the largest tensor).
            position, flight = positions[name], sum(decoded[ahead] for ahead in futures)
            for ahead in order[position:position + pool.window]:
                if ahead in futures or ahead in handed:
                    continue
                if ahead != name and flight + decoded[ahead] > budget:
                    break
                futures[ahead] = pool.tensors.submit(decode, entries[ahead], blob, table, limits, pool.chunks)
                flight += decoded[ahead]
            handed.add(name)
            future = futures.pop(name, None)
            return future.result() if future else decode_tensor(entries[name], container.blob, sizes, limits, pool.chunks)

        with workers(jobs, scheduler) as pool, atomic_output(output, force, source) as temporary:
            # A dask pool gets what can travel: the file's place and blob table, not the open handle.
            decode, blob, table = (decode_tensor, container.blob, sizes) if pool.remote is None else pool.remote.decoding(source, container)
            formats.write_model(temporary, header["source"]["format"], header["source"]["structure"], tensor)
    if progress:
        progress(total, total, "")
    return output


#: A recorded suffix names the default output only in this plain form: a hostile header cannot
#: choose control characters or odd code points for the name (a suffix never holds '/').
_PLAIN_SUFFIX = re.compile(r"\.[A-Za-z0-9_-]{1,16}")


def default_decompressed(source: Path, header: dict) -> Path:
    """``model.nnz`` -> ``model`` + the source file's suffix (``.h5``), beside the ``.nnz``.

    The suffix is that of the (checked, rule 3.6) ``source.filename`` when it is plain
    (a dot and 1-16 ASCII letters, digits, ``_`` or ``-``) and not ``.nnz``, else the
    format's usual suffix; the directory is always the ``.nnz``'s own.
    """
    filename = header["source"].get("filename")
    recorded = Path(filename).suffix if isinstance(filename, str) and "\0" not in filename else ""
    if not _PLAIN_SUFFIX.fullmatch(recorded) or recorded.lower() == NNZ_SUFFIX:
        recorded = ""
    suffix = recorded or formats.get_format(header["source"]["format"]).suffix
    stem = source.name[: -len(NNZ_SUFFIX)] if source.name.endswith(NNZ_SUFFIX) else source.name
    return source.with_name(stem + suffix)


# --- inspect ----------------------------------------------------------------------------


def inspect(path: str | os.PathLike, limits: DecodeLimits = DEFAULT_LIMITS) -> dict:
    """A JSON-able summary of a ``.nnz``: source, sizes, and per tensor chain, bytes, bits per weight, error.

    Every blob is read (its CRC checked, as ``gzip -t`` does) and its bytes stage undone
    to report the Shannon bound of what was coded next to the bytes it takes.  A tensor
    the budget search changed by bias correction has ``bias_correction`` (the weight it
    offsets), else None.

    >>> import nnzip
    >>> info = nnzip.inspect("mlp.nnz")                    # nnzip compress mlp.h5
    >>> info["source_format"], info["ratio"] > 1
    ('keras-h5', True)
    >>> [t["method"] for t in info["tensors"]][:2]
    ['byteplanes', 'byteplanes']
    """
    with open_container(path) as container:
        header = container.header
        check_header(header, container.file_size, limits)
        tensors = [_tensor_summary(entry, container.blob) for entry in header["tensors"]]
        file_size, version, header_size = container.file_size, container.version, container.header_stored_size
    if header["source"]["format"] == formats.onnx_format.FORMAT_ID:  # what each tensor feeds (Gemm:1, Gather:0, Reshape:1 ...)
        feeds = {record["name"]: record["feeds"] for record in header["source"]["structure"]["tensors"]}
        for summary in tensors:
            summary["feeds"] = feeds.get(summary["name"], [])
    original = sum(t["original_bytes"] for t in tensors)
    return {
        "file": os.fspath(path),
        "format_version": f"{version[0]}.{version[1]}",
        "writer": header.get("writer"),
        "source_format": header["source"]["format"],
        "source_filename": header["source"].get("filename"),
        "file_bytes": file_size,
        "header_bytes": header_size,
        "header_share": round(header_size / max(file_size, 1), 4),  # the stored header's fraction of the file
        "tensor_bytes_original": original,
        "ratio": round(original / max(file_size, 1), 4),
        "optimizer": "dropped" if header["source"].get("dropped") else "kept or absent",
        "dropped": header["source"].get("dropped", []),
        "plan": header.get("plan"),
        "tensors": tensors,
    }


def _tensor_summary(entry: dict, blob: Callable[[int], bytes]) -> dict:
    size = math.prod(entry["shape"])
    nbytes = size * np.dtype(entry["dtype"]).itemsize
    parts = [_part_summary(part, [blob(index) for index in part_blobs(part)]) for part in entry["parts"]]
    stored = sum(p["bytes"] for p in parts)
    stats = entry.get("stats", {})
    return {
        "name": entry["name"],
        "shape": entry["shape"],
        "dtype": np.dtype(entry["dtype"]).name,
        "method": describe_chain(entry),
        "choice": stats.get("choice"),
        # The weight whose lossy storage this (bias) tensor's new values compensate, when the budget search changed it.
        "bias_correction": stats.get("bias_correction"),
        "parts": parts,
        "original_bytes": nbytes,
        "stored_bytes": stored,
        "bits_per_weight": round(8 * stored / size, 4) if size else 0.0,
        "error": stats.get("error"),
    }


def _part_summary(part: dict, blobs: list[bytes]) -> dict:
    serialized = serialized_bytes(part, blobs)
    return {
        "name": part["name"],
        "codecs": [c["name"] for c in part["codecs"]],
        "bytes": sum(map(len, blobs)),
        "chunks": len(blobs),
        "serialized_bytes": len(serialized),
        "entropy_bytes": round(serialized_entropy(part["codecs"], serialized), 1),
    }


# --- verify -----------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """What ``nnzip verify`` measured."""

    file: Path
    original: Path | None
    samples: int
    #: Original vs rebuilt; None when no original was available.
    comparison: Comparison | None
    rebuilt_only: float | None = None
    metric: str = ""

    def to_json(self) -> dict:
        """JSON form for ``verify --json``."""
        out = {"file": os.fspath(self.file), "original_file": os.fspath(self.original) if self.original else None, "samples": self.samples}
        if self.comparison is not None:
            out.update(self.comparison.to_json())
        else:
            out.update(metric=self.metric, rebuilt=self.rebuilt_only)
        return out


def verify(
    source: str | os.PathLike,
    data: str | os.PathLike,
    original: str | os.PathLike | None = None,
    *,
    eval_hook: str | None = None,
    metric: str | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> VerifyReport:
    """Rebuild the weights of a ``.nnz`` and score them, and the original's, on *data*.

    Without *original*, the source file named in the header is used when it
    lies beside the ``.nnz``; otherwise only the rebuilt model is scored.
    *eval_hook* (``module:function`` or ``file.py:function``) scores files without
    an architecture; the drop is then in the hook's units (``drop_kind`` says
    absolute or relative).

    >>> import nnzip
    >>> report = nnzip.verify("mlp.nnz", "fashion-mnist-test.npz", original="mlp.h5")
    >>> report.comparison.metric, report.comparison.drop, report.comparison.drop_kind
    ('accuracy', 0.0, 'absolute')
    """
    from .evaluate import load_data, make_evaluator

    source = Path(source)
    header, rebuilt = read_tensors(source, limits)
    dataset = load_data(data)
    rebuilt_model = Model(header["source"]["format"], header["source"]["structure"], rebuilt)
    _check_architecture_text(rebuilt_model)
    evaluator = make_evaluator(rebuilt_model, dataset, eval_hook, metric)
    original_path = Path(original) if original is not None else _original_beside(source, header)
    if original_path is None:
        if evaluator.metric == "cosine":  # the rebuilt model against itself would score a meaningless 1
            raise ConfigError("the cosine metric compares with the original model's outputs: give the original file (--original)")
        return VerifyReport(source, None, len(dataset.x), None, evaluator.measure(rebuilt), evaluator.metric)
    reference = formats.read_model(original_path, keep_optimizer=not header["source"].get("dropped"), limits=limits)
    if list(reference.tensors) != list(rebuilt):
        raise NnzipError(f"{original_path} does not hold the same tensors as {source} (not the file it was made from?)")
    return VerifyReport(source, original_path, len(dataset.x), evaluator.compare(reference.tensors, rebuilt), metric=evaluator.metric)


def _check_architecture_text(model: Model) -> None:
    """The Keras architecture the header carries (a ``model_config`` attribute, a ``config.json``) parses as JSON.

    The container rules (§5) carry those texts verbatim and do not require JSON, so a crafted
    one reaches verify's parser: its errors (ValueError, RecursionError for deep nesting) become
    one line here instead of a traceback.
    """
    try:
        formats.model_config(model)
        formats.keras_version(model)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"the model architecture recorded in the header is not valid JSON: {type(exc).__name__}: {str(exc)[:80]}") from None


def _original_beside(source: Path, header: dict) -> Path | None:
    """The source file named by the (checked, rule 3.6) ``source.filename``, when a regular file of that name lies beside *source*."""
    filename = header["source"].get("filename")
    if not isinstance(filename, str) or not filename or "\0" in filename or Path(filename).name != filename or filename in (".", ".."):
        return None
    candidate = source.with_name(filename)
    if candidate.name == source.name:  # the .nnz itself
        return None
    return candidate if candidate.is_file() else None  # never a FIFO or device that would block or stream forever
