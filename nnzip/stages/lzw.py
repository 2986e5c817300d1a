"""``lzw``: Lempel-Ziv-Welch with variable-width codes and a bounded dictionary.

See ``spec/stages/lzw.md`` for the normative layout.  Codes 0..255 are the
bytes; every further code names the string of an earlier code plus one byte.
Codes start 9 bits wide and grow by one bit each time the largest code that can
occur needs it, up to ``max_bits`` (9..16).  When the dictionary is full it is
reset to the 256 bytes, at a point fixed by the code count alone (no clear code
is stored), so the width of every code is known before decoding starts.

Speed: both directions are compiled loops (:mod:`._lzw_kernels`, numba).  The
encoder keeps the dictionary in a hash table keyed by ``(prefix code << 8) |
byte``; the decoder first checks every code and adds up the output length
(rejecting a wrong size before writing a byte), then copies each string from
where it already stands in the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import FormatError
from .base import BytesSpec, BytesStage, DecodeCost, check_params, config_int, config_keys, linear_cost, param_int

#: Width of the first codes.
MIN_BITS = 9
#: Largest allowed ``max_bits``: codes are read as at most 16-bit values.
MAX_BITS = 16
#: ``max_bits`` the encoder uses unless told otherwise.  Widths only differ once a
#: dictionary would be full, so small blobs code the same at any ``max_bits``; on
#: large stationary blobs 16 codes 3-8 % smaller than 12 (see the spec's notes).
DEFAULT_MAX_BITS = 16


@dataclass(frozen=True)
class LZW(BytesStage):
    """LZW coding with codes of 9 up to ``max_bits`` bits and a dictionary reset when full.

    Params: ``max_bits`` (9..16, default :data:`DEFAULT_MAX_BITS`).
    Configuration: ``{"max_bits": max_bits}``.
    """

    id = "lzw"
    #: Widest code, 9..16.
    max_bits: int = DEFAULT_MAX_BITS

    @classmethod
    def from_config(cls, config: Any, spec: BytesSpec | None) -> "LZW":
        """Only ``max_bits``, an integer in 9..16."""
        config_keys(config, {"max_bits"}, cls.id)
        return cls(config_int(config, "max_bits", MIN_BITS, MAX_BITS))

    @classmethod
    def encode(cls, data: bytes, spec: BytesSpec, params: Mapping[str, Any]) -> tuple[bytes, dict]:
        """Code *data*; returns ``(stream, {"max_bits": max_bits})``."""
        check_params(cls.id, params, {"max_bits"})
        max_bits = param_int(cls.id, params, "max_bits", MIN_BITS, MAX_BITS, DEFAULT_MAX_BITS)
        return _encode(bytes(data), max_bits, None), cls(max_bits).to_config()

    def decode(self, data: bytes, spec: BytesSpec) -> bytes:
        """Exactly ``spec.size`` bytes, or FormatError for any stream the spec page rejects."""
        return _decode(bytes(data), spec.size, self.max_bits)

    def decode_cost(self, spec: BytesSpec, coded: int = 0) -> DecodeCost:
        """Bounds for the compiled decoder (``spec/stages/lzw.md``, "Decode cost").

        The blob's bytes copy, the output's ``bytes`` copy and three tables of ``2**max_bits``
        int64 entries (string lengths, starts): under 2 MiB.  One checking pass and one
        writing pass over the codes, each string copied once into the output.
        """
        codes = 8 * coded // MIN_BITS + 1
        work = coded + spec.size + (2 << 20)
        return DecodeCost(work, linear_cost(codes, passes=24).ops + linear_cost(spec.size, passes=2).ops)

    def max_expansion(self) -> float:
        """A code is at least 9 bits and its string at most ``2**max_bits - 255`` bytes long."""
        return 8 * _generation(self.max_bits) / MIN_BITS


def encode_below(data: bytes, limit: int) -> tuple[bytes, dict] | None:
    """LZW-code *data* with default params if that gives fewer than *limit* bytes, else None.

    The encoder stops as soon as the codes emitted so far already fill *limit* bytes.
    """
    stream = _encode(bytes(data), DEFAULT_MAX_BITS, limit)
    return None if stream is None else (stream, LZW().to_config())


def lzw_size(data: bytes) -> int:
    """Length of the default-parameter LZW stream of *data* (for estimates)."""
    return len(_encode(bytes(data), DEFAULT_MAX_BITS, None))


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


def _encode(data: bytes, max_bits: int, limit: int | None) -> bytes | None:
    """The stream of *data*; None if it would need *limit* bytes or more (when a limit is given)."""
    if not data:
        return b"" if limit is None or limit > 0 else None
    from . import _lzw_kernels

    # At most one code per input byte, each at most 16 bits; or the limit, plus room for one more code.
    limit_bits = 16 * len(data) if limit is None else 8 * (limit - 1)
    out = np.empty(min(2 * len(data), limit_bits // 8 + 1) + 8, dtype=np.uint8)
    size = _lzw_kernels.encode(np.frombuffer(data, dtype=np.uint8), max_bits, limit_bits, out)
    return None if size < 0 else out[:size].tobytes()


def _codes_within(bits: int, max_bits: int) -> int:
    """How many codes fit in *bits* bits: the largest ``K`` with ``sum(W(k mod G) for k < K) <= bits``.

    Whole generations first (each costs the same bits), then the width segments
    of the last one: ``W(i) = w`` for ``i`` in ``[2**(w-1) - 255, 2**w - 255)``.
    """
    generation = _generation(max_bits)
    segments = [(w, min(generation, (1 << w) - 255) - _first_index(w)) for w in range(MIN_BITS, max_bits + 1)]
    whole, rest = divmod(bits, sum(w * n for w, n in segments))
    count = whole * generation
    for width, n in segments:
        take = min(n, rest // width)
        count, rest = count + take, rest - take * width
        if take < n:
            break
    return count


def _first_index(width: int) -> int:
    """The first generation index whose code is *width* bits wide."""
    return 0 if width == MIN_BITS else (1 << (width - 1)) - 255


def _bits_of(count: int, max_bits: int) -> int:
    """Total width of the first *count* codes (the inverse of :func:`_codes_within`)."""
    generation = _generation(max_bits)
    whole, part = divmod(count, generation)
    return whole * _bits_within(generation, max_bits) + _bits_within(part, max_bits)


def _bits_within(part: int, max_bits: int) -> int:
    """Total width of the codes of generation indices ``0 .. part - 1`` (``part <= G``)."""
    return sum(width * max(0, min(part, (1 << width) - 255) - _first_index(width)) for width in range(MIN_BITS, max_bits + 1))


# --- decoding -----------------------------------------------------------------------------


def _decode(data: bytes, size: int, max_bits: int) -> bytes:
    """Decode a whole stream into exactly *size* bytes."""
    if size == 0:
        if data:
            raise FormatError(f"lzw: an empty output must be coded as 0 bytes, got {len(data)}")
        return b""
    count = _check_stream(data, max_bits)
    from . import _lzw_kernels

    buffer = np.frombuffer(data, dtype=np.uint8)
    status, k, value = _lzw_kernels.measure(buffer, max_bits, count, size)
    if status == _lzw_kernels.UNDEFINED:
        largest = 255 + k % _generation(max_bits)
        raise FormatError(f"lzw: code {value} at position {k} is not defined yet (largest possible {largest})")
    if value > size:
        raise FormatError(f"lzw: output exceeds the declared {size} bytes at code {k}")
    if value < size:
        raise FormatError(f"lzw: stream truncated: it decodes to {value} of the declared {size} bytes")
    out = np.empty(size, dtype=np.uint8)
    _lzw_kernels.decode(buffer, max_bits, count, out)
    return out.tobytes()


def _check_stream(data: bytes, max_bits: int) -> int:
    """The number of codes in the stream; rejects no code, trailing garbage and nonzero padding."""
    bits = 8 * len(data)
    count = _codes_within(bits, max_bits)
    if count == 0:
        raise FormatError("lzw: stream truncated: it holds no code")
    used = _bits_of(count, max_bits)
    if bits - used >= 8:
        raise FormatError(f"lzw: {(bits - used) // 8} bytes of trailing garbage after the last code")
    if bits > used and data[-1] >> (8 - (bits - used)):
        raise FormatError("lzw: nonzero padding bits after the last code")
    return count


