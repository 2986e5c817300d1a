"""Sharded safetensors checkpoints (format id ``safetensors-sharded``), one input, one ``.nnz``.

A Hugging Face sharded checkpoint is an index, ``model.safetensors.index.json``::

    {"metadata": {"total_size": 123}, "weight_map": {"tensor name": "model-00001-of-00002.safetensors", ...}}

(transformers writes it as ``json.dumps(index, indent=2, sort_keys=True) + "\\n"``) and the
shard files it names, plain safetensors files in the same folder.  The input is the index file
or its folder (holding exactly one ``*.safetensors.index.json``).

Every shard is read by :mod:`nnzip.formats.safetensors` (all of §8.2's rules 8.18 and 8.19 apply to
each) after the index passes its own checks, rules 8.20-8.23 (spec/container.md §8.3): the
index is bounded, plain JSON; shard names are plain file names in the index's folder; the map
and the shards agree tensor for tensor; and the shards' declared bytes together fit the output
cap of the whole checkpoint's size -- all before any tensor byte is read.

The structure (spec §5.8) keeps the index's exact text and, per shard in file-name order, its
file name and its safetensors structure (§5.5), so decompressing writes back the same index
and the same shards, byte for byte in lossless mode.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from pathlib import Path

import numpy as np

from ..errors import FormatError, InputError, os_reason
from ..limits import DEFAULT_LIMITS, DecodeLimits
from ..model import LazyTensors, Model
from ..outputs import atomic_output
from . import safetensors
from .base import Malformed, Probe, SourceFormat

FORMAT_ID = "safetensors-sharded"
#: Decompress writes the index under this suffix; the shards go beside it.
SUFFIX = ".safetensors.index.json"
#: The index file's cap (rule 8.20): a 100 GB checkpoint's index is a few hundred KiB; parsed
#: JSON costs 10-20 times its text, and the text is kept in a .nnz header of at most 64 MiB.
MAX_INDEX_BYTES = 16 * 2**20
#: Most shard files one index may name (rule 8.21); real checkpoints have at most a few hundred.
MAX_SHARDS = 65536
_WHERE = "rule 5.8.1: safetensors-sharded structure"
#: A plain file name (rule 8.21 / 5.8.2): no separators, no NUL, not ``.``/``..``, no drive prefix.
_BAD_NAME = re.compile(r"[/\\\x00]|^\.{1,2}$|^[A-Za-z]:")


# --- the index ---------------------------------------------------------------------------------


def parse_index(text: str) -> dict[str, str]:
    """The ``weight_map`` (tensor name -> shard file) of an index's JSON text, checked (rules 8.20, 8.21).

    The text must be a JSON object, at most 16 levels deep (measured before parsing), without
    duplicate keys or ``NaN``, whose ``weight_map`` maps strings to plain file names.  Other
    members (``metadata``) are kept verbatim but not interpreted.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_INDEX_BYTES:
        raise Malformed(f"the index is over nnzip's {MAX_INDEX_BYTES}-byte cap", "8.20")
    parsed = _parse_json(text)
    weight_map = dict(parsed).get("weight_map")
    if not isinstance(weight_map, safetensors._Object):  # a parsed object is its (key, value) pairs
        raise Malformed("the index has no weight_map object", "8.20")
    mapping = {}
    for name, shard in weight_map:
        if not isinstance(shard, str):
            raise Malformed(f"weight_map maps {name[:80]!r} to a {type(shard).__name__}, not a file name", "8.20")
        check_shard_name(shard)
        mapping[name] = shard
    if not mapping:
        raise Malformed("the weight_map names no tensors", "8.20")
    if len(set(mapping.values())) > MAX_SHARDS:
        raise Malformed(f"the index names more than {MAX_SHARDS} shard files", "8.21")
    return mapping


def _parse_json(text: str) -> list:
    """The top-level object of *text* as ``(key, value)`` pairs: depth measured first, no duplicate keys, no NaN."""
    depth = safetensors.json_depth(text.encode("utf-8", "surrogatepass"))
    if depth > safetensors.MAX_JSON_DEPTH:
        raise Malformed(f"the index nests {depth} levels deep, more than the {safetensors.MAX_JSON_DEPTH} allowed", "8.20")
    try:
        parsed = json.loads(text, object_pairs_hook=safetensors._no_duplicates, parse_constant=safetensors._no_constant)
    except (ValueError, RecursionError) as exc:  # Malformed (duplicate key, NaN) is a ValueError
        raise Malformed(f"the index is not plain JSON ({str(exc)[:200]})", "8.20") from None
    if not isinstance(parsed, safetensors._Object):
        raise Malformed("the index is not a JSON object", "8.20")
    return parsed


def check_shard_name(name: str) -> None:
    """Rule 8.21: *name* is a plain file name in the index's own folder (no path, no ``..``, no drive)."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: no file system name
        size = 256
    if not name or size > 255 or _BAD_NAME.search(name) or name.endswith(".index.json"):
        raise Malformed(f"shard file name {name[:80]!r} is not a plain file name in the index's folder "
                        "(no '/', '\\', '..', absolute path, drive or NUL; not an index)", "8.21")


def find_index(path: Path) -> Path:
    """The index file of *path*: *path* itself, or the one ``*.safetensors.index.json`` in the folder *path*."""
    if not path.is_dir():
        return path
    found = sorted(p for p in path.iterdir() if p.name.endswith(SUFFIX))
    if len(found) != 1:
        raise InputError(f"rule 8.20: {path} is a folder with {len(found)} '*{SUFFIX}' files; it needs exactly one "
                         "(or give the index file itself)")
    return found[0]


def looks_like(head: bytes) -> bool:
    """Whether a file's first bytes can start JSON text (an index; no model format starts so).

    An array is taken too, so that it gets rule 8.20's error rather than "not a supported file".
    """
    return head.lstrip(b" \t\r\n")[:1] in (b"{", b"[")


def _shard_path(folder: Path, name: str, where: str) -> Path:
    """The shard *name* in *folder*: a regular file, a symlink only when it resolves inside *folder* (rule 8.21)."""
    path = folder / name
    try:
        os.stat(path)
    except OSError as exc:
        raise InputError(f"rule 8.21: {where}: cannot open shard {name!r}: {os_reason(exc)}") from None
    if os.path.islink(path) and Path(os.path.realpath(path)).parent != Path(os.path.realpath(folder)):
        raise InputError(f"rule 8.21: {where}: shard {name!r} is a symbolic link leading out of the index's folder")
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise InputError(f"rule 8.21: {where}: shard {name!r} is not a regular file")
    return path


# --- reading ---------------------------------------------------------------------------------


def read(path: str | os.PathLike, keep_optimizer: bool = False, limits: DecodeLimits = DEFAULT_LIMITS, lazy: bool = False) -> Model:
    """Read a sharded checkpoint (its index file or folder) within *limits* (*keep_optimizer*: none to keep).

    With *lazy*, every check runs at once but each tensor is read from its shard only when
    asked for (:class:`nnzip.model.LazyTensors`), as for one safetensors file.
    """
    index = find_index(Path(path))
    where = os.fspath(index)
    text = _read_index_text(index)
    try:
        mapping = parse_index(text)
    except Malformed as exc:
        raise InputError(f"rule {exc.rule}: {where}: {exc}") from None
    folder = index.parent
    names = sorted(set(mapping.values()))
    shards = {name: _shard_path(folder, name, where) for name in names}
    headers = {name: _survey(shards[name]) for name in names}  # every header before any tensor byte
    _check_map(mapping, {name: [t["name"] for t in headers[name][1]] for name in names}, where)
    total = sum(safetensors.tensor_nbytes(item) for _, tensors, _ in headers.values() for item in tensors)
    size = len(text.encode("utf-8")) + sum(file_size for _, _, file_size in headers.values())
    if total > limits.output_cap(size):
        raise InputError(f"rule 8.23: {where}: the shards' tensors declare {total} bytes, over the "
                         f"{limits.output_cap(size)}-byte cap for a {size}-byte checkpoint")
    values, records, specs = {}, [], {}
    for name in names:
        model = safetensors.read(shards[name], limits=limits, lazy=lazy)  # rules 8.18 and 8.19 in full, per shard
        values.update(dict.fromkeys(model.tensors, model.tensors) if lazy else model.tensors)
        specs.update({item["name"]: (np.dtype(safetensors.DTYPES[item["dtype"]]), tuple(item["shape"])) for item in model.structure["tensors"]})
        records.append({"file": name, "structure": model.structure})
    if lazy:  # tensor name -> its shard's lazy mapping, which reads it by offset
        values = LazyTensors(specs, lambda key, owners=values: owners[key][key])
    return Model(FORMAT_ID, {"index": text, "shards": records}, values)


def _read_index_text(index: Path) -> str:
    try:
        with open(index, "rb") as handle:
            data = handle.read(MAX_INDEX_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot open {index}: {os_reason(exc)}") from None
    if len(data) > MAX_INDEX_BYTES:
        raise InputError(f"rule 8.20: {index}: the index is over nnzip's {MAX_INDEX_BYTES}-byte cap")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"rule 8.20: {index}: the index is not UTF-8") from None


def _survey(path: Path) -> tuple[list | None, list[dict], int]:
    """``(metadata, tensors, file size)`` of a shard's header, checked by rules 8.18/8.19, no data read."""
    name = os.fspath(path)
    with open(path, "rb") as handle:
        file_size = os.fstat(handle.fileno()).st_size
        text = safetensors._read_header_text(handle, file_size, name)
    try:
        metadata, tensors = safetensors.parse_header(text)
    except Malformed as exc:
        raise InputError(f"rule {exc.rule}: {name}: not a valid safetensors file: {exc}") from None
    return metadata, tensors, file_size


def _check_map(mapping: dict[str, str], contents: dict[str, list[str]], where: str) -> None:
    """Rule 8.22: each mapped tensor is in its shard, each shard tensor is mapped to that shard."""
    for shard, names in contents.items():
        for name in names:
            if mapping.get(name) != shard:
                elsewhere = f"maps it to {mapping[name]!r}" if name in mapping else "does not name it"
                raise InputError(f"rule 8.22: {where}: shard {shard!r} holds tensor {name[:80]!r}, the weight_map {elsewhere}")
    for name, shard in mapping.items():
        if name not in set(contents[shard]):
            raise InputError(f"rule 8.22: {where}: the weight_map puts tensor {name[:80]!r} in {shard!r}, which does not hold it")


# --- writing --------------------------------------------------------------------------------


def write(path: str | os.PathLike, structure: dict, tensor) -> None:
    """Write the index at *path* and every shard beside it (rule 5.8.4: all or nothing).

    Every shard name is checked absent before anything is written; each shard is written to
    its own temporary file (:func:`nnzip.outputs.atomic_output`), and the shards are renamed
    into place only once all are complete.  The caller renames the index last.
    """
    path = Path(path)
    targets = [path.parent / shard["file"] for shard in structure["shards"]]
    for target in targets:
        if os.path.lexists(target):
            raise FormatError(f"rule 5.8.4: shard file {target} already exists beside the output; nnzip does not replace "
                              "files the .nnz names (remove it, or decompress into another folder)")
    with contextlib.ExitStack() as stack:
        for target, shard in zip(targets, structure["shards"]):
            temporary = stack.enter_context(atomic_output(target, force=False))
            safetensors.write(temporary, shard["structure"], tensor)
        # leaving the stack renames the shards (a failure above removed every temporary)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(structure["index"])


# --- structure checks ---------------------------------------------------------------------------


def check_structure(structure: object) -> None:
    """Raise FormatError unless *structure* is a well-formed ``safetensors-sharded`` structure (§5.8)."""
    if not isinstance(structure, dict) or set(structure) != {"index", "shards"}:
        raise FormatError(f"{_WHERE}: needs exactly 'index' and 'shards'")
    text, shards = structure["index"], structure["shards"]
    if not isinstance(text, str) or not isinstance(shards, list) or not 1 <= len(shards) <= MAX_SHARDS:
        raise FormatError(f"{_WHERE}: 'index' must be a string and 'shards' a list of 1 to {MAX_SHARDS} shards")
    try:
        mapping = parse_index(text)
    except Malformed as exc:
        raise FormatError(f"rule 5.8.2: safetensors-sharded structure: the index: {exc}") from None
    contents = {}
    for shard in shards:
        if not isinstance(shard, dict) or set(shard) != {"file", "structure"} or not isinstance(shard["file"], str):
            raise FormatError(f"{_WHERE}: a shard needs exactly 'file' (a string) and 'structure'")
        try:
            check_shard_name(shard["file"])
        except Malformed as exc:
            raise FormatError(f"rule 5.8.2: safetensors-sharded structure: {exc}") from None
        if shard["file"] in contents:
            raise FormatError(f"{_WHERE}: shard {shard['file']!r} is listed twice")
        safetensors.check_structure(shard["structure"])
        contents[shard["file"]] = safetensors.tensor_names(shard["structure"])
    if [s["file"] for s in shards] != sorted(contents) or set(mapping.values()) != set(contents):
        raise FormatError("rule 5.8.3: safetensors-sharded structure: the shards must be exactly the weight_map's files, in name order")
    try:
        _check_map(mapping, contents, "the structure")
    except InputError as exc:
        raise FormatError(str(exc).replace("rule 8.22", "rule 5.8.3", 1)) from None


def tensor_names(structure: dict) -> list[str]:
    """The tensor names of a checked structure: each shard's in data order, shards in name order."""
    return [name for shard in structure["shards"] for name in safetensors.tensor_names(shard["structure"])]


def _sniff(probe: Probe) -> bool:
    """A folder, or a file that starts like JSON (an index; no other supported format does)."""
    return os.path.isdir(probe.path) or looks_like(probe.head)


def _element_types(model: Model) -> dict[str, str]:
    return {name: element for shard in model.structure["shards"]
            for name, element in safetensors.structure_element_types(shard["structure"]).items()}


FORMAT = SourceFormat(FORMAT_ID, SUFFIX, _sniff, read, write, check_structure, tensor_names, element_types=_element_types)
