"""Output files (issue 8, class 8): exclusive random temp names, no writing through links or
devices, never over the input, fsync-and-rename, gzip's file mode, nothing left after an error."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from .nnz_tools import blobs_of, rebuild, split_file

from nnzip import api, cli, outputs
from nnzip.errors import NnzipError
from .samples import SAMPLES

SOURCE = SAMPLES / "softmax.h5"
TEMP = re.compile(r"^\..+\.nnzip-[0-9a-f]{12}\.tmp(\.[^.]+)?$")


def run(argv, capsys):
    """cli.main(argv) -> (status, stderr)."""
    status = cli.main([str(a) for a in argv])
    return status, capsys.readouterr().err


def assert_one_line_error(status, err, *fragments):
    assert status == 1
    assert err.startswith("nnzip: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def no_temp_files(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if ".nnzip-" in p.name or ".tmp" in p.name]
    assert not left, left


@pytest.fixture
def nnz(tmp_path) -> Path:
    """A lossless .nnz of the softmax sample in its own folder."""
    path = tmp_path / "m.nnz"
    assert cli.main(["compress", str(SOURCE), "-o", str(path), "-q"]) == 0
    return path


# --- links planted at the output or the temporary name ---------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_dangling_symlink_at_output_is_refused_not_followed(tmp_path, capsys, force):
    victim = tmp_path / "elsewhere" / "victim.nnz"
    victim.parent.mkdir()
    out = tmp_path / "out.nnz"
    out.symlink_to(victim)
    status, err = run(["compress", SOURCE, "-o", out, "-q"] + (["-f"] if force else []), capsys)
    assert_one_line_error(status, err, "symbolic link", str(out))
    assert not victim.exists()
    assert out.is_symlink() and os.readlink(out) == str(victim)
    no_temp_files(tmp_path)


def test_symlink_to_existing_file_is_not_replaced_even_with_force(tmp_path, nnz, capsys):
    target = tmp_path / "real.h5"
    target.write_bytes(b"keep me")
    out = tmp_path / "link.h5"
    out.symlink_to(target)
    status, err = run(["decompress", nnz, "-o", out, "-f"], capsys)
    assert_one_line_error(status, err, "symbolic link")
    assert target.read_bytes() == b"keep me" and out.is_symlink()


def test_symlink_planted_at_the_temporary_name_is_never_followed(tmp_path, monkeypatch, capsys):
    """An attacker who guesses the first temporary name finds O_EXCL|O_NOFOLLOW refuse it; a new name is drawn."""
    victim = tmp_path / "victim"
    out = tmp_path / "out.nnz"
    names = iter(["a" * 12])
    real = outputs.secrets.token_hex
    monkeypatch.setattr(outputs.secrets, "token_hex", lambda n: next(names, None) or real(n))
    planted = tmp_path / f".out.nnz.nnzip-{'a' * 12}.tmp.nnz"
    planted.symlink_to(victim)
    status, _ = run(["compress", SOURCE, "-o", out, "-q"], capsys)
    assert status == 0
    assert not victim.exists(), "the write went through the planted link"
    assert planted.is_symlink() and os.readlink(planted) == str(victim)
    assert api.inspect(out)["source_format"] == "keras-h5"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.nnz", planted.name])


def test_old_predictable_temp_name_is_not_used(tmp_path, capsys):
    """1.0 wrote `.<stem>.<pid>.tmp<suffix>`: a link planted there must not be touched."""
    victim = tmp_path / "victim"
    out = tmp_path / "out.nnz"
    planted = tmp_path / f".out.{os.getpid()}.tmp.nnz"
    planted.symlink_to(victim)
    assert run(["compress", SOURCE, "-o", out, "-q"], capsys)[0] == 0
    assert not victim.exists() and planted.is_symlink()


# --- the output is the input -------------------------------------------------------------------


def test_decompress_onto_its_own_input_is_refused(nnz, capsys):
    before = nnz.read_bytes()
    status, err = run(["decompress", nnz, "-o", nnz, "-f"], capsys)
    assert_one_line_error(status, err, "is the input")
    assert nnz.read_bytes() == before
    no_temp_files(nnz.parent)


def test_decompress_onto_a_hard_link_of_its_input_is_refused(nnz, capsys):
    link = nnz.with_name("other.h5")
    os.link(nnz, link)
    status, err = run(["decompress", nnz, "-o", link, "-f"], capsys)
    assert_one_line_error(status, err, "is the input")
    assert link.read_bytes() == nnz.read_bytes()


def test_compress_onto_a_hard_link_of_its_input_is_refused(tmp_path, capsys):
    source = tmp_path / "m.h5"
    source.write_bytes(SOURCE.read_bytes())
    link = tmp_path / "m.nnz"
    os.link(source, link)
    status, err = run(["compress", source, "-o", link, "-f", "-q"], capsys)
    assert_one_line_error(status, err, "is the input")
    assert source.read_bytes() == SOURCE.read_bytes() and link.stat().st_ino == source.stat().st_ino


def test_decompress_onto_a_symlink_to_its_input_is_refused(nnz, capsys):
    link = nnz.with_name("alias.h5")
    link.symlink_to(nnz)
    before = nnz.read_bytes()
    status, err = run(["decompress", nnz, "-o", link, "-f"], capsys)
    assert_one_line_error(status, err)
    assert nnz.read_bytes() == before and link.is_symlink()


# --- devices, FIFOs, directories -------------------------------------------------------------


def test_dev_null_is_not_replaced(nnz, capsys):
    status, err = run(["decompress", nnz, "-o", os.devnull, "-f"], capsys)
    assert_one_line_error(status, err, "not a regular file")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_dev_stdout_is_refused_not_replaced(nnz, capsys):
    stdout = Path("/dev/stdout")
    before = os.lstat(stdout)
    status, err = run(["decompress", nnz, "-o", stdout, "-f"], capsys)
    assert_one_line_error(status, err, "to write to standard output use -c or -o -")
    after = os.lstat(stdout)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)


def test_fifo_as_output_is_refused_without_blocking(tmp_path, nnz, capsys):
    fifo = tmp_path / "pipe.h5"
    os.mkfifo(fifo)
    status, err = run(["decompress", nnz, "-o", fifo, "-f"], capsys)  # opening the FIFO would block: the test would hang
    assert_one_line_error(status, err, "not a regular file")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    no_temp_files(tmp_path)


def test_directory_as_output_is_refused(tmp_path, nnz, capsys):
    folder = tmp_path / "d.h5"
    folder.mkdir()
    status, err = run(["decompress", nnz, "-o", folder, "-f"], capsys)
    assert_one_line_error(status, err, "is a directory")
    assert folder.is_dir() and not list(folder.iterdir())


def test_missing_directory_is_refused(tmp_path, nnz, capsys):
    status, err = run(["decompress", nnz, "-o", tmp_path / "no" / "x.h5"], capsys)
    assert_one_line_error(status, err, "does not exist")


# --- -f semantics, mode, durability ------------------------------------------------------------


def test_existing_output_needs_force_and_is_then_replaced(tmp_path, nnz, capsys):
    out = tmp_path / "out.h5"
    out.write_bytes(b"old")
    status, err = run(["decompress", nnz, "-o", out], capsys)
    assert_one_line_error(status, err, "already exists", "-f")
    assert out.read_bytes() == b"old"
    old_inode = out.stat().st_ino
    assert run(["decompress", nnz, "-o", out, "-f"], capsys)[0] == 0
    assert out.stat().st_ino != old_inode, "replaced by rename, not rewritten in place"
    with h5py.File(out, "r") as h5:
        assert "model_weights" in h5
    no_temp_files(tmp_path)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_output_mode_is_0666_less_the_umask(tmp_path, nnz, capsys, umask):
    old = os.umask(umask)
    try:
        out = tmp_path / f"out-{umask:o}.h5"
        assert run(["decompress", nnz, "-o", out], capsys)[0] == 0
        nnz_out = tmp_path / f"again-{umask:o}.nnz"
        assert run(["compress", out, "-o", nnz_out, "-q"], capsys)[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(nnz_out.stat().st_mode) == 0o666 & ~umask


def test_temporary_file_is_exclusive_private_and_recognisable(tmp_path):
    out = tmp_path / "model.weights.h5"
    with outputs.atomic_output(out, force=False) as temporary:
        assert temporary.parent == out.parent and temporary.suffix == ".h5"
        assert TEMP.match(temporary.name), temporary.name
        info = os.lstat(temporary)
        assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600  # created by us, before the writer
        temporary.write_bytes(b"data")
        assert not out.exists()
    assert out.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.weights.h5"]


def test_temporary_file_replaced_during_the_write_is_not_moved_into_place(tmp_path):
    out = tmp_path / "out.h5"
    with pytest.raises(NnzipError, match="replaced while writing"):
        with outputs.atomic_output(out, force=False) as temporary:
            temporary.unlink()
            temporary.write_bytes(b"someone else's")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [temporary.name], "a file that is not ours is left alone"


def test_output_appearing_during_the_write_is_not_replaced_without_force(tmp_path):
    out = tmp_path / "out.h5"
    with pytest.raises(NnzipError, match="already exists"):
        with outputs.atomic_output(out, force=False) as temporary:
            temporary.write_bytes(b"new")
            out.write_bytes(b"raced")
    assert out.read_bytes() == b"raced"
    no_temp_files(tmp_path)


def test_sigkill_leaves_at_most_one_recognisable_temp_file(tmp_path):
    """Documented: a killed run can leave `.<name>.nnzip-<random>.tmp<suffix>`, nothing else."""
    code = ("import os, signal, sys; from pathlib import Path; from nnzip.outputs import atomic_output\n"
            "with atomic_output(Path(sys.argv[1]), False) as t:\n"
            "    t.write_bytes(b'partial'); os.kill(os.getpid(), signal.SIGKILL)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(outputs.__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out.h5")], env=env, check=False)
    assert done.returncode == -9
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and TEMP.match(left[0]) and left[0].startswith(".out.h5.nnzip-"), left


# --- nothing left after an error -------------------------------------------------------------


def test_error_while_writing_leaves_no_output_and_no_temp(tmp_path, nnz):
    out = tmp_path / "out.h5"
    calls = []

    def fail_on_second_tensor(done, total, name):
        calls.append(name)
        if done == 1:
            raise NnzipError("stop")  # part-way: the temporary file exists and holds the first tensor

    with pytest.raises(NnzipError, match="stop"):
        api.decompress(nnz, out, progress=fail_on_second_tensor)
    assert len(calls) == 2
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nnz"]


def test_corrupt_last_tensor_leaves_no_output_and_no_temp(tmp_path, capsys):
    """Through the CLI: the last blob (a tensor decoded after others were written) is corrupt."""
    good = tmp_path / "good.nnz"
    assert cli.main(["compress", str(SOURCE), "-o", str(good), "--bits", "4", "-q"]) == 0
    data = good.read_bytes()
    header, blobs = split_file(data)[0], blobs_of(data)
    bad = tmp_path / "bad.nnz"
    for fill in (b"\xff", b"\x00", b"\x55"):
        blobs[-1] = fill * len(blobs[-1])
        bad.write_bytes(rebuild(header, blobs))
        try:
            api.read_tensors(bad)
        except NnzipError:
            break
    else:
        pytest.fail("no corruption of the last blob was detected")
    out = tmp_path / "out.h5"
    status, err = run(["decompress", bad, "-o", out], capsys)
    assert_one_line_error(status, err)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nnz", "good.nnz"]


def test_long_output_name_still_gets_a_temporary_name(tmp_path, nnz, capsys):
    out = tmp_path / ("m" * 240 + ".h5")  # fits NAME_MAX (255); the temporary name must too
    assert run(["decompress", nnz, "-o", out], capsys)[0] == 0
    assert out.exists()
    no_temp_files(tmp_path)


@pytest.mark.parametrize("name", ["bad\x00name.h5", "bad\ud800name.h5"])
def test_output_name_the_file_system_cannot_take_is_a_one_line_error(tmp_path, nnz, capsys, name):
    status, err = run(["decompress", nnz, "-o", tmp_path / name], capsys)
    assert_one_line_error(status, err, "not a valid file name")
    no_temp_files(tmp_path)
