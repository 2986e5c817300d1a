"""Issue 10, the rest of the command-line manners: --eval hooks' drops in their own units and
bad hooks as one line, bias correction recorded (rule 3.9) and shown by inspect, inspect's
wording, the progress bar and log lines on a real terminal (a pty), decompress's summary
and total, and an example in every public docstring."""

from __future__ import annotations

import copy
import doctest
import fcntl
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import pytest

import nnzip
import nnzip.api
import nnzip.errors
import nnzip.evaluate
from .nnz_tools import blobs_of, rebuild, split_file
from nnzip import api, cli
from .samples import SAMPLES, TEST_DATA, VAL_DATA
from .test_cli_manners import assert_one_line_error, leftovers, run

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = SAMPLES / "mlp.weights.h5"
HOOK_EXAMPLE = Path(__file__).parent / "eval_hook_example.py"


@pytest.fixture(scope="module")
def lossy_weights(tmp_path_factory) -> Path:
    """The weights-only MLP at 2 bits: a visible accuracy drop for the hooks to measure."""
    nnz = tmp_path_factory.mktemp("hooks") / "w2.nnz"
    assert cli.main(["compress", str(WEIGHTS), "-o", str(nnz), "--bits", "2", "-q"]) == 0
    return nnz


def write_hook(directory: Path, body: str) -> Path:
    path = directory / "my_hook.py"
    path.write_text("import numpy as np\nfrom tests import eval_hook_example as ex\n" + body)
    return path


# --- --eval hooks: units -----------------------------------------------------------------


def test_hook_drop_is_absolute_in_the_hooks_units(lossy_weights, tmp_path, capsys):
    hook = write_hook(tmp_path, "def points(w, x, y):\n    return 100 * ex.accuracy(w, x, y)\n")
    args = ("verify", lossy_weights, "--data", TEST_DATA, "--original", WEIGHTS, "--eval", f"{hook}:points")
    status, out, err = run(capsys, *args, "--json")
    assert status == 0, err
    info = json.loads(out)
    assert info["drop_kind"] == "absolute" and info["metric"] == "score"
    assert info["drop"] == pytest.approx(info["original"] - info["rebuilt"], abs=1e-12)
    assert info["original"] > 50 and info["drop"] > 0.1  # points, not a fraction of one: a 2-bit MLP loses some
    status, out, _ = run(capsys, *args)
    assert status == 0 and f"drop     {info['drop']:+.6g} (absolute, in the hook's units)" in out and "%" not in out
    # --max-drop reads the same units: above the drop passes, below it exits 3
    assert run(capsys, *args, "--max-drop", str(info["drop"] + 0.01))[0] == 0
    status, _, err = run(capsys, *args, "--max-drop", str(info["drop"] / 2))
    assert status == 3 and "exceeds --max-drop" in err


def test_hook_says_its_drop_is_relative(lossy_weights, tmp_path, capsys):
    hook = write_hook(tmp_path, "def points(w, x, y):\n    return 100 * ex.accuracy(w, x, y)\npoints.nnzip_drop = 'relative'\n")
    args = ("verify", lossy_weights, "--data", TEST_DATA, "--original", WEIGHTS, "--eval", f"{hook}:points")
    status, out, err = run(capsys, *args, "--json")
    assert status == 0, err
    info = json.loads(out)
    assert info["drop_kind"] == "relative"
    assert info["drop"] == pytest.approx((info["original"] - info["rebuilt"]) / info["original"], rel=1e-9)
    status, out, _ = run(capsys, *args)
    assert status == 0 and f"{info['drop']:+.2%} (relative)" in out


def test_relative_hook_drop_is_what_the_budget_search_bounds(tmp_path, capsys):
    """The search and verify count a relative hook's drop the same way (evaluate.quality_drop)."""
    evaluator = nnzip.evaluate.HookEvaluator(f"{HOOK_EXAMPLE}:accuracy", nnzip.evaluate.load_data(TEST_DATA))
    assert evaluator.drop_kind == "absolute" and evaluator.drop(0.8, 0.75) == pytest.approx(0.05)
    evaluator.drop_kind = "relative"
    assert evaluator.drop(0.8, 0.75) == pytest.approx(0.0625)
    assert evaluator.drop(-2.0, -2.5) == pytest.approx(0.25)  # a negative score's drop is still positive when worse


# --- --eval hooks: bad hooks, each one line ---------------------------------------------

BAD_HOOKS = [
    ("def f(w, x, y):\n    raise RuntimeError('model exploded')\n", "raised RuntimeError: model exploded"),
    ("def f(w, x, y):\n    return 'high'\n", "returned str, not a number"),
    ("def f(w, x, y):\n    return float('nan')\n", "returned nan, not a finite score"),
    ("def f(w, x, y):\n    return np.inf\n", "returned inf, not a finite score"),
    ("def f(w, x, y):\n    return np.ones(3)\n", "returned ndarray, not a number"),
    ("def f(w, x, y):\n    return True\n", "returned bool, not a number"),
    ("def f(w, x, y):\n    return None\n", "returned NoneType, not a number"),
    ("def f(w, x, y):\n    w['layers/dense/vars/0'][0, 0] = 5\n    return 1.0\n", "raised ValueError"),  # weights are read-only
    ("def f(w, x, y):\n    return 1.0\nf.nnzip_drop = 'percent'\n", "nnzip_drop must be \"absolute\" or \"relative\""),
    ("f = 3\n", "has no function f"),
    ("def g(w):\n    return 1.0\n", "has no function f"),
    ("import no_such_package_xyz\ndef f(w):\n    return 1.0\n", "cannot import"),
]


@pytest.mark.parametrize("body, fragment", BAD_HOOKS)
def test_bad_hook_is_one_line_in_verify(lossy_weights, tmp_path, capsys, body, fragment):
    hook = write_hook(tmp_path, body)
    status, out, err = run(capsys, "verify", lossy_weights, "--data", TEST_DATA, "--original", WEIGHTS, "--eval", f"{hook}:f")
    assert_one_line_error(status, err, fragment)
    assert out == ""


@pytest.mark.parametrize("body, fragment", BAD_HOOKS[:3])
def test_bad_hook_in_a_budget_search_writes_nothing(tmp_path, capsys, body, fragment):
    hook = write_hook(tmp_path, body)
    output = tmp_path / "w.nnz"
    status, _, err = run(capsys, "compress", WEIGHTS, "-o", output, "--data", VAL_DATA, "--max-drop", "0.01", "--eval", f"{hook}:f", "-q")
    assert_one_line_error(status, err, fragment)
    assert not output.exists() and leftovers(tmp_path) == []


def test_hook_as_a_dotted_module_from_the_current_directory(lossy_weights, tmp_path, monkeypatch, capsys):
    package = tmp_path / "mm_hooks_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "scores.py").write_text("import numpy as np\ndef norm(weights):\n    return float(sum(np.sum(w.astype(float) ** 2) for w in weights.values()))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        status, out, err = run(capsys, "verify", lossy_weights, "--data", TEST_DATA, "--original", WEIGHTS, "--eval", "mm_hooks_pkg.scores:norm", "--json")
    finally:
        for name in ("mm_hooks_pkg", "mm_hooks_pkg.scores"):
            sys.modules.pop(name, None)
    assert status == 0, err
    assert json.loads(out)["drop_kind"] == "absolute"
    assert str(tmp_path) not in sys.path  # the cwd was importable for the hook's import only


# --- bias correction: recorded, checked, shown -------------------------------------------


@pytest.fixture(scope="module")
def searched_on_a_terminal(tmp_path_factory) -> tuple[int, bytes, Path]:
    """softmax.h5 through the budget search on 300 validation samples, -v, on a pseudo-terminal.

    One search (the slow part) serves the progress-bar test and the bias-correction tests:
    (exit status, what the terminal received, the .nnz).
    """
    work = tmp_path_factory.mktemp("search")
    data = np.load(VAL_DATA)
    np.savez(work / "val300.npz", x=data["x"][:300], y=data["y"][:300])
    shutil.copy(SAMPLES / "softmax.h5", work / "softmax.h5")
    status, raw = run_in_pty(["compress", "softmax.h5", "--data", "val300.npz", "--max-drop", "0.01", "-v"], work)
    return status, raw, work / "softmax.nnz"


@pytest.fixture(scope="module")
def searched(searched_on_a_terminal) -> Path:
    status, raw, nnz = searched_on_a_terminal
    assert status == 0, raw[-2000:]
    return nnz


KERNEL = "model_weights/dense/softmax/dense/kernel"
BIAS = "model_weights/dense/softmax/dense/bias"


def test_search_records_and_inspect_shows_a_corrected_bias(searched, capsys):
    header, _, _ = split_file(searched.read_bytes())
    stats = {t["name"]: t.get("stats", {}) for t in header["tensors"]}
    assert stats[BIAS]["bias_correction"] == KERNEL and "bias_correction" not in stats[KERNEL]
    _, rebuilt = api.read_tensors(searched)
    from nnzip import formats

    source = formats.read_model(SAMPLES / "softmax.h5").tensors
    assert not np.array_equal(rebuilt[BIAS], source[BIAS])  # the record is true: the bias did change
    info = api.inspect(searched)
    by_name = {t["name"]: t for t in info["tensors"]}
    assert by_name[BIAS]["bias_correction"] == KERNEL and by_name[KERNEL]["bias_correction"] is None
    status, out, _ = run(capsys, "inspect", searched)
    assert status == 0
    assert f"bias corrected: {BIAS} was changed by the budget search to offset the error of {KERNEL}" in out
    row = next(line for line in out.splitlines() if line.split() and line.split()[0] == BIAS)  # its table row, not the plan's "name: choice" line
    assert "(bias corrected)" in row
    status, out, _ = run(capsys, "inspect", searched, "--json")
    assert json.loads(out)["tensors"][0]["bias_correction"] == KERNEL


def test_compress_notes_a_corrected_bias(searched_on_a_terminal):
    _, raw, _ = searched_on_a_terminal
    shown = screen(raw)
    assert f"note: {BIAS}: changed by bias correction to offset the error of {KERNEL} (stored exact)" in shown


def test_lossless_and_fixed_settings_record_no_bias_correction(tmp_path):
    api.compress(SAMPLES / "softmax.h5", tmp_path / "k.nnz", rules=cli.rules_from_options(bits=3))
    header, _, _ = split_file((tmp_path / "k.nnz").read_bytes())
    assert all("bias_correction" not in t.get("stats", {}) for t in header["tensors"])


@pytest.mark.parametrize("value", ["no/such/tensor", BIAS, 5, None, ["x"], {"name": KERNEL}])
@pytest.mark.parametrize("command", ["inspect", "decompress", "verify"])
def test_bad_bias_correction_is_refused_by_rule_3_9(searched, tmp_path, capsys, value, command):
    """stats.bias_correction names another tensor of the file (rule 3.9), or the file is refused."""
    header, _, _ = split_file(searched.read_bytes())
    header = copy.deepcopy(header)
    next(t for t in header["tensors"] if t["name"] == BIAS)["stats"]["bias_correction"] = value
    bad = tmp_path / "bad.nnz"
    bad.write_bytes(rebuild(header, blobs_of(searched.read_bytes())))
    output = tmp_path / "out.h5"
    argv = {"inspect": ["inspect", bad], "decompress": ["decompress", bad, "-o", output],
            "verify": ["verify", bad, "--data", TEST_DATA, "--original", SAMPLES / "softmax.h5"]}[command]
    status, out, err = run(capsys, *argv)
    assert_one_line_error(status, err, "rule 3.9", "stats.bias_correction must name another tensor of the file")
    assert out == "" and not output.exists() and leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nnz"]


def test_bias_correction_naming_another_tensor_is_accepted(searched, tmp_path, capsys):
    header, _, _ = split_file(searched.read_bytes())
    header = copy.deepcopy(header)
    next(t for t in header["tensors"] if t["name"] == KERNEL)["stats"]["bias_correction"] = BIAS  # odd but well-formed
    good = tmp_path / "good.nnz"
    good.write_bytes(rebuild(header, blobs_of(searched.read_bytes())))
    assert run(capsys, "inspect", good)[0] == 0


def test_schema_knows_bias_correction(searched):
    import jsonschema

    schema = json.loads((ROOT / "spec" / "header.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    header, _, _ = split_file(searched.read_bytes())
    assert not list(validator.iter_errors(header))
    broken = copy.deepcopy(header)
    broken["tensors"][0]["stats"]["bias_correction"] = 5
    assert list(validator.iter_errors(broken))
    spec = (ROOT / "spec" / "container.md").read_text()
    assert "`bias_correction`, when present, a string equal to the `name` of another tensor" in spec


def test_readme_says_biases_can_change_under_max_drop():
    readme = (ROOT / "README.md").read_text()
    assert "**biases can change**" in readme and "bias corrected" in readme and "nnzip_drop = \"relative\"" in readme


# --- inspect's wording ---------------------------------------------------------------------


@pytest.fixture
def mixed_npz(tmp_path) -> Path:
    """Integer, bool and repetitive tensors: 'bytes as stored', and an LZW part stored below its order-0 bound."""
    rng = np.random.default_rng(0)
    path = tmp_path / "mixed.npz"
    np.savez(path, ids=rng.integers(0, 50_000, 4000).astype(np.int32), mask=rng.random(3000) > 0.5,
             ramp=np.tile(np.arange(256, dtype=np.uint8), 400), w=rng.standard_normal((64, 64)).astype(np.float32))
    return path


def test_inspect_integer_tensors_bytes_as_stored_and_entropy_explained(mixed_npz, capsys):
    nnz = mixed_npz.with_suffix(".nnz")
    assert run(capsys, "compress", mixed_npz, "-q")[0] == 0
    status, out, _ = run(capsys, "inspect", nnz)
    assert status == 0
    assert "bytes as stored in their own dtypes (float or integer)" in out
    info = api.inspect(nnz)
    ramp = next(t for t in info["tensors"] if t["name"] == "ramp")
    assert ramp["original_bytes"] == 256 * 400  # uint8 as stored, not as float
    table = out[out.index("  tensor "):].splitlines()
    above = []
    for t in info["tensors"]:
        bound = sum(p["entropy_bytes"] for p in t["parts"])
        row = next(line for line in table if line.split()[0] == t["name"])
        if bound > t["stored_bytes"]:
            above.append(t["name"])
            assert f"{bound:,.0f}*" in row  # a bound above the stored size is marked ...
        else:
            assert "*" not in row
    assert "ramp" in above  # the repeats beat the order-0 bound
    assert "* entropy is the order-0 (symbol-frequency) bound of the coded bytes" in out  # ... and explained


# --- progress on a terminal ---------------------------------------------------------------


def screen(raw: bytes) -> list[str]:
    """What a terminal shows after *raw*: carriage returns overwrite the line, CSI sequences are dropped."""
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.decode("utf-8", "replace"))
    lines, current, column = [], [], 0
    for char in text:
        if char == "\n":
            lines.append("".join(current).rstrip())
            current, column = [], 0
        elif char == "\r":
            column = 0
        else:
            if column < len(current):
                current[column] = char
            else:
                current.append(char)
            column += 1
    if current:
        lines.append("".join(current).rstrip())
    return lines


def run_in_pty(argv: list[str], cwd: Path) -> tuple[int, bytes]:
    """Run ``python -m nnzip ARGV`` with stdin, stdout and stderr on a 100x24 pseudo-terminal."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of a real size (tqdm draws nothing on a 0x0 one)
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
            os.chdir(cwd)
            os.environ.update(PYTHONPATH=str(ROOT), KERAS_BACKEND="torch")
            os.execv(sys.executable, [sys.executable, "-m", "nnzip", *argv])
        finally:
            os._exit(127)
    raw = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        raw += chunk
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), raw


def test_progress_bar_and_log_lines_do_not_collide_on_a_terminal(searched_on_a_terminal):
    status, raw, _ = searched_on_a_terminal
    assert status == 0, raw[-2000:]
    assert b"%|" in raw and b"searching" in raw  # a bar was drawn (tqdm: rate and ETA) ...
    shown = screen(raw)
    assert not [line for line in shown if "%|" in line or "searching:" in line], shown  # ... and removed: leave=False
    logs = [line for line in shown if line.startswith("  ") and not line.startswith("   ")]
    assert len(logs) >= 3, shown  # the search's log lines (and -v's), each on a line of its own, from its first column
    for line in shown:
        assert "\x1b" not in line and "it/s" not in line and "tensor/s" not in line, line
    assert any(line.startswith("softmax.h5 -> softmax.nnz: ") for line in shown)


def test_no_bar_off_a_terminal(tmp_path):
    shutil.copy(SAMPLES / "mlp.h5", tmp_path / "mlp.h5")
    done = subprocess.run([sys.executable, "-m", "nnzip", "compress", "mlp.h5", "--bits", "4"], cwd=tmp_path, capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "torch"})
    assert done.returncode == 0 and done.stderr == b"" and b"%|" not in done.stdout


# --- decompress: several inputs, -c, --rm, -t ----------------------------------------------


def test_decompress_several_inputs_summary_and_total(tmp_path, capsys):
    for name in ("mlp.h5", "softmax.h5"):
        shutil.copy(SAMPLES / name, tmp_path / name)
        assert run(capsys, "compress", tmp_path / name, "-q")[0] == 0
        (tmp_path / name).unlink()
    nnzs = [tmp_path / "mlp.nnz", tmp_path / "softmax.nnz"]
    status, out, err = run(capsys, "decompress", *nnzs)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{nnzs[0]} -> {tmp_path / 'mlp.h5'}: ") and " KB -> " in lines[0]
    assert lines[1].startswith(f"{nnzs[1]} -> {tmp_path / 'softmax.h5'}: ")
    assert lines[2].startswith("total: 2 files decompressed, ") and len(lines) == 3
    assert (tmp_path / "mlp.h5").exists() and (tmp_path / "softmax.h5").exists()
    status, out, _ = run(capsys, "decompress", "-t", *nnzs)
    assert status == 0 and out.splitlines()[-1].startswith("total: 2 files tested, ") and "of tensors" in out
    assert run(capsys, "decompress", "-q", "-f", *nnzs)[1] == ""


def test_decompress_rm_and_c_together_are_refused(tmp_path, capsys):
    shutil.copy(SAMPLES / "softmax.h5", tmp_path / "s.h5")
    assert run(capsys, "compress", tmp_path / "s.h5", "-q")[0] == 0
    status, out, err = run(capsys, "decompress", "-c", "--rm", tmp_path / "s.nnz")
    assert_one_line_error(status, err, "--rm", code=2)
    assert out == "" and (tmp_path / "s.nnz").exists()
    status, _, err = run(capsys, "decompress", "-t", "--rm", tmp_path / "s.nnz")
    assert_one_line_error(status, err, "-t/--test writes nothing", code=2)
    assert (tmp_path / "s.nnz").exists()


def test_decompress_c_writes_the_file_to_stdout(tmp_path, capsysbinary):
    shutil.copy(SAMPLES / "softmax.h5", tmp_path / "s.h5")
    assert cli.main(["compress", str(tmp_path / "s.h5"), "-q"]) == 0
    capsysbinary.readouterr()
    (tmp_path / "s.h5").unlink()
    assert cli.main(["decompress", "-c", str(tmp_path / "s.nnz")]) == 0
    out, err = capsysbinary.readouterr()
    assert out.startswith(b"\x89HDF\r\n\x1a\n") and b"-> stdout" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.nnz"]  # -c keeps the input, writes no file


# --- help(nnzip) ----------------------------------------------------------------------------


def test_every_public_name_has_a_docstring_with_an_example():
    for name in nnzip.__all__:
        if name == "__version__":
            continue
        doc = getattr(nnzip, name).__doc__ or ""
        assert ">>> " in doc, f"nnzip.{name} has no example in its docstring"
    page = __import__("pydoc").render_doc(nnzip, renderer=__import__("pydoc").plaintext)
    for name in nnzip.__all__:
        assert name in page or name == "__version__"
    assert f"VERSION\n    {nnzip.__version__}" in page


def test_public_examples_run(tmp_path, monkeypatch):
    """Each public docstring's example runs (beside copies of the samples it names)."""
    for name in ("mlp.h5", "fashion-mnist-val.npz", "fashion-mnist-test.npz"):
        shutil.copy(SAMPLES / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compress", "mlp.h5", "-q"]) == 0
    finder, attempted = doctest.DocTestFinder(), 0
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for name in nnzip.__all__:
        if name == "__version__":
            continue
        for test in finder.find(getattr(nnzip, name), f"nnzip.{name}", globs={"nnzip": nnzip}):
            result = runner.run(test)
            attempted += result.attempted
    assert runner.failures == 0 and attempted >= 20
    for module in (nnzip.errors, nnzip.evaluate):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0


# --- several inputs: one failing does not stop the others (as gzip) -------------------------


def test_several_inputs_one_bad_the_others_done_status_1(tmp_path, capsys):
    shutil.copy(SAMPLES / "softmax.h5", tmp_path / "a.h5")
    (tmp_path / "bad.h5").write_bytes(b"not a model")
    shutil.copy(SAMPLES / "softmax.h5", tmp_path / "c.h5")
    inputs = [tmp_path / "a.h5", tmp_path / "bad.h5", tmp_path / "missing.h5", tmp_path / "c.h5"]
    status, out, err = run(capsys, "compress", *inputs)
    assert status == 1
    errors = err.splitlines()
    assert len(errors) == 2 and all(line.startswith("nnzip: error: ") for line in errors), err
    assert f"{tmp_path / 'bad.h5'}: " in errors[0] and f"{tmp_path / 'missing.h5'}: " in errors[1]
    assert (tmp_path / "a.nnz").exists() and (tmp_path / "c.nnz").exists()
    assert not (tmp_path / "bad.nnz").exists() and not (tmp_path / "missing.nnz").exists() and leftovers(tmp_path) == []
    assert out.splitlines()[-1].startswith("total: 2 files (2 failed), ")
    # -t over several .nnz: the corrupt one is named, the good ones pass
    data = bytearray((tmp_path / "c.nnz").read_bytes())
    data[-3] ^= 0xFF
    (tmp_path / "c.nnz").write_bytes(bytes(data))
    status, out, err = run(capsys, "decompress", "-t", tmp_path / "a.nnz", tmp_path / "c.nnz")
    assert status == 1 and err.count("\n") == 1 and f"{tmp_path / 'c.nnz'}: rule 6.13" in err
    assert f"{tmp_path / 'a.nnz'}: OK" in out and "total: 1 files (1 failed) tested" in out
    # a single input's error is the usual single line, without the file name prefix twice
    status, _, err = run(capsys, "compress", tmp_path / "bad.h5")
    assert_one_line_error(status, err)


def test_output_to_dev_stdout_or_a_device_is_refused(tmp_path):
    shutil.copy(SAMPLES / "softmax.h5", tmp_path / "s.h5")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for target, force in (("/dev/stdout", []), ("/dev/stdout", ["-f"]), ("/dev/null", ["-f"])):
        done = subprocess.run([sys.executable, "-m", "nnzip", "compress", "s.h5", "-o", target, *force], cwd=tmp_path,
                              capture_output=True, env=env)
        assert done.returncode == 1 and done.stdout == b"" and done.stderr.count(b"\n") == 1, (target, done.stderr)
        assert done.stderr.startswith(b"nnzip: error: ")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def test_decompress_verbose_lists_every_tensor(tmp_path, capsys):
    shutil.copy(SAMPLES / "softmax.h5", tmp_path / "s.h5")
    assert run(capsys, "compress", tmp_path / "s.h5", "--bits", "4", "-q")[0] == 0
    names = [t["name"] for t in api.inspect(tmp_path / "s.nnz")["tensors"]]
    for argv in (["decompress", "-v", "-f", tmp_path / "s.nnz"], ["decompress", "-t", "-v", tmp_path / "s.nnz"]):
        status, out, _ = run(capsys, *argv)
        lines = out.splitlines()
        assert status == 0 and len(lines) == len(names) + 1
        for name, line in zip(names, lines):
            assert line.startswith(f"  {name}: ") and " bytes, " in line
        assert any("kmeans(bits=4)" in line and "relative error" in line for line in lines)
    assert run(capsys, "decompress", "-v", "-q", "-f", tmp_path / "s.nnz")[1] == ""


def test_sweep_layer_matching_nothing_names_close_matches(capsys):
    status, out, err = run(capsys, "sweep", SAMPLES / "mlp.h5", "--data", TEST_DATA, "--method", "kmeans", "--layer", "hiden")
    assert_one_line_error(status, err, "--layer 'hiden' matches no tensor", "close matches: hidden")
    assert out == ""


@pytest.mark.parametrize("command", ["compress", "verify"])
def test_help_says_how_a_hook_declares_a_relative_drop(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert 'nnzip_drop = "relative"' in text and "own units" in text


def test_drop_kind_of_accuracy_and_mse(tmp_path, capsys):
    """verify --json says how its drop counts for the built-in metrics too: accuracy absolute, MSE relative."""
    for sample, metric, kind in (("softmax.h5", "accuracy", "absolute"), ("autoencoder.h5", "mse", "relative")):
        nnz = tmp_path / f"{sample}.nnz"
        assert run(capsys, "compress", SAMPLES / sample, "-o", nnz, "--bits", "3", "-q")[0] == 0
        status, out, _ = run(capsys, "verify", nnz, "--data", TEST_DATA, "--original", SAMPLES / sample, "--json")
        info = json.loads(out)
        assert status == 0 and info["metric"] == metric and info["drop_kind"] == kind


def test_progress_bar_units_follow_the_search_steps():
    """The bar counts tensors, and a budget search's candidates and combining rounds by their own names."""
    from nnzip.cli import _unit

    assert _unit("dense/kernel") == "tensor" and _unit("1/2 trying output's kernel") == "candidate" and _unit("2/2 combining") == "round"
