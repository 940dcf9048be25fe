"""What each option costs: the API bill, self-hosting, fine-tuning and pretraining, in GPUs, GPU-hours, dollars and
wall-clock days on the user's cluster, with the constraints each one breaks (advisor.decide.constraints)."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, cast

from msgspec import Struct
from msgspec.structs import replace

from advisor.catalog import load as catalog
from advisor.formulas import scaling
from advisor.catalog.arch import describe
from advisor.catalog.types import Gpu, ModelArch
from advisor.plan.uncertainty import estimate_bands
from advisor.decide.constraints import (
    Violation, check_api_retired, check_budget, check_deadline, check_gpus, check_monthly_budget, check_on_prem,
    check_quality_bar, check_serving_gpus, deadline_days,
)
from advisor.plan.efficiency import training_rate
from advisor.core.errors import AdvisorError
from advisor.decide.findings import SERVING_YEARS, Finding, rule_pretraining_viability
from advisor.formulas.flops import cost_usd, flops_per_token
from advisor.core.numbers import human
from advisor.formulas.params import param_counts
from advisor.decide.situation import Situation, Tier
from advisor.formulas.memory import decided_sharding, memory_per_gpu, trainable_state_bytes, weight_bytes
from advisor.plan.launch_plan import launch_on, memory_overheads
from advisor.plan.serving import DAYS_PER_MONTH, ServingPlan, choose_serving, monthly_usd
from advisor.plan.sizing import CountPlan, choose_gpu_count, valid_gpu_counts
from advisor.formulas.setup import METHODS, LossKind, Method, TrainingSetup
from advisor.formulas.step_time import DEFAULT_STEP_TIME

if TYPE_CHECKING:  # annotations only: imported where used, so `advisor recommend` does not load them
    from advisor.plan.calibration import Calibration

# Largest cluster the "how many GPUs would it need" search looks at.
MAX_SEARCH_GPUS = 4096
# Replica counts the break-even search walks before it stops listing ranges.
MAX_SERVING_REPLICAS = 1000
# Mixed-precision Adam keeps 2 (bf16 weights) + 2 (gradients) + 12 (fp32 master, momentum, variance) bytes per
# parameter (Rajbhandari et al. 2020, ZeRO §3.1, K = 12), divided over the GPUs by ZeRO-3 / FSDP (§5).
MODEL_STATE_BYTES_PER_PARAM = 16.0


class Option(Struct, frozen=True, kw_only=True):
    """One costed option. A Struct keeps a value as given (no coercion on construction): the float fields are given
    floats, so their JSON form stays `0.0`, not `0`."""

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
    note: str = ""  # what breaks (why_not's text), then the remark
    why_not: list[Violation] = []
    remark: str = ""
    sharding: str | None = None
    gradient_checkpointing: bool | None = None
    efficiency: float | None = None  # the fraction of peak its GPU-hours assume (advisor.plan.efficiency.training_rate)
    # 80% intervals of a training option (advisor.plan.uncertainty: published rows' leave-one-out errors)
    gpu_hours_low: float | None = None
    gpu_hours_high: float | None = None
    cost_usd_low: float | None = None
    cost_usd_high: float | None = None
    wall_days_low: float | None = None
    wall_days_high: float | None = None
    interval_basis: str | None = None
    extrapolating: str | None = None
    # how the model the option produces is served at the stated volume (advisor.plan.serving), and a month of it
    # (the API bill for the hosted API); the training cost above is one-off
    serving: ServingPlan | None = None
    usd_per_month: float | None = None
    # the memory savers a training plan assumes (MEMORY_SAVERS): its loss implementation and FSDP CPU offload
    loss: str | None = None
    cpu_offload: bool | None = None


def with_interval(option: Option, gpu: Gpu, method: str, moe: bool) -> Option:
    """The option with 80% intervals on its GPU-hours, dollars and wall days: the throughput band of its GPU
    generation, method and dense/MoE (advisor.plan.uncertainty.estimate_bands), as `advisor estimate` gives them."""
    band = estimate_bands(gpu.generation, method, moe)["throughput"]
    if band is None or not math.isfinite(option.gpu_hours) or option.gpus == 0:
        return option
    days = band.time_bounds(option.wall_days) if option.wall_days is not None else (None, None)
    return replace(option, **dict(zip(("gpu_hours_low", "gpu_hours_high"), band.time_bounds(option.gpu_hours))),
                   **dict(zip(("cost_usd_low", "cost_usd_high"), band.time_bounds(option.cost_usd))),
                   wall_days_low=days[0], wall_days_high=days[1],
                   interval_basis=f"{band.group.replace('*', 'any')} ({band.rows} published rows)",
                   extrapolating=band.extrapolating)


def with_serving(option: Option, plan: ServingPlan) -> Option:
    """The option with the serving plan of the model it produces and a month of it."""
    return replace(option, serving=plan, usd_per_month=plan.usd_per_month)


def with_violations(option: Option, violations: list[Violation | None], remark: str = "") -> Option:
    """The option with these violations added: not viable if any; its note the violations' text, then the remark."""
    why_not = option.why_not + [v for v in violations if v is not None]
    remark = remark or option.remark
    note = "; ".join([v.detail for v in why_not] + ([remark] if remark else []))
    return replace(option, why_not=why_not, viable=not why_not, remark=remark, note=note)


def api_usd_per_request(s: Situation) -> float:
    """A request's API bill: prompt tokens at the input price, output tokens at the output price, per 1M tokens."""
    api = catalog.get_api(s.api)
    return s.tokens_per_request * ((1 - s.output_fraction) * api.input_usd_per_mtok
                                   + s.output_fraction * api.output_usd_per_mtok) / 1e6


def gpu_price(s: Situation) -> float:
    price = s.price_usd_per_gpu_hour or catalog.get_gpu(s.gpu).price_usd_per_hour
    if price is None:
        raise AdvisorError(f"the GPU catalog has no dated price for {s.gpu}: give --price (USD per GPU-hour)")
    return price


# --- serving ---------------------------------------------------------------------------------------

def serving_for(s: Situation, arch: ModelArch) -> ServingPlan:
    """How `arch` is served at the situation's volume on its GPU type (advisor.plan.serving.choose_serving): on
    premises within the GPUs you have, and within the monthly budget when one is given."""
    gpu = catalog.get_gpu(s.gpu)
    return choose_serving(arch, gpu, s.requests_per_day, s.tokens_per_request, s.output_fraction, s.peak_to_average,
                          s.price_usd_per_gpu_hour or gpu.price_usd_per_hour, s.gpus if s.on_prem else None,
                          s.monthly_budget_usd)


def serving_plan(s: Situation) -> ServingPlan:
    """Serving the base model (`serving_for`)."""
    return serving_for(s, catalog.get_model(s.base_model))


def serving_violations(s: Situation, plan: ServingPlan) -> list[Violation | None]:
    """What serving the trained model breaks: on premises, the GPUs you have (check_serving_gpus); everywhere, the
    monthly budget (check_monthly_budget)."""
    return [check_serving_gpus(plan, s), check_monthly_budget(plan.usd_per_month, s, f"serving {plan.model}")]


def self_host_cheaper_ranges(usd_per_request: float, gpu_days_per_request: float, degree: int,
                             usd_per_gpu_day: float) -> list[tuple[float, float | None]]:
    """Requests/day where self-hosting costs less than the API. With r replicas of `degree` GPUs serving volumes in
    ((r-1) degree / g, r degree / g], self-hosting costs r degree c a day and the API a V: cheaper from
    V = r degree c / a to the step's end. Cheaper throughout a step once (r-1)/g >= r c / a, and then for every
    larger r: the last range is open (None). Empty if a request costs the API no more than it costs a GPU (a <= g c)."""
    a, g, c = usd_per_request, gpu_days_per_request, usd_per_gpu_day
    if a <= g * c:
        return []
    if g == 0:
        return [(degree * c / a, None)]
    ranges: list[tuple[float, float | None]] = []
    for r in range(1, MAX_SERVING_REPLICAS + 1):
        step_lo, step_hi = (r - 1) * degree / g, r * degree / g
        lo = max(step_lo, r * degree * c / a)
        open_ended = lo == step_lo and r > 1
        if ranges and ranges[-1][1] is not None and lo <= ranges[-1][1]:
            lo = ranges.pop()[0]
        ranges.append((lo, None if open_ended else step_hi))
        if open_ended:
            break
    return ranges


class UsageBreakEven(Struct, frozen=True):
    api_usd_per_month: float
    self_host_usd_per_month: float
    serving_gpus: int
    break_even_requests_per_day: float | None
    finding: Finding
    ranges: tuple[tuple[float, float | None], ...] = ()
    tensor_parallel: int = 1

    @property
    def self_host_cheaper(self) -> bool:
        return self.self_host_usd_per_month < self.api_usd_per_month


def ranges_text(ranges) -> str:
    """Volume ranges as a sentence reads them: "between 215k and 384k and above 430k"."""
    parts = [f"between {human(lo)} and {human(hi)}" if hi is not None else f"above {human(lo)}" for lo, hi in ranges]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def layout_text(plan: ServingPlan) -> str:
    """A replica's layout as people say it: "tensor-parallel 4", "tensor-parallel 8 x pipeline 2", with the precision
    where it is not bf16."""
    layout = f"tensor-parallel {plan.tensor_parallel}" + (
        f" x pipeline {plan.pipeline_parallel}" if plan.pipeline_parallel > 1 else "")
    return layout + (f", {plan.precision.upper()} weights" if plan.precision != "bf16" else "")


def serving_text(plan: ServingPlan) -> str:
    """One serving plan in a few words: replicas x layout on GPUs, and a month's cost."""
    month = f", ${plan.usd_per_month:,.0f}/month" if plan.usd_per_month is not None else ""
    return f"{plan.replicas} replica(s) x {layout_text(plan)} = {plan.gpus} x {plan.gpu}{month}"


def rule_usage_break_even(s: Situation) -> UsageBreakEven:
    """Compare a month of API bills with a month of self-hosting (`serving_plan`: replicas sized for the peak); find
    the volumes where self-hosting is cheaper."""
    api = catalog.get_api(s.api)
    price = gpu_price(s)
    per_request = api_usd_per_request(s)
    plan = serving_plan(s)
    api_month = per_request * s.requests_per_day * DAYS_PER_MONTH
    host_month = monthly_usd(plan.gpus, price)
    # replicas serve the peak: capacity per replica at the average rate is 1 / peak_to_average of its peak capacity
    ranges = self_host_cheaper_ranges(per_request, plan.gpu_days_per_request * s.peak_to_average, plan.degree,
                                      price * 24)
    break_even = ranges[0][0] if ranges else None
    cheaper = "self-hosting" if host_month < api_month else "the API"
    if not ranges:
        where = "At these prices self-hosting is never cheaper."
    elif len(ranges) == 1 and ranges[0][1] is None:
        where = f"Self-hosting is cheaper above about {human(ranges[0][0])} requests/day."
    else:
        where = (f"Self-hosting is cheaper {ranges_text(ranges[:6])}{' ...' if len(ranges) > 6 else ''} "
                 "requests/day: capacity comes in whole replicas, so just past each step the API is cheaper again.")
    finding = Finding(
        rule="usage_break_even",
        finding=(f"At {human(s.requests_per_day)} requests/day x {human(s.tokens_per_request)} tokens "
                 f"({1 - s.output_fraction:.0%} prompt, {s.output_fraction:.0%} output; --tokens-per-request, "
                 f"--output-share), {s.api} costs ${api_month:,.0f}/month and self-hosting {s.base_model} "
                 f"({serving_text(plan)}, sized for a peak {s.peak_to_average:g}x the average, --peak-factor) costs "
                 f"${host_month:,.0f}/month: {cheaper} is cheaper. {where}"),
        source=f"{api.source} ({api.date}); GPU price: {catalog.get_gpu(s.gpu).price_source or catalog.get_gpu(s.gpu).source}; serving FLOPs 2N per "
               "active parameter per token (Kaplan et al. 2020 §2.1); tensor-parallel degrees per Shoeybi et al. 2019; "
               "quantised serving per vLLM's supported-hardware table (advisor.plan.serving)",
        numbers={"api_usd_per_month": api_month, "self_host_usd_per_month": host_month, "serving_gpus": plan.gpus,
                 "tensor_parallel": plan.tensor_parallel, "pipeline_parallel": plan.pipeline_parallel,
                 "serving_precision": plan.precision, "peak_to_average": s.peak_to_average,
                 "break_even_requests_per_day": break_even,
                 "tokens_per_request": s.tokens_per_request, "output_fraction": s.output_fraction},
    )
    return UsageBreakEven(api_month, host_month, plan.gpus, break_even, finding, tuple(ranges), plan.degree)


# --- off-the-shelf -------------------------------------------------------------------------------------

def cost_api(s: Situation) -> Option:
    """The hosted API with prompting and retrieval: a month of requests, no training."""
    api = catalog.get_api(s.api)
    month = api_usd_per_request(s) * s.requests_per_day * DAYS_PER_MONTH
    option = Option(tier="api", method="prompt+retrieval", model=api.name, gpu=None, gpus=0, gpu_hours=0.0,
                    cost_usd=month, memory_gib_per_gpu=None, params=0.0, tokens=0.0, usd_per_month=month)
    return with_violations(option, [check_api_retired(api), check_on_prem(s), check_quality_bar(s),
                                    check_monthly_budget(option.cost_usd, s, f"the {api.name} bill")],
                           "cost is per month of usage, no training")


def cost_self_host(s: Situation) -> Option:
    """The open-weight base model served on your GPUs with retrieval, no training: a month of serving."""
    plan = serving_plan(s)
    arch = catalog.get_model(s.base_model)
    params = param_counts(arch).total
    month = monthly_usd(plan.gpus, gpu_price(s))
    option = Option(tier="api", method="self-host+retrieval", model=arch.name, gpu=plan.gpu, gpus=plan.gpus,
                    gpu_hours=0.0, cost_usd=month, memory_gib_per_gpu=plan.replica_gib / plan.degree,
                    params=float(params), tokens=0.0, serving=plan, usd_per_month=month)
    return with_violations(option, [check_quality_bar(s)] + serving_violations(s, plan),
                           f"cost is per month of serving ({serving_text(plan)}), no training")


# --- training --------------------------------------------------------------------------------------

# A memory saver: (loss, CPU offload). Full fine-tuning runs on a peer stack (the runner trains adapters), and where
# the stock setup fits no GPU count of the cluster the savers those stacks offer are tried in this order before the
# plan is called impossible: torchtune's chunked loss (CEWithChunkedOutputLoss: the logits in 8 chunks, section
# "chunked" of advisor.formulas.memory.logits_bytes; no slower), then FSDP's CPU offload of parameters, gradients and
# optimizer states (torchtune's fsdp_cpu_offload; the step-time model prices its host traffic), then both. LoRA and
# QLoRA use the runner's fused loss already (loss auto).
MemorySaver = tuple[LossKind, bool]
STOCK: MemorySaver = ("auto", False)
MEMORY_SAVERS: dict[str, tuple[MemorySaver, ...]] = {
    "full": (STOCK, ("chunked", False), ("auto", True), ("chunked", True))}
# CPU offload keeps each GPU's shard of the weights, gradients and optimizer states in its host's memory: a plan that
# offloads must fit this much host memory per GPU (NVIDIA's DGX H100 and DGX B200 datasheets: "System Memory 2TB" for
# 8 GPUs; DGX A100 ships 1 or 2 TB). An assumption about your nodes, stated in the remark.
HOST_MEMORY_GIB_PER_GPU = 256.0


def host_gib_per_gpu(setup: TrainingSetup) -> float:
    """Host memory one GPU's offloaded shard takes: the weights and the trainable states (advisor.formulas.memory),
    divided over the GPUs (FSDP shards them before offloading); 0 without CPU offload."""
    if not setup.cpu_offload:
        return 0.0
    return (weight_bytes(setup.arch, setup.method) + sum(trainable_state_bytes(setup))) / setup.gpus / 2**30


class FinetunePlan(Struct, frozen=True):
    setup: TrainingSetup
    memory_gib: float
    gpu_hours: float
    fits: bool
    efficiency: float


def _launch_plan(arch, gpu, seq_len: int, method: Method, gpus: int, calibration: Calibration | None,
                 saver: MemorySaver = STOCK) -> tuple[TrainingSetup, float, float]:
    """The setup as the runner would launch it on `gpus` GPUs (advisor.plan.launch_plan: sharding and gradient
    checkpointing auto) with a memory saver (`MEMORY_SAVERS`), its peak GiB per GPU and executed FLOPs per token."""
    overheads = memory_overheads(gpu, method, calibration)
    constants = (calibration.step_time_constants() if calibration else None) or DEFAULT_STEP_TIME
    return _cached_launch_plan(arch, gpu, seq_len, method, gpus, tuple(sorted(overheads.items())), constants, saver)


# The alternatives search re-costs the same setups on many GPU counts: a pure function of hashable inputs (frozen
# catalog entries), cached; the bound keeps a long-running process (the test suite) from growing without limit.
@functools.lru_cache(maxsize=20000)
def _cached_launch_plan(arch, gpu, seq_len: int, method: Method, gpus: int, overheads: tuple[tuple[str, float], ...],
                        constants, saver: MemorySaver = STOCK) -> tuple[TrainingSetup, float, float]:
    loss, offload = saver
    plan = launch_on(TrainingSetup(arch=arch, method=method, seq_len=seq_len, gpus=gpus, loss=loss,
                                   cpu_offload=offload), gpu, dict(overheads), constants)
    setup = plan.setup
    flops = flops_per_token(arch, setup.seq_len, method, setup.trainable_params, setup.gradient_checkpointing)
    return setup, plan.memory.total, flops.total


def plan_finetune(s: Situation, method: Method, gpus: int, calibration: Calibration | None = None,
                  saver: MemorySaver = STOCK) -> FinetunePlan:
    """The fine-tune on `gpus` GPUs as the runner would launch it: sharding auto (FSDP where DDP does not fit),
    gradient checkpointing auto (advisor.plan.sizing), the loss and CPU offload of `saver`, GPU-hours from its FLOPs at
    the efficiency advisor.plan.efficiency.training_efficiency gives it (the step-time model, communication and the
    offload's host traffic included, unless calibrated)."""
    arch, gpu = catalog.get_model(s.base_model), catalog.get_gpu(s.gpu)
    setup, memory, flops = _launch_plan(arch, gpu, min(s.seq_len, arch.max_position_embeddings), method, gpus,
                                        calibration, saver)
    rate = training_rate(setup, gpu, calibration)  # the same rule as advisor estimate
    fits = memory <= gpu.usable_memory_gib and host_gib_per_gpu(setup) <= HOST_MEMORY_GIB_PER_GPU
    return FinetunePlan(setup, memory, rate.gpu_hours(s.effective_tokens * s.epochs), fits, rate.efficiency)


def saver_counts(saver: MemorySaver, counts: list[int]) -> list[int]:
    """The GPU counts a saver can run on: CPU offload moves FSDP's shards and needs 2 or more GPUs."""
    return [n for n in counts if not saver[1] or n > 1]


def cost_finetune(s: Situation, method: Method, calibration: Calibration | None = None,
                  counts: list[int] | None = None) -> Option:
    """GPU count, GPU-hours, dollars, memory and wall days of fine-tuning the base model on the effective tokens:
    on the user's cluster, the count `choose_gpu_count` picks (or one of `counts`, e.g. a proposal's own), with the
    first of the method's `MEMORY_SAVERS` under which some count fits."""
    gpu = catalog.get_gpu(s.gpu)
    savers = MEMORY_SAVERS.get(method, (STOCK,))
    chosen, plans, saver = None, {}, STOCK
    for saver in savers:
        plans = {n: plan_finetune(s, method, n, calibration, saver)
                 for n in saver_counts(saver, counts or valid_gpu_counts(s.gpus))}
        chosen = choose_gpu_count([CountPlan(n, p.fits, p.gpu_hours, p.gpu_hours / (n * s.availability) / 24)
                                   for n, p in plans.items()], deadline_days(s)[0])
        if chosen is not None:
            break
    violations: list[Violation | None] = []
    if chosen is None:  # nothing fits on the cluster: cost it on the fewest GPUs that would hold it
        largest = max(counts or valid_gpu_counts(s.gpus))
        fewest = [(n, i) for i, candidate in enumerate(savers)
                  if (n := next((n for n in saver_counts(candidate, valid_gpu_counts(MAX_SEARCH_GPUS)) if n > largest
                                 and plan_finetune(s, method, n, calibration, candidate).fits), None)) is not None]
        needed, which = min(fewest) if fewest else (None, 0)
        saver = savers[which]
        violations.append(check_gpus(needed, gpu.name, replace_gpus(s, largest)))
        n = needed
    else:
        n = chosen.gpus
    tier: Tier = "full" if method == "full" else "peft"
    arch = catalog.get_model(s.base_model)
    tokens = s.effective_tokens * s.epochs
    if n is None:
        option = Option(tier=tier, method=method, model=arch.name, gpu=gpu.name, gpus=0, gpu_hours=math.inf,
                        cost_usd=math.inf, memory_gib_per_gpu=None, params=float(param_counts(arch).total), tokens=tokens,
                        remark=logits_hint(s, method, savers[-1], calibration))
        serving = serving_for(s, arch)
        return with_violations(with_serving(option, serving), violations + serving_violations(s, serving))
    plan = plans.get(n) or plan_finetune(s, method, n, calibration, saver)
    wall = plan.gpu_hours / (n * s.availability) / 24
    option = Option(tier=tier, method=method, model=arch.name, gpu=gpu.name, gpus=n, gpu_hours=plan.gpu_hours,
                    cost_usd=cost_usd(plan.gpu_hours, gpu_price(s)), memory_gib_per_gpu=plan.memory_gib,
                    params=float(param_counts(arch).total), tokens=tokens, wall_days=wall,
                    sharding=decided_sharding(plan.setup),
                    gradient_checkpointing=plan.setup.gradient_checkpointing, efficiency=plan.efficiency,
                    loss=saver[0], cpu_offload=saver[1], remark=saver_remark(saver))
    option = with_interval(option, gpu, method, describe(arch).is_moe)
    if saver[1]:  # no published row measures CPU offload of full fine-tuning: the interval cannot vouch for it
        option = replace(option, extrapolating="extrapolating: CPU offload of full fine-tuning has no published row; "
                                               "its CPU optimizer step is a lower bound")
    serving = serving_for(s, arch)
    option = with_serving(option, serving)
    violations += [check_budget(option.cost_usd, s), check_deadline(wall, n, s)] + serving_violations(s, serving)
    return with_violations(option, violations)


def saver_text(saver: MemorySaver) -> str:
    """A memory saver in words ('' for the stock setup)."""
    needs = ["a chunked loss (torchtune's CEWithChunkedOutputLoss)"] if saver[0] == "chunked" else []
    needs += [f"FSDP CPU offload (torchtune's fsdp_cpu_offload; at most {HOST_MEMORY_GIB_PER_GPU:.0f} GiB of host "
              "memory per GPU assumed; its CPU optimizer step is priced at the host's DRAM bandwidth, a lower "
              "bound)"] if saver[1] else []
    return " and ".join(needs)


def saver_remark(saver: MemorySaver) -> str:
    """What a plan that needs a memory saver says it needs ('' for the stock setup)."""
    if saver == STOCK:
        return ""
    return f"needs {saver_text(saver)}: without it the stock setup fits no GPU count you have"


# A plan that fits on no GPU count is explained by its logits when they take at least this share of the card at the
# largest count tried: sharding divides the states, never the logits of a micro-batch.
LOGITS_HINT_SHARE = 0.25


def logits_hint(s: Situation, method: Method, saver: MemorySaver = STOCK,
                calibration: Calibration | None = None) -> str:
    """Why a fine-tune fits on no GPU count, when the logits are what does not fit (with the last memory saver
    tried): they grow with the sequence, whatever the sharding. Empty otherwise."""
    arch, gpu = catalog.get_model(s.base_model), catalog.get_gpu(s.gpu)
    seq = min(s.seq_len, arch.max_position_embeddings)
    setup, _, _ = _launch_plan(arch, gpu, seq, method, MAX_SEARCH_GPUS, calibration, saver)
    logits = memory_per_gpu(setup, **memory_overheads(gpu, method, calibration)).logits
    if logits < LOGITS_HINT_SHARE * gpu.usable_memory_gib:
        return ""
    tried = f", even with {saver_text(saver)}" if saver != STOCK else ""
    return (f"the logits take {logits:.1f} GiB per GPU at {seq} tokens whatever the sharding{tried}: shorten "
            "--seq-len")


def replace_gpus(s: Situation, gpus: int) -> Situation:
    return s if gpus == s.gpus else replace(s, gpus=gpus)


def model_state_gib_per_gpu(params: float, gpus: int) -> float:
    """Training states of a model trained from scratch, fully sharded: MODEL_STATE_BYTES_PER_PARAM x N / GPUs, in GiB
    (ZeRO-3; activations come on top, so this is a lower bound on the peak)."""
    return MODEL_STATE_BYTES_PER_PARAM * params / gpus / 2**30


# A scaling law gives the compute-optimal model a parameter count, not a shape; the step-time model needs one. Llama's
# dense shapes: d_model = 128 x layers (Llama-2 7B 4096 / 32, 13B 5120 / 40; Touvron et al. 2023, Llama 2, Table 1 and
# the released configs), heads of 128, a SwiGLU MLP of 8/3 d rounded up to a multiple of 256 (Touvron et al. 2023,
# LLaMA, §2.2 and Meta's reference model.py `multiple_of=256`), a 32,000-token vocabulary, untied.
PRETRAIN_HIDDEN_PER_LAYER = 128
PRETRAIN_HEAD_DIM = 128
PRETRAIN_MLP_MULTIPLE = 256
PRETRAIN_VOCAB = 32000
PRETRAIN_MAX_LAYERS = 256


def pretraining_arch(params: float, seq_len: int = 4096) -> ModelArch:
    """The Llama-shaped dense model (constants above) whose parameter count is nearest `params`."""
    def shaped(layers: int) -> ModelArch:
        d = PRETRAIN_HIDDEN_PER_LAYER * layers
        mlp = PRETRAIN_MLP_MULTIPLE * math.ceil(8 * d / 3 / PRETRAIN_MLP_MULTIPLE)
        return ModelArch(
            name=f"{human(params)}-param Llama-shaped", hidden_size=d, intermediate_size=mlp, num_hidden_layers=layers,
            num_attention_heads=d // PRETRAIN_HEAD_DIM, vocab_size=PRETRAIN_VOCAB, max_position_embeddings=max(4096, seq_len))
    low, high = 1, PRETRAIN_MAX_LAYERS  # the count grows with the layers: bisect for the first at or above params
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if param_counts(shaped(mid)).total < params else (low, mid)
    return min((shaped(n) for n in {max(1, low - 1), low}), key=lambda a: abs(math.log(param_counts(a).total / params)))


class PretrainPlan(Struct, frozen=True):
    setup: TrainingSetup
    gpu_hours: float


def plan_pretrain(arch: ModelArch, tokens: float, gpu, seq_len: int, gpus: int,
                  calibration: Calibration | None = None) -> PretrainPlan:
    """Pretraining `arch` on `tokens` on `gpus` GPUs, launched as a full fine-tune would be (`_launch_plan`: FSDP where
    DDP does not fit, checkpointing where memory needs it); GPU-hours from its executed FLOPs at the efficiency
    advisor.plan.efficiency.training_efficiency gives it (the step-time model, communication included, unless
    calibrated), as the fine-tune options are costed."""
    setup, _, flops = _launch_plan(arch, gpu, seq_len, "full", gpus, calibration)
    return PretrainPlan(setup, training_rate(setup, gpu, calibration).gpu_hours(tokens))


def _pretrain_option(s: Situation, params: float, tokens: float, label: str,
                     calibration: Calibration | None = None) -> Option:
    """Pretraining a Llama-shaped model of `params` (`pretraining_arch`) on `tokens`, costed by `plan_pretrain` on the
    GPU count `choose_gpu_count` picks among those whose model states fit, with the serving of the model it trains."""
    gpu = catalog.get_gpu(s.gpu)
    arch = pretraining_arch(params, s.seq_len)
    plan_on = lambda n: plan_pretrain(arch, tokens, gpu, s.seq_len, n, calibration)  # noqa: E731
    fits = lambda n: model_state_gib_per_gpu(params, n) <= gpu.memory_gib  # noqa: E731
    plans = {n: plan_on(n) for n in valid_gpu_counts(s.gpus)}
    chosen = choose_gpu_count([CountPlan(n, fits(n), p.gpu_hours, p.gpu_hours / (n * s.availability) / 24)
                               for n, p in plans.items()], deadline_days(s)[0])
    violations: list[Violation | None] = []
    if chosen is None:
        n = next((n for n in valid_gpu_counts(MAX_SEARCH_GPUS) if fits(n)), None)
        violations.append(check_gpus(n, gpu.name, s, "to hold the model's training states"))
        n = n or MAX_SEARCH_GPUS
    else:
        n = chosen.gpus
    plan = plans[n] if n in plans else plan_on(n)
    hours = plan.gpu_hours
    wall = hours / (n * s.availability) / 24
    option = Option(tier="pretrain", method="pretrain", model=f"{human(params)}-param {label}",
                    gpu=gpu.name, gpus=n, gpu_hours=hours, cost_usd=cost_usd(hours, gpu_price(s)),
                    memory_gib_per_gpu=model_state_gib_per_gpu(params, n), params=params,
                    tokens=tokens, wall_days=wall, sharding=decided_sharding(plan.setup))
    option = with_interval(option, gpu, "full", False)
    serving = serving_for(s, arch)
    option = with_serving(option, serving)
    violations += [check_budget(option.cost_usd, s), check_deadline(wall, n, s)] + serving_violations(s, serving)
    return with_violations(option, violations, "GiB/GPU: training states only (activations extra)")


# Pretraining is sized to beat the base by at least this much predicted loss (nats/token, Hoffmann et al. 2022's fit):
# a model predicted to tie is no reason to pretrain.
BEAT_BASE_MARGIN = 0.01
# Model sizes the pretraining search costs, log-spaced between the smallest that reaches the target on your data and
# the training-compute-optimal size for the target (Sardana et al. 2024: with inference counted the optimum is never
# larger than Chinchilla's).
PRETRAIN_SIZE_CANDIDATES = 12


def pretraining_target_loss(s: Situation) -> float | None:
    """The loss a model pretrained on your data must reach: the base's predicted loss less BEAT_BASE_MARGIN (Hoffmann
    et al. 2022 eq. 2, on the base's published pretraining tokens); None where those are unpublished."""
    base = catalog.get_model(s.base_model)
    if not base.pretraining_tokens:
        return None
    return scaling.parametric_loss(param_counts(base).total, base.pretraining_tokens, scaling.HOFFMANN2022) - BEAT_BASE_MARGIN


def lifetime_cost(option: Option) -> float:
    """Training plus serving over the lifetime the inference-aware rule counts (findings.SERVING_YEARS)."""
    serving = (option.usd_per_month or 0.0) * 12 * SERVING_YEARS
    return option.cost_usd + serving


def cost_pretrain(s: Situation, calibration: Calibration | None = None) -> Option:
    """Pretraining sized to the target and the constraints: among models that reach the loss that beats the base
    (`pretraining_target_loss`) on no more tokens than you have, the one of least training + lifetime serving cost
    (Sardana et al. 2024's objective, in dollars: `lifetime_cost`) that keeps the budget and deadline, or the least
    costly when none does. Where your data cannot beat the base (or the base's tokens are unpublished): the
    compute-optimal model for your tokens (20 per parameter), which the beats_base check then flags."""
    fit = scaling.HOFFMANN2022
    data = s.effective_tokens
    target = pretraining_target_loss(s)
    reachable = target is not None and target - fit.E - fit.B / data**fit.beta > 0
    if target is None or not reachable or not rule_pretraining_viability(s).viable:
        point = scaling.compute_optimal_for_tokens(data, "chinchilla-rule")
        return _pretrain_option(s, point.params, point.tokens, "compute-optimal", calibration)
    # smallest N that reaches the target on all the data; the training-optimal N for the target
    n_low = (fit.A / (target - fit.E - fit.B / data**fit.beta)) ** (1 / fit.alpha)
    n_high = max(n_low, scaling.inference_aware_optimum(target, 0.0, "hoffmann2022").params)
    steps = PRETRAIN_SIZE_CANDIDATES - 1
    sizes = sorted({n_low * (n_high / n_low) ** (i / steps) for i in range(steps + 1)})
    candidates = []
    for n in sizes:
        tokens = min(data, scaling.tokens_for_loss(n, target, fit))
        candidates.append(_pretrain_option(s, n, tokens, f"sized to beat {s.base_model}", calibration))
    keeps = [o for o in candidates if not {v.constraint for v in o.why_not} & {"budget", "deadline", "gpus"}]
    best = min(keeps or candidates, key=lifetime_cost)
    return with_violations(best, [], best.remark + f"; sized to the least training + {SERVING_YEARS}-year serving cost "
                                              f"reaching loss {target:.3f} (Sardana et al. 2024) on <= your tokens")


OPTION_KEYS = ("api", "self_host", "lora", "qlora", "full", "pretrain")
TRAINING_KEYS = METHODS  # the fine-tunes among them


def beats_base_violation(s: Situation) -> Violation | None:
    """Pretraining from scratch breaks the `beats_base` bar when the model it trains is predicted to lose to the base."""
    result = rule_pretraining_viability(s)
    if result.viable:
        return None
    if result.base_model_loss is None:
        return Violation(constraint="beats_base", needed=result.tokens_needed, limit=s.effective_tokens,
                         detail=f"beats_base: a model the size of {s.base_model} needs ~{human(result.tokens_needed)} "
                                f"tokens, you have {human(s.effective_tokens)}")
    return Violation(constraint="beats_base", needed=result.own_model_loss, limit=result.base_model_loss,
                     detail=f"beats_base: predicted loss {result.own_model_loss:.3f} vs {s.base_model}'s "
                            f"{result.base_model_loss:.3f} (same fit); continue pretraining or fine-tune the base instead")


def cost_option(s: Situation, key: str, calibration: Calibration | None = None) -> Option:
    """One option of the hierarchy, costed on the user's cluster with the constraints it breaks."""
    if key == "api":
        return cost_api(s)
    if key == "self_host":
        return cost_self_host(s)
    if key == "pretrain":
        return with_violations(cost_pretrain(s, calibration), [beats_base_violation(s)])
    return cost_finetune(s, cast(Method, key), calibration)  # the remaining keys are TRAINING_KEYS


def cost_options(s: Situation, calibration: Calibration | None = None) -> dict[str, Option]:
    return {key: cost_option(s, key, calibration) for key in OPTION_KEYS}
