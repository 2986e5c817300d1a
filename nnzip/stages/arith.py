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

Speed: both directions are compiled loops (:mod:`._arith_kernels`, numba), one
model update and one coder step per input bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import FormatError
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
#: Declared decode operations per output bit, in vectorised passes: measured, one coder step
#: costs about the CPU time of 10-12 numpy passes over one element (a mispredicted branch on
#: every other bit of high-entropy data); 12, so ``O = 16 * 12 * (8 N + B)``.
DECODE_PASSES_PER_BIT = 12


@dataclass(frozen=True)
class Arith(BytesStage):
    """Adaptive binary range coding of w-bit symbols (w = 1..8) with bit-tree contexts, order 0 or 1.

    Params: ``symbol_bits`` (1..8) and ``order`` (0 or 1); each chosen for the fewest
    bytes on a prefix when not given (see :func:`_choose`).
    Configuration: ``{"symbol_bits": w, "order": k}``.
    """

    id = "arith"
    #: Bits per symbol, 1..8.
    symbol_bits: int
    #: Context order, 0 or 1.
    order: int

    @classmethod
    def from_config(cls, config: Any, spec: BytesSpec | None) -> "Arith":
        """Only ``symbol_bits`` (an integer in 1..8) and ``order`` (0 or 1)."""
        config_keys(config, {"symbol_bits", "order"}, cls.id)
        return cls(config_int(config, "symbol_bits", MIN_SYMBOL_BITS, MAX_SYMBOL_BITS), config_int(config, "order", 0, 1))

    @classmethod
    def encode(cls, data: bytes, spec: BytesSpec, params: Mapping[str, Any]) -> tuple[bytes, dict]:
        """Code *data*; returns ``(stream, {"symbol_bits": w, "order": k})``."""
        check_params(cls.id, params, {"symbol_bits", "order"})
        width = param_int(cls.id, params, "symbol_bits", MIN_SYMBOL_BITS, MAX_SYMBOL_BITS, None)
        order = param_int(cls.id, params, "order", min(ORDERS), max(ORDERS), None, expected="0 or 1")
        data = bytes(data)
        width, order = _choose(data, width, order)
        return _encode(data, width, order, 0), cls(width, order).to_config()

    def decode(self, data: bytes, spec: BytesSpec) -> bytes:
        """Exactly ``spec.size`` bytes, or FormatError for any stream the spec page rejects."""
        return _decode(bytes(data), spec.size, self.symbol_bits, self.order)

    def decode_cost(self, spec: BytesSpec, coded: int = 0) -> DecodeCost:
        """Bounds for the compiled decoder (``spec/stages/arith.md``, "Decode cost").

        The blob's bytes, the output's ``bytes`` copy and two int64 arrays of at most
        ``2**16`` contexts (probabilities, counts): ``coded + N + 2**21``.  One step per
        output bit, counted as :data:`DECODE_PASSES_PER_BIT` passes over the bits.
        """
        work = coded + spec.size + (2 << 20)
        return linear_cost(8 * spec.size + coded, passes=DECODE_PASSES_PER_BIT, work=work)

    def max_expansion(self) -> float:
        """:data:`MAX_EXPANSION` output bytes per stream byte, whatever the configuration."""
        return MAX_EXPANSION


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
    (width, order), trial = _choose_sized(data, None, None)
    config = Arith(width, order).to_config()
    if len(data) <= RANK_PREFIX:
        return (trial, config) if len(trial) < limit else None
    if len(trial) * len(data) / RANK_PREFIX >= SKIP_RATIO * limit:
        return None
    stream = _encode(data, width, order, limit)
    return None if stream is None else (stream, config)


# --- encoding -----------------------------------------------------------------------------


def _choose(data: bytes, width: int | None, order: int | None) -> tuple[int, int]:
    """The ``(symbol_bits, order)`` to code *data* with (see :func:`_choose_sized`)."""
    return _choose_sized(data, width, order)[0]


def _choose_sized(data: bytes, width: int | None, order: int | None) -> tuple[tuple[int, int], bytes]:
    """The ``(symbol_bits, order)`` to code *data* with, and the stream of its prefix with them.

    Given ones are kept; the others are picked by coding a prefix of :data:`RANK_PREFIX`
    bytes with each candidate: the widths of :func:`_ranked_widths`, at both orders (ties to
    the narrower width and the lower order: fewer contexts to trust).
    """
    if not data:
        return (width or 8, order or 0), b""
    prefix = data[:RANK_PREFIX]
    widths = (width,) if width is not None else _ranked_widths(prefix)
    orders = (order,) if order is not None else ORDERS
    trials = {(w, k): _encode(prefix, w, k, 0) for w in sorted(widths) for k in orders}
    best = min(trials, key=lambda wk: (len(trials[wk]), wk))
    return best, trials[best]


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


def _encode(data: bytes, width: int, order: int, limit: int) -> bytes | None:
    """The stream of *data*; None if it would need *limit* bytes or more (``limit > 0``)."""
    if not data:
        return b""
    from . import _arith_kernels as kernels

    nbits = 8 * len(data)
    out = np.empty((limit if limit > 0 else 2 * nbits // 8 + 8) + 16, dtype=np.uint8)
    size = kernels.encode(np.frombuffer(data, dtype=np.uint8), nbits, width, order, kernels.steps(), limit, out)
    return None if size < 0 else out[:size].tobytes()


# --- decoding -----------------------------------------------------------------------------


def _decode(data: bytes, size: int, width: int, order: int) -> bytes:
    """Decode a whole stream into exactly *size* bytes (the spec's decoding algorithm and checks)."""
    if size == 0:
        if data:
            raise FormatError(f"arith: an empty output must be coded as 0 bytes, got {len(data)}")
        return b""
    if len(data) < 4:
        raise FormatError(f"arith: stream truncated: {len(data)} bytes, at least 4 needed")
    from . import _arith_kernels as kernels

    out = np.zeros(size, dtype=np.uint8)
    status, used, code = kernels.decode(np.frombuffer(data, dtype=np.uint8), 8 * size, width, order, kernels.steps(), out)
    if status == kernels.BAD_START:
        raise FormatError("arith: the stream starts with FF FF FF FF (code not below the initial range)")
    if status == kernels.PAST_END:
        raise FormatError(f"arith: stream truncated: decoding needs {used} bytes, the stream has {len(data)}")
    if used < len(data):
        raise FormatError(f"arith: {len(data) - used} bytes of trailing garbage after the coded bits")
    if code != 0:
        raise FormatError("arith: the stream does not end with the encoder's flush (final code value not 0)")
    return out.tobytes()
