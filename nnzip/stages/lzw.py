"""``lzw``: Lempel-Ziv-Welch with variable-width codes and a bounded dictionary.

See ``spec/stages/lzw.md`` for the normative layout.  Codes 0..255 are the
bytes; every further code names the string of an earlier code plus one byte.
Codes start 9 bits wide and grow by one bit each time the largest code that can
occur needs it, up to ``max_bits`` (9..16).  When the dictionary is full it is
reset to the 256 bytes, at a point fixed by the code count alone (no clear code
is stored), so the width of every code is known before decoding starts.

Speed: the encoder is a Python loop over the input with the dictionary as a
``dict`` from ``(prefix code << 8) | byte`` (an int, cheap to hash) to code.
The decoder is vectorised with numpy: it reads all codes at once (their widths
are known), resolves each code's string length and first byte by pointer
jumping over the "defined by" links between codes, checks the total output
length against the declared size *before* writing a byte, and then writes all
strings back to front, one byte of every string per numpy step.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError, FormatError
from .base import BytesSpec, BytesStage, DecodeCost, config_int, config_keys, linear_cost
from .entropy import pack_lsb, read_lsb

#: Width of the first codes.
MIN_BITS = 9
#: Largest allowed ``max_bits``: codes are read as at most 16-bit values.
MAX_BITS = 16
#: ``max_bits`` the encoder uses unless told otherwise.  Widths only differ once a
#: dictionary would be full, so small blobs code the same at any ``max_bits``; on
#: large stationary blobs 16 codes 3-8 % smaller than 12 (see the spec's notes).
DEFAULT_MAX_BITS = 16
#: The decoder copies the unfinished strings one by one once there are at most this many,
#: or at most 4 per numpy step still to go (a slice copy costs a fraction of a step).
_FEW_STRINGS = 32


class LZW(BytesStage):
    """LZW coding with codes of 9 up to ``max_bits`` bits and a dictionary reset when full.

    Params: ``max_bits`` (9..16, default :data:`DEFAULT_MAX_BITS`).
    Configuration: ``{"max_bits": max_bits}``.
    """

    id = "lzw"
    lossless = True

    @classmethod
    def encode(cls, data: bytes, spec: BytesSpec, params: Mapping[str, Any]) -> tuple[bytes, dict]:
        """Code *data*; returns ``(stream, {"max_bits": max_bits})``."""
        unknown = set(params) - {"max_bits"}
        if unknown:
            raise ConfigError(f"lzw: unknown parameters {sorted(unknown)} (known: ['max_bits'])")
        max_bits = params.get("max_bits", DEFAULT_MAX_BITS)
        if type(max_bits) is not int or not MIN_BITS <= max_bits <= MAX_BITS:
            raise ConfigError(f"lzw: 'max_bits' must be an integer in {MIN_BITS}..{MAX_BITS}, got {max_bits!r}")
        codes = _encode_codes(bytes(data), max_bits, None)
        return _pack(codes, max_bits), {"max_bits": max_bits}

    @classmethod
    def decode(cls, data: bytes, spec: BytesSpec, config: Mapping[str, Any]) -> bytes:
        """Exactly ``spec.size`` bytes, or FormatError for any stream the spec page rejects."""
        max_bits = config_int(config, "max_bits", MIN_BITS, MAX_BITS)
        return _decode(bytes(data), spec.size, max_bits)

    @classmethod
    def check_config(cls, config: Mapping[str, Any], spec: BytesSpec) -> None:
        """Only ``max_bits``, an integer in 9..16."""
        config_keys(config, {"max_bits"}, cls.id)
        config_int(config, "max_bits", MIN_BITS, MAX_BITS)

    @classmethod
    def decode_cost(cls, spec: BytesSpec, config: Mapping[str, Any], coded: int = 0) -> DecodeCost:
        """Bounds for this decoder, measured with ``tracemalloc`` (``spec/stages/lzw.md``, "Decode cost").

        About ten int64 arrays per code (``8 coded / 9`` codes at most), the output array and
        its bytes copy; pointer jumping makes up to 17 passes over the codes, and the string
        writer one pass over the output.
        """
        codes = 8 * coded // MIN_BITS + 1
        work = 80 * codes + spec.size + (1 << 20)
        return DecodeCost(work, linear_cost(codes, passes=24).ops + linear_cost(spec.size, passes=2).ops)

    @classmethod
    def max_expansion(cls, config: Mapping[str, Any]) -> float:
        """A code is at least 9 bits and its string at most ``2**max_bits - 255`` bytes long."""
        max_bits = config_int(config, "max_bits", MIN_BITS, MAX_BITS)
        return 8 * _generation(max_bits) / MIN_BITS


def encode_below(data: bytes, limit: int) -> tuple[bytes, dict] | None:
    """LZW-code *data* with default params if that gives fewer than *limit* bytes, else None.

    The encoder stops as soon as the codes emitted so far already fill *limit* bytes.
    """
    codes = _encode_codes(bytes(data), DEFAULT_MAX_BITS, limit)
    if codes is None:
        return None
    stream = _pack(codes, DEFAULT_MAX_BITS)
    return (stream, {"max_bits": DEFAULT_MAX_BITS}) if len(stream) < limit else None


# --- the code-width schedule -------------------------------------------------------------


def _generation(max_bits: int) -> int:
    """Codes per dictionary generation: after ``2**max_bits - 255`` codes the dictionary resets."""
    return (1 << max_bits) - 255


def _index_in_generation(count: int, max_bits: int) -> np.ndarray:
    """For codes ``0..count-1``: each one's index ``i`` within its generation."""
    return np.arange(count, dtype=np.int64) % _generation(max_bits)


def _widths(index: np.ndarray, max_bits: int) -> np.ndarray:
    """Width of the code with generation index *i*: bit length of ``255 + i``, clamped to 9..max_bits.

    ``255 + i`` is the largest code that can occur there (the one code ``i``
    itself may be defining, the "KwKwK" case).
    """
    largest = 255 + index
    widths = np.full(index.shape, MIN_BITS, dtype=np.int64)
    for bits in range(MIN_BITS + 1, max_bits + 1):
        widths += largest >= 1 << (bits - 1)
    return widths


# --- encoding -----------------------------------------------------------------------------


def _encode_codes(data: bytes, max_bits: int, limit: int | None) -> list[int] | None:
    """The LZW codes of *data*; None once they need *limit* bytes or more (if a limit is given)."""
    if not data:
        return []
    max_codes = len(data) + 1 if limit is None else _codes_within(8 * (limit - 1), max_bits)
    full = 1 << max_bits
    table: dict[int, int] = {}
    get = table.get
    free = 256
    codes: list[int] = []
    emit = codes.append
    code = data[0]
    for byte in memoryview(data)[1:]:
        key = (code << 8) | byte
        found = get(key)
        if found is not None:
            code = found
            continue
        emit(code)
        if free < full:
            table[key] = free
            free += 1
            if not free & 0xFFF and len(codes) > max_codes:  # checked every 4096 codes: cheap
                return None
        else:  # that was the generation's last code: start afresh
            table.clear()
            free = 256
            if len(codes) > max_codes:
                return None
        code = byte
    emit(code)
    return codes if len(codes) <= max_codes else None


def _codes_within(bits: int, max_bits: int) -> int:
    """How many codes fit in *bits* bits (at least 9 bits each, so at most ``bits // 9``)."""
    ends = np.cumsum(_widths(_index_in_generation(bits // MIN_BITS + 1, max_bits), max_bits))
    return int(np.searchsorted(ends, bits, side="right"))


def _pack(codes: list[int], max_bits: int) -> bytes:
    """The codes, each in its scheduled width, LSB-first, zero-padded to a byte."""
    values = np.asarray(codes, dtype=np.int64)
    return pack_lsb(values, _widths(_index_in_generation(values.size, max_bits), max_bits))


# --- decoding -----------------------------------------------------------------------------


def _decode(data: bytes, size: int, max_bits: int) -> bytes:
    """Decode a whole stream into exactly *size* bytes."""
    if size == 0:
        if data:
            raise FormatError(f"lzw: an empty output must be coded as 0 bytes, got {len(data)}")
        return b""
    codes, index = _read_codes(data, max_bits)
    steps = np.arange(codes.size, dtype=np.int64)
    largest = np.minimum(255 + index, (1 << max_bits) - 1)
    bad = np.flatnonzero(codes > largest)
    if bad.size:
        k = int(bad[0])
        raise FormatError(f"lzw: code {int(codes[k])} at position {k} is not defined yet (largest possible {int(largest[k])})")
    literal = codes < 256
    # Code c >= 256 was defined while reading code j = (generation start) + c - 255:
    # its string is the string of code j-1 plus the first byte of code j's string.
    parent = np.where(literal, steps, steps - index + codes - 256)
    lengths, first = _resolve(parent, literal, codes)
    _check_size(lengths, size)
    last = np.where(literal, codes, first[np.minimum(parent + 1, codes.size - 1)])
    return _write(lengths, parent, last, size)


def _read_codes(data: bytes, max_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """All codes of the stream and their generation indices; checks the padding."""
    bits = 8 * len(data)
    count = _codes_within(bits, max_bits)
    index = _index_in_generation(count, max_bits)
    widths = _widths(index, max_bits)
    ends = np.cumsum(widths)
    used = int(ends[-1]) if count else 0
    if count == 0:
        raise FormatError("lzw: stream truncated: it holds no code")
    if bits - used >= 8:
        raise FormatError(f"lzw: {(bits - used) // 8} bytes of trailing garbage after the last code")
    if bits > used and data[-1] >> (8 - (bits - used)):
        raise FormatError("lzw: nonzero padding bits after the last code")
    return read_lsb(data, ends - widths, widths), index


def _resolve(parent: np.ndarray, literal: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each code's string length and first byte, by pointer jumping to its literal root.

    ``parent[k] < k`` for every non-literal code, so the links form a forest
    whose roots are the literal codes; ``log2(depth)`` numpy rounds suffice.
    """
    ancestor = parent.copy()
    depth = (~literal).astype(np.int64)
    while not literal[ancestor].all():
        depth = depth + depth[ancestor]
        ancestor = ancestor[ancestor]
    return depth + 1, codes[ancestor]


def _check_size(lengths: np.ndarray, size: int) -> None:
    """Reject a stream whose strings do not add up to exactly *size* bytes (before writing any)."""
    ends = np.cumsum(lengths)
    if ends[-1] > size:
        k = int(np.searchsorted(ends, size, side="right"))
        raise FormatError(f"lzw: output exceeds the declared {size} bytes at code {k}")
    if ends[-1] < size:
        raise FormatError(f"lzw: stream truncated: it decodes to {int(ends[-1])} of the declared {size} bytes")


def _write(lengths: np.ndarray, parent: np.ndarray, last: np.ndarray, size: int) -> bytes:
    """Write every code's string, last byte first, one byte of all unfinished strings per step.

    A string is its parent's string plus its own last byte, so stepping to the
    parent moves one byte to the left.  Once few strings remain unfinished (a
    numpy step costs more than a few slice copies), each is finished by copying
    the string of its current ancestor, which is earlier and already complete.
    """
    out = np.empty(size, dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    longest = int(lengths.max())
    # Longest strings first; a stable radix sort on a 16-bit key (lengths <= 65281).
    order = np.argsort((longest - lengths).astype(np.uint16), kind="stable").astype(np.int64)
    sorted_lengths = lengths[order]
    current = order.copy()
    position = starts[order] + sorted_lengths - 1
    done = 0
    while done < longest:
        active = int(np.searchsorted(-sorted_lengths, -done, side="left"))  # strings longer than `done`
        if done and active <= max(_FEW_STRINGS, 4 * (longest - done)):
            for k, ancestor in sorted(zip(order[:active].tolist(), current[:active].tolist())):
                n = int(lengths[k]) - done
                out[starts[k] : starts[k] + n] = out[starts[ancestor] : starts[ancestor] + n]
            break
        head = current[:active]
        out[position[:active]] = last[head]
        current[:active] = parent[head]
        position[:active] -= 1
        done += 1
    return out.tobytes()
