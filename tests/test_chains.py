"""nnzip.chains: stage chains built in one place, and stored chains described in words.

The builders must spell exactly what the stages accept (each chain is encoded for real
here), the planner, the search and the sweep must get their plans from them, and
``describe_chain`` must show every array stage of a chain -- ``delta`` included, which the
description used to leave out.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnzip import api, chains, search, sweep
from nnzip.cli import main
from nnzip.pipeline import TensorPlan, encode_tensor
from nnzip.plan import Settings, choose_plan, lossless_plan
from nnzip.stages import _REGISTRY, Kind, get_stage

RNG = np.random.default_rng(12)
#: Nearly rank 4, so that an energy-chosen SVD rank saves space.
MATRIX = (RNG.normal(size=(48, 4)) @ RNG.normal(size=(4, 40)) + 0.01 * RNG.normal(size=(48, 40))).astype("<f4")
INTEGERS = np.cumsum(RNG.integers(0, 9, size=(40, 50)), axis=1).astype("<i4")

#: One built chain per builder, with the plan spelled by hand: what the builders must produce.
BUILT = [
    (chains.chain(chains.dense()), TensorPlan("dense")),
    (chains.chain(chains.byteplanes()), TensorPlan("byteplanes")),
    (chains.chain(chains.svd(6), chains.kmeans(4)), TensorPlan("svd", {"rank": 6}, [("kmeans", {"bits": 4})])),
    (chains.chain(chains.svd_energy(0.9), chains.uniform_sd(0.35)), TensorPlan("svd", {"energy": 0.9}, [("uniform", {"step_sd": 0.35})])),
    (chains.chain(chains.csr(0.8), chains.kmeans(3)), TensorPlan("csr", {"prune": 0.8}, [("kmeans", {"bits": 3})])),
    (chains.chain(chains.fft(0.3, "low", "rfft")), TensorPlan("fft", {"keep": 0.3, "select": "low", "transform": "rfft"})),
    (chains.chain(chains.dense(), chains.uniform(0.01)), TensorPlan("dense", {}, [("uniform", {"step": 0.01})])),
    (chains.chain(chains.dense(), chains.uniform_sd(0.5, 0.12)), TensorPlan("dense", {}, [("uniform", {"step_sd": 0.5, "rdo": 0.12})])),
    (chains.chain(chains.dense(), chains.cast("<f2")), TensorPlan("dense", {}, [("cast", {"dtype": "<f2"})])),
    (chains.chain(chains.dense(), chains.delta(True)), TensorPlan("dense", {}, [("delta", {"zigzag": True})])),
]


@pytest.mark.parametrize("built, spelled", BUILT, ids=[repr(p.transform) + "".join(s for s, _ in p.value_stages) for p, _ in BUILT])
def test_builders_spell_the_plan(built, spelled):
    """Each builder gives the stage id and parameters the stage's page defines."""
    assert built == spelled


@pytest.mark.parametrize("built", [b for b, _ in BUILT], ids=[repr(p.transform) + "".join(s for s, _ in p.value_stages) for p, _ in BUILT])
def test_built_chains_encode(built):
    """The stages accept what the builders pass (a misspelt parameter raises ConfigError here)."""
    data = INTEGERS if any(stage == "delta" for stage, _ in built.value_stages) else MATRIX
    item = encode_tensor("t", data, built)
    assert item.entry["transform"]["name"] == built.transform
    codecs = [c["name"] for part in item.entry["parts"] for c in part["codecs"]]
    for stage, _ in built.value_stages:
        assert stage in codecs


def test_rdo_zero_is_not_passed_on():
    """``uniform_sd(s, 0)`` is a plain rounding: the parameters, and so the bytes, of ``uniform_sd(s)``."""
    assert chains.uniform_sd(0.5, 0.0) == chains.uniform_sd(0.5) == chains.uniform_sd(0.5, None)
    assert chains.uniform_sd(0.5, 0.12).params == {"step_sd": 0.5, "rdo": 0.12}


def test_chain_copies_its_parameters():
    """A plan's parameter dicts are its own: changing one leaves the step (and other plans) alone."""
    step = chains.kmeans(4)
    plan = chains.chain(chains.svd(2), step)
    plan.value_stages[0][1]["bits"] = 8
    plan.transform_params["rank"] = 9
    assert step.params == {"bits": 4} and chains.chain(chains.svd(2), step).transform_params == {"rank": 2}


def test_every_transform_and_array_stage_has_a_builder():
    """Each registered stage a plan can name (transforms and array stages) has a builder of that
    name here; serialize and bytes stages are chosen per blob by the encoder, not by plans."""
    plannable = {i for i in _REGISTRY if get_stage(i).kind in (Kind.TRANSFORM, Kind.ARRAY)}
    assert plannable >= {"dense", "byteplanes", "svd", "csr", "fft", "kmeans", "cast", "uniform", "delta"}  # the kinds are read
    for stage_id in plannable:
        assert callable(getattr(chains, stage_id, None)), f"nnzip.chains has no builder for stage {stage_id!r}"


def test_is_exact():
    """Exact means an exact transform and no value stage."""
    assert chains.is_exact(chains.chain(chains.dense())) and chains.is_exact(chains.chain(chains.byteplanes()))
    assert not chains.is_exact(chains.chain(chains.dense(), chains.cast()))
    assert not chains.is_exact(chains.chain(chains.csr(0.5)))


# --- the callers use the builders --------------------------------------------------------------


@pytest.mark.parametrize("settings, expected", [
    (Settings(rank=8, uniform=0.5, rdo=0.12), chains.chain(chains.svd(8), chains.uniform_sd(0.5, 0.12))),
    (Settings(energy=0.9, float16=True), chains.chain(chains.svd_energy(0.9), chains.cast("<f2"))),
    (Settings(prune=0.8, bits=3), chains.chain(chains.csr(0.8), chains.kmeans(3))),
    (Settings(fft_keep=0.3, fft_select="low", fft_transform="rfft"), chains.chain(chains.fft(0.3, "low", "rfft"))),
    (Settings(bits=2), chains.chain(chains.dense(), chains.kmeans(2))),
])
def test_planner_builds_with_chains(settings, expected):
    """plan.choose_plan turns each setting into the builder's chain."""
    plan, note = choose_plan(MATRIX, settings)
    assert plan == expected and note == ""


def test_planner_float16_on_float16_stays_exact():
    """Nothing lossy left (``--float16`` on float16) gives the lossless plan and says why."""
    half = MATRIX.astype("<f2")
    plan, note = choose_plan(half, Settings(float16=True))
    assert plan == lossless_plan(half) == chains.chain(chains.byteplanes()) and "already float16" in note


def test_search_ladder_uses_the_builders():
    """A few rungs of the search's ladder, checked against the builders."""
    ladder = {c.label: c.plan for c in search.candidates_for(MATRIX, calibrated=False)}
    assert ladder["kmeans3"] == chains.chain(chains.dense(), chains.kmeans(3))
    assert ladder["svd4+uniform0.35sd"] == chains.chain(chains.svd(4), chains.uniform_sd(0.35))
    assert ladder["prune0.9+kmeans5"] == chains.chain(chains.csr(0.9), chains.kmeans(5))
    assert ladder["dct0.2+kmeans5"] == chains.chain(chains.fft(0.2), chains.kmeans(5))
    small = {c.label: c.plan for c in search.small_candidates(MATRIX[0], bias=True)}
    assert small["float16"] == chains.chain(chains.dense(), chains.cast())


@pytest.mark.parametrize("method, setting, expected", [
    ("kmeans", 3, chains.chain(chains.dense(), chains.kmeans(3))),
    ("prune", 0.5, chains.chain(chains.csr(0.5))),
    ("fft", 0.1, chains.chain(chains.fft(0.1, "largest", "dct"))),
    ("svd", 16, chains.chain(chains.svd(16))),
])
def test_sweep_plans_use_the_builders(method, setting, expected):
    """sweep.plan_for is the builders' chain for each method."""
    assert sweep.plan_for(method, setting) == expected


# --- describing stored chains -------------------------------------------------------------------


def _compress_with_plans(tmp_path, plans):
    source = tmp_path / "m.npz"
    np.savez(source, w=INTEGERS, f=MATRIX)
    report = api.compress(source, tmp_path / "m.nnz", plans=plans)
    return report, tmp_path / "m.nnz"


def test_inspect_shows_delta(tmp_path, capsys):
    """A delta-coded tensor's chain names ``delta`` in inspect's table and JSON (it used to read plain ``dense``)."""
    report, path = _compress_with_plans(tmp_path, {"w": chains.chain(chains.dense(), chains.delta(False)),
                                                   "f": chains.chain(chains.csr(0.5), chains.kmeans(3))})
    assert [t.method for t in report.tensors] == ["dense > delta(zigzag=False)", "csr(density=0.5,index_coding=gaps) > kmeans(bits=3)"]
    assert main(["inspect", str(path)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.split()[:1] in (["w"], ["f"])}
    assert "dense > delta(zigzag=False)" in rows["w"]
    assert "csr(density=0.5,index_coding=gaps) > kmeans(bits=3)" in rows["f"]
    assert main(["inspect", "--json", str(path)]) == 0
    methods = {t["name"]: t["method"] for t in json.loads(capsys.readouterr().out)["tensors"]}
    assert methods == {"w": "dense > delta(zigzag=False)", "f": "csr(density=0.5,index_coding=gaps) > kmeans(bits=3)"}


def test_describe_chain_texts():
    """The forms the method column shows, from hand-written entries (each array stage once, in order)."""
    entry = {"name": "t", "dtype": "<f4", "shape": [10, 10], "widen": "bfloat16",
             "transform": {"name": "svd", "configuration": {"rank": 2}},
             "parts": [{"codecs": [{"name": "uniform", "configuration": {"step": "x", "offset": 0}}, {"name": "raw", "configuration": {}}]},
                       {"codecs": [{"name": "uniform", "configuration": {"step": "y", "offset": 1}}, {"name": "huffman", "configuration": {}}]},
                       {"codecs": [{"name": "delta", "configuration": {"zigzag": True}}, {"name": "bitpack", "configuration": {"bits": 3}}]}]}
    assert chains.describe_chain(entry) == "bfloat16: svd(rank=2) > uniform > delta(zigzag=True)"
    fft = {"shape": [4, 5], "transform": {"name": "fft", "configuration": {"kept": 5, "transform": "dct", "select": "low"}}, "parts": []}
    assert chains.describe_chain(fft) == "fft(density=0.25,transform=dct,select=low)"
    assert chains.stage_text({"name": "raw", "configuration": {}}) == "raw"


def test_api_keeps_describe_chain():
    """``api.describe_chain`` (which callers and tests use) is the one in chains."""
    assert api.describe_chain is chains.describe_chain
