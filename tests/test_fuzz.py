"""Seeded fuzzing of real .nnz files: every mutation is rejected with an NnzipError, never another exception.

Header values are replaced by values of the wrong type or range, and blob bytes are
flipped (with the container rebuilt so CRCs and the blob table stay valid, so the
decoders themselves are exercised, not only the checksums).
"""

from __future__ import annotations

import copy
import random

import pytest

from .nnz_tools import blobs_of, rebuild, split_file
from nnzip import api
from nnzip.errors import NnzipError
from nnzip.plan import PlanRules, Settings
from .samples import SAMPLES

ODD_VALUES = [0, -1, 1, 2**40, 1.5, "x", None, [], {}, True, 255, 65536, [1, 2], {"a": 1}]


def _paths(obj, path=()):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, path + (key,))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _paths(value, path + (index,))
    if path and path[0] != "blobs":
        yield path


@pytest.mark.parametrize("settings", [Settings(prune=0.5, bits=4), Settings(rank=8, uniform=0.5), Settings(fft_keep=0.3, bits=5), Settings()],
                         ids=["csr-kmeans", "svd-uniform", "fft-kmeans", "lossless"])
def test_mutated_files_are_rejected_cleanly(tmp_path, settings):
    source = tmp_path / "m.nnz"
    api.compress(SAMPLES / "softmax.h5", source, rules=PlanRules(settings, []))
    data = source.read_bytes()
    header, blobs = split_file(data)[0], blobs_of(data)
    paths = list(_paths(header))
    rng = random.Random(1234)
    target = tmp_path / "fuzzed.nnz"
    for _ in range(150):
        mutated, mutated_blobs = copy.deepcopy(header), list(blobs)
        if rng.random() < 0.6:
            *parents, last = rng.choice(paths)
            node = mutated
            for key in parents:
                node = node[key]
            node[last] = rng.choice(ODD_VALUES)
        else:
            index = rng.randrange(len(mutated_blobs))
            if not mutated_blobs[index]:
                continue
            blob = bytearray(mutated_blobs[index])
            blob[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
            mutated_blobs[index] = bytes(blob)
        try:
            target.write_bytes(rebuild(mutated, mutated_blobs))
        except (TypeError, ValueError):
            continue  # the mutation made the header unwritable (e.g. a non-JSON key): nothing to read
        try:
            api.read_tensors(target)
        except NnzipError:
            pass


# --- structure-aware, every read path, each case forked under limits (tests/fuzzing.py) ----------

#: Each source format with chains that, together, use every stage (delta on the integer tensors).
SHORT_PAIRS = [("keras-h5", "csr-kmeans"), ("keras-h5", "fft-cast"), ("keras-weights-h5", "svd-uniform"),
               ("keras-weights-h5", "rfft-kmeans"), ("keras-v3", "lossless"), ("keras-v3", "energy-cast"),
               ("safetensors", "lossless"), ("safetensors", "csr-uniform"), ("npz", "lossless"), ("npz", "csr-kmeans")]
SHORT_SEED, SHORT_CASES = 20261201, 300


def test_structure_aware_fuzz_every_read_path(tmp_path_factory):
    """300 seeded cases: each ends ok or in an NnzipError on every read path; none crashes, hangs,
    hits the memory/CPU limit, writes outside its folder or leaves a temporary file."""
    from . import fuzzing

    root = tmp_path_factory.mktemp("fuzz")
    seeds = fuzzing.build_corpus(root / "corpus", pairs=SHORT_PAIRS)
    assert {s.source_format for s in seeds} == {"keras-h5", "keras-weights-h5", "keras-v3", "safetensors", "npz"}
    runner = fuzzing.Runner(root, seeds, fuzzing.small_data(root), jobs=2)
    runner.warm()
    # Inflated tensors up to 4M elements (16 MB) keep the run short; benchmarks/fuzz.py goes to rule 4.7's cap.
    cases = (fuzzing.make_case(seeds, SHORT_SEED, i, root, inflate=2**22) for i in range(SHORT_CASES))
    results = list(runner.run(cases))
    counts = {c: sum(r.outcome == c for r in results) for c in fuzzing.CLASSES}
    assert len(results) == SHORT_CASES
    assert counts["ok"] + counts["nnzip"] > 0 and sum(r.paths.get("decompress") == "ok" for r in results) > 0
    failures = {}
    for result in results:
        if result.outcome not in ("ok", "nnzip"):
            failures.setdefault(result.signature(), result)
    report = "\n".join(f"{sig}\n    {r.message[:200]}\n    {r.case.reproducer()}" for sig, r in failures.items())
    assert not failures, f"{counts}\n{len(failures)} distinct failures (reproduce with the seed and case index):\n{report}"


def _guarded_behaviour(case_dir, seed, data, default_output):
    """Read paths that misbehave on purpose, one way per fake corpus entry (named by its label)."""
    import os
    import signal
    import time

    import numpy as np

    from nnzip.errors import FormatError

    def run():
        label = seed.label
        if label == "memory":
            np.ones(3 * 2**30, dtype=np.uint8)
        elif label == "cpu":
            while True:
                pass
        elif label == "hang":
            time.sleep(600)
        elif label == "crash":
            raise KeyError("a raw exception")
        elif label == "nnzip":
            raise FormatError("rule 0.0: refused")
        elif label == "stray":
            open("written-into-cwd.bin", "wb").close()
        elif label == "temp":
            (case_dir / "out" / ".model.h5.nnzip-0123456789ab.tmp.h5").write_bytes(b"left")
        elif label == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)

    return [("probe", run)]


def test_fuzz_guards_classify_blow_ups_hangs_crashes_and_escapes(tmp_path):
    """The harness itself: each misbehaviour a case can show is caught and classed, none takes the run down."""
    from pathlib import Path

    from . import fuzzing

    expected = {"ok": "ok", "nnzip": "nnzip", "memory": "limit", "cpu": "limit", "hang": "hang", "crash": "crash",
                "stray": "escape", "temp": "escape", "segv": "crash"}
    seeds = [fuzzing.Seed(label, "npz", ".npz", False, {}, [], Path()) for label in expected]
    cases = [fuzzing.Case(0, i, seed, [seed.label], b"") for i, seed in enumerate(seeds)]
    results = {}
    # The sleeper alone under a short wall clock; the others with room for 1 s of CPU on a loaded machine.
    for wall, group in ((2, [c for c in cases if c.base.label == "hang"]), (60, [c for c in cases if c.base.label != "hang"])):
        runner = fuzzing.Runner(tmp_path, seeds, tmp_path / "data.npz", jobs=len(group), paths=_guarded_behaviour, cpu=1, wall=wall)
        results.update({r.case.base.label: r for r in runner.run(group)})
    assert {label: r.outcome for label, r in results.items()} == expected
    assert results["crash"].error_type == "KeyError" and "test_fuzz.py" in results["crash"].where
    assert results["cpu"].error_type == "SIGXCPU" and results["segv"].error_type == "SIGSEGV"
    assert results["memory"].error_type == "MemoryError"
    assert "written-into-cwd.bin" in results["stray"].message and "nnzip-" in results["temp"].message
