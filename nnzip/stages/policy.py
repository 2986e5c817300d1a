"""The encoder's tail policy: how a part's values are serialized and which bytes stage codes them.

Nothing here is format: a reader never needs it.  The pipeline asks :func:`best_tail` for
each part once its value stages have run; everything else is the rule behind that answer.

* the serializer: ``raw``, or ``bitpack`` for unsigned integers whose largest value needs
  fewer bits than their type (:func:`best_tail`);
* the bytes stage of one blob (:func:`best_bytes_stage`): each candidate is one entry of
  :data:`BYTES_CODERS`, which first asks a cheap test whether a full trial could win and then
  codes only below the best size so far.  The tests share one :class:`BlobStats` per blob: the
  symbol counts Huffman's width search makes (each histogram pass made once), from which the
  order-0 bound and the dependence of neighbouring symbols follow.  No coding and ``huffman``
  are always sized exactly (Huffman's size follows from the symbol counts and code lengths,
  before any bit is packed).  ``lzw`` is run in full, stopping as soon as it cannot win, on
  every blob of at most :data:`LZW_FULL_TRIAL_BYTES`; on a larger blob it is skipped by the
  order-0 test (:func:`lzw_cannot_win`: the best coding is near the order-0 bound and
  neighbours are near independent), else estimated by coding :data:`LZW_WINDOWS` evenly spaced
  windows of :data:`LZW_WINDOW_BYTES` each from an empty dictionary (as every dictionary
  generation starts) and run in full only when that estimate, scaled to the whole blob, is below
  :data:`LZW_SKIP_RATIO` times the best size so far (an estimate up to
  :data:`LZW_RECHECK_RATIO` times is checked again on one wider window).  ``rans`` is sized from
  its symbol counts (its table section is exact, its words within a few bytes:
  ``rans.size_bounds``) and coded only when that lower bound is below the best size so far.
  ``arith`` codes the
  first 64 KiB with a few widths and both orders to choose its parameters; that trial is its
  exact size on a blob of at most 64 KiB, and on a larger one it is run in full only when the
  histogram test :func:`arith_may_pay` passes and the trial, scaled to the whole blob, is below
  1.02 times the best size so far (``arith.SKIP_RATIO``).  An ``arith`` stream is only taken if
  its declared decode operations stay within rule 4.8.2's default of ``2**15`` per stored
  byte (so on blobs it shrinks by at most ~21x): it decodes one bit at a time, and a file
  must stay readable under the default caps whatever its blobs.  "Smallest wins", measured on
  what is chosen: the fewest bytes among the streams actually made wins; on equal sizes the
  simpler one wins, in the order none < huffman < rans < lzw < arith (simpler means faster to
  decode and less format to trust: ``rans`` decodes a table lookup and a multiply per symbol,
  nearly Huffman's speed), so the chosen blob is never larger than the input.  The tests
  only decide which coders run, never what a stream measures;
* chunking: serialized bytes over the pipeline's chunk size are coded in chunks
  (:func:`best_chunked`), one bytes stage and one configuration per part.

The coder modules are imported when first needed (a reader never loads them through this
module) and their functions looked up at call time (``huffman.encode_below``), so a test may
replace one.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from typing import Callable

import numpy as np

from ..limits import DEFAULT_OPS_PER_DATA_BYTE
from . import get_stage
from .base import ArraySpec, BytesSpec
from .entropy import entropy_bound, symbol_counts

#: Candidates of :func:`best_bytes_stage`, simplest first (ties go to the earlier one).
BYTES_STAGES = ("huffman", "rans", "lzw", "arith")
#: Blobs up to this size take ``arith`` whenever it is smallest; larger ones only when it is at
#: least ARITH_MIN_GAIN smaller than the best other coding.  ``arith`` encodes and decodes at
#: ~10 MB/s against Huffman's 150-350 MB/s: measured on MiniLM-L6 lossless, taking it wherever
#: it was smallest saved 0.76 % of the file and quadrupled compress time (5.9 -> 23.7 s CPU).
ARITH_EXACT_BYTES = 64 * 1024
ARITH_MIN_GAIN = 0.05
#: Blobs up to this size get a full LZW trial: the choice is then exactly the 1.0 rule's.
LZW_FULL_TRIAL_BYTES = 1 << 16
#: Larger blobs: LZW is estimated on this many windows of this many bytes...
LZW_WINDOWS, LZW_WINDOW_BYTES = 4, 1 << 14
#: ...and tried in full only if the estimate is below this multiple of the best size so far.
#: Measured on MiniLM-L6's fp32 and bf16 blobs over 16 KiB (byte planes, bit-packed planes,
#: 16-bit streams): the 4 x 16 KiB estimate is 0.91-1.13 x LZW's true size, and never within
#: 1.08 x of the best other coding; 1.15 leaves 4 full trials (0.56 MB of 108 MB) where 1.25
#: left 46 (24 MB, 0.5 s of CPU) and changes no choice.
LZW_SKIP_RATIO = 1.15
#: An estimate from LZW_SKIP_RATIO up to this multiple is checked again on one window of
#: LZW_RECHECK_BYTES (long repeats, e.g. a period of 3 KB, make small windows pessimistic).
LZW_RECHECK_RATIO, LZW_RECHECK_BYTES = 1.3, 1 << 16
#: The order-0 test (:func:`lzw_cannot_win`) skips LZW on a large blob whose best coding is within
#: this fraction of the order-0 bound and whose neighbouring symbols share less than this fraction
#: of their entropy.  Measured: MiniLM-L6 fp32's 191 blobs over 64 KiB are within 1.125 x of their
#: bound and share at most 0.15 at the best width; 187 pass both (LZW is 1.04-1.5 x their best
#: coding); the LZW winners of the test corpus fail one (bound gap 1.3-5.8 x, or dependence 0.34-0.45).
LZW_ORDER0_SLACK, LZW_MAX_DEPENDENCE = 0.05, 0.05

def chunk_bounds(size: int, chunk_size: int | None) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of the chunks of *size* serialized bytes (one chunk when *chunk_size* is None)."""
    if chunk_size is None:
        return [(0, size)]
    return [(start, min(size, start + chunk_size)) for start in range(0, size, chunk_size)]


def map_in_order(executor: Executor | None, function: Callable, items: list) -> list:
    """``[function(item) ...]`` in order, on *executor* when one is given (results never depend on it)."""
    if executor is None or len(items) < 2:
        return [function(item) for item in items]
    return list(executor.map(function, items))


# --- one part's tail ------------------------------------------------------------------------


def best_tail(array: np.ndarray, spec: ArraySpec, entropy: bool, chunk_size: int,
              executor: Executor | None = None) -> tuple[list[dict], list[bytes], int | None]:
    """Serialize (raw, or bitpack for unsigned integers) and entropy-code; keep the smallest.

    Returns ``(tail stages, blobs, chunk size or None)``.  Serialized bytes over
    *chunk_size* are coded in chunks (:func:`best_chunked`).  Ties keep the earlier
    candidate (raw before bitpack; none before huffman before lzw).
    """
    candidates = [("raw", {})]
    if spec.dtype.kind == "u" and spec.size:
        bits = max(1, int(array.max()).bit_length())
        if bits < 8 * spec.dtype.itemsize:
            candidates.append(("bitpack", {"bits": bits}))
    best: tuple[list[dict], list[bytes], int | None] | None = None
    for stage_id, params in candidates:
        serializer = get_stage(stage_id)
        view = _raw_view(array, spec) if stage_id == "raw" else None
        if view is not None and len(view) > chunk_size:
            data, config = view, {}  # raw's bytes are the array's own: chunked from a view, not a tensor-sized copy
        else:
            data, config = serializer.encode(array, spec, params)
        del view
        tail, blobs, chunked = [{"name": serializer.id, "configuration": config}], [data], None
        if entropy and len(data) > chunk_size:
            bytes_id, blobs, bytes_config = best_chunked(data, chunk_size, executor)
            if bytes_id is not None:
                tail, chunked = tail + [{"name": bytes_id, "configuration": bytes_config}], chunk_size
            else:
                blobs = [data]
        elif entropy:
            bytes_id, coded, bytes_config = best_bytes_stage(data)
            if bytes_id is not None:
                tail, blobs = tail + [{"name": bytes_id, "configuration": bytes_config}], [coded]
        if best is None or sum(map(len, blobs)) < sum(map(len, best[1])):
            best = (tail, blobs, chunked)
        del data
    return best


def _raw_view(array: np.ndarray, spec: ArraySpec) -> memoryview:
    """The bytes the ``raw`` serializer writes (C order, the spec's byte order), as a view of *array* where it can be."""
    return memoryview(np.ascontiguousarray(array, dtype=spec.dtype).reshape(-1).view(np.uint8))


# --- one blob's bytes stage ---------------------------------------------------------------------


class BlobStats:
    """One blob and the symbol counts its coders' tests share, each histogram pass made once.

    Huffman's width search counts the blob's symbols at several widths (:func:`huffman.counter`);
    the skip tests of the other coders read the same counts: the order-0 bound of the blob's
    ``w``-bit symbols (:meth:`order0_bytes`) and how much a pair of neighbouring symbols tells
    beyond each alone (:meth:`dependence`).  ``width`` is the symbol width of the best coding so
    far (Huffman's when it won, else 8: bytes).
    """

    def __init__(self, data: bytes):
        from . import huffman

        self.data = data
        self.counter = huffman.counter(data)
        self.width = 8

    def counts(self, width: int, nbytes: int | None = None) -> np.ndarray:
        """The nonzero counts of the ``width``-bit symbols of the first *nbytes* bytes (all by default), ascending symbol."""
        return self.counter.used(width, len(self.data) if nbytes is None else nbytes)[1]

    def order0_bytes(self, width: int) -> float:
        """The order-0 Shannon bound of the whole blob read as ``width``-bit symbols, in bytes."""
        return entropy_bound(self.counts(width)) / 8

    def dependence(self, width: int) -> float:
        """``1 - H(2w) / (2 H(w))`` on the first :data:`huffman.RANK_PREFIX` bytes (w <= 8): the share of
        the ``w``-bit symbols' entropy that knowing their neighbour removes, each entropy with the
        Miller-Madow correction ``(K - 1) / (2 N ln 2)`` (K symbols seen in N): the plain estimate of
        a sparsely sampled 2w-bit alphabet is low, which would show dependence in noise."""
        from .huffman import RANK_PREFIX

        nbytes = min(len(self.data), RANK_PREFIX)
        single, pairs = _corrected_entropy(self.counts(width, nbytes)), _corrected_entropy(self.counts(2 * width, nbytes))
        return 1.0 - pairs / (2 * single) if single > 0 else 0.0


def _corrected_entropy(counts: np.ndarray) -> float:
    """Entropy in bits per symbol of these (nonzero) counts, with the Miller-Madow bias correction."""
    total = float(counts.sum())
    if total == 0:
        return 0.0
    return entropy_bound(counts) / total + (counts.size - 1) / (2 * total * math.log(2))


def best_bytes_stage(data: bytes, candidates: tuple[str, ...] = BYTES_STAGES) -> tuple[str | None, bytes, dict]:
    """The smallest coding of *data* among the coders tried: ``(stage id or None, encoded bytes, configuration)``.

    Tries no coding and each stage of *candidates* (in :data:`BYTES_STAGES`
    order, simplest first) through its entry of :data:`BYTES_CODERS`; the strictly smallest
    output wins, ties go to the simpler (none < huffman < rans < lzw < arith).  ``None`` means
    "store the bytes as they are" (the returned bytes are then *data* itself and
    the configuration is ``{}``).  Each entry first asks its cheap test whether a full
    trial could win (see the module docstring) and codes only below the best size so far,
    giving up as soon as it reaches it; what is chosen is always a stream actually made.
    """
    data = bytes(data)
    stats = BlobStats(data)
    best: tuple[str | None, bytes, dict] = (None, data, {})
    for stage_id in BYTES_STAGES:
        if stage_id not in candidates:
            continue
        result = BYTES_CODERS[stage_id](stats, len(best[1]))
        if result is not None and len(result[0]) < len(best[1]):
            best = (stage_id, result[0], result[1])
            stats.width = int(result[1].get("symbol_bits", 8)) if stage_id == "huffman" else stats.width
    return best


def _huffman_below(stats: BlobStats, limit: int) -> tuple[bytes, dict] | None:
    """Huffman is always sized exactly (its size follows from the counts), sharing them with the others' tests."""
    from . import huffman

    return huffman.encode_below(stats.data, limit, stats.counter)


def _lzw_below(stats: BlobStats, limit: int) -> tuple[bytes, dict] | None:
    """LZW in full on small blobs; on larger ones only where neither the order-0 test
    (:func:`lzw_cannot_win`) nor the window estimate (:func:`lzw_loses`) rules it out."""
    from . import lzw

    if len(stats.data) > LZW_FULL_TRIAL_BYTES and (lzw_cannot_win(stats, limit) or lzw_loses(stats.data, limit)):
        return None
    return lzw.encode_below(stats.data, limit)


def _arith_below(stats: BlobStats, limit: int) -> tuple[bytes, dict] | None:
    """``arith``: its prefix trial on blobs up to :data:`ARITH_EXACT_BYTES`; on larger ones only where
    :func:`arith_may_pay`, and then it must save :data:`ARITH_MIN_GAIN`; never a stream over rule
    4.8.2's default decode cost (:func:`cost_ok`)."""
    from . import arith

    if len(stats.data) > ARITH_EXACT_BYTES:
        if not arith_may_pay(stats.data, limit, stats):
            return None
        limit = int(limit * (1 - ARITH_MIN_GAIN))  # decodes ~15x slower than huffman: must pay for it
    result = arith.encode_below(stats.data, limit)
    return result if result is not None and cost_ok("arith", len(stats.data), result) else None


def _rans_below(stats: BlobStats, limit: int) -> tuple[bytes, dict] | None:
    """``rans``: coded only when its lower size bound from counts is below *limit* (``rans.encode_below``
    checks it), and never a stream over rule 4.8.2's default decode cost (:func:`cost_ok`)."""
    from . import rans

    result = rans.encode_below(stats.data, limit)
    return result if result is not None and cost_ok("rans", len(stats.data), result) else None


#: stage id -> ``(stats, best size so far) -> (stream, configuration) or None``, for the stages of
#: :data:`BYTES_STAGES`.  A further bytes stage is one entry here and one name there: its function
#: decides from the shared counts whether it can win and codes only below the size it must beat.
BYTES_CODERS: dict[str, Callable[[BlobStats, int], tuple[bytes, dict] | None]] = {
    "huffman": _huffman_below, "rans": _rans_below, "lzw": _lzw_below, "arith": _arith_below}


def lzw_cannot_win(stats: BlobStats, best: int) -> bool:
    """The order-0 test of LZW on a large blob, from counts Huffman already made: skip LZW when the
    best coding so far is within :data:`LZW_ORDER0_SLACK` of the order-0 bound of the blob's
    ``w``-bit symbols (``w`` the best coding's width) and neighbouring symbols are close to
    independent (:meth:`BlobStats.dependence` below :data:`LZW_MAX_DEPENDENCE`, measured at ``w``
    when ``w <= 8``, else on bytes).  LZW only gains on strings that repeat more than their
    symbols' frequencies predict, so there it cannot beat an order-0 coder already at the bound.
    """
    width = stats.width
    if best > (1 + LZW_ORDER0_SLACK) * stats.order0_bytes(width):
        return False  # the best coding is well above the bound (Huffman's one-bit floor): LZW may win
    return stats.dependence(width if width <= 8 else 8) < LZW_MAX_DEPENDENCE


def arith_may_pay(data: bytes, best: int, stats: BlobStats | None = None) -> bool:
    """Whether ``arith`` could beat *best* bytes by :data:`ARITH_MIN_GAIN` on a large blob, judged
    from its byte histogram alone (one compiled pass) before any trial coding: only when the
    best coding is at least that much above the order-0 bound (Huffman's one-bit floor on
    skewed data, where an adaptive binary coder keeps what Huffman loses).

    Measured on MiniLM-L6 lossless: of its 186 blobs over 64 KiB, arith won one (by this
    reason); trials on the others (near-random mantissa planes, exponent planes Huffman
    codes at the bound) cost 12 s of CPU.  What this gives up: order-1 context gains on large
    blobs of quantized codes that Huffman already codes at the order-0 bound.
    """
    bound = stats.order0_bytes(8) if stats is not None else entropy_bound(symbol_counts(data, 8)) / 8
    return best >= (1 + ARITH_MIN_GAIN) * bound


def cost_ok(stage_id: str, size: int, result: tuple[bytes, dict]) -> bool:
    """Whether a stream's declared decode operations stay within rule 4.8.2's default share of its
    own bytes (``2**15`` per stored byte), so choosing it can never push a file past the cap:
    ``arith`` (a bit at a time) and ``rans`` (a symbol at a time, at 0 bits for a one-symbol
    block) could otherwise shrink a blob beyond what the cap allows (``arith`` beyond ~21x)."""
    stream, config = result
    stage = get_stage(stage_id).from_config(config, BytesSpec(size))
    return stage.decode_cost(BytesSpec(size), len(stream)).ops <= DEFAULT_OPS_PER_DATA_BYTE * len(stream)


def arith_cost_ok(size: int, result: tuple[bytes, dict]) -> bool:
    """:func:`cost_ok` for an ``arith`` stream."""
    return cost_ok("arith", size, result)


def rans_loses(data: bytes, best: int) -> bool:
    """Whether ``rans``'s lower size bound for *data*, computed from symbol counts before any
    coding (``rans.size_bounds``), already reaches *best* bytes."""
    from . import rans

    return rans.plan(data, None, None).bounds[0] >= best


def lzw_estimate(data: bytes) -> float:
    """LZW's likely size of *data* in bytes: 0 (meaning "try it") up to :data:`LZW_FULL_TRIAL_BYTES`, else
    the bytes per input byte of :data:`LZW_WINDOWS` evenly spaced windows, each coded from an empty
    dictionary, times ``len(data)``."""
    if len(data) <= LZW_FULL_TRIAL_BYTES:
        return 0.0
    from . import lzw

    return sum(lzw.lzw_size(w) for w in _lzw_windows(data)) / (LZW_WINDOWS * LZW_WINDOW_BYTES) * len(data)


def lzw_loses(data: bytes, best: int) -> bool:
    """Whether to skip LZW's full trial on *data* given the best size so far (the skip test).

    The small-window estimate (:func:`lzw_estimate`) decides when it is below
    :data:`LZW_SKIP_RATIO` x *best* (try) or at least :data:`LZW_RECHECK_RATIO` x *best* (skip).
    In between, one wider window (:data:`LZW_RECHECK_BYTES` from the middle of the blob) decides
    on its own scaled size against :data:`LZW_SKIP_RATIO`: on noise-like data a wider window codes
    about as well as a small one, while on data with long repeats (periods beyond a small window)
    it codes far better, which the small windows alone cannot see.  Windows are coded only as far
    as the answer needs (an LZW stream only grows).
    """
    if len(data) <= LZW_FULL_TRIAL_BYTES:
        return False
    estimate = _scaled_size(_lzw_windows(data), len(data), LZW_RECHECK_RATIO * best)
    if estimate < LZW_SKIP_RATIO * best:
        return False
    if estimate >= LZW_RECHECK_RATIO * best:
        return True
    middle = (len(data) - LZW_RECHECK_BYTES) // 2
    return _scaled_size([data[middle:middle + LZW_RECHECK_BYTES]], len(data), LZW_SKIP_RATIO * best) >= LZW_SKIP_RATIO * best


def _scaled_size(windows: list[bytes], size: int, cap: float) -> float:
    """The windows' total LZW bytes scaled from their length to *size* bytes, or ``inf`` once it
    surely reaches *cap*: each window is coded only until the total passes the cap's share (an
    LZW stream only grows; one byte to spare for rounding)."""
    from . import lzw

    sampled = sum(map(len, windows))
    enough = math.ceil(cap * sampled / size) + 1  # window bytes that surely reach the cap
    total = 0
    for window in windows:
        coded = lzw.encode_below(window, enough - total)  # enough - total >= 1: total stays below enough
        if coded is None:
            return math.inf
        total += len(coded[0])
    return total / sampled * size


def _lzw_windows(data: bytes) -> list[bytes]:
    """The :data:`LZW_WINDOWS` evenly spaced windows of :func:`lzw_estimate` (the first at 0, the last at the end)."""
    step = (len(data) - LZW_WINDOW_BYTES) // (LZW_WINDOWS - 1)
    return [data[k * step : k * step + LZW_WINDOW_BYTES] for k in range(LZW_WINDOWS)]


# --- a chunked part ----------------------------------------------------------------------------


def best_chunked(data: bytes, chunk_size: int, executor: Executor | None = None) -> tuple[str | None, list[bytes], dict]:
    """The smallest coding of *data* in *chunk_size* chunks: ``(stage id or None, blobs, configuration)``.

    One bytes stage and one configuration per part (the header stays one entry per part):
    the first chunk picks each coder's parameters (Huffman's symbol width) as
    :func:`best_bytes_stage` would, the other chunks are coded with them, and the coder
    whose chunks total the fewest bytes wins ("smallest wins", measured on what is stored;
    ties to the simpler, none before huffman before rans before lzw before arith; ``arith`` under the same
    extra conditions as for a large unchunked blob, :func:`best_bytes_stage`).
    Chunks are coded on *executor*.
    """
    from . import lzw

    view = memoryview(data)
    pieces = [view[start:end] for start, end in chunk_bounds(len(data), chunk_size)]
    best: tuple[str | None, list[bytes], dict] = (None, [], {})  # no coder wins: the caller stores the data unchunked
    best_size, best_first = len(data), len(pieces[0])
    first_stats = BlobStats(bytes(pieces[0]))  # the skip tests judge the first chunk, as an unchunked blob
    for stage_id in BYTES_STAGES:
        if stage_id == "lzw" and (lzw_cannot_win(first_stats, best_first) or lzw_loses(first_stats.data, best_first)):
            continue  # its tests on the first chunk say it loses clearly to the best first chunk, as unchunked
        if stage_id == "lzw":
            coded = lzw_chunks(pieces, best_size, executor, lzw.encode_below)
            if coded is not None:
                best, best_size, best_first = (stage_id, coded[0], coded[1]), sum(map(len, coded[0])), len(coded[0][0])
            continue
        if stage_id == "arith" and not arith_may_pay(first_stats.data, best_first, first_stats):
            continue  # the same histogram test as for an unchunked blob over 64 KiB
        if stage_id == "rans" and rans_loses(first_stats.data, best_first):
            continue  # its size bound from counts says it cannot beat the best first chunk
        stage = get_stage(stage_id)
        first, config = stage.encode(bytes(pieces[0]), BytesSpec(len(pieces[0])), {})
        rest = map_in_order(executor, lambda piece, stage=stage, config=config: stage.encode(bytes(piece), BytesSpec(len(piece)), config)[0],
                            pieces[1:])
        coded = [first, *rest]
        size = sum(map(len, coded))
        if stage_id == "arith" and (size >= (1 - ARITH_MIN_GAIN) * best_size
                                    or not all(arith_cost_ok(len(p), (c, config)) for p, c in zip(pieces, coded))):
            continue  # as unchunked: arith must save ARITH_MIN_GAIN and stay within rule 4.8.2's default
        if stage_id == "rans" and not all(cost_ok("rans", len(p), (c, config)) for p, c in zip(pieces, coded)):
            continue  # as unchunked: within rule 4.8.2's default
        if size < best_size:
            best, best_size, best_first = (stage_id, coded, config), size, len(first)
            first_stats.width = int(config.get("symbol_bits", 8)) if stage_id == "huffman" else first_stats.width
    return best


def lzw_chunks(pieces: list, best_size: int, executor: Executor | None, lzw_below: Callable) -> tuple[list[bytes], dict] | None:
    """The chunks LZW-coded with default parameters if their total is below *best_size* bytes, else None.

    Each chunk is coded only while it can still win (an LZW stream only grows): the first one
    below *best_size*, the others below what the first leaves, so a losing LZW stops early.
    """
    first = lzw_below(bytes(pieces[0]), best_size)
    if first is None:
        return None
    left = best_size - len(first[0])
    rest = map_in_order(executor, lambda piece: lzw_below(bytes(piece), left), pieces[1:])
    if any(r is None for r in rest) or len(first[0]) + sum(len(r[0]) for r in rest) >= best_size:
        return None
    return [first[0], *(r[0] for r in rest)], first[1]
