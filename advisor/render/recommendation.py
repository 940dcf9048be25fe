"""`advisor recommend`: the decision, its options and reasoning, and the Markdown scaling justification."""

from advisor.decide.constraints import days_text
from advisor.decide.costing import ranges_text
from advisor.render.decision_text import Recommendation
from advisor.core.numbers import human
from advisor.render import gib, hours, money, table
from advisor.render.review import render_review, review_markdown


def _gpus(o) -> str:
    if not o.gpu:
        return "-"
    return f"{o.gpus} x {o.gpu}" if o.gpus else "does not fit"


def _days(o) -> str:
    return "-" if o.wall_days is None else days_text(o.wall_days)


def _hours(o) -> str:
    """GPU-hours, with the 80% interval of a training option (advisor.plan.uncertainty)."""
    if o.gpu_hours_low is None or o.gpu_hours_high is None:
        return hours(o.gpu_hours)
    return f"{hours(o.gpu_hours)} ({hours(o.gpu_hours_low)}-{hours(o.gpu_hours_high)})"


def _cost(o) -> str:
    return money(o.cost_usd) + ("/mo" if o.tier == "api" else "")


def _serving(o) -> str:
    """The serving of the model an option produces, in brief: GPUs, precision, layout, a month."""
    p = o.serving
    if p is None:
        return "-"
    layout = f"TP{p.tensor_parallel}" + (f"xPP{p.pipeline_parallel}" if p.pipeline_parallel > 1 else "")
    month = f", {money(p.usd_per_month)}/mo" if p.usd_per_month is not None else ""
    return f"{p.gpus} GPU{'s' if p.gpus != 1 else ''} {p.precision} {layout}{month}"


def option_rows(rec: Recommendation) -> list[list[str]]:
    rows = []
    for o in rec.options:
        mark = ("*" if o is rec.options[0] else "") + ("" if o.viable else "x")
        rows.append([mark, o.tier, o.method, o.model, _gpus(o), _hours(o), _cost(o), _days(o),
                     gib(o.memory_gib_per_gpu), _serving(o), o.note])
    return rows


OPTION_HEADERS = ["", "tier", "method", "model", "GPUs", "GPU-h", "cost", "wall", "GiB/GPU", "serving",
                  "why not / note"]


def headline(rec: Recommendation) -> str:
    if not rec.viable:
        return "Recommendation: NOTHING FITS YOUR CONSTRAINTS"
    label = {"prompt+retrieval": "API (off-the-shelf, hosted)", "self-host+retrieval": "API tier: off-the-shelf, self-hosted"}
    return f"Recommendation: {label.get(rec.method, rec.tier.upper())}"


def data_line(rec: Recommendation) -> str:
    s = rec.situation
    alt = rec.compute_optimal_alternatives
    return (f"Data: {human(s.tokens)} tokens" + (f" in {human(s.docs)} documents" if s.docs else "")
            + f", quality {s.quality:g} -> {human(rec.effective_tokens)} effective tokens; compute-optimal model for "
              f"them: ~{human(rec.compute_optimal_params)} parameters (20 tokens/parameter, Hoffmann et al. 2022; "
              f"alternatives: Epoch 2024 fit {human(alt['epoch2024'])}, Hoffmann parametric fit "
              f"{human(alt['hoffmann2022'])}) — this bounds pretraining from scratch, not fine-tuning.")


def break_even_line(rec: Recommendation) -> str:
    s = rec.situation
    size = f" ({human(s.tokens_per_request)} tokens/request, {s.output_fraction:.0%} output)"
    if not rec.break_even_ranges:
        return "Self-hosting is cheaper than the API at no volume at these prices" + size + "."
    return f"Self-hosting is cheaper than the API {ranges_text(rec.break_even_ranges[:6])} requests/day" + size + "."


def constraints_line(rec: Recommendation) -> str:
    s = rec.situation
    deadline = (days_text(rec.deadline_days) if rec.deadline_days is not None else "none") + (" (assumed; --deadline)" if rec.deadline_assumed else "")
    return (f"Constraints: budget {money(s.budget_usd) if s.budget_usd else 'not set'}; deadline {deadline}; "
            f"{s.gpus} x {s.gpu} at {s.availability:.0%} availability; on-premises only: {'yes' if s.on_prem else 'no'}; "
            f"off-the-shelf meets the bar: " + ("assumed yes (--api-insufficient if not)" if s.api_sufficient else "no (you said)") + ".")


def alternative_rows(rec: Recommendation) -> list[list[str]]:
    return [[a.change, _gpus(a.option), hours(a.option.gpu_hours), _cost(a.option), _days(a.option), _serving(a.option)]
            for a in rec.nearest_viable]


ALTERNATIVE_HEADERS = ["change", "GPUs", "GPU-h", "cost", "wall", "serving"]


def render_recommendation(rec: Recommendation) -> str:
    out = [headline(rec), f"  {rec.reasons[-1].finding}", "", constraints_line(rec), data_line(rec),
           break_even_line(rec), "", "Options (* chosen, x not viable):", table(OPTION_HEADERS, option_rows(rec))]
    if rec.nearest_viable:
        title = "Plans that would fit (one change each):" if not rec.viable else \
            "What the preferred tier would need (one change each):"
        out += ["", title, table(ALTERNATIVE_HEADERS, alternative_rows(rec))]
    if rec.review:
        out += ["", render_review(rec.review)]
    out += ["", "Reasoning:"]
    for f in rec.reasons:
        out.append(f"  - [{f.rule}] {f.finding}")
        out.append(f"      source: {f.source}")
    out += ["", "Assumptions:"] + [f"  - {a}" for a in rec.assumptions]
    return "\n".join(out)


def report_markdown(rec: Recommendation) -> str:
    """A scaling-justification document a team can attach to a budget request."""
    s = rec.situation
    rows = [[o.tier, o.method, o.model, _gpus(o), hours(o.gpu_hours), money(o.cost_usd) + (" / month" if o.tier == "api" else ""),
             _days(o), gib(o.memory_gib_per_gpu), _serving(o), "yes" if o.viable else "no", o.note] for o in rec.options]
    header = ("| tier | method | model | GPUs | GPU-hours | cost | wall-clock | GiB per GPU | serving | viable | "
              "why not / note |")
    lines = [
        "# Scaling justification",
        "",
        f"**{headline(rec)}.** {rec.reasons[-1].finding}",
        "",
        "## Inputs",
        "",
        f"- Training data: {human(s.tokens)} tokens" + (f" in {human(s.docs)} documents" if s.docs else "")
        + f"; usable fraction {s.quality:g}; effective tokens {human(rec.effective_tokens)}.",
        f"- Usage: {human(s.requests_per_day)} requests/day x {human(s.tokens_per_request)} tokens.",
        f"- Task: {s.task}. On-premises only: {'yes' if s.on_prem else 'no'}. Off-the-shelf model meets the bar: "
        + ("assumed (not stated)" if s.api_sufficient else "no (stated)") + ("; hosted APIs excluded (on-premises)." if s.on_prem else "."),
        f"- Hardware: {s.gpus} x {s.gpu} ({s.availability:.0%} available). Budget: "
        + (money(s.budget_usd) if s.budget_usd else "not set") + f". Deadline: {days_text(rec.deadline_days) if rec.deadline_days is not None else 'none'}"
        + (" (assumed)." if rec.deadline_assumed else "."),
        f"- {data_line(rec)}",
        f"- {break_even_line(rec)}",
        "",
        "## Options, in the order of the hierarchy",
        "",
        header,
        "|" + "---|" * 11,
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]
    if rec.nearest_viable:
        lines += ["## Plans that would fit" if not rec.viable else "## What the preferred tier would need", "",
                  "| change | GPUs | GPU-hours | cost | wall-clock | serving |", "|---|---|---|---|---|---|",
                  *("| " + " | ".join(r) + " |" for r in alternative_rows(rec)), ""]
    if rec.review:
        lines += review_markdown(rec.review)
    lines += ["## Reasoning", ""]
    for f in rec.reasons:
        lines.append(f"- **{f.rule}**: {f.finding} *Source: {f.source}.*")
    lines += ["", "## Assumptions", ""] + [f"- {a}" for a in rec.assumptions]
    lines += ["", "Formulas and their sources: docs/estimation.md; decision rules: docs/decision.md in the Rightsize "
                  "repository.", ""]
    return "\n".join(lines)
