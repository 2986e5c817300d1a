"""The foundation stages ``raw`` and ``dense``."""

import numpy as np
import pytest

from .common import check_golden, check_roundtrip
from nnzip.errors import FormatError
from nnzip.stages import ArraySpec, get_stage


@pytest.mark.parametrize("dtype", ["<f4", "<f2", "<f8", "<i8", "|u1", "|b1"])
def test_raw_roundtrip(dtype):
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((5, 7)) * 10).astype(dtype)
    check_roundtrip("raw", data)


def test_raw_zero_d_and_empty():
    check_roundtrip("raw", np.array(3, dtype="<i8"))
    check_roundtrip("raw", np.zeros((0, 4), dtype="<f4"))


def test_raw_rejects_wrong_length():
    with pytest.raises(FormatError, match="expected 16 bytes"):
        get_stage("raw").decode(b"\0" * 15, ArraySpec.make("<f4", [4]), {})


def test_raw_rejects_config_fields():
    with pytest.raises(FormatError, match="unknown configuration"):
        get_stage("raw").check_config({"x": 1}, ArraySpec.make("<f4", [4]))


def test_dense_roundtrip():
    check_roundtrip("dense", np.arange(12, dtype="<f4").reshape(3, 4))


def test_golden_raw():
    check_golden("raw", "f4-2x3", np.array([[1.5, -2.0, 0.0], [3.25, 1e-3, -7.0]], dtype="<f4"))
