"""The ``huffman`` stage and the shared entropy helpers of ``nnzip/stages/entropy.py``."""

import itertools

import numpy as np
import pytest
from bitarray.util import canonical_huffman
from hypothesis import given, settings
from hypothesis import strategies as st

from .common import check_golden, check_roundtrip
from nnzip.errors import ConfigError, FormatError
from nnzip.stages import BytesSpec, get_stage
from nnzip.stages import huffman
from nnzip.stages.policy import BYTES_STAGES, best_bytes_stage
from nnzip.stages.entropy import (
    canonical_codes,
    entropy_bound,
    kraft_ok,
    limited_code_lengths,
    pack_lsb,
    read_lsb,
    reverse_bits,
)
from . import reference as oracle

Huffman = get_stage("huffman")


def encode(data: bytes, **params) -> tuple[bytes, dict]:
    return Huffman.encode(data, BytesSpec(len(data)), params)


def decode(stream: bytes, size: int, width: int = 8) -> bytes:
    Huffman.check_config({"symbol_bits": width}, BytesSpec(size))
    return Huffman.decode(stream, BytesSpec(size), {"symbol_bits": width})


def skewed(n: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.standard_normal(n) * 6 + 128), 0, 255).astype(np.uint8).tobytes()


def stream_with(lengths: dict[int, int], symbols: list[int], width: int = 8, tail: bytes = b"") -> bytes:
    """A hand-made stream: dense table of *lengths* ({symbol: length}, END = 2**width), then codes."""
    alphabet = (1 << width) + 1
    table = np.zeros(alphabet, dtype=np.int64)
    for s, n in lengths.items():
        table[s] = n
    codes = reverse_bits(canonical_codes(table), table)
    payload = pack_lsb(codes[symbols], table[symbols]) if symbols else b""
    return bytes([huffman.TABLE_DENSE]) + huffman._nibbles(table) + tail + payload


# --- round trips ------------------------------------------------------------------------


CASES = {
    "one-byte": b"\x07",
    "run": b"a" * 1000,
    "two-symbols": b"ab" * 7 + b"a",
    "all-bytes": bytes(range(256)) * 3,
    "random": np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    "skewed": skewed(20000),
    "sparse": (np.random.default_rng(2).random(20000) < 0.02).astype(np.uint8).tobytes(),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("width", [None, 1, 3, 6, 8, 9, 12, 16])
def test_roundtrip(name, width):
    check_roundtrip("huffman", CASES[name], {} if width is None else {"symbol_bits": width})


@pytest.mark.parametrize("width", [1, 8, 13, 16])
def test_roundtrip_empty(width):
    check_roundtrip("huffman", b"", {"symbol_bits": width})
    assert encode(b"", symbol_bits=width)[0] == b""


def test_leftover_bits_are_kept():
    data = b"\x01\x02" * 100 + b"\xff"
    stream, config = encode(data, symbol_bits=16)
    assert config == {"symbol_bits": 16}
    assert decode(stream, len(data), 16) == data
    check_roundtrip("huffman", b"\x09", {"symbol_bits": 16})  # no symbol, only the leftover byte
    for width in range(1, 17):  # every leftover length 0..15
        for n in (1, 2, 3, 7):
            check_roundtrip("huffman", bytes(range(100, 100 + n)), {"symbol_bits": width})


def test_symbols_are_msb_first_fields():
    # 0b101_110_01 0b1_000_111_0: 3-bit symbols 5, 6, 3, 0, 7 and 1 leftover bit.
    assert oracle.msb_symbols(bytes([0b10111001, 0b10001110]), 3).tolist() == [5, 6, 3, 0, 7]
    assert oracle.msb_symbols(b"\x12\x34\x56", 16).tolist() == [0x1234]
    stream, _ = encode(bytes([0b10111001, 0b10001110]), symbol_bits=3)
    assert decode(stream, 2, 3) == bytes([0b10111001, 0b10001110])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from([None, 1, 2, 5, 7, 8, 11, 16]))
def test_roundtrip_property(data, width):
    check_roundtrip("huffman", data, {} if width is None else {"symbol_bits": width})


# (The 1.0 decoders, zlib for w <= 8 and bitarray above, were replaced by one compiled
# table-driven decoder; tests/test_coder_kernels.py checks it against zlib and a reference.)


# --- invariants ---------------------------------------------------------------------------


def test_one_symbol_costs_one_bit_per_byte_and_tiny_table():
    stream, _ = encode(b"z" * 800, symbol_bits=8)
    assert len(stream) == 4 + (800 + 1 + 7) // 8  # mode, k, symbol, lengths; 1 bit per symbol + END


def test_auto_width_picks_the_shorter():
    for data in CASES.values():
        stream, config = encode(data)
        assert len(stream) <= len(encode(data, symbol_bits=8)[0])
        assert decode(stream, len(data), config["symbol_bits"]) == data
    sparse = CASES["sparse"]
    stream, config = encode(sparse)
    assert config == {"symbol_bits": 16} and len(stream) < len(encode(sparse, symbol_bits=8)[0])
    assert encode(skewed(20000))[1] == {"symbol_bits": 8}


def test_wide_symbols_need_few_enough_distinct_values():
    data = np.arange(40000, dtype=">u2").tobytes()  # 40000 distinct 16-bit symbols > 32767
    with pytest.raises(ConfigError, match="32767"):
        encode(data, symbol_bits=16)
    assert encode(data)[1]["symbol_bits"] != 16


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
def test_within_three_percent_of_index_entropy(bits):
    rng = np.random.default_rng(bits)
    weights = rng.standard_normal(400_000 // bits)
    edges = np.quantile(weights, np.linspace(0, 1, 2**bits + 1)[1:-1] ** 1.3)  # unequal populations
    codes = np.searchsorted(edges, weights).astype(np.uint8)
    packed = np.packbits(np.unpackbits(codes[:, None], axis=1)[:, 8 - bits :].reshape(-1)).tobytes()
    bound = entropy_bound(np.bincount(codes)) / 8
    assert len(encode(packed)[0]) <= 1.03 * bound


def test_max_expansion():
    assert Huffman.max_expansion({"symbol_bits": 8}) == 8
    assert Huffman.max_expansion({"symbol_bits": 16}) == 16
    for width in (1, 5, 8, 16):
        data = b"\x00" * 4001
        stream, config = encode(data, symbol_bits=width)
        assert len(data) <= len(stream) * Huffman.max_expansion(config)


def test_encoder_rejects_bad_params():
    with pytest.raises(ConfigError, match="symbol_bits"):
        encode(b"abc", symbol_bits=17)
    with pytest.raises(ConfigError, match="unknown"):
        encode(b"abc", level=3)


# --- golden bytes ---------------------------------------------------------------------------


def test_golden_abaa():
    check_golden("huffman", "abaa", b"abaa")
    assert encode(b"abaa")[0] == bytes.fromhex("01026100210262")  # the spec page's example


def test_golden_skewed8():
    data = bytes(((i * 7919) % 256) if i % 3 == 0 else (i % 5) for i in range(5000))
    check_golden("huffman", "skewed8", data, {"symbol_bits": 8})
    assert encode(data, symbol_bits=8)[0][0] == huffman.TABLE_DENSE


def test_golden_pairs16():
    data = b"\x00\x01" * 500 + b"\x02\x03" * 20 + b"\x04\x05" * 3 + b"\x07"
    check_golden("huffman", "pairs16", data, {"symbol_bits": 16})
    assert encode(data, symbol_bits=16)[0][0] == huffman.TABLE_SPARSE


def test_golden_indices3():
    data = bytes(((i * 2654435761) >> 9) % 256 & 0b11011011 for i in range(600))
    check_golden("huffman", "indices3", data, {"symbol_bits": 6})


# --- MUST-reject rules of spec/stages/huffman.md, in its order ------------------------------


@pytest.mark.parametrize("config", [{"symbol_bits": 8, "x": 1}, {"symbol_bits": 17}, {"symbol_bits": 0}, {}, {"symbol_bits": "8"}, {"symbol_bits": True}])
def test_reject_1_bad_configuration(config):
    with pytest.raises(FormatError):
        Huffman.check_config(config, BytesSpec(10))


def test_reject_2_nonempty_stream_for_empty_output():
    with pytest.raises(FormatError, match="empty output"):
        decode(b"\x00", 0)


def test_reject_3_empty_stream_or_unknown_mode():
    with pytest.raises(FormatError, match="no table"):
        decode(b"", 5)
    with pytest.raises(FormatError, match="table mode"):
        decode(b"\x02" + encode(b"hello")[0][1:], 5)


@pytest.mark.parametrize("stream", [b"\x00" + b"\x11" * 10, b"\x01\x05\x01", b"\x01\x02\x61\x00\x21"])
def test_reject_4_table_past_the_end(stream):
    with pytest.raises(FormatError, match="truncated"):
        decode(stream, 4)


def test_reject_5_nonzero_unused_nibble():
    dense = bytearray(stream_with({0: 1, 256: 1}, [0, 0, 256]))
    dense[129] |= 0x10  # the high nibble after END's length
    with pytest.raises(FormatError, match="padding nibble"):
        decode(bytes(dense), 2)
    sparse = bytearray(encode(b"abaa")[0])  # k = 2: three nibbles and one unused
    sparse[5] |= 0x30
    with pytest.raises(FormatError, match="padding nibble"):
        decode(bytes(sparse), 4)


@pytest.mark.parametrize(
    "table, message",
    [
        (b"\x81\x02", "more than"),  # k = 257 > 256
        (b"\x01\x80\x80\x80\x01", "longer than 3"),
        (b"\x01\x80\x00", "not minimally"),
        (b"\x01\x80\x02\x11", "beyond"),  # symbol 256 is END, not a data symbol
        (b"\x02\x00\x00\x10\x01", "length 0"),  # symbol 0 listed with length 0
    ],
)
def test_reject_6_bad_sparse_table(table, message):
    with pytest.raises(FormatError, match=message):
        decode(b"\x01" + table + b"\x00" * 4, 3)


def test_reject_7_end_without_code():
    with pytest.raises(FormatError, match="END"):
        decode(stream_with({0: 1, 1: 1}, [0, 1, 0]), 3)


@pytest.mark.parametrize(
    "lengths",
    [{0: 1, 1: 1, 256: 1}, {0: 2, 256: 2}, {256: 2}, {0: 15, 256: 1}],  # over, incomplete, lone 2, incomplete
)
def test_reject_8_not_a_complete_code(lengths):
    with pytest.raises(FormatError, match="Kraft"):
        decode(stream_with(lengths, []), 1)


def test_reject_9_missing_or_bad_leftover_bits():
    table = huffman._table_bytes(np.array([0] * 65536 + [1]))
    with pytest.raises(FormatError, match="leftover"):
        decode(table, 1, 16)  # 8 leftover bits, no byte for them
    stream = bytearray(encode(b"\xff\xff", symbol_bits=5)[0])  # 3 symbols, 1 leftover bit: 0b1000_0000
    table_end = len(huffman._table_bytes(huffman._read_table(bytes(stream), 5)[0]))
    assert stream[table_end] == 0x80
    stream[table_end] |= 0x01
    with pytest.raises(FormatError, match="padding bits after the leftover"):
        decode(bytes(stream), 2, 5)


@pytest.mark.parametrize("width", [6, 8, 16])
def test_reject_10_truncated(width):
    data = skewed(3000, 7)
    stream, _ = encode(data, symbol_bits=width)
    with pytest.raises(FormatError, match="truncated"):
        decode(stream[:-1], len(data), width)
    with pytest.raises(FormatError, match="truncated"):
        decode(stream[: len(stream) // 2], len(data), width)


def test_reject_10_before_allocating_a_huge_output():
    stream, _ = encode(b"ab" * 10, symbol_bits=8)
    with pytest.raises(FormatError, match="truncated"):
        decode(stream, 2**31)  # would need 2**31 bits at least: rejected without decoding


@pytest.mark.parametrize("width", [4, 8, 16])
def test_reject_11_output_shorter_than_declared(width):
    stream = stream_with({1: 1, 1 << width: 1}, [1, 1, 1, 1 << width] + [1] * 5, width)  # END, then more bits
    with pytest.raises(FormatError, match="END after 3"):
        decode(stream, width, width)  # 8 symbols declared


@pytest.mark.parametrize("width", [4, 8, 16])
def test_reject_12_output_longer_than_declared(width):
    data = skewed(2000, 3)
    stream, _ = encode(data, symbol_bits=width)
    with pytest.raises(FormatError, match="more than the declared"):
        decode(stream, len(data) - 2, width)


@pytest.mark.parametrize("width", [4, 8, 16])
def test_reject_13_trailing_garbage(width):
    data = skewed(2000, 4)
    stream, _ = encode(data, symbol_bits=width)
    with pytest.raises(FormatError, match="trailing garbage"):
        decode(stream + b"\x00", len(data), width)


@pytest.mark.parametrize("width", [4, 8, 16])
def test_reject_14_nonzero_padding_bits(width):
    end = 1 << width
    stream = bytearray(stream_with({5: 1, end: 1}, [5, 5, end], width))  # 3 bits, 5 padding bits
    stream[-1] |= 0x80
    with pytest.raises(FormatError, match="padding bits after END"):
        decode(bytes(stream), width // 4, width)  # two symbols


# --- shared helpers (entropy.py) -----------------------------------------------------------


def test_shannon_entropy():
    assert oracle.shannon_entropy(bytes(range(256)) * 4) == pytest.approx(8.0)
    assert oracle.shannon_entropy(b"aaaa") == 0.0 and oracle.shannon_entropy(b"") == 0.0
    assert oracle.shannon_entropy(b"ab" * 8, 16) == 0.0
    assert oracle.shannon_entropy(b"\xf0" * 8, 4) == pytest.approx(1.0)


def test_package_merge_equals_huffman_when_the_limit_does_not_bind():
    rng = np.random.default_rng(3)
    for n in (2, 3, 17, 256):
        freqs = rng.integers(1, 1000, n)
        lengths = limited_code_lengths(freqs, 15)
        _, count, _ = canonical_huffman({i: int(f) for i, f in enumerate(freqs)})
        reference = sum(len(c) * int(freqs[s]) for s, c in canonical_huffman({i: int(f) for i, f in enumerate(freqs)})[0].items())
        assert int(np.dot(lengths, freqs)) == reference
        assert kraft_ok(lengths, 15)


def test_package_merge_limits_and_stays_optimal():
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    lengths = limited_code_lengths(np.array(fib), 15)
    assert lengths.max() == 15 and kraft_ok(lengths, 15)
    # Exhaustive check on small cases: no length vector within the limit costs less.
    rng = np.random.default_rng(4)
    for _ in range(20):
        freqs = rng.integers(1, 50, 5) ** 3
        best = min(
            int(np.dot(choice, freqs))
            for choice in itertools.product(range(1, 4), repeat=5)
            if sum(2.0 ** -c for c in choice) <= 1
        )
        assert int(np.dot(limited_code_lengths(freqs, 3), freqs)) == best


def test_package_merge_edge_cases_and_determinism():
    assert limited_code_lengths(np.array([5]), 15).tolist() == [1]
    assert limited_code_lengths(np.array([1, 1, 1, 1]), 2).tolist() == [2, 2, 2, 2]
    with pytest.raises(ValueError):
        limited_code_lengths(np.ones(5), 2)
    freqs = np.array([3, 3, 3, 1, 1, 1, 7])
    assert limited_code_lengths(freqs, 15).tolist() == limited_code_lengths(freqs, 15).tolist()


def test_canonical_codes_follow_deflate():
    # RFC 1951 section 3.2.2 example: lengths (3, 3, 3, 3, 3, 2, 4, 4) -> codes below.
    codes = canonical_codes(np.array([3, 3, 3, 3, 3, 2, 4, 4]))
    assert codes.tolist() == [0b010, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111]


def test_pack_and_read_lsb():
    rng = np.random.default_rng(5)
    widths = rng.integers(1, 17, 5000)
    values = rng.integers(0, 1 << 16, 5000) & ((1 << widths) - 1)
    stream = pack_lsb(values, widths)
    assert len(stream) == (widths.sum() + 7) // 8
    starts = np.cumsum(widths) - widths
    assert (read_lsb(stream, starts, widths) == values).all()
    assert int.from_bytes(pack_lsb(np.array([1, 0b101]), np.array([1, 3])), "little") == 0b1011
    assert pack_lsb(np.zeros(0), np.zeros(0)) == b""


def test_best_bytes_stage_picks_the_smallest():
    assert best_bytes_stage(b"") == (None, b"", {})
    random = CASES["random"]
    assert best_bytes_stage(random) == (None, random, {})
    for data, expected in ((skewed(20000), "huffman"), (bytes(100_000), "lzw")):
        stage_id, stream, config = best_bytes_stage(data, ("huffman", "lzw"))  # arith: tests/test_stage_arith.py
        assert stage_id == expected
        assert len(stream) < len(data)
        assert get_stage(stage_id).decode(stream, BytesSpec(len(data)), config) == data


def test_best_bytes_stage_ties_go_to_the_simpler(monkeypatch):
    data = b"0123456789"
    monkeypatch.setattr(huffman, "encode_below", lambda d, limit, *shared: (b"h" * 10, {"symbol_bits": 8}))
    assert best_bytes_stage(data)[0] is None  # huffman no smaller than the data: none wins
    monkeypatch.setattr(huffman, "encode_below", lambda d, limit, *shared: (b"h" * 5, {"symbol_bits": 8}))
    from nnzip.stages import lzw

    monkeypatch.setattr(lzw, "encode_below", lambda d, limit, *shared: (b"l" * 5, {"max_bits": 16}))
    assert best_bytes_stage(data)[0] == "huffman"
    assert best_bytes_stage(data, candidates=("lzw",))[0] == "lzw"
    assert BYTES_STAGES == ("huffman", "rans", "lzw", "arith")
