"""``arith``: adaptive binary arithmetic (range) coding of the input's bits, with bit-tree contexts.

See ``spec/stages/arith.md`` for the normative layout.  In short: the input is
read as a bit stream, MSB-first, cut into ``w``-bit symbols (``w`` = 1..8, the
last one possibly partial); each bit is coded by the LZMA range coder with the
adaptive probability of its context: the bits of the symbol before it (its node
in the symbol's binary tree) and, at ``order`` 1, the whole previous symbol.

Why: Huffman spends at least one bit per symbol, so on k-means indices of 1-2
bits and on skewed byte planes it codes well above the entropy; an arithmetic
coder has no such floor, and its adaptive contexts need no table in the stream.
The order-1 context (the neighbouring value) is what DeepCABAC-style coders
add; it pays on data whose neighbours are correlated (sparse masks, planes).

The *levels mode* (format 1.3) reads each ``w``-bit symbol as a signed level
``symbol - zero`` (``zero``: the most frequent symbol, i.e. a quantizer's level 0)
and codes it as DeepCABAC does: a significance bin, a sign bin, greater-than-1 and
greater-than-2 bins and an exp-Golomb remainder, each in a context of the previous
one or two levels' magnitude class.  Far fewer contexts than order 1's ``2**(2w)``,
and magnitudes share them across signs, so a small tensor's model learns in fewer
symbols, while the neighbour classes keep what order 1 finds (runs of zeros).

Speed: both directions are compiled loops (:mod:`._arith_kernels`, numba), one
model update and one coder step per input bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError, FormatError
from ..limits import DEFAULT_OPS_PER_DATA_BYTE
from .base import BytesSpec, BytesStage, DecodeCost, check_params, config_int, config_keys, linear_cost, param_int

#: Allowed symbol widths and context orders.
MIN_SYMBOL_BITS, MAX_SYMBOL_BITS = 1, 8
ORDERS = (0, 1)
#: The encoder ranks widths by the order-0 entropy of at most this many leading bytes...
RANK_PREFIX = 1 << 16
#: ...and codes the prefix with the best few of them, at both orders, to pick one.
TRIAL_WIDTHS = 2
#: A larger blob whose prefix trial, scaled, is this multiple of the best size so far is not coded.
SKIP_RATIO = 1.02
#: Output bytes per stream byte at most: each coded bit narrows the range by a factor of at
#: most ``q = 1 - 2**-12 + 2**-24``, i.e. at least ``-log2 q > 1 / 2840`` bits (spec, "Decode cost").
MAX_EXPANSION = 2840.0
#: Encoder modes: ``bits`` (the 1.2 coding, :meth:`Arith.encode`'s default, so its output for
#: given data is what 1.2 wrote), ``levels`` (format 1.3), ``auto`` (the smaller of the two:
#: what the pipeline's coder choice, :func:`encode_below`, uses).
MODES = ("bits", "levels", "auto")
#: Orders of the levels mode: how many previous levels give a bin its context.
LEVEL_ORDERS = (0, 1, 2)
#: The levels mode is taken only when its trial is at least this many bytes shorter than the bits
#: mode's: its configuration's ``zero`` costs header bytes, and the file becomes 1.3 (measured:
#: ``,"zero":N`` adds 5-9 bytes to a zlib-compressed header).
LEVELS_MIN_SAVING = 8
#: The levels mode's working memory besides the blob and the output: its few contexts.
LEVEL_WORK = 1 << 12
#: Declared decode operations per output bit, in vectorised passes: measured, one coder step
#: costs about the CPU time of 10-12 numpy passes over one element (a mispredicted branch on
#: every other bit of high-entropy data); 12, so ``O = 16 * 12 * (8 N + B)``.
DECODE_PASSES_PER_BIT = 12


@dataclass(frozen=True)
class Arith(BytesStage):
    """Adaptive binary range coding of w-bit symbols (w = 1..8), in one of two modes.

    *Bits mode*: each symbol's bits with bit-tree contexts, ``order`` 0 or 1; configuration
    ``{"symbol_bits": w, "order": k}``.  *Levels mode* (format 1.3): each symbol is the signed
    level ``symbol - zero``, binarized into significance, sign, greater-than-1/2 and an
    exp-Golomb remainder, with contexts from the previous ``order`` (0..2) levels;
    configuration ``{"symbol_bits": w, "order": k, "zero": z}``.

    Params: ``symbol_bits``, ``order``, ``zero``, each chosen for the fewest bytes on a prefix
    when not given (see :func:`_choose`); ``mode`` (:data:`MODES`; default ``bits``, or
    ``levels`` when ``zero`` is given).
    """

    id = "arith"
    #: Bits per symbol, 1..8.
    symbol_bits: int
    #: Context order: previous symbols (bits mode, 0..1) or levels (levels mode, 0..2) in a bit's context.
    order: int
    #: The symbol that is level 0, 0..2**w - 1, in the levels mode; None in the bits mode.
    zero: int | None = None

    @property
    def levels(self) -> bool:
        """Whether this is the levels mode."""
        return self.zero is not None

    @classmethod
    def from_config(cls, config: Any, spec: BytesSpec | None) -> "Arith":
        """``{symbol_bits 1..8, order 0..1}``, or with ``zero`` (0..2**w - 1) ``order`` 0..2 (levels mode)."""
        config_keys(config, {"symbol_bits", "order", "zero"}, cls.id)
        try:
            width = config_int(config, "symbol_bits", MIN_SYMBOL_BITS, MAX_SYMBOL_BITS)
            if "zero" not in config:
                return cls(width, config_int(config, "order", 0, max(ORDERS)))
            return cls(width, config_int(config, "order", 0, max(LEVEL_ORDERS)), config_int(config, "zero", 0, (1 << width) - 1))
        except FormatError as exc:
            raise FormatError(f"arith: {exc}{' (levels mode)' if 'zero' in config else ''}") from None

    def to_config(self) -> dict:
        """The stored configuration of the mode (see the class docstring)."""
        if self.levels:
            return {"symbol_bits": self.symbol_bits, "order": self.order, "zero": self.zero}
        return {"symbol_bits": self.symbol_bits, "order": self.order}

    @classmethod
    def encode(cls, data: bytes, spec: BytesSpec, params: Mapping[str, Any]) -> tuple[bytes, dict]:
        """Code *data*; returns ``(stream, configuration)`` (of the mode chosen or asked for)."""
        check_params(cls.id, params, {"symbol_bits", "order", "zero", "mode"})
        mode = params.get("mode", "levels" if params.get("zero") is not None else "bits")
        if mode not in MODES:
            raise ConfigError(f"arith: 'mode' must be one of {list(MODES)}, got {mode!r}")
        width = param_int(cls.id, params, "symbol_bits", MIN_SYMBOL_BITS, MAX_SYMBOL_BITS, None)
        orders = ORDERS if mode == "bits" else LEVEL_ORDERS
        order = param_int(cls.id, params, "order", min(orders), max(orders), None, expected="0 or 1" if mode == "bits" else "0, 1 or 2")
        zero = param_int(cls.id, params, "zero", 0, (1 << (width or MAX_SYMBOL_BITS)) - 1, None)
        if zero is not None and mode != "levels":
            raise ConfigError("arith: 'zero' is a parameter of the levels mode")
        data = bytes(data)
        stage = _choose(data, width, order, zero, mode)
        return _encode(data, stage, 0), stage.to_config()

    def decode(self, data: bytes, spec: BytesSpec) -> bytes:
        """Exactly ``spec.size`` bytes, or FormatError for any stream the spec page rejects."""
        return _decode(bytes(data), spec.size, self)

    def decode_cost(self, spec: BytesSpec, coded: int = 0) -> DecodeCost:
        """Bounds for the compiled decoder (``spec/stages/arith.md``, "Decode cost").

        Bits mode: the blob's bytes, the output's ``bytes`` copy and two int64 arrays of at most
        ``2**16`` contexts (probabilities, counts): ``coded + N + 2**21``; one step per output
        bit.  Levels mode: ``coded + N + 2**12`` (112 contexts); at most :func:`max_bins` steps
        per symbol plus one per bit of a partial last symbol.  Each step is counted as
        :data:`DECODE_PASSES_PER_BIT` passes.
        """
        if self.levels:
            steps = level_bins(spec.size, self.symbol_bits)
            return linear_cost(steps + coded, passes=DECODE_PASSES_PER_BIT, work=coded + spec.size + LEVEL_WORK)
        work = coded + spec.size + (2 << 20)
        return linear_cost(8 * spec.size + coded, passes=DECODE_PASSES_PER_BIT, work=work)

    def max_expansion(self) -> float:
        """Output bytes per stream byte at most: 2840 (bits mode), ``2840 w`` (levels mode: a bin per symbol)."""
        return MAX_EXPANSION * (self.symbol_bits if self.levels else 1)


def max_bins(width: int) -> int:
    """The most bins one ``width``-bit symbol takes in the levels mode (spec: 1, 3, then ``2 w + 2``).

    Significance, sign, two greater-than flags and an exp-Golomb remainder of at most
    ``w - 1`` prefix and ``w - 1`` suffix bins; a 1-bit symbol has only its significance
    (its one non-zero level has a known sign and magnitude 1), a 2-bit one at most three.
    """
    return 1 if width == 1 else 3 if width == 2 else 2 * width + 2


def level_bins(size: int, width: int) -> int:
    """The most bins of a levels-mode stream decoding to *size* bytes: :func:`max_bins` per whole
    symbol, one per bit of the partial last symbol."""
    symbols, tail = divmod(8 * size, width)
    return symbols * max_bins(width) + tail


def encode_below(data: bytes, limit: int) -> tuple[bytes, dict] | None:
    """Arith-code *data* with chosen params if that gives fewer than *limit* bytes, else None.

    The prefix trials of :func:`_choose` double as an estimate: when the best of them,
    scaled to the whole blob, is at least :data:`SKIP_RATIO` times *limit*, the blob is not
    coded (on a blob of at most :data:`RANK_PREFIX` bytes the trial *is* the exact size).
    Otherwise the encoder stops as soon as its output reaches *limit* bytes.
    """
    data = bytes(data)
    if not data or limit <= 0:
        return None
    stage, trial = _choose_sized(data, None, None, None, "auto")
    config = stage.to_config()
    if len(data) <= RANK_PREFIX:
        return (trial, config) if len(trial) < limit else None
    if len(trial) * len(data) / RANK_PREFIX >= SKIP_RATIO * limit:
        return None
    stream = _encode(data, stage, limit)
    return None if stream is None else (stream, config)


# --- encoding -----------------------------------------------------------------------------


def _choose(data: bytes, width: int | None, order: int | None, zero: int | None, mode: str) -> Arith:
    """The stage (mode and parameters) to code *data* with (see :func:`_choose_sized`)."""
    return _choose_sized(data, width, order, zero, mode)[0]


def _choose_sized(data: bytes, width: int | None, order: int | None, zero: int | None, mode: str) -> tuple[Arith, bytes]:
    """The stage to code *data* with in *mode* (:data:`MODES`), and the stream of its prefix with it.

    Given parameters are kept (None: to choose); the others are picked by coding a prefix of
    :data:`RANK_PREFIX` bytes with each candidate: the widths of :func:`_ranked_widths`, in the
    bits mode at orders 0 and 1, in the levels mode at orders 0, 1 and 2 with the prefix's most
    frequent symbol as zero (in ``auto`` mode only at the bits mode's chosen width: it is the
    one the symbols are packed at).  The shortest wins, ties to the narrower width and the
    lower order; in ``auto`` mode the levels mode must beat the bits mode by
    :data:`LEVELS_MIN_SAVING` and its trial's declared decode cost stay within rule 4.8.2's
    default share of its bytes (else a blob the bits mode may code would lose ``arith``).
    """
    if not data:
        return Arith(width or 8, order or 0, (zero or 0) if mode == "levels" else None), b""
    prefix = data[:RANK_PREFIX]
    widths = sorted((width,) if width is not None else _ranked_widths(prefix))
    best = {}
    for levels in (False, True):
        allowed = LEVEL_ORDERS if levels else ORDERS
        orders = tuple(k for k in ((order,) if order is not None else allowed) if k in allowed)
        if mode == ("bits" if levels else "levels") or not orders:
            continue
        if levels and False in best:
            widths = [best[False][0].symbol_bits]  # auto: the bits mode's width is the symbols' (half the trials)
        candidates = [Arith(w, k, (zero if zero is not None else _most_frequent(prefix, w)) if levels else None)
                      for w in widths for k in orders]
        if levels and zero is not None and zero >= 1 << widths[0]:
            raise ConfigError(f"arith: 'zero' {zero} is not a {widths[0]}-bit symbol")
        trials = [(stage, _encode(prefix, stage, 0)) for stage in candidates]
        best[levels] = min(trials, key=lambda trial: (len(trial[1]), trial[0].symbol_bits, trial[0].order))
    if len(best) == 1:
        return next(iter(best.values()))
    levels_stage, levels_trial = best[True]
    saves = len(best[False][1]) - len(levels_trial) >= LEVELS_MIN_SAVING
    # Its declared decode cost per stored byte is up to 2.25x the bits mode's: where that would
    # pass rule 4.8.2's default share and the bits mode's would not, the pipeline would drop arith.
    affordable = levels_stage.decode_cost(BytesSpec(len(prefix)), len(levels_trial)).ops <= DEFAULT_OPS_PER_DATA_BYTE * len(levels_trial)
    return best[True] if saves and affordable else best[False]


def _ranked_widths(prefix: bytes) -> tuple[int, ...]:
    """The :data:`TRIAL_WIDTHS` widths whose symbols have the lowest order-0 entropy per input bit."""
    from . import _huffman_kernels

    buffer = np.frombuffer(prefix, dtype=np.uint8)
    scores = []
    for width in range(MIN_SYMBOL_BITS, MAX_SYMBOL_BITS + 1):
        count = 8 * len(prefix) // width
        counts = _huffman_kernels.histogram(buffer, width, count, 1 << width)
        counts = counts[counts > 0].astype(np.float64)
        # np.sum (pairwise), not np.dot: the ranking must not depend on BLAS threading.
        bits = float(np.sum(counts * np.log2(counts.sum() / counts))) if count else 0.0
        scores.append((bits / max(count * width, 1), width))
    return tuple(sorted(w for _, w in sorted(scores)[:TRIAL_WIDTHS]))


def _most_frequent(prefix: bytes, width: int) -> int:
    """The most frequent whole ``width``-bit symbol of *prefix* (the smallest on ties; 0 if none):
    a quantizer's level 0, as weights cluster around zero."""
    from . import _huffman_kernels

    counts = _huffman_kernels.histogram(np.frombuffer(prefix, dtype=np.uint8), width, 8 * len(prefix) // width, 1 << width)
    return int(np.argmax(counts))


def _encode(data: bytes, stage: "Arith", limit: int) -> bytes | None:
    """The stream of *data*; None if it would need *limit* bytes or more (``limit > 0``)."""
    if not data:
        return b""
    from . import _arith_kernels as kernels

    nbits, buffer = 8 * len(data), np.frombuffer(data, dtype=np.uint8)
    if stage.levels:
        # Each bin costs at most 12 bits (p >= 2**-12), so the stream fits in bins * 12 / 8 bytes,
        # up to 27 bytes per input byte: first try a buffer of twice the input (as the bits mode
        # has), which every real stream fits, and only if it overflows the bound's.
        roomy = 2 * len(data) + 64
        first = limit if 0 < limit <= roomy else roomy
        out = np.empty(first + 16, dtype=np.uint8)
        size = kernels.encode_levels(buffer, nbits, stage.symbol_bits, stage.zero, stage.order, kernels.steps(), first, out)
        if size < 0 and first != limit:
            out = np.empty((limit if limit > 0 else (12 * level_bins(len(data), stage.symbol_bits) + 7) // 8) + 16, dtype=np.uint8)
            size = kernels.encode_levels(buffer, nbits, stage.symbol_bits, stage.zero, stage.order, kernels.steps(), limit, out)
    else:
        out = np.empty((limit if limit > 0 else 2 * nbits // 8 + 8) + 16, dtype=np.uint8)
        size = kernels.encode(buffer, nbits, stage.symbol_bits, stage.order, kernels.steps(), limit, out)
    return None if size < 0 else out[:size].tobytes()


# --- decoding -----------------------------------------------------------------------------


def _decode(data: bytes, size: int, stage: "Arith") -> bytes:
    """Decode a whole stream into exactly *size* bytes (the spec's decoding algorithm and checks)."""
    if size == 0:
        if data:
            raise FormatError(f"arith: an empty output must be coded as 0 bytes, got {len(data)}")
        return b""
    if len(data) < 4:
        raise FormatError(f"arith: stream truncated: {len(data)} bytes, at least 4 needed")
    from . import _arith_kernels as kernels

    out = np.zeros(size, dtype=np.uint8)
    stream = np.frombuffer(data, dtype=np.uint8)
    if stage.levels:
        status, used, code = kernels.decode_levels(stream, 8 * size, stage.symbol_bits, stage.zero, stage.order, kernels.steps(), out)
    else:
        status, used, code = kernels.decode(stream, 8 * size, stage.symbol_bits, stage.order, kernels.steps(), out)
    if status == kernels.BAD_START:
        raise FormatError("arith: the stream starts with FF FF FF FF (code not below the initial range)")
    if status == kernels.BAD_LEVEL:
        raise FormatError(f"arith: a level's exp-Golomb remainder exceeds the {stage.symbol_bits}-bit symbol range (zero {stage.zero})")
    if status == kernels.PAST_END:
        raise FormatError(f"arith: stream truncated: decoding needs {used} bytes, the stream has {len(data)}")
    if used < len(data):
        raise FormatError(f"arith: {len(data) - used} bytes of trailing garbage after the coded bits")
    if code != 0:
        raise FormatError("arith: the stream does not end with the encoder's flush (final code value not 0)")
    return out.tobytes()
