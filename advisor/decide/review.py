"""Phase gate: review a proposed plan ("full fine-tune a 7B model on 2B tokens: 8 x A100 for two weeks, ~$150,000")
against what the formulas say that plan costs, and the cheaper path.

The proposal's GPU-hours are GPUs x days x 24; the formulas' come from advisor.decide.costing on the same GPUs. The gap is
their ratio, read back as the utilisation the proposal implies (the formulas' efficiency / the ratio) and its price
per GPU-hour (cost / proposed GPU-hours).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from msgspec import Meta, Struct

from advisor.catalog import load as catalog
from advisor.formulas import scaling
from advisor.catalog.types import ModelArch
from advisor.decide.costing import Option, cost_finetune, gpu_price
from advisor.core.bounds import MAX_BUDGET_USD, MAX_GPUS, MAX_PRICE_USD_PER_GPU_HOUR, MAX_TOKENS
from advisor.core.errors import AdvisorError
from advisor.decide.findings import Finding
from advisor.formulas.flops import DEFAULT_EFFICIENCY
from advisor.core.numbers import human, parse_quantity
from advisor.formulas.params import param_counts
from advisor.formulas.setup import METHODS
from advisor.decide.situation import Situation
from advisor.formulas.setup import Method

if TYPE_CHECKING:  # annotations only: imported where used, so `advisor recommend` does not load them
    from advisor.plan.calibration import Calibration

# A size such as "7B" names the catalog model whose parameter count is nearest, if within this share of it.
SIZE_MATCH_SHARE = 0.15


class Proposal(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A plan someone proposed: model, method, GPUs and days and/or dollars, on a number of training tokens."""

    model: Annotated[str, Meta(description="Catalog model name, config.json path, or a size such as 7B.")]
    method: Annotated[Method, Meta(description="lora | qlora | full.")] = "full"
    gpu: Annotated[str, Meta(description="GPU type of the proposal.")] = "A100-80GB"
    gpus: Annotated[int, Meta(ge=1, le=MAX_GPUS, description="GPUs the proposal uses.")] = 8
    days: Annotated[float, Meta(gt=0, description="Wall-clock days the proposal budgets.")] | None = None
    cost_usd: Annotated[float, Meta(gt=0, le=MAX_BUDGET_USD, description="Dollars the proposal budgets.")] | None = None
    tokens: Annotated[float, Meta(gt=0, le=MAX_TOKENS, description="Training tokens (per epoch).")]
    epochs: Annotated[float, Meta(gt=0, le=1000, description="Passes over the tokens.")] = 1.0
    seq_len: Annotated[int, Meta(gt=0, le=1_048_576, description="Training sequence length.")] = 2048
    price_usd_per_gpu_hour: Annotated[float, Meta(gt=0, le=MAX_PRICE_USD_PER_GPU_HOUR, description=(
        "Override the catalog's GPU price."))] | None = None


class CheaperPath(Struct, frozen=True, kw_only=True):
    option: Option
    saving_vs_proposal_usd: float | None
    saving_vs_computed_usd: float


class Review(Struct, frozen=True, kw_only=True):
    proposal: Proposal
    model: str
    model_note: str
    computed: Option               # the proposal's own plan, as the formulas cost it on its GPUs
    efficiency: float              # the fraction of peak the formulas assume for the method
    proposed_gpu_hours: float | None
    proposed_cost_usd: float | None
    computed_days: float | None
    ratio_gpu_hours: float | None  # proposed / computed
    ratio_cost: float | None
    implied_utilisation: float | None
    implied_usd_per_gpu_hour: float | None
    compute_optimal_params: float
    cheaper: list[CheaperPath]
    findings: list[Finding]


def resolve_model(text: str) -> tuple[ModelArch, str]:
    """A catalog name or config.json, or a size ("7B"): the catalog model nearest that size, within SIZE_MATCH_SHARE."""
    try:
        size = parse_quantity(text)
    except AdvisorError:
        return catalog.get_model(text), ""
    models = sorted(catalog.entries("models"), key=lambda m: abs(param_counts(m).total - size))
    near = [m for m in models if abs(param_counts(m).total - size) <= SIZE_MATCH_SHARE * size]
    if not near:
        raise AdvisorError(f"--model {text}: no catalog model within {SIZE_MATCH_SHARE:.0%} of {human(size)} parameters; "
                           "give a name from `advisor catalog models`")
    others = ", ".join(f"{m.name} ({human(param_counts(m).total)})" for m in near[1:])
    note = (f"{text} read as {near[0].name} ({human(param_counts(near[0]).total)} parameters), the catalog model "
            f"nearest that size" + (f"; also that size: {others}" if others else ""))
    return near[0], note


def review_proposal(p: Proposal, calibration: Calibration | None = None) -> Review:
    """What the formulas say the proposal's plan costs on its own GPUs, the gap, and the cheaper paths."""
    arch, note = resolve_model(p.model)
    gpu = catalog.get_gpu(p.gpu)
    s = Situation(tokens=p.tokens, base_model=p.model if not note else arch.name, gpu=gpu.name, gpus=p.gpus,
                  epochs=p.epochs, seq_len=p.seq_len, price_usd_per_gpu_hour=p.price_usd_per_gpu_hour,
                  deadline_days=p.days, budget_usd=p.cost_usd)
    computed = cost_finetune(s, p.method, calibration, counts=[p.gpus])
    # the fraction of peak the computed GPU-hours assume: the same rate as advisor estimate and recommend
    efficiency = computed.efficiency if computed.efficiency is not None else DEFAULT_EFFICIENCY[p.method]
    price = gpu_price(s)
    proposed_hours = p.gpus * p.days * 24 if p.days else (p.cost_usd / price if p.cost_usd else None)
    proposed_cost = p.cost_usd or (proposed_hours * price if proposed_hours else None)
    finite = computed.gpus > 0
    ratio_hours = proposed_hours / computed.gpu_hours if proposed_hours and finite else None
    ratio_cost = proposed_cost / computed.cost_usd if proposed_cost and finite else None
    utilisation = efficiency / ratio_hours if ratio_hours else None
    usd_per_hour = p.cost_usd / proposed_hours if p.cost_usd and p.days and proposed_hours else None
    optimal = scaling.compute_optimal_for_tokens(p.tokens, "chinchilla-rule").params
    cheaper = []
    for method in METHODS:
        if method == p.method:
            continue
        o = cost_finetune(s, method, calibration, counts=[p.gpus])
        if o.gpus and o.cost_usd < computed.cost_usd:
            cheaper.append(CheaperPath(option=o, saving_vs_computed_usd=computed.cost_usd - o.cost_usd,
                                       saving_vs_proposal_usd=proposed_cost - o.cost_usd if proposed_cost else None))
    cheaper.sort(key=lambda c: c.option.cost_usd)
    days = computed.gpu_hours / computed.gpus / 24 if finite else None
    findings = review_findings(p, arch, computed, efficiency, proposed_hours, proposed_cost, ratio_hours, utilisation,
                               usd_per_hour, optimal, cheaper, price)
    return Review(proposal=p, model=arch.name, model_note=note, computed=computed, efficiency=efficiency,
                  proposed_gpu_hours=proposed_hours, proposed_cost_usd=proposed_cost, computed_days=days,
                  ratio_gpu_hours=ratio_hours, ratio_cost=ratio_cost, implied_utilisation=utilisation,
                  implied_usd_per_gpu_hour=usd_per_hour, compute_optimal_params=optimal, cheaper=cheaper,
                  findings=findings)


def review_findings(p: Proposal, arch: ModelArch, computed: Option, efficiency: float, proposed_hours, proposed_cost,
                    ratio_hours, utilisation, usd_per_hour, optimal: float, cheaper: list[CheaperPath],
                    price: float) -> list[Finding]:
    """The review's reasoning, each line with its source."""
    out = []
    if computed.gpus:
        gap = (f" The proposal budgets {proposed_hours:,.0f} GPU-hours and ${proposed_cost:,.0f}: {ratio_hours:.1f}x the "
               f"GPU-hours and {proposed_cost / computed.cost_usd:.1f}x the dollars." if proposed_hours else "")
        out.append(Finding(
            rule="proposal_cost",
            finding=f"{p.method} fine-tuning {arch.name} on {human(p.tokens * p.epochs)} tokens on {computed.gpus} x "
                    f"{computed.gpu}: {computed.gpu_hours:,.0f} GPU-hours, ${computed.cost_usd:,.0f} at ${price:.2f}/GPU-hour, "
                    f"{computed.gpu_hours / computed.gpus / 24:.1f} days at {efficiency:.0%} of peak"
                    + (f" (it does not fit on the proposal's {p.gpus}: {computed.note})" if computed.gpus != p.gpus else "")
                    + f".{gap}",
            source="advisor.formulas.flops.flops_per_token and gpu_hours (docs/estimation.md)",
            numbers={"gpu_hours": computed.gpu_hours, "cost_usd": computed.cost_usd, "ratio_gpu_hours": ratio_hours}))
    else:
        out.append(Finding(rule="proposal_cost", finding=f"{p.method} fine-tuning {arch.name} does not fit on "
                           f"{p.gpus} x {computed.gpu}: {computed.note}.", source="advisor.formulas.memory.memory_per_gpu"))
    if utilisation is not None:
        rate = f" and ${usd_per_hour:.2f} per GPU-hour (catalog: ${price:.2f})" if usd_per_hour else ""
        out.append(Finding(
            rule="proposal_implied",
            finding=f"For the proposal's GPU-hours to be needed, the GPUs would run at {utilisation:.1%} of peak"
                    f"{rate}; bf16 training at scale reaches 38-46% (the step-time model gives this job {efficiency:.0%}, "
                    "as advisor estimate and recommend do)"
                    + ("; above 100% the proposal is under-budgeted at any utilisation." if utilisation > 1 else "."),
            source="advisor.plan.efficiency.training_rate (the job's rate); 38-46%: Chowdhery et al. 2022 Table 3, "
                   "Dubey et al. 2024 Table 4",
            numbers={"implied_utilisation": utilisation, "implied_usd_per_gpu_hour": usd_per_hour}))
    out.append(Finding(
        rule="proposal_compute_optimal",
        finding=f"{human(p.tokens)} tokens train a compute-optimal model of ~{human(optimal)} parameters from scratch "
                f"(20 tokens per parameter). That bounds pretraining, not fine-tuning: fine-tuning {arch.name} "
                "on them is not limited by it, but pretraining a model its size on them would be far from optimal.",
        source="Hoffmann et al. 2022 (Chinchilla) Table 3", numbers={"compute_optimal_params": optimal}))
    for c in cheaper:
        o = c.option
        vs = f", ${c.saving_vs_proposal_usd:,.0f} less than the proposal" if c.saving_vs_proposal_usd is not None else ""
        out.append(Finding(
            rule="proposal_cheaper_path",
            finding=f"Cheaper path: {o.method} on {o.gpus} x {o.gpu}: {o.gpu_hours:,.0f} GPU-hours, ${o.cost_usd:,.0f}, "
                    f"{o.gpu_hours / o.gpus / 24:.1f} days — ${c.saving_vs_computed_usd:,.0f} less than {p.method} by the same "
                    f"formulas{vs}. Check quality first: LoRA learns less than full fine-tuning in continued pretraining "
                    "from ~1B tokens.",
            source="Biderman et al. 2024, LoRA Learns Less and Forgets Less, §4; Dettmers et al. 2023 (QLoRA)",
            numbers={"method": o.method, "cost_usd": o.cost_usd, "saving_vs_computed_usd": c.saving_vs_computed_usd}))
    return out
