"""The public operations: compress, decompress, inspect, verify, sweep.

The CLI is a thin layer over these; library users call them directly
(``import nnzip; nnzip.compress("model.h5")``).  The write side lives in
:mod:`nnzip.writer` (compress), :mod:`nnzip.encoder` (tensors to header and blobs),
:mod:`nnzip.budget` (the accuracy-budget search), :mod:`nnzip.workers` (where the work
runs), :mod:`nnzip.metrics` (the recorded error) and :mod:`nnzip.sweep`; this module
re-exports what callers use.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import formats
from .container import open_container
from .errors import ConfigError, FormatError, NnzipError  # noqa: F401  (ConfigError re-exported)
from .limits import DEFAULT_LIMITS, DecodeLimits
from .model import Model
from .outputs import atomic_output
from .pipeline import check_file_cost, check_tensor_entry, decode_tensor, part_blobs, serialized_bytes, serialized_entropy
from .workers import WINDOW_MIN_BYTES, workers

# The write side and sweep, re-exported: nnzip.api is the facade callers import.
from .budget import Budget, encode_with_budget  # noqa: F401
from .chains import describe_chain
from .encoder import TensorJob, TensorReport, encode_job, encode_model, strip_informative, strip_structure, tensor_bytes  # noqa: F401
from .metrics import ERROR_BLOCK, relative_error  # noqa: F401
from .sweep import SweepReport  # noqa: F401
from .sweep import run as sweep  # noqa: F401
from .workers import Progress, Workers  # noqa: F401
from .writer import NNZ_SUFFIX, CompressReport, compress, default_output  # noqa: F401

if TYPE_CHECKING:
    from .distributed import Scheduler
    from .evaluate import Comparison

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
