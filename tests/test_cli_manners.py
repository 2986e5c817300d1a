"""Command-line manners after gzip/xz/zstd (issue 10): stdin/stdout, several inputs, --keep/--rm,
-v/-q/-t, no abbreviations, exit codes in --help, closed pipes, --layer typos, --eval hooks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnzip import cli, formats
from .samples import SAMPLES, TEST_DATA

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, *fragments, code=1):
    """One ``nnzip: error:`` line naming every fragment, and exit status *code* (2: flags that contradict each other)."""
    assert status == code
    assert err.startswith("nnzip: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def leftovers(directory: Path) -> list[str]:
    """Temporary files a run left (the safe-output pattern)."""
    return [p.name for p in directory.iterdir() if ".nnzip-" in p.name]


def nnzip_process(*argv, stdin=None, env_extra=None, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "torch", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "nnzip", *map(str, argv)], stdin=stdin, capture_output=True, env=env, **kwargs)


@pytest.fixture
def mlp(tmp_path):
    path = tmp_path / "mlp.h5"
    shutil.copy(SAMPLES / "mlp.h5", path)
    return path


# --- options ----------------------------------------------------------------------------


def test_no_abbreviations_keep_is_not_keep_optimizer(mlp, capsys):
    with pytest.raises(SystemExit) as exit_info:  # usage errors leave main as argparse does, status 2
        cli.main(["compress", str(mlp), "--keep-opt"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --keep-opt" in capsys.readouterr().err
    assert not mlp.with_suffix(".nnz").exists()
    # --keep is its own flag (the default): the optimizer state is still dropped
    status, out, _ = run(capsys, "compress", mlp, "--keep")
    assert status == 0 and mlp.exists()
    info = cli.api.inspect(mlp.with_suffix(".nnz"))
    assert info["optimizer"] == "dropped"


def test_help_lists_the_exit_codes(capsys):
    for argv in (["--help"], ["compress", "--help"], ["decompress", "--help"], ["verify", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "exit status:" in out and "3  accuracy budget exceeded" in out and "2  usage error" in out


def test_summary_line_gives_file_and_tensor_ratios(mlp, capsys):
    status, out, _ = run(capsys, "compress", mlp)
    assert status == 0
    line = out.strip()
    size_in, size_out = mlp.stat().st_size, mlp.with_suffix(".nnz").stat().st_size
    assert f"({size_in / size_out:.1f}x the file, " in line and "x the tensors)" in line and " MB -> " in line


def test_verbose_lists_every_tensor_and_quiet_prints_nothing(mlp, tmp_path, capsys):
    status, out, _ = run(capsys, "compress", mlp, "-v", "--bits", "4")
    assert status == 0
    tensors = formats.read_model(mlp).tensors
    for name in tensors:
        assert f"  {name}: " in out
    assert "kmeans(bits=4)" in out
    status, out, err = run(capsys, "compress", mlp, "-q", "-f", "-o", tmp_path / "q.nnz")
    assert status == 0 and out == "" and err == ""


def test_several_inputs_each_get_their_own_output_and_a_total(tmp_path, capsys):
    inputs = []
    for name in ("mlp.h5", "softmax.h5", "cnn.weights.h5"):
        shutil.copy(SAMPLES / name, tmp_path / name)
        inputs.append(tmp_path / name)
    status, out, _ = run(capsys, "compress", *inputs)
    assert status == 0
    lines = out.strip().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("total: 3 files, ")
    for source, line in zip(inputs, lines):
        assert line.startswith(f"{source} -> ") and io_default(source).exists()
    # decompress several at once too, each beside its .nnz
    for source in inputs:
        source.unlink()
    status, out, _ = run(capsys, "decompress", *map(io_default, inputs))
    assert status == 0 and all(source.exists() for source in inputs)
    # -o names one output: refused with several inputs, before anything is written
    status, _, err = run(capsys, "compress", *inputs, "-o", tmp_path / "x.nnz", "-f")
    assert_one_line_error(status, err, "-o/--output names one output", code=2)
    assert not (tmp_path / "x.nnz").exists()


def io_default(source: Path) -> Path:
    return cli.api.default_output(source)


def test_rm_removes_the_input_only_after_success(mlp, tmp_path, capsys):
    nnz = mlp.with_suffix(".nnz")
    nnz.write_bytes(b"in the way")
    status, _, err = run(capsys, "compress", mlp, "--rm")
    assert_one_line_error(status, err, "already exists")
    assert mlp.exists() and nnz.read_bytes() == b"in the way"
    nnz.unlink()
    status, _, _ = run(capsys, "compress", mlp, "--rm")
    assert status == 0 and not mlp.exists() and nnz.exists()
    # decompress --rm: the .nnz goes once the rebuilt file is written and read back
    status, _, _ = run(capsys, "decompress", nnz, "--rm")
    assert status == 0 and mlp.exists() and not nnz.exists()
    assert set(formats.read_model(mlp).tensors) == set(formats.read_model(SAMPLES / "mlp.h5").tensors)
    assert leftovers(tmp_path) == []


def test_rm_keeps_the_input_when_decompress_fails(mlp, tmp_path, capsys):
    nnz = tmp_path / "m.nnz"
    assert run(capsys, "compress", mlp, "-o", nnz)[0] == 0
    data = bytearray(nnz.read_bytes())
    data[-3] ^= 0xFF  # inside the last blob: its CRC fails
    nnz.write_bytes(bytes(data))
    status, _, err = run(capsys, "decompress", nnz, "-o", tmp_path / "out.h5", "--rm")
    assert_one_line_error(status, err, "rule 6.13")
    assert nnz.exists() and not (tmp_path / "out.h5").exists() and leftovers(tmp_path) == []


def test_test_option_checks_everything_and_writes_nothing(mlp, tmp_path, capsys):
    nnz = tmp_path / "m.nnz"
    assert run(capsys, "compress", mlp, "-o", nnz, "--bits", "3")[0] == 0
    before = sorted(p.name for p in tmp_path.iterdir())
    status, out, _ = run(capsys, "decompress", "-t", nnz)
    assert status == 0 and "OK" in out and "blob CRCs checked" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    data = bytearray(nnz.read_bytes())
    data[-3] ^= 0xFF
    nnz.write_bytes(bytes(data))
    status, _, err = run(capsys, "decompress", "--test", nnz)
    assert_one_line_error(status, err, "rule 6.13", "corrupt")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_layer_matching_nothing_names_close_matches(mlp, tmp_path, capsys):
    output = tmp_path / "typo.nnz"
    status, _, err = run(capsys, "compress", mlp, "-o", output, "--bits", "4", "--layer", "hiden:bits=2")
    assert_one_line_error(status, err, "--layer 'hiden' matches no tensor", "close matches: hidden")
    assert not output.exists() and leftovers(tmp_path) == []
    status, _, err = run(capsys, "compress", mlp, "-o", output, "--layer", "zzzzzz:bits=2")
    assert_one_line_error(status, err, "matches no tensor; no close match")
    assert run(capsys, "compress", mlp, "-o", output, "--layer", "hidden:bits=2")[0] == 0


def test_inspect_says_bytes_as_stored(mlp, capsys):
    assert run(capsys, "compress", mlp)[0] == 0
    status, out, _ = run(capsys, "inspect", mlp.with_suffix(".nnz"))
    assert status == 0 and "bytes as stored" in out and "as float" not in out


# --- --eval hooks -----------------------------------------------------------------------


def test_eval_hook_as_a_file_path_and_bad_hooks(tmp_path, capsys):
    nnz = tmp_path / "w.nnz"
    assert run(capsys, "compress", SAMPLES / "mlp.weights.h5", "-o", nnz)[0] == 0
    hook = Path(__file__).parent / "eval_hook_example.py"
    status, out, err = run(capsys, "verify", nnz, "--data", TEST_DATA, "--original", SAMPLES / "mlp.weights.h5",
                           "--eval", f"{hook}:accuracy", "--json")
    assert status == 0, err
    assert '"drop": 0' in out
    broken = tmp_path / "broken_hook.py"
    broken.write_text("def score(w, x, y)\n    return 1\n")
    for spec, fragment in ((f"{broken}:score", "SyntaxError"), (f"{tmp_path / 'absent.py'}:f", "does not exist"),
                           (f"{hook}:nosuch", "has no function nosuch"), ("no_such_module_xyz:f", "cannot import no_such_module_xyz")):
        status, _, err = run(capsys, "verify", nnz, "--data", TEST_DATA, "--eval", spec)
        assert_one_line_error(status, err, fragment)


def test_eval_hook_module_from_the_current_directory(tmp_path):
    nnz = tmp_path / "w.nnz"
    assert nnzip_process("compress", SAMPLES / "mlp.weights.h5", "-o", nnz, "-q").returncode == 0
    (tmp_path / "cwd_hook.py").write_text("import numpy as np\ndef norm(weights):\n    return float(sum(np.sum(w.astype(float) ** 2) for w in weights.values()))\n")
    done = nnzip_process("verify", nnz, "--data", TEST_DATA, "--original", SAMPLES / "mlp.weights.h5", "--eval", "cwd_hook:norm", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert b"drop" in done.stdout


# --- pipes, through real processes --------------------------------------------------------


def test_stdin_to_stdout_round_trip(tmp_path):
    spool = tmp_path / "tmp"
    spool.mkdir()
    env = {"TMPDIR": str(spool)}
    with open(SAMPLES / "mlp.h5", "rb") as source:
        packed = nnzip_process("compress", "-", "--bits", "4", stdin=source, env_extra=env)
    assert packed.returncode == 0, packed.stderr
    nnz = tmp_path / "piped.nnz"
    nnz.write_bytes(packed.stdout)
    assert b"stdin -> stdout:" in packed.stderr and b"x the file" in packed.stderr
    info = cli.api.inspect(nnz)
    assert info["source_format"] == "keras-h5"
    rebuilt = tmp_path / "rebuilt.h5"
    with open(nnz, "rb") as source, open(rebuilt, "wb") as sink:
        unpacked = subprocess.run([sys.executable, "-m", "nnzip", "decompress", "-c", "-"], stdin=source, stdout=sink,
                                  stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "torch", **env})
    assert unpacked.returncode == 0, unpacked.stderr
    _, expected = cli.api.read_tensors(nnz)
    got = formats.read_model(rebuilt).tensors
    assert list(got) == list(expected)
    for name in expected:
        assert np.array_equal(got[name], expected[name])
    assert list(spool.iterdir()) == []  # the private spool directories are gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["piped.nnz", "rebuilt.h5", "tmp"]


def test_compress_c_keeps_the_input_and_refuses_rm(mlp, tmp_path):
    done = nnzip_process("compress", "-c", mlp)
    assert done.returncode == 0 and mlp.exists() and not mlp.with_suffix(".nnz").exists()
    (tmp_path / "c.nnz").write_bytes(done.stdout)
    assert cli.api.inspect(tmp_path / "c.nnz")["source_filename"] == "mlp.h5"
    done = nnzip_process("compress", "-c", "--rm", mlp)
    assert done.returncode == 2 and done.stdout == b"" and done.stderr.count(b"\n") == 1 and mlp.exists()  # a usage error


def test_closed_pipe_exits_quietly(tmp_path):
    # enough tensors that inspect's table overflows the pipe buffer after head has gone
    many = tmp_path / "many.npz"
    np.savez(many, **{f"tensor_{i:05d}": np.full(3, i, np.float32) for i in range(3000)})
    nnz = tmp_path / "many.nnz"
    assert nnzip_process("compress", many, "-o", nnz, "-q").returncode == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", "-o", "pipefail", "-c", f'"{sys.executable}" -m nnzip inspect "{nnz}" | head -n 2'],
                          capture_output=True, env=env)
    assert done.stdout.count(b"\n") == 2
    assert done.stderr == b""  # no traceback, no "Broken pipe" message
    assert done.returncode in (0, 1)  # 1 when the write failed (nnzip noticed), 0 when all fitted the pipe
