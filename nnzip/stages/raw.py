"""``raw``: an array's elements as little-endian bytes, row-major.  See ``spec/stages/raw.md``."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import FormatError
from .base import ArraySpec, SerializeStage, config_keys


class Raw(SerializeStage):
    """Serialize an array as its little-endian bytes; no parameters."""

    id = "raw"
    lossless = True

    @classmethod
    def encode(cls, data: np.ndarray, spec: ArraySpec, params: Mapping[str, Any]) -> tuple[bytes, dict]:
        """The bytes of *data* in C order and little-endian."""
        return np.ascontiguousarray(data, dtype=spec.dtype).tobytes(), {}

    @classmethod
    def decode(cls, data: bytes, spec: ArraySpec, config: Mapping[str, Any]) -> np.ndarray:
        """Rebuild the array of *spec* from exactly ``spec.nbytes`` bytes."""
        if len(data) != spec.nbytes:
            raise FormatError(f"raw: expected {spec.nbytes} bytes, got {len(data)}")
        return np.frombuffer(data, dtype=spec.dtype).reshape(spec.shape).copy()

    @classmethod
    def check_config(cls, config: Mapping[str, Any], spec: ArraySpec) -> None:
        """Accept only the empty configuration."""
        config_keys(config, set(), cls.id)

    @classmethod
    def encoded_size(cls, spec: ArraySpec, config: Mapping[str, Any]) -> int:
        """``spec.nbytes``."""
        return spec.nbytes
