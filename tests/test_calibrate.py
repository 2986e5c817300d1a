"""Data-aware steps: each must do what its docstring claims, measured on held-out data."""

from __future__ import annotations

import numpy as np
import pytest

from nnzip import calibrate
from nnzip.infer.ops import same_pads
from nnzip.formats import read_model
from .samples import SAMPLES, TEST_DATA, VAL_DATA

HIDDEN = "model_weights/hidden/mlp/hidden/kernel"


@pytest.fixture(scope="module")
def layer():
    weights = read_model(SAMPLES / "mlp.h5").tensors[HIDDEN]
    with np.load(VAL_DATA) as val, np.load(TEST_DATA) as test:
        return weights, calibrate.LayerStatistics.of(val["x"][:1000]), test["x"]


def output_error(x, w, w2):
    return np.linalg.norm(x @ w - x @ w2) / np.linalg.norm(x @ w)


def test_statistics_match_direct_computation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 7))
    x[:, 3] = 2.5
    stats = calibrate.LayerStatistics(np.array_split(x, 4))
    np.testing.assert_allclose(stats.gram, x.T @ x, rtol=1e-12)
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-12)
    assert stats.constant.tolist() == [False, False, False, True, False, False, False]


def test_error_feedback_values_are_codebook_entries_and_beat_rounding(layer):
    weights, stats, x_test = layer
    codebook = np.quantile(weights, np.linspace(0.02, 0.98, 8)).astype(np.float32)
    compensated = calibrate.quantize_with_error_feedback(weights, stats, codebook)
    rounded = calibrate._nearest(weights.astype(np.float64), np.sort(codebook.astype(np.float64))).astype(np.float32)
    assert set(np.unique(compensated)) <= set(codebook.tolist())
    # on held-out inputs, the output error is clearly smaller than plain nearest rounding
    assert output_error(x_test, weights, compensated) < 0.6 * output_error(x_test, weights, rounded)


def test_activation_aware_low_rank_beats_plain_svd_on_held_out_outputs(layer):
    weights, stats, x_test = layer
    aware = calibrate.ActivationAwareSVD(weights, stats).matrix(32)
    assert np.linalg.matrix_rank(aware.astype(np.float64), tol=1e-4 * np.abs(aware).max()) <= 32
    u, s, vt = np.linalg.svd(weights.astype(np.float64), full_matrices=False)
    plain = (u[:, :32] * s[:32]) @ vt[:32]
    assert output_error(x_test, weights, aware) < 0.7 * output_error(x_test, weights, plain)


def test_corrected_bias_keeps_the_mean_output(layer):
    weights, stats, _ = layer
    rng = np.random.default_rng(1)
    changed = weights + rng.normal(0, 0.01, weights.shape).astype(np.float32)
    bias = rng.normal(0, 0.1, weights.shape[1]).astype(np.float32)
    fixed = calibrate.corrected_bias(bias, weights, changed, stats)
    np.testing.assert_allclose(stats.mean @ changed + fixed, stats.mean @ weights + bias, atol=1e-5)


def test_fold_constant_inputs_is_exact_on_the_data():
    rng = np.random.default_rng(2)
    x = rng.random((200, 6))
    x[:, [1, 4]] = [0.0, 0.7]
    w, b = rng.standard_normal((6, 3)), rng.standard_normal(3)
    stats = calibrate.LayerStatistics.of(x)
    w2, b2 = calibrate.fold_constant_inputs(w, b, stats)
    assert np.all(w2[[1, 4]] == 0)
    np.testing.assert_allclose(x @ w2 + b2, x @ w + b, rtol=1e-12)
    w3, _ = calibrate.fold_constant_inputs(w, None, stats)
    assert np.all(w3[1] == 0) and np.all(w3[4] == w[4])  # without a bias only zero inputs can go


@pytest.mark.parametrize("padding, strides", [("same", (1, 1)), ("same", (2, 2)), ("valid", (1, 1)), ("valid", (2, 1))])
def test_conv_patches_reproduce_a_convolution(padding, strides):
    """Patches @ kernel-matrix equals a direct convolution computed independently."""
    from scipy.signal import correlate

    rng = np.random.default_rng(3)
    x = rng.random((2, 7, 6, 3)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    patches = np.concatenate(list(calibrate.conv_patches(x, (3, 3), strides, padding, batch=1)))
    if padding == "same":
        pad_h, pad_w = same_pads(7, 3, strides[0], 1), same_pads(6, 3, strides[1], 1)
        x = np.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
    direct = np.stack([
        np.stack([correlate(x[n], kernel[..., o], mode="valid")[:, :, 0] for o in range(4)], axis=-1)[:: strides[0], :: strides[1]]
        for n in range(2)
    ])
    np.testing.assert_allclose(patches @ kernel.reshape(-1, 4), direct.reshape(-1, 4), rtol=1e-4, atol=1e-5)
