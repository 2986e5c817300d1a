"""Readers and writers of source model formats; the only code that touches their bytes.

Every format is one :class:`~nnzip.formats.base.SourceFormat` object, built in its own
module (``keras_v3.FORMAT``, ``keras_h5.LEGACY_FORMAT`` ...) and registered once, in
:data:`FORMATS`.  The protocol, in full (see :mod:`nnzip.formats.base`):

``id``, ``suffix``
    the id stored as ``source.format`` (spec/container.md §5.2) and the usual file suffix;
``sniff(probe)``
    whether a file is of this format, judged by its content (first bytes, size; a
    look inside for HDF5 and zip files), never its name;
``read(path, keep_optimizer, limits, lazy)`` / ``write(path, structure, tensor)``
    the file to a :class:`nnzip.model.Model` and back, byte for byte;
``check_structure(structure)`` / ``tensor_names(structure)``
    the checks of a ``structure`` that came from an untrusted ``.nnz`` header (§5);
``optimizer_prefix``, ``model_config``, ``keras_version``, ``layer_weights``, ``exact_names``, ``element_types``, ``structure_minor``
    facets only some formats have; the others keep the "does not apply" default.

The functions below are thin lookups in that table: none branches on a format id, so
adding a format is one module and one line in :data:`FORMATS`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..container import SourceRules, use_source_rules
from ..errors import FormatError, InputError, os_reason
from ..limits import DEFAULT_LIMITS, DecodeLimits
from ..model import Model
from . import keras_h5, keras_v3, npz, onnx_format, safetensors, sharded
from .base import SUPPORTED, Probe, SourceFormat

#: Source format id -> :class:`SourceFormat`, one entry per format nnzip can read and rebuild.
#: :func:`sniff` asks them in this order, but each format's own ``sniff`` is unambiguous
#: (tests/test_format_registry.py), so the order decides nothing.
FORMATS: dict[str, SourceFormat] = {
    f.id: f
    for f in (
        keras_h5.LEGACY_FORMAT,
        keras_h5.WEIGHTS_FORMAT,
        keras_v3.FORMAT,
        npz.FORMAT,
        safetensors.FORMAT,
        onnx_format.FORMAT,
        sharded.FORMAT,
    )
}

#: How many first bytes :meth:`SourceFormat.sniff` is shown.
_HEAD_BYTES = 32
#: The protocol's "does not apply" answer per optional facet, for ids no format registers.
_DEFAULT_FACETS = {f.name: f.default for f in dataclasses.fields(SourceFormat) if f.default is not dataclasses.MISSING}


def get_format(format_id: object) -> SourceFormat | None:
    """The registered :class:`SourceFormat` of *format_id*, or None (also for non-string ids from a bad header)."""
    return FORMATS.get(format_id) if isinstance(format_id, str) else None


def sniff(path: str | os.PathLike) -> str:
    """The source format id of *path* from its content, or ``"unknown"``.

    InputError when it cannot be opened, or has a format's signature but is broken
    (the error its reader would give).
    """
    fmt = _identify(path)
    return "unknown" if fmt is None else fmt.id


def read_model(path: str | os.PathLike, keep_optimizer: bool = False, limits: DecodeLimits = DEFAULT_LIMITS, lazy: bool = False) -> Model:
    """Read a model file of any supported format.

    *limits* is the reader's cap a ``.nnz`` of it would meet: declared tensor bytes beyond
    ``limits.output_cap(file size)`` are refused before anything is read (§8).  With *lazy*,
    formats that can (safetensors, sharded checkpoints, ONNX external data, HDF5 ``.h5``/``.weights.h5``,
    ``.npz``) check everything now and read each tensor when asked (:class:`nnzip.model.LazyTensors`).
    """
    fmt = _identify(path)
    if fmt is None:
        raise InputError(f"{os.fspath(path)} is not a supported model file ({SUPPORTED})")
    return fmt.read(path, keep_optimizer=keep_optimizer, limits=limits, lazy=lazy)


def _identify(path: str | os.PathLike) -> SourceFormat | None:
    """The first registered format whose ``sniff`` takes *path*, or None."""
    probe = Probe(path, *_head(path))
    return next((fmt for fmt in FORMATS.values() if fmt.sniff(probe)), None)


def _head(path: str | os.PathLike) -> tuple[bytes, int]:
    """The first bytes and the size of the file at *path*; ``(b"", 0)`` for a folder."""
    if os.path.isdir(path):
        return b"", 0
    try:
        with open(path, "rb") as handle:
            return handle.read(_HEAD_BYTES), os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise InputError(f"cannot open {os.fspath(path)}: {os_reason(exc)}") from None


def write_model(path: str | os.PathLike, source_format: str, structure: dict, tensor) -> None:
    """Write a model of *source_format*, pulling tensor values from ``tensor(name)``."""
    fmt = get_format(source_format)
    if fmt is None:
        raise InputError(f"cannot write source format {source_format!r}")
    fmt.write(path, structure, tensor)


def _facet(source_format: object, name: str):
    """Facet *name* of the format registered as *source_format*, or the protocol's default."""
    fmt = get_format(source_format)
    return _DEFAULT_FACETS[name] if fmt is None else getattr(fmt, name)


def exact_names(model: Model) -> set[str]:
    """Tensors the format itself knows are not weights and must stay exact whatever the settings.

    For ONNX, every initializer or constant that feeds no MatMul/Gemm/Conv/Gather/RNN
    weight input (shapes, indices, scales, other constants); empty for the other formats.
    """
    return _facet(model.source_format, "exact_names")(model)


def element_types(model: Model) -> dict[str, str]:
    """Tensor name -> real element type, for the tensors *model* carries as raw bit patterns
    (safetensors ``BF16``/``F8_*``, ONNX ``BFLOAT16``/8-bit floats): ``"bfloat16"``,
    ``"float8_e4m3fn"`` ….  The planner widens bfloat16 exactly for lossy stages and reports
    the others as kept exact (:func:`nnzip.plan.choose_plan`)."""
    return _facet(model.source_format, "element_types")(model)


def structure_minor(source: object) -> int:
    """The lowest minor version a header's ``source`` needs: 2 for an ONNX source with subgraph tensors (§5.7), else 0.

    Tolerant of a malformed ``source`` (0), as the writer asks before anything is checked.
    """
    if not isinstance(source, dict):
        return 0
    return _facet(source.get("format"), "structure_minor")(source.get("structure"))


# --- views used by inference --------------------------------------------------------------


def optimizer_prefix(source_format: str) -> str | None:
    """The tensor-name prefix of kept optimizer state in *source_format*, or None when it has none."""
    return _facet(source_format, "optimizer_prefix")


def model_config(model: Model) -> dict | None:
    """The Keras architecture of *model*, or None for weights-only formats.

    A legacy ``.h5`` file's ``model_config`` root attribute, or a ``.keras``
    archive's ``config.json``; both are ``{"class_name", "config", ...}`` as
    :func:`nnzip.infer.build_model` takes them.
    """
    return _facet(model.source_format, "model_config")(model)


def keras_version(model: Model) -> str | None:
    """The Keras version that wrote *model* (for :func:`nnzip.infer.build_model`), or None."""
    return _facet(model.source_format, "keras_version")(model)


def layer_weights(model: Model, tensors: dict[str, np.ndarray] | None = None) -> dict:
    """Layer name -> weights in Keras ``get_weights`` order, for the Keras formats.

    *tensors* overrides the model's own values (e.g. rebuilt ones).  A nested model
    maps to a dict inner layer -> weights (``.weights.h5``/``.keras``) or to a flat
    list in ``.h5`` order (legacy files).  safetensors and npz files have no layers:
    InputError.
    """
    return _facet(model.source_format, "layer_weights")(model, tensors)


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


# The container's compact form and version choice need these; it cannot import the formats (they sit above it).
use_source_rules(SourceRules(structure_names, structure_minor))

__all__ = [
    "FORMATS", "Probe", "SourceFormat", "element_types", "exact_names", "get_format", "keras_version", "layer_weights",
    "model_config", "optimizer_prefix", "read_model", "sniff", "structure_minor", "write_model",
]
