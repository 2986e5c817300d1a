"""``--jobs N``: compress and decompress on N worker threads write the very same bytes whatever N is.

The chunk size is lowered (``monkeypatch``) so that small files have many chunks and
tensors: both levels of parallel work (tensors, and the chunks of one part) are exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from nnzip import api, cli, pipeline


def _model(path: Path) -> Path:
    rng = np.random.default_rng(4)
    tensors = {f"t{i}": np.round(rng.standard_normal((64 + 8 * i, 96)) * 8).astype(np.float32) / 8 for i in range(12)}
    tensors["codes"] = rng.integers(0, 5, size=50_000).astype(np.uint8)
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("options", [[], ["--bits", "4"], ["--uniform", "0.35"]])
def test_output_is_byte_identical_for_every_jobs(tmp_path, monkeypatch, options):
    monkeypatch.setattr(pipeline, "CHUNK_SIZE", 2048)
    source = _model(tmp_path / "m.safetensors")
    files = {}
    for jobs in (1, 2, 3):
        out = tmp_path / f"j{jobs}.nnz"
        assert cli.main(["compress", str(source), "-o", str(out), "-q", "--jobs", str(jobs), *options]) == 0
        files[jobs] = out.read_bytes()
    assert files[1] == files[2] == files[3]
    assert max(p["chunks"] for t in api.inspect(tmp_path / "j1.nnz")["tensors"] for p in t["parts"]) > 1  # chunks were made (the file is 1.2: dictionary 2)
    rebuilt = {}
    for jobs in (1, 2, 3):
        back = tmp_path / f"back{jobs}.safetensors"
        assert cli.main(["decompress", str(tmp_path / "j1.nnz"), "-o", str(back), "-q", "--jobs", str(jobs)]) == 0
        rebuilt[jobs] = back.read_bytes()
    assert rebuilt[1] == rebuilt[2] == rebuilt[3]
    if not options:
        assert rebuilt[1] == source.read_bytes()


def test_default_jobs_is_the_machines_cores_and_same_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "CHUNK_SIZE", 4096)
    source = _model(tmp_path / "m.safetensors")
    assert cli.main(["compress", str(source), "-o", str(tmp_path / "d.nnz"), "-q"]) == 0  # jobs=None: os.cpu_count()
    assert cli.main(["compress", str(source), "-o", str(tmp_path / "one.nnz"), "-q", "--jobs", "1"]) == 0
    assert (tmp_path / "d.nnz").read_bytes() == (tmp_path / "one.nnz").read_bytes()


def test_hdf5_source_parallel_identical(tmp_path):
    """An HDF5 source (read by h5py, written back by h5py) under several threads."""
    import h5py

    source = tmp_path / "m.weights.h5"
    rng = np.random.default_rng(1)
    with h5py.File(source, "w") as h5:
        for i in range(6):
            h5.create_dataset(f"layers/d{i}/vars/0", data=rng.standard_normal((40, 50)).astype(np.float32))
    outs = []
    for jobs in (1, 2):
        out = tmp_path / f"h{jobs}.nnz"
        api.compress(source, out, jobs=jobs)
        outs.append(out.read_bytes())
        back = tmp_path / f"h{jobs}.weights.h5"
        api.decompress(out, back, jobs=jobs)
        _, tensors = api.read_tensors(out)
        with h5py.File(back) as h5:
            for name, value in tensors.items():
                assert h5[name][()].tobytes() == value.tobytes()
    assert outs[0] == outs[1]


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_jobs_is_a_usage_error(tmp_path, capsys, value):
    source = _model(tmp_path / "m.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compress", str(source), "-o", str(tmp_path / "x.nnz"), "--jobs", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--jobs" in err and "positive integer" in err
    assert not (tmp_path / "x.nnz").exists()


def test_api_rejects_bad_jobs(tmp_path):
    source = _model(tmp_path / "m.safetensors")
    with pytest.raises(api.ConfigError, match="jobs must be a positive integer"):
        api.compress(source, tmp_path / "x.nnz", jobs=0)
    assert not (tmp_path / "x.nnz").exists()
