"""The user's hard constraints (budget, deadline, GPUs, on-premises, quality bar) and a retired API: each check says
which one an option breaks and by how much. An option with any violation is not viable.
"""

import datetime
from typing import Literal

from msgspec import Struct

from advisor.catalog.load import entry_date
from advisor.catalog.types import ApiPrice
from advisor.core.numbers import human
from advisor.decide.situation import DEFAULT_API, Situation

# With no --deadline, a training plan must finish within a quarter (the horizon of a budget request): a plan that
# takes years of wall-clock on the user's cluster is not one to sign without saying so. Stated in every answer.
ASSUMED_DEADLINE_DAYS = 90.0

Constraint = Literal["budget", "deadline", "gpus", "on_prem", "quality_bar", "beats_base", "serving", "monthly_budget",
                     "retired"]


# Constraints a change of plan can relax (fewer tokens, more GPUs, more time or money, a smaller model, quantised
# serving); on-premises, the quality bar and "beats the base" are facts about the situation, not knobs.
RELAXABLE = frozenset({"budget", "deadline", "gpus", "serving", "monthly_budget"})


class Violation(Struct, frozen=True, kw_only=True):
    """One constraint an option breaks: which, what the option needs, the limit, and the text the user reads."""

    constraint: Constraint
    needed: float | None = None
    limit: float | None = None
    detail: str

    @property
    def over_by(self) -> float | None:
        """needed / limit: how many times over the limit (None where the constraint is yes/no)."""
        return self.needed / self.limit if self.needed is not None and self.limit else None


def deadline_days(s: Situation) -> tuple[float, bool]:
    """The deadline training must meet, and whether it is the assumed one (ASSUMED_DEADLINE_DAYS)."""
    return (s.deadline_days, False) if s.deadline_days is not None else (ASSUMED_DEADLINE_DAYS, True)


def check_budget(cost_usd: float, s: Situation) -> Violation | None:
    """The one-off training cost against --budget (monthly API and serving bills are reported, not bounded)."""
    if s.budget_usd is None or cost_usd <= s.budget_usd:
        return None
    over = f"{cost_usd / s.budget_usd:.1f}x" if cost_usd != float("inf") else "unbounded"
    return Violation(constraint="budget", needed=cost_usd, limit=s.budget_usd,
                     detail=f"budget: costs ${cost_usd:,.0f}, the budget is ${s.budget_usd:,.0f} ({over})")


def check_deadline(wall_days: float, gpus: int, s: Situation) -> Violation | None:
    """Wall-clock days on `gpus` GPUs (availability applied) against the deadline."""
    limit, assumed = deadline_days(s)
    if limit > 0 and wall_days <= limit:
        return None
    takes = f"takes {days_text(wall_days)} on {gpus} GPU{'s' if gpus != 1 else ''} at {s.availability:.0%} availability"
    if limit == 0:  # no training meets it; no limit, so no alternative reads limit / needed as a share of the work
        return Violation(constraint="deadline", needed=wall_days,
                         detail=f"deadline: {takes}; a deadline of 0 days leaves no time to train (--deadline)")
    which = f"the assumed {limit:g}-day deadline (say --deadline)" if assumed else f"the {limit:g}-day deadline"
    return Violation(constraint="deadline", needed=wall_days, limit=limit,
                     detail=f"deadline: {takes}, over {which} ({wall_days / limit:.1f}x)")


def check_gpus(needed: int | None, gpu: str, s: Situation, what: str = "to fit in memory") -> Violation | None:
    """GPUs an option needs against the GPUs available (None: no count up to the search limit fits)."""
    if needed is not None and needed <= s.gpus:
        return None
    if needed is None:
        return Violation(constraint="gpus", limit=float(s.gpus), detail=f"gpus: does not fit on any number of {gpu}")
    return Violation(constraint="gpus", needed=float(needed), limit=float(s.gpus),
                     detail=f"gpus: needs {needed} x {gpu} {what}, you have {s.gpus}")


def check_on_prem(s: Situation) -> Violation | None:
    if not s.on_prem:
        return None
    return Violation(constraint="on_prem", detail="on_prem: a hosted API sends your data off premises (--on-prem)")


def check_quality_bar(s: Situation) -> Violation | None:
    if s.api_sufficient:
        return None
    return Violation(constraint="quality_bar",
                     detail="quality_bar: you said an off-the-shelf model does not meet your bar (--api-insufficient)")


def check_api_retired(api: ApiPrice, today: datetime.date | None = None) -> Violation | None:
    """A hosted model the catalog marks retired (shut down, or deprecated with its shutdown announced) is no plan to
    build on: shut down, it answers nothing; deprecated, it stops answering on its shutdown date. The detail says
    which, with the date, and names its successor where the catalog lists one (else the default API)."""
    if not api.retired:
        return None
    when, today = entry_date(api.shutdown_date or ""), today or datetime.date.today()
    if when is None:
        status = f"{api.name} is retired (the catalog records no shutdown date)"
    elif when <= today:
        status = f"{api.name} was shut down on {api.shutdown_date}"
    else:
        status = f"{api.name} is deprecated and shuts down on {api.shutdown_date}"
    instead = (f"its successor: --api {api.replacement}" if api.replacement
               else f"price a current model with --api, e.g. {DEFAULT_API}")
    return Violation(constraint="retired",
                     detail=f"retired: {status}; {instead} (source: advisor catalog apis --json, retired_source)")


def days_text(days: float) -> str:
    """Wall-clock time as people say it: hours under a day, days under a year, years beyond."""
    if days < 1:
        return f"{days * 24:.1f} hours"
    if days < 365:
        return f"{days:.1f} days"
    return f"{days / 365:.1f} years"


def distance(violations: list[Violation]) -> tuple[bool, int]:
    """How far an option is from viable, for ranking the nearest when none is: a fact broken (not relaxable) is
    farther than any number of relaxable constraints; then the count broken."""
    return any(v.constraint not in RELAXABLE for v in violations), len(violations)


def check_serving_gpus(plan, s: Situation) -> Violation | None:
    """On premises, serving the trained model (an advisor.plan.serving.ServingPlan) must fit the GPUs you have;
    renting, any count can be rented and only its cost counts (check_monthly_budget)."""
    if not s.on_prem:
        return None
    if not plan.fits:
        return Violation(constraint="serving", limit=float(s.gpus),
                         detail=f"serving: one replica of {plan.model} ({plan.replica_gib:,.0f} GiB) fits no layout of "
                                f"{plan.gpu}")
    if plan.gpus <= s.gpus:
        return None
    return Violation(constraint="serving", needed=float(plan.gpus), limit=float(s.gpus),
                     detail=f"serving: {plan.model} needs {plan.gpus} x {plan.gpu} to serve "
                            f"{human(s.requests_per_day)} requests/day at a peak {s.peak_to_average:g}x the average "
                            f"({plan.replicas} replica(s), {plan.precision}), you have {s.gpus}")


def check_monthly_budget(usd_per_month: float | None, s: Situation, what: str) -> Violation | None:
    """A month of serving (or of the API bill) against --monthly-budget."""
    if s.monthly_budget_usd is None or usd_per_month is None or usd_per_month <= s.monthly_budget_usd:
        return None
    return Violation(constraint="monthly_budget", needed=usd_per_month, limit=s.monthly_budget_usd,
                     detail=f"monthly_budget: {what} costs ${usd_per_month:,.0f}/month, the monthly budget is "
                            f"${s.monthly_budget_usd:,.0f} ({usd_per_month / s.monthly_budget_usd:.1f}x)")
