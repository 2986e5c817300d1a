"""``dense``: the identity transform; the tensor itself is the one part ``values``.

See ``spec/stages/dense.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .base import ArraySpec, DecodeCost, TransformStage, config_keys


@dataclass(frozen=True)
class Dense(TransformStage):
    """Keep the tensor as it is, as one part named ``values``; no configuration."""

    id = "dense"
    lossless = True
    output_is_part = True
    #: Value stages apply to ``values``.
    quantizable = ("values",)

    @classmethod
    def from_config(cls, config: Any, spec: ArraySpec) -> "Dense":
        """Accept only the empty configuration."""
        config_keys(config, set(), cls.id)
        return cls()

    @classmethod
    def encode(cls, data: np.ndarray, spec: ArraySpec, params: Mapping[str, Any]) -> tuple[dict, dict]:
        """``({"values": data}, {})``."""
        return {"values": data}, {}

    def decode(self, parts: Mapping[str, np.ndarray], spec: ArraySpec) -> np.ndarray:
        """The ``values`` part."""
        return parts["values"]

    def decode_cost(self, spec: ArraySpec, coded: int = 0) -> DecodeCost:
        """Nothing: the part is the tensor."""
        return DecodeCost(0, 0)

    def part_specs(self, spec: ArraySpec) -> dict[str, ArraySpec]:
        """One part, ``values``, of the tensor's own spec."""
        return {"values": spec}
