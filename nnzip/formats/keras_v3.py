"""Keras 3 ``.keras`` archives (format id ``keras-v3``).

A ``.keras`` file is a zip archive written by ``model.save("x.keras")``:
``metadata.json`` (Keras version, save date), ``config.json`` (the serialized
model: architecture and compile config), ``model.weights.h5`` (the variables in
the Keras 3 ``vars`` layout, the same as a ``.weights.h5`` file) and sometimes
``assets/...`` (e.g. a text vectorizer's vocabulary).

The structure (spec/container.md §5.4) lists every member in archive order with
its zip metadata (:mod:`nnzip.formats.zipmeta`).  Members other than the weights are
small and carried whole, as base64; ``model.weights.h5`` is carried as an
:mod:`~nnzip.formats.hdf5_tree` tree whose datasets are the tensors, named
``model.weights.h5/<dataset path>``.  Optimizer state (its ``optimizer`` group)
is dropped unless asked for, as for ``keras-weights-h5``; Keras then loads the
model with a freshly initialised optimizer.  :data:`FORMAT` is its
:class:`nnzip.formats.base.SourceFormat` object.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import zipfile

import h5py
import numpy as np

from ..errors import FormatError, InputError
from ..limits import DEFAULT_LIMITS, DecodeLimits
from ..model import Model
from . import hdf5_tree, keras_h5, npz, zipmeta
from .base import SUPPORTED, Probe, SourceFormat

FORMAT_ID = "keras-v3"
SUFFIX = ".keras"
#: The archive member holding the weights; Keras' loader looks for exactly this name.
WEIGHTS_MEMBER = "model.weights.h5"
CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"
#: Cap on the bytes of carried (non-weights) members: they go into the .nnz header,
#: which a reader accepts up to 64 MiB (spec/container.md §6 rule 5) after base64.
MAX_CARRIED_BYTES = 32 * 2**20
_WHERE = "rule 5.4: keras-v3 structure"


def looks_like(archive: zipfile.ZipFile) -> bool:
    """Whether an open zip archive is a Keras 3 ``.keras`` file (has ``config.json``)."""
    names = set(archive.namelist())
    return CONFIG_MEMBER in names and (WEIGHTS_MEMBER in names or "model.weights.npz" in names)


# --- reading --------------------------------------------------------------------------------


def sniff(probe: Probe) -> bool:
    """Whether the file is a ``.keras`` archive; InputError for a zip archive that is neither it nor a ``.npz``.

    The members pass rules 8.10-8.14 before any is opened (their sizes are judged by the reader).
    """
    if probe.head[:4] not in zipmeta.SIGNATURES:
        return False
    if probe.once("keras-v3", lambda: _is_keras(probe.path)):
        return True
    if npz.probe_npz(probe):
        return False
    raise InputError(
        f"{os.fspath(probe.path)} is a zip archive but neither a Keras .keras file (config.json and "
        f"{WEIGHTS_MEMBER}) nor a numpy .npz (only .npy members) ({SUPPORTED})"
    )


def _is_keras(path: str | os.PathLike) -> bool:
    with zipmeta.open_archive(path) as archive:
        zipmeta.members(archive, limits=None)  # the reader judges the sizes
        return looks_like(archive)


def read(path: str | os.PathLike, keep_optimizer: bool = False, limits: DecodeLimits = DEFAULT_LIMITS, lazy: bool = False) -> Model:
    """Read a ``.keras`` archive; optimizer state is dropped unless *keep_optimizer*.

    *lazy* is accepted and ignored: the weights are an HDF5 file inside the zip,
    copied out and read now.

    The archive passes :func:`zipmeta.members` (rules 8.10-8.15: safe names, regular
    files, declared sizes within ``limits``) before any member is read, and the weights'
    datasets may declare at most ``limits.output_cap(archive size)`` bytes (rule 8.7).
    """
    with zipmeta.open_archive(path) as archive:
        infos = zipmeta.members(archive, limits)
        names = [info.filename for info in infos]
        if WEIGHTS_MEMBER not in names:
            raise InputError(f"{os.fspath(path)}: a .keras file without {WEIGHTS_MEMBER} (e.g. weights_format='npz') is not supported")
        members, tensors, dropped, carried = [], {}, [], 0
        for info in infos:
            record = {"name": info.filename, "zip": zipmeta.describe(info)}
            if info.filename == WEIGHTS_MEMBER:
                record["hdf5"], tensors, dropped = _read_weights(archive, info, keep_optimizer,
                                                                 limits.output_cap(os.path.getsize(path)))
            else:
                carried += info.file_size  # the declared size, capped before the member is read
                if carried > MAX_CARRIED_BYTES:
                    raise InputError(f"rule 8.15: {os.fspath(path)}: the non-weights members exceed {MAX_CARRIED_BYTES} bytes")
                record["data"] = base64.b64encode(zipmeta.read_member(archive, info)).decode("ascii")
            members.append(record)
        structure = {"comment": base64.b64encode(archive.comment).decode("ascii"), "members": members}
    return Model(FORMAT_ID, structure, tensors, dropped)


def _read_weights(archive: zipfile.ZipFile, info: zipfile.ZipInfo, keep_optimizer: bool, max_bytes: int):
    """(tree, tensors named ``model.weights.h5/...``, dropped) of the inner HDF5 file (rules 8.1-8.9)."""
    # h5py needs a seekable file; a temporary copy keeps memory flat and works for
    # deflated members too (seeking backwards in a ZipExtFile re-inflates from the start).
    with tempfile.TemporaryDirectory(prefix="nnzip-") as folder:
        inner = os.path.join(folder, WEIGHTS_MEMBER)
        zipmeta.extract_member(archive, info, inner)  # bounded pieces; size and CRC checked (rules 8.10, 8.15)
        try:
            h5 = h5py.File(inner, "r")
        except OSError as exc:
            raise InputError(f"{WEIGHTS_MEMBER} inside the archive is not HDF5: {exc}") from None
        with h5:
            tree, tensors, dropped = keras_h5.read_open(h5, keras_h5.WEIGHTS_V3, keep_optimizer, WEIGHTS_MEMBER + "/", max_bytes)
    return tree, {f"{WEIGHTS_MEMBER}/{name}": value for name, value in tensors.items()}, dropped


# --- writing --------------------------------------------------------------------------------


def write(path: str | os.PathLike, structure: dict, tensor) -> None:
    """Write a ``.keras`` archive from *structure*, pulling weights from ``tensor(name)``."""
    with tempfile.TemporaryDirectory(prefix="nnzip-") as folder:
        with zipfile.ZipFile(path, "w") as archive:
            for member in structure["members"]:
                if "hdf5" in member:
                    _write_weights(archive, member, tensor, os.path.join(folder, WEIGHTS_MEMBER))
                else:
                    data = base64.b64decode(member["data"])
                    zipmeta.write_member(archive, member["name"], member["zip"], iter([data]), len(data))
            archive.comment = base64.b64decode(structure["comment"])


def _write_weights(archive: zipfile.ZipFile, member: dict, tensor, scratch: str) -> None:
    prefix = member["name"] + "/"
    hdf5_tree.write_tree(scratch, member["hdf5"], lambda name: tensor(prefix + name))
    with open(scratch, "rb") as handle:
        zipmeta.write_member(archive, member["name"], member["zip"], zipmeta.copy_chunks(handle), os.path.getsize(scratch))


# --- structure checks and views -------------------------------------------------------------


def check_structure(structure: object) -> None:
    """Raise FormatError unless *structure* is a well-formed ``keras-v3`` structure (§5.4)."""
    if not isinstance(structure, dict) or set(structure) != {"comment", "members"} or not isinstance(structure["members"], list):
        raise FormatError(f"{_WHERE}: needs exactly 'comment' and a 'members' list")
    zipmeta.check_base64(structure["comment"], _WHERE, "comment", zipmeta.MAX_FIELD_BYTES)
    names, carried = [], 0
    for member in structure["members"]:
        if not isinstance(member, dict):
            raise FormatError(f"{_WHERE}: a member must be an object")
        names.append(zipmeta.check_name(member.get("name"), _WHERE))
        zipmeta.check_record(member.get("zip"), f"{_WHERE}, member {member['name']!r}")
        carried += _check_payload(member)
        if carried > MAX_CARRIED_BYTES:
            raise FormatError(f"{_WHERE}: carried members exceed {MAX_CARRIED_BYTES} bytes")
    zipmeta.check_unique_names(names, _WHERE)
    zipmeta.check_member_paths(structure["members"], "keras-v3 structure")
    if sum("hdf5" in m for m in structure["members"]) != 1 or WEIGHTS_MEMBER not in names:
        raise FormatError(f"{_WHERE}: exactly one member, {WEIGHTS_MEMBER!r}, must carry the 'hdf5' tree")


def _check_payload(member: dict) -> int:
    """Check a member's payload; returns its carried byte count (0 for the HDF5 tree)."""
    keys = set(member) - {"name", "zip"}
    if keys == {"hdf5"} and member["name"] == WEIGHTS_MEMBER:
        hdf5_tree.check_tree(member["hdf5"])
        return 0
    if keys == {"data"}:
        return len(zipmeta.check_base64(member["data"], _WHERE, f"member {member['name']!r} data", MAX_CARRIED_BYTES))
    raise FormatError(f"{_WHERE}: member {member['name']!r} needs exactly one of 'data' or (for {WEIGHTS_MEMBER}) 'hdf5'")


def tensor_names(structure: dict) -> list[str]:
    """The tensor names a checked structure expects: ``model.weights.h5/<dataset path>``, in order."""
    return [f"{WEIGHTS_MEMBER}/{path}" for path in hdf5_tree.dataset_paths(weights_tree(structure))]


def weights_tree(structure: dict) -> dict:
    """The HDF5 tree of ``model.weights.h5``."""
    return next(m["hdf5"] for m in structure["members"] if "hdf5" in m)


def member_json(structure: dict, name: str) -> dict | None:
    """A carried JSON member (``config.json``, ``metadata.json``) parsed, or None when absent."""
    for member in structure["members"]:
        if member["name"] == name and "data" in member:
            try:
                return json.loads(base64.b64decode(member["data"]))
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise InputError(f"{name} in the .keras archive is not JSON") from None
    return None


def model_config(model: Model) -> dict | None:
    """The serialized model (``config.json``): ``{"class_name", "config", ...}``, as Keras writes it."""
    return member_json(model.structure, CONFIG_MEMBER)


def keras_version(model: Model) -> str | None:
    """The ``keras_version`` recorded in ``metadata.json``, or None."""
    metadata = member_json(model.structure, METADATA_MEMBER) or {}
    version = metadata.get("keras_version")
    return version if isinstance(version, str) else None


def layer_weights(model: Model, tensors: dict[str, np.ndarray] | None = None) -> dict:
    """Layer name -> weights in ``get_weights`` order (nested models: a dict), see :func:`keras_h5.vars_layer_weights`."""
    values = model.tensors if tensors is None else tensors
    return keras_h5.vars_layer_weights(weights_tree(model.structure), values, WEIGHTS_MEMBER + "/")


FORMAT = SourceFormat(
    FORMAT_ID, SUFFIX, sniff, read, write, check_structure, tensor_names,
    optimizer_prefix=f"{WEIGHTS_MEMBER}/{keras_h5.OPTIMIZER_GROUP[keras_h5.WEIGHTS_V3]}/",
    model_config=model_config, keras_version=keras_version, layer_weights=layer_weights,
)
