"""``arith``'s levels mode (spec/stages/arith.md, "Levels mode", format 1.3).

The compiled coder is checked against a plain-Python implementation written from the spec
page alone (:func:`spec_bins` + :func:`spec_encode`), bit for bit; the MUST-reject rules the
mode adds are checked directly and through ``nnzip.cli.main`` on crafted files.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .common import check_golden
from .decode_cost_tools import _raw, craft
from .nnz_tools import assert_decompress_rejects
from nnzip import cli
from nnzip.container import LEVELS_MINOR, format_minor
from nnzip.errors import ConfigError, FormatError
from nnzip.stages import BytesSpec, arith, get_stage
from nnzip.stages.huffman import Huffman
from nnzip.stages.uniform import Uniform
from nnzip.stages.base import ArraySpec

ARITH = get_stage("arith")


def encode(data: bytes, **params) -> tuple[bytes, dict]:
    return ARITH.encode(data, BytesSpec(len(data)), params)


def decode(stream: bytes, size: int, config: dict) -> bytes:
    ARITH.check_config(config, BytesSpec(size))
    return ARITH.decode(stream, BytesSpec(size), config)


def pack(values: np.ndarray, bits: int) -> bytes:
    """*bits*-bit values packed MSB-first (as ``bitpack`` does)."""
    values = np.asarray(values, dtype=np.uint8)
    return np.packbits(np.unpackbits(values[:, None], axis=1)[:, 8 - bits:].reshape(-1)).tobytes()


def laplace_codes(n: int, scale: float, bits: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """``uniform`` codes of Laplacian weights (step 1), clipped to *bits* bits, and the code of level 0."""
    levels = np.rint(np.random.default_rng(seed).laplace(0, scale, n)).astype(np.int64)
    half = (1 << bits) // 2
    levels = np.clip(levels, -half, half - 1)
    return (levels + half).astype(np.uint8), half


# --- the spec page's algorithm in plain Python --------------------------------------------


def spec_bins(data: bytes, width: int, zero: int, order: int) -> list[tuple[int, int]]:
    """The ``(context, bin)`` sequence the spec's levels mode codes for *data*."""
    bits = [(byte >> (7 - i)) & 1 for byte in data for i in range(8)]
    symbols = len(bits) // width
    max_pos, max_neg = (1 << width) - 1 - zero, zero
    out, levels = [], []
    for s in range(symbols):
        value = int("".join(map(str, bits[s * width:(s + 1) * width])), 2)
        level = value - zero
        a = min(abs(levels[-1]), 2) if order >= 1 and s >= 1 else 0
        b = min(abs(levels[-2]), 2) if order == 2 and s >= 2 else 0
        q = 0 if order == 0 or s == 0 or levels[-1] == 0 else (1 if levels[-1] > 0 else 2)
        out.append((3 * a + b, int(level != 0)))
        if level:
            g = int(level < 0)
            bound = max_neg if g else max_pos
            if max_pos > 0 and max_neg > 0:
                out.append((9 + q, g))
            m = abs(level)
            if bound > 1:
                out.append((12 + 6 * g + a, int(m > 1)))
            if m > 1 and bound > 2:
                out.append((15 + 6 * g + a, int(m > 2)))
            if m > 2 and bound > 3:
                r = m - 2
                k, kk = r.bit_length() - 1, (bound - 2).bit_length() - 1
                out += [(24 + 8 * g + i, 1) for i in range(k)]
                if k < kk:
                    out.append((24 + 8 * g + k, 0))
                out += [(40 + 8 * k + i, (r >> i) & 1) for i in range(k - 1, -1, -1)]
        levels.append(level)
    out += [(104 + j, bit) for j, bit in enumerate(bits[symbols * width:])]
    return out


def spec_encode(bins: list[tuple[int, int]]) -> bytes:
    """The spec's LZMA range encoder and adaptive model over *bins* (112 contexts)."""
    prob, count = [1 << 21] * 112, [0] * 112
    low, rng, cache, pending, written = 0, 0xFFFFFFFF, 0, 1, []

    def shift():
        nonlocal low, cache, pending
        if low < 0xFF000000 or low >= 1 << 32:
            carry = low >> 32
            written.append((cache + carry) & 0xFF)
            written.extend([(0xFF + carry) & 0xFF] * (pending - 1))
            cache, pending = (low >> 24) & 0xFF, 0
        pending += 1
        low = (low & 0xFFFFFF) << 8

    for ctx, bit in bins:
        p = min(max(prob[ctx] >> 10, 1), 4095)
        bound = (rng >> 12) * p
        step = (1 << 17) // (2 * count[ctx] + 3)
        if bit:
            low, rng = low + bound, rng - bound
            prob[ctx] += (0 - prob[ctx]) * step >> 16
        else:
            rng = bound
            prob[ctx] += ((1 << 22) - prob[ctx]) * step >> 16
        count[ctx] = min(count[ctx] + 1, 1023)
        while rng < 1 << 24:
            rng <<= 8
            shift()
    for _ in range(5):
        shift()
    return bytes(written[1:])


CASES = {
    "laplace3": (pack(*laplace_codes(900, 0.8, 3)[:1], 3), 3, 4),
    "laplace5": (pack(laplace_codes(700, 3.0, 5)[0], 5), 5, 16),
    "bytes8": (bytes(np.random.default_rng(2).integers(0, 256, 300, dtype=np.uint8)), 8, 0),
    "onesided": (pack(np.random.default_rng(3).geometric(0.3, 400).clip(0, 31) % 32, 5), 5, 0),
    "top": (pack(31 - (np.random.default_rng(4).geometric(0.3, 400).clip(0, 31) % 32), 5), 5, 31),
    "mask": (pack(np.random.default_rng(5).random(800) < 0.1, 1), 1, 0),
    "k2": (pack(np.random.default_rng(6).choice(4, 999, p=[0.2, 0.5, 0.2, 0.1]), 2), 2, 1),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("order", arith.LEVEL_ORDERS)
def test_compiled_coder_is_the_spec_algorithm(name, order):
    data, width, zero = CASES[name]
    stream, config = encode(data, symbol_bits=width, zero=zero, order=order)
    assert config == {"symbol_bits": width, "order": order, "zero": zero}
    assert stream == spec_encode(spec_bins(data, width, zero, order))
    assert decode(stream, len(data), config) == data


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 8), st.data(), st.sampled_from(arith.LEVEL_ORDERS))
def test_any_bytes_roundtrip(data, width, draw, order):
    zero = draw.draw(st.integers(0, (1 << width) - 1))
    stream, config = encode(data, symbol_bits=width, zero=zero, order=order)
    assert decode(stream, len(data), config) == data


def test_bins_per_symbol_bound_is_reached_and_holds():
    """``b(w)`` (spec "Bins per symbol") is the most any symbol takes, and some symbol takes it."""
    assert [arith.max_bins(w) for w in range(1, 9)] == [1, 3, 8, 10, 12, 14, 16, 18]
    for width in range(1, 9):
        most = 0
        for zero in range(1 << width):
            for value in range(1 << width):
                data = pack(np.array([value] * 8), width)  # 8 symbols fill whole bytes
                bins = spec_bins(data, width, zero, 0)
                most = max(most, len(bins) // 8)
        assert most == arith.max_bins(width), width


def test_golden():
    check_golden("arith", "levels-abaa", b"abaa", {"mode": "levels"})
    codes, zero = laplace_codes(1600, 0.9, 3, seed=7)
    check_golden("arith", "levels-u3", pack(codes, 3), {"symbol_bits": 3, "order": 2, "zero": zero})
    k2 = CASES["k2"][0][:250]
    check_golden("arith", "levels-k2", k2, {"symbol_bits": 2, "order": 1, "zero": 1})
    check_golden("arith", "levels-w5-tail", CASES["onesided"][0][:101], {"symbol_bits": 5, "order": 2, "zero": 0})
    check_golden("arith", "levels-w1", CASES["mask"][0], {"symbol_bits": 1, "order": 2, "zero": 1})


def test_abaa_example_of_the_spec_page():
    stream, config = encode(b"abaa", mode="levels")
    assert config == {"symbol_bits": 8, "order": 0, "zero": 97}
    assert stream.hex(" ") == "6a a7 f2 ab"


def test_default_encode_is_the_bits_mode_of_1_2():
    """Without ``mode`` or ``zero`` the stage codes as format 1.2 did, whatever the data."""
    for data, _, _ in CASES.values():
        assert "zero" not in encode(data)[1]
    stream, config = encode(b"abaa")
    assert config == {"symbol_bits": 8, "order": 0} and stream.hex(" ") == "61 8a 54 b8 d6 04"


def test_auto_takes_the_levels_mode_only_when_it_saves_enough():
    data = b"abaa"  # levels saves 2 bytes: below LEVELS_MIN_SAVING, so the bits mode stays
    assert "zero" not in encode(data, mode="auto")[1]
    saved = len(encode(data)[0]) - len(encode(data, mode="levels")[0])
    assert 0 < saved < arith.LEVELS_MIN_SAVING
    # A blob whose level neighbours correlate strongly (runs of zeros and of non-zeros): the
    # levels mode's classes see them, and it wins by far more.
    rng = np.random.default_rng(9)
    runs = np.repeat(rng.random(400) < 0.3, rng.integers(1, 40, 400))[:6000]
    codes, zero = laplace_codes(runs.size, 1.5, 4, seed=10)
    codes = np.where(runs, codes, zero)
    data = pack(codes, 4)
    stream, config = encode(data, mode="auto")
    assert config.get("zero") == zero and config["order"] >= 1
    assert len(stream) <= len(encode(data)[0]) - arith.LEVELS_MIN_SAVING
    assert arith.encode_below(data, 1 << 30)[1] == config  # the pipeline's choice takes it too


def test_levels_mode_is_near_huffman_or_better_on_quantized_weights():
    codes, _ = laplace_codes(20000, 1.0, 4, seed=11)
    data = pack(codes, 4)
    levels = len(encode(data, mode="levels")[0])
    assert levels < len(Huffman.encode(data, BytesSpec(len(data)), {})[0])
    assert levels <= 1.01 * len(encode(data)[0])


def test_params_are_checked():
    for params in ({"mode": "fast"}, {"mode": "bits", "zero": 1}, {"zero": 300}, {"zero": 4, "symbol_bits": 2},
                   {"mode": "levels", "order": 3}, {"mode": "bits", "order": 2}, {"zero": -1}):
        with pytest.raises(ConfigError):
            encode(b"abcdef" * 10, **params)


def test_decode_cost_and_expansion():
    config = {"symbol_bits": 3, "order": 2, "zero": 3}
    cost = ARITH.decode_cost(BytesSpec(1000), config, 100)
    symbols, tail = divmod(8000, 3)
    assert cost.ops == 16 * 12 * (8 * symbols + tail + 100)
    assert cost.work == 100 + 1000 + arith.LEVEL_WORK
    assert ARITH.max_expansion(config) == 3 * arith.MAX_EXPANSION
    for width in (1, 8):  # the most compressible inputs stay within the bound
        data = bytes(1_000_000)
        stream, config = encode(data, symbol_bits=width, zero=0, order=2)
        assert len(data) <= arith.MAX_EXPANSION * width * (len(stream) - 3) + width / 8


# --- MUST-reject rules (spec/stages/arith.md, Errors 1 and 8) --------------------------------


@pytest.mark.parametrize(
    "config",
    [{"symbol_bits": 3, "zero": 0}, {"symbol_bits": 3, "order": 3, "zero": 0}, {"symbol_bits": 3, "order": 0, "zero": 8},
     {"symbol_bits": 3, "order": 0, "zero": -1}, {"symbol_bits": 3, "order": 0, "zero": "1"}, {"symbol_bits": 3, "order": 0, "zero": True},
     {"symbol_bits": 1, "order": 0, "zero": 2}, {"symbol_bits": 8, "order": 0, "zero": 0, "neighbours": 1}, {"order": 0, "zero": 0}],
)
def test_reject_1_bad_levels_configuration(config):
    with pytest.raises(FormatError):
        ARITH.check_config(config, BytesSpec(10))


def remainder_too_large() -> bytes:
    """A stream whose first level has ``r = 6 > M - 2 = 5`` (w = 3, zero = 0, order 0): bins
    significance, greater-than-1, greater-than-2, prefix 1 1 (k = K = 2), suffix 1 0; then a
    zero level and two tail bits, so the stream is otherwise well formed for N = 1."""
    return spec_encode([(0, 1), (12, 1), (15, 1), (24, 1), (25, 1), (57, 1), (56, 0), (0, 0), (104, 0), (105, 0)])


def test_reject_8_remainder_beyond_the_range():
    config = {"symbol_bits": 3, "order": 0, "zero": 0}
    with pytest.raises(FormatError, match="exceeds the 3-bit symbol range"):
        decode(remainder_too_large(), 1, config)
    # The largest valid remainder (r = 5: suffix 0 1) decodes to symbol 7.
    good = spec_encode([(0, 1), (12, 1), (15, 1), (24, 1), (25, 1), (57, 0), (56, 1), (0, 0), (104, 0), (105, 0)])
    assert decode(good, 1, config) == bytes([0b11100000])


def test_reject_the_bits_mode_rules_in_the_levels_mode():
    data, width, zero = CASES["laplace3"]
    stream, config = encode(data, symbol_bits=width, zero=zero, order=1)
    with pytest.raises(FormatError, match="truncated"):
        decode(stream[:-3], len(data), config)
    with pytest.raises(FormatError, match="trailing garbage"):
        decode(stream + b"\0", len(data), config)
    with pytest.raises(FormatError, match="flush"):
        decode(stream[:-1] + bytes([stream[-1] ^ 1]), len(data), config)
    with pytest.raises(FormatError, match="FF FF FF FF"):
        decode(b"\xff" * 4 + stream[4:], len(data), config)


# --- through the CLI, on crafted files ------------------------------------------------------


def arith_file(stream: bytes, size: int, config: dict) -> bytes:
    """The golden example with its first tensor a float32 vector of *size* // 4 elements coded raw + arith."""
    part = {"name": "values", **_raw("<f4", [size // 4], 0, [{"name": "arith", "configuration": config}])}
    del part["blob"]
    return craft({"dtype": "<f4", "shape": [size // 4], "transform": {"name": "dense", "configuration": {}}}, [(part, stream)])


def test_cli_reads_a_crafted_levels_file(tmp_path):
    from nnzip import api

    values = np.zeros(1000, dtype="<f4")
    values[::37] = 1.5
    stream, config = encode(values.tobytes(), mode="levels")
    source = tmp_path / "good.nnz"
    source.write_bytes(arith_file(stream, values.nbytes, config))
    assert cli.main(["inspect", str(source)]) == 0
    np.testing.assert_array_equal(api.read_tensors(source)[1]["layers/dense/vars/0"], values)


def test_cli_rejects_a_remainder_beyond_the_range(tmp_path, capsys):
    # 4 output bytes (one float32) of 3-bit symbols: the first level is bad.
    bins = [(0, 1), (12, 1), (15, 1), (24, 1), (25, 1), (57, 1), (56, 0)] + [(0, 0)] * 9 + [(104, 0), (105, 0)]
    data = arith_file(spec_encode(bins), 4, {"symbol_bits": 3, "order": 0, "zero": 0})
    assert_decompress_rejects(tmp_path, data, capsys, "arith", "exceeds the 3-bit symbol range")


@pytest.mark.parametrize("config, fragment", [({"symbol_bits": 3, "order": 3, "zero": 0}, "order"),
                                              ({"symbol_bits": 3, "order": 0, "zero": 9}, "zero"),
                                              ({"symbol_bits": 3, "zero": 0}, "order")])
def test_cli_rejects_bad_levels_configuration(tmp_path, capsys, config, fragment):
    stream, _ = encode(bytes(400), symbol_bits=3, zero=0, order=0)
    assert_decompress_rejects(tmp_path, arith_file(stream, 400, config), capsys, "arith", fragment)


def test_cli_rejects_an_oversized_claim(tmp_path, capsys):
    """Rule 4.6 with the levels mode's bound (2840 w output bytes per stream byte)."""
    stream, config = encode(bytes(4000), symbol_bits=1, zero=0, order=0)
    assert_decompress_rejects(tmp_path, arith_file(stream[:5], 1 << 26, config), capsys, "rule 4.6", "beyond its bound")


# --- format 1.3 --------------------------------------------------------------------------------


def test_format_minor_is_3_with_a_levels_codec_only():
    def header(config):
        return {"tensors": [{"parts": [{"codecs": [{"name": "raw", "configuration": {}}, {"name": "arith", "configuration": config}]}]}]}

    assert format_minor(header({"symbol_bits": 3, "order": 0, "zero": 1}), 0) == LEVELS_MINOR == 3
    assert format_minor(header({"symbol_bits": 3, "order": 0}), 0) == 0
    assert format_minor({"tensors": [{"parts": [{"codecs": "x"}, 1]}, None]}, 0) == 0


def test_a_file_with_the_levels_mode_is_1_3_and_round_trips(tmp_path):
    """A tensor whose quantized levels come in runs: the pipeline picks the levels mode, writes 1.3,
    and the file decodes to the same values through the CLI."""
    import struct

    from nnzip import api

    rng = np.random.default_rng(12)
    runs = np.repeat(rng.random(500) < 0.3, rng.integers(1, 40, 500))[:8192]
    weights = np.where(runs, rng.laplace(0, 1.0, runs.size), 0).astype("<f4").reshape(64, 128)
    source = tmp_path / "w.npz"
    np.savez(source, w=weights)
    out = tmp_path / "w.nnz"
    assert cli.main(["compress", str(source), "-o", str(out), "-q", "--uniform", "0.5"]) == 0
    data = out.read_bytes()
    assert struct.unpack_from("<HH", data, 8) == (1, 3)
    header, tensors = api.read_tensors(out)
    codecs = [c for e in header["tensors"] for p in e["parts"] for c in p["codecs"]]
    assert any(c["name"] == "arith" and "zero" in c["configuration"] for c in codecs)
    step = Uniform.from_config(_uniform_config(header), ArraySpec.of(weights)).step
    np.testing.assert_allclose(tensors["w"], weights, atol=step / 2 + 1e-6)
    assert cli.main(["decompress", str(out), "-o", str(tmp_path / "back.npz"), "-q"]) == 0


def _uniform_config(header: dict) -> dict:
    """The configuration of the first ``uniform`` stage anywhere in *header*."""
    found = []

    def visit(node):
        if isinstance(node, dict):
            if node.get("name") == "uniform":
                found.append(node["configuration"])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(header)
    return found[0]


def test_auto_keeps_the_bits_mode_where_only_it_fits_the_decode_cap():
    """The levels mode declares up to 2.5x the bits mode's decode steps (4-bit symbols); on a blob
    it would shrink ~19x, its cost passes rule 4.8.2's default share and the bits mode's does not,
    so ``auto`` keeps the bits mode (else the pipeline would drop ``arith`` from the blob)."""
    from nnzip.limits import DEFAULT_OPS_PER_DATA_BYTE
    from nnzip.stages.policy import arith_cost_ok

    rng = np.random.default_rng(13)
    data = pack(np.where(rng.random(40000) < 0.97, 8, rng.integers(6, 11, 40000)), 4)
    levels, bits = encode(data, mode="levels", symbol_bits=4), encode(data, symbol_bits=4)
    assert len(levels[0]) <= len(bits[0]) - arith.LEVELS_MIN_SAVING
    assert ARITH.decode_cost(BytesSpec(len(data)), levels[1], len(levels[0])).ops > DEFAULT_OPS_PER_DATA_BYTE * len(levels[0])
    chosen = arith.encode_below(data, 1 << 30)
    assert chosen == bits and arith_cost_ok(len(data), chosen)


def test_encoder_buffer_and_limit():
    """The encoder codes into twice the input's size first (not the 27x worst-case bound: a 64 MiB
    chunk would need 1.7 GB); high-entropy symbols after a run of zeros still come out whole, a
    limit below the stream's size still gives up, and the kernel reports a full buffer as -1."""
    from nnzip.stages import _arith_kernels as kernels

    data = bytes(5000) + bytes(np.random.default_rng(14).integers(0, 256, 3000, dtype=np.uint8))
    stream, config = encode(data, symbol_bits=8, zero=0, order=0)
    assert decode(stream, len(data), config) == data
    assert arith._encode(data, arith.Arith(8, 0, 0), len(stream)) is None
    assert arith._encode(data, arith.Arith(8, 0, 0), len(stream) + 1) == stream
    small = np.empty(100 + 16, dtype=np.uint8)
    assert kernels.encode_levels(np.frombuffer(data, np.uint8), 8 * len(data), 8, 0, 0, kernels.steps(), 100, small) == -1
