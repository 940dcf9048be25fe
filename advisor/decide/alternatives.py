"""When the preferred plan breaks a constraint: the nearest plans that would not, each costed.

Each alternative changes one thing a team can change, tried in the order people try them (CHANGE_ORDER): fewer
tokens or epochs, a smaller base model from the catalog, another method (QLoRA), more of the GPUs they have, a
longer deadline, a larger budget, and only when not on premises, renting another GPU type (saying so when its speed
rests on no published measurement). Each is costed by the same functions as the options (advisor.decide.costing)
and kept only if it breaks no constraint of the situation it assumes and finishes within MAX_PLAN_DAYS.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from msgspec import Struct
from msgspec.structs import replace

from advisor.catalog import load as catalog
from advisor.core.numbers import human
from advisor.decide.constraints import RELAXABLE, days_text, deadline_days
from advisor.decide.costing import MAX_SEARCH_GPUS, Option, cost_option
from advisor.decide.situation import Situation
from advisor.formulas.params import param_counts
from advisor.plan.sizing import valid_gpu_counts
from advisor.plan.uncertainty import estimate_bands

if TYPE_CHECKING:  # annotations only: imported where used, so `advisor recommend` does not load them
    from advisor.plan.calibration import Calibration

ChangeKind = Literal["less_data", "smaller_model", "more_gpus", "longer_deadline", "larger_budget", "other_gpu"]

# The order a team tries changes in: use less of what it has before it asks for more, and ask for more of what it
# owns before it rents something else. The list shows alternatives in this order (then cheaper first).
CHANGE_ORDER: tuple[ChangeKind, ...] = ("less_data", "smaller_model", "more_gpus", "longer_deadline", "larger_budget",
                                        "other_gpu")
# How many alternatives the answer lists.
MAX_ALTERNATIVES = 6
# Fewer tokens: scale the data down to this share of what exactly meets the limits (rounding margin).
TOKENS_MARGIN = 0.98
# No alternative proposes a plan longer than this (or than your own deadline, if longer): a plan of years is not one
# to sign, whatever it costs.
MAX_PLAN_DAYS = 365.0
# Smaller base models tried, nearest in size first, until one works (each costs the option once): at most this many,
# among those no larger than the base x the share of its limits the option needs x SMALLER_MODEL_SLACK (cost, time,
# memory and serving GPUs grow about in proportion to parameters, not exactly: the slack keeps the nearest that could
# work in the list).
MAX_SMALLER_MODELS = 6
SMALLER_MODEL_SLACK = 2.0


class Alternative(Struct, frozen=True, kw_only=True):
    """A change to the situation and the option it makes viable."""

    change: str
    option: Option
    kind: ChangeKind = "less_data"


def plan_cap_days(s: Situation) -> float:
    """The longest plan an alternative may propose: MAX_PLAN_DAYS, or your deadline when it is longer."""
    return max(MAX_PLAN_DAYS, s.deadline_days or 0.0)


def smaller_models(s: Situation, share: float = 1.0) -> list[str]:
    """Catalog models smaller than the base model (total parameters) and no larger than base x share x
    SMALLER_MODEL_SLACK, nearest first, at most MAX_SMALLER_MODELS."""
    base = param_counts(catalog.get_model(s.base_model)).total
    bound = min(base, base * share * SMALLER_MODEL_SLACK)
    sized = sorted((param_counts(m).total, m.name) for m in catalog.entries("models"))
    return [name for total, name in sized[::-1] if total < bound][:MAX_SMALLER_MODELS]


def needed_share(option: Option) -> float:
    """The share of what the option needs that the limits allow (limit / needed, the tightest relaxable one), 1 when
    no broken constraint gives both numbers."""
    shares = [v.limit / v.needed for v in option.why_not
              if v.constraint in RELAXABLE and v.needed and v.limit is not None and v.needed > v.limit]
    return min(shares, default=1.0)


def unmeasured_note(gpu_name: str, method: str) -> str:
    """Where a GPU's speed rests on no published measurement of its generation: say so (advisor.plan.uncertainty)."""
    gpu = catalog.get_gpu(gpu_name)
    band = estimate_bands(gpu.generation, method if method in ("lora", "qlora", "full") else "lora", False)["throughput"]
    if band is None or band.extrapolating:
        return f" — speed extrapolated: no published {gpu.generation or gpu.name} measurement of this kind"
    return ""


def _changes(s: Situation, option: Option) -> list[tuple[ChangeKind, str, Situation]]:
    """The one-knob changes worth trying for this option, each with its kind and the situation it assumes."""
    out: list[tuple[ChangeKind, str, Situation]] = []
    broken = {v.constraint for v in option.why_not}
    limits = [v.limit / v.needed for v in option.why_not
              if v.constraint in ("budget", "deadline") and v.needed and v.limit is not None]
    if limits and broken <= {"budget", "deadline"}:
        share = min(limits) * TOKENS_MARGIN
        if s.epochs > 1 and s.epochs * share >= 1:
            out.append(("less_data", f"train {s.epochs * share:.2g} epochs instead of {s.epochs:g}",
                        replace(s, epochs=s.epochs * share)))
        else:
            out.append(("less_data", f"train on {human(s.tokens * share)} tokens instead of {human(s.tokens)} "
                                     f"({share * 100:.2g}%)", replace(s, tokens=s.tokens * share)))
    if option.tier != "pretrain":
        for name in smaller_models(s, needed_share(option)):
            verb = "serve" if option.method == "self-host+retrieval" else "adapt"
            out.append(("smaller_model", f"{verb} the smaller {name} instead of {s.base_model}",
                        replace(s, base_model=name)))
    for n in valid_gpu_counts(MAX_SEARCH_GPUS):
        if n > s.gpus:
            out.append(("more_gpus", f"use {n} x {s.gpu} (you have {s.gpus})", replace(s, gpus=n)))
    cap = plan_cap_days(s)
    if option.wall_days is not None and "deadline" in broken and option.wall_days <= cap:
        days = math.ceil(option.wall_days)
        out.append(("longer_deadline", f"allow {days_text(days)} (deadline {days_text(deadline_days(s)[0])})",
                    replace(s, deadline_days=float(days))))
    if math.isfinite(option.cost_usd) and "budget" in broken:
        budget = math.ceil(option.cost_usd)
        out.append(("larger_budget", f"raise the budget to ${budget:,} (from ${s.budget_usd:,.0f})",
                    replace(s, budget_usd=float(budget))))
    if not s.on_prem:  # on premises you cannot rent another GPU type
        for gpu in catalog.entries("gpus"):
            if gpu.name != s.gpu and gpu.price_usd_per_hour is not None:  # an unpriced card cannot be costed
                out.append(("other_gpu", f"rent {s.gpus} x {gpu.name} instead of {s.gpu} (catalog price)"
                                         f"{unmeasured_note(gpu.name, option.method)}",
                            replace(s, gpu=gpu.name, price_usd_per_gpu_hour=None)))
    return out


def nearest_viable(s: Situation, options: dict[str, Option], keys: list[str],
                   calibration: Calibration | None = None) -> list[Alternative]:
    """For the options `keys` that break only relaxable constraints: the changes that make one viable within
    plan_cap_days. Per option, a smaller model and more GPUs keep only the first that works (the nearest in size, the
    smallest count). Listed in CHANGE_ORDER, one of each kind first, cheaper first within a kind."""
    found: list[Alternative] = []
    cap = plan_cap_days(s)
    for key in keys:
        option = options[key]
        if option.viable or not option.why_not or not {v.constraint for v in option.why_not} <= RELAXABLE:
            continue
        done: set[str] = set()
        for kind, change, changed in _changes(s, option):
            if kind in done:
                continue
            candidate = cost_option(changed, key, calibration)
            if candidate.viable and (candidate.wall_days is None or candidate.wall_days <= cap):
                found.append(Alternative(change=f"{key}: {change}", option=candidate, kind=kind))
                if kind in ("smaller_model", "more_gpus"):
                    done.add(kind)
    found.sort(key=lambda a: (CHANGE_ORDER.index(a.kind), a.option.cost_usd, a.option.wall_days or 0.0))
    first = {}
    for a in found:
        first.setdefault(a.kind, a)
    chosen = list(first.values())[:MAX_ALTERNATIVES]
    chosen += [a for a in found if a not in chosen][:MAX_ALTERNATIVES - len(chosen)]
    return sorted(chosen, key=lambda a: (CHANGE_ORDER.index(a.kind), a.option.cost_usd))
