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
