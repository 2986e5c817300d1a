"""Readers and writers of source model formats; the only code that touches their bytes.

:func:`read_model` recognises a file by its content, not its name, and returns a
:class:`nnzip.model.Model`; :func:`write_model` writes the same format back.
"""

from __future__ import annotations

import os

from ..errors import InputError
from ..model import Model
from . import keras_h5

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

#: Source format id -> writer; one entry per format nnzip can rebuild.
WRITERS = {
    keras_h5.LEGACY: keras_h5.write,
    keras_h5.WEIGHTS_V3: keras_h5.write,
}


def sniff(path: str | os.PathLike) -> str:
    """A short name of the container kind of *path* from its first bytes: 'hdf5', 'zip' or 'unknown'."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise InputError(f"cannot open {os.fspath(path)}: {exc.strerror}") from None
    if head == _HDF5_SIGNATURE:
        return "hdf5"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    return "unknown"


def read_model(path: str | os.PathLike, keep_optimizer: bool = False) -> Model:
    """Read a model file of any supported format."""
    kind = sniff(path)
    if kind == "hdf5":
        return keras_h5.read(path, keep_optimizer=keep_optimizer)
    raise InputError(
        f"{os.fspath(path)} is not a supported model file (supported: Keras .h5 and .weights.h5)"
    )


def write_model(path: str | os.PathLike, source_format: str, structure: dict, tensor) -> None:
    """Write a model of *source_format*, pulling tensor values from ``tensor(name)``."""
    if source_format not in WRITERS:
        raise InputError(f"cannot write source format {source_format!r}")
    WRITERS[source_format](path, structure, tensor)
