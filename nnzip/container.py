"""The bytes of a ``.nnz`` file, exactly as ``spec/container.md`` says; no maths here.

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic  89 4E 4E 5A 0D 0A 1A 0A  ("\\x89NNZ\\r\\n\\x1a\\n")
    8       2     u16 major version (1)
    10      2     u16 minor version (0, 1, 2 or 3: :func:`format_minor`)
    12      4     u32 flags (bit 0: header is zlib-compressed; bit 1: with preset
                  dictionary 1; bit 2: with preset dictionary 2; bit 3: the header
                  JSON is in compact form, :func:`expand_compact`; other bits 0)
    16      4     u32 H = stored header size in bytes
    20      4     u32 CRC-32 of the H stored header bytes
    24      H     header: UTF-8 JSON (zlib stream of it when flag bit 0 is set)
    24+H    P     zero padding to the next multiple of 8 (P in 0..7)
    D       ...   data section: the blobs, each starting at a multiple of 8
                  from D, in header order, zero padding between them, the file
                  ending exactly at the end of the last blob

The header's ``blobs`` list gives each blob's ``offset`` (from D), ``size`` and
``crc32``.  :func:`read_container` checks every one of these numbers against the
file length and the caps below *before* reading or allocating anything they name.
:func:`parse_header` reads the JSON strictly (spec/container.md §1): no duplicate member
names, no NaN/Infinity or out-of-range numbers, bounded nesting, no lone surrogates; every
error names the rule of §6 it breaks.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import struct
import threading
import zlib
from importlib import resources
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable

import numpy as np

from .errors import FormatError, NnzipError, os_reason

MAGIC = b"\x89NNZ\r\n\x1a\n"
#: The file name suffix of a ``.nnz`` (``model.h5`` -> ``model.nnz``).
NNZ_SUFFIX = ".nnz"
#: The format version nnzip writes at most (1.1: chunked parts, §4.4; 1.2: preset dictionary 2 and
#: the compact header, §2.2, §3.1, widened tensors, §4.5, and ONNX subgraph tensors, §5.7; 1.3:
#: the stages ``dq`` and ``rans``, and ``arith``'s levels mode); :func:`format_minor` picks the
#: lowest one a file's features need.
MAJOR, MINOR = 1, 3
ALIGNMENT = 8
FLAG_HEADER_ZLIB = 1
FLAG_HEADER_DICTIONARY = 2
#: Format 1.2: the header's zlib stream uses preset dictionary 2 (spec/container.md §2.2).
FLAG_HEADER_DICTIONARY_2 = 4
#: Format 1.2: the header JSON is in compact form (spec/container.md §3.1).
FLAG_HEADER_COMPACT = 8
_KNOWN_FLAGS = FLAG_HEADER_ZLIB | FLAG_HEADER_DICTIONARY | FLAG_HEADER_DICTIONARY_2 | FLAG_HEADER_COMPACT
#: The flags only format 1.2 defines (rule 6.21: a file claiming an older version may not use them).
FLAGS_1_2 = FLAG_HEADER_DICTIONARY_2 | FLAG_HEADER_COMPACT
_PREAMBLE = struct.Struct("<8sHHIII")
PREAMBLE_SIZE = _PREAMBLE.size  # 24

#: Largest header (stored or decompressed) a reader accepts.
MAX_HEADER_BYTES = 64 * 2**20
#: Largest number of blobs a reader accepts.
MAX_BLOBS = 2**20
#: Most commas, ``[`` and ``{`` outside strings a header may hold (rule 6.20), which bounds its
#: number of JSON values: a tensor entry takes about 25, so this leaves room for some 80,000
#: tensors, and parsing the largest header allowed stays near 250 MB.
MAX_HEADER_VALUES = 2**21
#: Deepest nesting of JSON arrays and objects a header may use (rule 6.17): an HDF5 tree of
#: 64 groups (rule 5.1) needs about 200; Python's own parser fails near 1000.
MAX_HEADER_DEPTH = 512
#: The integers a header may hold (§1): what a signed or unsigned 64-bit field can carry.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


def align(offset: int) -> int:
    """*offset* rounded up to a multiple of :data:`ALIGNMENT`."""
    return -(-offset // ALIGNMENT) * ALIGNMENT


def crc32(data: bytes) -> int:
    """CRC-32 (ISO-HDLC, as zlib and PNG) of *data*."""
    return zlib.crc32(data) & 0xFFFFFFFF


@functools.lru_cache(maxsize=1)
def header_dictionary() -> bytes:
    """Preset zlib dictionary 1 (``spec/header-dictionary-1.txt``, normative, never changed).

    Typical header text (Keras configs, nnzip's own keys) that a small model's header
    would otherwise spend most of its bytes on: with it, the lossless header of the sample
    CNN (``samples/cnn.h5``, 14,782 bytes of JSON) takes 849 bytes instead of zlib's 2,264
    (spec/container.md §2.1).
    """
    return resources.files("nnzip").joinpath("data/header-dictionary-1.txt").read_bytes()


@functools.lru_cache(maxsize=1)
def header_dictionary_2() -> bytes:
    """Preset zlib dictionary 2 (``spec/header-dictionary-2.txt``, format 1.2, normative, never changed).

    Built by ``spec/make_header_dictionary.py`` from compact headers (§3.1) nnzip writes for
    Keras 3 models of many architectures, lossless and lossy, so that it holds the stage
    configurations and Keras configs a small model's header is made of (spec/container.md §2.2).
    """
    return resources.files("nnzip").joinpath("data/header-dictionary-2.txt").read_bytes()


#: The preset dictionary each dictionary flag names, by flag bit.
_DICTIONARIES = {FLAG_HEADER_DICTIONARY: (1, header_dictionary), FLAG_HEADER_DICTIONARY_2: (2, header_dictionary_2)}


def header_dictionary_for(flags: int) -> bytes | None:
    """The preset dictionary a header stored with *flags* uses, or None."""
    for bit, (_, load) in _DICTIONARIES.items():
        if flags & bit:
            return load()
    return None


#: The minor version that introduced the tensor member ``widen`` (§4.5).
WIDEN_MINOR = 2
#: The minor version that introduced the stages ``dq`` and ``rans`` (spec/stages/dq.md, rans.md)
#: and ``arith``'s levels mode (spec/stages/arith.md, "Levels mode").
STAGES_1_3_MINOR, STAGES_1_3 = 3, frozenset({"dq", "rans"})
LEVELS_MINOR = STAGES_1_3_MINOR


@dataclass(frozen=True)
class SourceRules:
    """What the container needs to know of the source formats (§5), which sit above it.

    The compact form (§3.1 item 5) leaves out tensor names a ``source.structure`` defines, and
    a source format may have features of a later minor version (§2: an ``onnx`` subgraph's
    tensors, 1.2).  The container cannot import the formats (they import it), so
    :mod:`nnzip.formats` hands these two functions over when it is imported
    (:func:`use_source_rules`); until then no name is derived and no source feature counted.
    """

    #: ``names(source)``: the tensor names a header's ``source`` object defines (rule 3.3), or
    #: None when its structure is not valid (its format's check failed, or no such format).
    names: Callable[[object], list | None] = lambda source: None
    #: ``minor(source)``: the lowest minor version the features of a header's ``source`` need.
    minor: Callable[[object], int] = lambda source: 0


_source_rules = SourceRules()


def use_source_rules(rules: SourceRules) -> None:
    """Install the source formats' :class:`SourceRules` (called once, by :mod:`nnzip.formats`)."""
    global _source_rules
    _source_rules = rules


def format_minor(header: dict, flags: int) -> int:
    """The minor version a file is written as: the lowest whose features it uses (spec/container.md §2).

    1.3 when a part names the stage ``dq``; 1.2 when the stored header uses dictionary 2 or the compact form, or a tensor is widened
    (``widen``, §4.5), or the source format says its structure needs it (an ONNX source carrying
    subgraph tensors, §5.7: :class:`SourceRules`) — any other 1.2 feature: add its test here, this
    is the one place the writer picks a version; 1.1 when a part is chunked (§4.4); else 1.0, so
    such a file is byte for byte what nnzip 1.0 wrote.  1.3 above all when a part is coded with the
    ``dq`` or ``rans`` stage (a 1.2 reader refuses the file by rule 4.3, the stage being unknown to
    it) or with ``arith`` in its levels mode (its configuration names ``zero``; a 1.2 reader refuses
    it by that stage's rule 1).
    """
    if _uses_stages(header, STAGES_1_3) or _uses_arith_levels(header):
        return STAGES_1_3_MINOR
    if flags & FLAGS_1_2 or _uses_widen(header) or _source_rules.minor(header.get("source")) >= 2:
        return WIDEN_MINOR
    return 1 if _has_chunks(header) else 0


def encode_header(header: dict, compress: bool = True, dictionary: int = 2) -> tuple[bytes, int]:
    """The stored header bytes and the flags describing them.

    *compress* stores the header as a zlib stream; with *dictionary* 2 (format 1.2, the default)
    of its compact form (:func:`compact_header`) with preset dictionary 2, with *dictionary* 1
    of the full form with preset dictionary 1 (what formats 1.0 and 1.1 write).  Without
    *compress* the header is the full form as plain JSON, readable in a hex dump.
    """
    if dictionary not in (1, 2):
        raise ValueError(f"no preset dictionary {dictionary!r}")
    text = _json_text(header)
    try:
        check_header_text(text)  # never write a header the reader refuses (rules 6.5, 6.17, 6.20)
    except FormatError as exc:
        raise NnzipError(f"cannot write this .nnz: {exc}") from None
    if not compress:
        return text, 0
    stored_text = _compact_text(header, text) if dictionary == 2 else None
    if stored_text is None:  # format 1.0's form, also for the (malformed) headers the compact form cannot hold
        stored_text, flags, zdict = text, FLAG_HEADER_ZLIB | FLAG_HEADER_DICTIONARY, header_dictionary()
    else:
        flags, zdict = FLAG_HEADER_ZLIB | FLAG_HEADER_DICTIONARY_2 | FLAG_HEADER_COMPACT, header_dictionary_2()
    deflater = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=zdict)
    return deflater.compress(stored_text) + deflater.flush(), flags


def _compact_text(header: dict, text: bytes) -> bytes | None:
    """The compact form's JSON text of *header* (full form *text*), or None when expanding it would not give the header back.

    Every header nnzip writes round-trips; a malformed one (a part without ``blob``, which tests
    write on purpose) may not, and is then stored in the full form so that it reads back as written.
    """
    compact = _json_text(compact_header(header))
    try:
        expanded = expand_compact(json.loads(compact))
    except FormatError:
        return None
    # Member order carries no meaning (§1), so the two are compared with sorted members.
    same = json.dumps(expanded, sort_keys=True) == json.dumps(json.loads(text), sort_keys=True)
    return compact if same else None


def _json_text(header: dict) -> bytes:
    """The compact JSON text nnzip writes a header as (no whitespace, ASCII with ``\\u`` escapes)."""
    return json.dumps(header, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("utf-8")


def write_container(handle: BinaryIO, header: dict, blobs: Iterable[bytes], compress_header: bool = True, dictionary: int = 2) -> int:
    """Write a complete ``.nnz`` to *handle*; returns the number of bytes written.

    *header* must not contain ``blobs``: this function computes that table from
    *blobs* (which it consumes once, so it may be a list of already-encoded bytes).
    *compress_header* and *dictionary* are :func:`encode_header`'s.
    """
    blobs = [bytes(b) for b in blobs]
    table, offset = [], 0
    for blob in blobs:
        offset = align(offset)
        table.append({"offset": offset, "size": len(blob), "crc32": crc32(blob)})
        offset += len(blob)
    written = _write_head(handle, header, table, compress_header, dictionary)
    data_start = written
    for entry, blob in zip(table, blobs):
        written += handle.write(b"\0" * (data_start + entry["offset"] - written))
        written += handle.write(blob)
    return written


def _write_head(handle: BinaryIO, header: dict, table: list[dict], compress_header: bool, dictionary: int) -> int:
    """Write the preamble, the stored header and its padding; returns the bytes written (the data section's start)."""
    stored, flags = encode_header({**header, "blobs": table}, compress_header, dictionary)
    # The lowest version that says what the file uses (§2): a file without 1.1 or 1.2 features
    # is byte for byte what nnzip 1.0 wrote.
    preamble = _PREAMBLE.pack(MAGIC, MAJOR, format_minor(header, flags), flags, len(stored), crc32(stored))
    written = handle.write(preamble) + handle.write(stored)
    return written + handle.write(b"\0" * (align(written) - written))


def _uses_widen(header: dict) -> bool:
    """Whether any tensor entry of *header* names ``widen`` (a 1.2 file); tolerant of malformed headers, which tests write."""
    tensors = header.get("tensors")
    return isinstance(tensors, list) and any(isinstance(entry, dict) and "widen" in entry for entry in tensors)


def _uses_stages(header: dict, names: frozenset) -> bool:
    """Whether any part of *header* names one of the stages *names* in its codecs; tolerant of malformed headers."""
    tensors = header.get("tensors")
    if not isinstance(tensors, list):
        return False
    for entry in tensors:
        parts = entry.get("parts") if isinstance(entry, dict) else None
        for part in parts if isinstance(parts, list) else ():
            codecs = part.get("codecs") if isinstance(part, dict) else None
            if isinstance(codecs, list) and any(isinstance(c, dict) and c.get("name") in names for c in codecs):
                return True
    return False


def _uses_arith_levels(header: dict) -> bool:
    """Whether any part of *header* has an ``arith`` codec in the levels mode (a 1.3 file); tolerant of malformed headers."""
    tensors = header.get("tensors")
    return isinstance(tensors, list) and any(
        isinstance(codec, dict) and codec.get("name") == "arith" and isinstance(codec.get("configuration"), dict)
        and "zero" in codec["configuration"]
        for entry in tensors if isinstance(entry, dict) and isinstance(entry.get("parts"), list)
        for part in entry["parts"] if isinstance(part, dict) and isinstance(part.get("codecs"), list)
        for codec in part["codecs"]
    )


def _has_chunks(header: dict) -> bool:
    """Whether any part of *header* is chunked (names ``chunk_size``); tolerant of malformed headers, which tests write."""
    tensors = header.get("tensors")
    return isinstance(tensors, list) and any(
        isinstance(part, dict) and "chunk_size" in part
        for entry in tensors if isinstance(entry, dict) and isinstance(entry.get("parts"), list)
        for part in entry["parts"]
    )


# --- the compact header (format 1.2, spec/container.md §3.1) --------------------------------
#
# The compact form leaves out what a reader re-derives, measured to save bytes after zlib:
# blob offsets (rule 6.11 fixes them), a part's ``blob`` when it is the previous part's + 1, a
# part's dtype and shape when they are its tensor's, the base64 of ``keras-v3`` members that
# are UTF-8 text (``config.json``: base64 hides its repetitions from zlib), and the tensor
# names when they are the ones the structure defines (rule 3.3 requires exactly those).  The writer
# abbreviates only where it can tell the reader will derive the same value, and encode_header
# checks that expanding gives back the header; a (malformed, as tests write on purpose) header
# that does not round-trip is stored in the full form instead.


def compact_header(header: dict) -> dict:
    """The compact form (§3.1) of the full *header* (with ``blobs``); the input is not changed."""
    compact = dict(header)
    if isinstance(header.get("blobs"), list):
        compact["blobs"] = _compact_blobs(header["blobs"])
    if isinstance(header.get("tensors"), list):
        compact["tensors"] = _compact_tensors(header["tensors"])
        if _derived_names(header) == [entry.get("name") if isinstance(entry, dict) else None for entry in header["tensors"]]:
            compact["tensors"] = [{key: value for key, value in entry.items() if key != "name"} for entry in compact["tensors"]]
    source = header.get("source")
    if isinstance(source, dict) and source.get("format") == "keras-v3" and isinstance(source.get("structure"), dict):
        members = source["structure"].get("members")
        if isinstance(members, list):
            structure = {**source["structure"], "members": [_compact_member(m) for m in members]}
            compact["source"] = {**source, "structure": structure}
    return compact


def _compact_blobs(blobs: list) -> list:
    """Each blob entry at the offset rule 6.11 gives it becomes ``[size, crc32]``."""
    out, end = [], 0
    for entry in blobs:
        if isinstance(entry, dict) and set(entry) == {"offset", "size", "crc32"} and _is_uint(entry["size"]) \
                and _is_uint(entry["crc32"]) and entry["offset"] == align(end) and type(entry["offset"]) is int:
            out.append([entry["size"], entry["crc32"]])
        else:
            out.append(entry)
        end = entry["offset"] + entry["size"] if isinstance(entry, dict) and _is_uint(entry.get("offset")) and _is_uint(entry.get("size")) else -1
        if end < 0:  # a broken entry: keep every later one in full, as it is
            return out + list(blobs[len(out):])
    return out


def _compact_tensors(tensors: list) -> list:
    """Parts drop ``blob`` when it is one past the previous part's, and dtype/shape when they are the tensor's."""
    out, previous = [], -1
    for entry in tensors:
        if not (isinstance(entry, dict) and isinstance(entry.get("parts"), list)):
            out.append(entry)
            previous = None
            continue
        parts = []
        for part in entry["parts"]:
            if not isinstance(part, dict):
                parts.append(part)
                previous = None
                continue
            part = dict(part)
            blob = part.get("blob")
            if previous is not None and type(blob) is int and blob == previous + 1:
                del part["blob"]
            previous = blob if type(blob) is int else None
            if "dtype" in part and "shape" in part and part["dtype"] == entry.get("dtype") and part["shape"] == entry.get("shape") \
                    and _same_json(part["shape"], entry.get("shape")):
                del part["dtype"], part["shape"]
            parts.append(part)
        out.append({**entry, "parts": parts})
    return out


def _compact_member(member: object) -> object:
    """A ``keras-v3`` member whose ``data`` is canonical base64 of UTF-8 text carries the ``text`` instead."""
    if not (isinstance(member, dict) and isinstance(member.get("data"), str) and "text" not in member):
        return member
    import base64
    import binascii

    try:
        raw = base64.b64decode(member["data"], validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return member
    if base64.b64encode(raw).decode("ascii") != member["data"]:
        return member  # not the one base64 form expanding writes
    return {("text" if key == "data" else key): (text if key == "data" else value) for key, value in member.items()}


def expand_compact(header: dict) -> dict:
    """The full header of a *header* stored in compact form (§3.1); a malformed abbreviation breaks rule 6.22."""
    if "blobs" in header and isinstance(header["blobs"], list):
        header["blobs"] = _expand_blobs(header["blobs"])
    if isinstance(header.get("tensors"), list):
        _expand_tensors(header["tensors"])
    source = header.get("source")
    if isinstance(source, dict) and source.get("format") == "keras-v3" and isinstance(source.get("structure"), dict):
        members = source["structure"].get("members")
        if isinstance(members, list):
            for index, member in enumerate(members):
                if isinstance(member, dict) and "text" in member:
                    members[index] = _expand_member(member, index)
    if isinstance(header.get("tensors"), list):
        _expand_names(header)  # last: the structure must be in its full form to define the names
    return header


def _expand_blobs(blobs: list) -> list:
    out, end = [], 0
    for index, entry in enumerate(blobs):
        if isinstance(entry, list):
            if len(entry) != 2 or not all(_is_uint(v) for v in entry) or entry[1] > 0xFFFFFFFF:
                raise FormatError(f"rule 6.22: compact blob {index} must be [size, crc32], two non-negative integers (crc32 < 2^32)")
            if end is None:
                raise FormatError(f"rule 6.22: compact blob {index} follows a blob entry without a valid offset and size")
            entry = {"offset": align(end), "size": entry[0], "crc32": entry[1]}
        out.append(entry)
        valid = isinstance(entry, dict) and _is_uint(entry.get("offset")) and _is_uint(entry.get("size"))
        end = entry["offset"] + entry["size"] if valid else None
    return out


def _expand_tensors(tensors: list) -> None:
    previous = -1
    for entry in tensors:
        if not (isinstance(entry, dict) and isinstance(entry.get("parts"), list)):
            previous = None
            continue
        for part in entry["parts"]:
            if not isinstance(part, dict):
                previous = None
                continue
            if "blob" not in part:
                if previous is None:
                    raise FormatError("rule 6.22: a compact part without 'blob' follows a part without an integer 'blob'")
                part["blob"] = previous + 1
            previous = part["blob"] if type(part["blob"]) is int else None
            if "dtype" not in part and "shape" not in part:
                if "dtype" not in entry or "shape" not in entry:
                    raise FormatError("rule 6.22: a compact part without dtype and shape belongs to a tensor without them")
                part["dtype"], part["shape"] = entry["dtype"], json.loads(json.dumps(entry["shape"]))


def _derived_names(header: dict) -> list | None:
    """The tensor names *header*'s ``source.structure`` defines (rule 3.3), or None when it is not a valid structure.

    The source formats answer (:class:`SourceRules`): their own check runs first, and a
    structure it refuses gives None (the writer then keeps the names, the reader reports the
    structure's error by its own rule).
    """
    return _source_rules.names(header.get("source"))


def _expand_names(header: dict) -> None:
    """Tensor entries without ``name`` take the structure's names, in order (§3.1 item 5)."""
    tensors = header["tensors"]
    if all(not isinstance(entry, dict) or "name" in entry for entry in tensors):
        return
    names = _derived_names(header)
    if names is None or len(names) != len(tensors):
        raise FormatError("rule 6.22: compact tensor entries without 'name' need a valid source.structure defining exactly one name per entry")
    for entry, name in zip(tensors, names):
        if isinstance(entry, dict) and "name" not in entry:
            entry["name"] = name


def _expand_member(member: dict, index: int) -> dict:
    import base64

    text = member["text"]
    if "data" in member or not isinstance(text, str):
        raise FormatError(f"rule 6.22: keras-v3 member {index}: compact 'text' must be a string, instead of 'data'")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"rule 6.22: keras-v3 member {index}: compact 'text' is not Unicode text (a lone surrogate)") from None
    return {("data" if key == "text" else key): (base64.b64encode(raw).decode("ascii") if key == "text" else value)
            for key, value in member.items()}


def _is_uint(value: object) -> bool:
    return type(value) is int and value >= 0


def _same_json(a: object, b: object) -> bool:
    """Whether *a* and *b* are the same JSON (``1`` and ``True``, ``1`` and ``1.0`` are not)."""
    return json.dumps(a) == json.dumps(b)


class BlobSpool:
    """The data section of a ``.nnz`` being written, kept in an unnamed temporary file.

    Streaming compression adds each tensor's blobs as soon as they are encoded and drops
    them; :func:`write_spooled` then writes the preamble and header (which needs the whole
    blob table) and copies the data section after them in 1 MiB pieces.  The file is the one
    :func:`write_container` writes from the same blobs, byte for byte.  The spool is created
    unlinked (``tempfile.TemporaryFile``), so nothing is ever left behind.
    """

    def __init__(self, directory: str | os.PathLike | None = None):
        import tempfile

        self._file = tempfile.TemporaryFile(dir=directory)
        self.table: list[dict] = []
        self._end = 0

    def add(self, blob: bytes) -> None:
        """Append *blob* at the next aligned offset."""
        offset = align(self._end)
        self._file.write(b"\0" * (offset - self._end))
        self._file.write(blob)
        self.table.append({"offset": offset, "size": len(blob), "crc32": crc32(blob)})
        self._end = offset + len(blob)

    def copy_to(self, handle: BinaryIO) -> int:
        """Write the data section to *handle*; returns its size."""
        self._file.seek(0)
        while piece := self._file.read(1 << 20):
            handle.write(piece)
        return self._end

    def close(self) -> None:
        """Drop the temporary file."""
        self._file.close()


def write_spooled(handle: BinaryIO, header: dict, spool: BlobSpool, compress_header: bool = True, dictionary: int = 2) -> int:
    """Write a complete ``.nnz`` from *header* (without ``blobs``) and the blobs in *spool*; returns its size."""
    return _write_head(handle, header, spool.table, compress_header, dictionary) + spool.copy_to(handle)


@dataclass
class Container:
    """An opened ``.nnz``: its parsed header and access to its checked blobs."""

    header: dict
    version: tuple[int, int]
    header_stored_size: int
    data_start: int
    file_size: int
    _handle: BinaryIO
    #: Serialises seek + read, so that worker threads may read chunks at once.
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def blob(self, index: int) -> bytes:
        """The bytes of blob *index*, after checking its CRC-32 (safe to call from several threads)."""
        entry = self.header["blobs"][index]
        with self._lock:
            self._handle.seek(self.data_start + entry["offset"])
            data = self._handle.read(entry["size"])
        if len(data) != entry["size"]:
            raise FormatError(f"rule 6.11: blob {index} is truncated")
        if crc32(data) != entry["crc32"]:
            raise FormatError(f"rule 6.13: blob {index} is corrupt (CRC-32 mismatch)")
        return data

    def close(self) -> None:
        """Close the underlying file."""
        self._handle.close()

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_container(path: str | os.PathLike) -> Container:
    """Open and validate a ``.nnz`` file (preamble, header CRC and JSON, blob table)."""
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise FormatError(f"cannot open {os.fspath(path)}: {os_reason(exc)}") from None
    try:
        return read_container(handle)
    except BaseException:
        handle.close()
        raise


def read_container(handle: BinaryIO) -> Container:
    """Validate the container structure of an open binary file (see spec/container.md §6)."""
    handle.seek(0, os.SEEK_END)
    file_size = handle.tell()
    handle.seek(0)
    preamble = handle.read(PREAMBLE_SIZE)
    if len(preamble) < 8 or preamble[:8] != MAGIC:
        raise FormatError("rule 6.1: not an nnzip file (bad magic bytes)")
    if len(preamble) < PREAMBLE_SIZE:
        raise FormatError("rule 6.2: truncated file: the preamble is incomplete")
    _, major, minor, flags, header_size, header_crc = _PREAMBLE.unpack(preamble)
    if major != MAJOR:
        raise FormatError(f"rule 6.3: unsupported format version {major}.{minor} (this nnzip reads {MAJOR}.x)")
    if flags & ~_KNOWN_FLAGS:
        raise FormatError(f"rule 6.4: unknown flags 0x{flags:08x} in the preamble")
    if flags & FLAG_HEADER_DICTIONARY and not flags & FLAG_HEADER_ZLIB:
        raise FormatError("rule 6.4: flag bit 1 (preset dictionary) is set without bit 0 (zlib header)")
    if flags & FLAG_HEADER_DICTIONARY_2 and not flags & FLAG_HEADER_ZLIB:
        raise FormatError("rule 6.4: flag bit 2 (preset dictionary 2) is set without bit 0 (zlib header)")
    if flags & FLAG_HEADER_DICTIONARY and flags & FLAG_HEADER_DICTIONARY_2:
        raise FormatError("rule 6.4: flag bits 1 and 2 are both set (a header stream has one preset dictionary)")
    if flags & FLAGS_1_2 and minor < 2:
        raise FormatError(f"rule 6.21: flags 0x{flags:08x} use format 1.2 features (bit 2: dictionary 2, bit 3: compact header) but the file says {major}.{minor}")
    if header_size > MAX_HEADER_BYTES:
        raise FormatError(f"rule 6.5: header size {header_size} exceeds the cap of {MAX_HEADER_BYTES} bytes")
    if PREAMBLE_SIZE + header_size > file_size:
        raise FormatError(f"rule 6.5: truncated file: the header claims {header_size} bytes, the file has {file_size - PREAMBLE_SIZE} after the preamble")
    stored = handle.read(header_size)
    if crc32(stored) != header_crc:
        raise FormatError("rule 6.6: header is corrupt (CRC-32 mismatch)")
    header = parse_header(stored, flags)
    data_start = align(PREAMBLE_SIZE + header_size)
    padding = handle.read(data_start - PREAMBLE_SIZE - header_size)
    if padding.strip(b"\0"):
        raise FormatError("rule 6.9: non-zero padding after the header")
    _check_blob_table(header, data_start, file_size)
    _check_blob_padding(handle, header["blobs"], data_start)
    return Container(header, (major, minor), header_size, data_start, file_size, handle)


def parse_header(stored: bytes, flags: int) -> dict:
    """The full header object of the *stored* header bytes (rules 6.5, 6.7, 6.8, 6.16-6.20 and, expanding a compact header, 6.22).

    Nesting and the number of values are counted on the text first (rules 6.17, 6.20), so
    that a small zlib stream inflating to millions of empty arrays is refused before Python
    builds them (64 MiB of ``[],`` would take 2.4 GB and 11 s of CPU).
    """
    text = _inflate(stored, flags) if flags & FLAG_HEADER_ZLIB else stored
    check_header_text(text)
    try:
        header = json.loads(text.decode("utf-8"), parse_constant=_reject_constant, parse_float=_parse_float, parse_int=_parse_int,
                            object_pairs_hook=_unique_members)
    except _HeaderRuleError as exc:
        raise FormatError(str(exc)) from None
    except RecursionError:  # not reached after check_header_text's depth count; kept as a guard
        raise FormatError(f"rule 6.17: the header nests arrays and objects more than {MAX_HEADER_DEPTH} deep") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"rule 6.8: header is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FormatError("rule 6.8: header must be a JSON object")
    if re.search(rb"\\u[dD][89a-fA-F]", text):
        _check_surrogate_escapes(text)
    return expand_compact(header) if flags & FLAG_HEADER_COMPACT else header


def check_header_text(text: bytes) -> None:
    """Rules 6.5 (size), 6.17 (nesting) and 6.20 (values) on header JSON text, in linear time and bounded memory.

    The writer calls it too, so that nnzip never writes a header its reader refuses.
    """
    if len(text) > MAX_HEADER_BYTES:
        raise FormatError(f"rule 6.5: the header takes {len(text):,} bytes, more than {MAX_HEADER_BYTES:,}")
    opening = text.count(b"[") + text.count(b"{")
    if opening <= MAX_HEADER_DEPTH and opening + text.count(b",") <= MAX_HEADER_VALUES:
        return  # even counting the brackets and commas inside strings, neither cap can be reached
    separators, depth = _structure_counts(text)
    if separators > MAX_HEADER_VALUES:
        raise FormatError(f"rule 6.20: the header holds {separators:,} commas, '[' and '{{' outside strings, more than {MAX_HEADER_VALUES:,}")
    if depth > MAX_HEADER_DEPTH:
        raise FormatError(f"rule 6.17: the header nests arrays and objects {depth} deep, more than {MAX_HEADER_DEPTH}")


#: The bytes that matter to :func:`_structure_counts`, and how much each changes the nesting depth.
_SPECIAL = np.zeros(256, dtype=bool)
_SPECIAL[list(b'"\\[]{},')] = True
_DEPTH_STEP = np.zeros(256, dtype=np.int64)
_DEPTH_STEP[list(b"[{")] = 1
_DEPTH_STEP[list(b"]}")] = -1
_SEPARATOR = np.zeros(256, dtype=bool)
_SEPARATOR[list(b",[{")] = True
_CHUNK = 1 << 20


def _structure_counts(text: bytes) -> tuple[int, int]:
    """(commas, '[' and '{' outside strings; deepest nesting) of JSON *text*, one 1 MiB chunk at a time.

    A quote ends or starts a string unless an odd run of backslashes precedes it.  Exact on
    valid JSON; on invalid text the counts are exact up to where a JSON parser would stop,
    which is what bounds the parser's work.  Vectorised over the special bytes of each chunk.
    """
    data = np.frombuffer(text, dtype=np.uint8)
    in_string, run, depth, deepest, separators = False, 0, 0, 0, 0
    for start in range(0, data.size, _CHUNK):
        block = data[start:start + _CHUNK]
        index = np.flatnonzero(_SPECIAL[block])
        if not index.size:
            run = 0
            continue
        chars = block[index]
        backslash = chars == ord("\\")
        # Does element k directly follow a backslash (element k-1, or the previous chunk's last byte)?
        after_backslash = np.empty(index.size, dtype=bool)
        after_backslash[0] = index[0] == 0 and run > 0
        after_backslash[1:] = backslash[:-1] & (np.diff(index) == 1)
        # Length of the backslash run ending at each backslash element (a run may go on from the last chunk).
        order = np.arange(index.size)
        run_start = np.maximum.accumulate(np.where(backslash & ~after_backslash, order, -1))
        run_length = np.where(run_start >= 0, order - run_start + 1, order + 1 + run)
        escaped = np.empty(index.size, dtype=bool)
        escaped[0] = after_backslash[0] and run % 2 == 1
        escaped[1:] = after_backslash[1:] & (run_length[:-1] % 2 == 1)
        quote = (chars == ord('"')) & ~escaped
        toggles = np.cumsum(quote)
        outside = ((toggles - quote) % 2 == 1) == in_string  # the string state before each element
        structural = chars[outside & ~quote & ~backslash]
        separators += int(np.count_nonzero(_SEPARATOR[structural]))
        if structural.size:
            path = depth + np.cumsum(_DEPTH_STEP[structural])
            deepest, depth = max(deepest, int(path.max())), int(path[-1])
        in_string = in_string != bool(toggles[-1] % 2)
        run = int(run_length[-1]) if backslash[-1] and index[-1] == block.size - 1 else 0
        if separators > MAX_HEADER_VALUES or deepest > MAX_HEADER_DEPTH:
            break  # refused whatever follows
    return separators, deepest


def _inflate(stored: bytes, flags: int) -> bytes:
    """Rule 6.7: one complete zlib stream of at most MAX_HEADER_BYTES, with the preset dictionary flag bit 1 or 2 names, or none."""
    # zlib's FLG byte has FDICT (0x20) set when DICTID (the dictionary's Adler-32, big-endian)
    # follows.  Python's decompressobj(zdict=...) also inflates a stream that never asks for
    # the dictionary, so the flag and the DICTID are checked here, before inflating.
    wants_dictionary = len(stored) >= 2 and bool(stored[1] & 0x20)
    dictionary = header_dictionary_for(flags)
    if dictionary is not None:
        number, bit = (2, 2) if flags & FLAG_HEADER_DICTIONARY_2 else (1, 1)
        if not wants_dictionary or stored[2:6] != zlib.adler32(dictionary).to_bytes(4, "big"):
            raise FormatError(f"rule 6.7: flag bit {bit} is set but the header's zlib stream does not use preset dictionary {number} (FDICT/DICTID)")
        inflater = zlib.decompressobj(zdict=dictionary)
    elif wants_dictionary:
        raise FormatError("rule 6.7: header is not a valid zlib stream without a dictionary: it asks for a preset dictionary and flag bits 1 and 2 are clear")
    else:
        inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(stored, MAX_HEADER_BYTES)
    except zlib.error as exc:
        raise FormatError(f"rule 6.7: header is not a valid zlib stream: {exc}") from None
    if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
        raise FormatError(f"rule 6.7: header is not one complete zlib stream of at most {MAX_HEADER_BYTES} bytes")
    return text


class _HeaderRuleError(Exception):
    """Raised from inside the JSON parser's hooks; turned into a FormatError by parse_header."""


def _reject_constant(name: str):
    raise _HeaderRuleError(f"rule 6.8: {name} is not allowed in the header")


def _parse_float(text: str) -> float:
    """A JSON number with a fraction or exponent: never an integer (§1), and finite (rule 6.18)."""
    value = float(text)
    if not math.isfinite(value):
        raise _HeaderRuleError(f"rule 6.18: the number {_clip(text)} is beyond the range of binary64 (it would read as infinity)")
    return value


def _parse_int(text: str) -> int:
    """A JSON number without fraction or exponent: an integer (§1), within 64 bits (rule 6.18)."""
    if len(text) > 21:  # more digits than any 64-bit value: refuse before converting
        raise _HeaderRuleError(f"rule 6.18: the integer {_clip(text)} is outside {INT_MIN}..{INT_MAX}")
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise _HeaderRuleError(f"rule 6.18: the integer {text} is outside {INT_MIN}..{INT_MAX}")
    return value


def _unique_members(pairs: list) -> dict:
    """Rule 6.16: an object naming a member twice is ambiguous (parsers keep the first or the last)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _HeaderRuleError(f"rule 6.16: the header has two members named {_clip(repr(duplicate))} in one object")
    return obj


#: The escapes that matter for surrogates: an escaped backslash (skipped, so ``\\ud800`` is
#: not an escape) or a ``\u`` escape of a code point in U+D800-U+DFFF.
_SURROGATE_ESCAPES = re.compile(rb"\\\\|\\u([dD][89a-fA-F][0-9a-fA-F]{2})")


def _check_surrogate_escapes(text: bytes) -> None:
    """Rule 6.19: every ``\\u`` escape of a surrogate is half of a pair, or one of U+DC80-U+DCFF."""
    escapes = [(m.start(), m.end(), int(m.group(1), 16)) for m in _SURROGATE_ESCAPES.finditer(text) if m.group(1)]
    paired = set()
    for (start, end, code), (next_start, _, next_code) in zip(escapes, escapes[1:]):
        if 0xD800 <= code <= 0xDBFF and next_start == end and 0xDC00 <= next_code <= 0xDFFF and start not in paired:
            paired.update((start, next_start))
    for start, _, code in escapes:
        if start not in paired and not 0xDC80 <= code <= 0xDCFF:
            raise FormatError(f"rule 6.19: the header holds a lone surrogate \\u{code:04x} (at byte {start}), which UTF-8 cannot encode")


def _clip(text: str, limit: int = 60) -> str:
    """*text* cut for an error message: a hostile header may hold megabyte strings."""
    return text if len(text) <= limit else text[:limit] + "..."


def _check_blob_table(header: dict, data_start: int, file_size: int) -> None:
    """Blobs tile the data section in order: aligned, no overlap, no hole, no tail."""
    blobs = header.get("blobs")
    if not isinstance(blobs, list) or len(blobs) > MAX_BLOBS:
        raise FormatError(f"rule 6.10: header 'blobs' must be a list of at most {MAX_BLOBS} entries")
    expected = 0
    for index, entry in enumerate(blobs):
        if not isinstance(entry, dict) or set(entry) != {"offset", "size", "crc32"}:
            raise FormatError(f"rule 6.10: blob {index}: entry must have exactly offset, size and crc32")
        offset, size, crc = entry["offset"], entry["size"], entry["crc32"]
        if not all(type(v) is int and v >= 0 for v in (offset, size, crc)) or crc > 0xFFFFFFFF:
            raise FormatError(f"rule 6.10: blob {index}: offset, size and crc32 must be non-negative integers")
        if offset != align(expected):
            if offset < expected:
                raise FormatError(f"rule 6.11: blob {index} overlaps the previous blob or is out of order")
            raise FormatError(f"rule 6.11: blob {index} is not at the next aligned offset (hole or misalignment)")
        if data_start + offset + size > file_size:
            raise FormatError(f"rule 6.11: blob {index} runs past the end of the file (truncated file?)")
        expected = offset + size
    if data_start + expected != file_size:
        raise FormatError(f"rule 6.11: {file_size - data_start - expected} unexpected bytes after the last blob")


def _check_blob_padding(handle: BinaryIO, blobs: list, data_start: int) -> None:
    """Padding between blobs must be zero, so that a file has one canonical byte form."""
    end = 0
    for entry in blobs:
        gap = entry["offset"] - end
        if gap:
            handle.seek(data_start + end)
            if handle.read(gap).strip(b"\0"):
                raise FormatError("rule 6.12: non-zero padding between blobs")
        end = entry["offset"] + entry["size"]
