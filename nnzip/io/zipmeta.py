"""Zip member metadata shared by the zip-based formats (``keras-v3``, ``npz``).

A member's metadata is carried in the ``.nnz`` header as the JSON object
``{"compress_type", "date_time", "external_attr", "create_system", "comment",
"zip64"}`` (spec/container.md §5.3) so that the rebuilt archive lists the same
members, in the same order, with the same names, compression methods, times and
permissions.  Python's :mod:`zipfile` writes everything else (versions, flags,
CRCs, sizes) from these, so an archive written by :mod:`zipfile` -- as Keras and
numpy do -- comes back with identical zip records.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
import zipfile
from typing import IO, Iterator

from ..errors import FormatError, InputError

#: Compression methods :mod:`zipfile` can write: stored, deflate, bzip2, lzma.
COMPRESS_TYPES = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
#: Inclusive ranges of the DOS date/time fields a zip record can hold (year, month, day, h, m, s).
DATE_TIME_RANGES = ((1980, 2107), (0, 15), (0, 31), (0, 31), (0, 63), (0, 62))
#: Zip's limit on a name or comment length in bytes.
MAX_FIELD_BYTES = 0xFFFF
#: The zip64 extended-information extra field's header id.
_ZIP64_EXTRA_ID = 0x0001
_ENCRYPTED_FLAG = 0x1


def open_archive(path: str | os.PathLike) -> zipfile.ZipFile:
    """Open a zip archive for reading, turning zipfile's errors into a one-line InputError."""
    try:
        return zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise InputError(f"cannot read {os.fspath(path)} as a zip archive: {exc}") from None


def members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The archive's members in file order; rejects duplicate names and encrypted members."""
    infos = archive.infolist()
    seen: set[str] = set()
    for info in infos:
        if info.filename in seen:
            raise InputError(f"zip archive has two members named {info.filename!r}")
        if info.flag_bits & _ENCRYPTED_FLAG:
            raise InputError(f"zip member {info.filename!r} is encrypted")
        if info.compress_type not in COMPRESS_TYPES:
            raise InputError(f"zip member {info.filename!r} uses unsupported compression method {info.compress_type}")
        seen.add(info.filename)
    return infos


def describe(info: zipfile.ZipInfo) -> dict:
    """The JSON record of one member's zip metadata (everything but its name and bytes)."""
    return {
        "compress_type": info.compress_type,
        "date_time": list(info.date_time),
        "external_attr": info.external_attr,
        "create_system": info.create_system,
        "comment": base64.b64encode(info.comment).decode("ascii"),
        "zip64": _wrote_zip64(info),
    }


def _wrote_zip64(info: zipfile.ZipInfo) -> bool:
    """Whether the member was written with zip64 records.

    numpy's ``savez`` forces them even on small members (``force_zip64=True``):
    the local header then carries a zip64 extra field and both headers say
    "version needed to extract 4.5", while the central directory needs no zip64
    field.  Keeping this bit lets the rebuilt archive do the same, byte for byte.
    """
    return info.extract_version >= zipfile.ZIP64_VERSION or _has_zip64_extra(info.extra)


def _has_zip64_extra(extra: bytes) -> bool:
    """Whether an extra field holds a zip64 record."""
    offset = 0
    while offset + 4 <= len(extra):
        header_id, size = struct.unpack_from("<HH", extra, offset)
        if header_id == _ZIP64_EXTRA_ID:
            return True
        offset += 4 + size
    return False


def zip_info(name: str, record: dict, file_size: int = 0) -> zipfile.ZipInfo:
    """A :class:`zipfile.ZipInfo` for writing, from a checked :func:`describe` record."""
    info = zipfile.ZipInfo(name, date_time=tuple(record["date_time"]))
    info.compress_type = record["compress_type"]
    info.external_attr = record["external_attr"]
    info.create_system = record["create_system"]
    info.comment = base64.b64decode(record["comment"])
    info.file_size = file_size  # lets zipfile decide up front whether zip64 records are needed
    return info


def write_member(archive: zipfile.ZipFile, name: str, record: dict, chunks: Iterator[bytes], size: int) -> None:
    """Write one member from *chunks* (totalling *size* bytes) with the metadata in *record*."""
    info = zip_info(name, record, size)
    with archive.open(info, "w", force_zip64=bool(record["zip64"])) as out:
        for chunk in chunks:
            out.write(chunk)


def copy_chunks(handle: IO[bytes], chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Read *handle* to its end in chunks (keeps memory flat when streaming big members)."""
    while chunk := handle.read(chunk_size):
        yield chunk


# --- validation of untrusted records ---------------------------------------------------------


def check_name(name: object, where: str) -> str:
    """Raise FormatError unless *name* is a usable zip member name."""
    if not isinstance(name, str) or not name or "\0" in name or len(name.encode("utf-8", "surrogatepass")) > MAX_FIELD_BYTES:
        raise FormatError(f"{where}: a member name must be a non-empty string without NUL of at most 65535 bytes")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"{where}: member name {name!r} is not valid Unicode text") from None
    return name


def check_record(record: object, where: str) -> None:
    """Raise FormatError unless *record* is a well-formed :func:`describe` record."""
    if not isinstance(record, dict) or set(record) != {"compress_type", "date_time", "external_attr", "create_system", "comment", "zip64"}:
        raise FormatError(f"{where}: 'zip' needs exactly compress_type, date_time, external_attr, create_system, comment, zip64")
    if record["compress_type"] not in COMPRESS_TYPES or type(record["compress_type"]) is not int:
        raise FormatError(f"{where}: unsupported compress_type {record['compress_type']!r}")
    stamp = record["date_time"]
    if not isinstance(stamp, list) or len(stamp) != 6 or not all(
        type(v) is int and low <= v <= high for v, (low, high) in zip(stamp, DATE_TIME_RANGES)
    ):
        raise FormatError(f"{where}: date_time must be 6 integers a zip record can hold")
    if type(record["external_attr"]) is not int or not 0 <= record["external_attr"] < 2**32:
        raise FormatError(f"{where}: external_attr must be a 32-bit unsigned integer")
    if type(record["create_system"]) is not int or not 0 <= record["create_system"] < 256:
        raise FormatError(f"{where}: create_system must be a byte")
    if type(record["zip64"]) is not bool:
        raise FormatError(f"{where}: zip64 must be a boolean")
    check_base64(record["comment"], where, "comment", MAX_FIELD_BYTES)


def check_base64(text: object, where: str, field: str, max_bytes: int) -> bytes:
    """Decode a base64 field of an untrusted structure, or raise FormatError."""
    if not isinstance(text, str) or len(text) > 4 * ((max_bytes + 2) // 3):
        raise FormatError(f"{where}: {field} must be a base64 string of at most {max_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"{where}: {field} is not valid base64") from None


def check_unique_names(names: list[str], where: str) -> None:
    """Raise FormatError when two members share a name."""
    if len(set(names)) != len(names):
        raise FormatError(f"{where}: two members share a name")
