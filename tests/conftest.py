"""pytest configuration shared by all tests.

* selects Keras' torch backend (the one CI installs) before any test imports Keras;
* the one ``keras`` fixture: every test that needs Keras takes it, and under
  ``NNZIP_REQUIRE_KERAS=1`` (CI) a missing or broken Keras fails those tests instead of
  skipping them;
* turns skips into failures under ``NNZIP_NO_SKIPS=1`` (CI sets it).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``NNZIP_NO_SKIPS=1`` (CI) a skipped test is a failure.

    Tests skip where an optional extra (Keras, onnx, onnxruntime, dask, ...) is missing on a
    developer's machine; CI installs every extra, so a skip there means a missing install step
    or a broken import, which must not pass silently.
    """
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("NNZIP_NO_SKIPS") == "1" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under NNZIP_NO_SKIPS=1 (CI installs every extra): {reason}"


def import_keras():
    """Import Keras for a test: skip when it is not installed, fail when CI requires it.

    Under ``NNZIP_REQUIRE_KERAS=1`` any import failure (not installed, a broken backend, a
    version clash) fails the test with the reason on one line: the numpy-vs-Keras parity
    tests must not vanish from CI because Keras stopped importing.  Elsewhere only a
    missing Keras (ImportError) skips; any other import error is reported as it is.
    """
    if os.environ.get("NNZIP_REQUIRE_KERAS") == "1":
        try:
            import keras
        except Exception as error:  # noqa: BLE001 -- any failure to import is the finding
            pytest.fail(f"NNZIP_REQUIRE_KERAS=1 but Keras does not import: {type(error).__name__}: {error}", pytrace=False)
        return keras
    return pytest.importorskip("keras")


@pytest.fixture(scope="session")
def keras():
    """Keras 3 on the torch backend (see :func:`import_keras` for skip versus failure)."""
    return import_keras()
