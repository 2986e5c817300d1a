"""The ``kmeans`` value stage and its 1-D k-means (``spec/stages/kmeans.md``)."""

import base64
import itertools
from pathlib import Path

import numpy as np
import pytest

from .common import check_golden, check_roundtrip, encode_decode
from nnzip.errors import ConfigError, FormatError
from nnzip.stages import ArraySpec, get_stage
from nnzip.stages import kmeans1d as km
from nnzip.stages.base import encode_floats
from . import reference as oracle

KMEANS = get_stage("kmeans")
SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "mlp.h5"


def _data(kind: str, n: int = 20_000, seed: int = 0) -> np.ndarray:
    """Test distributions: the shapes weight tensors take, and harder ones."""
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return rng.standard_normal(n) * 0.05
    if kind == "laplacian":
        return rng.laplace(size=n) * 0.02
    if kind == "bimodal":
        return np.concatenate([rng.normal(-1, 0.1, n // 2), rng.normal(2, 0.3, n - n // 2)])
    if kind == "cauchy":
        return rng.standard_cauchy(n)
    if kind == "student3":
        return rng.standard_t(3, n)
    if kind == "real":
        return _real_weights()
    raise ValueError(kind)


def _real_weights() -> np.ndarray:
    """The trained 784x64 kernel of the sample MLP, or a trained-like stand-in without it."""
    if SAMPLE.exists():
        import h5py

        with h5py.File(SAMPLE, "r") as f:
            return f["model_weights/hidden/mlp/hidden/kernel"][()].astype(np.float64).ravel()
    rng = np.random.default_rng(7)  # heavy-tailed, slightly skewed, with a few outliers
    x = rng.standard_t(4, 50_176) * 0.03 + 0.002
    x[rng.integers(0, x.size, 20)] *= 15
    return x


def _equal_count_sse(values: np.ndarray, k: int) -> float:
    """SSE of k equal-count runs of the sorted values (run j ends at ceil(j n / k)), each at its mean."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    cuts = [0] + [-(-j * n // k) for j in range(1, k)] + [n]
    return float(sum(((x[a:b] - x[a:b].mean()) ** 2).sum() for a, b in zip(cuts, cuts[1:]) if b > a))


def _codebook(config) -> np.ndarray:
    """The stored codebook of a configuration."""
    return np.frombuffer(base64.b64decode(config["codebook"]), dtype="<f4")


def _encode(data, **params):
    data = np.asarray(data)
    return KMEANS.encode(data, ArraySpec.of(data), params)


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["<f4", "<f2", "<f8"])
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_roundtrip_gaussian(dtype, bits):
    data = (np.random.default_rng(bits).standard_normal((40, 30)) * 0.1).astype(dtype)
    # Gaussian: the optimal quantiser's error is about 6 dB per bit; 2**(1 - bits) leaves room.
    check_roundtrip("kmeans", data, {"bits": bits}, max_rel_error=2.0 ** (1 - bits))


@pytest.mark.parametrize("shape", [(0,), (0, 5), (), (1,), (1, 1)])
def test_roundtrip_empty_scalar_single(shape):
    data = np.full(shape, -1.25, dtype="<f4")
    check_roundtrip("kmeans", data, {"bits": 1})  # one distinct value: exact


def test_empty_codebook_is_one_zero():
    codes, config = _encode(np.zeros((0, 3), dtype="<f4"), bits=3)
    assert codes.shape == (0, 3) and _codebook(config).tolist() == [0.0]


def test_configuration_holds_bits_and_codebook_only():
    data = np.linspace(-1, 1, 500, dtype="<f4")
    _, _, config = encode_decode("kmeans", data, {"bits": 3, "zero": True, "weights": np.ones(500)})
    assert set(config) == {"bits", "codebook"} and config["bits"] == 3


# --- invariants ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gaussian", "laplacian", "bimodal", "cauchy", "student3", "real"])
@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_invariants(kind, bits):
    """Decoded values are codebook entries, codes index the codebook, SSE <= equal-count bins."""
    data = _data(kind).astype("<f4")
    decoded, codes, config = encode_decode("kmeans", data, {"bits": bits})
    codebook = _codebook(config)
    assert codes.dtype == np.uint8 and codes.shape == data.shape
    assert 1 <= codebook.size <= 2**bits and int(codes.max()) < codebook.size
    assert (np.diff(codebook) > 0).all()
    assert np.isin(decoded, codebook).all()
    assert np.array_equal(decoded, codebook[codes])
    sse = float(((decoded.astype(np.float64) - data.astype(np.float64)) ** 2).sum())
    assert sse <= _equal_count_sse(data, 2**bits) * (1 + 1e-6)


@pytest.mark.parametrize("kind", ["gaussian", "laplacian", "real"])
def test_codes_are_nearest_entries(kind):
    data = _data(kind, 5_000).astype("<f4")
    decoded, codes, config = encode_decode("kmeans", data, {"bits": 4})
    codebook = _codebook(config).astype(np.float64)
    distance = np.abs(data.astype(np.float64)[:, None] - codebook[None, :])
    assert np.allclose(distance[np.arange(data.size), codes], distance.min(axis=1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", ["<f4", "<f2", "<f8"])
def test_few_distinct_values_are_exact(dtype):
    rng = np.random.default_rng(3)
    levels = np.array([-0.75, -0.125, 0.0, 0.5, 3.0], dtype=dtype)
    data = rng.choice(levels, size=(50, 20))
    for bits in (3, 8):  # 5 distinct values <= 8 levels
        check_roundtrip("kmeans", data, {"bits": bits})
        check_roundtrip("kmeans", data, {"bits": bits, "zero": True})
    _, config = _encode(data, bits=3)
    assert _codebook(config).tolist() == levels.astype(np.float32).tolist()
    exactly_k = rng.choice(levels[:4], size=300)  # 4 distinct values, 4 levels
    check_roundtrip("kmeans", exactly_k, {"bits": 2})


def test_float64_codebook_is_float32():
    """float64 input: decoded values are the float32 centroids, widened exactly."""
    data = _data("gaussian", 3_000)
    decoded, _, config = encode_decode("kmeans", data, {"bits": 4})
    assert decoded.dtype == np.float64
    assert np.array_equal(decoded, decoded.astype(np.float32).astype(np.float64))
    assert np.isin(decoded, _codebook(config).astype(np.float64)).all()


def test_float16_codebook_entries_are_float16_values():
    data = (_data("laplacian", 4_000) * 100).astype("<f2")
    decoded, _, config = encode_decode("kmeans", data, {"bits": 6})
    codebook = _codebook(config)
    assert np.array_equal(codebook, codebook.astype(np.float16).astype(np.float32))
    assert np.isin(decoded.astype(np.float32), codebook).all()


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("n", [100, 5_000])
def test_zero_mode_keeps_zeros(bits, n):
    """Pruned-but-dense tensors: exact zeros decode as exactly 0.0, and 0.0 is in the codebook."""
    rng = np.random.default_rng(bits)
    data = (rng.standard_normal(n) * 0.1).astype("<f4")
    data[np.abs(data) < 0.12] = 0.0  # about 77% pruned
    decoded, _, config = encode_decode("kmeans", data, {"bits": bits, "zero": True})
    assert 0.0 in _codebook(config)
    zeros = data == 0
    assert (decoded[zeros] == 0).all() and not np.signbit(decoded[zeros]).any()


def test_zero_mode_without_zeros_in_data():
    data = np.linspace(1, 2, 1000, dtype="<f4")
    decoded, _, config = encode_decode("kmeans", data, {"bits": 2, "zero": True})
    assert 0.0 in _codebook(config) and (decoded > 0).all()


def test_negative_zero_decodes_as_zero():
    data = np.array([-0.0, 0.0, 1.0, 2.0] * 10, dtype="<f4")
    decoded, _, config = encode_decode("kmeans", data, {"bits": 2})
    assert not np.signbit(_codebook(config)).any()
    assert (decoded == data).all()


def test_deterministic():
    data = _data("real").astype("<f4")
    first = _encode(data, bits=5)
    second = _encode(data.copy(), bits=5)
    assert first[1] == second[1] and np.array_equal(first[0], second[0])


# --- weights ---------------------------------------------------------------------------


def test_integer_weights_equal_repetition():
    """Weighted k-means with integer weights is k-means of the repeated values."""
    rng = np.random.default_rng(5)
    values = rng.laplace(size=3_000)
    weights = rng.integers(1, 4, values.size)
    weighted = km.kmeans1d(values, 16, weights=weights)
    repeated = km.kmeans1d(np.repeat(values, weights), 16)
    np.testing.assert_allclose(weighted, repeated, rtol=1e-9, atol=1e-12)


def test_weights_pull_centroids():
    """Heavy weights on a region draw the codebook there; the weighted SSE improves."""
    rng = np.random.default_rng(6)
    data = (rng.standard_normal(4_000) * 0.1).astype("<f4")
    weights = np.where(data > 0.1, 100.0, 1.0)
    plain = _codebook(_encode(data, bits=3)[1])
    weighted = _codebook(_encode(data, bits=3, weights=weights)[1])
    assert (weighted > 0.1).sum() > (plain > 0.1).sum()
    assert oracle.weighted_sse(data, weighted, weights) < oracle.weighted_sse(data, plain, weights)


def test_zero_weights_everywhere_mean_uniform():
    data = _data("gaussian", 2_000)
    assert np.array_equal(km.kmeans1d(data, 8, weights=np.zeros(data.size)), km.kmeans1d(data, 8))


def test_some_zero_weights():
    rng = np.random.default_rng(8)
    data = rng.standard_normal(3_000)
    weights = (rng.random(3_000) < 0.02).astype(float)  # only ~60 values count
    centroids = km.kmeans1d(data, 32, weights=weights)
    assert 1 <= centroids.size <= 32 and np.isfinite(centroids).all()
    codes, config = _encode(data.astype("<f4"), bits=5, weights=weights)
    assert int(codes.max()) < _codebook(config).size


# --- against slow references ----------------------------------------------------------


def _naive_lloyd(x: np.ndarray, centroids: np.ndarray, max_iter: int = 10_000) -> np.ndarray:
    """Textbook Lloyd with a dense distance matrix; fails on an empty cluster."""
    for _ in range(max_iter):
        assign = np.abs(x[:, None] - centroids[None, :]).argmin(axis=1)  # ties: lower centroid
        counts = np.bincount(assign, minlength=centroids.size)
        assert counts.all(), "reference hit an empty cluster"
        new = np.bincount(assign, weights=x, minlength=centroids.size) / counts
        if np.array_equal(new, centroids):
            break
        centroids = new
    return centroids


@pytest.mark.parametrize("seed", range(6))
def test_fast_lloyd_matches_naive_lloyd(seed):
    """The O(k log n) iteration (prefix sums + binary search) follows textbook Lloyd step for step."""
    rng = np.random.default_rng(seed)
    x = [rng.standard_normal, rng.laplace, rng.standard_cauchy][seed % 3](size=2_000)
    k = [3, 8, 16][seed % 3]
    start = np.sort(rng.choice(x, k, replace=False))
    fast, _ = km._lloyd(km._Prefix.build(x, None), start, False, 10_000)
    np.testing.assert_allclose(fast, _naive_lloyd(np.sort(x), start), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_kmeans_no_worse_than_naive_lloyd_from_equal_count(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3, 1_500)
    k = 8
    xs = np.sort(x)
    cuts = [0] + [-(-j * x.size // k) for j in range(1, k)] + [x.size]
    start = np.array([xs[a:b].mean() for a, b in zip(cuts, cuts[1:])])
    reference = oracle.weighted_sse(x, _naive_lloyd(xs, start))
    assert oracle.weighted_sse(x, km.kmeans1d(x, k)) <= reference * (1 + 1e-9)


def _brute_force_optimum(x: np.ndarray, k: int, fixed_zero: bool) -> float:
    """Least SSE over every split of the sorted values into runs (tiny inputs only)."""
    xs = np.sort(x)
    free = k - 1 if fixed_zero else k
    best = np.inf
    for cuts in itertools.combinations(range(1, xs.size), free - 1):
        bounds = (0, *cuts, xs.size)
        centroids = [xs[a:b].mean() for a, b in zip(bounds, bounds[1:])] + ([0.0] if fixed_zero else [])
        best = min(best, oracle.weighted_sse(xs, np.array(centroids)))
    return best


@pytest.mark.parametrize("seed", range(40))
def test_small_inputs_are_optimal(seed):
    """Small arrays get the exact optimum (dynamic programming), checked by exhaustive search."""
    rng = np.random.default_rng(seed)
    n, k, fixed_zero = int(rng.integers(5, 13)), int(rng.choice([2, 4])), bool(seed % 2)
    x = rng.standard_normal(n) if seed % 3 else np.round(rng.laplace(size=n) * 4) / 4
    if seed % 5 == 0:
        x[: n // 3] = 0.0
    if np.unique(x).size <= k:  # make the case non-trivial instead of skipping it
        x = x + np.linspace(0.0, 1.0, n)
    centroids = km.kmeans1d(x, k, fixed_zero=fixed_zero)
    assert centroids.size <= k and (not fixed_zero or 0.0 in centroids)
    assert oracle.weighted_sse(x, centroids) <= _brute_force_optimum(x, k, fixed_zero) * (1 + 1e-9) + 1e-15


def test_reseeds_empty_clusters():
    """Many duplicates make clusters collapse; every centroid still ends up used."""
    rng = np.random.default_rng(9)
    x = np.concatenate([np.zeros(5_000), np.ones(5_000), rng.standard_normal(300)])
    centroids = km.kmeans1d(x, 16)
    codes = km.nearest(x, centroids)
    assert centroids.size == 16 and np.bincount(codes, minlength=16).all()


def test_bits_one_two_levels():
    data = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0] * 50, dtype="<f4")
    _, config = _encode(data, bits=1)
    assert _codebook(config).tolist() == [-2.0, 2.0]


# --- encoder refusals (ConfigError) -------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"bits": 0}, {"bits": 9}, {"bits": "3"}, {"bits": True}, {"bits": 3.0}])
def test_encoder_rejects_bad_bits(params):
    with pytest.raises(ConfigError, match="bits"):
        _encode(np.ones(4, dtype="<f4"), **params)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"bits": 2, "zero": 1}, "zero"),
        ({"bits": 2, "weights": np.ones(3)}, "weights"),
        ({"bits": 2, "weights": -np.ones(4)}, "weights"),
        ({"bits": 2, "weights": np.array([1, np.nan, 1, 1])}, "weights"),
        ({"bits": 2, "levels": 4}, "unknown"),
    ],
)
def test_encoder_rejects_bad_params(params, message):
    with pytest.raises(ConfigError, match=message):
        _encode(np.ones(4, dtype="<f4"), **params)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_encoder_rejects_non_finite(value):
    with pytest.raises(ConfigError, match="NaN or infinity"):
        _encode(np.array([1.0, value], dtype="<f4"), bits=2)


def test_encoder_rejects_beyond_float32():
    with pytest.raises(ConfigError, match="float32"):
        _encode(np.array([1.0, 1e300]), bits=2)


def test_encoder_rejects_integer_input():
    with pytest.raises(ConfigError, match="float"):
        _encode(np.arange(4, dtype="<i4"), bits=2)


# --- decoder MUST-reject list (spec/stages/kmeans.md, Errors) -----------------------------

SPEC = ArraySpec.make("<f4", [4])
GOOD = {"bits": 2, "codebook": encode_floats(np.array([-1.0, 0.0, 0.5, 2.0]))}


def _reject(config, spec=SPEC, match=None):
    with pytest.raises(FormatError, match=match):
        KMEANS.check_config(config, spec)


def test_good_config_accepted():
    KMEANS.check_config(GOOD, SPEC)
    out = KMEANS.decode(np.array([0, 1, 2, 3], dtype=np.uint8), SPEC, GOOD)
    assert out.tolist() == [-1.0, 0.0, 0.5, 2.0]


def test_reject_1_unknown_or_missing_fields():
    _reject({**GOOD, "zero": True}, match="unknown")
    _reject({"bits": 2}, match="codebook")
    _reject({"codebook": GOOD["codebook"]}, match="bits")
    _reject([], match="object")


@pytest.mark.parametrize("bits", [0, 9, -1, "2", 2.0, True, None])
def test_reject_2_bits_out_of_range(bits):
    _reject({**GOOD, "bits": bits}, match="bits")


@pytest.mark.parametrize("codebook", [7, "not base64!", "AAAA=", "AAAAAAA="])
def test_reject_3_codebook_not_float32_base64(codebook):
    _reject({**GOOD, "codebook": codebook})


def test_reject_4_codebook_size():
    _reject({**GOOD, "codebook": ""}, match="1..4 entries")
    _reject({**GOOD, "codebook": encode_floats(np.arange(5))})
    _reject({"bits": 1, "codebook": encode_floats(np.arange(3))})


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_reject_5_non_finite_codebook(bad):
    _reject({**GOOD, "codebook": encode_floats(np.array([0.0, bad]))}, match="NaN or infinity")


@pytest.mark.parametrize("codebook", [[0.0, 0.0], [1.0, 0.5], [-0.0, 0.0], [0.0, 1.0, 0.5]])
def test_reject_6_codebook_not_strictly_ascending(codebook):
    _reject({**GOOD, "codebook": encode_floats(np.array(codebook))}, match="ascending")


def test_reject_7_codebook_overflows_float16_output():
    config = {"bits": 1, "codebook": encode_floats(np.array([0.0, 70000.0]))}
    _reject(config, spec=ArraySpec.make("<f2", [4]), match="overflows")
    KMEANS.check_config(config, SPEC)  # fine for float32 output


@pytest.mark.parametrize("dtype", ["<i4", "|u1", "|b1"])
def test_reject_8_non_float_output(dtype):
    _reject(GOOD, spec=ArraySpec.make(dtype, [4]), match="float")


def test_reject_9_code_outside_codebook():
    config = {"bits": 3, "codebook": GOOD["codebook"]}  # 4 entries, 3-bit codes
    KMEANS.check_config(config, SPEC)
    with pytest.raises(FormatError, match="outside the codebook"):
        KMEANS.decode(np.array([0, 1, 4, 3], dtype=np.uint8), SPEC, config)


def test_reject_10_codes_of_wrong_type_or_shape():
    with pytest.raises(FormatError, match="uint8"):
        KMEANS.decode(np.array([0, 1, 2, 3], dtype="<u2"), SPEC, GOOD)
    with pytest.raises(FormatError, match="shape"):
        KMEANS.decode(np.array([0, 1, 2], dtype=np.uint8), SPEC, GOOD)


# --- golden bytes --------------------------------------------------------------------------


def _golden_data(n: int) -> np.ndarray:
    """Deterministic, platform-independent values: integer arithmetic only."""
    i = np.arange(n)
    return ((i * 7919) % 1009 - 504) ** 3 / 2.0**27


def test_golden_small_optimal():
    check_golden("kmeans", "f4-60-b3", _golden_data(60).astype("<f4").reshape(6, 10), {"bits": 3})


def test_golden_lloyd():
    check_golden("kmeans", "f4-2000-b4", _golden_data(2000).astype("<f4").reshape(40, 50), {"bits": 4})


def test_golden_zero_f16():
    data = _golden_data(1000).astype("<f2")
    data[np.abs(data) < 0.05] = 0
    check_golden("kmeans", "f2-1000-b2-zero", data, {"bits": 2, "zero": True})
