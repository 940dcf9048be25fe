"""The decision engine: API first, then PEFT (LoRA/QLoRA), then full fine-tune, then pretrain.

The rules (advisor.findings) and the costs (advisor.costing) compute; the choices below decide, each a named
function that returns its choice with the finding that explains it. `recommend` runs them in order and returns a
typed Recommendation. Text for people is built in advisor.render.
"""

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from advisor.calibration import Calibration
from advisor.costing import (
    Option, UsageBreakEven, cost_api, cost_finetune, cost_pretrain, rule_usage_break_even,
)
from advisor.findings import (
    FULL_FINETUNE_MIN_TOKENS, Finding, PretrainingViability, rule_api_quality, rule_compute_optimal_size,
    rule_inference_aware, rule_pretraining_viability, rule_privacy, rule_repeated_data, rule_task_kind,
)
from advisor.render.text import assumption_lines, decision_sentence
from advisor.situation import TIERS, Situation, Tier


class Recommendation(BaseModel):
    model_config = ConfigDict(frozen=True)
    tier: Tier
    method: str  # the chosen option's method (prompt+retrieval, lora, qlora, full, pretrain)
    effective_tokens: float
    compute_optimal_params: float
    break_even_requests_per_day: float | None
    options: list[Option]  # the chosen option first, then the rest in the order of the hierarchy
    reasons: list[Finding]
    situation: Situation
    assumptions: list[str]
    calibration: str | None = None


# --- the choices -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TierChoice:
    tier: Tier
    finding: Finding


def choose_tier(s: Situation, usage: UsageBreakEven, pretrain: PretrainingViability,
                options: dict[str, Option]) -> TierChoice:
    """Walk the hierarchy: API, then PEFT, then full fine-tune, then pretrain; each step needs a reason."""
    api_ok = not s.on_prem and s.api_sufficient
    if api_ok and not usage.self_host_cheaper:
        tier: Tier = "api"
    elif s.task == "language" and pretrain.viable and options["pretrain"].viable:
        tier = "pretrain"
    elif s.task in ("domain", "language") and s.effective_tokens >= FULL_FINETUNE_MIN_TOKENS and options["full"].viable:
        tier = "full"
    else:
        tier = "peft"
    finding = Finding(rule="decision", finding=decision_sentence(s, tier, usage.self_host_cheaper),
                      source="hierarchy: API, PEFT, full, pretrain", numbers={"tier": tier})
    return TierChoice(tier, finding)


@dataclass(frozen=True)
class MethodChoice:
    option: Option
    finding: Finding


def choose_method(tier: Tier, options: dict[str, Option]) -> MethodChoice:
    """The option that carries out the tier: for PEFT, LoRA or QLoRA — a viable one (it fits the GPUs you have and
    the budget) before one that is not, then the cheaper (QLoRA's NF4 base needs less memory, LoRA's 16-bit base runs
    faster per FLOP: advisor.flops.DEFAULT_EFFICIENCY); the other tiers have one option each."""
    candidates = [o for o in options.values() if o.tier == tier]
    chosen = min(candidates, key=lambda o: (not o.viable, o.cost_usd))
    if tier == "peft":
        parts = []
        for o in candidates:
            fit = (f"{o.gpus} x {o.gpu} at {o.memory_gib_per_gpu:.1f} GiB each" if o.memory_gib_per_gpu is not None
                   else "does not fit")
            parts.append(f"{o.method}: {fit}, ${o.cost_usd:,.0f}" + ("" if o.viable else f" (not viable: {o.note})"))
        why = "the cheaper viable one" if chosen.viable else "none is viable; the cheaper one is shown"
        text = f"PEFT method: {chosen.method} ({why}). " + "; ".join(parts) + "."
    else:
        text = f"{tier} tier: {chosen.method} on {chosen.model}."
    finding = Finding(rule="method_choice", finding=text, source="advisor.decide.choose_method; costs per docs/estimation.md",
                      numbers={"method": chosen.method, "viable": chosen.viable, "cost_usd": chosen.cost_usd})
    return MethodChoice(chosen, finding)


def rank_options(chosen: Option, options: dict[str, Option]) -> list[Option]:
    """The chosen option first, then the others in the order of the hierarchy (viable first within a tier, cheaper
    first)."""
    rest = [o for o in options.values() if o is not chosen]
    return [chosen] + sorted(rest, key=lambda o: (o.tier != chosen.tier, not o.viable, TIERS.index(o.tier), o.cost_usd))


def recommend(s: Situation, calibration: Calibration | None = None) -> Recommendation:
    """Run every rule, cost every option and pick the tier and method. Pure: same situation, same answer."""
    sizing = rule_compute_optimal_size(s)
    pretrain = rule_pretraining_viability(s)
    usage = rule_usage_break_even(s)
    reasons = [sizing.finding, pretrain.finding, rule_repeated_data(s), rule_inference_aware(s), rule_privacy(s),
               rule_api_quality(s), rule_task_kind(s), usage.finding]
    options = {"api": cost_api(s), "lora": cost_finetune(s, "lora", calibration),
               "qlora": cost_finetune(s, "qlora", calibration), "full": cost_finetune(s, "full", calibration),
               "pretrain": cost_pretrain(s, calibration)}
    options["pretrain"] = options["pretrain"].model_copy(update={
        "viable": pretrain.viable, "note": "" if pretrain.viable else "not viable: too little data for a competitive model"})
    tier = choose_tier(s, usage, pretrain, options)
    method = choose_method(tier.tier, options)
    reasons += [hardware_finding(s, options), method.finding, tier.finding]
    return Recommendation(
        tier=tier.tier, method=method.option.method, effective_tokens=s.effective_tokens,
        compute_optimal_params=sizing.compute_optimal_params,
        break_even_requests_per_day=usage.break_even_requests_per_day, options=rank_options(method.option, options),
        reasons=reasons, situation=s, assumptions=assumption_lines(s, calibration.path if calibration else None),
        calibration=str(calibration.path) if calibration else None,
    )


def hardware_finding(s: Situation, options: dict[str, Option]) -> Finding:
    parts = []
    for key in ("lora", "qlora", "full"):
        o = options[key]
        parts.append(f"{key}: {o.gpus} x {o.gpu} at {o.memory_gib_per_gpu:.1f} GiB each" if o.memory_gib_per_gpu
                     else f"{key}: does not fit")
    return Finding(rule="hardware_fit", finding=f"On {s.gpus} x {s.gpu} ({s.availability:.0%} available): " + "; ".join(parts) + ".",
                   source="advisor.memory.memory_per_gpu (see docs/estimation.md)",
                   numbers={f"{k}_gpus": options[k].gpus for k in ("lora", "qlora", "full")})
