"""Data-aware post-training steps: better values to store, never a different format.

NNCodec sees only weights; nnzip can run the model on data, so it can choose
*which values to store* by their effect on layer outputs rather than on the
weights themselves.  Every function here maps a layer's float weights (and
statistics of its inputs on calibration data) to new weights that the ordinary
stage chains then store — a reader needs nothing new.

For a Dense layer ``y = x @ W + b`` with inputs ``X`` (N×in) on the data:

* :func:`quantize_with_error_feedback` — GPTQ/OBQ-style: quantize ``W`` one input
  row at a time onto a fixed codebook and push each row's error onto the rows not
  yet quantized through the inverse Gram matrix of the inputs, so that
  ``||X W − X W'||`` rather than ``||W − W'||`` is kept small.
* :class:`ActivationAwareSVD` — for each rank r, the ``W'`` minimising
  ``||X W − X W'||_F`` (truncated SVD in the metric of ``XᵀX``).
* :func:`corrected_bias` — shift ``b`` so the layer's mean output on the data is
  unchanged by the weight change.
* :func:`fold_constant_inputs` — inputs that are constant on the data (dead
  pixels) contribute a constant: fold it into the bias and zero their rows.

Conv2D kernels (kh, kw, in, out) are handled as the matrix (kh·kw·in, out) with
``X`` the image patches, which is exactly the product Conv2D computes; ONNX Conv
kernels (out, in, kh, kw) likewise as (in·kh·kw, out) with :func:`conv_patches_nchw`.
"""

from __future__ import annotations

import numpy as np

#: Relative diagonal damping added to XᵀX (as GPTQ does) so it is invertible.
DAMPING = 0.01


class LayerStatistics:
    """Input statistics of one layer on calibration data: Gram matrix, mean, constant inputs.

    Built from batches of input rows (N×in) so that conv patches, which are many,
    never need to sit in memory at once.
    """

    def __init__(self, batches):
        self.count, self.gram, total, low, high = 0, None, None, None, None
        for batch in batches:
            x = np.asarray(batch, dtype=np.float64).reshape(-1, np.shape(batch)[-1])
            if self.gram is None:
                self.gram, total = np.zeros((x.shape[1], x.shape[1])), np.zeros(x.shape[1])
                low, high = np.full(x.shape[1], np.inf), np.full(x.shape[1], -np.inf)
            self.gram += x.T @ x
            total += x.sum(axis=0)
            low, high = np.minimum(low, x.min(axis=0, initial=np.inf)), np.maximum(high, x.max(axis=0, initial=-np.inf))
            self.count += len(x)
        if self.gram is None or self.count == 0:
            raise ValueError("no calibration inputs")
        self.mean = total / self.count
        self.constant = high == low

    @classmethod
    def of(cls, inputs: np.ndarray) -> "LayerStatistics":
        """Statistics of one array of inputs (rows = samples, last axis = features)."""
        return cls([inputs])

    def damped_gram(self) -> np.ndarray:
        """``XᵀX + λ·mean(diag)·I``; dead inputs get the damping alone."""
        gram = self.gram.copy()
        diagonal = np.diag(gram)
        damp = DAMPING * (float(diagonal.mean()) if diagonal.size and diagonal.mean() > 0 else 1.0)
        gram[np.diag_indices_from(gram)] += damp
        return gram

    def importance(self) -> np.ndarray:
        """Per-input weight for weighted k-means: the diagonal of the Gram matrix (plus damping)."""
        return np.diag(self.damped_gram())


def quantize_with_error_feedback(weights: np.ndarray, stats: LayerStatistics, codebook: np.ndarray, block: int = 128) -> np.ndarray:
    """Round each row of *weights* (in × out) to the nearest codebook value, compensating errors.

    Implements the GPTQ recursion with lazy block updates: with ``U`` the upper
    Cholesky factor of ``(XᵀX + λI)⁻¹``, row ``i``'s rounding error divided by
    ``U[i, i]`` is pushed onto rows ``i+1…`` in proportion to ``U[i, i+1…]``.
    Every value of the result is a codebook entry.
    """
    w = np.array(weights, dtype=np.float64)
    inverse = np.linalg.inv(stats.damped_gram())
    upper = np.linalg.cholesky(inverse).T  # inverse = Uᵀ U
    codebook = np.sort(np.asarray(codebook, dtype=np.float64))
    rows = w.shape[0]
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        errors = np.zeros((stop - start, w.shape[1]))
        for i in range(start, stop):
            quantized = _nearest(w[i], codebook)
            error = (w[i] - quantized) / upper[i, i]
            w[i] = quantized
            w[i + 1:stop] -= np.outer(upper[i, i + 1:stop], error)
            errors[i - start] = error
        w[stop:] -= upper[start:stop, stop:].T @ errors
    return w.astype(weights.dtype)


def _nearest(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Nearest entry of a sorted codebook for every value (vectorised)."""
    if len(codebook) == 1:
        return np.full_like(values, codebook[0])
    index = np.clip(np.searchsorted(codebook, values), 1, len(codebook) - 1)
    left, right = codebook[index - 1], codebook[index]
    return np.where(values - left <= right - values, left, right)


class ActivationAwareSVD:
    """Rank-r matrices ``W'`` minimising ``||X W − X W'||_F`` (damped), for any r, from one factorisation.

    With ``XᵀX + λI = L Lᵀ``: ``W'_r = L⁻ᵀ · truncate_r(Lᵀ W)``.  The SVD of ``Lᵀ W`` is
    computed once; each rank then costs one small SVD.
    """

    def __init__(self, weights: np.ndarray, stats: LayerStatistics):
        self.dtype = np.asarray(weights).dtype
        self.lower = np.linalg.cholesky(stats.damped_gram())
        self.u, self.s, self.vt = np.linalg.svd(self.lower.T @ np.asarray(weights, dtype=np.float64), full_matrices=False)

    def decomposition(self, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The thin SVD ``(u, s, vt)`` of ``W'_rank``.

        ``W'_r = A · B`` with ``A = L⁻ᵀ U_r S_r`` and ``B = V_rᵀ`` (orthonormal rows), so
        the SVD of the small ``A`` gives the SVD of ``W'_r``.
        """
        a = np.linalg.solve(self.lower.T, self.u[:, :rank] * self.s[:rank])
        ua, sa, vat = np.linalg.svd(a, full_matrices=False)
        return ua, sa, vat @ self.vt[:rank]

    def matrix(self, rank: int) -> np.ndarray:
        """``W'_rank`` itself, in the weights' dtype."""
        u, s, vt = self.decomposition(rank)
        return ((u * s) @ vt).astype(self.dtype)


def corrected_bias(bias: np.ndarray, weights: np.ndarray, rebuilt: np.ndarray, stats: LayerStatistics) -> np.ndarray:
    """``b + mean(x) · (W − W')``: the mean output on the data stays what it was."""
    shift = stats.mean @ (np.asarray(weights, np.float64) - np.asarray(rebuilt, np.float64))
    return (np.asarray(bias, np.float64) + shift).astype(bias.dtype)


def fold_constant_inputs(weights: np.ndarray, bias: np.ndarray | None, stats: LayerStatistics) -> tuple[np.ndarray, np.ndarray | None]:
    """Zero the rows of inputs constant on the data, moving their constant contribution into the bias.

    Only exact for inputs that stay constant in deployment (e.g. image borders);
    ``verify`` on a separate split is the check.  Without a bias, only rows whose
    constant input is 0 are zeroed.
    """
    w = np.array(weights, copy=True)
    constant = stats.constant
    if bias is None:
        constant = constant & (stats.mean == 0)
        w[constant] = 0
        return w, None
    contribution = stats.mean[constant] @ np.asarray(weights, np.float64)[constant]
    w[constant] = 0
    return w, (np.asarray(bias, np.float64) + contribution).astype(bias.dtype)


def conv_patches(inputs: np.ndarray, kernel_size, strides, padding: str, dilation=(1, 1), batch: int = 64):
    """Yield the im2col rows (patches × kh·kw·in) a Conv2D multiplies with its (kh·kw·in, out) kernel.

    The windows and padding are the numpy inference's own (:mod:`nnzip.infer.ops`):
    'same' follows TensorFlow's rule (the odd pixel goes after), anything else is
    'valid'.  Rows are produced *batch* images at a time to bound memory.
    """
    ops = _ops()
    kh, kw = kernel_size
    for start in range(0, len(inputs), batch):
        x = np.asarray(inputs[start:start + batch], dtype=np.float32)
        x = ops.pad_hw(x, ops.window_pads(x.shape[1:3], kernel_size, strides, dilation, "same" if padding == "same" else "valid"))
        windows = ops.patches(x, kernel_size, strides, dilation)  # (N, oh, ow, C, kh, kw)
        yield windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * x.shape[3])


def conv_patches_nchw(inputs: np.ndarray, kernel_size, strides, pads, dilation=(1, 1), batch: int = 64):
    """Yield the im2col rows (patches × in·kh·kw) an ONNX Conv (group 1) multiplies with its kernel.

    *inputs* are NCHW and *pads* ONNX's ``[top, left, bottom, right]``; the row order
    (channel, kernel row, kernel column) is that of ``W.reshape(out, -1)`` for an OIHW
    kernel ``W``, which is the order of :func:`nnzip.infer.ops.patches`' trailing
    (C, kh, kw) axes on the NHWC view of the inputs.  Rows are produced *batch* images
    at a time to bound memory.
    """
    ops = _ops()
    kh, kw = kernel_size
    top, left, bottom, right = pads
    for start in range(0, len(inputs), batch):
        x = np.asarray(inputs[start:start + batch], dtype=np.float32).transpose(0, 2, 3, 1)  # an NHWC view
        windows = ops.patches(ops.pad_hw(x, ((top, bottom), (left, right))), kernel_size, strides, dilation)  # (N, oh, ow, C, kh, kw)
        yield windows.reshape(-1, x.shape[3] * kh * kw)


def _ops():
    """:mod:`nnzip.infer.ops`, imported on first use: importing :mod:`nnzip.infer` loads every layer
    builder (and scipy), which ONNX models, scored by onnxruntime, never need."""
    from .infer import ops

    return ops
