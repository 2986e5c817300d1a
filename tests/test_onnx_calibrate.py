"""Data-aware steps on ONNX: statistics of Conv inputs (im2col) and of transposed Gemm inputs.

onnxruntime computes the reference: the patches times the kernel must give the Conv's
own output, and the statistics must be those of the inputs the layer really multiplies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnzip import calibrate, formats, onnx_eval
from nnzip.evaluate import load_data
from nnzip.onnx_eval import OnnxEvaluator
from nnzip.search import BudgetSearch, Candidate, _as_matrix, _Factorisations, _from_matrix, candidates_for

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
RNG = np.random.default_rng(3)


def conv_model(weight: np.ndarray, **attributes) -> bytes:
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attributes)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, "oh", "ow"])], initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.mark.parametrize("attributes", [
    {},
    {"pads": [1, 1, 1, 1]},
    {"pads": [0, 2, 1, 0], "strides": [2, 1]},
    {"dilations": [2, 2], "pads": [2, 1, 2, 1]},
    {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"auto_pad": "SAME_LOWER"},
    {"auto_pad": "VALID", "strides": [1, 3]},
])
def test_nchw_patches_times_the_kernel_is_the_conv_output(attributes):
    weight = RNG.standard_normal((5, 3, 3, 2)).astype(np.float32)  # OIHW, a non-square kernel
    x = RNG.standard_normal((4, 3, 9, 10)).astype(np.float32)
    expected = ort.InferenceSession(conv_model(weight, **attributes), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    conv = {"kernel": (3, 2), "strides": tuple(attributes.get("strides", (1, 1))), "dilations": tuple(attributes.get("dilations", (1, 1))),
            "pads": tuple(attributes.get("pads", (0, 0, 0, 0))), "auto_pad": attributes.get("auto_pad", "NOTSET")}
    pads = onnx_eval._conv_pads(conv, x.shape[2:])
    patches = np.concatenate(list(calibrate.conv_patches_nchw(x, conv["kernel"], conv["strides"], pads, conv["dilations"], batch=3)))
    product = patches @ _as_matrix(weight, "first")  # (N·oh·ow, out)
    n, out, oh, ow = expected.shape
    np.testing.assert_allclose(product.reshape(n, oh, ow, out).transpose(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-4)


def test_first_layout_round_trips():
    for shape in ((7, 5), (4, 3, 2, 2)):
        array = RNG.standard_normal(shape).astype(np.float32)
        matrix = _as_matrix(array, "first")
        assert matrix.shape == (int(np.prod(shape[1:])), shape[0])
        np.testing.assert_array_equal(_from_matrix(matrix, shape, "first"), array)


def small_split(tmp_path: Path, count: int = 256) -> Path:
    data = np.load(SAMPLES / "fashion-mnist-val.npz")
    path = tmp_path / "small.npz"
    np.savez(path, x=data["x"][:count], y=data["y"][:count])
    return path


def test_layer_inputs_take_transposed_gemm_and_conv(tmp_path):
    data = load_data(small_split(tmp_path))
    mlp = OnnxEvaluator(formats.read_model(SAMPLES / "mlp.onnx"), data).layer_inputs(1024)
    assert set(mlp) == {"0.weight", "2.weight"}  # both Gemm transB=1 layers
    bias, layout, stats = mlp["0.weight"]
    assert (bias, layout, stats.count) == ("0.bias", "first", 256)
    x = np.asarray(data.x, np.float64).reshape(256, -1)
    np.testing.assert_allclose(stats.gram, x.T @ x, rtol=1e-6)  # the first layer's input is the model input
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-6, atol=1e-9)
    cnn_model = formats.read_model(SAMPLES / "cnn.onnx")
    cnn = OnnxEvaluator(cnn_model, data).layer_inputs(1024)
    assert set(cnn) == {"onnx::Conv_34", "conv2.weight", "output.weight"}
    for name, (bias, layout, stats) in cnn.items():
        weight = cnn_model.tensors[name]
        assert layout == "first" and bias is not None and stats.gram.shape == (np.prod(weight.shape[1:]),) * 2
    # conv1 (3x3, pads 1) on 28x28 images: one patch per pixel; conv2 (valid) on 14x14: 12x12 patches.
    assert cnn["onnx::Conv_34"][2].count == 256 * 28 * 28 and cnn["conv2.weight"][2].count == 256 * 12 * 12


def output_error(stats: calibrate.LayerStatistics, weight: np.ndarray, rebuilt: np.ndarray) -> float:
    """||X (W - W')||_F² / ||X W||_F² from the Gram matrix, with W, W' the (in, out) matrices."""
    delta, w = _as_matrix(weight - rebuilt, "first").astype(np.float64), _as_matrix(weight, "first").astype(np.float64)
    return float(np.trace(delta.T @ stats.gram @ delta) / np.trace(w.T @ stats.gram @ w))


@pytest.mark.parametrize(("model", "name"), [("mlp.onnx", "0.weight"), ("cnn.onnx", "conv2.weight")])
def test_data_aware_candidates_beat_weight_only_on_the_layer_output(tmp_path, model, name):
    """GPTQ-style error feedback (and activation-aware SVD for the Gemm) lowers ||X W - X W'|| against plain rounding."""
    onnx_model = formats.read_model(SAMPLES / model)
    search = BudgetSearch(onnx_model, OnnxEvaluator(onnx_model, load_data(small_split(tmp_path))), load_data(small_split(tmp_path)))
    layer = search.layers[name]
    assert layer.layout == "first" and layer.stats is not None
    array = onnx_model.tensors[name]
    cache = _Factorisations(array, layer, onnx_model.tensors[layer.bias])
    ladder = {c.label: c for c in candidates_for(array, True)}
    pairs = [("kmeans3", "kmeans3+gptq")]
    if array.ndim == 2:
        pairs.append(("svd16+kmeans8", "aasvd16+kmeans8"))
    for plain, aware in pairs:
        _, plain_encoded, _, _ = search._encode(name, array, ladder[plain], layer, cache)
        _, aware_encoded, aware_bias, _ = search._encode(name, array, ladder[aware], layer, cache)
        assert aware_encoded.reconstruction.shape == array.shape and aware_bias is not None
        assert output_error(layer.stats, array, aware_encoded.reconstruction) < 0.9 * output_error(layer.stats, array, plain_encoded.reconstruction)


def test_conv_kernel_skips_activation_aware_svd(tmp_path):
    """An OIHW kernel's svd-stage matrix view is not its (in, out) matrix: aasvd is not offered for it, plain svd still is."""
    onnx_model = formats.read_model(SAMPLES / "cnn.onnx")
    data = load_data(small_split(tmp_path, 64))
    search = BudgetSearch(onnx_model, OnnxEvaluator(onnx_model, data), data)
    layer = search.layers["conv2.weight"]
    array = onnx_model.tensors["conv2.weight"]
    aware = [c for c in candidates_for(array, True) if c.label.startswith("aasvd")]
    cache = _Factorisations(array, layer, onnx_model.tensors[layer.bias])
    for candidate in aware[:2]:
        with pytest.raises(Exception, match="matrix view"):
            search._prepare(array, candidate, layer, cache)
    assert isinstance(aware[0], Candidate) if aware else True
