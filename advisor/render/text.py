"""Sentences the decision carries in its JSON too (assumptions, the decision, the method), built from the formulas'
own constants."""

from pathlib import Path

from advisor.decide.constraints import ASSUMED_DEADLINE_DAYS, days_text
from advisor.decide.costing import DECODE_EFFICIENCY, PREFILL_EFFICIENCY, SERVING_KV_CACHE_SHARE, Option, gpu_price
from advisor.decide.findings import FULL_FINETUNE_MIN_TOKENS
from advisor.formulas.step_time import DEFAULT_STEP_TIME
from advisor.core.numbers import human
from advisor.decide.situation import Situation
from advisor.plan.sizing import AUTO_CHECKPOINTING_MAX_SHARE

METHOD_LABELS = {"full": "full", "lora": "LoRA", "qlora": "QLoRA"}


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
        f"LoRA r=16 on all linear layers, AdamW, {s.epochs:g} epoch(s) over the effective tokens; GPU counts are "
        f"powers of 2 up to your {s.gpus}, wall days = GPU-hours / (GPUs x {s.availability:.0%} availability) / 24, "
        "no communication overhead.",
        f"GPU-hours = FLOPs / (dense bf16 peak x efficiency); efficiency {efficiency_text(calibration_path)}.",
        f"GPU price ${gpu_price(s):.2f}/GPU-hour ({s.gpu}); API prices as dated in the catalog.",
        f"API requests bill {1 - s.output_fraction:.0%} of their tokens as input, {s.output_fraction:.0%} as output; "
        f"self-hosting serves prompt tokens at {PREFILL_EFFICIENCY:.0%} and output tokens at {DECODE_EFFICIENCY:.0%} of "
        f"peak, bf16 weights + {SERVING_KV_CACHE_SHARE:.0%} for the KV cache per replica.",
    ]
    return lines


def plan_text(o: Option) -> str:
    if o.gpu is None or not o.gpus:
        return f"${o.cost_usd:,.0f}/month"
    if o.tier == "api":
        return f"on {o.gpus} x {o.gpu}, ${o.cost_usd:,.0f}/month"
    days = days_text(o.wall_days) if o.wall_days is not None else "n/a"
    return f"on {o.gpus} x {o.gpu}: {o.gpu_hours:,.0f} GPU-hours, ${o.cost_usd:,.0f}, {days}"


def decision_sentence(s: Situation, chosen: Option, reason: str, first_tier: str,
                      options: dict[str, Option] | None = None, alternatives: int = 0) -> str:
    """The decision in one sentence, with the reasons the inputs gave (and the constraint broken when nothing fits)."""
    if not chosen.viable:
        broken = "; ".join(v.detail for v in chosen.why_not)
        then = (f"{alternatives} plan(s) that would fit are listed, each changing one thing." if alternatives else
                "No single change tried (fewer tokens, another GPU type, more GPUs, more time or money) makes a plan fit.")
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
        why = ["data must stay on premises"] if s.on_prem else ["self-hosting is cheaper than the API at this volume"]
    else:
        verb = {"lora": "Fine-tune with LoRA", "qlora": "Fine-tune with QLoRA", "full": "Fully fine-tune",
                "pretrain": "Pretrain"}[chosen.method]
        text = f"{verb} {s.base_model if chosen.method != 'pretrain' else 'a ' + chosen.model + ' model'} {plan_text(chosen)}"
        why = [reason or "no off-the-shelf plan fits your constraints"]
    if chosen.tier != first_tier:
        why.append(f"no {first_tier} plan is viable" + (f" ({reason})" if reason and chosen.tier == "api" else ""))
    if chosen.tier == "api" and s.api_sufficient:
        why.append("assumed to meet your bar (say --api-insufficient if it doesn't)")
    if s.task == "knowledge" and chosen.tier != "api":
        why.append("keep retrieval for the facts; the fine-tune is for behaviour")
    return f"{text}, because " + ", ".join(why) + "."


def method_sentence(s: Situation, options: dict[str, Option], chosen: Option) -> str:
    """LoRA vs QLoRA vs full: memory fit on the GPUs you have, cost and wall time, quality caveats; and which one a
    training plan would use."""
    training = [options[k] for k in ("lora", "qlora", "full")]
    pick = chosen if chosen.method in METHOD_LABELS else min(
        (o for o in training if o.tier == "peft"), key=lambda o: (not o.viable, o.cost_usd))
    parts = []
    for o in training:
        fit = (f"{o.gpus} x {o.gpu} at {o.memory_gib_per_gpu:.1f} GiB each, {plan_text(o).split(': ', 1)[-1]}"
               if o.memory_gib_per_gpu is not None else "does not fit")
        parts.append(f"{METHOD_LABELS[o.method]}: {fit}" + ("" if o.viable else f" (not viable: {o.note})"))
    caveats = (f"QLoRA's 4-bit base saves memory at some speed and matched 16-bit LoRA in Dettmers et al. 2023; "
               f"LoRA learns less than full fine-tuning in continued pretraining from ~{human(FULL_FINETUNE_MIN_TOKENS)} "
               "tokens (Biderman et al. 2024), full fine-tuning needs the optimizer state of every weight.")
    lead = ("No training is chosen; if you train, " if chosen.method not in METHOD_LABELS else "")
    why = "the cheaper viable one" if pick.viable else "none is viable; the nearest is shown"
    return f"{lead}{METHOD_LABELS[pick.method]} ({why}). " + "; ".join(parts) + ". " + caveats
