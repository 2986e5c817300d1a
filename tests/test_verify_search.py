"""verify, budgeted compress and sweep, through the CLI, on the real samples."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from nnzip import api, cli
from nnzip.search import Trial, _allocate
from .samples import SAMPLES, TEST_DATA, VAL_DATA


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_verify_reports_drop_agreement_and_layers(tmp_path, capsys):
    nnz = tmp_path / "mlp.nnz"
    assert run(capsys, "compress", SAMPLES / "mlp.h5", "-o", nnz, "--bits", "2")[0] == 0
    status, out, _ = run(capsys, "verify", nnz, "--data", TEST_DATA, "--original", SAMPLES / "mlp.h5", "--json")
    assert status == 0
    info = json.loads(out)
    assert info["metric"] == "accuracy" and info["samples"] == 2000
    assert info["drop"] == pytest.approx(info["original"] - info["rebuilt"])
    assert 0.5 < info["top1_agreement"] < 1.0
    assert set(info["layer_output_errors"]) >= {"hidden", "output"} and info["layer_output_errors"]["hidden"] > 0
    # --max-drop turns an exceeded budget into exit status 3
    status, _, err = run(capsys, "verify", nnz, "--data", TEST_DATA, "--original", SAMPLES / "mlp.h5", "--max-drop", "0.0")
    assert (status == 3) == (info["drop"] > 0) and (status != 3 or "exceeds --max-drop" in err)


def test_verify_lossless_is_exact_and_finds_the_original_beside_it(tmp_path, capsys):
    source = tmp_path / "softmax.h5"
    source.write_bytes((SAMPLES / "softmax.h5").read_bytes())
    assert run(capsys, "compress", source)[0] == 0
    status, out, _ = run(capsys, "verify", tmp_path / "softmax.nnz", "--data", TEST_DATA, "--json")
    info = json.loads(out)
    assert status == 0 and info["original_file"].endswith("softmax.h5")
    assert info["drop"] == 0 and info["top1_agreement"] == 1.0
    assert all(v == 0 for v in info["layer_output_errors"].values())


def test_verify_autoencoder_uses_reconstruction_error(tmp_path, capsys):
    nnz = tmp_path / "ae.nnz"
    run(capsys, "compress", SAMPLES / "autoencoder.h5", "-o", nnz, "--bits", "3")
    status, out, _ = run(capsys, "verify", nnz, "--data", TEST_DATA, "--original", SAMPLES / "autoencoder.h5", "--json")
    info = json.loads(out)
    assert status == 0 and info["metric"] == "mse" and info["top1_agreement"] is None
    assert info["rebuilt"] > info["original"] > 0
    assert info["drop"] == pytest.approx((info["rebuilt"] - info["original"]) / info["original"])


def test_verify_errors(tmp_path, capsys):
    nnz = tmp_path / "m.nnz"
    run(capsys, "compress", SAMPLES / "mlp.h5", "-o", nnz)
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((3, 784)))
    status, _, err = run(capsys, "verify", nnz, "--data", bad)
    assert status == 1 and "has no array 'x'" in err and err.count("\n") == 1
    status, _, err = run(capsys, "verify", nnz, "--data", TEST_DATA, "--original", SAMPLES / "cnn.h5")
    assert status == 1 and "does not hold the same tensors" in err
    weights_only = tmp_path / "w.nnz"
    run(capsys, "compress", SAMPLES / "mlp.weights.h5", "-o", weights_only)
    status, _, err = run(capsys, "verify", weights_only, "--data", TEST_DATA, "--original", SAMPLES / "mlp.weights.h5")
    assert status == 1 and "--eval" in err


def test_budget_flags_are_checked_before_work(tmp_path, capsys):
    status, _, err = run(capsys, "compress", SAMPLES / "mlp.h5", "-o", tmp_path / "m.nnz", "--max-drop", "0.01")
    assert status == 2 and "--max-drop needs --data" in err  # flags that need each other: a usage error
    status, _, err = run(capsys, "compress", SAMPLES / "mlp.h5", "-o", tmp_path / "m.nnz", "--data", VAL_DATA, "--max-drop", "0.01", "--bits", "3")
    assert status == 2 and "drop --bits" in err
    assert not (tmp_path / "m.nnz").exists()


def test_budget_search_meets_the_budget_on_held_out_data(tmp_path, capsys):
    """The issue's acceptance: compress on the val split, verify on the test split."""
    nnz = tmp_path / "softmax.nnz"
    status, out, err = run(capsys, "compress", SAMPLES / "softmax.h5", "-o", nnz, "--data", VAL_DATA, "--max-drop", "0.005")
    assert status == 0, err
    info = api.inspect(nnz)
    search = info["plan"]["search"]
    assert search["drop"] <= 0.005 and search["metric"] == "accuracy"
    # a quarter of the 2,000 samples held out of the search (--holdout's default), and the plan within the budget there too
    assert search["holdout_samples"] == 500 and search["holdout_drop"] <= 0.005
    assert "checked on 500 samples held out of the search" in run(capsys, "inspect", nnz)[1]
    assert info["ratio"] > 4  # far smaller than the lossless file (about 1.15x)
    status, out, _ = run(capsys, "verify", nnz, "--data", TEST_DATA, "--original", SAMPLES / "softmax.h5", "--json")
    verified = json.loads(out)
    assert verified["drop"] <= 0.005 + 0.01  # "about the budget": 2000 test samples carry ±0.01 noise


def test_allocation_is_an_exact_knapsack_not_a_convex_hull():
    """Two tensors whose best combination lies off the convex hull of either front."""

    def trial(size, drop):
        return Trial(candidate=None, encoded=None, stored_bytes=size, drop=drop)

    options = {
        "a": [trial(100, 0.0), trial(60, 0.004), trial(10, 0.010)],
        "b": [trial(100, 0.0), trial(50, 0.006), trial(45, 0.009)],
    }
    pick = _allocate(options, 0.010)
    assert pick["a"].stored_bytes + pick["b"].stored_bytes == 110  # a=60 (0.004) + b=50 (0.006)
    pick = _allocate(options, 0.0)
    assert [t.stored_bytes for t in pick.values()] == [100, 100]


def test_sweep_writes_csv_and_plot(tmp_path, capsys):
    csv_path, png = tmp_path / "s.csv", tmp_path / "s.png"
    status, out, _ = run(capsys, "sweep", SAMPLES / "softmax.h5", "--data", TEST_DATA, "--method", "kmeans", "--csv", csv_path, "--plot", png)
    assert status == 0, out
    rows = list(csv.DictReader(open(csv_path)))
    assert [int(float(r["setting"])) for r in rows] == list(range(1, 9))
    sizes = [int(r["file_bytes"]) for r in rows]
    assert sizes == sorted(sizes)  # more bits, more bytes
    assert float(rows[-1]["value"]) > float(rows[0]["value"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    status, _, err = run(capsys, "sweep", SAMPLES / "softmax.h5", "--data", TEST_DATA, "--method", "svd", "--layer", "nope")
    assert status == 1 and "--layer 'nope' matches no tensor" in err  # names the close matches, as compress --layer does


# --- --eval hooks, for files without an architecture ---------------------------------------


def test_eval_hook_scores_a_weights_only_file(tmp_path, capsys):
    nnz = tmp_path / "w.nnz"
    run(capsys, "compress", SAMPLES / "mlp.weights.h5", "-o", nnz, "--bits", "2")
    status, out, err = run(capsys, "verify", nnz, "--data", TEST_DATA, "--original", SAMPLES / "mlp.weights.h5",
                           "--eval", "tests.eval_hook_example:accuracy", "--json")
    assert status == 0, err
    info = json.loads(out)
    assert info["metric"] == "score" and info["original"] == pytest.approx(0.882, abs=1e-9)
    assert info["drop"] == pytest.approx(info["original"] - info["rebuilt"]) and info["drop"] > 0


def test_eval_hook_with_weights_only(tmp_path, capsys):
    nnz = tmp_path / "w.nnz"
    run(capsys, "compress", SAMPLES / "softmax.weights.h5", "-o", nnz)
    status, out, _ = run(capsys, "verify", nnz, "--data", TEST_DATA, "--original", SAMPLES / "softmax.weights.h5",
                         "--eval", "tests.eval_hook_example:weight_norm", "--json")
    info = json.loads(out)
    assert status == 0 and info["drop"] == 0 and info["original"] > 0


def test_budget_search_with_an_eval_hook(tmp_path, capsys):
    nnz = tmp_path / "w.nnz"
    status, _, err = run(capsys, "compress", SAMPLES / "mlp.weights.h5", "-o", nnz, "--data", VAL_DATA, "--max-drop", "0.01",
                         "--eval", "tests.eval_hook_example:accuracy")
    assert status == 0, err
    info = api.inspect(nnz)
    assert info["plan"]["search"]["metric"] == "score" and info["ratio"] > 5
    status, out, _ = run(capsys, "verify", nnz, "--data", TEST_DATA, "--original", SAMPLES / "mlp.weights.h5",
                         "--eval", "tests.eval_hook_example:accuracy", "--json")
    assert json.loads(out)["drop"] <= 0.01 + 0.01


@pytest.mark.parametrize("hook, fragment", [("no_colon", "expected package.module:function"),
                                            ("no_such_module_xyz:f", "cannot import"),
                                            ("tests.eval_hook_example:missing", "has no function missing")])
def test_bad_eval_hooks(tmp_path, capsys, hook, fragment):
    nnz = tmp_path / "w.nnz"
    run(capsys, "compress", SAMPLES / "softmax.weights.h5", "-o", nnz)
    status, _, err = run(capsys, "verify", nnz, "--data", TEST_DATA, "--eval", hook)
    assert status == 1 and fragment in err and err.count("\n") == 1
