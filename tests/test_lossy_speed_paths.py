"""The lossy fast paths (issue 9): compiled ``uniform`` quantize/dequantize, copy-free serializers and
decode, and the absolute uniform step.  Every rewritten path is checked against the numpy
algorithm it replaced, bit for bit, and whole files against the bytes the old code wrote."""

from __future__ import annotations

import numpy as np
import pytest

from nnzip.stages import ArraySpec, get_stage
from nnzip.stages.base import BLOCK_ELEMENTS
from nnzip.stages.uniform import CODE_DTYPE, dequantize_codes, quantize_codes

UNIFORM = get_stage("uniform")


# --- the numpy blocks the kernels replaced (the code of nnzip 1.x before this change) -------------


def old_levels(flat: np.ndarray, step: float) -> np.ndarray:
    return np.rint(flat.astype(np.float64) / step).astype(np.int64)


def old_encode(flat: np.ndarray, step: float) -> tuple[np.ndarray, int]:
    levels = old_levels(flat, step)
    offset = int(levels.min())
    return (levels - offset).astype(CODE_DTYPE), offset


def old_decode(codes: np.ndarray, offset: int, step: float, dtype) -> np.ndarray:
    out = np.empty(codes.size, dtype=dtype)
    for start in range(0, codes.size, BLOCK_ELEMENTS):
        out[start:start + BLOCK_ELEMENTS] = (codes[start:start + BLOCK_ELEMENTS].astype(np.int64) + offset) * step
    return out


def tricky_values(dtype, n=200_003, seed=3) -> tuple[np.ndarray, float]:
    """Laplacian values plus exact ties (x / step = k + 0.5, both parities), signed zeros and range ends."""
    rng = np.random.default_rng(seed)
    step = 0.0625 if np.dtype(dtype) == np.float16 else 0.013
    values = rng.laplace(0, 40 * step, n)
    ties = (np.arange(-40, 40) + 0.5) * step  # exactly representable for step = 2**-4; rounding to even decides
    values[:ties.size] = ties
    values[ties.size:ties.size + 2] = [0.0, -0.0]
    return values.astype(dtype), step


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8"])
def test_quantize_codes_equal_the_numpy_blocks(dtype):
    flat, step = tricky_values(dtype)
    expected, offset = old_encode(flat, step)
    got = quantize_codes(flat, step, offset)
    assert got.dtype == CODE_DTYPE and np.array_equal(got, expected)


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8"])
@pytest.mark.parametrize("offset", [-70_000, -3, 0, 12_345])
def test_dequantize_codes_equal_the_numpy_blocks(dtype, offset):
    rng = np.random.default_rng(offset & 0xFFFF)
    codes = rng.integers(0, 1 << 16, 300_001).astype(CODE_DTYPE)
    step = 1e-3 if dtype == "<f2" else 0.0371
    expected = old_decode(codes, offset, step, dtype)
    got = dequantize_codes(codes, offset, step, dtype)
    assert got.dtype == np.dtype(dtype)
    assert np.array_equal(got.view(f"u{got.itemsize}"), expected.view(f"u{expected.itemsize}"))  # bit for bit


def test_dequantize_into_a_given_buffer_and_a_strided_input():
    codes = np.arange(20, dtype=CODE_DTYPE)[::2]  # not contiguous
    out = np.full(10, np.nan, dtype=np.float32)
    result = dequantize_codes(codes, -5, 0.5, np.float32, out)
    assert result is out and np.array_equal(out, (np.arange(0, 20, 2) - 5) * 0.5)


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8"])
def test_stage_encode_decode_equal_the_old_code(dtype):
    flat, step = tricky_values(dtype, n=50_000)
    data = flat.reshape(250, 200)
    codes, config = UNIFORM.encode(data, ArraySpec.of(data), {"step": step})
    expected, offset = old_encode(flat, step)
    assert config["offset"] == offset and np.array_equal(codes.reshape(-1), expected)
    stage = UNIFORM.from_config(config, ArraySpec.of(data))
    decoded = stage.decode(codes, ArraySpec.of(data))
    assert decoded.shape == data.shape
    assert np.array_equal(decoded.reshape(-1), old_decode(expected, offset, step, dtype))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_still_refused_anywhere_in_the_tensor(bad):
    from nnzip.stages.base import LossyRangeError

    for where in (0, 1234, -1):
        data = np.linspace(-1, 1, 5000, dtype=np.float32)
        data[where] = bad
        with pytest.raises(LossyRangeError, match="finite"):
            UNIFORM.encode(data, ArraySpec.of(data), {"step": 0.01})


# --- the absolute step (--uniform-step) ---------------------------------------------------------------

import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402

from nnzip import cli  # noqa: E402
from nnzip.container import read_container  # noqa: E402

from .nnz_tools import assert_decompress_rejects, blobs_of, rebuild, split_file  # noqa: E402

DQ = get_stage("dq")


def small_model(path, seed=0):
    """A safetensors file with two lossy candidates of different scales and a bias (kept exact)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {"a.weight": (rng.laplace(0, 0.05, (64, 48))).astype(np.float32),
               "b.weight": (rng.standard_normal((32, 64)) * 0.5).astype(np.float32),
               "a.bias": rng.standard_normal(48).astype(np.float32)}
    save_file(tensors, str(path))
    return tensors


def compress_cli(tmp_path, *flags, name="m.nnz"):
    source = tmp_path / "m.safetensors"
    tensors = small_model(source)
    out = tmp_path / name
    assert cli.main(["compress", str(source), "-o", str(out), "-q", *flags]) == 0
    return tensors, out


def decoded(tmp_path, nnz):
    from safetensors.numpy import load_file

    back = tmp_path / "back.safetensors"
    assert cli.main(["decompress", str(nnz), "-o", str(back), "-q", "-f"]) == 0
    return load_file(str(back))


def stage_configs(nnz, stage_id):
    header = read_container(open(nnz, "rb")).header
    return {t["name"]: c["configuration"] for t in header["tensors"] for p in t["parts"] for c in p["codecs"] if c["name"] == stage_id}


def f64(text):
    return struct.unpack("<d", base64.b64decode(text))[0]


def test_uniform_step_is_one_absolute_step_for_every_tensor(tmp_path):
    tensors, nnz = compress_cli(tmp_path, "--uniform-step", "0.01")
    configs = stage_configs(nnz, "uniform")
    assert set(configs) == {"a.weight", "b.weight"}  # the bias stays exact
    assert {f64(c["step"]) for c in configs.values()} == {0.01}
    back = decoded(tmp_path, nnz)
    for name in configs:
        assert np.abs(back[name].astype(np.float64) - tensors[name]).max() <= 0.005 * (1 + 1e-6)
    assert np.array_equal(back["a.bias"], tensors["a.bias"])
    # --uniform-step itself is no 1.3 feature: the file is 1.3 only if the per-blob coder choice took a
    # 1.3 coder (rans, or arith's levels mode), else 1.2 as before
    coders_1_3 = stage_configs(nnz, "rans") or {n: c for n, c in stage_configs(nnz, "arith").items() if "zero" in c}
    assert not stage_configs(nnz, "dq")
    assert read_container(open(nnz, "rb")).version[1] == (3 if coders_1_3 else 2)


@pytest.mark.parametrize("flags, fragment", [
    (["--uniform-step", "0"], "uniform_step must be a positive"),
    (["--uniform-step", "nan"], "uniform_step must be a positive"),
    (["--uniform-step", "0.1", "--uniform", "0.1"], "choose one of"),
    (["--dq"], "dq is a way of rounding"),
    (["--uniform-step", "0.1", "--dq", "--rdo", "0.12"], "rdo and dq"),
])
def test_bad_lossy_flags_are_one_line_errors(tmp_path, capsys, flags, fragment):
    source = tmp_path / "m.safetensors"
    small_model(source)
    before = sorted(os.listdir(tmp_path))
    assert cli.main(["compress", str(source), "-o", str(tmp_path / "x.nnz"), *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nnzip: error: ") and err.count("\n") == 1 and fragment in err, err
    assert sorted(os.listdir(tmp_path)) == before


# --- dq: dependent quantization -------------------------------------------------------------------------

NEXT = [[0, 2], [2, 0], [1, 3], [3, 1]]


def reference_dq_decode(codes, offset, step, dtype):
    """spec/stages/dq.md's decoding algorithm, element by element, in plain Python."""
    out, state = [], 0
    for c in codes.reshape(-1).tolist():
        k = c + offset
        v = 2 * k if state < 2 or k == 0 else (2 * k - 1 if k > 0 else 2 * k + 1)
        out.append(float(v) * step)
        state = NEXT[state][k % 2]
    return np.array(out, dtype=np.float64).astype(dtype).reshape(codes.shape)


@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
def test_dq_decode_follows_the_spec(dtype):
    rng = np.random.default_rng(5)
    data = rng.laplace(0, 0.3, (50, 41)).astype(dtype)
    codes, config = DQ.encode(data, ArraySpec.of(data), {"step": 0.02})
    stage = DQ.from_config(config, ArraySpec.of(data))
    got = stage.decode(codes, ArraySpec.of(data))
    assert np.array_equal(got, reference_dq_decode(codes, config["offset"], f64(config["step"]), dtype))
    assert np.abs(got.astype(np.float64) - data).max() <= 2 * 0.02 * (1 + 1e-9)


def test_dq_finds_less_error_than_one_grid_of_twice_the_step():
    """The trellis may always stay on Q0 (the grid 2Δ) and on Q1: its least-error path is never worse."""
    data = np.random.default_rng(1).laplace(0, 1.0, 100_000).astype(np.float32)
    codes, config = DQ.encode(data, ArraySpec.of(data), {"step": 0.05})
    got = DQ.from_config(config, ArraySpec.of(data)).decode(codes, ArraySpec.of(data)).astype(np.float64)
    dq_error = float(np.sum((got - data) ** 2))
    coarse = np.rint(data / 0.1) * 0.1
    assert dq_error < 0.8 * float(np.sum((coarse - data) ** 2))


def test_dq_blocks_join_and_edge_cases():
    from nnzip.stages._uniform_kernels import DQ_BLOCK

    data = np.random.default_rng(2).standard_normal(DQ_BLOCK + 1234).astype(np.float32)
    codes, config = DQ.encode(data, ArraySpec.of(data), {"step_sd": 0.05})
    got = DQ.from_config(config, ArraySpec.of(data)).decode(codes, ArraySpec.of(data))
    assert np.array_equal(got, reference_dq_decode(codes, config["offset"], f64(config["step"]), "<f4"))
    empty = np.zeros((0, 4), np.float32)
    codes, config = DQ.encode(empty, ArraySpec.of(empty), {"step": 0.1})
    assert codes.shape == (0, 4) and DQ.from_config(config, ArraySpec.of(empty)).decode(codes, ArraySpec.of(empty)).shape == (0, 4)


def test_dq_encoder_refusals():
    from nnzip.errors import ConfigError
    from nnzip.stages.base import LossyRangeError

    data = np.linspace(-1, 1, 3000, dtype=np.float32)
    with pytest.raises(LossyRangeError, match="finite"):
        DQ.encode(np.array([1.0, np.nan], np.float32), ArraySpec.make("<f4", [2]), {"step": 0.1})
    with pytest.raises(LossyRangeError, match="levels"):
        DQ.encode(data, ArraySpec.of(data), {"step": 1e-6})
    with pytest.raises(ConfigError, match="exactly one"):
        DQ.encode(data, ArraySpec.of(data), {"step": 0.1, "step_sd": 1})
    with pytest.raises(ConfigError, match="float32 or float64"):
        DQ.encode(data.astype("<f2"), ArraySpec.make("<f2", [3000]), {"step": 0.1})


def test_dq_through_the_cli_is_a_1_3_file_with_less_error(tmp_path):
    tensors, plain = compress_cli(tmp_path, "--uniform-step", "0.02", name="plain.nnz")
    _, trellis = compress_cli(tmp_path, "--uniform-step", "0.01", "--dq", name="dq.nnz")
    assert set(stage_configs(trellis, "dq")) == {"a.weight", "b.weight"}
    assert read_container(open(trellis, "rb")).version == (1, 3)
    errors = {}
    for label, nnz in (("plain", plain), ("dq", trellis)):
        back = decoded(tmp_path, nnz)
        errors[label] = sum(float(np.sum((back[n].astype(np.float64) - tensors[n]) ** 2)) for n in ("a.weight", "b.weight"))
        assert np.array_equal(back["a.bias"], tensors["a.bias"])
    assert errors["dq"] < errors["plain"]


def _dq_file(tmp_path):
    _, nnz = compress_cli(tmp_path, "--uniform-step", "0.01", "--dq", name="good.nnz")
    data = nnz.read_bytes()
    nnz.unlink()
    header, _, _ = split_file(data)
    return header, blobs_of(data)


def _with_dq_config(header, change):
    header = json.loads(json.dumps(header))
    for tensor in header["tensors"]:
        for part in tensor["parts"]:
            for codec in part["codecs"]:
                if codec["name"] == "dq" and tensor["name"] == "a.weight":
                    change(codec["configuration"])
    return header


def b64f64(value):
    return base64.b64encode(struct.pack("<d", value)).decode()


@pytest.mark.parametrize("change, fragment", [
    (lambda c: c.update(extra=1), "dq"),
    (lambda c: c.pop("offset"), "dq"),
    (lambda c: c.update(step=b64f64(0.0)), "dq: 'step' must be one positive finite float64"),
    (lambda c: c.update(step=b64f64(float("inf"))), "dq: 'step' must be one positive finite float64"),
    (lambda c: c.update(offset="3"), "dq: 'offset' must be an integer"),
    (lambda c: c.update(offset=2**41), "dq: 'offset' must be an integer"),
    (lambda c: c.update(step=b64f64(1e38), offset=10), "dq: with offset 10"),        # no code can be finite
    (lambda c: c.update(step=b64f64(3e37), offset=0), "decode beyond the range"),   # the stored codes overflow float32
])
def test_hostile_dq_configurations_are_refused(tmp_path, capsys, change, fragment):
    header, blobs = _dq_file(tmp_path)
    data = rebuild(_with_dq_config(header, change), blobs)
    assert_decompress_rejects(tmp_path, data, capsys, fragment, output_name="out.safetensors")


def test_dq_on_a_float16_spec_is_refused(tmp_path, capsys):
    header, blobs = _dq_file(tmp_path)
    header = json.loads(json.dumps(header))
    entry = next(t for t in header["tensors"] if t["name"] == "a.weight")
    entry["dtype"] = "<f2"
    entry["parts"][0]["dtype"] = "<f2"
    data = rebuild(header, blobs)
    assert_decompress_rejects(tmp_path, data, capsys, "dq: the input spec must be float32 or float64", output_name="out.safetensors")


# --- serializers without extra copies --------------------------------------------------------------------


@pytest.mark.parametrize("bits", [3, 8, 9, 12, 16])
def test_large_bitpack_streams_are_one_buffer_with_the_old_bytes(bits):
    from nnzip.stages import bitpack

    values = np.random.default_rng(bits).integers(0, 1 << bits, 3 * bitpack.CHUNK + 17).astype("<u2")
    old = b"".join(bitpack._pack_chunk(values[i:i + bitpack.CHUNK], bits) for i in range(0, values.size, bitpack.CHUNK))
    packed = bitpack.pack(values, bits)
    assert bytes(packed) == old
    big = np.tile(values, -(-8 * bitpack.VIEW_BYTES // (values.size * bits)) + 1)
    packed = bitpack.pack(big, bits)
    assert isinstance(packed, memoryview) and len(packed) > bitpack.VIEW_BYTES
    assert bytes(packed) == b"".join(bitpack._pack_chunk(big[i:i + bitpack.CHUNK], bits) for i in range(0, big.size, bitpack.CHUNK))
    stage = get_stage("bitpack").from_config({"bits": bits}, ArraySpec.of(big))
    assert np.array_equal(stage.decode(packed, ArraySpec.of(big)), big)


def test_raw_decode_views_a_writable_buffer_and_copies_read_only_bytes():
    raw = get_stage("raw").from_config({}, ArraySpec.make("<u2", [4]))
    buffer = np.arange(8, dtype=np.uint8)
    view = raw.decode(memoryview(buffer), ArraySpec.make("<u2", [4]))
    assert np.shares_memory(view, buffer) and view.flags.writeable
    copied = raw.decode(buffer.tobytes(), ArraySpec.make("<u2", [4]))
    assert copied.flags.writeable and np.array_equal(copied, view)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_all_finite_finds_any_non_finite_value(bad):
    from nnzip.pipeline import _all_finite

    values = np.zeros(1000, np.float32)
    assert _all_finite(values) and _all_finite(values[:0])
    for where in (0, 500, 999):
        broken = values.copy()
        broken[where] = bad
        assert not _all_finite(broken)


def test_a_files_uniform_configuration_and_codes_are_the_old_encoders(tmp_path):
    """Through the CLI, float32 (compiled kernel) and float16 (numpy blocks): the stored offset and the
    codes are those of the numpy encoder this change replaced (golden container files pin the bytes)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(9)
    weights = rng.laplace(0, 0.05, (128, 64))
    for dtype in ("<f4", "<f2"):
        source = tmp_path / f"w{dtype[1:]}.safetensors"
        save_file({"w": weights.astype(dtype)}, str(source))
        out = tmp_path / f"w{dtype[1:]}.nnz"
        assert cli.main(["compress", str(source), "-o", str(out), "-q", "--uniform", "0.3"]) == 0
        codes = None
        for c in stage_configs(out, "uniform").values():
            step, offset = f64(c["step"]), c["offset"]
            expected, expected_offset = old_encode(weights.astype(dtype).reshape(-1), step)
            codes = quantize_codes(weights.astype(dtype).reshape(-1), step, expected_offset)
            assert offset == expected_offset and np.array_equal(codes, expected)
        assert codes is not None
