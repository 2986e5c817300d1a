"""Rate-distortion rounding for ``uniform`` (encoder parameter ``rdo``, ``--rdo``; spec/stages/uniform.md).

The decoder is unchanged, so these tests check the encoder's choice (one level toward zero at
most, never outside the nearest rounding's range), that it pays at equal weight error on a
heavy-tailed weight matrix, that nothing changes without it, and the command line's checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from nnzip import cli
from nnzip.pipeline import TensorPlan, encode_tensor
from nnzip.stages.uniform import Uniform, rdo_levels


def laplacian(shape=(256, 512), seed=0) -> np.ndarray:
    """Weights with the heavy tails of trained layers (Laplacian, scale 0.05)."""
    return np.random.default_rng(seed).laplace(0.0, 0.05, shape).astype(np.float32)


def measure(array: np.ndarray, step: float, rdo: float = 0.0) -> tuple[int, float]:
    """(stored bytes, relative error) through the real pipeline: dense + uniform + smallest coder."""
    params = {"step": step, **({"rdo": rdo} if rdo else {})}
    item = encode_tensor("w", array, TensorPlan("dense", {}, [("uniform", params)]))
    a = array.astype(np.float64)
    return sum(map(len, item.blobs)), float(np.linalg.norm(a - item.reconstruction) / np.linalg.norm(a))


def test_rdo_moves_values_at_most_one_level_toward_zero():
    scaled = np.random.default_rng(1).laplace(0, 1.5, 100_000)
    nearest = np.rint(scaled).astype(np.int64)
    chosen = rdo_levels(scaled, nearest, 0.12)
    moved = chosen != nearest
    assert 0.01 < moved.mean() < 0.5  # it does something, and not everything
    np.testing.assert_array_equal(chosen[moved], (nearest - np.sign(nearest))[moved])
    assert not (moved & (nearest == 0)).any()
    assert chosen.min() >= nearest.min() and chosen.max() <= nearest.max()
    assert np.abs(scaled - chosen).max() < 1.5
    np.testing.assert_array_equal(rdo_levels(scaled, nearest, 0.0), nearest)


def test_rdo_decodes_as_multiples_of_the_step_with_the_same_configuration_fields():
    array = laplacian()
    step = float(np.std(array)) * 1.41
    codes, config = Uniform.encode(array, Uniform_spec(array), {"step": step, "rdo": 0.12})
    assert set(config) == {"step", "offset"}  # nothing about rdo is stored: decoding is unchanged
    values = Uniform.decode(codes, Uniform_spec(array), config).astype(np.float64)
    levels = np.rint(values / step)
    np.testing.assert_allclose(values, levels * step, rtol=1e-6, atol=1e-12)
    assert np.abs(values - array).max() < 1.5 * step


def Uniform_spec(array):
    """The stage's input spec for *array*."""
    from nnzip.stages import ArraySpec

    return ArraySpec.of(array)


@pytest.mark.parametrize("factor", [1.0, 1.41])
def test_rdo_is_smaller_at_equal_weight_error(factor):
    """RDOQ's point lies below the plain rounding's bytes-vs-error curve (interpolated on log-log)."""
    array = laplacian()
    spread = float(np.std(array))
    rdo_bytes, rdo_error = measure(array, factor * spread, 0.12)
    plain = sorted((e, b) for b, e in (measure(array, f * spread) for f in np.linspace(0.8 * factor, 1.6 * factor, 9)))
    (e0, b0), (e1, b1) = next((p, q) for p, q in zip(plain, plain[1:]) if p[0] <= rdo_error <= q[0])
    w = (np.log(rdo_error) - np.log(e0)) / (np.log(e1) - np.log(e0))
    plain_bytes = float(np.exp(np.log(b0) + w * (np.log(b1) - np.log(b0))))
    assert rdo_bytes < 0.99 * plain_bytes, (rdo_bytes, plain_bytes)  # measured: 2-6% smaller


def test_without_rdo_nothing_changes():
    array = laplacian(seed=2)
    step = float(np.std(array)) * 0.35
    plain = encode_tensor("w", array, TensorPlan("dense", {}, [("uniform", {"step": step})]))
    zero = encode_tensor("w", array, TensorPlan("dense", {}, [("uniform", {"step": step, "rdo": 0})]))
    assert plain.blobs == zero.blobs and plain.entry == zero.entry


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "m.safetensors"
    save_file({"w": laplacian(), "b": np.zeros(512, np.float32)}, str(source))
    return source


def test_cli_rdo_makes_a_smaller_file_that_decodes(tmp_path):
    source = _source(tmp_path)
    plain, rdo = tmp_path / "plain.nnz", tmp_path / "rdo.nnz"
    assert cli.main(["compress", str(source), "-o", str(plain), "-q", "--uniform", "1.41"]) == 0
    assert cli.main(["compress", str(source), "-o", str(rdo), "-q", "--uniform", "1.41", "--rdo", "0.12"]) == 0
    assert rdo.stat().st_size < 0.97 * plain.stat().st_size
    back = tmp_path / "back.safetensors"
    assert cli.main(["decompress", str(rdo), "-o", str(back), "-q"]) == 0
    rebuilt, original = load_file(str(back))["w"], laplacian()
    assert 0 < np.linalg.norm(rebuilt - original) / np.linalg.norm(original) < 0.5
    layer = tmp_path / "layer.nnz"  # the same through a per-tensor override
    assert cli.main(["compress", str(source), "-o", str(layer), "-q", "--layer", "w:uniform=1.41,rdo=0.12"]) == 0
    back_layer = tmp_path / "back_layer.safetensors"
    assert cli.main(["decompress", str(layer), "-o", str(back_layer), "-q"]) == 0
    np.testing.assert_array_equal(load_file(str(back_layer))["w"], rebuilt)  # the same codes; only the recorded plan differs


@pytest.mark.parametrize("argv, fragment, status", [
    (["--rdo", "0.12"], "--rdo tunes --uniform's rounding", 2),  # a flag that needs another: a usage error
    (["--uniform", "1", "--rdo", "5"], "rdo must be from 0 to 4", 1),
    (["--uniform", "1", "--rdo", "-0.1"], "rdo must be from 0 to 4", 1),
    (["--layer", "w:uniform=1,rdo=nan"], "rdo must be from 0 to 4", 1),
])
def test_cli_rdo_errors_are_one_line(tmp_path, capsys, argv, fragment, status):
    source = _source(tmp_path)
    out = tmp_path / "out.nnz"
    assert cli.main(["compress", str(source), "-o", str(out), *argv]) == status
    err = capsys.readouterr().err
    assert err.startswith("nnzip: error: ") and err.count("\n") == 1 and fragment in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "tmp" in p.name]
