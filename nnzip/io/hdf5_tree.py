"""Lossless capture and rebuild of an HDF5 file's tree, tensor values aside.

The tree is JSON: every group and dataset in h5py's iteration order, every
attribute with its exact HDF5 type (numeric dtype; strings fixed-length or
variable-length, ASCII or UTF-8 character set; scalar or array; empty), and
dataset storage options (chunks, compression, shuffle, fletcher32).  Dataset
values are returned separately as numpy arrays keyed by their path, which is the
tensor name nnzip uses.  The JSON layout is specified in ``spec/container.md``
(§5, "HDF5 structure").
"""

from __future__ import annotations

import base64
import os
from typing import Callable, Iterator

import h5py
import numpy as np

from ..errors import FormatError, InputError
from ..stages.base import normalise_dtype, parse_dtype, parse_shape

_STRING_ENCODINGS = ("ascii", "utf-8")


# --- reading --------------------------------------------------------------------------


def read_tree(h5: h5py.File, skip: Callable[[str], bool] = lambda path: False) -> tuple[dict, dict[str, np.ndarray]]:
    """Describe *h5* as a JSON tree and return ``(tree, tensors)``.

    *skip* is called with each child path (no leading ``/``); a skipped group or
    dataset is left out of both results.
    """
    tensors: dict[str, np.ndarray] = {}
    tree = _read_group(h5, "", tensors, skip)
    return tree, tensors


def _read_group(group: h5py.Group, path: str, tensors: dict, skip) -> dict:
    node: dict = {"attrs": _read_attrs(group)}
    order = _creation_order_flags(group)
    if order:
        node["track_order"] = order
    children = []
    for name in group:
        child_path = f"{path}/{name}" if path else name
        if skip(child_path):
            continue
        link = group.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise InputError(f"unsupported HDF5 link at /{child_path}: only hard links are carried")
        obj = group[name]
        if isinstance(obj, h5py.Group):
            children.append({"name": name, "group": _read_group(obj, child_path, tensors, skip)})
        else:
            children.append({"name": name, "dataset": _read_dataset(obj, child_path, tensors)})
    node["children"] = children
    return node


def _creation_order_flags(group: h5py.Group) -> bool:
    """True when the group tracks link or attribute creation order (h5py ``track_order``)."""
    plist = group.id.get_create_plist()
    return bool(plist.get_link_creation_order() or plist.get_attr_creation_order())


def _read_dataset(ds: h5py.Dataset, path: str, tensors: dict) -> dict:
    if ds.dtype.kind not in "biuf" or ds.shape is None:
        raise InputError(f"unsupported dataset type {ds.dtype} at /{path}: nnzip carries numeric tensors only")
    try:
        dtype = normalise_dtype(ds.dtype)
    except FormatError:
        raise InputError(f"unsupported dataset type {ds.dtype} at /{path}") from None
    tensors[path] = np.asarray(ds[()]).astype(dtype, copy=False)
    node: dict = {"attrs": _read_attrs(ds)}
    layout = _read_layout(ds)
    if layout:
        node["layout"] = layout
    return node


def _read_layout(ds: h5py.Dataset) -> dict:
    """Storage options worth keeping; empty for a plain contiguous dataset."""
    layout: dict = {}
    if ds.chunks is not None:
        layout["chunks"] = list(ds.chunks)
        if ds.maxshape != ds.shape:
            layout["maxshape"] = [d if d is not None else -1 for d in ds.maxshape]
    if ds.compression is not None:
        if ds.compression != "gzip":
            raise InputError(f"unsupported HDF5 compression filter {ds.compression!r} on /{ds.name.lstrip('/')}")
        layout["compression"] = "gzip"
        layout["compression_opts"] = int(ds.compression_opts)
    if ds.shuffle:
        layout["shuffle"] = True
    if ds.fletcher32:
        layout["fletcher32"] = True
    return layout


def _read_attrs(obj) -> list[dict]:
    return [_read_attr(obj, name) for name in obj.attrs]


def _read_attr(obj, name: str) -> dict:
    attr_id = obj.attrs.get_id(name)
    dtype = attr_id.dtype
    raw = obj.attrs.get(name)
    string = h5py.check_string_dtype(dtype)
    record: dict = {"name": name}
    if isinstance(raw, h5py.Empty):
        if string is not None:
            raise InputError(f"unsupported empty string attribute {name!r} on {obj.name}")
        record.update(kind="empty", dtype=normalise_dtype(dtype).str)
        return record
    shape = list(attr_id.shape)
    if string is not None:
        values = np.asarray(raw, dtype=object).reshape(-1)
        record.update(
            kind="string",
            encoding=string.encoding,
            length=string.length,
            shape=shape,
            value=[_text(v, string.encoding) for v in values],
        )
        return record
    if dtype.kind not in "biuf":
        raise InputError(f"unsupported attribute type {dtype} for {name!r} on {obj.name}")
    array = np.asarray(raw).astype(normalise_dtype(dtype), copy=False)
    record.update(kind="numeric", dtype=array.dtype.str, shape=shape, data=base64.b64encode(array.tobytes()).decode("ascii"))
    return record


def _text(value, encoding: str) -> str:
    """A string attribute element as JSON text; undecodable bytes survive as surrogate escapes."""
    if isinstance(value, bytes):
        return value.decode("utf-8" if encoding == "utf-8" else "ascii", errors="surrogateescape")
    return str(value)


# --- writing --------------------------------------------------------------------------


def write_tree(path: str | os.PathLike, tree: dict, tensor: Callable[[str], np.ndarray]) -> None:
    """Create the HDF5 file *path* from *tree*, pulling each dataset's value from ``tensor(path)``.

    Values are requested one at a time in tree order, so a caller can decode
    tensors lazily and memory stays near the largest tensor.
    """
    track = bool(tree.get("track_order", False))
    with h5py.File(path, "w", track_order=track) as h5:
        _write_group(h5, tree, "", tensor)


def _write_group(group: h5py.Group, node: dict, path: str, tensor) -> None:
    _write_attrs(group, node["attrs"])
    for child in node["children"]:
        name = child["name"]
        child_path = f"{path}/{name}" if path else name
        if "group" in child:
            sub = group.create_group(name, track_order=bool(child["group"].get("track_order", False)))
            _write_group(sub, child["group"], child_path, tensor)
        else:
            _write_dataset(group, name, child["dataset"], tensor(child_path))


def _write_dataset(group: h5py.Group, name: str, node: dict, value: np.ndarray) -> None:
    layout = dict(node.get("layout", {}))
    if "maxshape" in layout:
        layout["maxshape"] = tuple(None if d == -1 else d for d in layout["maxshape"])
    if "chunks" in layout:
        layout["chunks"] = tuple(layout["chunks"])
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
            obj.attrs.create(name, _string_array(record), dtype=_string_dtype(record))


def _string_dtype(record: dict) -> np.dtype:
    return h5py.string_dtype(record["encoding"], record["length"])


def _string_array(record: dict) -> np.ndarray:
    codec = "utf-8" if record["encoding"] == "utf-8" else "ascii"
    if record["length"] is None:
        values = list(record["value"])
        if record["encoding"] == "ascii":
            values = [v.encode(codec, errors="surrogateescape") for v in values]
        array = np.empty(len(values), dtype=object)
        array[:] = values
    else:
        array = np.array([v.encode(codec, errors="surrogateescape") for v in record["value"]], dtype=f"S{max(record['length'], 1)}")
    return array.reshape(record["shape"])


# --- validation of untrusted trees ----------------------------------------------------


def dataset_paths(tree: dict, path: str = "") -> Iterator[str]:
    """Paths of all datasets in *tree*, in tree order (= the order tensors are written)."""
    for child in tree["children"]:
        child_path = f"{path}/{child['name']}" if path else child["name"]
        if "group" in child:
            yield from dataset_paths(child["group"], child_path)
        else:
            yield child_path


def check_tree(tree: object, depth: int = 0) -> None:
    """Raise FormatError unless *tree* is a well-formed HDF5 structure description."""
    if depth > 64:
        raise FormatError("HDF5 structure nests deeper than 64 groups")
    if not isinstance(tree, dict) or not isinstance(tree.get("children"), list) or not isinstance(tree.get("attrs"), list):
        raise FormatError("HDF5 structure: a group needs 'attrs' and 'children' lists")
    names = set()
    for child in tree["children"]:
        if not isinstance(child, dict) or not isinstance(child.get("name"), str) or not child["name"] or "/" in child["name"]:
            raise FormatError("HDF5 structure: every child needs a non-empty name without '/'")
        if child["name"] in names:
            raise FormatError(f"HDF5 structure: duplicate child name {child['name']!r}")
        names.add(child["name"])
        if "group" in child:
            check_tree(child["group"], depth + 1)
        elif isinstance(child.get("dataset"), dict):
            _check_attrs(child["dataset"].get("attrs"))
        else:
            raise FormatError(f"HDF5 structure: child {child['name']!r} is neither group nor dataset")
    _check_attrs(tree["attrs"])


def _check_attrs(records: object) -> None:
    if not isinstance(records, list):
        raise FormatError("HDF5 structure: 'attrs' must be a list")
    for record in records:
        if not isinstance(record, dict) or not isinstance(record.get("name"), str):
            raise FormatError("HDF5 structure: an attribute needs a name")
        kind = record.get("kind")
        if kind == "empty":
            parse_dtype(record.get("dtype"))
        elif kind == "numeric":
            dtype = parse_dtype(record.get("dtype"))
            count = int(np.prod(parse_shape(record.get("shape")), dtype=np.int64))
            data = record.get("data")
            if not isinstance(data, str) or len(data) != 4 * ((count * dtype.itemsize + 2) // 3):
                raise FormatError(f"HDF5 structure: attribute {record['name']!r} data does not match its shape")
        elif kind == "string":
            count = int(np.prod(parse_shape(record.get("shape")), dtype=np.int64))
            length = record.get("length")
            if record.get("encoding") not in _STRING_ENCODINGS or not (length is None or (type(length) is int and 0 <= length <= 2**20)):
                raise FormatError(f"HDF5 structure: attribute {record['name']!r} has a bad string type")
            values = record.get("value")
            if not isinstance(values, list) or len(values) != count or not all(isinstance(v, str) for v in values):
                raise FormatError(f"HDF5 structure: attribute {record['name']!r} values do not match its shape")
        else:
            raise FormatError(f"HDF5 structure: attribute {record['name']!r} has unknown kind {kind!r}")
