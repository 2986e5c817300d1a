"""Seeded fuzzing of real .nnz files: every mutation is rejected with an NnzipError, never another exception.

Header values are replaced by values of the wrong type or range, and blob bytes are
flipped (with the container rebuilt so CRCs and the blob table stay valid, so the
decoders themselves are exercised, not only the checksums).
"""

from __future__ import annotations

import copy
import random

import pytest

from nnz_tools import blobs_of, rebuild, split_file
from nnzip import api
from nnzip.errors import NnzipError
from nnzip.plan import PlanRules, Settings
from samples import SAMPLES

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
