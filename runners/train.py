"""The training loop: measured steps, gradient accumulation, clipping, schedules, eval, resumable checkpoints."""

import json
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from advisor.plan.recipe import Recipe, TrainSection
from runners.checkpoint import LoopState, save_checkpoint
from runners.data import Batch, TokenizedData, epoch_order, get_batch, micro_batches_per_epoch
from runners.distributed import DistContext, all_reduce
from runners.offload import offload_saved_tensors
from runners.io import append_jsonl, atomic_write_text, read_jsonl
from runners.hostmem import release_freed_host_memory
from runners.progress import progress_bar, step_fields
from runners.upcast import saved_as_source


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


@dataclass
class StopRequest:
    """Set by SIGINT/SIGTERM handlers; the loop saves a checkpoint at the next step boundary and exits."""
    requested: bool = False
    signal_name: str = ""


@dataclass
class TrainResult:
    steps: int
    tokens: int
    processed_tokens: int
    wall_seconds: float
    eval_seconds: float
    checkpoint_seconds: float
    first_loss: float | None
    last_loss: float | None
    eval_loss: float | None
    status: str
    resumed_from_step: int | None
    losses: list[float] = field(default_factory=list)
    interrupted_by: str | None = None


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (CPU and every CUDA device) from one seed."""
    random.seed(seed)
    try:
        import numpy as np
        np.random.seed(seed)
    except ImportError:
        pass
    torch.manual_seed(seed)


def total_steps(recipe: Recipe, n_rows: int, world_size: int) -> int:
    """Optimizer steps: max_steps, or epochs x (micro-batches per epoch / grad_accum)."""
    t = recipe.train
    if t.max_steps:
        return t.max_steps
    per_epoch = micro_batches_per_epoch(n_rows, t.micro_batch, world_size)
    return max(1, math.floor(per_epoch * t.epochs / t.grad_accum))


def build_optimizer(params: list[torch.nn.Parameter], train: TrainSection, device: torch.device):
    """torch AdamW (fused on CUDA), or bitsandbytes' 8-bit AdamW (Dettmers et al. 2022), optionally paged."""
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, betas=(0.9, 0.999),
                                 fused=device.type == "cuda")
    import bitsandbytes as bnb
    cls = bnb.optim.PagedAdamW8bit if train.optimizer == "paged-adamw-8bit" else bnb.optim.AdamW8bit
    return cls(params, lr=train.lr, weight_decay=train.weight_decay, betas=(0.9, 0.999))


def lr_factor(step: int, train: TrainSection, steps: int) -> float:
    """Linear warm-up to the peak, then cosine or linear decay to min_lr (zero by default), or constant."""
    if step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    if train.schedule == "constant":
        return 1.0
    progress = (step - train.warmup_steps) / max(1, steps - train.warmup_steps)
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if train.schedule == "cosine" else max(0.0, 1 - progress)
    floor = train.min_lr / train.lr
    return floor + (1 - floor) * decay


def should_stop_early(eval_losses: list[float], patience: int, delta: float) -> bool:
    """Policy: stop when none of the last `patience` evals beat the best before them by more than `delta`
    (patience 0: never)."""
    if not patience or len(eval_losses) <= patience:
        return False
    best_before = min(eval_losses[:-patience])
    return min(eval_losses[-patience:]) > best_before - delta


# --- the loop ------------------------------------------------------------------------------------------

def _no_sync(model, last: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulated step."""
    if last:
        return nullcontext()
    if hasattr(model, "no_sync"):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(False)
    return nullcontext()


def evaluate(model, data: TokenizedData, recipe: Recipe, ctx: DistContext, pad_id: int, dtype: torch.dtype) -> float | None:
    """Mean loss per target token on the validation rows; every rank runs the same number of batches (get_batch)."""
    if len(data.val) == 0:
        return None
    mb, order = recipe.train.micro_batch, range(len(data.val))
    total, count = 0.0, 0.0
    model.eval()
    # compiled layers (train.compile) run eagerly here: a no-grad graph would be one more compile for a short pass,
    # and bitsandbytes' 4-bit layers fail in it (a mis-shaped fake kernel, seen with bitsandbytes 0.50 on CPU)
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        for index in range(math.ceil(len(order) / (mb * ctx.world_size))):
            batch = get_batch(data.val, order, index, mb, ctx.rank, ctx.world_size, pad_id, wrap=True)
            with torch.autocast(ctx.device.type, dtype=dtype, enabled=ctx.device.type == "cuda"):
                out = model(**_on_device(batch, ctx), num_items_in_batch=1, use_cache=False)
            total += float(out.loss)
            count += batch.rank_loss_tokens
    model.train()
    total, count = all_reduce(ctx, total), all_reduce(ctx, count)
    return total / count if count else None


def _on_device(batch: Batch, ctx: DistContext) -> dict[str, torch.Tensor]:
    return {key: v.to(ctx.device, non_blocking=True) for key, v in batch.inputs.items()}


@dataclass
class _Epochs:
    """Each epoch's shuffled row order, drawn once when the loop reaches it (resumable: it depends on seed and epoch)."""
    n_rows: int
    seed: int
    epoch: int = -1
    order: list[int] = field(default_factory=list)

    def get(self, epoch: int) -> list[int]:
        if epoch != self.epoch:
            self.epoch, self.order = epoch, epoch_order(self.n_rows, epoch, self.seed)
        return self.order


def step_batches(data: TokenizedData, epochs: _Epochs, step: int, t: TrainSection, ctx: DistContext, pad_id: int,
                 per_epoch: int) -> list[Batch]:
    """The grad_accum micro-batches of one optimizer step, from the epoch each falls in."""
    batches = []
    for k in range(t.grad_accum):
        epoch, within = divmod(step * t.grad_accum + k, per_epoch)
        batches.append(get_batch(data.train, epochs.get(epoch), within, t.micro_batch, ctx.rank, ctx.world_size, pad_id))
    return batches


def _saved_tensor_hooks(model, device: torch.device, activation_offloading: bool):
    """The saved-tensor hooks of a forward. torch applies only the innermost pair of saved_tensors_hooks, so one is
    chosen: activation offloading where it moves something (CUDA), else keeping fp32 adapter inputs as their 16-bit
    sources (runners.upcast; it changes nothing under CUDA's autocast)."""
    if activation_offloading and device.type == "cuda":
        return offload_saved_tensors(model, device, True)
    return saved_as_source()


def train_step(model, optimizer, params, batches: list[Batch], ctx: DistContext, dtype: torch.dtype,
               t: TrainSection, step: int) -> tuple[float, float]:
    """Forward and backward over the step's micro-batches, then clip and apply; returns (loss, gradient norm)."""
    is_last = lambda k: k == len(batches) - 1  # noqa: E731 - only the last micro-batch all-reduces gradients
    n_loss_tokens = max(1, sum(b.loss_tokens for b in batches))
    loss_sum = torch.zeros((), device=ctx.device)
    for k, batch in enumerate(batches):
        with _no_sync(model, last=is_last(k)):
            with _saved_tensor_hooks(model, ctx.device, t.activation_offloading), \
                    torch.autocast(ctx.device.type, dtype=dtype, enabled=ctx.device.type == "cuda"):
                out = model(**_on_device(batch, ctx), num_items_in_batch=n_loss_tokens, use_cache=False)
            # DDP and FSDP average gradients over ranks; scaling by the world size makes the result the
            # gradient of (sum of token losses over the global batch) / (its target tokens).
            (out.loss * ctx.world_size).backward()
        loss_sum += out.loss.detach()
        del out  # the step's outputs (logits included) are freed before the next forward
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(True)
    step_loss = all_reduce(ctx, float(loss_sum))
    if not math.isfinite(step_loss):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLoss(f"loss became {step_loss} at step {step + 1}; stopped without applying it. The last good "
                            f"checkpoint is kept: lower train.lr or raise train.warmup_steps, then --resume")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    release_freed_host_memory(ctx.device.type)  # the CPU step's freed heap back to the OS (runners.hostmem)
    return step_loss, grad_norm


def _evaluate_timed(model, data, recipe, ctx, pad_id, dtype, state: LoopState, metrics_path: Path,
                    tracker=None, on_eval=None) -> float | None:
    start = time.perf_counter()
    eval_loss = evaluate(model, data, recipe, ctx, pad_id, dtype)
    if on_eval is not None:  # e.g. generate the recipe's eval samples (runners.generate)
        on_eval(model, state.step)
    state.eval_seconds += time.perf_counter() - start
    if ctx.is_main and eval_loss is not None:
        _record(metrics_path, tracker, {"step": state.step, "eval_loss": eval_loss})
    return eval_loss


def _record(metrics_path: Path, tracker, record: dict) -> None:
    """One metrics.jsonl line, sent to the experiment trackers too (runners.tracking), at the same step."""
    append_jsonl(metrics_path, record)
    if tracker is not None:
        tracker.log(record)


def _keep_metrics_until(metrics_path: Path, step: int, ctx: DistContext) -> None:
    """On resume, metrics.jsonl keeps only the lines of the steps the checkpoint holds."""
    if ctx.is_main:
        kept = [m for m in read_jsonl(metrics_path) if m.get("step", 0) <= step]
        atomic_write_text(metrics_path, "".join(json.dumps(m) + "\n" for m in kept))


def _account(state: LoopState, batches: list[Batch], step_loss: float, elapsed: float) -> int:
    """Add one finished optimizer step to the loop's counters; returns its input tokens."""
    step_tokens = sum(b.tokens for b in batches)
    state.wall_seconds += elapsed
    state.tokens += step_tokens
    state.processed_tokens += sum(b.processed_tokens for b in batches)
    state.step, state.last_loss = state.step + 1, step_loss
    state.first_loss = step_loss if state.first_loss is None else state.first_loss
    return step_tokens


def train(model, optimizer, recipe: Recipe, data: TokenizedData, ctx: DistContext, out_dir: Path, pad_id: int,
          dtype: torch.dtype, stop: StopRequest, resume_state: LoopState | None = None, tracker=None,
          on_eval=None) -> TrainResult:
    """Run optimizer steps from the start or from `resume_state`, measuring each; rank 0 writes metrics."""
    t = recipe.train
    steps = total_steps(recipe, len(data.train), ctx.world_size)
    per_epoch = micro_batches_per_epoch(len(data.train), t.micro_batch, ctx.world_size)
    params = [p for p in model.parameters() if p.requires_grad]
    metrics_path = Path(out_dir) / "metrics.jsonl"
    state = resume_state or LoopState()
    resumed_from = state.step if resume_state else None
    _keep_metrics_until(metrics_path, state.step, ctx)
    epochs, losses, status, eval_loss = _Epochs(len(data.train), t.seed), [], "completed", None
    eval_losses: list[float] = []  # this session's evals, for early stopping (a resumed run starts counting afresh)
    progress = progress_bar(steps, state.step, ctx.is_main)
    try:
        model.train()
        while state.step < steps:
            step, lr = state.step, t.lr * lr_factor(state.step, t, steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batches = step_batches(data, epochs, step, t, ctx, pad_id, per_epoch)
            start = time.perf_counter()
            step_loss, grad_norm = train_step(model, optimizer, params, batches, ctx, dtype, t, step)
            elapsed = time.perf_counter() - start
            step_tokens = _account(state, batches, step_loss, elapsed)
            losses.append(step_loss)
            if ctx.is_main and (state.step % t.log_every == 0 or state.step == steps):
                _record(metrics_path, tracker, {"step": state.step, "epoch": round(step * t.grad_accum / per_epoch, 4),
                                                "loss": step_loss, "lr": lr, "grad_norm": grad_norm, "tokens": state.tokens,
                                                "step_seconds": elapsed, "tokens_per_second": step_tokens / elapsed,
                                                **_memory_now(ctx)})
            progress.set_postfix(refresh=False, **step_fields(step_loss, lr, step_tokens / elapsed, eval_loss))
            progress.update(1)
            more = state.step < steps
            if t.eval_every and state.step % t.eval_every == 0 and more:
                eval_loss = _evaluate_timed(model, data, recipe, ctx, pad_id, dtype, state, metrics_path, tracker, on_eval)
                eval_losses += [eval_loss] if eval_loss is not None else []
                if should_stop_early(eval_losses, recipe.eval.early_stopping_patience, recipe.eval.early_stopping_delta):
                    from runners.model import notice
                    notice(f"early stop at step {state.step}: eval loss has not improved for "
                           f"{recipe.eval.early_stopping_patience} evals (best {min(eval_losses):.4f})")
                    break
            stop_now = all_reduce(ctx, 1.0 if stop.requested else 0.0, "max") > 0
            if more and (stop_now or (t.checkpoint_every and state.step % t.checkpoint_every == 0)):
                ckpt_start = time.perf_counter()
                save_checkpoint(model, optimizer, state, ctx, out_dir)
                state.checkpoint_seconds += time.perf_counter() - ckpt_start
            if stop_now and more:
                status = "interrupted"
                break
    finally:
        progress.close()
    if status == "completed":
        eval_loss = _evaluate_timed(model, data, recipe, ctx, pad_id, dtype, state, metrics_path, tracker, on_eval)
    return TrainResult(state.step, state.tokens, state.processed_tokens, state.wall_seconds, state.eval_seconds,
                       state.checkpoint_seconds, state.first_loss, state.last_loss, eval_loss, status,
                       resumed_from, losses, stop.signal_name or None if status == "interrupted" else None)


def _memory_now(ctx: DistContext) -> dict:
    if ctx.device.type != "cuda":
        try:  # the process's resident memory now (Linux), the CPU's counterpart of allocated GPU memory
            return {"memory_rss_gib": int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**30}
        except (OSError, IndexError, ValueError):
            return {}
    return {"memory_allocated_gib": torch.cuda.max_memory_allocated(ctx.device) / 2**30}
