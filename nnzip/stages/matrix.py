"""How the matrix transforms (``svd``, ``csr``, ``fft``) view a tensor, and what they share.

The matrix view
---------------
A tensor of shape ``shape`` is seen as the C-order (row-major) matrix of shape
``(m, n)`` given by :func:`matrix_shape`:

=====================  ==============================  ==========================
tensor                 shape                           matrix ``(m, n)``
=====================  ==============================  ==========================
0-d scalar             ``()``                          ``(1, 1)``
1-D (bias, ...)        ``(n,)``                        ``(1, n)``
2-D (Dense kernel)     ``(m, n)``                      ``(m, n)``
Conv2D kernel, HWIO    ``(kh, kw, in, out)``           ``(kh*kw*in, out)``
any N-D, N >= 2        ``(d0, ..., dN-1)``             ``(d0*...*dN-2, dN-1)``
=====================  ==============================  ==========================

The N-D rule is the only rule: the last axis becomes the columns, all others are
flattened into rows.  For Keras kernels the last axis is the output unit, so each
column is everything one output unit reads (for HWIO Conv2D, one filter), which is
what low-rank factorisation and row-wise sparsity want.  No data moves: the view is
a ``reshape`` of the C-order array, so flat position ``p`` of the tensor is matrix
entry ``(p // n, p % n)``.  A 1-D tensor is a single row rather than refused, so
every stage accepts every float tensor; ``svd`` still declines it through its
space test (rank ``r >= 1`` never saves space on one row).

Shared conventions
------------------
* Only float tensors (``<f2``, ``<f4``, ``<f8``) are accepted: the transforms are
  lossy approximations whose parts are meant for float quantizers.
* Float parts are ``<f8`` for ``<f8`` tensors and ``<f4`` otherwise
  (:func:`float_part_dtype`); arithmetic is done in float64.
* Decoders check every part against ``part_specs`` (:func:`check_parts`) before
  using it, so a hostile container cannot feed a wrongly shaped array.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError, FormatError
from .base import ArraySpec, LossyRangeError

#: The tensor element types the matrix transforms accept.
FLOAT_DTYPES = ("<f2", "<f4", "<f8")


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The ``(m, n)`` matrix view of a tensor *shape* (see the module docstring)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, int(shape[0])
    return math.prod(shape[:-1]), int(shape[-1])


def as_matrix(data: np.ndarray) -> np.ndarray:
    """*data* viewed as its ``(m, n)`` matrix, converted to float64 for the arithmetic."""
    return np.asarray(data, dtype=np.float64).reshape(matrix_shape(np.shape(data)))


def is_float(spec: ArraySpec) -> bool:
    """True when *spec* has one of :data:`FLOAT_DTYPES`."""
    return spec.dtype.str in FLOAT_DTYPES


def require_float_input(stage_id: str, spec: ArraySpec) -> None:
    """Encoder check: raise ConfigError unless the tensor is float."""
    if not is_float(spec):
        raise ConfigError(f"{stage_id}: only float tensors can be transformed, got {spec.dtype}")


def require_finite(stage_id: str, data: np.ndarray) -> None:
    """Encoder check: raise :class:`~nnzip.stages.base.LossyRangeError` for NaN or infinite values.

    A lossy transform cannot approximate them (the error would be NaN); planners catch the
    error and store the tensor losslessly.
    """
    if not np.isfinite(np.asarray(data)).all():
        raise LossyRangeError(f"{stage_id}: the tensor holds NaN or infinity; store it losslessly")


def require_representable(stage_id: str, parts: Mapping[str, np.ndarray], dtype: np.dtype) -> dict[str, np.ndarray]:
    """Encoder check: the float64 *parts* cast to *dtype*, or LossyRangeError if one overflows."""
    out = {}
    with np.errstate(over="ignore"):
        for name, values in parts.items():
            cast = np.asarray(values).astype(dtype)
            if not np.isfinite(cast).all():
                raise LossyRangeError(f"{stage_id}: part {name!r} overflows {dtype} (values near the type's maximum); store the tensor losslessly")
            out[name] = cast
    return out


def require_float_spec(stage_id: str, spec: ArraySpec) -> None:
    """Decoder check (from ``from_config``): raise FormatError unless the tensor is float."""
    if not is_float(spec):
        raise FormatError(f"{stage_id}: a float tensor is required, the file declares {spec.dtype}")


def float_part_dtype(spec: ArraySpec) -> np.dtype:
    """dtype of the float parts for a tensor of *spec*: ``<f8`` for float64 tensors, else ``<f4``."""
    return np.dtype("<f8") if spec.dtype.str == "<f8" else np.dtype("<f4")


def fraction_count(fraction: float, size: int) -> int:
    """``floor(fraction * size + 0.5)`` in float64: the count a fraction parameter names.

    Round half up (not Python's round-half-even) so the rule is one line in a spec.
    """
    return min(size, max(0, int(math.floor(float(fraction) * size + 0.5))))


def check_parts(stage_id: str, parts: Mapping[str, Any], specs: Mapping[str, ArraySpec]) -> dict[str, np.ndarray]:
    """The parts as arrays, after checking each one's presence, dtype and shape against *specs*."""
    if not isinstance(parts, Mapping) or set(parts) != set(specs):
        names = sorted(parts) if isinstance(parts, Mapping) else parts
        raise FormatError(f"{stage_id}: expected parts {list(specs)}, got {names}")
    out = {}
    for name, spec in specs.items():
        array = np.asarray(parts[name])
        if array.dtype != spec.dtype or tuple(array.shape) != spec.shape:
            raise FormatError(
                f"{stage_id}: part {name!r} is {array.dtype.str}{list(array.shape)}, expected {spec.dtype.str}{list(spec.shape)}"
            )
        out[name] = array
    return out
