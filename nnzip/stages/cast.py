"""``cast``: store float32/float64 values as float16 or bfloat16.  See ``spec/stages/cast.md``.

float16 uses numpy's conversion (round to nearest, ties to even, directly from
float64 too).  bfloat16 is the top 16 bits of a float32, rounded to nearest even
with integer operations; it is stored as ``<u2`` because numpy has no bfloat16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError, FormatError
from .base import ArraySpec, ArrayStage, DecodeCost, LossyRangeError, check_params, config_choice, config_keys, linear_cost, param_choice

#: Input element types the stage accepts.
INPUT_DTYPES = ("<f4", "<f8")
#: Stored target type -> element type of the output array.
TARGETS = {"<f2": np.dtype("<f2"), "bfloat16": np.dtype("<u2")}


@dataclass(frozen=True)
class Cast(ArrayStage):
    """Reduce float precision.  Param ``dtype``: ``"<f2"`` (default) or ``"bfloat16"``."""

    id = "cast"
    #: The stored type: ``"<f2"`` or ``"bfloat16"`` (a key of :data:`TARGETS`).
    dtype: str

    @classmethod
    def from_config(cls, config: Any, spec: ArraySpec) -> "Cast":
        """Require exactly ``{"dtype": "<f2" | "bfloat16"}`` and a float32/float64 input spec."""
        config_keys(config, {"dtype"}, cls.id)
        target = config_choice(config, "dtype", tuple(TARGETS))
        if spec.dtype.str not in INPUT_DTYPES:
            raise FormatError(f"cast: output type must be float32 or float64, not {spec.dtype}")
        return cls(target)

    @classmethod
    def encode(cls, data: np.ndarray, spec: ArraySpec, params: Mapping[str, Any]) -> tuple[np.ndarray, dict]:
        """The values rounded to the target type; ConfigError if a finite value would become infinite."""
        check_params(cls.id, params, {"dtype"})
        target = param_choice(cls.id, params, "dtype", tuple(TARGETS), "<f2")
        if spec.dtype.str not in INPUT_DTYPES:
            raise ConfigError(f"cast: input must be float32 or float64, got {spec.dtype}")
        values = np.asarray(data, dtype=spec.dtype)
        with np.errstate(over="ignore"):
            if target == "<f2":
                out = values.astype("<f2")
                decoded = out
            else:
                out = to_bfloat16(values)
                decoded = from_bfloat16(out)
        overflow = np.isinf(decoded) & np.isfinite(values)
        if overflow.any():
            worst = float(np.abs(values[overflow]).max())
            raise LossyRangeError(f"cast: value {worst:g} is beyond the range of {target}; it would become infinity")
        return out, cls(target).to_config()

    def decode(self, data: np.ndarray, spec: ArraySpec) -> np.ndarray:
        """The stored values converted back (exactly) to the input's dtype."""
        target = self.dtype
        stored = np.asarray(data)
        if stored.dtype != TARGETS[target] or stored.shape != spec.shape:
            raise FormatError(f"cast: expected {TARGETS[target]} of shape {spec.shape}, got {stored.dtype} {stored.shape}")
        values = stored if target == "<f2" else from_bfloat16(stored)
        return values.astype(spec.dtype)

    def decode_cost(self, spec: ArraySpec, coded: int = 0) -> DecodeCost:
        """bfloat16 widens to a float32 temporary first; float16 converts directly."""
        return linear_cost(spec.size, passes=2, work=4 * spec.size if self.dtype == "bfloat16" else 0)

    def output_spec(self, spec: ArraySpec) -> ArraySpec:
        """``<f2`` or (bfloat16) ``<u2``, of the input's shape."""
        return ArraySpec(TARGETS[self.dtype], spec.shape)


def to_bfloat16(values: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (``<u2``) of *values*, rounded to nearest, ties to even.

    float64 input is first narrowed to float32 *rounding to odd* (truncate, then
    set the lowest bit if anything was dropped): with 16 spare bits this makes the
    second rounding exact, so the result is float64 rounded directly to bfloat16,
    with no double-rounding error.  NaN stays NaN (quiet), infinities stay.
    """
    shape = np.shape(values)
    values = np.asarray(values).reshape(-1)
    if values.dtype == np.float64:
        values = _to_float32_round_odd(values)
    bits = np.ascontiguousarray(values, dtype="<f4").view("<u4")
    # Adding 0x7FFF plus the lowest kept bit, then truncating, rounds half to even;
    # a carry out of the mantissa correctly bumps the exponent (up to infinity).
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
    nan = np.isnan(values)
    # Truncating a NaN could clear every mantissa bit kept (turning it into infinity):
    # force the quiet bit instead.
    rounded = np.where(nan, (bits >> np.uint32(16)) | np.uint32(0x0040), rounded)
    return rounded.astype("<u2").reshape(shape)


def from_bfloat16(stored: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 bit patterns (exact: they are float32's top halves)."""
    wide = np.asarray(stored, dtype="<u2").astype("<u4")
    wide <<= np.uint32(16)  # in place, so a 0-d array stays an array
    return wide.view("<f4")


def _to_float32_round_odd(values: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounding to odd: truncate toward zero, then set the last bit if inexact."""
    with np.errstate(over="ignore"):
        nearest = values.astype("<f4")
    bits = nearest.view("<u4").copy()
    finite = np.isfinite(values)
    # Where rounding to nearest went away from zero, step one unit back toward zero;
    # on the sign-magnitude bit pattern that is a decrement.  It also turns a
    # finite value's overflow to infinity back into the float32 maximum.
    away = finite & (np.abs(nearest.astype(np.float64)) > np.abs(values))
    bits[away] -= np.uint32(1)
    truncated = bits.view("<f4")
    inexact = finite & (truncated.astype(np.float64) != values)
    bits[inexact] |= np.uint32(1)
    return bits.view("<f4")
