"""The source-format registry (issue 12, item 3): one :class:`SourceFormat` object per format.

Every registered format implements the whole protocol; :func:`formats.sniff` recognises
each sample by its content, whatever its name; the module-level functions give exactly
what the format objects give; ``formats/__init__.py`` never branches on a format id; and
the format modules import only the low-level nnzip modules (and each other).
"""

from __future__ import annotations

import ast
import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from nnzip import cli, formats
from nnzip.errors import InputError
from nnzip.formats import base
from .samples import SAMPLES

FORMATS_DIR = Path(formats.__file__).parent
#: Sample -> the format it is; every model and data file in samples/ is listed (checked below).
SAMPLE_FORMATS = {
    "autoencoder.h5": "keras-h5", "cnn.h5": "keras-h5", "mlp.h5": "keras-h5", "mlp_tfkeras.h5": "keras-h5",
    "softmax.h5": "keras-h5",
    "autoencoder.weights.h5": "keras-weights-h5", "cnn.weights.h5": "keras-weights-h5",
    "mlp.weights.h5": "keras-weights-h5", "softmax.weights.h5": "keras-weights-h5",
    "cnn.keras": "keras-v3", "mlp.keras": "keras-v3",
    "cnn.onnx": "onnx", "mlp.onnx": "onnx", "ppocr_cls.onnx": "onnx", "silero_vad_16k_op15.onnx": "onnx",
    "tiny_bert.onnx": "onnx",
    "fashion-mnist-test.npz": "npz", "fashion-mnist-val.npz": "npz", "tiny_bert-calib.npz": "npz",
    "tiny_bert-test.npz": "npz",
}
#: The fields every format must fill (no default).
REQUIRED = ("sniff", "read", "write", "check_structure", "tensor_names")
#: nnzip modules a format module may import besides the other format modules.
ALLOWED_IMPORTS = {"nnzip.errors", "nnzip.limits", "nnzip.model", "nnzip.outputs", "nnzip.dtypes", "nnzip.container"}  # container: the registry hands it the source rules


def sample_files() -> list[Path]:
    return sorted(p for p in SAMPLES.iterdir() if p.is_file() and p.suffix not in (".py", ".md"))


def made_checkpoints(folder: Path) -> dict[str, Path]:
    """A plain safetensors file (with bfloat16 bits) and a two-shard checkpoint, by the real package."""
    folder.mkdir(parents=True, exist_ok=True)
    plain = folder / "plain.safetensors"
    save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(plain), metadata={"format": "np"})
    # BF16 through the header: the package has no numpy bfloat16, so rewrite the dtype of a u2 tensor.
    bf16 = folder / "bf16.safetensors"
    save_file({"b": np.arange(4, dtype=np.uint16)}, str(bf16))
    raw = bf16.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = raw[8:8 + size].replace(b'"U16"', b'"BF16"')
    bf16.write_bytes(len(header).to_bytes(8, "little") + header + raw[8 + size:])
    sharded = folder / "sharded"
    sharded.mkdir()
    save_file({"a": np.ones(3, np.float32)}, str(sharded / "model-00001-of-00002.safetensors"))
    save_file({"b": np.zeros(2, np.float32)}, str(sharded / "model-00002-of-00002.safetensors"))
    index = {"metadata": {"total_size": 20}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                            "b": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return {"plain": plain, "bf16": bf16, "sharded": sharded, "index": sharded / "model.safetensors.index.json"}


# --- the protocol --------------------------------------------------------------------------------


@pytest.mark.parametrize("format_id", sorted(formats.FORMATS))
def test_every_registered_format_implements_the_protocol(format_id):
    fmt = formats.FORMATS[format_id]
    assert isinstance(fmt, base.SourceFormat) and fmt.id == format_id
    assert isinstance(fmt.suffix, str) and fmt.suffix.startswith(".")
    assert fmt.optimizer_prefix is None or (isinstance(fmt.optimizer_prefix, str) and fmt.optimizer_prefix.endswith("/"))
    for name in REQUIRED:
        assert callable(getattr(fmt, name)), name
    for name in ("model_config", "keras_version", "layer_weights", "exact_names", "element_types", "structure_minor"):
        assert callable(getattr(fmt, name)), name
    # Every caller passes these by keyword; a reader that lacks one would fail only on its own format.
    inspect.signature(fmt.read).bind("x", keep_optimizer=True, limits=None, lazy=True)
    inspect.signature(fmt.write).bind("x", {}, lambda name: None)
    inspect.signature(fmt.sniff).bind(base.Probe("x", b"", 0))
    inspect.signature(fmt.check_structure).bind({})
    inspect.signature(fmt.tensor_names).bind({})
    inspect.signature(fmt.layer_weights).bind(None, None)
    # Asked of untrusted headers before any check: never raises.
    assert all(fmt.structure_minor(junk) == 0 for junk in (None, [], {}, {"tensors": "x"}, {"tensors": [1, None]}))


def test_the_registry_holds_every_format_object_once():
    """Each module-level SourceFormat in nnzip/formats is registered, under its own id, and ids are unique."""
    import importlib

    built = []
    for path in sorted(FORMATS_DIR.glob("*.py")):
        module = importlib.import_module(f"nnzip.formats.{path.stem}" if path.stem != "__init__" else "nnzip.formats")
        built += [value for value in vars(module).values() if isinstance(value, base.SourceFormat)]
    distinct = {id(f): f for f in built}.values()
    assert sorted(f.id for f in distinct) == sorted(formats.FORMATS)
    assert all(formats.FORMATS[f.id] is f for f in distinct)
    assert len({f.suffix for f in distinct}) == len(distinct)


def test_optional_facets_default_to_does_not_apply(tmp_path):
    """A format without a facet answers like a weights-only file; the defaults live in one place."""
    model = formats.read_model(made_checkpoints(tmp_path)["plain"])
    fmt = formats.FORMATS["safetensors"]
    assert fmt.optimizer_prefix is None and fmt.model_config(model) is None and fmt.keras_version(model) is None
    assert fmt.exact_names(model) == set()
    with pytest.raises(InputError, match="a safetensors file has no Keras layers"):
        fmt.layer_weights(model)


# --- sniffing by content ---------------------------------------------------------------------------


def test_every_sample_is_listed():
    assert sorted(p.name for p in sample_files()) == sorted(SAMPLE_FORMATS)


@pytest.mark.parametrize("name", sorted(SAMPLE_FORMATS))
def test_sniff_picks_each_sample_by_content_not_name(name, tmp_path):
    expected = SAMPLE_FORMATS[name]
    # A name that says another format (and one that says none) must not fool it.
    wrong = next(f.suffix for f in formats.FORMATS.values() if f.id != expected and f.suffix != formats.FORMATS[expected].suffix)
    for target in (tmp_path / f"model{wrong}", tmp_path / "model.bin"):
        shutil.copyfile(SAMPLES / name, target)
        assert formats.sniff(target) == expected
        _only_one_format_takes(target, expected)


def test_sniff_picks_made_safetensors_files_and_checkpoints(tmp_path):
    files = made_checkpoints(tmp_path / "made")
    renamed = tmp_path / "weights.h5"
    shutil.copyfile(files["plain"], renamed)
    index_renamed = files["sharded"] / "index.onnx"
    shutil.copyfile(files["index"], index_renamed)
    for path, expected in ((files["plain"], "safetensors"), (renamed, "safetensors"), (files["bf16"], "safetensors"),
                           (files["sharded"], "safetensors-sharded"), (files["index"], "safetensors-sharded"),
                           (index_renamed, "safetensors-sharded")):
        assert formats.sniff(path) == expected, path
        _only_one_format_takes(path, expected)


def test_sniff_names_no_format_for_other_content(tmp_path):
    other = tmp_path / "model.h5"
    other.write_bytes(b"just some text that is no model at all")
    assert formats.sniff(other) == "unknown"
    assert all(not f.sniff(base.Probe(other, other.read_bytes()[:32], other.stat().st_size)) for f in formats.FORMATS.values())


def _only_one_format_takes(path: Path, expected: str) -> None:
    """Every format's own sniff agrees, so the registry's order decides nothing."""
    head = b"" if path.is_dir() else path.read_bytes()[:32]
    size = 0 if path.is_dir() else path.stat().st_size
    takers = [f.id for f in formats.FORMATS.values() if f.sniff(base.Probe(path, head, size))]  # a fresh probe each
    assert takers == [expected]


# --- the module-level functions are lookups ----------------------------------------------------------


def _facets(source, model) -> dict:
    """What *source* (a format object, or the ``nnzip.formats`` module's lookups) says about *model*:
    each facet's answer or the error it raises."""
    answers = {}
    for name in ("model_config", "keras_version", "exact_names", "element_types", "layer_weights"):
        try:
            answers[name] = getattr(source, name)(model)
        except InputError as exc:
            answers[name] = ("InputError", str(exc))
    return answers


def _same(a, b) -> bool:
    """Equal answers; weights compared as arrays (nested dicts and lists of them)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b


@pytest.mark.parametrize("name", ["mlp.h5", "mlp.weights.h5", "mlp.keras", "mlp.onnx", "fashion-mnist-val.npz",
                                  "mlp_tfkeras.h5", "tiny_bert.onnx"])
def test_module_functions_agree_with_the_format_objects(name, tmp_path):
    model = formats.read_model(SAMPLES / name, keep_optimizer=True)
    fmt = formats.FORMATS[model.source_format]
    assert model.source_format == formats.sniff(SAMPLES / name)
    assert formats.get_format(model.source_format) is fmt
    assert formats.optimizer_prefix(model.source_format) == fmt.optimizer_prefix
    assert _same(_facets(formats, model), _facets(fmt, model))
    source = {"format": model.source_format, "structure": model.structure}
    assert formats.structure_minor(source) == fmt.structure_minor(model.structure) == 0
    # The same writer: write_model and the object's write give the same bytes.
    tensor = model.tensors.__getitem__
    formats.write_model(tmp_path / ("a" + fmt.suffix), model.source_format, model.structure, tensor)
    fmt.write(tmp_path / ("b" + fmt.suffix), model.structure, tensor)
    assert (tmp_path / ("a" + fmt.suffix)).read_bytes() == (tmp_path / ("b" + fmt.suffix)).read_bytes()
    assert formats.read_model(tmp_path / ("a" + fmt.suffix), keep_optimizer=True).source_format == model.source_format


def test_module_functions_agree_on_made_checkpoints(tmp_path):
    files = made_checkpoints(tmp_path)
    for path in (files["plain"], files["bf16"], files["sharded"]):
        model = formats.read_model(path)
        fmt = formats.FORMATS[model.source_format]
        assert _same(_facets(formats, model), _facets(fmt, model))
    assert formats.element_types(formats.read_model(files["bf16"])) == {"b": "bfloat16"}


def test_facets_that_differ_per_format_are_the_objects_own():
    """The answers the if-chains used to give, now given by the objects."""
    assert {i: formats.optimizer_prefix(i) for i in formats.FORMATS} == {
        "keras-h5": "optimizer_weights/", "keras-weights-h5": "optimizer/", "keras-v3": "model.weights.h5/optimizer/",
        "npz": None, "safetensors": None, "onnx": None, "safetensors-sharded": None,
    }
    assert formats.optimizer_prefix("no-such-format") is None and formats.get_format("no-such-format") is None
    assert formats.get_format(["keras-h5"]) is None


def test_structure_minor_is_the_onnx_objects_answer():
    """Only an ONNX structure carrying a subgraph's tensor (an ``at`` of three) needs format 1.2."""
    structure = {"tensors": [{"name": "w", "at": ["graph", 0]}, {"name": "s", "at": ["node", 3, "then_branch"]}]}
    assert formats.structure_minor({"format": "onnx", "structure": structure}) == 2
    assert formats.FORMATS["onnx"].structure_minor(structure) == 2
    assert formats.structure_minor({"format": "safetensors", "structure": structure}) == 0
    assert formats.structure_minor({"format": "no-such-format", "structure": structure}) == 0
    assert formats.structure_minor(["onnx"]) == 0 and formats.structure_minor({"format": ["onnx"]}) == 0


def test_unknown_format_ids_get_the_defaults():
    """A Model whose id no format registers answers like a weights-only file (as before the registry)."""
    from nnzip.model import Model

    model = Model("no-such-format", {}, {})
    assert formats.model_config(model) is None and formats.keras_version(model) is None
    assert formats.exact_names(model) == set() and formats.element_types(model) == {}
    with pytest.raises(InputError, match="a no-such-format file has no Keras layers"):
        formats.layer_weights(model)
    with pytest.raises(InputError, match="cannot write source format 'no-such-format'"):
        formats.write_model("unused", "no-such-format", {}, lambda name: None)


def test_an_unsupported_file_is_one_line_through_the_cli(tmp_path, capsys):
    source = tmp_path / "model.h5"
    source.write_bytes(b"neither HDF5 nor zip")
    status = cli.main(["compress", str(source), "-o", str(tmp_path / "out.nnz")])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "is not a supported model file (supported: Keras .h5" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.h5"]


# --- code shape ---------------------------------------------------------------------------------------


def _tree(name: str) -> ast.Module:
    return ast.parse((FORMATS_DIR / name).read_text())


def test_the_package_module_never_branches_on_a_format_id():
    tree = _tree("__init__.py")
    ids = set(formats.FORMATS)
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            text = ast.unparse(node)
            assert not any(isinstance(p, ast.Attribute) and p.attr in ("source_format", "FORMAT_ID", "LEGACY", "WEIGHTS_V3", "id")
                           for part in parts for p in ast.walk(part)), text
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.value not in ids, node.value
    assert "source_format ==" not in (FORMATS_DIR / "__init__.py").read_text()


def test_one_malformed_class_for_the_parsers():
    """The parsers share base.Malformed; no module keeps a private copy."""
    for path in sorted(FORMATS_DIR.glob("*.py")):
        classes = [n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)]
        assert not {"_Malformed", "_BadIndex", "Malformed"} & set(classes) or path.name == "base.py", path.name
    from nnzip.formats import npz, safetensors, sharded

    assert npz.Malformed is safetensors.Malformed is sharded.Malformed is base.Malformed
    assert issubclass(base.Malformed, ValueError)  # sharded's JSON parse relies on it (a duplicate key is a ValueError)


@pytest.mark.parametrize("path", sorted(FORMATS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_format_modules_import_only_low_level_modules(path):
    """errors, limits, model, outputs, dtypes and other format modules -- never stages, api, plan ...,
    also not inside functions."""
    package = "nnzip.formats"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                target = node.module or ""
            else:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(parts + ([node.module] if node.module else []))
            names = [f"{target}.{a.name}" for a in node.names] if target == package else [target]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "nnzip" or name.startswith("nnzip."):
                assert name in ALLOWED_IMPORTS or name.startswith(package + "."), f"{path.name} imports {name}"


def test_starting_the_cli_imports_no_onnx():
    """onnx is imported only when an ONNX file is met; the registry builds no reader eagerly."""
    code = ("import sys\nfrom nnzip import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('MODULES:' + ' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime', 'keras', 'torch'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage:" in result.stdout and result.stdout.rstrip().endswith("MODULES:"), result.stdout[-500:]
