"""One run: setup -> estimate -> load_model -> attach_adapters -> train -> save_outputs -> report."""

import os
import resource
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from advisor.plan.calibration import Calibration
from advisor.catalog.load import get_gpu, match_gpu
from advisor.core.errors import AdvisorError
from advisor.formulas.flops import flops_per_token, flops_utilization
from advisor.plan.estimate import Estimate, estimate_recipe, plan_refusal
from advisor.plan.recipe import Recipe, check_model_source, recipe_to_yaml
from advisor.measure.runreport import LossSummary, PeakMemory, RunReport
from runners.data import build_dataset
from runners.environment import cache_root, quiet_libraries
from runners.distributed import DistContext, all_reduce, barrier, broadcast_object, init_distributed, shutdown, unwrap, wrap_model
from runners.hostmem import detach_from_checkpoint_file, map_large_host_tensors
from runners.io import atomic_write_json
from runners.model import (
    attach_adapters, check_vocab, compile_layers, compute_dtype, load_model, notice, random_checkpoint, total_parameters,
    trainable_parameters,
)
from runners.tokenizer import load_tokenizer
from runners.checkpoint import CheckpointError, intact_checkpoint, load_checkpoint
from runners.rundir import RunFolder, data_fingerprint, recipe_fingerprint
from runners.tracking import Trackers, check_trackers_installed
from runners.offload import offload_notices
from runners.train import NonFiniteLoss, StopRequest, build_optimizer, seed_everything, train



def prepare_out_dir(out_dir: Path, resume: bool, overwrite: bool, protect: dict[str, Path] | None = None) -> RunFolder:
    """Never lose the user's files: open the run folder for a fresh run, a resume or a replacement (runners.rundir),
    holding its lock; anything that is not provably a run of ours is refused."""
    return RunFolder.open(out_dir, resume, overwrite, protect or {})


def detect_gpu(ctx: DistContext):
    """The catalog entry of the CUDA device in use, or None on CPU or an unknown GPU."""
    if ctx.device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(ctx.device)
    return match_gpu(props.name, props.total_memory / 2**30)


@contextmanager
def stop_on_signals(stop: StopRequest):
    """SIGINT and SIGTERM ask the loop to checkpoint and exit at the next step boundary (a second one kills)."""
    previous = {}

    def handler(signum, frame):
        if stop.requested:
            signal.signal(signum, previous.get(signum, signal.SIG_DFL))
            os.kill(os.getpid(), signum)
            return
        stop.requested, stop.signal_name = True, signal.Signals(signum).name
        print(f"\n{stop.signal_name}: saving a checkpoint at the end of this step (send again to kill)", file=sys.stderr)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(recipe: Recipe, out_dir: Path, resume: bool = False, overwrite: bool = False, force: bool = False,
        calibration: Calibration | None = None, gpu_name: str | None = None, recipe_path: Path | None = None,
        allow_changes: bool = False) -> RunReport:
    """Fine-tune as the recipe says and return the measured report (rank 0 also writes it to out_dir).
    `recipe_path` is protected from --overwrite; `allow_changes` lets --resume continue with a changed recipe or data."""
    quiet_libraries()
    ctx = init_distributed(recipe.launch.backend)
    folder = None
    try:
        gpu = get_gpu(gpu_name) if gpu_name else detect_gpu(ctx)
        device_memory = torch.cuda.get_device_properties(ctx.device).total_memory / 2**30 if ctx.device.type == "cuda" else None
        check_fit(recipe, gpu, device_memory, calibration, ctx.world_size, force)  # before the folder or any load
        check_trackers_installed(recipe)

        def open_folder():
            nonlocal folder
            folder = prepare_out_dir(Path(out_dir), resume, overwrite,
                                     {"data": Path(recipe.data.path), "recipe": recipe_path, "current directory": Path.cwd()})
        _first_error(ctx, open_folder)
        return _run(recipe, Path(out_dir), ctx, folder, force, calibration, gpu, device_memory, allow_changes)
    finally:
        if folder is not None:
            folder.close()
        shutdown(ctx)


def _first_error(ctx: DistContext, fn):
    """Run fn on rank 0 and share its AdvisorError, if any, so every rank stops with the same message."""
    error = None
    if ctx.is_main:
        try:
            fn()
        except AdvisorError as exc:
            error = str(exc)
    error = broadcast_object(ctx, error)
    if error:
        raise AdvisorError(error)


def _resume_point(folder: RunFolder, recipe: Recipe, allow_changes: bool) -> tuple[str, dict, dict]:
    """Rank 0, before anything loads: the fingerprints of this recipe and data, checked against the run being resumed,
    and the newest intact checkpoint (damaged newer ones are named and skipped)."""
    check_model_source(recipe)
    recipe_fp, data_fp = recipe_fingerprint(recipe), data_fingerprint(recipe.data, cache_root())
    if folder.mode != "resume":
        return "", recipe_fp, data_fp
    folder.check_resumable()
    folder.compare(recipe_fp, data_fp, allow_changes)
    checkpoint, skipped = intact_checkpoint(folder.path)
    if checkpoint is None:
        raise AdvisorError(f"--resume: {folder.path} has no intact checkpoint "
                           f"({'; '.join(skipped) or 'the run stopped before its first one'}): "
                           "--overwrite to start it again from step 0")
    for note in skipped:
        notice(f"checkpoint {note}; falling back to {checkpoint.name}")
    return str(checkpoint), recipe_fp, data_fp


def check_fit(recipe: Recipe, gpu, device_memory_gib: float | None, calibration: Calibration | None, gpus: int,
              force: bool) -> Estimate:
    """The fit verdict, from the recipe alone (nothing loaded yet): refuse a run whose predicted peak exceeds the GPU's
    memory (naming what would fit) or asks for bf16 on a GPU without it, unless --force. Without a known GPU (a CPU run) there is nothing to check."""
    estimate = estimate_recipe(recipe, gpu, calibration=calibration, gpus=gpus, device_memory_gib=device_memory_gib)
    refusal = plan_refusal(estimate) if gpu is not None else None  # does not fit, or bf16 without bf16
    if refusal and not force:
        raise AdvisorError(refusal)
    return estimate


def _run(recipe, out_dir, ctx, folder: RunFolder | None, force, calibration, gpu, device_memory: float | None,
         allow_changes) -> RunReport:
    setup_start = time.perf_counter()
    if recipe.model.attn_implementation == "flex_attention" and ctx.device.type != "cuda":
        raise AdvisorError("model.attn_implementation: flex_attention trains on CUDA GPUs only (PyTorch's FlexAttention "
                           "has no backward on the CPU); use sdpa here")
    point = ("", {}, {})

    def resume_point():
        nonlocal point
        point = _resume_point(folder, recipe, allow_changes)
    _first_error(ctx, resume_point)
    checkpoint = broadcast_object(ctx, point[0]) or None
    checkpoint = Path(checkpoint) if checkpoint else None
    out_dir = Path(broadcast_object(ctx, str(folder.path) if folder else None))
    seed_everything(recipe.train.seed)
    tokenizer = load_tokenizer(recipe)
    data = None
    if ctx.is_main:  # rank 0 tokenizes (or reads the cache) first; the others then read its cache
        data = build_dataset(recipe, tokenizer, cache_root())
    barrier(ctx)
    if data is None:
        data = build_dataset(recipe, tokenizer, cache_root())
    estimate = estimate_recipe(recipe, gpu, dataset_tokens=data.train_tokens, calibration=calibration, gpus=ctx.world_size,
                               device_memory_gib=device_memory)  # the same memory as check_fit's, now with the data's tokens
    if recipe.train.gradient_checkpointing == "auto":
        notice(f"gradient checkpointing {'on' if estimate.gradient_checkpointing else 'off'} "
               f"({estimate.gradient_checkpointing_reason})")
    strategy = estimate.sharding  # none, ddp or fsdp: decided by advisor.plan.sizing.choose_sharding
    dtype = compute_dtype(recipe, ctx.device)
    if recipe.quant is not None and (recipe.model.arch is not None or recipe.model.random_init) and ctx.is_main:
        random_checkpoint(recipe, dtype, cache_root(), recipe.train.seed)  # once, before the other ranks read it
    barrier(ctx)
    map_large_host_tensors(ctx.device.type)  # before the weights and the steps allocate (runners.hostmem)
    model = load_model(recipe, ctx.device, cache_root(), recipe.train.seed, fsdp=strategy == "fsdp")
    detach_from_checkpoint_file(model, ctx.device.type, recipe.quant is not None)  # runners.hostmem
    check_vocab(model, tokenizer)
    model = attach_adapters(model, recipe, estimate.gradient_checkpointing)
    trainable, total = trainable_parameters(model), total_parameters(model)
    if recipe.train.compile and not compile_layers(model):  # before DDP/FSDP wrap the layers
        notice("train.compile: this model has no transformers decoder layers to compile; running eagerly")
    offloaded = recipe.launch.cpu_offload and strategy == "fsdp"
    model = wrap_model(model, ctx, strategy, dtype, cpu_offload=offloaded)
    for line in offload_notices(recipe.train.activation_offloading, offloaded, ctx.device):
        notice(line)
    # with FSDP's CPU offload the shards the optimizer updates live in CPU memory
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], recipe.train,
                                torch.device("cpu") if offloaded else ctx.device)
    state = None
    if checkpoint is not None:
        try:
            state = load_checkpoint(model, optimizer, ctx, checkpoint)
        except CheckpointError as exc:
            raise AdvisorError(str(exc)) from None
        notice(f"resuming from {checkpoint} (step {state.step})")
    # Everything has loaded and validated: only now does the folder become this run's (a replaced run is moved
    # aside and removed, a resume with --allow-changes records them)
    _first_error(ctx, lambda: folder.publish(point[1], point[2], {"recipe.resolved.yaml": recipe_to_yaml(recipe)},
                                             state.step if state else 0))
    changes = [c for entry in (folder.marker or {}).get("changes", []) for c in
               (f"at step {entry['at_step']}: {x}" for x in entry["changes"])] if ctx.is_main and folder else []
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    setup_seconds = time.perf_counter() - setup_start
    stop = StopRequest()
    tracker = Trackers(recipe, out_dir, ctx.is_main)
    try:
        with stop_on_signals(stop):
            result = train(model, optimizer, recipe, data, ctx, out_dir, tokenizer.pad_token_id, dtype, stop, state,
                           tracker=tracker, on_eval=_sampler(recipe, tokenizer, out_dir, ctx, strategy, tracker))
    except torch.cuda.OutOfMemoryError:
        raise AdvisorError(f"CUDA out of memory (estimated peak {estimate.peak_memory_gib:.1f} GiB per GPU); would fit: "
                           + "; ".join(estimate.suggestions or ["a smaller train.micro_batch", "train.gradient_checkpointing: true",
                                                                "QLoRA", "more GPUs with launch.strategy: fsdp"])) from None
    except (NonFiniteLoss, CheckpointError) as exc:
        raise AdvisorError(str(exc)) from None
    finally:
        tracker.close()
    if result.status == "completed":
        save_outputs(model, recipe, out_dir, ctx)
    checksums = adapter_checksums(model, ctx)
    report = build_report(recipe, ctx, result, estimate, trainable, total - trainable, gpu, setup_seconds, checksums)
    report = report.model_copy(update={"resume_changes": changes})
    if ctx.is_main:
        atomic_write_json(out_dir / "report.json", report.model_dump(mode="json"))
        if result.status == "completed":
            from runners.card import write_model_card
            write_model_card(out_dir / "adapter", recipe, report, data.cache_path.stem)
    barrier(ctx)
    return report


def _sampler(recipe: Recipe, tokenizer, out_dir: Path, ctx: DistContext, strategy: str, tracker):
    """What each eval also does: generate the recipe's eval.samples (rank 0; every rank under FSDP, whose forward
    gathers shards, with rank 0 writing)."""
    if not recipe.eval.samples:
        return None
    from runners.generate import write_samples

    def on_eval(model, step: int) -> None:
        if ctx.is_main or strategy == "fsdp":
            write_samples(unwrap(model), tokenizer, recipe, step, out_dir, tracker, write=ctx.is_main)
    return on_eval


def save_outputs(model, recipe: Recipe, out_dir: Path, ctx: DistContext) -> None:
    """The adapter in peft's format (adapter_model.safetensors + adapter_config.json), and optionally the merged model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=ctx.distributed,
                                                                 ignore_frozen_params=True))
    if ctx.is_main:
        peft_model = unwrap(model)
        tmp = out_dir / ".adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        peft_model.save_pretrained(str(tmp), state_dict={k: v for k, v in state.items() if "lora_" in k or "modules_to_save" in k},
                                   safe_serialization=True)
        from runners.io import atomic_replace_dir
        atomic_replace_dir(tmp, out_dir / "adapter")
        if recipe.train.merge:
            from runners.merge import merge_adapter
            merge_adapter(recipe, out_dir / "adapter", out_dir / "merged", cache_root())
    barrier(ctx)


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
        return PeakMemory(allocated=allocated, reserved=reserved)
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return PeakMemory(allocated=None, reserved=None, rss=all_reduce(ctx, rss_kib / 2**20, "max"))


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": sys.version.split()[0]}
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
