"""The noise margin of the budget search (issue 13): the combination's error as measured, and the default rule.

A plan fits when its drop plus ``margin`` paired standard errors is within the budget.
The error of a *combination* is the spread of its per-sample differences; the old noise
pass charged each trial its own error and added them, which counts the noise several
times over (changes that flip different samples add in quadrature, not linearly) and kept
plans that fit out of reach.  These tests build that case from synthetic trials (each
trial flips fixed samples, so every combination's drop and error are known exactly), and
check the default margin (2) everywhere it is stated.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

import nnzip
from nnzip import cli
from nnzip.budget import Budget
from nnzip.model import Model
from nnzip.options import budget_from_options
from nnzip.scoring import DEFAULT_MARGIN, Evaluator, standard_error
from nnzip.search import BudgetSearch, Candidate, Trial, _allocate, _pareto
from .samples import SAMPLES, VAL_DATA

COUNT = 2000
BASE_CORRECT = 1800  # baseline accuracy 0.9
BUDGET = 0.005


class FlipEvaluator(Evaluator):
    """Accuracy per sample; a tensor's first element names its trial, and each trial flips fixed samples.

    ``flips[name][k] = (now wrong, now right)``: sample indices trial *k* of tensor *name*
    makes wrong or right (trial 0: the original values).
    """

    metric = "accuracy"

    def __init__(self, flips: dict[str, dict[int, tuple[range, range]]]):
        self.flips = flips

    def per_sample(self, tensors):
        correct = np.zeros(COUNT)
        correct[:BASE_CORRECT] = 1.0
        for name, trials in self.flips.items():
            wrong, right = trials.get(int(tensors[name][0]), (range(0), range(0)))
            correct[list(wrong)] = 0.0
            correct[list(right)] = 1.0
        return correct


# Three tensors.  Trial 1 of each churns (40 samples each way: drop 0, error 0.0045) and is
# the smallest; trial 2 is mild (3 samples made wrong, 1 right: drop 0.001, error 0.001).
# All flips are on different samples.  With margin 1 and a 0.005 budget:
#   three mild trials together: drop 0.003 + 1 × 0.00173 (√12 / 2000) = 0.00473, within;
#   the old rule's cost, each trial's drop plus its own error: 3 × 0.002 = 0.006, over.
FLIPS = {
    "a": {1: (range(0, 40), range(1800, 1840)), 2: (range(40, 43), range(1840, 1841))},
    "b": {1: (range(100, 140), range(1900, 1940)), 2: (range(200, 203), range(1950, 1951))},
    "c": {1: (range(300, 340), range(1960, 2000)), 2: (range(400, 403), range(1850, 1851))},
}
SIZES = {"a": [10_000, 500, 2_000], "b": [8_000, 400, 1_500], "c": [9_000, 450, 1_800]}


def _search(margin: float = 1.0, jobs: int = 1) -> BudgetSearch:
    model = Model("npz", {}, {name: np.zeros(4, np.float32) for name in FLIPS})
    return BudgetSearch(model, FlipEvaluator(FLIPS), None, margin=margin, jobs=jobs)


def _trial(name: str, index: int, size: int, search: BudgetSearch) -> Trial:
    """Trial *index* of tensor *name*, measured alone as the search measures a candidate (drop, error, differences)."""
    values = np.full(4, float(index), np.float32)
    samples = search.evaluator.per_sample({**search.model.tensors, name: values})
    differences = search.evaluator.drop_differences(search.baseline_samples, samples)
    drop = search.evaluator.drop(search.baseline, float(np.mean(samples)))
    encoded = SimpleNamespace(reconstruction=values, blobs=[b"x" * size])
    return Trial(Candidate(f"t{index}" if index else "lossless", None), encoded, size, drop, None,
                 standard_error(differences), differences.astype(np.float32) if index else None)


def _tried(search: BudgetSearch) -> dict[str, list[Trial]]:
    return {name: [_trial(name, k, size, search) for k, size in enumerate(row)] for name, row in SIZES.items()}


def _labels(plan: dict[str, Trial]) -> list[str]:
    return [t.candidate.label for t in plan.values()]


def test_each_trial_alone_is_as_designed():
    search = _search()
    tried = _tried(search)
    churn, mild = tried["a"][1], tried["a"][2]
    assert churn.drop == 0.0 and churn.error == pytest.approx(np.sqrt(80 / COUNT / (COUNT - 1)))
    assert mild.drop == pytest.approx(0.001) and mild.error == pytest.approx(0.001, rel=0.01)
    assert float(np.mean(mild.differences)) == pytest.approx(mild.drop)


def test_a_measured_plan_uses_the_paired_error_of_its_own_per_sample_differences():
    """The margin test bounds what was measured: the combination's samples against the baseline's, not its trials' errors."""
    search = _search()
    tried = _tried(search)
    plan = search._measured_plan({name: trials[2] for name, trials in tried.items()})
    combined = np.zeros(COUNT)
    combined[:BASE_CORRECT] = 1.0
    for name in FLIPS:
        wrong, right = FLIPS[name][2]
        combined[list(wrong)], combined[list(right)] = 0.0, 1.0
    paired = np.std(search.baseline_samples - combined, ddof=1) / np.sqrt(COUNT)
    assert plan["raw_drop"] == pytest.approx(0.003)
    assert plan["drop"] - plan["raw_drop"] == pytest.approx(paired)
    assert plan["drop"] == pytest.approx(0.00473, abs=1e-5) and plan["drop"] <= BUDGET
    summed = sum(trials[2].drop + trials[2].error for trials in tried.values())
    assert summed > BUDGET  # what the old noise pass charged this plan


def test_the_predicted_bound_is_the_paired_error_of_the_summed_differences():
    """With flips on different samples the prediction from the trials' differences is exact."""
    search = _search()
    tried = _tried(search)
    milds = {name: trials[2] for name, trials in tried.items()}
    measured = search._measured_plan(milds)["drop"]
    assert search.predicted_bound(milds) == pytest.approx(measured)
    # without the per-sample differences, the errors add in quadrature (still below their sum)
    bare = {name: Trial(t.candidate, t.encoded, t.stored_bytes, t.drop, None, t.error) for name, t in milds.items()}
    assert search.predicted_bound(bare) == pytest.approx(0.003 + np.sqrt(sum(t.error ** 2 for t in milds.values())))
    # changes that undo each other on a sample cancel there: one trial's differences and their negation
    a = milds["a"]
    undo = Trial(a.candidate, a.encoded, a.stored_bytes, 0.0, None, a.error, -a.differences)
    assert search.predicted_bound({"a": a, "b": undo}) == pytest.approx(a.drop)


def test_the_noise_allocation_takes_the_combination_the_old_sum_rule_missed():
    """The old rule (each trial's drop + its own error, added) allocates two mild trials at most; the new one all three."""
    search = _search()
    tried = _tried(search)
    old_fronts = {name: _pareto(trials[0], trials[1:], 1.0) for name, trials in tried.items()}
    old = _allocate(old_fronts, BUDGET, noise=1.0)
    assert sorted(_labels(old)).count("t2") == 2
    new = search._allocate_combined(tried, BUDGET)
    assert _labels(new) == ["t2", "t2", "t2"]
    assert search.predicted_bound(new) <= BUDGET
    assert sum(t.stored_bytes for t in new.values()) == 2_000 + 1_500 + 1_800


def test_the_search_returns_the_combination_within_the_budget():
    search = _search()
    tried = _tried(search)
    options = {name: _pareto(trials[0], trials[1:]) for name, trials in tried.items()}
    best = search._choose(options, BUDGET, None, tried)
    assert _labels(best["trials"]) == ["t2", "t2", "t2"] and best["bytes"] == 5_300
    assert best["drop"] <= BUDGET
    assert best["bytes"] == min(p["bytes"] for p in search._plans.values() if p["drop"] <= BUDGET)


def test_the_noise_pass_does_not_depend_on_jobs():
    results = []
    for jobs in (1, 3):
        search = _search(jobs=jobs)
        tried = _tried(search)
        options = {name: _pareto(trials[0], trials[1:]) for name, trials in tried.items()}
        search._pool = ThreadPoolExecutor(jobs) if jobs > 1 else None
        try:
            best = search._choose(options, BUDGET, None, tried)
        finally:
            if search._pool is not None:
                search._pool.shutdown()
        results.append((_labels(best["trials"]), best["bytes"], best["drop"], search.evaluations))
    assert results[0] == results[1]


@pytest.mark.parametrize("metric, kind", [("accuracy", "absolute"), ("cosine", "absolute"), ("mse", "absolute"), ("score", "relative")])
def test_per_sample_differences_average_to_the_drop(metric, kind):
    """Each sample's share of the drop sums, over the samples, to the drop of every metric and kind."""
    evaluator = Evaluator()
    evaluator.metric, evaluator.drop_kind = metric, kind
    rng = np.random.default_rng(3)
    reference, samples = rng.uniform(0.5, 1.5, 500), rng.uniform(0.4, 1.6, 500)
    differences = evaluator.drop_differences(reference, samples)
    assert float(np.mean(differences)) == pytest.approx(evaluator.drop(float(np.mean(reference)), float(np.mean(samples))))
    assert evaluator.drop_error(reference, samples) == pytest.approx(np.std(differences, ddof=1) / np.sqrt(500))


# --- the default rule -----------------------------------------------------------------------


def test_the_default_margin_is_two_standard_errors_everywhere():
    assert DEFAULT_MARGIN == 2.0
    assert Budget("x.npz", 0.01).margin == DEFAULT_MARGIN
    assert budget_from_options("x.npz", 0.01).margin == DEFAULT_MARGIN
    assert nnzip.public._budget({"data": "x.npz", "max_drop": 0.01}, []).margin == DEFAULT_MARGIN
    assert BudgetSearch.__init__.__defaults__[1] == DEFAULT_MARGIN  # margin, after log


def test_the_help_and_the_readme_state_the_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compress", "--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--margin K" in help_text and "(default 2)" in help_text
    readme = (SAMPLES.parent / "README.md").read_text()
    assert "`--margin 2`, the default" in readme


def test_a_compress_without_margin_records_margin_two(tmp_path, capsys):
    """End to end through the CLI on the softmax sample: the header's search record says which margin bounded the plan."""
    with np.load(VAL_DATA) as npz:
        np.savez(tmp_path / "val.npz", x=npz["x"][:400], y=npz["y"][:400])
    out = tmp_path / "softmax.nnz"
    assert cli.main(["compress", str(SAMPLES / "softmax.h5"), "-o", str(out), "--data", str(tmp_path / "val.npz"), "--max-drop", "0.02"]) == 0
    search = nnzip.inspect(out)["plan"]["search"]
    assert search["margin"] == DEFAULT_MARGIN
    assert search["drop_bound"] <= 0.02 and search["drop_bound"] >= search["drop"]
    capsys.readouterr()
    assert cli.main(["inspect", str(out)]) == 0
    assert "with a 2.0-standard-error margin" in capsys.readouterr().out
