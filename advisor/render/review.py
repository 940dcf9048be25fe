"""`advisor review` (and the review section of `recommend --report`): a proposal against the formulas."""

from __future__ import annotations

from typing import TYPE_CHECKING

from advisor.core.numbers import human
from advisor.render import hours, money, table

if TYPE_CHECKING:  # annotations only: `recommend` without a proposal does not load advisor.decide.review
    from advisor.decide.review import Review


def review_rows(r: Review) -> list[list[str]]:
    p, o = r.proposal, r.computed
    rows = [["proposal", f"{p.method} {r.model}", f"{p.gpus} x {o.gpu}", hours(r.proposed_gpu_hours),
             money(r.proposed_cost_usd), f"{p.days:g}" if p.days else "-"],
            ["formulas", f"{o.method} {r.model}", f"{o.gpus} x {o.gpu}" if o.gpus else "does not fit", hours(o.gpu_hours),
             money(o.cost_usd), f"{r.computed_days:.1f}" if r.computed_days is not None else "-"]]
    for c in r.cheaper:
        rows.append(["cheaper", f"{c.option.method} {r.model}", f"{c.option.gpus} x {c.option.gpu}",
                     hours(c.option.gpu_hours), money(c.option.cost_usd), f"{c.option.gpu_hours / c.option.gpus / 24:.1f}"])
    return rows


REVIEW_HEADERS = ["", "plan", "GPUs", "GPU-h", "cost", "days"]


def ratio_line(r: Review) -> str:
    parts = []
    if r.ratio_gpu_hours is not None:
        parts.append(f"proposal / formulas: {r.ratio_gpu_hours:.1f}x the GPU-hours")
    if r.ratio_cost is not None:
        parts.append(f"{r.ratio_cost:.1f}x the dollars")
    if r.implied_utilisation is not None:
        parts.append(f"implied utilisation {r.implied_utilisation:.1%} of peak (formulas: {r.efficiency:.0%})"
                     + (", impossible: under-budgeted at any utilisation" if r.implied_utilisation > 1 else ""))
    if r.implied_usd_per_gpu_hour is not None:
        parts.append(f"implied ${r.implied_usd_per_gpu_hour:.2f}/GPU-hour")
    return "; ".join(parts) + "." if parts else "The proposal gives neither days nor dollars to compare."


def render_review(r: Review) -> str:
    out = [f"Review: {r.proposal.method} fine-tune of {r.model} on {human(r.proposal.tokens)} tokens"]
    if r.model_note:
        out.append(f"  ({r.model_note})")
    out += ["", table(REVIEW_HEADERS, review_rows(r)), "", ratio_line(r),
            f"Compute-optimal size for {human(r.proposal.tokens)} tokens: ~{human(r.compute_optimal_params)} parameters "
            "(bounds pretraining from scratch, not fine-tuning).", "", "Reasoning:"]
    for f in r.findings:
        out += [f"  - [{f.rule}] {f.finding}", f"      source: {f.source}"]
    return "\n".join(out)


def review_markdown(r: Review) -> list[str]:
    """The review as a section of the scaling justification."""
    lines = ["## Review of the proposed plan", ""]
    if r.model_note:
        lines += [f"*{r.model_note}.*", ""]
    lines += ["| | plan | GPUs | GPU-hours | cost | days |", "|---|---|---|---|---|---|",
              *("| " + " | ".join(row) + " |" for row in review_rows(r)), "", ratio_line(r), ""]
    lines += [f"- **{f.rule}**: {f.finding} *Source: {f.source}.*" for f in r.findings]
    return lines + [""]
