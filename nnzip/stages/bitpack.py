"""``bitpack``: unsigned integers packed into ``bits`` bits each, MSB first.

Element i occupies stream bits ``i*bits .. (i+1)*bits - 1``, most significant bit
first; stream bit j is bit ``7 - j % 8`` of byte ``j // 8`` (MSB first), and the
last byte is zero-padded.  See ``spec/stages/bitpack.md``.

Packing works on chunks of elements with numpy, never element by element:
widths of 8, 16, 32 and 64 bits are big-endian bytes, 1 bit is ``np.packbits``,
and any other width packs groups of ``8 / gcd(bits, 8)`` elements -- a whole
number of bytes -- into unsigned words with one vectorised shift-and-or per
position in the group (measured several times faster than ``np.unpackbits`` /
``np.packbits`` bit planes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError, FormatError
from .base import ArraySpec, DecodeCost, SerializeStage, check_params, config_int, config_keys, linear_cost, param_int

#: Input element types the stage accepts.
UINT_DTYPES = ("|b1", "|u1", "<u2", "<u4", "<u8")
#: Elements per chunk: a multiple of 8, so every chunk ends on a byte boundary
#: whatever the width, and the bit-per-byte temporaries stay a few MB.
CHUNK = 1 << 16


@dataclass(frozen=True)
class BitPack(SerializeStage):
    """Pack unsigned integers (or booleans) into ``bits`` bits each.

    Param ``bits`` (optional): 1..64; default the bit length of the largest value (at least 1).
    """

    id = "bitpack"
    #: Bits per element: 1..8 x the input's item size (exactly 1 for booleans).
    bits: int

    @classmethod
    def from_config(cls, config: Any, spec: ArraySpec) -> "BitPack":
        """Require ``{"bits": 1..8*itemsize}`` (exactly 1 for booleans) and an unsigned input spec."""
        config_keys(config, {"bits"}, cls.id)
        if spec.dtype.str not in UINT_DTYPES:
            raise FormatError(f"bitpack: output type must be unsigned or boolean, not {spec.dtype}")
        return cls(config_int(config, "bits", 1, 1 if spec.dtype == np.bool_ else 8 * spec.dtype.itemsize))

    @classmethod
    def encode(cls, data: np.ndarray, spec: ArraySpec, params: Mapping[str, Any]) -> tuple[bytes | memoryview, dict]:
        """The packed bytes (a memoryview over :data:`VIEW_BYTES`) and ``{"bits": bits}``; ConfigError if a value needs more bits."""
        check_params(cls.id, params, {"bits"})
        if spec.dtype.str not in UINT_DTYPES:
            raise ConfigError(f"bitpack: input must be unsigned integers or booleans, got {spec.dtype}")
        flat = np.ascontiguousarray(data, dtype=spec.dtype).reshape(-1)
        if flat.dtype == np.bool_:
            flat = flat.view(np.uint8)
        largest = int(flat.max()) if flat.size else 0
        limit = 1 if spec.dtype == np.bool_ else 8 * spec.dtype.itemsize
        bits = param_int(cls.id, params, "bits", 1, limit, max(1, largest.bit_length()), expected=f"an integer in 1..{limit} for {spec.dtype}")
        if largest.bit_length() > bits:
            raise ConfigError(f"bitpack: value {largest} does not fit in {bits} bits")
        return pack(flat, bits), cls(bits).to_config()

    def decode(self, data: bytes, spec: ArraySpec) -> np.ndarray:
        """The array of *spec* from exactly ``ceil(size * bits / 8)`` bytes with zero padding."""
        bits = self.bits
        size = self.encoded_size(spec)
        if len(data) != size:
            raise FormatError(f"bitpack: expected {size} bytes, got {len(data)}")
        stream = np.frombuffer(data, dtype=np.uint8)
        pad = 8 * size - spec.size * bits
        if pad and int(stream[-1]) & ((1 << pad) - 1):
            raise FormatError("bitpack: padding bits after the last element are not zero")
        values = unpack(stream, spec.size, bits)
        if spec.dtype == np.bool_:
            return values.astype(np.bool_).reshape(spec.shape)
        return values.astype(spec.dtype, copy=False).reshape(spec.shape)  # 16/32/64 bits: the unpacked array itself

    def decode_cost(self, spec: ArraySpec, coded: int = 0) -> DecodeCost:
        """The unpacked values in their container type, and one chunk's temporaries."""
        container = _container(self.bits).itemsize
        return linear_cost(spec.size, passes=4, work=spec.size * container + 48 * CHUNK)

    def encoded_size(self, spec: ArraySpec) -> int:
        """``ceil(size * bits / 8)``."""
        return (spec.size * self.bits + 7) // 8


def _container(bits: int) -> np.dtype:
    """The narrowest big-endian unsigned type holding *bits* bits."""
    return np.dtype(">u" + str(next(n for n in (1, 2, 4, 8) if 8 * n >= bits)))


def _group(bits: int) -> tuple[int, int, int, np.dtype]:
    """``(elements, bytes, words, word_type)`` of the smallest byte-aligned group of *bits*-bit elements.

    A group of ``8 / gcd(bits, 8)`` elements fills whole bytes.  It is built MSB
    first in one unsigned word as narrow as it allows (fewer bytes to move), or
    in several 64-bit words when it is wider than 64 bits.
    """
    elements = 8 // math.gcd(bits, 8)
    nbytes = elements * bits // 8
    if nbytes <= 8:
        return elements, nbytes, 1, np.dtype(f"u{_container(8 * nbytes).itemsize}")
    return elements, nbytes, -(-nbytes // 8), np.dtype("u8")


def _placements(bits: int):
    """For each element j of a group: ``(j, pieces)``, a piece ``(word, shift)`` saying that
    the element's value shifted left by *shift* (right by ``-shift`` if negative) goes into
    that word; an element straddling two 64-bit words has two pieces."""
    elements, _, _, word_type = _group(bits)
    width = 8 * word_type.itemsize
    for j in range(elements):
        word, offset = divmod(j * bits, width)
        end = offset + bits  # the element fills bits offset..end of the word, counting from its MSB
        if end <= width:
            yield j, ((word, width - end),)
        else:
            yield j, ((word, width - end), (word + 1, 2 * width - end))


#: Packed streams over this many bytes are returned as a memoryview of the one buffer they are
#: packed into (a ``bytes`` copy, or joining per-chunk pieces, would hold the stream twice);
#: smaller ones as ``bytes``.
VIEW_BYTES = 1 << 20


def pack(values: np.ndarray, bits: int) -> bytes | memoryview:
    """Pack the 1-D unsigned array *values* (each < 2**bits) MSB-first, zero-padding the last byte.

    Each chunk is packed straight into its slice of one output buffer (chunks start on byte
    boundaries): no list of pieces and no join, so the stream is held once.
    """
    total = (values.size * bits + 7) // 8
    if total <= VIEW_BYTES:
        return b"".join(_pack_chunk(values[i:i + CHUNK], bits) for i in range(0, values.size, CHUNK))
    out = np.empty(total, dtype=np.uint8)
    per_chunk = CHUNK * bits // 8  # CHUNK is a multiple of 8
    for index, start in enumerate(range(0, values.size, CHUNK)):
        piece = _pack_chunk(values[start:start + CHUNK], bits)
        offset = index * per_chunk
        out[offset:offset + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
    return memoryview(out)


def unpack(stream: np.ndarray, count: int, bits: int) -> np.ndarray:
    """The *count* values of *bits* bits packed in the uint8 array *stream* (length already checked)."""
    per_chunk = CHUNK * bits // 8  # CHUNK is a multiple of 8: chunks start on byte boundaries
    out = np.empty(count, dtype=_container(bits).newbyteorder("="))
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        offset = start // CHUNK * per_chunk
        out[start:start + n] = _unpack_chunk(stream[offset:offset + (n * bits + 7) // 8], n, bits)
    return out


def _pack_chunk(values: np.ndarray, bits: int) -> bytes:
    """:func:`pack` for one chunk."""
    container = _container(bits)
    if bits == 8 * container.itemsize:
        return values.astype(container).tobytes()  # whole bytes: big-endian slices
    if bits == 1:
        return np.packbits(values.astype(np.uint8)).tobytes()
    elements, nbytes, nwords, word_type = _group(bits)
    groups = -(-values.size // elements)
    padded = np.zeros(groups * elements, dtype=word_type)
    padded[:values.size] = values
    padded = padded.reshape(groups, elements)
    words = np.zeros((groups, nwords), dtype=word_type)
    # One vector operation per element position and word it touches (at most 2 x 8).
    for j, pieces in _placements(bits):
        for word, shift in pieces:
            words[:, word] |= padded[:, j] << word_type.type(shift) if shift >= 0 else padded[:, j] >> word_type.type(-shift)
    size = word_type.itemsize
    packed = words.astype(word_type.newbyteorder(">")).view(np.uint8).reshape(groups, size * nwords)[:, :nbytes]
    # The last group may be partial: drop its whole bytes past the last element.
    return packed.tobytes()[:(values.size * bits + 7) // 8]


def _unpack_chunk(chunk: np.ndarray, count: int, bits: int) -> np.ndarray:
    """:func:`unpack` for one chunk of *count* values (native-endian result)."""
    container = _container(bits)
    if bits == 8 * container.itemsize:
        return chunk.view(container)[:count]
    if bits == 1:
        return np.unpackbits(chunk, count=count)
    elements, nbytes, nwords, word_type = _group(bits)
    size = word_type.itemsize
    groups = -(-count // elements)
    flat = np.zeros(groups * nbytes, dtype=np.uint8)
    flat[:chunk.size] = chunk
    raw = np.zeros((groups, size * nwords), dtype=np.uint8)
    raw[:, :nbytes] = flat.reshape(groups, nbytes)
    words = raw.view(word_type.newbyteorder(">")).astype(word_type)
    mask = word_type.type((1 << bits) - 1)
    out = np.empty((groups, elements), dtype=word_type)
    for j, pieces in _placements(bits):
        (word, shift), *rest = pieces
        if not rest:
            np.bitwise_and(words[:, word] >> word_type.type(shift), mask, out=out[:, j])
        else:
            (word2, shift2), = rest
            out[:, j] = ((words[:, word] << word_type.type(-shift)) | (words[:, word2] >> word_type.type(shift2))) & mask
    return out.reshape(-1)[:count]
