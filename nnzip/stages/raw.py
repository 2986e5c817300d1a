"""``raw``: an array's elements as little-endian bytes, row-major.  See ``spec/stages/raw.md``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import FormatError
from .base import ArraySpec, DecodeCost, SerializeStage, config_keys, linear_cost


@dataclass(frozen=True)
class Raw(SerializeStage):
    """Serialize an array as its little-endian bytes; no parameters, no configuration."""

    id = "raw"

    @classmethod
    def from_config(cls, config: Any, spec: ArraySpec) -> "Raw":
        """Accept only the empty configuration."""
        config_keys(config, set(), cls.id)
        return cls()

    @classmethod
    def encode(cls, data: np.ndarray, spec: ArraySpec, params: Mapping[str, Any]) -> tuple[bytes, dict]:
        """The bytes of *data* in C order and little-endian."""
        return np.ascontiguousarray(data, dtype=spec.dtype).tobytes(), {}

    def decode(self, data: bytes, spec: ArraySpec) -> np.ndarray:
        """Rebuild the array of *spec* from exactly ``spec.nbytes`` bytes (a view of a writable buffer, else a copy)."""
        if len(data) != spec.nbytes:
            raise FormatError(f"raw: expected {spec.nbytes} bytes, got {len(data)}")
        if spec.dtype == np.bool_:
            check_bool_bytes(np.frombuffer(data, dtype=np.uint8))
        array = np.frombuffer(data, dtype=spec.dtype).reshape(spec.shape)
        # A writable buffer is the decoder's own (a bytes stage's output, held by nothing else):
        # the array may be it.  Read-only bytes (a blob as read) are copied, so the result is writable.
        return array if array.flags.writeable else array.copy()

    def decode_cost(self, spec: ArraySpec, coded: int = 0) -> DecodeCost:
        """One copy (the output); a ``|b1`` check holds one boolean per element."""
        return linear_cost(spec.size, passes=2, work=spec.size if spec.dtype == np.bool_ else 0)

    def encoded_size(self, spec: ArraySpec) -> int:
        """``spec.nbytes``."""
        return spec.nbytes


def check_bool_bytes(values: np.ndarray) -> None:
    """Rule 4.9: every byte of a ``|b1`` array is 0 or 1 (numpy would keep any other byte as it is)."""
    if values.size and int(values.max()) > 1:
        where = int(np.argmax(values > 1))
        raise FormatError(f"rule 4.9: a |b1 (bool) element is byte {int(values[where])} at element {where}, not 0 or 1")
