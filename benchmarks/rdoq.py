"""Rate-distortion quantization (``uniform`` with ``rdo``) against plain rounding, at equal weight error.

A benchmark, not a test: nothing is asserted.  For every weight matrix of the given models
(the tensors lossy settings may touch), each uniform step of the budget search's ladder is
encoded twice or more — plain nearest rounding and RDOQ with each ``--rdo`` weight — through
the real pipeline (``dense`` + ``uniform`` + the smallest serializer and entropy coder), and
the stored bytes and the relative weight error ``||W - W'|| / ||W||`` are recorded.  An RDOQ
point is compared with the plain curve *at its own error*: the plain bytes there are
interpolated on log(bytes) against log(error) between the two plain steps around it; the
gain is ``1 - rdo bytes / plain bytes``.  Points outside the plain curve's error range are
left out.  Usage::

    python benchmarks/rdoq.py [models ...] [--rdo 0.06 0.12 0.2 0.35] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nnzip import formats  # noqa: E402
from nnzip.pipeline import TensorPlan, encode_tensor  # noqa: E402
from nnzip.plan import is_lossy_candidate, layer_weight  # noqa: E402
from nnzip.search import UNIFORM_STEPS  # noqa: E402

DEFAULT_MODELS = ["samples/mlp.h5", "samples/cnn.h5", "samples/autoencoder.h5", "samples/softmax.h5", "samples/tiny_bert.onnx"]


def measure(array: np.ndarray, step: float, rdo: float) -> tuple[int, float]:
    """(stored bytes, relative error) of *array* as dense + uniform(step, rdo) through the real pipeline."""
    params = {"step": step, **({"rdo": rdo} if rdo else {})}
    item = encode_tensor("w", array, TensorPlan("dense", {}, [("uniform", params)]))
    a = array.astype(np.float64)
    error = float(np.linalg.norm(a - item.reconstruction.astype(np.float64)) / np.linalg.norm(a))
    return sum(map(len, item.blobs)), error


def plain_bytes_at(curve: list[tuple[int, float]], error: float) -> float | None:
    """Plain bytes at *error*, interpolated on log-log between the plain points around it (None outside)."""
    points = sorted((e, b) for b, e in curve if e > 0)
    for (e0, b0), (e1, b1) in zip(points, points[1:]):
        if e0 <= error <= e1 and e1 > e0:
            w = (np.log(error) - np.log(e0)) / (np.log(e1) - np.log(e0))
            return float(np.exp(np.log(b0) + w * (np.log(b1) - np.log(b0))))
    return None


def kernels(path: str) -> dict[str, np.ndarray]:
    """The tensors of *path* lossy settings may touch (float32 weight matrices)."""
    model = formats.read_model(path)
    exact = formats.exact_names(model)
    return {n: a for n, a in model.tensors.items()
            if n not in exact and is_lossy_candidate(a, layer_weight(model.source_format, n)) and a.dtype == np.float32}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=DEFAULT_MODELS)
    parser.add_argument("--rdo", nargs="*", type=float, default=[0.06, 0.12, 0.2, 0.35])
    parser.add_argument("--json", help="write every point here")
    args = parser.parse_args(argv)
    rows, gains = [], {rdo: [] for rdo in args.rdo}
    by_step = {(rdo, f): [] for rdo in args.rdo for f in UNIFORM_STEPS}
    for path in args.models:
        for name, array in kernels(os.path.join(ROOT, path) if not os.path.isabs(path) else path).items():
            spread = float(np.std(array))
            plain = [measure(array, f * spread, 0.0) for f in UNIFORM_STEPS]
            for factor, (b, e) in zip(UNIFORM_STEPS, plain):
                rows.append({"model": path, "tensor": name, "factor": factor, "rdo": 0.0, "bytes": b, "error": e})
            for rdo in args.rdo:
                for factor in UNIFORM_STEPS:
                    b, e = measure(array, factor * spread, rdo)
                    reference = plain_bytes_at(plain, e)
                    gain = None if reference is None else 1 - b / reference
                    rows.append({"model": path, "tensor": name, "factor": factor, "rdo": rdo, "bytes": b, "error": e, "gain": gain})
                    if gain is not None:
                        gains[rdo].append(gain)
                        by_step[(rdo, factor)].append(gain)
    print(f"{len({(r['model'], r['tensor']) for r in rows})} tensors from {len(args.models)} models; gain = bytes saved at equal weight error")
    print("| rdo | points | median gain | mean gain | worst | best |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for rdo, values in gains.items():
        if values:
            print(f"| {rdo:g} | {len(values)} | {statistics.median(values):+.2%} | {statistics.fmean(values):+.2%} | {min(values):+.2%} | {max(values):+.2%} |")
    print()
    print("median gain by step (in standard deviations), per rdo:")
    print("| step sd | " + " | ".join(f"rdo {r:g}" for r in args.rdo) + " |")
    print("| ---: | " + " | ".join("---:" for _ in args.rdo) + " |")
    for factor in UNIFORM_STEPS:
        cells = [by_step[(r, factor)] for r in args.rdo]
        print(f"| {factor:g} | " + " | ".join(f"{statistics.median(c):+.2%} ({len(c)})" if c else "-" for c in cells) + " |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
