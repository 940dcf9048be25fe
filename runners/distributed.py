"""Process groups and model wrapping: one process, DDP, or FSDP2 (fully_shard), launched by torchrun."""

import os
from dataclasses import dataclass

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


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce(ctx: DistContext, value: float, op: str = "sum") -> float:
    """Sum or max of a Python number across ranks."""
    if not ctx.distributed:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return float(tensor.item())


def broadcast_object(ctx: DistContext, obj):
    """Rank 0's Python object on every rank (used to share one decision, such as an error)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


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
    return model.module if hasattr(model, "module") and not hasattr(model, "peft_config") else model
