"""Helpers the entropy stages share, and the rule that picks a blob's bytes stage.

* :func:`msb_symbols` / :func:`fields_to_bytes` -- bytes as w-bit symbols read
  MSB-first (the order ``bitpack`` writes in), and back;
* :func:`shannon_entropy` / :func:`entropy_bound` -- the order-0 bound a coder is
  measured against;
* :func:`limited_code_lengths`, :func:`canonical_codes`, :func:`kraft_ok` --
  optimal length-limited prefix codes (package-merge), used by ``huffman``;
* :func:`pack_lsb` / :func:`read_lsb` -- vectorised bit writing and reading in the
  LSB-first order both ``huffman`` and ``lzw`` use (the order of DEFLATE);
* :func:`best_bytes_stage` -- what the pipeline calls per blob.

The choice rule of :func:`best_bytes_stage`: no coding and ``huffman`` are
always sized exactly (Huffman's size follows from the symbol counts and code
lengths, before any bit is packed).  ``lzw`` is run in full, stopping as soon as
it cannot win, on every blob of at most :data:`LZW_FULL_TRIAL_BYTES`; on a larger
blob it is first estimated by coding :data:`LZW_WINDOWS` evenly spaced windows of
:data:`LZW_WINDOW_BYTES` each from an empty dictionary (as every dictionary
generation starts), and run in full only when that estimate, scaled to the whole
blob, is below :data:`LZW_SKIP_RATIO` times the best size so far.  ``arith``
codes the first 64 KiB with a few widths and both orders to choose its
parameters; that trial is its exact size on a blob of at most 64 KiB, and on a
larger one it is run in full only when the trial, scaled to the whole blob, is
below 1.02 times the best size so far (``arith.SKIP_RATIO``).  An ``arith``
stream is only taken if its declared decode operations stay within rule 4.8.2's
default of ``2**15`` per stored byte (so on blobs it shrinks by at most ~21x):
it decodes one bit at a time, and a file must stay readable under the default
caps whatever its blobs.  The fewest
bytes among the coders actually run wins; on equal sizes the simpler one wins,
in the order none < huffman < lzw < arith (simpler means faster to decode and less
format to trust), so the chosen blob is never larger than the input.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Candidates of :func:`best_bytes_stage`, simplest first (ties go to the earlier one).
BYTES_STAGES = ("huffman", "lzw", "arith")
#: Blobs up to this size take ``arith`` whenever it is smallest; larger ones only when it is at
#: least ARITH_MIN_GAIN smaller than the best other coding.  ``arith`` encodes and decodes at
#: ~10 MB/s against Huffman's 150-350 MB/s: measured on MiniLM-L6 lossless, taking it wherever
#: it was smallest saved 0.76 % of the file and quadrupled compress time (5.9 -> 23.7 s CPU).
ARITH_EXACT_BYTES = 64 * 1024
ARITH_MIN_GAIN = 0.05
#: Blobs up to this size get a full LZW trial: the choice is then exactly the 1.0 rule's.
LZW_FULL_TRIAL_BYTES = 1 << 18
#: Larger blobs: LZW is estimated on this many windows of this many bytes...
LZW_WINDOWS, LZW_WINDOW_BYTES = 4, 1 << 16
#: ...and tried in full only if the estimate is below this multiple of the best size so far.
LZW_SKIP_RATIO = 1.25


# --- symbols and measuring -----------------------------------------------------------


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


def symbol_counts(data: bytes, symbol_bits: int = 8) -> np.ndarray:
    """Occurrences of each ``symbol_bits``-bit symbol of *data* (see :func:`msb_symbols`).

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


def shannon_entropy(data: Any, symbol_bits: int = 8) -> float:
    """Order-0 entropy of *data* in bits per symbol (0.0 for empty data)."""
    counts = symbol_counts(data, symbol_bits)
    n = counts.sum()
    return entropy_bound(counts) / n if n else 0.0


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


def fields_to_bytes(values: np.ndarray, width: int, tail: int = 0, tail_bits: int = 0) -> bytes:
    """Inverse of :func:`msb_symbols`: *values* as ``width``-bit fields MSB-first, then *tail_bits* bits of *tail*.

    The total bit count must be a multiple of 8.  When ``g = 8 / gcd(width, 8)``
    fields (a whole number of bytes) fit in 64 bits, each group is assembled in
    a uint64 and its bytes taken big-endian; other widths (9, 11, 13, 15) go
    through ``numpy.unpackbits``/``packbits``.
    """
    values = np.asarray(values)
    group = 8 // math.gcd(width, 8)
    if group * width > 64:
        pairs = values.astype(">u2").view(np.uint8).reshape(-1, 2)
        bits = np.unpackbits(pairs, axis=1)[:, 16 - width :].reshape(-1)
        tail_field = np.unpackbits(np.array([tail], dtype=">u2").view(np.uint8))[16 - tail_bits :]
        return np.packbits(np.concatenate([bits, tail_field])).tobytes()
    groups = -(-values.size // group)
    padded = np.zeros(groups * group, dtype=np.uint64)
    padded[: values.size] = values
    padded = padded.reshape(groups, group)
    words = padded[:, 0].copy()
    for i in range(1, group):
        words = (words << np.uint64(width)) | padded[:, i]
    group_bytes = group * width // 8
    body = words.astype(">u8").view(np.uint8).reshape(groups, 8)[:, 8 - group_bytes :].reshape(-1)
    whole, loose = divmod(values.size * width, 8)
    last = (int(body[whole]) >> (8 - loose)) if loose else 0  # bits of the last field in a shared byte
    end = ((last << tail_bits) | tail).to_bytes((loose + tail_bits) // 8, "big")
    return body[:whole].tobytes() + end


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


# --- the pipeline's choice --------------------------------------------------------------


def best_bytes_stage(data: bytes, candidates: tuple[str, ...] = BYTES_STAGES) -> tuple[str | None, bytes, dict]:
    """The smallest coding of *data* among the coders tried: ``(stage id or None, encoded bytes, configuration)``.

    Tries no coding and each stage of *candidates* (in :data:`BYTES_STAGES`
    order, simplest first) with its default parameters; the strictly smallest
    output wins, ties go to the simpler (none < huffman < lzw < arith).  ``None`` means
    "store the bytes as they are" (the returned bytes are then *data* itself and
    the configuration is ``{}``).  Each stage's ``encode_below`` may give up as
    soon as it knows it cannot beat the best size so far, which saves time but
    never changes the answer; ``lzw`` is skipped on large blobs where its
    estimate (:func:`lzw_estimate`) is clearly worse, and ``arith`` on large blobs
    where its prefix trial is (see the module docstring).  On blobs over
    :data:`ARITH_EXACT_BYTES`, ``arith`` must beat the best other coding by
    :data:`ARITH_MIN_GAIN` (its decode is the slowest by far).
    """
    from .huffman import encode_below as huffman_below
    from .arith import encode_below as arith_below
    from .lzw import encode_below as lzw_below

    coders = {"huffman": huffman_below, "lzw": lzw_below, "arith": arith_below}
    data = bytes(data)
    best: tuple[str | None, bytes, dict] = (None, data, {})
    for stage_id in BYTES_STAGES:
        if stage_id not in candidates:
            continue
        if stage_id == "lzw" and lzw_loses(data, len(best[1])):
            continue
        limit = len(best[1])
        if stage_id == "arith" and len(data) > ARITH_EXACT_BYTES:
            if not _arith_may_pay(data, limit):
                continue
            limit = int(limit * (1 - ARITH_MIN_GAIN))  # decodes ~15x slower than huffman: must pay for it
        result = coders[stage_id](data, limit)
        if result is not None and stage_id == "arith" and not _arith_cost_ok(len(data), result):
            continue
        if result is not None and len(result[0]) < len(best[1]):
            best = (stage_id, result[0], result[1])
    return best


def _arith_may_pay(data: bytes, best: int) -> bool:
    """Whether ``arith`` could beat *best* bytes by :data:`ARITH_MIN_GAIN` on a large blob, judged
    from its byte histogram alone (one compiled pass) before any trial coding: only when the
    best coding is at least that much above the order-0 bound (Huffman's one-bit floor on
    skewed data, where an adaptive binary coder keeps what Huffman loses).

    Measured on MiniLM-L6 lossless: of its 186 blobs over 64 KiB, arith won one (by this
    reason); trials on the others (near-random mantissa planes, exponent planes Huffman
    codes at the bound) cost 12 s of CPU.  What this gives up: order-1 context gains on large
    blobs of quantized codes that Huffman already codes at the order-0 bound.
    """
    bound = entropy_bound(symbol_counts(data, 8)) / 8
    return best >= (1 + ARITH_MIN_GAIN) * bound


def _arith_cost_ok(size: int, result: tuple[bytes, dict]) -> bool:
    """Whether an ``arith`` stream's declared decode operations stay within rule 4.8.2's default
    share of its own bytes (``2**15`` per stored byte), so choosing it can never push a file past
    the cap: ``arith`` decodes a bit at a time, so on blobs it shrinks more than ~21x it would."""
    from ..limits import DEFAULT_OPS_PER_DATA_BYTE
    from .arith import Arith
    from .base import BytesSpec

    stream, config = result
    return Arith.decode_cost(BytesSpec(size), config, len(stream)).ops <= DEFAULT_OPS_PER_DATA_BYTE * len(stream)


def lzw_estimate(data: bytes) -> float:
    """LZW's likely size of *data* in bytes: 0 (meaning "try it") up to :data:`LZW_FULL_TRIAL_BYTES`, else
    the bytes per input byte of :data:`LZW_WINDOWS` evenly spaced windows, each coded from an empty
    dictionary, times ``len(data)``."""
    if len(data) <= LZW_FULL_TRIAL_BYTES:
        return 0.0
    from .lzw import lzw_size

    return sum(lzw_size(w) for w in _lzw_windows(data)) / (LZW_WINDOWS * LZW_WINDOW_BYTES) * len(data)


def lzw_loses(data: bytes, best: int) -> bool:
    """``lzw_estimate(data) >= LZW_SKIP_RATIO * best`` (the skip test), decided while coding no
    window further than it takes: an LZW stream only grows, so a window is coded only until the
    windows' total passes the threshold's share (with one byte to spare for rounding)."""
    threshold = LZW_SKIP_RATIO * best
    if len(data) <= LZW_FULL_TRIAL_BYTES:
        return 0.0 >= threshold
    from .lzw import encode_below as lzw_below, lzw_size

    sampled = LZW_WINDOWS * LZW_WINDOW_BYTES
    enough = math.ceil(threshold * sampled / len(data)) + 1  # window bytes that surely reach it
    total = 0
    for window in _lzw_windows(data):
        coded = lzw_below(window, enough - total)  # enough - total >= 1: total stays below enough
        if coded is None and (total + enough - total) / sampled * len(data) >= threshold:
            return True
        total += lzw_size(window) if coded is None else len(coded[0])
    return total / sampled * len(data) >= threshold


def _lzw_windows(data: bytes) -> list[bytes]:
    """The :data:`LZW_WINDOWS` evenly spaced windows of :func:`lzw_estimate` (the first at 0, the last at the end)."""
    step = (len(data) - LZW_WINDOW_BYTES) // (LZW_WINDOWS - 1)
    return [data[k * step : k * step + LZW_WINDOW_BYTES] for k in range(LZW_WINDOWS)]
