"""Compiled loops of the ``huffman`` stage (see ``spec/stages/huffman.md``).

* :func:`histogram` -- counts of the w-bit symbols of a byte string read MSB-first;
* :func:`encode` -- the payload: every symbol's code then END's, packed LSB-first;
* :func:`decode_table` / :func:`decode` -- table-driven decoding: a lookup on the
  next ``L`` stream bits (``L`` = the longest code length, at most 15; two levels,
  the first small enough for the L1 cache) gives the symbol and its code length,
  for every width 1..16; every check of the spec's decoding algorithm is made
  inside the loop, which reports the first failure.

Symbols are read (and written back) with a small MSB-first bit accumulator, so
no per-symbol array is ever built: the memory of a call is its input and output.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

#: Status codes of :func:`decode` (the caller turns them into FormatErrors).
OK, TRUNCATED, END_EARLY, TOO_MANY = 0, 1, 2, 3


@kernel
def histogram(data, width, count, alphabet):
    """Occurrences of each of the first *count* ``width``-bit MSB-first symbols of *data*."""
    counts = np.zeros(alphabet, dtype=np.int64)
    if width == 8:
        for i in range(count):
            counts[data[i]] += 1
        return counts
    mask = (1 << width) - 1
    # g symbols fill exactly g * width / 8 whole bytes; when those fit in a 64-bit word,
    # read them as one big-endian word and cut it with fixed shifts.
    g = 8
    while g % 2 == 0 and (g // 2) * width % 8 == 0:
        g //= 2
    group_bytes = g * width // 8
    done = 0
    i = 0
    if group_bytes <= 8:
        for _ in range(count // g):
            word = np.uint64(0)
            for b in range(group_bytes):
                word = (word << np.uint64(8)) | np.uint64(data[i + b])
            i += group_bytes
            for f in range(g - 1, -1, -1):
                counts[np.int64((word >> np.uint64(f * width)) & np.uint64(mask))] += 1
        done = (count // g) * g
    acc = 0
    have = 0
    while done < count:
        acc = ((acc << 8) | data[i]) & 0xFFFFFF  # never more than width + 7 <= 23 live bits
        i += 1
        have += 8
        while have >= width and done < count:
            have -= width
            counts[(acc >> have) & mask] += 1
            done += 1
    return counts


@kernel
def used_counts(data, width, count):
    """``(symbols, counts)``: the distinct symbols among the first *count* ``width``-bit MSB-first
    symbols of *data*, ascending, and how often each occurs (the nonzero entries of
    :func:`histogram`, in its order).

    Few symbols against a wide alphabet (a small blob read as 16-bit symbols) are sorted
    rather than counted into a table of ``2**width`` entries, which would cost more than the
    blob itself.
    """
    alphabet = 1 << width
    if 8 * count >= alphabet:
        table = histogram(data, width, count, alphabet)
        used = 0
        for s in range(alphabet):
            if table[s]:
                used += 1
        symbols = np.empty(used, dtype=np.int64)
        counts = np.empty(used, dtype=np.int64)
        k = 0
        for s in range(alphabet):
            if table[s]:
                symbols[k] = s
                counts[k] = table[s]
                k += 1
        return symbols, counts
    values = np.empty(count, dtype=np.int64)
    mask = alphabet - 1
    acc = 0
    have = 0
    i = 0
    for k in range(count):
        while have < width:
            acc = ((acc << 8) | data[i]) & 0xFFFFFF
            i += 1
            have += 8
        have -= width
        values[k] = (acc >> have) & mask
    values.sort()
    return _runs(values)


@kernel
def _runs(values):
    """The distinct values of sorted *values* and their run lengths."""
    n = values.size
    runs = 0
    for k in range(n):
        if k == 0 or values[k] != values[k - 1]:
            runs += 1
    symbols = np.empty(runs, dtype=np.int64)
    counts = np.zeros(runs, dtype=np.int64)
    r = -1
    for k in range(n):
        if k == 0 or values[k] != values[k - 1]:
            r += 1
            symbols[r] = values[k]
        counts[r] += 1
    return symbols, counts


@kernel
def halve_used(symbols, counts, width, last):
    """:func:`used_counts` of ``width``-bit symbols from those of ``2 * width``-bit ones of the same
    bytes (*width* <= 8): each wide symbol is two narrow ones, high half first; *last* (or -1) is
    the one narrow symbol left over when their count is odd."""
    size = 1 << width
    mask = size - 1
    table = np.zeros(size, dtype=np.int64)
    for k in range(symbols.size):
        table[symbols[k] >> width] += counts[k]
        table[symbols[k] & mask] += counts[k]
    if last >= 0:
        table[last] += 1
    used = 0
    for s in range(size):
        if table[s]:
            used += 1
    out_symbols = np.empty(used, dtype=np.int64)
    out_counts = np.empty(used, dtype=np.int64)
    k = 0
    for s in range(size):
        if table[s]:
            out_symbols[k] = s
            out_counts[k] = table[s]
            k += 1
    return out_symbols, out_counts


@kernel
def sparse_table_bytes(symbols):
    """Bytes of the sparse code-length table's numbers (count, then the gaps before each of the
    ascending *symbols*, each a LEB128 of at most 3 bytes) plus its nibbles (*symbols* and END)."""
    total = 1 + (symbols.size >= 128) + (symbols.size >= 16384)
    previous = -1
    for k in range(symbols.size):
        gap = symbols[k] - previous - 1
        total += 1 + (gap >= 128) + (gap >= 16384)
        previous = symbols[k]
    return total + (symbols.size + 2) // 2


@kernel
def package_merge(leaves, limit):
    """Code lengths of the sorted positive weights *leaves* (``2 <= n <= 2**limit``), at most *limit* each.

    The loop form of :func:`nnzip.stages.entropy.limited_code_lengths`: each
    level's list is the leaves merged with the pairwise sums of the previous
    level's list, a leaf first on equal weight (exactly what the stable argsort
    of ``[leaves, packages]`` gives, both halves being sorted); then the
    ``2n - 2`` lightest items of the top list are chosen and a leaf's length is
    the number of levels at which it is chosen.
    """
    n = leaves.size
    flags = np.zeros((limit, 2 * n), dtype=np.bool_)
    sizes = np.zeros(limit, dtype=np.int64)
    flags[0, :n] = True
    sizes[0] = n
    weights = np.empty(2 * n, dtype=np.int64)  # the previous level's list
    weights[:n] = leaves
    merged = np.empty(2 * n, dtype=np.int64)
    count = n
    for level in range(1, limit):
        pairs = count // 2
        i = 0
        j = 0
        m = 0
        while i < n or j < pairs:
            if j >= pairs or (i < n and leaves[i] <= weights[2 * j] + weights[2 * j + 1]):
                merged[m] = leaves[i]
                flags[level, m] = True
                i += 1
            else:
                merged[m] = weights[2 * j] + weights[2 * j + 1]
                j += 1
            m += 1
        weights[:m] = merged[:m]
        count = m
        sizes[level] = m
    lengths = np.zeros(n, dtype=np.int64)
    chosen = 2 * n - 2
    for level in range(limit - 1, -1, -1):
        leaves_chosen = 0
        for k in range(min(chosen, sizes[level])):
            if flags[level, k]:
                leaves_chosen += 1
        lengths[:leaves_chosen] += 1
        chosen = 2 * (chosen - leaves_chosen)
        if chosen == 0:
            break
    return lengths


@kernel
def plane_histograms(data, itemsize):
    """Byte counts of each byte position ``0 .. itemsize - 1`` of *data* (rows of ``itemsize`` bytes)."""
    counts = np.zeros((itemsize, 256), dtype=np.int64)
    for row in range(0, data.size - itemsize + 1, itemsize):
        for j in range(itemsize):
            counts[j, data[row + j]] += 1
    return counts


@kernel
def encode(data, width, count, codes, lengths, end, out):
    """Write the codes of the first *count* symbols of *data* and of *end* into *out*, LSB-first.

    *codes* are bit-reversed (a code's first bit is its lowest), so a code is
    OR-ed in above the bits already waiting; 32 bits are stored at a time.
    *out* has exactly the payload's size.
    """
    buf = np.uint64(0)
    nbits = 0
    pos = 0
    acc = 0
    have = 0
    i = 0
    mask = (1 << width) - 1
    for k in range(count + 1):
        if k == count:
            symbol = end
        elif width == 8:
            symbol = np.int64(data[i])
            i += 1
        else:
            if have < width:
                acc = ((acc << 8) | data[i]) & 0xFFFFFF
                i += 1
                have += 8
                if have < width:
                    acc = ((acc << 8) | data[i]) & 0xFFFFFF
                    i += 1
                    have += 8
            have -= width
            symbol = (acc >> have) & mask
        buf |= np.uint64(codes[symbol]) << np.uint64(nbits)
        nbits += lengths[symbol]
        if nbits >= 32:
            out[pos] = buf & np.uint64(0xFF)
            out[pos + 1] = (buf >> np.uint64(8)) & np.uint64(0xFF)
            out[pos + 2] = (buf >> np.uint64(16)) & np.uint64(0xFF)
            out[pos + 3] = (buf >> np.uint64(24)) & np.uint64(0xFF)
            buf >>= np.uint64(32)
            nbits -= 32
            pos += 4
    while nbits > 0:
        out[pos] = buf & np.uint64(0xFF)
        buf >>= np.uint64(8)
        nbits -= 8
        pos += 1


@kernel
def encode_aligned(data, width, count, packed, end, out):
    """:func:`encode` for byte-aligned symbols (*width* 8 or 16, no tail bits), each read straight
    from its bytes (no bit accumulator): the same stream, bit for bit.  *packed* holds each
    symbol's ``code << 4 | length`` in one uint32 (one lookup into a table a quarter the size of
    the two int64 ones: for 16-bit symbols, 256 KiB instead of 1 MiB, which is what the lookups cost)."""
    buf = np.uint64(0)
    nbits = 0
    pos = 0
    step = width // 8
    for k in range(count + 1):
        if k == count:
            symbol = end
        elif step == 1:
            symbol = np.int64(data[k])
        else:
            symbol = (np.int64(data[2 * k]) << 8) | np.int64(data[2 * k + 1])
        entry = packed[symbol]
        buf |= np.uint64(entry >> np.uint32(4)) << np.uint64(nbits)
        nbits += np.int64(entry & np.uint32(15))
        if nbits >= 32:
            out[pos] = buf & np.uint64(0xFF)
            out[pos + 1] = (buf >> np.uint64(8)) & np.uint64(0xFF)
            out[pos + 2] = (buf >> np.uint64(16)) & np.uint64(0xFF)
            out[pos + 3] = (buf >> np.uint64(24)) & np.uint64(0xFF)
            buf >>= np.uint64(32)
            nbits -= 32
            pos += 4
    while nbits > 0:
        out[pos] = buf & np.uint64(0xFF)
        buf >>= np.uint64(8)
        nbits -= 8
        pos += 1


#: Bits looked up by the first-level decoding table (4096 int32 entries: 16 KiB, in L1 cache).
FIRST_BITS = 12


@kernel
def decode_table(codes, lengths, bits):
    """Two-level lookup tables on the next *bits* stream bits (*bits* = the longest code length).

    Entries are ``symbol << 4 | length``, or -1 where no code matches.  Codes of
    at most ``P = min(bits, FIRST_BITS)`` bits are found in the first table on
    the next P bits: a code of length ``l`` (bit-reversed, as it appears in the
    stream) fills every entry whose low ``l`` bits equal it.  A longer code's
    first P bits lead to an entry ``-2 - base``: its second-level table, at
    *base* in the second array, is indexed by the following ``bits - P`` bits.
    A complete code fills every entry; only the lone one-bit END code leaves
    half of them at -1.  Returns ``(first, second, P)``.
    """
    first_bits = min(bits, FIRST_BITS)
    rest = bits - first_bits
    first = np.full(1 << first_bits, -1, dtype=np.int32)
    # First pass: which first-level entries lead to a second-level table.
    long_prefix = np.zeros(1 << first_bits, dtype=np.bool_)
    for symbol in range(lengths.size):
        if lengths[symbol] > first_bits:
            long_prefix[codes[symbol] & ((1 << first_bits) - 1)] = True
    tables = 0
    for prefix in range(1 << first_bits):
        if long_prefix[prefix]:
            first[prefix] = -2 - (tables << rest)
            tables += 1
    second = np.full(max(1, tables << rest), -1, dtype=np.int32)
    for symbol in range(lengths.size):
        length = lengths[symbol]
        if length == 0:
            continue
        entry = (symbol << 4) | length
        code = codes[symbol]
        if length <= first_bits:
            for high in range(1 << (first_bits - length)):
                first[code | (high << length)] = entry
        else:
            base = -2 - first[code & ((1 << first_bits) - 1)]
            low = code >> first_bits  # the code's bits after the first P
            extra = length - first_bits
            for high in range(1 << (rest - extra)):
                second[base + (low | (high << extra))] = entry
    return first, second, first_bits


@kernel
def decode(payload, first, second, first_bits, bits, width, count, end, tail, tail_bits, out):
    """Decode *count* symbols then END from *payload* into *out* (MSB-first fields, then the tail bits).

    Returns ``(status, symbols decoded, payload bits read)``; the status is
    :data:`OK`, :data:`TRUNCATED` (the payload ends inside a code, or its bits
    match no code), :data:`END_EARLY` (END before *count* symbols) or
    :data:`TOO_MANY` (a data symbol where END is due).  Past the payload's end
    the lookup sees zero bits; a code is accepted only if all its bits are real.
    """
    size = payload.size
    first_mask = np.uint64((1 << first_bits) - 1)
    second_mask = np.uint64((1 << (bits - first_bits)) - 1)
    shift = np.uint64(first_bits)
    buf = np.uint64(0)
    nbits = np.int64(0)  # real bits in buf
    pos = 0
    used = np.int64(0)
    acc = np.int64(0)
    have = np.int64(0)
    o = 0
    for k in range(count + 1):
        if nbits < 32:
            if pos + 4 <= size:
                word = (np.uint64(payload[pos]) | (np.uint64(payload[pos + 1]) << np.uint64(8))
                        | (np.uint64(payload[pos + 2]) << np.uint64(16)) | (np.uint64(payload[pos + 3]) << np.uint64(24)))
                buf |= word << np.uint64(nbits)
                pos += 4
                nbits += 32
            else:
                while nbits <= 56 and pos < size:
                    buf |= np.uint64(payload[pos]) << np.uint64(nbits)
                    pos += 1
                    nbits += 8
        entry = np.int64(first[buf & first_mask])
        if entry < -1:
            entry = np.int64(second[np.uint64(-2 - entry) + ((buf >> shift) & second_mask)])
        length = entry & 15
        if entry < 0 or length > nbits:
            return TRUNCATED, k, used
        buf >>= np.uint64(length)
        nbits -= length
        used += length
        symbol = entry >> 4
        if symbol == end:
            if k == count:
                break
            return END_EARLY, k, used
        if k == count:
            return TOO_MANY, k, used
        if width == 8:
            out[o] = symbol
            o += 1
        else:
            acc = ((acc << width) | symbol) & 0xFFFFFF
            have += width
            if have >= 8:
                have -= 8
                out[o] = (acc >> have) & 0xFF
                o += 1
                if have >= 8:
                    have -= 8
                    out[o] = (acc >> have) & 0xFF
                    o += 1
    acc = (acc << tail_bits) | tail
    have += tail_bits
    while have >= 8:
        have -= 8
        out[o] = (acc >> have) & 0xFF
        o += 1
    return OK, count, used


#: Most byte symbols one lookup of :func:`decode_bytes` yields (they are written as one 32-bit word).
MULTI_SYMBOLS = 4


@kernel
def multi_table(first, first_bits, end):
    """For each value of the next ``P = first_bits`` stream bits, the byte symbols whose whole codes
    lie in them, decoded one after another from the first-level table (at most
    :data:`MULTI_SYMBOLS`, never END, never a code longer than P).

    Returns ``(symbols, meta)``: ``symbols[v]`` holds them little-endian in a uint32 (first symbol
    lowest) and ``meta[v]`` is ``count << 8 | their bits`` (count 0 where the first code is END or
    longer than P: the caller then decodes that one symbol the ordinary way).
    """
    size = 1 << first_bits
    symbols = np.zeros(size, dtype=np.uint32)
    meta = np.zeros(size, dtype=np.int32)
    for value in range(size):
        rest = value
        left = first_bits
        used = 0
        packed = 0
        n = 0
        while n < MULTI_SYMBOLS:
            entry = first[rest & (size - 1)]  # bits beyond the window read as zeros; checked below
            if entry < 0:
                break
            length = entry & 15
            symbol = entry >> 4
            if length > left or symbol == end:
                break
            packed |= symbol << (8 * n)
            n += 1
            used += length
            left -= length
            rest >>= length
        symbols[value] = packed
        meta[value] = (n << 8) | used
    return symbols, meta


@kernel
def decode_bytes(payload, first, second, first_bits, bits, symbols, meta, count, end, out):
    """:func:`decode` for 8-bit symbols (no tail bits), several symbols per lookup where their codes
    are short (:func:`multi_table`); the same statuses, counts and checks, symbol for symbol.

    A lookup of several symbols is taken only when all their bits are real stream bits and at
    least :data:`MULTI_SYMBOLS` symbols are still due (so END and the count are checked by the
    one-symbol step, exactly as :func:`decode` does); *out* gets a 32-bit word per such lookup.
    """
    size = payload.size
    first_mask = np.uint64((1 << first_bits) - 1)
    second_mask = np.uint64((1 << (bits - first_bits)) - 1)
    shift = np.uint64(first_bits)
    buf = np.uint64(0)
    nbits = np.int64(0)
    pos = 0
    used = np.int64(0)
    o = 0
    while True:
        # The refill is decode()'s, written out again on purpose: the same lines as a shared
        # numba helper function tripled this kernel's CPU time (measured 0.27 -> 0.86 s on MiniLM).
        if nbits < 32:
            if pos + 4 <= size:
                word = (np.uint64(payload[pos]) | (np.uint64(payload[pos + 1]) << np.uint64(8))
                        | (np.uint64(payload[pos + 2]) << np.uint64(16)) | (np.uint64(payload[pos + 3]) << np.uint64(24)))
                buf |= word << np.uint64(nbits)
                pos += 4
                nbits += 32
            else:
                while nbits <= 56 and pos < size:
                    buf |= np.uint64(payload[pos]) << np.uint64(nbits)
                    pos += 1
                    nbits += 8
        window = buf & first_mask
        if o + MULTI_SYMBOLS <= count:
            m = meta[window]
            length = m & 255
            if m >= 256 and length <= nbits:
                packed = symbols[window]
                out[o] = packed & 0xFF
                out[o + 1] = (packed >> 8) & 0xFF
                out[o + 2] = (packed >> 16) & 0xFF
                out[o + 3] = (packed >> 24) & 0xFF
                o += m >> 8
                buf >>= np.uint64(length)
                nbits -= length
                used += length
                continue
        entry = np.int64(first[window])
        if entry < -1:
            entry = np.int64(second[np.uint64(-2 - entry) + ((buf >> shift) & second_mask)])
        length = entry & 15
        if entry < 0 or length > nbits:
            return TRUNCATED, o, used
        buf >>= np.uint64(length)
        nbits -= length
        used += length
        symbol = entry >> 4
        if symbol == end:
            if o == count:
                return OK, count, used
            return END_EARLY, o, used
        if o == count:
            return TOO_MANY, o, used
        out[o] = symbol
        o += 1


@kernel
def split_and_rotated_histograms(data, itemsize):
    """Byte counts of each byte position of *data*'s ``itemsize``-byte little-endian words, as they
    are (``split``) and after rotating each word left by one bit (``rotate``), in one pass.

    Rotated byte ``j`` is byte ``j`` shifted left by one, its low bit the top bit of byte
    ``j - 1`` (of the top byte, for ``j = 0``).
    """
    split = np.zeros((itemsize, 256), dtype=np.int64)
    rotated = np.zeros((itemsize, 256), dtype=np.int64)
    for row in range(0, data.size - itemsize + 1, itemsize):
        carry = np.int64(data[row + itemsize - 1]) >> 7
        for j in range(itemsize):
            b = np.int64(data[row + j])
            split[j, b] += 1
            rotated[j, ((b << 1) | carry) & 0xFF] += 1
            carry = b >> 7
    return split, rotated


@kernel
def split_and_rotated_histograms4(words):
    """:func:`split_and_rotated_histograms` for 4-byte words given as uint32 (the float32 case), unrolled."""
    split = np.zeros((4, 256), dtype=np.int64)
    rotated = np.zeros((4, 256), dtype=np.int64)
    for i in range(words.size):
        # In int64, masked: numba widens shifts of unsigned values, so nothing may rely on wrap-around.
        w = np.int64(words[i])
        r = ((w << 1) | (w >> 31)) & 0xFFFFFFFF
        split[0, w & 255] += 1
        split[1, (w >> 8) & 255] += 1
        split[2, (w >> 16) & 255] += 1
        split[3, (w >> 24) & 255] += 1
        rotated[0, r & 255] += 1
        rotated[1, (r >> 8) & 255] += 1
        rotated[2, (r >> 16) & 255] += 1
        rotated[3, (r >> 24) & 255] += 1
    return split, rotated


@kernel
def split_planes4(words, rotate, out):
    """:func:`split_planes` for 4-byte words given as uint32, unrolled (the float32 case)."""
    for i in range(words.size):
        w = np.int64(words[i])  # int64 and masked, as in split_and_rotated_histograms4
        if rotate:
            w = ((w << 1) | (w >> 31)) & 0xFFFFFFFF
        out[0, i] = w & 255
        out[1, i] = (w >> 8) & 255
        out[2, i] = (w >> 16) & 255
        out[3, i] = (w >> 24) & 255


@kernel
def split_planes2(words, rotate, out):
    """:func:`split_planes` for 2-byte words given as uint16, unrolled (float16)."""
    for i in range(words.size):
        w = np.int64(words[i])  # int64 and masked, as in split_and_rotated_histograms4
        if rotate:
            w = ((w << 1) | (w >> 15)) & 0xFFFF
        out[0, i] = w & 255
        out[1, i] = (w >> 8) & 255


@kernel
def split_planes(data, itemsize, rotate, out):
    """Byte ``j`` of every ``itemsize``-byte word of *data* into ``out[j]``, after rotating each
    word left by one bit when *rotate* (see :func:`split_and_rotated_histograms`)."""
    n = data.size // itemsize
    if not rotate:
        for i in range(n):
            for j in range(itemsize):
                out[j, i] = data[i * itemsize + j]
        return
    for i in range(n):
        row = i * itemsize
        carry = np.int64(data[row + itemsize - 1]) >> 7
        for j in range(itemsize):
            b = np.int64(data[row + j])
            out[j, i] = ((b << 1) | carry) & 0xFF
            carry = b >> 7


@kernel
def join_planes(planes, rotate, out):
    """Inverse of :func:`split_planes`: byte ``j`` of word ``i`` of *out* from ``planes[j][i]`` (a tuple
    of equal-length uint8 arrays), each word rotated right by one bit back when *rotate*.

    Un-rotated byte ``j`` is rotated byte ``j`` shifted right by one, its top bit the low bit
    of rotated byte ``j + 1`` (of byte 0, for the top byte).
    """
    itemsize = len(planes)
    n = planes[0].size
    for i in range(n):
        row = i * itemsize
        if rotate:
            for j in range(itemsize):
                following = planes[(j + 1) % itemsize][i]
                out[row + j] = (planes[j][i] >> 1) | ((following & 1) << 7)
        else:
            for j in range(itemsize):
                out[row + j] = planes[j][i]


@kernel
def join_planes4(p0, p1, p2, p3, rotate, out):
    """:func:`join_planes` for 4-byte words, unrolled (the float32 case, the common one)."""
    for i in range(p0.size):
        a, b, c, d = np.uint32(p0[i]), np.uint32(p1[i]), np.uint32(p2[i]), np.uint32(p3[i])
        word = a | (b << 8) | (c << 16) | (d << 24)
        if rotate:
            word = (word >> 1) | ((word & 1) << 31)
        out[i] = word


@kernel
def join_planes2(p0, p1, rotate, out):
    """:func:`join_planes` for 2-byte words, unrolled (float16 and bfloat16)."""
    for i in range(p0.size):
        word = np.uint16(p0[i]) | (np.uint16(p1[i]) << 8)
        if rotate:
            word = (word >> 1) | ((word & 1) << 15)
        out[i] = word
