"""pytest configuration shared by all tests.

* selects Keras' torch backend (the one CI installs) before any test imports Keras;
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
