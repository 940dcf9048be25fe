"""The training loop: measured steps, gradient accumulation, clipping, schedules, eval, resumable checkpoints."""

import io
import json
import math
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from advisor.recipe import Recipe, TrainSection
from runners.data import IGNORE_INDEX, TokenizedData, collate, epoch_order, micro_batches_per_epoch
from runners.distributed import DistContext, all_reduce, broadcast_object
from runners.io import append_jsonl, atomic_replace_dir, atomic_write_text, read_jsonl

CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2  # the newest and the one before it, in case the newest is being written when the run dies


class CheckpointError(RuntimeError):
    """A checkpoint could not be written; the previous one is intact."""


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
    """Linear warm-up to the peak, then cosine or linear decay to zero (or constant)."""
    if step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    if train.schedule == "constant":
        return 1.0
    progress = (step - train.warmup_steps) / max(1, steps - train.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress)) if train.schedule == "cosine" else max(0.0, 1 - progress)


# --- checkpoints ---------------------------------------------------------------------------------------

def _state_dict_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, ignore_frozen_params=True, **kw)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    except ImportError:
        pass
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint (a directory is only published, by rename, once fully written)."""
    root = Path(out_dir) / CHECKPOINTS
    candidates = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file()) if root.is_dir() else []
    return candidates[-1] if candidates else None


def save_checkpoint(model, optimizer, state: dict, ctx: DistContext, out_dir: Path) -> Path:
    """Adapters, optimizer, RNG and loop state, written to a temporary directory and renamed into place."""
    from torch.distributed.checkpoint.state_dict import get_state_dict
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_state_dict_options(cpu_offload=ctx.distributed))
    final = Path(out_dir) / CHECKPOINTS / f"step-{state['step']:08d}"
    error = None
    if ctx.is_main:
        tmp = final.with_name(f".{final.name}.tmp")
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            buffer = io.BytesIO()
            torch.save({"model": model_sd, "optimizer": optim_sd, "rng": _rng_state()}, buffer)
            (tmp / "trainer.pt").write_bytes(buffer.getvalue())
            (tmp / "state.json").write_text(json.dumps(state, indent=2))  # written last: marks the directory complete
            atomic_replace_dir(tmp, final)
        except OSError as exc:  # a full disk, say: the previous checkpoint is untouched, so stop here with it intact
            shutil.rmtree(tmp, ignore_errors=True)
            previous = latest_checkpoint(out_dir)
            error = (f"could not save the checkpoint of step {state['step']} ({exc.strerror or exc}); "
                     + (f"{previous.name} is intact: free space, then --resume" if previous else "no earlier checkpoint"))
        else:
            for old in sorted((Path(out_dir) / CHECKPOINTS).glob("step-*"))[:-KEEP_CHECKPOINTS]:
                shutil.rmtree(old, ignore_errors=True)
    error = broadcast_object(ctx, error)
    if error:
        raise CheckpointError(error)
    return final


def load_checkpoint(model, optimizer, ctx: DistContext, path: Path) -> dict:
    """Restore a checkpoint on every rank (weights_only: checkpoints never execute code on load)."""
    from torch.distributed.checkpoint.state_dict import set_state_dict
    blob = torch.load(path / "trainer.pt", weights_only=True, map_location="cpu")
    set_state_dict(model, optimizer, model_state_dict=blob["model"], optim_state_dict=blob["optimizer"],
                   options=_state_dict_options())
    _set_rng_state(blob["rng"])
    return json.loads((path / "state.json").read_text())


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


def _loss_tokens(rows: list[dict]) -> int:
    """Labels that count toward the loss after the causal shift (the first position predicts nothing)."""
    return sum(int((r["labels"][1:] != IGNORE_INDEX).sum()) for r in rows)


def evaluate(model, data: TokenizedData, recipe: Recipe, ctx: DistContext, pad_id: int, dtype: torch.dtype) -> float | None:
    """Mean loss per target token on the validation rows; every rank runs the same number of batches."""
    if len(data.val) == 0:
        return None
    n, mb, world = len(data.val), recipe.train.micro_batch, ctx.world_size
    total, count = 0.0, 0.0
    model.eval()
    # compiled layers (train.compile) run eagerly here: a no-grad graph would be one more compile for a short pass,
    # and bitsandbytes' 4-bit layers fail in it (a mis-shaped fake kernel, seen with bitsandbytes 0.50 on CPU)
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        for b in range(math.ceil(n / (mb * world))):
            idxs = [b * mb * world + ctx.rank * mb + j for j in range(mb)]
            rows = [data.val.row(i % n) for i in idxs]
            rows = [r if i < n else {**r, "labels": torch.full_like(r["labels"], IGNORE_INDEX)} for i, r in zip(idxs, rows)]
            batch = {k: v.to(ctx.device) for k, v in collate(rows, pad_id).items()}
            with torch.autocast(ctx.device.type, dtype=dtype, enabled=ctx.device.type == "cuda"):
                out = model(**batch, num_items_in_batch=1, use_cache=False)
            total += float(out.loss)
            count += _loss_tokens(rows)
    model.train()
    total, count = all_reduce(ctx, total), all_reduce(ctx, count)
    return total / count if count else None


def train(model, optimizer, recipe: Recipe, data: TokenizedData, ctx: DistContext, out_dir: Path, pad_id: int,
          dtype: torch.dtype, stop: StopRequest, resume_state: dict | None = None) -> TrainResult:
    """Run optimizer steps from the start or from `resume_state`, measuring each; rank 0 writes metrics."""
    t = recipe.train
    world, mb = ctx.world_size, t.micro_batch
    steps = total_steps(recipe, len(data.train), world)
    per_epoch = micro_batches_per_epoch(len(data.train), mb, world)
    params = [p for p in model.parameters() if p.requires_grad]
    metrics_path = Path(out_dir) / "metrics.jsonl"
    state = resume_state or {"step": 0, "tokens": 0, "processed_tokens": 0, "wall_seconds": 0.0, "eval_seconds": 0.0,
                             "checkpoint_seconds": 0.0, "first_loss": None, "last_loss": None}
    resumed_from = state["step"] if resume_state else None
    if ctx.is_main:
        kept = [m for m in read_jsonl(metrics_path) if m.get("step", 0) <= state["step"]]
        atomic_write_text(metrics_path, "".join(json.dumps(m) + "\n" for m in kept))
    losses: list[float] = []
    orders: dict[int, list[int]] = {}
    progress = _progress(steps, state["step"], ctx)
    status = "completed"
    eval_loss = None
    model.train()
    while state["step"] < steps:
        step = state["step"]
        lr = t.lr * lr_factor(step, t, steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        micro = []
        for k in range(t.grad_accum):
            index = step * t.grad_accum + k
            epoch, within = divmod(index, per_epoch)
            if epoch not in orders:  # once per epoch (setdefault would reshuffle every micro-batch)
                orders = {epoch: epoch_order(len(data.train), epoch, t.seed)}
            order = orders[epoch]
            # each global micro-batch is split across ranks; every rank sees all of it to count the step's tokens
            global_rows = [data.train.row(i) for i in order[within * mb * world:(within + 1) * mb * world]]
            micro.append((global_rows[ctx.rank * mb:(ctx.rank + 1) * mb], global_rows))
        n_loss_tokens = sum(_loss_tokens(g) for _, g in micro)
        step_tokens = sum(r["input_ids"].numel() for _, g in micro for r in g)
        # what the GPUs computed: each rank's micro-batch is padded to its longest row
        step_processed = sum(mb * max(r["input_ids"].numel() for r in g[i:i + mb]) for _, g in micro for i in range(0, len(g), mb))
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=ctx.device)
        for k, (rows, _) in enumerate(micro):
            batch = {key: v.to(ctx.device, non_blocking=True) for key, v in collate(rows, pad_id).items()}
            with _no_sync(model, last=k == len(micro) - 1):
                with torch.autocast(ctx.device.type, dtype=dtype, enabled=ctx.device.type == "cuda"):
                    out = model(**batch, num_items_in_batch=max(1, n_loss_tokens), use_cache=False)
                # DDP and FSDP average gradients over ranks; scaling by the world size makes the result the
                # gradient of (sum of token losses over the global batch) / (its target tokens).
                (out.loss * world).backward()
            loss_sum += out.loss.detach()
        if hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(True)
        step_loss = all_reduce(ctx, float(loss_sum))
        if not math.isfinite(step_loss):
            optimizer.zero_grad(set_to_none=True)
            progress.close()
            raise NonFiniteLoss(f"loss became {step_loss} at step {step + 1}; stopped without applying it. The last good "
                                f"checkpoint is kept: lower train.lr or raise train.warmup_steps, then --resume")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        elapsed = time.perf_counter() - start
        state["wall_seconds"] += elapsed
        state["tokens"] += step_tokens
        state["processed_tokens"] = state.get("processed_tokens", 0) + step_processed
        state["step"] = step + 1
        state["first_loss"] = step_loss if state["first_loss"] is None else state["first_loss"]
        state["last_loss"] = step_loss
        losses.append(step_loss)
        if ctx.is_main and (state["step"] % t.log_every == 0 or state["step"] == steps):
            append_jsonl(metrics_path, {"step": state["step"], "epoch": round(step * t.grad_accum / per_epoch, 4),
                                        "loss": step_loss, "lr": lr, "grad_norm": grad_norm, "tokens": state["tokens"],
                                        "step_seconds": elapsed, "tokens_per_second": step_tokens / elapsed,
                                        **_memory_now(ctx)})
        progress.set_postfix(loss=f"{step_loss:.4f}", tok_s=f"{step_tokens / elapsed:,.0f}", refresh=False)
        progress.update(1)
        if t.eval_every and state["step"] % t.eval_every == 0 and state["step"] < steps:
            eval_start = time.perf_counter()
            eval_loss = evaluate(model, data, recipe, ctx, pad_id, dtype)
            state["eval_seconds"] += time.perf_counter() - eval_start
            if ctx.is_main and eval_loss is not None:
                append_jsonl(metrics_path, {"step": state["step"], "eval_loss": eval_loss})
        stop_now = all_reduce(ctx, 1.0 if stop.requested else 0.0, "max") > 0
        if (t.checkpoint_every and state["step"] % t.checkpoint_every == 0 and state["step"] < steps) or (stop_now and state["step"] < steps):
            ckpt_start = time.perf_counter()
            try:
                save_checkpoint(model, optimizer, state, ctx, out_dir)
            except CheckpointError:
                progress.close()
                raise
            state["checkpoint_seconds"] += time.perf_counter() - ckpt_start
        if stop_now and state["step"] < steps:
            status = "interrupted"
            break
    progress.close()
    if status == "completed":
        eval_start = time.perf_counter()
        eval_loss = evaluate(model, data, recipe, ctx, pad_id, dtype)
        state["eval_seconds"] += time.perf_counter() - eval_start
        if ctx.is_main and eval_loss is not None:
            append_jsonl(metrics_path, {"step": state["step"], "eval_loss": eval_loss})
    return TrainResult(state["step"], state["tokens"], state["processed_tokens"], state["wall_seconds"], state["eval_seconds"],
                       state["checkpoint_seconds"], state["first_loss"], state["last_loss"], eval_loss, status,
                       resumed_from, losses, stop.signal_name or None if status == "interrupted" else None)


def _memory_now(ctx: DistContext) -> dict:
    if ctx.device.type != "cuda":
        return {}
    return {"memory_allocated_gib": torch.cuda.max_memory_allocated(ctx.device) / 2**30}


class _LogProgress:
    """Progress for logs (no terminal): one line per tenth of the run with step, loss, tokens/s and ETA."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.total, self.n, self.enabled = total, initial, enabled
        self.every = max(1, total // 10)
        self.start, self.start_n, self.postfix = time.perf_counter(), initial, {}

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.enabled and (self.n % self.every == 0 or self.n == self.total):
            rate = (self.n - self.start_n) / max(time.perf_counter() - self.start, 1e-9)
            eta = (self.total - self.n) / rate if rate else float("inf")
            fields = " ".join(f"{k} {v}" for k, v in self.postfix.items())
            print(f"train: step {self.n}/{self.total} {fields} eta {eta:,.0f}s", file=sys.stderr, flush=True)

    def set_postfix(self, refresh: bool = False, **fields) -> None:
        self.postfix = fields

    def close(self) -> None:
        pass


def _progress(total: int, initial: int, ctx: DistContext):
    """A progress bar (step, loss, tokens/s, ETA) on a terminal; a plain line per tenth of the run in a log."""
    if not sys.stderr.isatty():
        return _LogProgress(total, initial, ctx.is_main)
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=not ctx.is_main, desc="train", unit="step", file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)
