"""Reference implementations the tests check nnzip's compiled and vectorised paths against.

Plain numpy versions of what the product computes another way (byte planes and rotations,
plane estimates, MSB-first symbols, order-0 entropy, k-means error, LZW code streams).  They
live here, not in the package: nnzip itself never calls them (issue 12, dead code out).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nnzip.stages import lzw
from nnzip.stages._huffman_kernels import plane_histograms
from nnzip.stages.entropy import entropy_bound, pack_lsb, read_lsb, read_msb, symbol_counts
from nnzip.stages.kmeans1d import nearest


def byte_planes(words: np.ndarray) -> list[np.ndarray]:
    """Byte ``i`` of every element, for each ``i`` from least to most significant."""
    as_bytes = np.ascontiguousarray(words).view(np.uint8).reshape(words.shape + (words.dtype.itemsize,))
    return [as_bytes[..., i].copy() for i in range(words.dtype.itemsize)]


#: Words rotated at a time: the temporaries of a rotation stay at 2 x this many words, whatever the tensor.
ROTATE_BLOCK = 1 << 18


def rotate_words(words: np.ndarray, left: bool, out: np.ndarray | None = None) -> np.ndarray:
    """Rotate each unsigned word by one bit, left (the top bit wraps to bit 0) or right (its inverse).

    Done in blocks of :data:`ROTATE_BLOCK` words into *out* (a new array by default; *words*
    itself for an in-place rotation), so that a large tensor costs no tensor-sized temporaries.
    """
    flat = np.ascontiguousarray(words).reshape(-1)
    result = np.empty_like(flat) if out is None else out.reshape(-1)
    one, top = words.dtype.type(1), words.dtype.type(words.dtype.itemsize * 8 - 1)
    first, second = (np.left_shift, np.right_shift) if left else (np.right_shift, np.left_shift)
    high, low = np.empty(min(flat.size, ROTATE_BLOCK), flat.dtype), np.empty(min(flat.size, ROTATE_BLOCK), flat.dtype)
    for start in range(0, flat.size, ROTATE_BLOCK):
        block = flat[start:start + ROTATE_BLOCK]
        n = block.size
        first(block, one, out=high[:n])
        second(block, top, out=low[:n])
        np.bitwise_or(high[:n], low[:n], out=result[start:start + n])
    return result.reshape(words.shape)


def rotate_left(words: np.ndarray) -> np.ndarray:
    """Rotate each unsigned word left by one bit (the top bit wraps to bit 0)."""
    return rotate_words(words, left=True)


def planes_estimate(planes: list[np.ndarray]) -> float:
    """Bits to store the planes if each is entropy-coded at its order-0 bound or kept raw."""
    return sum(min(entropy_bound(plane_histograms(np.ascontiguousarray(p).reshape(-1), 1)[0]), 8.0 * p.size) for p in planes)


def words_estimate(words: np.ndarray) -> float:
    """:func:`planes_estimate` of the words' byte planes, counted in one compiled pass without copying them."""
    counts = plane_histograms(np.ascontiguousarray(words).reshape(-1).view(np.uint8), words.dtype.itemsize)
    return sum(min(entropy_bound(c), 8.0 * words.size) for c in counts)


def msb_symbols(data: bytes, symbol_bits: int) -> np.ndarray:
    """*data* cut into consecutive ``symbol_bits``-bit fields (1..16), read MSB-first.

    Field ``j`` is stream bits ``j*w .. j*w + w - 1``, where stream bit ``k`` is bit
    ``7 - k % 8`` of byte ``k // 8``.  Bits left over at the end (fewer than ``w``)
    are not a symbol.  With ``w = 8`` the symbols are the bytes.
    """
    if not 1 <= symbol_bits <= 16:
        raise ValueError(f"symbol_bits must be in 1..16, got {symbol_bits}")
    data = bytes(data)
    if symbol_bits == 8:
        return np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    count = 8 * len(data) // symbol_bits
    group = 8 // math.gcd(symbol_bits, 8)  # fields per whole number of bytes
    group_bytes = group * symbol_bits // 8
    if group * symbol_bits > 64:  # 9, 11, 13, 15 bits: read each field at its offset
        starts = np.arange(count, dtype=np.int64) * symbol_bits
        return read_msb(data, starts, np.full(count, symbol_bits, dtype=np.int64))
    # Whole groups as big-endian uint64 words, then each field by a shift and a mask.
    groups = -(-len(data) // group_bytes)
    flat = np.zeros(groups * group_bytes, dtype=np.uint8)
    flat[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    padded = np.zeros((groups, 8), dtype=np.uint8)
    padded[:, 8 - group_bytes :] = flat.reshape(groups, group_bytes)
    words = padded.view(">u8").reshape(-1).astype(np.uint64)
    mask = np.uint64((1 << symbol_bits) - 1)
    fields = np.empty((groups, group), dtype=np.int64)
    for i in range(group):
        fields[:, i] = (words >> np.uint64((group - 1 - i) * symbol_bits)) & mask
    return fields.reshape(-1)[:count]


def shannon_entropy(data: Any, symbol_bits: int = 8) -> float:
    """Order-0 entropy of *data* in bits per symbol (0.0 for empty data)."""
    counts = symbol_counts(data, symbol_bits)
    n = counts.sum()
    return entropy_bound(counts) / n if n else 0.0


def weighted_sse(values: np.ndarray, centroids: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Weighted sum of squared distances of *values* to their nearest centroid (O(n log k))."""
    values = np.asarray(values, dtype=np.float64).ravel()
    centroids = np.sort(np.asarray(centroids, dtype=np.float64))
    codes = nearest(values, centroids)
    err = (values - centroids[codes]) ** 2
    return float(err.sum() if weights is None else (np.asarray(weights, dtype=np.float64).ravel() * err).sum())


def lzw_pack(codes: list[int], max_bits: int) -> bytes:
    """The codes, each in its scheduled width, LSB-first, zero-padded to a byte."""
    values = np.asarray(codes, dtype=np.int64)
    return pack_lsb(values, lzw._widths(lzw._index_in_generation(values.size, max_bits), max_bits))


def lzw_read_codes(data: bytes, max_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """All codes of the stream and their generation indices (numpy)."""
    count = lzw._check_stream(data, max_bits)
    index = lzw._index_in_generation(count, max_bits)
    widths = lzw._widths(index, max_bits)
    ends = np.cumsum(widths)
    return read_lsb(data, ends - widths, widths), index
