"""The per-blob coder choice (``nnzip.stages.policy``): cheap tests first, full trials only where close.

* the choice made with the skip tests equals, or stays within :data:`CHOICE_TOLERANCE` of, the
  choice made by running every coder in full, on a corpus of weight-like blobs (byte planes,
  bit-packed codes, masks, runs, periodic and half-random data);
* the order-0 test of LZW (:func:`policy.lzw_cannot_win`) never skips LZW where it would win;
* the shared counts (``BlobStats``, ``used_counts``, ``halve_used``) equal the plain histograms;
* the unrolled byte-plane kernels equal the general ones (words with their top bits set
  included: numba widens unsigned shifts, which once indexed past a table);
* every choice round-trips, and a chunked part's bytes are the same for any ``--jobs``.

No timed assertion: the speed is measured by ``benchmarks/run.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from nnzip import cli
from nnzip.stages import _huffman_kernels as kernels
from nnzip.stages import arith, get_stage, huffman, lzw, policy
from nnzip.stages.base import BytesSpec
from nnzip.stages.entropy import entropy_bound, symbol_counts

from .test_coder_kernels import choice_corpus

#: Largest ratio of the chosen size to the best full trial's, on the corpus.
CHOICE_TOLERANCE = 1.02


def _float_planes(rng: np.random.Generator, n: int, scale: float = 0.05) -> list[bytes]:
    """The four byte planes of rotated float32 normals, as ``byteplanes`` writes them."""
    words = (rng.standard_normal(n) * scale).astype(np.float32).view(np.uint32)
    rotated = (words << np.uint32(1)) | (words >> np.uint32(31))
    return [((rotated >> np.uint32(8 * j)) & np.uint32(255)).astype(np.uint8).tobytes() for j in range(4)]


def corpus() -> list[bytes]:
    """Blobs of every kind the choice meets, small and large."""
    rng = np.random.default_rng(5)
    blobs = list(choice_corpus())
    blobs += _float_planes(rng, 150_000) + _float_planes(rng, 384) + _float_planes(rng, 40_000, 1.0)
    exponent = np.frombuffer(_float_planes(rng, 300_000)[3], dtype=np.uint8)
    blobs.append(np.packbits(np.unpackbits((exponent & 127)[:, None], axis=1)[:, 1:].reshape(-1)).tobytes())  # 7-bit packed
    blobs.append(bytes(200_000))
    blobs.append(bytes(rng.integers(0, 2, 70_000, dtype=np.uint8) * 255))
    blobs.append(b"abc" * 30_000)
    return blobs


def _full_choice(data: bytes) -> int:
    """The size the choice would have with every coder run in full (the arith rules kept as they are)."""
    sizes = [len(data)]
    coded = huffman.encode_below(data, len(data) + 1)
    if coded is not None:
        sizes.append(len(coded[0]))
    if data:
        sizes.append(lzw.lzw_size(data))
    best = min(sizes)
    limit = best if len(data) <= policy.ARITH_EXACT_BYTES else int(best * (1 - policy.ARITH_MIN_GAIN))
    coded = arith.encode_below(data, limit) if data and (len(data) <= policy.ARITH_EXACT_BYTES or policy.arith_may_pay(data, best)) else None
    if coded is not None and policy.arith_cost_ok(len(data), coded):
        best = min(best, len(coded[0]))
    return best


@pytest.fixture(scope="module")
def blobs() -> list[bytes]:
    return corpus()


def test_the_choice_is_within_tolerance_of_full_trials_and_round_trips(blobs):
    for data in blobs:
        stage_id, stream, config = policy.best_bytes_stage(data)
        full = _full_choice(data)
        assert len(stream) <= CHOICE_TOLERANCE * full, (len(data), stage_id, len(stream), full)
        if len(data) <= policy.LZW_FULL_TRIAL_BYTES:
            assert len(stream) == full  # every coder runs on a small blob: exactly the 1.0 rule
        assert len(stream) <= len(data)
        if stage_id is None:
            assert stream == data and config == {}
        else:
            assert get_stage(stage_id).decode(stream, BytesSpec(len(data)), config) == data


def test_lzw_wins_where_it_wins_by_far(blobs):
    """Where LZW beats every other coder by more than the tolerance, the skip tests let it run."""
    for data in blobs:
        others = min(len(data), len((huffman.encode_below(data, len(data) + 1) or (data,))[0]))
        if data and lzw.lzw_size(data) * CHOICE_TOLERANCE < others:
            assert policy.best_bytes_stage(data, ("huffman", "lzw"))[0] == "lzw", len(data)


def test_the_order0_test_never_skips_a_winning_lzw(blobs):
    for data in blobs:
        if len(data) <= policy.LZW_FULL_TRIAL_BYTES:
            continue
        stats = policy.BlobStats(data)
        coded = policy.BYTES_CODERS["huffman"](stats, len(data))
        best = len(data)
        if coded is not None:
            best, stats.width = len(coded[0]), coded[1]["symbol_bits"]
        if policy.lzw_cannot_win(stats, best):
            assert lzw.lzw_size(data) >= best, len(data)


def test_the_order0_test_skips_noise_and_exponent_planes_and_keeps_repeats():
    rng = np.random.default_rng(9)
    planes = _float_planes(rng, 200_000)
    for plane in (planes[0], planes[3]):  # mantissa noise, skewed exponents
        stats = policy.BlobStats(plane)
        best = min(len(plane), len((huffman.encode_below(plane, len(plane) + 1) or (plane,))[0]))
        assert policy.lzw_cannot_win(stats, best)
    periodic = np.tile(rng.integers(0, 256, 3000, dtype=np.uint8), 100).tobytes()
    stats = policy.BlobStats(periodic)
    assert stats.dependence(8) > 0.2
    assert not policy.lzw_cannot_win(stats, len(periodic))
    sparse = np.packbits(rng.random(2_000_000) < 0.002).tobytes()  # Huffman's one-bit floor: far above the bound
    stats = policy.BlobStats(sparse)
    assert not policy.lzw_cannot_win(stats, len(huffman.encode_below(sparse, len(sparse))[0]))


def test_dependence_is_near_zero_on_noise():
    noise = np.random.default_rng(3).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    assert abs(policy.BlobStats(noise).dependence(8)) < 0.01  # corrected: the plain estimate says ~0.03


def test_blob_stats_bound_is_the_order0_bound():
    data = np.random.default_rng(4).geometric(0.3, 50_000).astype(np.uint8).tobytes()
    stats = policy.BlobStats(data)
    for width in (5, 8, 12, 16):
        assert stats.order0_bytes(width) == entropy_bound(symbol_counts(data, width)) / 8


@pytest.mark.parametrize("width", [1, 3, 5, 7, 8, 10, 12, 13, 16])
@pytest.mark.parametrize("n", [0, 1, 3, 48, 384, 5000, 70_000])
def test_used_counts_are_the_histogram_nonzeros(width, n):
    data = np.random.default_rng(n + width).geometric(0.05, n).astype(np.uint8)
    count = 8 * n // width
    table = kernels.histogram(data, width, count, 1 << width)
    symbols, counts = kernels.used_counts(data, width, count)
    np.testing.assert_array_equal(symbols, np.flatnonzero(table))
    np.testing.assert_array_equal(counts, table[table > 0])
    if width <= 8 and n:
        wide = kernels.used_counts(data, 2 * width, 8 * n // (2 * width))
        last = huffman._read_bits(data.tobytes(), (count - 1) * width, width) if count % 2 else -1
        halved = kernels.halve_used(wide[0], wide[1], width, last)
        np.testing.assert_array_equal(halved[0], symbols)
        np.testing.assert_array_equal(halved[1], counts)


@pytest.mark.parametrize("width", [5, 8, 10, 16])
@pytest.mark.parametrize("n", [1, 7, 384, 20_000])
def test_plan_size_is_the_written_size(width, n):
    data = np.random.default_rng(n).geometric(0.1, n).astype(np.uint8).tobytes()
    plan = huffman._Plan(data, width)
    if plan.possible:
        stream = huffman._write(plan)
        assert len(stream) == plan.size
        assert huffman.Huffman(width).decode(stream, BytesSpec(n)) == data


@pytest.mark.parametrize("rotate", [False, True])
def test_unrolled_plane_kernels_equal_the_general_ones(rotate):
    rng = np.random.default_rng(6)
    words = rng.integers(0, 2**32, 5001, dtype=np.uint32)
    words[:8] = [0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 1, 0, 0xFF000000, 0x00FFFFFF, 0x80000001]  # top bits set
    general, unrolled = np.zeros((4, words.size), np.uint8), np.zeros((4, words.size), np.uint8)
    kernels.split_planes(words.view(np.uint8), 4, rotate, general)
    kernels.split_planes4(words, rotate, unrolled)
    np.testing.assert_array_equal(general, unrolled)
    halves = words.view("<u2")
    general, unrolled = np.zeros((2, halves.size), np.uint8), np.zeros((2, halves.size), np.uint8)
    kernels.split_planes(halves.view(np.uint8), 2, rotate, general)
    kernels.split_planes2(halves, rotate, unrolled)
    np.testing.assert_array_equal(general, unrolled)


def test_unrolled_histograms_equal_the_general_ones():
    words = np.random.default_rng(8).integers(0, 2**32, 7777, dtype=np.uint32)
    words[:3] = [0xFFFFFFFF, 0x80000000, 0xFF800000]
    split, rotated = kernels.split_and_rotated_histograms(words.view(np.uint8), 4)
    split4, rotated4 = kernels.split_and_rotated_histograms4(words)
    np.testing.assert_array_equal(split, split4)
    np.testing.assert_array_equal(rotated, rotated4)
    assert rotated4.sum() == 4 * words.size


def test_every_bytes_stage_has_one_coder_entry():
    assert set(policy.BYTES_CODERS) == set(policy.BYTES_STAGES)
    data = bytes(range(256)) * 64
    stats = policy.BlobStats(data)
    for stage_id in policy.BYTES_STAGES:
        coded = policy.BYTES_CODERS[stage_id](stats, len(data) + 10_000)
        if coded is not None:
            assert get_stage(stage_id).decode(coded[0], BytesSpec(len(data)), coded[1]) == data


def test_chunked_parts_are_byte_identical_for_any_jobs(tmp_path):
    """A tensor over the 4 MiB chunk size (its planes chunked) compresses to the same bytes on 1 or 2 threads."""
    rng = np.random.default_rng(12)
    source = tmp_path / "m.safetensors"
    save_file({"big": (rng.standard_normal(1_200_000) * 0.02).astype(np.float32).reshape(1200, 1000),
               "wide": (rng.standard_normal(5_000_000) * 0.02).astype(np.float32),
               "bias": rng.standard_normal(384).astype(np.float32)}, str(source))
    outputs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"j{jobs}.nnz"
        assert cli.main(["compress", str(source), "-o", str(out), "-q", "--jobs", jobs]) == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    back = tmp_path / "back.safetensors"
    assert cli.main(["decompress", str(tmp_path / "j1.nnz"), "-o", str(back), "-q", "--jobs", "2"]) == 0
    assert back.read_bytes() == source.read_bytes()
