"""The ``delta`` value stage: wrapped differences, optionally zigzagged (``spec/stages/delta.md``)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from .common import check_golden, check_roundtrip
from nnzip.errors import ConfigError, FormatError
from nnzip.stages import ArraySpec, get_stage
from nnzip.stages.delta import _unzigzag, _zigzag

DELTA = get_stage("delta")
INT_DTYPES = ["|u1", "<u2", "<u4", "<u8", "|i1", "<i2", "<i4", "<i8"]


def _encode(data, **params):
    data = np.asarray(data)
    return DELTA.encode(data, ArraySpec.of(data), params)


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("zigzag", [None, True, False])
def test_roundtrip_full_range(dtype, zigzag):
    """Random values over the whole range (differences wrap around) come back exactly."""
    info = np.iinfo(np.dtype(dtype))
    rng = np.random.default_rng(1)
    data = rng.integers(info.min, info.max, (6, 9), dtype=np.dtype(dtype), endpoint=True)
    data.flat[:4] = [info.min, info.max, info.min, 0]  # largest jumps both ways
    check_roundtrip("delta", data, {} if zigzag is None else {"zigzag": zigzag})


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("shape", [(0,), (2, 0), (), (1,)])
def test_roundtrip_empty_scalar_single(dtype, shape):
    check_roundtrip("delta", np.full(shape, 5, dtype=dtype))
    check_roundtrip("delta", np.full(shape, 5, dtype=dtype), {"zigzag": True})


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(st.sampled_from(INT_DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)),
    st.sampled_from([None, True, False]),
)
def test_roundtrip_property(data, zigzag):
    check_roundtrip("delta", data, {} if zigzag is None else {"zigzag": zigzag})


# --- invariants -------------------------------------------------------------------------


def test_sorted_indices_give_their_gaps():
    """CSR-style sorted column indices: no zigzag, and the output is the first index then the gaps."""
    indices = np.array([3, 7, 8, 8, 20, 140], dtype="|u1")
    out, config = _encode(indices)
    assert config == {"zigzag": False}
    assert out.dtype == np.uint8 and out.tolist() == [3, 4, 1, 0, 12, 120]


def test_huge_gap_may_wrap_smaller_with_zigzag():
    """A gap of 235 in uint8 is -21 modulo 256; zigzag stores it as 41, a smaller maximum."""
    indices = np.array([3, 7, 8, 8, 20, 255], dtype="|u1")
    out, config = _encode(indices)
    assert config == {"zigzag": True} and out.tolist() == [6, 8, 2, 0, 24, 41]
    assert np.array_equal(DELTA.decode(out, ArraySpec.of(indices), config), indices)


def test_signed_with_negative_steps_uses_zigzag():
    data = np.array([0, -1, 1, -2, 2, 2], dtype="<i2")
    out, config = _encode(data)
    assert config == {"zigzag": True}
    # differences 0, -1, 2, -3, 4, 0 zigzag to 0, 1, 4, 5, 8, 0
    assert out.dtype == np.dtype("<u2") and out.tolist() == [0, 1, 4, 5, 8, 0]


def test_auto_choice_is_the_smaller_maximum():
    """Zigzag exactly when it lowers the largest output value (ties: off)."""
    rng = np.random.default_rng(2)
    for _ in range(50):
        data = rng.integers(-50, 50, 20).astype("<i4")
        out, config = _encode(data)
        plain, _ = _encode(data, zigzag=False)
        zigzagged, _ = _encode(data, zigzag=True)
        assert config["zigzag"] == (int(zigzagged.max()) < int(plain.max()))
        assert out.max() == min(plain.max(), zigzagged.max())


@pytest.mark.parametrize("dtype", ["|u1", "<u2", "<u4", "<u8"])
def test_zigzag_mapping(dtype):
    """0, -1, 1, -2, 2, ... (as w-bit two's complement) map to 0, 1, 2, 3, 4, ...; it is a bijection."""
    unsigned = np.dtype(dtype)
    info = np.iinfo(f"i{unsigned.itemsize}")
    signed = np.array([0, -1, 1, -2, 2, info.max, info.min], dtype=info.dtype)
    z = _zigzag(signed.view(unsigned))
    top = np.iinfo(unsigned).max
    assert z.tolist() == [0, 1, 2, 3, 4, top - 1, top]
    assert np.array_equal(_unzigzag(z), signed.view(unsigned))
    if unsigned.itemsize <= 2:  # every value
        every = np.arange(2 ** (8 * unsigned.itemsize), dtype=np.uint64).astype(unsigned)
        assert np.array_equal(np.sort(_zigzag(every)), every)
        assert np.array_equal(_unzigzag(_zigzag(every)), every)


def test_output_spec_is_unsigned_of_same_width():
    for dtype, expected in zip(INT_DTYPES, ["|u1", "<u2", "<u4", "<u8"] * 2):
        assert DELTA.output_spec(ArraySpec.make(dtype, [2, 3]), {"zigzag": False}) == ArraySpec.make(expected, [2, 3])


def test_flattened_c_order():
    data = np.array([[1, 2], [4, 8]], dtype="<u4")
    out, _ = _encode(data)
    assert out.tolist() == [[1, 1], [2, 4]]


# --- encoder refusals ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["<f4", "<f8", "|b1"])
def test_encoder_rejects_non_integers(dtype):
    with pytest.raises(ConfigError, match="integer"):
        _encode(np.zeros(3, dtype=dtype))


@pytest.mark.parametrize("params", [{"zigzag": 1}, {"zigzag": "yes"}, {"order": "C"}])
def test_encoder_rejects_bad_params(params):
    with pytest.raises(ConfigError):
        _encode(np.zeros(3, dtype="<i4"), **params)


# --- decoder MUST-reject list (spec/stages/delta.md, Errors) -------------------------------

SPEC = ArraySpec.make("<i4", [3])


def _reject(config, spec=SPEC, match=None):
    with pytest.raises(FormatError, match=match):
        DELTA.check_config(config, spec)


def test_reject_1_unknown_or_missing_fields():
    _reject({"zigzag": True, "order": "C"}, match="unknown")
    _reject({}, match="zigzag")
    _reject(None, match="object")


@pytest.mark.parametrize("value", [0, 1, "true", None])
def test_reject_2_zigzag_not_boolean(value):
    _reject({"zigzag": value}, match="zigzag")


@pytest.mark.parametrize("dtype", ["<f4", "<f2", "|b1"])
def test_reject_3_output_not_integer(dtype):
    _reject({"zigzag": False}, spec=ArraySpec.make(dtype, [3]), match="integer")


def test_reject_4_stored_array_of_wrong_type_or_shape():
    with pytest.raises(FormatError, match="expected"):
        DELTA.decode(np.zeros(3, dtype="<i4"), SPEC, {"zigzag": False})  # must be unsigned
    with pytest.raises(FormatError, match="expected"):
        DELTA.decode(np.zeros(3, dtype="<u8"), SPEC, {"zigzag": False})  # must be the same width
    with pytest.raises(FormatError, match="expected"):
        DELTA.decode(np.zeros((3, 1), dtype="<u4"), SPEC, {"zigzag": False})


# --- golden bytes ---------------------------------------------------------------------------


def test_golden_sorted_u2():
    check_golden("delta", "u2-sorted", np.array([0, 1, 5, 13, 14, 700, 701, 65535], dtype="<u2"))


def test_golden_i4_zigzag():
    check_golden("delta", "i4-zigzag", np.array([[5, 3, -2], [-2147483648, 2147483647, 0]], dtype="<i4"))


def test_golden_u1_wraps():
    check_golden("delta", "u1-wrap", np.array([250, 3, 255, 0], dtype="|u1"), {"zigzag": False})
