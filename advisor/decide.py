"""The decision engine: API first, then PEFT (LoRA/QLoRA), then full fine-tune, then pretrain.

Each rule of the hierarchy is a small function that returns a Finding with its numbers and source;
`recommend` runs them, costs every option with the estimators and returns a typed Recommendation.
"""

import math
from dataclasses import replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from advisor import catalog, scaling
from advisor.numbers import human
from advisor.calibration import Calibration
from advisor.flops import DEFAULT_EFFICIENCY, cost_usd, flops_per_token, gpu_hours, training_flops
from advisor.memory import memory_per_gpu
from advisor.params import param_counts
from advisor.sizing import AUTO_CHECKPOINTING_MAX_SHARE, choose_checkpointing, gpus_needed
from advisor.training import TrainingSetup

Tier = Literal["api", "peft", "full", "pretrain"]
TaskKind = Literal["knowledge", "style", "task", "domain", "language"]
TIERS: tuple[Tier, ...] = ("api", "peft", "full", "pretrain")

# Share of a request's tokens that the API bills as output (the rest is prompt). Chat workloads with
# retrieved context are prompt-heavy; 25% output is an assumption, overridable per call.
DEFAULT_OUTPUT_FRACTION = 0.25
# Serving efficiency: fraction of dense peak an inference server sustains on 2N FLOPs per token. Prompt
# tokens (prefill) run as large matmuls, like a training forward pass; generated tokens (decode) are
# memory-bound, and continuous batching (Kwon et al. 2023, vLLM) lifts decode to the order of 10% of peak.
# Both are assumptions, stated in every recommendation.
PREFILL_EFFICIENCY = 0.40
DECODE_EFFICIENCY = 0.10
# Domain adaptation and new languages need full fine-tuning once the data reaches about a billion tokens:
# LoRA learns less than full fine-tuning in continued pretraining at that scale (Biderman et al. 2024,
# "LoRA Learns Less and Forgets Less", §4: code and math CPT on 0.25-20B tokens).
FULL_FINETUNE_MIN_TOKENS = 1e9
DAYS_PER_MONTH = 30.4


class Situation(BaseModel):
    """What the team knows in the first hour: data, usage, constraints, hardware and money."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tokens: float = Field(gt=0, description="Tokens of training data you have (before quality filtering).")
    docs: float | None = Field(None, gt=0, description="Number of documents (for the report; tokens drive the maths).")
    quality: float = Field(1.0, gt=0, le=1, description="Usable fraction of the data after cleaning, in (0, 1].")
    requests_per_day: float = Field(1000, ge=0, description="Expected production requests per day.")
    tokens_per_request: float = Field(1000, gt=0, description="Prompt + completion tokens per request.")
    output_fraction: float = Field(DEFAULT_OUTPUT_FRACTION, ge=0, le=1, description="Share of a request's tokens that are output.")
    task: TaskKind = Field("task", description="knowledge (Q&A over facts), style (tone/format), task (task-specific "
                                               "behaviour), domain (domain adaptation), language (new language or modality).")
    on_prem: bool = Field(False, description="Data may not leave your premises: hosted APIs are excluded.")
    api_sufficient: bool = Field(True, description="A hosted API already meets the quality bar.")
    api: str = Field("gpt-4o-mini", description="Hosted model priced as the API option.")
    base_model: str = Field("Llama-3.1-8B", description="Open model to adapt for PEFT and full fine-tuning.")
    gpu: str = Field("A100-80GB", description="GPU type available.")
    gpus: int = Field(8, ge=1, le=100000, description="How many GPUs of that type are available.")
    availability: float = Field(1.0, gt=0, le=1, description="Fraction of the time those GPUs are yours.")
    budget_usd: float | None = Field(None, gt=0, description="Training budget in dollars (none: unbounded).")
    price_usd_per_gpu_hour: float | None = Field(None, gt=0, description="Override the catalog's GPU price.")
    epochs: float = Field(1.0, gt=0, le=1000, description="Passes over the data for fine-tuning.")
    seq_len: int = Field(2048, gt=0, le=1_048_576, description="Training sequence length.")

    @property
    def effective_tokens(self) -> float:
        """Tokens x quality: the data that actually teaches the model."""
        return self.tokens * self.quality


class Finding(BaseModel):
    model_config = ConfigDict(frozen=True)
    rule: str
    finding: str
    source: str
    numbers: dict[str, float | int | str | bool | None] = {}


class Option(BaseModel):
    model_config = ConfigDict(frozen=True)
    tier: Tier
    method: str
    model: str
    gpu: str | None
    gpus: int
    gpu_hours: float
    cost_usd: float
    memory_gib_per_gpu: float | None
    params: float
    tokens: float
    wall_days: float | None = None
    viable: bool = True
    note: str = ""


class Recommendation(BaseModel):
    model_config = ConfigDict(frozen=True)
    tier: Tier
    effective_tokens: float
    compute_optimal_params: float
    break_even_requests_per_day: float | None
    options: list[Option]
    reasons: list[Finding]
    situation: Situation
    assumptions: list[str]
    calibration: str | None = None


# --- rules -------------------------------------------------------------------------------------------

def rule_compute_optimal_size(s: Situation) -> Finding:
    """How large a model the data can train compute-optimally (Chinchilla: ~20 tokens per parameter)."""
    point = scaling.compute_optimal_for_tokens(s.effective_tokens, "chinchilla-rule")
    epoch = scaling.compute_optimal_for_tokens(s.effective_tokens, "epoch2024")
    return Finding(
        rule="compute_optimal_size",
        finding=f"{_h(s.effective_tokens)} effective tokens ({_h(s.tokens)} x quality {s.quality:g}) support a "
                f"compute-optimal model of about {_h(point.params)} parameters (20 tokens per parameter; the Epoch "
                f"2024 fit says {_h(epoch.params)}), trained with {point.flops:.2g} FLOPs.",
        source="Hoffmann et al. 2022 (Chinchilla) Table 3; Besiroglu et al. 2024 (Epoch AI replication)",
        numbers={"effective_tokens": s.effective_tokens, "compute_optimal_params": point.params,
                 "epoch2024_params": epoch.params, "training_flops": point.flops},
    )


def rule_pretraining_viability(s: Situation) -> Finding:
    """Pretraining only pays when your data can train a model at least as good as the open base you'd adapt."""
    base = catalog.get_model(s.base_model)
    base_params = param_counts(base).total
    own = scaling.compute_optimal_for_tokens(s.effective_tokens, "chinchilla-rule")
    own_loss = scaling.parametric_loss(own.params, own.tokens, scaling.HOFFMANN2022)
    needed_tokens = scaling.CHINCHILLA_TOKENS_PER_PARAM * base_params
    viable = s.effective_tokens >= needed_tokens
    base_loss = (scaling.parametric_loss(base_params, base.pretraining_tokens, scaling.HOFFMANN2022)
                 if base.pretraining_tokens else None)
    comparison = (f"; {base.name} itself saw {_h(base.pretraining_tokens)} tokens (predicted loss {base_loss:.2f})"
                  if base_loss is not None else "")
    return Finding(
        rule="pretraining_viability",
        finding=(f"Pretraining {'is' if viable else 'is not'} viable: a model the size of {base.name} "
                 f"({_h(base_params)}) needs about {_h(needed_tokens)} tokens to train compute-optimally, you have "
                 f"{_h(s.effective_tokens)}. The best model your data trains ({_h(own.params)}) is predicted to reach "
                 f"loss {own_loss:.2f}{comparison}."),
        source="Hoffmann et al. 2022 eq. 2 (parametric loss, Approach 3 constants) and Table 3",
        numbers={"viable": viable, "tokens_needed": needed_tokens, "own_model_params": own.params,
                 "own_model_loss": own_loss, "base_model_loss": base_loss},
    )


# Epochs over scarce data that are still nearly as good as fresh data (Muennighoff et al. 2023: "up to 4 epochs
# yields negligible changes to loss compared to having unique data").
REPEAT_EPOCHS = 4
SERVING_YEARS = 2  # lifetime over which inference volume is counted for the inference-aware optimum


def rule_repeated_data(s: Situation) -> Finding:
    """What repeating scarce data buys: effective tokens and the compute-optimal size for them (Muennighoff 2023)."""
    unique = s.effective_tokens
    effective = scaling.effective_repeated_tokens(REPEAT_EPOCHS * unique, unique)
    size = scaling.compute_optimal_for_tokens(effective, "chinchilla-rule").params
    return Finding(
        rule="repeated_data",
        finding=f"Repeating the data {REPEAT_EPOCHS} times is worth {effective / unique:.2f}x unique tokens "
                f"({_h(effective)} effective), enough for a compute-optimal model of about {_h(size)}; each further "
                f"repetition is worth less (half as much as fresh data after "
                f"~{scaling.MUENNIGHOFF_RD_STAR * math.log(2):.0f} repetitions).",
        source="Muennighoff et al. 2023, Scaling Data-Constrained Language Models, eq. 5 and fitted R_D* = 15.4",
        numbers={"epochs": REPEAT_EPOCHS, "effective_tokens": effective, "compute_optimal_params": size},
    )


def rule_inference_aware(s: Situation) -> Finding:
    """For a model you would pretrain and serve: the size that minimises training + lifetime inference compute."""
    point = scaling.compute_optimal_for_tokens(s.effective_tokens, "hoffmann2022")
    lifetime = s.requests_per_day * s.tokens_per_request * 365 * SERVING_YEARS
    best = scaling.inference_aware_optimum(point.loss, lifetime, "hoffmann2022")
    needs_more = best.tokens > s.effective_tokens * 1.01
    return Finding(
        rule="inference_aware_size",
        finding=(f"Serving {_h(lifetime)} tokens over {SERVING_YEARS} years, the cheapest model reaching the loss of the "
                 f"compute-optimal {_h(point.params)} ({point.loss:.2f}) has {_h(best.params)} parameters trained on "
                 f"{_h(best.tokens)} tokens, {best.savings_fraction:.0%} less lifetime compute"
                 + (f" — but that needs {_h(best.tokens)} tokens of data and you have {_h(s.effective_tokens)}."
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
        finding=(f"A hosted model ({s.api}) meets the quality bar, so prompting and retrieval come first."
                 if s.api_sufficient else
                 f"The hosted model ({s.api}) does not meet the quality bar: adapt a model to your data."),
        source="OpenAI fine-tuning guide (prompt engineering and retrieval before fine-tuning); your judgement "
               "(--api-insufficient)",
        numbers={"api_sufficient": s.api_sufficient},
    )


def rule_task_kind(s: Situation) -> Finding:
    text = {
        "knowledge": ("Knowledge and Q&A: retrieval over your documents beats fine-tuning for injecting facts; "
                      "fine-tune only for behaviour.",
                      "Ovadia et al. 2024, Fine-Tuning or Retrieval? Comparing Knowledge Injection in LLMs"),
        "style": ("Style and format: a LoRA adapter on a few thousand examples matches full fine-tuning.",
                  "Hu et al. 2021 (LoRA) §5; Dettmers et al. 2023 (QLoRA) §5"),
        "task": ("Task-specific behaviour: parameter-efficient fine-tuning matches full fine-tuning on "
                 "instruction and task data at a fraction of the memory.",
                 "Hu et al. 2021 (LoRA) Tables 2-4; Dettmers et al. 2023 (QLoRA) §5"),
        "domain": (f"Domain adaptation: PEFT below about {_h(FULL_FINETUNE_MIN_TOKENS)} effective tokens; above it "
                   "full fine-tuning learns measurably more.",
                   "Biderman et al. 2024, LoRA Learns Less and Forgets Less, §4"),
        "language": ("New language or modality: needs full fine-tuning (new vocabulary and representations), "
                     "or pretraining when the data supports a competitive model.",
                     "Biderman et al. 2024 §4; Hoffmann et al. 2022"),
    }[s.task]
    return Finding(rule="task_kind", finding=text[0], source=text[1], numbers={"task": s.task})


def api_usd_per_request(s: Situation) -> float:
    """A request's API bill: prompt tokens at the input price, output tokens at the output price, per 1M tokens."""
    api = catalog.get_api(s.api)
    return s.tokens_per_request * ((1 - s.output_fraction) * api.input_usd_per_mtok
                                   + s.output_fraction * api.output_usd_per_mtok) / 1e6


def serving_gpus(s: Situation) -> tuple[int, float]:
    """GPUs to self-host the base model for this volume: enough memory for bf16 weights (+20% KV cache) and
    enough FLOPs for 2N per token (Kaplan et al. 2020 §2.1), prompt tokens at PREFILL_EFFICIENCY and output
    tokens at DECODE_EFFICIENCY of peak. Returns (GPUs, GPU-days per request)."""
    gpu = catalog.get_gpu(s.gpu)
    params = param_counts(catalog.get_model(s.base_model)).total
    memory_gpus = math.ceil(2.0 * params / 2**30 * 1.2 / gpu.memory_gib)
    seconds_per_request = 2.0 * params * s.tokens_per_request / gpu.peak_flops * (
        (1 - s.output_fraction) / PREFILL_EFFICIENCY + s.output_fraction / DECODE_EFFICIENCY)
    gpu_days_per_request = seconds_per_request / 86400
    return max(1, memory_gpus, math.ceil(s.requests_per_day * gpu_days_per_request)), gpu_days_per_request


def rule_usage_break_even(s: Situation) -> Finding:
    """Compare a month of API bills with a month of self-hosting; find the volume where they cross."""
    api = catalog.get_api(s.api)
    price = _gpu_price(s)
    per_request = api_usd_per_request(s)
    gpus, gpu_days_per_request = serving_gpus(s)
    api_month = per_request * s.requests_per_day * DAYS_PER_MONTH
    host_month = gpus * price * 24 * DAYS_PER_MONTH
    min_gpus = max(1, serving_gpus(s.model_copy(update={"requests_per_day": 0}))[0])
    # Self-hosting costs at least min_gpus all month, then grows with volume; the API grows linearly.
    marginal_host = gpu_days_per_request * price * 24
    if per_request <= marginal_host:
        break_even = None
    else:
        break_even = min_gpus * price * 24 / per_request
    cheaper = "self-hosting" if host_month < api_month else "the API"
    return Finding(
        rule="usage_break_even",
        finding=(f"At {_h(s.requests_per_day)} requests/day x {_h(s.tokens_per_request)} tokens, {s.api} costs "
                 f"${api_month:,.0f}/month and self-hosting {s.base_model} on {gpus} x {s.gpu} costs "
                 f"${host_month:,.0f}/month: {cheaper} is cheaper. "
                 + (f"Self-hosting breaks even at about {_h(break_even)} requests/day."
                    if break_even else "At these prices self-hosting never breaks even.")),
        source=f"{api.source} ({api.date}); GPU price: {catalog.get_gpu(s.gpu).source}",
        numbers={"api_usd_per_month": api_month, "self_host_usd_per_month": host_month, "serving_gpus": gpus,
                 "break_even_requests_per_day": break_even},
    )


# --- costing -----------------------------------------------------------------------------------------

def _gpu_price(s: Situation) -> float:
    return s.price_usd_per_gpu_hour or catalog.get_gpu(s.gpu).price_usd_per_hour


def cost_finetune(s: Situation, method: str, calibration: Calibration | None = None) -> Option:
    """GPU-hours, dollars and memory of fine-tuning the base model on the effective tokens."""
    arch = catalog.get_model(s.base_model)
    gpu = catalog.get_gpu(s.gpu)
    setup = TrainingSetup(arch=arch, method=method, seq_len=min(s.seq_len, arch.max_position_embeddings))
    overheads = calibration.overheads(gpu.name, method) if calibration else {}
    needed = gpus_needed(setup, gpu, **overheads)
    tokens = s.effective_tokens * s.epochs
    tier: Tier = "full" if method == "full" else "peft"
    if needed is None:
        return Option(tier=tier, method=method, model=arch.name, gpu=gpu.name, gpus=0, gpu_hours=math.inf,
                      cost_usd=math.inf, memory_gib_per_gpu=None, params=param_counts(arch).total, tokens=tokens,
                      viable=False, note=f"does not fit on any number of {gpu.name}")
    gpus = max(needed, 1)
    setup = replace(setup, gpus=gpus, sharding="fsdp" if gpus > 1 else "auto")
    # as the runner does by default (train.gradient_checkpointing: auto): recompute only if memory needs it
    setup = replace(setup, gradient_checkpointing=choose_checkpointing(setup, gpu.memory_gib, overheads)[0])
    memory = memory_per_gpu(setup, **overheads)
    flops = flops_per_token(arch, setup.seq_len, method, setup.trainable_params, setup.gradient_checkpointing)
    efficiency = calibration.efficiency(gpu.name, method) if calibration else None
    hours = gpu_hours(training_flops(flops.total, tokens), gpu.peak_flops, efficiency or DEFAULT_EFFICIENCY[method])
    price = _gpu_price(s)
    note, viable = "", True
    if gpus > s.gpus:
        viable, note = False, f"needs {gpus} x {gpu.name}, you have {s.gpus}"
    elif s.budget_usd is not None and cost_usd(hours, price) > s.budget_usd:
        viable, note = False, f"over the ${s.budget_usd:,.0f} budget"
    wall_days = hours / (min(s.gpus, max(gpus, 1)) * s.availability) / 24 if viable else None
    return Option(tier=tier, method=method, model=arch.name, gpu=gpu.name, gpus=gpus, gpu_hours=hours,
                  cost_usd=cost_usd(hours, price), memory_gib_per_gpu=memory.total, params=param_counts(arch).total,
                  tokens=tokens, wall_days=wall_days, viable=viable, note=note)


def cost_pretrain(s: Situation, calibration: Calibration | None = None) -> Option:
    """Pretraining the compute-optimal model for the effective tokens (6ND FLOPs at full-training efficiency)."""
    gpu = catalog.get_gpu(s.gpu)
    point = scaling.compute_optimal_for_tokens(s.effective_tokens, "chinchilla-rule")
    efficiency = (calibration.efficiency(gpu.name, "full") if calibration else None) or DEFAULT_EFFICIENCY["full"]
    hours = gpu_hours(point.flops, gpu.peak_flops, efficiency)
    price = _gpu_price(s)
    return Option(tier="pretrain", method="pretrain", model=f"{_h(point.params)}-param compute-optimal", gpu=gpu.name,
                  gpus=s.gpus, gpu_hours=hours, cost_usd=cost_usd(hours, price), memory_gib_per_gpu=None,
                  params=point.params, tokens=point.tokens, wall_days=hours / (s.gpus * s.availability) / 24)


def cost_api(s: Situation) -> Option:
    api = catalog.get_api(s.api)
    per_request = api_usd_per_request(s)
    return Option(tier="api", method="prompt+retrieval", model=api.name, gpu=None, gpus=0, gpu_hours=0.0,
                  cost_usd=per_request * s.requests_per_day * DAYS_PER_MONTH, memory_gib_per_gpu=None, params=0,
                  tokens=0, viable=not s.on_prem, note="cost is per month of usage, no training" +
                  ("; excluded: data must stay on premises" if s.on_prem else ""))


# --- the decision ------------------------------------------------------------------------------------

def choose_tier(s: Situation, usage: Finding, pretrain: Finding, options: dict[str, Option]) -> Tier:
    """Walk the hierarchy: API, then PEFT, then full fine-tune, then pretrain; each step needs a reason."""
    api_ok = not s.on_prem and s.api_sufficient
    self_host_cheaper = usage.numbers["self_host_usd_per_month"] < usage.numbers["api_usd_per_month"]
    if api_ok and not self_host_cheaper:
        return "api"
    if s.task == "language" and pretrain.numbers["viable"] and options["pretrain"].viable:
        return "pretrain"
    wants_full = s.task in ("domain", "language") and s.effective_tokens >= FULL_FINETUNE_MIN_TOKENS
    if wants_full and options["full"].viable:
        return "full"
    return "peft"


def recommend(s: Situation, calibration: Calibration | None = None) -> Recommendation:
    """Run every rule, cost every option and pick the tier. Pure: same situation, same answer."""
    sizing = rule_compute_optimal_size(s)
    pretrain = rule_pretraining_viability(s)
    usage = rule_usage_break_even(s)
    reasons = [sizing, pretrain, rule_repeated_data(s), rule_inference_aware(s), rule_privacy(s), rule_api_quality(s),
               rule_task_kind(s), usage]
    options = {"api": cost_api(s), "lora": cost_finetune(s, "lora", calibration),
               "qlora": cost_finetune(s, "qlora", calibration), "full": cost_finetune(s, "full", calibration),
               "pretrain": cost_pretrain(s, calibration)}
    options["pretrain"] = options["pretrain"].model_copy(update={
        "viable": bool(pretrain.numbers["viable"]),
        "note": "" if pretrain.numbers["viable"] else "not viable: too little data for a competitive model"})
    tier = choose_tier(s, usage, pretrain, options)
    reasons.append(_hardware_finding(s, options))
    reasons.append(Finding(rule="decision", finding=_decision_text(s, tier, usage), source="hierarchy: API, PEFT, full, pretrain",
                           numbers={"tier": tier}))
    order = list(TIERS)
    ranked = sorted(options.values(), key=lambda o: (o.tier != tier, not o.viable, order.index(o.tier), o.cost_usd))
    assumptions = [
        f"Fine-tuning: {s.base_model}, sequence length {s.seq_len}, micro-batch 1, gradient checkpointing only where "
        f"the peak without it exceeds {AUTO_CHECKPOINTING_MAX_SHARE:.0%} of the GPU, "
        f"LoRA r=16 on all linear layers, AdamW, {s.epochs:g} epoch(s) over the effective tokens.",
        "GPU-hours = FLOPs / (dense bf16 peak x efficiency); efficiency "
        + (f"from calibration {calibration.path}" if calibration else
           "assumed (full 0.40, LoRA 0.35, QLoRA 0.25) until `advisor calibrate` fits it from your runs") + ".",
        f"GPU price ${_gpu_price(s):.2f}/GPU-hour ({s.gpu}); API prices as dated in the catalog.",
        f"API requests bill {1 - s.output_fraction:.0%} of their tokens as input, {s.output_fraction:.0%} as output; "
        f"self-hosting serves prompt tokens at {PREFILL_EFFICIENCY:.0%} and output tokens at {DECODE_EFFICIENCY:.0%} of peak.",
    ]
    return Recommendation(
        tier=tier, effective_tokens=s.effective_tokens, compute_optimal_params=sizing.numbers["compute_optimal_params"],
        break_even_requests_per_day=usage.numbers["break_even_requests_per_day"], options=ranked, reasons=reasons,
        situation=s, assumptions=assumptions, calibration=str(calibration.path) if calibration else None,
    )


def _hardware_finding(s: Situation, options: dict[str, Option]) -> Finding:
    parts = []
    for key in ("lora", "qlora", "full"):
        o = options[key]
        parts.append(f"{key}: {o.gpus} x {o.gpu} at {o.memory_gib_per_gpu:.1f} GiB each" if o.memory_gib_per_gpu
                     else f"{key}: does not fit")
    return Finding(rule="hardware_fit", finding=f"On {s.gpus} x {s.gpu} ({s.availability:.0%} available): " + "; ".join(parts) + ".",
                   source="advisor.memory.memory_per_gpu (see docs/estimation.md)",
                   numbers={f"{k}_gpus": options[k].gpus for k in ("lora", "qlora", "full")})


def _decision_text(s: Situation, tier: Tier, usage: Finding) -> str:
    if tier == "api":
        return f"Use the API ({s.api}) with prompting and retrieval: it meets the bar and is cheaper at this volume."
    why = []
    if s.on_prem:
        why.append("data must stay on premises")
    if not s.api_sufficient:
        why.append("the API does not meet the quality bar")
    if usage.numbers["self_host_usd_per_month"] < usage.numbers["api_usd_per_month"]:
        why.append("self-hosting is cheaper at this volume")
    return {"peft": "Fine-tune with LoRA/QLoRA", "full": "Fully fine-tune", "pretrain": "Pretrain"}[tier] + \
        f" {s.base_model if tier != 'pretrain' else 'a compute-optimal model'} because " + ", ".join(why or ["the task needs it"]) + "."


def _h(x: float) -> str:
    return human(x)
