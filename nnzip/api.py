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
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from . import __version__, formats
from .container import BlobSpool, open_container, write_container, write_spooled
from .errors import ConfigError, FormatError, NnzipError
from .limits import DEFAULT_LIMITS, DecodeLimits
from .model import LazyTensors, Model
from .outputs import atomic_output, check_writable
from .pipeline import EncodedTensor, TensorPlan, encode_tensor, logical_values
from .plan import PlanRules, Settings, choose_plan, exclusion_note, layer_weight, lossless_plan
# The read side (issue 12): one reader and a module per job; api re-exports what callers use.
from .header_rules import blob_sizes, check_header  # noqa: F401  (check_header: the writer's read-back check)
from .pipeline import part_blobs  # noqa: F401  (the CLI's per-tensor lines)
from .reader import inspect, read_tensors  # noqa: F401
from .rebuild import decompress, default_decompressed  # noqa: F401
from .verification import VerifyReport, verify  # noqa: F401

if TYPE_CHECKING:
    from .distributed import Scheduler

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
    except ConfigError as exc:
        if plan.transform == "dense" and (strict or not plan.value_stages):
            raise ConfigError(f"tensor {name}: {exc}") from None
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
