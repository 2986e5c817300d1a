"""The held-out check of the budget search (issue 13): the plan is picked on part of the data and checked on the rest.

The search keeps the smallest of hundreds of measured plans, so the data it picked on
flatters that plan (the shipped OCR classifier's plan measured 0.75 points on its 400
strips and 4.25 on another 400).  With ``--holdout`` a share of the samples is kept out of
the search; the chosen plan must fit the budget there too, else the search chooses again
within a half, a quarter, an eighth of the budget, then takes the lossless plan.
These tests build searches from synthetic trials whose drops on each part are known
exactly, and check the split and the options.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import nnzip
from nnzip import cli
from nnzip.model import Model
from nnzip.options import budget_from_options
from nnzip.scoring import DEFAULT_HOLDOUT, MIN_HOLDOUT_SAMPLES, Dataset, Evaluator, split_holdout, standard_error
from nnzip.search import BudgetSearch, Candidate, Trial
from .samples import SAMPLES, VAL_DATA


class PartEvaluator(Evaluator):
    """Accuracy per sample on *count* samples, all correct at first; trial k of a tensor makes ``wrong[name][k]`` samples wrong."""

    metric = "accuracy"

    def __init__(self, count: int, wrong: dict[str, dict[int, int]]):
        self.count, self.wrong = count, wrong

    def per_sample(self, tensors):
        correct = np.ones(self.count)
        start = 0
        for name, trials in self.wrong.items():
            made_wrong = trials.get(int(tensors[name][0]), 0)
            correct[start:start + made_wrong] = 0.0
            start += max(trials.values())
        return correct


# One tensor, three ways to store it: t1 (smallest) looks nearly free on the search data but
# is far over the budget on the held-out samples; t2 costs little on both.
SEARCH_WRONG = {"a": {1: 6, 2: 1}}     # of 1,500: drops 0.004 and 0.00067
HELD_WRONG = {"a": {1: 10, 2: 1}}      # of 500: drops 0.02 and 0.002
SIZES = [10_000, 300, 2_000]
BUDGET = 0.005


def _search(held: dict | None) -> tuple[BudgetSearch, dict[str, list[Trial]]]:
    model = Model("npz", {}, {"a": np.zeros(4, np.float32)})
    holdout = None if held is None else PartEvaluator(500, held)
    search = BudgetSearch(model, PartEvaluator(1500, SEARCH_WRONG), None, margin=0.0, holdout=holdout)
    tried = {"a": [_trial(search, k, size) for k, size in enumerate(SIZES)]}
    return search, tried


def _trial(search: BudgetSearch, index: int, size: int) -> Trial:
    values = np.full(4, float(index), np.float32)
    samples = search.evaluator.per_sample({"a": values})
    differences = search.evaluator.drop_differences(search.baseline_samples, samples)
    encoded = SimpleNamespace(reconstruction=values, blobs=[b"x" * size])
    return Trial(Candidate(f"t{index}" if index else "lossless", None), encoded, size,
                 search.evaluator.drop(search.baseline, float(np.mean(samples))), None, standard_error(differences),
                 differences.astype(np.float32) if index else None)


def _choose_and_confirm(search: BudgetSearch, tried: dict[str, list[Trial]]):
    best = search._choose(tried, BUDGET)
    return best, search._confirm(best, BUDGET, tried, tried)


def test_without_a_holdout_the_search_keeps_the_plan_its_own_data_flatters():
    search, tried = _search(None)
    best, (plan, (count, drop)) = _choose_and_confirm(search, tried)
    assert plan is best and plan["trials"]["a"].candidate.label == "t1" and (count, drop) == (0, None)


def test_a_plan_over_the_budget_on_held_out_samples_is_shrunk_to_one_within_it():
    search, tried = _search(HELD_WRONG)
    best, (plan, (count, drop)) = _choose_and_confirm(search, tried)
    assert best["trials"]["a"].candidate.label == "t1"  # what the search data alone picks (drop 0.004)
    assert plan["trials"]["a"].candidate.label == "t2"  # the search's choice within half the budget, and within it held out
    assert count == 500 and drop == pytest.approx(1 / 500)


def test_when_nothing_smaller_holds_out_the_plan_is_lossless():
    search, tried = _search({"a": {1: 10, 2: 10}})
    _, (plan, (count, drop)) = _choose_and_confirm(search, tried)
    assert plan["trials"]["a"].candidate.label == "lossless" and drop == 0.0 and count == 500


def test_a_plan_within_the_budget_held_out_is_kept_and_its_drop_recorded():
    search, tried = _search({"a": {1: 2, 2: 1}})
    best, (plan, (count, drop)) = _choose_and_confirm(search, tried)
    assert plan is best and drop == pytest.approx(2 / 500)


def test_the_split_is_an_even_spread_of_disjoint_samples():
    x = np.arange(400, dtype=np.float32)[:, None]
    data = Dataset(x, np.arange(400) % 3, {"input_ids": np.arange(400)[:, None] * 2}, True)
    search, held = split_holdout(data, DEFAULT_HOLDOUT)
    assert len(held.x) == 100 and len(search.x) == 300
    assert np.array_equal(held.x[:, 0], np.arange(3, 400, 4))  # every 4th sample
    assert np.array_equal(np.sort(np.concatenate([search.x[:, 0], held.x[:, 0]])), x[:, 0])
    assert np.array_equal(held.y, held.x[:, 0].astype(int) % 3) and np.array_equal(held.arrays["input_ids"][:, 0], held.x[:, 0] * 2)
    same, none = split_holdout(data, 0.1)  # 40 held-out samples are too few to measure anything
    assert none is None and same is data and 40 < MIN_HOLDOUT_SAMPLES


@pytest.mark.parametrize("value", [-0.1, 0.6, True, "0.2"])
def test_holdout_outside_its_range_is_refused(value):
    with pytest.raises(nnzip.NnzipError, match="--holdout must be a share from 0 to 0.5"):
        budget_from_options(VAL_DATA, 0.01, holdout=value)


def test_holdout_zero_searches_on_all_samples_unchecked(tmp_path, capsys):
    output = tmp_path / "softmax.nnz"
    status = cli.main(["compress", str(SAMPLES / "softmax.h5"), "-o", str(output), "--data", str(VAL_DATA), "--max-drop", "0.01", "--holdout", "0"])
    _, err = capsys.readouterr()
    assert status == 0, err
    search = nnzip.inspect(output)["plan"]["search"]
    assert "holdout_samples" not in search and "holdout_drop" not in search and "held-out" not in err
    status = cli.main(["compress", str(SAMPLES / "softmax.h5"), "-o", str(output), "-f", "--data", str(VAL_DATA), "--max-drop", "0.01", "--holdout", "2"])
    _, err = capsys.readouterr()
    assert status != 0 and err.count("\n") == 1 and "--holdout must be" in err


def test_transformer_statistics_join_batches_of_unequal_size():
    """A held-out split leaves 384 of tiny_bert's 512 samples: batches of 256 and 128, whose
    attention activations hold the batch off axis 0; their statistics are the same vectors as
    one batch's (they once failed to join, stopping the search with a concatenate error)."""
    pytest.importorskip("onnxruntime")
    from nnzip.formats import read_model
    from nnzip.onnx_eval import OnnxEvaluator
    from nnzip.scoring import load_data

    model = read_model(SAMPLES / "tiny_bert.onnx")
    search_part, _ = split_holdout(load_data(SAMPLES / "tiny_bert-calib.npz"), DEFAULT_HOLDOUT)
    assert len(search_part.x) == 384
    batched = OnnxEvaluator(model, search_part, batch_size=256).calibration_layers(384, lambda name: True)
    whole = OnnxEvaluator(model, search_part, batch_size=384).calibration_layers(384, lambda name: True)
    assert batched and set(batched) == set(whole)
    for name, layer in batched.items():
        np.testing.assert_allclose(layer.stats.gram, whole[name].stats.gram, rtol=1e-4, atol=1e-3)


def test_a_held_out_drop_of_exactly_the_budget_fits():
    """2 samples of 100 wrong is a drop of 0.02 in counting, 0.020000000000000018 in floats: within a 0.02 budget."""
    model = Model("npz", {}, {"a": np.zeros(4, np.float32)})
    search = BudgetSearch(model, PartEvaluator(300, {"a": {1: 1}}), None, margin=0.0, holdout=PartEvaluator(100, {"a": {1: 2}}))
    tried = {"a": [_trial(search, 0, 1000), _trial(search, 1, 10)]}
    best = search._choose(tried, 0.02)
    plan, (count, drop) = search._confirm(best, 0.02, tried, tried)
    assert 1.0 - 0.98 > 0.02 and plan is best and plan["trials"]["a"].candidate.label == "t1" and count == 100
