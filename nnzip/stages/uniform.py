"""``uniform``: values rounded to integer multiples of one step.  See ``spec/stages/uniform.md``.

With an entropy coder behind it this is entropy-constrained scalar quantization,
the regime NNCodec's DeepCABAC works in: weights cluster near zero, so most codes
are a few small integers and cost far fewer bits than a fixed-rate k-means index
(which spreads its clusters to be equally used).  The budget search tries both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from ..errors import ConfigError, FormatError
from .base import (BLOCK_ELEMENTS, ArraySpec, ArrayStage, DecodeCost, LossyRangeError, block_work, config_keys, decode_floats, encode_floats,
                   linear_cost, param_number)

#: Input element types the stage accepts.
INPUT_DTYPES = ("<f2", "<f4", "<f8")
#: Codes are stored as uint16, so at most this many levels between the smallest and largest value.
MAX_LEVELS = 1 << 16
#: Largest rate weight ``rdo`` (in squared steps per bit): beyond it nearly every value would go to 0.
MAX_RDO = 4.0
#: Histogram refinements of the rate-distortion choice (the second one moves well under 1% of the codes).
RDO_PASSES = 2
#: Largest magnitude of the stored offset (the smallest code).
MAX_OFFSET = 1 << 40
CODE_DTYPE = np.dtype("<u2")


@dataclass(frozen=True)
class Uniform(ArrayStage):
    """Round to multiples of ``step``; codes are ``round(x / step) - offset`` as uint16."""

    id = "uniform"
    #: The step, a positive finite float64.
    step: float
    #: The level of code 0, within ±:data:`MAX_OFFSET`.
    offset: int

    @classmethod
    def from_config(cls, config: Any, spec: ArraySpec) -> "Uniform":
        """``step`` a positive finite float64, ``offset`` an integer within ±2**40; float input."""
        config_keys(config, {"step", "offset"}, cls.id)
        if spec.dtype.str not in INPUT_DTYPES:
            raise FormatError(f"uniform: the input spec must be a float type, got {spec.dtype}")
        step, offset = _parse(config)
        if spec.size and not (_finite_in(spec.dtype, step, offset, 0) or _finite_in(spec.dtype, step, offset + MAX_LEVELS - 1, 0)
                              or offset < 0 < offset + MAX_LEVELS - 1):
            raise FormatError(f"uniform: with offset {offset} and step {step:g} no code decodes to a finite {spec.dtype}")
        return cls(step, offset)

    def to_config(self) -> dict:
        """``{"step": base64 of the float64 step, "offset": offset}``."""
        return {"step": encode_floats(np.array([self.step]), "<f8"), "offset": self.offset}

    @classmethod
    def encode(cls, data: np.ndarray, spec: ArraySpec, params: Mapping[str, Any]) -> tuple[np.ndarray, dict]:
        """Codes and ``{"step": base64 float64, "offset": smallest integer level}``.

        Params: ``step`` (absolute), or ``step_sd`` (a multiple of the values' standard
        deviation, so one setting suits parts of different scales such as SVD factors).
        """
        unknown = set(params) - {"step", "step_sd", "rdo"}
        if unknown or ("step" in params) == ("step_sd" in params):
            raise ConfigError("uniform: give exactly one of the parameters 'step' and 'step_sd' (and optionally 'rdo')")
        rdo = param_number(cls.id, params, "rdo", 0.0, lambda v: 0 <= v <= MAX_RDO, f"a number from 0 to {MAX_RDO}")
        flat = np.asarray(data).reshape(-1)
        # The smallest and largest values say whether all are finite (a NaN makes both NaN, an
        # infinity shows at an end) without a tensor-sized boolean temporary.
        ends = _value_range(flat)
        if not np.isfinite(ends).all():
            raise LossyRangeError("uniform: values must be finite (NaN or infinity found); store this tensor losslessly")
        step = params["step"] if "step" in params else _relative_step(data, params["step_sd"])
        step = param_number(cls.id, {"step": step}, "step", None, lambda v: math.isfinite(v) and v > 0, "a positive finite number")
        if spec.dtype.str not in INPUT_DTYPES:
            raise ConfigError(f"uniform: input must be a float array, got {spec.dtype}")
        levels = None
        if rdo and flat.size:
            # RDOQ weighs each value against the whole tensor's level histogram, so this opt-in
            # encoder choice holds tensor-sized float64/int64 temporaries.
            scaled = flat.astype(np.float64) / step
            levels = rdo_levels(scaled, np.rint(scaled).astype(np.int64), rdo)
            low, high = int(levels.min()), int(levels.max())
        else:
            # rint(x / step) never decreases as x grows (a division by a positive step, then a
            # rounding: both monotonic), so the ends' levels are the lowest and the highest.
            low, high = (int(level) for level in _levels(ends, step)) if flat.size else (0, 0)
        offset = low
        if flat.size and high - offset >= MAX_LEVELS:
            raise LossyRangeError(f"uniform: step {step:g} gives more than {MAX_LEVELS} levels for these values")
        if abs(offset) > MAX_OFFSET:
            raise LossyRangeError(f"uniform: step {step:g} is too small for values of this size")
        if flat.size and not _finite_in(spec.dtype, step, offset, high - offset):
            raise LossyRangeError(f"uniform: step {step:g} rounds values beyond the range of {spec.dtype}; store this tensor losslessly")
        if levels is not None:
            codes = (levels - offset).astype(CODE_DTYPE)
        else:
            codes = quantize_codes(flat, step, offset)
        return codes.reshape(spec.shape), cls(float(np.float64(step)), offset).to_config()

    def decode(self, data: np.ndarray, spec: ArraySpec) -> np.ndarray:
        """``(code + offset) * step`` in float64, cast to the input's dtype."""
        step, offset = self.step, self.offset
        codes = np.asarray(data)
        if codes.dtype != CODE_DTYPE or codes.shape != spec.shape:
            raise FormatError(f"uniform: expected {CODE_DTYPE} codes of shape {spec.shape}, got {codes.dtype}{codes.shape}")
        flat = codes.reshape(-1)
        if flat.size:
            low, high = int(flat.min()), int(flat.max())
            if not _finite_in(spec.dtype, step, offset + low, high - low):
                raise FormatError(f"uniform: codes up to {high} decode beyond the range of {spec.dtype} (offset {offset}, step {step:g})")
        return dequantize_codes(flat, offset, step, spec.dtype).reshape(spec.shape)

    def decode_cost(self, spec: ArraySpec, coded: int = 0) -> DecodeCost:
        """A block of int64 levels and one of float64 values; a range pass and four passes per element."""
        return linear_cost(spec.size, passes=5, work=block_work(24))

    def output_spec(self, spec: ArraySpec) -> ArraySpec:
        """uint16 codes of the input's shape."""
        return ArraySpec(CODE_DTYPE, spec.shape)


def _parse(config: Mapping[str, Any], stage: str = "uniform") -> tuple[float, int]:
    """The stored ``step`` and ``offset`` of *stage* (``uniform`` or ``dq``), checked (the configuration's keys already are)."""
    step = decode_floats(config.get("step"), "<f8", 1)
    offset = config.get("offset")
    if step.size != 1 or not math.isfinite(step[0]) or step[0] <= 0:
        raise FormatError(f"{stage}: 'step' must be one positive finite float64")
    if type(offset) is not int or abs(offset) > MAX_OFFSET:
        raise FormatError(f"{stage}: 'offset' must be an integer within ±{MAX_OFFSET}")
    return float(step[0]), offset


def _levels(block: np.ndarray, step: float) -> np.ndarray:
    """``rint(x / step)`` of a block of finite values, in float64, as int64 levels."""
    return np.rint(block.astype(np.float64) / step).astype(np.int64)


def _value_range(flat: np.ndarray) -> np.ndarray:
    """``[min, max]`` of *flat* (NaN where it holds one): two passes, no temporary; ``[0, 0]`` when empty."""
    if not flat.size:
        return np.zeros(2, dtype=flat.dtype)
    return np.array([flat.min(), flat.max()], dtype=flat.dtype)


#: Element types of the compiled kernels' values (numba has no float16 arithmetic).
KERNEL_DTYPES = ("<f4", "<f8")


def quantize_codes(flat: np.ndarray, step: float, offset: int) -> np.ndarray:
    """The ``<u2`` codes ``rint(x / step) - offset`` of the finite 1-D *flat*, whose levels span under 2**16.

    float32/float64: one compiled pass into the codes, no temporary.  float16: numpy blocks
    (a float64 and an int64 temporary of one block: bounded memory, spec/container.md §4.4).
    Both compute every code the same way in binary64, so they are identical.
    """
    codes = np.empty(flat.size, dtype=CODE_DTYPE)
    if flat.dtype.str in KERNEL_DTYPES:
        from ._uniform_kernels import quantize

        quantize(np.ascontiguousarray(flat), float(step), int(offset), codes)
        return codes
    for start in range(0, flat.size, BLOCK_ELEMENTS):
        codes[start:start + BLOCK_ELEMENTS] = _levels(flat[start:start + BLOCK_ELEMENTS], step) - offset
    return codes


def dequantize_codes(flat: np.ndarray, offset: int, step: float, dtype: np.dtype, out: np.ndarray | None = None) -> np.ndarray:
    """``(code + offset) * step`` of the 1-D ``<u2`` *flat*, in binary64, rounded to *dtype*, into *out* (made if None).

    float32/float64: one compiled pass straight into the output.  float16: numpy blocks (an
    int64 and a float64 temporary of one block).  Both round the same binary64 products.
    """
    dtype = np.dtype(dtype)
    out = np.empty(flat.size, dtype=dtype) if out is None else out
    if dtype.str in KERNEL_DTYPES:
        from ._uniform_kernels import dequantize

        dequantize(np.ascontiguousarray(flat), int(offset), float(step), out)
        return out
    for start in range(0, flat.size, BLOCK_ELEMENTS):
        block = flat[start:start + BLOCK_ELEMENTS]
        out[start:start + BLOCK_ELEMENTS] = (block.astype(np.int64) + offset) * step
    return out


def rdo_levels(scaled: np.ndarray, nearest: np.ndarray, rdo: float, passes: int = RDO_PASSES) -> np.ndarray:
    """Rate-distortion-optimised levels (RDOQ; entropy-constrained scalar quantization on a fixed grid).

    *scaled* is ``values / step`` and *nearest* its rounding.  Each value keeps its nearest level
    or moves one level toward zero, whichever costs less in ``D + rdo · R``: ``D`` the squared
    error in steps², ``R`` the level's code length ``-log2 p`` in bits under the histogram of the
    current choice (what an order-0 entropy coder spends), refined *passes* times.  ``rdo`` ≈
    0.12 matches the slope of a fine uniform quantizer's rate-distortion curve (2·ln 2 · 1/12);
    larger values trade more error for fewer bits.  Only levels the nearest rounding produced
    occur, so the offset and the range do not grow; decoding is unchanged.
    """
    flat_t, chosen = scaled.reshape(-1), nearest.reshape(-1)
    toward = chosen - np.sign(chosen)  # one level toward zero (0 stays 0)
    extra = (flat_t - toward) ** 2 - (flat_t - chosen) ** 2  # added distortion of moving, >= 0
    lowest, count = int(chosen.min()), chosen.size
    near_index, toward_index = chosen - lowest, toward - lowest
    current = chosen
    for _ in range(passes):
        histogram = np.bincount(current - lowest, minlength=int(chosen.max()) - lowest + 1)
        bits = -np.log2(np.maximum(histogram, 0.5) / count)  # an unused level costs as if seen half a time
        move = (chosen != 0) & (extra + rdo * (bits[toward_index] - bits[near_index]) < 0)
        current = np.where(move, toward, chosen)
    return current.reshape(nearest.shape)


def _finite_in(dtype: np.dtype, step: float, lowest: int, span: int) -> bool:
    """True when every level ``lowest .. lowest + span`` times *step* (in float64) is finite in *dtype*.

    The two ends decide: the decoded magnitude grows with ``|level|``, and the cast to the
    dtype rounds to nearest, so a value rounds to infinity exactly when it does at an end.
    """
    with np.errstate(over="ignore"):
        ends = np.array([lowest, lowest + span], dtype=np.float64) * step
        return bool(np.isfinite(ends).all() and np.isfinite(ends.astype(dtype)).all())


def _relative_step(data: np.ndarray, factor: Any) -> float:
    """The step ``factor`` standard deviations of *data* (its largest magnitude for a constant array)."""
    param_number("uniform", {"step_sd": factor}, "step_sd", None, lambda v: v > 0, "a positive number")
    data = np.asarray(data)
    spread = _std(data) if data.size else 0.0
    if spread > 0:
        return factor * spread
    # A constant array: a step equal to its value stores it exactly.
    magnitude = max((float(np.abs(_float64(block)).max()) for block in _flat_blocks(data)), default=0.0)
    return magnitude if magnitude > 0 else 1.0


#: Leaves of the blockwise pairwise sum (:func:`_pairwise`): float64 temporaries of at most 4 MiB.
SUM_LEAF = 1 << 19


def _std(data: np.ndarray) -> float:
    """``np.std(data.astype(float64))``, bit for bit, without the tensor-sized float64 copies.

    numpy sums a contiguous array pairwise, halving it (at multiples of 8) down to small
    blocks; :func:`_pairwise` makes the same cuts and lets numpy sum each leaf, so the sums,
    and the step stored in the file, are those of ``np.std`` (checked in the tests).
    """
    if not data.flags.c_contiguous:
        return float(np.std(np.asarray(data, dtype=np.float64)))
    flat = data.reshape(-1)
    n = flat.size
    mean = float(_pairwise(flat, _float64)) / n
    squares = _pairwise(flat, lambda block: _squared(_float64(block) - mean))
    return float(np.sqrt(squares / n))


def _pairwise(flat: np.ndarray, leaf) -> np.float64:
    """numpy's pairwise sum of ``leaf(flat)``, computed leaf block by leaf block."""
    if flat.size <= SUM_LEAF:
        return np.add.reduce(leaf(flat))
    half = flat.size // 2
    half -= half % 8
    return _pairwise(flat[:half], leaf) + _pairwise(flat[half:], leaf)


def _float64(block: np.ndarray) -> np.ndarray:
    return block.astype(np.float64)


def _squared(block: np.ndarray) -> np.ndarray:
    return np.multiply(block, block, out=block)


def _flat_blocks(data: np.ndarray) -> Iterator[np.ndarray]:
    flat = data.reshape(-1)
    for start in range(0, flat.size, BLOCK_ELEMENTS):
        yield flat[start:start + BLOCK_ELEMENTS]
