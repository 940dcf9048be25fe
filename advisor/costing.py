"""What each option costs: the API bill, self-hosting, fine-tuning and pretraining, in GPUs, GPU-hours and dollars."""

import math
from dataclasses import dataclass, replace

from pydantic import BaseModel, ConfigDict

from advisor import catalog, scaling
from advisor.calibration import Calibration
from advisor.errors import AdvisorError
from advisor.findings import Finding
from advisor.flops import DEFAULT_EFFICIENCY, cost_usd, flops_per_token, gpu_hours, training_flops
from advisor.memory import memory_per_gpu
from advisor.numbers import human
from advisor.params import param_counts
from advisor.situation import Situation, Tier
from advisor.sizing import choose_checkpointing, gpus_needed
from advisor.training import TrainingSetup

# Serving efficiency: fraction of dense peak an inference server sustains on 2N FLOPs per token. Prompt
# tokens (prefill) run as large matmuls, like a training forward pass; generated tokens (decode) are
# memory-bound, and continuous batching (Kwon et al. 2023, vLLM) lifts decode to the order of 10% of peak.
# Both are assumptions, stated in every recommendation.
PREFILL_EFFICIENCY = 0.40
DECODE_EFFICIENCY = 0.10
DAYS_PER_MONTH = 30.4


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


@dataclass(frozen=True)
class UsageBreakEven:
    api_usd_per_month: float
    self_host_usd_per_month: float
    serving_gpus: int
    break_even_requests_per_day: float | None
    finding: Finding

    @property
    def self_host_cheaper(self) -> bool:
        return self.self_host_usd_per_month < self.api_usd_per_month


def rule_usage_break_even(s: Situation) -> UsageBreakEven:
    """Compare a month of API bills with a month of self-hosting; find the volume where they cross."""
    api = catalog.get_api(s.api)
    price = gpu_price(s)
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
    finding = Finding(
        rule="usage_break_even",
        finding=(f"At {human(s.requests_per_day)} requests/day x {human(s.tokens_per_request)} tokens, {s.api} costs "
                 f"${api_month:,.0f}/month and self-hosting {s.base_model} on {gpus} x {s.gpu} costs "
                 f"${host_month:,.0f}/month: {cheaper} is cheaper. "
                 + (f"Self-hosting breaks even at about {human(break_even)} requests/day."
                    if break_even else "At these prices self-hosting never breaks even.")),
        source=f"{api.source} ({api.date}); GPU price: {catalog.get_gpu(s.gpu).source}",
        numbers={"api_usd_per_month": api_month, "self_host_usd_per_month": host_month, "serving_gpus": gpus,
                 "break_even_requests_per_day": break_even},
    )
    return UsageBreakEven(api_month, host_month, gpus, break_even, finding)


# --- costing ---------------------------------------------------------------------------------------

def gpu_price(s: Situation) -> float:
    price = s.price_usd_per_gpu_hour or catalog.get_gpu(s.gpu).price_usd_per_hour
    if price is None:
        raise AdvisorError(f"the GPU catalog has no dated price for {s.gpu}: give --price (USD per GPU-hour)")
    return price


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
    price = gpu_price(s)
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
    price = gpu_price(s)
    return Option(tier="pretrain", method="pretrain", model=f"{human(point.params)}-param compute-optimal", gpu=gpu.name,
                  gpus=s.gpus, gpu_hours=hours, cost_usd=cost_usd(hours, price), memory_gib_per_gpu=None,
                  params=point.params, tokens=point.tokens, wall_days=hours / (s.gpus * s.availability) / 24)


def cost_api(s: Situation) -> Option:
    api = catalog.get_api(s.api)
    per_request = api_usd_per_request(s)
    return Option(tier="api", method="prompt+retrieval", model=api.name, gpu=None, gpus=0, gpu_hours=0.0,
                  cost_usd=per_request * s.requests_per_day * DAYS_PER_MONTH, memory_gib_per_gpu=None, params=0,
                  tokens=0, viable=not s.on_prem, note="cost is per month of usage, no training" +
                  ("; excluded: data must stay on premises" if s.on_prem else ""))
