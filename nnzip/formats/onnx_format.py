"""ONNX models (format id ``onnx``): a protobuf ``ModelProto``, optionally with external data files.

The tensors are the top-level graph's initializers and the ``value`` tensors of its
``Constant`` nodes (exporters such as paddle2onnx keep every weight in ``Constant``
nodes), in that order: initializers in graph order, then constants in node order.
Everything else (graph, nodes, attributes, subgraphs, opsets, metadata, doc strings,
initializer order and names) is kept as the *stripped model*: the ``ModelProto`` with
the data of every carried tensor removed, serialized and base64'd into the structure
(spec/container.md §5.7).  Per tensor a record says where it sits, its ONNX type and
dims, how its data was stored (``raw_data``, a typed field such as ``float_data``, or an
external file) and which operator inputs it feeds, so the planner knows a weight
(MatMul/Gemm/Conv/Gather/RNN weight inputs) from a shape, index or constant: only
weights are ever made lossy (:func:`weight_names`).

Rebuilding puts each tensor's bytes back into the field they came from; protobuf
serializes fields in field-number order, so a file written by onnx/protobuf comes back
byte-identical.  A tensor whose typed field would not come back exactly, and types
nnzip does not carry as arrays (strings, complex, 4-bit and 2-bit packs in typed
fields), simply stay inside the stripped model.

The ``onnx`` package (``pip install nnzip[onnx]``) parses and serializes protobuf; it is
imported only when an ONNX file is actually read or written.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import os
from pathlib import Path

import numpy as np

from ..errors import FormatError, InputError, os_reason
from ..limits import DEFAULT_LIMITS, DecodeLimits
from ..model import LazyTensors, Model
from ..outputs import atomic_output
from ..dtypes import ALLOWED_DTYPES, MAX_ELEMENTS, MAX_NDIM
from .base import Probe, SourceFormat

FORMAT_ID = "onnx"
SUFFIX = ".onnx"
#: protobuf cannot parse a message of 2 GiB or more; bigger models must use external data.
MAX_FILE_BYTES = 2**31 - 1
#: The stripped model must fit the 64 MiB header (rule 4 / §6.5) once base64'd (4/3) with
#: room for the tensor records: bigger graphs or attributes (e.g. a giant string
#: attribute) are refused rather than written into a header no reader accepts.
MAX_MODEL_BYTES = 40 * 2**20
#: Tensor records in a structure (as many as a header may list tensors).
MAX_TENSORS = 2**20
#: Deepest subgraph nesting walked (rule 5.7.6); protobuf's parser already stops near 33.
MAX_GRAPH_DEPTH = 32
_WHERE = "rule 5.7.1: onnx structure"

# ONNX TensorProto.DataType -> numpy dtype the tensor is carried as (raw_data / external).
# BFLOAT16 and the 8-bit float types are carried as their raw bit patterns (unsigned
# integers): only a BFLOAT16 weight is made lossy, as a widened tensor (spec §4.5).
_CARRIED = {
    1: "<f4", 2: "|u1", 3: "|i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 9: "|b1",
    10: "<f2", 11: "<f8", 12: "<u4", 13: "<u8", 16: "<u2", 17: "|u1", 18: "|u1", 19: "|u1",
    20: "|u1", 24: "|u1",
}
#: Packed sub-byte types (UINT4, INT4, FLOAT4E2M1, UINT2, INT2) -> bits per element; carried
#: as the packed bytes, shape ``[ceil(elements * bits / 8)]``.
_PACKED_BITS = {21: 4, 22: 4, 23: 4, 25: 2, 26: 2}
#: Typed field -> (its numpy element type, the data types it may hold nnzip carries).
_TYPED = {
    "float_data": ("<f4", {1}),
    "int32_data": ("<i4", {2, 3, 4, 5, 6, 9, 10, 16, 17, 18, 19, 20, 24}),
    "int64_data": ("<i8", {7}),
    "double_data": ("<f8", {11}),
    "uint64_data": ("<u8", {12, 13}),
}
_STORAGES = ("raw", "external", *_TYPED)
#: Operator input slots that take a weight: a tensor feeding one of these is a weight.
WEIGHT_INPUTS = {
    "MatMul": (0, 1), "Gemm": (0, 1), "Conv": (1,), "ConvTranspose": (1,), "Gather": (0,),
    "LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2), "Einsum": tuple(range(8)),
}
#: Operators whose output is their input 0 re-laid out: a weight passing through one is still a weight.
_PASS_THROUGH = {"Identity", "Cast", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "DequantizeLinear", "Slice", "Split"}


def _onnx():
    """The onnx package, or a one-line InputError saying how to get it."""
    try:
        import onnx
    except ImportError:
        raise InputError("reading or writing ONNX models needs the onnx package: pip install 'nnzip[onnx]'") from None
    return onnx


# --- recognising --------------------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None


#: ModelProto field number -> protobuf wire type (0 varint, 2 length-delimited).
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}


def looks_like(head: bytes) -> bool:
    """Whether a file's first bytes read as a ModelProto: two fields with ModelProto's tags and wire types.

    protobuf writes fields in number order, so an onnx-written model starts with
    ``ir_version`` (field 1, a varint of 1..255) followed by another ModelProto field.
    """
    first = _varint(head, 0)
    if first is None or first[0] != 0x08:
        return False
    version = _varint(head, first[1])
    if version is None or not 1 <= version[0] <= 255:
        return False
    if version[1] == len(head):
        return False
    tag = _varint(head, version[1])
    return tag is not None and _MODEL_FIELDS.get(tag[0] >> 3) == (tag[0] & 7)


# --- reading --------------------------------------------------------------------------------


def read(path: str | os.PathLike, keep_optimizer: bool = False, limits: DecodeLimits = DEFAULT_LIMITS, lazy: bool = False) -> Model:
    """Read an ONNX model and its external data (*keep_optimizer*: ONNX files hold none).

    The tensors may declare at most ``limits.output_cap`` of the model's and its external
    data files' sizes (rule 8.7's cap, as for every input format).  With *lazy*, every
    check runs now but externally stored tensors are read from their files only when
    asked for (:class:`nnzip.model.LazyTensors`), so compressing a model whose weights
    live in external data holds one tensor at a time, not the whole model.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(f"rule 5.7.2: {path} is {size} bytes; an ONNX protobuf is under 2 GiB (bigger models keep tensors in external data)")
    model = parse_model(path.read_bytes(), str(path))
    graph = model.graph
    located = _carried_tensors(model)
    feeds = _feeds(graph)
    _check_declared_bytes(located, path, limits)
    tensors, records, local_feeds = {}, [], {}
    for at, proto in located:
        owner = graph if len(at) == 2 else _graph_at(model, at[2])
        name = proto.name if at[0] == "initializer" else owner.node[at[1]].output[0]
        where = f"{path}, tensor {name!r}"
        value, storage = _value(proto, path.parent, where, lazy)
        if value is None:
            continue  # stays inside the stripped model
        if len(at) == 2:
            if name in tensors:
                raise InputError(f"rule 5.7.4: {where}: two tensors have this name")
            slots = feeds.get(name, [])
        else:
            # Subgraphs may reuse a name (two If branches, each its own scope): the carried
            # tensor gets a unique one, and what it feeds is read in its own graph.
            name = _unique(name, tensors)
            if at[2] not in local_feeds:
                local_feeds[at[2]] = _feeds(owner)
            slots = local_feeds[at[2]].get(proto.name if at[0] == "initializer" else owner.node[at[1]].output[0], [])
        tensors[name] = value
        _strip(proto, storage)
        record_at = [at[0], at[1]] + ([[list(step) for step in at[2]]] if len(at) == 3 else [])
        records.append({"name": name, "at": record_at, "data_type": int(proto.data_type), "dims": [int(d) for d in proto.dims],
                        "storage": storage, "feeds": slots})
    stripped = model.SerializeToString()
    if len(stripped) > MAX_MODEL_BYTES:
        raise InputError(f"rule 5.7.5: {path}: the model without its tensors' data is {len(stripped)} bytes, over the "
                         f"{MAX_MODEL_BYTES}-byte cap the header allows (giant attributes or graph)")
    structure = {"model": base64.b64encode(stripped).decode("ascii"), "tensors": records}
    if lazy:
        return Model(FORMAT_ID, structure, _lazy(tensors, records))
    return Model(FORMAT_ID, structure, tensors)


def _lazy(tensors: dict, records: list[dict]) -> LazyTensors:
    """The tensors as a LazyTensors: inline ones as read, external ones (an :class:`_External`) read on each access."""
    specs = {}
    for record in records:
        dtype, shape, _ = _record_spec(record)
        specs[record["name"]] = (dtype, shape)

    def load(name: str) -> np.ndarray:
        value = tensors[name]
        return value.load() if isinstance(value, _External) else value

    return LazyTensors(specs, load)


class _External:
    """Where a checked external tensor's bytes are (file, offset, dtype, shape): read when loaded."""

    def __init__(self, target: Path, offset: int, dtype: np.dtype, shape: tuple[int, ...], where: str):
        self.target, self.offset, self.dtype, self.shape, self.where = target, offset, dtype, shape, where

    def load(self) -> np.ndarray:
        """The tensor, read from its file now."""
        count = math.prod(self.shape)
        try:
            with open(self.target, "rb") as handle:
                handle.seek(self.offset)
                value = np.fromfile(handle, dtype=self.dtype, count=count)
        except OSError as exc:
            raise InputError(f"rule 5.7.3: {self.where}: cannot read external data: {os_reason(exc)}") from None
        if value.size != count:
            raise InputError(f"rule 5.7.3: {self.where}: the external data file changed while it was read")
        return value.reshape(self.shape)


def _unique(name: str, taken: dict) -> str:
    """*name*, or *name* with the first free ``#2``, ``#3``… suffix when a carried tensor already has it."""
    if name not in taken:
        return name
    suffix = 2
    while f"{name}#{suffix}" in taken:
        suffix += 1
    return f"{name}#{suffix}"


def _check_declared_bytes(located: list, path: Path, limits: DecodeLimits) -> None:
    """Rule 8.7 for ONNX: the tensors' declared bytes within the cap for the input's size, before any is read.

    The input's size counts the model file and the external data files it names (each once).
    """
    declared, files = 0, {}
    for _, proto in located:
        expected = _expected(proto, f"{path}, tensor {proto.name!r}")
        declared += expected[2] if expected is not None else 0
        if proto.data_location == 1:
            location = next((entry.value for entry in proto.external_data if entry.key == "location"), "")
            candidate = path.parent / location
            if location and candidate.is_file() and not candidate.is_symlink():
                files[location] = candidate.stat().st_size
    cap = limits.output_cap(path.stat().st_size + sum(files.values()))
    if declared > cap:
        raise InputError(f"rule 8.7: {path}: the tensors declare {declared:,} bytes, more than the {cap:,}-byte cap for an "
                         "input of this size (what could not be decompressed is not read; see --max-output)")


def parse_model(data: bytes, where: str):
    """The ModelProto in *data*; InputError naming rule 5.7.2 when it does not parse."""
    onnx = _onnx()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, or RuntimeError for deep nesting
        raise InputError(f"rule 5.7.2: {where} is not a valid ONNX protobuf: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not model.HasField("graph"):
        raise InputError(f"rule 5.7.2: {where} is not an ONNX model (no graph)")
    return model


def _carried_tensors(model) -> list[tuple[tuple, object]]:
    """(at, TensorProto) of every candidate tensor (§5.7 order).

    The top-level graph's initializers, then its Constant values (``at`` = ``(kind,
    index)``), then the same for every subgraph, depth first in node and attribute
    order (``at`` = ``(kind, index, path)``, *path* the ``(node, attribute, graph)``
    steps from the top-level graph down to the subgraph; graph -1 is the attribute's
    ``g``, k >= 0 its ``graphs[k]``).
    """
    found = _graph_tensors(model.graph, ())
    for path, graph in _subgraphs(model.graph, ()):
        found += _graph_tensors(graph, path)
    return found


def _graph_tensors(graph, path: tuple) -> list[tuple[tuple, object]]:
    """(at, TensorProto) of one graph's initializers and Constant values."""
    tail = (path,) if path else ()
    found = [(("initializer", i, *tail), t) for i, t in enumerate(graph.initializer)]
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.HasField("t"):
                    found.append((("constant", i, *tail), attribute.t))
    return found


def _subgraphs(graph, path: tuple) -> list[tuple[tuple, object]]:
    """(path, GraphProto) of every subgraph below *graph*, depth first (If/Loop/Scan bodies, any GRAPH(S) attribute).

    Nesting is bounded by protobuf's recursion limit when parsing (rule 5.7.2), and
    again here by MAX_GRAPH_DEPTH, so a hand-made structure cannot recurse further.
    """
    if len(path) >= MAX_GRAPH_DEPTH:
        raise InputError(f"rule 5.7.6: the model's graphs nest more than {MAX_GRAPH_DEPTH} deep")
    found = []
    for n, node in enumerate(graph.node):
        for a, attribute in enumerate(node.attribute):
            children = ([(-1, attribute.g)] if attribute.HasField("g") else []) + list(enumerate(attribute.graphs))
            for k, child in children:
                step = path + ((n, a, k),)
                found.append((step, child))
                found += _subgraphs(child, step)
    return found


def _graph_at(model, path) -> object | None:
    """The graph a record's path names, or None when the model has no such graph."""
    graph = model.graph
    for n, a, k in path:
        if not (0 <= n < len(graph.node) and 0 <= a < len(graph.node[n].attribute)):
            return None
        attribute = graph.node[n].attribute[a]
        if k == -1:
            if not attribute.HasField("g"):
                return None
            graph = attribute.g
        elif 0 <= k < len(attribute.graphs):
            graph = attribute.graphs[k]
        else:
            return None
    return graph


def _at_key(at: list | tuple) -> tuple:
    """A record's ``at`` as a hashable key: (kind, index) or (kind, index, ((n, a, k), ...))."""
    if len(at) == 2:
        return (at[0], at[1])
    return (at[0], at[1], tuple(tuple(step) for step in at[2]))


def _expected(proto, where: str) -> tuple[np.dtype, tuple[int, ...], int] | None:
    """(carried dtype, carried shape, byte size) of a tensor, or None when nnzip does not carry its type."""
    dims = [int(d) for d in proto.dims]
    if len(dims) > MAX_NDIM or any(d < 0 or d > MAX_ELEMENTS for d in dims):
        raise InputError(f"rule 5.7.4: {where}: dims {dims[:MAX_NDIM + 1]} (at most {MAX_NDIM} sizes in 0..{MAX_ELEMENTS})")
    count = math.prod(dims)
    if count > MAX_ELEMENTS:
        raise InputError(f"rule 5.7.4: {where}: dims {dims} name {count} elements, more than the cap {MAX_ELEMENTS}")
    data_type = int(proto.data_type)
    if data_type in _PACKED_BITS:
        size = (count * _PACKED_BITS[data_type] + 7) // 8
        return np.dtype("|u1"), (size,), size
    if data_type in _CARRIED:
        dtype = np.dtype(_CARRIED[data_type])
        return dtype, tuple(dims), count * dtype.itemsize
    return None


def _value(proto, folder: Path, where: str, lazy: bool = False) -> tuple[np.ndarray | None, str]:
    """(carried array, storage) of one TensorProto, or (None, '') when it stays in the stripped model.

    With *lazy*, an external tensor is checked (rule 5.7.3) but not read: its value is an
    :class:`_External` that reads it when loaded.
    """
    expected = _expected(proto, where)
    if expected is None or proto.HasField("segment"):
        return None, ""
    dtype, shape, nbytes = expected
    if proto.data_location == 1:  # EXTERNAL
        if lazy:
            target, offset = _external_place(proto, folder, nbytes, where)
            return _External(target, offset, dtype, shape, where), "external"
        return np.frombuffer(_external_bytes(proto, folder, nbytes, where), dtype).reshape(shape).copy(), "external"
    if proto.HasField("raw_data"):
        if len(proto.raw_data) != nbytes:
            raise InputError(f"rule 5.7.4: {where}: raw_data holds {len(proto.raw_data)} bytes, its dims and type need {nbytes}")
        return np.frombuffer(proto.raw_data, dtype).reshape(shape).copy(), "raw"
    filled = [field for field in _TYPED if len(getattr(proto, field))]
    if len(filled) > 1 or int(proto.data_type) in _PACKED_BITS:
        return None, ""
    if not filled:
        if nbytes:
            return None, ""  # no data at all: malformed, but onnx's business; keep it as it is
        return np.zeros(shape, dtype), "raw"
    field = filled[0]
    element, types = _TYPED[field]
    if int(proto.data_type) not in types:
        return None, ""
    stored = np.asarray(getattr(proto, field), dtype=element)
    if stored.size != math.prod(shape):
        raise InputError(f"rule 5.7.4: {where}: {field} holds {stored.size} values, its dims need {math.prod(shape)}")
    value = _from_typed(stored, dtype)
    if not np.array_equal(_to_typed(value, element), stored):
        return None, ""  # values outside the type's range: only the stripped model keeps them exactly
    return value.reshape(shape), field


def _from_typed(stored: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Values of a typed field as the carried dtype (float16 in int32_data is its bit pattern)."""
    if dtype == np.dtype("<f2"):
        return stored.astype("<u2").view("<f2")
    return stored.astype(dtype)


def _to_typed(value: np.ndarray, element: str) -> np.ndarray:
    """The typed field's values for a carried array (inverse of :func:`_from_typed`)."""
    flat = np.ascontiguousarray(value).reshape(-1)
    if flat.dtype == np.dtype("<f2"):
        flat = flat.view("<u2")
    return flat.astype(element)


def _external_place(proto, folder: Path, nbytes: int, where: str) -> tuple[Path, int]:
    """(file, offset) of an externally stored tensor, after rule 5.7.3's checks (nothing read)."""
    info = {entry.key: entry.value for entry in proto.external_data}
    location = info.get("location", "")
    target = safe_location(location, folder, where, InputError)
    try:
        offset = int(info.get("offset", "0"))
        length = int(info.get("length", str(nbytes)))
    except ValueError:
        raise InputError(f"rule 5.7.3: {where}: external data offset/length are not integers") from None
    if length != nbytes or offset < 0:
        raise InputError(f"rule 5.7.3: {where}: external data length {length} at offset {offset}; its dims and type need {nbytes} bytes")
    try:
        size = target.stat().st_size
    except OSError as exc:
        raise InputError(f"rule 5.7.3: {where}: cannot read external data {location!r}: {os_reason(exc)}") from None
    if not target.is_file() or offset + length > size:
        raise InputError(f"rule 5.7.3: {where}: external data {location!r} holds {size} bytes, the tensor needs {offset}..{offset + length}")
    return target, offset


def _external_bytes(proto, folder: Path, nbytes: int, where: str) -> bytes:
    """The bytes of an externally stored tensor, after rule 5.7.3's checks (:func:`_external_place`)."""
    target, offset = _external_place(proto, folder, nbytes, where)
    location = {entry.key: entry.value for entry in proto.external_data}.get("location", "")  # as the model names it
    try:
        with open(target, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size  # again: the file may have changed since it was checked
            if offset + nbytes > size:
                raise InputError(f"rule 5.7.3: {where}: external data {location!r} holds {size} bytes, the tensor needs {offset}..{offset + nbytes}")
            handle.seek(offset)
            return handle.read(nbytes)
    except OSError as exc:
        raise InputError(f"rule 5.7.3: {where}: cannot read external data {location!r}: {os_reason(exc)}") from None


def safe_location(location: object, folder: Path, where: str, error: type = InputError) -> Path:
    """*location* resolved inside *folder*; *error* naming rule 5.7.3 when it is empty, absolute or escapes."""
    if not isinstance(location, str) or not location or "\x00" in location:
        raise error(f"rule 5.7.3: {where}: external data needs a relative file name (location {location!r})")
    relative = Path(location)
    if relative.is_absolute() or location.startswith(("/", "\\")) or ".." in Path(location.replace("\\", "/")).parts \
            or (len(location) > 1 and location[1] == ":"):
        raise error(f"rule 5.7.3: {where}: external data location {location!r} escapes the model's folder")
    base = folder.resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise error(f"rule 5.7.3: {where}: external data location {location!r} escapes the model's folder (through a link)")
    return target


def _strip(proto, storage: str) -> None:
    """Remove a carried tensor's data from its TensorProto (external data is not in it)."""
    if storage == "raw":
        proto.ClearField("raw_data")
    elif storage in _TYPED:
        proto.ClearField(storage)


def _feeds(graph) -> dict[str, list[str]]:
    """Tensor name -> sorted ``"Op:input"`` slots it reaches, directly or through pass-through ops and subgraphs."""
    consumers: dict[str, list[tuple[object, int]]] = {}

    def scan(g) -> None:
        for node in g.node:
            for index, name in enumerate(node.input):
                if name:
                    consumers.setdefault(name, []).append((node, index))
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    scan(attribute.g)
                for sub in attribute.graphs:
                    scan(sub)

    scan(graph)
    result: dict[str, list[str]] = {}
    for name in consumers:
        slots: set[str] = set()
        frontier, seen = [name], {name}
        for _ in range(6):  # a few pass-through steps (Cast -> Transpose -> MatMul) at most
            following = []
            for current in frontier:
                for node, index in consumers.get(current, []):
                    slots.add(f"{node.op_type}:{index}")
                    if (node.op_type in _PASS_THROUGH and index == 0) or node.op_type == "Concat":
                        for output in node.output:  # Split has several
                            if output and output not in seen:
                                seen.add(output)
                                following.append(output)
            frontier = following
        result[name] = sorted(slots)
    return result


def is_weight(feeds: list[str]) -> bool:
    """Whether a tensor feeding these ``"Op:input"`` slots is a weight (WEIGHT_INPUTS)."""
    for slot in feeds:
        op, _, index = slot.rpartition(":")
        if index.isdigit() and int(index) in WEIGHT_INPUTS.get(op, ()):
            return True
    return False


def weight_names(structure: dict) -> set[str]:
    """Names of the tensors that are weights (may be made lossy); shapes, indices and constants are not."""
    return {record["name"] for record in structure["tensors"] if is_weight(record["feeds"])}


# --- writing --------------------------------------------------------------------------------


def rebuild(structure: dict, tensor, folder: Path | None = None) -> object:
    """The ModelProto of *structure* with every tensor's data put back; external data is written into *folder*.

    With *folder* None, externally stored tensors are put back as ``raw_data``
    instead (an in-memory model for onnxruntime).
    """
    try:
        model = parse_model(base64.b64decode(structure["model"]), "the structure's model")
    except InputError as exc:
        raise FormatError(f"{_WHERE}: {exc}") from None
    try:
        located = dict(_carried_tensors(model))
    except InputError as exc:
        raise FormatError(f"{_WHERE}: {exc}") from None
    protos, external = [], {}
    for record in structure["tensors"]:  # every record checked against the model before any tensor is pulled
        proto = located.get(_at_key(record["at"]))
        if proto is None:
            raise FormatError(f"{_WHERE}: tensor {record['name']!r} is at {record['at']}, where the model has no tensor")
        if int(proto.data_type) != record["data_type"] or [int(d) for d in proto.dims] != record["dims"]:
            raise FormatError(f"{_WHERE}: tensor {record['name']!r}: its record's data_type and dims differ from the model's tensor at {record['at']}")
        if (record["storage"] == "external") != (proto.data_location == 1):
            raise FormatError(f"{_WHERE}: tensor {record['name']!r}: storage {record['storage']!r} but the model's tensor is "
                              f"{'not ' if proto.data_location != 1 else ''}external")
        if record["storage"] == "external" and folder is not None:
            info = {entry.key: entry.value for entry in proto.external_data}
            offset = info.get("offset", "0")
            if not offset.isdigit() or len(offset) > 18:
                raise FormatError(f"rule 5.7.3: tensor {record['name']!r}: external data offset {offset[:40]!r} is not a non-negative integer")
            external.setdefault(info.get("location", ""), []).append((int(offset), _record_spec(record)[2]))
        protos.append((record, proto))
    targets = {location: safe_location(location, folder, "writing", FormatError) for location in external}  # all before any write
    for location, pieces in external.items():
        _check_pieces(location, sorted(pieces))
    for location in external:  # all before any write: nothing is replaced, nothing half-written
        if os.path.lexists(targets[location]):
            raise FormatError(f"rule 5.7.3: external data file {targets[location]} already exists beside the output; "
                              "nnzip does not replace files the .nnz names (remove it, or decompress into another folder)")
    with contextlib.ExitStack() as stack:
        handles = {}
        for location, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            handles[location] = stack.enter_context(open(stack.enter_context(atomic_output(target, force=False)), "wb"))
        for record, proto in protos:  # one tensor at a time: external ones go to their file as they come
            _put(record, proto, tensor(record["name"]), handles)
        for location, pieces in external.items():  # zeros up to the end of the last piece (a gap at the end)
            handles[location].truncate(max(offset + size for offset, size in pieces))
    return model


def _put(record: dict, proto, value, handles: dict) -> None:
    """Put one tensor's data back into its TensorProto, or write it into its external file (open in *handles*)."""
    value = np.asarray(value)
    dtype, shape, _ = _record_spec(record)
    if value.dtype != dtype or tuple(value.shape) != shape:
        raise FormatError(f"tensor {record['name']!r} decodes to {value.dtype.str} {list(value.shape)}, "
                          f"its ONNX type and dims need {dtype.str} {list(shape)}")
    storage = record["storage"]
    if storage == "raw":
        proto.raw_data = np.ascontiguousarray(value).tobytes()
    elif storage == "external" and not handles:
        proto.data_location = 0
        del proto.external_data[:]
        proto.raw_data = np.ascontiguousarray(value).tobytes()
    elif storage == "external":
        info = {entry.key: entry.value for entry in proto.external_data}
        handle = handles[info.get("location", "")]
        handle.seek(int(info.get("offset", "0")))
        handle.write(np.ascontiguousarray(value).data)
    else:
        getattr(proto, storage).extend(_to_typed(value, _TYPED[storage][0]).tolist())


#: Largest gap before or between the tensors of one external file a writer fills with zeros
#: (onnx aligns external tensors to at most 64 KiB pages); more would let a hostile header
#: make sparse files of any size.
MAX_EXTERNAL_GAP = 2**16


def _check_pieces(location: str, pieces: list[tuple[int, int]]) -> None:
    """Rule 5.7.3: the tensors (offset, size) of one external file neither overlap nor leave gaps over MAX_EXTERNAL_GAP."""
    position = 0
    for offset, size in pieces:
        if offset < position or offset - position > MAX_EXTERNAL_GAP:
            raise FormatError(f"rule 5.7.3: external file {location!r}: a tensor at offset {offset} overlaps the one before "
                              f"or leaves a gap of more than {MAX_EXTERNAL_GAP} bytes")
        position = offset + size


def write(path: str | os.PathLike, structure: dict, tensor) -> None:
    """Write the ONNX model of *structure*, pulling tensors with ``tensor(name)``; external files go beside it."""
    path = Path(path)
    model = rebuild(structure, tensor, path.parent)
    with open(path, "wb") as handle:
        handle.write(model.SerializeToString())


def model_bytes(structure: dict, tensors: dict[str, np.ndarray]) -> bytes:
    """The serialized model with *tensors* as its values, all data inline (for onnxruntime)."""
    return rebuild(structure, tensors.__getitem__, None).SerializeToString()


def _record_spec(record: dict) -> tuple[np.dtype, tuple[int, ...], int]:
    data_type, dims = record["data_type"], record["dims"]
    count = math.prod(dims)
    if data_type in _PACKED_BITS:
        size = (count * _PACKED_BITS[data_type] + 7) // 8
        return np.dtype("|u1"), (size,), size
    dtype = np.dtype(_CARRIED[data_type])
    return dtype, tuple(dims), count * dtype.itemsize


# --- structure checks ---------------------------------------------------------------------------


def check_structure(structure: object) -> None:
    """Raise FormatError unless *structure* is a well-formed ``onnx`` structure (§5.7, rule 5.7.1)."""
    if not isinstance(structure, dict) or set(structure) != {"model", "tensors"}:
        raise FormatError(f"{_WHERE}: needs exactly 'model' and 'tensors'")
    text, records = structure["model"], structure["tensors"]
    if not isinstance(text, str) or len(text) > (MAX_MODEL_BYTES + 2) // 3 * 4:
        raise FormatError(f"{_WHERE}: 'model' must be a base64 string of at most {MAX_MODEL_BYTES} bytes")
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"{_WHERE}: 'model' is not base64") from None
    if not isinstance(records, list) or len(records) > MAX_TENSORS:
        raise FormatError(f"{_WHERE}: 'tensors' must be a list of at most {MAX_TENSORS} records")
    names, places = set(), set()
    for record in records:
        _check_record(record)
        if record["name"] in names or _at_key(record["at"]) in places:
            raise FormatError(f"{_WHERE}: two tensor records share the name {record['name']!r} or the place {record['at']}")
        names.add(record["name"])
        places.add(_at_key(record["at"]))


def _check_record(record: object) -> None:
    keys = {"name", "at", "data_type", "dims", "storage", "feeds"}
    if not isinstance(record, dict) or set(record) != keys:
        raise FormatError(f"{_WHERE}: a tensor record needs exactly {', '.join(sorted(keys))}")
    name, at, data_type, dims = record["name"], record["at"], record["data_type"], record["dims"]
    where = f"{_WHERE}, tensor {name!r}"
    if not isinstance(name, str) or not name or len(name) > 65536:
        raise FormatError(f"{_WHERE}: a tensor name must be a non-empty string")
    if not (isinstance(at, list) and len(at) in (2, 3) and at[0] in ("initializer", "constant") and type(at[1]) is int and 0 <= at[1] < 2**31
            and (len(at) == 2 or _is_path(at[2]))):
        raise FormatError(f"{where}: 'at' must be [\"initializer\" or \"constant\", index] or, in a subgraph, "
                          f"[kind, index, path of 1..{MAX_GRAPH_DEPTH} [node, attribute, graph] steps]")
    if type(data_type) is not int or (data_type not in _CARRIED and data_type not in _PACKED_BITS):
        raise FormatError(f"{where}: data_type {data_type!r} is not one nnzip carries")
    if not isinstance(dims, list) or len(dims) > MAX_NDIM or any(type(d) is not int or not 0 <= d <= MAX_ELEMENTS for d in dims) \
            or math.prod(dims) > MAX_ELEMENTS:
        raise FormatError(f"{where}: dims must be at most {MAX_NDIM} sizes naming at most {MAX_ELEMENTS} elements")
    storage = record["storage"]
    if storage not in _STORAGES or (storage in _TYPED and data_type not in _TYPED[storage][1]):
        raise FormatError(f"{where}: storage {storage!r} cannot hold data_type {data_type}")
    if not isinstance(record["feeds"], list) or not all(isinstance(f, str) and len(f) < 256 for f in record["feeds"]):
        raise FormatError(f"{where}: 'feeds' must be a list of short strings")
    assert _record_spec(record)[0].str in ALLOWED_DTYPES


def _is_path(path: object) -> bool:
    """Whether *path* is a subgraph path: 1..MAX_GRAPH_DEPTH steps [node >= 0, attribute >= 0, graph >= -1]."""
    return isinstance(path, list) and 1 <= len(path) <= MAX_GRAPH_DEPTH and all(
        isinstance(step, list) and len(step) == 3 and all(type(v) is int for v in step)
        and 0 <= step[0] < 2**31 and 0 <= step[1] < 2**31 and -1 <= step[2] < 2**31 for step in path)


def uses_subgraph_tensors(structure: object) -> bool:
    """Whether an onnx structure carries a tensor of a subgraph (format 1.2, §2); tolerant of malformed structures."""
    records = structure.get("tensors") if isinstance(structure, dict) else None
    return isinstance(records, list) and any(isinstance(r, dict) and isinstance(r.get("at"), list) and len(r["at"]) == 3 for r in records)


def tensor_names(structure: dict) -> list[str]:
    """The tensor names a checked structure expects, in record order."""
    return [record["name"] for record in structure["tensors"]]


#: ONNX TensorProto.DataType -> element type name, for the types carried as raw bit patterns (§5.7).
ELEMENT_TYPES = {16: "bfloat16", 17: "float8_e4m3fn", 18: "float8_e4m3fnuz", 19: "float8_e5m2", 20: "float8_e5m2fnuz",
                 23: "float4_e2m1", 24: "float8_e8m0"}


def _sniff(probe: Probe) -> bool:
    return looks_like(probe.head)


def _exact_names(model: Model) -> set[str]:
    """Every carried tensor that feeds no weight input: shapes, indices, scales, other constants."""
    return set(model.tensors) - weight_names(model.structure)


def _element_types(model: Model) -> dict[str, str]:
    return {r["name"]: ELEMENT_TYPES[r["data_type"]] for r in model.structure["tensors"] if r["data_type"] in ELEMENT_TYPES}


def _structure_minor(structure: object) -> int:
    """Format 1.2 for a structure that carries a subgraph's tensors (§5.7), else 1.0."""
    return 2 if uses_subgraph_tensors(structure) else 0


FORMAT = SourceFormat(
    FORMAT_ID, SUFFIX, _sniff, read, write, check_structure, tensor_names,
    exact_names=_exact_names, element_types=_element_types, structure_minor=_structure_minor,
)
