"""Build worst-case ``.nnz`` files for the decode-cost rules (spec/container.md §4.3).

The files are written from the spec alone: a tensor entry with its stage chain and
hand-made blobs (an all-zero LZW stream is built from the spec's code schedule, so that a
few kilobytes can declare hundreds of megabytes), put in place of the golden example's
first tensor.  ``python -m tests.decode_cost_tools NAME OUT.nnz`` writes one of
:data:`WORST_CASES`; the test measures ``nnzip decompress`` on it in a subprocess.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np

from .nnz_tools import blobs_of, rebuild, split_file

GOLDEN = Path(__file__).parent / "fixtures" / "golden-tiny.nnz"


def lzw_zeros(size: int, max_bits: int = 16) -> bytes:
    """An ``lzw`` stream (spec/stages/lzw.md) decoding to *size* zero bytes.

    Within a generation, code ``i`` is ``0`` (i = 0) or ``255 + i`` (the KwKwK case), the
    string of ``i + 1`` zeros; the last code repeats an earlier, shorter string.
    """
    generation = (1 << max_bits) - 255
    codes, index = [], []
    remaining, i = size, 0
    while remaining:
        length = min(i + 1, remaining)
        codes.append(0 if length == 1 else 254 + length)
        index.append(i)
        remaining -= length
        i = (i + 1) % generation
    index = np.asarray(index, dtype=np.int64)
    widths = np.clip(np.floor(np.log2(255 + index)).astype(np.int64) + 1, 9, max_bits)
    # LSB-first: every code's bits, least significant first, concatenated.
    bits = ((np.asarray(codes, dtype=np.int64)[:, None] >> np.arange(max_bits)) & 1).astype(np.uint8)
    keep = np.arange(max_bits)[None, :] < widths[:, None]
    return np.packbits(bits[keep], bitorder="little").tobytes()


def _raw(dtype: str, shape: list[int], blob: int, extra: list | None = None) -> dict:
    return {"dtype": dtype, "shape": shape, "codecs": [{"name": "raw", "configuration": {}}] + (extra or []), "blob": blob}


def craft(entry_fields: dict, parts: list[tuple[dict, bytes]], second: tuple[dict, list] | None = None) -> bytes:
    """The golden example with its first tensor replaced: *entry_fields* (dtype, shape,
    transform) and *parts* as ``(part entry without blob, blob bytes)``; *second*, the
    same pair for its second tensor, replaces that one too."""
    header, _, _ = split_file(GOLDEN.read_bytes())
    header = copy.deepcopy(header)
    old = blobs_of(GOLDEN.read_bytes())
    blobs: list[bytes] = []
    default = ({}, [({k: v for k, v in header["tensors"][1]["parts"][0].items() if k != "blob"}, old[1])])
    for entry, (fields, entry_parts) in zip(header["tensors"], [(entry_fields, parts), second or default]):
        entry.update(fields)
        entry["parts"] = [dict(part, blob=len(blobs) + i) for i, (part, _) in enumerate(entry_parts)]
        blobs += [blob for _, blob in entry_parts]
    return rebuild(header, blobs)


def lzw_part(name: str, dtype: str, shape: list[int]) -> tuple[dict, bytes]:
    """A part of zeros, coded ``raw`` + ``lzw``."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    part = {"name": name, **_raw(dtype, shape, 0, [{"name": "lzw", "configuration": {"max_bits": 16}}])}
    del part["blob"]
    return part, lzw_zeros(size)


def raw_part(name: str, values: np.ndarray) -> tuple[dict, bytes]:
    """A part stored ``raw``."""
    part = {"name": name, **_raw(values.dtype.str, list(values.shape), 0)}
    del part["blob"]
    return part, values.tobytes()


def svd_file(m: int, n: int, rank: int, dtype: str = "<f8") -> bytes:
    """``svd`` of rank *rank* for an ``m x n`` tensor, all factors zero (LZW-coded)."""
    part = "<f8" if dtype == "<f8" else "<f4"
    return craft(
        {"dtype": dtype, "shape": [m, n], "transform": {"name": "svd", "configuration": {"rank": rank}}},
        [lzw_part("u", part, [m, rank]), raw_part("s", np.ones(rank, dtype=part)), lzw_part("vt", part, [rank, n])],
    )


def fft_largest_file(m: int, n: int, transform: str = "dct", dtype: str = "<f8") -> bytes:
    """``fft`` keeping one coefficient (position 0, ``gaps`` coded) of an ``m x n`` tensor."""
    part = "<f8" if dtype == "<f8" else "<f4"
    config = {"transform": transform, "select": "largest", "kept": 1, "index_coding": "gaps", "index_bits": 16, "codes": 1}
    return craft(
        {"dtype": dtype, "shape": [m, n], "transform": {"name": "fft", "configuration": config}},
        [raw_part("coeffs", np.ones(1, dtype=part)), raw_part("positions", np.ones(1, dtype="<u2"))],
    )


def fft_low_file(m: int, n: int, kept: int, transform: str = "dct", dtype: str = "<f4") -> bytes:
    """``fft`` with ``select="low"`` keeping *kept* coefficients (all ones) of an ``m x n`` tensor."""
    part = "<f8" if dtype == "<f8" else "<f4"
    config = {"transform": transform, "select": "low", "kept": kept}
    return craft(
        {"dtype": dtype, "shape": [m, n], "transform": {"name": "fft", "configuration": config}},
        [raw_part("coeffs", np.ones(kept, dtype=part))],
    )


def dense_lzw_file(shape: list[int], dtype: str = "<f4") -> bytes:
    """A ``dense`` tensor of zeros coded ``raw`` + ``lzw``."""
    return craft({"dtype": dtype, "shape": shape, "transform": {"name": "dense", "configuration": {}}}, [lzw_part("values", dtype, shape)])


#: The largest files the default limits let through, each near one cap (rules 4.7, 4.8.1, 4.8.2).
WORST_CASES = {
    # 256 MiB float64 output; u and vt 88 MB of float64 with their float64 copies (4.8.1),
    # 4095 x 8192 x 887 multiply-adds and the LZW and copy passes: just under 2**35 (4.8.2).
    "svd": lambda: svd_file(4095, 8192, 887),
    # 256 MiB float64 output and one float64 spectrum of the same size (4.8.1).
    "fft-dct": lambda: fft_largest_file(4095, 8192, "dct"),
    # rfft at the 256 MiB minimum of 4.8.1: complex spectrum, mask and grid index.
    "fft-rfft": lambda: fft_largest_file(1536, 8192, "rfft"),
    # select=low: the stable sort of 11 M keys (4.8.1 at 24 bytes per coefficient).
    "fft-low": lambda: fft_low_file(2048, 5400, 1000, "dct"),
    # 256 MiB of zeros from a few KB: the LZW output, its copy and the raw copy.
    "dense-lzw": lambda: dense_lzw_file([8192, 8191]),
}


if __name__ == "__main__":
    Path(sys.argv[2]).write_bytes(WORST_CASES[sys.argv[1]]())
