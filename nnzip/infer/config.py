"""Reading a Keras ``model_config`` (Keras 2 / tf.keras or Keras 3 form) into plain layer specs.

The result, :class:`ModelSpec`, is a flat list of :class:`LayerSpec` in config order, each
carrying the unwrapped layer config and, per call ("node") of the layer, references to the
tensors it was called on. Sequential models are turned into the same form as Functional ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nnzip.infer.errors import UnsupportedModelError

TensorRef = tuple[str, int, int]
"""(layer name, node index, tensor index) of one tensor in the graph."""


@dataclass(frozen=True)
class Constant:
    """A number a layer or operation was called on next to tensors (Keras 3 ``x + 3.0``)."""

    value: float


NodeInput = TensorRef | Constant
"""One input of a layer call: a tensor reference or a constant."""

MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})
"""Layer classes that are themselves models (may be nested inside another model)."""

ELEMENTWISE_OPS = frozenset({"Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum"})
"""Keras 3 operations (``x + 3.0`` in a functional model) that are run like the merge layers."""

KERAS2 = "keras2"
KERAS3 = "keras3"

_KERAS3_POLICIES = frozenset(
    {"DTypePolicy", "FloatDTypePolicy", "QuantizedDTypePolicy", "QuantizedFloat8DTypePolicy"}
)


@dataclass(frozen=True)
class LayerSpec:
    """One layer entry of a model config.

    ``calls`` holds one entry per node (call of the layer): the inputs of that call.
    Input layers have no calls. For nested models ``config`` is the nested model's full
    ``{"class_name", "config"}`` dict.
    """

    name: str
    class_name: str
    config: dict
    calls: tuple[tuple[NodeInput, ...], ...]


@dataclass(frozen=True)
class ModelSpec:
    """A model config reduced to its graph: layers in config order, graph inputs and outputs."""

    name: str
    layers: tuple[LayerSpec, ...]
    inputs: tuple[TensorRef, ...]
    outputs: tuple[TensorRef, ...]


def load_config(model_config: dict | str | bytes) -> dict:
    """Return the model config as a dict, decoding a JSON string or bytes if needed."""
    if isinstance(model_config, bytes):
        model_config = model_config.decode("utf-8")
    if isinstance(model_config, str):
        try:
            model_config = json.loads(model_config)
        except json.JSONDecodeError as exc:
            raise UnsupportedModelError(f"model_config is not valid JSON: {exc}") from None
    if not isinstance(model_config, dict) or "class_name" not in model_config:
        raise UnsupportedModelError("model_config must be a JSON object with a 'class_name' key")
    return model_config


def detect_flavour(model_config: dict) -> str:
    """Guess whether a config was written by Keras 2 / tf.keras or by Keras 3.

    Keras 3 marks: ``batch_shape``, DTypePolicy dtypes, ``__keras_tensor__`` nodes.
    Keras 2 marks: ``batch_input_shape``, nested-list inbound nodes. Defaults to Keras 3.
    """
    votes = {KERAS2: 0, KERAS3: 0}
    _collect_flavour_votes(model_config, votes)
    return KERAS2 if votes[KERAS2] > votes[KERAS3] else KERAS3


def _collect_flavour_votes(obj: Any, votes: dict[str, int]) -> None:
    if isinstance(obj, dict):
        class_name = obj.get("class_name")
        class_name = class_name if isinstance(class_name, str) else ""
        if "batch_shape" in obj or class_name in _KERAS3_POLICIES or class_name == "__keras_tensor__":
            votes[KERAS3] += 1
        if "batch_input_shape" in obj or class_name == "Policy":
            votes[KERAS2] += 1
        nodes = obj.get("inbound_nodes")
        if isinstance(nodes, list) and nodes and isinstance(nodes[0], list):
            votes[KERAS2] += 1
        for value in obj.values():
            _collect_flavour_votes(value, votes)
    elif isinstance(obj, list):
        for value in obj:
            _collect_flavour_votes(value, votes)


def parse_model(model_config: dict) -> ModelSpec:
    """Parse a ``{"class_name": ..., "config": ...}`` model config into a :class:`ModelSpec`."""
    class_name = model_config.get("class_name")
    if class_name == "Sequential":
        return _parse_sequential(model_config.get("config"))
    if class_name in ("Functional", "Model"):
        config = model_config.get("config")
        if not isinstance(config, dict) or "layers" not in config:
            raise UnsupportedModelError(
                f"model class {class_name!r} without a layer graph (subclassed model) is not supported"
            )
        return _parse_functional(config)
    raise UnsupportedModelError(f"unsupported model class {class_name!r}")


def unwrap_layer(entry: Any) -> tuple[str, dict]:
    """Return (class_name, inner config) of a layer entry; reject custom registered classes."""
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        raise UnsupportedModelError(f"malformed layer entry in model_config: {str(entry)[:80]}")
    class_name = entry["class_name"]
    config = entry.get("config") or {}
    if not isinstance(config, dict):
        raise UnsupportedModelError(f"malformed config of layer class {class_name!r}")
    registered = entry.get("registered_name")
    module = entry.get("module")
    name = config.get("name", entry.get("name", "?"))
    custom = (isinstance(registered, str) and ">" in registered) or (
        isinstance(module, str) and module.split(".")[0] not in ("keras", "tf_keras", "tensorflow")
    )
    if custom:
        raise UnsupportedModelError(
            f"unsupported custom layer class {registered or class_name!r} (layer {name!r})"
        )
    if isinstance(module, str) and module.startswith("keras.src.ops") and class_name not in ELEMENTWISE_OPS:
        raise UnsupportedModelError(f"unsupported operation {module}.{class_name} (layer {name!r})")
    if class_name in MODEL_CLASSES:
        config = {"class_name": class_name, "config": config}
    return class_name, config


def _layer_name(entry: dict, config: dict) -> str:
    name = entry.get("name")
    if name is None:
        inner = config.get("config") if entry.get("class_name") in MODEL_CLASSES else config
        name = inner.get("name") if isinstance(inner, dict) else None
    if not isinstance(name, str) or not name:
        raise UnsupportedModelError(f"layer of class {entry.get('class_name')!r} has no name")
    return name


def _parse_sequential(config: Any) -> ModelSpec:
    if isinstance(config, list):  # very old Keras: the config is the layer list
        config = {"name": "sequential", "layers": config}
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise UnsupportedModelError("malformed Sequential config: no 'layers' list")
    entries = list(config["layers"])
    if not entries:
        raise UnsupportedModelError("Sequential model has no layers")
    layers: list[LayerSpec] = []
    first_class, first_config = unwrap_layer(entries[0])
    if first_class == "InputLayer":
        layers.append(LayerSpec(_layer_name(entries[0], first_config), "InputLayer", first_config, ()))
        entries = entries[1:]
    else:
        shape = _sequential_input_shape(config, entries[0], first_config)
        name = _unique_name(f"{_layer_name(entries[0], first_config)}_input", entries)
        layers.append(LayerSpec(name, "InputLayer", {"name": name, "batch_shape": shape}, ()))
    previous = layers[0].name
    for entry in entries:
        class_name, layer_config = unwrap_layer(entry)
        name = _layer_name(entry, layer_config)
        layers.append(LayerSpec(name, class_name, layer_config, (((previous, 0, 0),),)))
        previous = name
    return ModelSpec(config.get("name", "sequential"), tuple(layers), ((layers[0].name, 0, 0),),
                     ((previous, 0, 0),))


def _sequential_input_shape(config: dict, entry: dict, first_config: dict) -> list:
    if first_config.get("class_name") in MODEL_CLASSES:  # nested model as first layer
        nested = parse_model(first_config)
        first_input = next(s for s in nested.layers if s.name == nested.inputs[0][0])
        first_config = first_input.config
    for key in ("batch_shape", "batch_input_shape"):
        if first_config.get(key) is not None:
            return list(first_config[key])
    if config.get("build_input_shape") is not None:
        return list(config["build_input_shape"])
    for build in (entry.get("build_config"), config.get("build_config")):
        if isinstance(build, dict) and build.get("input_shape") is not None:
            return list(build["input_shape"])
    if first_config.get("input_shape") is not None:
        return [None, *first_config["input_shape"]]
    raise UnsupportedModelError("Sequential model config records no input shape")


def _unique_name(name: str, entries: list) -> str:
    taken = {str((e.get("config") or {}).get("name")) for e in entries if isinstance(e, dict)}
    while name in taken:
        name += "_"
    return name


def _parse_functional(config: dict) -> ModelSpec:
    layers = []
    for entry in config["layers"]:
        class_name, layer_config = unwrap_layer(entry)
        name = _layer_name(entry, layer_config)
        calls = tuple(_parse_node(node, name) for node in entry.get("inbound_nodes") or ())
        layers.append(LayerSpec(name, class_name, layer_config, calls))
    return ModelSpec(
        config.get("name", "model"),
        tuple(layers),
        _io_refs(config.get("input_layers"), "input_layers"),
        _io_refs(config.get("output_layers"), "output_layers"),
    )


def _parse_node(node: Any, layer_name: str) -> tuple[NodeInput, ...]:
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        if _find_keras_tensors(node.get("kwargs") or {}):
            raise UnsupportedModelError(
                f"tensor keyword arguments are not supported (layer {layer_name!r})"
            )
        refs = tuple(_keras3_inputs(node.get("args") or []))
    elif isinstance(node, list):  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
        refs = tuple(_keras2_ref(item, layer_name) for item in node)
    else:
        refs = ()
    if not refs:
        raise UnsupportedModelError(f"malformed inbound node of layer {layer_name!r}")
    return refs


def _keras2_ref(item: Any, layer_name: str) -> TensorRef:
    if not isinstance(item, list) or len(item) < 3 or not isinstance(item[0], str):
        raise UnsupportedModelError(f"malformed inbound node of layer {layer_name!r}")
    return (item[0], int(item[1]), int(item[2]))


def _keras3_inputs(args: Any) -> list[NodeInput]:
    """Tensors and numeric constants of a Keras 3 call's args, in order.

    Constants appear in merges called on a list (``Add()([x, 3.0])``) and in serialized
    operations such as ``x + 3.0`` (class ``Add`` from ``keras.src.ops.numpy``).
    """
    if isinstance(args, (int, float)) and not isinstance(args, bool):
        return [Constant(float(args))]
    if isinstance(args, dict) and args.get("class_name") == "__keras_tensor__":
        return list(_find_keras_tensors(args))
    if isinstance(args, list):
        return [item for value in args for item in _keras3_inputs(value)]
    return []


def _find_keras_tensors(obj: Any) -> list[TensorRef]:
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            history = obj.get("config", {}).get("keras_history")
            if not isinstance(history, list) or len(history) < 3:
                raise UnsupportedModelError("malformed __keras_tensor__ in model_config")
            return [(history[0], int(history[1]), int(history[2]))]
        return [ref for value in obj.values() for ref in _find_keras_tensors(value)]
    if isinstance(obj, list):
        return [ref for value in obj for ref in _find_keras_tensors(value)]
    return []


def _io_refs(value: Any, key: str) -> tuple[TensorRef, ...]:
    if isinstance(value, dict):  # Keras 3 dict inputs/outputs: flattened in sorted key order
        return tuple(ref for k in sorted(value) for ref in _io_refs(value[k], key))
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        return ((value[0], int(value[1]), int(value[2])),)
    if isinstance(value, list) and value:
        return tuple(ref for item in value for ref in _io_refs(item, key))
    raise UnsupportedModelError(f"malformed {key!r} in model_config")
