"""Stored chains in words: what ``inspect`` and the compress report print as a tensor's method."""

from __future__ import annotations

import math

#: Configuration fields worth showing per stage in ``inspect``'s method column.
_SHOWN_FIELDS = {
    "svd": ("rank",),
    "csr": ("index_coding",),
    "fft": ("transform", "select"),
    "kmeans": ("bits",),
    "uniform": (),
    "cast": ("dtype",),
}


def describe_chain(entry: dict) -> str:
    """Human form of a tensor's chain, e.g. ``csr(density=0.2,index_coding=gaps) > kmeans(bits=4)``."""
    transform = entry["transform"]
    text = _stage_text(transform, _density(entry))
    if "widen" in entry:  # the chain ran on the values of a bfloat16 tensor (spec/container.md §4.5)
        text = f"{entry['widen']}: {text}"
    values = [_stage_text(codec) for part in entry["parts"] for codec in part["codecs"] if codec["name"] in ("kmeans", "cast", "uniform")]
    for value in dict.fromkeys(values):
        text += f" > {value}"
    return text


def _density(entry: dict) -> dict:
    """For pruning and kept coefficients: the fraction of the tensor's entries stored."""
    kept = entry["transform"]["configuration"].get("kept")
    size = math.prod(entry["shape"])
    if entry["transform"]["name"] in ("csr", "fft") and isinstance(kept, int) and size:
        return {"density": round(kept / size, 4)}
    return {}


def _stage_text(ref: dict, extra: dict | None = None) -> str:
    config = ref.get("configuration", {})
    shown = {**(extra or {}), **{k: config[k] for k in _SHOWN_FIELDS.get(ref["name"], ()) if k in config}}
    inner = ",".join(f"{k}={v}" for k, v in shown.items())
    return f"{ref['name']}({inner})" if inner else ref["name"]
