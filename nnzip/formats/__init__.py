"""Readers and writers of source model formats; the only code that touches their bytes.

:func:`read_model` recognises a file by its content, not its name, and returns a
:class:`nnzip.model.Model`; :func:`write_model` writes the same format back.
:data:`FORMATS` registers, per source format id (spec/container.md §5.2), how to
read and write it and how to check a ``structure`` that came from an untrusted
``.nnz`` header.  :func:`model_config` and :func:`layer_weights` are the views
numpy inference needs, for the formats that know about Keras layers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import container
from ..errors import FormatError, InputError
from ..limits import DEFAULT_LIMITS, DecodeLimits
from ..model import Model
from . import hdf5_tree, keras_h5, keras_v3, npz, onnx_format, safetensors, sharded, zipmeta

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: A zip archive starts with a local file header, or (no members) the end-of-directory record.
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")


@dataclass(frozen=True)
class Format:
    """One source format: its id, how to read and write it, and how to check its structure."""

    #: The id stored as ``source.format`` in the ``.nnz`` header.
    id: str
    #: ``read(path, keep_optimizer=False, limits=DEFAULT_LIMITS) -> Model``.
    read: Callable[..., Model]
    #: ``write(path, structure, tensor)``; pulls each value with ``tensor(name)``.
    write: Callable[[str | os.PathLike, dict, Callable[[str], np.ndarray]], None]
    #: Raises FormatError unless an untrusted structure is well formed for this format.
    check_structure: Callable[[object], None]
    #: The tensor names a checked structure expects, in order (rule 3.3).
    tensor_names: Callable[[dict], list[str]]
    #: The usual file name suffix.
    suffix: str


def _hdf5_tensor_names(structure: dict) -> list[str]:
    return list(hdf5_tree.dataset_paths(structure))


#: Source format id -> :class:`Format`; one entry per format nnzip can rebuild.
FORMATS: dict[str, Format] = {
    f.id: f
    for f in (
        Format(keras_h5.LEGACY, keras_h5.read, keras_h5.write, hdf5_tree.check_tree, _hdf5_tensor_names, ".h5"),
        Format(keras_h5.WEIGHTS_V3, keras_h5.read, keras_h5.write, hdf5_tree.check_tree, _hdf5_tensor_names, ".weights.h5"),
        Format(keras_v3.FORMAT_ID, keras_v3.read, keras_v3.write, keras_v3.check_structure, keras_v3.tensor_names, keras_v3.SUFFIX),
        Format(safetensors.FORMAT_ID, safetensors.read, safetensors.write, safetensors.check_structure,
               safetensors.tensor_names, safetensors.SUFFIX),
        Format(npz.FORMAT_ID, npz.read, npz.write, npz.check_structure, npz.tensor_names, npz.SUFFIX),
        Format(onnx_format.FORMAT_ID, onnx_format.read, onnx_format.write, onnx_format.check_structure,
               onnx_format.tensor_names, onnx_format.SUFFIX),
        Format(sharded.FORMAT_ID, sharded.read, sharded.write, sharded.check_structure, sharded.tensor_names, sharded.SUFFIX),
    )
}

#: Source format id -> writer (kept for callers that only write).
WRITERS = {format_id: f.write for format_id, f in FORMATS.items()}

_SUPPORTED = ("supported: Keras .h5, .weights.h5 and .keras, .safetensors, a sharded safetensors checkpoint "
              "(its .safetensors.index.json or folder), numpy .npz, ONNX")


def get_format(format_id: object) -> Format | None:
    """The registered :class:`Format` of *format_id*, or None (also for non-string ids from a bad header)."""
    return FORMATS.get(format_id) if isinstance(format_id, str) else None


def sniff(path: str | os.PathLike) -> str:
    """The container kind of *path* from its first bytes: 'hdf5', 'zip', 'safetensors', 'onnx', 'sharded' or 'unknown'.

    'sharded' is a folder or a JSON object (a sharded checkpoint's index, §5.8).
    """
    if os.path.isdir(path):
        return "sharded"
    try:
        with open(path, "rb") as handle:
            head = handle.read(32)
            size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise InputError(f"cannot open {os.fspath(path)}: {exc.strerror}") from None
    if head[:8] == _HDF5_SIGNATURE:
        return "hdf5"
    if head[:4] in _ZIP_SIGNATURES:
        return "zip"
    if safetensors.looks_like(head[:9], size):
        return "safetensors"
    if onnx_format.looks_like(head):
        return "onnx"
    if sharded.looks_like(head):
        return "sharded"
    return "unknown"


def read_model(path: str | os.PathLike, keep_optimizer: bool = False, limits: DecodeLimits = DEFAULT_LIMITS, lazy: bool = False) -> Model:
    """Read a model file of any supported format.

    *limits* is the reader's cap a ``.nnz`` of it would meet: declared tensor bytes beyond
    ``limits.output_cap(file size)`` are refused before anything is read (§8).  With *lazy*,
    formats that can (safetensors, sharded checkpoints, ONNX external data, HDF5 ``.h5``/``.weights.h5``,
    ``.npz``) check everything now and read each tensor when asked (:class:`nnzip.model.LazyTensors`).
    """
    kind = sniff(path)
    if kind == "hdf5":
        return keras_h5.read(path, keep_optimizer=keep_optimizer, limits=limits, lazy=lazy)
    if kind == "zip":
        fmt = _zip_format(path)
        if fmt.id == npz.FORMAT_ID:
            return npz.read(path, keep_optimizer=keep_optimizer, limits=limits, lazy=lazy)
        return fmt.read(path, keep_optimizer=keep_optimizer, limits=limits)
    if kind == "safetensors":
        return safetensors.read(path, keep_optimizer=keep_optimizer, limits=limits, lazy=lazy)
    if kind == "onnx":
        return onnx_format.read(path, keep_optimizer=keep_optimizer, limits=limits, lazy=lazy)
    if kind == "sharded":
        return sharded.read(path, keep_optimizer=keep_optimizer, limits=limits, lazy=lazy)
    raise InputError(f"{os.fspath(path)} is not a supported model file ({_SUPPORTED})")


def _zip_format(path: str | os.PathLike) -> Format:
    """Which zip-based format *path* is: a Keras ``.keras`` archive or a numpy ``.npz``."""
    with zipmeta.open_archive(path) as archive:
        zipmeta.members(archive, limits=None)  # rules 8.10-8.14 before any member is opened; the reader checks sizes
        if keras_v3.looks_like(archive):
            return FORMATS[keras_v3.FORMAT_ID]
        if npz.looks_like(archive):
            return FORMATS[npz.FORMAT_ID]
    raise InputError(
        f"{os.fspath(path)} is a zip archive but neither a Keras .keras file (config.json and "
        f"{keras_v3.WEIGHTS_MEMBER}) nor a numpy .npz (only .npy members) ({_SUPPORTED})"
    )


def write_model(path: str | os.PathLike, source_format: str, structure: dict, tensor) -> None:
    """Write a model of *source_format*, pulling tensor values from ``tensor(name)``."""
    fmt = get_format(source_format)
    if fmt is None:
        raise InputError(f"cannot write source format {source_format!r}")
    fmt.write(path, structure, tensor)


def exact_names(model: Model) -> set[str]:
    """Tensors the format itself knows are not weights and must stay exact whatever the settings.

    For ONNX, every initializer or constant that feeds no MatMul/Gemm/Conv/Gather/RNN
    weight input (shapes, indices, scales, other constants); empty for the other formats.
    """
    if model.source_format == onnx_format.FORMAT_ID:
        return set(model.tensors) - onnx_format.weight_names(model.structure)
    return set()


#: safetensors dtype -> element type name, for the types carried as raw bit patterns (§5.5).
_SAFETENSORS_ELEMENTS = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
#: ONNX TensorProto.DataType -> element type name, for the types carried as raw bit patterns (§5.7).
_ONNX_ELEMENTS = {16: "bfloat16", 17: "float8_e4m3fn", 18: "float8_e4m3fnuz", 19: "float8_e5m2", 20: "float8_e5m2fnuz",
                  23: "float4_e2m1", 24: "float8_e8m0"}


def element_types(model: Model) -> dict[str, str]:
    """Tensor name -> real element type, for the tensors *model* carries as raw bit patterns
    (safetensors ``BF16``/``F8_*``, ONNX ``BFLOAT16``/8-bit floats): ``"bfloat16"``,
    ``"float8_e4m3fn"`` ….  The planner widens bfloat16 exactly for lossy stages and reports
    the others as kept exact (:func:`nnzip.plan.choose_plan`)."""
    if model.source_format == safetensors.FORMAT_ID:
        items = [(t["name"], _SAFETENSORS_ELEMENTS.get(t["dtype"])) for t in model.structure["tensors"]]
    elif model.source_format == sharded.FORMAT_ID:
        items = [(t["name"], _SAFETENSORS_ELEMENTS.get(t["dtype"])) for shard in model.structure["shards"]
                 for t in shard["structure"]["tensors"]]
    elif model.source_format == onnx_format.FORMAT_ID:
        items = [(r["name"], _ONNX_ELEMENTS.get(r["data_type"])) for r in model.structure["tensors"]]
    else:
        return {}
    return {name: element for name, element in items if element is not None}


# --- views used by inference --------------------------------------------------------------


def optimizer_prefix(source_format: str) -> str | None:
    """The tensor-name prefix of kept optimizer state in *source_format*, or None when it has none."""
    if source_format in keras_h5.OPTIMIZER_GROUP:
        return keras_h5.OPTIMIZER_GROUP[source_format] + "/"
    if source_format == keras_v3.FORMAT_ID:
        return keras_v3.WEIGHTS_MEMBER + "/" + keras_h5.OPTIMIZER_GROUP[keras_h5.WEIGHTS_V3] + "/"
    return None


def model_config(model: Model) -> dict | None:
    """The Keras architecture of *model*, or None for weights-only formats.

    A legacy ``.h5`` file's ``model_config`` root attribute, or a ``.keras``
    archive's ``config.json``; both are ``{"class_name", "config", ...}`` as
    :func:`nnzip.infer.build_model` takes them.
    """
    if model.source_format == keras_h5.LEGACY:
        return keras_h5.model_config(model)
    if model.source_format == keras_v3.FORMAT_ID:
        return keras_v3.model_config(model)
    return None


def keras_version(model: Model) -> str | None:
    """The Keras version that wrote *model* (for :func:`nnzip.infer.build_model`), or None."""
    if model.source_format == keras_v3.FORMAT_ID:
        return keras_v3.keras_version(model)
    if model.source_format == keras_h5.LEGACY:
        for record in model.structure["attrs"]:
            if record["name"] == "keras_version" and record["kind"] == "string" and record["value"]:
                return record["value"][0]
    return None


def layer_weights(model: Model, tensors: dict[str, np.ndarray] | None = None) -> dict:
    """Layer name -> weights in Keras ``get_weights`` order, for the Keras formats.

    *tensors* overrides the model's own values (e.g. rebuilt ones).  A nested model
    maps to a dict inner layer -> weights (``.weights.h5``/``.keras``) or to a flat
    list in ``.h5`` order (legacy files).  safetensors and npz files have no layers:
    InputError.
    """
    if model.source_format == keras_h5.LEGACY:
        return keras_h5.layer_weights(model, tensors)
    values = model.tensors if tensors is None else tensors
    if model.source_format == keras_h5.WEIGHTS_V3:
        return keras_h5.vars_layer_weights(model.structure, values)
    if model.source_format == keras_v3.FORMAT_ID:
        return keras_v3.layer_weights(model, tensors)
    raise InputError(f"a {model.source_format} file has no Keras layers to map weights to")


def structure_names(source: object) -> list | None:
    """The tensor names a header's ``source`` defines (rule 3.3), or None when its format or structure is not valid."""
    source_format = get_format(source.get("format")) if isinstance(source, dict) else None
    if source_format is None:
        return None
    try:
        source_format.check_structure(source.get("structure"))
        return list(source_format.tensor_names(source["structure"]))
    except FormatError:
        return None


def structure_minor(source: object) -> int:
    """The lowest minor version a header's ``source`` needs: 2 for an ONNX source with subgraph tensors (§5.7), else 0."""
    if isinstance(source, dict) and source.get("format") == onnx_format.FORMAT_ID:
        return 2 if onnx_format.uses_subgraph_tensors(source.get("structure")) else 0
    return 0


# The container's compact form and version choice need these; it cannot import the formats (they sit above it).
container.use_source_rules(container.SourceRules(structure_names, structure_minor))

__all__ = [
    "FORMATS", "Format", "WRITERS", "element_types", "exact_names", "get_format", "keras_version", "layer_weights", "model_config", "optimizer_prefix",
    "read_model", "sniff", "write_model",
]
