"""numpy ``.npz`` archives (format id ``npz``): a zip of ``.npy`` arrays.

Written by ``np.savez`` (members stored) or ``np.savez_compressed`` (deflated).
The structure (spec/container.md §5.6) lists every member in archive order with
its zip metadata (:mod:`nnzip.io.zipmeta`, which also keeps the compression
method) and its ``.npy`` format version and header text verbatim; the array
bytes are the tensor.  A tensor is named as ``np.load`` names the array: the
member name without its ``.npy`` suffix.

The ``.npy`` header is parsed here with :func:`ast.literal_eval`, as numpy does;
object arrays are refused, never unpickled.  Big-endian and Fortran-ordered
arrays are carried: the tensor is the little-endian C-order array, and the
writer converts back to what the header says.
"""

from __future__ import annotations

import ast
import base64
import os
import zipfile

import numpy as np

from ..errors import FormatError, InputError
from ..model import Model
from ..stages.base import normalise_dtype, parse_shape
from . import zipmeta

FORMAT_ID = "npz"
SUFFIX = ".npz"
NPY_MAGIC = b"\x93NUMPY"
#: numpy's own default cap on a .npy header (``max_header_size``).
MAX_NPY_HEADER = 10000
#: .npy format version -> (bytes of the header-length field, text encoding of the header).
NPY_VERSIONS = {(1, 0): (2, "latin1"), (2, 0): (4, "latin1"), (3, 0): (4, "utf-8")}
_WHERE = "rule 5.6: npz structure"


class _Malformed(ValueError):
    """A bad ``.npy`` header; re-raised as InputError (file) or FormatError (structure)."""


def looks_like(archive: zipfile.ZipFile) -> bool:
    """Whether every member of an open zip archive starts with the ``.npy`` magic."""
    for info in archive.infolist():
        if info.file_size < len(NPY_MAGIC):
            return False
        with archive.open(info) as handle:
            if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:
                return False
    return True


def tensor_name(member: str) -> str:
    """The key ``np.load`` gives a member: its name without the ``.npy`` suffix."""
    return member[:-4] if member.endswith(".npy") else member


# --- .npy headers -----------------------------------------------------------------------------


def parse_npy_header(text: str) -> tuple[np.dtype, list[int], bool]:
    """``(file dtype, shape, fortran_order)`` of a ``.npy`` header dict literal.

    Raises InputError for object arrays (nnzip never unpickles) and for element
    types nnzip does not carry, :class:`_Malformed` for anything else wrong.
    """
    try:
        fields = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise _Malformed("the .npy header is not a Python dict literal") from None
    if not isinstance(fields, dict) or set(fields) != {"descr", "fortran_order", "shape"}:
        raise _Malformed("the .npy header needs exactly descr, fortran_order and shape")
    descr, fortran, shape = fields["descr"], fields["fortran_order"], fields["shape"]
    if not isinstance(descr, str) or not isinstance(fortran, bool) or not isinstance(shape, tuple):
        raise _Malformed("the .npy header's descr must be a string, fortran_order a bool, shape a tuple")
    try:
        dtype = np.dtype(descr)
        parse_shape(list(shape))
    except (TypeError, ValueError, FormatError) as exc:
        raise _Malformed(f"bad .npy header: {exc}") from None
    _check_dtype(dtype)
    return dtype, list(shape), fortran


def _check_dtype(dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise InputError("the .npz holds an object array (pickled Python objects): nnzip carries numeric arrays only and never unpickles")
    try:
        normalise_dtype(dtype)
    except FormatError:
        raise InputError(f"the .npz holds an array of type {dtype}: nnzip carries bool, integer and float arrays only") from None


def npy_preamble(version: list[int], header: str) -> bytes:
    """Magic, version, header length and header bytes of a ``.npy`` file."""
    length_size, encoding = NPY_VERSIONS[tuple(version)]
    data = header.encode(encoding)
    return NPY_MAGIC + bytes(version) + len(data).to_bytes(length_size, "little") + data


# --- reading --------------------------------------------------------------------------------


def read(path: str | os.PathLike, keep_optimizer: bool = False) -> Model:
    """Read an ``.npz`` archive (*keep_optimizer* is accepted for symmetry; there is none)."""
    members, tensors = [], {}
    with zipmeta.open_archive(path) as archive:
        for info in zipmeta.members(archive):
            name = tensor_name(info.filename)
            if name in tensors:
                raise InputError(f"{os.fspath(path)}: two members load as the array {name!r}")
            try:
                npy, tensors[name] = _read_member(archive, info)
            except _Malformed as exc:
                raise InputError(f"{os.fspath(path)}, member {info.filename!r}: {exc}") from None
            members.append({"name": info.filename, "zip": zipmeta.describe(info), "npy": npy})
        comment = base64.b64encode(archive.comment).decode("ascii")
    return Model(FORMAT_ID, {"comment": comment, "members": members}, tensors)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[dict, np.ndarray]:
    """(``npy`` record, little-endian C-order value) of one member."""
    with archive.open(info) as handle:
        head = handle.read(len(NPY_MAGIC) + 2)
        if len(head) < len(NPY_MAGIC) + 2 or head[:len(NPY_MAGIC)] != NPY_MAGIC:
            raise _Malformed("not a .npy array")
        version = [head[-2], head[-1]]
        if tuple(version) not in NPY_VERSIONS:
            raise _Malformed(f"unsupported .npy format version {version[0]}.{version[1]}")
        length_size, encoding = NPY_VERSIONS[tuple(version)]
        length = int.from_bytes(handle.read(length_size), "little")
        if length > MAX_NPY_HEADER:
            raise _Malformed(f".npy header of {length} bytes exceeds the {MAX_NPY_HEADER}-byte cap")
        try:
            header = handle.read(length).decode(encoding)
        except UnicodeDecodeError:
            raise _Malformed(".npy header is not text") from None
        dtype, shape, fortran = parse_npy_header(header)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if info.file_size != len(NPY_MAGIC) + 2 + length_size + length + nbytes:
            raise _Malformed(f"member holds {info.file_size} bytes, its .npy header describes a different size")
        raw = handle.read(nbytes)
    value = np.frombuffer(raw, dtype=dtype).reshape(shape[::-1] if fortran else shape)
    value = value.T if fortran else value
    # astype(order="C") rather than ascontiguousarray, which would turn a 0-d array into 1-d
    return {"version": version, "header": header}, value.astype(normalise_dtype(dtype), order="C")


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
            raise _Malformed(f".npy header of {size} bytes exceeds the {MAX_NPY_HEADER}-byte cap")
        parse_npy_header(npy["header"])
    except UnicodeEncodeError:
        raise FormatError(f"{where}: the .npy header cannot be encoded as {encoding}") from None
    except (_Malformed, InputError) as exc:
        raise FormatError(f"{where}: {exc}") from None


def tensor_names(structure: dict) -> list[str]:
    """The tensor names a checked structure expects (``np.load`` keys), in member order."""
    return [tensor_name(member["name"]) for member in structure["members"]]
