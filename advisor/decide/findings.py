"""The decision's rules: each reads the situation, returns a typed result with the finding it shows and its source.

A rule computes; it decides nothing. The choices (tier, method, GPU count) are named functions in advisor.decide.choose
that read these results' fields.
"""

import math

from msgspec import Struct

from advisor.catalog import load as catalog
from advisor.formulas import scaling
from advisor.core.numbers import human
from advisor.formulas.params import param_counts
from advisor.decide.situation import Situation

# Domain adaptation and new languages need full fine-tuning once the data reaches about a billion tokens:
# LoRA learns less than full fine-tuning in continued pretraining at that scale (Biderman et al. 2024,
# "LoRA Learns Less and Forgets Less", §4: code and math CPT on 0.25-20B tokens).
FULL_FINETUNE_MIN_TOKENS = 1e9
# Epochs over scarce data that are still nearly as good as fresh data (Muennighoff et al. 2023: "up to 4 epochs
# yields negligible changes to loss compared to having unique data").
REPEAT_EPOCHS = 4
SERVING_YEARS = 2  # lifetime over which inference volume is counted for the inference-aware optimum


class Finding(Struct, frozen=True, kw_only=True):
    """One line of the reasoning, as the user reads it (and as --json gives it)."""

    rule: str
    finding: str
    source: str
    numbers: dict[str, float | int | str | bool | None] = {}


class ComputeOptimalSize(Struct, frozen=True):
    effective_tokens: float
    compute_optimal_params: float
    epoch2024_params: float
    training_flops: float
    finding: Finding
    hoffmann2022_params: float = 0.0


# The headline compute-optimal size reads Hoffmann et al. 2022's rule of ~20 tokens per parameter (Table 3): the
# simplest of the three and the one the pretraining option is costed with; the parametric fits are alternatives.
HEADLINE_FIT = "chinchilla-rule"


def rule_compute_optimal_size(s: Situation) -> ComputeOptimalSize:
    """How large a model the data can train compute-optimally from scratch: the headline (HEADLINE_FIT, ~20 tokens
    per parameter) and, labelled as alternatives, the Epoch 2024 and Hoffmann 2022 parametric fits."""
    point = scaling.compute_optimal_for_tokens(s.effective_tokens, HEADLINE_FIT)
    epoch = scaling.compute_optimal_for_tokens(s.effective_tokens, "epoch2024")
    hoffmann = scaling.compute_optimal_for_tokens(s.effective_tokens, "hoffmann2022")
    finding = Finding(
        rule="compute_optimal_size",
        finding=f"{human(s.effective_tokens)} effective tokens ({human(s.tokens)} x quality {s.quality:g}) train a "
                f"compute-optimal model of about {human(point.params)} parameters from scratch (headline: 20 tokens per "
                f"parameter, Hoffmann et al. 2022; alternatives: the Epoch 2024 fit says {human(epoch.params)}, "
                f"Hoffmann's parametric fit {human(hoffmann.params)}), trained with {point.flops:.2g} FLOPs. This bounds "
                f"pretraining from scratch, not fine-tuning a pretrained model (a fine-tune adapts a model of any size).",
        source="Hoffmann et al. 2022 (Chinchilla) Table 3 and eq. 4; Besiroglu et al. 2024 (Epoch AI replication)",
        numbers={"effective_tokens": s.effective_tokens, "compute_optimal_params": point.params,
                 "epoch2024_params": epoch.params, "hoffmann2022_params": hoffmann.params,
                 "training_flops": point.flops, "headline_fit": HEADLINE_FIT},
    )
    return ComputeOptimalSize(s.effective_tokens, point.params, epoch.params, point.flops, finding, hoffmann.params)


class PretrainingViability(Struct, frozen=True):
    viable: bool           # the model the data trains is predicted to beat the base (the cluster checks come later)
    tokens_needed: float
    own_model_params: float
    own_model_loss: float
    base_model_loss: float | None
    finding: Finding


def rule_pretraining_viability(s: Situation) -> PretrainingViability:
    """Pretraining only pays when your data trains a model predicted, by the same fit (Hoffmann et al. 2022 eq. 2),
    to reach a lower loss than the open base it would replace; where the base's pretraining tokens are unpublished,
    when the data is at least the base's compute-optimal token count (20 per parameter)."""
    base = catalog.get_model(s.base_model)
    base_params = param_counts(base).total
    own = scaling.compute_optimal_for_tokens(s.effective_tokens, "chinchilla-rule")
    own_loss = scaling.parametric_loss(own.params, own.tokens, scaling.HOFFMANN2022)
    needed_tokens = scaling.CHINCHILLA_TOKENS_PER_PARAM * base_params
    base_loss = (scaling.parametric_loss(base_params, base.pretraining_tokens, scaling.HOFFMANN2022)
                 if base.pretraining_tokens else None)
    if base_loss is not None:
        viable = own_loss < base_loss
        comparison = (f"The best model your data trains from scratch ({human(own.params)} on {human(own.tokens)} tokens) "
                      f"is predicted to reach loss {own_loss:.2f}; {base.name} ({human(base_params)} on "
                      f"{human(base.pretraining_tokens or 0)} tokens) reaches {base_loss:.2f} by the same fit")
    else:
        viable = s.effective_tokens >= needed_tokens
        comparison = (f"{base.name}'s pretraining tokens are unpublished: a model its size ({human(base_params)}) needs "
                      f"about {human(needed_tokens)} tokens, you have {human(s.effective_tokens)}")
    verdict = ("it would beat the base, if it fits your cluster, budget and deadline" if viable else
               f"it would not beat the base: continue pretraining or fine-tune {base.name} instead")
    finding = Finding(
        rule="pretraining_viability",
        finding=f"Pretraining {'may be' if viable else 'is not'} viable. {comparison}: {verdict}.",
        source="Hoffmann et al. 2022 eq. 2 (parametric loss, Approach 3 constants) and Table 3",
        numbers={"viable": viable, "tokens_needed": needed_tokens, "own_model_params": own.params,
                 "own_model_loss": own_loss, "base_model_loss": base_loss},
    )
    return PretrainingViability(viable, needed_tokens, own.params, own_loss, base_loss, finding)


def rule_repeated_data(s: Situation) -> Finding:
    """What repeating scarce data buys: effective tokens and the compute-optimal size for them (Muennighoff 2023)."""
    unique = s.effective_tokens
    effective = scaling.effective_repeated_tokens(REPEAT_EPOCHS * unique, unique)
    size = scaling.compute_optimal_for_tokens(effective, "chinchilla-rule").params
    return Finding(
        rule="repeated_data",
        finding=f"Repeating the data {REPEAT_EPOCHS} times is worth {effective / unique:.2f}x unique tokens "
                f"({human(effective)} effective), enough for a compute-optimal model of about {human(size)}; each further "
                f"repetition is worth less (half as much as fresh data after "
                f"~{scaling.MUENNIGHOFF_RD_STAR * math.log(2):.0f} repetitions).",
        source="Muennighoff et al. 2023, Scaling Data-Constrained Language Models, eq. 5 and fitted R_D* = 15.4",
        numbers={"epochs": REPEAT_EPOCHS, "effective_tokens": effective, "compute_optimal_params": size},
    )


def rule_inference_aware(s: Situation) -> Finding:
    """For a model you would pretrain and serve: the size that minimises training + lifetime inference compute."""
    point = scaling.compute_optimal_for_tokens(s.effective_tokens, "hoffmann2022")
    lifetime = s.requests_per_day * s.tokens_per_request * 365 * SERVING_YEARS
    assert point.loss is not None, "the Hoffmann fit predicts a loss"
    best = scaling.inference_aware_optimum(point.loss, lifetime, "hoffmann2022")
    needs_more = best.tokens > s.effective_tokens * 1.01
    return Finding(
        rule="inference_aware_size",
        finding=(f"Serving {human(lifetime)} tokens over {SERVING_YEARS} years, the cheapest model reaching the loss of the "
                 f"compute-optimal {human(point.params)} ({point.loss:.2f}) has {human(best.params)} parameters trained on "
                 f"{human(best.tokens)} tokens, {best.savings_fraction:.0%} less lifetime compute"
                 + (f" — but that needs {human(best.tokens)} tokens of data and you have {human(s.effective_tokens)}."
                    if needs_more else ".")),
        source="Sardana et al. 2024, Beyond Chinchilla-Optimal (training + inference FLOPs), with Hoffmann et al. 2022's fit",
        numbers={"lifetime_inference_tokens": lifetime, "params": best.params, "tokens": best.tokens,
                 "savings_fraction": best.savings_fraction, "data_sufficient": not needs_more},
    )


def rule_privacy(s: Situation) -> Finding:
    return Finding(
        rule="privacy",
        finding="Data must stay on premises: hosted APIs are excluded, the model is self-hosted."
        if s.on_prem else "No on-premises constraint: a hosted API is allowed.",
        source="your constraint (--on-prem)",
        numbers={"on_prem": s.on_prem},
    )


def rule_api_quality(s: Situation) -> Finding:
    return Finding(
        rule="api_quality",
        finding=("Assumed: an off-the-shelf model meets your bar (say --api-insufficient if it doesn't), so prompting "
                 "and retrieval come before any training."
                 if s.api_sufficient else
                 f"You said an off-the-shelf model ({s.api}, or {s.base_model} untrained) does not meet the bar: "
                 "adapt a model to your data."),
        source="OpenAI fine-tuning guide (prompt engineering and retrieval before fine-tuning); your judgement "
               "(--api-insufficient)",
        numbers={"api_sufficient": s.api_sufficient},
    )


TASK_KIND_TEXT = {
    "knowledge": ("Knowledge and Q&A: retrieval over your documents beats fine-tuning for injecting facts, so the "
                  "answer is an off-the-shelf model with retrieval; fine-tune only for behaviour.",
                  "Ovadia et al. 2024, Fine-Tuning or Retrieval? Comparing Knowledge Injection in LLMs"),
    "style": ("Style and format: a LoRA adapter on a few thousand examples matches full fine-tuning.",
              "Hu et al. 2021 (LoRA) §5; Dettmers et al. 2023 (QLoRA) §5"),
    "task": ("Task-specific behaviour: parameter-efficient fine-tuning matches full fine-tuning on "
             "instruction and task data at a fraction of the memory.",
             "Hu et al. 2021 (LoRA) Tables 2-4; Dettmers et al. 2023 (QLoRA) §5"),
    "domain": (f"Domain adaptation: PEFT below about {human(FULL_FINETUNE_MIN_TOKENS)} effective tokens; above it "
               "full fine-tuning learns measurably more.",
               "Biderman et al. 2024, LoRA Learns Less and Forgets Less, §4"),
    "language": ("New language or modality: needs full fine-tuning (new vocabulary and representations), "
                 "or pretraining when the data supports a competitive model.",
                 "Biderman et al. 2024 §4; Hoffmann et al. 2022"),
}


def rule_task_kind(s: Situation) -> Finding:
    text, source = TASK_KIND_TEXT[s.task]
    return Finding(rule="task_kind", finding=text, source=source, numbers={"task": s.task})
