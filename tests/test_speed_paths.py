"""The fast paths of the lossless coders decide and decode exactly as the plain ones do.

* ``huffman``: byte streams decode several symbols a lookup (``decode_bytes``); it must
  give the same output, status, symbol count and bits read as the one-symbol ``decode``
  on every stream, valid or corrupt;
* the width search takes narrower widths' counts from their double's histogram and sizes
  code-length tables without building them: the same counts, sizes and streams;
* ``lzw_loses`` (windows coded only as far as needed) answers as the full estimate does;
  chunked LZW trials with limits pick what full trials pick;
* a lossless chain's reconstruction is its input itself (no decode pass), error 0.

No timing is asserted: speed is measured by ``benchmarks/run.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from nnzip import api, cli, pipeline
from nnzip.container import open_container
from nnzip.errors import FormatError
from nnzip.stages import _huffman_kernels as kernels
from nnzip.stages import huffman
from nnzip.stages.base import BytesSpec
from nnzip.stages import policy
from nnzip.stages.entropy import canonical_codes, reverse_bits
from nnzip.stages import lzw
from nnzip.stages.policy import LZW_RECHECK_BYTES, LZW_RECHECK_RATIO, LZW_SKIP_RATIO, lzw_estimate, lzw_loses
from nnzip.stages.lzw import LZW, encode_below as lzw_below
from . import reference as oracle


def _skewed(rng: np.random.Generator, n: int, p: float = 0.35) -> bytes:
    """Bytes with a geometric distribution: many 1-3 bit codes, so lookups hold several symbols."""
    return (rng.geometric(p, n) % 256).astype(np.uint8).tobytes()


def _exponent_plane(rng: np.random.Generator, n: int) -> bytes:
    """The top byte of rotated float32 normals: a weight file's exponent plane."""
    words = (rng.standard_normal(n) * 0.05).astype(np.float32).view(np.uint32)
    return (((words << 1) | (words >> 31)) >> 24).astype(np.uint8).tobytes()


def _both_decoders(stream: bytes, size: int) -> tuple[tuple, tuple]:
    """(status, count, bits, output) of the one-symbol and the several-symbol kernels on an 8-bit stream."""
    lengths, offset = huffman._read_table(stream, 8)
    payload = np.frombuffer(stream[offset:], dtype=np.uint8)
    bits = int(lengths.max())
    first, second, first_bits = kernels.decode_table(reverse_bits(canonical_codes(lengths), lengths), lengths, bits)
    end = lengths.size - 1
    plain = np.zeros(size, dtype=np.uint8)
    fast = np.zeros(size, dtype=np.uint8)
    a = kernels.decode(payload, first, second, first_bits, bits, 8, size, end, 0, 0, plain)
    symbols, meta = kernels.multi_table(first, first_bits, end)
    b = kernels.decode_bytes(payload, first, second, first_bits, bits, symbols, meta, size, end, fast)
    status = int(a[0])
    done = a[1] if status != kernels.OK else size
    return (status, int(a[1]), int(a[2]), plain[:done].tobytes()), (int(b[0]), int(b[1]), int(b[2]), fast[:done].tobytes())


@pytest.mark.parametrize("kind", ["skewed", "exponent", "uniform", "two", "long"])
@pytest.mark.parametrize("n", [4, 5, 7, 64, 1001, 100_000])
def test_multi_symbol_decode_equals_one_symbol_decode(kind, n):
    rng = np.random.default_rng(n)
    if kind == "skewed":
        data = _skewed(rng, n)
    elif kind == "exponent":
        data = _exponent_plane(rng, n)
    elif kind == "uniform":
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    elif kind == "two":
        data = rng.integers(0, 2, n, dtype=np.uint8).tobytes()
    else:  # a few very rare symbols: 15-bit codes, the second-level table
        data = bytearray(_skewed(rng, n, 0.6))
        data[:: 997] = rng.integers(100, 256, len(data[:: 997]), dtype=np.uint8).tobytes()
        data = bytes(data)
    stream, config = huffman.Huffman.encode(data, BytesSpec(n), {"symbol_bits": 8})
    plain, fast = _both_decoders(stream, n)
    assert plain == fast and plain[0] == kernels.OK and plain[3] == data
    assert huffman.Huffman.decode(stream, BytesSpec(n), config) == data


def test_multi_symbol_decode_agrees_on_corrupt_streams():
    """Truncated payloads, flipped bits, a wrong declared size: the same status, count and bits."""
    rng = np.random.default_rng(3)
    data = _skewed(rng, 5000)
    stream, _ = huffman.Huffman.encode(data, BytesSpec(len(data)), {"symbol_bits": 8})
    table_end = huffman._read_table(stream, 8)[1]
    cases = [stream[:-1], stream[:-7], stream[: table_end + 3]]
    for _ in range(60):
        flipped = bytearray(stream)
        at = int(rng.integers(table_end, len(stream)))
        flipped[at] ^= 1 << int(rng.integers(0, 8))
        cases.append(bytes(flipped))
    statuses = set()
    for case in cases:
        for size in (len(data), len(data) - 3, len(data) + 5):
            plain, fast = _both_decoders(case, size)
            assert plain == fast
            statuses.add(plain[0])
    assert {kernels.OK, kernels.TRUNCATED, kernels.END_EARLY, kernels.TOO_MANY} <= statuses


def test_multi_symbol_errors_are_the_stage_errors():
    data = _skewed(np.random.default_rng(8), 3000)
    stream, config = huffman.Huffman.encode(data, BytesSpec(len(data)), {"symbol_bits": 8})
    with pytest.raises(FormatError, match="END after"):
        huffman.Huffman.decode(stream, BytesSpec(len(data) + 40), config)
    with pytest.raises(FormatError, match="more than the declared"):
        huffman.Huffman.decode(stream, BytesSpec(len(data) - 40), config)


@pytest.mark.parametrize("width", [5, 6, 7, 8])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 9, 63, 1000, 4097])
def test_halved_counts_equal_direct_counts(width, n):
    data = _skewed(np.random.default_rng(n + width), n, 0.1)
    wide = huffman._histogram(data, 2 * width, 8 * n // (2 * width), 1 << (2 * width))
    direct = huffman._histogram(data, width, 8 * n // width, 1 << width)
    np.testing.assert_array_equal(huffman._halve(wide, width, data, n), direct)
    counter = huffman._Counter(data)
    counter.counts(2 * width, n)
    np.testing.assert_array_equal(counter.counts(width, n), direct)


@pytest.mark.parametrize("width", [1, 3, 5, 8, 10, 12, 16])
@pytest.mark.parametrize("kind", ["skewed", "uniform", "few"])
def test_table_size_is_the_table_length(width, kind):
    rng = np.random.default_rng(width)
    data = {"skewed": _skewed(rng, 20_000), "uniform": rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes(),
            "few": bytes([0, 7, 200]) * 5000}[kind]
    plan = huffman._Plan(data, width)
    if plan.possible:
        assert len(plan.table) + len(plan.tail) + (plan.payload_bits + 7) // 8 == plan.size
        assert len(huffman._write(plan)) == plan.size


@pytest.mark.parametrize("kind", ["uniform", "skewed", "text", "zeros", "exponent"])
def test_lzw_loses_equals_the_full_estimate(kind):
    rng = np.random.default_rng(11)
    n = 600_000
    data = {"uniform": rng.integers(0, 256, n, dtype=np.uint8).tobytes(), "skewed": _skewed(rng, n),
            "text": (b"the quick brown fox jumps over the lazy dog " * (n // 44 + 1))[:n],
            "zeros": bytes(n), "exponent": _exponent_plane(rng, n)}[kind]
    estimate = lzw_estimate(data)
    middle = (n - LZW_RECHECK_BYTES) // 2
    recheck = lzw.lzw_size(data[middle:middle + LZW_RECHECK_BYTES]) / LZW_RECHECK_BYTES * n  # the wider window
    for best in (1, 1000, int(estimate / LZW_SKIP_RATIO) - 1, int(estimate / LZW_SKIP_RATIO),
                 int(estimate / LZW_SKIP_RATIO) + 1, int(estimate / LZW_RECHECK_RATIO), int(estimate / LZW_RECHECK_RATIO) + 1, n // 3, n):
        in_band = estimate < LZW_RECHECK_RATIO * best  # between the two ratios the wider window decides
        assert lzw_loses(data, best) == (estimate >= LZW_SKIP_RATIO * best and (not in_band or recheck >= LZW_SKIP_RATIO * best))


def _full_lzw_chunks(data: bytes) -> list[bytes]:
    pieces = [data[s:e] for s, e in pipeline.chunk_bounds(len(data), pipeline.CHUNK_SIZE)]
    return [LZW.encode(p, BytesSpec(len(p)), {})[0] for p in pieces]


@pytest.mark.parametrize("kind", ["text", "uniform", "runs"])
def test_chunked_lzw_trial_with_limits_chooses_as_full_trials(monkeypatch, kind):
    monkeypatch.setattr(pipeline, "CHUNK_SIZE", 300_000)
    rng = np.random.default_rng(2)
    n = 1_000_000
    data = {"text": bytes(rng.choice(np.frombuffer(b"abcdefgh  ", np.uint8), n)),
            "uniform": rng.integers(0, 256, n, dtype=np.uint8).tobytes(),
            "runs": np.repeat(rng.integers(0, 256, n // 50, dtype=np.uint8), 50).tobytes()}[kind]
    stage_id, blobs, config = policy.best_chunked(data, pipeline.CHUNK_SIZE)
    full = _full_lzw_chunks(data)
    if stage_id == "lzw":
        assert blobs == full
    else:
        assert sum(map(len, blobs)) <= sum(map(len, full))
    for limit in (1, sum(map(len, full)), sum(map(len, full)) + 1):
        chunks = [data[s:e] for s, e in pipeline.chunk_bounds(n, pipeline.CHUNK_SIZE)]
        got = policy.lzw_chunks(chunks, limit, None, lzw_below)
        assert (got is not None) == (sum(map(len, full)) < limit)
        if got is not None:
            assert got[0] == full


def test_lossless_reconstruction_is_the_input():
    array = np.random.default_rng(0).standard_normal((64, 33)).astype(np.float32)
    item = pipeline.encode_tensor("w", array, pipeline.TensorPlan("byteplanes", {}))
    assert np.shares_memory(item.reconstruction, array) and item.reconstruction.shape == array.shape
    assert api.relative_error(array, item.reconstruction) == 0.0
    lossy = pipeline.encode_tensor("w", array, pipeline.TensorPlan("dense", {}, [("uniform", {"step": 0.1})]))
    assert not np.shares_memory(lossy.reconstruction, array) and api.relative_error(array, lossy.reconstruction) > 0


def test_exponent_heavy_model_round_trips_through_the_cli(tmp_path):
    """A file whose byte planes take the several-symbol decoder, compressed and decompressed by the CLI."""
    rng = np.random.default_rng(6)
    tensors = {f"w{i}": (rng.standard_normal((300, 128)) * 0.02).astype(np.float32) for i in range(3)}
    tensors["nan"] = np.array([np.nan, 1.0, -0.0, np.inf] * 50, dtype=np.float32)
    source = tmp_path / "m.safetensors"
    save_file(tensors, str(source))
    out, back = tmp_path / "m.nnz", tmp_path / "back.safetensors"
    assert cli.main(["compress", str(source), "-o", str(out), "-q"]) == 0
    assert cli.main(["decompress", str(out), "-o", str(back), "-q"]) == 0
    assert back.read_bytes() == source.read_bytes()
    with open_container(out) as container:
        chains = [c["name"] for t in container.header["tensors"] for p in t["parts"] for c in p["codecs"]]
    assert "huffman" in chains


@pytest.mark.parametrize("dtype, mode", [(d, "split") for d in ("<f2", "<f4", "<f8", "<u2", "<i4", "|u1")]
                         + [(d, "rotate") for d in ("<f2", "<f4", "<f8")])  # rotate: float tensors only
def test_byteplanes_compiled_split_and_join_equal_numpy(dtype, mode):
    """The compiled split (and its counts for ``auto``) and join equal the numpy definitions."""
    from nnzip.stages import byteplanes
    from nnzip.stages.base import ArraySpec

    rng = np.random.default_rng(1)
    array = (rng.standard_normal((37, 5)) * 3).astype(dtype)
    words = array.view(byteplanes._UINT[array.dtype.itemsize])
    reference = oracle.rotate_words(words, left=True) if mode == "rotate" else words
    expected = [np.ascontiguousarray(reference).view(np.uint8).reshape(words.shape + (-1,))[..., i] for i in range(array.dtype.itemsize)]
    got = byteplanes._split(words, mode == "rotate")
    assert len(got) == len(expected) and all(np.array_equal(a, b) for a, b in zip(got, expected))
    spec = ArraySpec.of(array)
    read_only = {f"plane{i}": np.frombuffer(p.tobytes(), np.uint8).reshape(p.shape) for i, p in enumerate(got)}
    mixed = {**read_only, "plane0": got[0].copy()}
    for parts in (dict(enumerate(got)), read_only, mixed):
        parts = {f"plane{i}": p for i, p in enumerate(parts.values())}
        rebuilt = byteplanes.BytePlanes.decode(parts, spec, {"mode": mode})
        assert rebuilt.dtype == array.dtype and rebuilt.tobytes() == array.tobytes()
    if array.dtype.str in byteplanes.FLOAT_DTYPES:
        split = oracle.words_estimate(words)
        rotated = oracle.words_estimate(oracle.rotate_words(words, left=True))
        assert byteplanes._auto_mode(words, None, spec) == ("split" if split < rotated else "rotate")
