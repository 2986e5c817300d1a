"""Compiled loops of the ``uniform`` stage (see ``spec/stages/uniform.md``).

* :func:`quantize` -- codes ``rint(x / step) - offset`` of a float32/float64 array, in one pass
  straight into the ``<u2`` output (numpy needs a float64 and an int64 temporary per block and
  three passes);
* :func:`dequantize` -- ``(code + offset) * step`` in binary64, rounded to the output's dtype,
  in one pass straight into the output.

Each element's arithmetic is the spec's, in the same order and in binary64 (numba's ``np.rint``
rounds half to even like numpy's), so the codes and the decoded values are bit for bit those of
the numpy blocks they replace (checked in ``tests/test_lossy_speed_paths.py``).  float16
outputs and inputs stay on the numpy path: numba has no float16 arithmetic.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel


@kernel
def quantize(values, step, offset, out):
    """``out[i] = rint(float64(values[i]) / step) - offset`` (the caller checked the range fits ``out``)."""
    for i in range(values.size):
        out[i] = np.int64(np.rint(np.float64(values[i]) / step)) - offset


@kernel
def dequantize(codes, offset, step, out):
    """``out[i] = (codes[i] + offset) * step``, computed in float64 and rounded to ``out``'s dtype."""
    for i in range(codes.size):
        out[i] = np.float64(np.int64(codes[i]) + offset) * step
