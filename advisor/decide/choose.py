"""The decision engine: an off-the-shelf model first (hosted API, or an open-weight model self-hosted, with
retrieval), then PEFT (LoRA/QLoRA), then full fine-tune, then pretrain — within the user's budget, GPUs and deadline.

- The rules (advisor.decide.findings) and the costs (advisor.decide.costing) compute; the choices below decide, each
  a named function returning a typed choice.
- `decide` runs them in order and returns a `Decision`: data only. Its prose (the decision sentence, the method
  comparison, the assumptions) is built from these choices by advisor.render.decision_text, which this module never
  imports.
- Constraints are hard (advisor.decide.constraints): the chosen option is viable whenever one is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from msgspec import Struct

from advisor.decide.constraints import deadline_days, distance
from advisor.decide.costing import TRAINING_KEYS, Option, UsageBreakEven, cost_options, rule_usage_break_even
from advisor.decide.findings import (
    FULL_FINETUNE_MIN_TOKENS, ComputeOptimalSize, PretrainingViability, rule_api_quality,
    rule_compute_optimal_size, rule_inference_aware, rule_pretraining_viability, rule_privacy, rule_repeated_data,
    rule_task_kind,
)
from advisor.decide.situation import TIERS, Situation, Tier

if TYPE_CHECKING:  # annotations only: imported where used, so `advisor recommend` does not load them
    from advisor.decide.alternatives import Alternative
    from advisor.decide.review import Proposal, Review
    from advisor.plan.calibration import Calibration


# --- the choices -------------------------------------------------------------------------------------

class TierChoice(Struct, frozen=True):
    """The tier chosen, the order the hierarchy tried, the reason the inputs give for leaving the first tier, and the
    facts the choice rests on."""
    tier: Tier
    preference: tuple[Tier, ...] = TIERS
    reason: str = ""
    viable: bool = True             # the chosen tier has a viable option
    pretrain_beats_base: bool = False
    self_host_cheaper: bool = False


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
    tier: Tier | None = next((t for t in order if any(o.viable for o in by_tier[t])), None)
    if tier is None:
        tier = min(order, key=lambda t: (min(distance(o.why_not) for o in by_tier[t]), order.index(t)))
    return TierChoice(tier, order, reason, any(o.viable for o in by_tier[tier]), pretrain.viable,
                      usage.self_host_cheaper)


def option_rank(o: Option) -> tuple:
    """How options of one tier are ranked, one key for every choice among them: viable before not viable, then the
    nearer (constraints.distance), then the cheaper."""
    return (not o.viable, distance(o.why_not), o.cost_usd)


class MethodChoice(Struct, frozen=True):
    """The option that carries out the tier, and the fine-tune a training plan would use: the chosen option when it
    trains, else the best PEFT option by the same ranking (`option_rank`)."""
    option: Option
    training: Option
    cheapest_viable_training: Option | None  # the cheapest viable of LoRA, QLoRA and full, if any


def choose_method(tier: Tier, options: dict[str, Option]) -> MethodChoice:
    """The option that carries out the tier (`option_rank`). Off-the-shelf: hosted API or self-hosted open-weight
    model (cheaper per month at your volume; the API is not viable on premises). PEFT: LoRA or QLoRA (QLoRA's NF4 base
    needs less memory, LoRA's 16-bit base runs faster per FLOP: advisor.formulas.flops.DEFAULT_EFFICIENCY)."""
    chosen = min((o for o in options.values() if o.tier == tier), key=option_rank)
    training = chosen if chosen.method in TRAINING_KEYS else min(
        (o for o in options.values() if o.tier == "peft"), key=option_rank)
    viable = [options[k] for k in TRAINING_KEYS if options[k].viable]
    return MethodChoice(chosen, training, min(viable, key=lambda o: o.cost_usd) if viable else None)


def rank_options(chosen: Option, options: dict[str, Option]) -> list[Option]:
    """The chosen option first, then the others in the order of the hierarchy (viable first within a tier, cheaper
    first)."""
    rest = [o for o in options.values() if o is not chosen]
    return [chosen] + sorted(rest, key=lambda o: (o.tier != chosen.tier, not o.viable, TIERS.index(o.tier), o.cost_usd))


class Decision(Struct, frozen=True):
    """Everything the decision found and chose, as data (advisor.render.decision_text words it)."""
    situation: Situation
    options: dict                   # option key -> Option
    tier: TierChoice
    method: MethodChoice
    rules: list                     # the rules' findings, in the order they ran
    sizing: ComputeOptimalSize
    usage: UsageBreakEven
    alternatives: list              # Alternative: the nearest viable plans, when a constraint breaks
    review: Review | None
    calibration_path: str | None
    deadline_days: float
    deadline_assumed: bool

    @property
    def chosen(self) -> Option:
        return self.method.option


def decide(s: Situation, calibration: Calibration | None = None, proposal: Proposal | None = None) -> Decision:
    """Run every rule, cost every option on the user's cluster and pick the tier and method. Pure: same situation,
    same answer."""
    sizing = rule_compute_optimal_size(s)
    pretrain = rule_pretraining_viability(s)
    usage = rule_usage_break_even(s)
    rules = [sizing.finding, pretrain.finding, rule_repeated_data(s), rule_inference_aware(s), rule_privacy(s),
             rule_api_quality(s), rule_task_kind(s), usage.finding]
    options = cost_options(s, calibration)
    tier = choose_tier(s, usage, pretrain, options)
    method = choose_method(tier.tier, options)
    chosen = method.option
    alternatives: list[Alternative] = []
    if not chosen.viable or tier.tier != tier.preference[0]:
        from advisor.decide.alternatives import nearest_viable  # only when a constraint is broken or the tier is not the first
        preferred_keys = [k for k, o in options.items() if o.tier == tier.preference[0]]
        keys = list(TRAINING_KEYS) + ["self_host"] if not chosen.viable else preferred_keys
        alternatives = nearest_viable(s, options, keys, calibration)
    review = None
    if proposal is not None:  # only then: the review module stays off the plain `recommend` path
        from advisor.decide.review import review_proposal
        review = review_proposal(proposal, calibration)
    days, assumed = deadline_days(s)
    return Decision(s, options, tier, method, rules, sizing, usage, alternatives, review,
                    str(calibration.path) if calibration else None, days, assumed)
