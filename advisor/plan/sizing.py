"""Sizing policies: which sharding, whether to recompute, how many GPUs, what would fit.

Each decision is a named function with its threshold a named, documented constant beside it; the memory it weighs
comes from advisor.formulas.memory, which never calls back here.
"""

import math

from msgspec import Struct
from msgspec.structs import replace

from advisor.catalog.types import Gpu
from advisor.formulas.memory import MemoryBreakdown, memory_per_gpu
from advisor.formulas.setup import TrainingSetup

# launch.strategy: auto replicates the model on every GPU (DDP, the least communication) while one replica's peak
# stays under this many GiB: it then fits an 80 GB card (H100/A100-80GB) with room for the estimate's error and the
# allocator; larger replicas are sharded (FSDP, ZeRO-3: Rajbhandari et al. 2020 §5).
DDP_MAX_REPLICA_GIB = 70.0


class ShardingChoice(Struct, frozen=True):
    """How the model is spread over the GPUs: none (one GPU), ddp (a replica each) or fsdp (sharded)."""
    strategy: str
    reason: str


def choose_sharding(setup: TrainingSetup) -> ShardingChoice:
    """launch.strategy: auto. DDP when a full replica's estimated peak is at most DDP_MAX_REPLICA_GIB, FSDP beyond;
    an explicit ddp or fsdp is kept, and one GPU needs none."""
    if setup.gpus == 1:
        return ShardingChoice("none", "one GPU")
    if setup.sharding != "auto":
        return ShardingChoice(setup.sharding, "set in the recipe")
    replica = memory_per_gpu(replace(setup, gpus=1)).total
    if replica <= DDP_MAX_REPLICA_GIB:
        return ShardingChoice("ddp", f"auto; a replica's peak, {replica:.1f} GiB, is within {DDP_MAX_REPLICA_GIB:.0f} GiB")
    return ShardingChoice("fsdp", f"auto; a replica's peak, {replica:.1f} GiB, exceeds {DDP_MAX_REPLICA_GIB:.0f} GiB")


def with_sharding(setup: TrainingSetup) -> TrainingSetup:
    """The setup with its sharding decided (choose_sharding), ready for advisor.formulas.memory."""
    strategy = choose_sharding(setup).strategy
    return setup if strategy == "none" else replace(setup, sharding=strategy)


def planned_memory(setup: TrainingSetup, **overheads) -> MemoryBreakdown:
    """Peak memory per GPU once the sharding is decided."""
    return memory_per_gpu(with_sharding(setup), **overheads)


def gpus_needed(setup: TrainingSetup, gpu: Gpu, max_gpus: int = 4096, **overheads) -> int | None:
    """Fewest GPUs of this type whose per-GPU memory fits (FSDP beyond one GPU), or None if none up to max_gpus."""
    for gpus in [1] + [2**k for k in range(1, int(math.log2(max_gpus)) + 1)]:
        candidate = replace(setup, gpus=gpus, sharding="fsdp" if gpus > 1 else "auto")
        if memory_per_gpu(candidate, **overheads).total <= gpu.usable_memory_gib:
            return gpus
    return None


# train.gradient_checkpointing: auto leaves recomputation off only when the estimated peak without it stays under
# this share of the GPU's memory. The margin covers the estimate's error (within 5% of measured peaks on CPU,
# tests/test_memory_peak.py; not yet checked on a GPU, docs/accuracy.md) and allocator fragmentation: running out of
# memory loses the run, while checkpointing costs one more forward of the decoder layers.
AUTO_CHECKPOINTING_MAX_SHARE = 0.90


def choose_checkpointing(setup: TrainingSetup, memory_gib: float | None, overheads: dict | None = None) -> tuple[bool, str]:
    """train.gradient_checkpointing: auto. Off when the estimated peak without it is at most
    AUTO_CHECKPOINTING_MAX_SHARE of `memory_gib` (the GPU's), on otherwise; off with no GPU to size against (a CPU
    run). Recomputation costs one more forward of the decoder layers (`flops_per_token`), so it is paid only when
    memory needs it. Returns the choice and a one-line reason for the estimate and the run report."""
    if memory_gib is None:
        return False, "auto; no GPU memory to size against"
    without = planned_memory(replace(setup, gradient_checkpointing=False), **(overheads or {})).total
    budget = AUTO_CHECKPOINTING_MAX_SHARE * memory_gib
    share = f"{AUTO_CHECKPOINTING_MAX_SHARE:.0%} of {memory_gib:.1f} GiB"
    if without <= budget:
        return False, f"auto; the peak without it, {without:.1f} GiB, is within {budget:.1f} GiB ({share})"
    return True, f"auto; the peak without it, {without:.1f} GiB, exceeds {budget:.1f} GiB ({share})"


def suggest_fits(setup: TrainingSetup, gpu: Gpu, overheads: dict) -> list[str]:
    """Changes that bring the per-GPU peak under the GPU's memory, each with its estimated peak: single changes
    first, then the cheapest combination of them, then more GPUs with FSDP."""
    changes = []
    if setup.method == "lora":
        changes.append(("use QLoRA (add a `quant:` section)", {"method": "qlora"}))
    if setup.micro_batch > 1:
        changes.append(("set train.micro_batch: 1 (raise train.grad_accum to keep the batch)", {"micro_batch": 1}))
    if not setup.gradient_checkpointing:
        changes.append(("set train.gradient_checkpointing: true", {"gradient_checkpointing": True}))
    out = []
    for text, change in changes:
        peak = planned_memory(replace(setup, **change), **overheads).total
        if peak <= gpu.usable_memory_gib:
            out.append(f"{text}: {peak:.1f} GiB")
    if not out and len(changes) > 1:
        combined: dict = {}
        for i, (_, change) in enumerate(changes):
            combined.update(change)
            peak = planned_memory(replace(setup, **combined), **overheads).total
            if i and peak <= gpu.usable_memory_gib:
                out.append(" and ".join(text for text, _ in changes[: i + 1]) + f": {peak:.1f} GiB")
                break
    needed = gpus_needed(setup, gpu, **overheads)
    if needed and needed > setup.gpus:
        peak = memory_per_gpu(replace(setup, gpus=needed, sharding="fsdp"), **overheads).total
        out.append(f"use {needed} GPUs with FSDP (--nproc-per-node {needed}, launch.strategy: fsdp): {peak:.1f} GiB each")
    return out or [f"no change tried fits {gpu.name}; combine QLoRA, checkpointing, a smaller batch and more GPUs"]


# Precision: bf16 needs an Ampere-or-newer GPU (the catalog's `Gpu.bf16`; NVIDIA's V100 and T4 datasheets list FP16
# tensor cores and no bf16). On such a GPU a bf16 recipe fails at its first bf16 kernel or runs emulated, far below the
# peak the estimate assumes; fp16 has the same width (the memory estimate holds) and is the rate the catalog gives.
BF16_FIXES = {"model.dtype": "model.dtype: float16 (or auto, which picks float16 there)",
              "quant.compute_dtype": "quant.compute_dtype: float16"}


def bf16_conflict(gpu: Gpu | None, model_dtype: str, compute_dtype: str | None = None) -> str | None:
    """The run asks for bf16 (model.dtype or, for QLoRA, quant.compute_dtype) on a GPU without bf16: what to change,
    or None when the precision is fine (no GPU, a GPU with bf16, or no bf16 asked for; `auto` picks float16 there)."""
    if gpu is None or gpu.bf16:
        return None
    asked = [key for key, value in (("model.dtype", model_dtype), ("quant.compute_dtype", compute_dtype)) if value == "bfloat16"]
    if not asked:
        return None
    return (f"{' and '.join(k + ': bfloat16' for k in asked)} on the {gpu.name}, which has no bf16: set "
            + " and ".join(BF16_FIXES[k] for k in asked))


def bf16_note(gpu: Gpu) -> str | None:
    """For plans that name no dtype (advisor recommend): the line telling the user to train in fp16 on a GPU without bf16."""
    if gpu.bf16:
        return None
    return f"the {gpu.name} has no bf16: recipes for it train in fp16 ({BF16_FIXES['model.dtype']}; for QLoRA " \
           f"{BF16_FIXES['quant.compute_dtype']})"


# --- how many of the available GPUs a plan uses ------------------------------------------------------------------

def valid_gpu_counts(available: int) -> list[int]:
    """The data-parallel sizes a plan may use: powers of 2 up to the GPUs available (how FSDP/DDP jobs are sized on
    nodes of 8 and how `gpus_needed` searches), 1 included."""
    return [2**k for k in range(int(math.log2(max(available, 1))) + 1)]


# Two plans whose GPU-hours differ by less than this share cost the same within the estimate's own error; the policy
# then prefers the one that finishes sooner (more GPUs), since the GPUs are the user's.
GPU_HOURS_TIE_SHARE = 0.01


class CountPlan(Struct, frozen=True):
    """One candidate GPU count for a job: whether it fits memory, its GPU-hours and its wall-clock days."""
    gpus: int
    fits: bool
    gpu_hours: float
    wall_days: float


def choose_gpu_count(plans: list[CountPlan], deadline_days: float) -> CountPlan | None:
    """The GPU count a plan runs on: among counts that fit in memory, those that meet the deadline; of them the
    fewest GPU-hours (cost is GPU-hours x one price), ties within GPU_HOURS_TIE_SHARE going to the shortest wall time.
    When no fitting count meets the deadline, the fastest fitting one (the caller reports the deadline it misses).
    None when no count fits."""
    fitting = [p for p in plans if p.fits]
    if not fitting:
        return None
    meeting = [p for p in fitting if p.wall_days <= deadline_days]
    if not meeting:
        return min(fitting, key=lambda p: (p.wall_days, p.gpu_hours))
    cheapest = min(p.gpu_hours for p in meeting)
    tied = [p for p in meeting if p.gpu_hours <= cheapest * (1 + GPU_HOURS_TIE_SHARE)]
    return min(tied, key=lambda p: (p.wall_days, p.gpus))
