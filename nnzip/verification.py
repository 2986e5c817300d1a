"""``nnzip verify``: score the weights rebuilt from a ``.nnz``, and the original model's, on data.

The tensors come from the one reader (:func:`nnzip.reader.read_tensors`); the scoring from
:mod:`nnzip.evaluate`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import formats
from .errors import ConfigError, FormatError, NnzipError
from .limits import DEFAULT_LIMITS, DecodeLimits
from .model import Model
from .reader import read_tensors

if TYPE_CHECKING:
    from .evaluate import Comparison


@dataclass
class VerifyReport:
    """What ``nnzip verify`` measured."""

    file: Path
    original: Path | None
    samples: int
    #: Original vs rebuilt; None when no original was available.
    comparison: Comparison | None
    rebuilt_only: float | None = None
    metric: str = ""

    def to_json(self) -> dict:
        """JSON form for ``verify --json``."""
        out = {"file": os.fspath(self.file), "original_file": os.fspath(self.original) if self.original else None, "samples": self.samples}
        if self.comparison is not None:
            out.update(self.comparison.to_json())
        else:
            out.update(metric=self.metric, rebuilt=self.rebuilt_only)
        return out


def verify(
    source: str | os.PathLike,
    data: str | os.PathLike,
    original: str | os.PathLike | None = None,
    *,
    eval_hook: str | None = None,
    metric: str | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> VerifyReport:
    """Rebuild the weights of a ``.nnz`` and score them, and the original's, on *data*.

    Without *original*, the source file named in the header is used when it
    lies beside the ``.nnz``; otherwise only the rebuilt model is scored.
    *eval_hook* (``module:function`` or ``file.py:function``) scores files without
    an architecture; the drop is then in the hook's units (``drop_kind`` says
    absolute or relative).

    >>> import nnzip
    >>> report = nnzip.verify("mlp.nnz", "fashion-mnist-test.npz", original="mlp.h5")
    >>> report.comparison.metric, report.comparison.drop, report.comparison.drop_kind
    ('accuracy', 0.0, 'absolute')
    """
    from .evaluate import load_data, make_evaluator

    source = Path(source)
    header, rebuilt = read_tensors(source, limits)
    dataset = load_data(data)
    rebuilt_model = Model(header["source"]["format"], header["source"]["structure"], rebuilt)
    _check_architecture_text(rebuilt_model)
    evaluator = make_evaluator(rebuilt_model, dataset, eval_hook, metric)
    original_path = Path(original) if original is not None else _original_beside(source, header)
    if original_path is None:
        if evaluator.metric == "cosine":  # the rebuilt model against itself would score a meaningless 1
            raise ConfigError("the cosine metric compares with the original model's outputs: give the original file (--original)")
        return VerifyReport(source, None, len(dataset.x), None, evaluator.measure(rebuilt), evaluator.metric)
    reference = formats.read_model(original_path, keep_optimizer=not header["source"].get("dropped"), limits=limits)
    if list(reference.tensors) != list(rebuilt):
        raise NnzipError(f"{original_path} does not hold the same tensors as {source} (not the file it was made from?)")
    return VerifyReport(source, original_path, len(dataset.x), evaluator.compare(reference.tensors, rebuilt), metric=evaluator.metric)


def _check_architecture_text(model: Model) -> None:
    """The Keras architecture the header carries (a ``model_config`` attribute, a ``config.json``) parses as JSON.

    The container rules (§5) carry those texts verbatim and do not require JSON, so a crafted
    one reaches verify's parser: its errors (ValueError, RecursionError for deep nesting) become
    one line here instead of a traceback.
    """
    try:
        formats.model_config(model)
        formats.keras_version(model)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"the model architecture recorded in the header is not valid JSON: {type(exc).__name__}: {str(exc)[:80]}") from None


def _original_beside(source: Path, header: dict) -> Path | None:
    """The source file named by the (checked, rule 3.6) ``source.filename``, when a regular file of that name lies beside *source*."""
    filename = header["source"].get("filename")
    if not isinstance(filename, str) or not filename or "\0" in filename or Path(filename).name != filename or filename in (".", ".."):
        return None
    candidate = source.with_name(filename)
    if candidate.name == source.name:  # the .nnz itself
        return None
    return candidate if candidate.is_file() else None  # never a FIFO or device that would block or stream forever
