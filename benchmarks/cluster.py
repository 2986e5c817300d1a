"""A local run (--jobs N) against a dask LocalCluster run (--scheduler) on the generated large model.

Not a test: ``python benchmarks/cluster.py [--params 252e6] [--workers 2] [--runs 3] [--lossy] [--dir /tmp]``.
It writes benchmarks/memory.py's generated float32 safetensors, starts a ``LocalCluster`` of
``--workers`` processes with one thread each in a separate process, then runs ``nnzip compress``
and ``nnzip decompress`` in fresh processes, locally with ``--jobs WORKERS`` and through the
cluster with ``--scheduler``.  For each it prints medians over the runs of wall seconds, the
client's CPU seconds and peak RSS (VmHWM), and for cluster runs the CPU seconds the cluster's
processes (scheduler, nannies, workers) spent during the run and the workers' peak RSS.  The
outputs are checked byte for byte: cluster .nnz == local .nnz, and (lossless) the decompressed
file == the source.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import generate, run  # noqa: E402  (benchmarks/ is not a package)

#: The cluster process: prints its address, then answers each line on stdin with
#: "CPU seconds of itself and its children, workers' peak RSS in bytes" until stdin closes.
CLUSTER = """
import sys, psutil
from dask.distributed import LocalCluster
with LocalCluster(n_workers=int(sys.argv[1]), threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
    print(cluster.scheduler_address, flush=True)
    me = psutil.Process()
    for _ in sys.stdin:
        processes = [me] + me.children(recursive=True)
        cpu = sum(p.cpu_times().user + p.cpu_times().system for p in processes)
        peak = []
        for worker in me.children(recursive=True):
            status = open(f"/proc/{worker.pid}/status").read()
            peak.append(int(status.split("VmHWM:")[1].split()[0]) * 1024)
        print(cpu, max(peak), flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=252e6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lossy", action="store_true", help="compress with --bits 4")
    parser.add_argument("--dir", type=Path, default=Path("/tmp"))
    options = parser.parse_args()
    source = options.dir / f"nnzip-cluster-{int(options.params / 1e6)}M.safetensors"
    largest = generate(source, options.params)
    print(f"{source}: {source.stat().st_size:,} bytes, largest tensor {largest:,} bytes")
    lossy = ["--bits", "4"] if options.lossy else []
    cluster = subprocess.Popen([sys.executable, "-c", CLUSTER, str(options.workers)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        address = cluster.stdout.readline().strip()

        def cluster_stats() -> tuple[float, int]:
            cluster.stdin.write("\n")
            cluster.stdin.flush()
            cpu, peak = cluster.stdout.readline().split()
            return float(cpu), int(peak)

        modes = {"local": ["--jobs", str(options.workers)], "cluster": ["--scheduler", address]}
        outputs = {}
        for mode, flags in modes.items():
            packed, back = options.dir / f"nnzip-cluster-{mode}.nnz", options.dir / f"nnzip-cluster-{mode}.safetensors"
            rows = {"compress": [], "decompress": []}
            for _ in range(options.runs):
                for command, args in (("compress", [str(source), "-o", str(packed), *lossy]),
                                      ("decompress", [str(packed), "-o", str(back)])):
                    before = cluster_stats()[0]
                    wall, cpu, rss = run([command, *args, "-f", "-q", *flags])
                    after, peak = cluster_stats()
                    rows[command].append((wall, cpu, rss, after - before if mode == "cluster" else 0.0, peak))
            outputs[mode] = packed.read_bytes()
            same = back.read_bytes() == source.read_bytes()
            back.unlink()
            for command, values in rows.items():
                wall, cpu, rss, remote, peak = (statistics.median(column) for column in zip(*values))
                extra = f", cluster CPU {remote:.1f} s, worker peak {peak / 2**20:,.0f} MiB" if mode == "cluster" else ""
                print(f"{mode:7} {command:10} wall {wall:6.1f} s, client CPU {cpu:6.1f} s, client peak {rss / 2**20:,.0f} MiB{extra}")
            print(f"{mode:7} {len(outputs[mode]):,} bytes; decompressed == source: {same}")
        print("cluster .nnz == local .nnz:", outputs["cluster"] == outputs["local"])
    finally:
        cluster.stdin.close()
        cluster.wait(timeout=60)
        for mode in ("local", "cluster"):
            (options.dir / f"nnzip-cluster-{mode}.nnz").unlink(missing_ok=True)
        source.unlink()


if __name__ == "__main__":
    main()
