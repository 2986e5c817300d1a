"""Builders for convolution, pooling, padding, cropping and upsampling layers (channels_last).

1D layers run through the 2D kernels with a height of one row.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nnzip.infer import ops
from nnzip.infer.config import KERAS3
from nnzip.infer.registry import LayerContext, LayerImpl, Shape, register


def _rank_of(ctx: LayerContext) -> int:
    return 1 if ctx.class_name.endswith("1D") else 2


def _as_2d(x: np.ndarray, rank: int) -> np.ndarray:
    return x[:, None] if rank == 1 else x


def _from_2d(y: np.ndarray, rank: int) -> np.ndarray:
    return y[:, 0] if rank == 1 else y


def _lift(values: tuple[int, ...], fill: int = 1) -> tuple[int, int]:
    """A 1D window parameter as its (H, W) pair; 2D passes through."""
    return (fill, values[0]) if len(values) == 1 else (values[0], values[1])


class _Window:
    """Kernel size, strides, dilation and padding of a convolution or pooling layer."""

    def __init__(self, ctx: LayerContext, pooling: bool = False):
        ctx.require_channels_last()
        self.rank = _rank_of(ctx)
        self.size = ctx.ints("pool_size" if pooling else "kernel_size", self.rank)
        self.strides = ctx.ints("strides", self.rank, self.size if pooling else 1)
        self.dilation = (1,) * self.rank if pooling else ctx.ints("dilation_rate", self.rank, 1)
        self.padding = str(ctx.get("padding", "valid")).lower()
        allowed = ("valid", "same", "causal") if self.rank == 1 and not pooling else ("valid", "same")
        if self.padding not in allowed:
            raise ctx.unsupported(f"padding={self.padding!r}")

    def out_spatial(self, shape: Shape) -> Shape:
        """Output spatial sizes for an input shape (spatial axes then channels)."""
        return tuple(
            ops.conv_output_length(n, k, s, d, self.padding)
            for n, k, s, d in zip(shape[:-1], self.size, self.strides, self.dilation)
        )

    @property
    def size2(self) -> tuple[int, int]:
        """Window size as (H, W)."""
        return _lift(self.size)

    @property
    def strides2(self) -> tuple[int, int]:
        """Strides as (H, W)."""
        return _lift(self.strides)

    @property
    def dilation2(self) -> tuple[int, int]:
        """Dilation as (H, W)."""
        return _lift(self.dilation)


def _with_bias_and_activation(ctx: LayerContext, core: Callable[[np.ndarray, list[np.ndarray]], np.ndarray],
                              n_kernels: int, use_bias: bool, rank: int):
    activation = ctx.activation()

    def forward(xs: list[np.ndarray], ws: list[np.ndarray]) -> np.ndarray:
        y = _from_2d(core(_as_2d(xs[0], rank), ws[:n_kernels]), rank)
        if use_bias:
            y = y + ws[n_kernels]
        return activation(y)

    return forward


@register("Conv1D", "Conv2D")
def build_conv(ctx: LayerContext) -> LayerImpl:
    """Conv1D / Conv2D with strides, dilation, 'valid'/'same' (and 1D 'causal') padding, groups."""
    win = _Window(ctx)
    filters, groups = ctx.positive_int("filters"), ctx.positive_int("groups", 1)
    use_bias = ctx.get("use_bias", True)
    if filters % groups:
        raise ctx.unsupported(f"groups={groups} with filters={filters}")

    def core(x: np.ndarray, ws: list[np.ndarray]) -> np.ndarray:
        kernel = ws[0].reshape(win.size2 + ws[0].shape[-2:])
        return ops.conv2d(x, kernel, win.strides2, win.padding, win.dilation2, groups)

    def weight_shapes(in_shapes: list[Shape]) -> list[Shape]:
        cin = in_shapes[0][-1]
        if cin is not None and cin % groups:
            raise ValueError(f"{cin} input channels do not split into {groups} groups")
        kernel = win.size + (None if cin is None else cin // groups, filters)
        return [kernel] + ([(filters,)] if use_bias else [])

    return LayerImpl(
        _with_bias_and_activation(ctx, core, 1, use_bias, win.rank),
        lambda s: win.out_spatial(s[0]) + (filters,),
        ("kernel", "bias") if use_bias else ("kernel",),
        weight_shapes,
        input_rank=win.rank + 1,
    )


def _depthwise_kernel_name(ctx: LayerContext) -> str:
    # Keras 3 calls the DepthwiseConv2D kernel "kernel", Keras 2 "depthwise_kernel".
    return "kernel" if ctx.flavour == KERAS3 and ctx.class_name.startswith("Depthwise") else "depthwise_kernel"


@register("DepthwiseConv1D", "DepthwiseConv2D")
def build_depthwise_conv(ctx: LayerContext) -> LayerImpl:
    """Depthwise convolution with ``depth_multiplier`` (output channel = c * M + m)."""
    win = _Window(ctx)
    mult = ctx.positive_int("depth_multiplier", 1)
    use_bias = ctx.get("use_bias", True)
    kernel_name = _depthwise_kernel_name(ctx)

    def core(x: np.ndarray, ws: list[np.ndarray]) -> np.ndarray:
        kernel = ws[0].reshape(win.size2 + ws[0].shape[-2:])
        return ops.depthwise_conv2d(x, kernel, win.strides2, win.padding, win.dilation2)

    def weight_shapes(in_shapes: list[Shape]) -> list[Shape]:
        cin = in_shapes[0][-1]
        return [win.size + (cin, mult)] + ([(None if cin is None else cin * mult,)] if use_bias else [])

    def output_shape(in_shapes: list[Shape]) -> Shape:
        cin = in_shapes[0][-1]
        return win.out_spatial(in_shapes[0]) + (None if cin is None else cin * mult,)

    return LayerImpl(_with_bias_and_activation(ctx, core, 1, use_bias, win.rank), output_shape,
                     (kernel_name, "bias") if use_bias else (kernel_name,), weight_shapes,
                     input_rank=win.rank + 1)


@register("SeparableConv1D", "SeparableConv2D")
def build_separable_conv(ctx: LayerContext) -> LayerImpl:
    """Depthwise convolution (strides, padding, dilation) then a 1x1 pointwise convolution."""
    win = _Window(ctx)
    mult = ctx.positive_int("depth_multiplier", 1)
    filters = ctx.positive_int("filters")
    use_bias = ctx.get("use_bias", True)

    def core(x: np.ndarray, ws: list[np.ndarray]) -> np.ndarray:
        depthwise = ws[0].reshape(win.size2 + ws[0].shape[-2:])
        y = ops.depthwise_conv2d(x, depthwise, win.strides2, win.padding, win.dilation2)
        return ops.matmul_last(y, ws[1].reshape(ws[1].shape[-2:]))

    def weight_shapes(in_shapes: list[Shape]) -> list[Shape]:
        cin = in_shapes[0][-1]
        mid = None if cin is None else cin * mult
        shapes = [win.size + (cin, mult), (1,) * win.rank + (mid, filters)]
        return shapes + ([(filters,)] if use_bias else [])

    names = ("depthwise_kernel", "pointwise_kernel") + (("bias",) if use_bias else ())
    return LayerImpl(_with_bias_and_activation(ctx, core, 2, use_bias, win.rank),
                     lambda s: win.out_spatial(s[0]) + (filters,), names, weight_shapes,
                     input_rank=win.rank + 1)


@register("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D")
def build_pooling(ctx: LayerContext) -> LayerImpl:
    """Max / average pooling; 'same' average pooling leaves the padding out of the count (TF)."""
    win = _Window(ctx, pooling=True)
    pool = ops.max_pool2d if ctx.class_name.startswith("Max") else ops.avg_pool2d

    def forward(xs: list[np.ndarray], ws: list[np.ndarray]) -> np.ndarray:
        x = _as_2d(xs[0], win.rank)
        return _from_2d(pool(x, win.size2, win.strides2, win.padding), win.rank)

    return LayerImpl(forward, lambda s: win.out_spatial(s[0]) + s[0][-1:], input_rank=win.rank + 1)


@register("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D")
def build_global_pooling(ctx: LayerContext) -> LayerImpl:
    """Mean or max over all spatial axes (``keepdims`` supported)."""
    ctx.require_channels_last()
    keepdims = bool(ctx.get("keepdims", False))
    is_max = "Max" in ctx.class_name

    def forward(xs: list[np.ndarray], ws: list[np.ndarray]) -> np.ndarray:
        x = xs[0]
        axes = tuple(range(1, x.ndim - 1))
        if is_max:
            return x.max(axis=axes, keepdims=keepdims)
        return x.mean(axis=axes, keepdims=keepdims, dtype=np.float64).astype(x.dtype)

    def output_shape(in_shapes: list[Shape]) -> Shape:
        shape = in_shapes[0]
        return ((1,) * (len(shape) - 1) if keepdims else ()) + shape[-1:]

    return LayerImpl(forward, output_shape, input_rank=_rank_of(ctx) + 1)


def _pairs(ctx: LayerContext, key: str, rank: int) -> tuple[tuple[int, int], ...]:
    """Padding/cropping config (int, per-axis ints, or per-axis (before, after)) as pairs."""
    value = ctx.get(key)
    if _count(value):
        return ((value, value),) * rank
    if rank == 1 and isinstance(value, list) and len(value) == 2 and all(map(_count, value)):
        return ((value[0], value[1]),)
    if isinstance(value, list) and len(value) == rank:
        out = []
        for v in value:
            if _count(v):
                out.append((v, v))
            elif isinstance(v, list) and len(v) == 2 and all(map(_count, v)):
                out.append((v[0], v[1]))
            else:
                raise ctx.unsupported(f"{key}={value!r}")
        return tuple(out)
    raise ctx.unsupported(f"{key}={value!r}")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _resize_shape(shape: Shape, deltas: tuple[int, ...]) -> Shape:
    return tuple(None if n is None else n + d for n, d in zip(shape[:-1], deltas)) + shape[-1:]


@register("ZeroPadding1D", "ZeroPadding2D")
def build_zero_padding(ctx: LayerContext) -> LayerImpl:
    """Zero padding of the spatial axes."""
    ctx.require_channels_last()
    pads = _pairs(ctx, "padding", _rank_of(ctx))

    def forward(xs: list[np.ndarray], ws: list[np.ndarray]) -> np.ndarray:
        return np.pad(xs[0], ((0, 0),) + pads + ((0, 0),))

    return LayerImpl(forward, lambda s: _resize_shape(s[0], tuple(a + b for a, b in pads)),
                     input_rank=len(pads) + 1)


@register("Cropping1D", "Cropping2D")
def build_cropping(ctx: LayerContext) -> LayerImpl:
    """Cropping of the spatial axes."""
    ctx.require_channels_last()
    crops = _pairs(ctx, "cropping", _rank_of(ctx))

    def forward(xs: list[np.ndarray], ws: list[np.ndarray]) -> np.ndarray:
        index = tuple(slice(a, n - b) for (a, b), n in zip(crops, xs[0].shape[1:-1]))
        return xs[0][(slice(None),) + index]

    def output_shape(in_shapes: list[Shape]) -> Shape:
        out = _resize_shape(in_shapes[0], tuple(-a - b for a, b in crops))
        if any(n is not None and n < 1 for n in out):
            raise ValueError(f"cropping {crops} removes the whole input")
        return out

    return LayerImpl(forward, output_shape, input_rank=len(crops) + 1)


@register("UpSampling1D", "UpSampling2D")
def build_upsampling(ctx: LayerContext) -> LayerImpl:
    """Nearest-neighbour upsampling by integer factors."""
    ctx.require_channels_last()
    interpolation = ctx.get("interpolation", "nearest")
    if interpolation != "nearest":
        raise ctx.unsupported(f"interpolation={interpolation!r}")
    rank = _rank_of(ctx)
    size = ctx.ints("size", rank, 2)

    def forward(xs: list[np.ndarray], ws: list[np.ndarray]) -> np.ndarray:
        y = xs[0]
        for axis, factor in enumerate(size, start=1):
            y = np.repeat(y, factor, axis=axis)
        return y

    def output_shape(in_shapes: list[Shape]) -> Shape:
        shape = in_shapes[0]
        return tuple(None if n is None else n * f for n, f in zip(shape[:-1], size)) + shape[-1:]

    return LayerImpl(forward, output_shape, input_rank=rank + 1)
