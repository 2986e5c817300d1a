"""safetensors files (format id ``safetensors``), read and written without the package.

The format (https://github.com/huggingface/safetensors): an unsigned 64-bit
little-endian header size ``N``; ``N`` bytes of UTF-8 JSON mapping each tensor
name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` plus an optional
``"__metadata__"`` string-to-string map; then the data section, the tensors'
little-endian C-order bytes, contiguous, with offsets relative to its start.

The structure (spec/container.md §5.5) keeps ``metadata`` (as ``[key, value]``
pairs in file order, or null), the tensors in data order with their safetensors
dtype and shape, and -- only when the file's header is not in the canonical form
the ``safetensors`` package writes -- the exact header text.  The rebuilt file is
therefore byte-identical to the original either way.

Types without a numpy equivalent (``BF16``, ``F8_E4M3``, ``F8_E5M2``) are carried
as raw bit patterns in unsigned integers (``<u2``, ``|u1``); the structure's
dtype keeps the real type (:func:`nnzip.formats.element_types`).  A lossy setting widens a
bfloat16 tensor exactly to float32 and the decoder rounds it back (spec/container.md §4.5);
8-bit floats are always stored bit-exactly.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterable

import numpy as np

from ..errors import FormatError, InputError
from ..limits import DEFAULT_LIMITS, DecodeLimits
from ..model import LazyTensors, Model
from ..dtypes import parse_shape
from .base import Malformed, Probe, SourceFormat

FORMAT_ID = "safetensors"
SUFFIX = ".safetensors"
#: The safetensors package's own cap on the header size (rule 5.5, a structure's verbatim header).
MAX_HEADER_BYTES = 100_000_000
#: nnzip's cap on an input file's header (rule 8.18): parsed JSON costs 10-20 times its text in
#: memory, and the structure built from it must fit a .nnz header (64 MiB, spec §6 item 5).
MAX_INPUT_HEADER_BYTES = 16 * 2**20
#: Deepest nesting of arrays and objects a header may have (rule 8.18); a valid one needs 3.
MAX_JSON_DEPTH = 16
METADATA_KEY = "__metadata__"

#: safetensors dtype -> the numpy dtype nnzip stores it as.
DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "|i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "|u1",
    "BOOL": "|b1",
    # no numpy type: raw bit patterns (bfloat16 made lossy only as a widened tensor, spec §4.5)
    "BF16": "<u2", "F8_E4M3": "|u1", "F8_E5M2": "|u1",
}
#: safetensors dtype -> element type name, for the types carried as raw bit patterns (§5.5).
ELEMENT_TYPES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
_WHERE = "rule 5.5: safetensors structure"
#: The §8.2 rules a file's header breaks: as JSON, or in one tensor entry.
_HEADER, _ENTRY = "8.18", "8.19"


class _Object(list):
    """A JSON object as its ``(key, value)`` pairs in text order (arrays stay plain lists)."""


# --- the header, both ways ---------------------------------------------------------------------


def parse_header(text: str) -> tuple[list[list[str]] | None, list[dict]]:
    """``(metadata pairs or None, tensors in data order)`` of a header's JSON text.

    Each tensor is ``{"name", "dtype", "shape"}``.  Raises :class:`Malformed`
    unless the header is an object of well-formed entries whose offsets tile the
    data section from 0 without gaps or overlaps.  Nesting is measured before
    :func:`json.loads` runs, so a deep ``[[[[...`` costs a scan, not a parse.
    """
    depth = json_depth(text.encode("utf-8", "surrogatepass"))
    if depth > MAX_JSON_DEPTH:
        raise Malformed(f"header JSON nests {depth} levels deep, more than the {MAX_JSON_DEPTH} allowed", _HEADER)
    try:
        pairs = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise Malformed(f"header is not JSON ({exc})", _HEADER) from None
    if not isinstance(pairs, _Object):
        raise Malformed("header is not a JSON object", _HEADER)
    metadata, entries = None, []
    for key, value in pairs:
        _check_text(key)
        if key == METADATA_KEY:
            metadata = _parse_metadata(value)
        else:
            entries.append((key, _parse_entry(key, value)))
    entries.sort(key=lambda item: item[1][2:])  # (begin, end): an empty tensor sorts before one starting where it is
    position = 0
    for name, (_, _, begin, end) in entries:
        if begin != position:
            what = "overlaps the tensor before it" if begin < position else "leaves a gap after the tensor before it"
            raise Malformed(f"tensor {name!r} starts at {begin}, expected {position}: it {what}; the data must be contiguous", _ENTRY)
        position = end
    return metadata, [{"name": name, "dtype": dtype, "shape": shape} for name, (dtype, shape, _, _) in entries]


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPENERS, _CLOSERS = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def json_depth(data: bytes) -> int:
    """Deepest nesting of arrays and objects in JSON text (brackets inside strings do not count).

    Strings are cut out with one regular expression, then the depth is the largest
    running sum of +1 per opening and -1 per closing bracket, computed with numpy.
    """
    codes = np.frombuffer(_JSON_STRING.sub(b"", data), np.uint8)
    codes = codes[np.isin(codes, (0x5B, 0x5D, 0x7B, 0x7D))]
    if not len(codes):
        return 0
    steps = np.isin(codes, _OPENERS).astype(np.int32) - np.isin(codes, _CLOSERS).astype(np.int32)
    return int(np.cumsum(steps).max())


def _check_text(text: str) -> None:
    """Reject lone surrogates (from ``\ud800``-style escapes): they are not UTF-8 text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Malformed(f"{text!r} is not valid Unicode text", _HEADER) from None


def _no_duplicates(pairs: list) -> _Object:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Malformed("header has a duplicate key", _HEADER)
    return _Object(pairs)


def _no_constant(name: str):
    raise Malformed(f"header uses {name}, which is not JSON", _HEADER)


def _parse_metadata(value: object) -> list[list[str]]:
    if not isinstance(value, _Object) or not all(isinstance(v, str) for _, v in value):
        raise Malformed("__metadata__ must map strings to strings", _HEADER)
    for key, text in value:
        _check_text(key)
        _check_text(text)
    return [[k, v] for k, v in value]


def _parse_entry(name: str, value: object) -> tuple[str, list[int], int, int]:
    """``(dtype, shape, begin, end)`` of one tensor entry, checked against each other."""
    if not isinstance(value, _Object) or {k for k, _ in value} != {"dtype", "shape", "data_offsets"}:
        raise Malformed(f"tensor {name!r} needs exactly dtype, shape and data_offsets", _ENTRY)
    fields = dict(value)
    dtype, shape, offsets = fields["dtype"], fields["shape"], fields["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise Malformed(f"tensor {name!r} has unsupported dtype {str(dtype)[:80]!r}", _ENTRY)
    try:
        size = int(np.prod(parse_shape(shape), dtype=np.int64))
    except FormatError as exc:
        raise Malformed(f"tensor {name!r}: {str(exc)[:200]}", _ENTRY) from None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(v) is int and 0 <= v < 2**64 for v in offsets)):
        raise Malformed(f"tensor {name!r}: data_offsets must be two non-negative 64-bit integers", _ENTRY)
    begin, end = offsets
    if end - begin != size * np.dtype(DTYPES[dtype]).itemsize:
        raise Malformed(f"tensor {name!r}: data_offsets span {end - begin} bytes, its dtype and shape need {size * np.dtype(DTYPES[dtype]).itemsize}", _ENTRY)
    return dtype, shape, begin, end


def canonical_header(metadata: list[list[str]] | None, tensors: list[dict]) -> str:
    """The header text the ``safetensors`` package writes for this content.

    Compact JSON (serde_json's form: no spaces, non-ASCII characters unescaped),
    ``__metadata__`` first, tensors in data order with contiguous offsets from 0,
    then spaces so that the header length is a multiple of 8.
    """
    head: dict = {}
    if metadata is not None:
        head[METADATA_KEY] = dict(metadata)
    position = 0
    for item in tensors:
        end = position + tensor_nbytes(item)
        head[item["name"]] = {"dtype": item["dtype"], "shape": item["shape"], "data_offsets": [position, end]}
        position = end
    text = json.dumps(head, separators=(",", ":"), ensure_ascii=False)
    # surrogatepass: an unchecked structure may hold lone surrogates; parse_header rejects them
    return text + " " * (-len(text.encode("utf-8", "surrogatepass")) % 8)


def tensor_nbytes(item: dict) -> int:
    """Bytes of one (checked) tensor in the data section."""
    return int(np.prod(item["shape"], dtype=np.int64)) * np.dtype(DTYPES[item["dtype"]]).itemsize


# --- reading --------------------------------------------------------------------------------


def looks_like(head: bytes, file_size: int) -> bool:
    """Whether a file's first 9 bytes fit a safetensors file: a header size, then ``{``.

    The size itself is not judged here: a file that starts like safetensors but
    whose header size is wrong gets rule 8.18's specific error from :func:`read`
    rather than "not a supported model file".
    """
    return len(head) >= 9 and head[8:9] == b"{"


def read(path: str | os.PathLike, keep_optimizer: bool = False, limits: DecodeLimits = DEFAULT_LIMITS, lazy: bool = False) -> Model:
    """Read a safetensors file within *limits* (*keep_optimizer* is accepted for symmetry; there is none).

    With *lazy*, every check above runs at once but each tensor's bytes are read from the
    file by offset only when asked for (:class:`nnzip.model.LazyTensors`), so that a
    streaming compressor holds one tensor at a time.
    """
    name = os.fspath(path)
    with open(path, "rb") as handle:
        file_size = os.fstat(handle.fileno()).st_size
        text = _read_header_text(handle, file_size, name)
        try:
            metadata, tensors = parse_header(text)
        except Malformed as exc:
            raise InputError(f"rule {exc.rule}: {name}: not a valid safetensors file: {exc}") from None
        data_start = 8 + len(text.encode("utf-8"))
        total = sum(tensor_nbytes(item) for item in tensors)
        if data_start + total != file_size:
            raise InputError(f"rule 8.19: {name}: not a valid safetensors file: the header describes {total} data bytes, "
                             f"the file holds {file_size - data_start}")
        if total > limits.output_cap(file_size):
            raise InputError(f"rule 8.19: {name}: the tensors' {total} bytes exceed the {limits.output_cap(file_size)}-byte cap")
        values = _lazy_values(path, tensors, data_start, name) if lazy else dict(_read_values(handle, tensors, name))
    structure: dict = {"metadata": metadata, "tensors": tensors}
    if canonical_header(metadata, tensors) != text:
        structure["header"] = text  # not the package's form: keep it verbatim for an exact rebuild
    return Model(FORMAT_ID, structure, values)


def _read_header_text(handle, file_size: int, name: str) -> str:
    preamble = handle.read(8)
    if len(preamble) < 8:
        raise InputError(f"{name}: too short for a safetensors file")
    (size,) = struct.unpack("<Q", preamble)
    if size > file_size - 8:
        raise InputError(f"rule 8.18: {name}: not a valid safetensors file: header size {size} runs past the end of the {file_size}-byte file")
    if size > MAX_INPUT_HEADER_BYTES:
        raise InputError(f"rule 8.18: {name}: not a valid safetensors file: header of {size} bytes exceeds nnzip's {MAX_INPUT_HEADER_BYTES}-byte cap")
    if size < 2:
        raise InputError(f"rule 8.18: {name}: not a valid safetensors file: header of {size} bytes cannot hold a JSON object")
    try:
        return handle.read(size).decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"rule 8.18: {name}: not a valid safetensors file: the header is not UTF-8") from None


def _lazy_values(path: str | os.PathLike, tensors: list[dict], data_start: int, name: str) -> LazyTensors:
    """The tensors, each read by offset when asked for (its size and place were checked with the header, rule 8.19)."""
    offsets, position = {}, data_start
    for item in tensors:  # data order = header order (parse_header checks the offsets tile the data)
        offsets[item["name"]] = (position, item)
        position += tensor_nbytes(item)

    def load(key: str) -> np.ndarray:
        start, item = offsets[key]
        with open(path, "rb") as handle:
            handle.seek(start)
            return next(iter(_read_values(handle, [item], name)))[1]

    specs = {item["name"]: (np.dtype(DTYPES[item["dtype"]]), tuple(item["shape"])) for item in tensors}
    return LazyTensors(specs, load)


def _read_values(handle, tensors: list[dict], name: str) -> Iterable[tuple[str, np.ndarray]]:
    """Each tensor's value in data order, read straight into its array (sizes were checked before)."""
    for item in tensors:
        try:
            value = np.empty(item["shape"], dtype=np.dtype(DTYPES[item["dtype"]]))
        except MemoryError:
            raise InputError(f"rule 8.19: {name}: cannot allocate the {tensor_nbytes(item)} bytes of tensor {item['name']!r}") from None
        if handle.readinto(value.reshape(-1).view(np.uint8)) != value.nbytes:
            raise InputError(f"rule 8.19: {name}: not a valid safetensors file: the file ends inside tensor {item['name']!r}")
        yield item["name"], value


# --- writing --------------------------------------------------------------------------------


def write(path: str | os.PathLike, structure: dict, tensor) -> None:
    """Write a safetensors file from *structure*, pulling values from ``tensor(name)`` in data order."""
    text = structure.get("header") or canonical_header(structure["metadata"], structure["tensors"])
    header = text.encode("utf-8")
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(header)))
        handle.write(header)
        for item in structure["tensors"]:
            handle.write(_tensor_bytes(item, tensor(item["name"])))


def _tensor_bytes(item: dict, value: np.ndarray) -> memoryview:
    """The value's little-endian C-order bytes, as a view where it is already so (no tensor-sized copy)."""
    expected = np.dtype(DTYPES[item["dtype"]])
    if value.dtype != expected or list(value.shape) != item["shape"]:
        raise FormatError(f"tensor {item['name']!r} decodes to {value.dtype.str} {list(value.shape)}, "
                          f"the safetensors structure needs {expected.str} {item['shape']}")
    return memoryview(np.ascontiguousarray(value).reshape(-1).view(np.uint8))


# --- structure checks ---------------------------------------------------------------------------


def check_structure(structure: object) -> None:
    """Raise FormatError unless *structure* is a well-formed ``safetensors`` structure (§5.5)."""
    if not isinstance(structure, dict) or not {"metadata", "tensors"} <= set(structure) <= {"metadata", "tensors", "header"}:
        raise FormatError(f"{_WHERE}: needs 'metadata' and 'tensors' (and optionally 'header')")
    metadata, tensors = structure["metadata"], structure["tensors"]
    try:
        if metadata is not None and not (isinstance(metadata, list) and all(isinstance(p, list) and len(p) == 2 for p in metadata)):
            raise FormatError("metadata must be null or a list of [key, value] pairs")
        if not isinstance(tensors, list) or not all(isinstance(t, dict) and set(t) == {"name", "dtype", "shape"} for t in tensors):
            raise FormatError("each tensor needs exactly name, dtype and shape")
        if any(not isinstance(t["name"], str) or t["name"] == METADATA_KEY for t in tensors):
            raise FormatError("tensor names must be strings other than __metadata__")
        for item in tensors:
            if not isinstance(item["dtype"], str) or item["dtype"] not in DTYPES:
                raise FormatError(f"tensor {item['name']!r} has unsupported dtype {item['dtype']!r}")
            parse_shape(item["shape"])
        # Rendering the canonical header and parsing it back checks every field the way a
        # file's header is checked (types, sizes, duplicates) with one code path.
        text = structure.get("header")
        if text is not None and not isinstance(text, str):
            raise FormatError("header must be a string")
        canonical = canonical_header(_pairs_or_raise(metadata), tensors)
        if parse_header(canonical) != (metadata, tensors):
            raise FormatError("duplicate metadata keys or tensor names")
        if text is not None and (len(text.encode("utf-8", "surrogatepass")) > MAX_HEADER_BYTES or parse_header(text) != (metadata, tensors)):
            raise FormatError("the verbatim header does not describe the structure's metadata and tensors")
    except (Malformed, FormatError) as exc:
        raise FormatError(f"{_WHERE}: {exc}") from None


def _pairs_or_raise(metadata):
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata):
        raise FormatError("metadata keys and values must be strings")
    return metadata


def tensor_names(structure: dict) -> list[str]:
    """The tensor names a checked structure expects, in data order."""
    return [item["name"] for item in structure["tensors"]]


def structure_element_types(structure: dict) -> dict[str, str]:
    """Tensor name -> element type of a checked structure's raw-bits tensors (``BF16``, ``F8_*``), in data order."""
    return {t["name"]: ELEMENT_TYPES[t["dtype"]] for t in structure["tensors"] if t["dtype"] in ELEMENT_TYPES}


def _sniff(probe: Probe) -> bool:
    return looks_like(probe.head, probe.size)


def _element_types(model: Model) -> dict[str, str]:
    return structure_element_types(model.structure)


FORMAT = SourceFormat(FORMAT_ID, SUFFIX, _sniff, read, write, check_structure, tensor_names, element_types=_element_types)
