"""Scoring ONNX models with onnxruntime: the :class:`~nnzip.evaluate.Evaluator` for ``verify`` and the budget search.

The model is rebuilt in memory from its structure and a set of tensors
(:func:`nnzip.formats.onnx_format.model_bytes`) and run by onnxruntime on the user's data:
an ``.npz`` with one array per model input, named as the inputs (a model with a single
input also takes ``x``), and optionally ``y``, integer or one-hot labels.

Metrics (a score is "higher is better", as everywhere in nnzip):

* ``accuracy`` — top-1 accuracy of the first output against ``y``: the default when the
  data has labels and the first output is ``(N, classes)``;
* ``mse`` — each sample's mean squared error between the first output and the input ``x``
  (autoencoders): the default when the output is shaped like ``x``; the drop is relative;
* ``cosine`` — each sample's cosine similarity between the rebuilt and the original
  model's outputs (every float output, averaged): the default for everything else
  (embeddings, regressors, transformers); the original scores 1 and the drop is
  ``1 - cosine``.

``compare`` also reports, per model output, the relative L2 error of the rebuilt
model's output (``layer_output_errors``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import calibrate
from .errors import ConfigError, InputError
from .scoring import CalibratedLayer, Comparison, Dataset, Evaluator
from .formats import onnx_format
from .model import Model

#: onnxruntime element type names -> numpy dtypes of the data fed to them.
_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16, "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}
METRICS = ("accuracy", "mse", "cosine")


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("checking an ONNX model needs onnxruntime: pip install 'nnzip[onnx]'") from None
    return onnxruntime


class OnnxEvaluator(Evaluator):
    """Runs an ONNX model (the structure of *model* with any tensor set) in onnxruntime on *data*."""

    supports_calibration = True

    def __init__(self, model: Model, data: Dataset, metric: str | None = None, batch_size: int = 256):
        if metric not in (None, *METRICS):
            raise ConfigError(f"unknown metric {metric!r} for an ONNX model ({', '.join(METRICS)})")
        self.model, self.data, self.batch_size = model, data, batch_size
        session = self._session(model.tensors)
        self._probe, self.variable = self._probe_session(session)
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.feeds = self._feeds(session)
        self.samples = len(next(iter(self.feeds.values()))) if self.feeds else len(data.x)
        self._batch = self._batch_size(session)
        self.reference = self.outputs(model.tensors)  # through the probe, as every later score
        self.metric = metric or self._default_metric()
        if self.metric == "accuracy" and data.y is None:
            raise ConfigError("the accuracy metric needs labels y in the data")

    # running ---------------------------------------------------------------------------------

    def _session(self, tensors: dict[str, np.ndarray]):
        ort = _ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        data = onnx_format.model_bytes(self.model.structure, tensors)
        try:
            return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InputError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None

    def _probe_session(self, session) -> tuple[object | None, list[str]]:
        """One session with every float tensor turned into a graph input, and those tensors' names.

        Scoring a tensor set then feeds the tensors instead of building a session per
        set (which costs far more than running small models).  None when onnxruntime
        cannot run the model that way (an operator that needs a constant input).
        """
        onnx = onnx_format._onnx()
        top_level = {r["name"] for r in self.model.structure["tensors"] if len(r["at"]) == 2}  # subgraph tensors stay inside
        variable = [n for n, v in self.model.tensors.items() if v.dtype.kind == "f" and n in top_level]
        if not variable:
            return None, []
        model = onnx_format.rebuild(self.model.structure, self.model.tensors.__getitem__, None)
        graph, wanted = model.graph, set(variable)
        declared = {i.name for i in graph.input}
        kept = [t for t in graph.initializer if t.name not in wanted]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        nodes = [n for n in graph.node if not (n.op_type == "Constant" and len(n.output) == 1 and n.output[0] in wanted)]
        del graph.node[:]
        graph.node.extend(nodes)
        for record in self.model.structure["tensors"]:
            if record["name"] in wanted and record["name"] not in declared:
                graph.input.append(onnx.helper.make_tensor_value_info(record["name"], record["data_type"], record["dims"]))
        ort = _ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = 2, 1, 3
        try:
            probe = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - any failure: fall back to a session per tensor set
            return None, []
        return probe, variable

    def _feeds(self, session) -> dict[str, np.ndarray]:
        """Model input name -> the data's array for it, in the input's element type."""
        arrays = self.data.arrays or {"x": self.data.x}
        feeds, missing = {}, []
        inputs = session.get_inputs()
        for item in inputs:
            value = arrays.get(item.name)
            if value is None and len(inputs) == 1:
                value = arrays.get("x")  # a single-input model also takes x
            if value is None:
                missing.append(item.name)
                continue
            dtype = _ORT_TYPES.get(item.type)
            if dtype is None:
                raise ConfigError(f"model input {item.name!r} has type {item.type}, which nnzip cannot feed")
            feeds[item.name] = np.asarray(value).astype(dtype, copy=False)
        if missing:
            raise ConfigError(f"the data has no array for the model input(s) {', '.join(map(repr, missing))} "
                              f"(give one array per input, named as the inputs: {', '.join(self.input_names)})")
        lengths = {len(v) for v in feeds.values()}
        if len(lengths) > 1:
            raise ConfigError(f"the data's input arrays have different numbers of samples: {sorted(lengths)}")
        return feeds

    def _batch_size(self, session) -> int:
        """The batch size to run: the model's fixed first dimension when it has one."""
        for item in session.get_inputs():
            first = item.shape[0] if item.shape else None
            if isinstance(first, int) and first > 0:
                return first
        return self.batch_size

    def _run(self, session, weights: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        """Every output of the model on the whole data set, batch by batch (*weights*: fed tensors of the probe)."""
        pieces: list[list[np.ndarray]] = [[] for _ in self.output_names]
        for start in range(0, self.samples, self._batch):
            batch = {name: value[start:start + self._batch] for name, value in self.feeds.items()}
            batch.update(weights or {})
            try:
                outputs = session.run(self.output_names, batch)
            except Exception as exc:
                raise ConfigError(f"onnxruntime failed on the data: {str(exc).splitlines()[0]}") from None
            for collected, output in zip(pieces, outputs):
                collected.append(np.asarray(output))
        return [np.concatenate(p) if p and p[0].ndim else np.asarray(p[0]) for p in pieces]

    def outputs(self, tensors: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The model's outputs on the data with *tensors* as its values."""
        if self._probe is not None and self._only_variable_changed(tensors):
            return self._run(self._probe, {n: tensors[n] for n in self.variable})
        return self._run(self._session(tensors))

    def _only_variable_changed(self, tensors: dict[str, np.ndarray]) -> bool:
        variable = set(self.variable)
        return all(tensors[n] is v or np.array_equal(tensors[n], v) for n, v in self.model.tensors.items() if n not in variable)

    # calibration ------------------------------------------------------------------------------

    def calibration_layers(self, samples: int, eligible: Callable[[str], bool]) -> dict[str, CalibratedLayer]:
        """The MatMul, Gemm and Conv weights :meth:`layer_inputs` takes whose name *eligible* accepts.

        Each layer is named by its weight (an ONNX graph has nodes, not Keras layers).
        """
        return {kernel: CalibratedLayer(kernel, kernel, bias, stats, layout)
                for kernel, (bias, layout, stats) in self.layer_inputs(samples).items() if eligible(kernel)}

    def layer_inputs(self, limit: int) -> dict[str, tuple[str | None, str, calibrate.LayerStatistics]]:
        """Weight name -> (its bias name or None, its layout, statistics of the inputs it multiplies on *limit* samples).

        The layers taken, each layer's input added as a graph output:

        * ``MatMul`` whose input 1 is a 2-D weight ``(in, out)`` (layout ``"last"``, as a
          Keras Dense kernel); its bias is a 1-D ``(out,)`` tensor added by an ``Add`` that
          is the ``MatMul`` output's only consumer;
        * ``Gemm`` with ``transA = 0``, ``alpha = beta = 1`` and a 2-D weight: ``(in, out)``
          when ``transB = 0``, ``(out, in)`` (layout ``"first"``, torch's Linear) when
          ``transB = 1``; its bias is its input 2 when 1-D ``(out,)``;
        * 2-D ``Conv`` with ``group = 1``: kernel ``(out, in, kh, kw)`` (layout ``"first"``),
          statistics over its input's im2col patches (:func:`calibrate.conv_patches_nchw`);
          its bias is input 2.

        Weights used by more than one node are left out, and so is everything when
        onnxruntime cannot expose the inputs (the search then stays weight-only).
        """
        onnx = onnx_format._onnx()
        model = onnx_format.rebuild(self.model.structure, self.model.tensors.__getitem__, None)
        found = _calibrated_layers(model.graph, self.model.tensors, onnx)
        if not found:
            return {}
        graph, declared = model.graph, {o.name for o in model.graph.output}
        for layer in found.values():
            if layer["activation"] not in declared:
                graph.output.append(onnx.helper.make_tensor_value_info(layer["activation"], onnx.TensorProto.FLOAT, None))
                declared.add(layer["activation"])
        ort = _ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = 2, 1, 3
        try:
            session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - e.g. a non-float activation: no calibration
            return {}
        names = sorted({layer["activation"] for layer in found.values()})
        collected: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for start in range(0, min(limit, self.samples), self._batch):
            stop = min(start + self._batch, limit, self.samples)
            try:
                values = session.run(names, {k: v[start:stop] for k, v in self.feeds.items()})
            except Exception:  # noqa: BLE001 - no statistics: the search falls back to weight-only candidates
                return {}
            for name, value in zip(names, values):
                collected[name].append(np.asarray(value, dtype=np.float32))
        result = {}
        for weight, layer in found.items():
            inputs = _joined_batches(collected[layer["activation"]], layer["conv"] is None)
            stats = None if inputs is None else _layer_statistics(inputs, self.model.tensors[weight], layer)
            if stats is not None:
                result[weight] = (layer["bias"], layer["layout"], stats)
        return result

    # scoring ---------------------------------------------------------------------------------

    def _default_metric(self) -> str:
        first = self.reference[0]
        if self.data.y is not None and first.ndim == 2 and first.shape[1] > 1 and len(first) == len(self.data.y):
            return "accuracy"
        if first.shape == self.data.x.shape:
            return "mse"
        return "cosine"

    def per_sample(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        """1/0 per correct sample, each sample's MSE, or each sample's cosine to the original outputs."""
        return self._samples_of(self.outputs(tensors), self.reference)

    def _samples_of(self, outputs: list[np.ndarray], reference: list[np.ndarray]) -> np.ndarray:
        first = outputs[0]
        if self.metric == "accuracy":
            return (np.argmax(first.reshape(len(first), -1), axis=1) == self.data.y).astype(np.float64)
        if self.metric == "mse":
            flat = first.reshape(len(first), -1).astype(np.float64)
            return np.mean((flat - self.data.x.reshape(len(first), -1)) ** 2, axis=1)
        cosines = [_cosine(a, b) for a, b in zip(outputs, reference) if a.dtype.kind == "f" and a.ndim and len(a) == self.samples]
        if not cosines:
            raise ConfigError("the cosine metric needs float outputs with one row per sample")
        return np.mean(cosines, axis=0)

    def compare(self, original: dict[str, np.ndarray], rebuilt: dict[str, np.ndarray]) -> Comparison:
        """Both models' metric, top-1 agreement (classifiers) and every output's relative error."""
        outs_a, outs_b = self.outputs(original), self.outputs(rebuilt)
        score_a = float(np.mean(self._samples_of(outs_a, outs_a)))
        score_b = float(np.mean(self._samples_of(outs_b, outs_a)))
        errors = {}
        for name, a, b in zip(self.output_names, outs_a, outs_b):
            if a.dtype.kind == "f":
                norm = float(np.linalg.norm(a))
                errors[name] = float(np.linalg.norm(a.astype(np.float64) - b)) / norm if norm else float(np.linalg.norm(b))
        agreement = None
        if self.metric == "accuracy":
            flat_a, flat_b = outs_a[0].reshape(len(outs_a[0]), -1), outs_b[0].reshape(len(outs_b[0]), -1)
            agreement = float(np.mean(np.argmax(flat_a, axis=1) == np.argmax(flat_b, axis=1)))
        return Comparison(self.metric, score_a, score_b, agreement, errors)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample cosine similarity of two output batches (1 where both are zero)."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    dot = np.sum(a * b, axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = norms == 0
    return np.where(both_zero, 1.0, dot / np.where(both_zero, 1.0, norms))


def _calibrated_layers(graph, tensors: dict[str, np.ndarray], onnx) -> dict[str, dict]:
    """Weight name -> {"bias", "layout", "activation", "conv"} for the layers :meth:`OnnxEvaluator.layer_inputs` takes."""
    uses: dict[str, int] = {}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
            consumers.setdefault(name, []).append(node)
    found: dict[str, dict] = {}
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv") or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        weight = node.input[1]
        value = tensors.get(weight)
        if value is None or value.dtype.kind != "f" or uses.get(weight) != 1 or node.input[0] in tensors:
            continue
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        layer = _layer_of(node, value, attributes, consumers)
        if layer is None:
            continue
        bias, out = layer["bias"], (value.shape[0] if layer["layout"] == "first" else value.shape[-1])
        if bias is not None and (bias not in tensors or tensors[bias].shape != (out,) or tensors[bias].dtype.kind != "f" or uses.get(bias) != 1):
            layer["bias"] = None
        layer["activation"] = node.input[0]
        found[weight] = layer
    return found


def _layer_of(node, value: np.ndarray, attributes: dict, consumers: dict) -> dict | None:
    """The bias slot, layout and conv geometry of one MatMul/Gemm/Conv node, or None when its layout is not handled."""
    optional = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if node.op_type == "Conv":
        if value.ndim != 4 or attributes.get("group", 1) != 1:
            return None
        kernel = tuple(value.shape[2:])
        conv = {"kernel": kernel, "strides": tuple(attributes.get("strides", (1, 1))), "dilations": tuple(attributes.get("dilations", (1, 1))),
                "pads": tuple(attributes.get("pads", (0, 0, 0, 0))), "auto_pad": _text(attributes.get("auto_pad", b"NOTSET"))}
        if len(conv["strides"]) != 2 or len(conv["dilations"]) != 2 or len(conv["pads"]) != 4 or tuple(attributes.get("kernel_shape", kernel)) != kernel:
            return None
        return {"bias": optional, "layout": "first", "conv": conv}
    if value.ndim != 2:
        return None
    if node.op_type == "Gemm":
        if attributes.get("transA", 0) or attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0:
            return None
        return {"bias": optional, "layout": "first" if attributes.get("transB", 0) else "last", "conv": None}
    following = consumers.get(node.output[0], [])
    bias = None
    if len(following) == 1 and following[0].op_type == "Add":
        bias = next((n for n in following[0].input if n != node.output[0]), None)
    return {"bias": bias, "layout": "last", "conv": None}


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _joined_batches(batches: list[np.ndarray], rows: bool) -> np.ndarray | None:
    """One layer's inputs over every batch, or None when the batches' shapes do not join.

    With *rows* (MatMul, Gemm) each batch is first flattened to its input vectors
    ``(-1, in)``: a transformer's activation need not hold the batch on axis 0 (an
    attention layout such as ``(seq, batch, hidden)``), so batches of unequal size only
    join row by row.  A Conv's NCHW inputs join on the batch axis.
    """
    if rows:
        batches = [b.reshape(-1, b.shape[-1]) for b in batches if b.ndim]
    if not batches or any(b.ndim != batches[0].ndim or b.shape[1:] != batches[0].shape[1:] for b in batches):
        return None
    return np.concatenate(batches)


def _layer_statistics(inputs: np.ndarray, weight: np.ndarray, layer: dict) -> calibrate.LayerStatistics | None:
    """Statistics of a layer's inputs (im2col patches for a Conv), or None when their shape does not fit the weight."""
    rows = int(np.prod(weight.shape[1:])) if layer["layout"] == "first" else weight.shape[0]
    conv = layer["conv"]
    if conv is None:
        return calibrate.LayerStatistics.of(inputs.reshape(-1, inputs.shape[-1])) if inputs.shape[-1] == rows else None
    if inputs.ndim != 4 or inputs.shape[1] != weight.shape[1]:
        return None
    pads = _conv_pads(conv, inputs.shape[2:])
    if pads is None:
        return None
    return calibrate.LayerStatistics(calibrate.conv_patches_nchw(inputs, conv["kernel"], conv["strides"], pads, conv["dilations"]))


def _conv_pads(conv: dict, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """ONNX's ``[top, left, bottom, right]`` padding of a 2-D Conv on inputs of spatial *size* (auto_pad resolved)."""
    mode = conv["auto_pad"]
    if mode == "NOTSET":
        return conv["pads"]
    if mode == "VALID":
        return (0, 0, 0, 0)
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        return None
    from .infer.ops import same_pads  # TensorFlow's 'same' is SAME_UPPER: the odd pixel after

    begin, end = [], []
    for extent, kernel, stride, dilation in zip(size, conv["kernel"], conv["strides"], conv["dilations"]):
        small, large = same_pads(extent, kernel, stride, dilation)
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return (begin[0], begin[1], end[0], end[1])
