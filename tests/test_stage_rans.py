"""The ``rans`` stage: static range ANS with a table per block, 4 interleaved states (spec/stages/rans.md)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .common import check_golden, check_roundtrip
from .decode_cost_tools import _raw, craft
from .nnz_tools import assert_decompress_rejects, split_file
from nnzip import api, cli, container
from nnzip.errors import ConfigError, FormatError
from nnzip.stages import BytesSpec, get_stage, rans
from nnzip.stages.entropy import entropy_bound, symbol_counts
from nnzip.stages.huffman import Huffman
from nnzip.stages.policy import best_bytes_stage, cost_ok

RANS = get_stage("rans")


def encode(data: bytes, **params) -> tuple[bytes, dict]:
    return RANS.encode(data, BytesSpec(len(data)), params)


def decode(stream: bytes, size: int, config: dict) -> bytes:
    RANS.check_config(config, BytesSpec(size))
    return RANS.decode(stream, BytesSpec(size), config)


def indices(n: int, probs: list[float], bits: int, seed: int = 0) -> bytes:
    """*n* random *bits*-bit indices drawn with *probs*, packed MSB-first (as ``bitpack`` does)."""
    values = np.random.default_rng(seed).choice(len(probs), n, p=probs).astype(np.uint8)
    return np.packbits(np.unpackbits(values[:, None], axis=1)[:, 8 - bits :].reshape(-1)).tobytes()


def drifting_plane(n: int, seed: int = 0) -> bytes:
    """A skewed byte plane whose distribution changes halfway (an exponent plane over two layers)."""
    rng = np.random.default_rng(seed)
    first = np.clip(120 + rng.geometric(0.35, n // 2), 0, 255)
    second = np.clip(100 + rng.geometric(0.2, n - n // 2), 0, 255)
    return np.concatenate([first, second]).astype(np.uint8).tobytes()


def bound_bytes(data: bytes, width: int) -> float:
    """The order-0 entropy bound of *data* as *width*-bit symbols, in bytes."""
    return entropy_bound(symbol_counts(data, width)) / 8


class Bits:
    """MSB-first bit reader over a byte string (the spec's table section)."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def bit(self) -> int:
        assert self.pos < 8 * len(self.data), "table section ends inside a table"
        value = (self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = value << 1 | self.bit()
        return value


def reference_decode(stream: bytes, size: int, width: int, block_bits: int) -> bytes:
    """The spec page's decoding algorithm, one symbol at a time in plain Python integers (slow)."""
    if size == 0:
        assert stream == b""
        return b""
    section, h, shift = 0, 0, 0
    while True:
        byte = stream[h]
        section |= (byte & 0x7F) << shift
        h, shift = h + 1, shift + 7
        if not byte & 0x80:
            break
    bits = Bits(stream[h : h + section])
    states = [int.from_bytes(stream[h + section + 8 * j : h + section + 8 * j + 8], "little") for j in range(4)]
    assert all(1 << 31 <= x < 1 << 63 for x in states)
    body = stream[h + section + 32 :]
    assert len(body) % 4 == 0
    words = [int.from_bytes(body[4 * r : 4 * r + 4], "little") for r in range(len(body) // 4)]
    alphabet, n = 1 << width, -(-8 * size // width)
    q, precision = [1] * alphabet, width
    symbols, read = [], 0
    for block in range(-(-n // (1 << block_bits))):
        if bits.bit():
            precision, k = bits.bits(4), bits.bits(4)
            q = []
            for _ in range(alphabet):
                zeros = 0
                while not bits.bit():
                    zeros += 1
                    assert zeros <= 16
                bits.pos -= 1
                q.append(bits.bits(zeros + k + 1) - (1 << k))
                assert q[-1] <= 1 << precision
            assert sum(q) == 1 << precision
        freq = [v << (15 - precision) for v in q]
        start = [sum(freq[:s]) for s in range(alphabet)]
        slots = [s for s in range(alphabet) for _ in range(freq[s])]
        for i in range(block << block_bits, min(n, (block + 1) << block_bits)):
            x = states[i % 4]
            t = x % (1 << 15)
            s = slots[t]
            x = freq[s] * (x >> 15) + t - start[s]
            if x < 1 << 31:
                x = x << 32 | words[read]
                read += 1
            states[i % 4] = x
            symbols.append(s)
    assert -(-bits.pos // 8) == section and read == len(words) and states == [1 << 31] * 4
    value = 0
    for s in symbols:
        value = value << width | s
    padding = n * width - 8 * size
    assert value & ((1 << padding) - 1) == 0
    return (value >> padding).to_bytes(size, "big")


CASES = {
    "one-byte": b"\x07",
    "abaa": b"abaa",
    "run": b"a" * 1000,
    "zeros": bytes(5000),
    "all-bytes": bytes(range(256)) * 3,
    "random": np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    "sparse": (np.random.default_rng(2).random(20000) < 0.02).astype(np.uint8).tobytes(),
    "indices2": indices(30000, [0.8, 0.12, 0.05, 0.03], 2),
    "indices3": indices(9999, [0.5, 0.2, 0.1, 0.08, 0.05, 0.04, 0.02, 0.01], 3),
    "planes": drifting_plane(50_000),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("params", [{}, {"symbol_bits": 1}, {"symbol_bits": 3, "block_bits": 12}, {"symbol_bits": 8, "block_bits": 20},
                                    {"symbol_bits": 5, "block_bits": 13}])
def test_roundtrip(name, params):
    check_roundtrip("rans", CASES[name], params)


def test_roundtrip_empty_and_large_blob():
    check_roundtrip("rans", b"")
    data = drifting_plane(3_000_000, seed=5)
    stream, config = encode(data)
    assert decode(stream, len(data), config) == data
    assert len(stream) < 1.002 * bound_bytes(data, 8)  # per-block tables follow the drift: below one table's bound


@pytest.mark.parametrize("name", ["one-byte", "abaa", "all-bytes", "sparse", "indices3", "planes"])
@pytest.mark.parametrize("width, block_bits", [(1, 12), (3, 12), (8, 12), (8, 20), (7, 14)])
def test_matches_the_reference_decoder(name, width, block_bits):
    data = CASES[name][:9000]
    stream, config = encode(data, symbol_bits=width, block_bits=block_bits)
    assert reference_decode(stream, len(data), width, block_bits) == data


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 8), st.integers(12, 20))
def test_any_bytes_roundtrip(data, width, block_bits):
    stream, config = encode(data, symbol_bits=width, block_bits=block_bits)
    assert config == {"symbol_bits": width, "block_bits": block_bits}
    assert decode(stream, len(data), config) == data


def test_size_bounds_hold_and_are_tight():
    """The size computed from counts brackets the stream, within 16 bytes and n / 2**18 on either side."""
    for name in ("planes", "indices2", "indices3", "random", "zeros", "sparse"):
        data = CASES[name]
        chosen = rans.plan(data, None, None)
        low, high = chosen.bounds
        stream = rans.write(chosen)
        assert low <= len(stream) <= high, name
        assert high - low <= 44 + chosen.nsym // (1 << 17), name


def test_close_to_the_bound_and_below_huffman():
    """No one-bit floor and no rounding to whole bits: within 1 % of the order-0 bound where Huffman is not."""
    cases = (
        (indices(200_000, [0.97, 0.03], 1), 1),
        (indices(100_000, [0.9, 0.06, 0.03, 0.01], 2), 2),
        (drifting_plane(400_000)[:200_000], 8),
    )
    for data, width in cases:
        stream, _ = encode(data)
        huffman, _ = Huffman.encode(data, BytesSpec(len(data)), {})
        bound = bound_bytes(data, width)
        assert len(stream) < 1.01 * bound + 64, (len(stream), bound)
        assert len(stream) < len(huffman), (len(stream), len(huffman))


def test_tables_per_block_follow_drift():
    data = CASES["planes"]
    one, _ = encode(data, symbol_bits=8, block_bits=20)  # a single block: one table
    many, _ = encode(data, symbol_bits=8, block_bits=12)
    assert len(many) < 0.97 * len(one)


def test_params_are_checked():
    for params in ({"symbol_bits": 9}, {"symbol_bits": 0}, {"block_bits": 11}, {"block_bits": 21}, {"block_bits": True}, {"width": 3}):
        with pytest.raises(ConfigError):
            encode(b"abc", **params)


def test_encode_below_gives_up_at_the_limit():
    data = CASES["indices2"]
    stream, config = rans.encode_below(data, len(data))
    assert decode(stream, len(data), config) == data
    assert rans.encode_below(data, len(stream)) is None
    assert rans.encode_below(CASES["random"], len(CASES["random"])) is None
    assert rans.encode_below(b"", 10) is None


def test_best_bytes_stage_picks_rans_where_it_is_smallest():
    # Over 64 KiB, where arith must save 5 % to be taken (on smaller blobs its adaptive
    # contexts, with no table to store, often code a little smaller).
    for data in (drifting_plane(200_000, seed=2), indices(300_000, [0.5, 0.2, 0.1, 0.08, 0.05, 0.04, 0.02, 0.01], 3)):
        stage_id, stream, config = best_bytes_stage(data)
        assert stage_id == "rans"
        assert get_stage(stage_id).decode(stream, BytesSpec(len(data)), config) == data
    assert best_bytes_stage(CASES["random"]) == (None, CASES["random"], {})


def test_golden():
    check_golden("rans", "abaa", b"abaa")
    check_golden("rans", "planes", drifting_plane(3000, seed=7), {"symbol_bits": 8, "block_bits": 12})
    check_golden("rans", "indices3", CASES["indices3"][:600], {"symbol_bits": 3, "block_bits": 12})
    check_golden("rans", "bits1", CASES["sparse"][:500], {"symbol_bits": 1, "block_bits": 12})


def test_golden_abaa_is_the_spec_example():
    stream, config = encode(b"abaa")
    assert config == {"symbol_bits": 8, "block_bits": 20}
    lanes = [(1 << 39) + 128 * s for s in b"abaa"]
    assert stream == b"\x01\x00" + b"".join(x.to_bytes(8, "little") for x in lanes)


def test_decode_cost_and_expansion():
    config = {"symbol_bits": 4, "block_bits": 12}
    cost = RANS.decode_cost(BytesSpec(10_000), config, 300)
    n = 20_000
    assert cost.work == 2 * 300 + 10_000 + (1 << 20)
    assert cost.ops == 16 * (4 * (n + 300) + (1 << 15) * 5)
    assert RANS.max_expansion(config) == 4 << 12
    # The bound holds on the most compressible input: one repeated byte, a new table per block.
    data = bytes(1 << 20)
    stream, config = encode(data, symbol_bits=8, block_bits=12)
    assert len(data) <= RANS.max_expansion(config) * len(stream)


def test_format_minor_is_1_3_with_rans():
    part = {"codecs": [{"name": "raw", "configuration": {}}, {"name": "rans", "configuration": {}}]}
    assert container.format_minor({"tensors": [{"parts": [part]}]}, 0) == 3
    part["codecs"][1]["name"] = "huffman"
    assert container.format_minor({"tensors": [{"parts": [part]}]}, 0) == 0


# --- MUST-reject rules of spec/stages/rans.md, in its order ---------------------------------

GOOD = {"symbol_bits": 8, "block_bits": 12}


@pytest.mark.parametrize(
    "config",
    [{}, {"symbol_bits": 8}, {"block_bits": 12}, {"symbol_bits": 0, "block_bits": 12}, {"symbol_bits": 9, "block_bits": 12},
     {"symbol_bits": 8, "block_bits": 11}, {"symbol_bits": 8, "block_bits": 21}, {"symbol_bits": "8", "block_bits": 12},
     {"symbol_bits": 8, "block_bits": 12, "x": 1}],
)
def test_reject_1_bad_configuration(config):
    with pytest.raises(FormatError):
        RANS.check_config(config, BytesSpec(10))


def test_reject_2_nonempty_stream_for_empty_output():
    with pytest.raises(FormatError, match="empty output"):
        decode(b"\x00", 0, GOOD)


def test_reject_3_bad_section_length():
    with pytest.raises(FormatError, match="longer than 4 bytes"):
        decode(b"\x80\x80\x80\x80\x00" + bytes(40), 4, GOOD)
    with pytest.raises(FormatError, match="not minimally encoded"):
        decode(b"\x81\x00" + bytes(40), 4, GOOD)
    with pytest.raises(FormatError, match="truncated inside the table section's length"):
        decode(b"\x80\x80", 4, GOOD)


def test_reject_4_too_short_for_the_states():
    stream, config = encode(b"abaa")
    for cut in (1, 20, 32):
        with pytest.raises(FormatError, match="cannot hold"):
            decode(stream[:-cut], 4, config)


def test_reject_5_words_not_a_multiple_of_4():
    stream, config = encode(CASES["planes"])
    with pytest.raises(FormatError, match="not a multiple of 4"):
        decode(stream + b"\x00", len(CASES["planes"]), config)


def _states_offset(stream: bytes) -> int:
    section, h = stream[0], 1
    assert section < 0x80
    return h + section


def test_reject_6_state_out_of_range():
    stream, config = encode(b"abaa")
    at = _states_offset(stream)
    for value in (0, (1 << 31) - 1, 1 << 63, (1 << 64) - 1):
        bad = stream[:at] + value.to_bytes(8, "little") + stream[at + 8 :]
        with pytest.raises(FormatError, match=r"outside \[2\*\*31, 2\*\*63\)"):
            decode(bad, 4, config)


def test_reject_7_table_section_ends_inside_a_table():
    data = CASES["planes"]
    stream, config = encode(data, symbol_bits=8, block_bits=12)
    section, h = rans._read_varint(stream)
    short = rans._varint(section // 2) + stream[h : h + section // 2] + stream[h + section :]
    with pytest.raises(FormatError, match="ends inside block"):
        decode(short, len(data), config)


def _with_table(bits: str, states: list[int] | None = None) -> bytes:
    """A stream whose table section is the bit string *bits* (padded), with the given states."""
    bits += "0" * (-len(bits) % 8)
    section = int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""
    states = states or [1 << 31] * 4
    return rans._varint(len(section)) + section + b"".join(x.to_bytes(8, "little") for x in states)


def _eg(value: int, k: int) -> str:
    v = value + (1 << k)
    return "0" * (v.bit_length() - 1 - k) + format(v, "b")


def test_reject_8_table_value_too_large_or_too_long():
    config = {"symbol_bits": 1, "block_bits": 12}
    # P = 2, k = 0: q_0 = 5 > 2**2.
    with pytest.raises(FormatError, match="frequency above its total"):
        decode(_with_table("1" + "0010" + "0000" + _eg(5, 0) + _eg(0, 0)), 1, config)
    # 17 leading zeros.
    with pytest.raises(FormatError, match="more than 16 leading zero bits"):
        decode(_with_table("1" + "1111" + "0000" + "0" * 17 + "1" + "0" * 17 + "0" * 8), 1, config)


def test_reject_9_table_sum():
    config = {"symbol_bits": 1, "block_bits": 12}
    with pytest.raises(FormatError, match="do not sum to 2\\*\\*P"):  # P = 2: 1 + 2 != 4
        decode(_with_table("1" + "0010" + "0000" + _eg(1, 0) + _eg(2, 0)), 1, config)


def test_reject_10_truncated_words():
    data = CASES["planes"]
    stream, config = encode(data)
    for cut in (4, 4 * (len(stream) // 8)):
        with pytest.raises(FormatError, match="truncated"):
            decode(stream[:-cut], len(data), config)


def test_reject_11_nonzero_padding_in_the_last_symbol():
    config = {"symbol_bits": 3, "block_bits": 12}
    # N = 1: 3 symbols of 3 bits, the last one's lowest bit is padding. P = 3, flat table coded as
    # new: every q_s = 1; the states hold symbols chosen by hand: lane 2 holds symbol 1 (padding bit 1).
    lanes = [(1 << 31) * 8 + (s << 12) for s in (0, 0, 1)] + [1 << 31]
    stream = _with_table("1" + "0011" + "0000" + _eg(1, 0) * 8, states=lanes)
    assert decode(_with_table("1" + "0011" + "0000" + _eg(1, 0) * 8, states=[(1 << 31) * 8 + (s << 12) for s in (0, 0, 2)] + [1 << 31]),
                  1, config) == b"\x01"  # symbols 000 000 01|0
    with pytest.raises(FormatError, match="padding bits in the last symbol"):
        decode(stream, 1, config)


def test_reject_12_table_section_trailing_bytes_and_padding():
    stream, config = encode(b"abaa")  # section: 1 byte, "0" + 7 padding bits
    with pytest.raises(FormatError, match="after the last table"):
        decode(b"\x02\x00\x00" + stream[2:], 4, config)
    with pytest.raises(FormatError, match="nonzero padding bits after the last table"):
        decode(b"\x01\x01" + stream[2:], 4, config)


def test_reject_13_trailing_words():
    stream, config = encode(b"abaa")
    with pytest.raises(FormatError, match="1 words of trailing garbage"):
        decode(stream + b"\x00\x00\x00\x00", 4, config)


def test_reject_14_final_state():
    stream, config = encode(b"abaa")
    at = _states_offset(stream)
    bad = stream[:at] + ((1 << 39) + 128 * 0x61 + 1).to_bytes(8, "little") + stream[at + 8 :]
    with pytest.raises(FormatError, match="does not end in the initial state"):
        decode(bad, 4, config)


# --- the same rules through the CLI, on crafted files --------------------------------------


def rans_file(stream: bytes, size: int, config: dict) -> bytes:
    """The golden example with its first tensor a float32 vector of *size* // 4 elements coded raw + rans."""
    part = {"name": "values", **_raw("<f4", [size // 4], 0, [{"name": "rans", "configuration": config}])}
    del part["blob"]
    return craft({"dtype": "<f4", "shape": [size // 4], "transform": {"name": "dense", "configuration": {}}}, [(part, stream)])


def assert_cli_rejects(tmp_path, data: bytes, capsys, *fragments: str) -> None:
    assert_decompress_rejects(tmp_path, data, capsys, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nnz"], "a temporary output was left behind"


def float_values() -> np.ndarray:
    values = np.random.default_rng(3).normal(0, 0.05, 3000).astype("<f4")
    values[::7] = 0
    return values


def test_cli_reads_a_valid_crafted_file(tmp_path):
    values = float_values()
    stream, config = encode(values.tobytes())
    source = tmp_path / "good.nnz"
    source.write_bytes(rans_file(stream, values.nbytes, config))
    assert cli.main(["inspect", str(source)]) == 0
    _, tensors = api.read_tensors(source)
    np.testing.assert_array_equal(tensors["layers/dense/vars/0"], values)


def _state_edit(s: bytes, value: int) -> bytes:
    section, h = rans._read_varint(s)
    return s[: h + section] + value.to_bytes(8, "little") + s[h + section + 8 :]


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda s: s[:-4], "truncated"),
        (lambda s: s + b"\x00\x00\x00\x00", "trailing garbage"),
        (lambda s: s + b"\x00", "not a multiple of 4"),
        (lambda s: s[:10], "cannot hold"),
        (lambda s: _state_edit(s, 5), "outside"),
        (lambda s: b"\x80\x80\x80\x80\x01" + s, "longer than 4 bytes"),
    ],
)
def test_cli_rejects_bad_streams(tmp_path, capsys, mutate, fragment):
    values = float_values()
    stream, config = encode(values.tobytes(), symbol_bits=8, block_bits=12)
    assert_cli_rejects(tmp_path, rans_file(mutate(stream), values.nbytes, config), capsys, "rans", fragment)


@pytest.mark.parametrize(
    "bits, fragment",
    [
        ("1" + "0010" + "0000" + _eg(1, 0) + _eg(2, 0), "do not sum to 2**P"),
        ("1" + "0010" + "0000" + _eg(5, 0) + _eg(0, 0), "frequency above its total"),
        ("1" + "0010", "ends inside block 0"),
    ],
)
def test_cli_rejects_bad_tables(tmp_path, capsys, bits, fragment):
    assert_cli_rejects(tmp_path, rans_file(_with_table(bits), 4, {"symbol_bits": 1, "block_bits": 12}), capsys, "rans", fragment)


def test_cli_rejects_a_wrong_final_state(tmp_path, capsys):
    stream, config = encode(b"abaa")
    bad = _state_edit(stream, (1 << 39) + 128 * 0x61 + 1)  # decodes "a", then ends at 2**31 + 1
    assert_cli_rejects(tmp_path, rans_file(bad, 4, config), capsys, "rans", "initial state 2**31")


def test_cli_rejects_bad_configuration_and_claimed_size(tmp_path, capsys):
    values = float_values()
    stream, config = encode(values.tobytes())
    assert_cli_rejects(tmp_path, rans_file(stream, values.nbytes, {"symbol_bits": 9, "block_bits": 12}), capsys, "symbol_bits")
    assert_cli_rejects(tmp_path, rans_file(stream, values.nbytes, {"symbol_bits": 8, "block_bits": 30}), capsys, "block_bits")
    # A 34-byte stream may not claim 64 MiB of output (rule 4.6, max_expansion = 8 * 2**12).
    abaa, small = encode(b"abaa", symbol_bits=8, block_bits=12)
    assert_cli_rejects(tmp_path, rans_file(abaa, 1 << 26, small), capsys, "rule 4.6", "beyond its bound")


def test_compressed_file_with_rans_is_1_3_and_round_trips(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {"w": (rng.normal(0, 0.02, (512, 384)) * rng.uniform(0.2, 3, (512, 1))).astype("<f4")}
    source = tmp_path / "m.safetensors"
    save_file(tensors, str(source))
    out = tmp_path / "m.nnz"
    assert cli.main(["compress", str(source), "-o", str(out), "-q"]) == 0
    data = out.read_bytes()
    header = split_file(data)[0]
    assert any(c["name"] == "rans" for t in header["tensors"] for p in t["parts"] for c in p["codecs"])
    assert int.from_bytes(data[10:12], "little") == 3
    back = tmp_path / "back.safetensors"
    assert cli.main(["decompress", str(out), "-o", str(back), "-q"]) == 0
    assert back.read_bytes() == source.read_bytes()


def test_policy_keeps_rans_within_the_decode_cap():
    """On a blob rans would shrink beyond its declared-ops share, the choice falls to another coder."""
    data = bytes(1 << 20)
    stream, config = encode(data)
    assert not cost_ok("rans", len(data), (stream, config))
    assert best_bytes_stage(data)[0] != "rans"


def test_decode_into_writes_the_buffer_it_is_given():
    for name, params in (("planes", {}), ("indices3", {"symbol_bits": 3, "block_bits": 12})):
        data = CASES[name]
        stream, config = encode(data, **params)
        out = np.full(len(data), 0xA5, dtype=np.uint8)  # stale bytes: narrower symbols are OR-ed in
        RANS.from_config(config, BytesSpec(len(data))).decode_into(stream, BytesSpec(len(data)), out)
        assert out.tobytes() == data
