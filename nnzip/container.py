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
"""

from __future__ import annotations

import functools
import json
import os
import struct
import zlib
from importlib import resources
from dataclasses import dataclass
from typing import BinaryIO, Iterable

from .errors import FormatError

MAGIC = b"\x89NNZ\r\n\x1a\n"
MAJOR, MINOR = 1, 0
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
    would otherwise spend most of its bytes on: with it, the header of a small CNN
    shrinks from about 3.0 to 1.6 KB.
    """
    return resources.files("nnzip").joinpath("data/header-dictionary-1.txt").read_bytes()


def encode_header(header: dict, compress: bool = True) -> tuple[bytes, int]:
    """The stored header bytes and the flags describing them."""
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("utf-8")
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
    table, offset = [], 0
    for blob in blobs:
        offset = align(offset)
        table.append({"offset": offset, "size": len(blob), "crc32": crc32(blob)})
        offset += len(blob)
    stored, flags = encode_header({**header, "blobs": table}, compress_header)
    preamble = _PREAMBLE.pack(MAGIC, MAJOR, MINOR, flags, len(stored), crc32(stored))
    written = handle.write(preamble) + handle.write(stored)
    written += handle.write(b"\0" * (align(written) - written))
    data_start = written
    for entry, blob in zip(table, blobs):
        written += handle.write(b"\0" * (data_start + entry["offset"] - written))
        written += handle.write(blob)
    return written


@dataclass
class Container:
    """An opened ``.nnz``: its parsed header and access to its checked blobs."""

    header: dict
    version: tuple[int, int]
    header_stored_size: int
    data_start: int
    file_size: int
    _handle: BinaryIO

    def blob(self, index: int) -> bytes:
        """The bytes of blob *index*, after checking its CRC-32."""
        entry = self.header["blobs"][index]
        self._handle.seek(self.data_start + entry["offset"])
        data = self._handle.read(entry["size"])
        if len(data) != entry["size"]:
            raise FormatError(f"blob {index} is truncated")
        if crc32(data) != entry["crc32"]:
            raise FormatError(f"blob {index} is corrupt (CRC-32 mismatch)")
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
        raise FormatError("not an nnzip file (bad magic bytes)")
    if len(preamble) < PREAMBLE_SIZE:
        raise FormatError("truncated file: the preamble is incomplete")
    _, major, minor, flags, header_size, header_crc = _PREAMBLE.unpack(preamble)
    if major != MAJOR:
        raise FormatError(f"unsupported format version {major}.{minor} (this nnzip reads {MAJOR}.x)")
    if flags & ~_KNOWN_FLAGS:
        raise FormatError(f"unknown flags 0x{flags:08x} in the preamble")
    if flags & FLAG_HEADER_DICTIONARY and not flags & FLAG_HEADER_ZLIB:
        raise FormatError("flag bit 1 (preset dictionary) is set without bit 0 (zlib header)")
    if header_size > MAX_HEADER_BYTES:
        raise FormatError(f"header size {header_size} exceeds the cap of {MAX_HEADER_BYTES} bytes")
    if PREAMBLE_SIZE + header_size > file_size:
        raise FormatError(f"truncated file: the header claims {header_size} bytes, the file has {file_size - PREAMBLE_SIZE} after the preamble")
    stored = handle.read(header_size)
    if crc32(stored) != header_crc:
        raise FormatError("header is corrupt (CRC-32 mismatch)")
    header = _parse_header(stored, flags)
    data_start = align(PREAMBLE_SIZE + header_size)
    padding = handle.read(data_start - PREAMBLE_SIZE - header_size)
    if padding.strip(b"\0"):
        raise FormatError("non-zero padding after the header")
    _check_blob_table(header, data_start, file_size)
    _check_blob_padding(handle, header["blobs"], data_start)
    return Container(header, (major, minor), header_size, data_start, file_size, handle)


def _parse_header(stored: bytes, flags: int) -> dict:
    text = stored
    if flags & FLAG_HEADER_ZLIB:
        inflater = zlib.decompressobj(zdict=header_dictionary()) if flags & FLAG_HEADER_DICTIONARY else zlib.decompressobj()
        try:
            text = inflater.decompress(stored, MAX_HEADER_BYTES)
        except zlib.error as exc:
            raise FormatError(f"header is not a valid zlib stream: {exc}") from None
        if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
            raise FormatError(f"header is not one complete zlib stream of at most {MAX_HEADER_BYTES} bytes")
    try:
        header = json.loads(text.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"header is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FormatError("header must be a JSON object")
    return header


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed in the header")


def _check_blob_table(header: dict, data_start: int, file_size: int) -> None:
    """Blobs tile the data section in order: aligned, no overlap, no hole, no tail."""
    blobs = header.get("blobs")
    if not isinstance(blobs, list) or len(blobs) > MAX_BLOBS:
        raise FormatError(f"header 'blobs' must be a list of at most {MAX_BLOBS} entries")
    expected = 0
    for index, entry in enumerate(blobs):
        if not isinstance(entry, dict) or set(entry) != {"offset", "size", "crc32"}:
            raise FormatError(f"blob {index}: entry must have exactly offset, size and crc32")
        offset, size, crc = entry["offset"], entry["size"], entry["crc32"]
        if not all(type(v) is int and v >= 0 for v in (offset, size, crc)) or crc > 0xFFFFFFFF:
            raise FormatError(f"blob {index}: offset, size and crc32 must be non-negative integers")
        if offset != align(expected):
            if offset < expected:
                raise FormatError(f"blob {index} overlaps the previous blob or is out of order")
            raise FormatError(f"blob {index} is not at the next aligned offset (hole or misalignment)")
        if data_start + offset + size > file_size:
            raise FormatError(f"blob {index} runs past the end of the file (truncated file?)")
        expected = offset + size
    if data_start + expected != file_size:
        raise FormatError(f"{file_size - data_start - expected} unexpected bytes after the last blob")


def _check_blob_padding(handle: BinaryIO, blobs: list, data_start: int) -> None:
    """Padding between blobs must be zero, so that a file has one canonical byte form."""
    end = 0
    for entry in blobs:
        gap = entry["offset"] - end
        if gap:
            handle.seek(data_start + end)
            if handle.read(gap).strip(b"\0"):
                raise FormatError("non-zero padding between blobs")
        end = entry["offset"] + entry["size"]
