"""Element types and shapes a tensor may declare, and the parsers that check them.

Every reader of untrusted input (the ``.nnz`` container, the stages, the source formats)
checks dtypes and shapes here, so one cap holds for all of them (spec/container.md §4).
This module depends on nothing in nnzip but :mod:`nnzip.errors`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import FormatError

#: Largest number of elements one tensor or part may declare (2**31, as in the
#: safetensors and GGUF readers' sanity caps); bigger claims are rejected unread.
MAX_ELEMENTS = 2**31
#: Largest number of dimensions a tensor or part may declare.
MAX_NDIM = 8

#: Element types a tensor or part may have, as numpy dtype strings (little-endian).
ALLOWED_DTYPES = (
    "|b1", "|u1", "<u2", "<u4", "<u8", "|i1", "<i2", "<i4", "<i8", "<f2", "<f4", "<f8",
)


def normalise_dtype(dtype: Any) -> np.dtype:
    """Little-endian version of *dtype*; raises FormatError for unsupported types."""
    dt = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
    if dt.str not in ALLOWED_DTYPES:
        raise FormatError(f"unsupported element type {np.dtype(dtype)}")
    return dt


def parse_dtype(value: Any) -> np.dtype:
    """Parse a dtype string from a header; only :data:`ALLOWED_DTYPES` pass."""
    if not isinstance(value, str) or value not in ALLOWED_DTYPES:
        raise FormatError(f"unsupported dtype {value!r}")
    return np.dtype(value)


def parse_shape(value: Any) -> tuple[int, ...]:
    """Parse a shape list from a header, enforcing :data:`MAX_NDIM` and :data:`MAX_ELEMENTS`."""
    if not isinstance(value, list) or len(value) > MAX_NDIM:
        raise FormatError(f"bad shape {value!r}: expected a list of at most {MAX_NDIM} sizes")
    total = 1
    for dim in value:
        if type(dim) is not int or dim < 0 or dim > MAX_ELEMENTS:
            raise FormatError(f"bad shape {value!r}: sizes must be integers in 0..{MAX_ELEMENTS}")
        total *= dim
    if total > MAX_ELEMENTS:
        raise FormatError(f"shape {value!r} names {total} elements, more than the cap {MAX_ELEMENTS}")
    return tuple(value)
