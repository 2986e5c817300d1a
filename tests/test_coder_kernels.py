"""The compiled coder kernels (huffman, lzw) against straightforward references, and the coder choice rule."""

import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from nnzip.errors import FormatError
from nnzip.stages import BytesSpec, entropy, get_stage, huffman, lzw, policy
from nnzip.stages.entropy import canonical_codes, reverse_bits
from . import reference as oracle

Huffman, LZW = get_stage("huffman"), get_stage("lzw")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- pure-python / numpy references ---------------------------------------------------------


def bits_msb(data: bytes) -> str:
    return "".join(f"{b:08b}" for b in data)


def reference_huffman(data: bytes, width: int) -> bytes:
    """The spec's stream built with strings of '0'/'1' (code lengths from the stage's own package-merge)."""
    if not data:
        return b""
    stream = bits_msb(data)
    count = len(stream) // width
    symbols = [int(stream[j * width : (j + 1) * width], 2) for j in range(count)]
    counts = np.bincount(symbols, minlength=(1 << width) + 1)
    counts[-1] = 1
    used = np.flatnonzero(counts)
    lengths = np.zeros(counts.size, dtype=np.int64)
    lengths[used] = entropy.limited_code_lengths(counts[used], 15)
    codes = canonical_codes(lengths)
    rest = stream[count * width :]
    tail = (rest + "0" * (-len(rest) % 8)) if rest else ""
    payload = "".join(format(int(codes[s]), f"0{int(lengths[s])}b") for s in symbols + [1 << width])
    payload += "0" * (-len(payload) % 8)
    packed = bytes(int(payload[i : i + 8][::-1], 2) for i in range(0, len(payload), 8))  # LSB-first
    tail_bytes = bytes(int(tail[i : i + 8], 2) for i in range(0, len(tail), 8))
    return huffman._table_bytes(lengths) + tail_bytes + packed


def reference_lzw(data: bytes, max_bits: int) -> bytes:
    """The spec's greedy LZW with a plain dict, codes written with a Python big integer."""
    if not data:
        return b""
    generation, table, codes, match = (1 << max_bits) - 255, {}, [], data[:1]
    for byte in data[1:]:
        candidate = match + bytes([byte])
        if len(candidate) == 1 or candidate in table:
            match = candidate
            continue
        codes.append(match[0] if len(match) == 1 else table[match])
        i = (len(codes) - 1) % generation  # index of the code just written
        if i == generation - 1:
            table = {}
        else:
            table[candidate] = 256 + i
        match = bytes([byte])
    codes.append(match[0] if len(match) == 1 else table[match])
    value, position = 0, 0
    for k, code in enumerate(codes):
        width = min(max_bits, max(9, (255 + k % generation).bit_length()))
        value |= code << position
        position += width
    return value.to_bytes((position + 7) // 8, "little")


def reference_package_merge(freqs: np.ndarray, limit: int) -> np.ndarray:
    """The 1.0 numpy package-merge (stable argsorts per level), which the compiled loop must equal."""
    n = freqs.size
    order = np.argsort(freqs, kind="stable")
    leaves = freqs[order]
    weights, leaf_flags = leaves, [np.ones(n, dtype=bool)]
    for _ in range(limit - 1):
        pairs = weights.size // 2
        packages = weights[0 : 2 * pairs : 2] + weights[1 : 2 * pairs : 2]
        merged = np.concatenate([leaves, packages])
        sort = np.argsort(merged, kind="stable")
        weights = merged[sort]
        leaf_flags.append(sort < n)
    sorted_lengths, chosen = np.zeros(n, dtype=np.int64), 2 * n - 2
    for flags in reversed(leaf_flags):
        leaves_chosen = int(np.count_nonzero(flags[:chosen]))
        sorted_lengths[:leaves_chosen] += 1
        chosen = 2 * (chosen - leaves_chosen)
        if chosen == 0:
            break
    lengths = np.empty(n, dtype=np.int64)
    lengths[order] = sorted_lengths
    return lengths


def inflate_symbols(payload: bytes, lengths: np.ndarray, count: int) -> bytes:
    """Decode a w <= 8 payload with zlib: it is the body of a DEFLATE block of literals (spec notes)."""
    literal = np.zeros(257, dtype=np.int64)
    literal[: lengths.size - 1] = lengths[:-1]
    literal[256] = lengths[-1]
    cl_order = (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15)
    cl_lengths = np.array([1, 4] + [5] * 14 + [0, 0, 0], dtype=np.int64)
    cl_codes = reverse_bits(canonical_codes(cl_lengths), cl_lengths)
    bits = 3 + 5 + 5 + 4 + 3 * 19 + int(cl_lengths[literal].sum()) + 1
    distances = 1 + (-bits) % 8
    values = [1, 2, 0, distances - 1, 15] + [int(cl_lengths[s]) for s in cl_order]
    widths = [1, 2, 5, 5, 4] + [3] * 19
    symbols = np.concatenate([literal, np.zeros(distances, dtype=np.int64)])
    header = entropy.pack_lsb(np.concatenate([values, cl_codes[symbols]]), np.concatenate([widths, cl_lengths[symbols]]))
    return zlib.decompressobj(-15).decompress(header + payload, count)


def samples(seed: int) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {
        "random": rng.integers(0, 256, 3001, dtype=np.uint8).tobytes(),
        "skewed": np.clip(rng.standard_normal(4003) * 5 + 128, 0, 255).astype(np.uint8).tobytes(),
        "sparse": np.packbits(rng.random(20000) < 0.03).tobytes(),
        "run": b"\x5a" * 777,
        "one": b"\x81",
    }


# --- huffman ----------------------------------------------------------------------------------


@pytest.mark.parametrize("width", range(1, 17))
def test_huffman_every_width_matches_the_reference_and_round_trips(width):
    for name, data in samples(width).items():
        if name == "random" and width >= 15:
            data = data[:600]  # keep the string reference quick
        stream, config = Huffman.encode(data, BytesSpec(len(data)), {"symbol_bits": width})
        assert stream == reference_huffman(data, width), name
        assert Huffman.decode(stream, BytesSpec(len(data)), config) == data


@pytest.mark.parametrize("width", [1, 3, 5, 6, 7, 8])
def test_huffman_decoder_agrees_with_zlib(width):
    for data in samples(10 + width).values():
        stream, _ = Huffman.encode(data, BytesSpec(len(data)), {"symbol_bits": width})
        lengths, offset = huffman._read_table(stream, width)
        count, leftover = divmod(8 * len(data), width)
        _, offset = huffman._read_tail(stream, offset, leftover)
        via_zlib = np.frombuffer(inflate_symbols(stream[offset:], lengths, count), dtype=np.uint8)
        assert (via_zlib == oracle.msb_symbols(data, width)).all()


def test_huffman_long_codes_use_the_whole_table():
    counts = [1] + [2**k for k in range(16)]  # natural Huffman depth 17: package-merge limits it to 15
    symbols = np.repeat(np.arange(17, dtype=np.uint8), counts)
    data = np.random.default_rng(0).permutation(symbols).tobytes()
    stream, config = Huffman.encode(data, BytesSpec(len(data)), {"symbol_bits": 8})
    assert huffman._read_table(stream, 8)[0].max() == 15
    assert stream == reference_huffman(data, 8)
    assert Huffman.decode(stream, BytesSpec(len(data)), config) == data


@pytest.mark.parametrize("width", [2, 8, 12, 16])
def test_huffman_malformed_streams_are_rejected_by_the_right_rule(width):
    data = samples(3)["skewed"]
    stream, config = Huffman.encode(data, BytesSpec(len(data)), {"symbol_bits": width})

    def decode(s: bytes, size: int = len(data)) -> bytes:
        return Huffman.decode(s, BytesSpec(size), config)

    with pytest.raises(FormatError, match="truncated"):  # rule 10
        decode(stream[:-2])
    with pytest.raises(FormatError, match="more than the declared"):  # rule 12
        decode(stream, len(data) - width)  # whole symbols fewer: the leftover bits stay the same
    with pytest.raises(FormatError, match="trailing garbage"):  # rule 13
        decode(stream + b"\x00")
    with pytest.raises(FormatError, match="END after|truncated"):  # rule 11 (or 10 if the cut lands mid-code)
        decode(stream, len(data) + width)


def test_huffman_lone_end_code_and_unmatched_bits():
    # w = 8, M = 0 is impossible for N > 0, so use w = 16, N = 1: no symbol, 8 leftover bits.
    table = huffman._table_bytes(np.array([0] * 65536 + [1]))
    good = table + b"\x07" + b"\x00"  # leftover byte, then END's code '0'
    assert Huffman.decode(good, BytesSpec(1), {"symbol_bits": 16}) == b"\x07"
    with pytest.raises(FormatError, match="truncated"):  # bit '1' matches no code: END never comes
        Huffman.decode(table + b"\x07" + b"\x01", BytesSpec(1), {"symbol_bits": 16})
    with pytest.raises(FormatError, match="padding bits after END"):
        Huffman.decode(table + b"\x07" + b"\x02", BytesSpec(1), {"symbol_bits": 16})


@pytest.mark.parametrize("width", range(1, 17))
def test_histogram_kernel_counts_msb_fields(width):
    from nnzip.stages import _huffman_kernels

    for data in samples(20 + width).values():
        count = 8 * len(data) // width
        counts = _huffman_kernels.histogram(np.frombuffer(data, dtype=np.uint8), width, count, 1 << width)
        assert (counts == np.bincount(oracle.msb_symbols(data, width), minlength=1 << width)).all()


def test_compiled_package_merge_equals_the_numpy_one():
    rng = np.random.default_rng(5)
    for trial in range(300):
        n = int(rng.integers(2, 600))
        limit = int(rng.integers(max(1, int(np.ceil(np.log2(n)))), 16))
        freqs = rng.integers(1, [3, 50, 10**6][trial % 3], n) ** int(rng.integers(1, 3))  # ties and heavy skew
        assert (entropy.limited_code_lengths(freqs, limit) == reference_package_merge(freqs, limit)).all()


# --- lzw --------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_bits", range(9, 17))
def test_lzw_every_code_width_matches_the_reference_and_round_trips(max_bits):
    rng = np.random.default_rng(max_bits)
    cases = [rng.integers(0, 3, 12000, dtype=np.uint8).tobytes(),  # several generations at small max_bits
             rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), b"abababababa", b"\x00" * 5000, b"x"]
    for data in cases:
        stream, config = LZW.encode(data, BytesSpec(len(data)), {"max_bits": max_bits})
        assert stream == reference_lzw(data, max_bits)
        assert LZW.decode(stream, BytesSpec(len(data)), config) == data


def test_lzw_encode_below_is_exact_at_the_limit():
    data = np.random.default_rng(7).integers(0, 4, 50000, dtype=np.uint8).tobytes()
    size = len(reference_lzw(data, 16))
    assert lzw.encode_below(data, size) is None
    assert len(lzw.encode_below(data, size + 1)[0]) == size


def test_lzw_malformed_streams_are_rejected_by_the_right_rule():
    data = np.random.default_rng(8).integers(0, 3, 20000, dtype=np.uint8).tobytes()
    stream = LZW.encode(data, BytesSpec(len(data)), {"max_bits": 10})[0]
    config = {"max_bits": 10}
    with pytest.raises(FormatError, match="exceeds the declared"):  # rule 7
        LZW.decode(stream, BytesSpec(len(data) - 1), config)
    with pytest.raises(FormatError, match="truncated"):  # rule 8
        LZW.decode(stream, BytesSpec(len(data) + 1), config)
    bad = oracle.lzw_pack([97, 98, 300], 10)  # 300 > 255 + 2
    with pytest.raises(FormatError, match="code 300 at position 2"):  # rule 6, found before the size check
        LZW.decode(bad, BytesSpec(2), config)


# --- the choice rule --------------------------------------------------------------------------


def choice_corpus() -> list[bytes]:
    rng = np.random.default_rng(11)
    weights = rng.standard_normal(1_200_000).astype(np.float32)
    planes = weights.view(np.uint8).reshape(-1, 4).T
    blobs = [plane.tobytes() for plane in planes]
    for bits in (2, 4):
        edges = np.linspace(-3, 3, 2**bits + 1)[1:-1]
        codes = np.searchsorted(edges, weights[:600_000]).astype(np.uint8)
        blobs.append(np.packbits(np.unpackbits(codes[:, None], axis=1)[:, 8 - bits :].reshape(-1)).tobytes())
    for p in (0.1, 0.03, 0.01, 0.003, 0.001):
        blobs.append(np.packbits(rng.random(3_000_000) < p).tobytes())
    blobs.append(np.repeat(rng.integers(0, 4, 20000, dtype=np.uint8), rng.integers(1, 60, 20000)).tobytes())
    blobs.append(rng.integers(0, 256, 400_000, dtype=np.uint8).tobytes() + bytes(400_000))
    blobs.append(np.tile(rng.integers(0, 256, 3000, dtype=np.uint8), 200).tobytes())
    return blobs


#: Largest ratio the estimate-first rule may choose over the best full trial, on the corpus.
CHOICE_TOLERANCE = 1.02


def test_choice_rule_is_exact_on_small_blobs_and_close_on_large_ones():
    for data in choice_corpus() + [b"", b"abc" * 1000, samples(1)["sparse"]]:
        stage_id, stream, config = policy.best_bytes_stage(data, ("huffman", "lzw"))  # the huffman/lzw rule; arith: test_stage_arith.py
        h = huffman.encode_below(data, len(data) + 1)
        full = min(len(data), len(h[0]) if h else len(data), len(lzw._encode(data, 16, None)))
        if len(data) <= policy.LZW_FULL_TRIAL_BYTES:
            assert len(stream) == full  # every coder was tried: the 1.0 rule, exactly
        assert len(stream) <= CHOICE_TOLERANCE * full
        assert len(stream) <= len(data)
        if stage_id is not None:
            assert get_stage(stage_id).decode(stream, BytesSpec(len(data)), config) == data


def test_choice_rule_skips_lzw_on_noise():
    noise = np.random.default_rng(2).integers(0, 256, 2_000_000, dtype=np.uint8).tobytes()
    assert policy.lzw_estimate(noise) >= policy.LZW_SKIP_RATIO * len(noise)
    assert policy.best_bytes_stage(noise)[0] is None


# --- compile cache --------------------------------------------------------------------------


def test_kernels_work_without_a_writable_cache(tmp_path):
    """With no writable cache location the kernels still compile (in memory) and decode the same."""
    script = (
        "import numba.core.caching as c\n"
        "for cls in c.CacheImpl._locator_classes:\n"
        "    cls.from_function = classmethod(lambda cls, f, s: None)\n"
        "from nnzip.stages import BytesSpec, get_stage\n"
        "data = bytes(range(50)) * 40\n"
        "for name in ('huffman', 'lzw'):\n"
        "    s = get_stage(name)\n"
        "    stream, config = s.encode(data, BytesSpec(len(data)), {})\n"
        "    assert s.decode(stream, BytesSpec(len(data)), config) == data\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
