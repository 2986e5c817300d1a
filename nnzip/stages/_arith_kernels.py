"""Compiled loops of the ``arith`` stage (see ``spec/stages/arith.md``).

* :func:`encode` -- the adaptive binary range coder over the input's bits, each bit
  coded with the probability of its context (its place in the symbol's bit tree and,
  at order 1, the previous symbol);
* :func:`decode` -- the mirror image; it also counts the bytes it reads, so the caller
  can reject truncated streams, trailing garbage and a non-canonical flush.

All arithmetic is on integers (int64 holds every intermediate): the coder is the
LZMA range coder with 12-bit probabilities, and the models are 22-bit counters whose
step shrinks as ``2 / (2 n + 3)`` with their use count ``n`` (capped), so a context
learns fast at first and then settles.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

#: Probabilities are stored with this many bits; the coder uses their top 12 bits.
PROB_BITS = 22
#: The coder's probability resolution.
CODER_BITS = 12
#: A context's use count stops growing here (its step is then 2 / (2 * LIMIT + 3)).
COUNT_LIMIT = 1023
#: Below this the range is renormalised (shifted by a byte).
TOP = 1 << 24
#: Status codes of :func:`decode`.
OK, PAST_END, BAD_START = 0, 1, 2


def steps() -> np.ndarray:
    """``R[n] = floor(2**17 / (2 n + 3))`` for ``n = 0 .. COUNT_LIMIT``: the step of a context used ``n`` times."""
    n = np.arange(COUNT_LIMIT + 1, dtype=np.int64)
    return (1 << 17) // (2 * n + 3)


@kernel
def encode(data, nbits, width, order, step, limit, out):
    """Code the first *nbits* bits of *data* (MSB-first) into *out*; returns the stream length.

    Returns -1 as soon as the stream would reach *limit* bytes (``limit <= 0``: no limit).
    *out* must hold ``nbits * 2 + 16`` bytes (or ``limit + 16`` with a limit).  The first
    byte of LZMA's stream, always 0, is not written.
    """
    contexts = (1 << width) << (width if order == 1 else 0)
    prob = np.full(contexts, 1 << (PROB_BITS - 1), dtype=np.int64)
    count = np.zeros(contexts, dtype=np.int64)
    low = np.int64(0)
    rng = np.int64(0xFFFFFFFF)
    cache = np.int64(0)
    cache_size = np.int64(1)
    pos = np.int64(-1)  # the first byte shifted out is LZMA's leading 0, dropped
    node = 1
    prev = 0
    j = 0
    full = 1 << PROB_BITS
    for k in range(nbits):
        bit = (np.int64(data[k >> 3]) >> (7 - (k & 7))) & 1
        ctx = (prev << width) | node
        p = prob[ctx] >> (PROB_BITS - CODER_BITS)
        if p < 1:
            p = 1
        elif p > (1 << CODER_BITS) - 1:
            p = (1 << CODER_BITS) - 1
        bound = (rng >> CODER_BITS) * p
        if bit == 0:
            rng = bound
            prob[ctx] += ((full - prob[ctx]) * step[count[ctx]]) >> 16
        else:
            low += bound
            rng -= bound
            prob[ctx] += ((0 - prob[ctx]) * step[count[ctx]]) >> 16
        if count[ctx] < COUNT_LIMIT:
            count[ctx] += 1
        node = (node << 1) | bit
        j += 1
        if j == width:
            if order == 1:
                prev = node - (1 << width)
            node = 1
            j = 0
        while rng < TOP:
            rng <<= 8
            # shift_low
            if low < 0xFF000000 or low >= 0x100000000:
                carry = low >> 32
                temp = cache
                while True:
                    if pos >= 0:
                        out[pos] = (temp + carry) & 0xFF
                    pos += 1
                    temp = 0xFF
                    cache_size -= 1
                    if cache_size == 0:
                        break
                cache = (low >> 24) & 0xFF
            cache_size += 1
            low = (low & 0x00FFFFFF) << 8
            if limit > 0 and pos + cache_size >= limit:
                return -1
    for _ in range(5):  # flush: the 4 bytes of low and the pending cache
        if low < 0xFF000000 or low >= 0x100000000:
            carry = low >> 32
            temp = cache
            while True:
                if pos >= 0:
                    out[pos] = (temp + carry) & 0xFF
                pos += 1
                temp = 0xFF
                cache_size -= 1
                if cache_size == 0:
                    break
            cache = (low >> 24) & 0xFF
        cache_size += 1
        low = (low & 0x00FFFFFF) << 8
    if limit > 0 and pos >= limit:
        return -1
    return pos


@kernel
def decode(stream, nbits, width, order, step, out):
    """Decode *nbits* bits into *out* (MSB-first, zeroed by the caller).

    Returns ``(status, bytes_read, code)``: ``PAST_END`` if the decoder needed a byte
    beyond the stream (a stream byte past the end reads as 0 meanwhile), ``BAD_START``
    if the first four bytes are all 255, else ``OK``;
    ``bytes_read`` is how many stream bytes the decoder consumed and ``code`` its final
    code value (0 for the canonical flush).
    """
    contexts = (1 << width) << (width if order == 1 else 0)
    prob = np.full(contexts, 1 << (PROB_BITS - 1), dtype=np.int64)
    count = np.zeros(contexts, dtype=np.int64)
    size = stream.size
    rng = np.int64(0xFFFFFFFF)
    code = np.int64(0)
    pos = 0
    for _ in range(4):
        code = (code << 8) | (np.int64(stream[pos]) if pos < size else 0)
        pos += 1
    if code >= rng:  # FF FF FF FF: no canonical stream starts so, and code < range must hold
        return BAD_START, pos, code
    node = 1
    prev = 0
    j = 0
    full = 1 << PROB_BITS
    for k in range(nbits):
        ctx = (prev << width) | node
        p = prob[ctx] >> (PROB_BITS - CODER_BITS)
        if p < 1:
            p = 1
        elif p > (1 << CODER_BITS) - 1:
            p = (1 << CODER_BITS) - 1
        bound = (rng >> CODER_BITS) * p
        if code < bound:
            bit = 0
            rng = bound
            prob[ctx] += ((full - prob[ctx]) * step[count[ctx]]) >> 16
        else:
            bit = 1
            code -= bound
            rng -= bound
            prob[ctx] += ((0 - prob[ctx]) * step[count[ctx]]) >> 16
            out[k >> 3] |= np.uint8(1 << (7 - (k & 7)))
        if count[ctx] < COUNT_LIMIT:
            count[ctx] += 1
        node = (node << 1) | bit
        j += 1
        if j == width:
            if order == 1:
                prev = node - (1 << width)
            node = 1
            j = 0
        while rng < TOP:
            rng <<= 8
            code = (code << 8) | (np.int64(stream[pos]) if pos < size else 0)
            pos += 1
    status = PAST_END if pos > size else OK
    return status, pos, code


# --- levels mode: signed levels binarized DeepCABAC-style (spec/stages/arith.md, "Levels mode") ---

#: Context offsets of the levels mode: significance (3 x 3 neighbour classes), sign (by the
#: previous level's sign), greater-than-1/2 flags (sign x flag x neighbour class), the
#: exp-Golomb prefix (sign x index) and suffix (length x bit), and the bits of a partial last symbol.
SIG, SIGN, GT, PREFIX, SUFFIX, TAIL = 0, 9, 12, 24, 40, 104
LEVEL_CONTEXTS = 112
#: Status of :func:`decode_levels` for a remainder beyond the symbol's range.
BAD_LEVEL = 3


@kernel
def _bit_length(value):
    """Bits needed for *value* >= 0 (0 for 0)."""
    n = 0
    while value > 0:
        value >>= 1
        n += 1
    return n


@kernel
def _symbol_bins(level, a, b, q, width, zero, ctxs, bins):
    """Fill *ctxs*/*bins* with the (context, bin) pairs of one level (spec "Levels mode"); returns how many.

    The coder itself is written once, inline, in :func:`encode_levels`: helper calls holding the
    coder's state in arrays ran it ~10x slower than local variables.
    """
    max_pos, max_neg = (1 << width) - 1 - zero, zero
    ctxs[0], bins[0] = SIG + 3 * a + b, 1 if level != 0 else 0
    n = 1
    if level == 0:
        return n
    sign = 0 if level > 0 else 1
    bound = max_pos if level > 0 else max_neg
    if max_pos > 0 and max_neg > 0:
        ctxs[n], bins[n] = SIGN + q, sign
        n += 1
    magnitude = abs(level)
    if bound > 1:
        ctxs[n], bins[n] = GT + 6 * sign + a, 1 if magnitude > 1 else 0
        n += 1
    if magnitude > 1 and bound > 2:
        ctxs[n], bins[n] = GT + 6 * sign + 3 + a, 1 if magnitude > 2 else 0
        n += 1
    if magnitude > 2 and bound > 3:
        rest = magnitude - 2  # 1 .. bound - 2: exp-Golomb, prefix truncated at its longest
        length = _bit_length(rest) - 1
        longest = _bit_length(bound - 2) - 1
        for i in range(length):
            ctxs[n], bins[n] = PREFIX + 8 * sign + i, 1
            n += 1
        if length < longest:
            ctxs[n], bins[n] = PREFIX + 8 * sign + length, 0
            n += 1
        for i in range(length - 1, -1, -1):
            ctxs[n], bins[n] = SUFFIX + 8 * length + i, (rest >> i) & 1
            n += 1
    return n


@kernel
def encode_levels(data, nbits, width, zero, order, step, limit, out):
    """Code the first *nbits* bits of *data* as ``w``-bit symbols, each a signed level ``symbol - zero``.

    Each level is binarized (significance, sign, greater-than-1, greater-than-2, exp-Golomb
    remainder, :func:`_symbol_bins`), each bin in a context of the previous *order* (0-2)
    levels; the bits of a partial last symbol follow, one context per position.  Returns the
    stream length, or -1 as soon as it would reach *limit* bytes (``limit <= 0``: no limit).
    *out* must hold ``limit + 16`` bytes, or ``(bins * 12 + 7) // 8 + 16`` without a limit,
    ``bins`` being at most ``max_bins`` per symbol plus the tail bits.
    """
    prob = np.full(LEVEL_CONTEXTS, 1 << (PROB_BITS - 1), dtype=np.int64)
    count = np.zeros(LEVEL_CONTEXTS, dtype=np.int64)
    ctxs = np.zeros(24, dtype=np.int64)
    bins = np.zeros(24, dtype=np.int64)
    low = np.int64(0)
    rng = np.int64(0xFFFFFFFF)
    cache = np.int64(0)
    cache_size = np.int64(1)
    pos = np.int64(-1)  # the first byte shifted out is LZMA's leading 0, dropped
    full = 1 << PROB_BITS
    symbols = nbits // width
    prev1 = 0
    prev2 = 0
    k = 0
    for s in range(symbols + 1):
        if s < symbols:
            value = 0
            for _ in range(width):
                value = (value << 1) | ((np.int64(data[k >> 3]) >> (7 - (k & 7))) & 1)
                k += 1
            level = value - zero
            a = min(abs(prev1), 2) if order >= 1 else 0
            b = min(abs(prev2), 2) if order >= 2 else 0
            q = 0 if (order == 0 or prev1 == 0) else (1 if prev1 > 0 else 2)
            n = _symbol_bins(level, a, b, q, width, zero, ctxs, bins)
            prev2 = prev1
            prev1 = level
        else:  # the tail: the bits of a partial last symbol, one context per position
            n = 0
            while k < nbits:
                ctxs[n], bins[n] = TAIL + n, (np.int64(data[k >> 3]) >> (7 - (k & 7))) & 1
                k += 1
                n += 1
        for i in range(n):
            ctx = ctxs[i]
            p = prob[ctx] >> (PROB_BITS - CODER_BITS)
            if p < 1:
                p = 1
            elif p > (1 << CODER_BITS) - 1:
                p = (1 << CODER_BITS) - 1
            bound = (rng >> CODER_BITS) * p
            if bins[i] == 0:
                rng = bound
                prob[ctx] += ((full - prob[ctx]) * step[count[ctx]]) >> 16
            else:
                low += bound
                rng -= bound
                prob[ctx] += ((0 - prob[ctx]) * step[count[ctx]]) >> 16
            if count[ctx] < COUNT_LIMIT:
                count[ctx] += 1
            while rng < TOP:
                rng <<= 8
                if low < 0xFF000000 or low >= 0x100000000:
                    carry = low >> 32
                    temp = cache
                    while True:
                        if pos >= 0:
                            out[pos] = (temp + carry) & 0xFF
                        pos += 1
                        temp = 0xFF
                        cache_size -= 1
                        if cache_size == 0:
                            break
                    cache = (low >> 24) & 0xFF
                cache_size += 1
                low = (low & 0x00FFFFFF) << 8
        if limit > 0 and pos + cache_size >= limit:
            return -1
    for _ in range(5):  # flush: the 4 bytes of low and the pending cache
        if low < 0xFF000000 or low >= 0x100000000:
            carry = low >> 32
            temp = cache
            while True:
                if pos >= 0:
                    out[pos] = (temp + carry) & 0xFF
                pos += 1
                temp = 0xFF
                cache_size -= 1
                if cache_size == 0:
                    break
            cache = (low >> 24) & 0xFF
        cache_size += 1
        low = (low & 0x00FFFFFF) << 8
    if limit > 0 and pos >= limit:
        return -1
    return pos


#: Phases of :func:`decode_levels`' state machine: the bin it decodes next.
_SIG, _SIGN, _GT1, _GT2, _PREFIX, _SUFFIX, _TAIL, _DONE = 0, 1, 2, 3, 4, 5, 6, 7


@kernel
def decode_levels(stream, nbits, width, zero, order, step, out):
    """Decode *nbits* bits of levels-mode symbols into *out* (zeroed by the caller); mirror of :func:`encode_levels`.

    A state machine over the bins (its phase says which bin comes next and in which context),
    so the coder step is written once, inline.  Returns ``(status, bytes_read, code)`` as
    :func:`decode`, with ``BAD_LEVEL`` for an exp-Golomb remainder beyond the symbol's range
    (no encoder writes one).
    """
    prob = np.full(LEVEL_CONTEXTS, 1 << (PROB_BITS - 1), dtype=np.int64)
    count = np.zeros(LEVEL_CONTEXTS, dtype=np.int64)
    size = stream.size
    rng = np.int64(0xFFFFFFFF)
    code = np.int64(0)
    pos = 0
    for _ in range(4):
        code = (code << 8) | (np.int64(stream[pos]) if pos < size else 0)
        pos += 1
    if code >= rng:
        return BAD_START, pos, code
    full = 1 << PROB_BITS
    max_pos, max_neg = (1 << width) - 1 - zero, zero
    both = max_pos > 0 and max_neg > 0
    symbols = nbits // width
    prev1 = 0
    prev2 = 0
    k = 0
    for s in range(symbols + 1):
        if s < symbols:
            a = min(abs(prev1), 2) if order >= 1 else 0
            b = min(abs(prev2), 2) if order >= 2 else 0
            q = 0 if (order == 0 or prev1 == 0) else (1 if prev1 > 0 else 2)
            phase, ctx = _SIG, SIG + 3 * a + b
        elif k < nbits:
            a = b = q = 0
            phase, ctx = _TAIL, TAIL
        else:
            break
        sign = 0
        bound = 0
        magnitude = 0
        length = 0
        longest = 0
        rest = 0
        i = 0
        while phase != _DONE:
            p = prob[ctx] >> (PROB_BITS - CODER_BITS)
            if p < 1:
                p = 1
            elif p > (1 << CODER_BITS) - 1:
                p = (1 << CODER_BITS) - 1
            cut = (rng >> CODER_BITS) * p
            if code < cut:
                bit = 0
                rng = cut
                prob[ctx] += ((full - prob[ctx]) * step[count[ctx]]) >> 16
            else:
                bit = 1
                code -= cut
                rng -= cut
                prob[ctx] += ((0 - prob[ctx]) * step[count[ctx]]) >> 16
            if count[ctx] < COUNT_LIMIT:
                count[ctx] += 1
            while rng < TOP:
                rng <<= 8
                code = (code << 8) | (np.int64(stream[pos]) if pos < size else 0)
                pos += 1
            # the next bin, from this one (spec "Levels mode", steps 1-5)
            if phase == _TAIL:
                if bit:
                    out[k >> 3] |= np.uint8(1 << (7 - (k & 7)))
                k += 1
                i += 1
                ctx = TAIL + i
                if k == nbits:
                    phase = _DONE
                continue
            if phase == _SIG or phase == _SIGN:
                if phase == _SIG and bit == 0:
                    phase = _DONE
                    continue
                if phase == _SIG and both:
                    phase, ctx = _SIGN, SIGN + q
                    continue
                sign = bit if phase == _SIGN else (0 if max_pos > 0 else 1)
                bound = max_pos if sign == 0 else max_neg
                magnitude = 1
                if bound > 1:
                    phase, ctx = _GT1, GT + 6 * sign + a
                else:
                    phase = _DONE
            elif phase == _GT1:
                if bit and bound > 2:
                    magnitude = 2
                    phase, ctx = _GT2, GT + 6 * sign + 3 + a
                else:
                    magnitude += bit
                    phase = _DONE
            elif phase == _GT2:
                magnitude = 2 + bit
                if bit and bound > 3:
                    longest = _bit_length(bound - 2) - 1  # >= 1
                    length = 0
                    phase, ctx = _PREFIX, PREFIX + 8 * sign
                else:
                    phase = _DONE
            else:
                if phase == _PREFIX:
                    if bit:
                        length += 1
                    if bit and length < longest:
                        ctx = PREFIX + 8 * sign + length
                        continue
                    rest = 1
                    i = length - 1
                else:  # _SUFFIX
                    rest = (rest << 1) | bit
                    i -= 1
                if i >= 0:
                    phase, ctx = _SUFFIX, SUFFIX + 8 * length + i
                    continue
                if rest > bound - 2:
                    return BAD_LEVEL, pos, code
                magnitude = rest + 2
                phase = _DONE
        if s < symbols:
            level = magnitude if sign == 0 else -magnitude
            value = level + zero
            for j in range(width - 1, -1, -1):
                if (value >> j) & 1:
                    out[k >> 3] |= np.uint8(1 << (7 - (k & 7)))
                k += 1
            prev2 = prev1
            prev1 = level
    status = PAST_END if pos > size else OK
    return status, pos, code
