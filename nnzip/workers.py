"""Where the work runs: the executors of a run and the bounded window of tensors in flight.

:class:`Workers` carries two executors (whole tensors, and the chunks of one part) or none
(inline work); :func:`in_order` and :func:`in_order_within` hand results back in input order
with a bounded number (and bytes) of items computed ahead.  Encoder and decoder both use them;
the bytes written never depend on them.  With a scheduler the tensors go to a dask cluster
(:mod:`nnzip.distributed`, the transport, which knows nothing of the encoder: the encoder hands
it :func:`nnzip.encoder.encode_job` to run).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import sys
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from .errors import ConfigError

if TYPE_CHECKING:
    from .distributed import Scheduler

#: Called with (done, total, tensor name) as tensors are processed.
Progress = Callable[[int, int, str], None]


@dataclass
class Workers:
    """Where the work runs: *tensors* encodes or decodes whole tensors, *chunks* the chunks of one part.

    Two executors, so that a tensor's task waiting for its chunks never starves the pool that
    would run them.  Any :class:`concurrent.futures.Executor` can stand in for either (a
    ``dask.distributed`` client's, say): nnzip only calls ``submit`` and ``map``.  ``None``
    runs the work inline.  The bytes written never depend on them.
    """

    tensors: Executor | None = None
    chunks: Executor | None = None
    #: How many tensors may be in flight at once (each holds its source and its blobs); the byte
    #: budget of :func:`in_order_within` bounds their memory, this only their number.
    window: int = 1
    #: A :class:`nnzip.distributed.Cluster` when the tensors go to a dask cluster: it says what
    #: travels (file slices, not closures over open files) and *tensors* submits there.
    remote: object | None = None


#: glibc's ``M_MMAP_THRESHOLD`` (mallopt), and the value nnzip fixes it at: allocations of 4 MiB
#: and more are mapped and go back to the system when freed.  glibc's default threshold moves up
#: to 32 MiB after large frees, so the tensor-sized and block-sized temporaries of one tensor are
#: then carved from the heap and, freed out of order, stay in the process: measured on a 64 MiB
#: tensor's ``--uniform 0.05`` encode, its peak RSS fell from 409 to 380 MiB with this (256 KiB:
#: 353 MiB, but more page faults and system time; 4 MiB had the least system time).
M_MMAP_THRESHOLD, MMAP_THRESHOLD = -3, 4 * 2**20


def bound_malloc() -> None:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD` (a no-op off Linux or without glibc).

    Process-wide, so only the ``nnzip`` command's entry point (:func:`nnzip.cli.main`) calls
    it: an application that imports nnzip keeps its own allocator settings.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):  # another C library (musl): it has no such threshold to fix
        pass


@contextlib.contextmanager
def workers(jobs: int | None, scheduler: Scheduler | None = None) -> Iterator[Workers]:
    """Thread pools of *jobs* workers (None: ``os.cpu_count()``), or inline work for one job.

    Threads suffice: the compiled coders release the GIL (numba ``nogil=True``) and numpy
    does for large operations, so no data is copied between processes.  With *scheduler*,
    the tensors go to that dask cluster's workers instead (:mod:`nnzip.distributed`) and
    *jobs* is not used.  (The ``nnzip`` command also fixes glibc's mmap threshold,
    :func:`bound_malloc`; a library call leaves its caller's allocator as it is.)
    """
    if scheduler is not None:
        # The dask transport sits below this module (it never imports it or the encoder), so the
        # pool is made here around its Cluster; imported on demand, as dask is an optional extra.
        from .distributed import connect

        with connect(scheduler) as cluster:
            yield Workers(tensors=cluster, chunks=None, window=cluster.window, remote=cluster)
        return
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if type(jobs) is not int or jobs < 1:
        raise ConfigError(f"jobs must be a positive integer, not {jobs!r}")
    if jobs == 1:
        yield Workers()
        return
    with ThreadPoolExecutor(jobs, "nnzip-tensor") as tensors, ThreadPoolExecutor(jobs, "nnzip-chunk") as chunks:
        yield Workers(tensors, chunks, WINDOW_PER_JOB * jobs)


#: Tensors in flight per worker thread.  Results are handed back in order, so a window of one
#: tensor per worker leaves a worker idle whenever the tensor ahead of it is slower than its own
#: (a 16 MiB matrix ahead of a bias: measured on the generated 250M model, a third of the tensor
#: workers' time); with several per worker the others run on while the head finishes.  Memory is
#: bounded by the byte budget, not by this (a tensor waiting to start has not been read yet).
WINDOW_PER_JOB = 8


def in_order(executor: Executor | None, function: Callable, items: Iterable, window: int) -> Iterator:
    """``function(item)`` for each item, in order, with at most *window* computed ahead on *executor*."""
    if executor is None:
        yield from map(function, items)
        return
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(executor.submit(function, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


#: Tensors in flight (encoded or decoded ahead) may hold this many source bytes together, or
#: the largest tensor's when that is more (one tensor always runs): bounded memory whatever --jobs.
WINDOW_MIN_BYTES = 64 * 2**20


def in_order_within(executor: Executor | None, function: Callable, items: Iterable, window: int, budget: int,
                     weight: Callable) -> Iterator:
    """As :func:`in_order`, and the items in flight weigh at most *budget* together (one always runs)."""
    if executor is None:
        yield from map(function, items)
        return
    pending: collections.deque = collections.deque()
    held = 0
    for item in items:
        size = weight(item)
        while pending and (len(pending) >= window or held + size > budget):
            future, done = pending.popleft()
            held -= done
            yield future.result()
        pending.append((executor.submit(function, item), size))
        held += size
    while pending:
        yield pending.popleft()[0].result()
