"""The one plan function: a training setup on a GPU type made launchable — overheads, sharding, checkpointing, the
peak per GPU and whether it fits — as `advisor estimate`, `recommend`'s costing, `review` and the runner all use it.

The choices themselves are the named policies of advisor.plan.sizing; this module applies them in their order and
keeps what each decided with its reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from msgspec import Struct
from msgspec.structs import replace

from advisor.catalog.types import Gpu
from advisor.formulas.memory import MemoryBreakdown, memory_per_gpu
from advisor.formulas.setup import TrainingSetup
from advisor.formulas.step_time import DEFAULT_STEP_TIME, StepTimeConstants
from advisor.plan.sizing import ShardingChoice, choose_checkpointing, choose_sharding, valid_gpu_counts

if TYPE_CHECKING:  # annotations only
    from advisor.plan.calibration import Calibration

# The most GPUs `gpus_needed` tries before it says none fit.
MAX_GPUS_TRIED = 4096


class LaunchPlan(Struct, frozen=True):
    """A setup as it launches on one GPU type: sharding and checkpointing decided, its peak memory per GPU."""
    setup: TrainingSetup          # sharding (ddp/fsdp on several GPUs) and gradient_checkpointing decided
    requested: TrainingSetup      # the setup as asked for (sharding and checkpointing possibly auto)
    gpu: Gpu | None               # None: a CPU run, sized against no device memory
    sharding: ShardingChoice
    checkpointing_reason: str
    overheads: dict               # memory overhead keywords from a calibration ({} without one)
    memory: MemoryBreakdown

    @property
    def fits(self) -> bool:
        return self.gpu is None or self.memory.total <= self.gpu.usable_memory_gib


def memory_overheads(gpu: Gpu | None, method: str, calibration: Calibration | None) -> dict:
    """The memory overhead a calibration fitted for this GPU and method ({}: the formulas' own)."""
    return calibration.overheads(gpu.name, method) if (calibration and gpu) else {}


def plan_launch(setup: TrainingSetup, gpu: Gpu | None, calibration: Calibration | None = None,
                checkpointing: bool | None = None, checkpointing_reason: str = "set in the recipe") -> LaunchPlan:
    """The plan of `setup` on `gpu` (`launch_on`), with the memory overhead and step-time constants a calibration
    fitted (the formulas' own without one)."""
    constants = (calibration.step_time_constants() if calibration else None) or DEFAULT_STEP_TIME
    return launch_on(setup, gpu, memory_overheads(gpu, setup.method, calibration), constants, checkpointing,
                     checkpointing_reason)


def launch_on(setup: TrainingSetup, gpu: Gpu | None, overheads: dict, constants: StepTimeConstants = DEFAULT_STEP_TIME,
              checkpointing: bool | None = None, checkpointing_reason: str = "set in the recipe") -> LaunchPlan:
    """Decide the setup's sharding (`choose_sharding`: by the replica's peak against the card's usable memory, then
    the faster) and its gradient checkpointing (`choose_checkpointing` when `checkpointing` is None, i.e. auto; else as
    given), then its peak memory per GPU. A CPU offload that cannot act (one GPU, DDP) is refused by
    `choose_sharding`."""
    usable = gpu.usable_memory_gib if gpu else None
    sharding = choose_sharding(setup, gpu, overheads, checkpointing, constants)
    decided = setup if sharding.strategy == "none" else replace(setup, sharding=sharding.strategy)
    if checkpointing is None:
        checkpointing, checkpointing_reason = choose_checkpointing(decided, usable, overheads)
    decided = replace(decided, gradient_checkpointing=checkpointing)
    return LaunchPlan(decided, setup, gpu, sharding, checkpointing_reason, overheads,
                      memory_per_gpu(decided, **overheads))


def gpus_needed(setup: TrainingSetup, gpu: Gpu, calibration: Calibration | None = None,
                checkpointing: bool | None = None) -> int | None:
    """Fewest GPUs of this type (powers of 2, FSDP beyond one) on which the plan fits, or None up to MAX_GPUS_TRIED."""
    for gpus in valid_gpu_counts(MAX_GPUS_TRIED):
        candidate = replace(setup, gpus=gpus, sharding="fsdp" if gpus > 1 else "auto",
                            cpu_offload=setup.cpu_offload and gpus > 1)
        if plan_launch(candidate, gpu, calibration, checkpointing).fits:
            return gpus
    return None


def suggest_fits(plan: LaunchPlan, calibration: Calibration | None = None) -> list[str]:
    """Changes that bring the per-GPU peak under the GPU's memory, each with its estimated peak: single changes
    first, then the cheapest combination of them, then more GPUs with FSDP. Only changes that would act are named
    (checkpointing that is already on is not suggested)."""
    gpu, checkpointing = plan.gpu, plan.setup.gradient_checkpointing
    assert gpu is not None, "a CPU run has no device memory to fit"
    setup = replace(plan.requested, gradient_checkpointing=checkpointing)
    changes = []
    if setup.method == "lora":
        changes.append(("use QLoRA (add a `quant:` section)", {"method": "qlora"}))
    if setup.micro_batch > 1:
        changes.append(("set train.micro_batch: 1 (raise train.grad_accum to keep the batch)", {"micro_batch": 1}))
    if not setup.gradient_checkpointing:
        changes.append(("set train.gradient_checkpointing: true", {"gradient_checkpointing": True}))

    def peak(change: dict) -> float:
        changed = replace(setup, **change)
        return plan_launch(changed, gpu, calibration, changed.gradient_checkpointing).memory.total

    out = []
    for text, change in changes:
        if (value := peak(change)) <= gpu.usable_memory_gib:
            out.append(f"{text}: {value:.1f} GiB")
    if not out and len(changes) > 1:
        combined: dict = {}
        for i, (_, change) in enumerate(changes):
            combined.update(change)
            if i and (value := peak(combined)) <= gpu.usable_memory_gib:
                out.append(" and ".join(text for text, _ in changes[: i + 1]) + f": {value:.1f} GiB")
                break
    needed = gpus_needed(setup, gpu, calibration, checkpointing)
    if needed and needed > setup.gpus:
        more = replace(setup, gpus=needed, sharding="fsdp")
        value = plan_launch(more, gpu, calibration, checkpointing).memory.total
        out.append(f"use {needed} GPUs with FSDP (--nproc-per-node {needed}, launch.strategy: fsdp): {value:.1f} GiB each")
    return out or [f"no change tried fits {gpu.name}; combine QLoRA, checkpointing, a smaller batch and more GPUs"]
