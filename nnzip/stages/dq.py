"""``dq``: dependent (trellis-coded) quantization, NNCodec's "DQ".  See ``spec/stages/dq.md``.

Two interleaved grids of one step Δ: quantizer Q0 holds the even multiples ``2k·Δ``, Q1 the
odd ones and zero, ``(2k - sgn k)·Δ``.  Which one an element uses is a four-state machine
driven by the parity of the previous levels, so the decoder follows it with no side
information, and the encoder picks every level by a Viterbi search over the whole tensor.
At the same entropy of the levels this gives less squared error than ``uniform``'s single
grid (the trellis's granular gain): measured on MiniLM-L6's weights, 3.1-3.3% fewer bits at
equal error under an order-0 coder.  The levels are stored like ``uniform``'s: ``<u2`` codes
``k - offset``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError, FormatError
from .base import ArraySpec, ArrayStage, DecodeCost, LossyRangeError, config_keys, encode_floats, linear_cost, param_number
from .uniform import CODE_DTYPE, MAX_LEVELS, MAX_OFFSET, _finite_in, _parse, _relative_step, _value_range

#: Input element types (the compiled decoder writes float32/float64; numba has no float16).
INPUT_DTYPES = ("<f4", "<f8")


@dataclass(frozen=True)
class DQ(ArrayStage):
    """Dependent quantization with step ``step``; codes are the levels minus ``offset``, as uint16."""

    id = "dq"
    #: Δ, a positive finite float64.
    step: float
    #: The level of code 0, within ±:data:`~nnzip.stages.uniform.MAX_OFFSET`.
    offset: int

    @classmethod
    def from_config(cls, config: Any, spec: ArraySpec) -> "DQ":
        """``step`` a positive finite float64, ``offset`` an integer within ±2**40; float32/float64 input."""
        config_keys(config, {"step", "offset"}, cls.id)
        if spec.dtype.str not in INPUT_DTYPES:
            raise FormatError(f"dq: the input spec must be float32 or float64, got {spec.dtype}")
        step, offset = _parse(config, cls.id)
        if spec.size and not (_finite_in(spec.dtype, 2 * step, offset, 0) or _finite_in(spec.dtype, 2 * step, offset + MAX_LEVELS - 1, 0)
                              or offset < 0 < offset + MAX_LEVELS - 1):
            raise FormatError(f"dq: with offset {offset} and step {step:g} no code decodes to a finite {spec.dtype}")
        return cls(step, offset)

    def to_config(self) -> dict:
        """``{"step": base64 of the float64 step, "offset": offset}``."""
        return {"step": encode_floats(np.array([self.step]), "<f8"), "offset": self.offset}

    @classmethod
    def encode(cls, data: np.ndarray, spec: ArraySpec, params: Mapping[str, Any]) -> tuple[np.ndarray, dict]:
        """Codes and the configuration.  Params: ``step`` (Δ, absolute) or ``step_sd`` (Δ in standard deviations)."""
        unknown = set(params) - {"step", "step_sd"}
        if unknown or ("step" in params) == ("step_sd" in params):
            raise ConfigError("dq: give exactly one of the parameters 'step' and 'step_sd'")
        if spec.dtype.str not in INPUT_DTYPES:
            raise ConfigError(f"dq: input must be float32 or float64, got {spec.dtype}")
        flat = np.ascontiguousarray(np.asarray(data).reshape(-1))
        ends = _value_range(flat)
        if not np.isfinite(ends).all():
            raise LossyRangeError("dq: values must be finite (NaN or infinity found); store this tensor losslessly")
        step = params["step"] if "step" in params else _relative_step(data, params["step_sd"])
        step = param_number(cls.id, {"step": step}, "step", None, lambda v: math.isfinite(v) and v > 0, "a positive finite number")
        step = float(np.float64(step))
        # Every level the search may try is within one of x / 2Δ: bound the range before searching.
        reach = float(np.abs(ends.astype(np.float64)).max()) / (2 * step) + 2 if flat.size else 0.0
        if 2 * reach >= MAX_LEVELS:
            raise LossyRangeError(f"dq: step {step:g} gives more than {MAX_LEVELS} levels for these values")
        from ._uniform_kernels import dq_encode

        levels = np.empty(flat.size, dtype=np.int32)
        low, high = (int(v) for v in dq_encode(flat, step, levels))
        if flat.size and high - low >= MAX_LEVELS:
            raise LossyRangeError(f"dq: step {step:g} gives more than {MAX_LEVELS} levels for these values")
        if abs(low) > MAX_OFFSET:
            raise LossyRangeError(f"dq: step {step:g} is too small for values of this size")
        if flat.size and not _finite_in(spec.dtype, 2 * step, low, high - low):
            raise LossyRangeError(f"dq: step {step:g} rounds values beyond the range of {spec.dtype}; store this tensor losslessly")
        levels -= np.int32(low)
        codes = levels.astype(CODE_DTYPE)
        del levels
        return codes.reshape(spec.shape), cls(step, low).to_config()

    def decode(self, data: np.ndarray, spec: ArraySpec) -> np.ndarray:
        """The state machine's values of the levels, in float64, rounded to the input's dtype."""
        codes = np.asarray(data)
        if codes.dtype != CODE_DTYPE or codes.shape != spec.shape:
            raise FormatError(f"dq: expected {CODE_DTYPE} codes of shape {spec.shape}, got {codes.dtype}{codes.shape}")
        flat = np.ascontiguousarray(codes.reshape(-1))
        if flat.size:
            low, high = int(flat.min()), int(flat.max())
            if not _finite_in(spec.dtype, 2 * self.step, self.offset + low, high - low):
                raise FormatError(f"dq: codes up to {high} decode beyond the range of {spec.dtype} (offset {self.offset}, step {self.step:g})")
        from ._uniform_kernels import dq_decode

        out = np.empty(flat.size, dtype=spec.dtype)
        dq_decode(flat, self.offset, self.step, out)
        return out.reshape(spec.shape)

    def decode_cost(self, spec: ArraySpec, coded: int = 0) -> DecodeCost:
        """No temporaries (one compiled pass into the output); a range pass and the decoding pass."""
        return linear_cost(spec.size, passes=3, work=0)

    def output_spec(self, spec: ArraySpec) -> ArraySpec:
        """uint16 codes of the input's shape."""
        return ArraySpec(CODE_DTYPE, spec.shape)
