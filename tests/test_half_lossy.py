"""16-bit float sources made lossy in their own dtype (spec/container.md §4.5, format 1.2).

bfloat16 tensors (safetensors ``BF16``, ONNX ``BFLOAT16``) are carried as raw bits (``<u2``);
a lossy setting now widens them exactly to float32, runs the chain, and the decoder rounds
the result back to bfloat16 (``widen``).  float16 tensors are quantized as float16 directly.
8-bit floats stay exact, with a note per tensor.  The golden 1.2 example is pinned byte for
byte (``tests/fixtures/golden-widen.nnz``, written only by ``python tests/regen_fixtures.py``);
rule 4.11 is checked through the real CLI.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file

from .common import REGENERATE
from .nnz_tools import assert_decompress_rejects, blobs_of, rebuild, split_file
from nnzip import api, cli, pipeline
from nnzip.container import write_container
from nnzip.formats import read_model
from nnzip.pipeline import TensorPlan

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN_WIDEN = FIXTURES / "golden-widen.nnz"
#: The golden 1.2 example's tensor: bfloat16 bit patterns of 0.5, -1.25, 3, ~0.1, 1, ~-0.3, 2, 0.
GOLDEN_BITS = np.array([[0x3F00, 0xBFA0, 0x4040, 0x3DCD], [0x3F80, 0xBE9A, 0x4000, 0x0000]], dtype="<u2")
GOLDEN_STEP = 0.3


def narrow_by_the_spec(values: np.ndarray) -> np.ndarray:
    """§4.5's narrowing written from the spec with Python integers, one element at a time (tests only)."""
    out = []
    for u in np.asarray(values, dtype="<f4").reshape(-1).view("<u4").tolist():
        if (u >> 23) & 0xFF == 0xFF and u & 0x7FFFFF:
            out.append((u >> 16) | 0x0040)
        else:
            out.append(((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFFFFFF) >> 16)
    return np.array(out, dtype="<u2").reshape(np.shape(values))


def bf16_values(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 bit patterns (``bits << 16``)."""
    return (np.asarray(bits, dtype="<u2").astype("<u4") << 16).view("<f4")


def minilm_like(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A MiniLM-shaped layer (384-wide attention and 1536 MLP) with its biases and a LayerNorm, in *dtype*."""
    generator = torch.Generator().manual_seed(0)
    shapes = {"attn.q.weight": (384, 384), "mlp.up.weight": (1536, 384), "mlp.up.bias": (1536,), "norm.weight": (384,)}
    return {name: (torch.randn(shape, generator=generator) * 0.05).to(dtype) for name, shape in shapes.items()}


def compress(tmp_path: Path, source: Path, name: str, *options: str) -> Path:
    out = tmp_path / f"{name}.nnz"
    assert cli.main(["compress", str(source), "-o", str(out), "-q", *options]) == 0
    return out


def decompress(tmp_path: Path, nnz: Path) -> Path:
    out = tmp_path / f"{nnz.stem}.back.safetensors"
    assert cli.main(["decompress", str(nnz), "-o", str(out), "-q"]) == 0
    return out


def header_of(path: Path) -> dict:
    return split_file(path.read_bytes())[0]


def entry_of(header: dict, name: str) -> dict:
    return next(t for t in header["tensors"] if t["name"] == name)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / a.double().norm())


# --- bfloat16 and float16 safetensors ------------------------------------------------------


@pytest.fixture(scope="module")
def bf16_source(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("bf16")
    weights = minilm_like(torch.bfloat16)
    save_file(weights, str(folder / "layer.safetensors"))
    return folder / "layer.safetensors", weights


def stored_header(path):
    """The header of a .nnz as the reader expands it (a compressed 1.2 header is in compact form on disk)."""
    from nnzip.container import open_container

    with open_container(path) as container:
        return container.header


def test_bf16_bits4_shrinks_and_rebuilds_bf16_in_the_codebook(tmp_path, bf16_source):
    source, weights = bf16_source
    lossless = compress(tmp_path, source, "lossless")
    lossy = compress(tmp_path, source, "bits4", "--bits", "4")
    assert lossy.stat().st_size < 0.4 * lossless.stat().st_size  # 4 of 16 bits, plus the exact biases
    uses_rans = any(c["name"] == "rans" for t in stored_header(lossy)["tensors"] for p in t["parts"] for c in p["codecs"])
    assert struct.unpack_from("<HH", lossy.read_bytes(), 8) == (1, 3 if uses_rans else 2)  # widened tensors: 1.2 (1.3 with rans)
    assert not any("widen" in t for t in stored_header(lossless)["tensors"])  # lossless bf16 is stored as its bits
    back = decompress(tmp_path, lossy)
    rebuilt = load_torch(str(back))
    assert {n: t.dtype for n, t in rebuilt.items()} == {n: torch.bfloat16 for n in weights}
    assert {n: a.dtype for n, a in load_numpy(str(back)).items()} == {n: np.dtype(ml_dtypes.bfloat16) for n in weights}
    header = header_of(lossy)
    for name in ("attn.q.weight", "mlp.up.weight"):
        entry = entry_of(header, name)
        assert entry["widen"] == "bfloat16" and entry["dtype"] == "<u2"
        # The float32 tensor the chain rebuilds (the entry read without widen, as float32): its
        # values are the 16 k-means centroids; the file's bf16 values are exactly those, rounded (§4.5).
        as_float32 = {k: v for k, v in entry.items() if k != "widen"} | {"dtype": "<f4"}
        blobs = blobs_of(lossy.read_bytes())
        centroids = pipeline.decode_tensor(as_float32, lambda i: blobs[i], [b["size"] for b in header["blobs"]])
        codebook = np.unique(centroids)
        assert len(codebook) <= 16
        bits = rebuilt[name].view(torch.int16).numpy().view("<u2")
        np.testing.assert_array_equal(bits, narrow_by_the_spec(centroids))
        assert set(np.unique(bits)) <= set(narrow_by_the_spec(codebook))
        error = relative(weights[name], rebuilt[name])
        assert 0.05 < error < 0.13  # 4-bit k-means of Gaussian weights: about 0.1
        assert abs(entry["stats"]["error"] - error) < 1e-3  # the reported error is on values, not bits
    for name in ("mlp.up.bias", "norm.weight"):  # vectors stay exact, as for float32
        assert "widen" not in entry_of(header, name) and torch.equal(rebuilt[name], weights[name])


def test_bf16_uniform_rebuilds_rounded_multiples_of_the_step(tmp_path, bf16_source):
    source, weights = bf16_source
    lossless = compress(tmp_path, source, "lossless")
    lossy = compress(tmp_path, source, "uniform", "--uniform", "0.05")
    assert lossy.stat().st_size < 0.65 * lossless.stat().st_size  # ~6.4 bits a weight against ~10.8 exact
    rebuilt = load_torch(str(decompress(tmp_path, lossy)))
    header = header_of(lossy)
    for name in ("attn.q.weight", "mlp.up.weight"):
        assert rebuilt[name].dtype == torch.bfloat16
        (part,) = entry_of(header, name)["parts"]
        config = next(c["configuration"] for c in part["codecs"] if c["name"] == "uniform")
        step = float(np.frombuffer(base64.b64decode(config["step"]), "<f8")[0])
        values = rebuilt[name].float().numpy().astype(np.float64)
        levels = np.rint(values / step)
        # every value is a multiple of the step as float32, rounded once more to bfloat16
        expected = narrow_by_the_spec((levels * step).astype("<f4"))
        np.testing.assert_array_equal(rebuilt[name].view(torch.int16).numpy().view("<u2"), expected)
        source_values = weights[name].float().numpy()
        assert np.abs(values - source_values).max() <= step / 2 + 2.0**-8 * np.abs(source_values).max()
        assert relative(weights[name], rebuilt[name]) < 0.03


@pytest.mark.parametrize("option", [("--bits", "4"), ("--uniform", "0.05")])
def test_f16_lossy_shrinks_and_rebuilds_f16(tmp_path, option):
    weights = minilm_like(torch.float16)
    source = tmp_path / "layer.safetensors"
    save_file(weights, str(source))
    lossless = compress(tmp_path, source, "lossless")
    lossy = compress(tmp_path, source, "lossy", *option)
    assert lossy.stat().st_size < 0.6 * lossless.stat().st_size
    assert not any("widen" in t for t in stored_header(lossy)["tensors"])  # float16 needs no widening
    back = decompress(tmp_path, lossy)
    rebuilt, as_numpy = load_torch(str(back)), load_numpy(str(back))
    assert {n: t.dtype for n, t in rebuilt.items()} == {n: torch.float16 for n in weights}
    assert {n: a.dtype for n, a in as_numpy.items()} == {n: np.dtype("float16") for n in weights}
    for name in ("attn.q.weight", "mlp.up.weight"):
        assert 0 < relative(weights[name], rebuilt[name]) < (0.13 if option[0] == "--bits" else 0.03)
        if option[0] == "--bits":
            assert len(torch.unique(rebuilt[name])) <= 16


@pytest.mark.parametrize("option", [("--rank", "16"), ("--prune", "0.5"), ("--fft-keep", "0.5")])
def test_bf16_transforms_apply_too(tmp_path, bf16_source, option):
    """Every lossy setting but --float16 reaches bfloat16 tensors (it used to reach none)."""
    source, weights = bf16_source
    lossy = compress(tmp_path, source, "lossy", *option)
    entry = entry_of(header_of(lossy), "attn.q.weight")
    assert entry["widen"] == "bfloat16" and entry["transform"]["name"] != "dense"
    rebuilt = load_torch(str(decompress(tmp_path, lossy)))
    assert rebuilt["attn.q.weight"].dtype == torch.bfloat16
    assert abs(relative(weights["attn.q.weight"], rebuilt["attn.q.weight"]) - entry["stats"]["error"]) < 1e-3


def test_bf16_float16_option_is_reported_per_tensor(tmp_path, bf16_source, capsys):
    source, weights = bf16_source
    out = tmp_path / "f16.nnz"
    assert cli.main(["compress", str(source), "-o", str(out), "--float16"]) == 0
    err = capsys.readouterr().err
    assert "note: attn.q.weight: already bfloat16: --float16 leaves it as it is" in err
    assert "note: mlp.up.bias" not in err  # vectors are exact by the documented rule, without a note each
    assert load_torch(str(decompress(tmp_path, out)))["attn.q.weight"].equal(weights["attn.q.weight"])


def test_float8_is_kept_exact_with_a_note(tmp_path, capsys):
    generator = torch.Generator().manual_seed(1)
    weights = {"w8": (torch.randn(64, 64, generator=generator)).to(torch.float8_e4m3fn),
               "w5": (torch.randn(64, 64, generator=generator)).to(torch.float8_e5m2)}
    source = tmp_path / "f8.safetensors"
    save_file(weights, str(source))
    out = tmp_path / "f8.nnz"
    assert cli.main(["compress", str(source), "-o", str(out), "--bits", "4"]) == 0
    err = capsys.readouterr().err
    assert "note: w8: kept exact: float8_e4m3fn: no lossy stage takes that type" in err
    assert "note: w5: kept exact: float8_e5m2: no lossy stage takes that type" in err
    back = tmp_path / "back.safetensors"
    assert cli.main(["decompress", str(out), "-o", str(back), "-q"]) == 0
    assert back.read_bytes() == source.read_bytes()


# --- ONNX: BFLOAT16 and FLOAT16 initializers ------------------------------------------------


def _matmul_model(weight: TensorProto, elem_type: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", weight.name], ["y"])], "g",
        [helper.make_tensor_value_info("x", elem_type, [1, weight.dims[0]])],
        [helper.make_tensor_value_info("y", elem_type, [1, weight.dims[1]])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_bf16_initializer_is_quantized_in_bf16(tmp_path):
    rng = np.random.default_rng(2)
    values = (rng.standard_normal((128, 64)) * 0.05).astype(ml_dtypes.bfloat16)
    weight = helper.make_tensor("W", TensorProto.BFLOAT16, values.shape, values.view("<u2").tobytes(), raw=True)
    source = tmp_path / "m.onnx"
    onnx.save(_matmul_model(weight, TensorProto.BFLOAT16), str(source))
    lossless, lossy = compress(tmp_path, source, "lossless"), compress(tmp_path, source, "bits4", "--bits", "4")
    assert lossy.stat().st_size < 0.6 * lossless.stat().st_size
    assert entry_of(header_of(lossy), "W")["widen"] == "bfloat16"
    back = tmp_path / "back.onnx"
    assert cli.main(["decompress", str(lossy), "-o", str(back), "-q"]) == 0
    (initializer,) = onnx.load(str(back)).graph.initializer
    assert initializer.data_type == TensorProto.BFLOAT16
    rebuilt = np.frombuffer(initializer.raw_data, "<u2").reshape(values.shape)
    assert len(np.unique(rebuilt)) <= 16
    error = np.linalg.norm(bf16_values(rebuilt) - values.astype(np.float32)) / np.linalg.norm(values.astype(np.float32))
    assert 0.05 < error < 0.13


def test_onnx_f16_initializer_still_runs(tmp_path):
    import onnxruntime as ort

    rng = np.random.default_rng(3)
    values = (rng.standard_normal((128, 64)) * 0.05).astype(np.float16)
    source = tmp_path / "m.onnx"
    onnx.save(_matmul_model(numpy_helper.from_array(values, "W"), TensorProto.FLOAT16), str(source))
    lossy = compress(tmp_path, source, "uniform", "--uniform", "0.05")
    back = tmp_path / "back.onnx"
    assert cli.main(["decompress", str(lossy), "-o", str(back), "-q"]) == 0
    rebuilt = numpy_helper.to_array(onnx.load(str(back)).graph.initializer[0])
    assert rebuilt.dtype == np.float16 and 0 < np.linalg.norm(rebuilt - values) / np.linalg.norm(values) < 0.03
    x = rng.standard_normal((1, 128)).astype(np.float16)
    (y,) = ort.InferenceSession(str(back), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, x @ rebuilt, rtol=0.05, atol=0.05)


# --- the golden 1.2 widened example (spec/container.md §7.3) ----------------------------------------


def write_golden_source(path: Path) -> Path:
    """``widen.safetensors``: one BF16 tensor ``w`` of shape [2, 4] (:data:`GOLDEN_BITS`), written by hand."""
    text = json.dumps({"w": {"dtype": "BF16", "shape": [2, 4], "data_offsets": [0, 16]}}, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text.encode() + GOLDEN_BITS.tobytes())
    return path


def golden_widen_bytes(tmp_path: Path) -> bytes:
    """The bytes of the spec's 1.2 worked example: ``dense`` + ``uniform`` (step 0.3) + bitpack, widened."""
    model = read_model(write_golden_source(tmp_path / "widen.safetensors"))
    plans = {"w": TensorPlan("dense", {}, [("uniform", {"step": GOLDEN_STEP})], entropy=False, widen="bfloat16")}
    header, blobs, _ = api.encode_model(model, "widen.safetensors", plans=plans)
    header["writer"] = "nnzip (golden example)"
    out = io.BytesIO()
    write_container(out, header, blobs, compress_header=False)
    return out.getvalue()


def test_golden_widen_bytes_are_pinned(tmp_path):
    data = golden_widen_bytes(tmp_path)
    if REGENERATE:
        GOLDEN_WIDEN.write_bytes(data)
        (FIXTURES / "golden-widen.json").write_text(json.dumps(split_file(data)[0], indent=1) + "\n")
    assert GOLDEN_WIDEN.exists(), "tests/fixtures/golden-widen.nnz is missing (python tests/regen_fixtures.py)"
    assert data == GOLDEN_WIDEN.read_bytes(), "the writer's bytes changed: update spec/container.md §7.3 and regenerate on purpose"


def test_golden_widen_matches_spec(tmp_path):
    """The figures of spec/container.md §7.3, checked on the committed file."""
    data = GOLDEN_WIDEN.read_bytes()
    assert struct.unpack_from("<HHI", data, 8) == (1, 2, 0)
    header, _, _ = split_file(data)
    assert header == json.loads((FIXTURES / "golden-widen.json").read_text())
    (entry,) = header["tensors"]
    assert (entry["dtype"], entry["shape"], entry["widen"]) == ("<u2", [2, 4], "bfloat16")
    (part,) = entry["parts"]
    assert part["dtype"] == "<f4" and [c["name"] for c in part["codecs"]] == ["uniform", "bitpack"]
    uniform, bitpack = (c["configuration"] for c in part["codecs"])
    assert uniform["offset"] == -4 and bitpack == {"bits": 4}
    assert np.frombuffer(base64.b64decode(uniform["step"]), "<f8")[0] == GOLDEN_STEP
    (blob,) = blobs_of(data)
    assert blob == bytes([0x60, 0xE4, 0x73, 0xB4])
    codes = [(byte >> shift) & 0xF for byte in blob for shift in (4, 0)]  # the bitpack page: first code in the high bits
    assert codes == [6, 0, 14, 4, 7, 3, 11, 4]
    # decode by the pages alone: level = code + offset; float32(level * step); narrow (§4.5)
    expected = narrow_by_the_spec((np.array(codes, np.float64) - 4) * GOLDEN_STEP).reshape(2, 4)
    np.testing.assert_array_equal(expected, [[0x3F1A, 0xBF9A, 0x4040, 0x0000], [0x3F66, 0xBE9A, 0x4006, 0x0000]])
    _, tensors = api.read_tensors(GOLDEN_WIDEN)
    np.testing.assert_array_equal(tensors["w"], expected)
    back = tmp_path / "back.safetensors"
    assert cli.main(["decompress", str(GOLDEN_WIDEN), "-o", str(back), "-q"]) == 0
    rebuilt = load_torch(str(back))["w"]
    assert rebuilt.dtype == torch.bfloat16 and rebuilt.view(torch.int16).numpy().view("<u2").tolist() == expected.tolist()


def test_narrowing_matches_the_spec_and_ml_dtypes_on_edge_cases():
    """The decoder's vectorised narrowing equals §4.5's integer formula and ml_dtypes' bfloat16 rounding."""
    edge = np.array([0x3F808000, 0x3F818000, 0x3F80FFFF, 0x7F7FFFFF, 0xFF7F8000, 0x7F800000, 0x7FC00001, 0xFF800001,
                     0x00008000, 0x80018000, 0x00000001, 0x3F7FFFFF], dtype="<u4").view("<f4")
    rng = np.random.default_rng(4)
    values = np.concatenate([edge, rng.standard_normal(10_000).astype("<f4"), rng.integers(0, 2**32, 10_000, dtype="<u4").view("<f4")])
    ours = pipeline.narrow_values(values, "bfloat16")
    np.testing.assert_array_equal(ours, narrow_by_the_spec(values))
    finite = np.isfinite(values)
    np.testing.assert_array_equal(ours[finite], values[finite].astype(ml_dtypes.bfloat16).view("<u2"))


# --- rule 4.11 and the decode cost of a widened tensor -----------------------------------------


def _golden() -> tuple[dict, list[bytes]]:
    data = GOLDEN_WIDEN.read_bytes()
    return split_file(data)[0], blobs_of(data)


@pytest.mark.parametrize("value", ["float16", "BFLOAT16", "", None, 1, True, ["bfloat16"], {"name": "bfloat16"}])
def test_rule411_widen_must_be_bfloat16(tmp_path, capsys, value):
    header, blobs = _golden()
    header["tensors"][0]["widen"] = value
    assert_decompress_rejects(tmp_path, rebuild(header, blobs), capsys, "rule 4.11", "widen", output_name="out.safetensors")


@pytest.mark.parametrize("dtype", ["<f4", "<i2", "<f2", "|u1"])
def test_rule411_widen_needs_a_u2_tensor(tmp_path, capsys, dtype):
    header, blobs = _golden()
    header["tensors"][0]["dtype"] = dtype
    assert_decompress_rejects(tmp_path, rebuild(header, blobs), capsys, "rule 4.11", "'<u2'", output_name="out.safetensors")


def test_without_widen_the_float32_parts_break_rule42(tmp_path, capsys):
    """What a 1.1 reader sees in a 1.2 file: float32 parts in a <u2 tensor, refused, never misread."""
    header, blobs = _golden()
    del header["tensors"][0]["widen"]
    assert_decompress_rejects(tmp_path, rebuild(header, blobs), capsys, "rule 4.2", output_name="out.safetensors")


def test_widened_decode_cost_counts_the_float32_tensor(tmp_path, capsys):
    """Rule 4.8.1 on a widened tensor (§4.5): W(t) = max(W(c) + 4n, 6n + 12 min(n, 2^18)) - 2n; a cap just below it refuses it."""
    header, blobs = _golden()
    sizes = [b["size"] for b in header["blobs"]]
    entry = header["tensors"][0]
    chain = pipeline.check_tensor_entry({k: v for k, v in entry.items() if k != "widen"} | {"dtype": "<f4"}, sizes)
    widened = pipeline.check_tensor_entry(entry, sizes)
    n = 8
    assert widened.work == max(chain.work + 4 * n, 6 * n + 12 * n) - 2 * n
    assert widened.ops == chain.ops + 48 * n
    big = np.zeros((512, 512), "<u2")  # a widened tensor large enough for the cap to matter
    plan = TensorPlan("dense", {}, [("uniform", {"step": 1.0})], widen="bfloat16")
    item = pipeline.encode_tensor("w", big, plan)
    cost = pipeline.check_tensor_entry(item.entry, [len(b) for b in item.blobs])
    assert cost.work >= 2 * big.size + 12 * 2**18  # the float32 tensor beyond the output, and one block
    with pytest.raises(Exception, match="rule 4.8.1"):
        from nnzip.limits import DecodeLimits

        pipeline.check_tensor_entry(item.entry, [len(b) for b in item.blobs], DecodeLimits(max_work=cost.work - 1))


def test_budget_search_notes_bit_pattern_weights_it_leaves_exact():
    """The accuracy-budget search does not take raw-bit types yet: it says so per tensor, not silently."""
    from nnzip.plan import exclusion_note

    weight = np.zeros((64, 64), "<u2")
    assert exclusion_note(weight, None, "bfloat16").startswith("kept exact: bfloat16: the accuracy-budget search")
    assert exclusion_note(weight, False, "bfloat16") == ""  # the file says it is no layer weight: exact by rule
    assert exclusion_note(np.zeros(64, "<u2"), None, "bfloat16") == ""  # vectors: exact by the documented rule
