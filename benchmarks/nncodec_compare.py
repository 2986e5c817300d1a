"""nnzip against NNCodec (ISO/IEC 15938-17, Fraunhofer HHI) at equal accuracy.

Usage::

    python benchmarks/nncodec_compare.py [--max-drop 0.005] [--json out.json]
        [--models softmax mlp cnn autoencoder] [--nncodec-python PY] [--variants ...]
        [--no-budget] [--bits 4 3]
    python benchmarks/nncodec_compare.py --render out.json   # tables of an earlier run

For every sample model (``samples/<name>.h5``, optimizer state dropped, the same
tensors ``nnzip compress`` stores) it finds:

* **NNCodec**: the smallest bitstream whose quality drop on the validation split
  (``samples/fashion-mnist-val.npz``) is within ``--max-drop`` (absolute accuracy;
  for the autoencoder, relative MSE increase, as nnzip's ``--max-drop``).  For
  each encoder variant of ``--variants``: the coarse QP grid (``--qp-max`` down
  to ``--qp-min`` in steps of ``--qp-step``) is walked from the coarsest QP
  until one passes, then every QP between it and the next coarser grid point is
  tried, then (``pt``) per-tensor QPs are raised greedily.  The smallest passing
  point over all variants is then scored on the test split
  (``samples/fashion-mnist-test.npz``).  Bytes are NNCodec's whole bitstream
  (``len(nncodec.nn.encode(...))``, what it writes to its ``.nnc`` file).
* **nnzip, budget mode**: ``nnzip compress MODEL --data VAL --max-drop D -o OUT`` and
  ``nnzip verify OUT --data TEST --original MODEL --json``; when this nnzip has no
  ``--max-drop`` the column says "nnzip budget mode not available".
* **nnzip, fixed settings** (reference): ``--bits 4`` and ``--bits 3``, rebuilt with
  :func:`nnzip.api.read_tensors` and scored the same way.

Scores come from :class:`nnzip.evaluate.KerasEvaluator` (nnzip's numpy inference
of the model's Keras config) for every contender.  nnzip sizes are whole
``.nnz`` files (header with the HDF5 structure and model config included, enough
to rebuild the ``.h5``); the tensor payload (sum of blob sizes from ``nnzip
inspect --json``) is shown beside them, since NNCodec's bitstream holds tensors only.

NNCodec runs in a worker process started with ``--nncodec-python`` (default:
``$NNCODEC_PYTHON``, else this interpreter if it can import ``nncodec``, else
``/opt/nncodec-venv/bin/python``), because nncodec 2.1.3 requires ``numpy<2``
while nnzip's environment has numpy 2; ``benchmarks/README.md`` says how to
make that venv.  What is sent to NNCodec (``nncodec.nn.encode(params, args,
epoch)``, then ``nncodec.nn.decode(bytearray)``): a dict of float32 numpy arrays
named ``t0, t1, ...`` in the model's tensor order (the names travel in the
bitstream; the harness maps them back by order; the full HDF5 paths would cost
NNCodec about 74 more bytes on softmax).  NNCodec calls every tensor of two or
more dimensions a ``weight`` (quantized with the QP) and every 1-D tensor
(biases, BatchNorm) ``unspecified`` (quantized with ``nonweight_qp``, default
-75, i.e. nearly exact).  Variant ``T`` hands kernels over in PyTorch's
out-channel-first layout (Dense ``(in, out)`` -> ``(out, in)``, Conv2D HWIO ->
OIHW) instead of Keras' own; NNCodec's row skipping and scan work on dimension 0.

Encoder variants (``--variants``; tokens joined by ``+``):

* ``dq``: dependent (trellis-coded) quantization (``use_dq=True``, NNCodec's
  default); ``sq``: plain scalar quantization (``use_dq=False``);
* ``optqp``: ``opt_qp=True`` (NNCodec's per-tensor QP shift by relative tensor size);
* ``pt``: then greedy per-tensor QPs through ``qp_per_tensor`` (see
  :func:`refine_per_tensor`), as nnzip's budget search also chooses per tensor;
* ``T``: out-channel-first layout (see above);
* ``cb``: ``approx_method='codebook'`` (not in the default set: 4 minutes on the
  7,850-weight softmax alone, and no smaller than uniform there);
* ``spX``: NNCodec's statistics-based unstructured sparsification at target
  sparsity X (``sparsity=X``, ``struct_spars_factor=0``; ``nncodec.nn.encode``
  applies it only for ``epoch > 0``, so the harness passes ``epoch=1``).  Not in
  the default set: on mlp ``dq+sp0.3`` was no smaller than ``dq``.

Always on (NNCodec's ``nn.encode`` defaults): ``row_skipping``, ``param_opt``,
``qp_density=2``.  Not used: LSA and BNF (they need a PyTorch training loop and
data loader), TCA and incremental coding (they code updates against a base
model), IOQ (needs a model executer), ``bitdepth`` (integer-aligned, replaces the QP).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VENV_PYTHON = "/opt/nncodec-venv/bin/python"
DEFAULT_MODELS = ["softmax", "mlp", "cnn", "autoencoder"]
DEFAULT_VARIANTS = ["dq+pt", "sq+pt", "dq+T+pt", "dq+optqp+pt", "sq+optqp+pt", "dq+T+optqp+pt"]


# --- NNCodec worker (runs in the nncodec interpreter) ---------------------------------------


_TORCHVISION_DEFS = None


def _torchvision_workaround() -> str:
    """Let ``import torchvision`` succeed when its C++ ops library cannot load.

    PyPI's torchvision 0.28.0 (the release that pairs with torch 2.13.0) is built
    against PyPI's CUDA torch: its ``_C.so`` needs ``libc10_cuda.so`` and
    ``libtorch_cuda.so``, which the CPU torch wheel used here does not have.  The
    load then fails quietly, and ``torchvision/_meta_registrations.py`` stops the
    import with "operator torchvision::nms does not exist".  nncodec imports
    ``torchvision.datasets`` when it is imported but never calls torchvision's ops,
    so declaring the two op schemas that module registers fake kernels for is
    enough.  Nothing of nncodec or torchvision is changed.  Returns what was done.
    """
    global _TORCHVISION_DEFS
    import glob
    import importlib.util

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return "torchvision not installed"
    libs = glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "_C*.so"))
    try:
        if libs:
            torch.ops.load_library(libs[0])
            return "torchvision ops library loads"
    except (OSError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0]
    else:
        reason = "no _C library"
    _TORCHVISION_DEFS = torch.library.Library("torchvision", "DEF")
    _TORCHVISION_DEFS.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_DEFS.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return f"torchvision ops library does not load ({reason}); declared torchvision::nms/qnms schemas"


def worker_main() -> None:
    """Serve encode/decode requests, one JSON line each on stdin; answers on stdout.

    Request: ``{"in": npz of tensors, "out": npz to write, "args": nncodec args,
    "epoch": int}``; answer ``{"bytes": n, "encode_s": s, "decode_s": s}`` or
    ``{"error": text}``.  Everything nncodec prints goes to stderr.
    """
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import warnings

    warnings.filterwarnings("ignore")
    note = _torchvision_workaround()
    import numpy as np
    from importlib.metadata import version

    from nncodec.nn import decode, encode

    channel.write(json.dumps({"ready": True, "nncodec": version("nncodec"), "numpy": np.__version__, "torchvision": note}) + "\n")
    cache: dict[str, dict] = {}
    scratch = tempfile.mkdtemp(prefix="nncodec-bits-")
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            if request["in"] not in cache:
                with np.load(request["in"]) as npz:
                    cache[request["in"]] = {k: np.ascontiguousarray(npz[k]) for k in npz.files}
            params = {k: v.copy() for k, v in cache[request["in"]].items()}
            args = {**request["args"], "results": scratch, "verbose": False}
            start = time.perf_counter()
            bitstream = encode(params, args=args, epoch=request.get("epoch", 0))
            middle = time.perf_counter()
            rebuilt = decode(bytearray(bitstream), args=args)
            end = time.perf_counter()
            np.savez(request["out"], **{k: np.asarray(v) for k, v in rebuilt.items()})
            answer = {"bytes": len(bitstream), "encode_s": middle - start, "decode_s": end - middle}
        except BaseException as exc:  # nncodec reports errors with SystemExit
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        channel.write(json.dumps(answer) + "\n")


# --- the harness (runs in nnzip's interpreter) -----------------------------------------------


class NNCodecWorker:
    """A long-lived NNCodec process (imports torch once)."""

    def __init__(self, python: str):
        self.process = subprocess.Popen(
            [python, os.path.abspath(__file__), "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if not os.environ.get("NNCODEC_DEBUG") else None,
            text=True, bufsize=1,
        )
        hello = self.process.stdout.readline()
        if not hello:
            raise RuntimeError(f"the NNCodec worker ({python}) did not start; run it with NNCODEC_DEBUG=1 to see why")
        self.info = json.loads(hello)

    def run(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError("the NNCodec worker died")
        return json.loads(answer)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def find_nncodec_python(explicit: str | None) -> str | None:
    """The interpreter that has nncodec, or None."""
    import importlib.util

    for candidate in (explicit, os.environ.get("NNCODEC_PYTHON")):
        if candidate:
            return candidate
    if importlib.util.find_spec("nncodec") is not None:
        return sys.executable
    return DEFAULT_VENV_PYTHON if os.path.exists(DEFAULT_VENV_PYTHON) else None


@dataclass
class Variant:
    """One NNCodec encoder configuration."""

    name: str
    args: dict
    epoch: int = 0
    transpose: bool = False
    per_tensor: bool = False

    @classmethod
    def parse(cls, text: str) -> "Variant":
        args = {"use_dq": True, "opt_qp": False, "approx_method": "uniform", "sparsity": 0.0, "struct_spars_factor": 0.0}
        epoch, transpose, per_tensor = 0, False, False
        for token in text.split("+"):
            if token == "dq":
                args["use_dq"] = True
            elif token == "sq":
                args["use_dq"] = False
            elif token == "optqp":
                args["opt_qp"] = True
            elif token == "cb":
                args["approx_method"] = "codebook"
            elif token == "T":
                transpose = True
            elif token == "pt":
                per_tensor = True
            elif token.startswith("sp"):
                args["sparsity"] = float(token[2:])
                epoch = 1
            else:
                raise SystemExit(f"unknown variant token {token!r} in {text!r}")
        return cls(text, args, epoch, transpose, per_tensor)


def to_codec_layout(array, transpose: bool):
    """Keras kernel -> out-channel-first (Dense (in,out)->(out,in), Conv HWIO->OIHW) when *transpose*."""
    import numpy as np

    if not transpose or array.ndim < 2:
        return np.ascontiguousarray(array)
    if array.ndim == 2:
        return np.ascontiguousarray(array.T)
    return np.ascontiguousarray(np.moveaxis(array, [-1, -2], [0, 1]))


def from_codec_layout(array, transpose: bool):
    import numpy as np

    if not transpose or array.ndim < 2:
        return array
    if array.ndim == 2:
        return np.ascontiguousarray(array.T)
    return np.ascontiguousarray(np.moveaxis(array, [0, 1], [-1, -2]))


@dataclass
class Subject:
    """One model and its evaluators."""

    name: str
    path: str
    tensors: dict
    float_bytes: int
    val: object
    test: object
    base_val: float
    base_test: float
    metric: str
    scratch: str
    npz: dict = field(default_factory=dict)

    def val_drop(self, value: float) -> float:
        return self.val.drop(self.base_val, value)

    def test_drop(self, value: float) -> float:
        return self.test.drop(self.base_test, value)


def load_subject(name: str, val_data, test_data, scratch: str) -> Subject:
    from nnzip.evaluate import KerasEvaluator
    from nnzip.formats import read_model

    path = os.path.join(ROOT, "samples", f"{name}.h5")
    model = read_model(path)  # optimizer state dropped, as nnzip compress does by default
    val, test = KerasEvaluator(model, val_data), KerasEvaluator(model, test_data)
    return Subject(name, path, dict(model.tensors), sum(a.nbytes for a in model.tensors.values()), val, test,
                   val.measure(model.tensors), test.measure(model.tensors), val.metric, scratch)


def nncodec_point(worker: NNCodecWorker, subject: Subject, variant: Variant, qp: int, per_tensor: dict | None = None) -> dict:
    """Encode, decode and score on the validation split at one QP (and per-tensor QPs ``{"t<i>": qp}``)."""
    import numpy as np

    names = list(subject.tensors)
    key = "T" if variant.transpose else "K"
    if key not in subject.npz:
        path = os.path.join(subject.scratch, f"{subject.name}-{key}.npz")
        np.savez(path, **{f"t{i}": to_codec_layout(subject.tensors[n].astype(np.float32), variant.transpose) for i, n in enumerate(names)})
        subject.npz[key] = path
    out = os.path.join(subject.scratch, "decoded.npz")
    args = {**variant.args, "qp": qp}
    point = {"variant": variant.name, "qp": qp}
    if per_tensor:
        args["qp_per_tensor"] = dict(per_tensor)
        point["qp_per_tensor"] = {names[int(k[1:])]: v for k, v in per_tensor.items()}
    answer = worker.run({"in": subject.npz[key], "out": out, "args": args, "epoch": variant.epoch})
    if "error" in answer:
        return {**point, "error": answer["error"], "pass": False}
    with np.load(out) as npz:
        rebuilt = {n: from_codec_layout(npz[f"t{i}"], variant.transpose).astype(subject.tensors[n].dtype).reshape(subject.tensors[n].shape)
                   for i, n in enumerate(names)}
    value = subject.val.measure(rebuilt)
    drop = subject.val_drop(value)
    return {**point, "bytes": answer["bytes"], "val": value, "val_drop": drop, "encode_s": answer["encode_s"],
            "decode_s": answer["decode_s"], "_rebuilt": rebuilt}


def search_nncodec(worker, subject: Subject, variants: list[Variant], qps: list[int], max_drop: float, log) -> dict:
    """Smallest bitstream within *max_drop* on val over variants x QPs; scored on test."""
    points, best, best_rebuilt = [], None, None

    def consider(point):
        nonlocal best, best_rebuilt
        rebuilt = point.pop("_rebuilt", None)
        point["pass"] = "error" not in point and point["val_drop"] <= max_drop
        if point["pass"] and (best is None or point["bytes"] < best["bytes"]):
            best, best_rebuilt = point, rebuilt
        points.append(point)

    step = qps[1] - qps[0] if len(qps) > 1 else 1
    for variant in variants:
        passing = []
        for qp in reversed(qps):  # coarsest (smallest) first; stop at the first that passes
            point = nncodec_point(worker, subject, variant, qp)
            consider(point)
            if point["pass"]:
                passing.append(point)
                break
        if not passing:
            log(f"  nncodec {variant.name}: nothing within budget on the QP grid")
            continue
        coarse = min(passing, key=lambda p: p["bytes"])
        if coarse["qp"] == qps[-1]:
            log(f"  nncodec {variant.name}: WARNING the coarsest grid QP {coarse['qp']} passes; raise --qp-max")
        for qp in range(coarse["qp"] + 1, coarse["qp"] + abs(step)):
            if qp > 0 or any(p["variant"] == variant.name and p["qp"] == qp for p in points):
                continue
            consider(nncodec_point(worker, subject, variant, qp))
        mine = min((p for p in points if p["variant"] == variant.name and p["pass"]), key=lambda p: p["bytes"])
        if variant.per_tensor:
            mine = refine_per_tensor(worker, subject, variant, mine, consider)
        extra = f", per tensor {mine['qp_per_tensor']}" if mine.get("qp_per_tensor") else ""
        log(f"  nncodec {variant.name}: best qp {mine['qp']}{extra} -> {mine['bytes']} B, val {mine['val']:.4f} (drop {mine['val_drop']:+.4f})")
    result = {"points": points, "chosen": None}
    if best is not None:
        test_value = subject.test.measure(best_rebuilt)
        result["chosen"] = {**best, "ratio": subject.float_bytes / best["bytes"], "test": test_value, "test_drop": subject.test_drop(test_value)}
    return result


def refine_per_tensor(worker, subject: Subject, variant: Variant, start: dict, consider) -> dict:
    """Greedy per-tensor QPs (NNCodec's ``qp_per_tensor``) from the best uniform-QP point.

    Two passes over the weight tensors (two or more dimensions), largest first:
    raise one tensor's QP by 4, then 2, then 1 (second pass: by 1) while the
    result stays within the budget and gets smaller.  Returns the best passing point.
    """
    names = list(subject.tensors)
    weights = sorted((i for i, n in enumerate(names) if subject.tensors[n].ndim >= 2), key=lambda i: -subject.tensors[names[i]].size)
    qpt = {f"t{i}": start["qp"] for i in weights}
    best, tried = start, set()
    for steps in ((4, 2, 1), (1,)):
        for i in weights:
            key = f"t{i}"
            for step in steps:
                while qpt[key] + step <= 0:
                    trial = {**qpt, key: qpt[key] + step}
                    memo = tuple(sorted(trial.items()))
                    if memo in tried:
                        break
                    tried.add(memo)
                    point = nncodec_point(worker, subject, variant, start["qp"], trial)
                    consider(point)
                    if not point["pass"] or point["bytes"] >= best["bytes"]:
                        break
                    qpt, best = trial, point
    return best


def nnzip_cli(*args: str) -> subprocess.CompletedProcess:
    """``nnzip ARGS`` (the console script's entry point, run by this interpreter)."""
    return subprocess.run([sys.executable, "-m", "nnzip.cli", *args], capture_output=True, text=True, cwd=ROOT)


def nnzip_has(command: str, flag: str) -> bool:
    done = nnzip_cli(command, "--help")
    return done.returncode == 0 and flag in done.stdout


def nnzip_summary(path: str) -> dict:
    """File bytes, tensor payload bytes and the chains used, from ``nnzip inspect --json``."""
    done = nnzip_cli("inspect", path, "--json")
    if done.returncode != 0:
        raise RuntimeError(f"nnzip inspect {path}: {done.stderr.strip()}")
    info = json.loads(done.stdout)
    payload = sum(part["bytes"] for tensor in info["tensors"] for part in tensor["parts"])
    methods = sorted({tensor["method"] for tensor in info["tensors"] if "kmeans" in tensor["method"] or "csr" in tensor["method"]
                      or "svd" in tensor["method"] or "fft" in tensor["method"] or "dct" in tensor["method"]})
    # Per lossy tensor its method (the search's choices are no longer stored in the header's
    # plan, which format 1.2 trims), and how many parts use arith's levels mode (format 1.3).
    chosen = {tensor["name"]: tensor.get("choice") or tensor["method"] for tensor in info["tensors"]
              if tensor.get("error") not in (None, "exact", 0, 0.0)}
    from nnzip.api import read_tensors

    header = read_tensors(path)[0]
    levels = sum(1 for entry in header["tensors"] for part in entry["parts"] for codec in part["codecs"]
                 if codec["name"] == "arith" and "zero" in codec["configuration"])
    return {"file_bytes": info["file_bytes"], "payload_bytes": payload, "header_bytes": info["header_bytes"],
            "plan": info.get("plan"), "lossy_methods": methods, "methods": chosen, "arith_levels_parts": levels,
            "format_version": info.get("format_version")}


def score_nnz(subject: Subject, path: str) -> tuple[float, float]:
    from nnzip.api import read_tensors

    rebuilt = read_tensors(path)[1]
    return subject.val.measure(rebuilt), subject.test.measure(rebuilt)


def run_nnzip_fixed(subject: Subject, bits: int, max_drop: float) -> dict:
    out = os.path.join(subject.scratch, f"{subject.name}-bits{bits}.nnz")
    start = time.perf_counter()
    done = nnzip_cli("compress", subject.path, "--bits", str(bits), "-o", out, "-f", "-q")
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return {"settings": f"--bits {bits}", "error": done.stderr.strip()}
    val, test = score_nnz(subject, out)
    summary = nnzip_summary(out)
    return {"settings": f"--bits {bits}", **summary, "val": val, "test": test, "val_drop": subject.val_drop(val),
            "test_drop": subject.test_drop(test), "within_budget": subject.val_drop(val) <= max_drop,
            "ratio": subject.float_bytes / summary["file_bytes"], "compress_s": seconds}


def run_nnzip_budget(subject: Subject, max_drop: float, val_path: str, test_path: str, has_verify: bool,
                     margin: float | None = None, holdout: float | None = None) -> dict:
    out = os.path.join(subject.scratch, f"{subject.name}-budget.nnz")
    start = time.perf_counter()
    margin_args = ["--margin", str(margin)] if margin is not None else []  # None: nnzip's default
    margin_args += ["--holdout", str(holdout)] if holdout is not None else []
    done = nnzip_cli("compress", subject.path, "--data", val_path, "--max-drop", str(max_drop), *margin_args, "-o", out, "-f", "-q")
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return {"available": True, "error": done.stderr.strip()}
    summary = nnzip_summary(out)
    val, test = score_nnz(subject, out)
    result = {"available": True, **summary, "val": val, "test": test, "val_drop": subject.val_drop(val),
              "test_drop": subject.test_drop(test), "ratio": subject.float_bytes / summary["file_bytes"], "compress_s": seconds}
    if has_verify:
        verified = nnzip_cli("verify", out, "--data", test_path, "--original", subject.path, "--json")
        if verified.returncode == 0:
            report = json.loads(verified.stdout)
            result["verify"] = report
            # the table shows verify's numbers; they must agree with the harness' own scoring
            result["test"], result["test_drop"] = report["rebuilt"], report["drop"]
            if abs(report["rebuilt"] - test) > 1e-9 or abs(report["original"] - subject.base_test) > 1e-9:
                result["verify_mismatch"] = {"harness_test": test, "harness_base_test": subject.base_test}
        else:
            result["verify_error"] = verified.stderr.strip()
    else:
        result["verify_error"] = "nnzip verify not available; test score from KerasEvaluator"
    return result


# --- report ---------------------------------------------------------------------------------


def fmt_metric(subject_metric: str, value: float) -> str:
    return f"{value:.5f}" if subject_metric == "mse" else f"{value:.4f}"


def fmt_drop(subject_metric: str, drop: float) -> str:
    return f"{drop * 100:+.1f}%" if subject_metric == "mse" else f"{drop:+.4f}"


def short_name(tensor: str) -> str:
    """``model_weights/hidden/mlp/hidden/kernel`` -> ``hidden/kernel``."""
    parts = tensor.split("/")
    return f"{parts[1]}/{parts[-1]}" if len(parts) > 2 and parts[0] == "model_weights" else tensor


def nnzip_settings(entry: dict) -> str:
    plan = entry.get("plan") or {}
    choices = (plan.get("search") or {}).get("choices")
    if choices:
        return "; ".join(f"{short_name(k)}: {v}" for k, v in choices.items())
    if entry.get("methods"):
        text = "; ".join(f"{short_name(k)}: {v.removeprefix('dense > ')}" for k, v in entry["methods"].items())
        return text + (f"; arith levels mode in {entry['arith_levels_parts']} parts" if entry.get("arith_levels_parts") else "")
    if "search" in plan:
        return "choices not recorded"  # a run before the per-tensor methods were kept (the header no longer has them)
    default = plan.get("default") or {}
    text = ",".join(f"{k}={v}" for k, v in default.items()) or "lossless"
    if plan.get("overrides"):
        text += f" +{len(plan['overrides'])} overrides"
    return text


def markdown(results: list[dict], max_drop: float) -> str:
    lines = [
        f"Budget: val drop <= {max_drop} (accuracy, absolute; autoencoder: MSE, relative). "
        "Scores: val/test (drop vs the float model in brackets). nnzip bytes = whole .nnz file (tensor payload in brackets).",
        "",
        "| model | float32 bytes | NNCodec bytes (QP, val/test) | nnzip bytes (settings, val/test) | nnzip/NNCodec size: file (payload) |",
        "| --- | ---: | --- | --- | ---: |",
    ]
    for r in results:
        metric = r["metric"]
        chosen = (r.get("nncodec") or {}).get("chosen")
        if chosen:
            codec = (f"{chosen['bytes']:,} ({chosen['ratio']:.1f}x; {chosen['variant']} qp {chosen['qp']}, "
                     f"{fmt_metric(metric, chosen['val'])} [{fmt_drop(metric, chosen['val_drop'])}] / "
                     f"{fmt_metric(metric, chosen['test'])} [{fmt_drop(metric, chosen['test_drop'])}])")
        else:
            codec = (r.get("nncodec") or {}).get("note", "nothing within budget")
        budget = r["nnzip"]["budget"]
        if not budget.get("available"):
            zipped, ratio = budget.get("note", "nnzip budget mode not available"), "n/a"
        elif "error" in budget:
            zipped, ratio = f"error: {budget['error']}", "n/a"
        else:
            zipped = (f"{budget['file_bytes']:,} [{budget['payload_bytes']:,}] ({nnzip_settings(budget)}, "
                      f"{fmt_metric(metric, budget['val'])} [{fmt_drop(metric, budget['val_drop'])}] / "
                      f"{fmt_metric(metric, budget['test'])} [{fmt_drop(metric, budget['test_drop'])}])")
            ratio = f"{budget['file_bytes'] / chosen['bytes']:.2f} ({budget['payload_bytes'] / chosen['bytes']:.2f})" if chosen else "n/a"
        lines.append(f"| {r['model']} ({metric}, float val/test {fmt_metric(metric, r['base_val'])}/{fmt_metric(metric, r['base_test'])}) "
                     f"| {r['float_bytes']:,} | {codec} | {zipped} | {ratio} |")
    lines += [
        "",
        "Fixed-settings nnzip reference (not budget-searched; 'in budget' = val drop <= budget):",
        "",
        "| model | nnzip settings | bytes [payload] | val [drop] | test [drop] | in budget | nnzip/NNCodec size (file, payload) |",
        "| --- | --- | ---: | --- | --- | --- | ---: |",
    ]
    for r in results:
        metric = r["metric"]
        chosen = (r.get("nncodec") or {}).get("chosen")
        for entry in r["nnzip"]["fixed"]:
            if "error" in entry:
                lines.append(f"| {r['model']} | {entry['settings']} | error: {entry['error']} | | | | |")
                continue
            ratio = f"{entry['file_bytes'] / chosen['bytes']:.2f}, {entry['payload_bytes'] / chosen['bytes']:.2f}" if chosen else "n/a"
            lines.append(f"| {r['model']} | {entry['settings']} | {entry['file_bytes']:,} [{entry['payload_bytes']:,}] | "
                         f"{fmt_metric(metric, entry['val'])} [{fmt_drop(metric, entry['val_drop'])}] | "
                         f"{fmt_metric(metric, entry['test'])} [{fmt_drop(metric, entry['test_drop'])}] | "
                         f"{'yes' if entry['within_budget'] else 'no'} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="sample model names (samples/NAME.h5)")
    parser.add_argument("--max-drop", type=float, default=0.005, help="allowed val drop: absolute accuracy, relative MSE (default 0.005)")
    parser.add_argument("--margin", type=float, help="nnzip's --margin for the budget mode (default: nnzip's own; the README table used 1)")
    parser.add_argument("--holdout", type=float, help="nnzip's --holdout for the budget mode (default: nnzip's own; the README table, "
                        "run before it existed, searched on all of the val split: 0)")
    parser.add_argument("--val", default=os.path.join(ROOT, "samples", "fashion-mnist-val.npz"))
    parser.add_argument("--test", default=os.path.join(ROOT, "samples", "fashion-mnist-test.npz"))
    parser.add_argument("--nncodec-python", help=f"interpreter with nncodec installed (default: $NNCODEC_PYTHON, this one, {DEFAULT_VENV_PYTHON})")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, help=f"NNCodec encoder variants (default: {' '.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--qp-min", type=int, default=-50)
    parser.add_argument("--qp-max", type=int, default=-10)
    parser.add_argument("--qp-step", type=int, default=4, help="coarse grid step; then every QP up to the next coarse point")
    parser.add_argument("--bits", nargs="*", type=int, default=[4, 3], help="fixed nnzip --bits references (default: 4 3)")
    parser.add_argument("--no-budget", action="store_true", help="skip nnzip's budget mode (it is the slowest part)")
    parser.add_argument("--json", help="write all results (every NNCodec point too) here")
    parser.add_argument("--render", metavar="JSON", help="only print the tables of an earlier --json file")
    options = parser.parse_args(argv)
    if options.worker:
        worker_main()
        return 0
    if options.render:
        with open(options.render) as handle:
            report = json.load(handle)
        print(markdown(report["models"], report["max_drop"]))
        print(f"\nRuntime: {report['runtime_s']:.0f} s.")
        return 0

    sys.path.insert(0, ROOT)
    from nnzip.evaluate import load_data

    started = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    variants = [Variant.parse(v) for v in options.variants]
    qps = list(range(options.qp_min, options.qp_max + 1, options.qp_step))
    val_data, test_data = load_data(options.val), load_data(options.test)
    has_budget = nnzip_has("compress", "--max-drop")
    has_verify = nnzip_has("verify", "--json")
    log(f"nnzip budget mode (compress --max-drop): {'yes' if has_budget else 'not available'}; verify --json: {'yes' if has_verify else 'not available'}")

    python = find_nncodec_python(options.nncodec_python)
    worker, codec_note = None, None
    if python is None:
        codec_note = "NNCodec not installed (see benchmarks/README.md)"
    else:
        try:
            worker = NNCodecWorker(python)
            log(f"NNCodec worker: {python}: {worker.info}")
        except (OSError, RuntimeError) as exc:
            codec_note = f"NNCodec not available: {exc}"
    if codec_note:
        log(codec_note)

    results = []
    with tempfile.TemporaryDirectory(prefix="nncodec-compare-") as scratch:
        try:
            for name in options.models:
                model_start = time.perf_counter()
                subject = load_subject(name, val_data, test_data, scratch)
                log(f"{name}: {subject.float_bytes:,} float32 bytes, {subject.metric} val {subject.base_val:.5f} test {subject.base_test:.5f}")
                entry = {"model": name, "file": os.path.relpath(subject.path, ROOT), "metric": subject.metric,
                         "float_bytes": subject.float_bytes, "base_val": subject.base_val, "base_test": subject.base_test}
                if worker is not None:
                    codec_start = time.perf_counter()
                    entry["nncodec"] = search_nncodec(worker, subject, variants, qps, options.max_drop, log)
                    entry["nncodec"]["seconds"] = time.perf_counter() - codec_start
                else:
                    entry["nncodec"] = {"note": codec_note, "chosen": None}
                if has_budget and not options.no_budget:
                    budget = run_nnzip_budget(subject, options.max_drop, options.val, options.test, has_verify, options.margin,
                                              options.holdout)
                else:
                    budget = {"available": False, "note": "skipped (--no-budget)" if has_budget else "nnzip budget mode not available"}
                entry["nnzip"] = {"budget": budget, "fixed": [run_nnzip_fixed(subject, b, options.max_drop) for b in options.bits]}
                entry["seconds"] = time.perf_counter() - model_start
                log(f"{name}: done in {entry['seconds']:.1f}s")
                results.append(entry)
        finally:
            if worker is not None:
                worker.close()

    total = time.perf_counter() - started
    print(markdown(results, options.max_drop))
    print(f"\nRuntime: {total:.0f} s on {os.cpu_count()} cores.")
    if options.json:
        report = {
            "max_drop": options.max_drop, "val": options.val, "test": options.test, "qps": qps,
            "variants": [{"name": v.name, "args": v.args, "epoch": v.epoch, "transpose": v.transpose} for v in variants],
            "nncodec_python": python, "nncodec_worker": worker.info if worker else None, "nncodec_note": codec_note,
            "nnzip_budget_mode": has_budget, "nnzip_verify": has_verify,
            "runtime_s": total, "models": results,
        }
        with open(options.json, "w") as handle:
            json.dump(report, handle, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
