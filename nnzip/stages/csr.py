"""``csr``: magnitude pruning to a sparse layout, and the position codings it shares with ``fft``.

The tensor is pruned by magnitude (the smallest ``|w|`` are set to zero -- not the
most negative weights, as the 2017 study did) and stored as the kept values
``data`` (exact, row-major order) plus an index stream saying where they go.
Three index codings, all unsigned and small-valued so that ``bitpack`` (width =
bit length of the largest value) and an entropy coder shrink them:

``gaps``
    Deep-Compression-style relative indices: one code per step between kept flat
    positions, in ``b = index_bits`` bits.  A code ``c >= 1`` advances the position by
    ``c`` and places the next kept value there; the code ``0`` is an *escape* that
    advances by ``2**b - 1`` and places nothing.  Deep Compression instead stores a
    filler zero *value* in ``data``; an escape code costs no value, and no filler can
    be moved off zero by a quantizer (k-means would map a filler 0.0 to its nearest
    centroid and so un-prune that weight).  With ``b = 1`` the codes are exactly the
    bitmap up to the last kept position.
``csr``
    The classic compressed-sparse-row pair over the matrix view
    (:mod:`nnzip.stages.matrix`): ``indices`` holds each kept value's column,
    delta-coded within its row as ``col - previous_col - 1`` (the first of a row
    as ``col``), and ``indptr`` holds each row's *count* of kept values (not the
    cumulative pointers, so values stay below ``n + 1``).
``mask``
    One ``uint8`` 0/1 per tensor position; bitpack packs it at 1 bit per position.

``"auto"`` picks the coding (and for ``gaps`` the width ``b``) whose *estimate* is
smallest: the order-0 Shannon entropy, in bytes, of the bytes that bitpacking each
index part would produce (MSB-first at the bit length of the part's largest
value), capped at that packed length because the pipeline stores a blob without
entropy coding when coding does not help; summed over the coding's parts.  It is computed
with ``numpy.bincount`` over the packed bytes, in chunks, so memory stays small.

See ``spec/stages/csr.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from ..errors import ConfigError, FormatError
from .base import (ArraySpec, DecodeCost, TransformStage, check_params, config_choice, config_int, config_keys, exactly_one,
                   linear_cost, param_fraction, param_int, param_number)
from .matrix import check_parts, fraction_count, matrix_shape, require_float_input, require_float_spec

#: Every index coding, in the order "auto" prefers on equal estimates.
INDEX_CODINGS = ("gaps", "csr", "mask")
#: Widest gap code; 16 bits already skips 65535 positions per escape.
MAX_INDEX_BITS = 16

# --- small shared helpers -------------------------------------------------------------


def uint_dtype(max_value: int) -> np.dtype:
    """The smallest little-endian unsigned dtype holding ``0..max_value``."""
    for dtype in ("|u1", "<u2", "<u4"):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype("<u8")


def gap_dtype(bits: int) -> np.dtype:
    """dtype of a ``gaps`` code stream of width *bits*: ``|u1`` up to 8 bits, else ``<u2``."""
    return np.dtype("|u1") if bits <= 8 else np.dtype("<u2")


_CHUNK = 1 << 20  # values per packing chunk; a multiple of 8 keeps chunks byte-aligned


def packed_entropy_bytes(values: np.ndarray) -> float:
    """Estimated coded size of an unsigned array after ``bitpack`` + the best byte coder.

    The values are packed MSB-first at the bit length of the largest value (at
    least 1 bit); the result is ``min(packed bytes, order-0 entropy of those bytes in
    bytes)``.  An empty array costs 0.
    """
    flat = np.asarray(values).reshape(-1)
    if flat.size == 0:
        return 0.0
    bits = max(1, int(flat.max()).bit_length())
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
    counts = np.zeros(256, dtype=np.int64)
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start:start + _CHUNK].astype(np.uint64)
        bit_matrix = ((chunk[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
        counts += np.bincount(np.packbits(bit_matrix.reshape(-1)), minlength=256)
    total = int(counts.sum())
    used = counts[counts > 0]
    entropy_bits = float(-(used * np.log2(used / total)).sum())
    return min(float(total), entropy_bits / 8.0)


# --- the three position codings ---------------------------------------------------------


def gap_codes(positions: np.ndarray, bits: int) -> np.ndarray:
    """The ``gaps`` code stream of strictly increasing flat *positions* at width *bits*."""
    limit = (1 << bits) - 1
    steps = np.diff(np.asarray(positions, dtype=np.int64), prepend=-1)
    escapes = (steps - 1) // limit  # escapes before each kept value
    codes = np.zeros(int(steps.size + escapes.sum()), dtype=gap_dtype(bits))
    codes[np.cumsum(escapes + 1) - 1] = steps - escapes * limit  # the remainder, in 1..limit
    return codes


def gap_positions(codes: np.ndarray, bits: int, kept: int, size: int) -> np.ndarray:
    """Flat positions from a ``gaps`` code stream; FormatError for any invalid stream."""
    limit = (1 << bits) - 1
    codes = np.asarray(codes).astype(np.int64)
    if codes.size and int(codes.max()) > limit:
        raise FormatError(f"gaps: code {int(codes.max())} exceeds the {bits}-bit limit {limit}")
    if codes.size and codes[-1] == 0:
        raise FormatError("gaps: the code stream ends with an escape (0) code")
    is_value = codes != 0
    if int(np.count_nonzero(is_value)) != kept:
        raise FormatError(f"gaps: {int(np.count_nonzero(is_value))} value codes, the configuration says {kept}")
    positions = (np.cumsum(np.where(is_value, codes, limit)) - 1)[is_value]
    if positions.size and int(positions[-1]) >= size:
        raise FormatError(f"gaps: position {int(positions[-1])} is outside the tensor of {size} elements")
    return positions


def mask_of(positions: np.ndarray, size: int) -> np.ndarray:
    """The ``mask`` part: ``uint8`` 1 at each of *positions*, 0 elsewhere, length *size*."""
    mask = np.zeros(size, dtype=np.uint8)
    mask[positions] = 1
    return mask


def mask_positions(mask: np.ndarray, kept: int) -> np.ndarray:
    """Flat positions from a ``mask`` part; FormatError unless it is 0/1 with *kept* ones."""
    mask = np.asarray(mask)
    if mask.size and int(mask.max()) > 1:
        raise FormatError(f"mask: value {int(mask.max())} is not 0 or 1")
    positions = np.flatnonzero(mask)
    if positions.size != kept:
        raise FormatError(f"mask: {positions.size} ones, the configuration says {kept}")
    return positions


def csr_arrays(positions: np.ndarray, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(indices, indptr)`` parts of strictly increasing flat *positions* in an ``m x n`` matrix."""
    positions = np.asarray(positions, dtype=np.int64)
    rows, cols = np.divmod(positions, max(n, 1))
    row_start = np.ones(positions.size, dtype=bool)
    row_start[1:] = rows[1:] != rows[:-1]
    previous = np.where(row_start, -1, np.roll(cols, 1))
    indices = (cols - previous - 1).astype(uint_dtype(max(n - 1, 0)))
    indptr = np.bincount(rows, minlength=m).astype(uint_dtype(n))
    return indices, indptr


def csr_positions(indices: np.ndarray, indptr: np.ndarray, kept: int, m: int, n: int) -> np.ndarray:
    """Flat positions from the ``csr`` pair; FormatError when counts or columns are invalid."""
    counts = np.asarray(indptr).astype(np.int64)
    if counts.size and int(counts.max()) > n:
        raise FormatError(f"csr: a row claims {int(counts.max())} values, rows have {n} columns")
    if int(counts.sum()) != kept:
        raise FormatError(f"csr: row counts sum to {int(counts.sum())}, the configuration says {kept}")
    running = np.cumsum(np.asarray(indices).astype(np.int64) + 1)
    row_base = np.concatenate(([0], running))[np.cumsum(counts) - counts]  # running sum before each row
    cols = running - np.repeat(row_base, counts) - 1
    if cols.size and int(cols.max()) >= n:
        raise FormatError(f"csr: column {int(cols.max())} is outside a row of {n} columns")
    return np.repeat(np.arange(m, dtype=np.int64), counts) * n + cols


# --- choosing and describing a coding (shared with fft) ------------------------------------


def _gap_candidates(positions: np.ndarray):
    """``(bits, codes)`` for each useful gap width: 1 bit up to the first width needing no escape."""
    largest_step = int(np.diff(positions, prepend=-1).max()) if positions.size else 1
    for bits in range(1, MAX_INDEX_BITS + 1):
        yield bits, gap_codes(positions, bits)
        if (1 << bits) - 1 >= largest_step:
            return


def encode_positions(positions: np.ndarray, m: int, n: int, coding: str, bits: int | None,
                     choices: tuple[str, ...]) -> tuple[dict, list[np.ndarray]]:
    """Code strictly increasing flat *positions* of an ``m x n`` matrix view.

    *coding* is ``"auto"`` or one of *choices*; *bits* fixes the ``gaps`` width
    (``None`` = smallest estimate).  Returns the configuration fields
    (``index_coding``, plus ``index_bits`` and ``codes`` for ``gaps``) and the index
    arrays in part order.
    """
    candidates: list[tuple[float, dict, list[np.ndarray]]] = []
    for name in choices if coding == "auto" else (coding,):
        if name == "gaps":
            widths = [(bits, gap_codes(positions, bits))] if bits is not None else _gap_candidates(positions)
            for width, codes in widths:
                fields = {"index_coding": "gaps", "index_bits": width, "codes": int(codes.size)}
                candidates.append((packed_entropy_bytes(codes), fields, [codes]))
        elif name == "csr":
            arrays = list(csr_arrays(positions, m, n))
            candidates.append((sum(packed_entropy_bytes(a) for a in arrays), {"index_coding": "csr"}, arrays))
        else:
            mask = mask_of(positions, m * n)
            candidates.append((packed_entropy_bytes(mask), {"index_coding": "mask"}, [mask]))
    best = min(range(len(candidates)), key=lambda i: candidates[i][0])  # first of equals wins
    return candidates[best][1], candidates[best][2]


def index_param(stage_id: str, params: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> tuple[str, int | None]:
    """The ``(coding, index_bits)`` the encoder params ask for (defaults ``"auto"``, ``None``)."""
    coding = params.get(key, "auto")
    if coding != "auto" and coding not in choices:
        raise ConfigError(f"{stage_id}: parameter {key!r} must be 'auto' or one of {list(choices)}, got {coding!r}")
    bits = param_int(stage_id, params, "index_bits", 1, MAX_INDEX_BITS, None, label="parameter 'index_bits'")
    if bits is not None:
        if coding not in ("auto", "gaps"):
            raise ConfigError(f"{stage_id}: 'index_bits' applies only to the 'gaps' coding")
        coding = "gaps"
    return coding, bits


@dataclass(frozen=True)
class IndexCoding:
    """How the kept positions of ``csr`` (and of ``fft``'s ``select="largest"``) are stored: the
    configuration fields ``index_coding``, and for ``gaps`` also ``index_bits`` and ``codes``."""

    #: ``"gaps"``, ``"csr"`` or ``"mask"``.
    index_coding: str
    #: ``gaps`` only: bits per code, 1..16.
    index_bits: int | None = None
    #: ``gaps`` only: the number of codes (kept values plus escapes).
    codes: int | None = None

    @classmethod
    def from_config(cls, stage_id: str, config: Mapping[str, Any], kept: int, size: int, choices: tuple[str, ...]) -> "IndexCoding":
        """The index-coding fields of a configuration, checked against the tensor *size*."""
        coding = config_choice(config, "index_coding", choices)
        if coding != "gaps":
            extra = {"index_bits", "codes"} & set(config)
            if extra:
                raise FormatError(f"{stage_id}: fields {sorted(extra)} are only allowed with the 'gaps' coding")
            return cls(coding)
        bits = config_int(config, "index_bits", 1, MAX_INDEX_BITS)
        # Each escape advances 2**bits - 1 positions and each value at least 1, all inside the tensor.
        escapes_max = (size - kept) // ((1 << bits) - 1) if kept else 0
        return cls(coding, bits, config_int(config, "codes", kept, kept + escapes_max))

    def to_config(self) -> dict:
        """The fields as stored: ``index_coding``, then ``index_bits`` and ``codes`` for ``gaps``."""
        if self.index_coding != "gaps":
            return {"index_coding": self.index_coding}
        return {"index_coding": self.index_coding, "index_bits": self.index_bits, "codes": self.codes}


def index_specs(index: IndexCoding, kept: int, m: int, n: int) -> list[ArraySpec]:
    """Specs of the index arrays of a checked coding, in part order."""
    coding = index.index_coding
    if coding == "gaps":
        return [ArraySpec(gap_dtype(index.index_bits), (index.codes,))]
    if coding == "csr":
        return [ArraySpec(uint_dtype(max(n - 1, 0)), (kept,)), ArraySpec(uint_dtype(n), (m,))]
    return [ArraySpec(np.dtype("|u1"), (m * n,))]


def index_decode_cost(index: IndexCoding, kept: int, m: int, n: int) -> DecodeCost:
    """Temporaries and operations of :func:`decode_positions`, the int64 positions included.

    ``gaps``: about five int64/bool arrays per code; ``csr``: about ten int64 arrays per
    kept value and a few per row; ``mask``: a boolean per position and the positions.
    """
    coding = index.index_coding
    if coding == "gaps":
        elements, work = index.codes, 40 * index.codes + 8 * kept
    elif coding == "csr":
        elements, work = kept + m, 80 * kept + 48 * (m + 1)
    else:
        elements, work = m * n + kept, m * n + 16 * kept
    return linear_cost(elements, passes=8, work=work)


def decode_positions(index: IndexCoding, arrays: list[np.ndarray], kept: int, m: int, n: int) -> np.ndarray:
    """Strictly increasing flat positions (int64) from checked index arrays."""
    coding = index.index_coding
    if coding == "gaps":
        return gap_positions(arrays[0], index.index_bits, kept, m * n)
    if coding == "csr":
        return csr_positions(arrays[0], arrays[1], kept, m, n)
    return mask_positions(arrays[0], kept)


# --- the stage -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CSR(TransformStage):
    """Magnitude pruning to ``data`` + index parts; params ``prune`` or ``threshold``, ``index_coding``, ``index_bits``."""

    id = "csr"
    #: The kept values.
    quantizable = ("data",)
    #: Part names of each coding's index arrays, in storage order after ``data``.
    INDEX_PARTS: ClassVar[dict[str, tuple[str, ...]]] = {"gaps": ("gaps",), "csr": ("indices", "indptr"), "mask": ("mask",)}
    #: Values kept, ``0..size``.
    kept: int
    #: How their positions are stored.
    index: IndexCoding

    @classmethod
    def from_config(cls, config: Any, spec: ArraySpec) -> "CSR":
        """Require a float tensor, ``kept`` in ``0..size`` and valid index-coding fields."""
        config_keys(config, {"kept", "index_coding", "index_bits", "codes"}, cls.id)
        require_float_spec(cls.id, spec)
        kept = config_int(config, "kept", 0, spec.size)
        return cls(kept, IndexCoding.from_config(cls.id, config, kept, spec.size, INDEX_CODINGS))

    def to_config(self) -> dict:
        """``{"kept": ..., "index_coding": ..., ["index_bits": ..., "codes": ...]}``."""
        return {"kept": self.kept, **self.index.to_config()}

    @classmethod
    def kept_positions(cls, data: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
        """Flat positions that survive pruning, increasing.

        ``prune=p`` removes exactly ``floor(p * size + 0.5)`` entries: the smallest
        ``|w|`` first (NaN counts as largest), equal magnitudes by lower flat index
        first.  ``threshold=t`` removes every entry with ``|w| <= t``.
        """
        magnitude = np.abs(np.asarray(data, dtype=np.float64).reshape(-1))
        keep = np.ones(magnitude.size, dtype=bool)
        if "prune" in params:
            removed = fraction_count(param_fraction(cls.id, params, "prune"), magnitude.size)
            keep[np.argsort(magnitude, kind="stable")[:removed]] = False
        else:
            threshold = param_number(cls.id, params, "threshold", None, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0",
                                     label="parameter 'threshold'")
            keep &= ~(magnitude <= threshold)  # written so that NaN weights are kept
        return np.flatnonzero(keep)

    @classmethod
    def encode(cls, data: np.ndarray, spec: ArraySpec, params: Mapping[str, Any]) -> tuple[dict, dict]:
        """Prune *data*; parts ``data`` then the chosen coding's index parts."""
        require_float_input(cls.id, spec)
        check_params(cls.id, params, {"prune", "threshold", "index_coding", "index_bits"})
        exactly_one(cls.id, params, "prune", "threshold")
        coding, bits = index_param(cls.id, params, "index_coding", INDEX_CODINGS)
        positions = cls.kept_positions(data, params)
        m, n = matrix_shape(spec.shape)
        fields, arrays = encode_positions(positions, m, n, coding, bits, INDEX_CODINGS)
        stage = cls(int(positions.size), IndexCoding(**fields))
        parts = {"data": np.asarray(data, dtype=spec.dtype).reshape(-1)[positions]}
        parts.update(zip(cls.INDEX_PARTS[fields["index_coding"]], arrays))
        return parts, stage.to_config()

    def decode(self, parts: Mapping[str, np.ndarray], spec: ArraySpec) -> np.ndarray:
        """Scatter ``data`` to the decoded positions of a zero tensor."""
        checked = check_parts(self.id, parts, self.part_specs(spec))
        m, n = matrix_shape(spec.shape)
        arrays = [checked[name] for name in self.INDEX_PARTS[self.index.index_coding]]
        positions = decode_positions(self.index, arrays, self.kept, m, n)
        out = np.zeros(spec.size, dtype=spec.dtype)
        out[positions] = checked["data"]
        return out.reshape(spec.shape)

    def decode_cost(self, spec: ArraySpec, coded: int = 0) -> DecodeCost:
        """The positions (:func:`index_decode_cost`), then a zero tensor and one scatter."""
        m, n = matrix_shape(spec.shape)
        positions = index_decode_cost(self.index, self.kept, m, n)
        return DecodeCost(positions.work, positions.ops + linear_cost(spec.size, passes=2).ops)

    def part_specs(self, spec: ArraySpec) -> dict[str, ArraySpec]:
        """``data`` (kept,) of the tensor's dtype, then the coding's index parts."""
        m, n = matrix_shape(spec.shape)
        specs = {"data": ArraySpec(spec.dtype, (self.kept,))}
        specs.update(zip(self.INDEX_PARTS[self.index.index_coding], index_specs(self.index, self.kept, m, n)))
        return specs
