"""The ``arith`` stage: adaptive binary range coding with bit-tree contexts (spec/stages/arith.md)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .common import check_golden, check_roundtrip
from .decode_cost_tools import _raw, craft
from .nnz_tools import assert_decompress_rejects
from nnzip import cli
from nnzip.errors import ConfigError, FormatError
from nnzip.stages import BytesSpec, arith, get_stage
from nnzip.stages.entropy import entropy_bound, symbol_counts
from nnzip.stages.policy import best_bytes_stage
from nnzip.stages.huffman import Huffman

ARITH = get_stage("arith")


def encode(data: bytes, **params) -> tuple[bytes, dict]:
    return ARITH.encode(data, BytesSpec(len(data)), params)


def decode(stream: bytes, size: int, config: dict) -> bytes:
    ARITH.check_config(config, BytesSpec(size))
    return ARITH.decode(stream, BytesSpec(size), config)


def indices(n: int, probs: list[float], bits: int, seed: int = 0) -> bytes:
    """*n* random *bits*-bit indices drawn with *probs*, packed MSB-first (as ``bitpack`` does)."""
    values = np.random.default_rng(seed).choice(len(probs), n, p=probs).astype(np.uint8)
    return np.packbits(np.unpackbits(values[:, None], axis=1)[:, 8 - bits :].reshape(-1)).tobytes()


def bound_bytes(data: bytes, width: int) -> float:
    """The order-0 entropy bound of *data* as *width*-bit symbols, in bytes."""
    return entropy_bound(symbol_counts(data, width)) / 8


def reference_decode(stream: bytes, size: int, width: int, order: int) -> bytes:
    """The spec page's decoding algorithm, one bit at a time in plain Python integers (slow)."""
    prob = [1 << 21] * ((1 << width) << (width if order else 0))
    count = [0] * len(prob)
    rng, code, pos = 0xFFFFFFFF, int.from_bytes(stream[:4].ljust(4, b"\0"), "big"), 4
    assert code < rng
    bits, node, prev = [], 1, 0
    for k in range(8 * size):
        ctx = (prev << width) | node
        p = min(max(prob[ctx] >> 10, 1), 4095)
        bound = (rng >> 12) * p
        step = (1 << 17) // (2 * count[ctx] + 3)
        if code < bound:
            bit, rng = 0, bound
            prob[ctx] += ((1 << 22) - prob[ctx]) * step >> 16
        else:
            bit, code, rng = 1, code - bound, rng - bound
            prob[ctx] += (0 - prob[ctx]) * step >> 16
        count[ctx] = min(count[ctx] + 1, 1023)
        bits.append(bit)
        node = node << 1 | bit
        if k % width == width - 1:
            prev, node = (node - (1 << width) if order else 0), 1
        while rng < 1 << 24:
            rng <<= 8
            code = code << 8 | (stream[pos] if pos < len(stream) else 0)
            pos += 1
    assert pos == len(stream) and code == 0
    return np.packbits(np.array(bits, dtype=np.uint8)).tobytes()


CASES = {
    "one-byte": b"\x07",
    "run": b"a" * 1000,
    "zeros": bytes(5000),
    "all-bytes": bytes(range(256)) * 3,
    "random": np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    "sparse": (np.random.default_rng(2).random(20000) < 0.02).astype(np.uint8).tobytes(),
    "indices2": indices(30000, [0.8, 0.12, 0.05, 0.03], 2),
    "indices3": indices(9999, [0.5, 0.2, 0.1, 0.08, 0.05, 0.04, 0.02, 0.01], 3),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("params", [{}, {"symbol_bits": 1, "order": 0}, {"symbol_bits": 3, "order": 1}, {"symbol_bits": 8, "order": 1}, {"symbol_bits": 5}])
def test_roundtrip(name, params):
    check_roundtrip("arith", CASES[name], params)


def test_roundtrip_empty_and_large_blob():
    check_roundtrip("arith", b"")
    data = indices(1_200_000, [0.9, 0.06, 0.03, 0.01], 2, seed=3)  # > 64 KiB: the prefix trial, then a full run
    stream, config = encode(data)
    assert decode(stream, len(data), config) == data
    assert len(stream) < 1.01 * bound_bytes(data, 2) + 16


@pytest.mark.parametrize("name", ["one-byte", "all-bytes", "sparse", "indices3"])
@pytest.mark.parametrize("width, order", [(1, 0), (3, 1), (8, 0), (2, 1)])
def test_matches_the_reference_decoder(name, width, order):
    data = CASES[name][:700]
    stream, config = encode(data, symbol_bits=width, order=order)
    assert reference_decode(stream, len(data), width, order) == data


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 8), st.integers(0, 1))
def test_any_bytes_roundtrip(data, width, order):
    stream, config = encode(data, symbol_bits=width, order=order)
    assert config == {"symbol_bits": width, "order": order}
    assert decode(stream, len(data), config) == data


def test_beats_huffman_below_one_bit_per_symbol():
    """The point of the stage: no one-bit floor (Huffman's widest symbols, 16 bits, only soften it).
    1-bit indices at 0.19 and 0.03 bits each, 2-bit ones at 0.56 bits each."""
    cases = (
        (indices(200_000, [0.97, 0.03], 1), 1, 0.95),
        (indices(200_000, [0.997, 0.003], 1), 1, 0.5),
        (indices(100_000, [0.9, 0.06, 0.03, 0.01], 2), 2, 0.97),
    )
    for data, width, ratio in cases:
        stream, _ = encode(data)
        huffman, _ = Huffman.encode(data, BytesSpec(len(data)), {})
        bound = bound_bytes(data, width)
        assert len(stream) < 1.05 * bound + 16, (len(stream), bound)
        assert len(stream) < ratio * len(huffman), (len(stream), len(huffman))


def test_order1_pays_on_correlated_neighbours():
    runs = np.repeat(np.random.default_rng(4).integers(0, 4, 4000), 8).astype(np.uint8)  # runs of 8
    data = np.packbits(np.unpackbits(runs[:, None], axis=1)[:, 6:].reshape(-1)).tobytes()
    zero, _ = encode(data, symbol_bits=2, order=0)
    one, _ = encode(data, symbol_bits=2, order=1)
    assert len(one) < 0.6 * len(zero)
    assert encode(data)[1]["order"] == 1


def test_params_are_checked():
    for params in ({"symbol_bits": 9}, {"symbol_bits": 0}, {"order": 2}, {"order": True}, {"width": 3}):
        with pytest.raises(ConfigError):
            encode(b"abc", **params)


def test_encode_below_gives_up_at_the_limit():
    data = CASES["indices2"]
    stream, config = arith.encode_below(data, len(data))
    assert decode(stream, len(data), config) == data
    assert arith.encode_below(data, len(stream)) is None
    assert arith.encode_below(CASES["random"], len(CASES["random"])) is None
    big = indices(300_000, [0.9, 0.1], 1)
    stream, config = arith.encode_below(big, len(big))
    assert arith.encode_below(big, len(stream)) is None  # the full run stops at the limit
    assert arith.encode_below(big, len(stream) // 2) is None  # the scaled prefix trial already loses


def test_best_bytes_stage_picks_arith_where_it_is_smallest():
    for data in (CASES["indices2"], CASES["indices3"]):
        stage_id, stream, config = best_bytes_stage(data)
        assert stage_id == "arith"
        assert get_stage(stage_id).decode(stream, BytesSpec(len(data)), config) == data
    random = CASES["random"]
    assert best_bytes_stage(random) == (None, random, {})


def test_golden():
    check_golden("arith", "abaa", b"abaa")
    check_golden("arith", "indices2", CASES["indices2"][:500], {"symbol_bits": 2, "order": 0})
    check_golden("arith", "sparse-order1", CASES["sparse"][:400], {"symbol_bits": 1, "order": 1})
    check_golden("arith", "tail3", bytes(range(10, 20)), {"symbol_bits": 3, "order": 1})


def test_decode_cost_and_expansion():
    config = {"symbol_bits": 8, "order": 1}
    cost = ARITH.decode_cost(BytesSpec(1000), config, 100)
    assert cost.work == 100 + 1000 + (2 << 20)
    assert cost.ops == 16 * 12 * (8 * 1000 + 100)
    assert ARITH.max_expansion(config) == arith.MAX_EXPANSION
    # The bound holds: the most compressible input (one repeated byte) stays within it.
    data = bytes(2_000_000)
    stream, config = encode(data, symbol_bits=1, order=0)
    assert len(data) <= arith.MAX_EXPANSION * (len(stream) - 3)


# --- MUST-reject rules of spec/stages/arith.md, in its order ---------------------------------


@pytest.mark.parametrize(
    "config",
    [{}, {"symbol_bits": 8}, {"symbol_bits": 0, "order": 0}, {"symbol_bits": 9, "order": 0}, {"symbol_bits": 8, "order": 2},
     {"symbol_bits": "8", "order": 0}, {"symbol_bits": 8, "order": 0, "x": 1}],
)
def test_reject_1_bad_configuration(config):
    with pytest.raises(FormatError):
        ARITH.check_config(config, BytesSpec(10))


def test_reject_2_nonempty_stream_for_empty_output():
    with pytest.raises(FormatError, match="empty output"):
        decode(b"\x00", 0, {"symbol_bits": 8, "order": 0})


def test_reject_3_shorter_than_four_bytes():
    for stream in (b"", b"\x00\x01\x02"):
        with pytest.raises(FormatError, match="at least 4 needed"):
            decode(stream, 3, {"symbol_bits": 8, "order": 0})


def test_reject_4_code_not_below_the_range():
    with pytest.raises(FormatError, match="FF FF FF FF"):
        decode(b"\xff\xff\xff\xff", 1, {"symbol_bits": 8, "order": 0})


def test_reject_5_truncated():
    data = CASES["indices2"]
    stream, config = encode(data)
    for cut in (1, len(stream) // 2):
        with pytest.raises(FormatError, match="truncated"):
            decode(stream[:-cut], len(data), config)
    with pytest.raises(FormatError, match="truncated|trailing|flush"):
        decode(stream, 2 * len(data), config)  # a larger declared size reads past the end


def test_reject_6_trailing_garbage():
    stream, config = encode(b"abaa")
    with pytest.raises(FormatError, match="1 bytes of trailing garbage"):
        decode(stream + b"\x00", 4, config)


def test_reject_7_not_the_canonical_flush():
    data = CASES["indices2"]
    stream, config = encode(data)
    changed = stream[:-1] + bytes([stream[-1] ^ 1])
    with pytest.raises(FormatError, match="flush"):
        decode(changed, len(data), config)


# --- the same rules through the CLI, on crafted files --------------------------------------


def arith_file(stream: bytes, size: int, config: dict) -> bytes:
    """The golden example with its first tensor a float32 vector of *size* // 4 elements coded raw + arith."""
    part = {"name": "values", **_raw("<f4", [size // 4], 0, [{"name": "arith", "configuration": config}])}
    del part["blob"]
    return craft({"dtype": "<f4", "shape": [size // 4], "transform": {"name": "dense", "configuration": {}}}, [(part, stream)])


def assert_cli_rejects(tmp_path, data: bytes, capsys, *fragments: str) -> None:
    assert_decompress_rejects(tmp_path, data, capsys, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nnz"], "a temporary output was left behind"


def test_cli_reads_a_valid_crafted_file(tmp_path, capsys):
    values = np.zeros(1000, dtype="<f4")
    values[::37] = 1.5
    stream, config = encode(values.tobytes())
    source = tmp_path / "good.nnz"
    source.write_bytes(arith_file(stream, values.nbytes, config))
    assert cli.main(["inspect", str(source)]) == 0
    from nnzip import api

    _, tensors = api.read_tensors(source)
    np.testing.assert_array_equal(tensors["layers/dense/vars/0"], values)


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda s: s[:-2], "truncated"),
        (lambda s: s + b"\x00", "trailing garbage"),
        (lambda s: s[:-1] + bytes([s[-1] ^ 0x10]), "flush"),
        (lambda s: b"\xff\xff\xff\xff" + s[4:], "FF FF FF FF"),
        (lambda s: s[:3], "at least 4 needed"),
    ],
)
def test_cli_rejects_bad_streams(tmp_path, capsys, mutate, fragment):
    values = np.zeros(1000, dtype="<f4")
    values[::37] = 1.5
    stream, config = encode(values.tobytes())
    assert_cli_rejects(tmp_path, arith_file(mutate(stream), values.nbytes, config), capsys, "arith", fragment)


def test_cli_rejects_bad_configuration_and_claimed_size(tmp_path, capsys):
    stream, config = encode(bytes(4000))
    assert_cli_rejects(tmp_path, arith_file(stream, 4000, {"symbol_bits": 9, "order": 0}), capsys, "symbol_bits")
    # A 5-byte stream may not claim 64 MiB of output (rule 4.6, max_expansion).
    assert_cli_rejects(tmp_path, arith_file(stream[:5], 1 << 26, config), capsys, "rule 4.6", "beyond its bound")


def test_best_bytes_stage_keeps_files_within_the_decode_cap():
    """On a blob arith would shrink beyond ~21x its declared decode cost exceeds rule 4.8.2's
    default share of its bytes, so the choice falls back to huffman/lzw."""
    from nnzip.limits import DEFAULT_OPS_PER_DATA_BYTE

    data = indices(400_000, [0.999, 0.001], 1)
    stream, config = encode(data)
    assert ARITH.decode_cost(BytesSpec(len(data)), config, len(stream)).ops > DEFAULT_OPS_PER_DATA_BYTE * len(stream)
    assert best_bytes_stage(data)[0] in ("huffman", "rans", "lzw")
