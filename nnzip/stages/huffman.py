"""``huffman``: canonical, length-limited Huffman coding of w-bit symbols (w = 1..16).

See ``spec/stages/huffman.md`` for the normative byte layout.  In short: the
input is read as a bit stream, MSB-first, and cut into ``w``-bit symbols (bytes
for ``w = 8``); a table of code lengths (at most 15 bits, chosen by
package-merge, so the code is optimal among length-limited codes) is followed by
the leftover bits and the codes of the symbols and of one END symbol, packed
LSB-first exactly as DEFLATE packs literals.

Why any width: ``bitpack`` writes b-bit k-means indices MSB-first, so for
b = 3, 5, 6, 7 a byte holds pieces of several indices at shifting offsets and
byte symbols code 4-6 % above the indices' entropy; symbols of ``b`` or ``2b``
bits line up with the indices and come within 1 %.  Wider symbols (2 bytes, or
2-4 indices) also halve Huffman's per-symbol rounding loss on skewed data.

Why the DEFLATE bit order and the END symbol: with them, for ``w <= 8`` the
payload *is* the body of a DEFLATE block holding only literals, which any
inflater can cross-check (the tests do).  Coding and decoding are compiled loops
(:mod:`._huffman_kernels`, numba): decoding looks up the next ``L`` bits (``L`` the
longest code) in a table, for every width, and makes every check of the spec's
decoding algorithm on the way, so no symbol array or count is built to validate.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError, FormatError
from .base import BytesSpec, BytesStage, DecodeCost, check_params, config_int, config_keys, linear_cost, param_int
from .entropy import (
    canonical_codes,
    kraft_ok,
    limited_code_lengths,
    reverse_bits,
)

#: Longest code, in bits; DEFLATE's limit, and what a nibble can hold.
MAX_CODE_BITS = 15
#: Allowed symbol widths.
MIN_SYMBOL_BITS, MAX_SYMBOL_BITS = 1, 16
#: Widths the encoder considers when not told one.  Below 5 bits the floor of one
#: bit per symbol makes Huffman lose to wider symbols of the same data; 9, 11, 13
#: and 15 are left out because they decode slower (fields that straddle words) and
#: a neighbour always came within 1 % of them on k-means indices (b = 3: 9 -> 6).
AUTO_WIDTHS = (5, 6, 7, 8, 10, 12, 14, 16)
#: Widths are ranked by the order-0 entropy of at most this many leading bytes...
RANK_PREFIX = 1 << 18
#: ...and the best few of them (and always 8, the fastest to decode) are coded exactly.
EXACT_CANDIDATES = 3
#: Decoding speed classes, fastest first: bytes, narrower symbols, wider symbols (the
#: classes of the 1.0 decoders, kept so the encoder's choices and bytes stay the same).
#: The encoder moves to a slower class only for a stream at most this fraction of the
#: best one so far.
SLOWER_CLASS_GAIN = 0.99
#: First byte of a stream: how its code-length table is stored.
TABLE_DENSE, TABLE_SPARSE = 0, 1
#: Longest LEB128 number in a sparse table (values below 2**21).
MAX_VARINT_BYTES = 3


@dataclass(frozen=True)
class Huffman(BytesStage):
    """Canonical Huffman coding, codes of at most 15 bits, over w-bit symbols read MSB-first.

    Params: ``symbol_bits`` (1..16; default: chosen among :data:`AUTO_WIDTHS` for the
    fewest bytes, preferring widths up to 8, which decode faster; see :func:`_best_plan`).
    Configuration: ``{"symbol_bits": w}``.
    """

    id = "huffman"
    #: Bits per symbol, 1..16.
    symbol_bits: int

    @classmethod
    def from_config(cls, config: Any, spec: BytesSpec | None) -> "Huffman":
        """Only ``symbol_bits``, an integer in 1..16."""
        config_keys(config, {"symbol_bits"}, cls.id)
        return cls(config_int(config, "symbol_bits", MIN_SYMBOL_BITS, MAX_SYMBOL_BITS))

    @classmethod
    def encode(cls, data: bytes, spec: BytesSpec, params: Mapping[str, Any]) -> tuple[bytes, dict]:
        """Code *data*; returns ``(stream, {"symbol_bits": w})``."""
        check_params(cls.id, params, {"symbol_bits"})
        width = param_int(cls.id, params, "symbol_bits", MIN_SYMBOL_BITS, MAX_SYMBOL_BITS, None)
        plan = _best_plan(bytes(data), (width,) if width else AUTO_WIDTHS)
        if plan is None:
            raise ConfigError(f"huffman: more than 32767 distinct {width}-bit symbols occur; use a narrower width")
        return _write(plan), cls(plan.width).to_config()

    def decode(self, data: bytes, spec: BytesSpec) -> bytes:
        """Exactly ``spec.size`` bytes, or FormatError for any stream the spec page rejects."""
        return _decode(bytes(data), spec.size, self.symbol_bits)

    def decode_into(self, data: bytes, spec: BytesSpec, out: np.ndarray) -> None:
        """:meth:`decode` into *out* (``spec.size`` writable uint8, e.g. a chunk's slice of its part's
        buffer), with no copy of the output; the same checks and errors."""
        if out.dtype != np.uint8 or out.shape != (spec.size,):
            raise ValueError(f"huffman: decode_into needs {spec.size} uint8 bytes, got {out.dtype}{out.shape}")
        _decode(bytes(data), spec.size, self.symbol_bits, out)

    def decode_cost(self, spec: BytesSpec, coded: int = 0) -> DecodeCost:
        """Bounds for the compiled decoder (``spec/stages/huffman.md``, "Decode cost").

        Two copies of the blob (its bytes and the payload after the table), the output's
        ``bytes`` copy, and tables of at most ``2**16`` entries (code lengths, canonical codes,
        the two-level lookup table): under 2 MiB whatever the width.  Four passes over the
        symbols and the blob.
        """
        symbols = 8 * spec.size // self.symbol_bits + 1
        work = 2 * coded + spec.size + (2 << 20)
        return linear_cost(symbols + coded, passes=4, work=work)

    def max_expansion(self) -> float:
        """Every code is at least 1 bit and stands for ``w`` bits of output: ``w``."""
        return float(self.symbol_bits)


def encode_below(data: bytes, limit: int, counter: _Counter | None = None) -> tuple[bytes, dict] | None:
    """Huffman-code *data* with default params if that gives fewer than *limit* bytes, else None.

    Sizes are known before any bit is packed, so a losing attempt costs only
    the counting and the code construction.  *counter* (a :func:`counter` of the same
    bytes) shares its symbol counts with the caller, who may use them to judge other coders.
    """
    plan = _best_plan(bytes(data), AUTO_WIDTHS, counter)
    if plan is None or plan.size >= limit:
        return None
    return _write(plan), Huffman(plan.width).to_config()


# --- encoding -----------------------------------------------------------------------------


class _Plan:
    """One way to code a blob: its symbol count, their code lengths and the exact output size.

    Everything is computed on the symbols that occur (and END), never on the ``2**w``-entry
    alphabet: a small blob read as 16-bit symbols costs what its few symbols cost.  The full
    code-length table (:attr:`lengths`) is only built for the plan that is written.
    """

    def __init__(self, data: bytes, width: int, counter: _Counter | None = None):
        self.data, self.width, self.size_in = data, width, len(data)
        self.count = 8 * len(data) // width
        self.tail = _tail_bytes(data, self.count * width, 8 * len(data) - self.count * width)
        symbols, counts = (counter or _Counter(data)).used(width, len(data))
        self.used = np.append(symbols, 1 << width)  # the END symbol is the last one; its count is 1
        counts = np.append(counts, 1)
        self.possible = self.used.size <= 1 << MAX_CODE_BITS
        self.used_lengths = limited_code_lengths(counts, MAX_CODE_BITS) if self.possible else np.zeros(0, dtype=np.int64)
        self.payload_bits = int(np.dot(counts, self.used_lengths)) if self.possible else 0  # int64: exact
        table = _table_size_used(width, symbols) if self.possible else 0
        self.size = table + len(self.tail) + (self.payload_bits + 7) // 8 if data else 0

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        """Code lengths of all ``2**w + 1`` symbols, END last (0 for the unused ones)."""
        lengths = np.zeros((1 << self.width) + 1, dtype=np.int64)
        if self.possible:
            lengths[self.used] = self.used_lengths
        return lengths

    @property
    def table(self) -> bytes:
        """The code-length table's bytes (built only for the plan that is written)."""
        return _table_bytes(self.lengths) if self.possible else b""


class _Counter:
    """Symbol counts of one blob (or of its first bytes) for several widths, each pass made once.

    The counts of ``w``-bit symbols (``w <= 8``) follow exactly from those of ``2w``-bit ones
    already made: a ``2w``-bit symbol is two ``w``-bit ones, its high half first, so summing its
    table over the low half counts the even symbols and over the high half the odd ones; when
    the count of ``w``-bit symbols is odd, its last one is read from the bytes.  The width
    search so costs one histogram pass for each of 16/8, 14/7, 12/6 and 10/5, not two.  Counts
    are kept as the symbols that occur and their counts (:meth:`used`), each one compiled call.
    """

    def __init__(self, data: bytes):
        self.data = data
        self.buffer = np.frombuffer(data, dtype=np.uint8)
        self.cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def used(self, width: int, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
        """``(symbols, counts)`` of the ``width``-bit symbols of the first *nbytes* bytes that occur, ascending."""
        from . import _huffman_kernels as kernels

        key = (width, nbytes)
        if key not in self.cache:
            wide = self.cache.get((2 * width, nbytes))
            count = 8 * nbytes // width
            if wide is None:
                self.cache[key] = kernels.used_counts(self.buffer[:nbytes], width, count)
            else:
                last = _read_bits(self.data, (count - 1) * width, width) if count % 2 else -1
                self.cache[key] = kernels.halve_used(wide[0], wide[1], width, last)
        return self.cache[key]

    def counts(self, width: int, nbytes: int) -> np.ndarray:
        """Counts (``2**width`` entries) of the ``width``-bit symbols of the first *nbytes* bytes."""
        symbols, counts = self.used(width, nbytes)
        table = np.zeros(1 << width, dtype=np.int64)
        table[symbols] = counts
        return table


def _read_bits(data: bytes, start: int, bits: int) -> int:
    """The *bits* (<= 16) bits of *data* from bit *start* on, MSB-first, as an integer (past the end: zeros)."""
    first = start >> 3
    window = int.from_bytes(data[first:first + 3].ljust(3, b"\0"), "big")
    return (window >> (24 - bits - (start & 7))) & ((1 << bits) - 1)


def _halve(wide: np.ndarray, width: int, data: bytes, nbytes: int) -> np.ndarray:
    """Counts of ``width``-bit symbols from *wide*, the counts of ``2 * width``-bit ones of the same bytes."""
    table = wide.reshape(1 << width, 1 << width)  # [high half, low half]
    counts = table.sum(axis=1) + table.sum(axis=0)
    count = 8 * nbytes // width
    if count % 2:  # the last symbol starts where the last whole 2w-bit symbol ends
        counts[_read_bits(data, (count - 1) * width, width)] += 1
    return counts


def _histogram(data: bytes, width: int, count: int, alphabet: int) -> np.ndarray:
    """Counts of the first *count* ``width``-bit symbols of *data* (an array of *alphabet* entries)."""
    from . import _huffman_kernels

    return _huffman_kernels.histogram(np.frombuffer(data, dtype=np.uint8), width, count, alphabet)


def _tail_bytes(data: bytes, start: int, bits: int) -> bytes:
    """The last *bits* (< 16) bits of *data*, MSB-first, left-aligned in ``ceil(bits / 8)`` bytes."""
    if bits == 0:
        return b""
    value = _read_bits(data, start, bits)
    nbytes = (bits + 7) // 8
    return (value << (8 * nbytes - bits)).to_bytes(nbytes, "big")


def counter(data: bytes) -> _Counter:
    """The symbol counts of *data*, computed as first asked for and kept (``used(width, nbytes)``
    gives the symbols of the first *nbytes* bytes that occur and their counts)."""
    return _Counter(bytes(data))


def _best_plan(data: bytes, widths: tuple[int, ...], counter: _Counter | None = None) -> _Plan | None:
    """The plan to use among *widths*; None if no width can be coded.

    With several widths, each is first ranked by :func:`_estimate`; the best
    :data:`EXACT_CANDIDATES` and 8 are then coded exactly.  Then, class by class
    from the fastest to decode (8; below 8; above 8), a class's smallest plan
    (ties to the narrower) replaces the choice so far only if it is at most
    :data:`SLOWER_CLASS_GAIN` times its size.
    """
    if not data:
        return _Plan(data, widths[0] if len(widths) == 1 else 8)
    counter = counter if counter is not None and (counter.data is data or counter.data == data) else _Counter(data)
    if len(widths) > 1:
        # Wider first, so that each narrower width's counts come from its double's (_Counter).
        estimates = {w: _estimate(data, w, counter) for w in sorted(widths, reverse=True)}
        ranked = sorted(widths, key=lambda w: (estimates[w], w))
        widths = tuple(sorted(set(ranked[:EXACT_CANDIDATES]) | ({8} & set(widths))))
    plans = [plan for plan in (_Plan(data, width, counter) for width in sorted(widths, reverse=True)) if plan.possible]
    plans.sort(key=lambda p: p.width)  # the order the choice below has always seen
    best: _Plan | None = None
    for in_class in (lambda w: w == 8, lambda w: w < 8, lambda w: w > 8):
        candidate = min((p for p in plans if in_class(p.width)), key=lambda p: p.size, default=None)
        if candidate is not None and (best is None or candidate.size <= SLOWER_CLASS_GAIN * best.size):
            best = candidate
    return best


def _estimate(data: bytes, width: int, counter: _Counter | None = None) -> float:
    """Rough coded size in bytes, from a prefix: every symbol costs ``max(1, -log2 p)`` bits
    (order-0 entropy, but at least the 1 bit a Huffman code needs), plus the table's likely size."""
    prefix_bytes = min(len(data), RANK_PREFIX)
    counts = (counter or _Counter(data)).used(width, prefix_bytes)[1].astype(np.float64)  # the nonzero counts, ascending symbol
    # np.sum (pairwise), not np.dot: BLAS splits long dot products over threads, which
    # made the sum, and so possibly the ranking, depend on the machine's thread count.
    bits = float(np.sum(counts * np.maximum(1.0, np.log2(counts.sum() / counts))))
    table = min(((1 << width) + 2) // 2, 2 * counts.size + 2)
    return bits / 8 * len(data) / prefix_bytes + table


def _table_size(lengths: np.ndarray, used: np.ndarray) -> int:
    """``len(_table_bytes(lengths))`` computed from the lengths alone: the mode byte and the shorter form.

    *used* are the symbols with a nonzero length, END (the last one) included.
    """
    symbols = used[:-1] if used.size and used[-1] == lengths.size - 1 else used
    return _table_size_used(int(lengths.size - 1).bit_length() - 1, symbols)


def _table_size_used(width: int, symbols: np.ndarray) -> int:
    """``len(_table_bytes(...))`` of a code over ``width``-bit symbols whose used data symbols
    (END not included) are the ascending *symbols*: the mode byte and the shorter form."""
    from . import _huffman_kernels

    dense = ((1 << width) + 2) // 2
    return 1 + min(dense, int(_huffman_kernels.sparse_table_bytes(np.ascontiguousarray(symbols, dtype=np.int64))))


def _varint_size(values: np.ndarray) -> int:
    """Bytes of :func:`_varints` of *values* (each below 2**21)."""
    values = np.asarray(values, dtype=np.int64)
    return int(values.size + np.count_nonzero(values >= 1 << 7) + np.count_nonzero(values >= 1 << 14))


def _table_bytes(lengths: np.ndarray) -> bytes:
    """The stream's first bytes: mode byte and code-length table, dense or sparse, whichever is shorter."""
    dense = _nibbles(lengths)
    used = np.flatnonzero(lengths[:-1])
    gaps = np.diff(used, prepend=-1) - 1
    sparse = _varints(np.concatenate([[used.size], gaps])) + _nibbles(np.append(lengths[used], lengths[-1]))
    if len(sparse) < len(dense):
        return bytes([TABLE_SPARSE]) + sparse
    return bytes([TABLE_DENSE]) + dense


def _nibbles(values: np.ndarray) -> bytes:
    """Values 0..15 two per byte, the first in the low nibble; an odd count is padded with 0."""
    values = np.asarray(values, dtype=np.uint8)
    if values.size % 2:
        values = np.append(values, np.uint8(0))
    return (values[0::2] | (values[1::2] << 4)).astype(np.uint8).tobytes()


def _varints(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of each value (< 2**21): 7 bits per byte, low group first, high bit = more."""
    values = np.asarray(values, dtype=np.int64)
    groups = np.stack([(values >> (7 * k)) & 0x7F for k in range(MAX_VARINT_BYTES)], axis=1)
    count = 1 + (values >= 1 << 7) + (values >= 1 << 14)
    more = np.arange(MAX_VARINT_BYTES)[None, :] < (count[:, None] - 1)
    keep = np.arange(MAX_VARINT_BYTES)[None, :] < count[:, None]
    return (groups | (more * 0x80))[keep].astype(np.uint8).tobytes()


def _write(plan: _Plan) -> bytes:
    """The full stream of a plan: table, tail, then the packed codes and END."""
    if plan.size_in == 0:
        return b""
    from . import _huffman_kernels

    lengths = plan.lengths
    codes = reverse_bits(canonical_codes(lengths), lengths)  # LSB-first: code MSB goes first
    table = plan.table
    assert len(table) + len(plan.tail) + (plan.payload_bits + 7) // 8 == plan.size  # the size the choice was made on
    payload = np.empty((plan.payload_bits + 7) // 8, dtype=np.uint8)
    end = lengths.size - 1
    # Byte-aligned symbols (8 and 16 bits: bytes, bfloat16/float16 words) skip the bit accumulator.
    data = np.frombuffer(plan.data, dtype=np.uint8)
    if plan.width in (8, 16):
        packed = ((codes << 4) | lengths).astype(np.uint32)
        _huffman_kernels.encode_aligned(data, plan.width, plan.count, packed, end, payload)
    else:
        _huffman_kernels.encode(data, plan.width, plan.count, codes, lengths, end, payload)
    return table + plan.tail + payload.tobytes()


# --- decoding -----------------------------------------------------------------------------


def _decode(data: bytes, size: int, width: int, out: np.ndarray | None = None) -> bytes | None:
    """Decode a whole stream for an output of *size* bytes (into *out* when given; None is then returned)."""
    if size == 0:
        if data:
            raise FormatError(f"huffman: an empty output must be coded as 0 bytes, got {len(data)}")
        return b"" if out is None else None
    lengths, offset = _read_table(data, width)
    nsym, tail_bits = divmod(8 * size, width)
    tail_value, offset = _read_tail(data, offset, tail_bits)
    payload = data[offset:]
    used = lengths[:-1][lengths[:-1] > 0]
    if nsym and not used.size:
        raise FormatError(f"huffman: the table codes no symbol but {nsym} are expected")
    min_bits = nsym * (int(used.min()) if used.size else 0) + int(lengths[-1])
    if 8 * len(payload) < min_bits:
        raise FormatError(f"huffman: stream truncated: {len(payload)} payload bytes cannot hold {nsym} symbols")
    return _decode_payload(payload, lengths, width, nsym, size, tail_value, tail_bits, out)


def _decode_payload(payload: bytes, lengths: np.ndarray, width: int, nsym: int, size: int, tail: int, tail_bits: int,
                    out: np.ndarray | None = None) -> bytes | None:
    """Decode *nsym* symbols and END (steps 5-7 of the spec's decoding algorithm) into *size* bytes
    (returned, or written into *out*)."""
    from . import _huffman_kernels as kernels

    end = lengths.size - 1
    bits = int(lengths.max())
    first, second, first_bits = kernels.decode_table(reverse_bits(canonical_codes(lengths), lengths), lengths, bits)
    given = out is not None
    out = out if given else np.empty(size, dtype=np.uint8)
    buffer = np.frombuffer(payload, dtype=np.uint8)
    if width == 8 and nsym >= kernels.MULTI_SYMBOLS:
        symbols, meta = kernels.multi_table(first, first_bits, end)  # several symbols a lookup
        status, k, used = kernels.decode_bytes(buffer, first, second, first_bits, bits, symbols, meta, nsym, end, out)
    else:
        status, k, used = kernels.decode(buffer, first, second, first_bits, bits, width, nsym, end, tail, tail_bits, out)
    if status == kernels.TRUNCATED:
        raise FormatError("huffman: stream truncated before END")
    if status == kernels.END_EARLY:
        raise FormatError(f"huffman: END after {k} symbols, {nsym} declared")
    if status == kernels.TOO_MANY:
        raise FormatError(f"huffman: stream holds more than the declared {nsym} symbols")
    if len(payload) != (used + 7) // 8:
        raise FormatError(f"huffman: {len(payload) - (used + 7) // 8} bytes of trailing garbage after END")
    if used % 8 and payload[-1] >> (used % 8):
        raise FormatError("huffman: nonzero padding bits after END")
    return None if given else out.tobytes()


def _read_tail(data: bytes, offset: int, bits: int) -> tuple[int, int]:
    """The *bits* leftover input bits stored at *offset*, and the offset after them."""
    nbytes = (bits + 7) // 8
    stored = data[offset : offset + nbytes]
    if len(stored) != nbytes:
        raise FormatError("huffman: stream truncated before the leftover bits")
    value = int.from_bytes(stored, "big")
    padding = 8 * nbytes - bits
    if value & ((1 << padding) - 1):
        raise FormatError("huffman: nonzero padding bits after the leftover bits")
    return value >> padding, offset + nbytes


def _read_table(data: bytes, width: int) -> tuple[np.ndarray, int]:
    """The code lengths of all ``2**width + 1`` symbols and the offset after the table."""
    alphabet = (1 << width) + 1
    if not data:
        raise FormatError("huffman: stream truncated: no table")
    mode = data[0]
    if mode == TABLE_DENSE:
        end = 1 + (alphabet + 1) // 2
        lengths = _read_nibbles(data, 1, end, alphabet)
    elif mode == TABLE_SPARSE:
        count, pos = _read_varints(data, 1, 1)
        count = int(count[0])
        if count > alphabet - 1:
            raise FormatError(f"huffman: sparse table lists {count} symbols, more than the {alphabet - 1} there are")
        gaps, pos = _read_varints(data, pos, count)
        symbols = np.cumsum(gaps + 1) - 1
        if count and symbols[-1] >= alphabet - 1:
            raise FormatError(f"huffman: sparse table names symbol {int(symbols[-1])}, beyond {alphabet - 2}")
        end = pos + (count + 2) // 2
        listed = _read_nibbles(data, pos, end, count + 1)
        if count and not listed[:-1].all():
            raise FormatError("huffman: sparse table gives a listed symbol code length 0")
        lengths = np.zeros(alphabet, dtype=np.int64)
        lengths[symbols] = listed[:-1]
        lengths[-1] = listed[-1]
    else:
        raise FormatError(f"huffman: unknown table mode {mode} (0 dense, 1 sparse)")
    if lengths[-1] == 0:
        raise FormatError("huffman: the END symbol has no code")
    if not kraft_ok(lengths, MAX_CODE_BITS):
        raise FormatError("huffman: code lengths do not form a complete prefix code (Kraft sum != 1)")
    return lengths, end


def _read_nibbles(data: bytes, start: int, end: int, count: int) -> np.ndarray:
    """*count* nibbles from ``data[start:end]``, low nibble first; the padding nibble must be 0."""
    if len(data) < end:
        raise FormatError("huffman: stream truncated inside the code-length table")
    packed = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
    values = np.stack([packed & 0x0F, packed >> 4], axis=1).reshape(-1).astype(np.int64)
    if values.size > count and values[count:].any():
        raise FormatError("huffman: nonzero padding nibble in the code-length table")
    return values[:count]


def _read_varints(data: bytes, start: int, count: int) -> tuple[np.ndarray, int]:
    """*count* LEB128 numbers from ``data[start:]`` (vectorised) and the offset after them."""
    if count == 0:
        return np.zeros(0, dtype=np.int64), start
    window = np.frombuffer(data, dtype=np.uint8, offset=start, count=min(len(data) - start, MAX_VARINT_BYTES * count))
    last = np.flatnonzero(window < 0x80)[:count]
    if last.size < count:
        if window.size == MAX_VARINT_BYTES * count:  # room enough for count numbers of <= 3 bytes
            raise FormatError(f"huffman: a number in the table is longer than {MAX_VARINT_BYTES} bytes")
        raise FormatError("huffman: stream truncated inside the code-length table")
    first = np.concatenate([[0], last[:-1] + 1])
    sizes = last - first + 1
    if sizes.max() > MAX_VARINT_BYTES:
        raise FormatError(f"huffman: a number in the table is longer than {MAX_VARINT_BYTES} bytes")
    if ((sizes > 1) & (window[last] == 0)).any():
        raise FormatError("huffman: a number in the table is not minimally encoded")
    used = window[: last[-1] + 1].astype(np.int64)
    shift = 7 * (np.arange(used.size) - np.repeat(first, sizes))
    values = np.add.reduceat((used & 0x7F) << shift, first)
    return values, start + int(last[-1]) + 1
