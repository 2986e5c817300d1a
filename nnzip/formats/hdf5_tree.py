"""Lossless capture and rebuild of an HDF5 file's tree, tensor values aside.

The tree is JSON: every group and dataset in h5py's iteration order, every
attribute with its exact HDF5 type (numeric dtype; strings fixed-length or
variable-length, ASCII or UTF-8 character set; scalar or array; empty), and
dataset storage options (chunks, compression, shuffle, fletcher32).  Dataset
values are returned separately as numpy arrays keyed by their path, which is the
tensor name nnzip uses.  The JSON layout is specified in ``spec/container.md``
(§5.1, "HDF5 structure").

Both directions treat their input as hostile:

* reading (compress) first surveys the whole file without reading any value
  (spec/container.md §8.1): only hard links, each object reached once, data stored
  in the file itself (no external raw-data files, no virtual datasets), known
  filters, numeric datasets, attribute and dataset sizes within stated caps; then it
  reads each dataset in bounded pieces into one preallocated array;
* writing (decompress) takes a tree from a ``.nnz`` header that :func:`check_tree`
  has checked member by member against allow-lists (rules 5.1.x, 5.2.x), so no
  header value reaches h5py unless it is known, typed and in range; any error h5py
  still raises becomes a one-line :class:`~nnzip.errors.FormatError`.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Callable, Iterator

import h5py
import numpy as np

from ..errors import FormatError, InputError, NnzipError
from ..limits import DEFAULT_LIMITS, MiB
from ..model import LazyTensors
from ..dtypes import MAX_NDIM, normalise_dtype, parse_dtype, parse_shape

_STRING_ENCODINGS = ("ascii", "utf-8")
#: Rules 5.1.1 and 8.2: the deepest nesting of groups carried.
MAX_DEPTH = 64
#: Rules 5.2.4 and 8.9: the most bytes one attribute's value may take...
MAX_ATTRIBUTE_BYTES = 16 * MiB
#: ...and all attributes of one tree together (they travel in the ``.nnz`` header, capped at 64 MiB, rule 6.5).
MAX_TOTAL_ATTRIBUTE_BYTES = 64 * MiB
#: Rule 5.2.2: the longest fixed-length string type.
MAX_STRING_LENGTH = 2**20
#: Rule 5.1.4: HDF5 refuses a chunk of 4 GiB or more (``H5Pset_chunk``).
MAX_CHUNK_BYTES = 2**32 - 1
#: Rule 5.1.4: a chunk may be larger than its dataset (resizable datasets), but by at most this.
CHUNK_SLACK_BYTES = 16 * MiB
#: Rule 5.1.5: the largest fixed ``maxshape`` dimension.
MAX_DIM = 2**62
#: Rule 5.1.3: the storage options a layout may carry; anything else (``external``: raw data in
#: a file anywhere on disk, which decompress would create) is refused.
LAYOUT_KEYS = ("chunks", "maxshape", "compression", "compression_opts", "shuffle", "fletcher32")
#: Attributes larger than this are written with the HDF5 1.8 file format (dense attribute storage):
#: the default format keeps attributes in the object header, whose messages stop at 64 KiB.
COMPACT_ATTRIBUTE_BYTES = 60000
#: Large datasets are read in pieces of about this many bytes, so reading costs ~1x the tensor.
READ_PIECE_BYTES = 64 * MiB
#: Rule 8.5: the filters nnzip carries (each at most once), by HDF5 filter id.
_FILTERS = {h5py.h5z.FILTER_DEFLATE: "gzip", h5py.h5z.FILTER_SHUFFLE: "shuffle", h5py.h5z.FILTER_FLETCHER32: "fletcher32"}
#: h5py's errors for bad arguments or HDF5 failures; anything here during write/read becomes one nnzip line.
_H5_ERRORS = (OSError, ValueError, TypeError, KeyError, RuntimeError, UnicodeError, OverflowError, AttributeError)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class _AttributeBudget:
    """Running total of attribute bytes (rules 5.2.4 and 8.9), raising *error* with *rule* when over."""

    def __init__(self, error: type[NnzipError], rule: str) -> None:
        self.total = 0
        self.error = error
        self.rule = rule

    def add(self, nbytes: int, where: str, counted: int = 0) -> None:
        """Account one attribute of *nbytes* (of which *counted* were added before)."""
        if nbytes > MAX_ATTRIBUTE_BYTES:
            raise self.error(f"{self.rule}: attribute {where} takes {nbytes:,} bytes, more than the {MAX_ATTRIBUTE_BYTES:,} one attribute may")
        self.total += nbytes - counted
        if self.total > MAX_TOTAL_ATTRIBUTE_BYTES:
            raise self.error(f"{self.rule}: the attributes take more than the {MAX_TOTAL_ATTRIBUTE_BYTES:,} bytes all attributes may (at {where})")


# --- reading --------------------------------------------------------------------------


def read_tree(h5: h5py.File, skip: Callable[[str], bool] = lambda path: False, max_bytes: int | None = None,
              lazy: bool = False) -> tuple[dict, dict[str, np.ndarray] | LazyTensors]:
    """Describe *h5* as a JSON tree and return ``(tree, tensors)``.

    With *lazy*, every check runs now but no value is read: ``tensors`` is a
    :class:`nnzip.model.LazyTensors` that reopens the file and reads one dataset when
    asked for (:func:`lazy_values`), so that compressing holds one tensor at a time.

    *skip* is called with each child path (no leading ``/``); a skipped group or
    dataset is left out of both results.  The file is surveyed first (rules
    8.1-8.9) without reading any value; *max_bytes* caps the bytes its datasets
    declare (default: the cap a reader applies to a ``.nnz`` of this file's size,
    ``DEFAULT_LIMITS.output_cap``), so nnzip never reads what could not be
    decompressed.
    """
    if max_bytes is None:
        max_bytes = DEFAULT_LIMITS.output_cap(h5.id.get_filesize())
    try:
        _Survey(skip, max_bytes).group(h5, "", 0)
        budget = _AttributeBudget(InputError, "rule 8.9")
        tensors: dict = {}
        tree = _read_group(h5, "", tensors, skip, budget, lazy)
    except NnzipError:
        raise
    except _H5_ERRORS as exc:
        raise InputError(f"cannot read {h5.filename} as HDF5: {_one_line(exc)}") from None
    return tree, (lazy_values(h5.filename, tensors) if lazy else tensors)


def lazy_values(filename: str, specs: dict[str, tuple[np.dtype, tuple[int, ...]]]) -> LazyTensors:
    """Datasets (path -> surveyed dtype and shape) read from *filename* one at a time, when asked for.

    Each read opens the file again and checks that the path still names a dataset of the
    surveyed type and shape before reading it in pieces (:func:`_read_values`): what rules
    8.1-8.9 checked is what is read, even if the file changed meanwhile.
    """

    def load(path: str) -> np.ndarray:
        dtype, shape = specs[path]
        try:
            with h5py.File(filename, "r") as h5:
                ds = h5.get(path)
                if not isinstance(ds, h5py.Dataset) or normalise_dtype(ds.dtype) != dtype or tuple(ds.shape) != shape:
                    raise InputError(f"{filename}: /{path} changed since the file was checked (rules 8.1-8.9); read it again")
                return _read_values(ds, dtype, path)
        except NnzipError:
            raise
        except _H5_ERRORS as exc:
            raise InputError(f"cannot read the values of /{path}: {_one_line(exc)}") from None

    return LazyTensors(specs, load)


class _Survey:
    """The metadata-only pass over a source file (spec/container.md §8.1)."""

    def __init__(self, skip: Callable[[str], bool], max_bytes: int) -> None:
        self.skip = skip
        self.max_bytes = max_bytes
        self.dataset_bytes = 0
        self.attributes = _AttributeBudget(InputError, "rule 8.9")

    def group(self, group: h5py.Group, path: str, depth: int) -> None:
        """Check a group, its attributes and everything under it."""
        if depth > MAX_DEPTH:
            raise InputError(f"rule 8.2: groups nest deeper than {MAX_DEPTH} at /{path}")
        self.attrs(group, path)
        for name in group:
            child_path = _child_path(path, name)
            if self.skip(child_path):
                continue
            _check_link(group, name, child_path)
            obj = group[name]
            if h5py.h5o.get_info(obj.id).rc != 1:
                raise InputError(f"rule 8.2: /{child_path} is reached by more than one hard link; nnzip carries each object once")
            if isinstance(obj, h5py.Group):
                self.group(obj, child_path, depth + 1)
            elif isinstance(obj, h5py.Dataset):
                self.dataset(obj, child_path)
            else:
                raise InputError(f"rule 8.6: /{child_path} is a {type(obj).__name__.lower()}, not a group or dataset")

    def dataset(self, ds: h5py.Dataset, path: str) -> None:
        """Check a dataset's storage, type, filters, layout and size before any value is read."""
        dcpl = ds.id.get_create_plist()
        if dcpl.get_layout() == h5py.h5d.VIRTUAL:
            raise InputError(f"rule 8.4: /{path} is a virtual dataset (its values live in other datasets or files); "
                             "nnzip reads only data stored in the file itself")
        if dcpl.get_external_count():
            target = dcpl.get_external(0)[0].decode("utf-8", "replace")
            raise InputError(f"rule 8.3: /{path} keeps its values in the external file {target!r}; "
                             "nnzip reads only data stored in the file itself")
        dtype, shape = _dataset_type(ds, path)
        self.dataset_bytes += math.prod(shape) * dtype.itemsize
        if self.dataset_bytes > self.max_bytes:
            raise InputError(f"rule 8.7: the datasets up to /{path} declare {self.dataset_bytes:,} bytes, more than the "
                             f"{self.max_bytes:,} a .nnz of this file's size may decode to (rule 4.7)")
        _check_filters(dcpl, path)
        try:
            check_layout(_read_layout(ds), shape, dtype)
        except FormatError as exc:
            raise InputError(f"rule 8.5: /{path} has a storage layout nnzip cannot carry ({exc})") from None
        self.attrs(ds, path)

    def attrs(self, obj, path: str) -> None:
        """Check every attribute's name, type and declared size without reading its value."""
        for name in obj.attrs:
            where = f"{name!r} on /{path}"
            _check_attr_name(name, path)
            attr_id = obj.attrs.get_id(name)
            try:
                dtype = attr_id.dtype
            except TypeError:
                raise InputError(f"rule 8.8: attribute {where} has an HDF5 type nnzip cannot carry") from None
            self.attributes.add(_declared_attr_bytes(attr_id, dtype, where), where)


def _child_path(path: str, name) -> str:
    if not isinstance(name, str) or "\0" in name:
        raise InputError(f"rule 8.1: a link under /{path} has a name that is not valid UTF-8: {name!r}")
    return f"{path}/{name}" if path else name


def _check_link(group: h5py.Group, name: str, child_path: str) -> None:
    """Rule 8.1: only hard links; soft, external and user-defined links point elsewhere."""
    link = group.get(name, getlink=True)
    if isinstance(link, h5py.SoftLink):
        raise InputError(f"rule 8.1: unsupported HDF5 link at /{child_path}: a soft link to {link.path!r}; only hard links are carried")
    if isinstance(link, h5py.ExternalLink):
        raise InputError(f"rule 8.1: unsupported HDF5 link at /{child_path}: an external link to {link.filename!r}; only hard links are carried")
    if not isinstance(link, h5py.HardLink):
        raise InputError(f"rule 8.1: unsupported HDF5 link at /{child_path}; only hard links are carried")


def _dataset_type(ds: h5py.Dataset, path: str) -> tuple[np.dtype, tuple[int, ...]]:
    """Rules 8.6 (numeric element type, simple or scalar dataspace) and 8.7 (a valid shape, §1)."""
    try:
        dtype = ds.dtype
    except TypeError:
        raise InputError(f"rule 8.6: /{path} has an HDF5 type nnzip cannot carry") from None
    if dtype.kind not in "biuf" or ds.shape is None:
        raise InputError(f"rule 8.6: unsupported dataset type {dtype} at /{path}: nnzip carries numeric tensors only")
    try:
        dtype = normalise_dtype(dtype)
    except FormatError:
        raise InputError(f"rule 8.6: unsupported dataset type {dtype} at /{path}") from None
    try:
        shape = parse_shape(list(ds.shape))
    except FormatError as exc:
        raise InputError(f"rule 8.7: /{path} declares a shape nnzip cannot carry ({exc})") from None
    return dtype, shape


def _check_filters(dcpl, path: str) -> None:
    """Rule 8.5: gzip, shuffle and fletcher32 only, each at most once (a second gzip is a bomb)."""
    seen = []
    for index in range(dcpl.get_nfilters()):
        code, _flags, _values, label = dcpl.get_filter(index)
        if code not in _FILTERS or code in seen:
            name = label.decode("ascii", "replace") if isinstance(label, bytes) else str(label)
            again = " a second time" if code in seen else ""
            raise InputError(f"rule 8.5: unsupported HDF5 filter {name or code!r}{again} on /{path}: nnzip carries gzip, shuffle and fletcher32, each once")
        seen.append(code)


def _check_attr_name(name, path: str) -> None:
    if not isinstance(name, str) or not name or "\0" in name or not _encodes(name, "utf-8", "strict"):
        raise InputError(f"rule 8.8: an attribute on /{path} has a name that is not valid UTF-8: {name!r}")


def _declared_attr_bytes(attr_id, dtype: np.dtype, where: str) -> int:
    """Rule 8.8's type check and the bytes the attribute declares (a variable-length string: 1 per element)."""
    string = h5py.check_string_dtype(dtype)
    if attr_id.get_space().get_simple_extent_type() == h5py.h5s.NULL:
        if string is not None:
            raise InputError(f"rule 8.8: unsupported empty string attribute {where}")
        _attr_dtype(dtype, where)
        return 0
    try:
        count = math.prod(parse_shape(list(attr_id.shape)))
    except FormatError as exc:
        raise InputError(f"rule 8.8: attribute {where} has a shape nnzip cannot carry ({exc})") from None
    if string is not None:
        return count * (1 if string.length is None else string.length)
    return count * _attr_dtype(dtype, where).itemsize


def _attr_dtype(dtype: np.dtype, where: str) -> np.dtype:
    if dtype.kind not in "biuf":
        raise InputError(f"rule 8.8: unsupported attribute type {dtype} for {where}")
    try:
        return normalise_dtype(dtype)
    except FormatError:
        raise InputError(f"rule 8.8: unsupported attribute type {dtype} for {where}") from None


def _read_group(group: h5py.Group, path: str, tensors: dict, skip, budget: _AttributeBudget, lazy: bool = False) -> dict:
    node: dict = {"attrs": _read_attrs(group, path, budget)}
    order = _creation_order_flags(group)
    if order:
        node["track_order"] = order
    children = []
    for name in group:
        child_path = _child_path(path, name)
        if skip(child_path):
            continue
        obj = group[name]
        if isinstance(obj, h5py.Group):
            children.append({"name": name, "group": _read_group(obj, child_path, tensors, skip, budget, lazy)})
        else:
            children.append({"name": name, "dataset": _read_dataset(obj, child_path, tensors, budget, lazy)})
    node["children"] = children
    return node


def _creation_order_flags(group: h5py.Group) -> bool:
    """True when the group tracks link or attribute creation order (h5py ``track_order``)."""
    plist = group.id.get_create_plist()
    return bool(plist.get_link_creation_order() or plist.get_attr_creation_order())


def _read_dataset(ds: h5py.Dataset, path: str, tensors: dict, budget: _AttributeBudget, lazy: bool = False) -> dict:
    dtype = normalise_dtype(ds.dtype)
    # lazy: only the surveyed type and shape now; lazy_values reads the values when asked for
    tensors[path] = (dtype, tuple(ds.shape)) if lazy else _read_values(ds, dtype, path)
    node: dict = {"attrs": _read_attrs(ds, path, budget)}
    layout = _read_layout(ds)
    if layout:
        node["layout"] = layout
    return node


def _read_values(ds: h5py.Dataset, dtype: np.dtype, path: str) -> np.ndarray:
    """The dataset's values as one C-order array of *dtype*, read in pieces of about READ_PIECE_BYTES.

    HDF5 converts the byte order while it reads, straight into the preallocated
    array, so the peak is the tensor plus one chunk, not a copy per conversion.
    Pieces follow axis 0 in whole chunks, so each compressed chunk is inflated once.
    """
    out = np.empty(ds.shape, dtype=dtype)
    if out.size == 0:
        return out
    try:
        if out.ndim == 0 or out.nbytes <= READ_PIECE_BYTES:
            ds.read_direct(out)
        else:
            for rows in _pieces(out.shape, ds.chunks, dtype.itemsize):
                ds.read_direct(out, source_sel=rows, dest_sel=rows)
    except _H5_ERRORS as exc:
        raise InputError(f"cannot read the values of /{path}: {_one_line(exc)}") from None
    return out


def _pieces(shape: tuple[int, ...], chunks: tuple[int, ...] | None, itemsize: int) -> Iterator[slice]:
    """Slices of axis 0 of about READ_PIECE_BYTES each, in whole chunks along that axis."""
    row_bytes = math.prod(shape[1:]) * itemsize
    step = max(1, READ_PIECE_BYTES // max(row_bytes, 1))
    if chunks:
        step = max(chunks[0], step - step % chunks[0])
    for start in range(0, shape[0], step):
        yield slice(start, min(start + step, shape[0]))


def _read_layout(ds: h5py.Dataset) -> dict:
    """Storage options worth keeping; empty for a plain contiguous dataset."""
    layout: dict = {}
    if ds.chunks is not None:
        layout["chunks"] = list(ds.chunks)
        if ds.maxshape != ds.shape:
            layout["maxshape"] = [d if d is not None else -1 for d in ds.maxshape]
    if ds.compression is not None:
        if ds.compression != "gzip":
            raise InputError(f"rule 8.5: unsupported HDF5 compression filter {ds.compression!r} on /{ds.name.lstrip('/')}")
        layout["compression"] = "gzip"
        layout["compression_opts"] = int(ds.compression_opts)
    if ds.shuffle:
        layout["shuffle"] = True
    if ds.fletcher32:
        layout["fletcher32"] = True
    return layout


def _read_attrs(obj, path: str, budget: _AttributeBudget) -> list[dict]:
    return [_read_attr(obj, name, path, budget) for name in obj.attrs]


def _read_attr(obj, name: str, path: str, budget: _AttributeBudget) -> dict:
    attr_id = obj.attrs.get_id(name)
    dtype = attr_id.dtype
    raw = obj.attrs.get(name)
    string = h5py.check_string_dtype(dtype)
    record: dict = {"name": name}
    where = f"{name!r} on /{path}"
    if isinstance(raw, h5py.Empty):
        record.update(kind="empty", dtype=normalise_dtype(dtype).str)
        return record
    shape = list(attr_id.shape)
    if string is not None:
        values = [_text(v, string.encoding) for v in np.asarray(raw, dtype=object).reshape(-1)]
        record.update(kind="string", encoding=string.encoding, length=string.length, shape=shape, value=values)
        if string.length is None:
            # The survey counted a byte per element: the real size is known only now.
            actual = sum(len(v.encode("utf-8", "surrogateescape")) for v in values)
            budget.add(actual, where)
        else:
            budget.add(len(values) * string.length, where)
        return record
    array = np.asarray(raw).astype(normalise_dtype(dtype), copy=False)
    budget.add(array.nbytes, where)
    record.update(kind="numeric", dtype=array.dtype.str, shape=shape, data=base64.b64encode(array.tobytes()).decode("ascii"))
    return record


def _text(value, encoding: str) -> str:
    """A string attribute element as JSON text; undecodable bytes survive as surrogate escapes."""
    if isinstance(value, bytes):
        return value.decode("utf-8" if encoding == "utf-8" else "ascii", errors="surrogateescape")
    return str(value)


# --- writing --------------------------------------------------------------------------


def write_tree(path, tree: dict, tensor: Callable[[str], np.ndarray]) -> None:
    """Create the HDF5 file *path* from a checked *tree*, pulling each dataset's value from ``tensor(path)``.

    Values are requested one at a time in tree order, so a caller can decode
    tensors lazily and memory stays near the largest tensor.  Each dataset's
    layout is checked against its tensor's shape and dtype before it is created
    (rules 5.1.4, 5.1.5); any error h5py raises becomes a one-line FormatError
    (the caller writes to a temporary file, removed on error).
    """
    where = ["/"]
    # An attribute over HDF5's 64 KiB object-header message needs dense attribute storage,
    # which the 1.8 file format has; other files keep h5py's default (earliest) format.
    libver = ("v108", "latest") if _largest_attribute(tree) > COMPACT_ATTRIBUTE_BYTES else None
    try:
        with h5py.File(path, "w", track_order=tree.get("track_order", False), libver=libver) as h5:
            _write_group(h5, tree, "", tensor, where)
    except NnzipError:
        raise
    except _H5_ERRORS as exc:
        raise FormatError(f"HDF5 refused to write {where[0]}: {_one_line(exc)}") from None


def _largest_attribute(node: dict) -> int:
    """The largest attribute value, in bytes as stored in the object header, anywhere in a checked tree."""
    sizes = [_stored_attr_bytes(record) for record in node["attrs"]]
    for child in node["children"]:
        if "group" in child:
            sizes.append(_largest_attribute(child["group"]))
        else:
            sizes += [_stored_attr_bytes(record) for record in child["dataset"]["attrs"]]
    return max(sizes, default=0)


def _stored_attr_bytes(record: dict) -> int:
    if record["kind"] == "numeric":
        return len(record["data"]) * 3 // 4
    if record["kind"] == "string":
        # A variable-length string element is a 16-byte global-heap reference in the header.
        return len(record["value"]) * (16 if record["length"] is None else record["length"])
    return 0


def _write_group(group: h5py.Group, node: dict, path: str, tensor, where: list[str]) -> None:
    where[0] = f"/{path}"
    _write_attrs(group, node["attrs"])
    for child in node["children"]:
        name = child["name"]
        child_path = f"{path}/{name}" if path else name
        where[0] = f"/{child_path}"
        if "group" in child:
            sub = group.create_group(name, track_order=child["group"].get("track_order", False))
            _write_group(sub, child["group"], child_path, tensor, where)
        else:
            value = tensor(child_path)
            where[0] = f"/{child_path}"
            _write_dataset(group, name, child["dataset"], value, child_path)


def _write_dataset(group: h5py.Group, name: str, node: dict, value: np.ndarray, path: str) -> None:
    try:
        layout = dataset_options(node.get("layout", {}), value.shape, value.dtype)
    except FormatError as exc:
        raise FormatError(f"{exc} (dataset /{path})") from None
    ds = group.create_dataset(name, data=value, **layout)
    _write_attrs(ds, node["attrs"])


def _write_attrs(obj, records: list[dict]) -> None:
    for record in records:
        name = record["name"]
        kind = record["kind"]
        if kind == "empty":
            obj.attrs.create(name, h5py.Empty(np.dtype(record["dtype"])))
        elif kind == "numeric":
            data = np.frombuffer(base64.b64decode(record["data"]), dtype=record["dtype"]).reshape(record["shape"])
            obj.attrs.create(name, data, dtype=data.dtype)
        else:
            obj.attrs.create(name, _string_array(record), dtype=h5py.string_dtype(record["encoding"], record["length"]))


def _string_array(record: dict) -> np.ndarray:
    """The values as bytes in their character set (surrogate escapes back to the raw bytes they stand for)."""
    codec = "utf-8" if record["encoding"] == "utf-8" else "ascii"
    values = [v.encode(codec, errors="surrogateescape") for v in record["value"]]
    if record["length"] is None:
        array = np.empty(len(values), dtype=object)
        array[:] = values
    else:
        array = np.array(values, dtype=f"S{record['length']}")
    return array.reshape(record["shape"])


def dataset_options(layout: dict, shape: tuple[int, ...], dtype: np.dtype) -> dict:
    """h5py ``create_dataset`` keywords of a checked *layout* for a tensor of *shape* and *dtype*.

    Raises FormatError naming rule 5.1.4/5.1.5 when the layout does not fit the tensor.
    """
    check_layout(layout, shape, dtype)
    options = dict(layout)
    if "chunks" in options:
        options["chunks"] = tuple(options["chunks"])
    if "maxshape" in options:
        options["maxshape"] = tuple(None if d == -1 else d for d in options["maxshape"])
    return options


# --- validation of untrusted trees ----------------------------------------------------


def dataset_paths(tree: dict, path: str = "") -> Iterator[str]:
    """Paths of all datasets in *tree*, in tree order (= the order tensors are written)."""
    for child in tree["children"]:
        child_path = f"{path}/{child['name']}" if path else child["name"]
        if "group" in child:
            yield from dataset_paths(child["group"], child_path)
        else:
            yield child_path


def tensor_names(tree: dict) -> list[str]:
    """The tensor names a checked tree expects: its dataset paths, in tree order (rule 3.3)."""
    return list(dataset_paths(tree))


def check_tree(tree: object) -> None:
    """Raise FormatError unless *tree* is a well-formed HDF5 structure description (rules 5.1.x, 5.2.x).

    Every member the writer passes to h5py is checked here, before anything is
    written; only the layout's fit to each tensor's shape waits for the tensor
    (:func:`check_layout`, called again by the writer).
    """
    _check_group(tree, "", 0, _AttributeBudget(FormatError, "rule 5.2.4"))


def _check_group(node: object, path: str, depth: int, budget: _AttributeBudget) -> None:
    where = f"/{path}"
    if depth > MAX_DEPTH:
        raise FormatError(f"rule 5.1.1: HDF5 structure nests deeper than {MAX_DEPTH} groups")
    if not isinstance(node, dict) or not isinstance(node.get("children"), list) or not isinstance(node.get("attrs"), list):
        raise FormatError(f"rule 5.1.1: HDF5 structure: a group needs 'attrs' and 'children' lists ({where})")
    if not set(node) <= {"attrs", "children", "track_order"} or type(node.get("track_order", False)) is not bool:
        raise FormatError(f"rule 5.1.1: HDF5 structure: group {where} has members other than 'attrs', 'children' and a boolean 'track_order'")
    names = set()
    for child in node["children"]:
        if not isinstance(child, dict) or set(child) not in ({"name", "group"}, {"name", "dataset"}):
            raise FormatError(f"rule 5.1.1: HDF5 structure: a child of {where} needs exactly 'name' and one of 'group' or 'dataset'")
        name = _check_name(child["name"], f"a child of {where}")
        if "/" in name or name == ".":
            raise FormatError(f"rule 5.1.2: HDF5 structure: child name {name!r} of {where} contains '/' or is '.'")
        if name in names:
            raise FormatError(f"rule 5.1.2: HDF5 structure: duplicate child name {name!r} in {where}")
        names.add(name)
        child_path = f"{path}/{name}" if path else name
        if "group" in child:
            _check_group(child["group"], child_path, depth + 1, budget)
        else:
            _check_dataset(child["dataset"], child_path, budget)
    _check_attrs(node["attrs"], where, budget)


def _check_dataset(node: object, path: str, budget: _AttributeBudget) -> None:
    if not isinstance(node, dict) or not isinstance(node.get("attrs"), list) or not set(node) <= {"attrs", "layout"}:
        raise FormatError(f"rule 5.1.1: HDF5 structure: dataset /{path} needs an 'attrs' list and at most a 'layout'")
    if "layout" in node:
        try:
            check_layout_members(node["layout"])
        except FormatError as exc:
            raise FormatError(f"{exc} (dataset /{path})") from None
    _check_attrs(node["attrs"], f"/{path}", budget)


def _check_name(name: object, what: str) -> str:
    """Rule 5.1.2: a non-empty string that h5py can encode (UTF-8, no lone surrogates) without NUL."""
    if not isinstance(name, str) or not name or "\0" in name or not _encodes(name, "utf-8", "strict"):
        raise FormatError(f"rule 5.1.2: HDF5 structure: {what} needs a non-empty UTF-8 name without NUL, got {name!r}")
    return name


def _encodes(text: str, codec: str, errors: str) -> bool:
    try:
        text.encode(codec, errors)
    except UnicodeEncodeError:
        return False
    return True


def _is_int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def check_layout_members(layout: object) -> None:
    """Rules 5.1.3-5.1.6 as far as they need no tensor: known members, each of the right type and range."""
    if not isinstance(layout, dict):
        raise FormatError("rule 5.1.3: HDF5 structure: a dataset 'layout' must be an object")
    unknown = sorted(set(layout) - set(LAYOUT_KEYS))
    if unknown:
        raise FormatError(f"rule 5.1.3: HDF5 structure: layout member {unknown[0]!r} is not allowed (only {', '.join(LAYOUT_KEYS)})")
    chunks = layout.get("chunks")
    if "chunks" in layout:
        if not isinstance(chunks, list) or not 1 <= len(chunks) <= MAX_NDIM or not all(_is_int(c, 1, MAX_CHUNK_BYTES) for c in chunks) \
                or math.prod(chunks) > MAX_CHUNK_BYTES:
            raise FormatError(f"rule 5.1.4: HDF5 structure: 'chunks' must be 1 to {MAX_NDIM} positive integers whose product is below 2^32, got {chunks!r}")
    elif any(key in layout for key in ("maxshape", "compression", "compression_opts", "shuffle", "fletcher32")):
        raise FormatError("rule 5.1.4: HDF5 structure: 'maxshape', 'compression', 'shuffle' and 'fletcher32' need 'chunks'")
    if "maxshape" in layout:
        maxshape = layout["maxshape"]
        if not isinstance(maxshape, list) or len(maxshape) != len(chunks) \
                or not all(d == -1 and type(d) is int or _is_int(d, c, MAX_DIM) for d, c in zip(maxshape, chunks)):
            raise FormatError(f"rule 5.1.5: HDF5 structure: 'maxshape' must have one entry per chunk dimension, "
                              f"each -1 (unlimited) or an integer at least the chunk size, got {maxshape!r}")
    if ("compression" in layout) != ("compression_opts" in layout) or layout.get("compression", "gzip") != "gzip" \
            or not _is_int(layout.get("compression_opts", 0), 0, 9):
        raise FormatError("rule 5.1.6: HDF5 structure: 'compression' must be \"gzip\" together with 'compression_opts', an integer 0..9")
    for key in ("shuffle", "fletcher32"):
        if type(layout.get(key, False)) is not bool:
            raise FormatError(f"rule 5.1.6: HDF5 structure: layout '{key}' must be true or false")


def check_layout(layout: object, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """All of rules 5.1.3-5.1.6 for a tensor of *shape* and *dtype* (also applied to source files, rule 8.5)."""
    check_layout_members(layout)
    if "chunks" not in layout:
        return
    chunks, maxshape = layout["chunks"], layout.get("maxshape")
    if len(chunks) != len(shape):
        raise FormatError(f"rule 5.1.4: HDF5 layout: 'chunks' {chunks} does not have one entry per dimension of shape {list(shape)}")
    chunk_bytes = math.prod(chunks) * dtype.itemsize
    limit = min(MAX_CHUNK_BYTES, max(math.prod(shape) * dtype.itemsize, CHUNK_SLACK_BYTES))
    if chunk_bytes > limit:
        raise FormatError(f"rule 5.1.4: HDF5 layout: a chunk of {chunk_bytes:,} bytes is over the {limit:,} this tensor may have")
    bounds = maxshape if maxshape is not None else list(shape)
    if any(c > b != -1 for c, b in zip(chunks, bounds)) or any(m != -1 and m < d for m, d in zip(bounds, shape)):
        raise FormatError(f"rule 5.1.5: HDF5 layout: chunks {chunks} and maxshape {bounds} do not fit shape {list(shape)}")


def _check_attrs(records: object, where: str, budget: _AttributeBudget) -> None:
    if not isinstance(records, list):
        raise FormatError("rule 5.1.1: HDF5 structure: 'attrs' must be a list")
    names = set()
    for record in records:
        if not isinstance(record, dict):
            raise FormatError(f"rule 5.2.1: HDF5 structure: an attribute of {where} must be an object")
        name = _check_name(record.get("name"), f"an attribute of {where}")
        if name in names:
            raise FormatError(f"rule 5.1.2: HDF5 structure: duplicate attribute name {name!r} on {where}")
        names.add(name)
        budget.add(_check_attr(record, f"{name!r} on {where}"), f"{name!r} on {where}")


_ATTR_MEMBERS = {
    "empty": {"name", "kind", "dtype"},
    "numeric": {"name", "kind", "dtype", "shape", "data"},
    "string": {"name", "kind", "encoding", "length", "shape", "value"},
}


def _check_attr(record: dict, where: str) -> int:
    """Rules 5.2.1-5.2.3 for one attribute record; returns the bytes its value takes (rule 5.2.4)."""
    kind = record.get("kind")
    if not isinstance(kind, str) or kind not in _ATTR_MEMBERS:
        raise FormatError(f"rule 5.2.1: HDF5 structure: attribute {where} has unknown kind {kind!r}")
    if set(record) != _ATTR_MEMBERS[kind]:
        raise FormatError(f"rule 5.2.1: HDF5 structure: a {kind} attribute needs exactly {sorted(_ATTR_MEMBERS[kind])} ({where})")
    try:
        dtype = parse_dtype(record["dtype"]) if "dtype" in record else None
        count = math.prod(parse_shape(record["shape"])) if "shape" in record else 0
    except FormatError as exc:
        raise FormatError(f"rule 5.2.2: HDF5 structure: attribute {where}: {exc}") from None
    if kind == "empty":
        return 0
    if kind == "numeric":
        data = record["data"]
        nbytes = count * dtype.itemsize
        if not isinstance(data, str) or len(data) != 4 * ((nbytes + 2) // 3):
            raise FormatError(f"rule 5.2.3: HDF5 structure: attribute {where} data does not match its shape")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise FormatError(f"rule 5.2.3: HDF5 structure: attribute {where} data is not base64") from None
        if dtype.kind == "b" and raw.strip(b"\x00\x01"):
            raise FormatError(f"rule 5.2.3: HDF5 structure: boolean attribute {where} has a byte other than 0 or 1")
        return nbytes
    return _check_string_attr(record, count, where)


def _check_string_attr(record: dict, count: int, where: str) -> int:
    encoding, length, values = record["encoding"], record["length"], record["value"]
    if encoding not in _STRING_ENCODINGS or not (length is None or _is_int(length, 1, MAX_STRING_LENGTH)):
        raise FormatError(f"rule 5.2.2: HDF5 structure: attribute {where} has a bad string type "
                          f"(encoding 'ascii' or 'utf-8', length null or 1..{MAX_STRING_LENGTH})")
    if not isinstance(values, list) or len(values) != count or not all(isinstance(v, str) for v in values):
        raise FormatError(f"rule 5.2.3: HDF5 structure: attribute {where} values do not match its shape")
    if length is not None and count * length > MAX_ATTRIBUTE_BYTES:  # before encoding anything
        return count * length
    codec = "utf-8" if encoding == "utf-8" else "ascii"
    total = 0
    for value in values:
        try:
            encoded = value.encode(codec, "surrogateescape")
        except UnicodeEncodeError:
            raise FormatError(f"rule 5.2.3: HDF5 structure: attribute {where} has a value that is not {encoding} text") from None
        if length is None and b"\0" in encoded or length is not None and len(encoded) > length:
            raise FormatError(f"rule 5.2.3: HDF5 structure: attribute {where} has a value with NUL or longer than its length")
        total += len(encoded)
    return total if length is None else count * length
