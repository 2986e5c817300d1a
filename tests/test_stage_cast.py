"""The ``cast`` value stage: float16 and bfloat16 storage (``spec/stages/cast.md``)."""

from fractions import Fraction

import numpy as np
import pytest

from .common import check_golden, check_roundtrip, encode_decode
from nnzip.errors import ConfigError, FormatError
from nnzip.stages import ArraySpec, get_stage
from nnzip.stages.cast import from_bfloat16, to_bfloat16

CAST = get_stage("cast")


def _values(dtype: str, n: int = 5_000, seed: int = 0) -> np.ndarray:
    """Weights-like values over several decades, both signs, some exact zeros."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * 10.0 ** rng.integers(-6, 4, n)
    x[::97] = 0.0
    return x.astype(dtype)


def _encode(data, **params):
    data = np.asarray(data)
    return CAST.encode(data, ArraySpec.of(data), params)


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
@pytest.mark.parametrize("target, unit", [("<f2", 2.0**-11), ("bfloat16", 2.0**-8)])
def test_roundtrip_relative_error(dtype, target, unit):
    """In the normal range the error is at most half an ulp: relative 2**-11 (f16), 2**-8 (bf16)."""
    data = _values(dtype).reshape(50, 100)
    data = np.where(np.abs(data) > 1e-4, data, 0).astype(dtype)  # inside float16's normal range
    decoded = check_roundtrip("cast", data, {"dtype": target}, max_rel_error=unit)
    assert (np.abs(decoded.astype(np.float64) - data) <= unit * np.abs(data.astype(np.float64))).all()


@pytest.mark.parametrize("target", ["<f2", "bfloat16"])
@pytest.mark.parametrize("shape", [(0,), (3, 0), (), (1,)])
def test_roundtrip_empty_scalar_single(target, shape):
    data = np.full(shape, 0.5, dtype="<f4")  # 0.5 is exact in both
    check_roundtrip("cast", data, {"dtype": target})


def test_default_is_float16():
    out, config = _encode(np.ones(3, dtype="<f4"))
    assert config == {"dtype": "<f2"} and out.dtype == np.dtype("<f2")


def test_output_types():
    out, _ = _encode(np.ones((2, 3), dtype="<f8"), dtype="bfloat16")
    assert out.dtype == np.dtype("<u2") and out.shape == (2, 3)
    assert CAST.output_spec(ArraySpec.make("<f8", [2, 3]), {"dtype": "bfloat16"}) == ArraySpec.make("<u2", [2, 3])


@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
def test_float16_is_numpy_rounding(dtype):
    data = _values(dtype)
    out, _ = _encode(data, dtype="<f2")
    assert out.tobytes() == data.astype("<f2").tobytes()


def test_values_already_representable_are_exact():
    f16 = np.arange(-2048, 2048, dtype=np.int64).astype("<f2")
    check_roundtrip("cast", f16.astype("<f4"), {"dtype": "<f2"})
    bf16 = np.arange(0, 0x7F80, 37, dtype="<u2")  # finite positive patterns
    values = np.concatenate([from_bfloat16(bf16), -from_bfloat16(bf16)])
    check_roundtrip("cast", values, {"dtype": "bfloat16"})
    check_roundtrip("cast", values.astype("<f8"), {"dtype": "bfloat16"})


# --- bfloat16 rounding against an exact reference ---------------------------------------


def _bf16_reference(x: float) -> int:
    """Exact round-to-nearest-even of *x* to a bfloat16 pattern, with Fractions."""
    exact = Fraction(x)
    sign = 0x8000 if np.signbit(x) else 0
    target = abs(exact)
    best = None
    # The answer lies next to the float32 value's truncation: search a few patterns around it.
    guess = int(np.array([abs(x)], dtype="<f4").view("<u4")[0] >> 16)
    for p in range(max(guess - 2, 0), min(guess + 3, 0x7F80)):
        value = Fraction(float(from_bfloat16(np.array([p], dtype="<u2"))[0]))
        key = (abs(value - target), p & 1)  # nearest, then even
        if best is None or key < best[0]:
            best = (key, p)
    return sign | best[1]


def _near_ties(dtype: str, n: int = 400) -> np.ndarray:
    """Values at, and a hair either side of, midpoints between adjacent bfloat16 values."""
    rng = np.random.default_rng(11)
    low = rng.integers(0x0001, 0x7F7F, n).astype("<u2")
    a, b = from_bfloat16(low).astype(np.float64), from_bfloat16(low + np.uint16(1)).astype(np.float64)
    mid = (a + b) / 2
    tiny = np.abs(mid) * 2.0**-40 if dtype == "<f8" else np.abs(mid) * 2.0**-20
    values = np.concatenate([mid, mid + tiny, mid - tiny, -mid, -(mid + tiny)])
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
def test_bfloat16_rounds_to_nearest_even(dtype):
    data = np.concatenate([_values(dtype, 500), _near_ties(dtype)])
    got = to_bfloat16(data)
    expected = np.array([_bf16_reference(float(v)) for v in data], dtype="<u2")
    assert np.array_equal(got, expected)


def test_float64_bfloat16_has_no_double_rounding():
    """Just above a bfloat16 midpoint: float32 rounding lands on the midpoint, which would then
    round to even (down); direct rounding goes up."""
    low = np.uint16(0x3F80)  # 1.0; the next bfloat16 is 1 + 2**-7
    value = 1.0 + 2.0**-8 + 2.0**-40
    assert np.float32(value) == np.float32(1.0 + 2.0**-8)  # the float32 step alone would tie
    assert to_bfloat16(np.array([value]))[0] == low + 1


def test_bfloat16_subnormals_and_zero_signs():
    data = np.array([0.0, -0.0, 1e-40, -1e-40, 1e-45, 1e-50, np.finfo(np.float32).tiny], dtype="<f8")
    got = to_bfloat16(data)
    expected = np.array([_bf16_reference(float(v)) for v in data], dtype="<u2")
    assert np.array_equal(got, expected)
    assert got[1] == 0x8000  # -0.0 keeps its sign


# --- NaN, infinities and overflow -------------------------------------------------------


@pytest.mark.parametrize("target", ["<f2", "bfloat16"])
@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
def test_nan_and_infinity_pass_through(target, dtype):
    data = np.array([np.nan, -np.nan, np.inf, -np.inf, 1.5], dtype=dtype)
    decoded, _, _ = encode_decode("cast", data, {"dtype": target})
    assert np.isnan(decoded[:2]).all()
    assert decoded[2:].tolist() == [np.inf, -np.inf, 1.5]


def test_nan_with_low_payload_stays_nan_in_bfloat16():
    """A NaN whose payload sits in the dropped low bits must not truncate to infinity."""
    nan = np.array([0x7F800001, 0xFF800001], dtype="<u4").view("<f4")
    assert np.isnan(from_bfloat16(to_bfloat16(nan))).all()


@pytest.mark.parametrize(
    "target, values",
    [
        ("<f2", [65520.0]),  # rounds past 65504 to infinity
        ("<f2", [1.0, -1e5]),
        ("bfloat16", [np.float32(3.4e38)]),  # past the midpoint above bfloat16's max 3.3895e38
        ("bfloat16", [-np.finfo(np.float32).max]),
    ],
)
@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
def test_overflow_is_refused(target, values, dtype):
    with pytest.raises(ConfigError, match="beyond the range"):
        _encode(np.array(values, dtype=dtype), dtype=target)


def test_float64_beyond_float32_refused_for_bfloat16():
    with pytest.raises(ConfigError, match="beyond the range"):
        _encode(np.array([1e300]), dtype="bfloat16")


def test_largest_finite_values_pass():
    out, _ = _encode(np.array([65519.0, -65519.0], dtype="<f4"), dtype="<f2")
    assert out.tolist() == [65504.0, -65504.0]
    largest = float(from_bfloat16(np.array([0x7F7F], dtype="<u2"))[0])
    out, _ = _encode(np.array([largest], dtype="<f4"), dtype="bfloat16")
    assert out.tolist() == [0x7F7F]


# --- encoder refusals ---------------------------------------------------------------------


@pytest.mark.parametrize("params", [{"dtype": "<f4"}, {"dtype": "float16"}, {"dtype": 2}, {"dtype": ["<f2"]}, {"bits": 16}])
def test_encoder_rejects_bad_params(params):
    with pytest.raises(ConfigError):
        _encode(np.ones(2, dtype="<f4"), **params)


@pytest.mark.parametrize("dtype", ["<f2", "<i4", "|u1"])
def test_encoder_rejects_input_types(dtype):
    with pytest.raises(ConfigError, match="float32 or float64"):
        _encode(np.ones(2, dtype=dtype))


# --- decoder MUST-reject list (spec/stages/cast.md, Errors) -------------------------------

SPEC = ArraySpec.make("<f4", [3])


def _reject(config, spec=SPEC, match=None):
    with pytest.raises(FormatError, match=match):
        CAST.check_config(config, spec)


def test_reject_1_unknown_or_missing_fields():
    _reject({"dtype": "<f2", "round": "even"}, match="unknown")
    _reject({}, match="dtype")
    _reject("<f2", match="object")


@pytest.mark.parametrize("dtype", ["<f4", "float16", "bf16", "<u2", 2, None])
def test_reject_2_unknown_target(dtype):
    _reject({"dtype": dtype}, match="dtype")


@pytest.mark.parametrize("out", ["<f2", "<i4", "|b1"])
def test_reject_3_output_not_float32_or_float64(out):
    _reject({"dtype": "<f2"}, spec=ArraySpec.make(out, [3]), match="float32 or float64")


def test_reject_4_stored_array_of_wrong_type_or_shape():
    with pytest.raises(FormatError, match="expected"):
        CAST.decode(np.zeros(3, dtype="<f2"), SPEC, {"dtype": "bfloat16"})
    with pytest.raises(FormatError, match="expected"):
        CAST.decode(np.zeros(3, dtype="<u2"), SPEC, {"dtype": "<f2"})
    with pytest.raises(FormatError, match="expected"):
        CAST.decode(np.zeros(4, dtype="<f2"), SPEC, {"dtype": "<f2"})


# --- golden bytes ---------------------------------------------------------------------------

GOLDEN = np.array([[1.0, -2.5, 0.1, 3.14159265], [65504.0, 1e-5, -0.0, 1.0 + 2.0**-8]], dtype="<f8")


def test_golden_f4_f2():
    check_golden("cast", "f4-f2", GOLDEN.astype("<f4"), {"dtype": "<f2"})


def test_golden_f4_bfloat16():
    check_golden("cast", "f4-bf16", GOLDEN.astype("<f4"), {"dtype": "bfloat16"})


def test_golden_f8_bfloat16():
    data = GOLDEN.copy()
    data[1, 3] = 1.0 + 2.0**-8 + 2.0**-40  # the double-rounding case
    check_golden("cast", "f8-bf16", data, {"dtype": "bfloat16"})
