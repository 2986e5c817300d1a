"""The public operations: compress, decompress, inspect, verify.

The CLI is a thin layer over these; library users call them directly
(``import nnzip; nnzip.compress("model.h5")``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import __version__, io
from .container import open_container, write_container
from .errors import ConfigError, FormatError, NnzipError
from .limits import DEFAULT_LIMITS, DecodeLimits
from .model import Model
from .outputs import atomic_output, check_writable
from .pipeline import EncodedTensor, TensorPlan, check_tensor_entry, decode_tensor, encode_tensor, serialized_bytes, serialized_entropy
from .plan import PlanRules, Settings, lossless_plan, tensor_plan

if TYPE_CHECKING:
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
    """Summary of a compression run."""

    output: Path
    original_bytes: int
    file_bytes: int
    tensors: list[TensorReport] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Source tensor bytes (kept tensors) / output file bytes."""
        return self.original_bytes / max(self.file_bytes, 1)


def default_output(source: Path) -> Path:
    """``model.h5`` -> ``model.nnz`` (gzip/zstd habit: beside the source)."""
    return source.with_suffix(NNZ_SUFFIX)


def relative_error(original: np.ndarray, rebuilt: np.ndarray) -> float:
    """``||original - rebuilt||_F / ||original||_F`` (0 for exact copies, also of zeros)."""
    a = np.asarray(original, dtype=np.float64)
    b = np.asarray(rebuilt, dtype=np.float64)
    diff = float(np.linalg.norm((a - b).ravel())) if a.size else 0.0
    if diff == 0.0:
        return 0.0
    norm = float(np.linalg.norm(a.ravel()))
    return diff / norm if norm else math.inf


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
    """``--data``/``--max-drop``: search for the smallest plan within an accuracy budget."""

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
) -> CompressReport:
    """Compress a model file into a ``.nnz`` container.

    *rules* gives per-tensor settings (default: lossless).  With *budget*, the
    plan is searched on the budget's data instead (rules are then not used).
    *plans*, when given, fixes the exact stage chain of named tensors.
    """
    source = Path(source)
    output = Path(output) if output is not None else default_output(source)
    if output.resolve() == source.resolve():
        raise NnzipError(f"output {output} would overwrite the input")
    check_writable(output, force)  # before reading the model or a long search, not only at the end
    model = io.read_model(source, keep_optimizer=keep_optimizer)
    if budget is not None:
        header, blobs, reports = encode_with_budget(model, source.name, budget, progress)
    else:
        header, blobs, reports = encode_model(model, source.name, rules, plans, progress)
    with atomic_output(output, force) as temporary:
        with open(temporary, "wb") as handle:
            size = write_container(handle, header, blobs)
    return CompressReport(output, model.nbytes, size, reports)


def encode_model(
    model: Model,
    filename: str,
    rules: PlanRules | None = None,
    plans: dict[str, TensorPlan] | None = None,
    progress: Progress | None = None,
) -> tuple[dict, list[bytes], list[TensorReport]]:
    """Encode every tensor of *model*; returns (header without blob table, blobs, reports)."""
    rules = rules or PlanRules(Settings(lossless=True), [])
    plans = plans or {}
    encoded, notes = [], {}
    total = len(model.tensors)
    optimizer = io.optimizer_prefix(model.source_format)
    exact = io.exact_names(model)  # e.g. an ONNX model's shapes and indices: not weights
    for index, (name, array) in enumerate(model.tensors.items()):
        if progress:
            progress(index, total, name)
        if (optimizer and name.startswith(optimizer)) or name in exact:
            plan = lossless_plan(array)  # kept optimizer state is for resuming training: exact
        else:
            plan = plans.get(name) or tensor_plan(array, rules.settings_for(name))
        item, notes[name] = _encode_with_fallback(name, array, plan)
        encoded.append(item)
    if progress:
        progress(total, total, "")
    reports = _add_statistics(model, encoded, notes)
    return _header(model, filename, encoded, rules.to_json()), [b for item in encoded for b in item.blobs], reports


def encode_with_budget(model: Model, filename: str, budget: Budget, progress: Progress | None = None) -> tuple[dict, list[bytes], list[TensorReport]]:
    """Search the smallest plan within *budget* (see :mod:`nnzip.search`) and encode it."""
    from .evaluate import load_data, make_evaluator
    from .search import BudgetSearch

    data = load_data(budget.data)
    evaluator = make_evaluator(model, data, budget.eval_hook, budget.metric)
    result = BudgetSearch(model, evaluator, data, budget.log, budget.margin).run(budget.max_drop, progress)
    encoded = [result.encoded[name] for name in model.tensors]
    reports = _add_statistics(model, encoded, {})
    for item in encoded:  # which candidate the search picked, next to the tensor's error
        if item.entry["name"] in result.choices:
            item.entry["stats"]["choice"] = result.choices[item.entry["name"]]
    return _header(model, filename, encoded, result.to_json(budget.max_drop)), [b for item in encoded for b in item.blobs], reports


def _add_statistics(model: Model, encoded: list[EncodedTensor], notes: dict[str, str]) -> list[TensorReport]:
    """Record each tensor's error and bytes in its header entry; return the per-tensor reports."""
    reports = []
    for item in encoded:
        name = item.entry["name"]
        array = model.tensors[name]
        error = relative_error(array, item.reconstruction)
        stored = sum(len(b) for b in item.blobs)
        item.entry["stats"] = {"error": round(error, 8)}
        reports.append(TensorReport(name, array.shape, describe_chain(item.entry), array.nbytes, stored, error, notes.get(name, "")))
    return reports


def _encode_with_fallback(name: str, array: np.ndarray, plan: TensorPlan) -> tuple[EncodedTensor, str]:
    """Encode by *plan*; a transform that would not save space falls back to dense storage."""
    try:
        return encode_tensor(name, array, plan), ""
    except ConfigError as exc:
        if plan.transform == "dense":
            raise ConfigError(f"tensor {name}: {exc}") from None
        fallback = TensorPlan("dense", {}, plan.value_stages) if plan.value_stages else lossless_plan(array)
        return encode_tensor(name, array, fallback), f"{plan.transform} skipped: {exc}"


def _header(model: Model, filename: str, encoded: list[EncodedTensor], plan: dict) -> dict:
    entries, blob_index = [], 0
    for item in encoded:
        entry = dict(item.entry)
        parts = []
        for part in entry["parts"]:
            parts.append({**part, "blob": blob_index})
            blob_index += 1
        entry["parts"] = parts
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
    """Container-level header checks (spec/container.md §3) beyond the blob table, within *limits*."""
    if header.get("format") != "nnzip":
        raise FormatError("rule 3.1: header 'format' must be \"nnzip\"")
    source = header.get("source")
    source_format = io.get_format(source.get("format")) if isinstance(source, dict) else None
    if source_format is None:
        raise FormatError(f"rule 3.2: unknown source format {source.get('format') if isinstance(source, dict) else source!r}")
    source_format.check_structure(source.get("structure"))
    tensors = header.get("tensors")
    if not isinstance(tensors, list):
        raise FormatError("rule 3.3: header 'tensors' must be a list")
    names = [t.get("name") if isinstance(t, dict) else None for t in tensors]
    if names != source_format.tensor_names(source["structure"]):
        raise FormatError("rule 3.3: the tensors must be exactly the structure's tensors (§5), in order")
    sizes = blob_sizes(header)
    for entry in tensors:  # each entry's own rules (§4) first: parts must be a list of objects
        check_tensor_entry(entry, sizes, limits)
    referenced = sorted(part["blob"] for entry in tensors for part in entry["parts"])
    if referenced != list(range(len(sizes))):
        raise FormatError("rule 3.4: every blob must be referenced by exactly one part")
    decoded = sum(math.prod(entry["shape"]) * np.dtype(entry["dtype"]).itemsize for entry in tensors)
    cap = limits.output_cap(file_size)
    if decoded > cap:
        raise FormatError(f"rule 4.7: the tensors would take {decoded:,} bytes from a {file_size:,}-byte file (cap {cap:,})")


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
) -> Path:
    """Rebuild the source-format file from a ``.nnz`` within *limits*; returns the path written."""
    source = Path(source)
    with open_container(source) as container:
        header = container.header
        check_header(header, container.file_size, limits)
        output = Path(output) if output is not None else default_decompressed(source, header)
        entries = {entry["name"]: entry for entry in header["tensors"]}
        sizes, total = blob_sizes(header), len(entries)
        done = 0

        def tensor(name: str) -> np.ndarray:
            nonlocal done
            if progress:
                progress(done, total, name)
            done += 1
            return decode_tensor(entries[name], container.blob, sizes, limits)

        with atomic_output(output, force) as temporary:
            io.write_model(temporary, header["source"]["format"], header["source"]["structure"], tensor)
    if progress:
        progress(total, total, "")
    return output


def default_decompressed(source: Path, header: dict) -> Path:
    """``model.nnz`` -> ``model`` + the source file's suffix (``.h5``), beside the ``.nnz``."""
    filename = header["source"].get("filename")
    recorded = Path(filename).suffix if isinstance(filename, str) else ""
    suffix = recorded or io.get_format(header["source"]["format"]).suffix
    stem = source.name[: -len(NNZ_SUFFIX)] if source.name.endswith(NNZ_SUFFIX) else source.name
    return source.with_name(stem + suffix)


# --- inspect ----------------------------------------------------------------------------


def inspect(path: str | os.PathLike, limits: DecodeLimits = DEFAULT_LIMITS) -> dict:
    """A JSON-able summary of a ``.nnz``: source, sizes, and per tensor chain, bytes, bits per weight, error.

    Every blob is read (its CRC checked, as ``gzip -t`` does) and its bytes stage undone
    to report the Shannon bound of what was coded next to the bytes it takes.
    """
    with open_container(path) as container:
        header = container.header
        check_header(header, container.file_size, limits)
        tensors = [_tensor_summary(entry, container.blob) for entry in header["tensors"]]
        file_size, version, header_size = container.file_size, container.version, container.header_stored_size
    if header["source"]["format"] == io.onnx_format.FORMAT_ID:  # what each tensor feeds (Gemm:1, Gather:0, Reshape:1 ...)
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
    parts = [_part_summary(part, blob(part["blob"])) for part in entry["parts"]]
    stored = sum(p["bytes"] for p in parts)
    stats = entry.get("stats", {})
    return {
        "name": entry["name"],
        "shape": entry["shape"],
        "dtype": np.dtype(entry["dtype"]).name,
        "method": describe_chain(entry),
        "choice": stats.get("choice"),
        "parts": parts,
        "original_bytes": nbytes,
        "stored_bytes": stored,
        "bits_per_weight": round(8 * stored / size, 4) if size else 0.0,
        "error": stats.get("error"),
    }


def _part_summary(part: dict, blob: bytes) -> dict:
    serialized = serialized_bytes(part, blob)
    return {
        "name": part["name"],
        "codecs": [c["name"] for c in part["codecs"]],
        "bytes": len(blob),
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
) -> VerifyReport:
    """Rebuild the weights of a ``.nnz`` and score them, and the original's, on *data*.

    Without *original*, the source file named in the header is used when it
    lies beside the ``.nnz``; otherwise only the rebuilt model is scored.
    """
    from .evaluate import load_data, make_evaluator

    source = Path(source)
    header, rebuilt = read_tensors(source)
    dataset = load_data(data)
    rebuilt_model = Model(header["source"]["format"], header["source"]["structure"], rebuilt)
    evaluator = make_evaluator(rebuilt_model, dataset, eval_hook, metric)
    original_path = Path(original) if original is not None else _original_beside(source, header)
    if original_path is None:
        if evaluator.metric == "cosine":  # the rebuilt model against itself would score a meaningless 1
            raise ConfigError("the cosine metric compares with the original model's outputs: give the original file (--original)")
        return VerifyReport(source, None, len(dataset.x), None, evaluator.measure(rebuilt), evaluator.metric)
    reference = io.read_model(original_path, keep_optimizer=not header["source"].get("dropped"))
    if list(reference.tensors) != list(rebuilt):
        raise NnzipError(f"{original_path} does not hold the same tensors as {source} (not the file it was made from?)")
    return VerifyReport(source, original_path, len(dataset.x), evaluator.compare(reference.tensors, rebuilt), metric=evaluator.metric)


def _original_beside(source: Path, header: dict) -> Path | None:
    filename = header["source"].get("filename")
    if not isinstance(filename, str) or Path(filename).name != filename:
        return None
    candidate = source.with_name(filename)
    return candidate if candidate.exists() else None
