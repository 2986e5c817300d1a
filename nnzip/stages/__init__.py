"""The one place stages are registered.

Each entry maps a stable stage id (what files store) to ``module:Class``.  Modules
are imported on first use so that ``nnzip --help`` stays fast and a stage's
dependencies load only when a file needs it.
"""

from __future__ import annotations

import importlib

from ..errors import FormatError
from .base import (  # noqa: F401  (re-exported for stage modules and callers)
    ArraySpec,
    ArrayStage,
    BytesSpec,
    BytesStage,
    Kind,
    SerializeStage,
    Stage,
    TransformStage,
)

_REGISTRY: dict[str, str] = {
    # array -> parts
    "dense": "nnzip.stages.dense:Dense",
    "byteplanes": "nnzip.stages.byteplanes:BytePlanes",
    "svd": "nnzip.stages.svd:SVD",
    "csr": "nnzip.stages.csr:CSR",
    "fft": "nnzip.stages.fft:FFT",
    # array -> array
    "kmeans": "nnzip.stages.kmeans:KMeans",
    "cast": "nnzip.stages.cast:Cast",
    "uniform": "nnzip.stages.uniform:Uniform",
    "dq": "nnzip.stages.dq:DQ",
    "delta": "nnzip.stages.delta:Delta",
    # array -> bytes
    "raw": "nnzip.stages.raw:Raw",
    "bitpack": "nnzip.stages.bitpack:BitPack",
    # bytes -> bytes
    "huffman": "nnzip.stages.huffman:Huffman",
    "rans": "nnzip.stages.rans:Rans",
    "lzw": "nnzip.stages.lzw:LZW",
    "arith": "nnzip.stages.arith:Arith",
}

_LOADED: dict[str, type[Stage]] = {}


def get_stage(stage_id: object) -> type[Stage]:
    """The stage class registered under *stage_id*; FormatError for unknown ids."""
    if not isinstance(stage_id, str) or stage_id not in _REGISTRY:
        raise FormatError(f"unknown stage {stage_id!r} (known: {', '.join(_REGISTRY)})")
    if stage_id not in _LOADED:
        module_name, class_name = _REGISTRY[stage_id].split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        assert cls.id == stage_id, f"registry entry {stage_id!r} points at stage {cls.id!r}"
        _LOADED[stage_id] = cls
    return _LOADED[stage_id]
