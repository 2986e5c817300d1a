"""``dense``: the identity transform; the tensor itself is the one part ``values``.

See ``spec/stages/dense.md``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .base import ArraySpec, DecodeCost, TransformStage, config_keys


class Dense(TransformStage):
    """Keep the tensor as it is, as one part named ``values``."""

    id = "dense"
    lossless = True
    output_is_part = True

    @classmethod
    def encode(cls, data: np.ndarray, spec: ArraySpec, params: Mapping[str, Any]) -> tuple[dict, dict]:
        """``({"values": data}, {})``."""
        return {"values": data}, {}

    @classmethod
    def decode(cls, parts: Mapping[str, np.ndarray], spec: ArraySpec, config: Mapping[str, Any]) -> np.ndarray:
        """The ``values`` part."""
        return parts["values"]

    @classmethod
    def decode_cost(cls, spec: ArraySpec, config: Mapping[str, Any], coded: int = 0) -> DecodeCost:
        """Nothing: the part is the tensor."""
        return DecodeCost(0, 0)

    @classmethod
    def check_config(cls, config: Mapping[str, Any], spec: ArraySpec) -> None:
        """Accept only the empty configuration."""
        config_keys(config, set(), cls.id)

    @classmethod
    def part_specs(cls, spec: ArraySpec, config: Mapping[str, Any]) -> dict[str, ArraySpec]:
        """One part, ``values``, of the tensor's own spec."""
        return {"values": spec}

    @classmethod
    def quantizable_parts(cls, config: Mapping[str, Any]) -> tuple[str, ...]:
        """Value stages apply to ``values``."""
        return ("values",)
