"""A fine-tune as one object (torchtune's recipe class): `open_folder`, `setup` (tokenizer, data, model, adapters,
optimizer, a checkpoint to resume), `train`, `save`, `report`. The run's state lives on the session; rank 0 alone
holds the run folder and writes files, and `on_rank_zero` shares what it does with the other ranks."""

import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from advisor.catalog.types import Gpu
from advisor.core.errors import AdvisorError
from advisor.measure.runreport import RunReport
from advisor.plan.calibration import Calibration
from advisor.plan.estimate import Estimate, estimate_recipe
from advisor.plan.recipe import Recipe, check_model_source, recipe_to_yaml
from runners.checkpoint import CheckpointError, LoopState, intact_checkpoint, load_checkpoint, save_checkpoint
from runners.data import TokenizedData, micro_batches_per_epoch
from runners.prepare import build_dataset
from runners.distributed import DistContext, all_reduce, on_rank_zero, unwrap, wrap_model
from runners.environment import cache_root
from runners.hostmem import detach_from_checkpoint_file, map_large_host_tensors
from runners.io import atomic_write_json, keep_records_until
from runners.model import (
    attach_adapters, check_vocab, compile_layers, compute_dtype, load_model, notice, random_checkpoint, total_parameters,
    trainable_parameters,
)
from runners.offload import offload_notices
from runners.outputs import adapter_checksums, build_report, save_outputs
from runners.progress import progress_bar, step_fields
from runners.rundir import RunFolder, claim, data_fingerprint, planned_entries, recipe_fingerprint, tracker_entries
from runners.tokenizer import load_tokenizer
from runners.tracking import Trackers
from runners.train import (
    Epochs, NonFiniteLoss, StopRequest, TrainResult, account_step, build_optimizer, evaluate, keep_metrics_until,
    lr_factor, memory_now, record_metrics, seed_everything, should_stop_early, step_batches, stop_on_signals,
    total_steps, train_step,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class FineTuneSession:
    """One rank's part of a fine-tune, from an empty process to the report.

    - `recipe`, `ctx` (this rank), `gpu` (the catalog entry checked against, or None), `device_memory_gib`,
      `calibration`: given
    - `folder` (rank 0's RunFolder, holding the lock), `out_dir` (its resolved path, on every rank): `open_folder`
    - `tokenizer`, `data`, `estimate`, `strategy` (none, ddp or fsdp), `dtype`, `model`, `optimizer`, `loop` (the
      counters a checkpoint holds), `resumed_from_step`, `setup_seconds`: `setup`
    - `stop` (set by SIGINT/SIGTERM), `tracker`, `result`: `train`
    """

    # set by the phase named above, before any later phase reads them
    out_dir: Path
    tokenizer: "PreTrainedTokenizerBase"
    pad_id: int
    data: TokenizedData
    estimate: Estimate
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    tracker: Trackers
    result: TrainResult

    def __init__(self, recipe: Recipe, ctx: DistContext, gpu: Gpu | None = None, device_memory_gib: float | None = None,
                 calibration: Calibration | None = None):
        self.recipe, self.ctx, self.gpu = recipe, ctx, gpu
        self.device_memory_gib, self.calibration = device_memory_gib, calibration
        self.folder: RunFolder | None = None  # rank 0 only
        self.loop: LoopState = LoopState()
        self.resumed_from_step: int | None = None
        self.stop = StopRequest()
        self._fingerprints: tuple[dict, dict] = ({}, {})  # rank 0: this recipe's and data's, for the folder's marker
        self._committed = False  # the first step is done: a failure no longer rolls the folder back

    # --- setup ---------------------------------------------------------------------------------------------
    def open_folder(self, out_dir: Path, resume: bool, overwrite: bool, recipe_path: Path | None = None) -> None:
        """Rank 0 opens the run folder for a fresh run, a resume or a replacement and holds its lock (runners.rundir:
        anything not provably a run of ours is refused; the data, the recipe and the current directory are never
        replaced); every rank learns its path, or the refusal."""
        protect = {"data": Path(self.recipe.data.path), "recipe": recipe_path, "current directory": Path.cwd()}

        def open_on_rank_zero() -> str:
            self.folder = RunFolder.open(Path(out_dir), resume, overwrite, protect)
            return str(self.folder.path)
        self.out_dir = Path(on_rank_zero(self.ctx, open_on_rank_zero))

    def setup(self, allow_changes: bool = False) -> None:
        """Everything before the first step, checks first: the checkpoint to resume from, the tokenizer, the data, the
        plan for it, the model with its adapters, the optimizer. Only once all of it has loaded does the folder become
        this run's (`RunFolder.publish`), and for good only after the first step (`_commit`; until then a failure
        rolls it back). `allow_changes` lets a resume go on with a changed recipe or data."""
        start = time.perf_counter()
        if self.recipe.model.attn_implementation == "flex_attention" and self.ctx.device.type != "cuda":
            raise AdvisorError("model.attn_implementation: flex_attention trains on CUDA GPUs only (PyTorch's "
                               "FlexAttention has no backward on the CPU); use sdpa here")
        checkpoint = on_rank_zero(self.ctx, lambda: self._resume_point(allow_changes))
        seed_everything(self.recipe.train.seed)
        self.tokenizer = load_tokenizer(self.recipe)
        self.pad_id = cast(int, self.tokenizer.pad_token_id)  # load_tokenizer always sets a pad token
        # every rank opens the prepared cache (advisor run prepares it before torchrun starts them); a rank that finds
        # none prepares it under the key's lock while the others wait on the lock, not in a collective (runners.prepare)
        self._build_data()
        self._plan()
        on_rank_zero(self.ctx, self._random_checkpoint)  # once, before the other ranks read it
        self._setup_model()
        self._setup_optimizer()
        if checkpoint:
            self._resume(Path(checkpoint))
        on_rank_zero(self.ctx, self._publish)
        if self.ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.ctx.device)
        self.setup_seconds = time.perf_counter() - start

    def _resume_point(self, allow_changes: bool) -> str:
        """Rank 0, before anything loads: the fingerprints of this recipe and data, checked against the run being
        resumed, and the newest intact checkpoint ("" for a new run; damaged newer ones are named and skipped)."""
        check_model_source(self.recipe)
        self._fingerprints = recipe_fingerprint(self.recipe), data_fingerprint(self.recipe.data, cache_root())
        folder = self._rank_zero_folder()
        if folder.mode != "resume":
            return ""
        folder.check_resumable()
        folder.compare(*self._fingerprints, allow_changes)
        folder.check_planned(planned_entries(self.recipe))
        checkpoint, skipped = intact_checkpoint(folder.path)
        if checkpoint is None:
            raise AdvisorError(f"--resume: {folder.path} has no intact checkpoint "
                               f"({'; '.join(skipped) or 'the run stopped before its first one'}): "
                               "--overwrite to start it again from step 0")
        for note in skipped:
            notice(f"checkpoint {note}; falling back to {checkpoint.name}")
        return str(checkpoint)

    def _rank_zero_folder(self) -> RunFolder:
        """The run folder, which rank 0 opened in `open_folder` before anything else."""
        assert self.folder is not None, "rank 0 opens the folder in open_folder, before setup"
        return self.folder

    def _build_data(self) -> None:
        self.data = build_dataset(self.recipe, self.tokenizer, cache_root())

    def _plan(self) -> None:
        """The estimate again, now with the data's tokens (the memory check_fit judged is the same): it decides
        gradient checkpointing and the sharding (advisor.plan.sizing); the compute dtype."""
        recipe = self.recipe
        self.estimate = estimate_recipe(recipe, self.gpu, dataset_tokens=self.data.train_tokens,
                                        calibration=self.calibration, gpus=self.ctx.world_size,
                                        device_memory_gib=self.device_memory_gib)
        if recipe.train.gradient_checkpointing == "auto":
            notice(f"gradient checkpointing {'on' if self.estimate.gradient_checkpointing else 'off'} "
                   f"({self.estimate.gradient_checkpointing_reason})")
        self.strategy = self.estimate.sharding  # none, ddp or fsdp: decided by advisor.plan.sizing.choose_sharding
        self.dtype = compute_dtype(recipe, self.ctx.device)

    def _random_checkpoint(self) -> None:
        """A randomly initialised model to quantize is written once, as a checkpoint that every rank then loads."""
        recipe = self.recipe
        if recipe.quant is not None and (recipe.model.arch is not None or recipe.model.random_init):
            random_checkpoint(recipe, self.dtype, cache_root(), recipe.train.seed)

    def _setup_model(self) -> None:
        """The base model (sharded as it loads under FSDP), its adapters, compiled layers, the DDP/FSDP wrap."""
        recipe, ctx = self.recipe, self.ctx
        if recipe.train.host_memory == "release":
            map_large_host_tensors(ctx.device.type)  # before the weights and the steps allocate (runners.hostmem)
        model = load_model(recipe, ctx.device, cache_root(), recipe.train.seed, fsdp=self.strategy == "fsdp")
        detach_from_checkpoint_file(model, ctx.device.type, recipe.quant is not None)  # runners.hostmem
        check_vocab(model, self.tokenizer)
        model = attach_adapters(model, recipe, self.estimate.gradient_checkpointing)
        self.trainable, self.total = trainable_parameters(model), total_parameters(model)
        if recipe.train.compile and not compile_layers(model):  # before DDP/FSDP wrap the layers
            notice("train.compile: this model has no transformers decoder layers to compile; running eagerly")
        self.offloaded = recipe.launch.cpu_offload and self.strategy == "fsdp"
        self.model = wrap_model(model, ctx, self.strategy, self.dtype, cpu_offload=self.offloaded)
        for line in offload_notices(recipe.train.activation_offloading, self.offloaded, ctx.device):
            notice(line)

    def _setup_optimizer(self) -> None:
        # with FSDP's CPU offload the shards the optimizer updates live in CPU memory
        self.optimizer = build_optimizer([p for p in self.model.parameters() if p.requires_grad], self.recipe.train,
                                         torch.device("cpu") if self.offloaded else self.ctx.device)

    def _resume(self, checkpoint: Path) -> None:
        """Adapters, optimizer, RNG and loop counters from the checkpoint, on every rank."""
        try:
            self.loop = load_checkpoint(self.model, self.optimizer, self.ctx, checkpoint)
        except CheckpointError as exc:
            raise AdvisorError(str(exc)) from None
        self.resumed_from_step = self.loop.step
        notice(f"resuming from {checkpoint} (step {self.loop.step})")

    def _publish(self) -> None:
        """Rank 0, once everything has loaded: the folder becomes this run's (a replaced run is moved aside and removed;
        a resume with --allow-changes records them in the marker)."""
        self._rank_zero_folder().publish(*self._fingerprints, {"recipe.resolved.yaml": recipe_to_yaml(self.recipe)}, self.loop.step)

    # --- training ------------------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        """The optimizer steps, from step 0 or the checkpoint's; SIGINT/SIGTERM checkpoint and stop at the next step
        boundary. What the user can act on (out of memory, a non-finite loss, a failed checkpoint) becomes one
        AdvisorError. Until the first step is done, a failure leaves the folder as it was found (RunFolder.rollback)."""
        self._claim(*tracker_entries(self.recipe))
        self.tracker = Trackers(self.recipe, self.out_dir, False)  # only rank 0 opens any; its failure stops every rank

        def start_trackers() -> None:
            self.tracker = Trackers(self.recipe, self.out_dir, True, self.resumed_from_step)
        on_rank_zero(self.ctx, start_trackers)
        try:
            with stop_on_signals(self.stop):
                self.result = self._steps()
        except torch.cuda.OutOfMemoryError:
            raise AdvisorError(f"CUDA out of memory (estimated peak {self.estimate.peak_memory_gib:.1f} GiB per GPU); "
                               "would fit: " + "; ".join(self.estimate.suggestions or [
                                   "a smaller train.micro_batch", "train.gradient_checkpointing: true", "QLoRA",
                                   "more GPUs with launch.strategy: fsdp"])) from None
        except (NonFiniteLoss, CheckpointError) as exc:
            raise AdvisorError(str(exc)) from None
        finally:
            self.tracker.close()
        self._commit()
        return self.result

    def _claim(self, *names: str) -> None:
        """Record entries in the folder's manifest before the run first writes them (runners.rundir.claim)."""
        if names:
            on_rank_zero(self.ctx, lambda: claim(self.out_dir, *names))

    def _commit(self) -> None:
        """After the first step: the folder is this run's for good (a replaced run is removed only now)."""
        if not self._committed:
            on_rank_zero(self.ctx, lambda: self.folder.commit() if self.folder else None)
            self._committed = True

    def _steps(self) -> TrainResult:
        """The loop: measured steps, rank 0 writing metrics.jsonl; evals, early stopping and checkpoints as the
        recipe says; a final eval once all steps are done."""
        t, ctx, state = self.recipe.train, self.ctx, self.loop
        steps = total_steps(self.recipe, len(self.data.train), ctx.world_size)
        per_epoch = micro_batches_per_epoch(len(self.data.train), t.micro_batch, ctx.world_size)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self._claim("metrics.jsonl", *(["samples.jsonl"] if self.recipe.eval.samples else []))
        keep_metrics_until(self.out_dir / "metrics.jsonl", state.step, ctx)
        if ctx.is_main:  # the eval samples of steps after the checkpoint are generated again
            keep_records_until(self.out_dir / "samples.jsonl", state.step)
        epochs, losses, status, eval_loss = Epochs(len(self.data.train), t.seed), [], "completed", None
        eval_losses: list[float] = []  # this session's evals, for early stopping (a resumed run starts counting afresh)
        progress = progress_bar(steps, state.step, ctx.is_main)
        try:
            self.model.train()
            while state.step < steps:
                step, lr = state.step, t.lr * lr_factor(state.step, t, steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                batches = step_batches(self.data, epochs, step, t, ctx, self.pad_id, per_epoch)
                start = time.perf_counter()
                step_loss, grad_norm = train_step(self.model, self.optimizer, params, batches, ctx, self.dtype, t, step)
                elapsed = time.perf_counter() - start
                step_tokens = account_step(state, batches, step_loss, elapsed)
                self._commit()
                losses.append(step_loss)
                if ctx.is_main and (state.step % t.log_every == 0 or state.step == steps):
                    self._record({"step": state.step, "epoch": round(step * t.grad_accum / per_epoch, 4),
                                  "loss": step_loss, "lr": lr, "grad_norm": grad_norm, "tokens": state.tokens,
                                  "step_seconds": elapsed, "tokens_per_second": step_tokens / elapsed,
                                  **memory_now(ctx)})
                # the fields are loss, lr, tok/s and eval: never tqdm's own ordered_dict parameter
                progress.set_postfix(refresh=False, **step_fields(step_loss, lr, step_tokens / elapsed, eval_loss))  # pyright: ignore[reportArgumentType]
                progress.update(1)
                more = state.step < steps
                if t.eval_every and state.step % t.eval_every == 0 and more:
                    eval_loss = self._evaluate()
                    eval_losses += [eval_loss] if eval_loss is not None else []
                    if self._stops_early(eval_losses):
                        break
                stop_now = all_reduce(ctx, 1.0 if self.stop.requested else 0.0, "max") > 0
                if more and (stop_now or (t.checkpoint_every and state.step % t.checkpoint_every == 0)):
                    self._checkpoint()
                if stop_now and more:
                    status = "interrupted"
                    break
        finally:
            progress.close()
        if status == "completed":
            eval_loss = self._evaluate()
        return TrainResult(state.step, state.tokens, state.processed_tokens, state.wall_seconds, state.eval_seconds,
                           state.checkpoint_seconds, state.first_loss, state.last_loss, eval_loss, status,
                           self.resumed_from_step, losses,
                           self.stop.signal_name or None if status == "interrupted" else None)

    def _record(self, record: dict) -> None:
        record_metrics(self.out_dir / "metrics.jsonl", self.tracker, record)

    def _evaluate(self) -> float | None:
        """The eval loss (every rank) and the recipe's eval samples, timed apart from the steps; rank 0 records it."""
        start = time.perf_counter()
        eval_loss = evaluate(self.model, self.data, self.recipe, self.ctx, self.pad_id, self.dtype)
        if self.recipe.eval.samples:
            self._write_samples()
        self.loop.eval_seconds += time.perf_counter() - start
        if self.ctx.is_main and eval_loss is not None:
            self._record({"step": self.loop.step, "eval_loss": eval_loss})
        return eval_loss

    def _write_samples(self) -> None:
        """Generate the recipe's eval.samples (rank 0; every rank under FSDP, whose forward gathers shards, with rank
        0 writing) into samples.jsonl and the trackers."""
        if self.ctx.is_main or self.strategy == "fsdp":
            from runners.generate import write_samples
            write_samples(unwrap(self.model), self.tokenizer, self.recipe, self.loop.step, self.out_dir, self.tracker,
                          write=self.ctx.is_main)

    def _stops_early(self, eval_losses: list[float]) -> bool:
        e = self.recipe.eval
        if not should_stop_early(eval_losses, e.early_stopping_patience, e.early_stopping_delta):
            return False
        notice(f"early stop at step {self.loop.step}: eval loss has not improved for {e.early_stopping_patience} "
               f"evals (best {min(eval_losses):.4f})")
        return True

    def _checkpoint(self) -> None:
        start = time.perf_counter()
        self._claim("checkpoints")
        save_checkpoint(self.model, self.optimizer, self.loop, self.ctx, self.out_dir)
        self.loop.checkpoint_seconds += time.perf_counter() - start

    # --- outputs -------------------------------------------------------------------------------------------
    def save(self) -> None:
        """A completed run's adapter (and merged model); an interrupted run keeps its checkpoint to resume from."""
        if self.result.status == "completed":
            save_outputs(self.model, self.recipe, self.out_dir, self.ctx)

    def report(self) -> RunReport:
        """The measured report on every rank; rank 0 writes it as report.json, with the model card of a completed
        run."""
        checksums = adapter_checksums(self.model, self.ctx)
        report = build_report(self.recipe, self.ctx, self.result, self.estimate, self.trainable,
                              self.total - self.trainable, self.gpu, self.setup_seconds, checksums)
        report = report.model_copy(update={"resume_changes": self._resume_changes(), "data_notes": self.data.notes})

        def write_on_rank_zero() -> None:
            claim(self.out_dir, "report.json")
            atomic_write_json(self.out_dir / "report.json", report.model_dump(mode="json"))
            if self.result.status == "completed":
                from runners.card import write_model_card
                write_model_card(self.out_dir / "adapter", self.recipe, report, self.data.cache_path.stem)
        on_rank_zero(self.ctx, write_on_rank_zero)
        return report

    def _resume_changes(self) -> list[str]:
        """The recipe and data changes --allow-changes let resumes make, from the folder's marker (rank 0)."""
        marker = (self.folder.marker or {}) if self.folder else {}
        return [f"at step {entry['at_step']}: {change}" for entry in marker.get("changes", [])
                for change in entry["changes"]]

    def close(self) -> None:
        """Release the folder's lock; a start that never made a step is rolled back (a fresh folder is removed again,
        a replaced run comes back, a resume's marker is restored)."""
        if self.folder is not None:
            self.folder.close()
