"""Lossless .nnz files against zstd -19 and ZipNN on the same tensors, per sample model.

Run from the repository root: ``python benchmarks/lossless.py [model files...]``
(default: every Keras sample).  Optional comparators: ``pip install zstandard zipnn``
(ZipNN needs torch; ``pip install zipnn torch==2.13.0`` keeps the local CPU build).

For each model the tensors nnzip keeps (optimizer state dropped) are measured four ways:
their raw float bytes; the whole lossless ``.nnz`` file (header included); zstd -19 of
each tensor's bytes, summed; ZipNN of each tensor, summed (ZipNN's own per-tensor
framing included, as it would be stored).  One run; the machine is shared, so sizes are
exact and times are indicative only.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nnzip import api
from nnzip.formats import read_model

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = sorted((ROOT / "samples").glob("*.h5"))


def zstd_size(data: bytes) -> int | None:
    """zstd -19 of *data*, or None when the python ``zstandard`` module is missing."""
    try:
        import zstandard
    except ImportError:
        return None
    return len(zstandard.ZstdCompressor(level=19).compress(data))


def zipnn_size(array: np.ndarray) -> int | None:
    """ZipNN's compressed size of a float tensor, or None when ``zipnn`` is missing."""
    try:
        import zipnn
    except ImportError:
        return None
    if array.dtype != np.float32:
        return len(array.tobytes())  # ZipNN is for floats; count other tensors as stored raw
    return len(zipnn.ZipNN(bytearray_dtype="float32", input_format="byte").compress(array.tobytes()))


def measure(path: Path) -> dict:
    """Sizes of one model's tensors under each method."""
    model = read_model(path)
    raw = sum(a.nbytes for a in model.tensors.values())
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        report = api.compress(path, Path(tmp) / "m.nnz")
        seconds = time.perf_counter() - started
    zstd = [zstd_size(a.tobytes()) for a in model.tensors.values()]
    zipnn = [zipnn_size(a) for a in model.tensors.values()]
    return {
        "model": path.name,
        "raw": raw,
        "nnz": report.file_bytes,
        "zstd": None if None in zstd else sum(zstd),
        "zipnn": None if None in zipnn else sum(zipnn),
        "seconds": seconds,
    }


def main(paths: list[Path]) -> None:
    """Print a markdown table of the measurements."""
    print("| model | tensor bytes | lossless .nnz | zstd -19 | ZipNN | .nnz / ZipNN | compress s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    totals = {"raw": 0, "nnz": 0, "zstd": 0, "zipnn": 0}
    for path in paths:
        row = measure(path)
        for key in totals:
            totals[key] = None if totals[key] is None or row[key] is None else totals[key] + row[key]
        print(_row(row["model"], row, f"{row['seconds']:.1f}"))
    print(_row("**total**", totals, ""))


def _row(name: str, row: dict, seconds: str) -> str:
    def cell(key):
        value = row[key]
        return "n/a" if value is None else f"{value:,} ({value / row['raw']:.4f})"

    versus = f"{row['nnz'] / row['zipnn']:.4f}" if row["zipnn"] else "n/a"
    return f"| {name} | {row['raw']:,} | {cell('nnz')} | {cell('zstd')} | {cell('zipnn')} | {versus} | {seconds} |"


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]] or DEFAULT)
