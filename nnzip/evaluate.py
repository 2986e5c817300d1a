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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from . import calibrate, formats
from .errors import ConfigError, InputError, os_reason
from .model import Model


@dataclass
class Dataset:
    """Inputs ``x`` and optional labels ``y``; ``arrays`` keeps every array of the file as stored (ONNX inputs by name)."""

    x: np.ndarray
    y: np.ndarray | None
    arrays: dict[str, np.ndarray] | None = None
    #: False when the file has no array ``x`` (``x`` is then its first array): only ONNX models, fed by input name, take it.
    has_x: bool = True


def load_data(path: str | os.PathLike) -> Dataset:
    """Read ``x`` (and ``y`` if present) from a ``.npz`` or HDF5 file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(8)
    except OSError as exc:
        raise InputError(f"cannot open data file {path}: {os_reason(exc)}") from None
    has_x = True
    try:
        if magic == b"\x89HDF\r\n\x1a\n":
            with h5py.File(path, "r") as h5:
                arrays = {k: np.asarray(h5[k][()]) for k in ("x", "y") if k in h5 and isinstance(h5[k], h5py.Dataset)}
        else:
            with np.load(path, allow_pickle=False) as npz:
                stored = {k: npz[k] for k in npz.files}
            arrays = {k: stored[k] for k in ("x", "y") if k in stored}
            has_x = "x" in arrays
            if "x" not in arrays and len(set(stored) - {"y"}):  # ONNX inputs named as the model's inputs
                arrays["x"] = stored[next(k for k in stored if k != "y")]
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read data file {path} (expected .npz or .h5 with arrays x and y): {exc}") from None
    if "x" not in arrays:
        raise InputError(f"data file {path} has no array 'x'")
    named = None
    if magic != b"\x89HDF\r\n\x1a\n":  # arrays with one row per sample, for models with named inputs
        named = {k: v for k, v in stored.items() if k != "y" and v.ndim and len(v) == len(arrays["x"])}
    x, y = arrays["x"].astype(np.float32, copy=False), arrays.get("y")
    if y is not None and len(y) != len(x):
        raise InputError(f"data file {path}: x has {len(x)} samples but y has {len(y)}")
    if len(x) == 0:
        raise InputError(f"data file {path} holds no samples")
    return Dataset(x, None if y is None else _labels(y), named, has_x)


def _labels(y: np.ndarray) -> np.ndarray:
    """Integer class labels from labels of shape (N,), (N, 1) or one-hot (N, C)."""
    if y.ndim == 2:
        y = y[:, 0] if y.shape[1] == 1 else np.argmax(y, axis=1)
    return y.astype(np.int64, copy=False)


@dataclass
class Comparison:
    """Original vs rebuilt weights on one data set."""

    metric: str
    original: float
    rebuilt: float
    agreement: float | None
    layer_errors: dict[str, float]
    #: How the drop is counted: "absolute" (in the metric's units) or "relative" (a fraction of the original).
    drop_kind: str = "absolute"

    @property
    def drop(self) -> float:
        """Loss of quality (positive = worse), see :func:`quality_drop`."""
        return quality_drop(self.metric, self.drop_kind, self.original, self.rebuilt)

    def to_json(self) -> dict:
        """JSON form for ``verify --json``."""
        return {
            "metric": self.metric,
            "original": self.original,
            "rebuilt": self.rebuilt,
            "drop": self.drop,
            "drop_kind": "relative" if self.metric == "mse" else self.drop_kind,  # an MSE drop is always relative
            "top1_agreement": self.agreement,
            "layer_output_errors": self.layer_errors,
        }


def quality_drop(metric: str, kind: str, reference: float, value: float) -> float:
    """Quality lost going from *reference* to *value*; positive means worse.

    MSE is lower-is-better and its drop is relative; every other metric is
    higher-is-better, its drop absolute unless *kind* is ``"relative"``.

    >>> quality_drop("accuracy", "absolute", 0.9, 0.85) == 0.9 - 0.85
    True
    >>> quality_drop("score", "relative", 20.0, 19.0)
    0.05
    """
    if metric == "mse":
        return (value - reference) / max(reference, 1e-12)
    if kind == "relative":
        return (reference - value) / max(abs(reference), 1e-12)
    return reference - value


@dataclass
class CalibratedLayer:
    """A layer whose kernel the budget search may fit to the data: its tensor names and its input statistics."""

    layer: str
    kernel: str
    bias: str | None
    stats: calibrate.LayerStatistics | None = None
    #: How the kernel is the (in, out) matrix the statistics are for: "last" (Keras: the
    #: last axis is the output) or "first" (ONNX Gemm transB=1 and Conv OIHW: the first is).
    layout: str = "last"


class Evaluator:
    """Scores tensor sets on a data set; subclasses know how to run the model.

    The budget search asks an evaluator three things beyond scores, all answered "nothing
    known" here: :attr:`supports_calibration`, :meth:`weight_roles` and :meth:`calibration_layers`.
    """

    metric: str = "score"
    #: "absolute" or "relative": how :meth:`drop` counts (MSE is always relative).
    drop_kind: str = "absolute"
    #: Whether :meth:`calibration_layers` can measure layer inputs on the data (the search's data-aware candidates).
    supports_calibration: bool = False

    def weight_roles(self) -> dict[str, tuple[str, str]]:
        """Tensor name -> (its layer, its weight name such as ``kernel``, ``bias`` or ``gamma``), where the architecture says.

        Keyed by tensor, not by layer, because a layer may hold two weights of one name
        (a Bidirectional layer's two kernels).  Empty when the evaluator does not know the layers.
        """
        return {}

    def calibration_layers(self, samples: int, eligible: Callable[[str], bool]) -> dict[str, CalibratedLayer]:
        """Kernel tensor name -> its layer, with statistics of the layer's inputs on the first *samples* samples.

        Only layers whose kernel *eligible* accepts; empty when the evaluator cannot run
        single layers (then the search offers weight-only candidates).
        """
        return {}

    def per_sample(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        """The metric per sample (1/0 correct, or squared error), or one overall value."""
        raise NotImplementedError

    def prepare_changes(self, names: list[str]) -> None:
        """Get ready to score tensor sets that differ from the model's own in a few of *names*
        (:meth:`per_sample_changed`); evaluators that cannot reuse work do nothing."""

    def per_sample_changed(self, tensors: dict[str, np.ndarray], changed: set[str]) -> np.ndarray:
        """As :meth:`per_sample`, for *tensors* equal to the model's own except at the names in *changed*.

        The result is the same as :meth:`per_sample`'s; an evaluator may compute less to get it.
        """
        return self.per_sample(tensors)

    def measure(self, tensors: dict[str, np.ndarray]) -> float:
        """The metric (accuracy, MSE or hook score) of *tensors* on the data."""
        return float(np.mean(self.per_sample(tensors)))

    def drop(self, reference: float, value: float) -> float:
        """Quality lost going from metric *reference* to *value* (as :attr:`Comparison.drop`)."""
        return quality_drop(self.metric, self.drop_kind, reference, value)

    def drop_error(self, reference: np.ndarray, samples: np.ndarray) -> float:
        """Standard error of the drop between two per-sample results on the same data.

        Paired: only samples whose outcome changed add to it, so a plan that changes
        few predictions has a small error even when both accuracies are noisy.
        """
        if len(samples) < 2:
            return 0.0
        difference = reference - samples if self.metric != "mse" else (samples - reference) / max(float(np.mean(reference)), 1e-12)
        if self.metric != "mse" and self.drop_kind == "relative":
            difference = difference / max(abs(float(np.mean(reference))), 1e-12)
        return float(np.std(difference, ddof=1) / np.sqrt(len(samples)))

    def compare(self, original: dict[str, np.ndarray], rebuilt: dict[str, np.ndarray]) -> Comparison:
        """Run both weight sets and compare them."""
        return Comparison(self.metric, self.measure(original), self.measure(rebuilt), None, {}, self.drop_kind)


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
