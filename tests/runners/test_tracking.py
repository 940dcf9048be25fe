"""Experiment tracking: TensorBoard events read back, a W&B offline run and an MLflow file-store run written, all at
the steps of metrics.jsonl (each skipped where its optional package, rightsize[track], is absent)."""

import importlib.util

import pytest

from tests.conftest import run_cli
from tests.helpers import RECIPES, metrics

INSTALLED = [name for name in ("tensorboard", "wandb", "mlflow") if importlib.util.find_spec(name)]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    if not INSTALLED:
        pytest.skip("no tracker installed (pip install 'rightsize[track]')")
    out = tmp_path_factory.mktemp("tracked") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    from advisor.cli import main
    try:
        code = main(["run", str(RECIPES / "tiny-cpu-lora.yaml"), "--out", str(out), "--set", "train.max_steps=4",
                     "--set", "train.eval_every=2", "--set", "train.checkpoint_every=0",
                     "--set", f"train.report_to=[{', '.join(INSTALLED)}]"])
    finally:
        mp.undo()
    assert code == 0
    return out


def _expected(out):
    lines = metrics(out)
    return ({m["step"]: m["loss"] for m in lines if "loss" in m}, {m["step"]: m["eval_loss"] for m in lines if "eval_loss" in m})


def test_tensorboard_events_read_back(tracked_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tracked_run / "tensorboard"))
    events.Reload()
    losses, evals = _expected(tracked_run)
    assert {e.step: e.value for e in events.Scalars("train/loss")} == pytest.approx(losses)
    assert {e.step: e.value for e in events.Scalars("eval/loss")} == pytest.approx(evals)
    assert len(evals) == 2 and {"train/lr", "train/grad_norm", "train/tokens_per_second"} <= set(events.Tags()["scalars"])


def test_wandb_offline_run_written(tracked_run):
    pytest.importorskip("wandb")
    runs = list((tracked_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (log,) = runs[0].glob("*.wandb")  # the offline run's record log (what `wandb sync` uploads)
    records = log.read_bytes()
    for key in (b"train/loss", b"train/lr", b"train/grad_norm", b"eval/loss", b"tiny-cpu-lora"):
        assert key in records, key


def test_mlflow_file_store_run_written(tracked_run):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=(tracked_run / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("rightsize")
    (run,) = client.search_runs([experiment.experiment_id])
    losses, evals = _expected(tracked_run)
    assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train_loss")} == pytest.approx(losses)
    assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, "eval_loss")} == pytest.approx(evals)


def test_missing_tracker_refused_before_anything_loads(tmp_path, capsys, monkeypatch):
    import runners.tracking
    monkeypatch.setattr(runners.tracking.importlib.util, "find_spec", lambda name: None)
    code, _, err = run_cli(["run", RECIPES / "tiny-cpu-lora.yaml", "--out", tmp_path / "r", "--set",
                            "train.report_to=[wandb]"], capsys)
    assert code == 2 and "rightsize[track]" in err and not (tmp_path / "r").exists()


# --- a tracker that cannot start is refused before the run folder exists ------------------------------------------

TINY = RECIPES / "tiny-cpu-lora.yaml"
SHORT = ["--set", "train.max_steps=2", "--set", "train.checkpoint_every=0", "--set", "train.eval_every=0"]


def _one_line(code, err, *needles):
    """Exit 2 and one error line (notes the run printed before it failed aside), naming every needle."""
    errors = [line for line in err.splitlines() if line.startswith("advisor: error: ")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], (needle, err)


@pytest.fixture
def no_wandb_credentials(tmp_path, monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_DISABLED", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine example.org login me password other-service\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    return netrc


def test_wandb_without_credentials_is_one_line_and_leaves_no_folder(tmp_path, capsys, no_wandb_credentials):
    code, _, err = run_cli(["run", TINY, "--out", tmp_path / "r", *SHORT, "--set", "train.report_to=[wandb]"], capsys)
    _one_line(code, err, "train.report_to: wandb", "api.wandb.ai", "wandb login", "WANDB_MODE=offline")
    assert not (tmp_path / "r").exists()


def test_wandb_credentials_or_local_mode_pass(no_wandb_credentials, monkeypatch):
    from runners.tracking import wandb_problem
    assert "wandb login" in (wandb_problem() or "")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_problem() is None
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_problem() is None
    monkeypatch.delenv("WANDB_API_KEY")
    no_wandb_credentials.write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    assert wandb_problem() is None  # what `wandb login` writes
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")
    assert "wandb.example.com" in (wandb_problem() or "")  # a key for api.wandb.ai is not one for another server


def _closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_mlflow_server_is_one_line_and_leaves_no_folder(tmp_path, capsys, monkeypatch):
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())  # installed or not: the server is checked
    code, _, err = run_cli(["run", TINY, "--out", tmp_path / "r", *SHORT, "--set", "train.report_to=[mlflow]"], capsys)
    _one_line(code, err, "train.report_to: mlflow", f"MLFLOW_TRACKING_URI={uri}", "cannot be reached")
    assert not (tmp_path / "r").exists()


def test_mlflow_check_times_out_instead_of_hanging(monkeypatch):
    import runners.tracking as tracking
    seen = {}

    def silent_server(address, timeout):
        seen["timeout"] = timeout
        raise TimeoutError("timed out")
    monkeypatch.setattr(tracking.socket, "create_connection", silent_server)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.com")
    assert "timed out within 3 s" in (tracking.mlflow_problem() or "")
    assert seen["timeout"] == tracking.TRACKER_CONNECT_TIMEOUT_S
    for local in ("", "file:///tmp/mlruns", "sqlite:///mlflow.db", "databricks"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", local)
        assert tracking.mlflow_problem() is None


class _Refusing:
    """A tracker whose library fails as it starts (a server that refuses the run, say)."""

    def __init__(self, *args):
        raise RuntimeError("the server refused the run\nsecond line")


def test_a_tracker_failing_at_start_leaves_the_folder_as_found(tmp_path, capsys, monkeypatch):
    """Fresh: the folder is removed and the same command, corrected, runs without --overwrite."""
    pytest.importorskip("tensorboard")
    import runners.tracking
    monkeypatch.setitem(runners.tracking.BACKENDS, "tensorboard", _Refusing)
    out = tmp_path / "r"
    args = ["run", TINY, "--out", out, *SHORT, "--set", "train.report_to=[tensorboard]"]
    code, _, err = run_cli(args, capsys)
    _one_line(code, err, "train.report_to: tensorboard did not start (the server refused the run)")
    assert not out.exists()
    monkeypatch.undo()
    code, _, err = run_cli(args, capsys)
    assert code == 0, err


def test_a_tracker_failing_at_start_keeps_the_replaced_run(tracked_run, tmp_path, capsys, monkeypatch):
    import runners.tracking
    run = tmp_path / "run"
    import shutil
    shutil.copytree(tracked_run, run)
    before = {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
              if p.is_file() and p.name != ".rightsize-lock"}
    monkeypatch.setitem(runners.tracking.BACKENDS, "tensorboard", _Refusing)
    monkeypatch.setenv("WANDB_MODE", "offline")
    code, _, err = run_cli(["run", TINY, "--out", run, "--overwrite", *SHORT, "--set", "train.report_to=[tensorboard]"],
                           capsys)
    _one_line(code, err, "tensorboard did not start")
    after = {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
             if p.is_file() and p.name != ".rightsize-lock"}
    assert after == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
