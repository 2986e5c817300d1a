"""The zip and safetensors source formats (`keras-v3`, `safetensors`, `npz`) and layer mapping.

Round trips keep the structure and every tensor bit for bit, and the bytes where
spec/container.md §5 promises them; hostile structures are rejected in one line;
weights-only and `.keras` files map to layers for numpy inference exactly as Keras
runs them.  Interoperability is proven with the real `safetensors` package and Keras
(CI sets ``NNZIP_REQUIRE_KERAS=1``: their absence is then a failure, not a skip).
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from .h5compare import assert_same_file
from .nnz_tools import blobs_of, rebuild, split_file
from nnzip import api, cli, formats
from nnzip.errors import InputError
from nnzip.infer import build_model
from .samples import SAMPLES, TEST_DATA

REQUIRED = os.environ.get("NNZIP_REQUIRE_KERAS") == "1"


def need(module: str):
    """Import an interoperability package, or skip -- unless CI said it is required."""
    if REQUIRED:
        return importlib.import_module(module)
    return pytest.importorskip(module)


def roundtrip(source: Path, tmp_path: Path, **options) -> tuple[Path, Path]:
    nnz = tmp_path / (source.name + ".nnz")
    api.compress(source, nnz, **options)
    out = tmp_path / ("rebuilt-" + source.name)
    api.decompress(nnz, out)
    return nnz, out


def run(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    assert status == 1
    assert err.startswith("nnzip: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_inputs(count: int = 256) -> np.ndarray:
    with np.load(TEST_DATA, allow_pickle=False) as data:
        return data["x"][:count]


test_inputs.__test__ = False  # a helper, not a test


# --- safetensors ------------------------------------------------------------------------------


def write_safetensors_by_hand(path: Path, header: str, data: bytes) -> Path:
    """A safetensors file with exactly this header text (to test forms the package never writes)."""
    raw = header.encode("utf-8")
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def mixed_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "embed.weight": rng.standard_normal((64, 48)).astype(np.float32),
        "head.bias": rng.standard_normal(10).astype(np.float64),
        "half": rng.standard_normal((3, 4)).astype(np.float16),
        "steps": np.arange(5, dtype=np.int64),
        "codes": np.arange(6, dtype=np.int8).reshape(2, 3),
        "mask": np.array([True, False, True]),
        "count": np.array(3, dtype=np.int32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "u16": np.arange(4, dtype=np.uint16),
    }


def test_safetensors_roundtrip_is_byte_identical(tmp_path):
    numpy_api = need("safetensors.numpy")
    tensors = mixed_tensors()
    source = tmp_path / "model.safetensors"
    numpy_api.save_file(tensors, source, metadata={"format": "np", "note": "naïve \"quoted\"\n\x01"})
    model = formats.read_model(source)
    assert model.source_format == "safetensors" and "header" not in model.structure  # the package's form is canonical
    assert [t["name"] for t in model.structure["tensors"]] == list(model.tensors)
    nnz, out = roundtrip(source, tmp_path)
    assert out.read_bytes() == source.read_bytes()
    loaded = numpy_api.load_file(out)
    for name, value in tensors.items():
        assert loaded[name].dtype == value.dtype and loaded[name].tobytes() == value.tobytes()
    assert all(t["error"] == 0 for t in api.inspect(nnz)["tensors"])


def test_safetensors_bf16_is_raw_bits_and_quantized_in_bf16(tmp_path):
    """bf16 is carried as raw bits (<u2); lossy settings widen it exactly and rebuild bf16 (spec §4.5)."""
    need("safetensors")
    torch = need("torch")
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    source = tmp_path / "bf16.safetensors"
    weights = {"w": torch.randn(64, 64, dtype=torch.bfloat16), "v": torch.randn(64, 64)}
    save_file(weights, str(source))
    model = formats.read_model(source)
    kinds = {t["name"]: t["dtype"] for t in model.structure["tensors"]}
    assert kinds == {"v": "F32", "w": "BF16"} and model.tensors["w"].dtype == np.dtype("<u2")
    nnz = tmp_path / "bf16.nnz"
    api.compress(source, nnz, rules=_bits(4))
    errors = {t["name"]: t["error"] for t in api.inspect(nnz)["tensors"]}
    assert 0 < errors["w"] < 0.2 and errors["v"] > 0  # both quantized; w's error is on its values, not its bits
    out = tmp_path / "out.safetensors"
    api.decompress(nnz, out)
    rebuilt = load_file(str(out))["w"]
    assert rebuilt.dtype == torch.bfloat16 and len(torch.unique(rebuilt)) <= 16


def _bits(bits: int):
    from nnzip.plan import PlanRules, Settings

    return PlanRules(Settings(bits=bits), [])


def test_safetensors_non_canonical_header_is_kept_verbatim(tmp_path):
    values = np.arange(6, dtype="<f4")
    header = '{ "b": {"shape": [2], "dtype": "F32", "data_offsets": [16, 24]},\n  "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]} }'
    source = write_safetensors_by_hand(tmp_path / "odd.safetensors", header, values.tobytes())
    model = formats.read_model(source)
    assert model.structure["header"] == header and model.structure["metadata"] is None
    assert list(model.tensors) == ["a", "b"]  # data order, not header order
    _, out = roundtrip(source, tmp_path)
    assert out.read_bytes() == source.read_bytes()


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}', "contiguous"),
        ('{"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}', "unsupported dtype"),
        ('{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}', "need 12"),
        ('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "a": {}}', "duplicate key"),
    ],
)
def test_safetensors_malformed_input_is_one_line(tmp_path, capsys, header, fragment):
    source = write_safetensors_by_hand(tmp_path / "bad.safetensors", header, bytes(8))
    status, _, err = run(capsys, "compress", source)
    assert_one_line_error(status, err, "not a valid safetensors file", fragment)


# --- npz --------------------------------------------------------------------------------------


def npz_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((40, 30)).astype(np.float32)
    return {
        "w": matrix,
        "w_fortran": np.asfortranarray(matrix),
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
        "flags": np.array([True, False]),
        "scalar": np.float64(2.5),
        "half": np.ones(3, dtype=np.float16),
    }


@pytest.mark.parametrize(("saver", "method"), [(np.savez, zipfile.ZIP_STORED), (np.savez_compressed, zipfile.ZIP_DEFLATED)])
def test_npz_roundtrip_is_byte_identical(tmp_path, saver, method):
    arrays = npz_arrays()
    source = tmp_path / "arrays.npz"
    saver(source, **arrays)
    model = formats.read_model(source)
    assert model.source_format == "npz" and list(model.tensors) == list(arrays)
    assert {m["zip"]["compress_type"] for m in model.structure["members"]} == {method}
    nnz, out = roundtrip(source, tmp_path)
    assert out.read_bytes() == source.read_bytes()
    with np.load(out, allow_pickle=False) as rebuilt:
        for name, value in arrays.items():
            value = np.asarray(value)
            assert rebuilt[name].dtype == value.dtype and rebuilt[name].shape == value.shape
            assert rebuilt[name].tobytes(order="A") == value.tobytes(order="A")
    assert all(t["error"] == 0 for t in api.inspect(nnz)["tensors"])


def test_npz_object_array_is_refused(tmp_path, capsys):
    source = tmp_path / "objects.npz"
    np.savez(source, x=np.array([{"a": 1}, None], dtype=object))
    status, _, err = run(capsys, "compress", source)
    assert_one_line_error(status, err, "object array", "never unpickles")


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_lossy_bits_on_weights_only_files(tmp_path, capsys, suffix):
    rng = np.random.default_rng(11)
    tensors = {"dense.kernel": rng.standard_normal((256, 128)).astype(np.float32), "dense.bias": rng.standard_normal(128).astype(np.float32)}
    source = tmp_path / f"model{suffix}"
    if suffix == ".npz":
        np.savez(source, **tensors)
    else:
        need("safetensors.numpy").save_file(tensors, source)
    assert run(capsys, "compress", source, "--bits", "4")[0] == 0
    source.rename(tmp_path / "original")
    assert run(capsys, "decompress", tmp_path / "model.nnz")[0] == 0
    if suffix == ".npz":
        with np.load(source, allow_pickle=False) as data:
            rebuilt = {k: data[k] for k in data.files}
    else:
        rebuilt = need("safetensors.numpy").load_file(source)
    kernel = rebuilt["dense.kernel"]
    assert kernel.dtype == np.float32 and kernel.shape == (256, 128) and len(np.unique(kernel)) <= 16
    assert np.linalg.norm(kernel - tensors["dense.kernel"]) < 0.15 * np.linalg.norm(tensors["dense.kernel"])
    assert rebuilt["dense.bias"].tobytes() == tensors["dense.bias"].tobytes()  # 1-D: kept exact
    assert (tmp_path / "model.nnz").stat().st_size < 0.2 * sum(t.nbytes for t in tensors.values())


# --- keras-v3 ---------------------------------------------------------------------------------


def extract(archive: Path, member: str, target: Path) -> Path:
    with zipfile.ZipFile(archive) as zf:
        target.write_bytes(zf.read(member))
    return target


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("keep_optimizer", [False, True], ids=["drop-optimizer", "keep-optimizer"])
def test_keras_v3_roundtrip(tmp_path, name, keep_optimizer):
    source = SAMPLES / f"{name}.keras"
    nnz, out = roundtrip(source, tmp_path, keep_optimizer=keep_optimizer)
    with zipfile.ZipFile(source) as a, zipfile.ZipFile(out) as b:
        assert [(i.filename, i.date_time, i.compress_type, i.external_attr) for i in a.infolist()] == \
            [(i.filename, i.date_time, i.compress_type, i.external_attr) for i in b.infolist()]
        for member in ("metadata.json", "config.json"):
            assert a.read(member) == b.read(member)
    skip = () if keep_optimizer else ("optimizer",)
    assert_same_file(extract(source, "model.weights.h5", tmp_path / "a.h5"), extract(out, "model.weights.h5", tmp_path / "b.h5"), skip=skip)
    info = api.inspect(nnz)
    assert info["source_format"] == "keras-v3"
    assert [d["path"] for d in info["dropped"]] == ([] if keep_optimizer else ["model.weights.h5/optimizer"])
    assert all(t["error"] == 0 and t["name"].startswith("model.weights.h5/") for t in info["tensors"])


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_keras_loads_the_rebuilt_keras_file(tmp_path, name, keras):
    source = SAMPLES / f"{name}.keras"
    _, out = roundtrip(source, tmp_path)
    x = test_inputs()
    with pytest.warns(UserWarning, match="optimizer"):  # the dropped optimizer state is re-initialised
        rebuilt = keras.saving.load_model(out)
    np.testing.assert_array_equal(rebuilt.predict(x, verbose=0), keras.saving.load_model(source).predict(x, verbose=0))


def test_zip_that_is_neither_keras_nor_npz(tmp_path, capsys):
    source = tmp_path / "notes.zip"
    with zipfile.ZipFile(source, "w") as zf:
        zf.writestr("readme.txt", "hello")
    status, _, err = run(capsys, "compress", source)
    assert_one_line_error(status, err, "zip archive but neither a Keras .keras file", "nor a numpy .npz")
    assert not (tmp_path / "notes.nnz").exists()


@pytest.mark.parametrize("name", ["model.safetensors", "model.npz", "cnn.keras"])
def test_default_names_keep_the_source_suffix(tmp_path, capsys, name):
    source = tmp_path / name
    if name.endswith(".keras"):
        shutil.copy(SAMPLES / name, source)
    elif name.endswith(".npz"):
        np.savez(source, w=np.ones((3, 3), np.float32))
    else:
        write_safetensors_by_hand(source, '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}     ', bytes(8))
    expected = source.read_bytes()
    assert run(capsys, "compress", source)[0] == 0
    nnz = source.with_suffix(".nnz")
    assert nnz.exists()
    source.unlink()
    status, out, _ = run(capsys, "decompress", nnz)
    assert status == 0 and source.exists() and source.name in out
    if not name.endswith(".keras"):  # the inner HDF5 file of a .keras is rebuilt by tree, not by bytes
        assert source.read_bytes() == expected


# --- hostile structures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict[str, bytes]:
    """One small valid .nnz per zip/safetensors format."""
    folder = tmp_path_factory.mktemp("valid")
    sources = {
        "keras-v3": SAMPLES / "cnn.keras",
        "npz": folder / "a.npz",
        "safetensors": write_safetensors_by_hand(
            folder / "a.safetensors", '{"__metadata__":{"k":"v"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8)
        ),
    }
    np.savez(sources["npz"], w=np.ones((2, 3), np.float32), b=np.arange(3))
    files = {}
    for fmt, source in sources.items():
        api.compress(source, folder / f"{fmt}.nnz")
        files[fmt] = (folder / f"{fmt}.nnz").read_bytes()
    return files


def _member(structure: dict, name: str) -> dict:
    return next(m for m in structure["members"] if m["name"] == name)


HOSTILE = {
    "keras-v3": [
        (lambda s: _member(s, "config.json")["zip"].update(compress_type=99), "rule 5.4", "compress_type"),
        (lambda s: _member(s, "config.json").update(data="not base64!"), "rule 5.4", "not valid base64"),
        (lambda s: _member(s, "config.json")["zip"].update(date_time=[1970, 1, 1, 0, 0, 0]), "rule 5.4", "date_time"),
        (lambda s: _member(s, "model.weights.h5").pop("hdf5"), "rule 5.4", "exactly one"),
        (lambda s: s["members"].append(copy.deepcopy(s["members"][0])), "rule 5.4", "share a name"),
        (lambda s: _member(s, "model.weights.h5")["hdf5"].pop("children"), "HDF5 structure"),
        (lambda s: s.update(extra=1), "rule 5.4"),
    ],
    "safetensors": [
        (lambda s: s["tensors"][0].update(dtype="C64"), "rule 5.5", "unsupported dtype"),
        (lambda s: s["tensors"][0].update(shape=[-2]), "rule 5.5", "bad shape"),
        (lambda s: s["tensors"][0].update(name="__metadata__"), "rule 5.5"),
        (lambda s: s.update(metadata=[["k", 1]]), "rule 5.5", "strings"),
        (lambda s: s.update(metadata=[["k", "v"], ["k", "w"]]), "rule 5.5", "duplicate"),
        (lambda s: s.update(header='{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'), "rule 5.5", "verbatim header"),
        (lambda s: s.update(header='{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{}}'), "rule 5.5"),
    ],
    "npz": [
        (lambda s: s["members"][0]["npy"].update(version=[4, 0]), "rule 5.6", "version"),
        (lambda s: s["members"][0]["npy"].update(header="{'descr': '|O', 'fortran_order': False, 'shape': (2, 3), }"), "rule 5.6", "object array"),
        (lambda s: s["members"][0]["npy"].update(header="__import__('os').system('true')"), "rule 5.6", "dict literal"),
        (lambda s: s["members"][0]["npy"].update(header="{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3)}"), "rule 5.6"),
        (lambda s: s["members"][1].update(name="w"), "rule 5.6", "share a name"),
        (lambda s: s["members"][0]["zip"].update(external_attr=-1), "rule 5.6", "external_attr"),
        (lambda s: s["members"][0].update(name=""), "rule 5.6", "member name"),
    ],
}


@pytest.mark.parametrize(
    ("fmt", "index"), [(fmt, i) for fmt, cases in HOSTILE.items() for i in range(len(cases))], ids=lambda v: str(v)
)
def test_hostile_structure_is_rejected_in_one_line(tmp_path, capsys, valid_files, fmt, index):
    mutate, *fragments = HOSTILE[fmt][index]
    header, _, _ = split_file(valid_files[fmt])
    header = copy.deepcopy(header)
    mutate(header["source"]["structure"])
    bad = tmp_path / "bad.nnz"
    bad.write_bytes(rebuild(header, blobs_of(valid_files[fmt])))
    status, _, err = run(capsys, "decompress", bad, "-o", tmp_path / "out")
    assert_one_line_error(status, err, *fragments)
    assert not (tmp_path / "out").exists()


def test_structure_disagreeing_with_the_tensor_entries_is_rejected(tmp_path, capsys, valid_files):
    """A structure whose dtype differs from what the tensor decodes to: the writer refuses."""
    header, _, _ = split_file(valid_files["safetensors"])
    structure = header["source"]["structure"]
    structure["tensors"][0]["dtype"] = "I32"  # same size as the stored F32
    structure.pop("header")  # else rule 5.5 already catches the mismatch with the verbatim header
    bad = tmp_path / "bad.nnz"
    bad.write_bytes(rebuild(header, blobs_of(valid_files["safetensors"])))
    status, _, err = run(capsys, "decompress", bad, "-o", tmp_path / "out.safetensors")
    assert_one_line_error(status, err, "decodes to <f4", "needs <i4")
    assert not (tmp_path / "out.safetensors").exists() and not list(tmp_path.glob(".out*"))


def test_headers_validate_against_the_schema(valid_files):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).parent.parent / "spec" / "header.schema.json").read_text())
    for data in valid_files.values():
        jsonschema.validate(split_file(data)[0], schema, cls=jsonschema.Draft202012Validator)
    broken = split_file(valid_files["npz"])[0]
    broken["source"]["structure"]["members"][0]["npy"]["version"] = [9, 9]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema, cls=jsonschema.Draft202012Validator)


# --- layer mapping for inference ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["softmax", "autoencoder", "mlp", "cnn"])
def test_weights_h5_layers_predict_like_the_legacy_file(name):
    """Config from <name>.h5, weights from <name>.weights.h5: the same numpy predictions, bit for bit."""
    legacy = formats.read_model(SAMPLES / f"{name}.h5")
    weights = formats.read_model(SAMPLES / f"{name}.weights.h5")
    config, version = formats.model_config(legacy), formats.keras_version(legacy)
    x = test_inputs(64)
    expected = build_model(config, formats.layer_weights(legacy), keras_version=version).predict(x)
    np.testing.assert_array_equal(build_model(config, formats.layer_weights(weights), keras_version=version).predict(x), expected)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_keras_v3_layers_predict_like_keras(name, keras):
    source = SAMPLES / f"{name}.keras"
    model = formats.read_model(source)
    assert formats.keras_version(model) == "3.15.1" and formats.model_config(model)["class_name"] in ("Sequential", "Functional")
    x = test_inputs()
    ours = build_model(formats.model_config(model), formats.layer_weights(model), keras_version=formats.keras_version(model)).predict(x)
    np.testing.assert_allclose(ours, keras.saving.load_model(source, compile=False).predict(x, verbose=0), atol=2e-5, rtol=0)


def test_nested_models_map_to_nested_dicts(tmp_path, keras):
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d1"), keras.layers.BatchNormalization(name="bn")], name="inner")
    side_in = keras.Input((4,), name="side_in")
    side = keras.Model(side_in, keras.layers.Dense(2, name="side_dense")(side_in), name="side")
    x = keras.Input((4,), name="x")
    y = keras.layers.Dense(2, name="out")(keras.layers.Concatenate(name="cat")([inner(x), side(x)]))
    outer = keras.Model(x, y, name="outer")
    outer.save(tmp_path / "nested.keras")
    outer.save_weights(tmp_path / "nested.weights.h5")
    data = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    expected = outer.predict(data, verbose=0)
    archive = formats.read_model(tmp_path / "nested.keras")
    mapped = formats.layer_weights(archive)
    assert set(mapped["inner"]) == {"d1", "bn"} and len(mapped["inner"]["bn"]) == 4
    for weights_source in (archive, formats.read_model(tmp_path / "nested.weights.h5")):
        ours = build_model(formats.model_config(archive), formats.layer_weights(weights_source)).predict(data)
        np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)


def test_layer_with_sub_objects_is_a_clear_error(tmp_path):
    """An RNN keeps its weights under ``cell``: nnzip says so instead of guessing an order."""
    path = tmp_path / "rnn.weights.h5"
    with h5py.File(path, "w") as h5:
        h5.create_group("layers/lstm/vars").attrs["name"] = "lstm"
        cell = h5.create_group("layers/lstm/cell/vars")
        cell.attrs["name"] = "lstm_cell"
        cell["0"] = np.zeros((2, 8), np.float32)
    with pytest.raises(InputError, match="sub-objects \\['cell'\\]"):
        formats.layer_weights(formats.read_model(path))


def test_weights_only_formats_have_no_layers(tmp_path):
    source = tmp_path / "a.npz"
    np.savez(source, w=np.ones(2))
    model = formats.read_model(source)
    assert formats.model_config(model) is None
    with pytest.raises(InputError, match="no Keras layers"):
        formats.layer_weights(model)
