"""How far a rebuilt tensor is from its original: the relative error compress records, blockwise.

Every statistic runs over blocks of :data:`ERROR_BLOCK` elements in float64, so the working
memory is a few MiB whatever the tensor's size.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

#: Elements per block of the error statistics: two float64 blocks of 8 MiB, whatever the tensor's size.
ERROR_BLOCK = 2**20


def relative_error(original: np.ndarray, rebuilt: np.ndarray) -> float:
    """``||original - rebuilt||_F / ||original||_F`` (0 for bit-identical copies, also of zeros and NaN).

    Values near the float range's end are scaled before squaring so the norms do not
    overflow; the result is ``inf`` only when non-finite values differ or the original is 0.
    The sums run over blocks of :data:`ERROR_BLOCK` elements in float64, so the working
    memory is a few MiB, not three float64 copies of the tensor (bounded memory, §4.4).
    """
    if _same_view(original, rebuilt):  # a lossless encoding hands back (a view of) its input itself
        return 0.0
    original, rebuilt = np.asarray(original), np.asarray(rebuilt)
    if original.shape != rebuilt.shape:
        original, rebuilt = np.broadcast_arrays(original, rebuilt)
    if not original.size:
        return 0.0
    with np.errstate(over="ignore", invalid="ignore"):  # NaN and huge values are handled below
        diff, norm = (math.sqrt(total) for total in _square_sums(original, rebuilt))
        if diff == 0.0:
            return 0.0
        if math.isfinite(diff) and math.isfinite(norm):
            return diff / norm if norm else math.inf
        return _scaled_relative_error(original, rebuilt)


def _blocks(original: np.ndarray, rebuilt: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Both arrays flattened, as float64 blocks of at most :data:`ERROR_BLOCK` elements."""
    a, b = original.reshape(-1), rebuilt.reshape(-1)
    for start in range(0, a.size, ERROR_BLOCK):
        yield a[start:start + ERROR_BLOCK].astype(np.float64), b[start:start + ERROR_BLOCK].astype(np.float64)


def _square_sums(original: np.ndarray, rebuilt: np.ndarray, scale: float = 1.0) -> tuple[float, float]:
    """(sum of (original - rebuilt)**2, sum of original**2), both divided by scale**2 first, blockwise."""
    diff = norm = 0.0
    for a, b in _blocks(original, rebuilt):
        if scale != 1.0:
            a /= scale
            b /= scale
        np.subtract(a, b, out=b)
        diff += float(b.dot(b))
        norm += float(a.dot(a))
    return diff, norm


def _scaled_relative_error(original: np.ndarray, rebuilt: np.ndarray) -> float:
    """The relative error where the plain sums overflowed or met NaN/infinity."""
    if original.dtype == rebuilt.dtype and same_bits(original, rebuilt):
        return 0.0
    scale = 0.0
    for a, b in _blocks(original, rebuilt):
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            return math.inf
        scale = max(scale, float(np.abs(a).max()), float(np.abs(b).max()))
    diff, norm = (math.sqrt(total) for total in _square_sums(original, rebuilt, scale))
    return diff / norm if norm else math.inf


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether *b* is *a* or a view of the very same memory, type and layout (so equal bit for bit)."""
    if a is b:
        return True
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return False
    return (a.dtype == b.dtype and a.shape == b.shape and a.strides == b.strides
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays of one dtype and shape hold the very same bytes (NaN payloads included), blockwise."""
    a, b = a.reshape(-1), b.reshape(-1)
    step = max(1, ERROR_BLOCK // max(a.itemsize, 1))
    return all(np.ascontiguousarray(a[i:i + step]).tobytes() == np.ascontiguousarray(b[i:i + step]).tobytes()
               for i in range(0, a.size, step))
