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
