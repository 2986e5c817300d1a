"""The keyword front end of :mod:`nnzip`: the CLI's options as plain arguments.

:func:`compress` and :func:`decompress` take what ``nnzip compress``/``decompress`` take,
as keywords with the same names and checks (through :mod:`nnzip.options`), plus in-memory
sources and file-object destinations; the work is done by :mod:`nnzip.api`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

from . import api, writer
from .budget import Budget
from .errors import ConfigError
from .limits import DEFAULT_LIMITS, DecodeLimits
from .distributed import DEFAULT_TIMEOUT
from .options import budget_from_options, rules_from_options, scheduler_from_options
from .outputs import private_directory
from .workers import Progress
from .writer import CompressReport
from .reader import NnzReader
from .rebuild import decompress as decompress_file, default_decompressed, rebuild

#: Where :func:`compress` may write: a path, or a binary file object (the finished file is copied into it).
Destination = Union[str, os.PathLike, BinaryIO, None]


def compress(src, dst: Destination = None, *, bits: int | None = None, prune: float | None = None, rank: int | None = None,
             energy: float | None = None, fft_keep: float | None = None, uniform: float | None = None, float16: bool = False,
             lossless: bool = False, fft_select: str = "largest", fft_transform: str = "dct", layers: Sequence[str] | dict | None = None,
             plan: str | os.PathLike | None = None, budget: Budget | Mapping | None = None, keep_optimizer: bool = False,
             strip: bool = False, force: bool = False, max_output: int | None = None, progress: Progress | None = None, rules=None,
             scheduler: str | None = None, scheduler_timeout: float = DEFAULT_TIMEOUT, rdo: float | None = None,
             jobs: int | None = 1, uniform_step: float | None = None, dq: bool = False) -> CompressReport:
    """Compress a model file, or a dict of numpy arrays, into a ``.nnz``; returns a :class:`nnzip.writer.CompressReport`.

    The keywords are ``nnzip compress``'s options (``bits=4`` is ``--bits 4``, ``layers=["dense_1:bits=2"]``
    or ``{"dense_1": {"bits": 2}}`` is ``--layer``, ``max_output`` is ``--max-output`` in bytes, ``strip=True`` is ``--strip``) with the
    same checks (``scheduler="tcp://host:8786"`` is ``--scheduler``: the tensors are encoded on that dask
    cluster, see :mod:`nnzip.distributed`).  *budget* is an :class:`nnzip.Budget` or a dict of its fields
    (``{"data": "val.npz", "max_drop": 0.005, "margin": 2, "holdout": 0.25}``); a negative drop or margin, or a
    holdout share outside [0, 0.5], is refused.
    *src* is a path or ``{name: array}`` (stored as a tensors-only ``npz`` source that
    :func:`nnzip.load` reads back); *dst* a path (default: *src* with suffix ``.nnz``) or a
    binary file object.  The report gives ``file_bytes``, ``original_bytes``, ``ratio`` and
    per tensor ``tensors[i].method/.stored_bytes/.error``.  *jobs* is ``--jobs`` (worker threads;
    None: one per core; the bytes are the same for any value), *rdo* ``--rdo`` (with *uniform*),
    *uniform_step* ``--uniform-step`` (one absolute step for every tensor) and *dq* ``--dq``
    (dependent quantization, with *uniform* or *uniform_step*).

    >>> import io, numpy as np, nnzip
    >>> out = io.BytesIO()
    >>> report = nnzip.compress({"dense/kernel": np.ones((64, 64), np.float32)}, out, bits=2)
    >>> report.tensors[0].method, nnzip.load(out.getvalue())["dense/kernel"].shape
    ('dense > kmeans(bits=2)', (64, 64))
    """
    limits = DecodeLimits(max_output=max_output) if max_output is not None else DEFAULT_LIMITS
    cluster = scheduler_from_options(scheduler, scheduler_timeout)
    settings = {"bits": bits, "prune": prune, "rank": rank, "energy": energy, "fft_keep": fft_keep, "uniform": uniform, "rdo": rdo,
                "uniform_step": uniform_step}
    if budget is not None:
        fixed = [k for k, v in settings.items() if v is not None] + ["plan"] * (plan is not None) + ["layers"] * bool(layers)
        fixed += ["float16"] * float16 + ["lossless"] * lossless + ["dq"] * dq + ["rules"] * (rules is not None)
        budget = _budget(budget, fixed)
        rules = None
    elif rules is None:
        rules = rules_from_options(**settings, dq=dq, float16=float16, lossless=lossless, fft_select=fft_select, fft_transform=fft_transform,
                                   layers=layers, plan=plan)
    with private_directory() as directory:
        source = _source_path(src, directory)
        if dst is None and not isinstance(src, (str, os.PathLike)):
            raise ConfigError("compress: a dict source needs dst (a path or a binary file object)")
        to_stream = dst is not None and not isinstance(dst, (str, os.PathLike))
        output = directory / "out.nnz" if to_stream else dst
        report = writer.compress(source, output, rules=rules, budget=budget, keep_optimizer=keep_optimizer, strip=strip, force=force,
                                 progress=progress, limits=limits, scheduler=cluster, jobs=jobs)
        if to_stream:
            with open(report.output, "rb") as handle:
                shutil.copyfileobj(handle, dst, 2**20)
            report.output = dst
    return report


def _budget(budget: Budget | Mapping, fixed: list[str]) -> Budget:
    """A checked :class:`nnzip.budget.Budget` from a Budget or a dict of its fields."""
    if isinstance(budget, Mapping):
        unknown = set(budget) - {"data", "max_drop", "eval_hook", "metric", "margin", "log", "holdout"}
        if unknown:
            raise ConfigError(f"budget: unknown field {sorted(unknown)[0]!r} (known: data, max_drop, eval_hook, metric, margin, log, holdout)")
        budget = Budget(budget.get("data"), budget.get("max_drop"), budget.get("eval_hook"), budget.get("metric"),
                        budget.get("log"), budget.get("margin", Budget.margin), holdout=budget.get("holdout", Budget.holdout))
    if not isinstance(budget, Budget):
        raise ConfigError(f"budget must be an nnzip.Budget or a dict, not {type(budget).__name__}")
    return budget_from_options(budget.data, budget.max_drop, eval_hook=budget.eval_hook, metric=budget.metric, margin=budget.margin,
                               log=budget.log, fixed=fixed, holdout=budget.holdout)


def _source_path(src, directory: Path) -> Path:
    """*src* as a file to read: a path as given, a dict of arrays written as ``weights.npz`` in *directory*."""
    if isinstance(src, (str, os.PathLike)):
        return Path(src)
    if not isinstance(src, Mapping):
        raise ConfigError(f"compress: src must be a path or a dict of numpy arrays, not {type(src).__name__}")
    arrays = {}
    for name, value in src.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"compress: tensor names must be non-empty strings, got {name!r}")
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":  # object arrays would need pickle; complex and strings are not weights
            raise ConfigError(f"compress: tensor {name!r} has dtype {array.dtype}: only numeric and bool arrays")
        arrays[name] = np.asarray(array, order="C")  # not ascontiguousarray: it makes a 0-d scalar 1-d
    path = directory / "weights.npz"
    np.savez(path, **arrays)
    return path


def decompress(src: str | os.PathLike, dst: Destination = None, *, force: bool = False, max_output: int | None = None,
               progress: api.Progress | None = None, scheduler: str | None = None, scheduler_timeout: float = DEFAULT_TIMEOUT,
               jobs: int | None = 1):
    """Rebuild the source-format file of a ``.nnz``; *dst* a path (default beside *src*) or a binary file object.

    *scheduler* (``--scheduler``): decode the tensors on that dask cluster's workers; *jobs*
    (``--jobs``): decoding threads (None: one per core), the file the same for any value.

    Returns the path written, or *dst* itself for a file object (the rebuilt file is made in a
    private temporary directory, since the HDF5 and zip writers need a named file, then copied).

    >>> nnzip.decompress("model.nnz", "rebuilt.h5")      # doctest: +SKIP
    """
    limits = DecodeLimits(max_output=max_output) if max_output is not None else DEFAULT_LIMITS
    cluster = scheduler_from_options(scheduler, scheduler_timeout)
    if dst is None or isinstance(dst, (str, os.PathLike)):
        return decompress_file(src, dst, force=force, progress=progress, limits=limits, scheduler=cluster, jobs=jobs)
    with private_directory() as directory, NnzReader(src, limits=limits) as reader:
        suffix = default_decompressed(Path("x.nnz"), reader.header).suffix
        written = rebuild(reader, directory / f"rebuilt{suffix}", progress=progress, scheduler=cluster, jobs=jobs)
        with open(written, "rb") as handle:
            shutil.copyfileobj(handle, dst, 2**20)
    return dst
