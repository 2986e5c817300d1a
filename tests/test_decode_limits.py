"""Decode cost (spec/container.md §4.3, rules 4.8.1 and 4.8.2), rule 4.9, the stages' range
rules, and the floating-point tolerances of the computing decoders (fft, svd).

* crafted files naming too much work or arithmetic are refused by ``nnzip decompress``
  with a one-line error naming the rule, exit status 1, no output and no temp file;
* every stage's declared working memory is an upper bound of what its decoder allocates
  (``tracemalloc`` traces numpy's buffers);
* the largest files the defaults allow decode in a subprocess within 1 GiB of peak RSS
  (CPU time is reported, not asserted);
* fft and svd decoding agree with independent implementations written here (dense DCT and
  DFT matrices, exactly rounded sums) within the tolerances the stage pages state, and
  blockwise fft decoding gives the same bits whatever the block size.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from .decode_cost_tools import GOLDEN, WORST_CASES, craft, fft_low_file, lzw_part, raw_part, svd_file
from .nnz_tools import assert_decompress_rejects
from nnzip import api, header_rules
from nnzip.container import read_container
from nnzip.errors import ConfigError, FormatError
from nnzip.limits import DecodeLimits
from nnzip.pipeline import TensorPlan, check_tensor_entry, decode_tensor, encode_tensor
from nnzip.stages import ArraySpec, get_stage
from nnzip.stages import fft as fft_module
from nnzip.stages import kmeans as kmeans_module
from nnzip.stages import uniform as uniform_module
from nnzip.stages.base import LossyRangeError

TESTS = Path(__file__).parent
ROOT = TESTS.parent
F32_MAX = float(np.finfo(np.float32).max)


# --- helpers --------------------------------------------------------------------------------


def assert_rejected(tmp_path: Path, data: bytes, capsys, *fragments: str, header_rule: bool = True) -> None:
    """``nnzip decompress`` refuses *data*: status 1, one stderr line with *fragments*, no output.

    A *header_rule* is found without decoding, so ``inspect`` refuses the file too.
    """
    assert_decompress_rejects(tmp_path, data, capsys, *fragments, inspect_too=header_rule)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nnz"], "a temporary output was left behind"


def header_of(data: bytes) -> dict:
    return read_container(io.BytesIO(data)).header


def first_entry(data: bytes):
    header = header_of(data)
    return check_tensor_entry(header["tensors"][0], header_rules.blob_sizes(header))


# --- rule 4.8.1: working memory -------------------------------------------------------------


def test_rule4_8_1_fft_low_order_too_large(tmp_path, capsys):
    """12 M coefficients in low order need 24 bytes each (294 MiB) for a 47 MiB tensor: refused."""
    data = fft_low_file(3500, 3500, 10)
    assert len(data) < 10_000
    assert_rejected(tmp_path, data, capsys, "rule 4.8.1", "working memory")


def test_rule4_8_1_limit_can_be_raised():
    """The same file passes the header checks once ``max_work`` allows it."""
    data = fft_low_file(3500, 3500, 10)
    header = header_of(data)
    with pytest.raises(FormatError, match="rule 4.8.1"):
        header_rules.check_header(header, len(data))
    header_rules.check_header(header, len(data), DecodeLimits(max_work=1 << 30))


def test_rule4_8_1_default_scales_with_the_output():
    """A large dense tensor may use twice its bytes: the raw copy and the coder's output."""
    limits = DecodeLimits()
    assert limits.work_cap(10) == 256 << 20
    assert limits.work_cap(1 << 30) == 2 << 30


# --- rule 4.8.2: arithmetic -------------------------------------------------------------------


def test_rule4_8_2_svd_product_too_costly(tmp_path, capsys):
    """Rank 2000 of a 4095 x 8192 tensor: 6.7e10 multiply-adds from 60 KB, twice the cap."""
    data = svd_file(4095, 8192, 2000)
    assert len(data) < 1_000_000
    assert_rejected(tmp_path, data, capsys, "rule 4.8.2", "operations")


def test_rule4_8_2_is_summed_over_the_file(tmp_path, capsys):
    """Two SVD tensors, each under the cap, together over it."""
    one = ({"dtype": "<f4", "shape": [4096, 4096], "transform": {"name": "svd", "configuration": {"rank": 1200}}},
           [lzw_part("u", "<f4", [4096, 1200]), raw_part("s", np.ones(1200, "<f4")), lzw_part("vt", "<f4", [1200, 4096])])
    data = craft(*one, second=one)
    header = header_of(data)
    sizes = header_rules.blob_sizes(header)
    for entry in header["tensors"]:
        check_tensor_entry(entry, sizes)  # each alone is within the cap
    assert_rejected(tmp_path, data, capsys, "rule 4.8.2", "the file")


def test_rule4_8_2_cap_scales_with_the_stored_bytes():
    limits = DecodeLimits()
    assert limits.ops_cap(1000) == 1 << 35
    assert limits.ops_cap(1 << 30) == (1 << 30) * (1 << 15)
    assert DecodeLimits(max_ops=5).ops_cap(1 << 30) == 5


# --- rule 4.9 and the range rules of uniform ---------------------------------------------------


def test_rule4_9_bool_byte_other_than_0_or_1(tmp_path, capsys):
    """A |b1 element stored as byte 2 is refused (numpy would keep the 2 inside a bool array)."""
    second = ({"dtype": "|b1", "shape": [3], "transform": {"name": "dense", "configuration": {}}},
              [raw_part("values", np.array([0, 2, 1], dtype="|u1").view("|b1"))])
    first = ({}, [raw_part("values", np.arange(6, dtype="<f4").reshape(2, 3))])
    assert_rejected(tmp_path, craft(*first, second=second), capsys, "rule 4.9", "byte 2", header_rule=False)


def test_rule4_9_valid_bools_decode():
    stage = get_stage("raw")
    spec = ArraySpec(np.dtype("|b1"), (3,))
    assert stage.decode(bytes([1, 0, 1]), spec, {}).tolist() == [True, False, True]


def _uniform_file(step: float, codes: np.ndarray, offset: int) -> bytes:
    config = {"step": uniform_module.encode_floats(np.array([step]), "<f8"), "offset": offset}
    part = {"name": "values", "dtype": "<f2", "shape": [3],
            "codecs": [{"name": "uniform", "configuration": config}, {"name": "raw", "configuration": {}}]}
    second = ({"dtype": "<f2", "shape": [3], "transform": {"name": "dense", "configuration": {}}}, [(part, codes.astype("<u2").tobytes())])
    first = ({}, [raw_part("values", np.arange(6, dtype="<f4").reshape(2, 3))])
    return craft(*first, second=second)


def test_uniform_codes_beyond_float16_are_refused(tmp_path, capsys):
    """Code 40000 at step 2 is 80000, beyond float16's 65504: it would decode to inf."""
    assert_rejected(tmp_path, _uniform_file(2.0, np.array([0, 1, 40000]), 0), capsys, "uniform", "beyond the range", header_rule=False)


def test_uniform_configuration_with_no_finite_code_is_refused(tmp_path, capsys):
    assert_rejected(tmp_path, _uniform_file(1.0, np.array([0, 1, 2]), 70000), capsys, "uniform", "no code decodes to a finite")


def test_uniform_in_range_codes_decode(tmp_path):
    source = tmp_path / "ok.nnz"
    source.write_bytes(_uniform_file(2.0, np.array([0, 1, 30000]), -2))
    _, tensors = api.read_tensors(source)
    assert tensors["layers/dense/vars/1"].tolist() == [-4.0, -2.0, 60000.0]  # 59996 rounded to float16


# --- declared working memory is an upper bound ----------------------------------------------------


def _matrix(shape=(512, 1024), seed=0):
    return np.random.default_rng(seed).laplace(size=shape).astype("<f4")


def _recode(encoded, stage_id: str, params: dict):
    """Give every part of *encoded* the bytes stage *stage_id* (re-coding its blob)."""
    stage = get_stage(stage_id)
    blobs = []
    for part, blob in zip(encoded.entry["parts"], encoded.blobs):
        coded, config = stage.encode(blob, None, params)
        part["codecs"] = part["codecs"][:] + [{"name": stage_id, "configuration": config}]
        blobs.append(coded)
    encoded.blobs[:] = blobs
    return encoded


CHAINS = {
    "dense-raw": lambda x: encode_tensor("t", x, TensorPlan("dense", entropy=False)),
    "dense-huffman8": lambda x: _recode(encode_tensor("t", x, TensorPlan("dense", entropy=False)), "huffman", {"symbol_bits": 8}),
    "dense-huffman12": lambda x: _recode(encode_tensor("t", x, TensorPlan("dense", entropy=False)), "huffman", {"symbol_bits": 12}),
    "dense-huffman9": lambda x: _recode(encode_tensor("t", x, TensorPlan("dense", entropy=False)), "huffman", {"symbol_bits": 9}),
    "uniform-huffman16": lambda x: _recode(encode_tensor("t", x, TensorPlan("dense", {}, [("uniform", {"step_sd": 0.3})], entropy=False)), "huffman", {"symbol_bits": 16}),
    "dense-huffman5": lambda x: _recode(encode_tensor("t", x, TensorPlan("dense", entropy=False)), "huffman", {"symbol_bits": 5}),
    "dense-lzw": lambda x: _recode(encode_tensor("t", x[:128], TensorPlan("dense", entropy=False)), "lzw", {}),
    "uniform": lambda x: encode_tensor("t", x, TensorPlan("dense", {}, [("uniform", {"step_sd": 0.3})], entropy=False)),
    "kmeans": lambda x: encode_tensor("t", x, TensorPlan("dense", {}, [("kmeans", {"bits": 3})], entropy=False)),
    "cast-bf16": lambda x: encode_tensor("t", x, TensorPlan("dense", {}, [("cast", {"dtype": "bfloat16"})], entropy=False)),
    "byteplanes": lambda x: encode_tensor("t", x, TensorPlan("byteplanes", {"mode": "rotate"}, entropy=False)),
    "csr-gaps": lambda x: encode_tensor("t", x, TensorPlan("csr", {"prune": 0.7, "index_coding": "gaps"}, entropy=False)),
    "csr-csr": lambda x: encode_tensor("t", x, TensorPlan("csr", {"prune": 0.7, "index_coding": "csr"}, entropy=False)),
    "csr-mask": lambda x: encode_tensor("t", x, TensorPlan("csr", {"prune": 0.7, "index_coding": "mask"}, entropy=False)),
    "fft-dct-low": lambda x: encode_tensor("t", x, TensorPlan("fft", {"keep": 0.3}, entropy=False)),
    "fft-rfft-low": lambda x: encode_tensor("t", x, TensorPlan("fft", {"keep": 0.3, "transform": "rfft"}, entropy=False)),
    "fft-dct-largest": lambda x: encode_tensor("t", x, TensorPlan("fft", {"keep": 0.2, "select": "largest"}, entropy=False)),
    "fft-rfft-largest": lambda x: encode_tensor("t", x, TensorPlan("fft", {"keep": 0.2, "select": "largest", "transform": "rfft"}, entropy=False)),
    "svd": lambda x: encode_tensor("t", x, TensorPlan("svd", {"rank": 64}, entropy=False)),
    "svd-uniform": lambda x: encode_tensor("t", x, TensorPlan("svd", {"rank": 64}, [("uniform", {"step_sd": 0.3})], entropy=False)),
}


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_declared_work_bounds_what_the_decoder_allocates(chain):
    """tracemalloc's peak during ``decode_tensor`` <= the tensor's bytes + its declared work.

    The blobs are in memory before tracing starts (a reader holds one at a time, and the
    declaration counts it).  1 MiB of slack covers Python objects and small tables.
    """
    encoded = CHAINS[chain](_matrix())
    entry = json.loads(json.dumps(encoded.entry))
    sizes = [len(b) for b in encoded.blobs]
    checked = check_tensor_entry(entry, sizes)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        decoded = decode_tensor(entry, lambda i: encoded.blobs[i], sizes)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert decoded.tobytes() == encoded.reconstruction.tobytes()
    assert peak <= checked.spec.nbytes + checked.work + (1 << 20), (
        f"{chain}: peak {peak:,} > output {checked.spec.nbytes:,} + declared {checked.work:,}"
    )
    assert checked.ops > 0


# --- the largest files the defaults allow ----------------------------------------------------------

MEASURE = """
import resource, sys
from nnzip import cli
command = sys.argv[3]
status = cli.main(["decompress", sys.argv[1], "-o", sys.argv[2]] if command == "decompress" else ["inspect", sys.argv[1]])
usage = resource.getrusage(resource.RUSAGE_SELF)
print(status, int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:'))), usage.ru_utime + usage.ru_stime)
"""


@pytest.mark.parametrize("command", ["decompress", "inspect"])
@pytest.mark.parametrize("case", ["svd", "fft-dct", "fft-low", "dense-lzw"])
def test_worst_case_file_decodes_within_1_gib(tmp_path, case, command):
    """Files of under 1 MB at the default caps decompress (and inspect) with a peak RSS under 1 GiB.

    ``inspect`` undoes every bytes stage to report entropy bounds, so the all-zero LZW
    stream's 256 MiB are decoded there too.

    Measured in a fresh interpreter (its VmHWM: ``ru_maxrss`` of a child inherits the parent's
    high-water mark at exec).  CPU seconds are
    printed (``pytest -s``) but not asserted: they depend on the machine's load.
    """
    source, output = tmp_path / f"{case}.nnz", tmp_path / f"{case}.h5"
    source.write_bytes(WORST_CASES[case]())
    assert source.stat().st_size < 1_000_000
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, "-c", MEASURE, str(source), str(output), command], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    status, rss_kib, cpu = result.stdout.split()[-3:]
    assert status == "0", result.stderr
    print(f"{case} {command}: {source.stat().st_size} bytes, peak RSS {int(rss_kib) / 1024:.0f} MiB, CPU {float(cpu):.1f} s")
    assert int(rss_kib) < 1024 * 1024, f"{case} {command}: peak RSS {int(rss_kib) / 1024:.0f} MiB"
    assert command == "inspect" or output.stat().st_size > 200 << 20 or case == "fft-low"


# --- floating-point reproducibility (tolerances of spec/stages/fft.md and svd.md) -----------------


def _dct_matrix(size: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: row k is the k-th basis vector, so ``X = C_m.T @ Y @ C_n``."""
    k, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    matrix = np.cos(np.pi * (2 * j + 1) * k / (2 * size)) * math.sqrt(2.0 / size)
    matrix[0] /= math.sqrt(2.0)
    return matrix


def _independent_dct_inverse(coefficients: np.ndarray, m: int, n: int) -> np.ndarray:
    return _dct_matrix(m).T @ (coefficients.reshape(m, n) @ _dct_matrix(n))


def _independent_rfft_inverse(coefficients: np.ndarray, m: int, n: int) -> np.ndarray:
    """The spec's rfft rule, read literally: rebuild the full Hermitian spectrum, then a dense inverse DFT."""
    half = n // 2 + 1
    independent, weight = fft_module.rfft_layout(m, n)
    values = np.zeros((m, half, 2))
    values[independent] = coefficients
    values /= weight
    spectrum = np.zeros((m, n), dtype=complex)
    spectrum[:, :half] = values[..., 0] + 1j * values[..., 1]
    for k in range(m):
        for l in range(half):
            if (l == 0 or 2 * l == n) and 2 * k > m:
                spectrum[k, l] = np.conj(spectrum[(m - k) % m, l])
    for l in range(half, n):  # the other half: conjugate mirrors
        spectrum[:, l] = np.conj(spectrum[(-np.arange(m)) % m, n - l])
    dft = lambda size: np.exp(2j * np.pi * np.outer(np.arange(size), np.arange(size)) / size) / math.sqrt(size)  # noqa: E731
    return (dft(m) @ spectrum @ dft(n)).real


def _within_fft_tolerance(ours: np.ndarray, theirs: np.ndarray, norm: float, dtype: np.dtype) -> None:
    """spec/stages/fft.md: per element |a - b| <= 2**-39 * ||c||_2 + one ulp of the tensor's dtype."""
    ulp = np.spacing(np.abs(theirs).astype(dtype)).astype(np.float64)
    difference = np.abs(ours.astype(np.float64) - theirs)
    assert (difference <= 2.0**-39 * norm + ulp).all(), float((difference - ulp).max())


@pytest.mark.parametrize("transform", ["dct", "rfft"])
@pytest.mark.parametrize("shape", [(7, 9), (16, 10), (1, 33), (12, 1), (31, 64)])
@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
def test_fft_matches_an_independent_inverse(transform, shape, dtype):
    m, n = shape
    rng = np.random.default_rng(m * n)
    coefficients = rng.standard_normal(m * n) * np.exp(-np.arange(m * n) / (m * n))
    spec = ArraySpec(np.dtype(dtype), shape)
    part = "<f8" if dtype == "<f8" else "<f4"
    coefficients = coefficients.astype(part).astype(np.float64)
    config = {"transform": transform, "select": "low", "kept": m * n}
    order = fft_module.low_order(m, n, transform)
    ours = get_stage("fft").decode({"coeffs": coefficients[order].astype(part)}, spec, config)
    independent = _independent_dct_inverse if transform == "dct" else _independent_rfft_inverse
    _within_fft_tolerance(ours, independent(coefficients, m, n), float(np.linalg.norm(coefficients)), np.dtype(dtype))


@pytest.mark.parametrize("transform", ["dct", "rfft"])
@pytest.mark.parametrize("block", [1, 5, 64, 1 << 12])
def test_fft_blockwise_decoding_is_bit_identical(monkeypatch, transform, block):
    """Any block size gives the bits of the default one; for rfft also numpy's irfft2."""
    m, n = 37, 50
    data = np.random.default_rng(1).standard_normal((m, n)).astype("<f8")
    encoded = encode_tensor("t", data, TensorPlan("fft", {"keep": 0.4, "select": "largest", "transform": transform}, entropy=False))
    sizes = [len(b) for b in encoded.blobs]
    default = decode_tensor(encoded.entry, lambda i: encoded.blobs[i], sizes)
    monkeypatch.setattr(fft_module, "BLOCK_ELEMENTS", block)
    blocked = decode_tensor(encoded.entry, lambda i: encoded.blobs[i], sizes)
    assert blocked.tobytes() == default.tobytes()


@pytest.mark.parametrize("shape", [(37, 50), (8, 9), (1, 16), (5, 1)])
def test_rfft_rebuild_is_numpy_irfft2_bit_for_bit(shape):
    """The blockwise two-pass rfft inverse gives exactly ``numpy.fft.irfft2``'s bits."""
    m, n = shape
    coefficients = np.random.default_rng(m + n).standard_normal(m * n)
    independent, weight = fft_module.rfft_layout(m, n)
    values = np.zeros(independent.shape)
    values[independent] = coefficients
    values /= weight
    spectrum = values[..., 0] + 1j * values[..., 1]
    mirrored = np.flatnonzero(2 * np.arange(m) > m)
    for l in [0] + ([n // 2] if n % 2 == 0 else []):
        spectrum[mirrored, l] = np.conj(spectrum[m - mirrored, l])
    expected = np.fft.irfft2(spectrum, s=(m, n), norm="ortho")
    assert fft_module.inverse(coefficients, m, n, "rfft").tobytes() == expected.tobytes()


def _exact_product(u: np.ndarray, s: np.ndarray, vt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(u s) vt`` with each dot product summed exactly (math.fsum) and rounded once, and Σ|terms|."""
    scaled = u.astype(np.float64) * s.astype(np.float64)
    terms = scaled[:, :, None] * vt.astype(np.float64)[None, :, :]
    exact = np.array([[math.fsum(terms[i, :, j]) for j in range(terms.shape[2])] for i in range(terms.shape[0])])
    return exact, np.abs(terms).sum(axis=1)


@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
@pytest.mark.parametrize("shape,rank", [((9, 13), 4), ((40, 7), 7), ((1, 20), 1), ((64, 48), 30)])
def test_svd_matches_exact_dot_products(monkeypatch, dtype, shape, rank):
    """spec/stages/svd.md: per element |a - exact| <= (r + 2) 2**-52 Σ|u s vt| + one ulp of the dtype.

    Checked for the default blocks and for blocks of one row (BLAS may round a block's
    dot products differently from a whole-matrix product; both stay within the bound).
    """
    m, n = shape
    rng = np.random.default_rng(rank)
    part = "<f8" if dtype == "<f8" else "<f4"
    parts = {"u": rng.standard_normal((m, rank)).astype(part), "s": np.abs(rng.standard_normal(rank)).astype(part),
             "vt": rng.standard_normal((rank, n)).astype(part)}
    exact, magnitude = _exact_product(parts["u"], parts["s"], parts["vt"])
    bound = (rank + 2) * 2.0**-52 * magnitude + np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)
    spec = ArraySpec(np.dtype(dtype), shape)
    for block in (None, 1):
        if block:
            monkeypatch.setattr("nnzip.stages.svd.BLOCK_ELEMENTS", block)
        ours = get_stage("svd").decode(parts, spec, {"rank": rank}).astype(np.float64)
        assert (np.abs(ours - exact) <= bound).all()


@pytest.mark.parametrize("module,chain", [(uniform_module, "uniform"), (kmeans_module, "kmeans")])
def test_elementwise_blocks_do_not_change_the_bits(monkeypatch, module, chain):
    encoded = CHAINS[chain](_matrix((60, 70)))
    sizes = [len(b) for b in encoded.blobs]
    default = decode_tensor(encoded.entry, lambda i: encoded.blobs[i], sizes)
    monkeypatch.setattr(module, "BLOCK_ELEMENTS", 17)
    assert decode_tensor(encoded.entry, lambda i: encoded.blobs[i], sizes).tobytes() == default.tobytes()


# --- lossy stages refuse what they cannot represent ---------------------------------------------------

LOSSY_PLANS = {
    "fft-dct": TensorPlan("fft", {"keep": 0.5}),
    "fft-rfft": TensorPlan("fft", {"keep": 0.5, "transform": "rfft", "select": "largest"}),
    "svd-energy": TensorPlan("svd", {"energy": 0.9}),
    "svd-rank": TensorPlan("svd", {"rank": 3}),
    "uniform": TensorPlan("dense", {}, [("uniform", {"step_sd": 0.35})]),
    "uniform-step": TensorPlan("dense", {}, [("uniform", {"step": 1e37})]),
    "kmeans": TensorPlan("dense", {}, [("kmeans", {"bits": 4})]),
}


def _near_max(shape=(40, 40)):
    return (np.random.default_rng(0).uniform(0.9, 1.0, size=shape) * F32_MAX).astype("<f4")


@pytest.mark.parametrize("plan", sorted(LOSSY_PLANS))
@pytest.mark.parametrize("values", ["near-max", "nan", "inf"])
def test_lossy_stages_refuse_unrepresentable_tensors_or_stay_finite(plan, values):
    """Near float32's maximum, or with NaN/±Inf: a LossyRangeError (a ConfigError) or a finite result.

    Never a traceback, never NaN or infinity in the header (json with allow_nan=False).
    """
    data = {"near-max": _near_max(), "nan": np.where(np.eye(40) > 0, np.nan, 1.0).astype("<f4"),
            "inf": np.where(np.eye(40) > 0, -np.inf, 1.0).astype("<f4")}[values]
    try:
        encoded = encode_tensor("t", data, LOSSY_PLANS[plan])
    except LossyRangeError as exc:
        assert isinstance(exc, ConfigError) and "\n" not in str(exc)
        return
    assert values == "near-max", "non-finite input must be refused by every lossy stage"
    json.dumps(encoded.entry, allow_nan=False)
    assert np.isfinite(encoded.reconstruction).all()


def test_fft_and_svd_near_max_refuse_rather_than_overflow():
    for plan in ("fft-dct", "fft-rfft", "svd-rank"):
        with pytest.raises(LossyRangeError, match="overflows|infinity"):
            encode_tensor("t", _near_max(), LOSSY_PLANS[plan])


def test_uniform_rounding_past_float16_max_is_refused():
    """65500 at step 1000 rounds to 66000, beyond float16's 65504."""
    with pytest.raises(LossyRangeError, match="beyond the range"):
        encode_tensor("t", np.array([[65500.0, 0.0]], dtype="<f2"), TensorPlan("dense", {}, [("uniform", {"step": 1000.0})]))


def test_golden_file_is_far_below_every_cap():
    header = header_of(GOLDEN.read_bytes())
    for entry in header["tensors"]:
        checked = check_tensor_entry(entry, header_rules.blob_sizes(header))
        assert checked.work <= 2 * checked.spec.nbytes and checked.ops < 1000


# --- stage fixtures pin their inputs -------------------------------------------------------------


@pytest.mark.parametrize("fixture", sorted(p.stem for p in (TESTS / "fixtures" / "stages").glob("*.json")))
def test_every_stage_fixture_pins_its_input(fixture):
    """From the JSON alone (input, params), the stage encodes exactly the ``.bin``, and
    decoding the ``.bin`` with the stored configuration gives the input back (within the
    stage's loss: a lossless stage exactly)."""
    from .common import FIXTURES, input_of, output_bytes, _parse_output
    from nnzip.stages import BytesSpec, Kind

    record = json.loads((FIXTURES / f"{fixture}.json").read_text())
    stage = get_stage(fixture.split("-")[0])
    assert {"params", "configuration", "input"} <= set(record)
    data = input_of(record["input"])
    if stage.kind is Kind.BYTES:
        data, spec = data.tobytes(), BytesSpec(record["input"]["N"])
    else:
        spec = ArraySpec(np.dtype(record["input"]["dtype"]), tuple(record["input"]["shape"]))
    encoded, config = stage.encode(data, spec, dict(record["params"]))
    blob = (FIXTURES / f"{fixture}.bin").read_bytes()
    assert json.loads(json.dumps(config)) == record["configuration"]
    assert output_bytes(stage, encoded, config, spec) == blob
    decoded = stage.decode(_parse_output(stage, blob, record["configuration"], spec), spec, record["configuration"])
    if stage.id not in ("svd", "csr", "fft", "kmeans", "cast", "uniform", "dq"):  # the lossy stages
        assert (bytes(decoded) if stage.kind is Kind.BYTES else np.asarray(decoded).tobytes()) == (data if stage.kind is Kind.BYTES else data.tobytes())
