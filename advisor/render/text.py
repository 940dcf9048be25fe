"""Sentences the decision carries in its JSON too (assumptions, the decision), built from the formulas' own constants."""

from pathlib import Path

from advisor.costing import DECODE_EFFICIENCY, PREFILL_EFFICIENCY, gpu_price
from advisor.flops import DEFAULT_EFFICIENCY
from advisor.situation import Situation, Tier
from advisor.sizing import AUTO_CHECKPOINTING_MAX_SHARE

METHOD_LABELS = {"full": "full", "lora": "LoRA", "qlora": "QLoRA"}


def efficiency_text(calibration_path: Path | str | None) -> str:
    if calibration_path:
        return f"from calibration {calibration_path}"
    assumed = ", ".join(f"{METHOD_LABELS[m]} {DEFAULT_EFFICIENCY[m]:.2f}" for m in ("full", "lora", "qlora"))
    return f"assumed ({assumed}) until `advisor calibrate` fits it from your runs"


def assumption_lines(s: Situation, calibration_path: Path | str | None) -> list[str]:
    """What the recommendation takes for granted, each with the constant it comes from."""
    return [
        f"Fine-tuning: {s.base_model}, sequence length {s.seq_len}, micro-batch 1, gradient checkpointing only where "
        f"the peak without it exceeds {AUTO_CHECKPOINTING_MAX_SHARE:.0%} of the GPU, "
        f"LoRA r=16 on all linear layers, AdamW, {s.epochs:g} epoch(s) over the effective tokens.",
        f"GPU-hours = FLOPs / (dense bf16 peak x efficiency); efficiency {efficiency_text(calibration_path)}.",
        f"GPU price ${gpu_price(s):.2f}/GPU-hour ({s.gpu}); API prices as dated in the catalog.",
        f"API requests bill {1 - s.output_fraction:.0%} of their tokens as input, {s.output_fraction:.0%} as output; "
        f"self-hosting serves prompt tokens at {PREFILL_EFFICIENCY:.0%} and output tokens at {DECODE_EFFICIENCY:.0%} of peak.",
    ]


def decision_sentence(s: Situation, tier: Tier, self_host_cheaper: bool) -> str:
    """The decision in one sentence, with the reasons the inputs gave."""
    if tier == "api":
        return f"Use the API ({s.api}) with prompting and retrieval: it meets the bar and is cheaper at this volume."
    why = []
    if s.on_prem:
        why.append("data must stay on premises")
    if not s.api_sufficient:
        why.append("the API does not meet the quality bar")
    if self_host_cheaper:
        why.append("self-hosting is cheaper at this volume")
    return {"peft": "Fine-tune with LoRA/QLoRA", "full": "Fully fine-tune", "pretrain": "Pretrain"}[tier] + \
        f" {s.base_model if tier != 'pretrain' else 'a compute-optimal model'} because " + ", ".join(why or ["the task needs it"]) + "."
