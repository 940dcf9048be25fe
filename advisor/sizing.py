"""Sizing policies: which sharding, whether to recompute, how many GPUs, what would fit.

Each decision is a named function with its threshold a named, documented constant beside it; the memory it weighs
comes from advisor.memory, which never calls back here.
"""

import math
from dataclasses import dataclass, replace

from advisor.catalog import Gpu
from advisor.memory import MemoryBreakdown, memory_per_gpu
from advisor.training import TrainingSetup

# launch.strategy: auto replicates the model on every GPU (DDP, the least communication) while one replica's peak
# stays under this many GiB: it then fits an 80 GB card (H100/A100-80GB) with room for the estimate's error and the
# allocator; larger replicas are sharded (FSDP, ZeRO-3: Rajbhandari et al. 2020 §5).
DDP_MAX_REPLICA_GIB = 70.0


@dataclass(frozen=True)
class ShardingChoice:
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
    """The setup with its sharding decided (choose_sharding), ready for advisor.memory."""
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
