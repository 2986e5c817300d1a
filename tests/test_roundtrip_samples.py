"""Every sample file survives compress -> decompress: same HDF5 tree, and Keras loads it.

The Keras tests need Keras (CI installs it with torch 2.13.0 and sets
``NNZIP_REQUIRE_KERAS=1``, which turns a missing Keras into a failure, not a skip).
"""

from __future__ import annotations


import h5py
import numpy as np
import pytest

from .h5compare import assert_same_file
from nnzip import api
from .samples import ALL_FILES, LEGACY_FILES, SAMPLES, TEST_DATA, WEIGHTS_FILES

OPTIMIZER = {".h5": "optimizer_weights", ".weights.h5": "optimizer"}


def optimizer_group(path) -> str:
    return OPTIMIZER[".weights.h5" if path.name.endswith(".weights.h5") else ".h5"]


def roundtrip(source, tmp_path, **options):
    nnz = tmp_path / (source.name + ".nnz")
    api.compress(source, nnz, **options)
    out = tmp_path / source.name
    api.decompress(nnz, out)
    return nnz, out


@pytest.mark.parametrize("source", ALL_FILES, ids=lambda p: p.name)
def test_lossless_roundtrip_same_tree_without_optimizer(source, tmp_path):
    nnz, out = roundtrip(source, tmp_path)
    group = optimizer_group(source)
    with h5py.File(source) as h5:
        had_optimizer = group in h5
    assert_same_file(source, out, skip=(group,))
    with h5py.File(out) as h5:
        assert group not in h5
    info = api.inspect(nnz)
    if had_optimizer:
        assert info["optimizer"] == "dropped" and info["dropped"][0]["path"] == group
    else:
        assert info["dropped"] == []
    assert all(t["error"] == 0 for t in info["tensors"])


@pytest.mark.parametrize("source", [SAMPLES / "mlp.h5", SAMPLES / "cnn.weights.h5"], ids=lambda p: p.name)
def test_keep_optimizer_roundtrip_is_the_whole_file(source, tmp_path):
    nnz, out = roundtrip(source, tmp_path, keep_optimizer=True)
    assert_same_file(source, out)
    assert api.inspect(nnz)["dropped"] == []


@pytest.mark.parametrize("source", ALL_FILES, ids=lambda p: p.name)
def test_lossless_is_smaller_than_the_tensors(source, tmp_path):
    nnz, _ = roundtrip(source, tmp_path)
    info = api.inspect(nnz)
    assert info["file_bytes"] < info["tensor_bytes_original"]


def _test_inputs(count=256):
    with np.load(TEST_DATA) as data:
        return data["x"][:count]


@pytest.mark.parametrize("source", LEGACY_FILES, ids=lambda p: p.name)
def test_keras_load_model_on_decompressed_h5(source, tmp_path, keras):
    _, out = roundtrip(source, tmp_path)
    x = _test_inputs()
    original = keras.models.load_model(source).predict(x, verbose=0)
    rebuilt = keras.models.load_model(out).predict(x, verbose=0)
    np.testing.assert_array_equal(rebuilt, original)


@pytest.mark.parametrize("source", WEIGHTS_FILES, ids=lambda p: p.name)
def test_keras_load_weights_on_decompressed_weights_h5(source, tmp_path, keras):
    _, out = roundtrip(source, tmp_path)
    x = _test_inputs()
    architecture = SAMPLES / source.name.replace(".weights.h5", ".h5")
    model = keras.models.load_model(architecture, compile=False)
    model.load_weights(source)
    original = model.predict(x, verbose=0)
    model = keras.models.load_model(architecture, compile=False)
    for layer in model.layers:  # scramble, so that the loaded weights must come from the file
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    model.load_weights(out)
    np.testing.assert_array_equal(model.predict(x, verbose=0), original)
