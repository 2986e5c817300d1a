"""``--data``/``--max-drop``: search the smallest plan within an accuracy budget and encode it.

The search itself is :mod:`nnzip.search`'s; this module turns its result into the
encoder's output (header, blobs, reports), as :func:`nnzip.encoder.encode_model` does for fixed settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from . import formats
from .encoder import TensorReport, add_statistics, assemble_header
from .metrics import same_bits
from .model import Model
from .plan import exclusion_note, layer_weight
from .scoring import DEFAULT_HOLDOUT, DEFAULT_MARGIN
from .workers import Progress


@dataclass
class Budget:
    """``--data``/``--max-drop``: search for the smallest plan within an accuracy budget.

    >>> import nnzip
    >>> budget = nnzip.Budget("fashion-mnist-val.npz", max_drop=0.005)   # half an accuracy point
    >>> nnzip.compress("mlp.h5", "mlp.nnz", budget=budget)                # doctest: +SKIP
    """

    data: str | os.PathLike
    max_drop: float
    #: ``package.module:function`` scoring a weight dict, for files without an architecture.
    eval_hook: str | None = None
    #: "accuracy" or "mse"; default: chosen from the data and the model's output.
    metric: str | None = None
    #: Called with one line of search progress at a time.
    log: Callable[[str], None] | None = None
    #: Standard errors of the measured drop added before comparing with max_drop (why 2:
    #: :data:`nnzip.scoring.DEFAULT_MARGIN`).
    margin: float = DEFAULT_MARGIN
    #: Called with one line per candidate tried (``-v``), in words.
    detail: Callable[[str], None] | None = None
    #: With False, only tensors the fixed-flag rule makes lossy are in play (not biases and small kernels).
    every_tensor: bool = True
    #: Share of the data's samples held out of the search, to check the chosen plan on
    #: (:data:`nnzip.scoring.DEFAULT_HOLDOUT`; 0: search on all of it, no check).
    holdout: float = DEFAULT_HOLDOUT


def encode_with_budget(model: Model, filename: str, budget: Budget, progress: Progress | None = None,
                       jobs: int | None = 1) -> tuple[dict, list[bytes], list[TensorReport]]:
    """Search the smallest plan within *budget* (see :mod:`nnzip.search`) and encode it.

    *jobs* threads (None: one per core) try candidates at once; the plan is the same for any number.

    Tensors the search may not touch for a reason worth telling (NaN or infinity, not a
    layer weight: :func:`nnzip.plan.exclusion_note`) get that note in their report.
    """
    from .evaluate import load_data, make_evaluator
    from .scoring import split_holdout
    from .search import BudgetSearch

    data = load_data(budget.data)
    held = None
    if budget.holdout and not budget.eval_hook:  # a hook scores the data its own way: nothing to hold out
        data, held = split_holdout(data, budget.holdout)
    evaluator = make_evaluator(model, data, budget.eval_hook, budget.metric)
    holdout = None if held is None else make_evaluator(model, held, None, evaluator.metric)
    if budget.log and budget.holdout and holdout is None and not budget.eval_hook:
        budget.log(f"{len(data.x):,} samples: too few to hold any out, so the plan is not checked on data the search did not see")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    search = BudgetSearch(model, evaluator, data, budget.log, budget.margin, jobs, budget.every_tensor, budget.detail, holdout)
    result = search.run(budget.max_drop, progress)
    encoded = [result.encoded[name] for name in model.tensors]
    optimizer = formats.optimizer_prefix(model.source_format)
    exact = formats.exact_names(model)
    elements = {name: e for name, e in formats.element_types(model).items() if name not in exact}
    notes = {name: exclusion_note(array, layer_weight(model.source_format, name), elements.get(name)) for name, array in model.tensors.items()
             if not (optimizer and name.startswith(optimizer)) and name not in result.choices}
    reports = add_statistics(model, encoded, notes)
    for item in encoded:  # which candidate the search picked, next to the tensor's error
        if item.entry["name"] in result.choices:
            item.entry["stats"]["choice"] = result.choices[item.entry["name"]]
    _record_bias_corrections(model, result, search.layers, reports)
    return assemble_header(model, filename, encoded, result.to_json(budget.max_drop)), [b for item in encoded for b in item.blobs], reports


def _record_bias_corrections(model: Model, result, layers: dict, reports: list[TensorReport]) -> None:
    """Mark each bias the search changed (bias correction) with ``stats.bias_correction`` (rule 3.9).

    The value names the weight tensor whose lossy storage the new bias compensates, so
    ``inspect`` can say why a tensor no lossy option touches differs from the source; the
    compress report gets a note saying the same.
    """
    by_name = {report.name: report for report in reports}
    for kernel in result.choices:
        bias = getattr(layers.get(kernel), "bias", None)
        if bias is None or bias not in result.encoded or same_bits(model.tensors[bias], result.encoded[bias].reconstruction):
            continue
        result.encoded[bias].entry["stats"]["bias_correction"] = kernel
        note = f"changed by bias correction to offset the error of {kernel} (stored exact)"
        by_name[bias].note = "; ".join(filter(None, (by_name[bias].note, note)))
