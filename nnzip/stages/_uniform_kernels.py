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


# --- dependent quantization (the ``dq`` stage, spec/stages/dq.md) ---------------------------------

#: The four-state machine of ``dq``: ``NEXT[state][k & 1]``; states 0 and 1 use quantizer Q0
#: (values ``2k·Δ``), states 2 and 3 quantizer Q1 (values ``(2k - sgn k)·Δ``).
DQ_NEXT = np.array([[0, 2], [2, 0], [1, 3], [3, 1]], dtype=np.int64)
#: ``DQ_NEXT`` packed two bits per ``(state, parity)``: ``(DQ_PACKED >> 2 * (2 * state + parity)) & 3``.
DQ_PACKED = sum(int(DQ_NEXT[s, p]) << (2 * (2 * s + p)) for s in range(4) for p in range(2))
#: Elements per trellis block: the encoder decides a block's path at its end; 17 bytes per
#: element of a block (back-pointers and candidate levels: about 1 MiB), whatever the tensor's size.
DQ_BLOCK = 1 << 16
#: ``DQ_PRED[s][j]``, ``DQ_PARITY[s][j]``: state *s*'s two predecessors and the parity of the level
#: leading from each (the inverse of :data:`DQ_NEXT`).
DQ_PRED = np.array([[0, 1], [2, 3], [0, 1], [2, 3]], dtype=np.int64)
DQ_PARITY = np.array([[0, 1], [0, 1], [1, 0], [1, 0]], dtype=np.int64)


@kernel
def _dq_value(k, quantizer):
    """The level's value in steps: ``2k`` (Q0) or ``2k - sgn(k)`` (Q1)."""
    if quantizer == 0 or k == 0:
        return 2.0 * k
    return 2.0 * k - 1.0 if k > 0 else 2.0 * k + 1.0


@kernel
def _dq_distances(values, begin, end, step, distances, candidates):
    """For elements ``begin .. end - 1``: the squared distances (in steps) to the nearest even and odd
    level of Q0 and of Q1, and those levels (``candidates[r] = Q0 even, Q0 odd, Q1 even, Q1 odd``).

    Branch-free and independent per element, so the compiler vectorises it; the serial search
    (:func:`dq_encode`) then costs a few additions per element.
    """
    for i in range(begin, end):
        r = i - begin
        t = np.float64(values[i]) / step
        # Q0: the levels b and b + 1 around t, values 2b and 2b + 2
        b0 = np.floor(t * 0.5)
        da = t - 2.0 * b0
        db = da - 2.0
        da, db = da * da, db * db
        odd0 = np.float64(b0 - 2.0 * np.floor(b0 * 0.5))  # 1 when b is odd: then b + 1 is the even level
        # Q1: the levels b and b + 1 around t (values 2k - sgn k: odd multiples and zero);
        # t > 0: 2b - 1 (0 for b = 0) and 2b + 1; else 2b + 1 and 2b + 3 (0 for b = -1)
        positive = np.float64(t > 0)
        sign = 2.0 * positive - 1.0
        b1 = np.floor((t + sign) * 0.5)
        low_value = (2.0 * b1 - sign) * (1.0 - positive * np.float64(b1 == 0.0))
        high_value = (2.0 * b1 + 2.0 - sign) * (1.0 - (1.0 - positive) * np.float64(b1 == -1.0))
        dc = t - low_value
        dd = high_value - t
        dc, dd = dc * dc, dd * dd
        odd1 = np.float64(b1 - 2.0 * np.floor(b1 * 0.5))
        distances[r, 0] = da + odd0 * (db - da)
        distances[r, 1] = db + odd0 * (da - db)
        distances[r, 2] = dc + odd1 * (dd - dc)
        distances[r, 3] = dd + odd1 * (dc - dd)
        candidates[r, 0] = np.int32(b0 + odd0)
        candidates[r, 1] = np.int32(b0 + 1.0 - odd0)
        candidates[r, 2] = np.int32(b1 + odd1)
        candidates[r, 3] = np.int32(b1 + 1.0 - odd1)


@kernel
def dq_encode(values, step, levels):
    """Levels ``k`` of *values* by a four-state Viterbi search of least squared error (the trellis of
    :data:`DQ_NEXT`), decided block by block; returns ``(lowest, highest)`` level.

    Only the nearest level of each parity on each grid can lie on a best path (a state's
    successor depends on the level's parity alone), so each element costs four distances
    (:func:`_dq_distances`) and eight additions.  At a block's end the best state's path is
    traced back (one bit per state and element says which of its two predecessors it came
    from) and the next block starts from that state alone.
    """
    n = values.size
    if n == 0:
        return 0, 0
    inf = np.inf
    size = min(n, DQ_BLOCK)
    back = np.empty(size, dtype=np.uint8)
    distances = np.empty((size, 4), dtype=np.float64)
    candidates = np.empty((size, 4), dtype=np.int32)
    pred, parities = DQ_PRED, DQ_PARITY
    c0, c1, c2, c3 = 0.0, inf, inf, inf
    low, high = np.int64(1) << 62, -(np.int64(1) << 62)
    for begin in range(0, n, DQ_BLOCK):
        end = min(n, begin + DQ_BLOCK)
        _dq_distances(values, begin, end, step, distances, candidates)
        for r in range(end - begin):
            de0, do0, de1, do1 = distances[r, 0], distances[r, 1], distances[r, 2], distances[r, 3]
            # state 0 <- (0, even) | (1, odd); 2 <- (0, odd) | (1, even); 1 <- (2, even) | (3, odd); 3 <- (2, odd) | (3, even)
            a0, b0 = c0 + de0, c1 + do0
            a2, b2 = c0 + do0, c1 + de0
            a1, b1 = c2 + de1, c3 + do1
            a3, b3 = c2 + do1, c3 + de1
            back[r] = np.int64(a0 > b0) | (np.int64(a1 > b1) << 1) | (np.int64(a2 > b2) << 2) | (np.int64(a3 > b3) << 3)
            c0 = a0 if a0 <= b0 else b0
            c1 = a1 if a1 <= b1 else b1
            c2 = a2 if a2 <= b2 else b2
            c3 = a3 if a3 <= b3 else b3
        best, cost = 0, c0
        if c1 < cost:
            best, cost = 1, c1
        if c2 < cost:
            best, cost = 2, c2
        if c3 < cost:
            best, cost = 3, c3
        s = best
        for i in range(end - 1, begin - 1, -1):
            second = (back[i - begin] >> s) & 1
            previous = pred[s, second]
            k = np.int64(candidates[i - begin, 2 * (previous >> 1) + parities[s, second]])
            levels[i] = k
            low = min(low, k)
            high = max(high, k)
            s = previous
        c0, c1, c2, c3 = inf, inf, inf, inf
        if best == 0:
            c0 = 0.0
        elif best == 1:
            c1 = 0.0
        elif best == 2:
            c2 = 0.0
        else:
            c3 = 0.0
    return low, high


@kernel
def dq_decode(codes, offset, step, out):
    """``out[i]`` = the value of level ``codes[i] + offset`` under the state machine, rounded to ``out``'s dtype."""
    s = 0
    for i in range(codes.size):
        k = np.int64(codes[i]) + offset
        value = 2.0 * k
        if s >= 2 and k != 0:  # Q1: one step toward zero
            value -= 1.0 if k > 0 else -1.0
        out[i] = value * step
        s = (DQ_PACKED >> (2 * (2 * s + (k & 1)))) & 3
