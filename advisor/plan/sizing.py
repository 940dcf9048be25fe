"""Sizing policies: which sharding, whether to recompute, how many GPUs, what would fit.

Each decision is a named function with its threshold a named, documented constant beside it; the memory it weighs
comes from advisor.formulas.memory, which never calls back here.
"""

import math

from msgspec import Struct
from msgspec.structs import replace

from advisor.catalog.types import Gpu
from advisor.core.errors import AdvisorError
from advisor.formulas.memory import memory_per_gpu
from advisor.formulas.step_time import DEFAULT_STEP_TIME, StepTimeConstants, step_seconds, step_work
from advisor.formulas.setup import TrainingSetup

# launch.strategy: auto shards (FSDP, ZeRO-3: Rajbhandari et al. 2020 §5) when one replica's peak exceeds this share
# of the card's usable memory, the margin AUTO_CHECKPOINTING_MAX_SHARE leaves for the estimate's error and the
# allocator. Where a replica fits, DDP and FSDP are both possible and the step-time model picks the faster: DDP
# all-reduces gradients once, FSDP gathers weights twice and reduce-scatters gradients but steps 1/N of the optimizer
# state (full fine-tunes at small batches often run faster sharded).
DDP_MAX_REPLICA_SHARE = 0.90
# A replica that fits is sharded only when the step-time model has FSDP at least this much faster: below it the two
# are within the model's own error on published rows (docs/accuracy.md), and DDP is the simpler run (no resharding,
# every rank holds the whole model it saves).
FSDP_MIN_SPEEDUP = 1.10


class ShardingChoice(Struct, frozen=True):
    """How the model is spread over the GPUs: none (one GPU), ddp (a replica each) or fsdp (sharded)."""
    strategy: str
    reason: str


def choose_sharding(setup: TrainingSetup, gpu: Gpu | None, overheads: dict, checkpointing: bool | None = None,
                    constants: StepTimeConstants = DEFAULT_STEP_TIME) -> ShardingChoice:
    """launch.strategy: auto. FSDP when a full replica's estimated peak (checkpointing as `auto` would set it, or as
    given) exceeds DDP_MAX_REPLICA_SHARE of the card's usable memory; where it fits, DDP unless the step-time model has
    FSDP at least FSDP_MIN_SPEEDUP faster; with no GPU to size against (a CPU run), DDP. An explicit ddp or fsdp is kept; CPU
    offload needs FSDP (chosen under auto, refused with ddp or one GPU); one GPU needs none."""
    if setup.cpu_offload and (setup.gpus == 1 or setup.sharding == "ddp"):
        where = "one GPU" if setup.gpus == 1 else "launch.strategy ddp, which keeps a full replica on each GPU"
        raise AdvisorError(f"CPU offload moves FSDP's parameter shards to CPU memory and needs FSDP over 2 or more "
                           f"GPUs; with {where} it would move nothing: use 2 or more GPUs with FSDP, or drop it")
    if setup.gpus == 1:
        return ShardingChoice("none", "one GPU")
    if setup.sharding != "auto":
        return ShardingChoice(setup.sharding, "set in the recipe")
    if setup.cpu_offload:
        return ShardingChoice("fsdp", "auto; CPU offload keeps FSDP's shards in CPU memory")
    if gpu is None:
        return ShardingChoice("ddp", "auto; no GPU memory to size against (a replica per process)")
    usable = gpu.usable_memory_gib

    def decided(strategy: str) -> TrainingSetup:
        candidate = replace(setup, sharding=strategy)
        on = checkpointing if checkpointing is not None else choose_checkpointing(candidate, usable, overheads)[0]
        return replace(candidate, gradient_checkpointing=on)

    ddp = decided("ddp")
    peak, limit = memory_per_gpu(ddp, **overheads).total, DDP_MAX_REPLICA_SHARE * usable
    share = f"{DDP_MAX_REPLICA_SHARE:.0%} of {usable:.1f} GiB usable"
    if peak > limit:
        return ShardingChoice("fsdp", f"auto; a replica's peak, {peak:.1f} GiB, exceeds {limit:.1f} GiB ({share})")
    speed = {s: step_seconds(step_work(c, s), gpu, c.compile, constants).tokens_per_second
             for s, c in (("ddp", ddp), ("fsdp", decided("fsdp")))}
    faster = "fsdp" if speed["fsdp"] >= FSDP_MIN_SPEEDUP * speed["ddp"] else "ddp"
    rule = "FSDP is" if faster == "fsdp" else f"FSDP is not {FSDP_MIN_SPEEDUP - 1:.0%}"
    return ShardingChoice(faster, f"auto; a replica's peak, {peak:.1f} GiB, is within {limit:.1f} GiB ({share}), and "
                          f"{rule} faster ({speed['ddp']:,.0f} tokens/s per GPU with DDP, {speed['fsdp']:,.0f} with "
                          "FSDP; step-time model)")


# train.gradient_checkpointing: auto leaves recomputation off only when the estimated peak without it stays under
# this share of the GPU's memory. The margin covers the estimate's error (within 5% of measured peaks on CPU,
# tests/runners/test_memory_peak.py; not yet checked on a GPU, docs/accuracy.md) and allocator fragmentation: running out of
# memory loses the run, while checkpointing costs one more forward of the decoder layers.
AUTO_CHECKPOINTING_MAX_SHARE = 0.90


def choose_checkpointing(setup: TrainingSetup, memory_gib: float | None, overheads: dict | None = None) -> tuple[bool, str]:
    """train.gradient_checkpointing: auto, for a setup whose sharding is decided. Off when the estimated peak without
    it is at most AUTO_CHECKPOINTING_MAX_SHARE of `memory_gib` (the GPU's usable memory), on otherwise; off with no
    GPU to size against (a CPU run). Recomputation costs one more forward of the decoder layers (`flops_per_token`),
    so it is paid only when memory needs it. Returns the choice and a one-line reason for the estimate and the run
    report."""
    if memory_gib is None:
        return False, "auto; no GPU memory to size against"
    without = memory_per_gpu(replace(setup, gradient_checkpointing=False), **(overheads or {})).total
    budget = AUTO_CHECKPOINTING_MAX_SHARE * memory_gib
    share = f"{AUTO_CHECKPOINTING_MAX_SHARE:.0%} of {memory_gib:.1f} GiB"
    if without <= budget:
        return False, f"auto; the peak without it, {without:.1f} GiB, is within {budget:.1f} GiB ({share})"
    return True, f"auto; the peak without it, {without:.1f} GiB, exceeds {budget:.1f} GiB ({share})"


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
