"""The ``fft`` transform: a fraction of the coefficients of a real orthonormal DCT or rfft."""

import json

import numpy as np
import pytest

from .common import check_golden, check_roundtrip, encode_decode
from nnzip.errors import ConfigError, FormatError
from nnzip.stages import ArraySpec, get_stage
from nnzip.stages.fft import forward, inverse, low_order, rfft_layout
from nnzip.stages.matrix import matrix_shape

FFT = get_stage("fft")
COMBOS = [(t, s) for t in ("dct", "rfft") for s in ("low", "largest")]
SHAPES = [(1, 1), (1, 2), (2, 1), (2, 2), (3, 3), (4, 5), (5, 4), (6, 6), (7, 9), (1, 7), (8, 1)]


def smooth(shape, seed=0, dtype="<f8"):
    """A tensor with most energy at low frequencies plus a little noise."""
    m, n = matrix_shape(shape)
    i, j = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
    noise = np.random.default_rng(seed).standard_normal((m, n))
    return (np.cos(0.3 * i) * np.sin(0.2 * j + 1) + 0.05 * noise).reshape(shape).astype(dtype)


def matrix_of(data):
    return np.asarray(data, dtype=np.float64).reshape(matrix_shape(np.shape(data)))


# --- the transforms ------------------------------------------------------------------------


@pytest.mark.parametrize("transform", ["dct", "rfft"])
@pytest.mark.parametrize("shape", SHAPES)
def test_transforms_are_orthonormal_and_invertible(transform, shape):
    matrix = np.random.default_rng(1).standard_normal(shape)
    coefficients = forward(matrix, transform)
    assert coefficients.shape == (matrix.size,)
    assert np.linalg.norm(coefficients) == pytest.approx(np.linalg.norm(matrix))
    assert np.allclose(inverse(coefficients, *shape, transform), matrix)
    # Each canonical coefficient is the coordinate of one unit basis matrix: columns of an orthogonal map.
    basis = np.stack([inverse(np.eye(matrix.size)[i], *shape, transform).reshape(-1) for i in range(matrix.size)])
    assert np.allclose(basis @ basis.T, np.eye(matrix.size))


@pytest.mark.parametrize("shape", SHAPES)
def test_rfft_layout_counts_exactly_m_times_n(shape):
    independent, weight = rfft_layout(*shape)
    assert int(independent.sum()) == shape[0] * shape[1]
    assert set(np.unique(weight[independent]).round(6)) <= {1.0, round(np.sqrt(2), 6)}


def test_rfft_layout_of_a_4x4():
    independent, weight = rfft_layout(4, 4)  # half spectrum 4x3; columns 0 and 2 mirror themselves
    # Column 0 (and 2): rows 0 and 2 real only, row 1 both parts, row 3 is row 1's mirror.
    for l in (0, 2):
        assert independent[:, l, 0].tolist() == [True, True, True, False]
        assert independent[:, l, 1].tolist() == [False, True, False, False]
        assert weight[[0, 2], l, 0].tolist() == [1.0, 1.0]
    assert independent[:, 1, :].all() and np.allclose(weight[:, 1, :], np.sqrt(2))


def test_low_order_dct_2x3():
    # key = k * n + l * m: (0,0)=0 (0,1)=2 (1,0)=3 (0,2)=4 (1,1)=5 (1,2)=7
    assert low_order(2, 3, "dct").tolist() == [0, 1, 3, 2, 4, 5]


def test_low_order_rfft_4x4():
    independent, _ = rfft_layout(4, 4)
    k, l, part = np.nonzero(independent)
    order = low_order(4, 4, "rfft")
    keys = np.minimum(k, 4 - k) * 4 + l * 4
    assert np.all(np.diff(keys[order]) >= 0)
    assert (k[order[0]], l[order[0]], part[order[0]]) == (0, 0, 0)  # the DC term first


# --- round trips and invariants ---------------------------------------------------------------


@pytest.mark.parametrize("transform, select", COMBOS)
@pytest.mark.parametrize("dtype, tolerance", [("<f8", 1e-12), ("<f4", 1e-6), ("<f2", 2e-3)])
def test_keep_all_reconstructs(transform, select, dtype, tolerance):
    data = smooth((12, 10), dtype=dtype)
    decoded = check_roundtrip("fft", data, {"transform": transform, "select": select, "keep": 1.0}, max_rel_error=tolerance)
    assert decoded.dtype == data.dtype and np.isrealobj(decoded)


@pytest.mark.parametrize("transform, select", COMBOS)
@pytest.mark.parametrize("keep", [0.0, 0.1, 0.3, 0.5])
def test_error_equals_norm_of_dropped_coefficients(transform, select, keep):
    data = smooth((16, 12), seed=2)
    decoded, parts, config = encode_decode("fft", data, {"transform": transform, "select": select, "keep": keep})
    assert config["kept"] == int(np.floor(keep * data.size + 0.5)) == parts["coeffs"].size
    coefficients = forward(data, transform)
    dropped = np.linalg.norm(coefficients) ** 2 - np.sum(parts["coeffs"].astype(np.float64) ** 2)
    assert np.linalg.norm(data - decoded) == pytest.approx(np.sqrt(max(dropped, 0.0)), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("transform, select", COMBOS)
def test_kept_coefficients_are_exact(transform, select):
    data = smooth((10, 14), seed=3)
    decoded, parts, config = encode_decode("fft", data, {"transform": transform, "select": select, "keep": 0.3})
    again = forward(matrix_of(decoded), transform)
    if select == "low":
        positions = low_order(10, 14, transform)[: config["kept"]]
    else:
        positions = np.sort(np.argsort(-np.abs(forward(data, transform)), kind="stable")[: config["kept"]])
    assert np.allclose(again[positions], parts["coeffs"], rtol=0, atol=1e-12)
    dropped = np.setdiff1d(np.arange(data.size), positions)
    assert np.allclose(again[dropped], 0.0, atol=1e-12)


def test_kept_coefficients_exact_in_float32():
    data = smooth((20, 16), dtype="<f4")
    decoded, parts, _ = encode_decode("fft", data, {"transform": "dct", "keep": 0.25})
    again = forward(matrix_of(decoded), "dct")[low_order(20, 16, "dct")[: parts["coeffs"].size]]
    assert np.allclose(again, parts["coeffs"], rtol=0, atol=1e-6 * np.abs(parts["coeffs"]).max())


def test_largest_keeps_the_largest_magnitudes():
    data = smooth((9, 11), seed=4)
    _, parts, _ = encode_decode("fft", data, {"transform": "rfft", "select": "largest", "keep": 0.2})
    magnitudes = np.sort(np.abs(forward(data, "rfft")))[::-1]
    assert np.allclose(np.sort(np.abs(parts["coeffs"]))[::-1], magnitudes[: parts["coeffs"].size])


@pytest.mark.parametrize("coding", ["gaps", "mask"])
def test_position_codings(coding):
    data = smooth((30, 20), seed=5, dtype="<f4")
    decoded, parts, config = encode_decode("fft", data, {"select": "largest", "keep": 0.1, "index_coding": coding})
    assert config["index_coding"] == coding and parts["positions"].dtype == np.uint8
    auto, _, _ = encode_decode("fft", data, {"select": "largest", "keep": 0.1})
    assert auto.tobytes() == decoded.tobytes()  # the coding changes the bytes, never the tensor


@pytest.mark.parametrize("transform, select", COMBOS)
def test_empty_zero_d_one_element(transform, select):
    params = {"transform": transform, "select": select}
    for data in (np.zeros((0, 3), "<f4"), np.zeros((2, 0), "<f8"), np.array(1.5, "<f4"), np.array([-2.0], "<f8")):
        for keep in (0.0, 1.0):
            decoded, _, _ = encode_decode("fft", data, {**params, "keep": keep})
            assert decoded.shape == data.shape and decoded.dtype == data.dtype
            expected = data if keep == 1.0 else np.zeros_like(data)
            assert np.allclose(decoded, expected)


def test_conv_kernel_shape():
    data = smooth((3, 3, 2, 4), dtype="<f4")
    decoded = check_roundtrip("fft", data, {"keep": 1.0}, max_rel_error=1e-6)
    assert decoded.shape == (3, 3, 2, 4)


def test_coefficient_dtypes_and_quantizable():
    config = {"transform": "dct", "select": "low", "kept": 3}
    assert FFT.part_specs(ArraySpec.make("<f2", [4, 4]), config)["coeffs"].dtype == np.float32
    assert FFT.part_specs(ArraySpec.make("<f8", [4, 4]), config)["coeffs"].dtype == np.float64
    assert FFT.quantizable_parts({}) == ("coeffs",)


def test_json_config():
    data = smooth((8, 8))
    _, config = FFT.encode(data, ArraySpec.of(data), {"select": "largest", "keep": 0.4})
    assert json.loads(json.dumps(config)) == config


# --- encoder parameter errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "'keep'"),
        ({"keep": 1.2}, r"\[0, 1\]"),
        ({"keep": 0.5, "transform": "fft"}, "transform"),
        ({"keep": 0.5, "select": "high"}, "select"),
        ({"keep": 0.5, "index_coding": "gaps"}, "only to select='largest'"),
        ({"keep": 0.5, "select": "largest", "index_coding": "csr"}, "index_coding"),
        ({"keep": 0.5, "ratio": 2}, "unknown parameters"),
    ],
)
def test_encode_rejects_bad_params(params, message):
    data = smooth((4, 4))
    with pytest.raises(ConfigError, match=message):
        FFT.encode(data, ArraySpec.of(data), params)


def test_encode_rejects_integer_tensors():
    data = np.arange(16, dtype="<i4").reshape(4, 4)
    with pytest.raises(ConfigError, match="only float"):
        FFT.encode(data, ArraySpec.of(data), {"keep": 0.5})


# --- golden bytes ---------------------------------------------------------------------------


@pytest.mark.parametrize("transform, select", COMBOS)
def test_golden_fft(transform, select):
    i, j = np.meshgrid(np.arange(6), np.arange(5), indexing="ij")
    data = (np.cos(0.5 * i + 0.25 * j) + 0.125 * ((i * 7 + j * 3) % 5)).astype("<f4")
    params = {"transform": transform, "select": select, "keep": 0.3}
    if select == "largest":
        params["index_coding"] = "gaps"
    check_golden("fft", f"f4-6x5-{transform}-{select}", data, params)


# --- MUST-reject rules of spec/stages/fft.md ------------------------------------------------------

SPEC = ArraySpec.make("<f4", [4, 5])
LOW = {"transform": "dct", "select": "low", "kept": 3}


def parts_for(config, spec=SPEC, **overrides):
    parts = {name: np.zeros(s.shape, s.dtype) for name, s in FFT.part_specs(spec, config).items()}
    parts.update({k: np.asarray(v, dtype=parts[k].dtype) for k, v in overrides.items()})
    return parts


def rejects(config, parts=None, match=None, spec=SPEC):
    with pytest.raises(FormatError, match=match):
        FFT.check_config(config, spec)
        FFT.decode(parts if parts is not None else parts_for(config, spec), spec, config)


def test_reject_unknown_field():
    rejects({**LOW, "norm": "ortho"}, match="unknown configuration")


def test_reject_non_float_tensor():
    rejects(LOW, spec=ArraySpec.make("|u1", [4, 5]), match="float tensor")


@pytest.mark.parametrize("field, value", [("transform", "fft"), ("transform", None), ("select", "high")])
def test_reject_unknown_transform_or_select(field, value):
    rejects({**LOW, field: value}, match=field)


@pytest.mark.parametrize("kept", [-1, 21, 2.0])
def test_reject_kept_out_of_range(kept):
    rejects({**LOW, "kept": kept}, match="kept")


def test_reject_position_fields_with_low():
    rejects({**LOW, "index_coding": "mask"}, match="unknown configuration")


def test_reject_largest_without_or_with_bad_position_coding():
    largest = {"transform": "rfft", "select": "largest", "kept": 2}
    rejects(largest, match="index_coding")
    rejects({**largest, "index_coding": "csr"}, match="index_coding")
    rejects({**largest, "index_coding": "mask", "codes": 2}, match="only allowed with the 'gaps'")
    rejects({**largest, "index_coding": "gaps", "index_bits": 2, "codes": 9}, match="codes")


def test_reject_position_streams():
    gaps = {"transform": "dct", "select": "largest", "kept": 2, "index_coding": "gaps", "index_bits": 2, "codes": 3}
    rejects(gaps, parts_for(gaps, positions=[1, 1, 0]), match="ends with an escape")
    rejects(gaps, parts_for(gaps, positions=[1, 1, 1]), match="3 value codes")
    rejects(gaps, parts_for(gaps, positions=[1, 0, 5]), match="exceeds")
    far = {**gaps, "codes": 8}
    rejects(far, parts_for(far, positions=[0, 0, 0, 0, 0, 0, 3, 3]), match="outside the tensor")
    mask = {"transform": "dct", "select": "largest", "kept": 1, "index_coding": "mask"}
    rejects(mask, parts_for(mask, positions=[1, 1] + [0] * 18), match="2 ones")
    rejects(mask, parts_for(mask, positions=[3] + [0] * 19), match="not 0 or 1")


def test_reject_parts_not_matching_their_specs():
    rejects(LOW, {"coeffs": np.zeros(4, "<f4")}, match="part 'coeffs'")
    rejects(LOW, {"coeffs": np.zeros(3, "<f8")}, match="part 'coeffs'")
    rejects(LOW, {**parts_for(LOW), "positions": np.zeros(3, "|u1")}, match="expected parts")
