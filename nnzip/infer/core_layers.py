"""Builders for the non-convolutional Keras layers: Dense, activations, normalization,
reshaping, merging and the layers that are the identity at inference time."""

from __future__ import annotations

import math

import numpy as np

from nnzip.infer import activations as act
from nnzip.infer import ops
from nnzip.infer.registry import LayerContext, LayerImpl, Shape, register


def _same_shape(in_shapes: list[Shape]) -> Shape:
    return in_shapes[0]


def _elementwise(fn) -> LayerImpl:
    return LayerImpl(forward=lambda xs, ws: fn(xs[0]), output_shape=_same_shape)


def _axis(axis: int, rank: int) -> int:
    """Keras axis (counting the batch axis) as a non-negative index into the full rank."""
    return axis + rank if axis < 0 else axis


@register("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
          "GaussianDropout", "AlphaDropout", "ActivityRegularization")
def build_identity(ctx: LayerContext) -> LayerImpl:
    """Layers that only act during training: the identity at inference."""
    return _elementwise(lambda x: x)


@register("Dense")
def build_dense(ctx: LayerContext) -> LayerImpl:
    """Dense: ``activation(x @ kernel + bias)`` over the last axis (any input rank)."""
    units = ctx.positive_int("units")
    use_bias = ctx.get("use_bias", True)
    activation = ctx.activation()

    def forward(xs: list[np.ndarray], ws: list[np.ndarray]) -> np.ndarray:
        y = ops.matmul_last(xs[0], ws[0])
        if use_bias:
            y += ws[1]
        return activation(y)

    def weight_shapes(in_shapes: list[Shape]) -> list[Shape]:
        return [(in_shapes[0][-1], units)] + ([(units,)] if use_bias else [])

    return LayerImpl(forward, lambda s: s[0][:-1] + (units,),
                     ("kernel", "bias") if use_bias else ("kernel",), weight_shapes, min_rank=1)


@register("Activation")
def build_activation(ctx: LayerContext) -> LayerImpl:
    """Activation layer: applies the named activation function."""
    return _elementwise(ctx.activation())


@register("ReLU")
def build_relu(ctx: LayerContext) -> LayerImpl:
    """ReLU with max_value, negative_slope and threshold, computed exactly as Keras does."""
    max_value = ctx.number("max_value", optional=True)
    slope = ctx.number("negative_slope", 0.0)
    threshold = ctx.number("threshold", 0.0)

    def relu(x: np.ndarray) -> np.ndarray:
        pos = np.where(x > threshold, x, x.dtype.type(0))
        if max_value is not None:
            pos = np.clip(pos, 0, max_value).astype(x.dtype, copy=False)
        if slope:
            pos = pos - x.dtype.type(slope) * np.maximum(x.dtype.type(threshold) - x, 0)
        return pos

    return _elementwise(relu)


@register("LeakyReLU")
def build_leaky_relu(ctx: LayerContext) -> LayerImpl:
    """LeakyReLU (Keras 3 ``negative_slope``, Keras 2 ``alpha``; default 0.3)."""
    slope = ctx.number("negative_slope" if "negative_slope" in ctx.config else "alpha", 0.3)
    return _elementwise(lambda x: act.leaky_relu(x, slope))


@register("ELU")
def build_elu(ctx: LayerContext) -> LayerImpl:
    """ELU layer with its ``alpha``."""
    alpha = ctx.number("alpha", 1.0)
    return _elementwise(lambda x: act.elu(x, alpha))


@register("ThresholdedReLU")
def build_thresholded_relu(ctx: LayerContext) -> LayerImpl:
    """Keras 2 ThresholdedReLU: x if x > theta else 0."""
    theta = ctx.number("theta", 1.0)
    return _elementwise(lambda x: np.where(x > theta, x, x.dtype.type(0)))


@register("Softmax")
def build_softmax(ctx: LayerContext) -> LayerImpl:
    """Softmax over ``axis`` (an int or a list of ints)."""
    axis = ctx.get("axis", -1)
    axis = tuple(axis) if isinstance(axis, list) else axis
    return _elementwise(lambda x: act.softmax(x, axis))


@register("PReLU")
def build_prelu(ctx: LayerContext) -> LayerImpl:
    """PReLU: relu(x) - alpha * relu(-x), alpha shaped like the input with shared axes = 1."""
    shared = ctx.get("shared_axes") or []
    shared = [shared] if isinstance(shared, int) else list(shared)

    def weight_shapes(in_shapes: list[Shape]) -> list[Shape]:
        shape = list(in_shapes[0])
        for axis in shared:
            shape[_axis(axis, len(shape) + 1) - 1] = 1
        return [tuple(shape)]

    def forward(xs: list[np.ndarray], ws: list[np.ndarray]) -> np.ndarray:
        x = xs[0]
        return np.maximum(x, 0) - ws[0] * np.maximum(-x, 0)

    return LayerImpl(forward, _same_shape, ("alpha",), weight_shapes)


@register("BatchNormalization")
def build_batch_norm(ctx: LayerContext) -> LayerImpl:
    """Inference BatchNormalization with moving statistics over one ``axis``."""
    if ctx.get("renorm", False):
        raise ctx.unsupported("renorm=True")
    axis = ctx.get("axis", -1)
    if isinstance(axis, list):
        if len(axis) != 1:
            raise ctx.unsupported(f"axis={axis!r}")
        axis = axis[0]
    center, scale = ctx.get("center", True), ctx.get("scale", True)
    eps = ctx.number("epsilon", 1e-3)
    names = (("gamma",) if scale else ()) + (("beta",) if center else ()) + ("moving_mean", "moving_variance")

    def forward(xs: list[np.ndarray], ws: list[np.ndarray]) -> np.ndarray:
        x = xs[0]
        params = dict(zip(names, ws))
        inv = 1.0 / np.sqrt(params["moving_variance"].astype(np.float64) + eps)
        if scale:
            inv = inv * params["gamma"]
        shift = -params["moving_mean"] * inv + (params["beta"] if center else 0.0)
        bshape = [1] * x.ndim
        bshape[_axis(axis, x.ndim)] = -1
        return x * inv.astype(x.dtype).reshape(bshape) + shift.astype(x.dtype).reshape(bshape)

    def weight_shapes(in_shapes: list[Shape]) -> list[Shape]:
        size = in_shapes[0][_axis(axis, len(in_shapes[0]) + 1) - 1]
        return [(size,)] * len(names)

    return LayerImpl(forward, _same_shape, names, weight_shapes,
                     non_trainable=("moving_mean", "moving_variance"))


@register("LayerNormalization")
def build_layer_norm(ctx: LayerContext) -> LayerImpl:
    """LayerNormalization over ``axis`` (normalization statistics per sample)."""
    if ctx.get("rms_scaling", False):
        raise ctx.unsupported("rms_scaling=True")
    axes = ctx.get("axis", -1)
    axes = [axes] if isinstance(axes, int) else list(axes)
    center, scale = ctx.get("center", True), ctx.get("scale", True)
    eps = ctx.number("epsilon", 1e-3)
    names = (("gamma",) if scale else ()) + (("beta",) if center else ())

    def forward(xs: list[np.ndarray], ws: list[np.ndarray]) -> np.ndarray:
        x = xs[0]
        dims = tuple(sorted(_axis(a, x.ndim) for a in axes))
        mean = x.mean(axis=dims, keepdims=True, dtype=np.float64)
        var = ((x - mean) ** 2).mean(axis=dims, keepdims=True)
        y = (x - mean) / np.sqrt(var + eps)
        bshape = [x.shape[d] if d in dims else 1 for d in range(x.ndim)]
        params = dict(zip(names, ws))
        if scale:
            y = y * params["gamma"].reshape(bshape)
        if center:
            y = y + params["beta"].reshape(bshape)
        return y.astype(x.dtype)

    def weight_shapes(in_shapes: list[Shape]) -> list[Shape]:
        rank = len(in_shapes[0]) + 1
        shape = tuple(in_shapes[0][d - 1] for d in sorted(_axis(a, rank) for a in axes))
        return [shape] * len(names)

    return LayerImpl(forward, _same_shape, names, weight_shapes)


@register("Normalization")
def build_normalization(ctx: LayerContext) -> LayerImpl:
    """Normalization: (x - mean) / max(sqrt(variance), 1e-7), or its inverse with ``invert``.

    mean and variance come from the weights [mean, variance, count], or from the config
    when it holds them (then the layer has no weights).
    """
    axes = ctx.config.get("axis", -1)
    axes = [] if axes is None else [axes] if isinstance(axes, int) else list(axes)
    invert = bool(ctx.get("invert", False))
    fixed = ctx.config.get("mean") is not None
    names = () if fixed else ("mean", "variance", "count")
    if fixed:
        fixed_stats = [np.asarray(ctx.config[k], dtype=np.float32) for k in ("mean", "variance")]

    def stats(x: np.ndarray, ws: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        mean, var = fixed_stats if fixed else ws[:2]
        dims = [_axis(a, x.ndim) for a in axes]
        bshape = [x.shape[d] if d in dims else 1 for d in range(x.ndim)]
        mean = np.asarray(mean, dtype=np.float32)
        var = np.asarray(var, dtype=np.float32)
        return (np.broadcast_to(mean, bshape) if mean.size > 1 else mean.reshape(()),
                np.broadcast_to(var, bshape) if var.size > 1 else var.reshape(()))

    def forward(xs: list[np.ndarray], ws: list[np.ndarray]) -> np.ndarray:
        x = xs[0]
        mean, var = stats(x, ws)
        std = np.maximum(np.sqrt(var), np.float32(1e-7))
        return (mean + x * std if invert else (x - mean) / std).astype(x.dtype, copy=False)

    def weight_shapes(in_shapes: list[Shape]) -> list[Shape]:
        return [None, None, None]  # shapes differ between Keras versions; checked by broadcasting

    return LayerImpl(forward, _same_shape, names, weight_shapes, non_trainable=names)


@register("Rescaling")
def build_rescaling(ctx: LayerContext) -> LayerImpl:
    """Rescaling: x * scale + offset (scalars or per-channel lists)."""
    scale = np.asarray(ctx.get("scale", 1.0), dtype=np.float32)
    offset = np.asarray(ctx.get("offset", 0.0), dtype=np.float32)
    return _elementwise(lambda x: x * scale + offset)


def _product(dims: Shape) -> int | None:
    return None if any(d is None for d in dims) else math.prod(dims)


@register("Flatten")
def build_flatten(ctx: LayerContext) -> LayerImpl:
    """Flatten all non-batch axes (channels_last order)."""
    ctx.require_channels_last()
    return LayerImpl(lambda xs, ws: xs[0].reshape(xs[0].shape[0], -1),
                     lambda s: (_product(s[0]),))


@register("Reshape")
def build_reshape(ctx: LayerContext) -> LayerImpl:
    """Reshape the non-batch axes to ``target_shape`` (one entry may be -1)."""
    target = tuple(ctx.get("target_shape"))

    def output_shape(in_shapes: list[Shape]) -> Shape:
        total, known = _product(in_shapes[0]), _product(tuple(d for d in target if d != -1))
        if total is not None and (total % known if -1 in target else total != known):
            raise ValueError(f"{total} values cannot be reshaped to {target}")
        if -1 not in target:
            return target
        return tuple((None if total is None else total // known) if d == -1 else d for d in target)

    return LayerImpl(lambda xs, ws: xs[0].reshape((xs[0].shape[0],) + target), output_shape)


@register("Permute")
def build_permute(ctx: LayerContext) -> LayerImpl:
    """Permute non-batch axes; ``dims`` counts from 1."""
    dims = tuple(ctx.get("dims"))
    if sorted(dims) != list(range(1, len(dims) + 1)):
        raise ctx.unsupported(f"dims={list(dims)}")
    return LayerImpl(lambda xs, ws: xs[0].transpose((0,) + dims),
                     lambda s: tuple(s[0][d - 1] for d in dims), input_rank=len(dims))


@register("RepeatVector")
def build_repeat_vector(ctx: LayerContext) -> LayerImpl:
    """RepeatVector: (N, F) -> (N, n, F)."""
    n = ctx.positive_int("n")
    return LayerImpl(lambda xs, ws: np.repeat(xs[0][:, None, :], n, axis=1),
                     lambda s: (n,) + s[0], input_rank=1)


def _merge_ranks(xs: list[np.ndarray]) -> list[np.ndarray]:
    """Give all inputs the same rank by inserting axes after the batch axis (as Keras does).

    Scalars (constants a merge layer was called on) are left to numpy broadcasting.
    """
    rank = max(x.ndim for x in xs)
    return [x if x.ndim == 0 else x.reshape(x.shape[:1] + (1,) * (rank - x.ndim) + x.shape[1:])
            for x in xs]


def _broadcast_shapes(in_shapes: list[Shape]) -> Shape:
    rank = max(len(s) for s in in_shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in in_shapes]
    out = []
    for dims in zip(*padded):
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise ValueError(f"inputs of shapes {in_shapes} do not broadcast")
        out.append(known.pop() if len(known) == 1 else (None if None in dims else 1))
    return tuple(out)


def _merge(fn, min_inputs: int = 2, max_inputs: int | None = None) -> LayerImpl:
    return LayerImpl(lambda xs, ws: fn(_merge_ranks(xs)), _broadcast_shapes,
                     min_inputs=min_inputs, max_inputs=max_inputs)


def _add(xs: list[np.ndarray]) -> np.ndarray:
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def _multiply(xs: list[np.ndarray]) -> np.ndarray:
    out = xs[0]
    for x in xs[1:]:
        out = out * x
    return out


@register("Add")
def build_add(ctx: LayerContext) -> LayerImpl:
    """Elementwise sum of the inputs."""
    return _merge(_add)


@register("Subtract")
def build_subtract(ctx: LayerContext) -> LayerImpl:
    """First input minus the second."""
    return _merge(lambda xs: xs[0] - xs[1], 2, 2)


@register("Multiply")
def build_multiply(ctx: LayerContext) -> LayerImpl:
    """Elementwise product of the inputs."""
    return _merge(_multiply)


@register("Average")
def build_average(ctx: LayerContext) -> LayerImpl:
    """Elementwise mean of the inputs."""
    return _merge(lambda xs: _add(xs) / np.float32(len(xs)))


@register("Divide", "TrueDivide")
def build_divide(ctx: LayerContext) -> LayerImpl:
    """Keras 3 serialized operation ``x / y`` (tensors or constants)."""
    return _merge(lambda xs: xs[0] / xs[1], 2, 2)


@register("Maximum")
def build_maximum(ctx: LayerContext) -> LayerImpl:
    """Elementwise maximum of the inputs."""
    return _merge(lambda xs: np.maximum.reduce(np.broadcast_arrays(*xs)))


@register("Minimum")
def build_minimum(ctx: LayerContext) -> LayerImpl:
    """Elementwise minimum of the inputs."""
    return _merge(lambda xs: np.minimum.reduce(np.broadcast_arrays(*xs)))


@register("Concatenate")
def build_concatenate(ctx: LayerContext) -> LayerImpl:
    """Concatenate the inputs along ``axis`` (counting the batch axis)."""
    axis = int(ctx.get("axis", -1))

    def output_shape(in_shapes: list[Shape]) -> Shape:
        rank = len(in_shapes[0]) + 1
        a = _axis(axis, rank) - 1
        if not 0 <= a < rank - 1 or any(len(s) != rank - 1 for s in in_shapes):
            raise ValueError(f"cannot concatenate along axis {axis}")
        for i, dims in enumerate(zip(*in_shapes)):
            if i != a and len({d for d in dims if d is not None}) > 1:
                raise ValueError("inputs differ outside the concatenation axis")
        sizes = [s[a] for s in in_shapes]
        out = list(in_shapes[0])
        out[a] = None if None in sizes else sum(sizes)
        return tuple(out)

    return LayerImpl(lambda xs, ws: np.concatenate(xs, axis=axis), output_shape, min_inputs=1,
                     max_inputs=None)
