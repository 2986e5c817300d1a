"""``rans``: static range ANS over w-bit symbols, a frequency table per block, 4 interleaved states.

See ``spec/stages/rans.md`` for the normative layout.  In short: the input is read as
``w``-bit symbols (``w`` = 1..8, MSB-first, the last one padded with zero bits); the symbols
are cut into blocks of ``2**block_bits``; each block either reuses the table in force or
brings a new one (frequencies summing to ``2**P``, Exp-Golomb coded, bit-packed in a table
section at the front); the symbols are coded by rANS with 4 interleaved 64-bit states that
exchange 32-bit words with the stream.

Why: Huffman rounds every code to whole bits (1-3 % above the order-0 bound on exponent
planes, and a one-bit floor on skewed codes); ``arith`` has no such loss but codes one bit
at a time (~10 MB/s).  rANS codes at the order-0 bound of each block's table, with a
table lookup and a multiply per symbol, at Huffman's speed.  Tables per block follow the
data where its statistics drift (word-embedding rows, layers of different scale): measured
on MiniLM-L6's byte planes, blocks of 64 KiB with their own tables code 0.6 % below one
table per 4 MiB chunk, and a block whose statistics match the previous table reuses it for
one bit.

The encoder sizes every candidate exactly from symbol counts (table bits are known, and the
coded bits are ``sum c log2(2**P / q)`` within 16 bytes and ``n / 2**18``: see
:func:`size_bounds`), so the policy can rank it without running it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import FormatError
from .base import BytesSpec, BytesStage, DecodeCost, check_params, config_int, config_keys, linear_cost, param_int

#: Allowed symbol widths and block sizes (log2 of the symbols per block).
MIN_SYMBOL_BITS, MAX_SYMBOL_BITS = 1, 8
MIN_BLOCK_BITS, MAX_BLOCK_BITS = 12, 20
#: Block sizes the encoder considers when not told one.
AUTO_BLOCK_BITS = (16, 18, 20)
#: Tables are tried at precisions from 15 down to this one (lower ones save table bits on small blocks).
MIN_PRECISION = 0
#: Widths are ranked by the order-0 entropy per input bit of at most this many leading bytes...
RANK_PREFIX = 1 << 13
#: ...and the best few (always 8 too, the fastest to decode) are sized exactly.
TRIAL_WIDTHS = 2
#: A narrower width is tried when its prefix entropy per bit is at most this multiple of bytes'...
NARROW_SLACK = 1.02
#: ...unless every width takes this many bits per bit or more.
NARROW_MAX_SCORE = 0.98
#: A plan with symbols narrower than bytes (which decode about 3x slower) replaces the best plan
#: with bytes only when its size bound is at most this fraction of that one's.
NARROWER_GAIN = 0.99
#: Bytes of the 4 lane states.
STATE_BYTES = 32
#: Declared decode passes per symbol and stream byte: measured, the compiled decoder's CPU time
#: per declared operation is then at most Huffman's (bytes, 3-bit symbols, and a new table in
#: every 4096-symbol block alike; spec page, "Decode cost"); a table's slot map is charged one
#: pass per slot.
DECODE_PASSES = 4


@dataclass(frozen=True)
class Rans(BytesStage):
    """Static rANS of w-bit symbols (w = 1..8), a table per block of ``2**block_bits`` symbols.

    Params: ``symbol_bits`` (1..8) and ``block_bits`` (12..20); each chosen for the fewest
    bytes, sized from symbol counts, when not given (see :func:`plan`).
    Configuration: ``{"symbol_bits": w, "block_bits": b}``.
    """

    id = "rans"
    #: Bits per symbol, 1..8.
    symbol_bits: int
    #: log2 of the symbols per block, 12..20.
    block_bits: int

    @classmethod
    def from_config(cls, config: Any, spec: BytesSpec | None) -> "Rans":
        """Only ``symbol_bits`` (an integer in 1..8) and ``block_bits`` (an integer in 12..20)."""
        config_keys(config, {"symbol_bits", "block_bits"}, cls.id)
        return cls(config_int(config, "symbol_bits", MIN_SYMBOL_BITS, MAX_SYMBOL_BITS),
                   config_int(config, "block_bits", MIN_BLOCK_BITS, MAX_BLOCK_BITS))

    @classmethod
    def encode(cls, data: bytes, spec: BytesSpec, params: Mapping[str, Any]) -> tuple[bytes, dict]:
        """Code *data*; returns ``(stream, {"symbol_bits": w, "block_bits": b})``."""
        check_params(cls.id, params, {"symbol_bits", "block_bits"})
        width = param_int(cls.id, params, "symbol_bits", MIN_SYMBOL_BITS, MAX_SYMBOL_BITS, None)
        block = param_int(cls.id, params, "block_bits", MIN_BLOCK_BITS, MAX_BLOCK_BITS, None)
        chosen = plan(bytes(data), width, block)
        return write(chosen), cls(chosen.width, chosen.block_bits).to_config()

    def decode(self, data: bytes, spec: BytesSpec) -> bytes:
        """Exactly ``spec.size`` bytes, or FormatError for any stream the spec page rejects."""
        return _decode(bytes(data), spec.size, self.symbol_bits, self.block_bits).tobytes()

    def decode_into(self, data: bytes, spec: BytesSpec, out: np.ndarray) -> None:
        """:meth:`decode` into *out* (``spec.size`` writable uint8), with no copy of the output."""
        if out.dtype != np.uint8 or out.shape != (spec.size,):
            raise ValueError(f"rans: decode_into needs {spec.size} uint8 bytes, got {out.dtype}{out.shape}")
        _decode(bytes(data), spec.size, self.symbol_bits, self.block_bits, out)

    def decode_cost(self, spec: BytesSpec, coded: int = 0) -> DecodeCost:
        """Bounds for the compiled decoder (``spec/stages/rans.md``, "Decode cost").

        The blob's bytes and its words' copy, the output's ``bytes`` copy and tables under
        1 MiB: ``2 B + N + 2**20``.  :data:`DECODE_PASSES` passes over the symbols and the blob,
        and one over the ``2**15`` slots of each block's table.
        """
        symbols = -(-8 * spec.size // self.symbol_bits)
        blocks = -(-symbols // (1 << self.block_bits))
        work = 2 * coded + spec.size + (1 << 20)
        return linear_cost(DECODE_PASSES * (symbols + coded) + blocks * (1 << 15), passes=1, work=work)

    def max_expansion(self) -> float:
        """Each block costs at least one table bit and stands for ``2**block_bits`` symbols of ``w`` bits."""
        return float(self.symbol_bits << self.block_bits)


def encode_below(data: bytes, limit: int) -> tuple[bytes, dict] | None:
    """rANS-code *data* with chosen params if that gives fewer than *limit* bytes, else None.

    The plan's size bounds come from counts alone (:func:`size_bounds`): a plan whose lower
    bound reaches *limit* is not coded at all.
    """
    data = bytes(data)
    if not data or limit <= 0:
        return None
    chosen = plan(data, None, None)
    if chosen.bounds[0] >= limit:
        return None
    stream = write(chosen)
    return (stream, Rans(chosen.width, chosen.block_bits).to_config()) if len(stream) < limit else None


# --- encoding -----------------------------------------------------------------------------


class Plan:
    """One way to code a blob: width, block size, each block's table, and the stream's size bounds."""

    def __init__(self, data: bytes, width: int, block_bits: int, counts: np.ndarray):
        from . import _rans_kernels as kernels

        self.data, self.width, self.block_bits = data, width, block_bits
        self.nsym = -(-8 * len(data) // width)
        self.new, self.precision, self.order, self.tables, bits = kernels.plan_tables(counts, MIN_PRECISION)
        out = np.zeros(_table_capacity(self), dtype=np.uint8)
        #: Exact bits of the table section (one per block, 9 and the values' codes per new table).
        self.table_bits = int(kernels.write_tables(self.new, self.precision, self.order, self.tables, out))
        #: The ideal coded bits ``G = sum c log2(2**P / q)`` (plan_tables' total less the tables).
        self.coded_bits = float(bits) - self.table_bits
        self.bounds = size_bounds(len(data), self.nsym, self.table_bits, self.coded_bits)


def _table_capacity(chosen: Plan) -> int:
    """Bytes that surely hold the table section: per new table 9 bits and 33 per value (2**15 + 2**k < 2**17)."""
    return (len(chosen.new) + int(chosen.new.sum()) * (9 + 33 * chosen.tables.shape[1])) // 8 + 8


def size_bounds(size: int, nsym: int, table_bits: int, coded_bits: float) -> tuple[int, int]:
    """``(low, high)`` bounds of the stream's bytes, from the plan's counts alone.

    The table section, its length and the states are exact; the words hold the ``G`` ideal
    bits, each lane's final state carrying 31 to 63 of them, and each coding step's rounding
    adds at most ``log2(1 + 2**-16)`` bits (every state is at least ``2**16 f``): the words take
    between ``G / 8 - n / 2**18 - 17`` and ``G / 8 + n / 2**18 + 4`` bytes, in whole words.
    """
    if not size:
        return 0, 0
    section = (table_bits + 7) // 8
    fixed = _varint_size(section) + section + STATE_BYTES
    low = fixed + 4 * max(0, math.floor((coded_bits / 8 - nsym / (1 << 18) - 17) / 4))
    high = fixed + 4 * math.ceil((coded_bits / 8 + nsym / (1 << 18) + 4) / 4)
    return low, high


def _varint_size(value: int) -> int:
    """Bytes of the LEB128 code of *value*."""
    return max(1, -(-value.bit_length() // 7))


def plan(data: bytes, width: int | None, block_bits: int | None) -> Plan:
    """The plan to code *data* with: given params kept, the others chosen for the fewest bytes
    (the upper size bound from counts; ties to the wider symbol and the larger block, faster;
    a narrower width than bytes must save :data:`NARROWER_GAIN`)."""
    from . import _rans_kernels as kernels

    widths = (width,) if width is not None else _ranked_widths(data)
    blocks = (block_bits,) if block_bits is not None else AUTO_BLOCK_BITS
    best: Plan | None = None
    for w in sorted(widths, reverse=True):
        buffer = np.frombuffer(data, dtype=np.uint8)
        nsym = -(-8 * len(data) // w)
        finest = min(blocks)
        counts = kernels.block_counts(buffer, w, nsym, finest)
        for b in sorted(blocks, reverse=True):
            group = 1 << (b - finest)
            merged = counts if group == 1 else _merge_rows(counts, group)
            candidate = Plan(data, w, b, merged)
            # Bytes decode fastest: a narrower width must save NARROWER_GAIN to replace them.
            gain = NARROWER_GAIN if best is not None and best.width == 8 and w < 8 else 1.0
            if best is None or candidate.bounds[1] < gain * best.bounds[1]:
                best = candidate
    return best


def _merge_rows(counts: np.ndarray, group: int) -> np.ndarray:
    """Counts of blocks *group* times larger: consecutive rows summed."""
    rows = -(-counts.shape[0] // group)
    padded = np.zeros((rows * group, counts.shape[1]), dtype=np.int64)
    padded[: counts.shape[0]] = counts
    return padded.reshape(rows, group, counts.shape[1]).sum(axis=1)


def _ranked_widths(data: bytes) -> tuple[int, ...]:
    """8, and those of the :data:`TRIAL_WIDTHS` widths of lowest order-0 entropy per input bit on a
    prefix that have about as little of it as bytes, or less (:data:`NARROW_SLACK`)."""
    from . import _huffman_kernels

    prefix = np.frombuffer(data[:RANK_PREFIX], dtype=np.uint8)
    scores = []
    for width in range(MIN_SYMBOL_BITS, MAX_SYMBOL_BITS + 1):
        count = 8 * prefix.size // width
        counts = _huffman_kernels.histogram(prefix, width, count, 1 << width)
        counts = counts[counts > 0].astype(np.float64)
        # np.sum (pairwise), not np.dot: the ranking must not depend on BLAS threading.
        bits = float(np.sum(counts * np.log2(counts.sum() / counts))) if count else 0.0
        scores.append((bits / max(count * width, 1), width))
    # Narrower symbols only where they may beat bytes (3-bit indices straddle bytes; on byte data
    # they never do, a byte's entropy being at most the sum of its pieces'), and they count slower.
    # "May": within 2 %, since a prefix's 256 byte cells are sparsely filled and so look better
    # than they are (and a byte table costs more to store); but not on near-incompressible data
    # (every width >= 0.98 bits per bit), where no width saves what trying it costs.
    # Where widths tie (i.i.d. bits look alike at every width), a width dividing 8 is also tried:
    # its symbols never straddle bytes, and it counts and decodes faster.
    bytes_score = scores[-1][0]
    if min(scores)[0] >= NARROW_MAX_SCORE:
        return (8,)
    ranked = sorted((score, w) for score, w in scores[:-1] if score <= NARROW_SLACK * bytes_score)
    chosen = {w for _, w in ranked[:TRIAL_WIDTHS]}
    chosen |= {next((w for score, w in ranked if 8 % w == 0 and score <= NARROW_SLACK * ranked[0][0]), 8)} if ranked else set()
    return tuple(sorted(chosen | {8}))


def write(chosen: Plan) -> bytes:
    """The stream of a plan: table section length, table section, states, words."""
    if not chosen.data:
        return b""
    from . import _rans_kernels as kernels

    out = np.zeros(_table_capacity(chosen), dtype=np.uint8)
    bits = kernels.write_tables(chosen.new, chosen.precision, chosen.order, chosen.tables, out)
    section = out[: (bits + 7) // 8].tobytes()
    words = np.empty(chosen.bounds[1] // 4 + 4, dtype="<u4")  # the bound from counts, with room to spare
    first, states = kernels.encode(np.frombuffer(chosen.data, dtype=np.uint8), chosen.width, chosen.nsym,
                                   chosen.block_bits, chosen.tables, chosen.precision, words)
    assert first >= 0, "rans: the words outgrew the size bound computed from the counts"
    body = words[first:].tobytes()
    stream = _varint(len(section)) + section + states.astype("<u8").tobytes() + body
    assert chosen.bounds[0] <= len(stream) <= chosen.bounds[1], (chosen.bounds, len(stream))
    return stream


def _varint(value: int) -> bytes:
    """Unsigned LEB128 of *value*."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


# --- decoding -----------------------------------------------------------------------------


def _read_varint(data: bytes) -> tuple[int, int]:
    """The table section's length and the offset after it (at most 4 bytes, minimally encoded)."""
    value = 0
    for i in range(min(4, len(data))):
        value |= (data[i] & 0x7F) << (7 * i)
        if not data[i] & 0x80:
            if i and data[i] == 0:
                raise FormatError("rans: the table section's length is not minimally encoded")
            return value, i + 1
    if len(data) < 4:
        raise FormatError("rans: stream truncated inside the table section's length")
    raise FormatError("rans: the table section's length is longer than 4 bytes")


def _decode(data: bytes, size: int, width: int, block_bits: int, out: np.ndarray | None = None) -> np.ndarray:
    """Decode a whole stream into *size* bytes (the spec's decoding algorithm and checks)."""
    from . import _rans_kernels as kernels

    if out is None:
        out = np.zeros(size, dtype=np.uint8)
    elif width < 8:
        out[:] = 0
    if size == 0:
        if data:
            raise FormatError(f"rans: an empty output must be coded as 0 bytes, got {len(data)}")
        return out
    section, offset = _read_varint(data)
    if offset + section + STATE_BYTES > len(data):
        raise FormatError(f"rans: stream truncated: {len(data)} bytes cannot hold a {section}-byte table section and the states")
    tables = np.frombuffer(data, dtype=np.uint8, count=section, offset=offset)
    states = np.frombuffer(data, dtype="<u8", count=4, offset=offset + section).astype(np.int64)
    if ((states < kernels.LOW) | (states < 0)).any():  # a u8 of 2**63 or more reads as negative
        raise FormatError("rans: a lane's initial state is outside [2**31, 2**63)")
    body = len(data) - offset - section - STATE_BYTES
    if body % 4:
        raise FormatError(f"rans: the words take {body} bytes, not a multiple of 4")
    words = np.frombuffer(data, dtype="<u4", offset=offset + section + STATE_BYTES)
    nsym = -(-8 * size // width)
    status, block, used, table_bits = kernels.decode(tables, 8 * section, words, width, nsym, block_bits, states, out)
    _check_status(kernels, status, block, used, len(words))
    if (table_bits + 7) // 8 != section:
        raise FormatError(f"rans: the table section has {section - (table_bits + 7) // 8} bytes after the last table")
    if table_bits % 8 and tables[-1] & (0xFF >> (table_bits % 8)):
        raise FormatError("rans: nonzero padding bits after the last table")
    if used != len(words):
        raise FormatError(f"rans: {len(words) - used} words of trailing garbage after the coded symbols")
    if (states != kernels.LOW).any():
        raise FormatError("rans: a lane does not end in the initial state 2**31 (corrupt stream)")
    return out


def _check_status(kernels: Any, status: int, block: int, used: int, have: int) -> None:
    """The decoder kernel's error, as the spec page words it."""
    if status == kernels.TABLE_TRUNCATED:
        raise FormatError(f"rans: the table section ends inside block {block}'s table")
    if status == kernels.TABLE_VALUE:
        raise FormatError(f"rans: block {block}'s table has a frequency above its total 2**P")
    if status == kernels.TABLE_LONG:
        raise FormatError(f"rans: block {block}'s table has a code with more than {kernels.MAX_PREFIX} leading zero bits")
    if status == kernels.TABLE_SUM:
        raise FormatError(f"rans: block {block}'s table frequencies do not sum to 2**P")
    if status == kernels.WORDS_TRUNCATED:
        raise FormatError(f"rans: stream truncated: decoding needs more than the {have} words there are")
    if status == kernels.PADDING:
        raise FormatError("rans: nonzero padding bits in the last symbol")
