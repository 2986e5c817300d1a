"""``svd``: a truncated singular value decomposition of the tensor's matrix view.

The tensor's ``(m, n)`` matrix view (:mod:`nnzip.stages.matrix`) ``A = U S V^T`` is
cut to its ``r`` largest singular values and stored as three parts:

* ``u`` = ``U_r``, shape ``(m, r)``, orthonormal columns;
* ``s`` = ``S_r``, shape ``(r,)``, decreasing and non-negative;
* ``vt`` = ``V_r^T``, shape ``(r, n)``, orthonormal rows.

By the Eckart-Young theorem ``u diag(s) vt`` is the best rank-``r`` approximation,
with Frobenius error ``sqrt(sum of the dropped s**2)``.

Why three parts and not the two ``us = U_r diag(S_r)``, ``vt``: measured on the
sample MLP's 784x64 kernel and on a trained-like synthetic 784x256 matrix with
k-means on each factor, keeping the scale out of the factors left 6-31% less
*added* error at 3, 4 and 5 bits for ranks >= 16 (``spec/stages/svd.md``, Notes).  The columns of
``u`` all have unit norm, so one codebook fits them all; in ``us`` they are scaled
by ``s`` and the codebook spends its levels on the few large columns.  The price,
``r`` floats and one small blob, is negligible.  ``s`` is not listed as
quantizable: quantizing ``r`` numbers saves nothing and distorts whole columns.

See ``spec/stages/svd.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError, NoSaving
from .base import (BLOCK_ELEMENTS, ArraySpec, DecodeCost, TransformStage, check_params, config_int, config_keys, exactly_one, linear_cost,
                   param_fraction, param_int)
from .matrix import (
    as_matrix,
    check_parts,
    float_part_dtype,
    matrix_shape,
    require_finite,
    require_float_input,
    require_float_spec,
    require_representable,
)


@dataclass(frozen=True)
class SVD(TransformStage):
    """Low-rank factorisation ``A ~ u diag(s) vt``; params ``rank`` or ``energy``."""

    id = "svd"
    #: The two factors; ``s`` stays exact (r numbers, each scaling a whole column).
    quantizable = ("u", "vt")
    #: Terms kept, ``0..min(m, n)``.
    rank: int

    @classmethod
    def from_config(cls, config: Any, spec: ArraySpec) -> "SVD":
        """Require a float tensor and ``rank`` in ``0..min(m, n)``.

        The space rule is the encoder's policy, not a format rule: a decoder accepts
        any rank up to ``min(m, n)``, which bounds the parts by the tensor's size.
        """
        config_keys(config, {"rank"}, cls.id)
        require_float_spec(cls.id, spec)
        m, n = matrix_shape(spec.shape)
        return cls(config_int(config, "rank", 0, min(m, n)))

    # --- planner helpers ---------------------------------------------------------------

    @classmethod
    def saves_space(cls, spec: ArraySpec, rank: int) -> bool:
        """True when ``rank * (m + n + 1) < m * n``: the parts hold fewer numbers than the matrix.

        ``m + n + 1`` counts exactly what one rank costs: a column of ``u``, a row of
        ``vt`` and one singular value.
        """
        m, n = matrix_shape(spec.shape)
        return rank * (m + n + 1) < m * n

    @classmethod
    def rank_for_energy(cls, singular_values: np.ndarray, energy: float) -> int:
        """The smallest ``r`` with ``sum(s[:r]**2) >= energy * sum(s**2)`` (0 for an all-zero matrix).

        *singular_values* must be sorted in decreasing order, as ``numpy.linalg.svd`` gives them.
        """
        squares = np.asarray(singular_values, dtype=np.float64) ** 2
        cumulative = np.concatenate(([0.0], np.cumsum(squares)))
        total = cumulative[-1]
        if total <= 0.0:
            return 0
        # The last cumulative sum is the total, so the search always lands in 0..len(s).
        return int(np.searchsorted(cumulative, float(energy) * total, side="left"))

    # --- the stage -----------------------------------------------------------------------

    @classmethod
    def encode(cls, data: np.ndarray, spec: ArraySpec, params: Mapping[str, Any]) -> tuple[dict, dict]:
        """Factor *data*; ConfigError when the asked rank is invalid, NoSaving when it would not save space.

        The optional parameter ``decomposition`` — ``(u, s, vt)``, the thin SVD of the
        matrix view of *data* (at least ``rank`` terms, ``s`` decreasing) — lets a caller
        that factors the same matrix for many ranks do it once; it is never stored.
        """
        require_float_input(cls.id, spec)
        check_params(cls.id, params, {"rank", "energy", "decomposition"})
        exactly_one(cls.id, params, "rank", "energy")
        require_finite(cls.id, data)
        m, n = matrix_shape(spec.shape)
        matrix = as_matrix(data)
        if "decomposition" in params:
            u, s, vt = _given_decomposition(params["decomposition"], m, n)
        elif matrix.size:
            u, s, vt = np.linalg.svd(matrix, full_matrices=False)
        else:
            u, s, vt = np.zeros((m, 0)), np.zeros(0), np.zeros((0, n))
        rank = cls._rank(params, s, min(m, n))
        if not cls.saves_space(spec, rank):
            raise NoSaving(
                f"svd: rank {rank} stores {rank * (m + n + 1)} numbers for a {m}x{n} matrix of {m * n}; "
                "it would not save space"
            )
        u, vt = _fix_signs(u[:, :rank], vt[:rank])
        dtype = float_part_dtype(spec)
        return require_representable(cls.id, {"u": u, "s": s[:rank], "vt": vt}, dtype), cls(rank).to_config()

    @classmethod
    def _rank(cls, params: Mapping[str, Any], s: np.ndarray, max_rank: int) -> int:
        """The rank the params ask for, checked against ``0..min(m, n)``."""
        if "energy" in params:
            return cls.rank_for_energy(s, param_fraction(cls.id, params, "energy", lo_open=True))
        rank = params.get("rank")
        if type(rank) is int and rank > max_rank:
            # An integer beyond min(m, n) is a fine rank, only not for this shape: it could never save space.
            raise NoSaving(f"svd: parameter 'rank' must be an integer in 0..{max_rank} (min(m, n)), got {rank!r}")
        return param_int(cls.id, params, "rank", 0, max_rank, expected=f"an integer in 0..{max_rank} (min(m, n))", label="parameter 'rank'")

    def decode(self, parts: Mapping[str, np.ndarray], spec: ArraySpec) -> np.ndarray:
        """``(u * s) @ vt`` in float64, a block of rows at a time, cast to the tensor's dtype.

        Blocks of ``BLOCK_ELEMENTS // n`` rows keep the float64 product a few MiB; BLAS may
        round a block's dot products differently from a whole-matrix product, within the
        tolerance ``spec/stages/svd.md`` states.
        """
        checked = check_parts(self.id, parts, self.part_specs(spec))
        m, n = matrix_shape(spec.shape)
        scaled = checked["u"].astype(np.float64)
        scaled *= checked["s"].astype(np.float64)  # in place: one float64 copy of u, not two
        vt = checked["vt"].astype(np.float64)
        out = np.empty((m, n), dtype=spec.dtype)
        rows = max(1, BLOCK_ELEMENTS // max(n, 1))
        with np.errstate(over="ignore"):  # a hostile file may name products beyond the dtype: they become inf
            for i in range(0, m, rows):
                out[i:i + rows] = scaled[i:i + rows] @ vt
        return out.reshape(spec.shape)

    def decode_cost(self, spec: ArraySpec, coded: int = 0) -> DecodeCost:
        """float64 copies of ``u diag(s)`` and ``vt``, one block of rows; ``m n r`` multiply-adds."""
        m, n = matrix_shape(spec.shape)
        rank = self.rank
        work = 8 * (m * rank + rank * n) + 16 * max(BLOCK_ELEMENTS, n)
        return DecodeCost(work, m * n * rank + linear_cost(m * n + m * rank + rank * n, passes=2).ops)

    def part_specs(self, spec: ArraySpec) -> dict[str, ArraySpec]:
        """``u`` (m, r), ``s`` (r,) and ``vt`` (r, n), all of :func:`~nnzip.stages.matrix.float_part_dtype`."""
        m, n = matrix_shape(spec.shape)
        rank = self.rank
        dtype = float_part_dtype(spec)
        return {"u": ArraySpec(dtype, (m, rank)), "s": ArraySpec(dtype, (rank,)), "vt": ArraySpec(dtype, (rank, n))}


def _fix_signs(u: np.ndarray, vt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip each singular pair so the largest-magnitude entry of its ``vt`` row is positive.

    An SVD is unique only up to the sign of each pair; fixing it makes the stored
    bytes independent of which sign LAPACK happened to return.
    """
    if vt.size == 0:
        return u, vt
    pivots = vt[np.arange(vt.shape[0]), np.argmax(np.abs(vt), axis=1)]
    signs = np.where(pivots < 0, -1.0, 1.0)
    return u * signs, vt * signs[:, None]



def _given_decomposition(value: Any, m: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check a caller's ``(u, s, vt)`` against the matrix shape."""
    try:
        u, s, vt = (np.asarray(v, dtype=np.float64) for v in value)
    except (TypeError, ValueError):
        raise ConfigError("svd: 'decomposition' must be a (u, s, vt) triple") from None
    k = s.shape[0] if s.ndim == 1 else -1
    if u.shape != (m, k) or vt.shape != (k, n) or np.any(np.diff(s) > 0):
        raise ConfigError(f"svd: 'decomposition' must be u ({m}, k), s (k,) decreasing, vt (k, {n})")
    return u, s, vt
