"""The bytes of a ``.nnz`` file, exactly as ``spec/container.md`` says; no maths here.

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic  89 4E 4E 5A 0D 0A 1A 0A  ("\\x89NNZ\\r\\n\\x1a\\n")
    8       2     u16 major version (1)
    10      2     u16 minor version (0)
    12      4     u32 flags (bit 0: header is zlib-compressed; bit 1: with preset
                  dictionary 1; other bits 0)
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
from typing import BinaryIO, Iterable

import numpy as np

from .errors import FormatError, NnzipError

MAGIC = b"\x89NNZ\r\n\x1a\n"
#: The format version nnzip writes at most (1.1: chunked parts, §4.4); it writes 1.0 for files without chunks.
MAJOR, MINOR = 1, 2
ALIGNMENT = 8
FLAG_HEADER_ZLIB = 1
FLAG_HEADER_DICTIONARY = 2
_KNOWN_FLAGS = FLAG_HEADER_ZLIB | FLAG_HEADER_DICTIONARY
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


def encode_header(header: dict, compress: bool = True) -> tuple[bytes, int]:
    """The stored header bytes and the flags describing them."""
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("utf-8")
    try:
        check_header_text(text)  # never write a header the reader refuses (rules 6.5, 6.17, 6.20)
    except FormatError as exc:
        raise NnzipError(f"cannot write this .nnz: {exc}") from None
    if compress:
        deflater = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=header_dictionary())
        return deflater.compress(text) + deflater.flush(), FLAG_HEADER_ZLIB | FLAG_HEADER_DICTIONARY
    return text, 0


def write_container(handle: BinaryIO, header: dict, blobs: Iterable[bytes], compress_header: bool = True) -> int:
    """Write a complete ``.nnz`` to *handle*; returns the number of bytes written.

    *header* must not contain ``blobs``: this function computes that table from
    *blobs* (which it consumes once, so it may be a list of already-encoded bytes).
    """
    blobs = [bytes(b) for b in blobs]
    # The lowest version that says what the file uses (§2): 1.1 only when a part is chunked (§4.4),
    # so a file without chunks is byte for byte what nnzip 1.0 wrote.
    minor = _minor(header)
    table, offset = [], 0
    for blob in blobs:
        offset = align(offset)
        table.append({"offset": offset, "size": len(blob), "crc32": crc32(blob)})
        offset += len(blob)
    stored, flags = encode_header({**header, "blobs": table}, compress_header)
    preamble = _PREAMBLE.pack(MAGIC, MAJOR, minor, flags, len(stored), crc32(stored))
    written = handle.write(preamble) + handle.write(stored)
    written += handle.write(b"\0" * (align(written) - written))
    data_start = written
    for entry, blob in zip(table, blobs):
        written += handle.write(b"\0" * (data_start + entry["offset"] - written))
        written += handle.write(blob)
    return written


def _minor(header: dict) -> int:
    """The lowest minor version for what *header* uses (§2): 2 for ONNX subgraph tensors (§5.7), 1 for chunks, else 0."""
    source = header.get("source")
    if isinstance(source, dict) and source.get("format") == "onnx":
        from .io.onnx_format import uses_subgraph_tensors  # the onnx module imports onnx itself only when used

        if uses_subgraph_tensors(source.get("structure")):
            return 2
    return 1 if _has_chunks(header) else 0


def _has_chunks(header: dict) -> bool:
    """Whether any part of *header* is chunked (names ``chunk_size``); tolerant of malformed headers, which tests write."""
    tensors = header.get("tensors")
    return isinstance(tensors, list) and any(
        isinstance(part, dict) and "chunk_size" in part
        for entry in tensors if isinstance(entry, dict) and isinstance(entry.get("parts"), list)
        for part in entry["parts"]
    )


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


def write_spooled(handle: BinaryIO, header: dict, spool: BlobSpool, compress_header: bool = True) -> int:
    """Write a complete ``.nnz`` from *header* (without ``blobs``) and the blobs in *spool*; returns its size."""
    minor = _minor(header)
    stored, flags = encode_header({**header, "blobs": spool.table}, compress_header)
    preamble = _PREAMBLE.pack(MAGIC, MAJOR, minor, flags, len(stored), crc32(stored))
    written = handle.write(preamble) + handle.write(stored)
    written += handle.write(b"\0" * (align(written) - written))
    return written + spool.copy_to(handle)


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
        raise FormatError(f"cannot open {os.fspath(path)}: {exc.strerror}") from None
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
    """The header object of the *stored* header bytes (rules 6.5, 6.7, 6.8 and 6.16-6.20).

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
    return header


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
    """Rule 6.7: one complete zlib stream of at most MAX_HEADER_BYTES, with dictionary 1 exactly when flag bit 1 says so."""
    # zlib's FLG byte has FDICT (0x20) set when DICTID (the dictionary's Adler-32, big-endian)
    # follows.  Python's decompressobj(zdict=...) also inflates a stream that never asks for
    # the dictionary, so the flag and the DICTID are checked here, before inflating.
    wants_dictionary = len(stored) >= 2 and bool(stored[1] & 0x20)
    if flags & FLAG_HEADER_DICTIONARY:
        if not wants_dictionary or stored[2:6] != zlib.adler32(header_dictionary()).to_bytes(4, "big"):
            raise FormatError("rule 6.7: flag bit 1 is set but the header's zlib stream does not use preset dictionary 1 (FDICT/DICTID)")
        inflater = zlib.decompressobj(zdict=header_dictionary())
    elif wants_dictionary:
        raise FormatError("rule 6.7: header is not a valid zlib stream without a dictionary: it asks for a preset dictionary and flag bit 1 is clear")
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
