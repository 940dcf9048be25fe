"""How a model is served: its precision, its tensor x pipeline layout per replica, how many replicas the volume
needs at its peak, and what a month costs. Every option of the decision carries the serving plan of the model it
produces (advisor.decide.costing): on premises it must fit the GPUs you have.

The bytes and GPU time are the formulas of advisor.formulas.serving; the choices are named policies below.
"""

from __future__ import annotations

import math

from msgspec import Struct

from advisor.catalog.types import Gpu, ModelArch
from advisor.formulas.params import param_counts
from advisor.formulas.serving import (
    ServingPrecision, gpu_seconds_per_request, replica_gib, replicas_needed,
)

# Precisions serving tries, in the order a team would: bf16 first (the model as trained), then FP8 (near-lossless
# on the models vLLM publishes FP8 checkpoints of), then INT4 weight-only (AWQ/GPTQ: evaluate quality before you
# commit to it).
SERVING_PRECISION_ORDER: tuple[ServingPrecision, ...] = ("bf16", "fp8", "int4")

# Which GPU generations serve each quantised precision in vLLM (docs.vllm.ai, "Supported Hardware" for quantization,
# v0.14: FP8 W8A8 on Ada, Hopper and AMD; "FP8 models will run on compute capability >= 7.5 (Turing) as weight-only
# W8A16, utilizing FP8 Marlin" (FP8 W8A8 page); GPTQ on Volta and later, AWQ from Turing; neither GPTQ nor AWQ on
# AMD GPUs in that table). Blackwell serves both (FP8 W8A8 page: "Ada Lovelace, Hopper, and Blackwell").
PRECISION_GENERATIONS: dict[str, frozenset[str]] = {
    "bf16": frozenset({"Volta", "Turing", "Ampere", "Ada", "Hopper", "Blackwell", "CDNA3", "CDNA4", ""}),
    "fp8": frozenset({"Turing", "Ampere", "Ada", "Hopper", "Blackwell", "CDNA3", "CDNA4"}),
    "int4": frozenset({"Volta", "Turing", "Ampere", "Ada", "Hopper", "Blackwell"}),
}

# Tensor parallelism stays inside one server of up to this many GPUs (vLLM and TensorRT-LLM deployments shard a
# replica by heads within a node; Shoeybi et al. 2019 §3); a replica larger than that adds pipeline stages across
# nodes (vLLM's pipeline_parallel_size).
SERVING_MAX_TENSOR_PARALLEL = 8

# Replicas are sized for the peak rate, this many times the day's average (an assumption, stated: traffic that
# follows a working day peaks at about twice its daily mean; --peak-factor sets yours, 1 for a flat batch load).
DEFAULT_PEAK_TO_AVERAGE = 2.0

# A month of serving, in days (365.25 / 12, rounded).
DAYS_PER_MONTH = 30.4


def monthly_usd(gpus: int, price_usd_per_gpu_hour: float) -> float:
    """A month of `gpus` GPUs at an hourly price: 24 hours x DAYS_PER_MONTH days."""
    return gpus * price_usd_per_gpu_hour * 24 * DAYS_PER_MONTH


class ServingPlan(Struct, frozen=True, kw_only=True):
    """The serving of one model at a stated volume: precision, layout per replica, replicas, GPUs, a month's cost,
    and whether it fits the GPUs you have (None: no limit, renting)."""
    model: str
    gpu: str
    precision: ServingPrecision
    tensor_parallel: int
    pipeline_parallel: int
    replicas: int
    gpus: int                     # tensor x pipeline x replicas
    replica_gib: float            # one replica's weights + KV cache
    gpu_days_per_request: float
    peak_to_average: float
    usd_per_month: float | None   # None: the GPU has no price
    fits: bool                    # one replica fits in its tensor x pipeline GPUs
    within_gpus: bool | None = None  # the plan fits the GPUs you have (None: no limit given)

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel

    @property
    def degree(self) -> int:
        """GPUs per replica (tensor x pipeline)."""
        return self.gpus_per_replica


def serving_precisions(gpu: Gpu) -> list[ServingPrecision]:
    """The precisions of SERVING_PRECISION_ORDER that `gpu`'s generation serves (PRECISION_GENERATIONS)."""
    return [p for p in SERVING_PRECISION_ORDER if gpu.generation in PRECISION_GENERATIONS[p]]


def tensor_parallel_degrees(num_attention_heads: int, limit: int = SERVING_MAX_TENSOR_PARALLEL) -> list[int]:
    """Valid tensor-parallel degrees for serving: powers of 2 up to `limit` that divide the attention heads
    (Megatron-LM splits attention by heads, Shoeybi et al. 2019 §3; vLLM requires the head count divisible by the
    degree)."""
    out, d = [], 1
    while d <= limit:
        if num_attention_heads % d == 0:
            out.append(d)
        d *= 2
    return out


def replica_layout(arch: ModelArch, gpu: Gpu, precision: ServingPrecision) -> tuple[int, int, bool]:
    """(tensor, pipeline, fits): the smallest tensor-parallel degree (`tensor_parallel_degrees`, within a node)
    whose GPUs hold one replica; beyond the largest, pipeline stages of it (at most one per layer)."""
    need = replica_gib(param_counts(arch), precision)
    degrees = tensor_parallel_degrees(arch.num_attention_heads, min(SERVING_MAX_TENSOR_PARALLEL, gpu.nvlink_domain))
    usable = gpu.usable_memory_gib
    for d in degrees:
        if need <= d * usable:
            return d, 1, True
    tp = degrees[-1]
    pp = math.ceil(need / (tp * usable))
    return tp, min(pp, arch.num_hidden_layers), pp <= arch.num_hidden_layers


def plan_serving(arch: ModelArch, gpu: Gpu, precision: ServingPrecision, requests_per_day: float,
                 tokens_per_request: float, output_fraction: float, peak_to_average: float,
                 price_usd_per_gpu_hour: float | None, max_gpus: int | None = None) -> ServingPlan:
    """Serving `arch` on `gpu` in `precision` (replica_layout) with the replicas its peak rate needs
    (advisor.formulas.serving.replicas_needed), a month at the GPU price, and whether it fits `max_gpus`."""
    counts = param_counts(arch)
    tp, pp, fits = replica_layout(arch, gpu, precision)
    per_request = gpu_seconds_per_request(counts.active, tokens_per_request, output_fraction, gpu.peak_flops) / 86400
    replicas = replicas_needed(requests_per_day, peak_to_average, per_request, tp * pp)
    gpus = tp * pp * replicas
    month = monthly_usd(gpus, price_usd_per_gpu_hour) if price_usd_per_gpu_hour is not None else None
    return ServingPlan(model=arch.name, gpu=gpu.name, precision=precision, tensor_parallel=tp, pipeline_parallel=pp,
                       replicas=replicas, gpus=gpus, replica_gib=replica_gib(counts, precision), gpu_days_per_request=per_request,
                       peak_to_average=peak_to_average, usd_per_month=month, fits=fits,
                       within_gpus=None if max_gpus is None else (fits and gpus <= max_gpus))


def choose_serving(arch: ModelArch, gpu: Gpu, requests_per_day: float, tokens_per_request: float,
                   output_fraction: float, peak_to_average: float, price_usd_per_gpu_hour: float | None,
                   max_gpus: int | None = None, monthly_budget_usd: float | None = None) -> ServingPlan:
    """The serving plan a team would run: the first precision of `serving_precisions` (bf16, then FP8, then INT4)
    whose plan fits the GPUs you have (`max_gpus`, on premises) and the monthly budget; when none does, the plan
    that needs the fewest GPUs (then the most precise), so the answer can say by how much it misses."""
    plans = [plan_serving(arch, gpu, p, requests_per_day, tokens_per_request, output_fraction, peak_to_average,
                          price_usd_per_gpu_hour, max_gpus) for p in serving_precisions(gpu)]

    def acceptable(plan: ServingPlan) -> bool:
        within_budget = (monthly_budget_usd is None or plan.usd_per_month is None
                         or plan.usd_per_month <= monthly_budget_usd)
        return plan.fits and plan.within_gpus is not False and within_budget

    chosen = next((p for p in plans if acceptable(p)), None)
    if chosen is None:
        chosen = min(plans, key=lambda p: (not p.fits, p.gpus, SERVING_PRECISION_ORDER.index(p.precision)))
    return chosen
