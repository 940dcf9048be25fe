"""A run owns what its marker records, never what merely shares a name; resume is consistent for every file the run
writes; --allow-changes refuses what a checkpoint cannot survive; --resume-auto starts, continues or skips."""

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.helpers import RECIPES, one_line_error, snapshot, train_losses

TINY = RECIPES / "tiny-cpu-lora.yaml"
# 6 steps, checkpoints at 2 and 4, evals (with one generated sample) at 2, 4 and 6, TensorBoard events
SHORT = ["--set", "train.max_steps=6", "--set", "train.checkpoint_every=2", "--set", "train.eval_every=2",
         "--set", "eval.samples=[hello]", "--set", "eval.max_new_tokens=2", "--set", "train.report_to=[tensorboard]"]




def marker(run: Path) -> dict:
    return json.loads((run / ".rightsize-run").read_text())


def samples_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    pytest.importorskip("tensorboard")
    from advisor.cli import main
    out = tmp_path_factory.mktemp("owned") / "run"
    assert main([str(a) for a in ["run", TINY, "--out", out, *SHORT]]) == 0
    return out


@pytest.fixture
def run(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


@pytest.fixture
def interrupted(run):
    """As a SIGKILL after the step-4 checkpoint leaves it (the final eval's sample at step 6 included)."""
    (run / "report.json").unlink()
    shutil.rmtree(run / "adapter")
    return run


# --- the manifest -------------------------------------------------------------------------------------------------

def test_marker_records_what_the_run_created(finished):
    assert set(marker(finished)["owned"]) == {".rightsize-run", "recipe.resolved.yaml", "metrics.jsonl", "checkpoints",
                                              "samples.jsonl", "tensorboard", "adapter", "report.json"}
    from runners.rundir import OUTPUT_MARKER
    assert json.loads((finished / "adapter" / OUTPUT_MARKER).read_text())["run_id"] == marker(finished)["run_id"]


def test_overwrite_with_merge_refuses_a_users_merged_folder(run, tmp_path, capsys):
    (run / "merged").mkdir()
    (run / "merged" / "mine.safetensors").write_text("the user's model")
    before = snapshot(run)
    code, _, err = run_cli(["run", TINY, "--out", run, "--overwrite", *SHORT, "--set", "train.merge=true"], capsys)
    one_line_error(code, err, str(run / "merged"), "--overwrite")
    assert snapshot(run) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_refuses_an_output_folder_the_user_put_in_place_of_the_runs(run, capsys):
    """adapter/ is in the manifest, but the folder there now is the user's (no OUTPUT_MARKER naming the run)."""
    shutil.rmtree(run / "adapter")
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_model.safetensors").write_text("another adapter")
    before = snapshot(run)
    code, _, err = run_cli(["run", TINY, "--out", run, "--overwrite", *SHORT], capsys)
    one_line_error(code, err, str(run / "adapter"))
    assert snapshot(run) == before


@pytest.mark.parametrize("inside", ["adapter", "checkpoints", "checkpoints/step-00000004"])
def test_overwrite_refuses_a_run_folder_holding_a_users_file_inside(run, inside, capsys):
    """The run's own adapter/ and checkpoints/ are replaced whole, so a file the user added inside one makes it not
    provably the run's: refused, and the file kept."""
    (run / inside / "notes.txt").write_text("the user's notes")
    before = snapshot(run)
    code, _, err = run_cli(["run", TINY, "--out", run, "--overwrite", *SHORT], capsys)
    one_line_error(code, err, str(run / inside.split("/")[0]), "--overwrite")
    assert snapshot(run) == before


def test_resume_refuses_a_users_merged_folder_it_would_write(interrupted, capsys):
    (interrupted / "merged").mkdir()
    (interrupted / "merged" / "notes.txt").write_text("mine")
    before = snapshot(interrupted)
    code, _, err = run_cli(["run", TINY, "--out", interrupted, "--resume", "--allow-changes", *SHORT,
                            "--set", "train.merge=true"], capsys)
    one_line_error(code, err, str(interrupted / "merged"), "move it out")
    assert snapshot(interrupted) == before


def test_resume_leaves_a_users_entry_it_does_not_write_alone(interrupted, capsys):
    (interrupted / "merged").mkdir()
    (interrupted / "merged" / "notes.txt").write_text("mine")
    code, _, err = run_cli(["run", TINY, "--out", interrupted, "--resume", *SHORT], capsys)
    assert code == 0, err
    assert (interrupted / "merged" / "notes.txt").read_text() == "mine"
    assert "merged" not in marker(interrupted)["owned"]
    code, _, err = run_cli(["run", TINY, "--out", interrupted, "--overwrite", *SHORT], capsys)
    one_line_error(code, err, str(interrupted / "merged"))  # nor does --overwrite delete it later


def test_a_merged_run_owns_its_merged_folder_and_replaces_it(run, tmp_path, capsys):
    from runners.rundir import OUTPUT_MARKER
    args = ["run", TINY, "--out", run, "--overwrite", *SHORT, "--set", "train.merge=true", "--set", "train.max_steps=2"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert "merged" in marker(run)["owned"]
    assert json.loads((run / "merged" / OUTPUT_MARKER).read_text())["run_id"] == marker(run)["run_id"]
    code, _, err = run_cli(args, capsys)  # the run's own merged/ is replaced with the rest of it
    assert code == 0, err
    assert json.loads((run / "merged" / OUTPUT_MARKER).read_text())["run_id"] == marker(run)["run_id"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing left aside


def test_claim_refuses_an_entry_that_is_not_the_runs(run):
    from advisor.core.errors import AdvisorError
    from runners.rundir import claim
    (run / "wandb").mkdir()
    before = snapshot(run)
    with pytest.raises(AdvisorError, match="wandb: exists and is not this run's"):
        claim(run, "wandb")
    assert snapshot(run) == before
    claim(run, "mlruns")  # absent: recorded before the run writes it
    assert "mlruns" in marker(run)["owned"]


def test_an_older_runs_folder_is_handled_the_safe_way(run, capsys):
    """A marker without a manifest: its files and checkpoints are adopted, adapter/ and trackers' folders are not
    provably its (no OUTPUT_MARKER): --overwrite refuses them; a resume works and records a manifest."""
    from runners.rundir import OUTPUT_MARKER
    legacy = marker(run)
    del legacy["owned"]
    legacy["version"] = 1
    (run / ".rightsize-run").write_text(json.dumps(legacy))
    (run / "adapter" / OUTPUT_MARKER).unlink()
    before = snapshot(run)
    code, _, err = run_cli(["run", TINY, "--out", run, "--overwrite", *SHORT], capsys)
    one_line_error(code, err, str(run / "adapter"), str(run / "tensorboard"))
    assert snapshot(run) == before
    (run / "report.json").unlink()
    shutil.rmtree(run / "adapter")
    code, _, err = run_cli(["run", TINY, "--out", run, "--resume", *SHORT, "--set", "train.report_to=[]",
                            "--allow-changes"], capsys)
    assert code == 0, err
    owned = set(marker(run)["owned"])
    assert {"metrics.jsonl", "checkpoints", "samples.jsonl", "adapter", "report.json"} <= owned
    assert "tensorboard" not in owned and (run / "tensorboard").is_dir()


# --- resume is consistent for every file the run writes -------------------------------------------------------------

def test_resume_cuts_samples_and_tensorboard_back_to_the_checkpoint(interrupted, finished, capsys):
    assert samples_steps(interrupted) == [2, 4, 6]  # step 6's sample was written after the step-4 checkpoint
    code, _, err = run_cli(["run", TINY, "--out", interrupted, "--resume", *SHORT], capsys)
    assert code == 0, err
    assert samples_steps(interrupted) == [2, 4, 6]  # no duplicate, no step from the lost future
    assert train_losses(interrupted) == train_losses(finished)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(interrupted / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("eval/loss")] == [2, 4, 6]


def test_keep_records_until(tmp_path):
    from runners.io import keep_records_until, read_jsonl
    path = tmp_path / "samples.jsonl"
    path.write_text('{"step": 2, "p": "a"}\n{"step": 4\n{"step": 4, "p": "a"}\n{"step": 6, "p": "a"}\n{"p": "b"}\n')
    keep_records_until(path, 4)
    assert read_jsonl(path) == [{"step": 2, "p": "a"}, {"step": 4, "p": "a"}]
    keep_records_until(tmp_path / "absent.jsonl", 4)
    assert not (tmp_path / "absent.jsonl").exists()


# --- --allow-changes and what a checkpoint survives ------------------------------------------------------------------

@pytest.mark.parametrize("override, key", [("lora.r=8", "lora.r"), ("lora.modules_to_save=[lm_head]", "lora.modules_to_save"),
                                           ("lora.init=gaussian", "lora.init"), ("train.optimizer=adamw-8bit", "train.optimizer")])
def test_allow_changes_refuses_what_a_checkpoint_cannot_survive(interrupted, capsys, override, key):
    before = snapshot(interrupted)
    code, _, err = run_cli(["run", TINY, "--out", interrupted, "--resume", "--allow-changes", *SHORT, "--set", override],
                           capsys)
    one_line_error(code, err, key, "cannot survive", "--overwrite")
    assert snapshot(interrupted) == before


def test_checkpoint_bound_policy():
    from runners.rundir import checkpoint_bound_changes
    old = {"recipe": {"lora": {"r": 16, "alpha": 32}, "train": {"lr": 0.1, "optimizer": "adamw"}, "quant": None,
                      "model": {"arch": {"hidden_size": 128}}}}
    assert checkpoint_bound_changes(old, old["recipe"]) == []
    same_tensors = {"lora": {"r": 16, "alpha": 64}, "train": {"lr": 0.2, "optimizer": "adamw"}, "quant": None,
                    "model": {"arch": {"hidden_size": 128}}}
    assert checkpoint_bound_changes(old, same_tensors) == []  # lr and alpha: the tensors and moments still match
    other = {"lora": {"r": 16, "alpha": 32}, "train": {"lr": 0.1, "optimizer": "adamw"}, "quant": {"quant_type": "nf4"},
             "model": {"arch": {"hidden_size": 256}}}
    assert [c.split(" ")[0] for c in checkpoint_bound_changes(old, other)] == ["model.arch", "quant"]


# --- --resume-auto --------------------------------------------------------------------------------------------------

def test_resume_auto_starts_continues_and_skips(interrupted, finished, tmp_path, capsys):
    fresh = tmp_path / "fresh"
    code, _, err = run_cli(["run", TINY, "--out", fresh, "--resume-auto", *SHORT], capsys)
    assert code == 0, err
    assert json.loads((fresh / "report.json").read_text())["status"] == "completed"
    before = snapshot(fresh)
    code, out, err = run_cli(["run", TINY, "--out", fresh, "--resume-auto", *SHORT], capsys)
    assert code == 0 and "already complete" in err and "6 steps" in out, err
    assert snapshot(fresh) == before
    code, _, err = run_cli(["run", TINY, "--out", interrupted, "--resume-auto", *SHORT], capsys)
    assert code == 0, err
    report = json.loads((interrupted / "report.json").read_text())
    assert report["resumed_from_step"] == 4 and report["steps"] == 6
    assert train_losses(interrupted) == train_losses(finished)


def test_resume_auto_restarts_a_run_killed_before_its_first_checkpoint(interrupted, capsys):
    shutil.rmtree(interrupted / "checkpoints")
    old_id = marker(interrupted)["run_id"]
    code, _, err = run_cli(["run", TINY, "--out", interrupted, "--resume-auto", *SHORT], capsys)
    assert code == 0 and "from step 0" in err, err
    assert marker(interrupted)["run_id"] != old_id
    assert json.loads((interrupted / "report.json").read_text())["resumed_from_step"] is None


def test_resume_auto_refuses_another_folder_or_recipe(run, tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.txt").write_text("mine")
    code, _, err = run_cli(["run", TINY, "--out", notes, "--resume-auto", *SHORT], capsys)
    one_line_error(code, err, "--resume-auto", "did not write")
    assert (notes / "thesis.txt").read_text() == "mine"
    before = snapshot(run)
    code, _, err = run_cli(["run", TINY, "--out", run, "--resume-auto", *SHORT, "--set", "train.lr=0.5"], capsys)
    one_line_error(code, err, "--resume-auto", "train.lr 0.003 -> 0.5")
    assert snapshot(run) == before
    code, _, err = run_cli(["run", TINY, "--out", run, "--resume-auto", "--resume", *SHORT], capsys)
    one_line_error(code, err, "--resume-auto")


@pytest.mark.slow
def test_two_ranks_claim_commit_and_refuse_together(tmp_path, capfd, monkeypatch):
    """Under torchrun the claims, the commit and a tracker's failure to start are rank 0's, shared with rank 1: a run
    completes with its manifest; a tracker failing to start stops both ranks and leaves no folder."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    out = tmp_path / "ddp"
    common = ["--nproc-per-node", "2", "--set", "train.max_steps=2", "--set", "train.checkpoint_every=1",
              "--set", "train.eval_every=0"]
    code, _, err = run_cli(["run", TINY, "--out", out, *common, "--set", "train.report_to=[tensorboard]"], capfd)
    assert code == 0, err
    assert {"tensorboard", "metrics.jsonl", "checkpoints", "adapter", "report.json"} <= set(marker(out)["owned"])
    failing = tmp_path / "failing"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "no-such-store://x")  # passes the check, fails as MLflow starts
    code, _, err = run_cli(["run", TINY, "--out", failing, *common, "--set", "train.report_to=[tensorboard, mlflow]"],
                           capfd)
    assert code == 2 and "train.report_to: mlflow did not start" in err, err
    assert not failing.exists()


def test_two_ranks_resume_from_a_checkpoint_to_the_same_adapter(tmp_path, capfd):
    """A two-process (DDP, gloo) run resumed from its last checkpoint ends with the adapter of the run that was never
    interrupted (the checkpoint holds only the trainable tensors: the load must not ask for the frozen base)."""
    from safetensors.torch import load_file
    out = tmp_path / "ddp"
    common = ["--nproc-per-node", "2", "--set", "train.max_steps=5", "--set", "train.checkpoint_every=2",
              "--set", "train.eval_every=0"]
    code, _, err = run_cli(["run", TINY, "--out", out, *common], capfd)
    assert code == 0, err
    whole = load_file(out / "adapter" / "adapter_model.safetensors")
    (out / "report.json").unlink()  # as a kill after the step-4 checkpoint leaves it
    shutil.rmtree(out / "adapter")
    code, _, err = run_cli(["run", TINY, "--out", out, *common, "--resume"], capfd)
    assert code == 0, err
    resumed = load_file(out / "adapter" / "adapter_model.safetensors")
    assert whole.keys() == resumed.keys() and all(bool((whole[k] == resumed[k]).all()) for k in whole)
    assert json.loads((out / "report.json").read_text())["resumed_from_step"] == 4
