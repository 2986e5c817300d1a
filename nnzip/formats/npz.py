"""numpy ``.npz`` archives (format id ``npz``): a zip of ``.npy`` arrays.

Written by ``np.savez`` (members stored) or ``np.savez_compressed`` (deflated).
The structure (spec/container.md §5.6) lists every member in archive order with
its zip metadata (:mod:`nnzip.formats.zipmeta`, which also keeps the compression
method) and its ``.npy`` format version and header text verbatim; the array
bytes are the tensor.  A tensor is named as ``np.load`` names the array: the
member name without its ``.npy`` suffix.

The ``.npy`` header is parsed here with :func:`ast.literal_eval`, as numpy does;
object arrays are refused, never unpickled (nnzip never calls ``np.load``, so
there is no ``allow_pickle`` to get wrong).  Big-endian and Fortran-ordered
arrays are carried: the tensor is the little-endian C-order array, and the
writer converts back to what the header says.

Reading is bounded (spec/container.md §8.2): the archive's members pass
:func:`nnzip.formats.zipmeta.members` (names, types, declared sizes within the output
cap) before any is read; each ``.npy`` header is checked -- its length, its
dtype and shape, and the array size it declares against the member's declared
size and the cap -- before the array is allocated; the array is then streamed
into one preallocated buffer, so memory stays near the array's size, never the
compressed plus the decoded copy.
"""

from __future__ import annotations

import ast
import base64
import os
import warnings
import zipfile

import numpy as np

from ..errors import FormatError, InputError
from ..limits import DEFAULT_LIMITS, DecodeLimits
from ..model import LazyTensors, Model
from ..dtypes import normalise_dtype, parse_shape
from . import zipmeta
from .base import Malformed, Probe, SourceFormat

FORMAT_ID = "npz"
SUFFIX = ".npz"
NPY_MAGIC = b"\x93NUMPY"
#: numpy's own default cap on a .npy header (``max_header_size``).
MAX_NPY_HEADER = 10000
#: .npy format version -> (bytes of the header-length field, text encoding of the header).
NPY_VERSIONS = {(1, 0): (2, "latin1"), (2, 0): (4, "latin1"), (3, 0): (4, "utf-8")}
_WHERE = "rule 5.6: npz structure"
#: The §8.2 rules a ``.npy`` member breaks: its header, or the type it declares.
_HEADER, _TYPE = "8.16", "8.17"


def looks_like(archive: zipfile.ZipFile) -> bool:
    """Whether every member of an open zip archive starts with the ``.npy`` magic."""
    for info in archive.infolist():
        if info.file_size < len(NPY_MAGIC):
            return False
        with zipmeta.open_member(archive, info) as handle:
            if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
                return False
    return True


def tensor_name(member: str) -> str:
    """The key ``np.load`` gives a member: its name without the ``.npy`` suffix."""
    return member[:-4] if member.endswith(".npy") else member


# --- .npy headers -----------------------------------------------------------------------------


def parse_npy_header(text: str) -> tuple[np.dtype, list[int], bool]:
    """``(file dtype, shape, fortran_order)`` of a ``.npy`` header dict literal.

    Raises :class:`Malformed` (rule 8.17) for object arrays (nnzip never
    unpickles) and for element types nnzip does not carry, (rule 8.16) for
    anything else wrong.
    """
    try:
        with warnings.catch_warnings():  # e.g. "invalid escape sequence": one line on stderr, never two
            warnings.simplefilter("ignore")
            fields = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise Malformed("the .npy header is not a Python dict literal", _HEADER) from None
    if not isinstance(fields, dict) or set(fields) != {"descr", "fortran_order", "shape"}:
        raise Malformed("the .npy header needs exactly descr, fortran_order and shape", _HEADER)
    descr, fortran, shape = fields["descr"], fields["fortran_order"], fields["shape"]
    if isinstance(descr, list):
        raise Malformed("the .npz holds a structured array: nnzip carries bool, integer and float arrays only", _TYPE)
    if not isinstance(descr, str) or not isinstance(fortran, bool) or not isinstance(shape, tuple):
        raise Malformed("the .npy header's descr must be a string, fortran_order a bool, shape a tuple", _HEADER)
    try:
        parse_shape(list(shape))
    except FormatError as exc:
        raise Malformed(f"bad .npy header: {exc}", _HEADER) from None
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError, OverflowError, MemoryError, SyntaxError) as exc:
        raise Malformed(f"bad .npy header: unsupported descr {descr[:80]!r} ({exc})", _TYPE) from None
    _check_dtype(dtype)
    return dtype, list(shape), fortran


def _check_dtype(dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise Malformed("the .npz holds an object array (pickled Python objects): nnzip carries numeric arrays only and never unpickles", _TYPE)
    try:
        normalise_dtype(dtype)
    except (FormatError, TypeError, ValueError):
        raise Malformed(f"the .npz holds an array of type {dtype}: nnzip carries bool, integer and float arrays only", _TYPE) from None


def npy_preamble(version: list[int], header: str) -> bytes:
    """Magic, version, header length and header bytes of a ``.npy`` file."""
    length_size, encoding = NPY_VERSIONS[tuple(version)]
    data = header.encode(encoding)
    return NPY_MAGIC + bytes(version) + len(data).to_bytes(length_size, "little") + data


# --- reading --------------------------------------------------------------------------------


def read(path: str | os.PathLike, keep_optimizer: bool = False, limits: DecodeLimits = DEFAULT_LIMITS, lazy: bool = False) -> Model:
    """Read an ``.npz`` archive within *limits* (*keep_optimizer* is accepted for symmetry; there is none).

    With *lazy*, every member's zip record and ``.npy`` header are checked now (rules
    8.10-8.17) but each array is read, and its member's size and CRC checked, only when
    asked for (:class:`nnzip.model.LazyTensors`): one member in memory at a time.
    """
    where = os.fspath(path)
    members, tensors, found = [], {}, {}
    with zipmeta.open_archive(path) as archive:
        infos = zipmeta.members(archive, limits)  # rules 8.10-8.15, before any member is read
        budget = limits.output_cap(os.path.getsize(path))
        for info in infos:
            name = tensor_name(info.filename)
            if name in tensors:
                raise InputError(f"rule 8.12: {where}: two members load as the array {name!r}")
            try:
                npy, tensors[name] = _read_member(archive, info, budget, lazy)
            except Malformed as exc:
                raise InputError(f"rule {exc.rule}: {where}, member {info.filename!r}: {exc}") from None
            budget -= _nbytes(*tensors[name]) if lazy else tensors[name].nbytes
            found[name] = (info, npy)
            members.append({"name": info.filename, "zip": zipmeta.describe(info), "npy": npy})
        comment = base64.b64encode(archive.comment).decode("ascii")
    if lazy:
        tensors = _lazy_values(path, tensors, found)
    return Model(FORMAT_ID, {"comment": comment, "members": members}, tensors)


def _nbytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def _lazy_values(path: str | os.PathLike, specs: dict, found: dict[str, tuple[zipfile.ZipInfo, dict]]) -> LazyTensors:
    """The arrays, each read from its (already checked) member when asked for.

    The member's ``.npy`` header must be the one checked before (else the file changed
    meanwhile); reading to its end checks its size and CRC (rules 8.10, 8.15).
    """
    where = os.fspath(path)

    def load(name: str) -> np.ndarray:
        info, npy = found[name]
        with zipmeta.open_archive(path) as archive, zipmeta.open_member(archive, info) as handle:
            try:
                version, header, _size = _read_preamble(handle, info.file_size)
                if [version, header] != [npy["version"], npy["header"]]:
                    raise Malformed("its .npy header changed since the archive was checked; read it again", _HEADER)
                dtype, shape, fortran = parse_npy_header(header)
                value = _read_array(handle, dtype, shape, fortran, _nbytes(dtype, tuple(shape)))
            except Malformed as exc:
                raise InputError(f"rule {exc.rule}: {where}, member {info.filename!r}: {exc}") from None
            zipmeta.expect_end(handle, info)
        return value

    return LazyTensors({name: (normalise_dtype(dtype), tuple(shape)) for name, (dtype, shape) in specs.items()}, load)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int, lazy: bool = False) -> tuple[dict, object]:
    """(``npy`` record, little-endian C-order value) of one member whose array fits in *budget* bytes.

    With *lazy*, the value is not read: the second item is the array's (dtype, shape).
    """
    with zipmeta.open_member(archive, info) as handle:
        version, header, preamble_size = _read_preamble(handle, info.file_size)
        dtype, shape, fortran = parse_npy_header(header)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes > budget:
            raise Malformed(f"its .npy header declares {nbytes} bytes of array, over the {budget} bytes left "
                             "of the output cap for a file of this size", "8.15")
        if info.file_size != preamble_size + nbytes:
            raise Malformed(f"member holds {info.file_size} bytes, its .npy header describes a different size", _HEADER)
        if lazy:
            return {"version": version, "header": header}, (dtype, tuple(shape))
        value = _read_array(handle, dtype, shape, fortran, nbytes)
        zipmeta.expect_end(handle, info)
    return {"version": version, "header": header}, value


def _read_preamble(handle, member_size: int) -> tuple[list[int], str, int]:
    """(version, header text, bytes before the array) of a ``.npy`` stream, each field checked before it is read."""
    head = handle.read(len(NPY_MAGIC) + 2)
    if len(head) < len(NPY_MAGIC) + 2 or head[:len(NPY_MAGIC)] != NPY_MAGIC:
        raise Malformed("not a .npy array", _HEADER)
    version = [head[-2], head[-1]]
    if tuple(version) not in NPY_VERSIONS:
        raise Malformed(f"unsupported .npy format version {version[0]}.{version[1]}", _HEADER)
    length_size, encoding = NPY_VERSIONS[tuple(version)]
    length = int.from_bytes(handle.read(length_size), "little")
    if length > MAX_NPY_HEADER:
        raise Malformed(f".npy header of {length} bytes exceeds the {MAX_NPY_HEADER}-byte cap", _HEADER)
    preamble_size = len(head) + length_size + length
    if preamble_size > member_size:
        raise Malformed(f".npy header of {length} bytes runs past the member's {member_size} bytes", _HEADER)
    try:
        header = handle.read(length).decode(encoding)
    except UnicodeDecodeError:
        raise Malformed(".npy header is not text", _HEADER) from None
    return version, header, preamble_size


def _read_array(handle, dtype: np.dtype, shape: list[int], fortran: bool, nbytes: int) -> np.ndarray:
    """Stream an array's bytes into one preallocated buffer; returns it little-endian, C-order.

    Only a Fortran-ordered array costs a second copy (the transpose to C order);
    big-endian bytes are swapped in place.
    """
    try:
        buffer = np.empty(nbytes, dtype=np.uint8)
    except MemoryError:
        raise Malformed(f"cannot allocate the {nbytes} bytes its .npy header declares", "8.15") from None
    if handle.readinto(buffer) != nbytes:
        raise Malformed("the member ends inside its array", _HEADER)
    value = buffer.view(dtype)
    if dtype.byteorder == ">":
        value = value.byteswap(inplace=True).view(dtype.newbyteorder("<"))
    value = value.reshape(shape[::-1]).T if fortran else value.reshape(shape)
    # astype(order="C") rather than ascontiguousarray, which would turn a 0-d array into 1-d
    return value.astype(normalise_dtype(dtype), order="C", copy=False)


# --- writing --------------------------------------------------------------------------------


def write(path: str | os.PathLike, structure: dict, tensor) -> None:
    """Write an ``.npz`` archive from *structure*, pulling arrays from ``tensor(name)`` in member order."""
    with zipfile.ZipFile(path, "w") as archive:
        for member in structure["members"]:
            npy = member["npy"]
            preamble = npy_preamble(npy["version"], npy["header"])
            data = _array_bytes(member["name"], npy["header"], tensor(tensor_name(member["name"])))
            zipmeta.write_member(archive, member["name"], member["zip"], iter([preamble, data]), len(preamble) + len(data))
        archive.comment = base64.b64decode(structure["comment"])


def _array_bytes(member: str, header: str, value: np.ndarray) -> bytes:
    dtype, shape, fortran = parse_npy_header(header)
    if value.dtype != normalise_dtype(dtype) or list(value.shape) != shape:
        raise FormatError(f"array {tensor_name(member)!r} decodes to {value.dtype.str} {list(value.shape)}, "
                          f"its .npy header needs {normalise_dtype(dtype).str} {shape}")
    return value.astype(dtype).tobytes(order="F" if fortran else "C")


# --- structure checks ---------------------------------------------------------------------------


def check_structure(structure: object) -> None:
    """Raise FormatError unless *structure* is a well-formed ``npz`` structure (§5.6)."""
    if not isinstance(structure, dict) or set(structure) != {"comment", "members"} or not isinstance(structure["members"], list):
        raise FormatError(f"{_WHERE}: needs exactly 'comment' and a 'members' list")
    zipmeta.check_base64(structure["comment"], _WHERE, "comment", zipmeta.MAX_FIELD_BYTES)
    names = []
    for member in structure["members"]:
        if not isinstance(member, dict) or set(member) != {"name", "zip", "npy"}:
            raise FormatError(f"{_WHERE}: a member needs exactly name, zip and npy")
        names.append(zipmeta.check_name(member["name"], _WHERE))
        where = f"{_WHERE}, member {member['name']!r}"
        zipmeta.check_record(member["zip"], where)
        _check_npy(member["npy"], where)
    zipmeta.check_unique_names([tensor_name(n) for n in names], _WHERE)
    zipmeta.check_member_paths(structure["members"], "npz structure")


def _check_npy(npy: object, where: str) -> None:
    if not isinstance(npy, dict) or set(npy) != {"version", "header"} or not isinstance(npy["header"], str):
        raise FormatError(f"{where}: npy needs exactly 'version' and a 'header' string")
    version = npy["version"]
    if not (isinstance(version, list) and len(version) == 2 and all(type(v) is int for v in version) and tuple(version) in NPY_VERSIONS):
        raise FormatError(f"{where}: unsupported .npy version {version!r}")
    length_size, encoding = NPY_VERSIONS[tuple(version)]
    try:
        size = len(npy["header"].encode(encoding))
        if size > min(MAX_NPY_HEADER, 2 ** (8 * length_size) - 1):
            raise Malformed(f".npy header of {size} bytes exceeds the {MAX_NPY_HEADER}-byte cap", _HEADER)
        parse_npy_header(npy["header"])
    except UnicodeEncodeError:
        raise FormatError(f"{where}: the .npy header cannot be encoded as {encoding}") from None
    except Malformed as exc:
        raise FormatError(f"{where}: {exc}") from None


def tensor_names(structure: dict) -> list[str]:
    """The tensor names a checked structure expects (``np.load`` keys), in member order."""
    return [tensor_name(member["name"]) for member in structure["members"]]


def sniff(probe: Probe) -> bool:
    """Whether the file is a zip archive of ``.npy`` members only (rules 8.10-8.14 checked before any is opened)."""
    return probe.head[:4] in zipmeta.SIGNATURES and probe_npz(probe)


def probe_npz(probe: Probe) -> bool:
    """Whether the zip archive *probe* looks at holds only ``.npy`` members, looked at once per probe."""

    def judge() -> bool:
        with zipmeta.open_archive(probe.path) as archive:
            zipmeta.members(archive, limits=None)  # the reader judges the sizes
            return looks_like(archive)

    return bool(probe.once("npz", judge))


FORMAT = SourceFormat(FORMAT_ID, SUFFIX, sniff, read, write, check_structure, tensor_names)
