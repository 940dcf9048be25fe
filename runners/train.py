"""The training loop's parts (the loop itself is runners.session's FineTuneSession.train): one step with gradient
accumulation and clipping, schedules, eval, early stopping, the stop request, step accounting and metrics."""

import json
import math
import os
import random
import signal
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from advisor.plan.recipe import Recipe, TrainSection
from runners.checkpoint import LoopState
from runners.data import Batch, TokenizedData, epoch_order, get_batch, micro_batches_per_epoch
from runners.distributed import DistContext, all_reduce
from runners.offload import offload_saved_tensors
from runners.io import append_jsonl, atomic_write_text, read_jsonl
from runners.hostmem import release_freed_host_memory
from runners.upcast import saved_as_source


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


@dataclass
class StopRequest:
    """Set by SIGINT/SIGTERM handlers; the loop saves a checkpoint at the next step boundary and exits."""
    requested: bool = False
    signal_name: str = ""


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
    # bitsandbytes.optim re-exports its optimizers without an __all__
    cls = bnb.optim.PagedAdamW8bit if train.optimizer == "paged-adamw-8bit" else bnb.optim.AdamW8bit  # pyright: ignore[reportPrivateImportUsage]
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
class Epochs:
    """Each epoch's shuffled row order, drawn once when the loop reaches it (resumable: it depends on seed and epoch)."""
    n_rows: int
    seed: int
    epoch: int = -1
    order: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def get(self, epoch: int) -> torch.Tensor:
        if epoch != self.epoch:
            self.epoch, self.order = epoch, epoch_order(self.n_rows, epoch, self.seed)
        return self.order


def step_batches(data: TokenizedData, epochs: Epochs, step: int, t: TrainSection, ctx: DistContext, pad_id: int,
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
    if t.host_memory == "release":
        release_freed_host_memory(ctx.device.type)  # the CPU step's freed heap back to the OS (runners.hostmem)
    return step_loss, grad_norm


def record_metrics(metrics_path: Path, tracker, record: dict) -> None:
    """One metrics.jsonl line, sent to the experiment trackers too (runners.tracking), at the same step."""
    append_jsonl(metrics_path, record)
    if tracker is not None:
        tracker.log(record)


def keep_metrics_until(metrics_path: Path, step: int, ctx: DistContext) -> None:
    """On resume, metrics.jsonl keeps only the lines of the steps the checkpoint holds."""
    if ctx.is_main:
        kept = [m for m in read_jsonl(metrics_path) if m.get("step", 0) <= step]
        atomic_write_text(metrics_path, "".join(json.dumps(m) + "\n" for m in kept))


def account_step(state: LoopState, batches: list[Batch], step_loss: float, elapsed: float) -> int:
    """Add one finished optimizer step to the loop's counters; returns its input tokens."""
    step_tokens = sum(b.tokens for b in batches)
    state.wall_seconds += elapsed
    state.tokens += step_tokens
    state.processed_tokens += sum(b.processed_tokens for b in batches)
    state.step, state.last_loss = state.step + 1, step_loss
    state.first_loss = step_loss if state.first_loss is None else state.first_loss
    return step_tokens


def memory_now(ctx: DistContext) -> dict:
    if ctx.device.type != "cuda":
        try:  # the process's resident memory now (Linux), the CPU's counterpart of allocated GPU memory
            return {"memory_rss_gib": int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**30}
        except (OSError, IndexError, ValueError):
            return {}
    return {"memory_allocated_gib": torch.cuda.max_memory_allocated(ctx.device) / 2**30}
