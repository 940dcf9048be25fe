"""Experiment tracking: the scalars of metrics.jsonl (and eval samples) also sent to TensorBoard, Weights & Biases or
MLflow (`train.report_to`), each library imported only when the recipe asks for it.

- before anything loads or the run folder is touched, `check_trackers_can_start` refuses, in one line, a tracker that
  cannot start: W&B without credentials (and not WANDB_MODE=offline/disabled), MLflow with an unreachable
  MLFLOW_TRACKING_URI (a TCP connect, TRACKER_CONNECT_TIMEOUT_S); TensorBoard writes local files and needs nothing;
- on resume the run continues from its checkpoint's step S and logs steps S+1... again. TensorBoard: the writer purges
  the events after S (`SummaryWriter(purge_step=S+1)`), so each step shows once. W&B and MLflow: each process starts
  a new tracker run (no id is reused), so a resumed run is a second W&B/MLflow run beginning at step S+1, with no step
  logged twice inside one run. (Had it reused the W&B run, W&B would drop the re-logged steps: it warns "Tried to log
  to step X that is less than the current step Y. Steps must be monotonically increasing, so this data will be
  ignored".) metrics.jsonl and samples.jsonl, the run's own records, are cut back to S (runners.session).
"""

import importlib.util
import json
import netrc
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

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


TRACKER_CONNECT_TIMEOUT_S = 3.0  # a reachable tracking server answers a TCP connect in milliseconds; never hang on one
WANDB_LOCAL_MODES = ("offline", "disabled", "dryrun")  # WANDB_MODE values that need no server or credentials
WANDB_DEFAULT_HOST = "https://api.wandb.ai"


def check_trackers_can_start(recipe: Recipe) -> None:
    """Before the run folder is opened: every tracker in train.report_to can start, or one line naming the service,
    the setting and the fix (so no folder is left for the corrected command to trip on)."""
    for name in recipe.train.report_to:
        problem = {"wandb": wandb_problem, "mlflow": mlflow_problem}.get(name, lambda: None)()
        if problem:
            raise AdvisorError(f"train.report_to: {problem}")


def wandb_problem() -> str | None:
    """Why a W&B run could not start here, or None: it needs an API key (WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE or
    the netrc entry `wandb login` writes, for WANDB_BASE_URL's host) unless WANDB_MODE is offline or disabled."""
    if os.environ.get("WANDB_MODE", "").lower() in WANDB_LOCAL_MODES or \
            os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1"):
        return None
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return None
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or WANDB_DEFAULT_HOST).netloc
    if _netrc_password(host):
        return None
    return (f"wandb (Weights & Biases at {host}) has no credentials (no WANDB_API_KEY, no netrc entry): run "
            "`wandb login`, or set WANDB_MODE=offline to log locally and `wandb sync` later")


def _netrc_password(host: str) -> str | None:
    """The password of `host` in the netrc file wandb reads ($NETRC, else ~/.netrc, else ~/_netrc)."""
    path = Path(os.environ["NETRC"]).expanduser() if os.environ.get("NETRC") else Path("~/.netrc").expanduser()
    if not os.environ.get("NETRC") and not path.exists():
        path = Path("~/_netrc").expanduser()
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return entry[2] if entry else None


def mlflow_problem() -> str | None:
    """Why MLflow could not start here, or None: an http(s) MLFLOW_TRACKING_URI must accept a TCP connection within
    TRACKER_CONNECT_TIMEOUT_S (other stores, and no URI: a local file store in the run folder, need nothing)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        return f"mlflow: MLFLOW_TRACKING_URI={uri} is not a valid URI ({exc}); fix it, or unset it to log to RUN/mlruns"
    if parts.scheme not in ("http", "https") or not host:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"mlflow: MLFLOW_TRACKING_URI={uri} has an invalid port; fix it, or unset it to log to RUN/mlruns"
    try:
        socket.create_connection((parts.hostname, port), timeout=TRACKER_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or exc.__class__.__name__)
        return (f"mlflow: the tracking server MLFLOW_TRACKING_URI={uri} cannot be reached ({reason} within "
                f"{TRACKER_CONNECT_TIMEOUT_S:g} s): start it or fix the URI, or unset MLFLOW_TRACKING_URI to log to "
                "RUN/mlruns")
    return None


def scalars(record: dict) -> dict[str, float]:
    """The tracked scalars of one metrics.jsonl record, under their tracker tags."""
    return {TAGS[k]: float(v) for k, v in record.items() if k in TAGS and v is not None}


class _TensorBoard:
    """Event files in RUN/tensorboard; a resume from step S hides the events after S (purge_step) and logs them again."""

    def __init__(self, recipe: Recipe, out_dir: Path, resumed_from_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter
        purge = resumed_from_step + 1 if resumed_from_step is not None else None
        self.writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=purge)
        if purge is None:  # a resume's step 0 already holds it
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

    def __init__(self, recipe: Recipe, out_dir: Path, resumed_from_step: int | None = None):
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

    def __init__(self, recipe: Recipe, out_dir: Path, resumed_from_step: int | None = None):
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

    def __init__(self, recipe: Recipe, out_dir: Path, enabled: bool, resumed_from_step: int | None = None):
        self.backends: list = []
        for name in recipe.train.report_to if enabled else ():
            try:
                self.backends.append(BACKENDS[name](recipe, Path(out_dir), resumed_from_step))
            except Exception as exc:  # noqa: BLE001 - any library's failure to start: one line, and the others closed
                self.close()
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
                raise AdvisorError(f"train.report_to: {name} did not start ({first}); fix it or drop {name} from "
                                   "train.report_to") from None

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
