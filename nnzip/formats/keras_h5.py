"""Keras weight files in HDF5: legacy ``.h5`` and Keras 3 ``.weights.h5``.

Source formats (ids stored in the ``.nnz`` header, see spec/container.md §5):

``keras-h5``
    The legacy HDF5 format as written by tf.keras, Keras 2 and Keras 3's
    ``model.save("x.h5")`` (root attributes ``model_config``, ``keras_version``,
    ``backend``, ``training_config``; group ``model_weights`` whose ``layer_names``
    attribute (chunked as ``layer_names0..N`` when large) lists the layers and
    each layer group's ``weight_names`` its weights) and by legacy
    ``save_weights("x.h5")`` (the same layer groups at the root).  Optimizer
    state lives in ``optimizer_weights``.
``keras-weights-h5``
    Keras 3 ``save_weights("x.weights.h5")``: ``layers/<name>/vars/<i>``, a
    top-level ``vars`` group, optimizer state in ``optimizer``.

Both are carried by the generic lossless tree of :mod:`nnzip.formats.hdf5_tree`;
this module only recognises the formats, knows where optimizer state lives,
and maps weights to layers for inference.  :data:`LEGACY_FORMAT` and
:data:`WEIGHTS_FORMAT` are their :class:`nnzip.formats.base.SourceFormat` objects.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

from ..errors import InputError
from ..limits import DEFAULT_LIMITS, DecodeLimits
from ..model import DroppedGroup, Model
from . import hdf5_tree
from .base import Probe, SourceFormat

LEGACY = "keras-h5"
WEIGHTS_V3 = "keras-weights-h5"

#: Top-level group holding optimizer state, per source format.
OPTIMIZER_GROUP = {LEGACY: "optimizer_weights", WEIGHTS_V3: "optimizer"}
#: The first bytes of every HDF5 file (at offset 0; nnzip does not look for user blocks).
SIGNATURE = b"\x89HDF\r\n\x1a\n"


def detect(h5: h5py.File) -> str:
    """The Keras format of an open HDF5 file, or InputError when it is not a Keras file.

    Only hard links are looked at: following a soft or external link here would
    open what it points to before rule 8.1 refuses it.
    """
    if _hard_group(h5, "model_weights") or "layer_names" in h5.attrs:
        return LEGACY
    if _hard_group(h5, "layers") or _hard_group(h5, "vars"):
        return WEIGHTS_V3
    raise InputError(
        f"{os.path.basename(h5.filename)} is an HDF5 file but not a Keras model or weights file "
        "(no model_weights group, layer_names attribute or layers group)"
    )


def _hard_group(h5: h5py.Group, name: str) -> bool:
    """Whether *name* is a hard link to a group (never resolving soft or external links)."""
    return name in h5 and isinstance(h5.get(name, getlink=True), h5py.HardLink) and isinstance(h5[name], h5py.Group)


def read(path: str | os.PathLike, keep_optimizer: bool = False, limits: DecodeLimits = DEFAULT_LIMITS, lazy: bool = False) -> Model:
    """Read a Keras HDF5 file; optimizer state is dropped unless *keep_optimizer*.

    The datasets may declare at most ``limits.output_cap(file size)`` bytes
    (rule 8.7): what a ``.nnz`` of this size could be decompressed to.  With *lazy*,
    every check runs now and each dataset is read when asked for
    (:func:`nnzip.formats.hdf5_tree.lazy_values`).
    """
    with _open(path) as h5:
        source_format = _detect_open(h5, path)
        max_bytes = limits.output_cap(os.path.getsize(path))
        structure, tensors, dropped = read_open(h5, source_format, keep_optimizer, max_bytes=max_bytes, lazy=lazy)
    return Model(source_format, structure, tensors, dropped)


def detect_file(path: str | os.PathLike) -> str:
    """The Keras format of the HDF5 file at *path*, with the errors :func:`read` gives."""
    with _open(path) as h5:
        return _detect_open(h5, path)


def _open(path: str | os.PathLike) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"cannot read {os.fspath(path)} as HDF5: {exc}") from None


def _detect_open(h5: h5py.File, path: str | os.PathLike) -> str:
    try:
        return detect(h5)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise InputError(f"cannot read {os.fspath(path)} as HDF5: {' '.join(str(exc).split())}") from None


def read_open(h5: h5py.File, source_format: str, keep_optimizer: bool, label: str = "",
              max_bytes: int | None = None, lazy: bool = False) -> tuple[dict, dict[str, np.ndarray], list[DroppedGroup]]:
    """Tree, tensors and dropped groups of an open Keras HDF5 file of *source_format*.

    *label* prefixes the dropped group's path in the report (``keras-v3`` uses
    ``model.weights.h5/`` for the HDF5 file inside its zip).  *max_bytes* caps the
    datasets' declared bytes (:func:`nnzip.formats.hdf5_tree.read_tree`, which also takes *lazy*).
    """
    optimizer = OPTIMIZER_GROUP[source_format]
    dropped = []
    # Only a hard-linked group is dropped; anything else under that name meets rule 8.1/8.6.
    if not keep_optimizer and _hard_group(h5, optimizer):
        try:
            dropped.append(measure_group(h5[optimizer], label + optimizer))
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
            raise InputError(f"cannot read /{optimizer} as HDF5: {' '.join(str(exc).split())}") from None
    skip = (lambda p: p == optimizer) if dropped else (lambda p: False)
    structure, tensors = hdf5_tree.read_tree(h5, skip, max_bytes, lazy)
    return structure, tensors, dropped


def write(path: str | os.PathLike, structure: dict, tensor) -> None:
    """Write a Keras HDF5 file from *structure*, pulling values from ``tensor(name)``."""
    hdf5_tree.write_tree(path, structure, tensor)


def measure_group(group: h5py.Group, path: str) -> DroppedGroup:
    """Count the datasets and their bytes under *group*, reported as dropped at *path*."""
    count, nbytes = 0, 0

    def visit(_name, obj):
        nonlocal count, nbytes
        # Metadata only: the group is never read.  H5Ovisit visits each object once.
        if isinstance(obj, h5py.Dataset) and obj.shape is not None:
            count += 1
            nbytes += int(obj.size) * obj.dtype.itemsize

    group.visititems(visit)
    return DroppedGroup(path, count, nbytes)


# --- views used by inference ------------------------------------------------------------


def model_config(model: Model) -> dict | None:
    """The Keras ``model_config`` JSON of a legacy full-model file, or None."""
    for record in model.structure["attrs"]:
        if record["name"] == "model_config" and record["kind"] == "string" and record["value"]:
            return _config_json(record["value"][0])
    return None


def keras_version(model: Model) -> str | None:
    """The ``keras_version`` root attribute of a legacy file, or None."""
    for record in model.structure["attrs"]:
        if record["name"] == "keras_version" and record["kind"] == "string" and record["value"]:
            return record["value"][0]
    return None


def _config_json(text: str) -> dict:
    """The parsed ``model_config`` text; a file's own architecture is as untrusted as its weights."""
    try:
        config = json.loads(text)
    except (ValueError, RecursionError):
        raise InputError("the file's model_config attribute is not JSON (a corrupt or crafted file)") from None
    if not isinstance(config, dict):
        raise InputError("the file's model_config attribute is not a JSON object")
    return config


def layer_weights(model: Model, tensors: dict[str, np.ndarray] | None = None) -> dict[str, list[np.ndarray]]:
    """Layer name -> weights in Keras ``get_weights`` order, for a legacy ``keras-h5`` model.

    *tensors* overrides the model's own values (e.g. rebuilt ones).  Follows the
    ``layer_names``/``weight_names`` attributes exactly as Keras' loader does.
    """
    if model.source_format != LEGACY:
        raise InputError("layer weights need a legacy Keras .h5 file (a .weights.h5 file has no architecture)")
    values = model.tensors if tensors is None else tensors
    root, prefix = _weights_root(model.structure)
    result: dict[str, list[np.ndarray]] = {}
    for layer in _string_list(root, "layer_names"):
        layer_node = _child_group(root, layer)
        names = _string_list(layer_node, "weight_names") if layer_node is not None else []
        paths = [f"{prefix}{layer}/{name}" for name in names]
        missing = [path for path in paths if path not in values]
        if missing:
            raise InputError(f"layer {layer!r} names weight {missing[0]!r} in its weight_names, which the file does not hold")
        result[layer] = [values[path] for path in paths]
    return result


def _weights_root(structure: dict) -> tuple[dict, str]:
    node = _child_group(structure, "model_weights")
    return (node, "model_weights/") if node is not None else (structure, "")


def _child_group(node: dict, name: str) -> dict | None:
    for child in node["children"]:
        if child["name"] == name and "group" in child:
            return child["group"]
    return None


def _string_list(node: dict, name: str) -> list[str]:
    """A string-list attribute, joining Keras' chunked ``name0``, ``name1``… form."""
    attrs = {record["name"]: record for record in node["attrs"]}
    if name in attrs:
        return _attr_strings(attrs[name])
    values, index = [], 0
    while f"{name}{index}" in attrs:
        values += _attr_strings(attrs[f"{name}{index}"])
        index += 1
    return values


def _attr_strings(record: dict) -> list[str]:
    # An empty list is written by Keras as a float64 array of shape (0,).
    return list(record["value"]) if record["kind"] == "string" else []


# --- Keras 3 ``vars`` layout (``.weights.h5`` and the HDF5 file inside ``.keras``) -------------

def vars_layer_weights(tree: dict, values: dict[str, np.ndarray], prefix: str = "") -> dict:
    """Layer name -> weights for a Keras 3 ``vars``-layout tree (``layers/<auto>/vars/<i>``).

    The real layer name is the ``name`` attribute of each ``vars`` group (the group
    names are snake-cased class names); vars are ordered numerically, which is
    Keras' ``get_weights`` order (trainable then non-trainable variables).  A nested
    model (``layers/<auto>/layers/...``) maps to a dict inner layer -> weights, the
    form :func:`nnzip.infer.build_model` takes.  *prefix* is prepended to dataset
    paths to find their values (``model.weights.h5/`` inside a ``.keras`` file).
    """
    root_vars = _child_group(tree, "vars")
    if root_vars is not None and _datasets(root_vars):
        raise InputError("the model has variables of its own (root 'vars' group): nnzip cannot map them to layers")
    layers = _child_group(tree, "layers")
    return {} if layers is None else _vars_layers(layers, f"{prefix}layers/", values)


def weights_layer_weights(model: Model, tensors: dict[str, np.ndarray] | None = None) -> dict:
    """Layer name -> weights of a ``.weights.h5`` model (*tensors* overrides its values)."""
    return vars_layer_weights(model.structure, model.tensors if tensors is None else tensors)


def _vars_layers(node: dict, path: str, values: dict[str, np.ndarray]) -> dict:
    result: dict = {}
    for child in node["children"]:
        if "group" not in child:
            raise InputError(f"unexpected dataset {path}{child['name']} among layer groups")
        name, weights = _vars_layer(child["group"], f"{path}{child['name']}/", values)
        if name in result:
            raise InputError(f"two layer groups are named {name!r} (under {path})")
        result[name] = weights
    return result


def _vars_layer(group: dict, path: str, values: dict[str, np.ndarray]) -> tuple[str, object]:
    """(real layer name, weights) of one ``layers/<auto>`` group."""
    vars_node = _child_group(group, "vars")
    names = _string_list(vars_node, "name") if vars_node is not None else []
    if len(names) != 1:
        raise InputError(f"layer group {path.rstrip('/')} has no 'vars' group with a 'name' attribute")
    name = names[0]
    # Sub-objects other than nested layers (an RNN's 'cell', attention's projections) have
    # their own weight order, which get_weights interleaves; mapping them would be a guess.
    others = [c["name"] for c in group["children"] if c["name"] not in ("vars", "layers")]
    if others:
        raise InputError(f"layer {name!r} ({path.rstrip('/')}) has sub-objects {others}: "
                         "only plain layers and nested models can be mapped to layers")
    own = [values[f"{path}vars/{key}"] for key in _numbered(vars_node, f"{path}vars")]
    inner = _child_group(group, "layers")
    if inner is None:
        return name, own
    if own:
        raise InputError(f"nested model {name!r} ({path.rstrip('/')}) has variables of its own")
    return name, _vars_layers(inner, f"{path}layers/", values)


def _datasets(node: dict) -> list[str]:
    return [c["name"] for c in node["children"] if "dataset" in c]


def _numbered(vars_node: dict, path: str) -> list[str]:
    """Dataset names of a ``vars`` group, in numeric order (h5py lists ``10`` before ``2``)."""
    keys = _datasets(vars_node)
    if len(keys) != len(vars_node["children"]) or sorted(keys) != sorted(str(i) for i in range(len(keys))):
        raise InputError(f"{path} must hold only datasets named 0..n-1")
    return sorted(keys, key=int)


# --- the two formats ----------------------------------------------------------------------------


def _sniffer(source_format: str):
    """A ``sniff`` that takes an HDF5 file whose groups say it is *source_format*."""

    def sniff(probe: Probe) -> bool:
        return probe.head[:8] == SIGNATURE and probe.once("keras-hdf5", lambda: detect_file(probe.path)) == source_format

    return sniff


LEGACY_FORMAT = SourceFormat(
    LEGACY, ".h5", _sniffer(LEGACY), read, write, hdf5_tree.check_tree, hdf5_tree.tensor_names,
    optimizer_prefix=OPTIMIZER_GROUP[LEGACY] + "/", model_config=model_config, keras_version=keras_version,
    layer_weights=layer_weights,
)
WEIGHTS_FORMAT = SourceFormat(
    WEIGHTS_V3, ".weights.h5", _sniffer(WEIGHTS_V3), read, write, hdf5_tree.check_tree, hdf5_tree.tensor_names,
    optimizer_prefix=OPTIMIZER_GROUP[WEIGHTS_V3] + "/", layer_weights=weights_layer_weights,
)
