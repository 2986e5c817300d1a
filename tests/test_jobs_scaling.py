"""``--jobs`` over tensors (issue 9): the window of tensors in flight, byte-identical output, k-means in bounded memory.

* The tensors in flight: several per worker, so that a slow tensor at the head of the (ordered)
  results does not leave the other workers idle, and never more source bytes than the budget.
* Compress and decompress write the same bytes with ``--jobs`` 1, 2 and 3 on a model of many
  tensors of mixed sizes (one chunked, at the real chunk size), lossless, ``--uniform`` and ``--bits``.
* k-means above :data:`nnzip.stages.kmeans1d.HISTOGRAM_VALUES` values clusters a histogram:
  close to the exact form's SSE, exact on few distinct values, and its working set a fraction
  of the tensor (measured in a subprocess, as is the whole CLI's peak with ``--bits 4``).
No time is asserted anywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from nnzip import cli
from nnzip.stages import kmeans1d
from nnzip.workers import WINDOW_PER_JOB, in_order_within, workers

from .test_memory_bounds import SHAPES, TARGET, MiB, _peak, _write, baseline  # noqa: F401 - baseline is a fixture

ROOT = Path(__file__).resolve().parent.parent


# --- the window -------------------------------------------------------------------------------


def test_later_tensors_run_while_the_first_is_still_running():
    """With two workers, tensor 3 starts while tensor 0 runs: the old window (one per worker) could not."""
    started = threading.Event()

    def work(item: int) -> bool:
        if item == 0:
            return started.wait(timeout=30)  # False (not a hang) if the window does not reach item 3
        if item == 3:
            started.set()
        return True

    with workers(2) as pool:
        assert pool.window == 2 * WINDOW_PER_JOB
        results = list(in_order_within(pool.tensors, work, range(6), pool.window, 10**9, lambda item: 1))
    assert results == [True] * 6


def test_tensors_in_flight_never_hold_more_than_the_budget():
    """Items handed to the workers and not yet handed back weigh at most the budget (one always runs)."""
    sizes = [5, 1, 1, 7, 2, 2, 9, 1, 3, 3, 3, 3]
    held, worst, lock = [0], [0], threading.Lock()

    class Counting:
        """The pool's executor, counting what is submitted."""

        def __init__(self, executor):
            self.executor = executor

        def submit(self, function, item):
            with lock:
                held[0] += sizes[item]
                worst[0] = max(worst[0], held[0])
            return self.executor.submit(function, item)

    with workers(3) as pool:
        order = []
        for index in in_order_within(Counting(pool.tensors), lambda i: i, range(len(sizes)), pool.window, 9, lambda i: sizes[i]):
            with lock:
                held[0] -= sizes[index]
            order.append(index)
    assert order == list(range(len(sizes))) and worst[0] == 9  # 9 alone, and 3 + 3 + 3: the budget is reached, never passed


# --- byte-identical output ----------------------------------------------------------------------


def _model(path: Path) -> Path:
    """Many tensors of mixed sizes: a chunked 6 MiB matrix (over 2**20 values: k-means' histogram), matrices, biases."""
    rng = np.random.default_rng(19)
    tensors = {"embed": (rng.standard_normal((1536, 1024)) * 0.02).astype(np.float32)}
    for layer in range(3):
        tensors[f"l{layer}.w"] = (rng.standard_normal((256, 192 + 64 * layer)) * 0.05).astype(np.float32)
        tensors[f"l{layer}.b"] = (rng.standard_normal(192 + 64 * layer) * 0.01).astype(np.float32)
        tensors[f"l{layer}.tiny"] = np.float32([0.5, -0.25, 1.0])
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("options", [[], ["--uniform", "0.05"], ["--bits", "4"]])
def test_every_jobs_writes_the_same_bytes_both_ways(tmp_path, options):
    source = _model(tmp_path / "m.safetensors")
    packed = {}
    for jobs in (1, 2, 3):
        out = tmp_path / f"j{jobs}.nnz"
        assert cli.main(["compress", str(source), "-o", str(out), "-q", "--jobs", str(jobs), *options]) == 0
        packed[jobs] = out.read_bytes()
    assert packed[1] == packed[2] == packed[3]
    rebuilt = {}
    for jobs in (1, 2, 3):
        back = tmp_path / f"back{jobs}.safetensors"
        assert cli.main(["decompress", str(tmp_path / "j1.nnz"), "-o", str(back), "-q", "--jobs", str(jobs)]) == 0
        rebuilt[jobs] = back.read_bytes()
    assert rebuilt[1] == rebuilt[2] == rebuilt[3]
    if not options:
        assert rebuilt[1] == source.read_bytes()
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == ["back1.safetensors", "back2.safetensors", "back3.safetensors", "j1.nnz", "j2.nnz", "j3.nnz", "m.safetensors"]


# --- k-means on a histogram ----------------------------------------------------------------------

LARGE = kmeans1d.HISTOGRAM_VALUES + 4099


def _sse(values: np.ndarray, centroids: np.ndarray) -> float:
    x = values.astype(np.float64)
    return float(((x - centroids[kmeans1d.nearest(x, centroids)]) ** 2).sum())


def _exact(values: np.ndarray, k: int, monkeypatch) -> np.ndarray:
    """The exact form's centroids of *values* (the histogram threshold raised past them)."""
    with monkeypatch.context() as patch:
        patch.setattr(kmeans1d, "HISTOGRAM_VALUES", values.size + 1)
        return kmeans1d.kmeans1d(values, k)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("dtype", ["<f4", "<f8", "<f2"])
def test_histogram_sse_is_close_to_the_exact_form(monkeypatch, bits, dtype):
    rng = np.random.default_rng(bits)
    values = (rng.standard_normal(LARGE) * 0.02).astype(dtype)
    kept = values.copy()
    centroids = kmeans1d.kmeans1d(values, 2**bits)
    assert np.array_equal(values, kept)  # the caller's values are read, never changed (float64 ones included)
    assert centroids.size == 2**bits and (np.diff(centroids) > 0).all()
    assert _sse(values, centroids) <= (1 + 1e-3) * _sse(values, _exact(values, 2**bits, monkeypatch))


def test_histogram_keeps_few_distinct_values_exactly():
    rng = np.random.default_rng(3)
    levels = np.array([-1.5, -0.0, 0.0, 1e-30, 2.25], dtype=np.float32)  # -0.0 and 0.0 are one value
    values = rng.choice(levels, LARGE)
    assert kmeans1d.kmeans1d(values, 4).tolist() == np.float32([-1.5, 0.0, 1e-30, 2.25]).astype(np.float64).tolist()
    assert kmeans1d.kmeans1d(values, 2).size == 2  # more values than centroids: clustered


def test_histogram_handles_values_far_apart_and_a_fixed_zero(monkeypatch):
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.standard_normal(LARGE // 2) * 1e-30, rng.standard_normal(LARGE - LARGE // 2)]).astype(np.float32)
    centroids = kmeans1d.kmeans1d(values, 16, fixed_zero=True)
    assert 0.0 in centroids.tolist() and centroids.size == 16
    assert _sse(values, centroids) <= (1 + 1e-3) * _sse(values, _exact(values, 16, monkeypatch))


def test_kmeans_stage_working_set_is_a_fraction_of_the_tensor():
    """The stage on a 32 MiB float32 tensor adds under 1.5x the tensor: its 8 MiB of codes and the histogram's
    fixed-size accumulators (3 x 8 MB); the exact form added ~12x the tensor (float64 copies, sorted, 3 prefix sums, intp codes)."""
    code = ("import numpy as np\n"
            "from nnzip.stages.kmeans import KMeans\nfrom nnzip.stages.base import ArraySpec\n"
            "values = (np.random.default_rng(0).standard_normal(2**23, dtype=np.float32) * 0.02)\n"
            "KMeans.encode(values[:4096], ArraySpec(values.dtype, (4096,)), {'bits': 4})\n"
            "from nnzip.stages import kmeans1d\n"  # load the compiled histogram kernel (numba's memory is the libraries')
            "kmeans1d._accumulate(np.zeros(1, np.uint32), np.zeros(1), 9, 0, 0, 0, 0, np.zeros(1), np.zeros(1), np.zeros(1))\n"
            "def hwm():\n    return int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) * 1024\n"
            "before = hwm()\n"
            "codes, config = KMeans.encode(values, ArraySpec(values.dtype, values.shape), {'bits': 4})\n"
            "print('ADDED', hwm() - before, codes.nbytes)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    _, added, codes = result.stdout.split()[-3:]
    assert int(codes) == 2**23
    assert int(added) < 48 * MiB, f"k-means added {int(added) / MiB:.0f} MiB to encode a 32 MiB tensor"


def test_bits_4_compress_and_decompress_stay_within_the_bound(tmp_path, baseline):  # noqa: F811 - the imported fixture
    """issue 9's bound (2 x largest tensor + 256 MB, plus the libraries' baseline) with ``--bits 4``, --jobs 1 and 2."""
    source = tmp_path / "model.safetensors"
    _write(source, SHAPES)
    bound = TARGET + baseline
    for jobs in ("1", "2"):
        packed, back = tmp_path / f"j{jobs}.nnz", tmp_path / "back.safetensors"
        compress = _peak(["compress", str(source), "-o", str(packed), "-f", "-q", "--jobs", jobs, "--bits", "4"])
        decompress = _peak(["decompress", str(packed), "-o", str(back), "-f", "-q", "--jobs", jobs])
        print(f"--bits 4 --jobs {jobs}: compress {compress / MiB:.0f} MiB, decompress {decompress / MiB:.0f} MiB, bound {bound / MiB:.0f} MiB")
        assert compress <= bound, f"compress peak {compress / MiB:.0f} MiB > {bound / MiB:.0f} MiB"
        assert decompress <= bound, f"decompress peak {decompress / MiB:.0f} MiB > {bound / MiB:.0f} MiB"
        back.unlink()
    assert (tmp_path / "j1.nnz").read_bytes() == (tmp_path / "j2.nnz").read_bytes()
    for name in ("j1.nnz", "j2.nnz", "model.safetensors"):
        (tmp_path / name).unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
