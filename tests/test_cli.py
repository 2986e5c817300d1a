"""The command line: default names, overwrite protection, one-line errors, inspect output."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from nnzip import cli
from .samples import SAMPLES


@pytest.fixture
def mlp(tmp_path):
    path = tmp_path / "mlp.h5"
    shutil.copy(SAMPLES / "mlp.h5", path)
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, *fragments):
    assert status != 0
    assert err.startswith("nnzip: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_default_names_follow_gzip_habits(mlp, capsys):
    status, out, _ = run(capsys, "compress", mlp)
    assert status == 0 and (mlp.parent / "mlp.nnz").exists()
    assert "mlp.nnz" in out and "x the file" in out and "x the tensors)" in out
    # decompressing next to the original refuses to overwrite it
    status, _, err = run(capsys, "decompress", mlp.parent / "mlp.nnz")
    assert_one_line_error(status, err, "mlp.h5 already exists", "-f")
    status, out, _ = run(capsys, "decompress", mlp.parent / "mlp.nnz", "-f")
    assert status == 0 and "mlp.h5" in out
    with h5py.File(mlp) as h5:
        assert "model_weights" in h5


def test_weights_h5_default_output_keeps_its_suffix(tmp_path, capsys):
    source = tmp_path / "cnn.weights.h5"
    shutil.copy(SAMPLES / "cnn.weights.h5", source)
    assert run(capsys, "compress", source)[0] == 0
    nnz = tmp_path / "cnn.weights.nnz"
    assert nnz.exists()
    source.unlink()
    status, out, _ = run(capsys, "decompress", nnz)
    assert status == 0 and source.exists()


def test_existing_output_not_overwritten_without_force(mlp, capsys):
    target = mlp.parent / "mlp.nnz"
    target.write_bytes(b"keep me")
    status, _, err = run(capsys, "compress", mlp)
    assert_one_line_error(status, err, "already exists")
    assert target.read_bytes() == b"keep me"
    assert run(capsys, "compress", mlp, "-f")[0] == 0
    assert target.read_bytes() != b"keep me"


def test_missing_input(tmp_path, capsys):
    status, _, err = run(capsys, "compress", tmp_path / "nope.h5")
    assert_one_line_error(status, err, "nope.h5")


def test_non_hdf5_input(tmp_path, capsys):
    path = tmp_path / "notes.h5"
    path.write_text("hello")
    status, _, err = run(capsys, "compress", path)
    assert_one_line_error(status, err, "not a supported model file")
    assert not (tmp_path / "notes.nnz").exists()


def test_non_keras_hdf5_input(tmp_path, capsys):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as h5:
        h5["x"] = np.arange(3)
    status, _, err = run(capsys, "compress", path)
    assert_one_line_error(status, err, "not a Keras model or weights file")
    assert not (tmp_path / "data.nnz").exists()


def test_nnz_given_to_compress(tmp_path, capsys):
    path = tmp_path / "x.nnz"
    path.write_bytes(b"\x89NNZ\r\n\x1a\n" + b"\0" * 40)
    status, _, err = run(capsys, "compress", path, "-o", tmp_path / "y.nnz")
    assert_one_line_error(status, err, "not a supported model file")


def test_model_given_to_decompress(mlp, capsys):
    status, _, err = run(capsys, "decompress", mlp, "-o", mlp.parent / "out.h5")
    assert_one_line_error(status, err, "not an nnzip file")


def test_output_into_missing_directory(mlp, capsys):
    status, _, err = run(capsys, "compress", mlp, "-o", mlp.parent / "no" / "such" / "m.nnz")
    assert_one_line_error(status, err, "does not exist")


def test_bad_flag_value(mlp, capsys):
    status, _, err = run(capsys, "compress", mlp, "--bits", "12")
    assert_one_line_error(status, err, "bits must be in 1..8")
    status, _, err = run(capsys, "compress", mlp, "--layer", "hidden:colour=red")
    assert_one_line_error(status, err, "unknown setting 'colour'")
    status, _, err = run(capsys, "compress", mlp, "--lossless", "--bits", "4")
    assert_one_line_error(status, err, "--lossless contradicts --bits")
    assert not (mlp.parent / "mlp.nnz").exists()


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("nnzip: error: ") and err.count("\n") == 1


def test_inspect_text_and_json(mlp, capsys):
    run(capsys, "compress", mlp)
    status, out, _ = run(capsys, "inspect", mlp.parent / "mlp.nnz")
    assert status == 0
    assert "source keras-h5 (mlp.h5)" in out and "optimizer state dropped: /optimizer_weights" in out
    assert "bits/w" in out and "byteplanes" in out
    status, out, _ = run(capsys, "inspect", mlp.parent / "mlp.nnz", "--json")
    info = json.loads(out)
    assert info["source_format"] == "keras-h5"
    kernel = next(t for t in info["tensors"] if t["name"].endswith("kernel"))
    assert kernel["error"] == 0 and 0 < kernel["bits_per_weight"] < 32
    assert kernel["stored_bytes"] == sum(p["bytes"] for p in kernel["parts"])


def test_keep_optimizer_flag(mlp, capsys):
    run(capsys, "compress", mlp, "--keep-optimizer")
    status, out, _ = run(capsys, "inspect", mlp.parent / "mlp.nnz", "--json")
    info = json.loads(out)
    assert info["dropped"] == [] and any(t["name"].startswith("optimizer_weights/") for t in info["tensors"])


def test_help_explains_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["compress", "--help"])
    out = capsys.readouterr().out
    for flag in ("--bits", "--prune", "--rank", "--fft-keep", "--layer", "--plan", "--keep-optimizer", "--lossless"):
        assert flag in out
