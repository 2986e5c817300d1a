"""``--scheduler ADDRESS``: the tensors of a compress or decompress run on a dask cluster (nnzip.distributed).

A real ``dask.distributed.LocalCluster`` (two worker processes, one thread each) stands in for
the machines: the workers are other processes that import nnzip, read the input from its path
themselves and send back encoded or decoded tensors.  Every run is compared byte for byte with a
local run of the same command; failures (an unreachable scheduler, a bad address, a worker that
sees another file, no dask) must give exit status 1 or an NnzipError with one line, and leave no
output and no temporary file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import nnzip
from nnzip import api, cli
from nnzip.container import open_container
from nnzip.errors import NnzipError
from nnzip.options import scheduler_from_options
from .test_sharded import INDEX, files_of, make_checkpoint

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

distributed = pytest.importorskip("distributed")  # CI installs nnzip[dask]; NNZIP_NO_SKIPS=1 fails a skip


@pytest.fixture(scope="module")
def scheduler():
    """The address of a LocalCluster of two worker processes with one thread each (started once, ~5 s)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def _safetensors(path: Path) -> Path:
    """A small model: float tensors for the lossy settings, small ones, and a 4.5 MB integer tensor (coded in chunks, format 1.1)."""
    rng = np.random.default_rng(9)
    tensors = {f"block.{i}.weight": (rng.standard_normal((160 + 16 * i, 128)) * 0.05).astype(np.float32) for i in range(5)}
    tensors["embed.weight"] = (rng.standard_normal((600, 512)) * 0.02).astype(np.float32)
    tensors["codes"] = np.minimum(rng.geometric(0.05, size=4_500_000), 255).astype(np.uint8)  # 8 bits: no bitpack
    tensors["block.0.bias"] = rng.standard_normal(128).astype(np.float32)
    tensors["steps"] = np.arange(40, dtype=np.int64)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def _both(tmp_path: Path, command: str, source: Path, suffix: str, scheduler: str, *options: str) -> tuple[Path, Path]:
    """*command* run locally and through the cluster; returns the two outputs."""
    local, remote = tmp_path / f"local{suffix}", tmp_path / f"remote{suffix}"
    if suffix == INDEX:  # a sharded checkpoint is written as a folder of shards beside its index
        local, remote = tmp_path / "local" / INDEX, tmp_path / "remote" / INDEX
        local.parent.mkdir()
        remote.parent.mkdir()
    assert cli.main([command, str(source), "-o", str(local), "-q", *options]) == 0
    assert cli.main([command, str(source), "-o", str(remote), "-q", "--scheduler", scheduler, *options]) == 0
    return local, remote


def _assert_clean_failure(status_or_error, err: str, folder: Path, before: list) -> None:
    """Exit status 1 (when given), one stderr line, and the folder exactly as it was."""
    if status_or_error is not None:
        assert status_or_error == 1, err
    assert err.startswith("nnzip: error: ") and err.count("\n") == 1, err
    assert sorted(folder.rglob("*")) == before, "a failed run left a file behind"


# --- byte identity with a local run --------------------------------------------------------------------


@pytest.mark.parametrize("options", [[], ["--bits", "4"], ["--uniform", "0.35"]])
def test_sample_h5_compresses_to_the_local_bytes(tmp_path, scheduler, options):
    # HDF5 tensors are read by the client and scattered to the workers
    local, remote = _both(tmp_path, "compress", SAMPLES / "mlp.h5", ".nnz", scheduler, *options)
    assert remote.read_bytes() == local.read_bytes()


@pytest.mark.parametrize("options", [[], ["--uniform", "0.35"], ["--bits", "4"]])
def test_safetensors_compresses_and_decompresses_to_the_local_bytes(tmp_path, scheduler, options):
    # safetensors tensors are read by the workers themselves, from the file's path
    source = _safetensors(tmp_path / "m.safetensors")
    local, remote = _both(tmp_path, "compress", source, ".nnz", scheduler, *options)
    assert remote.read_bytes() == local.read_bytes()
    with open_container(local) as container:  # the 4.5 MB tensor went in chunks
        assert any("chunk_size" in part for entry in container.header["tensors"] for part in entry["parts"])
    back_local, back_remote = _both(tmp_path, "decompress", local, ".safetensors", scheduler)
    assert back_remote.read_bytes() == back_local.read_bytes()
    if not options:
        assert back_remote.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("options", [[], ["--bits", "4"]])
def test_sharded_checkpoint_round_trips_through_the_cluster(tmp_path, scheduler, options):
    source = tmp_path / "ckpt"
    make_checkpoint(source, shards=3)
    local, remote = _both(tmp_path, "compress", source / INDEX, ".nnz", scheduler, *options)
    assert remote.read_bytes() == local.read_bytes()
    out_local, out_remote = _both(tmp_path, "decompress", local, INDEX, scheduler)
    assert files_of(out_remote.parent) == files_of(out_local.parent)
    if not options:
        assert files_of(out_remote.parent) == files_of(source)  # the same shards and index, byte for byte


def test_h5_decompresses_to_the_local_bytes(tmp_path, scheduler):
    nnz = tmp_path / "cnn.nnz"
    assert cli.main(["compress", str(SAMPLES / "cnn.h5"), "-o", str(nnz), "-q", "--bits", "5"]) == 0
    local, remote = _both(tmp_path, "decompress", nnz, ".h5", scheduler)
    assert remote.read_bytes() == local.read_bytes()


def test_keyword_api_takes_the_scheduler(tmp_path, scheduler):
    source = _safetensors(tmp_path / "m.safetensors")
    report = nnzip.compress(source, tmp_path / "r.nnz", uniform=0.35, scheduler=scheduler)
    local = nnzip.compress(source, tmp_path / "l.nnz", uniform=0.35)
    assert (tmp_path / "r.nnz").read_bytes() == (tmp_path / "l.nnz").read_bytes()
    # the errors as the header records them (8 decimals): the norms' last bits depend on the arrays' memory alignment
    assert [(t.name, t.stored_bytes, round(t.error, 8)) for t in report.tensors] == [(t.name, t.stored_bytes, round(t.error, 8)) for t in local.tensors]
    nnzip.decompress(tmp_path / "r.nnz", tmp_path / "back.safetensors", scheduler=scheduler, scheduler_timeout=30)
    assert nnzip.load(tmp_path / "r.nnz")["steps"].tolist() == list(range(40))


# --- what a worker sees must be the client's file --------------------------------------------------------


def test_worker_refuses_a_file_changed_after_the_client_read_it(tmp_path, scheduler):
    source = _safetensors(tmp_path / "m.safetensors")
    data = bytearray(source.read_bytes())
    at = data.index(b'"format":"pt"')

    def change_header(done, total, name):  # after the client read the header, before any worker reads
        if done == 0:
            data[at + 10:at + 12] = b"xx"  # same size, another header: another file
            source.write_bytes(bytes(data))

    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(NnzipError) as caught:
        api.compress(source, tmp_path / "m.nnz", progress=change_header, scheduler=scheduler_from_options(scheduler))
    message = str(caught.value)
    assert "is not the file the client read (another header" in message and "a file system every worker shares" in message, message
    assert "\n" not in message, message
    assert "dask worker tcp://" in message, message
    assert sorted(tmp_path.rglob("*")) == before  # no output, no temporary file


def test_worker_that_cannot_open_the_input_stops_the_run(tmp_path, scheduler):
    source = make_checkpoint(tmp_path / "ckpt", shards=2) and tmp_path / "ckpt" / INDEX

    def remove_shards(done, total, name):  # the client has read the index and every shard's header
        if done == 0:
            for shard in (tmp_path / "ckpt").glob("*.safetensors"):
                shard.unlink()

    with pytest.raises(NnzipError) as caught:
        api.compress(source, tmp_path / "c.nnz", progress=remove_shards, scheduler=scheduler_from_options(scheduler))
    message = str(caught.value)
    assert "cannot open" in message and "file system every worker shares" in message and "\n" not in message, message
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ckpt", INDEX]


def test_worker_refuses_a_changed_nnz_while_decompressing(tmp_path, scheduler):
    source = _safetensors(tmp_path / "m.safetensors")
    nnz = tmp_path / "m.nnz"
    assert cli.main(["compress", str(source), "-o", str(nnz), "-q"]) == 0
    other = tmp_path / "other.nnz"
    assert cli.main(["compress", str(source), "-o", str(other), "-q", "--bits", "3"]) == 0
    output = tmp_path / "out" / "back.safetensors"
    output.parent.mkdir()

    def swap(done, total, name):  # the client has checked m.nnz's header; the workers then find another file
        if done == 0:
            os.replace(other, nnz)

    with pytest.raises(NnzipError) as caught:
        api.decompress(nnz, output, progress=swap, scheduler=scheduler_from_options(scheduler))
    assert "is not the file the client read" in str(caught.value), caught.value
    assert list(output.parent.iterdir()) == []


# --- reaching the cluster -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_unreachable_scheduler_is_one_line_after_the_timeout(tmp_path, capsys, command):
    source = SAMPLES / "mlp.h5"
    if command == "decompress":
        source = tmp_path / "mlp.nnz"
        assert cli.main(["compress", str(SAMPLES / "mlp.h5"), "-o", str(source), "-q"]) == 0
    before = sorted(tmp_path.rglob("*"))
    status = cli.main([command, str(source), "-o", str(tmp_path / "out.x"), "--scheduler", f"tcp://127.0.0.1:{_free_port()}",
                       "--scheduler-timeout", "1"])
    err = capsys.readouterr().err
    _assert_clean_failure(status, err, tmp_path, before)
    assert "cannot reach the dask scheduler at tcp://127.0.0.1:" in err and "within 1 s" in err, err


def test_scheduler_without_workers_is_one_line_after_the_timeout(tmp_path, capsys):
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=":0") as empty:
        before = sorted(tmp_path.rglob("*"))
        status = cli.main(["compress", str(SAMPLES / "mlp.h5"), "-o", str(tmp_path / "o.nnz"), "--scheduler", empty.scheduler_address,
                           "--scheduler-timeout", "1"])
    err = capsys.readouterr().err
    _assert_clean_failure(status, err, tmp_path, before)
    assert f"the dask scheduler at {empty.scheduler_address} has no worker after 1 s" in err, err


@pytest.mark.parametrize("address, fragment", [
    ("ftp://host:8786", "unknown address scheme 'ftp'"),
    ("tcp://127.0.0.1:99999", "a port from 1 to 65535"),
    ("tcp://[::1", "not a dask scheduler address"),
    ("inproc://x", "not a dask scheduler address"),
    ("tcp://a b:1", "--scheduler must be a scheduler address"),
])
def test_bad_address_is_refused_at_once(tmp_path, capsys, address, fragment):
    before = sorted(tmp_path.rglob("*"))
    status = cli.main(["compress", str(SAMPLES / "mlp.h5"), "-o", str(tmp_path / "o.nnz"), "--scheduler", address])
    err = capsys.readouterr().err
    _assert_clean_failure(status, err, tmp_path, before)
    assert fragment in err, err


@pytest.mark.parametrize("timeout", ["0", "-3", "nan", "inf"])
def test_bad_timeout_is_refused(tmp_path, capsys, timeout):
    before = sorted(tmp_path.rglob("*"))
    status = cli.main(["compress", str(SAMPLES / "mlp.h5"), "-o", str(tmp_path / "o.nnz"), "--scheduler", "tcp://127.0.0.1:8786",
                       "--scheduler-timeout", timeout])
    err = capsys.readouterr().err
    _assert_clean_failure(status, err, tmp_path, before)
    assert "--scheduler-timeout must be a positive number of seconds" in err, err


def test_budget_search_is_not_spread(tmp_path, capsys):
    before = sorted(tmp_path.rglob("*"))
    status = cli.main(["compress", str(SAMPLES / "mlp.h5"), "-o", str(tmp_path / "o.nnz"), "--scheduler", "tcp://127.0.0.1:8786",
                       "--data", str(SAMPLES / "fashion-mnist-val.npz"), "--max-drop", "0.01"])
    err = capsys.readouterr().err
    assert status == 2, err  # two options that contradict each other: a usage error (--help's exit codes)
    _assert_clean_failure(None, err, tmp_path, before)
    assert "the --max-drop search runs on this machine" in err, err


def test_keyword_api_checks_the_scheduler_like_the_cli(tmp_path):
    with pytest.raises(NnzipError, match="--scheduler must be a scheduler address"):
        nnzip.compress(SAMPLES / "mlp.h5", tmp_path / "o.nnz", scheduler=8786)
    with pytest.raises(NnzipError, match="--scheduler-timeout must be"):
        nnzip.decompress(tmp_path / "missing.nnz", scheduler="tcp://127.0.0.1:8786", scheduler_timeout=True)
    assert list(tmp_path.iterdir()) == []


def test_without_dask_the_error_names_the_extra(tmp_path):
    # a fresh interpreter where importing distributed fails, as on a machine without nnzip[dask]
    code = ("import sys; sys.modules['distributed'] = None\n"
            "from nnzip import cli\n"
            f"sys.exit(cli.main(['compress', {str(SAMPLES / 'mlp.h5')!r}, '-o', {str(tmp_path / 'o.nnz')!r}, "
            "'--scheduler', 'tcp://127.0.0.1:8786']))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(nnzip.__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and "install nnzip[dask]" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []
