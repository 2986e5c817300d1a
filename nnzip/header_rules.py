"""The header's rules (spec/container.md §3, with each tensor entry's §4 and rule 4.7's file cost).

:func:`check_header` runs them on a header :mod:`nnzip.container` has parsed (its own rules,
§2 and §6, passed) and returns what decoding needs of each tensor entry, checked; the one
caller is :class:`nnzip.reader.NnzReader`, which runs it once when a file is opened.
"""

from __future__ import annotations

import json
import math

import numpy as np

from . import formats
from .errors import FormatError
from .limits import DEFAULT_LIMITS, DecodeLimits
from .pipeline import CheckedTensor, check_file_cost, check_tensor_entry, part_blobs


def check_header(header: dict, file_size: int, limits: DecodeLimits = DEFAULT_LIMITS) -> list[CheckedTensor]:
    """Container-level header checks (spec/container.md §3) beyond the blob table, within *limits*.

    Every member that decompress, inspect or verify reads is checked here, the informative
    ones (rules 3.5-3.9) included, so that nothing downstream meets a value of the wrong type.
    Returns each tensor entry checked (:func:`nnzip.pipeline.check_tensor_entry`), in order,
    so that decoding never checks an entry again.
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
    decoded = sum(map(decoded_bytes, tensors))
    cap = limits.output_cap(file_size)
    if decoded > cap:
        raise FormatError(f"rule 4.7: the tensors would take {decoded:,} bytes from a {file_size:,}-byte file (cap {cap:,})")
    return checked


def decoded_bytes(entry: dict) -> int:
    """The bytes a checked tensor entry decodes to (its dtype's size times its elements)."""
    return math.prod(entry["shape"]) * np.dtype(entry["dtype"]).itemsize


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
    if ("holdout_samples" in search or "holdout_drop" in search) and not (
            _is_count(search.get("holdout_samples")) and search["holdout_samples"] > 0 and _is_number(search.get("holdout_drop"))):
        raise FormatError("rule 3.8: plan.search's 'holdout_samples' (an integer >= 1) and 'holdout_drop' (a number) come together, not "
                          f"{_shown({k: search.get(k) for k in ('holdout_samples', 'holdout_drop')})}")


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
