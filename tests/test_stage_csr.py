"""The ``csr`` transform: magnitude pruning, kept values ``data`` plus an index coding."""

import json

import numpy as np
import pytest

from .common import check_golden, check_roundtrip, encode_decode
from nnzip.errors import ConfigError, FormatError
from nnzip.stages import ArraySpec, get_stage
from nnzip.stages.csr import (
    csr_arrays,
    csr_positions,
    gap_codes,
    gap_positions,
    packed_entropy_bytes,
)

CSR = get_stage("csr")
CODINGS = ["auto", "gaps", "csr", "mask"]


def weights(shape, seed=0, dtype="<f4"):
    """Normal-ish weights without ties."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def check_pruned(data, decoded, removed):
    """The three invariants: exact pruned count, bit-identical kept values, zeros elsewhere."""
    flat, out = data.reshape(-1), decoded.reshape(-1)
    magnitude = np.abs(flat.astype(np.float64))
    order = np.argsort(magnitude, kind="stable")
    pruned = np.zeros(flat.size, dtype=bool)
    pruned[order[:removed]] = True
    assert np.all(out[pruned] == 0)
    assert out[~pruned].tobytes() == flat[~pruned].tobytes()


# --- round trips and invariants ------------------------------------------------------


@pytest.mark.parametrize("coding", CODINGS)
@pytest.mark.parametrize("prune", [0.0, 0.3, 0.5, 0.8, 0.9, 0.99, 1.0])
def test_prune_invariants(coding, prune):
    data = weights((37, 23), seed=int(prune * 100))
    decoded, parts, config = encode_decode("csr", data, {"prune": prune, "index_coding": coding})
    removed = int(np.floor(prune * data.size + 0.5))
    assert config["kept"] == data.size - removed == parts["data"].size
    check_pruned(data, decoded, removed)
    if coding != "auto":
        assert config["index_coding"] == coding


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8"])
def test_dtypes_keep_exact_values(dtype):
    data = weights((16, 16), dtype=dtype)
    decoded, parts, _ = encode_decode("csr", data, {"prune": 0.6})
    assert parts["data"].dtype == data.dtype
    check_pruned(data, decoded, int(np.floor(0.6 * 256 + 0.5)))


def test_prune_zero_is_lossless():
    check_roundtrip("csr", weights((9, 7)), {"prune": 0.0})


def test_ties_are_broken_by_lower_flat_index():
    data = np.array([[0.5, -0.5, 0.5], [-0.0, 0.0, 0.5]], dtype="<f4")
    decoded, _, config = encode_decode("csr", data, {"prune": 0.5})  # removes 3: both zeros, then the first 0.5
    assert config["kept"] == 3
    assert decoded.tolist() == [[0.0, -0.5, 0.5], [0.0, 0.0, 0.5]]


def test_threshold_removes_at_or_below_and_keeps_nan():
    # Compared in float64: |float32(0.2)| > 0.2, so exactly representable values are used here.
    data = np.array([0.125, -0.25, 0.25, 0.375, np.nan, -0.0625], dtype="<f4")
    decoded, _, config = encode_decode("csr", data, {"threshold": 0.25})
    assert config["kept"] == 2
    assert decoded[3] == np.float32(0.375) and np.isnan(decoded[4])
    assert np.all(decoded[[0, 1, 2, 5]] == 0)


def test_round_half_up_count():
    data = weights((5,))
    _, _, config = encode_decode("csr", data, {"prune": 0.5})  # 2.5 rounds up to 3 removed
    assert config["kept"] == 2


@pytest.mark.parametrize("coding", CODINGS)
def test_empty_zero_d_one_element(coding):
    for data in (np.zeros((0, 4), "<f4"), np.zeros((3, 0), "<f4"), np.array(1.5, "<f4"), np.array([-2.0], "<f8")):
        for prune in (0.0, 1.0):
            decoded, _, _ = encode_decode("csr", data, {"prune": prune, "index_coding": coding})
            assert decoded.shape == data.shape and decoded.dtype == data.dtype
            expected = data if prune == 0.0 else np.zeros_like(data)
            assert decoded.tobytes() == expected.tobytes()


def test_conv_kernel_rows_for_csr_coding():
    data = weights((3, 3, 4, 8))
    decoded, parts, _ = encode_decode("csr", data, {"prune": 0.7, "index_coding": "csr"})
    assert parts["indptr"].shape == (36,) and parts["indptr"].dtype == np.uint8
    check_pruned(data, decoded, int(np.floor(0.7 * data.size + 0.5)))


def test_parts_and_dtypes_of_each_coding():
    data = weights((300, 300))
    for coding, names in [("gaps", ["data", "gaps"]), ("csr", ["data", "indices", "indptr"]), ("mask", ["data", "mask"])]:
        _, parts, config = encode_decode("csr", data, {"prune": 0.9, "index_coding": coding})
        assert list(parts) == names
        for name in names[1:]:
            assert parts[name].dtype.kind == "u"
    _, parts, _ = encode_decode("csr", data, {"prune": 0.9, "index_coding": "csr"})
    assert parts["indices"].dtype == np.uint16 and parts["indptr"].dtype == np.uint16  # n = 300
    _, parts, config = encode_decode("csr", data, {"prune": 0.9, "index_bits": 12})
    assert config["index_coding"] == "gaps" and parts["gaps"].dtype == np.uint16


def test_auto_picks_the_smallest_estimate():
    data = weights((64, 48), seed=3)
    for prune in (0.5, 0.9, 0.99):
        estimates = {}
        for coding in ("gaps", "csr", "mask"):
            _, parts, _ = encode_decode("csr", data, {"prune": prune, "index_coding": coding})
            estimates[coding] = sum(packed_entropy_bytes(a) for name, a in parts.items() if name != "data")
        _, parts, config = encode_decode("csr", data, {"prune": prune})
        auto = sum(packed_entropy_bytes(a) for name, a in parts.items() if name != "data")
        assert auto == min(estimates.values())


def test_gap_codes_escape_layout():
    # Steps 1, 1, 4, 8 in 2 bits (limit 3): 4 = escape + 1, 8 = escape, escape + 2.
    codes = gap_codes(np.array([0, 1, 5, 13]), 2)
    assert codes.tolist() == [1, 1, 0, 1, 0, 0, 2]
    assert gap_positions(codes, 2, 4, 14).tolist() == [0, 1, 5, 13]
    # One bit: the bitmap up to the last kept position.
    assert gap_codes(np.array([0, 2, 3]), 1).tolist() == [1, 0, 1, 1]


def test_gap_fillers_cost_no_data_values():
    data = np.zeros(1000, "<f4")
    data[[3, 900]] = [1.0, 2.0]
    _, parts, config = encode_decode("csr", data, {"threshold": 0.0, "index_bits": 4})
    assert parts["data"].tolist() == [1.0, 2.0]
    assert config["codes"] == 2 + (897 - 1) // 15  # escapes only in the index stream


def test_csr_pair_layout():
    indices, indptr = csr_arrays(np.array([1, 3, 4, 10, 11]), 3, 4)
    assert indices.tolist() == [1, 1, 0, 2, 0] and indptr.tolist() == [2, 1, 2]
    assert csr_positions(indices, indptr, 5, 3, 4).tolist() == [1, 3, 4, 10, 11]


def test_packed_entropy_bytes():
    assert packed_entropy_bytes(np.zeros(0, np.uint8)) == 0.0
    assert packed_entropy_bytes(np.zeros(80, np.uint8)) == 0.0  # constant bytes carry no information
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 4096).astype(np.uint8)
    assert packed_entropy_bytes(noise) <= 4096  # capped at the packed length
    assert packed_entropy_bytes(np.array([1, 0] * 512, np.uint8)) <= 1  # 1-bit packing: one repeated byte


def test_quantizable_parts_and_json_config():
    assert CSR.quantizable_parts({}) == ("data",)
    _, config = CSR.encode(weights((8, 8)), ArraySpec.make("<f4", [8, 8]), {"prune": 0.5, "index_coding": "gaps"})
    assert json.loads(json.dumps(config)) == config


# --- encoder parameter errors -------------------------------------------------------------


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "exactly one"),
        ({"prune": 0.5, "threshold": 0.1}, "exactly one"),
        ({"prune": 1.5}, r"\[0, 1\]"),
        ({"prune": "half"}, "number"),
        ({"threshold": -1.0}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"prune": 0.5, "index_coding": "coo"}, "index_coding"),
        ({"prune": 0.5, "index_bits": 17}, "index_bits"),
        ({"prune": 0.5, "index_bits": 4, "index_coding": "mask"}, "only to the 'gaps'"),
        ({"prune": 0.5, "sparsity": 0.5}, "unknown parameters"),
    ],
)
def test_encode_rejects_bad_params(params, message):
    data = weights((4, 4))
    with pytest.raises(ConfigError, match=message):
        CSR.encode(data, ArraySpec.of(data), params)


def test_encode_rejects_integer_tensors():
    data = np.arange(6, dtype="<i2")
    with pytest.raises(ConfigError, match="only float"):
        CSR.encode(data, ArraySpec.of(data), {"prune": 0.5})


# --- golden bytes ----------------------------------------------------------------------


def golden_data():
    """A 5x6 float32 matrix with distinct magnitudes and one long run of small values."""
    values = np.linspace(-3, 3, 30).astype("<f4").reshape(5, 6)
    values[1:4, :] *= 0.01
    return values


@pytest.mark.parametrize("coding", ["gaps", "csr", "mask"])
def test_golden_csr(coding):
    params = {"prune": 0.6, "index_coding": coding}
    if coding == "gaps":
        params["index_bits"] = 2
    check_golden("csr", f"f4-5x6-{coding}", golden_data(), params)


# --- MUST-reject rules of spec/stages/csr.md -------------------------------------------------

SPEC = ArraySpec.make("<f4", [4, 5])


def parts_for(config, spec=SPEC, **overrides):
    """Zero parts matching the configuration, with some replaced."""
    parts = {name: np.zeros(s.shape, s.dtype) for name, s in CSR.part_specs(spec, config).items()}
    parts.update({k: np.asarray(v, dtype=parts[k].dtype) for k, v in overrides.items()})
    return parts


def rejects(config, parts=None, match=None, spec=SPEC):
    """Assert that check_config (and then decode, if parts are given) raises FormatError."""
    with pytest.raises(FormatError, match=match):
        CSR.check_config(config, spec)
        CSR.decode(parts if parts is not None else parts_for(config, spec), spec, config)


def test_reject_unknown_field():
    rejects({"kept": 0, "index_coding": "mask", "rows": 4}, match="unknown configuration")


def test_reject_non_float_tensor():
    rejects({"kept": 0, "index_coding": "mask"}, spec=ArraySpec.make("<i4", [4, 5]), match="float tensor")


@pytest.mark.parametrize("kept", [-1, 21, "3", None])
def test_reject_kept_out_of_range(kept):
    rejects({"kept": kept, "index_coding": "mask"}, match="kept")


def test_reject_unknown_coding():
    rejects({"kept": 1, "index_coding": "coo"}, match="index_coding")


def test_reject_gap_fields_with_other_codings():
    rejects({"kept": 1, "index_coding": "mask", "index_bits": 3}, match="only allowed with the 'gaps'")


@pytest.mark.parametrize("bits", [0, 17, "4"])
def test_reject_bad_index_bits(bits):
    rejects({"kept": 1, "index_coding": "gaps", "index_bits": bits, "codes": 1}, match="index_bits")


@pytest.mark.parametrize("codes", [1, 11, None])
def test_reject_codes_count_out_of_range(codes):
    # kept 2, 20 elements, 2-bit escapes advance 3: at most 2 + (20 - 2) // 3 = 8 codes.
    rejects({"kept": 2, "index_coding": "gaps", "index_bits": 2, "codes": codes}, match="codes")


def test_reject_codes_with_nothing_kept():
    rejects({"kept": 0, "index_coding": "gaps", "index_bits": 2, "codes": 1}, match="codes")


def gaps_config(codes_count, kept=2):
    return {"kept": kept, "index_coding": "gaps", "index_bits": 2, "codes": codes_count}


def test_reject_gap_code_over_the_limit():
    config = gaps_config(2)
    rejects(config, parts_for(config, gaps=[1, 4]), match="exceeds")


def test_reject_gap_stream_ending_with_escape():
    config = gaps_config(3)
    rejects(config, parts_for(config, gaps=[1, 1, 0]), match="ends with an escape")


def test_reject_gap_value_count_mismatch():
    config = gaps_config(3)
    rejects(config, parts_for(config, gaps=[1, 1, 1]), match="3 value codes")


def test_reject_gap_position_outside_tensor():
    config = gaps_config(8)
    rejects(config, parts_for(config, gaps=[0, 0, 0, 0, 0, 0, 3, 3]), match="outside the tensor")


def test_reject_csr_row_count_over_columns():
    config = {"kept": 6, "index_coding": "csr"}
    rejects(config, parts_for(config, indptr=[6, 0, 0, 0]), match="claims 6 values")


def test_reject_csr_counts_not_matching_kept():
    config = {"kept": 3, "index_coding": "csr"}
    rejects(config, parts_for(config, indptr=[1, 1, 0, 0]), match="sum to 2")


def test_reject_csr_column_outside_row():
    config = {"kept": 2, "index_coding": "csr"}
    rejects(config, parts_for(config, indices=[3, 1], indptr=[2, 0, 0, 0]), match="column 5")


def test_reject_mask_value_not_bit():
    config = {"kept": 1, "index_coding": "mask"}
    rejects(config, parts_for(config, mask=[2] + [0] * 19), match="not 0 or 1")


def test_reject_mask_count_mismatch():
    config = {"kept": 1, "index_coding": "mask"}
    rejects(config, parts_for(config, mask=[1, 1] + [0] * 18), match="2 ones")


def test_reject_parts_not_matching_their_specs():
    config = {"kept": 2, "index_coding": "mask"}
    rejects(config, {**parts_for(config), "data": np.zeros(3, "<f4")}, match="part 'data'")
    rejects(config, {"data": np.zeros(2, "<f4")}, match="expected parts")
