"""The decision engine: an off-the-shelf model first (hosted API, or an open-weight model self-hosted, with
retrieval), then PEFT (LoRA/QLoRA), then full fine-tune, then pretrain — within the user's budget, GPUs and deadline.

The rules (advisor.decide.findings) and the costs (advisor.decide.costing) compute; the choices below decide, each a named
function that returns its choice with the finding that explains it. `recommend` runs them in order and returns a
typed Recommendation. Constraints are hard (advisor.decide.constraints): the chosen option is viable whenever one is.
Text for people is built in advisor.render.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from msgspec import Struct

from advisor.decide.constraints import deadline_days, distance
from advisor.decide.costing import TRAINING_KEYS, Option, UsageBreakEven, cost_options, rule_usage_break_even
from advisor.decide.findings import (
    FULL_FINETUNE_MIN_TOKENS, HEADLINE_FIT, Finding, PretrainingViability, rule_api_quality, rule_compute_optimal_size, rule_inference_aware, rule_pretraining_viability, rule_privacy, rule_repeated_data, rule_task_kind,
)
from advisor.render.text import assumption_lines, decision_sentence, method_sentence, plan_text
from advisor.decide.situation import TIERS, Situation, Tier

if TYPE_CHECKING:  # annotations only: imported where used, so `advisor recommend` does not load them
    from advisor.decide.alternatives import Alternative
    from advisor.plan.calibration import Calibration
    from advisor.decide.review import Proposal, Review


class Recommendation(Struct, frozen=True, kw_only=True):
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


# --- the choices -------------------------------------------------------------------------------------

class TierChoice(Struct, frozen=True):
    tier: Tier
    finding: Finding
    preference: tuple[Tier, ...] = TIERS
    reason: str = ""


def tier_preference(s: Situation) -> tuple[tuple[Tier, ...], str]:
    """The order the hierarchy tries the tiers in, and the reason the inputs give for leaving the first tier.

    Training needs a reason: an off-the-shelf model that does not meet the bar (--api-insufficient) or a task kind
    that needs it (a new language or modality). Then PEFT, or full fine-tuning first for domain adaptation and new
    languages from FULL_FINETUNE_MIN_TOKENS, and pretraining first for a new language (it must still beat the base).
    Every tier stays in the order, so a viable plan is found whenever one exists."""
    if s.task == "language":
        return ("pretrain", "full", "peft", "api"), "a new language or modality needs training"
    if s.api_sufficient:
        return ("api", "peft", "full", "pretrain"), ""
    reason = "you said an off-the-shelf model does not meet your bar"
    if s.task == "domain" and s.effective_tokens >= FULL_FINETUNE_MIN_TOKENS:
        return ("full", "peft", "pretrain", "api"), reason
    return ("peft", "full", "pretrain", "api"), reason


def choose_tier(s: Situation, usage: UsageBreakEven, pretrain: PretrainingViability,
                options: dict[str, Option]) -> TierChoice:
    """The first tier in `tier_preference` with a viable option; when none has one, the tier of the nearest option
    (advisor.decide.constraints.distance: relaxable constraints only, then the fewest broken; ties: the preferred tier)."""
    order, reason = tier_preference(s)
    by_tier = {t: [o for o in options.values() if o.tier == t] for t in TIERS}
    tier = next((t for t in order if any(o.viable for o in by_tier[t])), None)
    if tier is None:
        tier = min(order, key=lambda t: (min(distance(o.why_not) for o in by_tier[t]), order.index(t)))
    finding = Finding(rule="tier_choice", finding=f"Hierarchy tried in the order {' -> '.join(order)}"
                      + (f" ({reason})" if reason else " (no input gives a reason to train)")
                      + f"; chosen: {tier}" + ("" if any(o.viable for o in by_tier[tier]) else ", though nothing is viable") + ".",
                      source="advisor.decide.choose.tier_preference (docs/decision.md)",
                      numbers={"tier": tier, "order": " ".join(order), "pretrain_beats_base": pretrain.viable,
                               "self_host_cheaper": usage.self_host_cheaper})
    return TierChoice(tier, finding, order, reason)


class MethodChoice(Struct, frozen=True):
    option: Option
    finding: Finding


def choose_method(tier: Tier, options: dict[str, Option], s: Situation | None = None) -> MethodChoice:
    """The option that carries out the tier: viable before not viable, then the nearer (constraints.distance), then
    the cheaper. Off-the-shelf: hosted API or self-hosted open-weight model (cheaper per month at your volume; the API is
    not viable on premises). PEFT: LoRA or QLoRA (QLoRA's NF4 base needs less memory, LoRA's 16-bit base runs faster
    per FLOP: advisor.formulas.flops.DEFAULT_EFFICIENCY). The finding compares LoRA, QLoRA and full fine-tuning."""
    candidates = [o for o in options.values() if o.tier == tier]
    chosen = min(candidates, key=lambda o: (not o.viable, distance(o.why_not), o.cost_usd))
    finding = Finding(rule="method_choice", finding=method_sentence(s, options, chosen) if s else
                      f"{tier} tier: {chosen.method} on {chosen.model}.",
                      source="advisor.decide.choose.choose_method; memory and costs per docs/estimation.md; quality: Hu et al. "
                             "2021 (LoRA), Dettmers et al. 2023 (QLoRA) §5, Biderman et al. 2024 §4",
                      numbers={"method": chosen.method, "viable": chosen.viable, "cost_usd": chosen.cost_usd})
    return MethodChoice(chosen, finding)


def rank_options(chosen: Option, options: dict[str, Option]) -> list[Option]:
    """The chosen option first, then the others in the order of the hierarchy (viable first within a tier, cheaper
    first)."""
    rest = [o for o in options.values() if o is not chosen]
    return [chosen] + sorted(rest, key=lambda o: (o.tier != chosen.tier, not o.viable, TIERS.index(o.tier), o.cost_usd))


def recommend(s: Situation, calibration: Calibration | None = None, proposal: Proposal | None = None) -> Recommendation:
    """Run every rule, cost every option on the user's cluster and pick the tier and method. Pure: same situation,
    same answer."""
    sizing = rule_compute_optimal_size(s)
    pretrain = rule_pretraining_viability(s)
    usage = rule_usage_break_even(s)
    reasons = [sizing.finding, pretrain.finding, rule_repeated_data(s), rule_inference_aware(s), rule_privacy(s),
               rule_api_quality(s), rule_task_kind(s), usage.finding]
    options = cost_options(s, calibration)
    tier = choose_tier(s, usage, pretrain, options)
    method = choose_method(tier.tier, options, s)
    chosen = method.option
    alternatives: list[Alternative] = []
    preferred_keys = [k for k, o in options.items() if o.tier == tier.preference[0]]
    if not chosen.viable or tier.tier != tier.preference[0]:
        from advisor.decide.alternatives import nearest_viable  # only when a constraint is broken or the tier is not the first
        keys = list(TRAINING_KEYS) + ["self_host"] if not chosen.viable else preferred_keys
        alternatives = nearest_viable(s, options, keys, calibration)
    review = None
    if proposal is not None:  # only then: the review module stays off the plain `recommend` path
        from advisor.decide.review import review_proposal
        review = review_proposal(proposal, calibration)
    decision = Finding(rule="decision", finding=decision_sentence(s, chosen, tier.reason, tier.preference[0], options,
                                                 len(alternatives)),
                       source="hierarchy: off-the-shelf (API or self-hosted), PEFT, full, pretrain; constraints are hard",
                       numbers={"tier": tier.tier, "method": chosen.method, "viable": chosen.viable})
    reasons.append(hardware_finding(s, options))
    if tier.preference[0] == "pretrain" and not options["pretrain"].viable:
        reasons.append(pretraining_alternative(s, options))
    reasons += [method.finding, tier.finding]
    if review:
        reasons.append(proposal_finding(review, chosen))
    reasons.append(decision)
    days, assumed = deadline_days(s)
    return Recommendation(
        tier=tier.tier, method=chosen.method, effective_tokens=s.effective_tokens,
        compute_optimal_params=sizing.compute_optimal_params,
        break_even_requests_per_day=usage.break_even_requests_per_day, options=rank_options(chosen, options),
        reasons=reasons, situation=s, assumptions=assumption_lines(s, calibration.path if calibration else None),
        calibration=str(calibration.path) if calibration else None, viable=chosen.viable, deadline_days=days,
        deadline_assumed=assumed, break_even_ranges=list(usage.ranges), nearest_viable=alternatives, review=review,
        compute_optimal_fit=HEADLINE_FIT,
        compute_optimal_alternatives={"epoch2024": sizing.epoch2024_params, "hoffmann2022": sizing.hoffmann2022_params},
    )


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


def pretraining_alternative(s: Situation, options: dict[str, Option]) -> Finding:
    """When pretraining from scratch is not viable: continued pretraining (a full fine-tune of the base on the same
    tokens) and LoRA, costed."""
    full, lora = options["full"], options["lora"]
    why = "; ".join(v.detail for v in options["pretrain"].why_not)
    return Finding(rule="pretraining_alternative",
                   finding=f"Pretraining from scratch is not viable ({why}). Instead continue pretraining {s.base_model} "
                           f"on your tokens (a full fine-tune) {plan_text(full)}" + ("" if full.viable else " (not viable)")
                           + f", or adapt it with LoRA {plan_text(lora)}" + ("" if lora.viable else " (not viable)") + ".",
                   source="Hoffmann et al. 2022 eq. 2; Biderman et al. 2024 §4 (continued pretraining, full vs LoRA)",
                   numbers={"full_cost_usd": full.cost_usd, "lora_cost_usd": lora.cost_usd})
