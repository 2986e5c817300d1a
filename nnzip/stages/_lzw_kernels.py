"""Compiled loops of the ``lzw`` stage (see ``spec/stages/lzw.md``).

* :func:`encode` -- greedy LZW with the dictionary in an open-addressing hash
  table keyed by ``(prefix code << 8) | byte``; each slot carries the number of
  the generation that wrote it, so a dictionary reset costs nothing;
* :func:`measure` / :func:`decode` -- decoding in two passes over the codes: the
  first checks every code is defined and adds up the string lengths (so a
  stream that decodes to the wrong size is rejected before a byte is written),
  the second copies each string from where it already appears in the output.

A code's width follows from its index in its generation alone (spec: ``W(i)``),
so the bit reader and writer need no look-ahead.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

#: Status codes of :func:`measure` (the caller turns them into FormatErrors).
OK, UNDEFINED = 0, 1
#: Multiplier of the hash (Knuth's multiplicative hashing, 2**32 / golden ratio).
_GOLDEN = 2654435761


@kernel
def encode(data, max_bits, limit_bits, out):
    """LZW-code *data* into *out*; returns the stream's byte length, or -1 once it needs more than *limit_bits*.

    *out* must hold the stream (``ceil(limit_bits / 8) + 8`` bytes suffice when a
    limit is given, ``2 * len(data) + 8`` always).  A hash slot is one int64,
    ``generation << 40 | key << 16 | code``, so a probe touches one cache line and
    a slot written by an earlier generation reads as empty.
    """
    full = 1 << max_bits
    hash_bits = max_bits + 1  # load factor at most 1/2
    hash_mask = (1 << hash_bits) - 1
    hash_shift = 32 - hash_bits  # the top bits of the 32-bit product are the well-mixed ones
    slots = np.zeros(1 << hash_bits, dtype=np.int64)
    generation = 1
    free = 256
    index = 0  # index of the next code in its generation
    width = 9
    buf = np.uint64(0)
    nbits = 0
    total = 0
    pos = 0
    code = np.int64(data[0])
    for i in range(1, data.size):
        byte = np.int64(data[i])
        key = (code << 8) | byte
        tag = (generation << 24) | key
        slot = ((key * _GOLDEN) & 0xFFFFFFFF) >> hash_shift
        found = -1
        while True:
            entry = slots[slot]
            if (entry >> 40) != generation:
                break
            if (entry >> 16) == tag:
                found = entry & 0xFFFF
                break
            slot = (slot + 1) & hash_mask
        if found >= 0:
            code = found
            continue
        # emit code in the width of its index
        buf |= np.uint64(code) << np.uint64(nbits)
        nbits += width
        total += width
        if total > limit_bits:
            return -1
        if nbits >= 32:
            out[pos] = buf & np.uint64(0xFF)
            out[pos + 1] = (buf >> np.uint64(8)) & np.uint64(0xFF)
            out[pos + 2] = (buf >> np.uint64(16)) & np.uint64(0xFF)
            out[pos + 3] = (buf >> np.uint64(24)) & np.uint64(0xFF)
            buf >>= np.uint64(32)
            nbits -= 32
            pos += 4
        if free < full:
            slots[slot] = (tag << 16) | free
            free += 1
            index += 1
            if width < max_bits and 255 + index >= 1 << width:
                width += 1
        else:  # that was the generation's last code: start afresh
            generation += 1
            if generation == 1 << 23:  # the tag field would overflow: clear instead
                slots[:] = 0
                generation = 1
            free = 256
            index = 0
            width = 9
        code = byte
    buf |= np.uint64(code) << np.uint64(nbits)
    nbits += width
    total += width
    if total > limit_bits:
        return -1
    while nbits > 0:
        out[pos] = buf & np.uint64(0xFF)
        buf >>= np.uint64(8)
        nbits -= 8
        pos += 1
    return pos


@kernel
def measure(data, max_bits, count, size):
    """Check the *count* codes of *data* and add up their strings' lengths.

    Returns ``(status, k, value)``: ``(UNDEFINED, k, code)`` for the first code
    larger than ``255 + i``; else ``(OK, k, total)`` where *total* is the output
    length and *k* the first code whose string ends past *size* (``count`` if none).
    """
    lengths = np.zeros(1 << max_bits, dtype=np.int64)
    generation = (1 << max_bits) - 255
    buf = np.uint64(0)
    nbits = 0
    pos = 0
    index = 0
    width = 9
    previous = 0
    total = 0
    beyond = count
    for k in range(count):
        while nbits < width:
            buf |= np.uint64(data[pos]) << np.uint64(nbits)
            pos += 1
            nbits += 8
        code = np.int64(buf & np.uint64((1 << width) - 1))
        buf >>= np.uint64(width)
        nbits -= width
        if code > 255 + index:
            return UNDEFINED, k, code
        if code < 256:
            length = 1
        elif code < 255 + index:
            length = lengths[code]
        else:  # KwKwK: the entry this very code defines
            length = previous + 1
        if index:
            lengths[255 + index] = previous + 1
        total += length
        if total > size and beyond == count:
            beyond = k
        previous = length
        index += 1
        if index == generation:
            index = 0
            width = 9
        elif width < max_bits and 255 + index >= 1 << width:
            width += 1
    return OK, beyond, total


@kernel
def decode(data, max_bits, count, out):
    """Write the strings of the *count* codes of *data* into *out*; :func:`measure` must have passed."""
    starts = np.zeros(1 << max_bits, dtype=np.int64)
    lengths = np.zeros(1 << max_bits, dtype=np.int64)
    generation = (1 << max_bits) - 255
    buf = np.uint64(0)
    nbits = 0
    pos = 0
    index = 0
    width = 9
    previous_start = 0
    previous = 0
    o = 0
    for _ in range(count):
        while nbits < width:
            buf |= np.uint64(data[pos]) << np.uint64(nbits)
            pos += 1
            nbits += 8
        code = np.int64(buf & np.uint64((1 << width) - 1))
        buf >>= np.uint64(width)
        nbits -= width
        if code < 256:
            out[o] = code
            length = 1
        else:
            if code < 255 + index:
                source, length = starts[code], lengths[code]
            else:  # KwKwK: previous string plus its own first byte
                source, length = previous_start, previous + 1
            for j in range(length):  # forwards: a source overlapping the end is already written
                out[o + j] = out[source + j]
        if index:
            # entry 255 + index = previous string + this string's first byte, which follow each other in out
            starts[255 + index] = previous_start
            lengths[255 + index] = previous + 1
        previous_start, previous = o, length
        o += length
        index += 1
        if index == generation:
            index = 0
            width = 9
        elif width < max_bits and 255 + index >= 1 << width:
            width += 1
    return o
