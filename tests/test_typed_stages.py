"""Stages as instances with typed configuration (issue 12, item 2).

* every registered stage parses its stored configuration once into a frozen dataclass
  (``from_config``) and writes back exactly the dict the file stores (``to_config``);
* the pipeline keeps those instances: what it checked in each golden ``.nnz`` gives back
  the header's own stage dicts, byte for byte in JSON;
* the 1.x classmethod form (configuration as an extra argument) is the instance form;
* the shared parameter checks word every stage's ConfigError the same way;
* the tail policy lives apart from the coding math: no stage module imports another in a cycle.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from nnzip import api
from nnzip.container import open_container
from nnzip.errors import ConfigError, FormatError
from nnzip.pipeline import TensorPlan, check_tensor_entry, decode_checked, encode_tensor, stage_ref
from nnzip.stages import _REGISTRY, ArraySpec, BytesSpec, Kind, Stage, get_stage

TESTS = Path(__file__).parent
STAGE_FIXTURES = TESTS / "fixtures" / "stages"
GOLDEN_FILES = sorted((TESTS / "fixtures").glob("golden-*.nnz"))
STAGES_DIR = Path(api.__file__).parent / "stages"


def _fixture_cases() -> list[tuple[str, dict, object]]:
    """``(stage id, stored configuration, input spec)`` of every stage fixture, plus ``dense`` (which has none)."""
    cases = []
    for path in sorted(STAGE_FIXTURES.glob("*.json")):
        record = json.loads(path.read_text())
        stage_id = path.stem.split("-")[0]
        described = record["input"]
        if get_stage(stage_id).kind is Kind.BYTES:
            spec = BytesSpec(described["N"])
        else:
            spec = ArraySpec(np.dtype(described["dtype"]), tuple(described["shape"]))
        cases.append((stage_id, record["configuration"], spec))
    cases.append(("dense", {}, ArraySpec(np.dtype("<f4"), (2, 3))))
    return cases


CASES = _fixture_cases()


def test_every_registered_stage_has_a_case():
    assert {stage_id for stage_id, _, _ in CASES} == set(_REGISTRY)


@pytest.mark.parametrize("stage_id, config, spec", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_config_round_trip(stage_id, config, spec):
    """from_config(to_config()) is the same instance, and to_config is the stored dict (the fixtures'
    JSON sorts its keys: the order a file stores is checked on the golden files below)."""
    stage = get_stage(stage_id).from_config(config, spec)
    assert isinstance(stage, Stage) and dataclasses.is_dataclass(stage)
    assert stage.to_config() == config
    again = type(stage).from_config(json.loads(json.dumps(stage.to_config())), spec)
    assert again == stage and hash(again) == hash(stage)


@pytest.mark.parametrize("stage_id, config, spec", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_instances_are_frozen(stage_id, config, spec):
    stage = get_stage(stage_id).from_config(config, spec)
    names = [f.name for f in dataclasses.fields(stage)] or ["anything"]
    for name in names:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(stage, name, 1)


def test_a_bad_configuration_is_refused_by_from_config():
    with pytest.raises(FormatError, match="symbol_bits"):
        get_stage("huffman").from_config({"symbol_bits": 17}, BytesSpec(4))
    with pytest.raises(FormatError, match="unknown configuration fields"):
        get_stage("svd").from_config({"rank": 1, "extra": 0}, ArraySpec(np.dtype("<f4"), (4, 4)))
    with pytest.raises(FormatError, match="must be a JSON object"):
        get_stage("lzw").from_config([16], BytesSpec(4))


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=[p.stem for p in GOLDEN_FILES])
def test_pipeline_instances_give_back_each_golden_header(path):
    """The instances check_tensor_entry keeps write exactly the header's stage dicts, and decode the file."""
    assert GOLDEN_FILES, "the golden .nnz fixtures are missing"
    with open_container(path) as container:
        header = container.header
        sizes = api.blob_sizes(header)
        for entry in header["tensors"]:
            checked = check_tensor_entry(entry, sizes)
            assert isinstance(checked.transform, Stage)
            assert json.dumps(stage_ref(checked.transform)) == json.dumps(entry["transform"])
            for part, stored in zip(checked.parts, entry["parts"]):
                assert part.name == stored["name"] and part.chunk_size == stored.get("chunk_size")
                assert all(isinstance(step.stage, Stage) for step in part.chain)
                assert json.dumps([stage_ref(step.stage) for step in part.chain]) == json.dumps(stored["codecs"])
            array = decode_checked(checked, container.blob)
            assert array.shape == tuple(entry["shape"])


def test_encoded_entries_are_the_instances_configs():
    """encode_tensor writes each stage's to_config(); re-checking its entry gives equal instances."""
    rng = np.random.default_rng(3)
    array = rng.normal(size=(64, 48)).astype("<f4")
    encoded = encode_tensor("w", array, TensorPlan("svd", {"rank": 4}, [("kmeans", {"bits": 3})]))
    checked = check_tensor_entry(json.loads(json.dumps(encoded.entry)), [len(b) for b in encoded.blobs])
    assert checked.transform == get_stage("svd")(rank=4)
    kmeans = [step.stage for part in checked.parts for step in part.chain if step.stage.id == "kmeans"]
    assert len(kmeans) == 2 and all(len(stage.codebook) <= 8 for stage in kmeans)
    blobs = encoded.blobs
    assert np.array_equal(decode_checked(checked, lambda index: blobs[index]), encoded.reconstruction)


def test_classmethod_form_is_the_instance_form():
    data = bytes(np.random.default_rng(1).integers(0, 4, 5000, dtype=np.uint8))
    huffman = get_stage("huffman")
    stream, config = huffman.encode(data, BytesSpec(len(data)), {})
    stage = huffman.from_config(config, BytesSpec(len(data)))
    assert huffman.decode(stream, BytesSpec(len(data)), config) == stage.decode(stream, BytesSpec(len(data))) == data
    assert huffman.max_expansion(config) == stage.max_expansion()
    assert huffman.decode_cost(BytesSpec(len(data)), config, len(stream)) == stage.decode_cost(BytesSpec(len(data)), len(stream))
    spec = ArraySpec(np.dtype("<f4"), (6, 5))
    svd = get_stage("svd")
    assert svd.part_specs(spec, {"rank": 2}) == svd(rank=2).part_specs(spec)
    with pytest.raises(FormatError, match="rank"):
        svd.part_specs(spec, {"rank": 9})  # the stored form is checked before it is used


#: Stages whose encoder checks its parameter names with the shared helper, and a valid input for each.
UNKNOWN_PARAM_INPUTS = {
    "huffman": (b"abc", BytesSpec(3)),
    "lzw": (b"abc", BytesSpec(3)),
    "arith": (b"abc", BytesSpec(3)),
    "bitpack": (np.arange(4, dtype="|u1"), ArraySpec(np.dtype("|u1"), (4,))),
    "cast": (np.ones(4, "<f4"), ArraySpec(np.dtype("<f4"), (4,))),
    "delta": (np.arange(4, dtype="<i4"), ArraySpec(np.dtype("<i4"), (4,))),
    "kmeans": (np.ones(4, "<f4"), ArraySpec(np.dtype("<f4"), (4,))),
    "byteplanes": (np.ones(4, "<f4"), ArraySpec(np.dtype("<f4"), (4,))),
    "svd": (np.ones((4, 4), "<f4"), ArraySpec(np.dtype("<f4"), (4, 4))),
    "csr": (np.ones((4, 4), "<f4"), ArraySpec(np.dtype("<f4"), (4, 4))),
    "fft": (np.ones((4, 4), "<f4"), ArraySpec(np.dtype("<f4"), (4, 4))),
}


@pytest.mark.parametrize("stage_id", sorted(UNKNOWN_PARAM_INPUTS))
def test_unknown_parameters_are_worded_alike(stage_id):
    data, spec = UNKNOWN_PARAM_INPUTS[stage_id]
    with pytest.raises(ConfigError, match=rf"^{stage_id}: unknown parameters \['bogus'\] \(known: \[") as info:
        get_stage(stage_id).encode(data, spec, {"bogus": 1})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("stage_id, params, message", [
    ("lzw", {"max_bits": 8}, "lzw: 'max_bits' must be an integer in 9..16, got 8"),
    ("huffman", {"symbol_bits": True}, "huffman: 'symbol_bits' must be an integer in 1..16, got True"),
    ("arith", {"order": 2}, "arith: 'order' must be 0 or 1, got 2"),
    ("delta", {"zigzag": 1}, "delta: 'zigzag' must be true or false, got 1"),
    ("kmeans", {}, "kmeans: 'bits' must be an integer in 1..8, got None"),
    ("cast", {"dtype": "<f8"}, "cast: 'dtype' must be one of ['<f2', 'bfloat16'], got '<f8'"),
    ("svd", {"rank": -1}, "svd: parameter 'rank' must be an integer in 0..4 (min(m, n)), got -1"),
    ("csr", {"threshold": -1.0}, "csr: parameter 'threshold' must be a finite number >= 0, got -1.0"),
    ("fft", {"keep": 2}, "fft: parameter 'keep' must be in [0, 1], got 2"),
    ("fft", {"keep": 0.5, "select": "high"}, "fft: parameter 'select' must be one of ['low', 'largest'], got 'high'"),
])
def test_shared_parameter_messages(stage_id, params, message):
    data, spec = UNKNOWN_PARAM_INPUTS[stage_id]
    with pytest.raises(ConfigError) as info:
        get_stage(stage_id).encode(data, spec, params)
    assert str(info.value) == message


def _sibling_imports(path: Path) -> set[str]:
    """The modules of nnzip.stages that *path* imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.add(node.module.split(".")[0])
            else:
                names.update(alias.name for alias in node.names if (STAGES_DIR / f"{alias.name}.py").exists())
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nnzip.stages."):
            names.add(node.module.split(".")[2])
    return names


def test_stage_modules_import_in_no_cycle_and_entropy_is_only_math():
    graph = {path.stem: _sibling_imports(path) for path in STAGES_DIR.glob("*.py")}
    assert graph["entropy"] <= {"_huffman_kernels"}, graph["entropy"]
    assert "policy" not in set().union(*(deps for name, deps in graph.items() if name != "policy"))

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join(path + (name,))}"
        for dep in graph.get(name, ()):
            if dep != "__init__":
                visit(dep, path + (name,))

    for name in graph:
        visit(name, ())
