"""``delta``: differences of consecutive integers, modulo 2**width, optionally zigzagged.

Sorted index lists (CSR column indices within a row, kept FFT positions) become
small non-negative gaps that bit-pack and entropy-code well.  All arithmetic is
modulo 2**w for w-bit elements, so every input round-trips exactly.  See
``spec/stages/delta.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError, FormatError
from .base import ArraySpec, ArrayStage, DecodeCost, check_params, config_keys, linear_cost, param_bool

#: Input element types the stage accepts.
INT_DTYPES = ("|u1", "<u2", "<u4", "<u8", "|i1", "<i2", "<i4", "<i8")


@dataclass(frozen=True)
class Delta(ArrayStage):
    """Delta-code an integer array in C order.

    Param ``zigzag`` (bool, optional): force zigzag on or off; by default the
    encoder picks whichever gives the smaller largest output value (ties: off),
    which is zigzag exactly when some difference is negative.
    """

    id = "delta"
    #: Whether the differences are zigzagged.
    zigzag: bool

    @classmethod
    def from_config(cls, config: Any, spec: ArraySpec) -> "Delta":
        """Require exactly ``{"zigzag": bool}`` and an integer input spec."""
        config_keys(config, {"zigzag"}, cls.id)
        if type(config.get("zigzag")) is not bool:
            raise FormatError(f"delta: configuration field 'zigzag' must be true or false, got {config.get('zigzag')!r}")
        if spec.dtype.str not in INT_DTYPES:
            raise FormatError(f"delta: output type must be an integer type, not {spec.dtype}")
        return cls(config["zigzag"])

    @classmethod
    def encode(cls, data: np.ndarray, spec: ArraySpec, params: Mapping[str, Any]) -> tuple[np.ndarray, dict]:
        """``(deltas, {"zigzag": bool})``: deltas in the unsigned type of the input's width."""
        check_params(cls.id, params, {"zigzag"})
        zigzag = param_bool(cls.id, params, "zigzag")
        if spec.dtype.str not in INT_DTYPES:
            raise ConfigError(f"delta: input must be an integer array, got {spec.dtype}")
        unsigned = _unsigned(spec.dtype)
        flat = np.ascontiguousarray(data, dtype=spec.dtype).reshape(-1).view(unsigned)
        diffs = np.empty_like(flat)
        if flat.size:
            diffs[0] = flat[0]
            # Unsigned numpy subtraction wraps modulo 2**w, as the spec defines.
            np.subtract(flat[1:], flat[:-1], out=diffs[1:])
        zigzagged = _zigzag(diffs)
        if zigzag is None:
            zigzag = bool(diffs.size) and int(zigzagged.max()) < int(diffs.max())
        out = zigzagged if zigzag else diffs
        return out.reshape(spec.shape), cls(zigzag).to_config()

    def decode(self, data: np.ndarray, spec: ArraySpec) -> np.ndarray:
        """Undo the zigzag, then a running sum modulo 2**w, viewed as the input's dtype."""
        unsigned = _unsigned(spec.dtype)
        deltas = np.asarray(data)
        if deltas.dtype != unsigned or deltas.shape != spec.shape:
            raise FormatError(f"delta: expected {unsigned} of shape {spec.shape}, got {deltas.dtype} {deltas.shape}")
        flat = deltas.reshape(-1)
        if self.zigzag:
            flat = _unzigzag(flat)
        # cumsum in the w-bit unsigned type wraps modulo 2**w: the inverse of the wrapped differences.
        return np.cumsum(flat, dtype=unsigned).view(spec.dtype).reshape(spec.shape)

    def decode_cost(self, spec: ArraySpec, coded: int = 0) -> DecodeCost:
        """The unzigzag's three temporaries of the input's size, and a running sum."""
        return linear_cost(spec.size, passes=5, work=3 * spec.nbytes)

    def output_spec(self, spec: ArraySpec) -> ArraySpec:
        """The unsigned integer type of the input's width, same shape."""
        return ArraySpec(_unsigned(spec.dtype), spec.shape)


def _unsigned(dtype: np.dtype) -> np.dtype:
    """The little-endian unsigned integer type as wide as *dtype*."""
    return np.dtype(f"<u{dtype.itemsize}") if dtype.itemsize > 1 else np.dtype("|u1")


def _zigzag(u: np.ndarray) -> np.ndarray:
    """Zigzag of the two's-complement values whose bit patterns are *u*: 0,-1,1,-2.. -> 0,1,2,3..

    ``(s << 1) ^ (s >> (w-1))`` with an arithmetic shift, done on unsigned types:
    the sign mask is ``0 - sign_bit`` (all ones for negatives), wrapping modulo 2**w.
    """
    width = u.dtype.type(8 * u.dtype.itemsize - 1)
    sign_mask = u.dtype.type(0) - (u >> width)
    return (u << u.dtype.type(1)) ^ sign_mask


def _unzigzag(z: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_zigzag`: ``(z >> 1) ^ (0 - (z & 1))`` modulo 2**w."""
    one = z.dtype.type(1)
    return (z >> one) ^ (z.dtype.type(0) - (z & one))
