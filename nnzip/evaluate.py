"""Scoring weights on data: the accuracy check behind ``verify`` and the budget search.

An :class:`Evaluator` scores a full set of tensors (name -> array, as in a
:class:`nnzip.model.Model`) on a data set.  Two kinds exist:

* :class:`KerasEvaluator` runs the model itself with numpy (:mod:`nnzip.infer`)
  from the Keras ``model_config`` stored in a legacy ``.h5`` file.  The metric is
  top-1 accuracy when the data has labels ``y`` and the output is not shaped like
  the input, else the reconstruction mean squared error (autoencoders).
* :class:`HookEvaluator` calls a user function ``package.module:function`` with
  the weights and the data, for files without an architecture.

(:class:`nnzip.onnx_eval.OnnxEvaluator` runs ONNX models in onnxruntime.)  Besides scores,
an evaluator tells the budget search what it knows of the architecture, through
:meth:`Evaluator.weight_roles` and :meth:`Evaluator.calibration_layers`; one that knows
nothing (a hook) answers with empty mappings and the search stays weight-only.

The *drop* between two results is absolute for accuracy, cosine and a hook's score
(in the hook's own units), and relative for MSE and for a hook that declares
``function.nnzip_drop = "relative"``, as ``--max-drop`` documents.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import numbers
import os
from pathlib import Path
from typing import Callable

import numpy as np

from . import calibrate, formats
from .errors import ConfigError, InputError
from .model import Model
# The data set, the comparison and the evaluator interface live below this module (nnzip.onnx_eval
# imports them too); they are importable from here as before.
from .scoring import CalibratedLayer, Comparison, Dataset, Evaluator, load_data, quality_drop

__all__ = [
    "CalibratedLayer", "Comparison", "Dataset", "Evaluator", "HookEvaluator", "KerasEvaluator", "config_layers", "hook_drop_kind",
    "load_data", "load_hook", "make_evaluator", "quality_drop",
]


class KerasEvaluator(Evaluator):
    """Numpy inference of a Keras model's architecture (legacy ``.h5`` or ``.keras``)."""

    supports_calibration = True
    #: Layer classes whose kernel gets data-aware candidates (the (in, out) matrix and its inputs are known).
    CALIBRATED_CLASSES = frozenset({"Dense", "Conv2D"})

    def __init__(self, model: Model, data: Dataset, metric: str | None = None, batch_size: int = 512):
        config = formats.model_config(model)
        if config is None:
            raise ConfigError("this file has no Keras model_config (weights only): give --eval module:function to score it")
        self.model, self.config, self.data, self.batch_size = model, config, data, batch_size
        self.keras_version = formats.keras_version(model)
        self.metric = metric or self._default_metric()

    #: Cap on the layer values :meth:`prepare_changes` keeps (bytes); layers past it rerun the whole model.
    CACHE_BYTES = 1 << 30

    def prepare_changes(self, names: list[str]) -> None:
        """Run the model's own weights once and keep, per batch, what the layers downstream of each
        named tensor's layer read, so that :meth:`per_sample_changed` runs only those layers."""
        layer_of = self._layer_of()
        layers = [layer_of[name] for name in names if name in layer_of]
        self._cache = self.network(self.model.tensors).forward_cache(self.data.x, layers, self.batch_size, self.CACHE_BYTES)

    def per_sample_changed(self, tensors: dict[str, np.ndarray], changed: set[str]) -> np.ndarray:
        """As :meth:`per_sample`, rerunning only the layers downstream of the changed tensors' layers
        from the cached values (same batches, same arithmetic: the same bits)."""
        cache, layer_of = getattr(self, "_cache", None), self._layer_of()
        layers = {layer_of.get(name) for name in changed}
        if cache is None or None in layers or not cache.covers(layers):
            return self.per_sample(tensors)
        return self._samples_of(np.asarray(self.network(tensors).predict_changed(cache, layers)))

    def _layer_of(self) -> dict[str, str]:
        """Tensor name -> the top-level layer that holds it (a nested model's weights: the nested model)."""
        if getattr(self, "_layers", None) is None:
            self._layers = {name: layer for layer, held in self._layer_names().items() for name in _names_in(held)}
        return self._layers

    def _layer_names(self) -> dict:
        """:func:`nnzip.formats.layer_weights` with tensor names for values (layer -> names in ``get_weights`` order)."""
        if getattr(self, "_names", None) is None:
            # layer_weights only indexes the mapping it is given: names in, names out.
            self._names = formats.layer_weights(self.model, {n: n for n in self.model.tensors})
        return self._names

    def weight_roles(self) -> dict[str, tuple[str, str]]:
        """Tensor name -> (layer, weight name), from the numpy model's weight layout of each top-level layer."""
        order = "h5" if self.model.source_format == "keras-h5" else "get_weights"
        layout = self.network(self.model.tensors).weight_layout(order)
        roles: dict[str, tuple[str, str]] = {}
        for layer, held in self._layer_names().items():
            if isinstance(held, list) and held and len(held) == len(layout.get(layer, ())):
                roles.update({name: (layer, weight.split("/")[-1]) for name, weight in zip(held, layout[layer]) if isinstance(name, str)})
        return roles

    def calibration_layers(self, samples: int, eligible: Callable[[str], bool]) -> dict[str, CalibratedLayer]:
        """The Dense and Conv2D layers (:attr:`CALIBRATED_CLASSES`) with an eligible kernel, and their inputs' statistics.

        A Conv2D layer's inputs are its im2col patches (:func:`nnzip.calibrate.conv_patches`),
        the rows its (kh·kw·in, out) kernel multiplies.
        """
        classes = {layer["config"].get("name"): layer for layer in config_layers(self.config)}
        found: dict[str, tuple[str, dict, CalibratedLayer]] = {}
        for layer, tensor_names in self._layer_names().items():
            spec = classes.get(layer)
            if spec is None or spec["class_name"] not in self.CALIBRATED_CLASSES or not isinstance(tensor_names, list) or not tensor_names:
                continue
            config = spec["config"]
            bias = tensor_names[1] if config.get("use_bias", True) and len(tensor_names) > 1 else None
            if eligible(tensor_names[0]):
                found[tensor_names[0]] = (spec["class_name"], config, CalibratedLayer(layer, tensor_names[0], bias))
        if not found:
            return {}
        inputs = self.network(self.model.tensors).layer_inputs(self.data.x[:samples], [info.layer for _, _, info in found.values()])
        for class_name, config, info in found.values():
            info.stats = _input_statistics(inputs[info.layer], class_name, config)
        return {kernel: info for kernel, (_, _, info) in found.items()}

    def _default_metric(self) -> str:
        output = self.predict(self.model.tensors, self.data.x[:2])
        if output.shape == self.data.x[:2].shape or self.data.y is None:
            if output.shape != self.data.x[:2].shape:
                raise ConfigError("the data has no labels y and the model's output is not shaped like its input")
            return "mse"
        return "accuracy"

    def network(self, tensors: dict[str, np.ndarray]):
        """The numpy model with *tensors* as weights."""
        from .infer import build_model

        # Legacy .h5 files list a nested model's weights in file order, not get_weights order.
        order = "h5" if self.model.source_format == "keras-h5" else "get_weights"
        return build_model(self.config, formats.layer_weights(self.model, tensors), keras_version=self.keras_version, weight_order=order)

    def predict(self, tensors: dict[str, np.ndarray], x: np.ndarray | None = None) -> np.ndarray:
        """Model output for *x* (default: the data set's inputs)."""
        return np.asarray(self.network(tensors).predict(self.data.x if x is None else x, batch_size=self.batch_size))

    def per_sample(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        """1.0/0.0 per correctly classified sample, or each sample's reconstruction MSE."""
        return self._samples_of(self.predict(tensors))

    def _samples_of(self, output: np.ndarray) -> np.ndarray:
        flat = output.reshape(len(output), -1).astype(np.float64)
        if self.metric == "mse":
            return np.mean((flat - self.data.x.reshape(len(output), -1)) ** 2, axis=1)
        return (np.argmax(flat, axis=1) == self.data.y).astype(np.float64)

    def _metric_of(self, output: np.ndarray) -> float:
        return float(np.mean(self._samples_of(output)))

    def compare(self, original: dict[str, np.ndarray], rebuilt: dict[str, np.ndarray]) -> Comparison:
        """Both models' metric, top-1 agreement and every layer's relative output error."""
        net_a, net_b = self.network(original), self.network(rebuilt)
        outs_a = net_a.layer_outputs(self.data.x, batch_size=self.batch_size)
        outs_b = net_b.layer_outputs(self.data.x, batch_size=self.batch_size)
        final_a = np.asarray(net_a.predict(self.data.x, batch_size=self.batch_size))
        final_b = np.asarray(net_b.predict(self.data.x, batch_size=self.batch_size))
        errors = {}
        for name, value in outs_a.items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                norm = float(np.linalg.norm(value))
                errors[name] = float(np.linalg.norm(value - outs_b[name])) / norm if norm else 0.0
        agreement = None
        if self.metric == "accuracy":
            flat_a, flat_b = final_a.reshape(len(final_a), -1), final_b.reshape(len(final_b), -1)
            agreement = float(np.mean(np.argmax(flat_a, axis=1) == np.argmax(flat_b, axis=1)))
        return Comparison(self.metric, self._metric_of(final_a), self._metric_of(final_b), agreement, errors)


def _input_statistics(values: np.ndarray, class_name: str, config: dict) -> calibrate.LayerStatistics:
    """Statistics of one Keras layer's inputs: rows as they are (Dense), or im2col patches (Conv2D)."""
    if class_name == "Conv2D":
        patches = calibrate.conv_patches(values, tuple(config["kernel_size"]), tuple(config["strides"]), config["padding"],
                                         tuple(config.get("dilation_rate", (1, 1))))
        return calibrate.LayerStatistics(patches)
    return calibrate.LayerStatistics.of(values)


def config_layers(config: dict) -> list[dict]:
    """Layer entries of a Sequential or Functional ``model_config``, nested models flattened."""
    layers = []
    for layer in config.get("config", {}).get("layers", []):
        if layer.get("class_name") in ("Sequential", "Functional", "Model"):
            layers += config_layers(layer)
        else:
            layers.append(layer)
    return layers


def _names_in(held) -> list[str]:
    """The tensor names in one layer's entry of ``layer_weights`` (a list, or a nested model's dict of lists)."""
    if isinstance(held, str):
        return [held]
    values = held.values() if isinstance(held, dict) else held if isinstance(held, (list, tuple)) else ()
    return [name for item in values for name in _names_in(item)]


class HookEvaluator(Evaluator):
    """``--eval package.module:function``: ``function(weights, x, y) -> score`` (higher is better).

    *weights* maps tensor names to read-only arrays; ``x``/``y`` are the data arrays
    (``y`` may be None).  The function may also take only ``weights``.  The drop is
    the score's own difference, in its own units, unless the function declares
    ``function.nnzip_drop = "relative"`` (then it is a fraction of the original score).
    A hook that raises or returns anything but a finite real number is one
    :class:`ConfigError` line naming the hook.

    >>> import numpy as np
    >>> def bleu(weights, x, y):
    ...     return 30.0 - float(np.abs(weights["w"] - 1).sum())
    >>> bleu.nnzip_drop = "relative"
    >>> hook = HookEvaluator.of(bleu, "demo:bleu", Dataset(np.zeros((1, 1), np.float32), None))
    >>> hook.compare({"w": np.ones(4)}, {"w": np.full(4, 1.75)}).drop
    0.1
    """

    metric = "score"

    def __init__(self, spec: str, data: Dataset | None):
        self._setup(load_hook(spec), spec, data)

    @classmethod
    def of(cls, function: Callable, spec: str, data: Dataset | None) -> "HookEvaluator":
        """An evaluator around an already loaded *function* (*spec* names it in errors)."""
        evaluator = cls.__new__(cls)
        evaluator._setup(function, spec, data)
        return evaluator

    def _setup(self, function: Callable, spec: str, data: Dataset | None) -> None:
        self.function, self.spec, self.data = function, spec, data
        self.drop_kind = hook_drop_kind(function, spec)
        self.takes_data = data is not None and _takes_three(function)

    def per_sample(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        """The hook's score, as one value (a hook reports no per-sample results)."""
        # Read-only views: a hook that writes into the weights must not change what is stored or compared.
        weights = {name: _read_only(array) for name, array in tensors.items()}
        try:
            score = self.function(weights, self.data.x, self.data.y) if self.takes_data else self.function(weights)
        except Exception as exc:  # the user's code failed: its error, on one line, named
            raise ConfigError(f"--eval {self.spec!r} raised {type(exc).__name__}: {exc}") from None
        return np.array([_finite_score(score, self.spec)])


def hook_drop_kind(function: Callable, spec: str) -> str:
    """``"absolute"`` (the default) or ``"relative"``, as the hook's ``nnzip_drop`` attribute says."""
    kind = getattr(function, "nnzip_drop", "absolute")
    if kind not in ("absolute", "relative"):
        raise ConfigError(f"--eval {spec!r}: nnzip_drop must be \"absolute\" or \"relative\", not {kind!r}")
    return kind


def _takes_three(function: Callable) -> bool:
    """Whether *function* accepts ``(weights, x, y)``; else it is called with the weights only."""
    try:
        inspect.signature(function).bind(None, None, None)
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins): assume the documented three-argument form
        return True
    return True


def _read_only(array: np.ndarray) -> np.ndarray:
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


def _finite_score(score: object, spec: str) -> float:
    """The hook's result as a float; anything but a finite real number (bool, str, array, NaN) is refused."""
    if isinstance(score, np.ndarray) and score.shape == ():
        score = score[()]
    if isinstance(score, (bool, np.bool_)) or not isinstance(score, numbers.Real):
        raise ConfigError(f"--eval {spec!r} returned {type(score).__name__}, not a number (return one higher-is-better score)")
    value = float(score)
    if not math.isfinite(value):
        raise ConfigError(f"--eval {spec!r} returned {value}, not a finite score")
    return value


def load_hook(spec: str) -> Callable:
    """Import the ``--eval`` hook ``package.module:function`` or ``path/to/file.py:function``.

    A module name is looked up with the current directory importable (as ``python -m``
    does); a path is loaded as a file.  Any failure (missing file, import or syntax error
    in the hook's module, no such function) is one :class:`ConfigError` line.
    """
    module_name, sep, function_name = spec.rpartition(":")
    if not sep or not module_name or not function_name:
        raise ConfigError(f"--eval {spec!r}: expected package.module:function or path/to/file.py:function")
    try:
        module = _hook_module(module_name)
    except ConfigError:
        raise
    except Exception as exc:  # the hook's own code failed to import: its error, on one line
        raise ConfigError(f"--eval {spec!r}: cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"--eval {spec!r}: {module_name} has no function {function_name}")
    return function


def _hook_module(name: str):
    """The module a hook names: a ``.py`` file by path, else a module importable from the cwd or sys.path."""
    import sys

    if name.endswith(".py") or os.sep in name or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"--eval: hook file {name} does not exist")
        spec = importlib.util.spec_from_file_location(f"nnzip_hook_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"--eval: cannot load {name} as a Python file")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    added = os.getcwd() not in sys.path and "" not in sys.path
    if added:  # the cwd importable, as `python -m` makes it, for this import only
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    finally:
        if added:
            sys.path.remove(os.getcwd())


def make_evaluator(model: Model, data: Dataset | None, eval_hook: str | None = None, metric: str | None = None) -> Evaluator:
    """The evaluator for *model*: the user's hook if given, else numpy inference of its architecture."""
    if model.source_format == "onnx" and not eval_hook and data is not None:  # run by onnxruntime (nnzip[onnx])
        from .onnx_eval import OnnxEvaluator

        return OnnxEvaluator(model, data, metric)
    if data is not None and not data.has_x:
        raise InputError("the data file has no array 'x'")
    if eval_hook:
        return HookEvaluator(eval_hook, data)
    if data is None:
        raise ConfigError("a data set (--data) is needed to run the model")
    if metric not in (None, "accuracy", "mse"):
        raise ConfigError(f"unknown metric {metric!r} (accuracy or mse)")
    return KerasEvaluator(model, data, metric)
