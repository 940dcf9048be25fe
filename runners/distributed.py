"""Process groups and model wrapping: one process, DDP, or FSDP2 (fully_shard), launched by torchrun."""

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, cast

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str = "auto") -> DistContext:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU; `gloo` keeps every rank on the CPU),
    or run as a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available() and backend != "gloo":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
    return DistContext(rank, local_rank, world, device)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(ctx: DistContext, value: float, op: str = "sum") -> float:
    """Sum or max of a Python number across ranks."""
    if not ctx.distributed:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return float(tensor.item())


T = TypeVar("T")


def on_rank_zero(ctx: DistContext, work: Callable[[], T]) -> T:
    """Rank 0 does `work`; every rank returns its result, or raises its error, so no rank waits on a failed one.

    - the result (None where there is nothing to share) or the error's class and message go out from rank 0 with
      `broadcast_object_list` (gloo and NCCL alike; a single process sends nothing)
    - the other ranks raise an error of the same class with the same message (AdvisorError, CheckpointError), or a
      RuntimeError naming it where the class is not one they can build from a message; rank 0 raises its own
    - the other ranks go on only once rank 0 has finished: a file it writes is there for them to read
    """
    result, error = None, None
    if ctx.is_main:
        try:
            result = work()
        except Exception as exc:  # noqa: BLE001 - every error, or the other ranks would wait for rank 0 forever
            error = exc
    if ctx.distributed:
        box = [(result, None) if error is None else (None, (type(error).__module__, type(error).__name__, str(error)))]
        dist.broadcast_object_list(box, src=0)
        result, shared = box[0]
        if shared is not None and not ctx.is_main:
            raise _error_from(*shared)
    if error is not None:
        raise error
    return cast(T, result)  # rank 0's result: work ran there, or the error was raised above


def _error_from(module: str, name: str, message: str) -> Exception:
    """Rank 0's error rebuilt on another rank: its class from a module this process has imported, else a RuntimeError."""
    cls = getattr(sys.modules.get(module), name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:  # noqa: BLE001 - a class that takes more than a message
            pass
    return RuntimeError(f"rank 0 failed: {name}: {message}")


def wrap_model(model: torch.nn.Module, ctx: DistContext, strategy: str, compute_dtype: torch.dtype,
               cpu_offload: bool = False):
    """DDP replicates the model and averages adapter gradients; FSDP2 shards each decoder layer's parameters
    (frozen base and adapters alike) and the root, gathering them layer by layer (torch fully_shard); with
    `cpu_offload` the shards, their gradients and the optimizer state live in CPU memory (`to_offload_policy`)."""
    if not ctx.distributed:
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
        offload = to_offload_policy(cpu_offload, ctx.device)
        for layer in decoder_layers(model):
            fully_shard(layer, mp_policy=policy, offload_policy=offload)
        fully_shard(model, mp_policy=policy, offload_policy=offload)
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)


def to_offload_policy(cpu_offload: bool, device: torch.device):
    """launch.cpu_offload -> FSDP2's offload policy: CPUOffloadPolicy (pinned host memory on CUDA, so the copies can
    overlap compute; plain host memory on a CPU run, where it moves nothing) or none."""
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy
    return CPUOffloadPolicy(pin_memory=device.type == "cuda") if cpu_offload else OffloadPolicy()


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a (peft-wrapped) causal LM: the units FSDP shards and checkpoints."""
    layers = []
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and type(module[0]).__name__.endswith("DecoderLayer"):
            layers.extend(module)
    return layers


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    inner = model.module if hasattr(model, "module") and not hasattr(model, "peft_config") else model
    return cast(torch.nn.Module, inner)  # DDP's wrapped module (nn.Module's __getattr__ is typed Tensor | Module)
