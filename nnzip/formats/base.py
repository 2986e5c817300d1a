"""What every source format provides (:class:`SourceFormat`), and the pieces formats share.

Each format module builds one :class:`SourceFormat` object at import time (``FORMAT``;
:mod:`keras_h5` builds two) and :mod:`nnzip.formats` registers them in one table.
Callers never branch on a format id: they look the object up and ask it.  The facets
that only some formats have (optimizer state, a Keras architecture, raw-bits element
types, ...) default to the "does not apply" answer, so a new format fills in only the
ones it has.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import InputError
from ..model import Model

#: What ``nnzip`` reads, for the "not a supported model file" errors.
SUPPORTED = ("supported: Keras .h5, .weights.h5 and .keras, .safetensors, a sharded safetensors checkpoint "
             "(its .safetensors.index.json or folder), numpy .npz, ONNX")


class Malformed(ValueError):
    """Input that breaks one of the format's rules, raised deep in a parser.

    The caller re-raises it as InputError naming ``rule`` (the §8.2 rule a model file
    breaks) or, when the text came from an untrusted ``.nnz`` structure, as FormatError
    naming its own §5 rule: one parser serves both, so it cannot know which it is.
    """

    def __init__(self, message: str, rule: str):
        super().__init__(message)
        self.rule = rule


@dataclass
class Probe:
    """What :attr:`SourceFormat.sniff` judges: a path, its first bytes and its size.

    A folder has ``head == b""`` and ``size == 0``.  Formats that share a container
    (the two HDF5 formats, the two zip formats) look inside it through :meth:`once`, so
    one identification opens the file once however many formats ask.
    """

    path: str | os.PathLike
    head: bytes
    size: int
    _memo: dict = field(default_factory=dict, repr=False)

    def once(self, key: str, compute: Callable[[], object]) -> object:
        """``compute()`` the first time *key* is asked for on this probe, its remembered result after."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


# --- the "does not apply" answers of the optional facets ----------------------------------------


def no_model_config(model: Model) -> None:
    """A weights-only format carries no architecture."""
    return None


def no_keras_version(model: Model) -> None:
    """Only Keras files record the Keras version that wrote them."""
    return None


def no_layer_weights(model: Model, tensors: dict[str, np.ndarray] | None = None) -> dict:
    """Formats without Keras layers cannot map weights to layers: InputError."""
    raise InputError(f"a {model.source_format} file has no Keras layers to map weights to")


def no_exact_names(model: Model) -> set[str]:
    """A format that does not know which of its tensors are not weights names none."""
    return set()


def no_element_types(model: Model) -> dict[str, str]:
    """A format whose tensors are all plain numpy types carries none as raw bits."""
    return {}


def no_structure_minor(structure: object) -> int:
    """A structure that uses no feature newer than format 1.0 needs minor version 0."""
    return 0


@dataclass(frozen=True)
class SourceFormat:
    """One source format nnzip can read and rebuild byte for byte (spec/container.md §5).

    The first seven fields are what every format must give; the rest have a default
    that says the facet does not apply.
    """

    #: The id stored as ``source.format`` in the ``.nnz`` header (§5.2).
    id: str
    #: The usual file name suffix, for a rebuilt file's name.
    suffix: str
    #: ``sniff(probe) -> bool``: whether the file is of this format, judged by its content
    #: (:class:`Probe`), never its name.  Formats that share a signature (HDF5, zip) look
    #: inside; a file with the signature that is broken, or none of the formats sharing
    #: it, gets the InputError its reader would give.
    sniff: Callable[[Probe], bool]
    #: ``read(path, keep_optimizer=False, limits=DEFAULT_LIMITS, lazy=False) -> Model``;
    #: a format that cannot read lazily reads everything now.
    read: Callable[..., Model]
    #: ``write(path, structure, tensor)``; pulls each value with ``tensor(name)``.
    write: Callable[[str | os.PathLike, dict, Callable[[str], np.ndarray]], None]
    #: Raises FormatError unless an untrusted structure is well formed for this format.
    check_structure: Callable[[object], None]
    #: The tensor names a checked structure expects, in order (rule 3.3).
    tensor_names: Callable[[dict], list[str]]
    #: The tensor-name prefix of kept optimizer state, or None when the format has none.
    optimizer_prefix: str | None = None
    #: ``model_config(model)``: the Keras architecture (``{"class_name", "config", ...}``), or None.
    model_config: Callable[[Model], dict | None] = no_model_config
    #: ``keras_version(model)``: the Keras version that wrote the file, or None.
    keras_version: Callable[[Model], str | None] = no_keras_version
    #: ``layer_weights(model, tensors=None)``: layer name -> weights in ``get_weights`` order.
    layer_weights: Callable[..., dict] = no_layer_weights
    #: ``exact_names(model)``: tensors the format knows are not weights (kept exact).
    exact_names: Callable[[Model], set[str]] = no_exact_names
    #: ``element_types(model)``: tensor name -> element type, for tensors carried as raw bits.
    element_types: Callable[[Model], dict[str, str]] = no_element_types
    #: ``structure_minor(structure)``: the lowest format minor version (§2) a structure needs;
    #: tolerant of malformed structures (the writer asks before any check).
    structure_minor: Callable[[object], int] = no_structure_minor
