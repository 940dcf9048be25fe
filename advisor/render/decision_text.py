"""The decision in words: the sentences a Recommendation carries (in its JSON too), built from the decision's typed
choices (advisor.decide.choose) and the formulas' own constants, never from literals that could drift.

`recommend` is the decision as people and scripts read it: `explain(decide(...))`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from msgspec import Struct, structs

from advisor.core.numbers import human
from advisor.decide.choose import Decision, MethodChoice, TierChoice, decide, option_rank, rank_options
from advisor.decide.constraints import ASSUMED_DEADLINE_DAYS, days_text
from advisor.decide.costing import TRAINING_KEYS, Option, gpu_price
from advisor.formulas.serving import (
    DECODE_EFFICIENCY, PREFILL_EFFICIENCY, SERVING_KV_CACHE_SHARE, SERVING_WEIGHT_BYTES,
)
from advisor.plan.serving import SERVING_MAX_TENSOR_PARALLEL
from advisor.decide.findings import FULL_FINETUNE_MIN_TOKENS, HEADLINE_FIT, Finding
from advisor.decide.situation import Situation, Tier
from advisor.formulas.setup import TrainingSetup
from advisor.formulas.step_time import DEFAULT_STEP_TIME
from advisor.plan.sizing import AUTO_CHECKPOINTING_MAX_SHARE

if TYPE_CHECKING:  # annotations only
    from advisor.decide.alternatives import Alternative
    from advisor.decide.review import Proposal, Review
    from advisor.plan.calibration import Calibration

METHOD_LABELS = {"full": "full", "lora": "LoRA", "qlora": "QLoRA"}
OPTIMIZER_LABELS = {"adamw": "AdamW", "adamw-8bit": "8-bit AdamW", "paged-adamw-8bit": "paged 8-bit AdamW"}
# The fine-tune setup recommend costs: advisor.decide.costing builds it with TrainingSetup's defaults
_COSTED = {f.name: f.default for f in structs.fields(TrainingSetup)}


class Recommendation(Struct, frozen=True, kw_only=True):
    """The decision as people and scripts read it: the options, the reasoning in words, the assumptions."""

    tier: Tier
    method: str  # the chosen option's method (prompt+retrieval, self-host+retrieval, lora, qlora, full, pretrain)
    effective_tokens: float
    compute_optimal_params: float  # the headline: compute_optimal_fit; the other fits in compute_optimal_alternatives
    break_even_requests_per_day: float | None
    options: list[Option]  # the chosen option first, then the rest in the order of the hierarchy
    reasons: list[Finding]
    situation: Situation
    assumptions: list[str]
    calibration: str | None = None
    viable: bool = True  # false: no option meets every constraint; `nearest_viable` lists what would
    deadline_days: float | None = None
    deadline_assumed: bool = False
    break_even_ranges: list[tuple[float, float | None]] = []
    nearest_viable: list[Alternative] = []
    review: Review | None = None
    compute_optimal_fit: str = "chinchilla-rule"
    compute_optimal_alternatives: dict[str, float] = {}  # fit name -> parameters


def efficiency_text(calibration_path: Path | str | None) -> str:
    if calibration_path:
        return f"from calibration {calibration_path}"
    return (f"from the step-time model (advisor.formulas.step_time, {DEFAULT_STEP_TIME.source}) for fine-tunes and for "
            "pretraining (a Llama-shaped model of the compute-optimal size, advisor.decide.costing.pretraining_arch), until "
            "`advisor calibrate` fits it from your runs")


def assumption_lines(s: Situation, calibration_path: Path | str | None) -> list[str]:
    """What the recommendation takes for granted, each with the constant it comes from."""
    lines = []
    if s.api_sufficient:
        lines.append("Assumed: an off-the-shelf model meets your bar — say --api-insufficient if it doesn't.")
    if s.deadline_days is None:
        lines.append(f"Assumed: training must finish within {ASSUMED_DEADLINE_DAYS:g} days of wall-clock — say "
                     "--deadline (e.g. 7d, 36h) to set yours.")
    lines += [
        f"Usage: {human(s.requests_per_day)} requests/day x {human(s.tokens_per_request)} tokens "
        "(--requests-per-day, --tokens-per-request); the budget bounds one-off training, not monthly bills.",
        f"Fine-tuning: {s.base_model}, sequence length {s.seq_len}, micro-batch 1, gradient checkpointing only where "
        f"the peak without it exceeds {AUTO_CHECKPOINTING_MAX_SHARE:.0%} of the GPU, "
        f"LoRA r={_COSTED['lora_rank']} on all linear layers, {OPTIMIZER_LABELS[_COSTED['optimizer']]}, {s.epochs:g} "
        f"epoch(s) over the effective tokens; sharding DDP or FSDP as advisor.plan.sizing.choose_sharding decides; GPU "
        f"counts are powers of 2 up to your {s.gpus}, wall days = GPU-hours / (GPUs x {s.availability:.0%} "
        "availability) / 24; step times include the communication the step-time model prices.",
        f"GPU-hours = FLOPs / (dense bf16 peak x efficiency); efficiency {efficiency_text(calibration_path)}.",
        f"GPU price ${gpu_price(s):.2f}/GPU-hour ({s.gpu}); API prices as dated in the catalog.",
        f"API requests bill {1 - s.output_fraction:.0%} of their tokens as input, {s.output_fraction:.0%} as output; "
        f"self-hosting serves prompt tokens at {PREFILL_EFFICIENCY:.0%} and output tokens at {DECODE_EFFICIENCY:.0%} of "
        f"peak (2 FLOPs per active parameter per token), replicas sized for a peak {s.peak_to_average:g}x the "
        "day's average (--peak-factor).",
        f"Serving: every option carries the serving of the model it produces: bf16 weights where they fit, else FP8 "
        f"({SERVING_WEIGHT_BYTES['fp8']:g} byte/weight) or INT4 ({SERVING_WEIGHT_BYTES['int4']:.2f}) where the GPU "
        f"serves them (vLLM), quantised serving assumed no faster than bf16; + {SERVING_KV_CACHE_SHARE:.0%} of the "
        f"bf16 size per replica for the KV cache; tensor-parallel up to {SERVING_MAX_TENSOR_PARALLEL} within a node, "
        "pipeline stages beyond it. "
        + ("On premises the serving must fit your GPUs." if s.on_prem else
           "Serving GPUs are rented at the GPU price (--monthly-budget bounds the monthly bill)."),
    ]
    return lines


def plan_text(o: Option) -> str:
    if o.gpu is None or not o.gpus:
        return f"${o.cost_usd:,.0f}/month"
    if o.tier == "api":
        return f"on {o.gpus} x {o.gpu}, ${o.cost_usd:,.0f}/month"
    days = days_text(o.wall_days) if o.wall_days is not None else "n/a"
    return f"on {o.gpus} x {o.gpu}: {o.gpu_hours:,.0f} GPU-hours, ${o.cost_usd:,.0f}, {days}"


TIER_LABELS = {"api": "an off-the-shelf plan", "peft": "a PEFT plan", "full": "full fine-tuning",
               "pretrain": "pretraining from scratch"}


def skipped_tiers(chosen: Option, preference: tuple, options: dict[str, Option]) -> list[str]:
    """Why each tier the hierarchy preferred to the chosen one was passed over: its nearest option's broken
    constraints (advisor.decide.choose.option_rank), with their numbers."""
    out = []
    for tier in preference:
        if tier == chosen.tier:
            break
        candidates = [o for o in options.values() if o.tier == tier]
        if not candidates:
            out.append(f"no {tier} plan is viable")
            continue
        best = min(candidates, key=option_rank)
        broken = "; ".join(v.detail for v in best.why_not)
        out.append(f"{TIER_LABELS[tier]} is not viable" + (f" ({broken})" if broken else ""))
    return out


def finding_trade(s: Situation, chosen: Option, options: dict[str, Option]) -> str:
    """When a constraint forces a PEFT plan where the task-kind finding argues for full fine-tuning (a new language;
    domain adaptation from FULL_FINETUNE_MIN_TOKENS), the trade in words: what full fine-tuning would need."""
    wants_full = s.task == "language" or (s.task == "domain" and s.effective_tokens >= FULL_FINETUNE_MIN_TOKENS)
    full = options.get("full")
    if not wants_full or chosen.method not in ("lora", "qlora") or full is None or full.viable:
        return ""
    kind = "a new language usually needs" if s.task == "language" else "domain adaptation at this scale favours"
    needs = []
    for v in full.why_not:
        if v.constraint == "deadline" and full.wall_days is not None:
            needs.append(f"allow {days_text(full.wall_days)}")
        elif v.constraint == "budget" and v.needed is not None:
            needs.append(f"a budget of ${v.needed:,.0f}")
        elif v.constraint == "gpus" and v.needed is not None:
            needs.append(f"{v.needed:.0f} GPUs")
        elif v.constraint in ("serving", "monthly_budget"):
            needs.append(v.detail)
    fix = " and ".join(needs) if needs else "change what it breaks"
    return (f"{kind} full fine-tuning (task_kind): {fix} to fully fine-tune, or accept that "
            f"{METHOD_LABELS[chosen.method]} learns less (Biderman et al. 2024)")


def decision_sentence(s: Situation, chosen: Option, reason: str, first_tier: str,
                      options: dict[str, Option] | None = None, alternatives: int = 0,
                      preference: tuple = ()) -> str:
    """The decision in one sentence, with the reasons the inputs gave (and the constraint broken when nothing fits)."""
    if not chosen.viable:
        broken = "; ".join(v.detail for v in chosen.why_not)
        then = (f"{alternatives} plan(s) that would fit are listed, each changing one thing." if alternatives else
                "No single change tried (fewer tokens, a smaller base model, more GPUs, more time or money"
                + ("" if s.on_prem else ", another GPU type") + ") makes a plan fit.")
        return (f"Nothing fits your constraints. The nearest plan, {chosen.method} on {chosen.model} "
                f"({plan_text(chosen)}), breaks: {broken}. {then}")
    if chosen.method == "prompt+retrieval":
        text = (f"Use an off-the-shelf model: the hosted API ({s.api}) with prompting and retrieval, no training "
                f"({plan_text(chosen)})")
        host = (options or {}).get("self_host")
        if host is None or host.cost_usd >= chosen.cost_usd:
            why = ["it is cheaper than self-hosting at this volume"]
        else:
            why = [f"self-hosting would be cheaper (${host.cost_usd:,.0f}/month) but is not viable: {host.note}"]
    elif chosen.method == "self-host+retrieval":
        text = (f"Use an off-the-shelf model: self-host {chosen.model} with retrieval, no training "
                f"({plan_text(chosen)})")
        api = (options or {}).get("api")
        if s.on_prem:
            why = ["data must stay on premises"]
        elif api is not None and not api.viable:
            why = [f"the hosted API is not viable: {api.why_not[0].detail}"]
        else:
            why = ["self-hosting is cheaper than the API at this volume"]
    else:
        verb = {"lora": "Fine-tune with LoRA", "qlora": "Fine-tune with QLoRA", "full": "Fully fine-tune",
                "pretrain": "Pretrain"}[chosen.method]
        what = (s.base_model if chosen.method != "pretrain" else
                f"a {human(chosen.params)}-parameter model on {human(chosen.tokens)} tokens")
        text = f"{verb} {what} {plan_text(chosen)}"
        why = [reason or "no off-the-shelf plan fits your constraints"]
    if chosen.tier != first_tier:
        why += skipped_tiers(chosen, preference or (first_tier,), options or {})
        trade = finding_trade(s, chosen, options or {})
        if trade:
            why.append(trade)
    if chosen.tier == "api" and s.api_sufficient:
        why.append("assumed to meet your bar (say --api-insufficient if it doesn't)")
    if s.task == "knowledge" and chosen.tier != "api":
        why.append("keep retrieval for the facts; the fine-tune is for behaviour")
    return f"{text}, because " + ", ".join(why) + "."


def method_sentence(s: Situation, options: dict[str, Option], method: MethodChoice) -> str:
    """LoRA vs QLoRA vs full: memory fit on the GPUs you have, cost and wall time, quality caveats; and which one a
    training plan would use (`method.training`, the choice itself), with why in computed terms."""
    pick, cheapest = method.training, method.cheapest_viable_training
    parts = []
    for o in (options[k] for k in TRAINING_KEYS):
        fit = (f"{o.gpus} x {o.gpu} at {o.memory_gib_per_gpu:.1f} GiB each, {plan_text(o).split(': ', 1)[-1]}"
               if o.memory_gib_per_gpu is not None else "does not fit")
        parts.append(f"{METHOD_LABELS[o.method]}: {fit}" + ("" if o.viable else f" (not viable: {o.note})"))
    caveats = (f"QLoRA's 4-bit base saves memory at some speed and matched 16-bit LoRA in Dettmers et al. 2023; "
               f"LoRA learns less than full fine-tuning in continued pretraining from ~{human(FULL_FINETUNE_MIN_TOKENS)} "
               "tokens (Biderman et al. 2024), full fine-tuning needs the optimizer state of every weight.")
    lead = ("No training is chosen; if you train, " if method.option.method not in METHOD_LABELS else "")
    if not pick.viable:
        why = "none is viable; the nearest is shown"
    elif cheapest is None or cheapest is pick:
        why = "the cheapest viable one"
    else:
        why = (f"the {pick.tier} tier's choice; {METHOD_LABELS[cheapest.method]} would cost "
               f"${cheapest.cost_usd:,.0f} against ${pick.cost_usd:,.0f}")
    return f"{lead}{METHOD_LABELS[pick.method]} ({why}). " + "; ".join(parts) + ". " + caveats


def tier_finding(tier: TierChoice) -> Finding:
    return Finding(rule="tier_choice", finding=f"Hierarchy tried in the order {' -> '.join(tier.preference)}"
                   + (f" ({tier.reason})" if tier.reason else " (no input gives a reason to train)")
                   + f"; chosen: {tier.tier}" + ("" if tier.viable else ", though nothing is viable") + ".",
                   source="advisor.decide.choose.tier_preference (docs/decision.md)",
                   numbers={"tier": tier.tier, "order": " ".join(tier.preference),
                            "pretrain_beats_base": tier.pretrain_beats_base, "self_host_cheaper": tier.self_host_cheaper})


def method_finding(d: Decision) -> Finding:
    chosen = d.chosen
    return Finding(rule="method_choice", finding=method_sentence(d.situation, d.options, d.method),
                   source="advisor.decide.choose.choose_method; memory and costs per docs/estimation.md; quality: Hu "
                          "et al. 2021 (LoRA), Dettmers et al. 2023 (QLoRA) §5, Biderman et al. 2024 §4",
                   numbers={"method": chosen.method, "viable": chosen.viable, "cost_usd": chosen.cost_usd,
                            "training_method": d.method.training.method})

def explain(d: Decision) -> Recommendation:
    """The decision in words: the rules' findings, then the hardware fit, the pretraining alternative where it
    applies, the method and tier choices, the proposal set against the decision, and the decision sentence."""
    s, options, chosen = d.situation, d.options, d.chosen
    reasons = list(d.rules) + [hardware_finding(s, options)]
    if d.tier.preference[0] == "pretrain" and (not options["pretrain"].viable or s.task in NOT_LIKE_FOR_LIKE):
        reasons.append(pretraining_alternative(s, options))
    reasons += [method_finding(d), tier_finding(d.tier)]
    if d.review:
        reasons.append(proposal_finding(d.review, chosen))
    reasons.append(Finding(rule="decision", finding=decision_sentence(s, chosen, d.tier.reason, d.tier.preference[0],
                                                                     options, len(d.alternatives), d.tier.preference),
                           source="hierarchy: off-the-shelf (API or self-hosted), PEFT, full, pretrain; constraints "
                                  "are hard",
                           numbers={"tier": d.tier.tier, "method": chosen.method, "viable": chosen.viable}))
    return Recommendation(
        tier=d.tier.tier, method=chosen.method, effective_tokens=s.effective_tokens,
        compute_optimal_params=d.sizing.compute_optimal_params,
        break_even_requests_per_day=d.usage.break_even_requests_per_day, options=rank_options(chosen, options),
        reasons=reasons, situation=s, assumptions=assumption_lines(s, d.calibration_path),
        calibration=d.calibration_path, viable=chosen.viable, deadline_days=d.deadline_days,
        deadline_assumed=d.deadline_assumed, break_even_ranges=list(d.usage.ranges), nearest_viable=d.alternatives,
        review=d.review, compute_optimal_fit=HEADLINE_FIT,
        compute_optimal_alternatives={"epoch2024": d.sizing.epoch2024_params,
                                      "hoffmann2022": d.sizing.hoffmann2022_params},
    )


def recommend(s: Situation, calibration: Calibration | None = None, proposal: Proposal | None = None) -> Recommendation:
    """The decision (advisor.decide.choose.decide) in words: what `advisor recommend` prints and its JSON."""
    return explain(decide(s, calibration, proposal))


def hardware_finding(s: Situation, options: dict[str, Option]) -> Finding:
    parts = []
    for key in TRAINING_KEYS + ("pretrain",):
        o = options[key]
        parts.append(f"{key}: {o.gpus} x {o.gpu} at {o.memory_gib_per_gpu:.1f} GiB each, {o.wall_days:.1f} days"
                     if o.memory_gib_per_gpu and o.wall_days is not None else f"{key}: does not fit")
    return Finding(rule="hardware_fit", finding=f"On {s.gpus} x {s.gpu} ({s.availability:.0%} available), each plan on "
                   "the GPU count that meets the deadline at least cost: " + "; ".join(parts) + ".",
                   source="advisor.plan.sizing.choose_gpu_count; advisor.formulas.memory.memory_per_gpu (see docs/estimation.md)",
                   numbers={f"{k}_gpus": options[k].gpus for k in TRAINING_KEYS + ("pretrain",)})


def proposal_finding(review: Review, chosen: Option) -> Finding:
    """The proposal set against the decision, so the report's two halves read as one argument."""
    p = review.proposal
    cost = f"${review.proposed_cost_usd:,.0f}" if review.proposed_cost_usd else "an unstated cost"
    ours = (f"${chosen.cost_usd:,.0f}/month, no training" if chosen.tier == "api" else
            f"${chosen.cost_usd:,.0f} one-off ({chosen.method})")
    same = chosen.method == p.method and chosen.tier != "api"
    return Finding(rule="proposal_vs_decision",
                   finding=f"The proposal ({p.method} fine-tune of {review.model} on {p.gpus} x {p.gpu}, {cost}) "
                           + ("is the decision's method; " if same else "differs from the decision; ")
                           + f"the decision costs {ours}" + ("" if chosen.viable else " and breaks a constraint") + ".",
                   source="advisor.decide.review.review_proposal; advisor.decide.choose.recommend",
                   numbers={"proposed_cost_usd": review.proposed_cost_usd, "decision_cost_usd": chosen.cost_usd})


# Task kinds whose data is not the base's kind of text: "beats the base" compares the base's predicted loss on its own
# corpus with a loss on yours, which is not like for like.
NOT_LIKE_FOR_LIKE = ("language", "domain")


def pretraining_alternative(s: Situation, options: dict[str, Option]) -> Finding:
    """When pretraining from scratch is not viable, or its comparison with the base is not like for like (a new
    language or domain): continued pretraining (a full fine-tune of the base on the same tokens) and LoRA, costed."""
    full, lora = options["full"], options["lora"]
    why = "; ".join(v.detail for v in options["pretrain"].why_not)
    lead = (f"Pretraining from scratch is not viable ({why})." if not options["pretrain"].viable else
            f"Pretraining from scratch is predicted to beat {s.base_model}, but the prediction compares the base's "
            f"loss on its own corpus with a loss on your {s.task} data: not like for like, so treat it as indicative.")
    return Finding(rule="pretraining_alternative",
                   finding=f"{lead} Instead continue pretraining {s.base_model} "
                           f"on your tokens (a full fine-tune) {plan_text(full)}" + ("" if full.viable else " (not viable)")
                           + f", or adapt it with LoRA {plan_text(lora)}" + ("" if lora.viable else " (not viable)") + ".",
                   source="Hoffmann et al. 2022 eq. 2; Biderman et al. 2024 §4 (continued pretraining, full vs LoRA)",
                   numbers={"full_cost_usd": full.cost_usd, "lora_cost_usd": lora.cost_usd})
