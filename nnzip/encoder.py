"""The encoder: every tensor of a model to header entries and blobs, with fallbacks and statistics.

:func:`encode_model` plans and encodes each tensor (:class:`TensorJob`, :func:`encode_job`),
falls back to exact storage where a lossy setting cannot apply, records each tensor's error
(:class:`TensorReport`) and assembles the header (:func:`assemble_header`).  Writing the file
is :mod:`nnzip.writer`'s job; the accuracy-budget search is :mod:`nnzip.budget`'s.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import chains, formats
from .chains import describe_chain
from .container import BlobSpool
from .errors import NoSaving
from .metrics import ERROR_BLOCK, relative_error
from .model import LazyTensors, Model
from .pipeline import EncodedTensor, TensorPlan, encode_tensor, logical_values
from .plan import PlanRules, Settings, choose_plan, layer_weight, lossless_plan
from .stages.base import LossyRangeError
from .version import __version__
from .workers import WINDOW_MIN_BYTES, Progress, Workers, in_order, in_order_within


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


def tensor_bytes(model: Model, name: str) -> int:
    """Bytes of one tensor's values, without reading a lazily read one."""
    if isinstance(model.tensors, LazyTensors):
        return model.tensors.nbytes_of(name)
    return int(model.tensors[name].nbytes)


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
        results = in_order_within(pool.tensors, encode, jobs(), pool.window, budget, lambda job: sizes[job.name])
    else:  # a dask pool runs a module-level function on what can travel (nnzip.distributed)
        function, items = pool.remote.encoding(model, source, jobs(), encode_job)
        results = in_order(pool.tensors, function, items, pool.window)
    reports, blobs = [], []
    for item, report in results:
        encoded.append(item)
        reports.append(report)
        if spool is None:
            blobs.extend(item.blobs)
        else:
            for blob in item.blobs:
                spool.add(blob)
            item.blobs = [b""] * len(item.blobs)  # only their number is used from here on (assemble_header)
    if progress:
        progress(total, total, "")
    return assemble_header(model, filename, encoded, rules.to_json()), blobs, reports


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


def _statistics(name: str, array: np.ndarray, item: EncodedTensor, note: str) -> TensorReport:
    """Record one tensor's error in its header entry (null when not finite, rule 8 of §6); return its report."""
    error = relative_error(logical_values(item.entry, array), logical_values(item.entry, item.reconstruction))
    item.entry["stats"] = {"error": round(error, 8) if math.isfinite(error) else None}
    return TensorReport(name, array.shape, describe_chain(item.entry), array.nbytes, sum(len(b) for b in item.blobs), error, note)


def add_statistics(model: Model, encoded: list[EncodedTensor], notes: dict[str, str]) -> list[TensorReport]:
    """Record each tensor's error in its header entry (as :func:`encode_job` does); return the per-tensor reports.

    The header is strict JSON (rule 8 of §6: no NaN or Infinity), so an error that is
    not a finite number is recorded as null.
    """
    return [_statistics(item.entry["name"], model.tensors[item.entry["name"]], item, notes.get(item.entry["name"], "")) for item in encoded]


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
    if not chains.is_exact(plan) and _overflowed(array, item.reconstruction):
        stages = " > ".join([plan.transform] + [stage for stage, _ in plan.value_stages])
        return encode_tensor(name, array, lossless_plan(array), executor), f"kept exact: {stages} rebuilt values beyond {array.dtype.name}'s range"
    return item, ""


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


def assemble_header(model: Model, filename: str, encoded: list[EncodedTensor], plan: dict) -> dict:
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
