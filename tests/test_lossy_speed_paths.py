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
