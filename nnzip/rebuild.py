"""``nnzip decompress``: rebuild the source-format file of a ``.nnz`` from an opened reader.

:func:`decompress` opens the file (:class:`nnzip.reader.NnzReader`: every check, once) and
:func:`rebuild` hands its tensors, decoded from their checked entries, to the source format's
writer (:func:`nnzip.formats.write_model`) in the order it asks for them, decoding the next ones
meanwhile on worker threads (or a dask cluster's workers) within a byte budget.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import formats
from .container import NNZ_SUFFIX
from .errors import ConfigError
from .limits import DEFAULT_LIMITS, DecodeLimits
from .outputs import atomic_output
from .reader import NnzReader
from .workers import WINDOW_MIN_BYTES, workers

if TYPE_CHECKING:
    from .distributed import Scheduler

#: Called with (done, total, tensor name) as tensors are processed (as :data:`nnzip.api.Progress`).
Progress = Callable[[int, int, str], None]


def decompress(
    source: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    force: bool = False,
    progress: Progress | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
    jobs: int | None = 1,
    scheduler: Scheduler | None = None,
) -> Path:
    """Rebuild the source-format file from a ``.nnz`` within *limits*; returns the path written.

    *jobs* worker threads (None: one per core) decode the chunks of large parts; with
    *scheduler*, the workers of that dask cluster decode the tensors (:mod:`nnzip.distributed`).
    """
    with NnzReader(source, limits=limits) as reader:
        return rebuild(reader, output, force=force, progress=progress, jobs=jobs, scheduler=scheduler)


def rebuild(reader: NnzReader, output: str | os.PathLike | None = None, *, force: bool = False, progress: Progress | None = None,
            jobs: int | None = 1, scheduler: Scheduler | None = None) -> Path:
    """Write the source-format file of the open *reader* to *output* (default: :func:`default_decompressed`); returns it.

    Written atomically (nothing is left behind on an error).  *reader* must have been opened
    from a path when *output* is left out or *scheduler* is given (its workers read that file).
    """

    source = Path(reader.path) if reader.path is not None else None
    if output is None and source is None:
        raise ConfigError("decompress: a .nnz read from bytes or a file object needs an output path")
    output = Path(output) if output is not None else default_decompressed(source, reader.header)
    order = list(reader)
    total, done, futures, handed = len(order), 0, {}, set()
    positions = {name: index for index, name in enumerate(order)}
    decoded = {name: reader.decoded_bytes(name) for name in order}
    budget = max([WINDOW_MIN_BYTES, *decoded.values()])

    def tensor(name: str) -> np.ndarray:
        nonlocal done
        if progress:
            progress(done, total, name)
        done += 1
        if pool.tensors is None:
            return reader.tensor(name)
        # Decode the next tensors (in header order, the order writers ask for them) meanwhile, as
        # many as --jobs and the byte budget allow (WINDOW_MIN_BYTES or the largest tensor).
        position, flight = positions[name], sum(decoded[ahead] for ahead in futures)
        for ahead in order[position:position + pool.window]:
            if ahead in futures or ahead in handed:
                continue
            if ahead != name and flight + decoded[ahead] > budget:
                break
            futures[ahead] = submit(ahead)
            flight += decoded[ahead]
        handed.add(name)
        future = futures.pop(name, None)
        return future.result() if future else reader.tensor(name, pool.chunks)

    with workers(jobs, scheduler) as pool, atomic_output(output, force, source) as temporary:
        if pool.remote is None:
            def submit(name: str):
                return pool.tensors.submit(reader.tensor, name, pool.chunks)
        else:  # a dask pool gets what can travel: the file's place and blob table, not the open handle
            decode, blob, table = pool.remote.decoding(source, reader.container)

            def submit(name: str):
                return pool.tensors.submit(decode, reader.entry(name), blob, table, reader.limits, pool.chunks)

        formats.write_model(temporary, reader.source_format, reader.header["source"]["structure"], tensor)
    if progress:
        progress(total, total, "")
    return output


#: A recorded suffix names the default output only in this plain form: a hostile header cannot
#: choose control characters or odd code points for the name (a suffix never holds '/').
_PLAIN_SUFFIX = re.compile(r"\.[A-Za-z0-9_-]{1,16}")


def default_decompressed(source: Path, header: dict) -> Path:
    """``model.nnz`` -> ``model`` + the source file's suffix (``.h5``), beside the ``.nnz``.

    The suffix is that of the (checked, rule 3.6) ``source.filename`` when it is plain
    (a dot and 1-16 ASCII letters, digits, ``_`` or ``-``) and not ``.nnz``, else the
    format's usual suffix; the directory is always the ``.nnz``'s own.
    """
    filename = header["source"].get("filename")
    recorded = Path(filename).suffix if isinstance(filename, str) and "\0" not in filename else ""
    if not _PLAIN_SUFFIX.fullmatch(recorded) or recorded.lower() == NNZ_SUFFIX:
        recorded = ""
    suffix = recorded or formats.get_format(header["source"]["format"]).suffix
    stem = source.name[: -len(NNZ_SUFFIX)] if source.name.endswith(NNZ_SUFFIX) else source.name
    return source.with_name(stem + suffix)
