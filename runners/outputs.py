"""What a finished run leaves in its folder besides metrics and checkpoints: the adapter (and the merged model), and
the report of measured compute with the adapter checksums that show the replicas agree."""

import resource
import shutil
import sys
from pathlib import Path

import torch

from advisor.formulas.flops import flops_per_token, flops_utilization
from advisor.measure.runreport import LossSummary, PeakMemory, RunReport
from advisor.plan.estimate import Estimate
from advisor.plan.recipe import Recipe
from runners.distributed import DistContext, all_reduce, on_rank_zero, unwrap
from runners.environment import cache_root
from runners.io import atomic_replace_dir


def save_outputs(model, recipe: Recipe, out_dir: Path, ctx: DistContext) -> None:
    """The adapter in peft's format (adapter_model.safetensors + adapter_config.json), and optionally the merged model:
    gathered on every rank (FSDP's shards), written by rank 0."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=ctx.distributed,
                                                                 ignore_frozen_params=True))
    on_rank_zero(ctx, lambda: _write_adapter(unwrap(model), state, recipe, Path(out_dir)))


def _write_adapter(peft_model, state: dict, recipe: Recipe, out_dir: Path) -> None:
    """Rank 0: adapter/ (and merged/) replace only folders this run wrote (runners.rundir.claim refuses others before
    anything is written); each carries the run's OUTPUT_MARKER."""
    from runners.rundir import claim, mark_output
    claim(out_dir, "adapter", *(["merged"] if recipe.train.merge else []))
    tmp = out_dir / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(str(tmp), state_dict={k: v for k, v in state.items() if "lora_" in k or "modules_to_save" in k},
                               safe_serialization=True)
    mark_output(tmp, out_dir)
    atomic_replace_dir(tmp, out_dir / "adapter")
    if recipe.train.merge:
        from runners.merge import merge_adapter
        merge_adapter(recipe, out_dir / "adapter", out_dir / "merged", cache_root())


def adapter_checksums(model, ctx: DistContext) -> list[str]:
    """A hash of every rank's copy of the trained adapter weights: replicas must agree (one entry per rank)."""
    import hashlib
    import torch.distributed as dist
    digest = hashlib.sha256()
    for name, param in sorted((n, p) for n, p in model.named_parameters() if p.requires_grad):
        local = param.to_local() if hasattr(param, "to_local") else param  # FSDP shards differ by design
        digest.update(name.encode())
        digest.update(local.detach().float().cpu().numpy().tobytes())
    mine = digest.hexdigest()[:16]
    if not ctx.distributed:
        return [mine]
    gathered: list = [None] * ctx.world_size
    dist.all_gather_object(gathered, mine)
    return gathered


def _peak_memory(ctx: DistContext) -> PeakMemory:
    if ctx.device.type == "cuda":
        allocated = all_reduce(ctx, torch.cuda.max_memory_allocated(ctx.device) / 2**30, "max")
        reserved = all_reduce(ctx, torch.cuda.max_memory_reserved(ctx.device) / 2**30, "max")
        return PeakMemory(allocated=allocated, reserved=reserved, rss=None)
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return PeakMemory(allocated=None, reserved=None, rss=all_reduce(ctx, rss_kib / 2**20, "max"))


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in ("rightsize", "torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    out["cuda"] = torch.version.cuda
    return out


def build_report(recipe, ctx, result, estimate: Estimate, trainable: int, total: int, gpu, setup_seconds: float,
                 checksums: list[str]) -> RunReport:
    """Measured compute; model FLOPs from the advisor's own flops_per_token, so MFU and the estimate agree."""
    arch = recipe.model.resolve_arch()
    flops = flops_per_token(arch, recipe.data.seq_len, recipe.method, trainable, estimate.gradient_checkpointing)
    gpus = ctx.world_size if ctx.device.type == "cuda" else 0
    wall = max(result.wall_seconds, 1e-9)
    model_flops = flops.model * result.tokens  # useful work: padding is not model FLOPs
    peak = gpu.peak_flops if gpu else None
    return RunReport(
        recipe=recipe.name, method=recipe.method, model=arch.name, status=result.status, steps=result.steps,
        trainable_params=trainable, total_params=total, tokens=result.tokens, processed_tokens=result.processed_tokens,
        wall_seconds=result.wall_seconds,
        eval_seconds=result.eval_seconds, checkpoint_seconds=result.checkpoint_seconds, setup_seconds=setup_seconds,
        gpus=gpus, gpu_hours=result.wall_seconds * gpus / 3600, tokens_per_second=result.tokens / wall,
        model_flops=model_flops, executed_flops=flops.total * result.processed_tokens,
        mfu=flops_utilization(model_flops, wall, gpus, peak) if (peak and gpus) else None,
        peak_flops_per_gpu=peak, peak_memory_gib=_peak_memory(ctx),
        loss=LossSummary(first=result.first_loss, last=result.last_loss, eval=result.eval_loss),
        device=torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
        gpu_name=gpu.name if gpu else None, world_size=ctx.world_size, versions=_versions(), estimate=estimate,
        resumed_from_step=result.resumed_from_step, seed=recipe.train.seed, adapter_checksums=checksums,
        interrupted_by=result.interrupted_by,
    )
