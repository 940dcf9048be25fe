"""`advisor recommend`: the decision, its options and reasoning, and the Markdown scaling justification."""

from advisor.decide import Recommendation
from advisor.numbers import human
from advisor.render import gib, hours, money, table


def option_rows(rec: Recommendation) -> list[list[str]]:
    rows = []
    for o in rec.options:
        mark = "*" if o.tier == rec.tier and o.method == rec.method else ("" if o.viable else "x")
        rows.append([mark, o.tier, o.method, o.model, f"{o.gpus} x {o.gpu}" if o.gpu else "-", hours(o.gpu_hours),
                     money(o.cost_usd) + ("/mo" if o.tier == "api" else ""), gib(o.memory_gib_per_gpu), o.note])
    return rows


OPTION_HEADERS = ["", "tier", "method", "model", "GPUs", "GPU-h", "cost", "GiB/GPU", "note"]


def render_recommendation(rec: Recommendation) -> str:
    s = rec.situation
    out = [
        f"Recommendation: {rec.tier.upper()}",
        f"  {rec.reasons[-1].finding}",
        "",
        f"Data: {human(s.tokens)} tokens" + (f" in {human(s.docs)} documents" if s.docs else "")
        + f", quality {s.quality:g} -> {human(rec.effective_tokens)} effective tokens; "
          f"compute-optimal model for them: ~{human(rec.compute_optimal_params)} parameters.",
        "Self-hosting breaks even with the API at "
        + (f"~{human(rec.break_even_requests_per_day)} requests/day." if rec.break_even_requests_per_day
           else "no volume at these prices."),
        "",
        "Options (* chosen, x not viable):",
        table(OPTION_HEADERS, option_rows(rec)),
        "",
        "Reasoning:",
    ]
    for f in rec.reasons:
        out.append(f"  - [{f.rule}] {f.finding}")
        out.append(f"      source: {f.source}")
    out += ["", "Assumptions:"] + [f"  - {a}" for a in rec.assumptions]
    return "\n".join(out)


def report_markdown(rec: Recommendation) -> str:
    """A scaling-justification document a team can attach to a budget request."""
    s = rec.situation
    rows = [[o.tier, o.method, o.model, f"{o.gpus} x {o.gpu}" if o.gpu else "-", hours(o.gpu_hours),
             money(o.cost_usd) + (" / month" if o.tier == "api" else ""), gib(o.memory_gib_per_gpu),
             "yes" if o.viable else "no", o.note] for o in rec.options]
    header = "| tier | method | model | GPUs | GPU-hours | cost | GiB per GPU | viable | note |"
    lines = [
        "# Scaling justification",
        "",
        f"**Recommendation: {rec.tier.upper()}.** {rec.reasons[-1].finding}",
        "",
        "## Inputs",
        "",
        f"- Training data: {human(s.tokens)} tokens" + (f" in {human(s.docs)} documents" if s.docs else "")
        + f"; usable fraction {s.quality:g}; effective tokens {human(rec.effective_tokens)}.",
        f"- Usage: {human(s.requests_per_day)} requests/day x {human(s.tokens_per_request)} tokens.",
        f"- Task: {s.task}. On-premises only: {'yes' if s.on_prem else 'no'}. Hosted API meets the bar: "
        f"{'yes' if s.api_sufficient else 'no'}.",
        f"- Hardware: {s.gpus} x {s.gpu} ({s.availability:.0%} available). Budget: "
        + (money(s.budget_usd) if s.budget_usd else "not set") + ".",
        "",
        "## Options, in the order of the hierarchy",
        "",
        header,
        "|" + "---|" * 9,
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "## Reasoning",
        "",
    ]
    for f in rec.reasons:
        lines.append(f"- **{f.rule}**: {f.finding} *Source: {f.source}.*")
    lines += ["", "## Assumptions", ""] + [f"- {a}" for a in rec.assumptions]
    lines += ["", "Formulas and their sources: docs/estimation.md in the Rightsize repository.", ""]
    return "\n".join(lines)
