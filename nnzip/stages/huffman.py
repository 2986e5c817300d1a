"""``huffman``: canonical, length-limited Huffman coding of bytes or byte pairs.

See ``spec/stages/huffman.md`` for the normative byte layout.  In short: a
table of code lengths (at most 15 bits, chosen by package-merge, so the code is
optimal among length-limited codes), then the codes of the symbols and of one
END symbol, packed LSB-first exactly as DEFLATE packs literals.

Why the DEFLATE bit order and the END symbol: with them, the 8-bit variant's
payload *is* the body of a DEFLATE block holding only literals.  The decoder
writes the (in-memory, never stored) DEFLATE block header for the file's code
lengths and lets :mod:`zlib` -- C, in the standard library -- decode it, at well
over 100 MB/s; bitarray's decoders (``canonical_decode`` or ``decode`` with a
decodetree) reach about 30 million symbols per second here, not enough for the
50 MB/s goal on byte symbols.  The 16-bit variant, which DEFLATE cannot
express, is decoded with ``bitarray.util.canonical_decode``: two output bytes
per symbol.  Both decoders accept exactly the same streams; the tests check
they agree.

Symbols: with ``symbol_bits`` 8 every byte is a symbol; with 16 every pair of
bytes ``(b[2i], b[2i+1])`` is the symbol ``b[2i] + 256 * b[2i+1]`` -- an extended
alphabet that halves Huffman's per-symbol rounding loss on skewed data (and
captures pairs of neighbouring bytes).  An odd trailing byte is stored as is.
"""

from __future__ import annotations

import zlib
from typing import Any, Mapping

import numpy as np
from bitarray import bitarray
from bitarray.util import canonical_decode

from ..errors import ConfigError, FormatError
from .base import BytesSpec, BytesStage, config_choice, config_keys
from .entropy import canonical_codes, entropy_bound, kraft_ok, limited_code_lengths, pack_lsb, reverse_bits

#: Longest code, in bits; DEFLATE's limit, and what a nibble can hold.
MAX_CODE_BITS = 15
#: Allowed symbol widths.
SYMBOL_BITS = (8, 16)
#: First byte of a stream: how its code-length table is stored.
TABLE_DENSE, TABLE_SPARSE = 0, 1
#: Longest LEB128 number in a sparse table (values below 2**21).
MAX_VARINT_BYTES = 3


class Huffman(BytesStage):
    """Canonical Huffman coding, codes of at most 15 bits, over bytes or byte pairs.

    Params: ``symbol_bits`` (8 or 16; default: whichever gives fewer bytes, ties to 8).
    Configuration: ``{"symbol_bits": 8 | 16}``.
    """

    id = "huffman"
    lossless = True

    @classmethod
    def encode(cls, data: bytes, spec: BytesSpec, params: Mapping[str, Any]) -> tuple[bytes, dict]:
        """Code *data*; returns ``(stream, {"symbol_bits": w})``."""
        unknown = set(params) - {"symbol_bits"}
        if unknown:
            raise ConfigError(f"huffman: unknown parameters {sorted(unknown)} (known: ['symbol_bits'])")
        width = params.get("symbol_bits")
        if width is not None and (type(width) is not int or width not in SYMBOL_BITS):
            raise ConfigError(f"huffman: 'symbol_bits' must be 8 or 16, got {width!r}")
        plan = _best_plan(bytes(data), (width,) if width else SYMBOL_BITS)
        if plan is None:
            raise ConfigError("huffman: 16-bit symbols need at most 32767 distinct byte pairs; use 8")
        return _write(plan), {"symbol_bits": plan.width}

    @classmethod
    def decode(cls, data: bytes, spec: BytesSpec, config: Mapping[str, Any]) -> bytes:
        """Exactly ``spec.size`` bytes, or FormatError for any stream the spec page rejects."""
        width = config_choice(config, "symbol_bits", SYMBOL_BITS)
        return _decode(bytes(data), spec.size, width)

    @classmethod
    def check_config(cls, config: Mapping[str, Any], spec: BytesSpec) -> None:
        """Only ``symbol_bits``, 8 or 16."""
        config_keys(config, {"symbol_bits"}, cls.id)
        config_choice(config, "symbol_bits", SYMBOL_BITS)

    @classmethod
    def max_expansion(cls, config: Mapping[str, Any]) -> float:
        """Every code is at least 1 bit and stands for ``symbol_bits / 8`` bytes: ``symbol_bits``."""
        return float(config_choice(config, "symbol_bits", SYMBOL_BITS))


def encode_below(data: bytes, limit: int) -> tuple[bytes, dict] | None:
    """Huffman-code *data* with default params if that gives fewer than *limit* bytes, else None.

    Sizes are known before any bit is packed, so a losing attempt costs only
    the counting and the code construction.
    """
    plan = _best_plan(bytes(data), SYMBOL_BITS)
    if plan is None or plan.size >= limit:
        return None
    return _write(plan), {"symbol_bits": plan.width}


# --- encoding -----------------------------------------------------------------------------


class _Plan:
    """One way to code a blob: the symbols, their code lengths and the exact output size."""

    def __init__(self, raw: np.ndarray, width: int, counts: np.ndarray, lengths: np.ndarray):
        self.raw, self.width, self.lengths = raw, width, lengths
        self.symbols = _symbols(raw, width)
        self.tail = raw[-1:].tobytes() if width == 16 and raw.size % 2 else b""
        self.table = _table_bytes(lengths) if raw.size else b""
        payload_bits = int(np.dot(counts, lengths))  # counts include END's 1
        self.size = len(self.table) + len(self.tail) + (payload_bits + 7) // 8


def _symbols(raw: np.ndarray, width: int) -> np.ndarray:
    """The blob's symbols: its bytes, or its byte pairs as little-endian uint16."""
    return raw if width == 8 else raw[: raw.size & ~1].view("<u2")


def _best_plan(data: bytes, widths: tuple[int, ...]) -> _Plan | None:
    """The smallest plan among *widths* (ties to the narrower); None if none is possible."""
    raw = np.frombuffer(data, dtype=np.uint8)
    best: _Plan | None = None
    for width in widths:
        if best is not None and width == 16 and not _pairs_may_win(raw, best.size):
            continue  # the order-0 bound of pairs already loses: skip building a 65537-symbol code
        plan = _plan(raw, width)
        if plan is not None and (best is None or plan.size < best.size):
            best = plan
    return best


def _pairs_may_win(raw: np.ndarray, size_to_beat: int) -> bool:
    """False when even the entropy bound of byte pairs cannot beat *size_to_beat* bytes."""
    if raw.size < 2:
        return False
    counts = np.bincount(raw[: raw.size & ~1].view("<u2"), minlength=65536)
    if np.count_nonzero(counts) >= 1 << MAX_CODE_BITS:
        return False
    return entropy_bound(counts) / 8 + 1 < size_to_beat


def _plan(raw: np.ndarray, width: int) -> _Plan | None:
    """Code lengths and table for one symbol width; None if 15-bit codes cannot cover the pairs."""
    if raw.size == 0:
        return _Plan(raw, width, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    alphabet = (1 << width) + 1  # the END symbol is the last one
    counts = np.bincount(_symbols(raw, width), minlength=alphabet)
    counts[-1] = 1
    used = np.flatnonzero(counts)
    if used.size > 1 << MAX_CODE_BITS:
        return None
    lengths = np.zeros(alphabet, dtype=np.int64)
    lengths[used] = limited_code_lengths(counts[used], MAX_CODE_BITS)
    return _Plan(raw, width, counts, lengths)


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
    """The full stream of a plan: table, trailing byte, then the packed codes and END."""
    if plan.raw.size == 0:
        return b""
    codes = reverse_bits(canonical_codes(plan.lengths), plan.lengths)  # LSB-first: code MSB goes first
    symbols = np.append(plan.symbols.astype(np.int64), plan.lengths.size - 1)  # then END
    payload = pack_lsb(codes[symbols], plan.lengths[symbols])
    return plan.table + plan.tail + payload


# --- decoding -----------------------------------------------------------------------------


def _decode(data: bytes, size: int, width: int) -> bytes:
    """Decode a whole stream for an output of *size* bytes."""
    if size == 0:
        if data:
            raise FormatError(f"huffman: an empty output must be coded as 0 bytes, got {len(data)}")
        return b""
    lengths, offset = _read_table(data, width)
    nsym, odd = divmod(size, width // 8)
    tail = data[offset : offset + odd]
    payload = data[offset + odd :]
    if len(tail) != odd:
        raise FormatError("huffman: stream truncated before the trailing byte")
    used = lengths[:-1][lengths[:-1] > 0]
    min_bits = nsym * (int(used.min()) if used.size else 0) + int(lengths[-1])
    if nsym and not used.size:
        raise FormatError(f"huffman: table codes no symbols but {nsym} are expected")
    if 8 * len(payload) < min_bits:
        raise FormatError(f"huffman: stream truncated: {len(payload)} payload bytes cannot hold {nsym} symbols")
    if width == 8:
        body = _inflate(payload, lengths, nsym)
        symbols = np.frombuffer(body, dtype=np.uint8)
    else:
        symbols = _canonical(payload, lengths, nsym)
        body = symbols.astype("<u2").tobytes()
    _check_padding(payload, lengths, symbols)
    return body + tail


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


def _inflate(payload: bytes, lengths: np.ndarray, nsym: int) -> bytes:
    """Decode *nsym* byte symbols and END with zlib, through a synthesized DEFLATE block header."""
    inflater = zlib.decompressobj(-15)
    try:
        body = inflater.decompress(_deflate_header(lengths) + payload, nsym)
        if len(body) == nsym and not inflater.eof and inflater.decompress(inflater.unconsumed_tail, 1):
            raise FormatError(f"huffman: stream holds more than the declared {nsym} symbols")
    except zlib.error as exc:  # cannot happen for a checked table; kept as a safety net
        raise FormatError(f"huffman: invalid stream ({exc})") from None
    if not inflater.eof:
        raise FormatError("huffman: stream truncated before END")
    if len(body) != nsym:
        raise FormatError(f"huffman: END after {len(body)} symbols, {nsym} declared")
    return body


#: DEFLATE's order of code-length-code lengths (RFC 1951 section 3.2.7).
_CL_ORDER = (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15)
#: Our fixed code-length code: length 0 gets 1 bit (its odd width lets zero-length
#: distance codes pad the header to a byte boundary), 1 gets 4, 2..15 get 5; complete.
_CL_LENGTHS = np.array([1, 4] + [5] * 14 + [0, 0, 0], dtype=np.int64)
_CL_CODES = reverse_bits(canonical_codes(_CL_LENGTHS), _CL_LENGTHS)


def _deflate_header(lengths: np.ndarray) -> bytes:
    """Header of a final dynamic DEFLATE block whose literal code has *lengths* (257 values).

    It ends on a byte boundary (padding with up to 8 unused distance codes), so
    the payload bytes can follow it directly.
    """
    fixed_bits = 3 + 5 + 5 + 4 + 3 * len(_CL_ORDER)
    bits = fixed_bits + int(_CL_LENGTHS[lengths].sum()) + 1
    distances = 1 + (-bits) % 8
    values = [1, 2, 0, distances - 1, len(_CL_ORDER) - 4] + [int(_CL_LENGTHS[s]) for s in _CL_ORDER]
    widths = [1, 2, 5, 5, 4] + [3] * len(_CL_ORDER)
    symbols = np.concatenate([lengths, np.zeros(distances, dtype=np.int64)])
    return pack_lsb(np.concatenate([values, _CL_CODES[symbols]]), np.concatenate([widths, _CL_LENGTHS[symbols]]))


def _canonical(payload: bytes, lengths: np.ndarray, nsym: int) -> np.ndarray:
    """Decode *nsym* symbols and END with ``bitarray.util.canonical_decode``."""
    end = lengths.size - 1
    used = np.flatnonzero(lengths)
    order = used[np.lexsort((used, lengths[used]))]
    count = np.bincount(lengths[used], minlength=MAX_CODE_BITS + 1).tolist()
    bits = bitarray(endian="little")
    bits.frombytes(payload)
    try:
        symbols = np.fromiter(canonical_decode(bits, count, order.tolist()), dtype=np.int64, count=nsym + 1)
    except ValueError:
        raise FormatError("huffman: stream truncated before END") from None
    early = np.flatnonzero(symbols[:-1] == end)
    if early.size:
        raise FormatError(f"huffman: END after {int(early[0])} symbols, {nsym} declared")
    if symbols[-1] != end:
        raise FormatError(f"huffman: stream holds more than the declared {nsym} symbols")
    return symbols[:-1]


def _check_padding(payload: bytes, lengths: np.ndarray, symbols: np.ndarray) -> None:
    """The payload must end right after END's code, padded with fewer than 8 zero bits."""
    counts = np.bincount(symbols, minlength=lengths.size - 1)
    bits = int(np.dot(counts, lengths[: counts.size])) + int(lengths[-1])
    if len(payload) != (bits + 7) // 8:
        raise FormatError(f"huffman: {len(payload) - (bits + 7) // 8} bytes of trailing garbage after END")
    if bits % 8 and payload[-1] >> (bits % 8):
        raise FormatError("huffman: nonzero padding bits after END")
