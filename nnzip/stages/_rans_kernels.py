"""Compiled loops of the ``rans`` stage (see ``spec/stages/rans.md``).

* :func:`block_counts` -- the symbol histogram of every block (one pass);
* :func:`plan_tables` -- the encoder's choice, per block, of "reuse the previous table" or a
  new table (its precision ``P`` and Exp-Golomb order ``k``), by exact bit costs from counts;
* :func:`write_tables` -- the bit-packed table section of a plan;
* :func:`encode` -- the interleaved rANS encoder (4 lanes, 64-bit states, 32-bit words), run
  backwards over the symbols as rANS must be;
* :func:`decode` -- the mirror image, parsing and checking each block's table when its block
  starts, so the decoder holds one table at a time whatever the blob's size.

All arithmetic is on int64 with every value below ``2**63`` (states lie in
``[2**31, 2**63)``), so the kernels never depend on unsigned wrap-around.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

#: Frequencies of the coder sum to ``2**SCALE_BITS``; tables store them at a precision ``P <= SCALE_BITS``.
SCALE_BITS = 15
#: Interleaved coder states: symbol ``i`` is coded by lane ``i mod LANES``.
LANES = 4
#: A state lies in ``[LOW, 2**63)``; below ``LOW`` the decoder reads one 32-bit word.
LOW = 1 << 31
#: The encoder emits a word before coding a symbol of frequency ``f`` when its state is at least
#: ``((LOW >> SCALE_BITS) << 32) * f = f << XMAX_SHIFT``, which keeps every state below ``2**63``.
XMAX_SHIFT = 31 - SCALE_BITS + 32
#: Longest Exp-Golomb prefix a table value may have (values are at most ``2**15``).
MAX_PREFIX = 16
#: Status codes of :func:`decode`.
OK, TABLE_TRUNCATED, TABLE_VALUE, TABLE_SUM, WORDS_TRUNCATED, PADDING, TABLE_LONG = 0, 1, 2, 3, 4, 5, 6


@kernel
def symbol_at(data, i, width):
    """Symbol *i* (``width`` bits, MSB-first) of *data*; bits past the end read as 0 (the padding)."""
    if width == 8:
        return np.int64(data[i])
    bit = i * width
    byte = bit >> 3
    hi = np.int64(data[byte]) if byte < data.size else 0
    lo = np.int64(data[byte + 1]) if byte + 1 < data.size else 0
    return (((hi << 8) | lo) >> (16 - (bit & 7) - width)) & ((1 << width) - 1)


@kernel
def block_counts(data, width, nsym, block_bits):
    """Counts ``[block, symbol]`` of the *nsym* ``width``-bit symbols of *data*, blocks of ``2**block_bits``."""
    nblocks = (nsym + (1 << block_bits) - 1) >> block_bits
    counts = np.zeros((max(nblocks, 1), 1 << width), dtype=np.int64)
    if width == 8:
        for i in range(nsym):
            counts[i >> block_bits, data[i]] += 1
    elif 8 % width == 0:  # symbols never straddle bytes: cut each byte with fixed shifts
        per = 8 // width
        mask = (1 << width) - 1
        for j in range(data.size):
            v = np.int64(data[j])
            for t in range(per):
                counts[(j * per + t) >> block_bits, (v >> (8 - width * (t + 1))) & mask] += 1
    else:
        for i in range(nsym):
            counts[i >> block_bits, symbol_at(data, i, width)] += 1
    return counts


@kernel
def eg_bits(value, k):
    """Bits of the Exp-Golomb code of order *k* of *value* (``2 * floor(log2(value + 2**k)) - k + 1``)."""
    v = value + (1 << k)
    n = 0
    while v > 1:
        v >>= 1
        n += 1
    return 2 * n - k + 1


@kernel
def _normalise(counts, total, precision, q):
    """*q* = frequencies of *counts* (summing to *total*) scaled to ``2**precision``, every seen symbol
    at least 1, the rounding error put on the most frequent one; False when that is impossible."""
    target = np.int64(1) << precision
    acc = np.int64(0)
    top = 0
    for s in range(counts.size):
        c = counts[s]
        if c > 0:
            v = (c * target + total // 2) // total
            if v < 1:
                v = 1
            q[s] = v
            acc += v
            if c > counts[top]:
                top = s
        else:
            q[s] = 0
    q[top] += target - acc
    return q[top] >= 1


@kernel
def _coded_bits(counts, q, precision):
    """Exact ideal cost ``sum c log2(2**P / q)`` in bits of *counts* under table *q*; inf if a seen symbol has q = 0."""
    bits = 0.0
    for s in range(counts.size):
        c = counts[s]
        if c > 0:
            if q[s] == 0:
                return np.inf
            bits += c * (precision - np.log2(q[s]))
    return bits


@kernel
def plan_tables(counts, min_precision):
    """Per block: ``(new, P, k)`` and the table ``q`` (``[block, symbol]``), chosen greedily by bits.

    A block reuses the table in force (the flat table ``q = 1``, ``P = w`` before the first new
    one) when that codes it in fewer bits than the cheapest new table (``P`` from
    *min_precision* to 15, ``k`` 0..P), table bits included.  Returns ``(new, precision, order,
    tables, bits)``: *bits* is the plan's total, table section and ideal coded bits.
    """
    nblocks, alphabet = counts.shape
    new = np.zeros(nblocks, dtype=np.int64)
    precision = np.zeros(nblocks, dtype=np.int64)
    order = np.zeros(nblocks, dtype=np.int64)
    tables = np.zeros((nblocks, alphabet), dtype=np.int64)
    width = 0
    while (1 << width) < alphabet:
        width += 1
    current = np.ones(alphabet, dtype=np.int64)
    current_p = width
    q = np.zeros(alphabet, dtype=np.int64)
    total_bits = 0.0
    for b in range(nblocks):
        row = counts[b]
        total = row.sum()
        reuse = 1.0 + _coded_bits(row, current, current_p)
        best = np.inf
        best_p = 0
        best_k = 0
        if total > 0:
            used = 0
            for s in range(alphabet):
                if row[s] > 0:
                    used += 1
            lowest = 0
            while (1 << lowest) < used:
                lowest += 1
            worse = 0
            for p in range(SCALE_BITS, max(min_precision, lowest) - 1, -1):
                # From the finest precision down; the total is about convex in P, so stop once
                # two precisions in a row found nothing better.
                if worse >= 2:
                    break
                worse += 1
                if not _normalise(row, total, p, q):
                    continue
                coded = _coded_bits(row, q, p)
                # Exp-Golomb's best order is near log2 of the mean value: try a window around it.
                mean_bits = 0
                while (used << (mean_bits + 1)) <= (1 << p):
                    mean_bits += 1
                # ...and 0, best where most symbols are absent (each 0 then costs k + 1 bits).
                for k in range(max(0, mean_bits - 3) - 1, min(p, mean_bits + 1) + 1):
                    if k < 0:
                        k = 0
                    elif k == 0:
                        continue
                    table = 9.0
                    for s in range(alphabet):
                        table += eg_bits(q[s], k)
                    if coded + table < best:
                        best, best_p, best_k = coded + table, p, k
                        worse = 0
        if best < reuse:
            _normalise(row, total, best_p, q)
            current = q.copy()
            current_p = best_p
            new[b] = 1
            precision[b] = best_p
            order[b] = best_k
            total_bits += best
        else:
            total_bits += reuse
        tables[b] = current
        precision[b] = current_p
    return new, precision, order, tables, total_bits


@kernel
def _put(out, pos, value, nbits):
    """Write the low *nbits* of *value* at bit *pos* of *out* (MSB-first, *out* zeroed); the new pos."""
    for j in range(nbits - 1, -1, -1):
        if (value >> j) & 1:
            out[pos >> 3] |= np.uint8(0x80 >> (pos & 7))
        pos += 1
    return pos


@kernel
def write_tables(new, precision, order, tables, out):
    """The table section of a plan into *out* (zeroed, large enough); returns its length in bits."""
    pos = 0
    nblocks, alphabet = tables.shape
    for b in range(nblocks):
        if new[b] == 0:
            pos = _put(out, pos, 0, 1)
            continue
        pos = _put(out, pos, 1, 1)
        pos = _put(out, pos, precision[b], 4)
        k = order[b]
        pos = _put(out, pos, k, 4)
        for s in range(alphabet):
            v = tables[b, s] + (1 << k)
            n = 0
            t = v
            while t > 1:
                t >>= 1
                n += 1
            pos = _put(out, pos, 0, n - k)  # the prefix: as many zeros as v has bits beyond k + 1
            pos = _put(out, pos, v, n + 1)
    return pos


@kernel
def encode(data, width, nsym, block_bits, tables, precision, words):
    """Code the symbols backwards; the 32-bit words fill *words* (uint32) from its end, so they end
    up in the order the decoder reads them.  Returns ``(index of the first word, final states)``,
    or ``(-1, states)`` if *words* is too small (the caller sized it from the plan's bound).

    ``x // f`` is computed as a float64 product by ``1 / f`` and corrected by one step either way
    (the quotient is below ``2**48``, so the float is off by less than 1): a 64-bit integer
    division would cost several times the rest of the step.
    """
    nblocks, alphabet = tables.shape
    freq = np.zeros((nblocks, alphabet), dtype=np.int64)
    start = np.zeros((nblocks, alphabet), dtype=np.int64)
    inverse = np.zeros((nblocks, alphabet), dtype=np.float64)
    for b in range(nblocks):
        shift = SCALE_BITS - precision[b]
        acc = 0
        for s in range(alphabet):
            f = tables[b, s] << shift
            freq[b, s] = f
            start[b, s] = acc
            inverse[b, s] = 1.0 / f if f else 0.0
            acc += f
    state = np.full(LANES, LOW, dtype=np.int64)
    pos = words.size
    mask = np.int64(0xFFFFFFFF)
    for i in range(nsym - 1, -1, -1):
        s = symbol_at(data, i, width)
        b = i >> block_bits
        f = freq[b, s]
        lane = i & (LANES - 1)
        x = state[lane]
        if (x >> XMAX_SHIFT) >= f:  # x >= f * 2**48, without forming 2**63 when f = 2**15
            if pos == 0:
                return -1, state
            pos -= 1
            words[pos] = np.uint32(x & mask)
            x >>= 32
        quotient = np.int64(np.float64(x) * inverse[b, s])
        rest = x - quotient * f
        if rest < 0:
            quotient -= 1
            rest += f
        elif rest >= f:
            quotient += 1
            rest -= f
        state[lane] = (quotient << SCALE_BITS) + rest + start[b, s]
    return pos, state


@kernel
def _get(buf, nbits_total, pos, nbits):
    """*nbits* bits at bit *pos* of *buf* (MSB-first); -1 when they go past *nbits_total*."""
    if pos + nbits > nbits_total:
        return np.int64(-1)
    value = np.int64(0)
    for _ in range(nbits):
        value = (value << 1) | ((np.int64(buf[pos >> 3]) >> (7 - (pos & 7))) & 1)
        pos += 1
    return value


@kernel
def _read_table(buf, nbits_total, pos, alphabet, q):
    """Parse one new table at bit *pos* into *q*; returns ``(status, new pos, precision)``."""
    p = _get(buf, nbits_total, pos, 4)
    k = _get(buf, nbits_total, pos + 4, 4)
    if p < 0 or k < 0:
        return TABLE_TRUNCATED, pos, 0
    pos += 8
    target = np.int64(1) << p
    acc = np.int64(0)
    for s in range(alphabet):
        zeros = 0
        while True:
            if pos >= nbits_total:
                return TABLE_TRUNCATED, pos, p
            if (buf[pos >> 3] >> (7 - (pos & 7))) & 1:
                break
            zeros += 1
            pos += 1
            if zeros > MAX_PREFIX:
                return TABLE_LONG, pos, p
        rest = _get(buf, nbits_total, pos, zeros + k + 1)
        if rest < 0:
            return TABLE_TRUNCATED, pos, p
        pos += zeros + k + 1
        v = rest - (1 << k)
        if v > target:
            return TABLE_VALUE, pos, p
        q[s] = v
        acc += v
    if acc != target:
        return TABLE_SUM, pos, p
    return OK, pos, p


@kernel
def decode(tables, nbits_tables, words, width, nsym, block_bits, state, out):
    """Decode *nsym* symbols into *out* (zeroed by the caller when ``width < 8``).

    *tables* is the table section (*nbits_tables* of its bits are meaningful), *words* the
    32-bit words as uint32, *state* the 4 initial states (already checked to lie in
    ``[LOW, 2**63)``; left holding the final ones).  Returns ``(status, detail, words read,
    table bits read)``; *detail* is the block of a table error.
    """
    alphabet = 1 << width
    q = np.ones(alphabet, dtype=np.int64)
    freq = np.zeros(alphabet, dtype=np.int64)
    start = np.zeros(alphabet, dtype=np.int64)
    slots = np.zeros(1 << SCALE_BITS, dtype=np.uint8)
    precision = width
    tpos = 0
    wpos = 0
    nwords = words.size
    block = 1 << block_bits
    nblocks = (nsym + block - 1) >> block_bits
    slot_mask = (1 << SCALE_BITS) - 1
    for b in range(nblocks):
        if tpos >= nbits_tables:
            return TABLE_TRUNCATED, b, wpos, tpos
        fresh = (tables[tpos >> 3] >> (7 - (tpos & 7))) & 1
        tpos += 1
        if fresh or b == 0:
            if fresh:
                status, tpos, precision = _read_table(tables, nbits_tables, tpos, alphabet, q)
                if status != OK:
                    return status, b, wpos, tpos
            shift = SCALE_BITS - precision
            acc = 0
            for s in range(alphabet):
                f = q[s] << shift
                freq[s] = f
                start[s] = acc
                slots[acc : acc + f] = s
                acc += f
        first = b << block_bits
        last = min(nsym, first + block)
        if width == 8:
            # Four symbols a round, one per lane, states in registers (first is a multiple of 4).
            x0, x1, x2, x3 = state[0], state[1], state[2], state[3]
            i = first
            while i + 4 <= last:
                slot = x0 & slot_mask
                s = slots[slot]
                x0 = freq[s] * (x0 >> SCALE_BITS) + slot - start[s]
                out[i] = s
                if x0 < LOW:
                    if wpos >= nwords:
                        return WORDS_TRUNCATED, b, wpos + 1, tpos
                    x0 = (x0 << 32) | np.int64(words[wpos])
                    wpos += 1
                slot = x1 & slot_mask
                s = slots[slot]
                x1 = freq[s] * (x1 >> SCALE_BITS) + slot - start[s]
                out[i + 1] = s
                if x1 < LOW:
                    if wpos >= nwords:
                        return WORDS_TRUNCATED, b, wpos + 1, tpos
                    x1 = (x1 << 32) | np.int64(words[wpos])
                    wpos += 1
                slot = x2 & slot_mask
                s = slots[slot]
                x2 = freq[s] * (x2 >> SCALE_BITS) + slot - start[s]
                out[i + 2] = s
                if x2 < LOW:
                    if wpos >= nwords:
                        return WORDS_TRUNCATED, b, wpos + 1, tpos
                    x2 = (x2 << 32) | np.int64(words[wpos])
                    wpos += 1
                slot = x3 & slot_mask
                s = slots[slot]
                x3 = freq[s] * (x3 >> SCALE_BITS) + slot - start[s]
                out[i + 3] = s
                if x3 < LOW:
                    if wpos >= nwords:
                        return WORDS_TRUNCATED, b, wpos + 1, tpos
                    x3 = (x3 << 32) | np.int64(words[wpos])
                    wpos += 1
                i += 4
            state[0], state[1], state[2], state[3] = x0, x1, x2, x3
            first = i
        for i in range(first, last):
            lane = i & (LANES - 1)
            x = state[lane]
            slot = x & slot_mask
            s = slots[slot]
            x = freq[s] * (x >> SCALE_BITS) + slot - start[s]
            if x < LOW:
                if wpos >= nwords:
                    return WORDS_TRUNCATED, b, wpos + 1, tpos
                x = (x << 32) | np.int64(words[wpos])
                wpos += 1
            state[lane] = x
            if width == 8:
                out[i] = s
            else:
                bit = i * width
                byte = bit >> 3
                shifted = np.int64(s) << (16 - (bit & 7) - width)
                if byte < out.size:
                    out[byte] |= np.uint8(shifted >> 8)
                if byte + 1 < out.size:
                    out[byte + 1] |= np.uint8(shifted & 0xFF)
                elif shifted & 0xFF:
                    return PADDING, b, wpos, tpos
    return OK, 0, wpos, tpos
