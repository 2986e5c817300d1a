"""Stage chains in one place: build a :class:`~nnzip.pipeline.TensorPlan` from typed settings,
and say in words what chain a stored tensor went through.

The encoder parameters of each stage are spelled here for every caller that plans chains:
the fixed-flag planner (:mod:`nnzip.plan`), the accuracy-budget search's ladders
(:func:`nnzip.search.candidates_for`, :func:`nnzip.search.small_candidates`) and the sweep
(:func:`nnzip.sweep.plan_for`) call the builders below, so a renamed parameter changes one
module, and a new transform or array stage adds one builder here (tests/test_chains.py
checks that each has one)::

    chain(svd(8), uniform_sd(0.35))                 # rank-8 SVD, factors in steps of 0.35 sd
    chain(csr(0.9), kmeans(4))                      # prune 90 %, the rest 4-bit k-means
    chain(dense(), cast("<f2"))                     # float16 values

A builder returns a :class:`Step` (a stage id and the encoder parameters it is asked for,
spec/stages/<id>.md "Parameters"); it does not check ranges, which the stage's encoder does
(one place for each rule).  :func:`describe_chain` is the reverse direction, for
``inspect`` and the compression report: ``csr(density=0.2,index_coding=gaps) > kmeans(bits=4)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .pipeline import TensorPlan
from .stages import Kind, get_stage


@dataclass(frozen=True)
class Step:
    """One stage of a chain as the encoder is asked for it: a registered stage id and its parameters."""

    stage: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def pair(self) -> tuple[str, dict]:
        """``(stage id, params)``, the form :attr:`TensorPlan.value_stages` holds (a fresh dict each time)."""
        return self.stage, dict(self.params)


# --- transforms (array -> parts) -----------------------------------------------------------


def dense() -> Step:
    """The tensor itself as one part (spec/stages/dense.md)."""
    return Step("dense")


def byteplanes() -> Step:
    """A float tensor split into byte planes, mode chosen by the encoder (spec/stages/byteplanes.md)."""
    return Step("byteplanes")


def svd(rank: int) -> Step:
    """A rank-*rank* SVD; its factors are the parts value stages apply to (spec/stages/svd.md)."""
    return Step("svd", {"rank": rank})


def svd_energy(energy: float) -> Step:
    """An SVD of the smallest rank keeping *energy* (a fraction) of the squared singular values."""
    return Step("svd", {"energy": energy})


def csr(prune: float) -> Step:
    """The smallest *prune* fraction of the entries (by magnitude) removed, the rest kept sparse (spec/stages/csr.md)."""
    return Step("csr", {"prune": prune})


def fft(keep: float, select: str = "largest", transform: str = "dct") -> Step:
    """*keep* (a fraction) of the coefficients of a ``dct`` or ``rfft``, the ``largest`` or the ``low`` ones (spec/stages/fft.md)."""
    return Step("fft", {"keep": keep, "select": select, "transform": transform})


# --- value stages (array -> array, applied to every quantizable part) -------------------------


def kmeans(bits: int) -> Step:
    """A k-means codebook of ``2**bits`` entries (spec/stages/kmeans.md)."""
    return Step("kmeans", {"bits": bits})


def uniform(step: float, rdo: float | None = None) -> Step:
    """Values rounded to multiples of the absolute *step* (spec/stages/uniform.md), with RDOQ weight *rdo* (None or 0: none)."""
    return Step("uniform", {"step": step, **({"rdo": rdo} if rdo else {})})


def uniform_sd(step_sd: float, rdo: float | None = None) -> Step:
    """Uniform steps of *step_sd* standard deviations of each part's values, with RDOQ weight *rdo*.

    An *rdo* of None or 0 asks for none and is not passed on: 0 is the stage's default, so the
    parameters (and the bytes) are those of a plain rounding.
    """
    return Step("uniform", {"step_sd": step_sd, **({"rdo": rdo} if rdo else {})})


#: Element types the ``dq`` stage takes (a float16 tensor asked for dq gets ``uniform``'s single grid).
DQ_INPUTS = ("<f4", "<f8")


def dq(step: float | None = None, step_sd: float | None = None) -> Step:
    """Dependent (trellis) quantization of step Δ = *step*, or *step_sd* standard deviations (spec/stages/dq.md)."""
    return Step("dq", {"step": step} if step is not None else {"step_sd": step_sd})


def cast(dtype: str = "<f2") -> Step:
    """Values cast to *dtype* (``"<f2"`` or ``"bfloat16"``; spec/stages/cast.md)."""
    return Step("cast", {"dtype": dtype})


def delta(zigzag: bool | None = None) -> Step:
    """Integers replaced by their differences; *zigzag* None lets the encoder choose (spec/stages/delta.md)."""
    return Step("delta", {} if zigzag is None else {"zigzag": zigzag})


# --- chains ----------------------------------------------------------------------------------


def chain(transform: Step, *values: Step, widen: str | None = None) -> TensorPlan:
    """The plan running *transform*, then the value stages *values* in order on its quantizable parts.

    *widen* names the real element type of a tensor carried as raw bits (spec/container.md §4.5).
    """
    return TensorPlan(transform.stage, dict(transform.params), [v.pair() for v in values], widen=widen)


#: Transforms that store the tensor bit for bit when no value stage follows.
EXACT_TRANSFORMS = ("dense", "byteplanes")


def is_exact(plan: TensorPlan) -> bool:
    """Whether *plan* stores the tensor bit for bit: an exact transform with no value stage."""
    return plan.transform in EXACT_TRANSFORMS and not plan.value_stages


# --- describing a stored chain -----------------------------------------------------------------

#: Configuration fields worth showing per stage in ``inspect``'s method column (others: the id alone).
SHOWN_FIELDS = {
    "svd": ("rank",),
    "csr": ("index_coding",),
    "fft": ("transform", "select"),
    "kmeans": ("bits",),
    "uniform": (),
    "dq": (),
    "cast": ("dtype",),
    "delta": ("zigzag",),
}


def describe_chain(entry: Mapping) -> str:
    """Human form of a checked tensor entry's chain, e.g. ``csr(density=0.2,index_coding=gaps) > kmeans(bits=4)``.

    The transform, then every array stage (spec/container.md §4.2) of its parts, each once, in
    the order met: which array stages exist is asked of the registry, so none is left out.
    Serialize and bytes stages are storage detail and not shown.
    """
    transform = entry["transform"]
    text = stage_text(transform, _density(entry))
    if "widen" in entry:  # the chain ran on the values of a bfloat16 tensor (spec/container.md §4.5)
        text = f"{entry['widen']}: {text}"
    values = [stage_text(codec) for part in entry["parts"] for codec in part["codecs"] if get_stage(codec["name"]).kind is Kind.ARRAY]
    for value in dict.fromkeys(values):
        text += f" > {value}"
    return text


def _density(entry: Mapping) -> dict:
    """For pruning and kept coefficients: the fraction of the tensor's entries stored."""
    kept = entry["transform"]["configuration"].get("kept")
    size = math.prod(entry["shape"])
    if entry["transform"]["name"] in ("csr", "fft") and isinstance(kept, int) and size:
        return {"density": round(kept / size, 4)}
    return {}


def stage_text(ref: Mapping, extra: Mapping | None = None) -> str:
    """One stored stage ``{"name", "configuration"}`` as ``name(field=value,...)``, with *extra* fields first."""
    config = ref.get("configuration", {})
    shown = {**(extra or {}), **{k: config[k] for k in SHOWN_FIELDS.get(ref["name"], ()) if k in config}}
    inner = ",".join(f"{k}={v}" for k, v in shown.items())
    return f"{ref['name']}({inner})" if inner else ref["name"]
