"""``byteplanes``: split a tensor into byte planes so each can be entropy-coded apart (lossless).

The idea of ZipNN (Hershcovitch et al. 2024): in trained float weights the
exponent byte is highly skewed (weights cluster within a few octaves) while the
low mantissa bytes are close to uniform noise.  Coding the whole float stream
with one byte model mixes the two; coding each byte position apart lets the
exponent plane shrink to about a third and leaves the noise planes stored as
they are.  The pipeline serializes every plane with ``raw`` and picks the best
of none/huffman/lzw per plane.

Two splits (configuration ``mode``):

``split``
    plane ``i`` = byte ``i`` of each element's little-endian representation
    (plane 0 = least significant byte).
``rotate`` (float types only)
    as ``split``, after rotating each element's bits left by one, so the sign bit
    becomes the lowest bit and the exponent starts at the top: for float32 the
    highest plane is exactly the 8 exponent bits and the sign joins the lowest
    mantissa byte -- ZipNN's "byte grouping" with the exponent in a plane of its own.

The encoder's ``auto`` picks, per tensor, the split whose planes have the
smaller summed order-0 entropy (each plane capped at its raw size, as the
pipeline would store a plane that does not compress as it is); ties go to
``rotate``.  Integer tensors are split into bytes (``split`` only); booleans are
refused (one byte per element already, with no byte structure to exploit).

See ``spec/stages/byteplanes.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError, FormatError
from .base import ArraySpec, DecodeCost, TransformStage, check_params, config_choice, config_keys, linear_cost, param_choice
from .entropy import entropy_bound

#: Stored split modes.
MODES = ("split", "rotate")
#: Element types the stage accepts; rotate needs one of FLOAT_DTYPES.
FLOAT_DTYPES = ("<f2", "<f4", "<f8")
INT_DTYPES = ("|u1", "<u2", "<u4", "<u8", "|i1", "<i2", "<i4", "<i8")
#: Unsigned type of each item size, used to move bits around.
_UINT = {1: np.dtype("|u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}
#: Words the 1.0 decoder rotated at a time (two temporaries of this many words): the decode cost rule 4.8.1 declares.
ROTATE_BLOCK = 1 << 18


@dataclass(frozen=True)
class BytePlanes(TransformStage):
    """Split a float or integer tensor into one uint8 plane per byte of its elements.

    Params: ``mode`` (``"auto"`` default, ``"split"`` or ``"rotate"``).
    Configuration: ``{"mode": "split" | "rotate"}``.
    Parts: ``plane0`` .. ``plane{itemsize-1}``, uint8, each of the tensor's shape.
    """

    id = "byteplanes"
    lossless = True
    #: The planes are bytes, not values: no value stage applies to them.
    quantizable = ()
    #: ``"split"`` or ``"rotate"`` (:data:`MODES`).
    mode: str

    @classmethod
    def from_config(cls, config: Any, spec: ArraySpec) -> "BytePlanes":
        """``mode`` only; ``rotate`` only for floats; booleans and unknown types refused."""
        config_keys(config, {"mode"}, cls.id)
        mode = config_choice(config, "mode", MODES)
        if spec.dtype.str not in FLOAT_DTYPES + INT_DTYPES:
            raise FormatError(f"byteplanes: cannot rebuild a tensor of type {spec.dtype}")
        if mode == "rotate" and spec.dtype.str not in FLOAT_DTYPES:
            raise FormatError(f"byteplanes: mode 'rotate' needs a float tensor, not {spec.dtype}")
        return cls(mode)

    @classmethod
    def encode(cls, data: np.ndarray, spec: ArraySpec, params: Mapping[str, Any]) -> tuple[dict, dict]:
        """``({"plane0": ..., ...}, {"mode": mode})``."""
        check_params(cls.id, params, {"mode"})
        if spec.dtype.str not in FLOAT_DTYPES + INT_DTYPES:
            raise ConfigError(f"byteplanes: input must be a float or integer tensor, got {spec.dtype}")
        allowed = ("auto",) + (MODES if spec.dtype.str in FLOAT_DTYPES else ("split",))
        mode = param_choice(cls.id, params, "mode", allowed, "auto", expected=f"one of {list(allowed)} for {spec.dtype}")
        # (ascontiguousarray would turn a 0-d tensor into 1-d; reshape keeps the spec's shape.)
        words = np.ascontiguousarray(data, dtype=spec.dtype).view(_UINT[spec.dtype.itemsize]).reshape(spec.shape)
        if mode == "auto":
            mode = _auto_mode(words, None, spec)
        planes = _split(words, mode == "rotate")
        return {f"plane{i}": plane for i, plane in enumerate(planes)}, cls(mode).to_config()

    def decode(self, parts: Mapping[str, np.ndarray], spec: ArraySpec) -> np.ndarray:
        """Reassemble the tensor bit for bit from its planes."""
        mode = self.mode
        from ._huffman_kernels import join_planes, join_planes2, join_planes4

        itemsize = spec.dtype.itemsize
        planes = []
        for name in self.part_specs(spec):
            plane = np.asarray(parts[name]) if name in parts else None
            if plane is None or plane.dtype != np.uint8 or plane.shape != spec.shape:
                raise FormatError(f"byteplanes: part {name} must be uint8 of shape {spec.shape}")
            plane = np.ascontiguousarray(plane).reshape(-1)
            # One array type for the compiled join's tuple: read-only planes (views of bytes) are copied.
            planes.append(plane if plane.flags.writeable else plane.copy())
        stacked = np.empty(spec.size * itemsize, dtype=np.uint8)
        # One compiled pass interleaves the planes and undoes the rotation: no strided copies, no temporaries.
        if itemsize == 4:
            join_planes4(*planes, mode == "rotate", stacked.view("<u4"))
        elif itemsize == 2:
            join_planes2(*planes, mode == "rotate", stacked.view("<u2"))
        else:
            join_planes(tuple(planes), mode == "rotate", stacked)
        return stacked.view(_UINT[itemsize]).reshape(spec.shape).view(spec.dtype)

    def decode_cost(self, spec: ArraySpec, coded: int = 0) -> DecodeCost:
        """The planes are stacked into the output, ``rotate`` undone on the way (one compiled pass,
        no temporaries); the bound declared is still that of the 1.0 decoder, which undid the
        rotation in place in blocks of :data:`ROTATE_BLOCK` words (two temporaries), so rule
        4.8.1 accepts and refuses the very same files."""
        return linear_cost(spec.size, passes=4, work=2 * ROTATE_BLOCK * spec.dtype.itemsize if self.mode == "rotate" else 0)

    def part_specs(self, spec: ArraySpec) -> dict[str, ArraySpec]:
        """``plane0`` .. ``plane{itemsize-1}``: uint8, the tensor's shape."""
        return {f"plane{i}": ArraySpec(np.dtype("|u1"), spec.shape) for i in range(spec.dtype.itemsize)}


def _auto_mode(words: np.ndarray, rotated: np.ndarray | None, spec: ArraySpec) -> str:
    """``rotate`` for floats unless ``split`` is estimated strictly smaller; ``split`` for integers.

    Both splits' byte counts come from one compiled pass over *words* (the rotated words are
    never made); *rotated* is accepted for the older callers and ignored.
    """
    if spec.dtype.str not in FLOAT_DTYPES:
        return "split"
    from ._huffman_kernels import split_and_rotated_histograms, split_and_rotated_histograms4

    flat = np.ascontiguousarray(words).reshape(-1)
    if words.dtype.itemsize == 4:  # unrolled on whole words: the float32 case, the common one
        split, rotate = split_and_rotated_histograms4(flat.view("<u4"))
    else:
        split, rotate = split_and_rotated_histograms(flat.view(np.uint8), words.dtype.itemsize)
    estimate = {name: sum(min(entropy_bound(c), 8.0 * words.size) for c in counts) for name, counts in (("split", split), ("rotate", rotate))}
    return "split" if estimate["split"] < estimate["rotate"] else "rotate"


def _split(words: np.ndarray, rotate: bool) -> list[np.ndarray]:
    """The byte planes of *words* (each rotated left by one bit first when *rotate*): one compiled
    pass writing every plane, no rotated copy of the tensor."""
    from ._huffman_kernels import split_planes, split_planes2, split_planes4

    itemsize = words.dtype.itemsize
    out = np.empty((itemsize, words.size), dtype=np.uint8)
    flat = np.ascontiguousarray(words).reshape(-1)
    if itemsize == 4:  # unrolled on whole words (float32, the common case)
        split_planes4(flat.view("<u4"), rotate, out)
    elif itemsize == 2:
        split_planes2(flat.view("<u2"), rotate, out)
    else:
        split_planes(flat.view(np.uint8), itemsize, rotate, out)
    return [out[i].reshape(words.shape) for i in range(itemsize)]
