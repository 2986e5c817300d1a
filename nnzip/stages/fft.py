"""``fft``: keep a fraction of the coefficients of a real orthonormal 2-D transform.

The tensor's ``(m, n)`` matrix view (:mod:`nnzip.stages.matrix`) is transformed to
``N = m * n`` real coefficients by an orthonormal map, so reconstruction is real
(the 2017 study kept a one-sided complex spectrum and got complex weights back) and
the Frobenius error equals the norm of the dropped coefficients:

``dct``
    ``scipy.fft.dctn(A, type=2, norm="ortho")``; coefficient ``(k, l)`` has canonical
    index ``k * n + l``.
``rfft``
    ``numpy.fft.rfft2(A, norm="ortho")``, a half spectrum ``F`` of shape
    ``(m, n // 2 + 1)``.  Its independent real numbers (exactly ``m * n``; see
    :func:`rfft_layout`) in row-major ``(k, l, re/im)`` order are the canonical
    coefficients, each multiplied by ``sqrt(2)`` when it stands for itself and its
    conjugate mirror.  That weighting makes the map orthonormal too, so "largest"
    ranks coefficients by the energy they carry and the error rule holds.

``select="low"`` keeps the first ``kept`` coefficients of a fixed low-frequency order
(:func:`low_order`) and stores no positions; ``select="largest"`` keeps the largest
magnitudes and stores their canonical positions in a ``positions`` part, coded as
``gaps`` or ``mask`` exactly as in :mod:`nnzip.stages.csr`.

See ``spec/stages/fft.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import scipy.fft

from ..errors import ConfigError
from .base import (BLOCK_ELEMENTS, PASS_OPS, ArraySpec, DecodeCost, TransformStage, check_params, config_choice, config_int, config_keys,
                   param_choice, param_fraction)
from .csr import IndexCoding, decode_positions, encode_positions, index_decode_cost, index_param, index_specs
from .matrix import (
    as_matrix,
    check_parts,
    float_part_dtype,
    fraction_count,
    matrix_shape,
    require_finite,
    require_float_input,
    require_float_spec,
    require_representable,
)

TRANSFORMS = ("dct", "rfft")
SELECTS = ("low", "largest")
#: Position codings offered for ``select="largest"`` (the csr pair has no meaning here).
POSITION_CODINGS = ("gaps", "mask")


def rfft_layout(m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(independent, weight)``, both shaped ``(m, n // 2 + 1, 2)`` over ``(k, l, re/im)``.

    Columns ``l`` with ``0 < 2 l < n`` are free: all rows, real and imaginary parts,
    weight ``sqrt(2)`` (each also stands for its mirror ``(-k, -l)``).  Columns ``l = 0``
    and, for even ``n``, ``l = n / 2`` are their own mirror, so row ``k`` there equals
    the conjugate of row ``m - k``: only rows ``0 <= k <= m / 2`` are independent;
    rows ``k = 0`` and (even ``m``) ``k = m / 2`` are real (real part only, weight 1),
    rows ``0 < k < m / 2`` keep both parts with weight ``sqrt(2)``.
    """
    half = n // 2 + 1
    independent = np.ones((m, half, 2), dtype=bool)
    weight = np.full((m, half, 2), math.sqrt(2.0))
    self_mirrored = [0] + ([n // 2] if n % 2 == 0 and n > 0 else [])
    k = np.arange(m)
    real_rows = (k == 0) | (2 * k == m)
    for l in self_mirrored:
        independent[:, l, :] = (2 * k <= m)[:, None]  # rows above m / 2 are mirrors
        independent[real_rows, l, 1] = False
        weight[real_rows, l, 0] = 1.0
    return independent, weight


def forward(matrix: np.ndarray, transform: str) -> np.ndarray:
    """The ``m * n`` canonical coefficients of a float64 ``(m, n)`` matrix."""
    m, n = matrix.shape
    if matrix.size == 0:
        return np.zeros(0)
    if transform == "dct":
        return scipy.fft.dctn(matrix, type=2, norm="ortho").reshape(-1)
    spectrum = np.fft.rfft2(matrix, norm="ortho")
    independent, weight = rfft_layout(m, n)
    return (np.stack([spectrum.real, spectrum.imag], axis=-1) * weight)[independent]


def inverse(coefficients: np.ndarray, m: int, n: int, transform: str) -> np.ndarray:
    """The real float64 ``(m, n)`` matrix whose canonical coefficients are *coefficients*."""
    coefficients = np.asarray(coefficients, dtype=np.float64).reshape(-1)
    out = np.empty((m, n))
    rebuild(np.arange(m * n, dtype=np.int64), coefficients, m, n, transform, out)
    return out


def rebuild(positions: np.ndarray, values: np.ndarray, m: int, n: int, transform: str, out: np.ndarray) -> None:
    """Write into *out* (``(m, n)``, any float dtype) the inverse transform of the coefficients
    *values* at canonical *positions* (all others zero), block by block.

    The algorithm (``spec/stages/fft.md``, "Decoding"): the coefficients are scattered into
    one float64 (``dct``) or complex128 (``rfft``) spectrum; the 1-D inverse runs along
    axis 0 on blocks of columns, in place, then along axis 1 on blocks of rows, each row
    block cast straight into *out*.  Every 1-D transform is computed on its own line, so
    the result does not depend on the block sizes (:data:`~nnzip.stages.base.BLOCK_ELEMENTS`);
    for ``rfft`` it is bit for bit ``numpy.fft.irfft2``, which runs the same two passes.
    """
    if m * n == 0:
        return
    if transform == "dct":
        spectrum = np.zeros(m * n)
        spectrum[positions] = values
        spectrum = spectrum.reshape(m, n)
        column_pass = lambda block: scipy.fft.idct(block, type=2, norm="ortho", axis=0)  # noqa: E731
        row_pass = lambda block: scipy.fft.idct(block, type=2, norm="ortho", axis=1)  # noqa: E731
    else:
        spectrum = _rfft_spectrum(positions, values, m, n)
        column_pass = lambda block: np.fft.ifft(block, axis=0, norm="ortho")  # noqa: E731
        row_pass = lambda block: np.fft.irfft(block, n=n, axis=1, norm="ortho")  # noqa: E731
    width = spectrum.shape[1]
    cols = max(1, BLOCK_ELEMENTS // m)
    for j in range(0, width, cols):
        spectrum[:, j:j + cols] = column_pass(spectrum[:, j:j + cols])
    rows = max(1, BLOCK_ELEMENTS // width)
    for i in range(0, m, rows):
        out[i:i + rows] = row_pass(spectrum[i:i + rows])


def _rfft_spectrum(positions: np.ndarray, values: np.ndarray, m: int, n: int) -> np.ndarray:
    """The complex half spectrum ``(m, n // 2 + 1)`` holding the canonical coefficients given.

    Each coefficient is divided by its weight (:func:`rfft_layout`), and the mirrored rows
    of the self-mirrored columns are filled with conjugates.
    """
    half = n // 2 + 1
    independent = _independent(m, n)
    grid = np.flatnonzero(independent)[positions]  # flat index into (k, l, re/im)
    del independent
    k, rest = np.divmod(grid, 2 * half)
    l, part = np.divmod(rest, 2)
    self_mirrored = (l == 0) | ((n % 2 == 0) & (l == n // 2))
    unit = self_mirrored & ((k == 0) | (2 * k == m)) & (part == 0)
    spectrum = np.zeros((m, half), dtype=np.complex128)
    spectrum.view(np.float64).reshape(-1)[grid] = values / np.where(unit, 1.0, math.sqrt(2.0))
    mirrored = np.flatnonzero(2 * np.arange(m) > m)
    for column in [0] + ([n // 2] if n % 2 == 0 else []):
        spectrum[mirrored, column] = np.conj(spectrum[m - mirrored, column])
    return spectrum


def _independent(m: int, n: int) -> np.ndarray:
    """The ``independent`` mask of :func:`rfft_layout`, without its weights."""
    half = n // 2 + 1
    independent = np.ones((m, half, 2), dtype=bool)
    k = np.arange(m)
    for l in [0] + ([n // 2] if n % 2 == 0 and n > 0 else []):
        independent[:, l, :] = (2 * k <= m)[:, None]
        independent[(k == 0) | (2 * k == m), l, 1] = False
    return independent


def decode_work(m: int, n: int, kept: int, transform: str) -> int:
    """Bytes of temporaries :func:`rebuild` holds besides its positions, values and output."""
    block = 32 * max(BLOCK_ELEMENTS, m, n)  # one block in, one out, and pocketfft's copies
    if transform == "dct":
        return 8 * m * n + block
    half = n // 2 + 1
    # spectrum, then at the scatter the mask and the grid index of every independent entry.
    return 16 * m * half + 2 * m * half + 8 * m * n + 48 * kept + block


def transform_ops(m: int, n: int) -> int:
    """Operations of the two inverse passes (``32 N log2 N``, measured ~23 for pocketfft)."""
    size = max(m * n, 2)
    return 32 * size * max(1, math.ceil(math.log2(size))) + PASS_OPS * 2 * size


def sort_ops(size: int) -> int:
    """Operations of a stable argsort of *size* keys (``64 N log2 N``, measured ~57 here)."""
    size = max(size, 2)
    return 64 * size * max(1, math.ceil(math.log2(size)))


def low_order(m: int, n: int, transform: str) -> np.ndarray:
    """Canonical indices sorted lowest frequency first (a stable sort, ties by canonical index).

    The key of a coefficient at spectrum index ``(k, l)`` is ``f * n + l * m``, the
    L1 length of its frequency normalised by the matrix sides (``k/m + l/n``, times
    ``m * n``), with ``f = k`` for ``dct`` and ``f = min(k, m - k)`` for ``rfft``.
    The real and imaginary part of one rfft coefficient share a key.
    """
    if transform == "dct":
        keys = (np.arange(m, dtype=np.int64) * n)[:, None] + (np.arange(n, dtype=np.int64) * m)[None, :]
        keys = keys.reshape(-1)
    else:
        half = n // 2 + 1
        k = np.arange(m, dtype=np.int64)
        rows = np.minimum(k, m - k) * n
        keys = np.repeat((rows[:, None] + np.arange(half, dtype=np.int64)[None, :] * m).reshape(-1), 2)
        keys = keys[_independent(m, n).reshape(-1)]
    return np.argsort(keys, kind="stable")


#: Bytes per coefficient :func:`low_order` holds at its peak: keys, the sorted order and
#: the sort's merge buffer (for ``rfft`` also the key grid and the mask before selection).
LOW_ORDER_BYTES = 24


@dataclass(frozen=True)
class FFT(TransformStage):
    """Keep ``keep`` of the coefficients of a ``dct`` or ``rfft``; params ``transform``, ``keep``, ``select``."""

    id = "fft"
    #: The kept coefficients.
    quantizable = ("coeffs",)
    #: ``"dct"`` or ``"rfft"``.
    transform: str
    #: ``"low"`` or ``"largest"``.
    select: str
    #: Coefficients kept, ``0..size``.
    kept: int
    #: ``select="largest"`` only: how the positions are stored.
    index: IndexCoding | None = None

    @classmethod
    def from_config(cls, config: Any, spec: ArraySpec) -> "FFT":
        """Require a float tensor, known ``transform``/``select``, ``kept`` in ``0..size``, valid position fields."""
        config_keys(config, {"transform", "select", "kept", "index_coding", "index_bits", "codes"}, cls.id)
        require_float_spec(cls.id, spec)
        transform = config_choice(config, "transform", TRANSFORMS)
        select = config_choice(config, "select", SELECTS)
        kept = config_int(config, "kept", 0, spec.size)
        if select == "low":
            config_keys(config, {"transform", "select", "kept"}, cls.id)
            return cls(transform, select, kept)
        return cls(transform, select, kept, IndexCoding.from_config(cls.id, config, kept, spec.size, POSITION_CODINGS))

    def to_config(self) -> dict:
        """``{"transform", "select", "kept"}``, then for ``largest`` the position fields."""
        config = {"transform": self.transform, "select": self.select, "kept": self.kept}
        return config if self.index is None else {**config, **self.index.to_config()}

    @classmethod
    def encode(cls, data: np.ndarray, spec: ArraySpec, params: Mapping[str, Any]) -> tuple[dict, dict]:
        """Transform, select and store ``coeffs`` (and ``positions`` for ``largest``)."""
        require_float_input(cls.id, spec)
        check_params(cls.id, params, {"transform", "keep", "select", "index_coding", "index_bits"})
        transform = param_choice(cls.id, params, "transform", TRANSFORMS, TRANSFORMS[0], label="parameter 'transform'")
        select = param_choice(cls.id, params, "select", SELECTS, SELECTS[0], label="parameter 'select'")
        if "keep" not in params:
            raise ConfigError("fft: the parameter 'keep' (fraction of coefficients kept) is required")
        require_finite(cls.id, data)
        m, n = matrix_shape(spec.shape)
        kept = fraction_count(param_fraction(cls.id, params, "keep"), m * n)
        coefficients = forward(as_matrix(data), transform)
        dtype = float_part_dtype(spec)
        if select == "low":
            if {"index_coding", "index_bits"} & set(params):
                raise ConfigError("fft: 'index_coding' and 'index_bits' apply only to select='largest'")
            coeffs = require_representable(cls.id, {"coeffs": coefficients[low_order(m, n, transform)[:kept]]}, dtype)
            return coeffs, cls(transform, select, kept).to_config()
        coding, bits = index_param(cls.id, params, "index_coding", POSITION_CODINGS)
        positions = np.sort(np.argsort(-np.abs(coefficients), kind="stable")[:kept])
        fields, arrays = encode_positions(positions, m, n, coding, bits, POSITION_CODINGS)
        parts = require_representable(cls.id, {"coeffs": coefficients[positions]}, dtype)
        return {**parts, "positions": arrays[0]}, cls(transform, select, kept, IndexCoding(**fields)).to_config()

    def decode(self, parts: Mapping[str, np.ndarray], spec: ArraySpec) -> np.ndarray:
        """Scatter the coefficients and invert the transform block by block into the tensor's dtype."""
        checked = check_parts(self.id, parts, self.part_specs(spec))
        m, n = matrix_shape(spec.shape)
        kept, transform = self.kept, self.transform
        if self.select == "low":
            positions = low_order(m, n, transform)[:kept].copy()  # the copy frees the full order
        else:
            positions = decode_positions(self.index, [checked["positions"]], kept, m, n)
        out = np.empty((m, n), dtype=spec.dtype)
        with np.errstate(over="ignore"):  # a hostile file may name values beyond the dtype: they become inf
            rebuild(positions, checked["coeffs"].astype(np.float64), m, n, transform, out)
        return out.reshape(spec.shape)

    def decode_cost(self, spec: ArraySpec, coded: int = 0) -> DecodeCost:
        """Positions (``select`` rule), the float64 values, then :func:`rebuild`'s spectrum and blocks."""
        m, n = matrix_shape(spec.shape)
        kept, transform = self.kept, self.transform
        if self.select == "low":
            positions = DecodeCost(LOW_ORDER_BYTES * m * n + 8 * kept, sort_ops(m * n))
        else:
            positions = index_decode_cost(self.index, kept, m, n)
        rebuilding = 8 * kept + 8 * kept + decode_work(m, n, kept, transform)  # positions, values, spectrum
        return DecodeCost(max(positions.work, rebuilding), positions.ops + transform_ops(m, n))

    def part_specs(self, spec: ArraySpec) -> dict[str, ArraySpec]:
        """``coeffs`` (kept,), then ``positions`` for ``select="largest"``."""
        specs = {"coeffs": ArraySpec(float_part_dtype(spec), (self.kept,))}
        if self.select == "largest":
            m, n = matrix_shape(spec.shape)
            specs["positions"] = index_specs(self.index, self.kept, m, n)[0]
        return specs
