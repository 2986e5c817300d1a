"""``kmeans``: replace each float by the index of its nearest codebook entry.

The codebook (at most ``2**bits`` float32 values, ascending) is learned per array
by a weighted 1-D k-means (``kmeans1d.py``) and stored in the configuration; the
output is the array of codes, uint8, same shape.  See ``spec/stages/kmeans.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError, FormatError
from .base import (BLOCK_ELEMENTS, ArraySpec, ArrayStage, DecodeCost, LossyRangeError, block_work, check_params, config_int, config_keys,
                   decode_floats, encode_floats, linear_cost, param_bool, param_int)
from .kmeans1d import BLOCK_VALUES, kmeans1d, nearest_codes

#: Input element types the stage accepts.
FLOAT_DTYPES = ("<f2", "<f4", "<f8")
#: Largest bits per code: codes are stored as uint8.
MAX_BITS = 8
_PARAMS = {"bits", "zero", "weights"}


@dataclass(frozen=True)
class KMeans(ArrayStage):
    """Quantise a float array to ``2**bits`` levels learned by 1-D k-means.

    Params: ``bits`` (1..8, required); ``zero`` (bool, default False): 0.0 is a
    fixed level, so exact zeros (pruned weights) stay exactly 0; ``weights``
    (array of the data's size, >= 0, default uniform): per-element importance for
    weighted k-means -- used to fit, never stored.
    """

    id = "kmeans"
    #: Bits per code, 1..8.
    bits: int
    #: The levels, float32 values (held exactly as Python floats), strictly ascending, 1..2**bits of them.
    codebook: tuple[float, ...]

    @classmethod
    def from_config(cls, config: Any, spec: ArraySpec) -> "KMeans":
        """Reject unknown fields, bits outside 1..8 and any codebook :func:`_codebook` refuses."""
        codebook = _codebook(config, spec)  # checks every field first
        return cls(config["bits"], tuple(codebook.tolist()))

    def to_config(self) -> dict:
        """``{"bits": bits, "codebook": base64 of the float32 levels}``."""
        return {"bits": self.bits, "codebook": encode_floats(self.levels())}

    def levels(self) -> np.ndarray:
        """The codebook as a float32 array."""
        return np.array(self.codebook, dtype="<f4")

    @classmethod
    def encode(cls, data: np.ndarray, spec: ArraySpec, params: Mapping[str, Any]) -> tuple[np.ndarray, dict]:
        """``(codes, {"bits": bits, "codebook": base64 float32})``; codes are nearest-entry indices."""
        bits, zero, weights = _parse_params(params, spec)
        # The values stay in their own dtype; checks, clustering and coding read float64 blocks
        # of them (a float64 copy of a large tensor is twice its float32 self).
        values = np.asarray(data).reshape(-1)
        _check_values(values, spec)
        codebook = _round_codebook(kmeans1d(values, 2**bits, weights, fixed_zero=zero), spec.dtype)
        codes = nearest_codes(values, codebook.astype(np.float64)).reshape(spec.shape)
        return codes, cls(bits, tuple(codebook.tolist())).to_config()

    def decode(self, data: np.ndarray, spec: ArraySpec) -> np.ndarray:
        """``codebook[codes]`` in the input's dtype; rejects codes outside the codebook."""
        codebook = self.levels()
        codes = np.asarray(data)
        if codes.dtype != np.uint8 or codes.shape != spec.shape:
            raise FormatError(f"kmeans: codes must be uint8 of shape {spec.shape}, got {codes.dtype} {codes.shape}")
        if codes.size and int(codes.max()) >= codebook.size:
            raise FormatError(f"kmeans: code {int(codes.max())} is outside the codebook of {codebook.size} entries")
        table, flat = codebook.astype(spec.dtype), codes.reshape(-1)
        out = np.empty(flat.size, dtype=spec.dtype)
        for start in range(0, flat.size, BLOCK_ELEMENTS):  # indexing converts a block of codes to intp
            out[start:start + BLOCK_ELEMENTS] = table[flat[start:start + BLOCK_ELEMENTS]]
        return out.reshape(spec.shape)

    def decode_cost(self, spec: ArraySpec, coded: int = 0) -> DecodeCost:
        """A block of intp indices; a range check and a table lookup per element."""
        return linear_cost(spec.size, passes=2, work=block_work(8))

    def output_spec(self, spec: ArraySpec) -> ArraySpec:
        """uint8 codes of the input's shape."""
        return ArraySpec(np.dtype("|u1"), spec.shape)


def _parse_params(params: Mapping[str, Any], spec: ArraySpec) -> tuple[int, bool, np.ndarray | None]:
    """Validate the encoder params; ConfigError names the first bad one."""
    check_params("kmeans", params, _PARAMS)
    bits = param_int("kmeans", params, "bits", 1, MAX_BITS, )
    zero = param_bool("kmeans", params, "zero", False)
    weights = params.get("weights")
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        if weights.size != spec.size:
            raise ConfigError(f"kmeans: 'weights' has {weights.size} values for {spec.size} elements")
        if not (np.isfinite(weights).all() and (weights >= 0).all()):
            raise ConfigError("kmeans: 'weights' must be finite and non-negative")
    return bits, zero, weights


def _check_values(values: np.ndarray, spec: ArraySpec) -> None:
    """Refuse input k-means cannot represent: non-float types, NaN, infinities, beyond float32."""
    if spec.dtype.str not in FLOAT_DTYPES:
        raise ConfigError(f"kmeans: input must be float16/32/64, got {spec.dtype}")
    if values.dtype.kind != "f":
        values = np.asarray(values, dtype=np.float64)  # what the caller gave: numbers the spec's dtype holds
    for start in range(0, values.size, BLOCK_VALUES):  # block by block: no tensor-sized temporaries
        block = values[start:start + BLOCK_VALUES]
        if not np.isfinite(block).all():
            raise LossyRangeError("kmeans: input holds NaN or infinity; store this tensor losslessly")
        if np.abs(block).max() > np.finfo(np.float32).max:
            raise LossyRangeError("kmeans: input exceeds the float32 range of the codebook; store this tensor losslessly")


def _round_codebook(centroids: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Centroids as the stored codebook: float32, ascending, distinct, at least one entry.

    For float16 input each entry is first rounded to float16, so every decoded
    value is exactly a codebook entry.  Rounding can merge neighbours; duplicates go.
    ``+ 0.0`` turns a -0.0 into 0.0 so the bytes do not depend on sort order.
    """
    if centroids.size == 0:
        return np.zeros(1, dtype=np.float32)
    rounded = centroids.astype(np.float16 if dtype.str == "<f2" else np.float32).astype(np.float32)
    return np.unique(rounded + np.float32(0.0))


def _codebook(config: Mapping[str, Any], spec: ArraySpec) -> np.ndarray:
    """The configuration's codebook after every check of the spec's MUST-reject list."""
    config_keys(config, {"bits", "codebook"}, "kmeans")
    if spec.dtype.str not in FLOAT_DTYPES:
        raise FormatError(f"kmeans: output type must be float16/32/64, not {spec.dtype}")
    bits = config_int(config, "bits", 1, MAX_BITS)
    if "codebook" not in config:
        raise FormatError("kmeans: configuration lacks 'codebook'")
    codebook = decode_floats(config["codebook"], "<f4", 2**bits)
    if not 1 <= codebook.size <= 2**bits:
        raise FormatError(f"kmeans: codebook must have 1..{2**bits} entries, has {codebook.size}")
    if not np.isfinite(codebook).all():
        raise FormatError("kmeans: codebook holds NaN or infinity")
    if (np.diff(codebook) <= 0).any():
        raise FormatError("kmeans: codebook entries must be strictly ascending")
    with np.errstate(over="ignore"):
        if not np.isfinite(codebook.astype(spec.dtype)).all():
            raise FormatError(f"kmeans: codebook entry overflows the output type {spec.dtype}")
    return codebook
