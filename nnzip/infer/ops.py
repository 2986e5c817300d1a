"""Numeric kernels for NHWC tensors: TensorFlow-style padding, im2col convolution, pooling.

Convolutions take windows with ``sliding_window_view``; regular convolutions copy them
into an im2col matrix and do one matmul per chunk of the batch (chunks cap the matrix at
about :data:`PATCH_BYTES`); depthwise ones use one einsum over the window view.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Pads = tuple[tuple[int, int], tuple[int, int]]

PATCH_BYTES = 64 * 2**20
"""Upper bound (bytes) of one im2col patch matrix; larger batches are split into chunks."""


def conv_output_length(n: int | None, k: int, stride: int, dilation: int, padding: str) -> int | None:
    """Output length of a convolution/pooling window along one axis (None if unknown)."""
    if n is None:
        return None
    if padding in ("same", "causal"):
        return -(-n // stride)
    span = (k - 1) * dilation + 1
    if n < span:
        raise ValueError(f"window of {span} does not fit in input length {n}")
    return (n - span) // stride + 1


def same_pads(n: int, k: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) along one axis; the odd pixel goes after."""
    out = -(-n // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - n, 0)
    return total // 2, total - total // 2


def window_pads(
    hw: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
    dilation: Sequence[int], padding: str,
) -> Pads:
    """Per-axis (before, after) padding of H and W for 'valid', 'same' or 'causal'."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "causal":  # only along W (Conv1D is run as a 1-row Conv2D)
        return (0, 0), ((kernel[1] - 1) * dilation[1], 0)
    return (
        same_pads(hw[0], kernel[0], strides[0], dilation[0]),
        same_pads(hw[1], kernel[1], strides[1], dilation[1]),
    )


def pad_hw(x: np.ndarray, pads: Pads, value: float = 0.0) -> np.ndarray:
    """Pad H and W of an NHWC array with a constant (no copy when there is no padding)."""
    if not any(pads[0]) and not any(pads[1]):
        return x
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=value)


def patches(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int],
            dilation: Sequence[int]) -> np.ndarray:
    """Strided view (N, OH, OW, C, KH, KW) of all windows of an already padded NHWC array."""
    span_h = (kernel[0] - 1) * dilation[0] + 1
    span_w = (kernel[1] - 1) * dilation[1] + 1
    windows = sliding_window_view(x, (span_h, span_w), axis=(1, 2))
    return windows[:, :: strides[0], :: strides[1], :, :: dilation[0], :: dilation[1]]


def batch_chunks(n: int, bytes_per_item: int) -> Iterator[slice]:
    """Slices of ``range(n)`` whose items take at most about PATCH_BYTES (at least one item)."""
    step = max(1, PATCH_BYTES // max(bytes_per_item, 1))
    for start in range(0, max(n, 1), step):
        yield slice(start, start + step)


def matmul_last(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` over the last axis of ``x`` as one 2D matmul (numpy's stacked matmul is slow)."""
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(x.shape[:-1] + (w.shape[-1],))


def conv2d(x: np.ndarray, kernel: np.ndarray, strides: Sequence[int], padding: str,
           dilation: Sequence[int], groups: int = 1) -> np.ndarray:
    """2D convolution (no bias) of NHWC ``x`` with an HWIO ``kernel`` (I = C / groups)."""
    kh, kw, cin_g, filters = kernel.shape
    if (kh, kw) == (1, 1) and tuple(strides) == (1, 1) and groups == 1:
        return matmul_last(x, kernel.reshape(cin_g, filters))
    x = pad_hw(x, window_pads(x.shape[1:3], (kh, kw), strides, dilation, padding))
    # kernel rows ordered (group, kh, kw, cin_g) to match the patch matrix columns below
    k = kernel.reshape(kh, kw, cin_g, groups, filters // groups).transpose(3, 0, 1, 2, 4)
    k = k.reshape(groups, kh * kw * cin_g, filters // groups)
    view = patches(x, (kh, kw), strides, dilation)  # N, OH, OW, C, KH, KW
    n, oh, ow = view.shape[:3]
    out = np.empty((n, oh, ow, filters), dtype=np.result_type(x, kernel))
    for part in batch_chunks(n, oh * ow * kh * kw * cin_g * groups * x.itemsize):
        v = view[part]
        m = v.shape[0] * oh * ow
        cols = v.reshape(v.shape[:3] + (groups, cin_g, kh, kw)).transpose(3, 0, 1, 2, 5, 6, 4)
        cols = cols.reshape(groups, m, kh * kw * cin_g)
        res = np.matmul(cols, k)  # groups, m, filters/groups
        out[part] = res.transpose(1, 0, 2).reshape(v.shape[:3] + (filters,))
    return out


def depthwise_conv2d(x: np.ndarray, kernel: np.ndarray, strides: Sequence[int], padding: str,
                     dilation: Sequence[int]) -> np.ndarray:
    """Depthwise 2D convolution (no bias); ``kernel`` is (KH, KW, C, M), output has C*M channels.

    One einsum over the strided window view: with a single channel per product there is
    no matmul to hand to BLAS, and the view avoids copying patches.
    """
    kh, kw, channels, mult = kernel.shape
    x = pad_hw(x, window_pads(x.shape[1:3], (kh, kw), strides, dilation, padding))
    view = patches(x, (kh, kw), strides, dilation)  # N, OH, OW, C, KH, KW
    out = np.einsum("nhwcij,ijcm->nhwcm", view, kernel)
    return out.reshape(out.shape[:3] + (channels * mult,))


def max_pool2d(x: np.ndarray, pool: Sequence[int], strides: Sequence[int], padding: str) -> np.ndarray:
    """Max pooling of NHWC ``x``; 'same' padding never wins the max (as in TensorFlow)."""
    pads = window_pads(x.shape[1:3], pool, strides, (1, 1), padding)
    x = pad_hw(x, pads, value=-np.inf)
    return patches(x, pool, strides, (1, 1)).max(axis=(-2, -1))


def avg_pool2d(x: np.ndarray, pool: Sequence[int], strides: Sequence[int], padding: str) -> np.ndarray:
    """Average pooling of NHWC ``x``; with 'same' the padding is left out of the count (TF)."""
    pads = window_pads(x.shape[1:3], pool, strides, (1, 1), padding)
    sums = patches(pad_hw(x, pads), pool, strides, (1, 1)).sum(axis=(-2, -1), dtype=np.float64)
    ones = pad_hw(np.ones((1,) + x.shape[1:3] + (1,), dtype=np.float64), pads)
    counts = patches(ones, pool, strides, (1, 1)).sum(axis=(-2, -1))
    return (sums / counts).astype(x.dtype, copy=False)
