"""The ``byteplanes`` transform."""

import json
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from .common import check_golden, check_roundtrip, encode_decode
from nnzip.errors import ConfigError, FormatError
from nnzip.stages import ArraySpec, get_stage
from . import reference as oracle

BytePlanes = get_stage("byteplanes")
FLOATS = ["<f2", "<f4", "<f8"]
INTS = ["|u1", "<u2", "<u4", "<u8", "|i1", "<i2", "<i4", "<i8"]


def special_values(dtype: str) -> np.ndarray:
    """NaNs with payloads and both signs, -0.0, infinities, subnormals, extremes."""
    info = np.finfo(dtype)
    values = np.array([0.0, -0.0, np.inf, -np.inf, info.tiny, -info.tiny, info.smallest_subnormal,
                       -info.smallest_subnormal, info.max, info.min, 1.0, -1.5, np.nan], dtype=dtype)
    words = values.view(f"<u{values.itemsize}").copy()
    quiet = words[-1]
    payloads = np.array([quiet | 1, quiet | 5, (quiet | 3) | (1 << (8 * values.itemsize - 1)), quiet ^ (1 << 2) | 1],
                        dtype=words.dtype)  # quiet and signalling NaNs with payloads
    return np.concatenate([words, payloads]).view(dtype)


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("mode", ["auto", "split", "rotate"])
def test_float_roundtrip(dtype, mode):
    rng = np.random.default_rng(0)
    check_roundtrip("byteplanes", (rng.standard_normal((6, 7)) * 0.05).astype(dtype), {"mode": mode})
    check_roundtrip("byteplanes", special_values(dtype), {"mode": mode})


@pytest.mark.parametrize("dtype", INTS)
def test_integer_roundtrip(dtype):
    info = np.iinfo(dtype)
    data = np.array([info.min, info.max, 0, 1, info.max // 3], dtype=dtype)
    check_roundtrip("byteplanes", data)
    check_roundtrip("byteplanes", data, {"mode": "split"})


@pytest.mark.parametrize("dtype", ["<f4", "<i2"])
def test_zero_d_empty_and_one_element(dtype):
    check_roundtrip("byteplanes", np.array(3, dtype=dtype))
    check_roundtrip("byteplanes", np.zeros((0, 4), dtype=dtype))
    check_roundtrip("byteplanes", np.ones(1, dtype=dtype))


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(st.sampled_from(FLOATS), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
                  elements={"allow_nan": True, "allow_infinity": True, "allow_subnormal": True}))
def test_roundtrip_property(data):
    check_roundtrip("byteplanes", data)


# --- invariants ---------------------------------------------------------------------------


def test_parts_are_bytes_in_order():
    data = np.array([[1.5, -2.0], [3e-40, -0.0]], dtype="<f4")
    parts, config = BytePlanes.encode(data, ArraySpec.of(data), {"mode": "split"})
    assert list(parts) == ["plane0", "plane1", "plane2", "plane3"]
    words = data.view("<u4")
    for i, plane in enumerate(parts.values()):
        assert plane.dtype == np.uint8 and plane.shape == data.shape
        assert (plane == (words >> (8 * i)) & 0xFF).all()
    assert BytePlanes.quantizable_parts(config) == ()


def test_rotate_puts_the_float32_exponent_in_the_top_plane():
    data = (np.random.default_rng(1).standard_normal(1000) * 0.1).astype("<f4")
    parts, _ = BytePlanes.encode(data, ArraySpec.of(data), {"mode": "rotate"})
    words = data.view("<u4")
    assert (parts["plane3"] == (words >> 23) & 0xFF).all()  # the 8 exponent bits
    assert (parts["plane0"] & 1 == words >> 31).all()  # the sign is the lowest bit
    assert (parts["plane2"] == (words >> 15) & 0xFF).all()  # top mantissa byte


def test_auto_picks_the_smaller_estimate():
    weights = (np.random.default_rng(2).standard_normal(50_000) * 0.05).astype("<f4")
    _, config = BytePlanes.encode(weights, ArraySpec.of(weights), {})
    words = weights.view("<u4")
    split = oracle.planes_estimate(oracle.byte_planes(words))
    rotate = oracle.planes_estimate(oracle.byte_planes(oracle.rotate_left(words)))
    assert config["mode"] == ("split" if split < rotate else "rotate")
    ints = np.arange(10, dtype="<i4")
    assert BytePlanes.encode(ints, ArraySpec.of(ints), {})[1] == {"mode": "split"}


def test_planes_shrink_trained_like_weights():
    from nnzip.stages.policy import best_bytes_stage

    weights = (np.random.default_rng(3).standard_normal(100_000) * 0.05).astype("<f4")
    _, parts, _ = encode_decode("byteplanes", weights)
    coded = sum(len(best_bytes_stage(p.tobytes())[1]) for p in parts.values())
    assert coded < 0.87 * weights.nbytes  # the exponent plane codes to about a third


def test_encoder_rejects_bad_params():
    with pytest.raises(ConfigError, match="mode"):
        BytePlanes.encode(np.zeros(3, "<i4"), ArraySpec.make("<i4", [3]), {"mode": "rotate"})
    with pytest.raises(ConfigError, match="mode"):
        BytePlanes.encode(np.zeros(3, "<f4"), ArraySpec.make("<f4", [3]), {"mode": "bits"})
    with pytest.raises(ConfigError, match="float or integer"):
        BytePlanes.encode(np.zeros(3, bool), ArraySpec.make("|b1", [3]), {})
    with pytest.raises(ConfigError, match="unknown"):
        BytePlanes.encode(np.zeros(3, "<f4"), ArraySpec.make("<f4", [3]), {"planes": 2})


# --- golden bytes ---------------------------------------------------------------------------


def test_golden_f4rotate():
    check_golden("byteplanes", "f4rotate", np.array([[0.25, -1.5, 3e-3], [-0.0, 1e-40, 7.0]], dtype="<f4"), {"mode": "rotate"})


def test_golden_f2split():
    check_golden("byteplanes", "f2split", np.array([1.0, -2.5, 0.0999, 65504.0], dtype="<f2"), {"mode": "split"})


def test_golden_i4split():
    check_golden("byteplanes", "i4split", np.array([[1, -1], [70000, -2**31]], dtype="<i4"))


# --- MUST-reject rules of spec/stages/byteplanes.md, in its order ---------------------------


@pytest.mark.parametrize("config", [{"mode": "split", "x": 1}, {"mode": "bits"}, {}, {"mode": 1}])
def test_reject_1_bad_configuration(config):
    with pytest.raises(FormatError):
        BytePlanes.check_config(config, ArraySpec.make("<f4", [3]))


@pytest.mark.parametrize("dtype", INTS)
def test_reject_2_rotate_for_integers(dtype):
    with pytest.raises(FormatError, match="rotate"):
        BytePlanes.check_config({"mode": "rotate"}, ArraySpec.make(dtype, [3]))


def test_reject_3_boolean_tensor():
    with pytest.raises(FormatError, match="cannot rebuild"):
        BytePlanes.check_config({"mode": "split"}, ArraySpec.make("|b1", [3]))


@pytest.mark.parametrize(
    "parts",
    [
        {"plane0": np.zeros(3, np.uint8)},  # plane1 missing
        {"plane0": np.zeros(3, np.uint8), "plane1": np.zeros(3, np.uint16)},
        {"plane0": np.zeros(3, np.uint8), "plane1": np.zeros(4, np.uint8)},
        {"plane0": np.zeros((3, 1), np.uint8), "plane1": np.zeros(3, np.uint8)},
    ],
)
def test_reject_4_bad_part(parts):
    with pytest.raises(FormatError, match="must be uint8"):
        BytePlanes.decode(parts, ArraySpec.make("<f2", [3]), {"mode": "split"})


def test_large_lossless_tensor_is_within_the_default_work_cap():
    """A 300 MB float32 tensor stored lossless (rotate) passes rule 4.8.1 by default.

    The inverse rotation works in place in blocks, so its declared working memory does not
    grow with the tensor (it was 2 x the tensor, which refused fp32 tensors above ~89 MB).
    """
    from nnzip.pipeline import TensorPlan, _check_codecs, _spec, check_tensor_entry, encode_tensor

    small = encode_tensor("t", np.ones((4, 1024), np.float32), TensorPlan("byteplanes", {"mode": "rotate"}, entropy=False))
    entry = json.loads(json.dumps(small.entry))
    rows = 75_000
    entry["shape"] = [rows, 1024]
    for index, part in enumerate(entry["parts"]):
        part["shape"], part["blob"] = [rows, 1024], index
    sizes = []
    for part in entry["parts"]:  # raw (serialized-only) chains: each blob is exactly its serializer's size
        stage, spec = _check_codecs(part["codecs"], _spec(part, "part"), "part")[-1]
        sizes.append(stage.encoded_size(spec))
    checked = check_tensor_entry(entry, sizes)
    assert checked.work < 2 * rows * 1024 * 4
