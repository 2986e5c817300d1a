"""The budget search's speed-ups change no number, and every float tensor is in play (issue 11).

* Downstream-only evaluation (a forward cache of each layer's input) gives the same outputs,
  to the bit, as running the whole model.
* The search's result does not depend on how many threads try candidates.
* Biases and small kernels get candidates, and a lossy one is chosen only when the
  measured drop fits the budget.
* ``-v`` says what the search tries in words.
"""

from __future__ import annotations

import numpy as np
import pytest

from nnzip import api, cli
from nnzip import formats
from nnzip.evaluate import KerasEvaluator, load_data
from nnzip.pipeline import encode_tensor
from nnzip.plan import lossless_plan
from nnzip.search import BudgetSearch, describe, small_candidates
from .samples import SAMPLES, VAL_DATA


def _perturbed(model, name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """The model's tensors with one of them changed by noise (a stand-in for a lossy candidate)."""
    tensors = dict(model.tensors)
    array = tensors[name]
    noise = np.random.default_rng(seed).normal(0, 0.1 * (float(np.std(array)) + 1e-3), array.shape)
    tensors[name] = (array + noise).astype(array.dtype)
    return tensors


def _subset(count: int = 600):
    data = load_data(VAL_DATA)
    return type(data)(data.x[:count], data.y[:count])


@pytest.mark.parametrize("sample", ["cnn.h5", "mlp.keras", "autoencoder.h5", "mlp_tfkeras.h5"])
def test_downstream_evaluation_equals_the_full_forward_pass_to_the_bit(sample):
    model = formats.read_model(SAMPLES / sample)
    evaluator = KerasEvaluator(model, _subset(700), batch_size=256)  # 700 samples: three batches, one short
    names = [n for n, a in model.tensors.items() if a.dtype.kind == "f" and n in evaluator._layer_of()]
    evaluator.prepare_changes(names)
    assert evaluator._cache.layers  # something is cached
    for index, name in enumerate(names):
        tensors = _perturbed(model, name, index)
        full = np.asarray(evaluator.predict(tensors))
        cached = evaluator.network(tensors).predict_changed(evaluator._cache, {evaluator._layer_of()[name]})
        assert np.array_equal(full, np.asarray(cached)), name
        assert np.array_equal(evaluator.per_sample(tensors), evaluator.per_sample_changed(tensors, {name}))
    # several layers changed at once (as a combined plan): still the same bits
    tensors = dict(model.tensors)
    for index, name in enumerate(names):
        tensors[name] = _perturbed(model, name, 100 + index)[name]
    assert np.array_equal(evaluator.per_sample(tensors), evaluator.per_sample_changed(tensors, set(names)))


def test_the_cache_reruns_only_downstream_layers():
    """A change to the last layer runs that layer alone; one to the first runs them all."""
    model = formats.read_model(SAMPLES / "cnn.h5")
    evaluator = KerasEvaluator(model, _subset(64))
    graph = evaluator.network(model.tensors)._graph
    assert [n.layer.name for n in graph.dependent_nodes({"output"})] == ["output"]
    assert [n.layer.name for n in graph.dependent_nodes({"conv2"})] == ["conv2", "flatten", "output"]
    assert len(graph.dependent_nodes({"conv1"})) == len(graph.nodes) - 1  # all but the Reshape in front of it
    # a cache too large for its cap leaves the layer out: it is then rerun in full, with the same result
    evaluator.CACHE_BYTES = 1
    evaluator.prepare_changes([n for n in model.tensors if "output" in n])
    assert not evaluator._cache.layers
    tensors = _perturbed(model, "model_weights/output/output/kernel")
    assert np.array_equal(evaluator.per_sample(tensors), evaluator.per_sample_changed(tensors, {"model_weights/output/output/kernel"}))


def _search(sample: str, jobs: int, every_tensor: bool = True, max_drop: float = 0.01, margin: float = 1.0, data=None):
    model = formats.read_model(SAMPLES / sample)
    data = data or _subset()
    search = BudgetSearch(model, KerasEvaluator(model, data), data, margin=margin, jobs=jobs, every_tensor=every_tensor)
    return search, search.run(max_drop)


def test_search_result_does_not_depend_on_jobs():
    _, one = _search("softmax.h5", 1)
    _, two = _search("softmax.h5", 3)
    assert one.choices == two.choices
    assert (one.drop, one.drop_bound, one.measured, one.evaluations) == (two.drop, two.drop_bound, two.measured, two.evaluations)
    assert {n: e.blobs for n, e in one.encoded.items()} == {n: e.blobs for n, e in two.encoded.items()}


def test_search_without_every_tensor_keeps_the_bias_exact():
    search, result = _search("softmax.h5", 2, every_tensor=False)
    kernel, bias = "model_weights/dense/softmax/dense/kernel", "model_weights/dense/softmax/dense/bias"
    assert search.tensors_in_play() == ([kernel], []) and set(result.choices) == {kernel}
    # stored bit for bit (bias correction may have shifted its values, as before)
    rebuilt = result.encoded[bias].reconstruction
    assert result.encoded[bias].blobs == encode_tensor(bias, rebuilt, lossless_plan(rebuilt)).blobs


def test_biases_and_small_kernels_are_in_play_with_their_own_candidates():
    model = formats.read_model(SAMPLES / "cnn.h5")
    data = _subset(200)
    search = BudgetSearch(model, KerasEvaluator(model, data), data)
    large, small = search.tensors_in_play()
    assert set(large) == {"model_weights/conv2/conv2/kernel", "model_weights/output/output/kernel"}
    assert set(small) == {"model_weights/conv1/conv1/kernel", "model_weights/conv1/conv1/bias",
                          "model_weights/conv2/conv2/bias", "model_weights/output/output/bias"}
    assert not any("bn1" in n for n in small)  # normalisation statistics and scales stay exact
    assert search.display("model_weights/conv1/conv1/kernel") == "conv1's kernel"
    search.evaluator.prepare_changes(small)
    labels = [t.candidate.label for t in search.trials_for("model_weights/output/output/bias")]
    assert "float16" in labels and any(label.startswith("uniform") for label in labels)
    trials = search.trials_for("model_weights/conv1/conv1/kernel")
    assert any(t.candidate.label.startswith("kmeans") for t in trials)
    # each trial's drop is measured: 1-bit k-means on the first convolution costs accuracy
    assert max(t.drop for t in trials) > 0.01


def test_a_lossy_bias_is_chosen_only_when_measured_within_the_budget():
    """A budget of 0 with no margin: whatever is lossy was measured not to lower accuracy, alone and together."""
    search, result = _search("softmax.h5", 2, max_drop=0.0, margin=0.0)
    bias = "model_weights/dense/softmax/dense/bias"
    assert search.tensors_in_play()[1] == [bias] and bias in result.choices
    assert result.drop <= 0.0 and result.drop_bound <= 0.0
    tensors = {n: e.reconstruction for n, e in result.encoded.items()}
    assert search.evaluator.drop(search.baseline, search.evaluator.measure(tensors)) == pytest.approx(result.drop)
    # the bias's options were measured like any tensor's
    assert len(search.trials_for(bias)) >= 4


def test_small_candidates_and_words():
    bias = np.linspace(-1, 1, 10).astype(np.float32)
    labels = [c.label for c in small_candidates(bias, bias=True)]
    assert labels[0] == "float16" and not any(label.startswith("kmeans") for label in labels)
    kernel = np.random.default_rng(0).normal(size=(3, 3, 1, 8)).astype(np.float32)
    assert "kmeans6" in [c.label for c in small_candidates(kernel, bias=False)]
    assert "kmeans7" not in [c.label for c in small_candidates(kernel, bias=False)]  # 128 levels for 72 values
    assert describe("kmeans3") == "3-bit k-means"
    assert describe("kmeans3+gptq") == "3-bit k-means fitted to the layer's inputs"
    assert describe("svd8+uniform0.71sd") == "rank-8 SVD, factors in uniform steps of 0.71 standard deviations"
    assert describe("prune0.9+kmeans4") == "the smallest 90% of weights pruned, the rest in 4-bit k-means"


def test_verbose_search_log_is_in_words(tmp_path, capsys):
    """``-v``: one line per candidate ("trying 3-bit k-means on output's kernel: drop 0.20 points")."""
    output = tmp_path / "softmax.nnz"
    status = cli.main(["compress", str(SAMPLES / "softmax.h5"), "-o", str(output), "--data", str(VAL_DATA), "--max-drop", "0.01", "-v"])
    out, err = capsys.readouterr()
    assert status == 0, err
    lines = err.splitlines()
    tries = [line for line in lines if line.strip().startswith("trying ")]
    assert any(line.strip().startswith("trying 3-bit k-means on ") and " points, " in line for line in tries), tries[:5]
    assert any("float16 on " in line and "'s bias" in line for line in tries)
    assert any("combining choices whose drops add up to" in line and ("within the budget" in line or "over the budget" in line) for line in lines)
    assert any("to store it" in line and "smaller than lossless" in line for line in lines)
    assert any("checked on the 500 held-out samples: " in line and "within the budget" in line for line in lines), lines[-5:]
    # without -v, no line per candidate; the summary lines stay
    status = cli.main(["compress", str(SAMPLES / "softmax.h5"), "-o", str(output), "-f", "--data", str(VAL_DATA), "--max-drop", "0.01"])
    out, err = capsys.readouterr()
    assert status == 0 and "trying " not in err and "combining choices" in err
    assert api.inspect(output)["plan"]["search"]["drop_bound"] <= 0.01
