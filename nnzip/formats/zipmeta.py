"""Zip archives of the zip-based formats (``keras-v3``, ``npz``): safe reading and member metadata.

Reading.  An archive is hostile until checked: :func:`members` refuses, before any
member's bytes are read, names that would escape an extraction folder (zip-slip),
duplicates, links and directories, encrypted members, stored bytes that overlap or
run past the file, and declared sizes over the reader's output cap
(spec/container.md §8.2, rules 8.10-8.15).  :func:`open_member` then inflates a
member in bounded pieces with nnzip's own decompressor loop -- :mod:`zipfile`'s
bzip2 and LZMA paths inflate a whole read's worth of input at once, which for a
bzip2 bomb is gigabytes -- and refuses a member whose bytes disagree with its
declared size or CRC-32.

Metadata.  A member's metadata is carried in the ``.nnz`` header as the JSON object
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
import bz2
import io
import lzma
import os
import re
import stat
import struct
import zlib
import zipfile
from typing import IO, Iterator

from ..errors import FormatError, InputError
from ..limits import DEFAULT_LIMITS, DecodeLimits

#: Compression methods :mod:`zipfile` can write: stored, deflate, bzip2, lzma.
#: A zip archive starts with a local file header, or (no members) the end-of-directory record.
SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
#: Compression methods nnzip reads and writes back (stored, deflate, bzip2, lzma).
COMPRESS_TYPES = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
#: Inclusive ranges of the DOS date/time fields a zip record can hold (year, month, day, h, m, s).
DATE_TIME_RANGES = ((1980, 2107), (0, 15), (0, 31), (0, 31), (0, 63), (0, 62))
#: Zip's limit on a name or comment length in bytes.
MAX_FIELD_BYTES = 0xFFFF
#: Largest piece of inflated bytes produced at a time (memory stays near this, not the member).
PIECE_BYTES = 1 << 20
#: The zip64 extended-information extra field's header id.
_ZIP64_EXTRA_ID = 0x0001
_ENCRYPTED_FLAG = 0x1
#: General-purpose flag bits 5 (compressed patched data) and 6 (strong encryption).
_UNSUPPORTED_FLAGS = 0x20 | 0x40
_UTF8_NAME_FLAG = 0x800
#: The MS-DOS "directory" bit in the low byte of external_attr.
_DOS_DIRECTORY = 0x10
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
#: A drive prefix (``C:``) that Windows extraction tools would honour.
_DRIVE = re.compile(r"[A-Za-z]:")
#: Errors the standard decompressors and zipfile raise on damaged data.
_DATA_ERRORS = (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError, struct.error, NotImplementedError)


def open_archive(path: str | os.PathLike) -> zipfile.ZipFile:
    """Open a zip archive for reading, turning zipfile's errors into a one-line InputError (rule 8.10)."""
    try:
        return zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, struct.error, EOFError, NotImplementedError, OverflowError) as exc:
        raise InputError(f"rule 8.10: cannot read {os.fspath(path)} as a zip archive: {exc}") from None


# --- member names and types (shared by the input checks and the .nnz structure checks) ---------


def name_problem(name: str) -> str | None:
    """Why *name* is not a safe relative member path (rule 8.11), or None when it is.

    A safe name extracts inside the folder it is extracted to on every system:
    relative, ``/``-separated, without ``..``, ``.`` or empty components, without
    backslashes (Windows separators) or a drive prefix, without NUL.  A single
    trailing ``/`` (a directory entry) is left to :func:`type_problem`.
    """
    if not name:
        return "it is empty"
    if "\0" in name:
        return "it holds a NUL character"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_FIELD_BYTES:
        return f"it is longer than {MAX_FIELD_BYTES} bytes"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid Unicode text"
    if "\\" in name:
        return "it holds a backslash (a Windows path separator)"
    if name.startswith("/"):
        return "it is an absolute path"
    if _DRIVE.match(name):
        return "it starts with a drive letter"
    parts = name[:-1].split("/") if name.endswith("/") else name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "it has an empty, '.' or '..' path component"
    return None


def type_problem(name: str, external_attr: int) -> str | None:
    """Why a member is not a regular file (rule 8.13), or None when it is one.

    The Unix file type sits in the high 16 bits of ``external_attr`` (0 when the
    writer recorded none); unzip tools create what it says -- a symbolic link
    pointing anywhere, for ``S_IFLNK`` -- so only "regular" or "none" pass.
    """
    kind = stat.S_IFMT(external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "it is a symbolic link"
    if kind == stat.S_IFDIR or name.endswith("/") or external_attr & _DOS_DIRECTORY:
        return "it is a directory entry"
    if kind not in (0, stat.S_IFREG):
        return f"it is not a regular file (Unix file type {kind:#o})"
    return None


def folder_clash(names: list[str]) -> str | None:
    """A name that is also another member's folder (``a`` and ``a/b``), or None (rule 8.12)."""
    present = set(names)
    for name in names:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in present:
                return folder
    return None


# --- reading untrusted archives -----------------------------------------------------------------


def members(archive: zipfile.ZipFile, limits: DecodeLimits | None = DEFAULT_LIMITS) -> list[zipfile.ZipInfo]:
    """The archive's members in file order, after every check that needs no member's bytes.

    Rules 8.10-8.15: safe names, no duplicates or folder clashes, regular files
    only, no encryption, a supported compression method, each member's local
    header agreeing with the central directory and its stored bytes inside the
    file without overlapping another's, and the declared uncompressed sizes
    within ``limits.output_cap(file size)`` -- the cap a reader applies to a
    ``.nnz`` of the same size, so a small archive cannot name gigabytes.  With
    ``limits=None`` the sizes are not judged (for sniffing, before the reader
    that knows the caller's limits runs).
    """
    where = os.fspath(archive.filename)
    infos = archive.infolist()
    seen: set[str] = set()
    for info in infos:
        name = info.orig_filename  # zipfile cuts .filename at a NUL; the raw name is what counts
        problem = name_problem(name)
        if problem:
            raise InputError(f"rule 8.11: {where}: zip member {name!r} is not a safe relative path: {problem}")
        problem = type_problem(name, info.external_attr)
        if problem:
            raise InputError(f"rule 8.13: {where}: zip member {name!r} is refused: {problem}")
        if name in seen:
            raise InputError(f"rule 8.12: {where}: zip archive has two members named {name!r}")
        if info.flag_bits & (_ENCRYPTED_FLAG | _UNSUPPORTED_FLAGS):
            raise InputError(f"rule 8.14: {where}: zip member {name!r} is encrypted or patched")
        if info.compress_type not in COMPRESS_TYPES:
            raise InputError(f"rule 8.14: {where}: zip member {name!r} uses unsupported compression method {info.compress_type}")
        seen.add(name)
    clash = folder_clash([info.orig_filename for info in infos])
    if clash:
        raise InputError(f"rule 8.12: {where}: zip member {clash!r} is also another member's folder")
    _check_layout(archive, infos, where)
    if limits is not None:
        _check_declared_sizes(infos, where, limits)
    return infos


def _check_layout(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], where: str) -> None:
    """Every member's stored bytes lie inside the file, after its local header, overlapping no other's."""
    with open(archive.filename, "rb") as raw:
        file_size = os.fstat(raw.fileno()).st_size
        spans = sorted((info.header_offset, _data_start(raw, info, where) + info.compress_size, info.orig_filename) for info in infos)
    for (_, end, name), (next_start, _, _) in zip(spans, spans[1:] + [(file_size, 0, "")]):
        if end > next_start:
            what = "runs past the end of the file" if next_start == file_size else "overlaps the next member"
            raise InputError(f"rule 8.10: {where}: the stored bytes of zip member {name!r} {what}")


def _data_start(raw: IO[bytes], info: zipfile.ZipInfo, where: str) -> int:
    """Offset of a member's stored bytes, from its local header (checked against the central directory)."""
    if info.header_offset < 0:  # zipfile derives it from the directory's offsets, which may not add up
        raise InputError(f"rule 8.10: {where}: zip member {info.orig_filename!r} has a local header offset before the file's start")
    raw.seek(info.header_offset)
    fixed = raw.read(_LOCAL_HEADER.size)
    if len(fixed) != _LOCAL_HEADER.size or fixed[:4] != _LOCAL_SIGNATURE:
        raise InputError(f"rule 8.10: {where}: zip member {info.orig_filename!r} has no local header where the central directory says")
    fields = _LOCAL_HEADER.unpack(fixed)
    name_length, extra_length = fields[-2], fields[-1]
    stored = raw.read(name_length)
    encoding = "utf-8" if fields[3] & _UTF8_NAME_FLAG else "cp437"
    if stored.decode(encoding, "replace") != info.orig_filename:
        raise InputError(f"rule 8.10: {where}: zip member {info.orig_filename!r} has another name in its local header")
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


def _check_declared_sizes(infos: list[zipfile.ZipInfo], where: str, limits: DecodeLimits) -> None:
    """Rule 8.15, before reading: the members' declared uncompressed sizes within the output cap."""
    cap = limits.output_cap(os.path.getsize(where))
    total = 0
    for info in infos:
        total += info.file_size
        if total > cap:
            raise InputError(f"rule 8.15: {where}: zip member {info.orig_filename!r} brings the declared uncompressed size "
                             f"to {total} bytes, over the {cap}-byte output cap for a file of this size")


def open_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> io.BufferedReader:
    """A buffered stream of one checked member's bytes, inflated in bounded pieces.

    Reading past the end checks the member (rules 8.10 and 8.15): its inflated
    size equals the declared one, the compressed data is complete and the CRC-32
    matches; more bytes than declared are refused as soon as they appear.
    """
    return io.BufferedReader(_MemberReader(archive, info), PIECE_BYTES)


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """All bytes of one checked member (for small members whose declared size was capped)."""
    with open_member(archive, info) as handle:
        return handle.read()


def extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: str | os.PathLike) -> None:
    """Copy one checked member to the file *target* in bounded pieces (memory stays flat)."""
    with open_member(archive, info) as source, open(target, "wb") as out:
        while chunk := source.read(PIECE_BYTES):
            out.write(chunk)


def expect_end(handle: IO[bytes], info: zipfile.ZipInfo) -> None:
    """Read to the member's end, which runs its final checks; refuse any bytes left over."""
    if handle.read(1):
        raise InputError(f"rule 8.15: zip member {info.orig_filename!r} holds bytes after its content")


class _MemberReader(io.RawIOBase):
    """Raw stream of a member's inflated bytes; every piece is at most :data:`PIECE_BYTES`."""

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo):
        super().__init__()
        self._where = f"{os.fspath(archive.filename)}: zip member {info.orig_filename!r}"
        self._info = info
        self._raw = open(archive.filename, "rb")
        try:
            self._raw.seek(_data_start(self._raw, info, os.fspath(archive.filename)))
        except BaseException:
            self._raw.close()
            raise
        self._pieces = self._inflate()
        self._pending = memoryview(b"")
        self._produced = 0
        self._crc = 0

    def readable(self) -> bool:
        """Always: this is a read-only stream."""
        return True

    def readinto(self, buffer) -> int:
        """Fill *buffer* from the next inflated piece; 0 at the end, after the final checks."""
        while not self._pending:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._take(piece)
        count = min(len(buffer), len(self._pending))
        memoryview(buffer).cast("B")[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        """Close the archive handle this stream reads from."""
        self._raw.close()
        super().close()

    def _take(self, piece: bytes) -> None:
        self._produced += len(piece)
        if self._produced > self._info.file_size:
            raise InputError(f"rule 8.15: {self._where} inflates to more than its declared {self._info.file_size} bytes")
        self._crc = zlib.crc32(piece, self._crc)
        self._pending = memoryview(piece)

    def _inflate(self) -> Iterator[bytes]:
        """Inflated pieces, then the end checks."""
        try:
            yield from _inflated_pieces(self._info.compress_type, self._compressed())
        except _DATA_ERRORS as exc:
            raise InputError(f"rule 8.10: {self._where} has damaged compressed data ({exc})") from None
        if self._produced != self._info.file_size:
            raise InputError(f"rule 8.15: {self._where} inflates to {self._produced} bytes, its declared size is {self._info.file_size}")
        if self._crc != self._info.CRC:
            raise InputError(f"rule 8.10: {self._where} fails its CRC-32 check")

    def _compressed(self) -> Iterator[bytes]:
        left = self._info.compress_size
        while left > 0:
            chunk = self._raw.read(min(left, 1 << 18))
            if not chunk:
                raise EOFError("the compressed data is truncated")
            left -= len(chunk)
            yield chunk


def _inflated_pieces(method: int, compressed: Iterator[bytes]) -> Iterator[bytes]:
    """Decompress *compressed* chunks with *method*, never more than PIECE_BYTES per call."""
    if method == zipfile.ZIP_STORED:
        yield from compressed
        return
    if method == zipfile.ZIP_DEFLATED:
        decompressor = zlib.decompressobj(-15)
    elif method == zipfile.ZIP_BZIP2:
        decompressor = bz2.BZ2Decompressor()
    else:
        decompressor, compressed = _lzma_decompressor(compressed)
    for chunk in compressed:
        while chunk is not None and not decompressor.eof:
            piece = decompressor.decompress(chunk, PIECE_BYTES)
            if piece:
                yield piece
            # zlib keeps input it could not use yet in unconsumed_tail; bz2/lzma keep it inside
            # and say so with needs_input: either way, call again without new input until done.
            if method == zipfile.ZIP_DEFLATED:
                chunk = decompressor.unconsumed_tail or None
            else:
                chunk = None if decompressor.needs_input else b""
    while not decompressor.eof:  # output still held back after the last input (a long match, a full buffer)
        piece = decompressor.decompress(b"", PIECE_BYTES)
        if not piece:
            break
        yield piece
    if method != zipfile.ZIP_LZMA and not decompressor.eof:  # an LZMA stream may end without an end marker
        raise EOFError("the compressed data ends before its end-of-stream marker")


def _lzma_decompressor(compressed: Iterator[bytes]):
    """A raw LZMA1 decompressor from the zip LZMA preamble (version, properties size, properties)."""
    head = b""
    for chunk in compressed:
        head += chunk
        if len(head) >= 4 and len(head) >= 4 + struct.unpack_from("<H", head, 2)[0]:
            break
    if len(head) < 4:
        raise EOFError("the LZMA preamble is truncated")
    size = struct.unpack_from("<H", head, 2)[0]
    if size != 5 or len(head) < 9:
        raise ValueError("the LZMA properties are not 5 bytes")
    properties, dict_size = head[4], struct.unpack_from("<I", head, 5)[0]
    if properties >= 9 * 5 * 5:
        raise ValueError("bad LZMA properties")
    lc, rest = properties % 9, properties // 9
    lzma_filter = {"id": lzma.FILTER_LZMA1, "dict_size": dict_size, "lc": lc, "lp": rest % 5, "pb": rest // 5}
    decompressor = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma_filter])

    def rest_of_stream() -> Iterator[bytes]:
        yield head[9:]
        yield from compressed

    return decompressor, rest_of_stream()


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


def check_member_paths(entries: list[dict], context: str) -> None:
    """Rule 5.3 on a structure's members (names and records already type-checked).

    The rebuilt archive must pass what :func:`members` asks of an input (rules
    8.11-8.13): safe relative names, no name that is another member's folder, and
    records that describe regular files -- else a crafted ``.nnz`` would make
    nnzip write a zip-slip archive for someone else to extract.
    """
    for entry in entries:
        name = entry["name"]
        problem = name_problem(name)
        if problem:
            raise FormatError(f"rule 5.3: {context}: member name {name!r} is not a safe relative path: {problem}")
        problem = type_problem(name, entry["zip"]["external_attr"])
        if problem:
            raise FormatError(f"rule 5.3: {context}: member {name!r} must be a regular file: {problem}")
    clash = folder_clash([entry["name"] for entry in entries])
    if clash:
        raise FormatError(f"rule 5.3: {context}: member name {clash!r} is also another member's folder")
