"""The schema of a run's report.json: measured compute beside the advisor's estimate (read without torch)."""

import json
import sys
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError

from advisor.core.convert import convert, to_json
from advisor.core.errors import AdvisorError
from advisor.core.numbers import human
from advisor.plan.estimate import Estimate


def _estimate(value) -> Estimate:
    """report.json's estimate, a msgspec Struct, read by msgspec (keys another version wrote are ignored); its
    InputError (a ValueError) names the field."""
    return value if isinstance(value, Estimate) else convert(Estimate, value)


# The Estimate inside the pydantic report: validated by msgspec, dumped as its JSON form
ReportEstimate = Annotated[Estimate, PlainValidator(_estimate), PlainSerializer(to_json)]


class LossSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    first: float | None = Field(description="Training loss of the first optimizer step.")
    last: float | None = Field(description="Training loss of the last optimizer step.")
    eval: float | None = Field(description="Mean loss on the validation split at the end (None without one).")


class PeakMemory(BaseModel):
    model_config = ConfigDict(extra="forbid")
    allocated: float | None = Field(description="Peak torch-allocated GiB on one GPU (max over GPUs).")
    reserved: float | None = Field(description="Peak GiB the caching allocator reserved on one GPU (max over GPUs).")
    rss: float | None = Field(default=None, description="Peak resident memory of one process, GiB (CPU runs).")


class RunReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    recipe: str
    method: str
    model: str
    status: str = Field(description="completed, interrupted (checkpoint saved) or failed")
    steps: int
    trainable_params: int
    total_params: int
    tokens: int = Field(description="Non-padding tokens trained on, all ranks.")
    processed_tokens: int = Field(description="Tokens the GPUs computed, padding included (what compute is spent on).")
    wall_seconds: float = Field(description="Wall time of the training steps (eval and checkpoint saves excluded).")
    eval_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    setup_seconds: float = 0.0
    gpus: int = Field(description="GPUs used (0 on CPU).")
    gpu_hours: float = Field(description="wall_seconds x gpus / 3600.")
    tokens_per_second: float
    model_flops: float = Field(description="advisor.formulas.flops.flops_per_token(...).model x tokens.")
    executed_flops: float = Field(description="flops_per_token(...).total x processed_tokens: model FLOPs, recompute and padding.")
    mfu: float | None = Field(description="model_flops / (wall x gpus x the GPU's dense bf16 peak); None on CPU.")
    peak_flops_per_gpu: float | None
    peak_memory_gib: PeakMemory
    loss: LossSummary
    device: str
    gpu_name: str | None = Field(description="Catalog name of the GPU the run used, if recognised.")
    world_size: int
    versions: dict[str, str | None]
    estimate: ReportEstimate
    resumed_from_step: int | None = None
    seed: int
    interrupted_by: str | None = Field(default=None, description="SIGINT or SIGTERM when the run stopped early at a checkpoint.")
    adapter_checksums: list[str] = Field(default_factory=list, description="Hash of each rank's adapter weights "
                                         "(DDP replicas must be equal; FSDP ranks hold different shards).")
    resume_changes: list[str] = Field(default_factory=list, description="Recipe or data changes a resume accepted with "
                                      "--allow-changes, each with the step it applied from (empty: one unchanged run).")
    data_notes: list[str] = Field(default_factory=list, description="What the run said about its data, as printed: rows "
                                  "left out per source and why (data.on_bad_rows: skip), a source whose rows are mostly "
                                  "of another format, a source data.max_examples leaves out (empty: nothing to say).")

    def summary(self) -> str:
        mfu = f"{self.mfu:.1%}" if self.mfu is not None else "n/a (CPU)"
        mem = self.peak_memory_gib
        memory = (f"{mem.allocated:.2f} GiB allocated / {mem.reserved:.2f} GiB reserved per GPU" if mem.allocated is not None
                  else f"{mem.rss:.2f} GiB resident" if mem.rss is not None else "n/a")
        ev = f", eval {self.loss.eval:.4f}" if self.loss.eval is not None else ""
        return "\n".join([
            f"{self.status}: {self.recipe} ({self.method}, {self.model}) on {self.world_size} x {self.device}",
            f"  trainable params {self.trainable_params:,} of {human(self.total_params)} (estimate {self.estimate.trainable_params:,})",
            f"  {self.steps} steps, {human(self.tokens)} tokens in {self.wall_seconds:.1f} s: {self.tokens_per_second:,.0f} tokens/s, "
            f"MFU {mfu}, " + (f"{self.gpu_hours:.4f} GPU-hours" if self.gpus else "no GPU-hours (CPU)"),
            f"  loss {self.loss.first:.4f} -> {self.loss.last:.4f}{ev}",
            f"  peak memory: {memory} (estimated {self.estimate.peak_memory_gib:.2f} GiB)",
        ] + ([f"  estimate calibrated with {self.estimate.calibration}"] if self.estimate.calibration else []))


def _known_keys(data, path: Path) -> object:
    """report.json as this version reads it: keys a newer version added (top level, loss, peak_memory_gib) are left
    out with one note each on stderr naming the key and the file, so an older advisor still reads newer runs."""
    if not isinstance(data, dict):
        return data
    nested = {"loss": LossSummary, "peak_memory_gib": PeakMemory}
    out = {}
    for key, value in data.items():
        if key not in RunReport.model_fields:
            sys.stderr.write(f"advisor: note: {path}: key {key!r} ignored (written by a newer version?)\n")
        elif key in nested and isinstance(value, dict):
            extra = [k for k in value if k not in nested[key].model_fields]
            for name in extra:
                sys.stderr.write(f"advisor: note: {path}: key '{key}.{name}' ignored (written by a newer version?)\n")
            out[key] = {k: v for k, v in value.items() if k not in extra}
        else:
            out[key] = value
    return out


def load_report(run_dir: Path) -> RunReport:
    path = Path(run_dir) / "report.json" if Path(run_dir).is_dir() else Path(run_dir)
    try:
        return RunReport.model_validate(_known_keys(json.loads(path.read_bytes().decode("utf-8")), path))
    except FileNotFoundError:
        raise AdvisorError(f"{run_dir}: no report.json (is it a run directory of `advisor run`?)") from None
    except UnicodeDecodeError as exc:
        raise AdvisorError(f"{path}: not a valid run report (not UTF-8 at byte {exc.start})") from None
    except RecursionError:
        raise AdvisorError(f"{path}: not a valid run report (nested too deeply)") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"]))
        raise AdvisorError(f"{path}: not a valid run report ({where + ': ' if where else ''}{err['msg']})") from None
    except (json.JSONDecodeError, OSError) as exc:
        raise AdvisorError(f"{path}: not a valid run report ({str(exc).splitlines()[0]})") from None


# --- RUN/eval.json: quality beside cost (advisor eval) ------------------------------------------------------------

EVAL_FORMAT = "rightsize-eval-v1"  # eval.json's `format`: bumped when what it holds changes, which also voids its cache


class QualityScores(BaseModel):
    """One model's quality on the eval rows (advisor.formulas.quality)."""

    model_config = ConfigDict(extra="ignore")
    loss: float | None = Field(description="Mean loss per target token (nats), under the training loss mask.")
    perplexity: float | None = Field(description="exp(loss).")
    exact_match: float | None = Field(default=None, description="Share of greedy answers equal to the reference "
                                      "(stripped); None where the rows carry no reference answer.")
    normalized_match: float | None = Field(default=None, description="Share equal after SQuAD's normalisation "
                                           "(case, punctuation, articles, whitespace).")
    token_f1: float | None = Field(default=None, description="Mean SQuAD token F1 of the answers against the references.")


class EvalReport(BaseModel):
    """RUN/eval.json: the base model and base + adapter on the same held-out rows, written by `advisor eval`."""

    model_config = ConfigDict(extra="ignore")
    format: str = EVAL_FORMAT
    key: str = Field(description="Hash of what the result depends on (adapter, data content, settings); a second "
                     "`advisor eval` reuses this file while it matches.")
    model: str = Field(description="The base model (hub id, path, or the recipe's inline architecture).")
    adapter_path: str | None = Field(description="The adapter evaluated beside the base; None for a base model alone.")
    adapter_sha256: str | None = None
    data: str = Field(description="What was evaluated: the run's held-out rows or the --data file.")
    data_sha256: str = Field(description="Content hash of the data files behind the rows.")
    examples: int = Field(description="Examples evaluated for loss.")
    loss_tokens: int = Field(description="Target tokens the losses average over.")
    generated: int = Field(default=0, description="Examples with a reference answer, generated greedily by each model.")
    generation_note: str | None = Field(default=None, description="Why no answers were generated, where none were.")
    max_new_tokens: int
    batch_size: int
    seed: int
    base: QualityScores
    adapter: QualityScores | None = None
    seconds: float = Field(description="Wall time of the evaluation.")
    device: str

    @property
    def loss_delta(self) -> float | None:
        """Adapter loss minus base loss: negative when the adapter fits the held-out rows better."""
        return None if self.adapter is None or self.adapter.loss is None or self.base.loss is None \
            else self.adapter.loss - self.base.loss

    @property
    def exact_match_delta(self) -> float | None:
        """Adapter exact-match rate minus the base's: positive when the adapter answers more rows exactly."""
        if self.adapter is None or self.adapter.exact_match is None or self.base.exact_match is None:
            return None
        return self.adapter.exact_match - self.base.exact_match


EVAL_FILE = "eval.json"  # in the run folder, beside report.json; the per-row results go to eval/rows.jsonl


def load_eval(run_dir: Path) -> EvalReport | None:
    """A run's eval.json, or None where `advisor eval` has not written one (or wrote an older format)."""
    path = Path(run_dir) / EVAL_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, OSError) as exc:
        raise AdvisorError(f"{path}: not a valid eval result ({str(exc).splitlines()[0]}); run advisor eval "
                           f"{run_dir} again") from None
    if not isinstance(data, dict) or data.get("format") != EVAL_FORMAT:
        return None
    try:
        return EvalReport.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise AdvisorError(f"{path}: not a valid eval result ({'.'.join(map(str, err['loc']))}: {err['msg']})") from None
