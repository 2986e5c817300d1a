"""Tensors inside ONNX subgraphs (If/Loop bodies): carried, rebuilt, lossy only where they are weights (§5.7).

The models are made with onnx.helper, checked by onnx.checker and run by onnxruntime;
``silero_vad_16k_op15.onnx`` (shipped in a PyPI package) has If subgraphs of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnzip import api, cli, formats
from nnzip.formats import onnx_format

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
RNG = np.random.default_rng(7)
#: The then-branch weight, the else-branch weight (same name, another scope) and the Loop body's.
W_THEN = RNG.standard_normal((64, 32)).astype(np.float32)
W_ELSE = RNG.standard_normal((64, 32)).astype(np.float32)
W_LOOP = RNG.standard_normal((32, 32)).astype(np.float32) * 0.1


def run(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def branch(name: str, weight: np.ndarray, nested: onnx.GraphProto | None = None) -> onnx.GraphProto:
    """y = x @ W (+ an inner If on the same condition when *nested*), W an initializer of this branch named 'W'."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h" if nested else "y"])]
    if nested is not None:
        nodes.append(helper.make_node("If", ["cond"], ["inner"], then_branch=nested, else_branch=identity_branch("h", "inner")))
        nodes.append(helper.make_node("Add", ["h", "inner"], ["y"]))
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 32])  # an integer constant: never lossy
    nodes.append(helper.make_node("Reshape", ["y", "shape"], ["out"]))
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                             initializer=[numpy_helper.from_array(weight, "W"), shape])


def identity_branch(source: str, output: str) -> onnx.GraphProto:
    return helper.make_graph([helper.make_node("Identity", [source], [output])], "pass", [],
                             [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)])


def loop_body() -> onnx.GraphProto:
    """A Loop body: state = tanh(state @ V) with V an initializer of the body, V constant in a Constant node too."""
    nodes = [
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        helper.make_node("Constant", [], ["V"], value=numpy_helper.from_array(W_LOOP, "V")),
        helper.make_node("MatMul", ["state", "V"], ["mixed"]),
        helper.make_node("Tanh", ["mixed"], ["state_out"]),
    ]
    inputs = [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
              helper.make_tensor_value_info("state", TensorProto.FLOAT, None)]
    outputs = [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("state_out", TensorProto.FLOAT, None)]
    return helper.make_graph(nodes, "body", inputs, outputs)


def subgraph_model() -> onnx.ModelProto:
    """If(cond) on x (N, 64): then x @ W_then (+ a nested If), else x @ W_else; then a 2-step Loop on the result."""
    nested = branch("nested", W_THEN[:, :32] * 0.5)
    top = [
        helper.make_node("If", ["cond"], ["chosen"], then_branch=branch("then", W_THEN, nested), else_branch=branch("else", W_ELSE)),
        helper.make_node("Loop", ["trips", "", "chosen"], ["y"], body=loop_body()),
    ]
    graph = helper.make_graph(
        top, "subgraphs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])],
        initializer=[numpy_helper.from_array(np.array(2, np.int64), "trips")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="nnzip-tests")
    onnx.checker.check_model(model, full_check=True)
    return model


def outputs(path: Path, x: np.ndarray, cond: bool) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x, "cond": np.array(cond)})[0]


@pytest.fixture()
def model_file(tmp_path) -> Path:
    path = tmp_path / "branches.onnx"
    path.write_bytes(subgraph_model().SerializeToString())
    return path


def test_subgraph_initializers_and_constants_are_carried(model_file):
    model = formats.read_model(model_file)
    records = {r["name"]: r for r in model.structure["tensors"]}
    # Both branches name their weight 'W': the second carried one is 'W#2'; every path leads to its graph.
    assert {"W", "W#2", "W#3", "V", "shape", "trips"} <= set(records)
    assert records["trips"]["at"] == ["initializer", 0]
    assert records["W"]["at"] == ["initializer", 0, [[0, 0, -1]]]
    assert records["V"]["at"][0] == "constant" and records["V"]["feeds"] == ["MatMul:1"]
    depths = sorted(len(r["at"][2]) for r in records.values() if len(r["at"]) == 3)
    assert max(depths) == 2  # the If nested in the then-branch
    np.testing.assert_array_equal(model.tensors["V"], W_LOOP)
    assert {np.asarray(model.tensors[n]).tobytes() for n in ("W", "W#2", "W#3")} >= {W_THEN.tobytes(), W_ELSE.tobytes()}
    weights = onnx_format.weight_names(model.structure)
    assert {"W", "W#2", "W#3", "V"} <= weights and not {"shape", "shape#2", "trips"} & weights
    stripped = onnx.ModelProto()
    stripped.ParseFromString(__import__("base64").b64decode(model.structure["model"]))
    then_w = stripped.graph.node[0].attribute[0].g.initializer[0]
    assert then_w.name == "W" and not then_w.raw_data  # its data lives in the .nnz tensor, not in the stripped model


def test_lossless_roundtrip_is_byte_identical_and_version_1_2(model_file, tmp_path, capsys):
    nnz, out = tmp_path / "b.nnz", tmp_path / "rebuilt.onnx"
    assert run(capsys, "compress", model_file, "-o", nnz, "-q")[0] == 0
    assert api.inspect(nnz)["format_version"] == "1.2"  # subgraph tensors: §2's lowest version that says so
    assert run(capsys, "decompress", nnz, "-o", out, "-q")[0] == 0
    assert out.read_bytes() == model_file.read_bytes()
    x = RNG.standard_normal((5, 64)).astype(np.float32)
    for cond in (True, False):
        np.testing.assert_array_equal(outputs(out, x, cond), outputs(model_file, x, cond))


def test_lossy_changes_only_subgraph_weights_and_still_runs(model_file, tmp_path, capsys):
    nnz, out = tmp_path / "b.nnz", tmp_path / "rebuilt.onnx"
    assert run(capsys, "compress", model_file, "-o", nnz, "-q", "--bits", "5")[0] == 0
    assert run(capsys, "decompress", nnz, "-o", out, "-q")[0] == 0
    onnx.checker.check_model(onnx.load(out), full_check=True)
    original, rebuilt = formats.read_model(model_file), formats.read_model(out)
    changed = {n for n, v in original.tensors.items() if not np.array_equal(v, rebuilt.tensors[n])}
    assert {"W", "W#2", "V"} <= changed <= onnx_format.weight_names(original.structure)
    assert original.structure["model"] == rebuilt.structure["model"]
    x = RNG.standard_normal((64, 64)).astype(np.float32)
    for cond in (True, False):
        a, b = outputs(model_file, x, cond), outputs(out, x, cond)
        assert 0 < np.linalg.norm(a - b) / np.linalg.norm(a) < 0.3  # changed, and still the same model


def test_inspect_lists_subgraph_tensors_with_what_they_feed(model_file, tmp_path, capsys):
    nnz = tmp_path / "b.nnz"
    assert run(capsys, "compress", model_file, "-o", nnz, "-q")[0] == 0
    status, out, _ = run(capsys, "inspect", nnz)
    assert status == 0
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    assert rows["tensor"].rstrip().endswith("feeds")
    assert rows["W#2"].rstrip().endswith("MatMul:1") and rows["shape"].rstrip().endswith("Reshape:1")
    status, out, _ = run(capsys, "inspect", nnz, "--json")
    assert {t["name"]: t["feeds"] for t in json.loads(out)["tensors"]}["V"] == ["MatMul:1"]


def test_silero_vad_if_branches_roundtrip(tmp_path, capsys):
    """The shipped model's If subgraphs hold tensors too; they are carried and come back byte for byte."""
    source = SAMPLES / "silero_vad_16k_op15.onnx"
    model = formats.read_model(source)
    inside = [r for r in model.structure["tensors"] if len(r["at"]) == 3]
    assert inside, "silero_vad's If bodies carry no tensor"
    nnz, out = tmp_path / "vad.nnz", tmp_path / "vad.onnx"
    assert run(capsys, "compress", source, "-o", nnz, "-q")[0] == 0
    assert run(capsys, "decompress", nnz, "-o", out, "-q")[0] == 0
    assert out.read_bytes() == source.read_bytes()


# --- hostile: subgraph bombs and bad paths ------------------------------------------------------


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    tag, length, out = (number << 3) | 2, len(payload), bytearray()
    for value in (tag, length):
        while True:
            byte = value & 0x7F
            value >>= 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                break
    return bytes(out) + payload


def nested_model_bytes(depth: int) -> bytes:
    """A ModelProto whose If bodies nest *depth* deep, encoded by hand (onnx's own writer stops near 33)."""
    graph = helper.make_graph([], "leaf", [], []).SerializeToString()
    for _ in range(depth):
        attribute = helper.make_attribute("then_branch", helper.make_graph([], "g", [], []))
        attribute.ClearField("g")
        attribute_bytes = attribute.SerializeToString() + _field(6, graph)  # AttributeProto.g = 6
        node = helper.make_node("If", ["c"], ["y"]).SerializeToString() + _field(5, attribute_bytes)  # NodeProto.attribute = 5
        graph = helper.make_graph([], "g", [], []).SerializeToString() + _field(1, node)  # GraphProto.node = 1
    model = helper.make_model(helper.make_graph([], "top", [], []), opset_imports=[helper.make_opsetid("", 17)])
    model.ClearField("graph")
    return model.SerializeToString() + _field(7, graph)  # ModelProto.graph = 7


@pytest.mark.parametrize("depth", [40, 2000])
def test_subgraph_bomb_is_refused(tmp_path, capsys, depth):
    source = tmp_path / "bomb.onnx"
    source.write_bytes(nested_model_bytes(depth))
    before = {p.name for p in tmp_path.iterdir()}
    status, _, err = run(capsys, "compress", source)
    assert status == 1 and err.startswith("nnzip: error: ") and err.count("\n") == 1, err
    assert "rule 5.7.2" in err or "rule 5.7.6" in err, err
    assert {p.name for p in tmp_path.iterdir()} == before


def test_nesting_within_the_parser_but_past_the_cap_is_refused(tmp_path, capsys, monkeypatch):
    """Rule 5.7.6 holds on its own: with a lower cap, a model the parser accepts is refused."""
    monkeypatch.setattr(onnx_format, "MAX_GRAPH_DEPTH", 4)
    source = tmp_path / "deep.onnx"
    source.write_bytes(nested_model_bytes(6))
    before = {p.name for p in tmp_path.iterdir()}
    status, _, err = run(capsys, "compress", source)
    assert status == 1 and "rule 5.7.6" in err and err.count("\n") == 1, err
    assert {p.name for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("at", [
    ["initializer", 0, []],                        # an empty path
    ["initializer", 0, [[0, 0]]],                  # a step of two
    ["initializer", 0, [[0, 0, -2]]],              # graph index below -1
    ["initializer", 0, [[0, 0, -1]] * 33],         # deeper than the cap
    ["initializer", 0, [[0, 9, -1]]],              # no such attribute
    ["initializer", 0, [[0, 1, 0]]],               # no graphs[0] on else_branch
])
def test_nnz_with_a_bad_subgraph_path_is_refused(model_file, tmp_path, capsys, at):
    from .nnz_tools import blobs_of, rebuild, split_file  # a valid-CRC .nnz with an edited header

    nnz = tmp_path / "b.nnz"
    assert run(capsys, "compress", model_file, "-o", nnz, "-q")[0] == 0
    data = nnz.read_bytes()
    header = json.loads(json.dumps(split_file(data)[0]))
    next(r for r in header["source"]["structure"]["tensors"] if r["name"] == "W")["at"] = at
    nnz.write_bytes(rebuild(header, blobs_of(data)))
    out = tmp_path / "out.onnx"
    before = {p.name for p in tmp_path.iterdir()}
    status, _, err = run(capsys, "decompress", nnz, "-o", out)
    assert status == 1 and "rule 5.7.1" in err and err.count("\n") == 1, err
    assert {p.name for p in tmp_path.iterdir()} == before


def test_subgraph_header_follows_the_schema(model_file, tmp_path, capsys):
    """spec/header.schema.json takes the 1.2 `at` with a path, and not a path step of two."""
    import jsonschema

    from nnzip.container import open_container

    nnz = tmp_path / "b.nnz"
    assert run(capsys, "compress", model_file, "-o", nnz, "-q")[0] == 0
    schema = json.loads((Path(__file__).parent.parent / "spec" / "header.schema.json").read_text())
    with open_container(nnz) as container:
        header = container.header
    jsonschema.Draft202012Validator(schema).validate(header)
    broken = json.loads(json.dumps(header))
    next(r for r in broken["source"]["structure"]["tensors"] if r["name"] == "W")["at"][2][0] = [0, 0]
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(broken))
