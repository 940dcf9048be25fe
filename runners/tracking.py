"""Experiment tracking: the scalars of metrics.jsonl (and eval samples) also sent to TensorBoard, Weights & Biases or
MLflow (`train.report_to`), each library imported only when the recipe asks for it."""

import importlib.util
import json
import os
from pathlib import Path

from advisor.core.errors import AdvisorError
from advisor.plan.recipe import Recipe, recipe_to_yaml

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
# metrics.jsonl keys and the tag each tracker shows them under
TAGS = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm", "tokens_per_second": "train/tokens_per_second",
        "memory_allocated_gib": "train/memory_allocated_gib", "memory_rss_gib": "train/memory_rss_gib",
        "eval_loss": "eval/loss"}


def check_trackers_installed(recipe: Recipe) -> None:
    """Before anything loads: every tracker the recipe names is importable, or one line saying what to install."""
    missing = [name for name in recipe.train.report_to if importlib.util.find_spec(PACKAGES[name]) is None]
    if missing:
        raise AdvisorError(f"train.report_to: {', '.join(missing)} not installed: pip install 'rightsize[track]' "
                           f"(or {' '.join(PACKAGES[m] for m in missing)})")


def scalars(record: dict) -> dict[str, float]:
    """The tracked scalars of one metrics.jsonl record, under their tracker tags."""
    return {TAGS[k]: float(v) for k, v in record.items() if k in TAGS and v is not None}


class _TensorBoard:
    def __init__(self, recipe: Recipe, out_dir: Path):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
        self.writer.add_text("recipe", "```\n" + recipe_to_yaml(recipe) + "\n```", 0)

    def log(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def text(self, step: int, tag: str, text: str) -> None:
        self.writer.add_text(tag, text, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _WandB:
    """W&B run in the run folder; WANDB_MODE (offline, disabled), WANDB_PROJECT and WANDB_ENTITY are honoured."""

    def __init__(self, recipe: Recipe, out_dir: Path):
        import wandb
        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "rightsize"), name=recipe.name, dir=str(out_dir),
                              config=json.loads(recipe.model_dump_json()), reinit="finish_previous")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def text(self, step: int, tag: str, text: str) -> None:
        self.run.log({tag: self.wandb.Html(f"<pre>{text}</pre>")}, step=step)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    """MLflow run; MLFLOW_TRACKING_URI if set, else a local file store in the run folder (RUN/mlruns)."""

    def __init__(self, recipe: Recipe, out_dir: Path):
        import mlflow
        self.mlflow = mlflow
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # a local file store needs no server or database; MLflow 3 asks for this opt-in to keep it
            uri = (out_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "rightsize"))
        self.run = mlflow.start_run(run_name=recipe.name)
        mlflow.log_text(recipe_to_yaml(recipe), "recipe.resolved.yaml")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.mlflow.log_metrics({tag.replace("/", "_"): v for tag, v in values.items()}, step=step)

    def text(self, step: int, tag: str, text: str) -> None:
        self.mlflow.log_text(text, f"{tag}/step-{step:08d}.txt")

    def close(self) -> None:
        self.mlflow.end_run()


BACKENDS = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}


class Trackers:
    """The recipe's trackers (none by default); only rank 0 opens any. `log` takes a metrics.jsonl record."""

    def __init__(self, recipe: Recipe, out_dir: Path, enabled: bool):
        self.backends = [BACKENDS[name](recipe, Path(out_dir)) for name in recipe.train.report_to] if enabled else []

    def log(self, record: dict) -> None:
        values = scalars(record)
        for backend in self.backends:
            if values:
                backend.log(int(record["step"]), values)

    def text(self, step: int, tag: str, text: str) -> None:
        for backend in self.backends:
            backend.text(step, tag, text)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
        self.backends = []
