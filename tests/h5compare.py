"""An independent HDF5 tree comparison (plain h5py, not nnzip's reader) for round-trip tests."""

from __future__ import annotations

import h5py
import numpy as np


def describe(path, skip: tuple[str, ...] = ()) -> list[tuple]:
    """A flat, comparable description of every object, attribute and value in an HDF5 file."""
    rows: list[tuple] = []
    with h5py.File(path, "r") as h5:
        rows += _attrs("/", h5)
        _walk(h5, rows, skip)
    return rows


def _walk(group: h5py.Group, rows: list, skip) -> None:
    for name in group:  # iteration order is part of what must be preserved
        obj = group[name]
        if obj.name.lstrip("/") in skip:
            continue
        if isinstance(obj, h5py.Group):
            rows.append(("group", obj.name))
            rows += _attrs(obj.name, obj)
            _walk(obj, rows, skip)
        else:
            value = obj[()]
            rows.append(("dataset", obj.name, obj.dtype.str, obj.shape, obj.chunks, obj.compression, np.asarray(value).tobytes()))
            rows += _attrs(obj.name, obj)


def _attrs(where: str, obj) -> list[tuple]:
    rows = []
    for name in obj.attrs:
        attr_id = obj.attrs.get_id(name)
        string = h5py.check_string_dtype(attr_id.dtype)
        kind = (string.encoding, string.length) if string else attr_id.dtype.str
        value = obj.attrs[name]
        if isinstance(value, np.ndarray) and value.dtype == object:
            value = value.tolist()
        elif isinstance(value, np.ndarray):
            value = (value.dtype.str, value.shape, value.tobytes())
        rows.append(("attr", where, name, kind, attr_id.shape, repr(value)))
    return rows


def assert_same_file(original, rebuilt, skip: tuple[str, ...] = ()) -> None:
    """Fail with the first differing row unless the two files hold the same tree and values."""
    a, b = describe(original, skip), describe(rebuilt)
    for left, right in zip(a, b):
        assert left == right, f"first difference:\n  original: {left[:6]}\n  rebuilt:  {right[:6]}"
    assert len(a) == len(b), f"{len(a)} rows in the original, {len(b)} in the rebuilt file"
