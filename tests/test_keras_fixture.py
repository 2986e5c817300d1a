"""The one ``keras`` fixture (tests/conftest.py) honours ``NNZIP_REQUIRE_KERAS`` for every test.

A Keras that does not import -- here a real one: Keras 3 asked for a backend that is not
installed (``KERAS_BACKEND=jax``, ModuleNotFoundError) -- must fail the numpy-vs-Keras parity
tests under ``NNZIP_REQUIRE_KERAS=1`` (CI), and only skip them on a developer's machine.  The
runs are pytest subprocesses on one parity test of tests/test_infer.py, so the real conftest
decides.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARITY_TEST = "tests/test_infer.py::test_gelu_is_exact_erf_form"


def run_parity_test(**env: str) -> subprocess.CompletedProcess:
    """Run one Keras parity test in a fresh pytest with Keras' backend set to one that is not installed."""
    base = {k: v for k, v in os.environ.items() if k not in ("NNZIP_REQUIRE_KERAS", "NNZIP_NO_SKIPS")}
    full = {**base, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "jax", **env}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", PARITY_TEST],
                          cwd=ROOT, env=full, capture_output=True, text=True, timeout=600)


def test_broken_keras_fails_when_required():
    result = run_parity_test(NNZIP_REQUIRE_KERAS="1")
    assert result.returncode == 1, result.stdout + result.stderr
    # The fixture fails in the test's set-up, which pytest counts as an error: not a pass, not a skip.
    assert "1 error" in result.stdout and "skipped" not in result.stdout and "passed" not in result.stdout
    assert "NNZIP_REQUIRE_KERAS=1 but Keras does not import: ModuleNotFoundError" in result.stdout


def test_missing_keras_skips_when_not_required():
    result = run_parity_test()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout and "keras" in result.stdout.lower()


def test_no_skips_still_turns_that_skip_into_a_failure():
    result = run_parity_test(NNZIP_NO_SKIPS="1")
    assert result.returncode == 1 and "skipped under NNZIP_NO_SKIPS=1" in result.stdout, result.stdout


def test_no_test_imports_keras_itself():
    """Every test that needs Keras takes the fixture: an own ``import keras`` would skip or fail on its own terms."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name == "conftest.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(name == "keras" or name.startswith("keras.") for name in names):
                offenders.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("importorskip", "import_module", "need") \
                    and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "keras":
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == [], f"import Keras through the conftest fixture `keras`, not directly: {offenders}"
