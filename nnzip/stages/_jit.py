"""The one decorator the compiled coder kernels use: numba's ``njit``, cached on disk when possible.

Why numba: the coders are tight integer loops over bits (a table lookup per
Huffman code, a hash probe per LZW input byte) that numpy cannot vectorise and
a Python loop runs at a few MB/s.  numba compiles them to machine code from this
source, on every platform numpy runs on, with no C toolchain and no per-platform
wheels to build; ``nogil=True`` lets callers run kernels in threads.

``cache=True`` keeps the compiled code next to the module (or in numba's
user-wide cache directory), so only the very first run on a machine pays the
compile time.  When no cache location is writable numba refuses ``cache=True``
at decoration time; the kernels are then compiled in memory for each process,
which is slower to start but gives the same results.
"""

from __future__ import annotations

from typing import Callable

import numba


def kernel(function: Callable) -> Callable:
    """``numba.njit(cache=True, nogil=True)``, falling back to an uncached njit if caching is impossible."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(function)
