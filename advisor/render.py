"""Plain-text tables and the Markdown scaling-justification report (no rich: the advisor must start fast)."""

import math

from advisor.decide import Recommendation
from advisor.numbers import human
from advisor.estimate import Estimate


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned text table with a rule under the header."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def money(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "n/a"
    return f"${x:,.0f}" if x >= 100 else f"${x:,.2f}"


def hours(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "n/a"
    return f"{x:,.1f}" if x < 1000 else f"{x:,.0f}"


def gib(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def option_rows(rec: Recommendation) -> list[list[str]]:
    rows = []
    for o in rec.options:
        mark = "*" if o.tier == rec.tier and o == rec.options[0] else ("" if o.viable else "x")
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


def render_estimate(e: Estimate) -> str:
    m = e.memory_gib
    where = f"{e.gpus} x {e.gpu}" if e.gpu else "CPU"
    out = [
        f"Estimate: {e.method} of {e.model} on {where}" + (f" (recipe {e.recipe})" if e.recipe else ""),
        f"  parameters: {human(e.total_params)} total, {e.trainable_params:,} trainable",
        f"  FLOPs per token: {e.flops_per_token:.3g} (forward {e.flops_breakdown['forward']:.3g}, backward "
        f"{e.flops_breakdown['backward']:.3g}, recompute {e.flops_breakdown['recompute']:.3g})",
        "",
        "Memory per GPU (GiB):",
        table(["weights", "adapters", "gradients", "optimizer", "activations", "logits", "overhead", "total"],
              [[gib(m[k]) for k in ("weights", "adapters", "gradients", "optimizer", "activations", "logits", "overhead", "total")]]),
        f"  sharding: {m['sharding']}",
        f"  gradient checkpointing: {'on' if e.gradient_checkpointing else 'off'}"
        + (f" ({e.gradient_checkpointing_reason})" if e.gradient_checkpointing_reason else ""),
    ]
    if e.gpu:
        verdict = "fits" if e.fits else "does NOT fit"
        out.append(f"  {verdict} in {e.gpu_memory_gib:.1f} GiB; fewest {e.gpu} that fit: {e.gpus_needed or 'none'}")
    for s in e.suggestions:
        out.append(f"  would fit: {s}")
    if e.tokens is not None:
        out += ["", f"Tokens: {human(e.tokens)} ({e.tokens_source})",
                f"  FLOPs: {e.total_flops:.3g} executed, {e.model_flops:.3g} model",
                f"  GPU-hours: {hours(e.gpu_hours)} at efficiency {e.efficiency:.2f} ({e.efficiency_source})",
                f"  cost: {money(e.cost_usd)}"]
    return "\n".join(out)
