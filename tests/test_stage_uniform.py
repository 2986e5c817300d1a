"""The ``uniform`` stage: entropy-constrained scalar quantization's grid."""

from __future__ import annotations

import base64
import struct

import numpy as np
import pytest

from .common import check_golden, check_roundtrip, encode_decode
from nnzip.errors import ConfigError, FormatError
from nnzip.stages import ArraySpec, get_stage

UNIFORM = get_stage("uniform")


def laplace(n=64, seed=0):
    return np.random.default_rng(seed).laplace(0, 0.2, n).astype(np.float32)


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8"])
def test_values_are_on_the_grid_within_half_a_step(dtype):
    data = laplace(500).astype(dtype)
    decoded, codes, config = encode_decode("uniform", data, {"step": 0.05})
    assert codes.dtype == np.dtype("<u2")
    k = decoded.astype(np.float64) / 0.05
    np.testing.assert_allclose(k, np.rint(k), atol=1e-2 if dtype == "<f2" else 1e-6)
    assert np.abs(decoded.astype(np.float64) - data.astype(np.float64)).max() <= 0.025 * (1 + 1e-3) + (1e-3 if dtype == "<f2" else 0)


def test_step_sd_scales_with_the_values():
    data = laplace(1000)
    _, _, small = encode_decode("uniform", data, {"step_sd": 0.5})
    _, _, large = encode_decode("uniform", data * 10, {"step_sd": 0.5})
    step = lambda c: struct.unpack("<d", base64.b64decode(c["step"]))[0]  # noqa: E731
    assert step(large) == pytest.approx(10 * step(small)) and step(small) == pytest.approx(0.5 * float(np.std(data.astype(np.float64))))


def test_roundtrip_error_bound_and_edge_cases():
    check_roundtrip("uniform", laplace(300), {"step": 0.01}, max_rel_error=0.05)
    check_roundtrip("uniform", np.zeros((0, 3), np.float32), {"step": 0.1}, max_rel_error=1.0)
    decoded, _, _ = encode_decode("uniform", np.full((4, 4), 0.7, np.float32), {"step_sd": 1.0})
    np.testing.assert_allclose(decoded, 0.7, rtol=1e-6)  # constant input: exact


def test_encoder_refusals():
    spec = ArraySpec.of(laplace())
    for params, fragment in [({}, "exactly one"), ({"step": 0.1, "step_sd": 1.0}, "exactly one"), ({"step": 0}, "positive"),
                             ({"step": float("nan")}, "positive"), ({"step": 1e-9}, "levels"), ({"step_sd": -1.0}, "positive")]:
        with pytest.raises(ConfigError, match=fragment):
            UNIFORM.encode(laplace(), spec, params)
    with pytest.raises(ConfigError, match="finite"):
        UNIFORM.encode(np.array([1.0, np.inf], np.float32), ArraySpec.make("<f4", [2]), {"step": 0.1})


def _config(step=0.1, offset=-3):
    return {"step": base64.b64encode(struct.pack("<d", step)).decode(), "offset": offset}


@pytest.mark.parametrize("config, fragment", [
    ({**_config(), "extra": 1}, "unknown configuration"),                                  # rule 1
    ({"step": _config()["step"]}, "offset"),                                              # rule 1
    ({**_config(), "step": base64.b64encode(b"1234").decode()}, "partial element"),       # rule 2
    (_config(step=-0.5), "positive"),                                                     # rule 2
    (_config(step=float("inf")), "positive"),                                             # rule 2
    ({**_config(), "offset": 1.5}, "offset"),                                             # rule 3
    (_config(offset=2**41), "offset"),                                                    # rule 3
])
def test_decoder_rejects_bad_configurations(config, fragment):
    with pytest.raises(FormatError, match=fragment):
        UNIFORM.check_config(config, ArraySpec.make("<f4", [4]))


def test_decoder_rejects_integer_input_spec_and_bad_codes():
    with pytest.raises(FormatError, match="float"):
        UNIFORM.check_config(_config(), ArraySpec.make("<i4", [4]))                       # rule 4
    with pytest.raises(FormatError, match="codes"):
        UNIFORM.decode(np.zeros(4, np.uint8), ArraySpec.make("<f4", [4]), _config())     # rule 5


def test_golden_uniform_laplace():
    check_golden("uniform", "laplace", laplace(), {"step": 0.1})
