"""Lossy settings end to end: flags, per-layer overrides, plan files; Keras loads the results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnzip import api, cli
from nnzip.evaluate import load_data, make_evaluator
from nnzip.formats import read_model
from .samples import SAMPLES, TEST_DATA

MLP = SAMPLES / "mlp.h5"
HIDDEN = "model_weights/hidden/mlp/hidden/kernel"
OUTPUT = "model_weights/output/mlp/output/kernel"


def compress(tmp_path, capsys, *flags, source=MLP):
    out = tmp_path / "m.nnz"
    status = cli.main(["compress", str(source), "-o", str(out), "-f", *flags])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return out, api.inspect(out), captured


def tensor(info, name):
    return next(t for t in info["tensors"] if t["name"] == name)


@pytest.fixture(scope="module")
def evaluator():
    model = read_model(MLP)
    return make_evaluator(model, load_data(TEST_DATA))


FLAG_SETS = [
    ["--bits", "2"],
    ["--bits", "4"],
    ["--prune", "0.8", "--bits", "4"],
    ["--rank", "32", "--bits", "5"],
    ["--energy", "0.7"],
    ["--fft-keep", "0.3"],
    ["--fft-keep", "0.5", "--fft-select", "low", "--fft-transform", "rfft"],
    ["--float16"],
    ["--uniform", "0.35"],
    ["--rank", "32", "--uniform", "0.5"],
]


@pytest.mark.parametrize("flags", FLAG_SETS, ids=lambda f: " ".join(f))
def test_flags_give_files_keras_loads(tmp_path, capsys, evaluator, flags, keras):
    nnz, info, _ = compress(tmp_path, capsys, *flags)
    kernel = tensor(info, HIDDEN)
    assert kernel["error"] > 0 and kernel["bits_per_weight"] < 32
    assert tensor(info, "model_weights/hidden/mlp/hidden/bias")["error"] == 0  # biases stay exact
    out = tmp_path / "m.h5"
    api.decompress(nnz, out)
    x = evaluator.data.x[:500]
    keras_out = keras.models.load_model(out).predict(x, verbose=0)
    # nnzip's own inference on the decoded weights agrees with Keras on the decompressed file
    _, rebuilt = api.read_tensors(nnz)
    numpy_out = evaluator.predict(rebuilt, x)
    np.testing.assert_allclose(numpy_out, keras_out, rtol=1e-4, atol=1e-5)


def test_bits_2_keeps_most_accuracy_and_is_small(tmp_path, capsys, evaluator):
    nnz, info, _ = compress(tmp_path, capsys, "--bits", "2")
    _, rebuilt = api.read_tensors(nnz)
    baseline = evaluator.measure(read_model(MLP).tensors)
    assert evaluator.measure(rebuilt) > baseline - 0.08
    assert info["file_bytes"] * 12 < info["tensor_bytes_original"]
    assert "kmeans(bits=2)" in tensor(info, HIDDEN)["method"]


def test_layer_override_and_last_match_wins(tmp_path, capsys):
    _, info, _ = compress(tmp_path, capsys, "--bits", "3", "--layer", "output:bits=8", "--layer", f"{HIDDEN}:prune=0.5,bits=6")
    assert "kmeans(bits=8)" in tensor(info, OUTPUT)["method"]
    hidden = tensor(info, HIDDEN)["method"]
    assert hidden.startswith("csr(") and "kmeans(bits=6)" in hidden


def test_plan_file(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"default": {"bits": 4}, "tensors": [{"match": "*/output/kernel", "settings": {"lossless": True}}]}))
    _, info, _ = compress(tmp_path, capsys, "--plan", str(plan))
    assert tensor(info, OUTPUT)["error"] == 0
    assert "kmeans(bits=4)" in tensor(info, HIDDEN)["method"]
    assert info["plan"]["overrides"][0]["match"] == "*/output/kernel"


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "cannot read plan file"),
    (json.dumps({"default": {"bits": 9}}), "bits must be in 1..8"),
    (json.dumps({"tensors": [{"match": "x"}]}), "needs 'match' and 'settings'"),
    (json.dumps({"default": {"rank": 4, "prune": 0.5}}), "choose one of"),
    (json.dumps({"other": 1}), "expected an object"),
])
def test_bad_plan_files(tmp_path, capsys, content, fragment):
    plan = tmp_path / "plan.json"
    plan.write_text(content)
    status = cli.main(["compress", str(MLP), "-o", str(tmp_path / "m.nnz"), "--plan", str(plan)])
    err = capsys.readouterr().err
    assert status == 1 and fragment in err and err.count("\n") == 1
    assert not (tmp_path / "m.nnz").exists()


def test_svd_rank_too_high_falls_back_with_a_note(tmp_path, capsys):
    _, info, captured = compress(tmp_path, capsys, "--rank", "32", "--bits", "4")
    assert "svd skipped" in captured.err and "output" in captured.err
    assert tensor(info, OUTPUT)["method"].startswith("dense > kmeans(bits=4)")
    assert tensor(info, HIDDEN)["method"].startswith("svd(rank=32)")


def test_svd_error_matches_dropped_singular_values(tmp_path, capsys):
    """Without quantization, the stored error is exactly the dropped singular values' share."""
    _, info, _ = compress(tmp_path, capsys, "--rank", "16")
    weights = read_model(MLP).tensors[HIDDEN].astype(np.float64)
    s = np.linalg.svd(weights, compute_uv=False)
    expected = np.sqrt(np.sum(s[16:] ** 2)) / np.linalg.norm(weights)
    assert tensor(info, HIDDEN)["error"] == pytest.approx(expected, rel=1e-4)


def test_pruned_count_is_exact(tmp_path, capsys):
    nnz, _, _ = compress(tmp_path, capsys, "--prune", "0.8")
    _, rebuilt = api.read_tensors(nnz)
    kernel = rebuilt[HIDDEN]
    assert np.count_nonzero(kernel == 0) == round(0.8 * kernel.size)
    original = read_model(MLP).tensors[HIDDEN]
    kept = kernel != 0
    np.testing.assert_array_equal(kernel[kept], original[kept])  # kept weights are exact
    assert np.abs(original[~kept]).max() <= np.abs(original[kept]).min()  # smallest magnitudes went


def test_kmeans_values_are_codebook_entries(tmp_path, capsys):
    nnz, _, _ = compress(tmp_path, capsys, "--bits", "3")
    _, rebuilt = api.read_tensors(nnz)
    assert len(np.unique(rebuilt[HIDDEN])) <= 8


def test_kept_optimizer_state_stays_exact(tmp_path, capsys):
    """--keep-optimizer is for resuming training: lossy settings never touch the Adam moments."""
    _, info, _ = compress(tmp_path, capsys, "--bits", "3", "--keep-optimizer")
    optimizer = [t for t in info["tensors"] if t["name"].startswith("optimizer_weights/")]
    assert len(optimizer) == 10 and all(t["error"] == 0 for t in optimizer)
    assert tensor(info, HIDDEN)["error"] > 0
