"""When the preferred plan breaks a constraint: the nearest plans that would not, each costed.

Each alternative changes one thing a team can change (fewer tokens or epochs, another method, another GPU type,
more GPUs, a longer deadline, a larger budget), is costed by the same functions as the options (advisor.decide.costing),
and is kept only if it breaks no constraint of the situation it assumes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from msgspec import Struct
from msgspec.structs import replace

from advisor.catalog import load as catalog
from advisor.decide.constraints import RELAXABLE, days_text, deadline_days
from advisor.decide.costing import MAX_SEARCH_GPUS, Option, cost_option
from advisor.core.numbers import human
from advisor.decide.situation import Situation
from advisor.plan.sizing import valid_gpu_counts

if TYPE_CHECKING:  # annotations only: imported where used, so `advisor recommend` does not load them
    from advisor.plan.calibration import Calibration

# How many alternatives the answer lists, cheapest first.
MAX_ALTERNATIVES = 6
# Fewer tokens: scale the data down to this share of what exactly meets the limits (rounding margin).
TOKENS_MARGIN = 0.98


class Alternative(Struct, frozen=True, kw_only=True):
    """A change to the situation and the option it makes viable."""

    change: str
    option: Option


def _changes(s: Situation, option: Option) -> list[tuple[str, Situation]]:
    """The one-knob changes worth trying for this option, each with the situation it assumes."""
    out: list[tuple[str, Situation]] = []
    limits = [v.limit / v.needed for v in option.why_not
              if v.constraint in ("budget", "deadline") and v.needed and v.limit is not None]
    if limits and all(v.constraint in ("budget", "deadline") for v in option.why_not):
        share = min(limits) * TOKENS_MARGIN
        if s.epochs > 1 and s.epochs * share >= 1:
            out.append((f"train {s.epochs * share:.2g} epochs instead of {s.epochs:g}",
                        replace(s, epochs=s.epochs * share)))
        else:
            out.append((f"train on {human(s.tokens * share)} tokens instead of {human(s.tokens)} ({share * 100:.2g}%)",
                        replace(s, tokens=s.tokens * share)))
    for gpu in catalog.entries("gpus"):
        if gpu.name != s.gpu and gpu.price_usd_per_hour is not None:  # an unpriced card cannot be costed
            out.append((f"use {s.gpus} x {gpu.name} instead of {s.gpu} (catalog price)",
                        replace(s, gpu=gpu.name, price_usd_per_gpu_hour=None)))
    for n in valid_gpu_counts(MAX_SEARCH_GPUS):
        if n > s.gpus:
            out.append((f"use {n} x {s.gpu} (you have {s.gpus})", replace(s, gpus=n)))
    if option.wall_days is not None and any(v.constraint == "deadline" for v in option.why_not):
        days = math.ceil(option.wall_days)
        out.append((f"allow {days_text(days)} (deadline {days_text(deadline_days(s)[0])})",
                    replace(s, deadline_days=float(days))))
    if math.isfinite(option.cost_usd) and any(v.constraint == "budget" for v in option.why_not):
        budget = math.ceil(option.cost_usd)
        out.append((f"raise the budget to ${budget:,} (from ${s.budget_usd:,.0f})",
                    replace(s, budget_usd=float(budget))))
    return out


def nearest_viable(s: Situation, options: dict[str, Option], keys: list[str],
                   calibration: Calibration | None = None) -> list[Alternative]:
    """For the options `keys` that break only relaxable constraints: the cheapest changes that make one viable. A
    GPU-count change keeps only the smallest count that works."""
    found: list[Alternative] = []
    for key in keys:
        option = options[key]
        if option.viable or not option.why_not or not {v.constraint for v in option.why_not} <= RELAXABLE:
            continue
        more_gpus_done = False
        for change, changed in _changes(s, option):
            if change.startswith("use ") and "(you have" in change:
                if more_gpus_done:
                    continue
            candidate = cost_option(changed, key, calibration)
            if candidate.viable:
                found.append(Alternative(change=f"{key}: {change}", option=candidate))
                more_gpus_done = more_gpus_done or "(you have" in change
    found.sort(key=lambda a: (a.option.cost_usd, a.option.wall_days or 0.0))
    seen, out = set(), []
    for a in found:
        if a.change not in seen:
            seen.add(a.change)
            out.append(a)
    return out[:MAX_ALTERNATIVES]
