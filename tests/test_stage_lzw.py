"""The ``lzw`` stage."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .common import check_golden, check_roundtrip
from nnzip.errors import ConfigError, FormatError
from nnzip.stages import BytesSpec, get_stage
from nnzip.stages import lzw
from . import reference as oracle

LZW = get_stage("lzw")


def encode(data: bytes, max_bits: int = 16) -> bytes:
    return LZW.encode(data, BytesSpec(len(data)), {"max_bits": max_bits})[0]


def decode(stream: bytes, size: int, max_bits: int = 16) -> bytes:
    LZW.check_config({"max_bits": max_bits}, BytesSpec(size))
    return LZW.decode(stream, BytesSpec(size), {"max_bits": max_bits})


def reference_decode(stream: bytes, max_bits: int) -> bytes:
    """The spec page's decoding algorithm, one code at a time (slow, for cross-checking)."""
    generation = (1 << max_bits) - 255
    bits, total, position, k = int.from_bytes(stream, "little"), 8 * len(stream), 0, 0
    out, table, prev = bytearray(), {}, b""
    while True:
        i = k % generation
        width = min(max_bits, max(9, (255 + i).bit_length()))
        if position + width > total:
            break
        code = (bits >> position) & ((1 << width) - 1)
        position += width
        if i == 0:
            table = {}
        assert code <= 255 + i
        string = bytes([code]) if code < 256 else table[code] if code < 255 + i else prev + prev[:1]
        if i >= 1:
            table[255 + i] = prev + string[:1]
        out += string
        prev, k = string, k + 1
    assert total - position < 8
    return bytes(out)


# --- round trips ------------------------------------------------------------------------


rng = np.random.default_rng(0)
CASES = {
    "one-byte": b"\x07",
    "run": b"a" * 1000,
    "kwkwk": b"abababababababab",
    "zeros": bytes(200_000),
    "random": rng.integers(0, 256, 20000, dtype=np.uint8).tobytes(),
    "mask": np.packbits(rng.random(400_000) < 0.05).tobytes(),
    "text": b"the quick brown fox jumps over the lazy dog; " * 300,
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("max_bits", [9, 12, 16])
def test_roundtrip(name, max_bits):
    check_roundtrip("lzw", CASES[name], {"max_bits": max_bits})


def test_roundtrip_empty_and_default():
    check_roundtrip("lzw", b"")
    assert encode(b"") == b""
    assert LZW.encode(b"abc", BytesSpec(3), {})[1] == {"max_bits": lzw.DEFAULT_MAX_BITS}


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from([9, 10, 16]))
def test_roundtrip_property(data, max_bits):
    check_roundtrip("lzw", data, {"max_bits": max_bits})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"b", b"ab", b"ba", b"aab"]), max_size=600), st.sampled_from([9, 10]))
def test_vectorised_decoder_matches_the_spec_algorithm(pieces, max_bits):
    data = b"".join(pieces)  # low-entropy text: long strings, KwKwK cases and several resets
    stream = encode(data, max_bits)
    assert reference_decode(stream, max_bits) == data == decode(stream, len(data), max_bits)


# --- invariants ---------------------------------------------------------------------------


def test_widths_grow_and_reset_on_schedule():
    index = lzw._index_in_generation(3 * 257, 9)
    assert index[256] == 256 and index[257] == 0  # G = 2**9 - 255 = 257 codes per generation
    widths = lzw._widths(lzw._index_in_generation(800, 10), 10)
    assert (widths[:257] == 9).all() and (widths[257:769] == 10).all() and widths[769] == 9  # G = 769


def test_many_generations_cross_checked():
    data = rng.integers(0, 4, 30000, dtype=np.uint8).tobytes()
    stream = encode(data, 9)
    assert len(oracle.lzw_read_codes(stream, 9)[0]) > 10 * 257  # more than ten resets
    assert reference_decode(stream, 9) == data == decode(stream, len(data), 9)


def test_max_expansion():
    assert LZW.max_expansion({"max_bits": 12}) == pytest.approx(8 * 3841 / 9)
    assert LZW.max_expansion({"max_bits": 16}) == pytest.approx(8 * 65281 / 9)
    for max_bits in (9, 12, 16):
        data = bytes(300_000)
        assert len(data) <= len(encode(data, max_bits)) * LZW.max_expansion({"max_bits": max_bits})


def test_encoder_rejects_bad_params():
    with pytest.raises(ConfigError, match="max_bits"):
        LZW.encode(b"abc", BytesSpec(3), {"max_bits": 17})
    with pytest.raises(ConfigError, match="unknown"):
        LZW.encode(b"abc", BytesSpec(3), {"reset": True})


def test_encode_below_gives_up_on_incompressible_data():
    data = CASES["random"]
    assert lzw.encode_below(data, len(data)) is None
    stream, config = lzw.encode_below(CASES["zeros"], 200_000)
    assert decode(stream, 200_000, config["max_bits"]) == CASES["zeros"]


# --- golden bytes ---------------------------------------------------------------------------


def test_golden_kwkwk():
    check_golden("lzw", "kwkwk", b"abababa", {"max_bits": 9})
    assert encode(b"abababa", 9) == bytes.fromhex("61c4001408")  # the spec page's example


def test_golden_resets9():
    data = bytes(((i * 2654435761) >> 7) % 61 for i in range(1500))  # deterministic, not too repetitive
    check_golden("lzw", "resets9", data, {"max_bits": 9})
    assert len(oracle.lzw_read_codes(encode(data, 9), 9)[0]) > 2 * 257


# --- MUST-reject rules of spec/stages/lzw.md, in its order ----------------------------------


@pytest.mark.parametrize("config", [{"max_bits": 8}, {"max_bits": 17}, {"max_bits": "16"}, {}, {"max_bits": 12, "reset": 1}])
def test_reject_1_bad_configuration(config):
    with pytest.raises(FormatError):
        LZW.check_config(config, BytesSpec(10))


def test_reject_2_nonempty_stream_for_empty_output():
    with pytest.raises(FormatError, match="empty output"):
        decode(b"\x00", 0)


def test_reject_3_no_complete_code():
    with pytest.raises(FormatError, match="no code"):
        decode(b"\x61", 1)
    with pytest.raises(FormatError, match="no code"):
        decode(b"", 1)


def test_reject_4_trailing_garbage():
    stream = encode(b"abcdefgh", 9)  # 8 literal codes: exactly 72 bits, no padding
    assert len(stream) == 9
    with pytest.raises(FormatError, match="trailing garbage"):
        decode(stream + b"\x00", 8, 9)  # 8 more bits: too few for a code, too many for padding


def test_reject_5_nonzero_padding():
    stream = bytearray(encode(b"abababa", 9))  # 36 bits: 4 padding bits
    stream[-1] |= 0x80
    with pytest.raises(FormatError, match="padding"):
        decode(bytes(stream), 7, 9)


@pytest.mark.parametrize(
    "codes, message",
    [
        ([256], "code 256 at position 0"),  # nothing is defined at the start
        ([97, 257], "code 257 at position 1"),  # only 256 (KwKwK) is possible there
        ([97] * 257 + [256], "code 256 at position 257"),  # the dictionary was reset
    ],
)
def test_reject_6_code_not_defined_yet(codes, message):
    stream = oracle.lzw_pack(codes, 9)
    with pytest.raises(FormatError, match=message):
        decode(stream, len(codes) + 5, 9)


def test_reject_7_output_longer_than_declared():
    data = CASES["text"]
    stream = encode(data)
    with pytest.raises(FormatError, match="exceeds the declared"):
        decode(stream, len(data) - 1)
    with pytest.raises(FormatError, match="exceeds the declared 10 bytes"):
        decode(encode(bytes(10**6)), 10)  # rejected before any output is allocated


def test_reject_8_output_shorter_than_declared():
    data = CASES["text"]
    stream = encode(data)
    with pytest.raises(FormatError, match="truncated"):
        decode(stream, len(data) + 1)
    with pytest.raises(FormatError, match="truncated|padding"):  # a cut inside a code leaves nonzero bits
        decode(stream[: len(stream) // 2], len(data))
