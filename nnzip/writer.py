"""Compress: a model file in, a checked ``.nnz`` file out (the write side of :mod:`nnzip.api`).

:func:`compress` reads the model, encodes it (:mod:`nnzip.encoder`, or the accuracy-budget
search of :mod:`nnzip.budget`), writes the container atomically and runs the reader's own
checks on what it wrote before the file takes its name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING


from . import formats
from .budget import Budget, encode_with_budget
from .container import NNZ_SUFFIX, BlobSpool, write_container, write_spooled
from .encoder import TensorReport, encode_model, strip_informative, strip_structure
from .errors import FormatError, NnzipError, UsageError
from .limits import DEFAULT_LIMITS, DecodeLimits
from .outputs import atomic_output, check_writable
from .pipeline import TensorPlan
from .plan import PlanRules
from .reader import NnzReader
from .workers import Progress, workers

if TYPE_CHECKING:
    from .distributed import Scheduler


@dataclass
class CompressReport:
    """Summary of a compression run, as :func:`nnzip.compress` returns it.

    >>> import io, numpy as np, nnzip
    >>> report = nnzip.compress({"w": np.zeros((64, 64), np.float32)}, io.BytesIO())
    >>> report.original_bytes, report.ratio > 10, report.tensors[0].error
    (16384, True, 0.0)
    """

    output: Path
    original_bytes: int
    file_bytes: int
    tensors: list[TensorReport] = field(default_factory=list)
    #: True when the file decodes to more than rule 4.7's default cap for its size, so that
    #: decompress, inspect and verify need the ``max_output`` (``--max-output``) compress was given.
    needs_max_output: bool = False

    @property
    def ratio(self) -> float:
        """Source tensor bytes (kept tensors) / output file bytes."""
        return self.original_bytes / max(self.file_bytes, 1)


def default_output(source: Path) -> Path:
    """``model.h5`` -> ``model.nnz`` (gzip/zstd habit: beside the source)."""
    return source.with_suffix(NNZ_SUFFIX)


def compress(
    source: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    rules: PlanRules | None = None,
    budget: Budget | None = None,
    keep_optimizer: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    plans: dict[str, TensorPlan] | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
    jobs: int | None = 1,
    scheduler: Scheduler | None = None,
    strip: bool = False,
) -> CompressReport:
    """Compress a model file into a ``.nnz`` container that :func:`decompress` reads within *limits*.

    *rules* gives per-tensor settings (default: lossless).  With *budget*, the
    plan is searched on the budget's data instead (rules are then not used).
    *plans*, when given, fixes the exact stage chain of named tensors.
    Whatever is written passes the reader's own checks under *limits* (its header
    cap, blob count, rule 4.7's decoded-size cap for the file's final size, every
    rule of §3-§5); a file that would not is refused and nothing is left behind.
    *jobs* worker threads (None: one per core) code the chunks of large parts; the file's
    bytes are the same whatever it is, and the same with *scheduler* (a dask cluster whose
    workers encode the tensors, reading them from the shared file system: :mod:`nnzip.distributed`).
    *strip* leaves out what the rebuilt file does not
    need to load and run: Keras' training configuration (:func:`strip_structure`) and the
    header's informative ``plan`` and per-tensor ``stats`` (:func:`strip_informative`).
    """
    source = Path(source)
    output = Path(output) if output is not None else default_output(source)
    if budget is not None and scheduler is not None:
        raise UsageError("--scheduler spreads fixed settings over a cluster; the --max-drop search runs on this machine: drop one of them")
    if output.resolve() == source.resolve():
        raise NnzipError(f"output {output} would overwrite the input")
    check_writable(output, force, source)  # before reading the model or a long search, not only at the end
    # Without a budget search, compression streams: tensors are read when encoded (lazily, where
    # the format allows) and their blobs spooled to an unnamed temporary file beside the output.
    model = formats.read_model(source, keep_optimizer=keep_optimizer, limits=limits, lazy=budget is None)
    if strip:
        strip_structure(model)
    spool = None
    try:
        if budget is not None:
            header, blobs, reports = encode_with_budget(model, source.name, budget, progress, jobs)
        else:
            spool = BlobSpool(output.parent if str(output.parent) else None)
            with workers(jobs, scheduler) as pool:
                header, blobs, reports = encode_model(model, source.name, rules, plans, progress, pool, spool, source)
        if strip:
            header = strip_informative(header)
        with atomic_output(output, force, source) as temporary:
            with open(temporary, "wb") as handle:
                size = write_spooled(handle, header, spool) if spool is not None else write_container(handle, header, blobs)
            decoded = _check_readable(temporary, output, limits)
    finally:
        if spool is not None:
            spool.close()
    return CompressReport(output, model.nbytes, size, reports, decoded > DEFAULT_LIMITS.output_cap(size))


def _check_readable(path: Path, output: Path, limits: DecodeLimits) -> int:
    """Run the reader's own checks on a file just written; returns its decoded tensor bytes.

    The writer applies the reader's caps this way (opening it with :class:`nnzip.reader.NnzReader`,
    which runs every check) rather than copying them, so that every rule a reader
    adds is one the writer keeps.
    """
    try:
        with NnzReader(path, limits=limits) as reader:
            return reader.decoded_bytes()
    except FormatError as exc:
        hint = ""
        if "rule 4.7" in str(exc):
            hint = "; to write it anyway give compress --max-output SIZE, and the same option to decompress, inspect and verify"
        raise NnzipError(f"{output} not written: nnzip decompress would refuse it ({exc}){hint}") from None
