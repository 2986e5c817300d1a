"""Weighted 1-D k-means (Lloyd's algorithm) at O(k log n) per iteration.

The method the 2017 study got right, done to convergence: sort the values once
and keep prefix sums of the weights, of weight x value and of weight x value^2.
In one dimension every k-means cluster is a run of the sorted values, so an
assignment step is ``k - 1`` binary searches of the midpoints between adjacent
centroids (``np.searchsorted``), and an update step reads each cluster's weight,
sum and sum of squares off the prefix sums in O(1), vectorised over the k
clusters.  No step touches every value, except the initial sort and prefix sums.

This module is the pure algorithm; the ``kmeans`` stage (``kmeans.py``) turns
its centroids into a stored codebook and codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._jit import kernel

#: Iteration cap for the main start.  An iteration is O(k log n) (about 50 us for
#: k = 256), so the cap only guards against pathological slow creep; measured runs
#: on 2e5 values converge in 30-650 iterations.
MAX_ITER = 2000
#: Iteration cap for the equal-weight fallback start: it wins only at low bit
#: counts, where it converges within this, and creeps for thousands of
#: iterations towards a worse optimum at high ones.
FALLBACK_ITER = 300
#: The fallback runs only if the main result's SSE is above this fraction of the
#: equal-weight bins' own SSE (it then cannot beat the bins anyway).  Measured, the
#: fallback won only where the ratio was >= 0.2 (at 1-5 bits), mostly by < 1%.
FALLBACK_RATIO = 0.1
#: Inputs with at most this many values, and k * (n + 1)**2 <= DP_BUDGET, get the
#: exact optimum by dynamic programming (at most ~20 ms): on small arrays
#: (biases) Lloyd's local optima measured up to 1.7x the optimal SSE.
DP_MAX_VALUES = 256
DP_BUDGET = 1 << 23
#: Unweighted inputs with more values than this are first reduced to a histogram of narrow bins
#: (:func:`histogram_prefix`): the exact form keeps the values sorted in float64 and three float64
#: prefix sums, 40 bytes per value (1.3 GB for a 131 MB float32 tensor, 40 MiB at this size), the histogram a few MB
#: whatever the size.  Smaller inputs keep the exact form, so their codebooks are unchanged.
HISTOGRAM_VALUES = 1 << 20
#: A bin is a run of consecutive float32 values that share all but the low HISTOGRAM_DROP_BITS bits
#: of their order key: a relative width of 2**-14, and float16 values (10 mantissa bits, 13 of
#: float32's zero) never share a bin.  Measured on 5e6 Gaussian values against the exact form:
#: SSE within 2e-5 (4 bits) and 3e-4 (8 bits) of it.
HISTOGRAM_DROP_BITS = 9
#: Values below the largest magnitude / 2**HISTOGRAM_BINADES in magnitude share one bin (they are
#: a contiguous run around 0), so the bins span at most 2 * HISTOGRAM_BINADES binades whatever the
#: values: 1 M bins, 8 MB per float64 accumulator.
HISTOGRAM_BINADES = 32
#: Values read at a time while building the histogram or coding (bounded temporaries).
BLOCK_VALUES = 1 << 18


@dataclass(frozen=True)
class _Prefix:
    """Sorted values and prefix sums with a leading 0, so ``p[b] - p[a]`` sums ``a:b``."""

    x: np.ndarray  # sorted values, float64
    w: np.ndarray  # prefix sums of weights (counts when unweighted)
    wx: np.ndarray  # prefix sums of weight * value
    wxx: np.ndarray  # prefix sums of weight * value**2

    @classmethod
    def build(cls, values: np.ndarray, weights: np.ndarray | None) -> "_Prefix":
        """Sort *values* (carrying *weights* along) and take the prefix sums."""
        zero = np.zeros(1)
        if weights is None:
            # Equal values are interchangeable here (even -0.0 and 0.0 add nothing
            # to the sums), so numpy's fastest sort keeps the result exact.
            x = np.sort(values)
            counts = np.arange(x.size + 1, dtype=np.float64)  # prefix sums of unit weights
            return cls(x, counts, _prefix_sums(x), _prefix_sums(x, squared=True))
        # A stable sort keeps equal values' weights in input order, so the prefix
        # sums (and hence the result) are reproducible bit for bit.
        order = np.argsort(values, kind="stable")
        x, w = values[order], weights[order]
        return cls(
            x,
            np.concatenate([zero, np.cumsum(w)]),
            np.concatenate([zero, np.cumsum(w * x)]),
            np.concatenate([zero, np.cumsum(w * x * x)]),
        )

    def stats(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weight, weighted sum and weighted sum of squares of the runs ``lo:hi``."""
        return self.w[hi] - self.w[lo], self.wx[hi] - self.wx[lo], self.wxx[hi] - self.wxx[lo]


def _prefix_sums(x: np.ndarray, squared: bool = False) -> np.ndarray:
    """``concatenate([[0], cumsum(x)])`` (or of ``x * x``), written into one array: no tensor-sized temporaries
    beyond the result (the values are the same as concatenating, bounded memory)."""
    out = np.empty(x.size + 1, dtype=np.float64)
    out[0] = 0.0
    if squared:
        np.multiply(x, x, out=out[1:])
        np.cumsum(out[1:], out=out[1:])
    else:
        np.cumsum(x, out=out[1:])
    return out


def order_keys(values: np.ndarray) -> np.ndarray:
    """uint32 keys that sort as the values do: float32 bits with the sign bit flipped, or all bits for negatives.

    Float64 input is rounded to float32 first (a monotone map, so each key still stands for a
    contiguous range of values); -0.0 and +0.0 get adjacent keys.
    """
    bits = np.asarray(values, dtype=np.float32).view(np.uint32)
    return np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))


def histogram_prefix(values: np.ndarray) -> "_Prefix":
    """The :class:`_Prefix` of *values* reduced to bins (:data:`HISTOGRAM_DROP_BITS`), in bounded memory.

    Each occupied bin becomes one point at its mean with its count as weight, and the prefix sums
    of value and squared value are the bins' exact float64 sums, so a run of bins has the exact
    weight, mean and SSE of the values in it; clusters are runs of bins rather than of values, a
    boundary being off by at most one bin (2**-14 of a value's magnitude).  Read in blocks of
    :data:`BLOCK_VALUES`: memory is the bins' accumulators and one block.
    """
    flat = values.reshape(-1)
    largest = max(float(np.abs(flat[start:start + BLOCK_VALUES]).max()) for start in range(0, flat.size, BLOCK_VALUES))
    tiny = np.float32(largest) * np.float32(2.0**-HISTOGRAM_BINADES)
    below, above = (int(key) >> HISTOGRAM_DROP_BITS for key in order_keys(np.array([-tiny, tiny], dtype=np.float32)))
    gap = max(above - below - 2, 0)

    def bins(block: np.ndarray) -> np.ndarray:
        # The bins strictly between -tiny's and tiny's become one, those from tiny's on move down to follow it:
        # a monotone map, so every bin is still a contiguous run of the sorted values.
        raw = (order_keys(block) >> np.uint32(HISTOGRAM_DROP_BITS)).astype(np.intp)
        return np.where(raw <= below, raw, np.where(raw >= above, raw - gap, below + 1))

    first, last = (int(b) for b in bins(np.array([-largest, largest], dtype=np.float64)))
    size = last - first + 1
    counts, sums, squares = np.zeros(size), np.zeros(size), np.zeros(size)
    for start in range(0, flat.size, BLOCK_VALUES):
        block = np.asarray(flat[start:start + BLOCK_VALUES], dtype=np.float64)
        _accumulate(order_keys(block), block, HISTOGRAM_DROP_BITS, below, above, gap, first, counts, sums, squares)
    occupied = counts > 0
    counts, sums, squares = counts[occupied], sums[occupied], squares[occupied]
    zero = np.zeros(1)
    return _Prefix(sums / counts, np.concatenate([zero, np.cumsum(counts)]), np.concatenate([zero, np.cumsum(sums)]),
                   np.concatenate([zero, np.cumsum(squares)]))


@kernel
def _accumulate(keys, values, drop, below, above, gap, first, counts, sums, squares):  # pragma: no cover - compiled
    """Add each value to its bin's count, sum and sum of squares (``bins`` of :func:`histogram_prefix`, one pass).

    Compiled: three ``np.bincount`` passes per block cost three zeroed arrays of the bins' size each.
    """
    for i in range(keys.size):
        raw = np.int64(keys[i] >> drop)
        if raw <= below:
            index = raw - first
        elif raw >= above:
            index = raw - gap - first
        else:
            index = below + 1 - first
        x = values[i]
        counts[index] += 1.0
        sums[index] += x
        squares[index] += x * x


def few_distinct(values: np.ndarray, k: int) -> np.ndarray | None:
    """The sorted distinct values of *values* (float64) if there are at most *k*, else None; block by block."""
    flat, found = values.reshape(-1), np.zeros(0)
    for start in range(0, flat.size, BLOCK_VALUES):
        found = np.union1d(found, np.asarray(flat[start:start + BLOCK_VALUES], dtype=np.float64))
        if found.size > k:
            return None
    return found


def kmeans1d(
    values: np.ndarray,
    k: int,
    weights: np.ndarray | None = None,
    fixed_zero: bool = False,
    max_iter: int = MAX_ITER,
) -> np.ndarray:
    """Centroids (sorted, float64, at most *k*) of a weighted 1-D k-means of *values*.

    *values* must be finite; *weights*, if given, finite, non-negative and of the same
    size (all-zero weights count as uniform).  With *fixed_zero* (and k >= 2), 0.0 is
    one of the centroids and never moves.  When *values* has at most *k* distinct
    values the centroids are exactly those values.

    Small inputs (see :data:`DP_MAX_VALUES`) get the exact optimum (:func:`_optimal`).
    Otherwise runs Lloyd's algorithm until no boundary moves (or *max_iter*) from
    the companded quantiles (:func:`_cube_root_start`, much the better start at 5
    bits and more); unless that already has under :data:`FALLBACK_RATIO` of the SSE
    of k equal-weight runs, also from those runs' means (for at most
    :data:`FALLBACK_ITER` iterations), keeping the lower SSE.  Lloyd never
    increases the SSE, so the result is never worse than the equal-weight bins.
    A cluster that loses all its weight is re-seeded by splitting the cluster of
    largest SSE, so no centroid is wasted.

    Without weights, more than :data:`HISTOGRAM_VALUES` values are first reduced to narrow
    bins (:func:`histogram_prefix`, bounded memory); the float32 or float16 values the stage
    passes are read as they are, never copied whole.
    """
    values = np.asarray(values)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64).ravel()
        if not weights.any():
            weights = None
    if values.size == 0:
        return np.zeros(0)
    if weights is None and values.size > HISTOGRAM_VALUES:
        pre = histogram_prefix(values)
        # Each occupied bin holds a distinct value at least: only with few bins can there be few values.
        distinct = few_distinct(values, k) if pre.x.size <= k else None
        if distinct is not None:
            return distinct
    else:
        values = np.asarray(values, dtype=np.float64).ravel()
        pre = _Prefix.build(values, weights)
        distinct = _distinct_sorted(pre.x)
        if distinct.size <= k:
            return distinct
    fixed_zero = fixed_zero and k >= 2
    free = k - 1 if fixed_zero else k
    n = values.size
    if n <= DP_MAX_VALUES and k * (n + 1) ** 2 <= DP_BUDGET and (weights is None or (weights > 0).all()):
        return _optimal(pre, free, fixed_zero)
    best, best_sse = _lloyd(pre, _cube_root_start(pre, free), fixed_zero, max_iter)
    fallback = _bins_start(pre, free, fixed_zero)
    if best_sse > FALLBACK_RATIO * _lloyd(pre, fallback, fixed_zero, 0)[1]:
        centroids, sse = _lloyd(pre, fallback, fixed_zero, min(max_iter, FALLBACK_ITER))
        if sse < best_sse:
            best = centroids
    return best


def _lloyd(pre: _Prefix, start: np.ndarray, fixed_zero: bool, max_iter: int) -> tuple[np.ndarray, float]:
    """Lloyd iterations from the free centroids *start* (plus a fixed 0.0); returns (centroids, SSE)."""
    centroids = np.append(start, 0.0) if fixed_zero else start
    fixed = np.zeros(centroids.size, dtype=bool)
    fixed[-1] = fixed_zero
    order = np.argsort(centroids, kind="stable")
    centroids, fixed = centroids[order], fixed[order]
    bounds = _assign(pre, centroids)
    for _ in range(max_iter):
        centroids, fixed = _update(pre, bounds, fixed)
        new_bounds = _assign(pre, centroids)
        if np.array_equal(new_bounds, bounds):
            break
        bounds = new_bounds
    bounds = _assign(pre, centroids)
    w, s, q = pre.stats(bounds[:-1], bounds[1:])
    return centroids, float(np.maximum(q - 2 * centroids * s + centroids**2 * w, 0.0).sum())


def _optimal(pre: _Prefix, free: int, fixed_zero: bool) -> np.ndarray:
    """Globally optimal centroids by dynamic programming over runs of the sorted values.

    The clusters of any optimum are runs of the sorted values, so with ``A[c, j]``
    the least SSE of the first j values in c runs (each at its weighted mean),
    ``A[c, j] = min_i A[c-1, i] + cost(i, j)``: one O(n^2) vector step per c.
    With *fixed_zero* a second table ``B`` also places the one run quantised to
    0.0 (cost: its weighted sum of squares; it may be empty):
    ``B[c, j] = min(min_i B[c-1, i] + cost(i, j), min_i A[c, i] + zero_cost(i, j))``.
    Needs every weight > 0 and more distinct values than centroids.
    """
    n = pre.x.size
    # Tables indexed [j, i] for the run i:j, so each min over i reads contiguous rows.
    w = pre.w[:, None] - pre.w[None, :]
    s = pre.wx[:, None] - pre.wx[None, :]
    q = pre.wxx[:, None] - pre.wxx[None, :]
    nonempty = np.tri(n + 1, k=-1, dtype=bool)  # i < j
    cost = np.where(nonempty, np.maximum(q - s * s / np.where(nonempty, w, 1.0), 0.0), np.inf)
    zero_cost = np.where(np.tri(n + 1, dtype=bool), q, np.inf)  # i <= j: the zero run may be empty
    del w, s, q
    a = np.full((free + 1, n + 1), np.inf)
    a[0, 0] = 0.0
    a_from = np.zeros((free + 1, n + 1), dtype=np.intp)
    for c in range(1, free + 1):
        a_from[c], a[c] = _min_plus(a[c - 1], cost)
    if not fixed_zero:
        return _centroids(pre, _runs(a_from, free, n), None)
    b = np.full((free + 1, n + 1), np.inf)
    b_from = np.zeros((free + 1, n + 1), dtype=np.intp)
    b_zero = np.zeros((free + 1, n + 1), dtype=bool)  # True: the last run is the zero run
    b_from[0], b[0] = _min_plus(a[0], zero_cost)
    b_zero[0] = True
    for c in range(1, free + 1):
        via_free, cost_free = _min_plus(b[c - 1], cost)
        via_zero, cost_zero = _min_plus(a[c], zero_cost)
        b_zero[c] = cost_zero < cost_free
        b_from[c] = np.where(b_zero[c], via_zero, via_free)
        b[c] = np.minimum(cost_free, cost_zero)
    # Walk back through B to the zero run, then through A for the runs before it.
    runs, c, j = [], free, n
    while not b_zero[c, j]:
        i = int(b_from[c, j])
        runs.append((i, j))
        c, j = c - 1, i
    return _centroids(pre, runs + _runs(a_from, c, int(b_from[c, j])), 0.0)


def _min_plus(previous: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each j: ``(argmin_i, min_i)`` of ``previous[i] + cost[j, i]``."""
    total = cost + previous[None, :]
    best = np.argmin(total, axis=1)
    return best, total[np.arange(cost.shape[0]), best]


def _runs(came_from: np.ndarray, c: int, j: int) -> list[tuple[int, int]]:
    """The c runs ending at j, walked back through a table of best split points."""
    runs = []
    while c > 0:
        i = int(came_from[c, j])
        runs.append((i, j))
        c, j = c - 1, i
    return runs


def _centroids(pre: _Prefix, runs: list[tuple[int, int]], extra: float | None) -> np.ndarray:
    """Sorted weighted means of *runs*, plus the value *extra* when given."""
    lo, hi = np.array([r[0] for r in runs], dtype=np.intp), np.array([r[1] for r in runs], dtype=np.intp)
    w, s, _ = pre.stats(lo, hi)
    centroids = s / w
    if extra is not None:
        centroids = np.append(centroids, extra)
    return np.sort(centroids)


def _cube_root_start(pre: _Prefix, k: int) -> np.ndarray:
    """k starting centroids spread with density proportional to the data density ** (1/3).

    That is the point density of an optimal quantizer at high resolution
    (Panter & Dite 1951).  The density comes from m = 32k equal-weight quantiles
    q_0..q_m: between two of them it is about 1/(m * width), so the companded
    measure of a gap is width ** (2/3); the centroids sit at equal steps of its
    running sum.  Exact zeros of a pruned tensor form gaps of width 0 and attract
    no centroid.  Measured against equal-count quantiles and k-means++ (sorted
    values, D^2 sampling) on 2e5 Gaussian, Laplacian, bimodal, Cauchy, Student-t
    and trained weights: after Lloyd it gives the lowest SSE in most cases (at 8
    bits 2.5-15x below the equal-count start, which stalls in poor local optima),
    with the fewest iterations; k-means++ ends within a few % of it but costs
    O(nk) to seed (0.6 s at 8 bits).
    """
    n = pre.x.size
    m = max(1, min(n - 1, 32 * k))
    idx = np.searchsorted(pre.w, pre.w[-1] * np.arange(m + 1) / m, side="left").clip(1, n) - 1
    quantiles = pre.x[idx]
    companded = np.concatenate([[0.0], np.cumsum(np.diff(quantiles) ** (2 / 3))])
    steps = companded[-1] * (np.arange(k) + 0.5) / k
    return np.interp(steps, companded, quantiles)


def _bins_start(pre: _Prefix, k: int, skip_zeros: bool) -> np.ndarray:
    """The means of k equal-weight runs of the sorted values (empty runs re-seeded)."""
    centroids, _ = _update(pre, _equal_weight_bins(pre, k, skip_zeros), np.zeros(k, dtype=bool))
    return centroids


def nearest(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted *centroids* for each value; a tie goes to the lower one."""
    midpoints = (centroids[:-1] + centroids[1:]) / 2
    # side="left" counts the midpoints strictly below each value, so a value
    # exactly on a midpoint joins the lower centroid, as _assign does.
    return np.searchsorted(midpoints, values, side="left")


def nearest_codes(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """:func:`nearest` of each value (compared in float64) as uint8 codes of *values*' shape, block by block.

    The same codes as ``nearest(values.astype(float64), centroids).astype(uint8)`` without its
    two tensor-sized temporaries (float64 values, intp indices: 16 bytes per value).
    """
    flat = values.reshape(-1)
    codes = np.empty(flat.size, dtype=np.uint8)
    for start in range(0, flat.size, BLOCK_VALUES):
        block = np.asarray(flat[start:start + BLOCK_VALUES], dtype=np.float64)
        codes[start:start + BLOCK_VALUES] = nearest(block, centroids)
    return codes.reshape(values.shape)


def _distinct_sorted(x: np.ndarray) -> np.ndarray:
    """The distinct values of the sorted array *x* (``np.unique`` without its re-sort)."""
    keep = np.empty(x.size, dtype=bool)
    keep[0] = True
    np.not_equal(x[1:], x[:-1], out=keep[1:])
    return x[keep]


def _equal_weight_bins(pre: _Prefix, k: int, skip_zeros: bool = False) -> np.ndarray:
    """Boundaries (k + 1 indices) cutting the sorted values into k runs of equal weight.

    With *skip_zeros* the weight of exact zeros is left out when placing the cuts
    (they have their own fixed centroid), so the free centroids start spread over
    the nonzero values even when most values are zero (pruned tensors).
    """
    zeros_from, zeros_to = np.searchsorted(pre.x, 0.0, side="left"), np.searchsorted(pre.x, 0.0, side="right")
    zero_weight = pre.w[zeros_to] - pre.w[zeros_from] if skip_zeros else 0.0
    targets = (pre.w[-1] - zero_weight) * np.arange(1, k) / k
    # Targets past the zero run move up by its weight: they index the nonzero values only.
    targets = np.where(targets <= pre.w[zeros_from], targets, targets + zero_weight)
    cuts = np.searchsorted(pre.w, targets, side="left")
    return np.concatenate([[0], cuts, [pre.x.size]])


def _assign(pre: _Prefix, centroids: np.ndarray) -> np.ndarray:
    """Cluster boundaries: run j is ``bounds[j]:bounds[j+1]`` of the sorted values."""
    midpoints = (centroids[:-1] + centroids[1:]) / 2
    # side="right": a value equal to a midpoint stays in the lower cluster (see nearest()).
    return np.concatenate([[0], np.searchsorted(pre.x, midpoints, side="right"), [pre.x.size]])


def _update(pre: _Prefix, bounds: np.ndarray, fixed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd update: each cluster's weighted mean (fixed ones stay 0), empty ones re-seeded.

    Returns the centroids sorted, and the fixed mask in the same order; a cluster
    that cannot be re-seeded (no other cluster has any error left) is dropped.
    """
    lo, hi = bounds[:-1], bounds[1:]
    w, s, q = pre.stats(lo, hi)
    empty = (w <= 0) & ~fixed
    centroids = s / np.where(w > 0, w, 1.0)
    centroids[fixed] = 0.0
    if empty.any():
        keep = _reseed(pre, lo.copy(), hi.copy(), centroids, fixed, empty, (w, s, q))
        centroids, fixed = centroids[keep], fixed[keep]
    order = np.argsort(centroids, kind="stable")
    return centroids[order], fixed[order]


def _reseed(pre, lo, hi, centroids, fixed, empty, stats) -> np.ndarray:
    """Move each empty cluster's centroid into the cluster of largest SSE, splitting it in two.

    Updates *centroids* in place and returns the mask of clusters to keep.  A free
    cluster splits at its mean and the halves' means become the two centroids.
    The fixed zero cluster keeps 0 and gives its negative or positive values
    (whichever carry more squared error) to the new centroid.  Loops over empty
    clusters only (at most k, rarely any), each step O(k + log n).
    """
    w, s, q = (a.copy() for a in stats)
    keep = ~empty
    unsplittable = np.zeros(keep.size, dtype=bool)
    for e in np.flatnonzero(empty):
        while True:
            j = _worst_cluster(pre, lo, hi, centroids, fixed, keep & ~unsplittable, (w, s, q))
            if j is None:
                return keep  # nothing left to split: the remaining empty clusters are dropped
            part = _split_fixed(pre, lo[j], hi[j]) if fixed[j] else _split_free(pre, lo[j], hi[j], centroids[j])
            if part is not None:
                break
            unsplittable[j] = True  # zero weight on one side; try the next worst
        (lo[j], hi[j]), (lo[e], hi[e]) = part
        (w[j], w[e]), (s[j], s[e]), (q[j], q[e]) = pre.stats(np.array([lo[j], lo[e]]), np.array([hi[j], hi[e]]))
        if not fixed[j]:
            centroids[j] = s[j] / w[j]
        centroids[e] = s[e] / w[e]
        keep[e] = True
    return keep


def _worst_cluster(pre, lo, hi, centroids, fixed, candidates, stats) -> int | None:
    """Index of the candidate cluster with the largest weighted SSE, or None if all are 0."""
    w, s, q = stats
    sse = np.maximum(q - 2 * centroids * s + centroids**2 * w, 0.0)
    nonempty = hi > lo
    first, last = pre.x[np.where(nonempty, lo, 0)], pre.x[np.where(nonempty, hi - 1, 0)]
    # A free run of one repeated value has SSE 0 whatever rounding says.
    sse[(~fixed & (first == last)) | ~nonempty | ~candidates | (w <= 0)] = 0.0
    j = int(np.argmax(sse))
    return j if sse[j] > 0.0 else None


def _split_free(pre: _Prefix, lo: int, hi: int, mean: float):
    """Runs ``(lo, split), (split, hi)`` cutting a free cluster at its mean, or None if one has no weight."""
    split = int(np.searchsorted(pre.x[lo:hi], mean, side="right")) + lo
    wl, wr = pre.w[split] - pre.w[lo], pre.w[hi] - pre.w[split]
    return ((lo, split), (split, hi)) if wl > 0 and wr > 0 else None


def _split_fixed(pre: _Prefix, lo: int, hi: int):
    """Runs ``(kept, given)``: the fixed zero cluster gives away its negatives or its positives."""
    neg_end = int(np.searchsorted(pre.x[lo:hi], 0.0, side="left")) + lo
    pos_start = int(np.searchsorted(pre.x[lo:hi], 0.0, side="right")) + lo
    (wn, wp), _, (qn, qp) = pre.stats(np.array([lo, pos_start]), np.array([neg_end, hi]))
    if qp >= qn and wp > 0:
        return (lo, pos_start), (pos_start, hi)
    if wn > 0:
        return (neg_end, hi), (lo, neg_end)
    return None
