"""A model file's own architecture and the user's data are as untrusted as its weights.

Found by the structure-aware fuzzer (tests/fuzzing.py) and by review: a ``weight_names``
attribute naming a dataset the file does not hold, a ``model_config`` that is not JSON, and
data whose shape does not fit the model each escaped as a raw KeyError/ValueError.  Each is
now one line, exit status 1, and no output.
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
from .samples import SAMPLES, VAL_DATA

from nnzip import cli


def run(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _one_line_error(status: int, err: str, *needles: str) -> None:
    assert status == 1, err
    assert err.startswith("nnzip: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


def _crafted(tmp_path, edit) -> str:
    path = tmp_path / "crafted.h5"
    shutil.copy(SAMPLES / "softmax.h5", path)
    with h5py.File(path, "r+") as h5:
        edit(h5)
    return str(path)


def test_weight_names_naming_a_missing_dataset(tmp_path, capsys):
    def edit(h5):
        h5["model_weights/dense"].attrs["weight_names"] = np.array([b"softmax/dense/kernel", b"softmax/dense/nosuch"])

    source = _crafted(tmp_path, edit)
    out = tmp_path / "out.nnz"
    status, _, err = run(capsys, "compress", source, "-o", out, "--data", VAL_DATA, "--max-drop", "0.01")
    _one_line_error(status, err, "dense/nosuch", "does not hold")
    assert not out.exists()


def test_model_config_that_is_not_json(tmp_path, capsys):
    def edit(h5):
        h5.attrs["model_config"] = "{\"class_name\": [[[[["

    source = _crafted(tmp_path, edit)
    out = tmp_path / "out.nnz"
    status, _, err = run(capsys, "compress", source, "-o", out, "--data", VAL_DATA, "--max-drop", "0.01")
    _one_line_error(status, err, "model_config", "not JSON")
    assert not out.exists()


def test_data_that_does_not_fit_the_model(tmp_path, capsys):
    nnz = tmp_path / "m.nnz"
    assert run(capsys, "compress", SAMPLES / "softmax.h5", "-o", nnz)[0] == 0
    data = tmp_path / "wrong.npz"
    np.savez(data, x=np.zeros((4, 5, 5), np.float32), y=np.zeros(4, np.int64))
    status, _, err = run(capsys, "verify", nnz, "--data", data)
    _one_line_error(status, err, "shape")
