"""Tests of nnzip.infer: numpy inference from Keras model configs.

Most tests build small Keras models with random weights and compare Keras' output with
the numpy model's (rtol 1e-4). Tests that need no Keras use hand-written configs.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from nnzip.errors import NnzipError
from nnzip.infer import ModelWeightsError, NumpyModel, UnsupportedModelError, build_model
from nnzip.infer import ops

RTOL, ATOL = 1e-4, 1e-5


# ``keras`` is the fixture of tests/conftest.py (fails under NNZIP_REQUIRE_KERAS=1 when Keras does not import).


def randomize(model, seed: int = 0) -> None:
    """Give every weight of ``model`` random values of a sensible scale."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        values = []
        for var in layer.weights:
            shape, name = tuple(var.shape), var.name
            if name == "count":
                v = var.numpy() if hasattr(var, "numpy") else np.asarray(var)
            elif name in ("moving_variance", "variance"):
                v = rng.uniform(0.5, 2.0, shape)
            elif name == "gamma":
                v = rng.uniform(0.5, 1.5, shape)
            elif name in ("moving_mean", "mean", "beta", "bias", "alpha"):
                v = rng.normal(0.0, 0.3, shape)
            else:
                fan_in = int(np.prod(shape[:-1])) or 1
                v = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
            values.append(v.astype(np.float32))
        if values and not hasattr(layer, "layers"):
            layer.set_weights(values)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def keras_weights(model) -> dict[str, list[np.ndarray]]:
    """layer name -> get_weights(), as the tests feed build_model."""
    return {layer.name: layer.get_weights() for layer in model.layers}


def keras_run(keras, model, x):
    """Keras inference output(s) as numpy."""
    out = model(x, training=False)
    if isinstance(out, (list, tuple)):
        return [keras.ops.convert_to_numpy(o) for o in out]
    return keras.ops.convert_to_numpy(out)


def numpy_model(model) -> NumpyModel:
    """build_model from the model's JSON config and its layers' weights."""
    return build_model(json.loads(model.to_json()), keras_weights(model))


def assert_matches(keras, model, x, seed: int = 0) -> NumpyModel:
    """Randomize ``model``, then check the numpy model predicts what Keras predicts."""
    randomize(model, seed)
    nm = numpy_model(model)
    expected, got = keras_run(keras, model, x), nm.predict(x)
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for e, g in zip(expected, got):
            np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)
    else:
        assert got.dtype == np.float32
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    return nm


def sequential(keras, shape, *layers):
    """A Sequential model with an explicit Input."""
    return keras.Sequential([keras.Input(shape), *layers])


def data(shape, n: int = 4, seed: int = 1, scale: float = 1.0) -> np.ndarray:
    """Random float32 inputs of per-sample ``shape``."""
    return (np.random.default_rng(seed).normal(size=(n, *shape)) * scale).astype(np.float32)


# --------------------------------------------------------------------------------------
# Single layers against Keras

SINGLE_LAYER_CASES = {
    "dense": (lambda L: L.Dense(5), (7,)),
    "dense_nobias_relu": (lambda L: L.Dense(5, use_bias=False, activation="relu"), (7,)),
    "dense_rank3": (lambda L: L.Dense(4, activation="tanh"), (3, 6)),
    "conv_valid": (lambda L: L.Conv2D(4, 3), (8, 8, 3)),
    "conv_same_s1": (lambda L: L.Conv2D(4, 3, padding="same"), (7, 7, 3)),
    "conv_same_s2_even": (lambda L: L.Conv2D(4, 3, strides=2, padding="same"), (8, 8, 3)),
    "conv_same_s2_odd": (lambda L: L.Conv2D(4, 3, strides=2, padding="same"), (9, 7, 3)),
    "conv_same_k4_s2_odd": (lambda L: L.Conv2D(3, 4, strides=2, padding="same"), (9, 9, 2)),
    "conv_same_k2_even": (lambda L: L.Conv2D(3, 2, padding="same"), (6, 6, 2)),
    "conv_valid_s2": (lambda L: L.Conv2D(4, (3, 2), strides=(2, 1)), (9, 8, 3)),
    "conv_dilated_valid": (lambda L: L.Conv2D(4, 3, dilation_rate=2), (10, 10, 3)),
    "conv_dilated_same": (lambda L: L.Conv2D(4, 3, dilation_rate=(2, 3), padding="same"), (9, 10, 3)),
    "conv_1x1": (lambda L: L.Conv2D(5, 1, activation="relu"), (5, 5, 3)),
    "conv_1x1_s2": (lambda L: L.Conv2D(5, 1, strides=2), (5, 5, 3)),
    "conv_groups": (lambda L: L.Conv2D(6, 3, groups=2, padding="same"), (6, 6, 4)),
    "conv_nobias": (lambda L: L.Conv2D(4, 3, use_bias=False, activation="sigmoid"), (6, 6, 3)),
    "depthwise": (lambda L: L.DepthwiseConv2D(3), (7, 7, 3)),
    "depthwise_dm2_same_s2": (lambda L: L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2), (9, 9, 3)),
    "depthwise_dilated": (lambda L: L.DepthwiseConv2D(3, dilation_rate=2, padding="same", use_bias=False), (8, 8, 2)),
    "separable": (lambda L: L.SeparableConv2D(5, 3), (7, 7, 3)),
    "separable_dm2_same_s2": (lambda L: L.SeparableConv2D(5, 3, strides=2, padding="same", depth_multiplier=2,
                                                          activation="relu"), (8, 8, 3)),
    "batchnorm": (lambda L: L.BatchNormalization(), (5, 5, 4)),
    "batchnorm_dense": (lambda L: L.BatchNormalization(epsilon=0.01), (6,)),
    "batchnorm_noscale": (lambda L: L.BatchNormalization(scale=False), (5, 5, 4)),
    "batchnorm_nocenter": (lambda L: L.BatchNormalization(center=False), (5, 5, 4)),
    "batchnorm_bare": (lambda L: L.BatchNormalization(center=False, scale=False), (4, 3)),
    "maxpool": (lambda L: L.MaxPooling2D(), (8, 8, 3)),
    "maxpool_odd": (lambda L: L.MaxPooling2D(), (9, 7, 3)),
    "maxpool_same_odd": (lambda L: L.MaxPooling2D(padding="same"), (9, 7, 3)),
    "maxpool_3s2_same_even": (lambda L: L.MaxPooling2D(3, 2, padding="same"), (8, 8, 3)),
    "maxpool_3s1_valid": (lambda L: L.MaxPooling2D(3, 1), (6, 6, 2)),
    "avgpool": (lambda L: L.AveragePooling2D(2), (8, 8, 3)),
    "avgpool_same_odd": (lambda L: L.AveragePooling2D(2, padding="same"), (9, 7, 3)),
    "avgpool_3s1_same": (lambda L: L.AveragePooling2D(3, 1, padding="same"), (6, 5, 2)),
    "avgpool_3s2_valid": (lambda L: L.AveragePooling2D(3, 2), (9, 9, 2)),
    "gap": (lambda L: L.GlobalAveragePooling2D(), (5, 6, 3)),
    "gap_keepdims": (lambda L: L.GlobalAveragePooling2D(keepdims=True), (5, 6, 3)),
    "gmp": (lambda L: L.GlobalMaxPooling2D(), (5, 6, 3)),
    "flatten": (lambda L: L.Flatten(), (3, 4, 2)),
    "reshape": (lambda L: L.Reshape((4, 6)), (3, 4, 2)),
    "reshape_minus1": (lambda L: L.Reshape((-1, 2)), (3, 4, 2)),
    "dropout": (lambda L: L.Dropout(0.5), (6,)),
    "spatial_dropout": (lambda L: L.SpatialDropout2D(0.5), (4, 4, 2)),
    "gaussian_noise": (lambda L: L.GaussianNoise(1.0), (6,)),
    "relu": (lambda L: L.ReLU(), (10,)),
    "relu_max6": (lambda L: L.ReLU(max_value=6.0), (10,)),
    "relu_slope": (lambda L: L.ReLU(negative_slope=0.1), (10,)),
    "relu_threshold": (lambda L: L.ReLU(threshold=0.5), (10,)),
    "relu_all": (lambda L: L.ReLU(max_value=1.5, negative_slope=0.2, threshold=0.3), (10,)),
    "leaky_relu": (lambda L: L.LeakyReLU(), (10,)),
    "leaky_relu_slope": (lambda L: L.LeakyReLU(negative_slope=0.05), (10,)),
    "prelu": (lambda L: L.PReLU(), (4, 3)),
    "prelu_shared": (lambda L: L.PReLU(shared_axes=[1, 2]), (3, 3, 4)),
    "elu_layer": (lambda L: L.ELU(alpha=0.7), (10,)),
    "softmax_layer": (lambda L: L.Softmax(), (3, 5)),
    "softmax_axis1": (lambda L: L.Softmax(axis=1), (3, 5)),
    "zeropad": (lambda L: L.ZeroPadding2D(), (4, 5, 2)),
    "zeropad_asym": (lambda L: L.ZeroPadding2D(((1, 2), (0, 3))), (4, 5, 2)),
    "cropping": (lambda L: L.Cropping2D(((1, 0), (2, 1))), (5, 6, 2)),
    "upsampling": (lambda L: L.UpSampling2D((2, 3)), (3, 2, 2)),
    "permute": (lambda L: L.Permute((2, 1)), (3, 4)),
    "rescaling": (lambda L: L.Rescaling(1 / 127.5, offset=-1.0), (6,)),
    "normalization": (lambda L: L.Normalization(), (3, 4)),
    "normalization_invert": (lambda L: L.Normalization(axis=(1, 2), invert=True), (3, 4)),
    "normalization_fixed": (lambda L: L.Normalization(mean=[1.0, 2.0, 3.0, 4.0], variance=[1.0, 4.0, 0.25, 9.0]),
                            (3, 4)),
    "layernorm": (lambda L: L.LayerNormalization(), (3, 6)),
    "layernorm_axes": (lambda L: L.LayerNormalization(axis=[1, 2]), (3, 6)),
    "repeat_vector": (lambda L: L.RepeatVector(3), (4,)),
    "conv1d_valid": (lambda L: L.Conv1D(4, 3), (10, 3)),
    "conv1d_same_s2": (lambda L: L.Conv1D(4, 3, strides=2, padding="same"), (9, 3)),
    "conv1d_causal_dilated": (lambda L: L.Conv1D(4, 3, padding="causal", dilation_rate=2), (10, 3)),
    "depthwise1d": (lambda L: L.DepthwiseConv1D(3, strides=2, padding="same", depth_multiplier=2), (9, 3)),
    "separable1d": (lambda L: L.SeparableConv1D(4, 3, dilation_rate=2), (10, 3)),
    "maxpool1d": (lambda L: L.MaxPooling1D(3, padding="same"), (10, 3)),
    "avgpool1d": (lambda L: L.AveragePooling1D(2), (10, 3)),
    "gap1d": (lambda L: L.GlobalAveragePooling1D(), (10, 3)),
    "gmp1d": (lambda L: L.GlobalMaxPooling1D(), (10, 3)),
    "zeropad1d": (lambda L: L.ZeroPadding1D((1, 2)), (5, 3)),
    "cropping1d": (lambda L: L.Cropping1D((1, 2)), (6, 3)),
    "upsampling1d": (lambda L: L.UpSampling1D(2), (4, 3)),
}


@pytest.mark.parametrize("case", sorted(SINGLE_LAYER_CASES))
def test_single_layer_matches_keras(keras, case):
    make_layer, shape = SINGLE_LAYER_CASES[case]
    model = sequential(keras, shape, make_layer(keras.layers))
    assert_matches(keras, model, data(shape, scale=2.0))


ACTIVATIONS = ["relu", "sigmoid", "tanh", "softmax", "elu", "selu", "gelu", "swish", "silu",
               "softplus", "softsign", "hard_sigmoid", "linear", "leaky_relu", "exponential",
               "relu6", "hard_silu", "mish", "log_softmax"]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_keras(keras, name):
    # Dense with the activation, and the same activation as an Activation layer
    L = keras.layers
    inp = keras.Input((6,))
    out = L.Concatenate()([L.Dense(8, activation=name)(inp), L.Activation(name)(inp)])
    assert_matches(keras, keras.Model(inp, out), data((6,), n=16, scale=3.0))


def test_gelu_is_exact_erf_form(keras):
    """keras.activations.gelu defaults to approximate=False; numpy inference matches that."""
    x = np.linspace(-4, 4, 101, dtype=np.float32)
    model = sequential(keras, (101,), keras.layers.Activation("gelu"))
    got = numpy_model(model).predict(x[None])[0]
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(keras.activations.gelu(x)), rtol=1e-5, atol=1e-6)
    tanh_form = keras.ops.convert_to_numpy(keras.activations.gelu(x, approximate=True))
    assert np.abs(got - tanh_form).max() > 1e-4


# --------------------------------------------------------------------------------------
# Graphs against Keras

@pytest.mark.parametrize("merge", ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
                                   "Concatenate"])
def test_merge_layers(keras, merge):
    L = keras.layers
    inp = keras.Input((5, 5, 3))
    a = L.Conv2D(4, 3, padding="same")(inp)
    b = L.Conv2D(4, 1, activation="relu")(inp)
    out = getattr(L, merge)()([a, b])
    assert_matches(keras, keras.Model(inp, out), data((5, 5, 3)))


def test_concatenate_axis_and_three_inputs(keras):
    L = keras.layers
    inp = keras.Input((4, 6))
    a, b, c = L.Dense(6)(inp), L.Dense(6, activation="relu")(inp), L.Dense(6)(inp)
    out = L.Concatenate(axis=1)([a, b, c])
    out = L.Add()([L.Concatenate(axis=-1)([out, out]), L.Dense(12)(out)])
    assert_matches(keras, keras.Model(inp, out), data((4, 6)))


def test_merge_broadcasts_lower_rank(keras):
    L = keras.layers
    inp = keras.Input((3, 4))
    vec = L.GlobalAveragePooling1D()(inp)  # (N, 4) + (N, 3, 4)
    out = L.Add()([inp, vec])
    assert_matches(keras, keras.Model(inp, out), data((3, 4)))


def small_resnet(keras, shape=(12, 12, 3)):
    """Functional CNN with residual (Add) and Inception-like (Concatenate) branches."""
    L = keras.layers
    inp = keras.Input(shape, name="image")
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(max_value=6.0)(x)
    shortcut = x
    y = L.DepthwiseConv2D(3, padding="same")(x)
    y = L.BatchNormalization()(y)
    y = L.Activation("swish")(y)
    y = L.Conv2D(8, 1)(y)
    x = L.Add(name="residual")([shortcut, y])
    b1 = L.Conv2D(4, 1, activation="relu")(x)
    b2 = L.SeparableConv2D(4, 3, padding="same", activation="relu")(x)
    b3 = L.MaxPooling2D(3, strides=1, padding="same")(x)
    x = L.Concatenate()([b1, b2, b3])
    x = L.AveragePooling2D(2)(x)
    x = L.ZeroPadding2D(1)(x)
    x = L.Conv2D(6, 3, strides=2, padding="valid", dilation_rate=1)(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.3)(x)
    x = L.Dense(10, name="logits")(x)
    return keras.Model(inp, x)


def test_functional_resnet_like(keras):
    model = small_resnet(keras)
    nm = assert_matches(keras, model, data((12, 12, 3), n=6))
    assert nm.input_shape == (None, 12, 12, 3)
    assert nm.output_shape == (None, 10)
    assert nm.input_names == ["image"]
    assert nm.layer_names == [l.name for l in model.layers if l.name != "image"]
    layout = nm.weight_layout()
    assert layout["logits"] == ["kernel", "bias"]
    assert layout["bn1"] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert layout["residual"] == []
    for layer in model.layers[1:]:
        assert len(layout[layer.name]) == len(layer.get_weights())


def test_layer_outputs_match_keras_intermediates(keras):
    model = small_resnet(keras)
    randomize(model)
    x = data((12, 12, 3), n=5)
    nm = numpy_model(model)
    outs = nm.layer_outputs(x, batch_size=2)
    assert list(outs) == nm.layer_names
    probe = keras.Model(model.inputs[0], [l.output for l in model.layers[1:]])
    for layer, expected in zip(model.layers[1:], keras_run(keras, probe, x)):
        np.testing.assert_allclose(outs[layer.name], expected, rtol=RTOL, atol=ATOL, err_msg=layer.name)
    some = nm.layer_outputs(x, ["residual", "logits"])
    assert list(some) == ["residual", "logits"]
    np.testing.assert_array_equal(some["logits"], nm.predict(x))
    with pytest.raises(KeyError, match="nope"):
        nm.layer_outputs(x, ["nope"])


def test_predict_batching_is_consistent(keras):
    model = small_resnet(keras)
    randomize(model)
    nm = numpy_model(model)
    x = data((12, 12, 3), n=11)
    full = nm.predict(x)
    np.testing.assert_allclose(nm.predict(x, batch_size=3), full, rtol=1e-6, atol=1e-7)
    assert nm.predict(x[:0]).shape == (0, 10)


def test_conv_chunking(keras, monkeypatch):
    """Splitting large batches into im2col chunks does not change results."""
    model = sequential(keras, (9, 9, 4), keras.layers.Conv2D(6, 3, padding="same", groups=2),
                       keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2))
    randomize(model)
    x = data((9, 9, 4), n=7)
    expected = numpy_model(model).predict(x)
    monkeypatch.setattr(ops, "PATCH_BYTES", 3000)
    np.testing.assert_allclose(numpy_model(model).predict(x), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(expected, keras_run(keras, model, x), rtol=RTOL, atol=ATOL)


def test_multi_input_multi_output(keras):
    L = keras.layers
    a_in, b_in = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    h = L.Concatenate()([L.Dense(5, activation="relu")(a_in), L.Dense(5)(b_in)])
    out1, out2 = L.Dense(3, name="out1")(h), L.Dense(2, activation="sigmoid", name="out2")(h)
    model = keras.Model([a_in, b_in], [out1, out2])
    xa, xb = data((6,), n=5), data((4,), n=5, seed=2)
    randomize(model)
    nm = numpy_model(model)
    expected = keras_run(keras, model, [xa, xb])
    for got in (nm.predict([xa, xb]), nm.predict({"b": xb, "a": xa})):
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)
    assert nm.input_shape == [(None, 6), (None, 4)]
    assert nm.output_shape == [(None, 3), (None, 2)]


def test_keras3_operations_with_constants(keras):
    """``x + 3.0`` and friends are serialized by Keras 3 as operations with constant args."""
    L = keras.layers
    inp = keras.Input((5,))
    x = L.Dense(5)(inp)
    hard_swish = x * (L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0))
    y = 1.0 - hard_swish / 2.0
    y = keras.ops.maximum(y, 0.25) - keras.ops.minimum(x, 0.5)
    assert_matches(keras, keras.Model(inp, y), data((5,), scale=3.0))


def test_keras3_unsupported_operation_is_named(keras):
    inp = keras.Input((5,))
    model = keras.Model(inp, keras.ops.sin(keras.layers.Dense(5)(inp)))
    with pytest.raises(UnsupportedModelError, match="Sin"):
        numpy_model(model)


def test_keras_application_mobilenet_v3(keras):
    """A real architecture: Rescaling, hard-swish operations, squeeze-excite Multiply, ZeroPadding."""
    model = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=10,
                                                alpha=0.75, include_preprocessing=True)
    randomize(model, seed=5)
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    nm = numpy_model(model)
    logits = model.layers[-2]  # the layer before the final softmax
    probe = keras.Model(model.inputs[0], [logits.output, model.output])
    for expected, got in zip(keras_run(keras, probe, x), (nm.layer_outputs(x, [logits.name])[logits.name],
                                                           nm.predict(x))):
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_shared_layer(keras):
    L = keras.layers
    inp = keras.Input((6,))
    shared = L.Dense(6, activation="tanh", name="shared")
    out = L.Add(name="sum")([shared(inp), shared(shared(inp))])
    model = keras.Model(inp, out)
    nm = assert_matches(keras, model, data((6,)))
    outs = nm.layer_outputs(data((6,)))
    assert {"shared", "shared:1", "shared:2", "sum"} <= set(outs)


def test_nested_model(keras):
    """A Functional base model used as a layer of a Sequential (transfer-learning style)."""
    L = keras.layers
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", name="base_conv")(inp)
    x = L.BatchNormalization(name="base_bn")(x)
    base = keras.Model(inp, L.ReLU()(x), name="base")
    model = keras.Sequential([keras.Input((8, 8, 3)), base, L.GlobalAveragePooling2D(), L.Dense(3)])
    nm = assert_matches(keras, model, data((8, 8, 3)))
    assert nm.weight_layout()["base"] == ["base_conv/kernel", "base_conv/bias", "base_bn/gamma",
                                          "base_bn/beta", "base_bn/moving_mean", "base_bn/moving_variance"]
    # a dict of inner layers works as well as the flat get_weights() list
    weights = keras_weights(model)
    weights["base"] = keras_weights(base)
    np.testing.assert_allclose(build_model(model.to_json(), weights).predict(data((8, 8, 3))),
                               nm.predict(data((8, 8, 3))), rtol=1e-6)
    assert "base/base_bn" in nm.layer_outputs(data((8, 8, 3)))


def _h5_layer_weights(h5py, path):
    """layer name -> (weight_names, arrays) as stored in a legacy .h5 file."""
    with h5py.File(path, "r") as f:
        group = f["model_weights"]
        out = {}
        for layer in group.attrs["layer_names"]:
            names = [_text(w) for w in group[_text(layer)].attrs["weight_names"]]
            out[_text(layer)] = (names, [np.asarray(group[_text(layer)][w]) for w in names])
    return out


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("tail", ["dense", "bn"])
def test_nested_model_from_legacy_h5(keras, tmp_path, frozen, tail):
    """A legacy .h5 stores a nested model's weights trainable-first, not in get_weights() order."""
    h5py = pytest.importorskip("h5py")
    L = keras.layers
    inp = keras.Input((6, 6, 3))
    x = L.BatchNormalization(name="inner_bn1")(L.Conv2D(4, 3, name="inner_conv")(inp))
    x = L.Dense(4, name="inner_dense")(x) if tail == "dense" else L.BatchNormalization(name="inner_bn2")(x)
    base = keras.Model(inp, x, name="base")
    model = keras.Sequential([keras.Input((6, 6, 3)), base, L.Flatten(), L.Dense(2)])
    randomize(model, seed=7)
    base.trainable = not frozen
    path = tmp_path / "nested.h5"
    model.save(path)
    stored = _h5_layer_weights(h5py, path)
    with h5py.File(path, "r") as f:
        config = f.attrs["model_config"]
    weights = {layer: arrays for layer, (_, arrays) in stored.items()}
    x = data((6, 6, 3))
    expected = keras_run(keras, model, x)
    nm = build_model(config, weights, weight_order="h5")
    assert nm.weight_layout(order="h5")["base"] == stored["base"][0]
    np.testing.assert_allclose(nm.predict(x), expected, rtol=RTOL, atol=ATOL)
    if tail == "dense":  # shapes tell the two orders apart: the default order falls back
        np.testing.assert_allclose(build_model(config, weights).predict(x), expected, rtol=RTOL, atol=ATOL)


def test_sequential_without_input_layer(keras):
    L = keras.layers
    model = keras.Sequential([L.Dense(4, activation="relu"), L.Dense(2)])
    model.build((None, 5))
    nm = assert_matches(keras, model, data((5,)))
    assert nm.input_shape == (None, 5)


# --------------------------------------------------------------------------------------
# Legacy .h5 files and Keras 2 configs

def test_legacy_h5_config(keras, tmp_path):
    h5py = pytest.importorskip("h5py")
    model = small_resnet(keras)
    randomize(model, seed=3)
    path = tmp_path / "m.h5"
    model.save(path)
    with h5py.File(path, "r") as f:
        config = f.attrs["model_config"]
        config = config.decode() if isinstance(config, bytes) else config
        group = f["model_weights"]
        names = {_text(layer): [_text(w) for w in group[layer].attrs["weight_names"]]
                 for layer in group.attrs["layer_names"]}
        from_file = {layer: [np.asarray(group[layer][w]) for w in ws] for layer, ws in names.items()}
    loaded = keras.models.load_model(path, compile=False)
    x = data((12, 12, 3), n=5)
    expected = keras_run(keras, model, x)
    for weights in (keras_weights(loaded), from_file):
        nm = build_model(config, weights)
        np.testing.assert_allclose(nm.predict(x), expected, rtol=RTOL, atol=ATOL)
    # weight_layout names the weights as the .h5 file does (layer/weight)
    for layer, layout in nm.weight_layout().items():
        assert [w.split("/")[-1] for w in names[layer]] == layout


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def keras2_sequential_config() -> dict:
    """A tf.keras 2.x style Sequential config (batch_input_shape on the first layer)."""
    init = {"class_name": "GlorotUniform", "config": {"seed": None}}
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
        {"class_name": "Conv2D", "config": {
            "name": "conv2d", "trainable": True, "batch_input_shape": [None, 7, 7, 2], "dtype": "float32",
            "filters": 3, "kernel_size": [3, 3], "strides": [2, 2], "padding": "same",
            "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1, "activation": "relu",
            "use_bias": True, "kernel_initializer": init, "bias_initializer": {"class_name": "Zeros", "config": {}},
            "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
            "kernel_constraint": None, "bias_constraint": None}},
        {"class_name": "BatchNormalization", "config": {
            "name": "batch_normalization", "trainable": True, "dtype": "float32", "axis": [3],
            "momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True}},
        {"class_name": "LeakyReLU", "config": {"name": "leaky_re_lu", "trainable": True, "dtype": "float32",
                                               "alpha": 0.1}},
        {"class_name": "Flatten", "config": {"name": "flatten", "trainable": True, "dtype": "float32",
                                             "data_format": "channels_last"}},
        {"class_name": "Dense", "config": {"name": "dense", "trainable": True, "dtype": "float32", "units": 4,
                                           "activation": "softmax", "use_bias": True}},
    ]}, "keras_version": "2.12.0", "backend": "tensorflow"}


@pytest.mark.parametrize("input_layer", [False, True])
def test_keras2_sequential_config(keras, input_layer):
    config = keras2_sequential_config()
    if input_layer:  # newer tf.keras writes an explicit InputLayer entry
        config["config"]["layers"].insert(0, {"class_name": "InputLayer", "config": {
            "batch_input_shape": [None, 7, 7, 2], "dtype": "float32", "sparse": False, "ragged": False,
            "name": "conv2d_input"}})
    L = keras.layers
    twin = sequential(keras, (7, 7, 2), L.Conv2D(3, 3, strides=2, padding="same", activation="relu", name="conv2d"),
                      L.BatchNormalization(name="batch_normalization"), L.LeakyReLU(0.1, name="leaky_re_lu"),
                      L.Flatten(name="flatten"), L.Dense(4, activation="softmax", name="dense"))
    randomize(twin)
    x = data((7, 7, 2))
    nm = build_model(json.dumps(config), keras_weights(twin))
    assert nm.input_shape == (None, 7, 7, 2)
    np.testing.assert_allclose(nm.predict(x), keras_run(keras, twin, x), rtol=RTOL, atol=ATOL)
    # pre-softmax activations too, so the softmax cannot hide errors
    np.testing.assert_allclose(nm.layer_outputs(x, ["flatten"])["flatten"],
                               keras_run(keras, keras.Model(twin.inputs[0], twin.layers[3].output), x),
                               rtol=RTOL, atol=ATOL)


def _k2_layer(class_name, name, inbound, **config):
    return {"class_name": class_name, "name": name,
            "config": {"name": name, "trainable": True, "dtype": "float32", **config},
            "inbound_nodes": [[[src, 0, 0, {}] for src in inbound]] if inbound else []}


def keras2_functional_config() -> dict:
    """A tf.keras 2.x style Functional config: nested-list inbound nodes, Add and Concatenate."""
    layers = [
        _k2_layer("InputLayer", "input_1", [], batch_input_shape=[None, 6, 6, 3], sparse=False, ragged=False),
        _k2_layer("Conv2D", "conv_a", ["input_1"], filters=4, kernel_size=[3, 3], strides=[1, 1], padding="same",
                  data_format="channels_last", dilation_rate=[1, 1], groups=1, activation="linear", use_bias=True),
        _k2_layer("Conv2D", "conv_b", ["input_1"], filters=4, kernel_size=[1, 1], strides=[1, 1], padding="valid",
                  data_format="channels_last", dilation_rate=[1, 1], groups=1, activation="relu", use_bias=False),
        _k2_layer("Add", "add", ["conv_a", "conv_b"]),
        _k2_layer("DepthwiseConv2D", "dw", ["add"], kernel_size=[3, 3], strides=[2, 2], padding="same",
                  depth_multiplier=1, data_format="channels_last", dilation_rate=[1, 1], activation="linear",
                  use_bias=True),
        _k2_layer("MaxPooling2D", "pool", ["add"], pool_size=[2, 2], strides=[2, 2], padding="valid",
                  data_format="channels_last"),
        _k2_layer("Concatenate", "concat", ["dw", "pool"], axis=-1),
        _k2_layer("GlobalAveragePooling2D", "gap", ["concat"], data_format="channels_last", keepdims=False),
        _k2_layer("Dense", "dense", ["gap"], units=3, activation="tanh", use_bias=True),
    ]
    return {"class_name": "Functional", "config": {
        "name": "model", "layers": layers,
        "input_layers": [["input_1", 0, 0]], "output_layers": [["dense", 0, 0]]}}


def test_keras2_functional_config(keras):
    L = keras.layers
    inp = keras.Input((6, 6, 3), name="input_1")
    a = L.Conv2D(4, 3, padding="same", name="conv_a")(inp)
    b = L.Conv2D(4, 1, activation="relu", use_bias=False, name="conv_b")(inp)
    x = L.Add(name="add")([a, b])
    x = L.Concatenate(name="concat")([L.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x),
                                      L.MaxPooling2D(name="pool")(x)])
    x = L.Dense(3, activation="tanh", name="dense")(L.GlobalAveragePooling2D(name="gap")(x))
    twin = keras.Model(inp, x)
    randomize(twin)
    weights = keras_weights(twin)
    weights["dw"] = twin.get_layer("dw").get_weights()
    x = data((6, 6, 3))
    nm = build_model(keras2_functional_config(), weights)
    np.testing.assert_allclose(nm.predict(x), keras_run(keras, twin, x), rtol=RTOL, atol=ATOL)
    assert nm.weight_layout()["dw"] == ["depthwise_kernel", "bias"]  # the Keras 2 weight name


def test_keras2_hard_sigmoid_semantics():
    """tf.keras hard_sigmoid is clip(0.2x + 0.5); Keras 3's is clip(x/6 + 0.5)."""
    config = keras2_functional_config()
    config["config"]["layers"] = config["config"]["layers"][:1] + [
        _k2_layer("Activation", "act", ["input_1"], activation="hard_sigmoid")]
    config["config"]["output_layers"] = [["act", 0, 0]]
    x = np.linspace(-4, 4, 6 * 6 * 3, dtype=np.float32).reshape(1, 6, 6, 3)
    np.testing.assert_allclose(build_model(config, {}).predict(x), np.clip(0.2 * x + 0.5, 0, 1), rtol=1e-6)
    np.testing.assert_allclose(build_model(config, {}, keras_version="3.1.0").predict(x),
                               np.clip(x / 6 + 0.5, 0, 1), rtol=1e-6)


# --------------------------------------------------------------------------------------
# TensorFlow padding rules that keras-on-torch does not reproduce

def _avg_pool_reference(x, pool, stride):
    """Naive TF 'same' average pooling: padding is excluded from the count."""
    n, h, w, c = x.shape
    oh, ow = -(-h // stride), -(-w // stride)
    ph = max((oh - 1) * stride + pool - h, 0) // 2
    pw = max((ow - 1) * stride + pool - w, 0) // 2
    out = np.zeros((n, oh, ow, c), np.float32)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * stride - ph, j * stride - pw
            win = x[:, max(r0, 0):r0 + pool, max(c0, 0):c0 + pool]
            out[:, i, j] = win.mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("shape", [(6, 6), (7, 8), (5, 5)])
def test_avg_pool_same_excludes_padding(shape):
    x = np.random.default_rng(0).normal(size=(2, *shape, 3)).astype(np.float32)
    got = ops.avg_pool2d(x, (3, 3), (2, 2), "same")
    np.testing.assert_allclose(got, _avg_pool_reference(x, 3, 2), rtol=1e-6, atol=1e-6)


def test_same_padding_puts_odd_pixel_after():
    assert ops.same_pads(8, 3, 2) == (0, 1)
    assert ops.same_pads(9, 3, 2) == (1, 1)
    assert ops.same_pads(7, 4, 1) == (1, 2)
    assert ops.same_pads(10, 3, 1, dilation=3) == (3, 3)


# --------------------------------------------------------------------------------------
# Errors

def test_unsupported_layer_names_class_and_layer(keras):
    model = sequential(keras, (5, 3), keras.layers.LSTM(4, name="my_lstm"), keras.layers.Dense(2))
    with pytest.raises(UnsupportedModelError, match="LSTM.*my_lstm") as info:
        numpy_model(model)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_channels_first_is_unsupported():
    config = keras2_functional_config()
    config["config"]["layers"][1]["config"]["data_format"] = "channels_first"
    with pytest.raises(UnsupportedModelError, match="conv_a.*channels_first"):
        build_model(config, {})


def test_custom_layer_is_unsupported():
    config = keras2_sequential_config()
    config["config"]["layers"][2] = {"module": "my_package.layers", "class_name": "MyLayer",
                                     "registered_name": "my_package>MyLayer", "config": {"name": "mine"}}
    with pytest.raises(UnsupportedModelError, match="MyLayer.*mine"):
        build_model(config, {})


def test_weight_mismatches_are_reported():
    config = keras2_sequential_config()
    rng = np.random.default_rng(0)
    good = {"conv2d": [rng.normal(size=(3, 3, 2, 3)), np.zeros(3)],
            "batch_normalization": [np.ones(3), np.zeros(3), np.zeros(3), np.ones(3)],
            "dense": [rng.normal(size=(48, 4)), np.zeros(4)]}
    build_model(config, good).predict(np.zeros((1, 7, 7, 2)))
    missing = dict(good, dense=good["dense"][:1])
    with pytest.raises(ModelWeightsError, match="dense.*expected 2"):
        build_model(config, missing)
    wrong = dict(good, dense=[rng.normal(size=(40, 4)), np.zeros(4)])
    with pytest.raises(ModelWeightsError, match=r"kernel.*\(40, 4\).*\(48, 4\)"):
        build_model(config, wrong)
    with pytest.raises(ModelWeightsError, match="ghost"):
        build_model(config, dict(good, ghost=[np.zeros(1)]))


def test_bad_input_shape_is_rejected():
    config = keras2_functional_config()
    weights = {"conv_a": [np.zeros((3, 3, 3, 4)), np.zeros(4)], "conv_b": [np.zeros((1, 1, 3, 4))],
               "dw": [np.zeros((3, 3, 4, 1)), np.zeros(4)], "dense": [np.zeros((8, 3)), np.zeros(3)]}
    nm = build_model(config, weights)
    assert nm.predict(np.zeros((2, 6, 6, 3))).shape == (2, 3)
    with pytest.raises(ValueError, match="shape"):
        nm.predict(np.zeros((2, 5, 6, 3)))


def test_shape_errors_are_reported_at_build():
    config = keras2_sequential_config()
    config["config"]["layers"].insert(4, {"class_name": "Reshape", "config": {"name": "r", "target_shape": [5, 5]}})
    with pytest.raises(UnsupportedModelError, match="Reshape layer 'r'.*cannot be applied"):
        build_model(config, {})
    config = keras2_sequential_config()
    config["config"]["layers"][0]["config"]["batch_input_shape"] = [None, 1, 1, 2]
    config["config"]["layers"][0]["config"]["padding"] = "valid"
    with pytest.raises(UnsupportedModelError, match="conv2d"):
        build_model(config, {})


def _json_paths(obj, path=()):
    yield path
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield from _json_paths(value, path + (key,))


@pytest.mark.parametrize("which", ["functional", "sequential"])
def test_malformed_configs_raise_nnzip_errors(which):
    """Random damage to a config gives an NnzipError from build_model, never another exception."""
    base = keras2_functional_config() if which == "functional" else keras2_sequential_config()
    weights = {"conv_a": [np.zeros((3, 3, 3, 4)), np.zeros(4)], "conv_b": [np.zeros((1, 1, 3, 4))],
               "dw": [np.zeros((3, 3, 4, 1)), np.zeros(4)], "dense": [np.zeros((8, 3)), np.zeros(3)]}
    weights = weights if which == "functional" else {}
    values = [None, 0, -1, 2, 3.5, "x", "same", [], [1], [None, 2], {}, {"a": 1}, True, [[1, 2], [3]],
              ["conv_a", 0, 0], ["conv_a", 5, 0]]
    paths = list(_json_paths(base))[1:]
    rng = np.random.default_rng(0)
    for _ in range(600):
        config, path = copy.deepcopy(base), paths[rng.integers(len(paths))]
        parent = config
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and rng.random() < 0.3:
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(values[rng.integers(len(values))])
        try:
            model = build_model(config, weights)
        except NnzipError:
            continue
        shape = tuple(d or 6 for d in model.input_shape[1:])
        try:
            model.predict(np.zeros((2, *shape)))
        except ValueError as exc:  # unknown dims filled in may not fit: reported with the layer
            assert "layer" in str(exc), (path, exc)


def test_config_is_not_mutated():
    config = keras2_functional_config()
    before = copy.deepcopy(config)
    build_model(config, {"conv_a": [np.zeros((3, 3, 3, 4)), np.zeros(4)], "conv_b": [np.zeros((1, 1, 3, 4))],
                         "dw": [np.zeros((3, 3, 4, 1)), np.zeros(4)], "dense": [np.zeros((8, 3)), np.zeros(3)]})
    assert config == before
