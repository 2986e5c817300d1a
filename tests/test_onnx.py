"""ONNX models in and out (spec/container.md §5.7), hostile ONNX inputs, and onnxruntime scoring.

The samples are real files: ``ppocr_cls.onnx`` (PaddleOCR's text-orientation classifier,
weights in Constant nodes' float_data) and ``silero_vad_16k_op15.onnx`` (Silero VAD: raw
initializers, If subgraphs) as shipped inside PyPI packages, plus ``mlp.onnx``,
``cnn.onnx`` and ``tiny_bert.onnx`` exported by ``samples/make_onnx_samples.py``.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnzip import cli, formats
from nnzip.formats import onnx_format

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ONNX_SAMPLES = ["mlp.onnx", "cnn.onnx", "tiny_bert.onnx", "ppocr_cls.onnx", "silero_vad_16k_op15.onnx"]
VAL, TEST = SAMPLES / "fashion-mnist-val.npz", SAMPLES / "fashion-mnist-test.npz"


def run(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_refused(status: int, err: str, folder: Path, before: set[str], *fragments: str) -> None:
    """Exit 1, one line on stderr naming *fragments*, and no file added to *folder* (no output, no temp file)."""
    assert status == 1, err
    assert err.startswith("nnzip: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    assert {p.name for p in folder.iterdir()} == before


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def roundtrip(capsys, source: Path, tmp_path: Path, *options: str) -> Path:
    nnz, out = tmp_path / (source.stem + ".nnz"), tmp_path / ("rebuilt-" + source.name)
    assert run(capsys, "compress", source, "-o", nnz, "-q", *options)[0] == 0
    assert run(capsys, "decompress", nnz, "-o", out, "-q")[0] == 0
    return out


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ONNX_SAMPLES)
def test_sample_lossless_roundtrip_is_byte_identical(tmp_path, capsys, name):
    out = roundtrip(capsys, SAMPLES / name, tmp_path)
    assert out.read_bytes() == (SAMPLES / name).read_bytes()
    onnx.checker.check_model(onnx.load(out), full_check=True)


@pytest.mark.parametrize("name", ONNX_SAMPLES)
def test_sample_lossy_roundtrip_loads_and_keeps_non_weights_exact(tmp_path, capsys, name):
    out = roundtrip(capsys, SAMPLES / name, tmp_path, "--bits", "4")
    onnx.checker.check_model(onnx.load(out), full_check=True)
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    original, rebuilt = formats.read_model(SAMPLES / name), formats.read_model(out)
    weights = onnx_format.weight_names(original.structure)
    changed = {n for n, v in original.tensors.items() if not np.array_equal(v, rebuilt.tensors[n])}
    assert changed, "--bits 4 changed no tensor"
    assert changed <= weights  # shapes, indices, scales and other constants stay exact
    assert original.structure["model"] == rebuilt.structure["model"]  # graph, attributes, metadata unchanged


def test_sample_is_recognised_by_content_not_suffix(tmp_path, capsys):
    source = tmp_path / "weights.bin"
    shutil.copy(SAMPLES / "cnn.onnx", source)
    assert formats.read_model(source).source_format == "onnx"
    out = roundtrip(capsys, source, tmp_path)
    assert out.read_bytes() == source.read_bytes()


def test_what_is_a_weight():
    bert = formats.read_model(SAMPLES / "tiny_bert.onnx")
    weights = onnx_format.weight_names(bert.structure)
    assert "tokens.weight" in weights  # embedding, via Gather
    matmul = [r for r in bert.structure["tensors"] if any(f.startswith("MatMul") for f in r["feeds"])]
    assert matmul and all(r["name"] in weights for r in matmul)
    integers = [n for n, v in bert.tensors.items() if v.dtype.kind in "iub"]
    assert integers and not set(integers) & weights  # shapes and indices are never weights
    assert "positions" not in weights  # added, not multiplied: not a weight input
    ocr = formats.read_model(SAMPLES / "ppocr_cls.onnx")
    conv = {r["name"] for r in ocr.structure["tensors"] if r["at"][0] == "constant" and r["feeds"] == ["Conv:1"]}
    assert len(conv) >= 50 and conv <= onnx_format.weight_names(ocr.structure)
    assert {r["storage"] for r in ocr.structure["tensors"]} == {"float_data", "int64_data"} or "float_data" in {
        r["storage"] for r in ocr.structure["tensors"]}


def test_inspect_says_what_each_tensor_feeds(tmp_path, capsys):
    nnz = tmp_path / "bert.nnz"
    assert run(capsys, "compress", SAMPLES / "tiny_bert.onnx", "-o", nnz, "-q")[0] == 0
    status, out, _ = run(capsys, "inspect", nnz, "--json")
    feeds = {t["name"]: t["feeds"] for t in json.loads(out)["tensors"]}
    assert status == 0 and feeds["tokens.weight"] == ["Gather:0"] and feeds["positions"] == ["Add:1"]


def every_dtype_model() -> onnx.ModelProto:
    """A model whose initializers use every storage nnzip carries, and some it leaves in the model."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((40, 30)).astype(np.float32), "raw_f32"),
        helper.make_tensor("typed_f32", TensorProto.FLOAT, [4, 3], rng.standard_normal(12).astype(np.float32).tolist()),
        helper.make_tensor("typed_i64", TensorProto.INT64, [3], [1, -2, 2**40]),
        helper.make_tensor("typed_i8", TensorProto.INT8, [4], [-128, -1, 0, 127]),
        helper.make_tensor("typed_u8", TensorProto.UINT8, [2], [0, 255]),
        helper.make_tensor("typed_bool", TensorProto.BOOL, [3], [True, False, True]),
        helper.make_tensor("typed_f16", TensorProto.FLOAT16, [3], np.array([1.5, -2, 65504], np.float16).view(np.uint16).tolist()),
        helper.make_tensor("typed_f64", TensorProto.DOUBLE, [2], [1e300, -0.5]),
        helper.make_tensor("typed_u64", TensorProto.UINT64, [2], [0, 2**63 + 5]),
        helper.make_tensor("raw_bf16", TensorProto.BFLOAT16, [2, 2], np.array([1, 2, 3, 0xFFFF], np.uint16).tobytes(), raw=True),
        helper.make_tensor("raw_int4", TensorProto.INT4, [3], bytes([0x21, 0x03]), raw=True),
        helper.make_tensor("raw_i16", TensorProto.INT16, [2], np.array([-7, 300], np.int16).tobytes(), raw=True),
        helper.make_tensor("strings", TensorProto.STRING, [2], [b"a", b"bc"]),
    ]
    out_of_range = TensorProto(name="out_of_range_i8", data_type=TensorProto.INT8, dims=[1])
    out_of_range.int32_data.append(300)  # not exact as int8: stays in the model
    inits.append(out_of_range)
    node = helper.make_node("MatMul", ["x", "raw_f32"], ["y"], name="mm", doc_string="kept")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 40])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 30])], initializer=inits, doc_string="graph doc")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], producer_name="nnzip-test")
    helper.set_model_props(model, {"author": "test"})
    return model


def test_every_storage_roundtrips_byte_identical(tmp_path, capsys):
    source = tmp_path / "dtypes.onnx"
    onnx.save(every_dtype_model(), source)
    model = formats.read_model(source)
    storages = {r["name"]: r["storage"] for r in model.structure["tensors"]}
    assert storages["typed_f32"] == "float_data" and storages["typed_i8"] == "int32_data" and storages["raw_bf16"] == "raw"
    assert "strings" not in model.tensors and "out_of_range_i8" not in model.tensors
    assert model.tensors["typed_f16"].dtype == np.float16 and model.tensors["raw_int4"].shape == (2,)
    out = roundtrip(capsys, source, tmp_path)
    assert out.read_bytes() == source.read_bytes()


def test_external_data_roundtrip(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    model = onnx.load(SAMPLES / "mlp.onnx")
    onnx.save_model(model, folder / "mlp.onnx", save_as_external_data=True, all_tensors_to_one_file=True, location="mlp.data", size_threshold=0)
    (folder / "mlp.onnx").rename(folder / "ext.onnx")
    read = formats.read_model(folder / "ext.onnx")
    assert {r["storage"] for r in read.structure["tensors"]} == {"external"}
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    nnz = tmp_path / "ext.nnz"
    assert run(capsys, "compress", folder / "ext.onnx", "-o", nnz, "-q")[0] == 0
    assert run(capsys, "decompress", nnz, "-o", out_dir / "ext.onnx", "-q")[0] == 0
    assert (out_dir / "ext.onnx").read_bytes() == (folder / "ext.onnx").read_bytes()
    assert (out_dir / "mlp.data").read_bytes() == (folder / "mlp.data").read_bytes()
    x = np.load(TEST)["x"][:64]
    run_a = ort.InferenceSession(str(folder / "ext.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    run_b = ort.InferenceSession(str(out_dir / "ext.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(run_a, run_b)


def _external_mlp(tmp_path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(onnx.load(SAMPLES / "mlp.onnx"), folder / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="mlp.data", size_threshold=0)
    return folder / "ext.onnx"


def test_existing_external_data_file_is_never_replaced(tmp_path, capsys):
    """The .nnz names the external data file, not the user: an existing one is refused even with -f, and kept."""
    nnz = tmp_path / "ext.nnz"
    assert run(capsys, "compress", _external_mlp(tmp_path), "-o", nnz, "-q")[0] == 0
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "mlp.data").write_bytes(b"precious")
    for extra in ([], ["-f"]):
        status, _, err = run(capsys, "decompress", nnz, "-o", out_dir / "ext.onnx", *extra)
        assert status == 1 and "rule 5.7.3" in err and "already exists" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["mlp.data"]
    assert (out_dir / "mlp.data").read_bytes() == b"precious"


def test_onnx_input_declaring_more_than_the_cap_is_refused(tmp_path, capsys):
    """Rule 8.7 for ONNX: declared tensor bytes (external data included) are capped before any is read."""
    out = tmp_path / "ext.nnz"
    status, _, err = run(capsys, "compress", _external_mlp(tmp_path), "-o", out, "--max-output", "64K")
    assert status == 1 and "rule 8.7" in err and err.count("\n") == 1, err
    assert not out.exists()


# --- hostile ONNX inputs --------------------------------------------------------------------


def tiny_model(initializer: TensorProto, attribute_text: str | None = None) -> onnx.ModelProto:
    node = helper.make_node("Identity", ["w"], ["y"])
    if attribute_text is not None:
        node.attribute.append(helper.make_attribute("note", attribute_text))
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[initializer])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def external_tensor(location: str, length: int = 16) -> TensorProto:
    tensor = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def write_model(path: Path, model: onnx.ModelProto) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/hostname", "sub/../../secret.bin", "link/secret.bin"])
def test_external_data_escaping_the_folder_is_refused(tmp_path, capsys, location):
    (tmp_path / "secret.bin").write_bytes(bytes(16))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "link").symlink_to(tmp_path)
    source = write_model(folder / "m.onnx", tiny_model(external_tensor(location)))
    before = files(folder)
    status, _, err = run(capsys, "compress", source)
    assert_refused(status, err, folder, before, "rule 5.7.3", "escapes the model's folder")


def test_external_data_shorter_than_the_tensor_is_refused(tmp_path, capsys):
    (tmp_path / "w.bin").write_bytes(bytes(8))
    source = write_model(tmp_path / "m.onnx", tiny_model(external_tensor("w.bin")))
    before = files(tmp_path)
    status, _, err = run(capsys, "compress", source)
    assert_refused(status, err, tmp_path, before, "rule 5.7.3", "holds 8 bytes")


@pytest.mark.parametrize(("dims", "fragment"), [([2**40], "dims"), ([3, -1], "dims"), ([2**16, 2**16], "more than the cap"), ([5], "raw_data holds 16 bytes")])
def test_absurd_dims_are_refused(tmp_path, capsys, dims, fragment):
    tensor = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    del tensor.dims[:]
    tensor.dims.extend(dims)
    source = write_model(tmp_path / "m.onnx", tiny_model(tensor))
    before = files(tmp_path)
    status, _, err = run(capsys, "compress", source)
    assert_refused(status, err, tmp_path, before, "rule 5.7.4", fragment)


def test_giant_attribute_is_refused(tmp_path, capsys):
    model = tiny_model(numpy_helper.from_array(np.zeros(4, np.float32), "w"), "x" * (onnx_format.MAX_MODEL_BYTES + 1))
    source = write_model(tmp_path / "m.onnx", model)
    before = files(tmp_path)
    status, _, err = run(capsys, "compress", source)
    assert_refused(status, err, tmp_path, before, "rule 5.7.5", "cap")


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_protobuf_is_refused(tmp_path, capsys, cut):
    data = (SAMPLES / "cnn.onnx").read_bytes()
    source = tmp_path / "m.onnx"
    source.write_bytes(data[: int(len(data) * cut)])
    before = files(tmp_path)
    status, _, err = run(capsys, "compress", source)
    assert_refused(status, err, tmp_path, before, "rule 5.7.2", "not a valid ONNX protobuf")


def nnz_with_structure(tmp_path: Path, capsys, change) -> Path:
    """A valid .nnz of an external-data model whose onnx structure *change* alters (header re-written with valid CRCs)."""
    from .nnz_tools import blobs_of, rebuild, split_file

    (tmp_path / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    source = write_model(tmp_path / "m.onnx", tiny_model(external_tensor("w.bin")))
    nnz = tmp_path / "m.nnz"
    assert run(capsys, "compress", source, "-o", nnz, "-q")[0] == 0
    data = nnz.read_bytes()
    header = json.loads(json.dumps(split_file(data)[0]))
    change(header["source"]["structure"])
    bad = tmp_path / "bad.nnz"
    bad.write_bytes(rebuild(header, blobs_of(data)))
    return bad


def _escape_location(structure: dict) -> None:
    model = onnx.ModelProto.FromString(base64.b64decode(structure["model"]))
    model.graph.initializer[0].external_data[0].value = "../escaped.bin"
    structure["model"] = base64.b64encode(model.SerializeToString()).decode()


def test_nnz_whose_external_location_escapes_is_refused(tmp_path, capsys):
    bad = nnz_with_structure(tmp_path, capsys, _escape_location)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = files(tmp_path)
    status, _, err = run(capsys, "decompress", bad, "-o", out_dir / "m.onnx")
    assert_refused(status, err, out_dir, set(), "rule 5.7.3")
    assert files(tmp_path) == before and not (tmp_path / "escaped.bin").exists()


def _far_offset(structure: dict) -> None:
    model = onnx.ModelProto.FromString(base64.b64decode(structure["model"]))
    entry = next(e for e in model.graph.initializer[0].external_data if e.key == "offset")
    entry.value = str(10**15)  # a sparse file of a petabyte
    structure["model"] = base64.b64encode(model.SerializeToString()).decode()


def test_nnz_whose_external_offset_is_far_is_refused(tmp_path, capsys):
    bad = nnz_with_structure(tmp_path, capsys, _far_offset)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    status, _, err = run(capsys, "decompress", bad, "-o", out_dir / "m.onnx")
    assert_refused(status, err, out_dir, set(), "rule 5.7.3", "gap")


@pytest.mark.parametrize("change", [
    lambda s: s.pop("tensors"),
    lambda s: s.__setitem__("model", "not base64!"),
    lambda s: s["tensors"][0].__setitem__("storage", "float_data"),
    lambda s: s["tensors"][0].__setitem__("dims", [2**40]),
    lambda s: s["tensors"][0].__setitem__("data_type", 8),
    lambda s: s["tensors"][0].__setitem__("at", ["node", 0]),
])
def test_malformed_onnx_structure_is_refused(tmp_path, capsys, change):
    bad = nnz_with_structure(tmp_path, capsys, change)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    status, _, err = run(capsys, "decompress", bad, "-o", out_dir / "m.onnx")
    assert_refused(status, err, out_dir, set(), "rule 5.7.1")


# --- scoring with onnxruntime ----------------------------------------------------------------


def verify_json(capsys, nnz: Path, data: Path, original: Path) -> dict:
    status, out, err = run(capsys, "verify", nnz, "--data", data, "--original", original, "--json")
    assert status == 0, err
    return json.loads(out)


def test_verify_reports_accuracy_and_per_output_error(tmp_path, capsys):
    nnz = tmp_path / "mlp.nnz"
    assert run(capsys, "compress", SAMPLES / "mlp.onnx", "-o", nnz, "-q", "--bits", "2")[0] == 0
    info = verify_json(capsys, nnz, TEST, SAMPLES / "mlp.onnx")
    assert info["metric"] == "accuracy" and info["original"] == pytest.approx(0.882)  # the Keras sample's own test accuracy
    assert info["rebuilt"] < info["original"] and 0 < info["top1_agreement"] < 1
    assert set(info["layer_output_errors"]) == {"probabilities"} and info["layer_output_errors"]["probabilities"] > 0


def test_cosine_needs_the_original(tmp_path, capsys):
    nnz = tmp_path / "bert.nnz"
    assert run(capsys, "compress", SAMPLES / "tiny_bert.onnx", "-o", nnz, "-q")[0] == 0
    before = files(tmp_path)
    status, _, err = run(capsys, "verify", nnz, "--data", SAMPLES / "tiny_bert-test.npz")
    assert_refused(status, err, tmp_path, before, "cosine", "--original")


def test_data_without_the_model_inputs_is_refused(tmp_path, capsys):
    data = tmp_path / "d.npz"
    np.savez(data, tokens=np.zeros((4, 16), np.int64), other=np.zeros((4, 2)))
    status, _, err = run(capsys, "compress", SAMPLES / "tiny_bert.onnx", "-o", tmp_path / "b.nnz", "--data", data, "--max-drop", "0.01")
    assert_refused(status, err, tmp_path, {"d.npz"}, "input_ids")


@pytest.mark.slow  # an end-to-end budget search: minutes; deselect with -m 'not slow'
def test_budget_on_classifier_holds_on_another_split(tmp_path, capsys):
    nnz = tmp_path / "mlp.nnz"
    assert run(capsys, "compress", SAMPLES / "mlp.onnx", "-o", nnz, "-q", "--data", VAL, "--max-drop", "0.01")[0] == 0
    info = verify_json(capsys, nnz, TEST, SAMPLES / "mlp.onnx")
    assert info["drop"] <= 0.01 + 0.005  # the search's split is not the test split: a little slack
    assert nnz.stat().st_size < (SAMPLES / "mlp.onnx").stat().st_size / 4


@pytest.mark.slow  # an end-to-end budget search: minutes; deselect with -m 'not slow'
def test_budget_on_transformer_by_output_cosine(tmp_path, capsys):
    nnz = tmp_path / "bert.nnz"
    status, _, err = run(capsys, "compress", SAMPLES / "tiny_bert.onnx", "-o", nnz, "-q", "--data", SAMPLES / "tiny_bert-calib.npz", "--max-drop", "0.01")
    assert status == 0, err
    info = verify_json(capsys, nnz, SAMPLES / "tiny_bert-test.npz", SAMPLES / "tiny_bert.onnx")
    assert info["metric"] == "cosine" and info["drop"] <= 0.01 + 0.005
    assert nnz.stat().st_size < (SAMPLES / "tiny_bert.onnx").stat().st_size / 2


def test_onnx_header_follows_the_schema(tmp_path, capsys):
    """spec/header.schema.json describes an ONNX .nnz header (its $defs/onnx resolves and validates)."""
    import json

    import jsonschema

    from nnzip.container import open_container

    nnz = tmp_path / "mlp.nnz"
    assert run(capsys, "compress", SAMPLES / "mlp.onnx", "-o", nnz, "-q")[0] == 0
    schema = json.loads((Path(__file__).parent.parent / "spec" / "header.schema.json").read_text())
    with open_container(nnz) as container:
        header = container.header
    jsonschema.Draft202012Validator(schema).validate(header)
    broken = json.loads(json.dumps(header))
    broken["source"]["structure"]["tensors"][0]["storage"] = "elsewhere"
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(broken))
