"""Compression settings as plain values -> the internal plan rules and budget.

One parser of settings for both front ends: the CLI passes its parsed flags here,
:func:`nnzip.compress` its keyword arguments, so a setting means the same and is
refused with the same message in both.

    >>> rules = rules_from_options(bits=4)
    >>> rules.default.bits
    4
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from .distributed import DEFAULT_TIMEOUT, MAX_ADDRESS_CHARS, Scheduler, check_address
from .errors import ConfigError, NnzipError, UsageError
from .plan import PlanRules, Settings, close_matches, load_plan_file, matches, parse_layer_override, parse_settings, validate
from .scoring import DEFAULT_HOLDOUT, DEFAULT_MARGIN

#: ``--margin``'s help (the CLI's, kept with the default it describes).
MARGIN_HELP = (f"accept a plan when its drop on DATA plus K paired standard errors of that drop is <= D (default {DEFAULT_MARGIN:g}): "
               "another split's drop differs from DATA's by the sampling errors of both, so with K=1 the plan went over the budget "
               "on the other split on most samples (README, 'Accuracy budgets'); 0 trusts DATA exactly")
#: ``--holdout``'s help.
HOLDOUT_HELP = (f"hold this share of DATA's samples out of the search (default {DEFAULT_HOLDOUT:g}, every {round(1 / DEFAULT_HOLDOUT)}th sample) and "
                "accept the chosen plan only if its drop on them is <= D too, else take what the search chooses within "
                "1/2, 1/4, 1/8 of D, then lossless: the search's own data flatters the plan it picked (README, 'Accuracy budgets'); "
                "0 searches on all of DATA unchecked; ignored with --eval and under 50 held-out samples")

#: The lossy settings, in the order messages name them (keyword -> CLI flag).
LOSSY = {"bits": "--bits", "uniform": "--uniform", "uniform_step": "--uniform-step", "prune": "--prune", "rank": "--rank", "energy": "--energy", "fft_keep": "--fft-keep"}


@dataclass
class CheckedRules(PlanRules):
    """Plan rules that refuse, before anything is written, an override matching no tensor.

    :func:`nnzip.encoder.encode_model` asks :meth:`settings_for` once per tensor and records
    :meth:`to_json` in the header after the last one: at that point every tensor has been
    seen, so an override that matched none (a typo such as ``--layer dense_l:bits=2``) is
    an error naming the close matches rather than a silently ignored setting.
    """

    seen: list[str] = field(default_factory=list)

    def settings_for(self, tensor_name: str) -> Settings:  # noqa: D102 - as PlanRules, recording the name
        self.seen.append(tensor_name)
        return super().settings_for(tensor_name)

    def to_json(self) -> dict:  # noqa: D102 - as PlanRules, after checking every override matched
        for pattern, _ in self.overrides:
            if not any(matches(pattern, name) for name in self.seen):
                raise ConfigError(f"--layer {pattern!r} matches no tensor{close_matches(pattern, self.seen)}")
        return super().to_json()


def rules_from_options(*, bits: int | None = None, prune: float | None = None, rank: int | None = None, energy: float | None = None,
                       fft_keep: float | None = None, uniform: float | None = None, float16: bool = False, lossless: bool = False,
                       fft_select: str = "largest", fft_transform: str = "dct", layers: Sequence[str] | dict | None = None,
                       plan: str | os.PathLike | None = None, rdo: float | None = None, uniform_step: float | None = None,
                       dq: bool = False) -> PlanRules:
    """The plan rules the settings describe (checked: a bad value is a :class:`ConfigError`, a contradiction a :class:`UsageError`).

    *layers* are ``--layer`` overrides: strings ``"NAME:bits=2,prune=0.5"`` or a dict
    ``{"NAME": {"bits": 2}}``.  An override matching no tensor fails the compression.
    """
    flags = {"bits": bits, "uniform": uniform, "uniform_step": uniform_step, "prune": prune, "rank": rank, "energy": energy, "fft_keep": fft_keep}
    asked: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    if float16:
        asked["float16"] = True
    if dq:
        asked["dq"] = True
    if rdo is not None:
        if uniform is None and uniform_step is None and not layers and not plan:
            raise UsageError("--rdo tunes --uniform's rounding: give --uniform too (or set rdo in --layer/--plan settings)")
        asked["rdo"] = rdo
    if lossless and asked:
        raise UsageError(f"--lossless contradicts {LOSSY.get(next(iter(asked)), '--float16')}")
    # Without lossy settings a tensor is stored losslessly (plan.choose_plan), so the
    # defaults need no lossless flag unless asked: a plan file may still add settings.
    default = parse_settings({**asked, "fft_select": fft_select, "fft_transform": fft_transform}, Settings(lossless=lossless), "flags")
    base = load_plan_file(plan, default) if plan else PlanRules(validate(default), [])
    rules = CheckedRules(base.default, list(base.overrides))
    for name, items in _overrides(layers):
        parse_settings(items, rules.default, f"--layer {name}")  # reject bad overrides before reading the model
        rules.overrides.append((name, items))
    return rules


def _overrides(layers: Sequence[str] | dict | None) -> list[tuple[str, dict]]:
    """``--layer`` texts or a ``{name: settings}`` dict as (pattern, settings) pairs."""
    if not layers:
        return []
    if isinstance(layers, dict):
        for name, items in layers.items():
            if not isinstance(name, str) or not isinstance(items, dict):
                raise ConfigError(f"layers: expected {{name: {{setting: value}}}}, got {name!r}: {items!r}")
        return list(layers.items())
    if isinstance(layers, str):
        layers = [layers]
    return [parse_layer_override(text) for text in layers]


def budget_from_options(data, max_drop: float | None, *, eval_hook: str | None = None, metric: str | None = None, margin: float = DEFAULT_MARGIN,
                        log: Callable[[str], None] | None = None, fixed: Sequence[str] = (), holdout: float = DEFAULT_HOLDOUT):
    """The accuracy budget (an :class:`nnzip.budget.Budget`) or None; *fixed* names fixed settings also given.

    Refused: data without a drop, a drop without data or a hook, a negative drop or
    margin, a holdout share outside [0, 0.5], and fixed settings next to a budget (the
    search picks them itself).
    """
    from .budget import Budget

    if max_drop is None:
        if data is not None:
            raise UsageError("--data needs --max-drop (the accuracy budget)")
        return None
    if data is None and eval_hook is None:
        raise UsageError("--max-drop needs --data (or --eval)")
    if not isinstance(max_drop, (int, float)) or not max_drop >= 0:
        raise NnzipError(f"--max-drop must be >= 0, got {max_drop}")
    if fixed:
        raise UsageError(f"--max-drop searches the settings itself; drop {fixed[0]}")
    if not isinstance(margin, (int, float)) or not margin >= 0:
        raise NnzipError(f"--margin must be >= 0, got {margin}")
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 <= holdout <= 0.5:
        raise NnzipError(f"--holdout must be a share from 0 to 0.5 of the data's samples, got {holdout}")
    return Budget(data, float(max_drop), eval_hook, metric, log, float(margin), holdout=float(holdout))


def scheduler_from_options(address: object, timeout: object = DEFAULT_TIMEOUT) -> Scheduler | None:
    """``--scheduler``/``--scheduler-timeout``: a checked :class:`nnzip.distributed.Scheduler`, or None without *address*.

    The address is passed to dask as it is (``tcp://host:port``, ``tls://...``, ``host:port``)
    once dask's own parser accepts it; a missing dask is an error here, before any input is
    read.  Nothing is contacted yet.
    """
    if address is None:
        return None
    if isinstance(address, Scheduler):
        return address
    if not isinstance(address, str) or not address or len(address) > MAX_ADDRESS_CHARS or not address.isprintable() or any(c.isspace() for c in address):
        raise ConfigError(f"--scheduler must be a scheduler address such as tcp://host:8786, not {str(address)[:80]!r}")
    if type(timeout) not in (int, float) or not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"--scheduler-timeout must be a positive number of seconds, not {timeout!r}")
    check_address(address)
    return Scheduler(address, float(timeout))
