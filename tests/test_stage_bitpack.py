"""The ``bitpack`` serializer: unsigned integers at ``bits`` bits each, MSB first (``spec/stages/bitpack.md``)."""

import numpy as np
import pytest
from bitarray import bitarray
from bitarray.util import int2ba
from hypothesis import given, settings
from hypothesis import strategies as st

from .common import check_golden, check_roundtrip, encode_decode
from nnzip.errors import ConfigError, FormatError
from nnzip.stages import ArraySpec, get_stage
from nnzip.stages import bitpack as bp

BITPACK = get_stage("bitpack")


def _dtype_for(bits: int) -> str:
    return "|u1" if bits <= 8 else "<u2" if bits <= 16 else "<u4" if bits <= 32 else "<u8"


def _random(bits: int, n: int, dtype: str | None = None, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + bits)
    values = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True) >> np.uint64(64 - bits)
    return values.astype(dtype or _dtype_for(bits))


def _reference(values: np.ndarray, bits: int) -> bytes:
    """The spec's layout built element by element with bitarray (big-endian bit order)."""
    stream = bitarray(endian="big")
    for v in np.asarray(values).reshape(-1).tolist():
        stream += int2ba(int(v), length=bits, endian="big")
    return stream.tobytes()  # pads the last byte with zero bits


def _encode(data, **params):
    data = np.asarray(data)
    return BITPACK.encode(data, ArraySpec.of(data), params)


# --- layout --------------------------------------------------------------------------------


def test_layout_example():
    """[1, 2, 3] at 3 bits: 001 010 011 + 7 zero bits = 0x29 0x80 (the spec's example)."""
    out, config = _encode(np.array([1, 2, 3], dtype="|u1"), bits=3)
    assert config == {"bits": 3} and out == bytes([0x29, 0x80])


@pytest.mark.parametrize("bits", range(1, 65))
def test_layout_matches_reference_every_width(bits):
    for n in (1, 7, 8, 9, 33):
        values = _random(bits, n)
        out, _ = _encode(values, bits=bits)
        assert out == _reference(values, bits)


@pytest.mark.parametrize("bits", [3, 9, 13, 57, 63])
def test_layout_across_chunks(bits):
    values = _random(bits, bp.CHUNK + 13)
    out, _ = _encode(values, bits=bits)
    assert out == _reference(values, bits)


def test_wider_input_types_pack_the_low_bits():
    values = np.array([5, 0, 7, 1], dtype="<u8")
    out, _ = _encode(values, bits=3)
    assert out == _reference(values, 3)


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(1, 65))
def test_roundtrip_every_width(bits):
    check_roundtrip("bitpack", _random(bits, 1000).reshape(10, 100), {"bits": bits})


@pytest.mark.parametrize("dtype", ["|u1", "<u2", "<u4", "<u8"])
def test_roundtrip_small_values_in_wide_types(dtype):
    data = _random(5, 300, dtype)
    decoded = check_roundtrip("bitpack", data)
    assert decoded.dtype == np.dtype(dtype)


def test_roundtrip_bool():
    data = np.random.default_rng(0).random((7, 13)) < 0.3
    out, config = _encode(data)
    assert config == {"bits": 1} and out == np.packbits(data).tobytes()
    check_roundtrip("bitpack", data)


@pytest.mark.parametrize("dtype", ["|u1", "<u8", "|b1"])
@pytest.mark.parametrize("shape", [(0,), (0, 4), (), (1,)])
def test_roundtrip_empty_scalar_single(dtype, shape):
    data = np.ones(shape, dtype=dtype)
    check_roundtrip("bitpack", data)
    _, encoded, config = encode_decode("bitpack", data)
    assert len(encoded) == (data.size * config["bits"] + 7) // 8


def test_empty_defaults_to_one_bit():
    out, config = _encode(np.zeros(0, dtype="<u4"))
    assert out == b"" and config == {"bits": 1}


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 64), st.integers(0, 300), st.integers(0, 2**32))
def test_roundtrip_property(bits, n, seed):
    values = _random(bits, n, seed=seed)
    check_roundtrip("bitpack", values, {"bits": bits})


# --- bits default and encoded size -------------------------------------------------------


@pytest.mark.parametrize("largest, bits", [(0, 1), (1, 1), (2, 2), (255, 8), (256, 9), (4095, 12), (2**64 - 1, 64)])
def test_default_bits_is_bit_length_of_max(largest, bits):
    data = np.array([0, largest], dtype="<u8")
    _, config = _encode(data)
    assert config == {"bits": bits}


@pytest.mark.parametrize(
    "size, bits, expected", [(0, 5, 0), (1, 1, 1), (8, 1, 1), (9, 1, 2), (3, 3, 2), (10, 12, 15), (3, 64, 24)]
)
def test_encoded_size(size, bits, expected):
    assert BITPACK.encoded_size(ArraySpec.make("<u8", [size]), {"bits": bits}) == expected


# --- encoder refusals -----------------------------------------------------------------------


def test_encoder_rejects_values_that_do_not_fit():
    with pytest.raises(ConfigError, match="does not fit"):
        _encode(np.array([1, 8], dtype="|u1"), bits=3)


@pytest.mark.parametrize("dtype, bits", [("|u1", 9), ("<u2", 17), ("<u4", 33), ("<u8", 65), ("|b1", 2), ("|u1", 0)])
def test_encoder_rejects_bits_out_of_range(dtype, bits):
    with pytest.raises(ConfigError, match="bits"):
        _encode(np.zeros(3, dtype=dtype), bits=bits)


@pytest.mark.parametrize("params", [{"bits": 3.0}, {"bits": "3"}, {"bits": True}, {"width": 3}])
def test_encoder_rejects_bad_params(params):
    with pytest.raises(ConfigError):
        _encode(np.zeros(3, dtype="|u1"), **params)


@pytest.mark.parametrize("dtype", ["|i1", "<i8", "<f4"])
def test_encoder_rejects_signed_and_float(dtype):
    with pytest.raises(ConfigError, match="unsigned"):
        _encode(np.zeros(3, dtype=dtype))


# --- decoder MUST-reject list (spec/stages/bitpack.md, Errors) -----------------------------

SPEC = ArraySpec.make("|u1", [3])  # 3 elements at 3 bits: 2 bytes, 7 padding bits


def _reject(config, spec=SPEC, match=None):
    with pytest.raises(FormatError, match=match):
        BITPACK.check_config(config, spec)


def test_reject_1_unknown_or_missing_fields():
    _reject({"bits": 3, "order": "msb"}, match="unknown")
    _reject({}, match="bits")
    _reject([3], match="object")


@pytest.mark.parametrize("bits", [0, -1, 65, 3.0, "3", True, None])
def test_reject_2_bits_not_an_integer_in_range(bits):
    _reject({"bits": bits}, spec=ArraySpec.make("<u8", [3]), match="bits")


@pytest.mark.parametrize("dtype, bits", [("|u1", 12), ("<u2", 17), ("<u4", 40), ("|b1", 2)])
def test_reject_3_bits_wider_than_output(dtype, bits):
    _reject({"bits": bits}, spec=ArraySpec.make(dtype, [3]), match="bits")


@pytest.mark.parametrize("dtype", ["|i1", "<i4", "<f4", "<f2"])
def test_reject_4_output_not_unsigned(dtype):
    _reject({"bits": 3}, spec=ArraySpec.make(dtype, [3]), match="unsigned")


@pytest.mark.parametrize("length", [0, 1, 3])
def test_reject_5_wrong_length(length):
    with pytest.raises(FormatError, match="expected 2 bytes"):
        BITPACK.decode(bytes(length), SPEC, {"bits": 3})


@pytest.mark.parametrize("last", [0x01, 0x40, 0x7F])
def test_reject_6_nonzero_padding(last):
    BITPACK.decode(bytes([0x29, 0x80]), SPEC, {"bits": 3})  # the valid stream
    with pytest.raises(FormatError, match="padding"):
        BITPACK.decode(bytes([0x29, 0x80 | last]), SPEC, {"bits": 3})


def test_full_last_byte_has_no_padding_to_check():
    out = BITPACK.decode(bytes([0xFF]), ArraySpec.make("|u1", [4]), {"bits": 2})
    assert out.tolist() == [3, 3, 3, 3]


# --- golden bytes ---------------------------------------------------------------------------


def test_golden_u1_3bits():
    check_golden("bitpack", "u1-3bits", (np.arange(21, dtype="|u1") * 5) % 8)


def test_golden_u2_12bits():
    check_golden("bitpack", "u2-12bits", ((np.arange(11, dtype="<u2") * 977) % 4096).reshape(1, 11))


def test_golden_u8_37bits():
    check_golden("bitpack", "u8-37bits", (np.arange(5, dtype="<u8") * np.uint64(27_487_790_693)) % np.uint64(2**37), {"bits": 37})


def test_golden_bool():
    check_golden("bitpack", "b1", np.array([[True, False, True], [True, True, False], [False, False, True]]))
