"""The layer graph: layers built from a :class:`ModelSpec`, nodes in topological order,
static shape inference, weight binding and checking, and the batched forward pass.

A *node* is one call of a layer; a layer called once has node 0 only. Nested models
(a Sequential/Functional used as a layer) are run as sub-graphs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnzip.errors import NnzipError
from nnzip.infer import conv_layers, core_layers  # noqa: F401  (register the layer builders)
from nnzip.infer.config import MODEL_CLASSES, Constant, LayerSpec, ModelSpec, NodeInput, TensorRef, parse_model
from nnzip.infer.errors import DataShapeError, ModelWeightsError, UnsupportedModelError
from nnzip.infer.registry import LayerContext, Shape, build_impl, one_line

Record = Callable[[str, Any], None]
"""Callback receiving (layer output label, output) for every node run."""

NodeKey = tuple[str, int]


def node_label(layer: str, index: int) -> str:
    """Name under which a node's output is reported: the layer name, plus ``:i`` for calls i > 0."""
    return layer if index == 0 else f"{layer}:{index}"


def tensor_refs(inputs: Sequence[NodeInput]) -> list[TensorRef]:
    """The tensor references among a node's inputs (constants left out)."""
    return [item for item in inputs if not isinstance(item, Constant)]


def _prefixed(record: Record | None, prefix: str) -> Record | None:
    if record is None:
        return None
    return lambda label, value: record(prefix + label, value)


def input_layer_shape(spec: LayerSpec) -> Shape:
    """Non-batch shape of an InputLayer config (Keras 3 ``batch_shape``, Keras 2 ``batch_input_shape``)."""
    config = spec.config
    shape = None
    for key in ("batch_shape", "batch_input_shape"):
        if isinstance(config.get(key), list) and config[key]:
            shape = tuple(config[key][1:])
            break
    else:
        if isinstance(config.get("shape"), list):
            shape = tuple(config["shape"])
    if shape is None:
        raise UnsupportedModelError(f"InputLayer {spec.name!r} records no shape")
    if not all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape):
        raise UnsupportedModelError(f"InputLayer {spec.name!r} has an invalid shape {list(shape)}")
    return shape


WeightEntry = tuple[tuple[str, ...], str, bool]
"""(layer path, weight name, trainable) of one weight; nested layers have longer paths."""

GET_WEIGHTS, H5 = "get_weights", "h5"
WEIGHT_ORDERS = (GET_WEIGHTS, H5)
"""Orders of a nested model's flat weight list: ``model.get_weights()`` (layer by layer) or
legacy .h5 (``weight_names``: trainable weights of all inner layers first, then the rest)."""


def _trainable(config: dict) -> bool:
    return config.get("trainable", True) is not False


class _ImplLayer:
    """A built-in layer: its numpy implementation and bound weights."""

    def __init__(self, spec: LayerSpec, flavour: str):
        self.name = spec.name
        self.class_name = spec.class_name
        self.trainable = _trainable(spec.config)
        self.impl = build_impl(LayerContext(spec.name, spec.class_name, flavour, spec.config))
        self.weights: list[np.ndarray] = []

    def weight_entries(self, trainable: bool) -> list[WeightEntry]:
        """This layer's weights in ``get_weights()`` order, with whether Keras trains them."""
        trainable = trainable and self.trainable
        return [((self.name,), w, trainable and w not in self.impl.non_trainable) for w in self.impl.weight_names]

    def weight_names(self, order: str = GET_WEIGHTS) -> list[str]:
        """Names of the weights this layer expects, in ``get_weights()`` order."""
        return list(self.impl.weight_names)

    def output_shapes(self, in_shapes: list[Shape]) -> list[Shape]:
        """Output shapes for the given input shapes (checks the number of inputs)."""
        impl = self.impl
        if len(in_shapes) < impl.min_inputs or (impl.max_inputs is not None and len(in_shapes) > impl.max_inputs):
            raise UnsupportedModelError(
                f"{self.class_name} layer {self.name!r}: called on {len(in_shapes)} inputs"
            )
        for shape in in_shapes:
            if (impl.input_rank is not None and len(shape) != impl.input_rank) or len(shape) < impl.min_rank:
                raise UnsupportedModelError(
                    f"{self.class_name} layer {self.name!r}: input of shape {_show(shape)} has the wrong rank"
                )
        try:
            impl.weight_shapes(in_shapes)  # validates the shape arithmetic weights rely on
            return [tuple(impl.output_shape(in_shapes))]
        except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError) as exc:
            raise UnsupportedModelError(
                f"{self.class_name} layer {self.name!r}: cannot be applied to input shapes "
                f"{', '.join(map(_show, in_shapes))} ({one_line(exc)})"
            ) from None

    def bind(self, weights: Any, in_shapes: list[Shape] | None, order: str = GET_WEIGHTS) -> None:
        """Store this layer's weights as float32 after checking their count and shapes."""
        names = self.impl.weight_names
        try:
            arrays = [np.asarray(w, dtype=np.float32) for w in (weights if weights is not None else [])]
        except (TypeError, ValueError) as exc:
            raise ModelWeightsError(f"layer {self.name!r}: weights are not numeric arrays ({one_line(exc)})") from None
        if len(arrays) != len(names):
            raise ModelWeightsError(
                f"layer {self.name!r} ({self.class_name}): expected {len(names)} weight arrays "
                f"({', '.join(names) or 'none'}), got {len(arrays)}"
            )
        if in_shapes is not None:
            for name, array, expected in zip(names, arrays, self.impl.weight_shapes(in_shapes)):
                if expected is not None and not _shape_matches(array.shape, expected):
                    raise ModelWeightsError(
                        f"layer {self.name!r} ({self.class_name}): weight {name!r} has shape "
                        f"{array.shape}, expected {_show(expected)}"
                    )
        self.weights = arrays

    def call(self, inputs: list[np.ndarray], record: Record | None) -> list[np.ndarray]:
        """Run the layer on one batch."""
        return [self.impl.forward(inputs, self.weights)]

    def labels(self) -> list[str]:
        """Labels of inner layer outputs (none for a plain layer)."""
        return []


class _ModelLayer:
    """A nested model used as a layer, run as a sub-graph."""

    def __init__(self, spec: LayerSpec, flavour: str):
        self.name = spec.name
        self.class_name = spec.class_name
        self.trainable = _trainable(spec.config.get("config") or {})
        self.graph = Graph(parse_model(spec.config), flavour)

    def weight_entries(self, trainable: bool) -> list[WeightEntry]:
        """All inner weights, layer by layer, with paths starting at this model."""
        return [((self.name, *path), w, t) for path, w, t in self.graph.weight_entries(trainable and self.trainable)]

    def weight_names(self, order: str = GET_WEIGHTS) -> list[str]:
        """Inner weight names, ``inner_layer/weight``, in the given flat-list order."""
        return ["/".join(path[1:] + (w,)) for path, w, _ in self._ordered(order)]

    def _ordered(self, order: str) -> list[WeightEntry]:
        entries = self.weight_entries(True)
        return sorted(entries, key=lambda e: not e[2]) if order == H5 else entries

    def output_shapes(self, in_shapes: list[Shape]) -> list[Shape]:
        """The nested model's own output shapes (checks the number of inputs)."""
        if len(in_shapes) != len(self.graph.inputs):
            raise UnsupportedModelError(
                f"nested model {self.name!r}: called on {len(in_shapes)} inputs, "
                f"has {len(self.graph.inputs)}"
            )
        return list(self.graph.output_shapes)

    def bind(self, weights: Any, in_shapes: list[Shape] | None, order: str = GET_WEIGHTS) -> None:
        """Bind a dict (inner layer -> weights) or a flat list in ``order``.

        A flat list whose shapes do not fit ``order`` but fit the other order is accepted
        in that order (``get_weights()`` and legacy .h5 lists differ only for nested models).
        """
        if isinstance(weights, Mapping):
            self.graph.bind(weights, order)
            return
        flat = list(weights if weights is not None else [])
        orders = [order] + [o for o in WEIGHT_ORDERS if o != order]
        first_error = None
        for attempt in orders:
            try:
                self.graph.bind(self._nest(flat, self._ordered(attempt)), attempt)
                return
            except ModelWeightsError as exc:
                first_error = first_error or exc
        raise first_error

    def _nest(self, flat: list, entries: list[WeightEntry]) -> dict:
        """Flat arrays (matching ``entries``) as nested dicts of layer -> arrays in layer order."""
        if len(flat) != len(entries):
            raise ModelWeightsError(
                f"nested model {self.name!r}: expected {len(entries)} weight arrays, got {len(flat)}"
            )
        by_entry = {(path, w): array for (path, w, _), array in zip(entries, flat)}
        nested: dict = {}
        for path, w, _ in self.weight_entries(True):  # layer order
            node = nested
            for part in path[1:-1]:
                node = node.setdefault(part, {})
            node.setdefault(path[-1], []).append(by_entry[(path, w)])
        return nested

    def call(self, inputs: list[np.ndarray], record: Record | None) -> list[np.ndarray]:
        """Run the nested model on one batch."""
        return self.graph.run(inputs, record)

    def labels(self) -> list[str]:
        """Labels of all inner layer outputs (without this layer's prefix)."""
        return self.graph.labels()


def _shape_matches(actual: Sequence[int], expected: Shape) -> bool:
    return len(actual) == len(expected) and all(e is None or a == e for a, e in zip(actual, expected))


def _show(shape: Shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


@dataclass(frozen=True)
class _Node:
    layer: _ImplLayer | _ModelLayer
    index: int
    inputs: tuple[NodeInput, ...]

    @property
    def key(self) -> NodeKey:
        return (self.layer.name, self.index)

    @property
    def label(self) -> str:
        return node_label(self.layer.name, self.index)


class Graph:
    """A model's layers and nodes, ready to run once weights are bound with :meth:`bind`."""

    def __init__(self, spec: ModelSpec, flavour: str):
        self.name = spec.name
        self.inputs = spec.inputs
        self.outputs = spec.outputs
        self.input_layer_shapes: dict[str, Shape] = {}
        self.layers: dict[str, _ImplLayer | _ModelLayer] = {}
        for layer_spec in spec.layers:
            self._add_layer(layer_spec, flavour)
        self.nodes = _topological_nodes(spec, self.layers, set(self.input_layer_shapes))
        self.shapes = self._infer_shapes()
        self._check_io()
        self._consumers = self._count_consumers()

    def _add_layer(self, spec: LayerSpec, flavour: str) -> None:
        if spec.name in self.layers or spec.name in self.input_layer_shapes:
            raise UnsupportedModelError(f"duplicate layer name {spec.name!r} in model_config")
        if spec.class_name == "InputLayer":
            self.input_layer_shapes[spec.name] = input_layer_shape(spec)
        elif spec.class_name in MODEL_CLASSES:
            self.layers[spec.name] = _ModelLayer(spec, flavour)
        else:
            self.layers[spec.name] = _ImplLayer(spec, flavour)

    def _infer_shapes(self) -> dict[NodeKey, list[Shape]]:
        shapes: dict[NodeKey, list[Shape]] = {(n, 0): [s] for n, s in self.input_layer_shapes.items()}
        for node in self.nodes:
            try:
                in_shapes = _input_shapes(shapes, node.inputs)
            except IndexError:
                raise UnsupportedModelError(f"layer {node.layer.name!r} reads a tensor index its input "
                                            "layer does not produce") from None
            shapes[node.key] = node.layer.output_shapes(in_shapes)
        return shapes

    def _check_io(self) -> None:
        if not self.inputs or not self.outputs:
            raise UnsupportedModelError("model_config lists no model inputs or no outputs")
        for name, index, _ in self.inputs:
            if name not in self.input_layer_shapes or index != 0:
                raise UnsupportedModelError(f"model input {name!r} is not an InputLayer")
        for name, index, tensor in self.outputs:
            if (name, index) not in self.shapes or tensor >= len(self.shapes[(name, index)]):
                raise UnsupportedModelError(f"model output {name!r} refers to no layer call")

    def _count_consumers(self) -> dict[NodeKey, int]:
        return _count_reads(self.nodes)

    @property
    def input_shapes(self) -> list[Shape]:
        """Non-batch shapes of the model inputs, in input order."""
        return [self.input_layer_shapes[name] for name, _, _ in self.inputs]

    @property
    def output_shapes(self) -> list[Shape]:
        """Non-batch shapes of the model outputs, in output order."""
        return [self.shapes[(name, index)][tensor] for name, index, tensor in self.outputs]

    @property
    def input_names(self) -> list[str]:
        """Names of the input layers, in input order."""
        return [name for name, _, _ in self.inputs]

    def layer_names(self) -> list[str]:
        """Names of the (non-input) layers in config order."""
        return list(self.layers)

    def labels(self) -> list[str]:
        """Labels of every reportable output, nested-model layers as ``outer/inner``, in run order."""
        out = []
        for node in self.nodes:
            out.append(node.label)
            out.extend(f"{node.label}/{inner}" for inner in node.layer.labels())
        return out

    def weight_layout(self, order: str = GET_WEIGHTS) -> dict[str, list[str]]:
        """Layer name -> names of its expected weights in order (every non-input layer)."""
        return {name: layer.weight_names(order) for name, layer in self.layers.items()}

    def weight_entries(self, trainable: bool = True) -> list[WeightEntry]:
        """Every weight of every layer (nested ones included), layer by layer."""
        return [entry for layer in self.layers.values() for entry in layer.weight_entries(trainable)]

    def bind(self, weights: Mapping[str, Any], order: str = GET_WEIGHTS) -> None:
        """Attach weights (layer name -> arrays) to every layer, checking counts and shapes.

        ``order`` is the order of nested models' flat weight lists (see WEIGHT_ORDERS).
        """
        unknown = [k for k, v in weights.items()
                   if k not in self.layers and not (k in self.input_layer_shapes or _is_empty(v))]
        if unknown:
            raise ModelWeightsError(f"weights given for layers not in the model: {', '.join(map(str, unknown[:5]))}")
        first_inputs: dict[str, list[Shape]] = {}
        for node in reversed(self.nodes):
            first_inputs[node.layer.name] = _input_shapes(self.shapes, node.inputs)
        for name, layer in self.layers.items():
            layer.bind(weights.get(name), first_inputs.get(name), order)

    def run(self, inputs: Sequence[np.ndarray], record: Record | None = None,
            record_inputs: Record | None = None, capture: dict | None = None) -> list[np.ndarray]:
        """Forward pass over one batch; ``record(label, output)`` is called for every node.

        ``record_inputs(label, [inputs])`` is called with the inputs of every top-level node
        (calibration needs what each layer multiplies its kernel with).  ``capture`` maps
        node keys (or model inputs ``(name, 0)``) to None; their output lists are stored in it
        (the cache :meth:`run_nodes` starts from).
        """
        values: dict[NodeKey, list[np.ndarray]] = {
            (name, 0): [x] for (name, _, _), x in zip(self.inputs, inputs)
        }
        return self.run_nodes(self.nodes, values, record, record_inputs, capture, self._consumers)

    def dependent_nodes(self, layers: set[str]) -> list[_Node]:
        """The nodes (in run order) whose output depends on the weights of *layers*: their calls
        and everything downstream of them; the others give the same output whatever those weights are."""
        dirty: set[NodeKey] = set()
        nodes = []
        for node in self.nodes:
            if node.layer.name in layers or any((name, index) in dirty for name, index, _ in tensor_refs(node.inputs)):
                dirty.add(node.key)
                nodes.append(node)
        return nodes

    def frontier(self, nodes: Sequence[_Node]) -> set[NodeKey]:
        """The values *nodes* need from outside themselves: what they read, and model outputs they do not make."""
        made = {node.key for node in nodes}
        needed = {(name, index) for node in nodes for name, index, _ in tensor_refs(node.inputs)}
        needed |= {(name, index) for name, index, _ in self.outputs}
        return needed - made

    def value_bytes(self, key: NodeKey) -> int:
        """Bytes of one sample's value *key* (float32), to size a cache before filling it."""
        return sum(4 * int(np.prod([d or 1 for d in shape])) for shape in self.shapes[key])

    def run_nodes(self, nodes: Sequence[_Node], values: dict[NodeKey, list[np.ndarray]], record: Record | None = None,
                  record_inputs: Record | None = None, capture: dict | None = None,
                  consumers: dict[NodeKey, int] | None = None) -> list[np.ndarray]:
        """Run *nodes* (in run order) given *values* (node key -> output list) for everything they read.

        With all nodes and the model inputs this is the forward pass; with
        :meth:`dependent_nodes` and a cache of the :meth:`frontier` it recomputes only what a
        weight change can alter, with the same arithmetic on the same arrays (so the same bits).
        """
        values = dict(values)  # the caller's cache stays as it is
        pending = dict(consumers) if consumers is not None else _count_reads(nodes)
        keep = {(name, index) for name, index, _ in self.outputs} | set(capture or ())
        for node in nodes:
            args = [np.asarray(item.value, dtype=np.float32) if isinstance(item, Constant)
                    else values[item[:2]][item[2]] for item in node.inputs]
            if record_inputs is not None:
                record_inputs(node.label, args)
            try:
                outs = node.layer.call(args, _prefixed(record, node.label + "/"))
            except ValueError as exc:  # e.g. inputs whose unknown dims do not fit together
                if isinstance(exc, NnzipError):
                    raise
                raise DataShapeError(f"layer {node.label!r} failed on input shapes "
                                 f"{[a.shape for a in args]}: {one_line(exc)}") from exc
            values[node.key] = outs
            if record is not None:
                record(node.label, outs[0] if len(outs) == 1 else outs)
            refs = tensor_refs(node.inputs)
            for name, index, _ in refs:
                pending[(name, index)] -= 1
            for key in {(name, index) for name, index, _ in refs} | {node.key}:
                if key not in keep and pending.get(key, 0) == 0:
                    values.pop(key, None)  # free outputs no later node reads
        if capture is not None:
            for key in capture:
                capture[key] = values[key]
        return [values[(name, index)][tensor] for name, index, tensor in self.outputs]


def _count_reads(nodes: Sequence[_Node]) -> dict[NodeKey, int]:
    """How many times *nodes* read each value (so that each is freed after its last reader)."""
    counts: dict[NodeKey, int] = {}
    for node in nodes:
        for name, index, _ in tensor_refs(node.inputs):
            counts[(name, index)] = counts.get((name, index), 0) + 1
    return counts


def _input_shapes(shapes: Mapping[NodeKey, list[Shape]], inputs: Sequence[NodeInput]) -> list[Shape]:
    return [() if isinstance(item, Constant) else shapes[item[:2]][item[2]] for item in inputs]


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, (list, tuple, Mapping)) and len(value) == 0)


def _topological_nodes(spec: ModelSpec, layers: Mapping[str, Any], inputs: set[str]) -> list[_Node]:
    """All nodes of the non-input layers, each after the nodes it reads from."""
    calls = {(s.name, i): refs for s in spec.layers if s.name in layers for i, refs in enumerate(s.calls)}
    order: list[_Node] = []
    state: dict[NodeKey, int] = {}  # 1 = visiting, 2 = done
    for start in calls:
        stack = [(start, False)]
        while stack:
            key, expanded = stack.pop()
            if state.get(key) == 2:
                continue
            if expanded:
                state[key] = 2
                order.append(_Node(layers[key[0]], key[1], tuple(calls[key])))
                continue
            if state.get(key) == 1:
                raise UnsupportedModelError(f"model_config has a cycle through layer {key[0]!r}")
            state[key] = 1
            stack.append((key, True))
            for name, index, _ in tensor_refs(calls[key]):
                dep = (name, index)
                if name in inputs and index == 0:
                    continue
                if dep not in calls:
                    raise UnsupportedModelError(
                        f"layer {key[0]!r} reads from unknown layer call {name!r} node {index}"
                    )
                if state.get(dep) != 2:
                    stack.append((dep, False))
    return order
