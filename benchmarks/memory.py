"""Peak memory and CPU of compress/decompress on a generated large safetensors model, --jobs 1 vs 2.

Not a test: ``python benchmarks/memory.py [--params 252e6 | --source FILE] [--lossy | --uniform 0.05] [--runs 3] [--keep] [--dir /tmp]``.  It writes a
float32 safetensors of about PARAMS parameters (transformer-like shapes: a 16k x 1024 embedding,
then 1024 x 4096 / 4096 x 1024 / 1024 x 1024 matrices and vectors, values like trained weights:
Gaussian, rounded to bf16-like mantissas so that they compress a little), then runs
``nnzip compress`` and ``nnzip decompress`` in fresh processes with --jobs 1 and 2 and prints,
for each, wall and CPU seconds and peak RSS (VmHWM of the child) against the target
2 x largest tensor + 256 MB.  The decompressed file is checked byte for byte (lossless).
``--source`` measures an existing safetensors instead (benchmarks/run.py's ``gen-250M``, say);
``--runs N`` gives the median of N runs of each (wall and CPU) and the largest peak, and the
ratio of --jobs 1's wall to each other's (on a shared machine, read it with ``uptime``'s load).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def generate(path: Path, params: float, seed: int = 0) -> int:
    """Write the model; returns the largest tensor's bytes."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in _shapes(params).items():
        values = (rng.standard_normal(shape, dtype=np.float32) * 0.02).view(np.uint32)
        tensors[name] = (values & np.uint32(0xFFFF0000)).view(np.float32)  # bf16-like: low mantissa bytes zero
    save_file(tensors, str(path))
    return max(t.nbytes for t in tensors.values())


def _shapes(params: float) -> dict[str, tuple[int, ...]]:
    """The model's tensor shapes: a 64 MiB embedding, then transformer layers up to PARAMS parameters."""
    shapes = {"embed": (16_384, 1024)}
    layer, total = 0, 16_384 * 1024
    while total < params:
        for name, shape in (("q", (1024, 1024)), ("k", (1024, 1024)), ("v", (1024, 1024)), ("o", (1024, 1024)),
                            ("up", (1024, 4096)), ("down", (4096, 1024)), ("norm", (1024,))):
            shapes[f"layer{layer}.{name}"] = shape
            total += int(np.prod(shape))
        layer += 1
    return shapes


def run(args: list[str]) -> tuple[float, float, int]:
    """(wall s, CPU s, peak RSS bytes) of ``python -m nnzip ARGS`` in a fresh process."""
    code = ("import resource, runpy, sys\n"
            f"sys.argv = ['nnzip'] + {args!r}\n"
            "try:\n    runpy.run_module('nnzip', run_name='__main__')\n"
            "except SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
            "u = resource.getrusage(resource.RUSAGE_SELF)\n"
            "print('STATS', code, int(hwm) * 1024, u.ru_utime + u.ru_stime, file=sys.stderr)\n")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    line = [l for l in result.stderr.splitlines() if l.startswith("STATS")]
    if not line or line[0].split()[1] != "0":
        raise SystemExit(f"nnzip {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    _, _, rss, cpu = line[0].split()
    return wall, float(cpu), int(rss)


def _largest(path: Path) -> int:
    """The largest tensor's bytes of a safetensors file, from its header."""
    import json
    import struct

    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    return max(end - begin for key, entry in header.items() if key != "__metadata__" for begin, end in [entry["data_offsets"]])


def _summary(runs: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    """(median wall, median CPU, largest peak) of several runs."""
    return float(np.median([r[0] for r in runs])), float(np.median([r[1] for r in runs])), max(r[2] for r in runs)


def _same_file(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes, compared 16 MiB at a time (not read whole)."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as x, open(b, "rb") as y:
        while True:
            left, right = x.read(1 << 24), y.read(1 << 24)
            if left != right:
                return False
            if not left:
                return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=252e6)
    parser.add_argument("--lossy", action="store_true", help="compress with --bits 4")
    parser.add_argument("--uniform", type=float, help="compress with --uniform STEP instead")
    parser.add_argument("--keep", action="store_true", help="reuse the generated model if it is there, and keep it")
    parser.add_argument("--dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--source", type=Path, help="an existing safetensors file to measure (kept)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each; medians of wall and CPU, largest peak")
    options = parser.parse_args()
    source = options.source or options.dir / f"nnzip-bench-{int(options.params / 1e6)}M.safetensors"
    if options.source:
        options.keep = True
        largest = _largest(source)
    elif options.keep and source.exists():
        largest = max(int(np.prod(shape)) * 4 for shape in _shapes(options.params).values())
    else:
        largest = generate(source, options.params)
    print(f"{source}: {source.stat().st_size:,} bytes, largest tensor {largest:,} bytes; "
          f"target peak RSS <= {2 * largest + 256 * 2**20:,}")
    lossy = ["--uniform", str(options.uniform)] if options.uniform else ["--bits", "4"] if options.lossy else []
    walls = {}
    for jobs in options.jobs:
        packed = options.dir / f"nnzip-bench-j{jobs}.nnz"
        back = options.dir / f"nnzip-bench-j{jobs}.safetensors"
        cs, ds = [], []
        for _ in range(options.runs):
            cs.append(run(["compress", str(source), "-o", str(packed), "-f", "-q", "--jobs", str(jobs), *lossy]))
            ds.append(run(["decompress", str(packed), "-o", str(back), "-f", "-q", "--jobs", str(jobs)]))
        c, d = _summary(cs), _summary(ds)
        walls[jobs] = (c[0], d[0])
        same = "identical" if not lossy and _same_file(back, source) else ("lossy" if lossy else "DIFFERENT")
        print(f"--jobs {jobs}: {packed.stat().st_size:,} bytes; compress {c[0]:.1f} s wall, {c[1]:.1f} s CPU, "
              f"peak {c[2] / 2**20:,.0f} MiB; decompress {d[0]:.1f} s wall, {d[1]:.1f} s CPU, peak {d[2] / 2**20:,.0f} MiB; {same}"
              + (f" (medians of {options.runs})" if options.runs > 1 else ""))
        back.unlink()
    first = options.jobs[0]
    for jobs in options.jobs[1:]:
        print(f"--jobs {jobs} vs {first}: compress {walls[first][0] / walls[jobs][0]:.2f}x, decompress {walls[first][1] / walls[jobs][1]:.2f}x (wall)")
    files = [options.dir / f"nnzip-bench-j{j}.nnz" for j in options.jobs]
    print("outputs byte-identical across --jobs:", all(_same_file(f, files[0]) for f in files))
    for j in options.jobs:
        (options.dir / f"nnzip-bench-j{j}.nnz").unlink()
    if not options.keep:
        source.unlink()


if __name__ == "__main__":
    main()
