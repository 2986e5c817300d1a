"""The ``svd`` transform: truncated SVD of the matrix view, parts ``u``, ``s``, ``vt``."""

import json

import numpy as np
import pytest

from .common import check_golden, check_roundtrip, encode_decode
from nnzip.errors import ConfigError, FormatError, NoSaving
from nnzip.stages import ArraySpec, get_stage
from nnzip.stages.matrix import matrix_shape

SVD = get_stage("svd")


def low_rank_plus_noise(shape, rank=3, noise=0.01, seed=0, dtype="<f4"):
    """A matrix-view-shaped tensor that is nearly of the given rank."""
    rng = np.random.default_rng(seed)
    m, n = matrix_shape(shape)
    matrix = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n)) + noise * rng.standard_normal((m, n))
    return matrix.reshape(shape).astype(dtype)


def dropped_norm(data, rank):
    """sqrt of the sum of the squared singular values beyond *rank*."""
    s = np.linalg.svd(np.asarray(data, dtype=np.float64).reshape(matrix_shape(data.shape)), compute_uv=False)
    return float(np.sqrt(np.sum(s[rank:] ** 2)))


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8"])
def test_roundtrip_rank(dtype):
    data = low_rank_plus_noise((40, 30), dtype=dtype)
    decoded = check_roundtrip("svd", data, {"rank": 3}, max_rel_error=0.01)
    assert decoded.dtype == data.dtype and decoded.shape == data.shape


def test_roundtrip_energy_picks_the_smallest_rank():
    data = low_rank_plus_noise((50, 20), rank=4)
    _, parts, config = encode_decode("svd", data, {"energy": 0.99})
    s = np.linalg.svd(data.astype(np.float64), compute_uv=False)
    share = np.cumsum(s**2) / np.sum(s**2)
    assert config["rank"] == int(np.argmax(share >= 0.99)) + 1
    assert parts["s"].shape == (config["rank"],)


def test_roundtrip_conv_kernel_uses_the_hwio_matrix_view():
    data = low_rank_plus_noise((3, 3, 4, 16), rank=2)
    decoded, parts, _ = encode_decode("svd", data, {"rank": 2})
    assert parts["u"].shape == (36, 2) and parts["vt"].shape == (2, 16)
    assert decoded.shape == data.shape


def test_zero_d_and_one_element():
    # A zero scalar has rank 0, which stores nothing and is exact.
    check_roundtrip("svd", np.array(0.0, dtype="<f4"), {"energy": 0.9})
    check_roundtrip("svd", np.zeros((1,), dtype="<f8"), {"rank": 0})
    # A non-zero single element needs rank 1 = 3 numbers for 1: refused.
    with pytest.raises(NoSaving, match="would not save space"):
        SVD.encode(np.array(2.5, dtype="<f4"), ArraySpec.make("<f4", []), {"energy": 0.9})
    with pytest.raises(NoSaving, match="would not save space"):
        SVD.encode(np.ones((1, 1), dtype="<f4"), ArraySpec.make("<f4", [1, 1]), {"rank": 1})


def test_empty_is_refused_by_encode_but_decodes():
    spec = ArraySpec.make("<f4", [0, 5])
    with pytest.raises(NoSaving, match="would not save space"):
        SVD.encode(np.zeros((0, 5), dtype="<f4"), spec, {"rank": 0})
    config = {"rank": 0}
    SVD.check_config(config, spec)
    parts = {name: np.zeros(s.shape, s.dtype) for name, s in SVD.part_specs(spec, config).items()}
    out = SVD.decode(parts, spec, config)
    assert out.shape == (0, 5) and out.dtype == np.float32


def test_bias_vector_is_one_row():
    spec = ArraySpec.make("<f4", [64])
    assert not SVD.saves_space(spec, 1)
    with pytest.raises(NoSaving, match="would not save space"):
        SVD.encode(np.ones(64, dtype="<f4"), spec, {"rank": 1})


# --- invariants ----------------------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 2, 5, 9])
def test_error_equals_dropped_singular_values_float64(rank):
    data = low_rank_plus_noise((30, 24), rank=6, noise=0.3, seed=rank, dtype="<f8")
    decoded, _, _ = encode_decode("svd", data, {"rank": rank})
    error = float(np.linalg.norm(data - decoded))
    assert error == pytest.approx(dropped_norm(data, rank), rel=1e-9, abs=1e-12)


def test_error_equals_dropped_singular_values_float32():
    data = low_rank_plus_noise((60, 40), rank=8, noise=0.2, dtype="<f4")
    decoded, _, _ = encode_decode("svd", data, {"rank": 5})
    error = float(np.linalg.norm(data.astype(np.float64) - decoded))
    # float32 parts and output: agreement to float32 precision relative to the tensor's norm.
    assert abs(error - dropped_norm(data, 5)) <= 1e-5 * float(np.linalg.norm(data))


def test_factors_are_orthonormal_and_signs_fixed():
    data = low_rank_plus_noise((20, 12), rank=4, noise=0.1, dtype="<f8")
    parts, _ = SVD.encode(data, ArraySpec.of(data), {"rank": 4})
    assert np.allclose(parts["u"].T @ parts["u"], np.eye(4))
    assert np.allclose(parts["vt"] @ parts["vt"].T, np.eye(4))
    assert np.all(np.diff(parts["s"]) <= 0) and np.all(parts["s"] >= 0)
    pivots = parts["vt"][np.arange(4), np.argmax(np.abs(parts["vt"]), axis=1)]
    assert np.all(pivots > 0)


def test_rank_for_energy():
    s = np.array([3.0, 2.0, 1.0, 0.0])  # squares 9, 4, 1: total 14
    assert SVD.rank_for_energy(s, 9 / 14) == 1
    assert SVD.rank_for_energy(s, 9 / 14 + 1e-9) == 2
    assert SVD.rank_for_energy(s, 1.0) == 3
    assert SVD.rank_for_energy(np.zeros(3), 0.5) == 0
    assert SVD.rank_for_energy(np.zeros(0), 1.0) == 0


def test_saves_space_counts_u_s_and_vt():
    spec = ArraySpec.make("<f4", [10, 10])  # one rank costs 10 + 10 + 1 = 21 of 100
    assert SVD.saves_space(spec, 4) and not SVD.saves_space(spec, 5)
    data = low_rank_plus_noise((10, 10))
    with pytest.raises(NoSaving, match="would not save space"):
        SVD.encode(data, ArraySpec.of(data), {"rank": 5})


def test_quantizable_parts():
    assert SVD.quantizable_parts({"rank": 2}) == ("u", "vt")


def test_config_is_json():
    data = low_rank_plus_noise((16, 8))
    _, config = SVD.encode(data, ArraySpec.of(data), {"rank": 2})
    assert json.loads(json.dumps(config)) == config == {"rank": 2}


# --- encoder parameter errors -----------------------------------------------------------


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "exactly one"),
        ({"rank": 2, "energy": 0.9}, "exactly one"),
        ({"rank": -1}, "0..10"),
        ({"rank": 2.0}, "0..10"),
        ({"energy": 0.0}, r"\(0, 1\]"),
        ({"energy": 1.5}, r"\(0, 1\]"),
        ({"rank": 2, "rnak": 3}, "unknown parameters"),
    ],
)
def test_encode_rejects_bad_params(params, message):
    data = low_rank_plus_noise((40, 10))
    with pytest.raises(ConfigError, match=message):
        SVD.encode(data, ArraySpec.of(data), params)


def test_rank_beyond_the_shape_is_no_saving_not_a_bad_parameter():
    """An integer rank above min(m, n) suits other shapes: callers fall back (NoSaving), the message unchanged."""
    data = low_rank_plus_noise((40, 10))
    with pytest.raises(NoSaving, match=r"0\.\.10 \(min\(m, n\)\), got 11"):
        SVD.encode(data, ArraySpec.of(data), {"rank": 11})


def test_encode_rejects_integer_tensors():
    data = np.arange(12, dtype="<i4").reshape(3, 4)
    with pytest.raises(ConfigError, match="only float"):
        SVD.encode(data, ArraySpec.of(data), {"rank": 1})


# --- golden bytes ------------------------------------------------------------------------


def test_golden_svd_f4():
    i, j = np.meshgrid(np.arange(6), np.arange(5), indexing="ij")
    data = ((i + 1) * (j - 2) + 0.5 * np.cos(i * j)).astype("<f4")
    check_golden("svd", "f4-6x5-rank2", data, {"rank": 2})


# --- MUST-reject rules of spec/stages/svd.md --------------------------------------------

SPEC = ArraySpec.make("<f4", [6, 4])


def test_reject_unknown_field():
    with pytest.raises(FormatError, match="unknown configuration"):
        SVD.check_config({"rank": 1, "layout": "us"}, SPEC)


@pytest.mark.parametrize("config", [{}, {"rank": 5}, {"rank": -1}, {"rank": "2"}, {"rank": True}, {"rank": 1.0}])
def test_reject_bad_rank(config):
    with pytest.raises(FormatError, match="rank"):
        SVD.check_config(config, SPEC)


def test_reject_non_float_tensor():
    with pytest.raises(FormatError, match="float tensor"):
        SVD.check_config({"rank": 1}, ArraySpec.make("<i4", [6, 4]))


def test_reject_parts_not_matching_their_specs():
    config = {"rank": 2}
    good = {name: np.zeros(s.shape, s.dtype) for name, s in SVD.part_specs(SPEC, config).items()}
    with pytest.raises(FormatError, match="part 'u'"):
        SVD.decode({**good, "u": np.zeros((6, 3), "<f4")}, SPEC, config)
    with pytest.raises(FormatError, match="part 's'"):
        SVD.decode({**good, "s": np.zeros(2, "<f8")}, SPEC, config)
    with pytest.raises(FormatError, match="expected parts"):
        SVD.decode({"u": good["u"], "vt": good["vt"]}, SPEC, config)


def test_given_decomposition_gives_the_same_encoding():
    """A caller's precomputed SVD (the budget search factors once per tensor) changes nothing stored."""
    rng = np.random.default_rng(7)
    data = rng.standard_normal((40, 30)).astype(np.float32)
    spec = ArraySpec.of(data)
    svd = get_stage("svd")
    plain_parts, plain_config = svd.encode(data, spec, {"rank": 5})
    given = np.linalg.svd(data.astype(np.float64), full_matrices=False)
    parts, config = svd.encode(data, spec, {"rank": 5, "decomposition": given})
    assert config == plain_config
    for name in plain_parts:
        np.testing.assert_allclose(parts[name], plain_parts[name], rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="decomposition"):
        svd.encode(data, spec, {"rank": 5, "decomposition": (given[0][:10], given[1], given[2])})
