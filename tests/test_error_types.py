"""Errors say what they mean, and the search asks the evaluator (issue 12, items 4 and 5).

* :class:`nnzip.errors.NoSaving` — a valid setting that would not make this tensor smaller —
  is what the fallbacks (fixed flags, the sweep, the budget search) catch; a real bad
  parameter on those paths now reaches the caller as a :class:`ConfigError` with its message
  instead of becoming a fallback note or a skipped candidate.
* Flags that contradict or need each other are a :class:`UsageError`: exit status 2, the
  usage-error status ``nnzip --help`` lists, one line, nothing written.
* The search's view of the architecture is :class:`nnzip.evaluate.Evaluator`'s interface
  (``supports_calibration``, ``weight_roles``, ``calibration_layers``), which any evaluator
  can implement.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from nnzip import api, cli, formats
from nnzip.errors import ConfigError, NnzipError, NoSaving, UsageError, os_error_text
from nnzip.evaluate import CalibratedLayer, Dataset, Evaluator, HookEvaluator, KerasEvaluator, load_data
from nnzip.calibrate import LayerStatistics
from nnzip.model import Model
from nnzip.pipeline import TensorPlan, encode_tensor
from nnzip.search import BudgetSearch, Candidate
from .samples import SAMPLES, VAL_DATA

HIDDEN = "model_weights/hidden/mlp/hidden/kernel"
HIDDEN_BIAS = "model_weights/hidden/mlp/hidden/bias"
OUTPUT = "model_weights/output/mlp/output/kernel"


def small_data(tmp_path: Path, count: int = 64) -> Dataset:
    data = np.load(VAL_DATA)
    path = tmp_path / "small.npz"
    np.savez(path, x=data["x"][:count], y=data["y"][:count])
    return load_data(path)


# --- NoSaving is its own type ----------------------------------------------------------------


def test_no_saving_is_not_a_config_error():
    """The fallbacks catch NoSaving alone, so it must not be caught as a bad setting (nor be one)."""
    assert issubclass(NoSaving, NnzipError) and not issubclass(NoSaving, ConfigError)
    assert issubclass(UsageError, ConfigError)  # library callers catching ConfigError still see contradictions


@pytest.mark.parametrize("params", [{"rank": 9}, {"rank": 40}])
def test_svd_rank_that_cannot_pay_is_no_saving_with_its_message(params):
    array = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    with pytest.raises(NoSaving, match="svd: ") as caught:
        encode_tensor("w", array, TensorPlan("svd", params, []))
    assert not isinstance(caught.value, ConfigError)


@pytest.mark.parametrize("params, message", [({"rank": "two"}, "must be an integer"), ({"rank": -1}, "must be an integer"),
                                             ({"rank": 2, "energy": 0.5}, "exactly one")])
def test_svd_bad_parameter_stays_a_config_error(params, message):
    array = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    with pytest.raises(ConfigError, match=message):
        encode_tensor("w", array, TensorPlan("svd", params, []))


# --- the fixed-setting fallback -----------------------------------------------------------------


def test_a_rank_that_does_not_save_space_still_falls_back_to_dense():
    model = formats.read_model(SAMPLES / "mlp.h5")
    header, blobs, reports = api.encode_model(model, "mlp.h5", plans={OUTPUT: TensorPlan("svd", {"rank": 10}, [("kmeans", {"bits": 4})])})
    report = next(r for r in reports if r.name == OUTPUT)
    assert report.note.startswith("svd skipped: svd: rank 10 stores") and "would not save space" in report.note
    assert "kmeans" in report.method  # the value stages still applied, on the dense tensor


def test_a_bad_transform_parameter_is_no_longer_a_fallback_note():
    """Before: the ConfigError was caught as 'would not save space' and the tensor quietly stored dense."""
    model = formats.read_model(SAMPLES / "mlp.h5")
    with pytest.raises(ConfigError, match="svd: parameter 'rank' must be an integer in 0..10 \\(min\\(m, n\\)\\), got 'two'"):
        api.encode_model(model, "mlp.h5", plans={OUTPUT: TensorPlan("svd", {"rank": "two"}, [])})
    with pytest.raises(ConfigError, match="csr: give exactly one of the parameters 'prune' and 'threshold'"):
        api.encode_model(model, "mlp.h5", plans={OUTPUT: TensorPlan("csr", {}, [])})


def test_a_bad_parameter_through_the_cli_plan_path_is_one_config_error_line(tmp_path, capsys):
    """The same check end to end: a --layer setting the plan validator refuses is exit 1 with the rule's words."""
    out = tmp_path / "m.nnz"
    status = cli.main(["compress", str(SAMPLES / "mlp.h5"), "-o", str(out), "--layer", "output:rank=two"])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith("nnzip: error: ") and err.count("\n") == 1, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name != "m.nnz"]


# --- the budget search ------------------------------------------------------------------------


class _Only(BudgetSearch):
    """A search whose ladder is the given candidates (to put one bad or one unsuitable candidate in play)."""

    def __init__(self, *args, ladder, **kwargs):
        self.ladder = ladder
        super().__init__(*args, **kwargs)

    def candidates(self, name):
        return list(self.ladder)


def _hook(weights):
    return -float(np.abs(weights[HIDDEN]).sum())


def _search(ladder) -> _Only:
    model = formats.read_model(SAMPLES / "mlp.h5")
    return _Only(model, HookEvaluator.of(_hook, "test:hook", None), None, ladder=ladder)


def test_the_search_no_longer_swallows_a_bad_candidate_parameter():
    bad = Candidate("kmeans99", TensorPlan("dense", {}, [("kmeans", {"bits": 99})]), bits=99)
    with pytest.raises(ConfigError, match="kmeans: 'bits' must be an integer in 1..8, got 99"):
        _search([bad]).trials_for(HIDDEN)


def test_the_search_still_skips_a_candidate_that_would_not_save_space():
    good = Candidate("kmeans2", TensorPlan("dense", {}, [("kmeans", {"bits": 2})]), bits=2)
    too_high = Candidate("svd300+kmeans4", TensorPlan("svd", {"rank": 300}, [("kmeans", {"bits": 4})]), rank=300)
    trials = _search([too_high, good]).trials_for(HIDDEN)
    assert [t.candidate.label for t in trials] == ["kmeans2"]


# --- usage errors: exit status 2, as --help says --------------------------------------------------


def test_help_lists_status_2_for_usage_errors(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert re.search(r"^\s*2\s+usage error .*flags that contradict or need each other", text, re.M), text
    assert cli.USAGE_STATUS == 2


@pytest.mark.parametrize("argv, fragment", [
    (["compress", "{mlp}", "--lossless", "--bits", "4"], "--lossless contradicts --bits"),
    (["compress", "{mlp}", "--rdo", "0.1"], "--rdo tunes --uniform's rounding"),
    (["compress", "{mlp}", "--max-drop", "0.01"], "--max-drop needs --data"),
    (["compress", "{mlp}", "--data", str(VAL_DATA)], "--data needs --max-drop"),
    (["compress", "{mlp}", "--data", str(VAL_DATA), "--max-drop", "0.01", "--bits", "3"], "drop --bits"),
    (["compress", "{mlp}", "{mlp}", "-o", "{out}"], "-o/--output names one output"),
    (["decompress", "-t", "-o", "{out}", "{nnz}"], "-t/--test writes nothing"),
    (["decompress", "-c", "--rm", "{nnz}"], "--rm removes an input file"),
    (["verify", "{nnz}", "--data", str(VAL_DATA), "--max-drop", "0.1"], "--max-drop needs the original model"),
])
def test_flag_conflicts_exit_2_with_one_line_and_no_output(tmp_path, capsys, argv, fragment):
    source, nnz = tmp_path / "mlp.h5", tmp_path / "mlp.nnz"
    source.write_bytes((SAMPLES / "mlp.h5").read_bytes())
    assert cli.main(["compress", str(source), "-o", str(nnz), "-q"]) == 0
    (tmp_path / "elsewhere").mkdir()
    source.rename(tmp_path / "elsewhere" / "mlp.h5")  # verify would otherwise find the original beside the .nnz
    source = tmp_path / "elsewhere" / "mlp.h5"
    out = tmp_path / "out.nnz"
    capsys.readouterr()
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    status = cli.main([a.format(mlp=source, out=out, nnz=nnz) for a in argv])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("nnzip: error: ") and err.count("\n") == 1 and fragment in err, err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # no output, no temporary file, the input kept


def test_argparse_usage_errors_have_the_same_status(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["compress", "--no-such-flag", str(SAMPLES / "mlp.h5")])
    assert exited.value.code == cli.USAGE_STATUS == 2
    assert capsys.readouterr().err.startswith("nnzip: error: ")


def test_a_bad_value_is_still_status_1(tmp_path, capsys):
    out = tmp_path / "m.nnz"
    assert cli.main(["compress", str(SAMPLES / "mlp.h5"), "-o", str(out), "--bits", "12"]) == 1
    assert "bits must be in 1..8" in capsys.readouterr().err and not out.exists()


def test_library_callers_get_the_usage_error_type():
    with pytest.raises(UsageError, match="--lossless contradicts --bits"):
        import nnzip

        nnzip.compress(SAMPLES / "mlp.h5", Path("/nonexistent/never.nnz"), lossless=True, bits=4)


# --- one way to word an OSError ---------------------------------------------------------------------


def test_os_errors_are_worded_one_way():
    """The CLI's per-input lines and main's last resort use the one wording of errors.os_error_text."""
    missing = FileNotFoundError(2, "No such file or directory", "a.h5")
    assert os_error_text(missing) == "No such file or directory: a.h5" == cli._error_text(missing)
    assert os_error_text(OSError("disk on fire")) == "disk on fire"  # no errno: its text


# --- the evaluator interface the search uses ----------------------------------------------------------


def test_a_hook_knows_no_layers():
    hook = HookEvaluator.of(_hook, "test:hook", None)
    assert hook.supports_calibration is False
    assert hook.weight_roles() == {} and hook.calibration_layers(16, lambda name: True) == {}


def test_keras_evaluator_reports_roles_and_calibrated_layers(tmp_path):
    model = formats.read_model(SAMPLES / "mlp.h5")
    evaluator = KerasEvaluator(model, small_data(tmp_path))
    assert evaluator.supports_calibration
    roles = evaluator.weight_roles()
    assert roles[HIDDEN] == ("hidden", "kernel") and roles[HIDDEN_BIAS] == ("hidden", "bias") and roles[OUTPUT] == ("output", "kernel")
    layers = evaluator.calibration_layers(32, lambda name: True)
    assert set(layers) == {HIDDEN, OUTPUT}
    hidden = layers[HIDDEN]
    assert (hidden.layer, hidden.kernel, hidden.bias, hidden.layout) == ("hidden", HIDDEN, HIDDEN_BIAS, "last")
    assert hidden.stats.count == 32 and hidden.stats.gram.shape == (784, 784)
    x = small_data(tmp_path).x[:32].reshape(32, -1).astype(np.float64)
    np.testing.assert_allclose(hidden.stats.gram, x.T @ x, rtol=1e-6)  # the first layer's input is the model input
    assert set(evaluator.calibration_layers(32, lambda name: name == OUTPUT)) == {OUTPUT}
    assert evaluator.calibration_layers(32, lambda name: False) == {}


def test_keras_conv_layers_get_patch_statistics(tmp_path):
    model = formats.read_model(SAMPLES / "cnn.h5")
    layers = KerasEvaluator(model, small_data(tmp_path, 8)).calibration_layers(8, lambda name: True)
    conv2 = layers["model_weights/conv2/conv2/kernel"]
    assert conv2.layer == "conv2" and conv2.bias == "model_weights/conv2/conv2/bias"
    assert conv2.stats.gram.shape == (3 * 3 * 8, 3 * 3 * 8)  # im2col rows of the (kh·kw·in, out) kernel


def test_any_evaluator_can_give_the_search_its_layers():
    """The search uses only the interface: a new evaluator class, unknown to search.py, gets data-aware steps and names."""
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((64, 32)).astype(np.float32)
    inputs = rng.standard_normal((200, 64)).astype(np.float32)
    model = Model("safetensors", {}, {"fc.w": kernel, "fc.b": np.zeros(32, np.float32)})

    class Linear(Evaluator):
        supports_calibration = True

        def per_sample(self, tensors):
            return -np.mean((inputs @ tensors["fc.w"] + tensors["fc.b"] - inputs @ kernel) ** 2, axis=1)

        def weight_roles(self):
            return {"fc.w": ("fc", "kernel"), "fc.b": ("fc", "bias")}

        def calibration_layers(self, samples, eligible):
            return {"fc.w": CalibratedLayer("fc", "fc.w", "fc.b", LayerStatistics.of(inputs[:samples]))} if eligible("fc.w") else {}

    search = BudgetSearch(model, Linear(), Dataset(inputs, None))
    assert search.layers["fc.w"].stats.count == 200 and search.layers["fc.w"].bias == "fc.b"
    assert search.display("fc.w") == "fc's kernel" and search.display("fc.b") == "fc's bias"
    assert any(c.mode == "data" for c in search.candidates("fc.w"))  # the data-aware twins are offered
    assert BudgetSearch(model, Linear(), None).layers == {}  # no data, no calibration
