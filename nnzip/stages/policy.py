"""The encoder's tail policy: how a part's values are serialized and which bytes stage codes them.

Nothing here is format: a reader never needs it.  The pipeline asks :func:`best_tail` for
each part once its value stages have run; everything else is the rule behind that answer.

* the serializer: ``raw``, or ``bitpack`` for unsigned integers whose largest value needs
  fewer bits than their type (:func:`best_tail`);
* the bytes stage of one blob (:func:`best_bytes_stage`): no coding and ``huffman`` are
  always sized exactly (Huffman's size follows from the symbol counts and code lengths,
  before any bit is packed).  ``lzw`` is run in full, stopping as soon as it cannot win,
  on every blob of at most :data:`LZW_FULL_TRIAL_BYTES`; on a larger blob it is first
  estimated by coding :data:`LZW_WINDOWS` evenly spaced windows of :data:`LZW_WINDOW_BYTES`
  each from an empty dictionary (as every dictionary generation starts), and run in full
  only when that estimate, scaled to the whole blob, is below :data:`LZW_SKIP_RATIO` times
  the best size so far.  ``rans`` is sized from its symbol counts (its table section is exact,
  its words within a few bytes: ``rans.size_bounds``) and coded only when that lower bound is
  below the best size so far.  ``arith`` codes the first 64 KiB with a few widths and both orders
  to choose its parameters; that trial is its exact size on a blob of at most 64 KiB, and on
  a larger one it is run in full only when the trial, scaled to the whole blob, is below 1.02
  times the best size so far (``arith.SKIP_RATIO``).  An ``arith`` stream is only taken if
  its declared decode operations stay within rule 4.8.2's default of ``2**15`` per stored
  byte (so on blobs it shrinks by at most ~21x): it decodes one bit at a time, and a file
  must stay readable under the default caps whatever its blobs.  The fewest bytes among the
  coders actually run wins; on equal sizes the simpler one wins, in the order none <
  huffman < rans < lzw < arith (simpler means faster to decode and less format to trust:
  ``rans`` decodes a table lookup and a multiply per symbol, nearly Huffman's speed), so the
  chosen blob is never larger than the input;
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
LZW_FULL_TRIAL_BYTES = 1 << 18
#: Larger blobs: LZW is estimated on this many windows of this many bytes...
LZW_WINDOWS, LZW_WINDOW_BYTES = 4, 1 << 16
#: ...and tried in full only if the estimate is below this multiple of the best size so far.
LZW_SKIP_RATIO = 1.25

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


def best_bytes_stage(data: bytes, candidates: tuple[str, ...] = BYTES_STAGES) -> tuple[str | None, bytes, dict]:
    """The smallest coding of *data* among the coders tried: ``(stage id or None, encoded bytes, configuration)``.

    Tries no coding and each stage of *candidates* (in :data:`BYTES_STAGES`
    order, simplest first) with its default parameters; the strictly smallest
    output wins, ties go to the simpler (none < huffman < rans < lzw < arith).  ``None`` means
    "store the bytes as they are" (the returned bytes are then *data* itself and
    the configuration is ``{}``).  Each stage's ``encode_below`` may give up as
    soon as it knows it cannot beat the best size so far, which saves time but
    never changes the answer; ``lzw`` is skipped on large blobs where its
    estimate (:func:`lzw_estimate`) is clearly worse, ``rans`` where its size bound from
    counts cannot win, and ``arith`` on large blobs where its prefix trial is (see the
    module docstring).  ``arith`` and ``rans`` are taken only within rule 4.8.2's default
    (:func:`cost_ok`).  On blobs over
    :data:`ARITH_EXACT_BYTES`, ``arith`` must beat the best other coding by
    :data:`ARITH_MIN_GAIN` (its decode is the slowest by far).
    """
    from . import arith, huffman, lzw, rans

    coders = {"huffman": huffman.encode_below, "rans": rans.encode_below, "lzw": lzw.encode_below, "arith": arith.encode_below}
    data = bytes(data)
    best: tuple[str | None, bytes, dict] = (None, data, {})
    for stage_id in BYTES_STAGES:
        if stage_id not in candidates:
            continue
        if stage_id == "lzw" and lzw_loses(data, len(best[1])):
            continue
        limit = len(best[1])
        if stage_id == "arith" and len(data) > ARITH_EXACT_BYTES:
            if not arith_may_pay(data, limit):
                continue
            limit = int(limit * (1 - ARITH_MIN_GAIN))  # decodes ~15x slower than huffman: must pay for it
        result = coders[stage_id](data, limit)
        if result is not None and stage_id in ("arith", "rans") and not cost_ok(stage_id, len(data), result):
            continue
        if result is not None and len(result[0]) < len(best[1]):
            best = (stage_id, result[0], result[1])
    return best


def arith_may_pay(data: bytes, best: int) -> bool:
    """Whether ``arith`` could beat *best* bytes by :data:`ARITH_MIN_GAIN` on a large blob, judged
    from its byte histogram alone (one compiled pass) before any trial coding: only when the
    best coding is at least that much above the order-0 bound (Huffman's one-bit floor on
    skewed data, where an adaptive binary coder keeps what Huffman loses).

    Measured on MiniLM-L6 lossless: of its 186 blobs over 64 KiB, arith won one (by this
    reason); trials on the others (near-random mantissa planes, exponent planes Huffman
    codes at the bound) cost 12 s of CPU.  What this gives up: order-1 context gains on large
    blobs of quantized codes that Huffman already codes at the order-0 bound.
    """
    bound = entropy_bound(symbol_counts(data, 8)) / 8
    return best >= (1 + ARITH_MIN_GAIN) * bound


def arith_cost_ok(size: int, result: tuple[bytes, dict]) -> bool:
    """Whether an ``arith`` stream's declared decode operations stay within rule 4.8.2's default
    share of its own bytes (``2**15`` per stored byte), so choosing it can never push a file past
    the cap: ``arith`` decodes a bit at a time, so on blobs it shrinks more than ~21x it would."""
    return cost_ok("arith", size, result)


def cost_ok(stage_id: str, size: int, result: tuple[bytes, dict]) -> bool:
    """Whether a stream's declared decode operations stay within rule 4.8.2's default share of its
    own bytes (``2**15`` per stored byte): ``arith`` (a bit at a time) and ``rans`` (a symbol at a
    time, at 0 bits for a one-symbol block) could otherwise shrink a blob beyond what the cap allows."""
    stream, config = result
    stage = get_stage(stage_id).from_config(config, BytesSpec(size))
    return stage.decode_cost(BytesSpec(size), len(stream)).ops <= DEFAULT_OPS_PER_DATA_BYTE * len(stream)


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
    """``lzw_estimate(data) >= LZW_SKIP_RATIO * best`` (the skip test), decided while coding no
    window further than it takes: an LZW stream only grows, so a window is coded only until the
    windows' total passes the threshold's share (with one byte to spare for rounding)."""
    threshold = LZW_SKIP_RATIO * best
    if len(data) <= LZW_FULL_TRIAL_BYTES:
        return 0.0 >= threshold
    from . import lzw

    sampled = LZW_WINDOWS * LZW_WINDOW_BYTES
    enough = math.ceil(threshold * sampled / len(data)) + 1  # window bytes that surely reach it
    total = 0
    for window in _lzw_windows(data):
        coded = lzw.encode_below(window, enough - total)  # enough - total >= 1: total stays below enough
        if coded is None and (total + enough - total) / sampled * len(data) >= threshold:
            return True
        total += lzw.lzw_size(window) if coded is None else len(coded[0])
    return total / sampled * len(data) >= threshold


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
    ties to the simpler, none before huffman before lzw before arith; ``arith`` under the same
    extra conditions as for a large unchunked blob, :func:`best_bytes_stage`).
    Chunks are coded on *executor*.
    """
    from . import lzw

    view = memoryview(data)
    pieces = [view[start:end] for start, end in chunk_bounds(len(data), chunk_size)]
    best: tuple[str | None, list[bytes], dict] = (None, [], {})  # no coder wins: the caller stores the data unchunked
    best_size, best_first = len(data), len(pieces[0])
    for stage_id in BYTES_STAGES:
        if stage_id == "lzw" and lzw_loses(bytes(pieces[0]), best_first):
            continue  # its sample of the first chunk says it loses clearly to the best first chunk, as unchunked
        if stage_id == "lzw":
            coded = lzw_chunks(pieces, best_size, executor, lzw.encode_below)
            if coded is not None:
                best, best_size, best_first = (stage_id, coded[0], coded[1]), sum(map(len, coded[0])), len(coded[0][0])
            continue
        if stage_id == "arith" and not arith_may_pay(bytes(pieces[0]), best_first):
            continue  # the same histogram test as for an unchunked blob over 64 KiB
        if stage_id == "rans" and rans_loses(bytes(pieces[0]), best_first):
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
