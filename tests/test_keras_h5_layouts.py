"""Legacy .h5 layouts the samples do not show: fixed-length byte strings and chunked attributes.

Older writers (tf.keras with h5py 2.x) stored ``layer_names``/``weight_names`` as
fixed-length ``S`` arrays, and Keras splits an attribute over 64 KiB into
``layer_names0``, ``layer_names1``, …  Such a file is built here with h5py.
"""

from __future__ import annotations

import json

import h5py
import numpy as np

from .h5compare import assert_same_file
from nnzip import api
from nnzip.formats import read_model
from nnzip.formats.keras_h5 import layer_weights
from nnzip.plan import PlanRules, Settings

LAYERS = [f"dense_{i}" for i in range(4)]


def write_old_style_file(path):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = np.bytes_(json.dumps({"class_name": "Sequential", "config": {"layers": []}}))
        h5.attrs["keras_version"] = np.bytes_("2.4.0")
        h5.attrs["backend"] = np.bytes_("tensorflow")
        weights = h5.create_group("model_weights")
        # Chunked the way Keras does it: the list split across numbered attributes.
        weights.attrs["layer_names0"] = np.array([n.encode() for n in LAYERS[:2]], dtype="S8")
        weights.attrs["layer_names1"] = np.array([n.encode() for n in LAYERS[2:]], dtype="S8")
        weights.attrs.create("empty_marker", h5py.Empty("f8"))
        for name in LAYERS:
            group = weights.create_group(name)
            names = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            group.attrs["weight_names"] = np.array(names, dtype=f"S{max(map(len, names))}")
            inner = group.create_group(name)
            inner.create_dataset("kernel:0", data=rng.standard_normal((40, 40)).astype("f4"), chunks=(8, 40), compression="gzip", compression_opts=4)
            inner.create_dataset("bias:0", data=rng.standard_normal(40).astype("f4"))
    return path


def test_fixed_length_strings_and_chunked_attributes_round_trip(tmp_path):
    source = write_old_style_file(tmp_path / "old.h5")
    nnz, out = tmp_path / "old.nnz", tmp_path / "out.h5"
    api.compress(source, nnz)
    api.decompress(nnz, out)
    assert_same_file(source, out)
    with h5py.File(out) as h5:
        attr = h5["model_weights"].attrs.get_id("layer_names1")
        assert h5py.check_string_dtype(attr.dtype).length == 8  # still fixed-length, not variable
        assert h5["model_weights/dense_0/dense_0/kernel:0"].compression == "gzip"


def test_chunked_layer_names_map_weights_in_order(tmp_path):
    model = read_model(write_old_style_file(tmp_path / "old.h5"))
    mapping = layer_weights(model)
    assert list(mapping) == LAYERS
    assert [w.shape for w in mapping["dense_3"]] == [(40, 40), (40,)]
    np.testing.assert_array_equal(mapping["dense_1"][0], model.tensors["model_weights/dense_1/dense_1/kernel:0"])


def test_lossy_compression_keeps_the_old_layout(tmp_path):
    source = write_old_style_file(tmp_path / "old.h5")
    nnz, out = tmp_path / "old.nnz", tmp_path / "out.h5"
    api.compress(source, nnz, rules=PlanRules(Settings(bits=4), []))
    api.decompress(nnz, out)
    with h5py.File(source) as a, h5py.File(out) as b:
        kernel = "model_weights/dense_2/dense_2/kernel:0"
        assert len(np.unique(b[kernel][()])) <= 16 and b[kernel].chunks == a[kernel].chunks
        assert dict(a["model_weights"].attrs.items()).keys() == dict(b["model_weights"].attrs.items()).keys()
