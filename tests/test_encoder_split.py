"""Issue 12, item 1 (write side): api.py is a facade over one-job modules, and api.sweep is what ``nnzip sweep`` prints.

The write side lives in nnzip.writer (compress), nnzip.encoder (tensors to header and
blobs), nnzip.budget (the accuracy-budget search), nnzip.workers (executors and the
in-flight window), nnzip.metrics (the recorded error) and nnzip.sweep (api.sweep).
"""

from __future__ import annotations

import ast
import csv
import subprocess
import sys
from pathlib import Path

import pytest

from nnzip import api, budget, chains, cli, encoder, metrics, sweep, workers, writer
from nnzip.errors import NnzipError
from .samples import SAMPLES, TEST_DATA

PACKAGE = Path(api.__file__).resolve().parent

#: Name in nnzip.api -> the module that defines it now.
RE_EXPORTS = {
    "compress": writer, "CompressReport": writer, "default_output": writer, "NNZ_SUFFIX": writer,
    "encode_model": encoder, "encode_job": encoder, "TensorJob": encoder, "TensorReport": encoder, "tensor_bytes": encoder,
    "strip_structure": encoder, "strip_informative": encoder,
    "Budget": budget, "encode_with_budget": budget,
    "Workers": workers, "Progress": workers,
    "relative_error": metrics, "ERROR_BLOCK": metrics,
    "describe_chain": chains,
    "SweepReport": sweep,
}

#: The modules of the write side (and what they call on the way down), none of which may import the facade.
WRITE_SIDE = ("writer", "encoder", "budget", "workers", "metrics", "chains", "sweep", "distributed", "options", "search", "pipeline", "plan")


def run(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


# --- the facade ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RE_EXPORTS))
def test_api_re_exports_the_very_objects_of_the_new_modules(name):
    module = RE_EXPORTS[name]
    assert getattr(api, name) is getattr(module, name)
    if isinstance(getattr(module, name), type) or callable(getattr(module, name)) and hasattr(getattr(module, name), "__code__"):
        assert getattr(module, name).__module__ == module.__name__  # defined there, not re-exported from elsewhere


def test_api_sweep_is_sweep_run():
    assert api.sweep is sweep.run


def _top_level_definitions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}


def test_api_defines_none_of_the_write_side_itself():
    defined = _top_level_definitions(PACKAGE / "api.py")
    moved = set(RE_EXPORTS) | {"_check_readable", "_encode_with_fallback", "_statistics", "_add_statistics", "_header", "_in_order",
                               "_in_order_within", "_record_bias_corrections", "_same_bits", "_same_view", "_blocks", "_square_sums",
                               "_scaled_relative_error", "_overflowed", "_lossy", "_density", "_stage_text"}
    assert not defined & moved, sorted(defined & moved)


def _imports(path: Path, package: str) -> set[str]:
    """Every nnzip module *path* imports, at the top or inside functions (``from . import x`` counts as nnzip.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package if node.level == 1 else package.rsplit(".", node.level - 1)[0]
            target = f"{base}.{node.module}" if node.module else base
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nnzip"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("nnzip"))
    return found


@pytest.mark.parametrize("name", WRITE_SIDE)
def test_no_write_side_module_imports_the_facade(name):
    imported = _imports(PACKAGE / f"{name}.py", "nnzip")
    assert "nnzip.api" not in imported, f"nnzip.{name} imports nnzip.api (the facade above it)"
    assert "nnzip.__version__" not in imported, f"nnzip.{name} imports the package itself for __version__ (nnzip.version has it)"


def test_the_write_side_modules_import_each_other_without_a_cycle():
    graph = {name: {other for other in WRITE_SIDE if f"nnzip.{other}" in _imports(PACKAGE / f"{name}.py", "nnzip")} - {name}
             for name in WRITE_SIDE}
    state = {}

    def visit(name, path):
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", f"import cycle: {' -> '.join(path + [name])}"
        state[name] = "open"
        for other in sorted(graph[name]):
            visit(other, path + [name])
        state[name] = "done"

    for name in WRITE_SIDE:
        visit(name, [])
    # the layering this split set up: the dask transport below the executors, those below the encoder, the encoder below compress
    assert "distributed" in graph["workers"] and not {"encoder", "workers"} & graph["distributed"]
    assert "workers" in graph["encoder"]
    assert {"encoder", "budget"} <= graph["writer"] and "writer" not in graph["encoder"]


def test_every_module_imports_cleanly_on_its_own():
    """Each new module can be the first nnzip module imported (no import-order dependence)."""
    for name in ("writer", "encoder", "budget", "workers", "metrics", "chains", "sweep", "version"):
        code = f"import nnzip.{name}"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (name, result.stderr[-400:])


# --- api.sweep: what the CLI prints ----------------------------------------------------------------


def _printed_rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    return [line.split() for line in lines[2:]]


def test_api_sweep_returns_what_the_cli_prints(capsys, tmp_path):
    status, out, err = run(capsys, "sweep", SAMPLES / "softmax.h5", "--data", TEST_DATA, "--method", "kmeans", "-q")
    assert status == 0, err
    report = api.sweep(SAMPLES / "softmax.h5", TEST_DATA, "kmeans")
    assert isinstance(report, sweep.SweepReport) and report.method == "kmeans" and report.layer is None
    first, columns = out.splitlines()[:2]
    assert first == f"{SAMPLES / 'softmax.h5'} kmeans sweep: {report.metric}, original {report.baseline:.6g}"
    assert columns.split() == ["setting", report.metric, ".nnz", "bytes", "weight", "error"]
    rows = _printed_rows(out)
    assert len(rows) == len(report.points) == 8  # kmeans: 1..8 bits
    for row, point in zip(rows, report.points):
        assert float(row[0]) == point.setting
        assert float(row[1]) == pytest.approx(point.value, rel=1e-5)
        assert int(row[2].replace(",", "")) == point.file_bytes
        assert float(row[3]) == pytest.approx(point.tensor_error, abs=1e-4)
    sizes = [p.file_bytes for p in report.points]
    assert sizes == sorted(sizes) and len(set(sizes)) > 1  # more bits, more bytes: real encodings, not one repeated


def test_sweep_report_saves_the_csv_the_cli_writes(capsys, tmp_path):
    by_cli, by_api = tmp_path / "cli.csv", tmp_path / "api.csv"
    status, _, err = run(capsys, "sweep", SAMPLES / "softmax.h5", "--data", TEST_DATA, "--method", "svd", "--csv", by_cli, "-q")
    assert status == 0, err
    report = api.sweep(SAMPLES / "softmax.h5", TEST_DATA, "svd", csv_path=by_api)
    assert not by_api.exists()  # run measures; save writes
    report.save()
    assert by_api.read_bytes() == by_cli.read_bytes()
    rows = list(csv.DictReader(open(by_api)))
    assert [float(r["setting"]) for r in rows] == [p.setting for p in report.points]


def test_sweep_refuses_an_existing_output_before_reading_the_model(tmp_path):
    taken = tmp_path / "taken.csv"
    taken.write_text("keep me")
    with pytest.raises(NnzipError) as caught:
        api.sweep(tmp_path / "no-such-model.h5", TEST_DATA, "kmeans", csv_path=taken)
    assert "taken.csv" in str(caught.value) and "no-such-model" not in str(caught.value)
    assert taken.read_text() == "keep me"


def test_sweep_layer_matching_nothing_is_one_error_from_the_library_too():
    with pytest.raises(NnzipError, match="--layer 'hiden' matches no tensor; close matches: "):
        api.sweep(SAMPLES / "mlp.h5", TEST_DATA, "kmeans", layer="hiden")
