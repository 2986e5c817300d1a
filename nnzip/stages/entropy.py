"""The coding math the entropy stages share.

* :func:`symbol_counts` / :func:`entropy_bound` -- the w-bit symbols of bytes read
  MSB-first (the order ``bitpack`` writes in), counted, and the order-0 bound a coder is
  measured against;
* :func:`limited_code_lengths`, :func:`canonical_codes`, :func:`kraft_ok` --
  optimal length-limited prefix codes (package-merge), used by ``huffman``;
* :func:`pack_lsb` / :func:`read_lsb` -- vectorised bit writing and reading in the
  LSB-first order both ``huffman`` and ``lzw`` use (the order of DEFLATE).

Only coding math lives here; which coder a blob gets is the encoder's policy
(:mod:`nnzip.stages.policy`), so this module imports none of the stages.
"""

from __future__ import annotations


import numpy as np

# --- symbols and measuring -----------------------------------------------------------


def symbol_counts(data: bytes, symbol_bits: int = 8) -> np.ndarray:
    """Occurrences of each ``symbol_bits``-bit symbol of *data* (read MSB-first: field ``j`` is stream bits ``j*w .. j*w + w - 1``).

    Counted by the compiled histogram straight from the bytes: no symbol array, so
    ``inspect`` of a large part costs its bytes, not eight times them.
    """
    if not 1 <= symbol_bits <= 16:
        raise ValueError(f"symbol_bits must be in 1..16, got {symbol_bits}")
    from . import _huffman_kernels  # compiled kernels load on first use only

    buffer = np.frombuffer(bytes(data), dtype=np.uint8)
    return _huffman_kernels.histogram(buffer, symbol_bits, 8 * len(buffer) // symbol_bits, 1 << symbol_bits)


def entropy_bound(counts: np.ndarray) -> float:
    """``n * H`` in bits: the order-0 Shannon bound for a sequence with these symbol counts."""
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts > 0]
    n = counts.sum()
    if n == 0:
        return 0.0
    return float(-(counts * np.log2(counts / n)).sum())


# --- code construction ------------------------------------------------------------------


def limited_code_lengths(freqs: np.ndarray, limit: int) -> np.ndarray:
    """Optimal prefix-code lengths, each at most *limit*, for positive frequencies *freqs*.

    Package-merge (Larmore and Hirschberg 1990), level by level (in a compiled loop,
    :func:`nnzip.stages._huffman_kernels.package_merge`): the list
    of level ``d`` is the leaves merged with the pairwise sums ("packages") of
    the list of level ``d + 1``; the ``2n - 2`` lightest items of level 1 are
    chosen, and a leaf's length is the number of levels at which it is chosen.
    Because every list is sorted, the chosen leaves of a level are always the
    lightest ones, so one count per level is all the bookkeeping needed.

    Ties are broken deterministically (leaves before packages, then by the
    leaves' order in a stable sort of *freqs*), so the same input always gives
    the same lengths.  One symbol gets length 1.  The result is a complete code
    (Kraft sum exactly 1) whenever ``len(freqs) >= 2``.
    """
    freqs = np.asarray(freqs, dtype=np.int64)
    n = freqs.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1:
        return np.ones(1, dtype=np.int64)
    if n > 1 << limit:
        raise ValueError(f"{n} symbols cannot have codes of at most {limit} bits")
    from ._huffman_kernels import package_merge  # the levels, compiled

    order = np.argsort(freqs, kind="stable")
    sorted_lengths = package_merge(np.ascontiguousarray(freqs[order]), limit)
    lengths = np.empty(n, dtype=np.int64)
    lengths[order] = sorted_lengths
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values (MSB-first integers) for code *lengths* (0 = unused symbol).

    Codes are assigned in order of increasing length, and within one length in
    increasing symbol order, each the previous plus one (shifted left when the
    length grows) -- the rule of DEFLATE (RFC 1951 section 3.2.2).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(lengths.size, dtype=np.int64)
    used = np.flatnonzero(lengths)
    if used.size == 0:
        return codes
    order = used[np.lexsort((used, lengths[used]))]  # by length, then symbol
    sorted_lengths = lengths[order]
    max_len = int(sorted_lengths[-1])
    bl_count = np.bincount(sorted_lengths, minlength=max_len + 1)
    bl_count[0] = 0
    next_code = np.zeros(max_len + 1, dtype=np.int64)
    code = 0
    for bits in range(1, max_len + 1):  # at most 16 iterations
        code = (code + int(bl_count[bits - 1])) << 1
        next_code[bits] = code
    first_index = np.searchsorted(sorted_lengths, np.arange(max_len + 1))
    rank = np.arange(order.size) - first_index[sorted_lengths]
    codes[order] = next_code[sorted_lengths] + rank
    return codes


def kraft_ok(lengths: np.ndarray, limit: int) -> bool:
    """True when the nonzero *lengths* (each ``<= limit``) form a complete prefix code.

    Complete means the Kraft sum is exactly 1; the one exception is a single
    symbol of length 1 (a code with one unused codeword), which is accepted.
    Integer arithmetic, so there is no rounding.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    used = lengths[lengths > 0]
    if used.size == 0 or int(used.max()) > limit:
        return False
    if used.size == 1:
        return int(used[0]) == 1
    return int(np.sum(np.left_shift(np.int64(1), limit - used))) == 1 << limit


def reverse_bits(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Each value's lowest ``width`` bits in reverse order (widths up to 16)."""
    values = np.asarray(values, dtype=np.int64)
    widths = np.broadcast_to(np.asarray(widths, dtype=np.int64), values.shape)
    # Through a 16-bit table of byte reversals: two lookups per value, not 16 shifts.
    reversed16 = (_REVERSED_BYTES[values & 0xFF] << 8) | _REVERSED_BYTES[(values >> 8) & 0xFF]
    return reversed16 >> (16 - widths)


#: Each byte's bits in reverse order.
_REVERSED_BYTES = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], dtype=np.int64)


# --- bit packing ------------------------------------------------------------------------


def pack_lsb(values: np.ndarray, widths: np.ndarray) -> bytes:
    """Write each value in its width (<= 17 bits) one after another, LSB-first.

    Bit ``k`` of the stream is bit ``k % 8`` of byte ``k // 8``; a value's lowest
    bit is written first.  The last byte is padded with zero bits.  Vectorised:
    each value, shifted by its bit offset within its first byte, is a word of at
    most 24 bits; the words of values starting in the same byte are OR-ed
    together (``bitwise_or.reduceat`` -- offsets only grow, so they are
    neighbours), and each byte is the OR of the three words that can reach it.
    """
    widths = np.asarray(widths, dtype=np.int64)
    ends = np.cumsum(widths)
    total = int(ends[-1]) if ends.size else 0
    nbytes = (total + 7) // 8
    if nbytes == 0:
        return b""
    starts = ends - widths
    shifted = np.asarray(values, dtype=np.uint32) << (starts & 7).astype(np.uint32)
    index = starts >> 3
    first = np.flatnonzero(np.diff(index, prepend=-1))
    words = np.zeros(nbytes + 2, dtype=np.uint32)
    words[index[first]] = np.bitwise_or.reduceat(shifted, first)
    out = words[:nbytes] & 0xFF
    out[1:] |= (words[: max(nbytes - 1, 0)] >> 8) & 0xFF
    out[2:] |= (words[: max(nbytes - 2, 0)] >> 16) & 0xFF
    return out.astype(np.uint8).tobytes()


def read_lsb(buffer: bytes, starts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Read values of the given widths (<= 17 bits) at the given bit offsets of an LSB-first stream.

    The caller guarantees every ``start + width <= 8 * len(buffer)``.
    """
    padded = np.zeros(len(buffer) + 3, dtype=np.uint32)
    padded[: len(buffer)] = np.frombuffer(buffer, dtype=np.uint8)
    starts = np.asarray(starts, dtype=np.int64)
    index = starts >> 3
    window = padded[index] | (padded[index + 1] << 8) | (padded[index + 2] << 16)
    masks = (np.uint32(1) << np.asarray(widths, dtype=np.uint32)) - np.uint32(1)
    return ((window >> (starts & 7).astype(np.uint32)) & masks).astype(np.int64)


def read_msb(buffer: bytes, starts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Read values of the given widths (<= 17 bits) at the given bit offsets of an MSB-first stream.

    The caller guarantees every ``start + width <= 8 * len(buffer)``.
    """
    padded = np.zeros(len(buffer) + 3, dtype=np.uint32)
    padded[: len(buffer)] = np.frombuffer(buffer, dtype=np.uint8)
    starts = np.asarray(starts, dtype=np.int64)
    widths = np.asarray(widths, dtype=np.int64)
    index = starts >> 3
    window = (padded[index] << 16) | (padded[index + 1] << 8) | padded[index + 2]
    masks = (np.uint32(1) << widths.astype(np.uint32)) - np.uint32(1)
    return ((window >> (24 - widths - (starts & 7)).astype(np.uint32)) & masks).astype(np.int64)
