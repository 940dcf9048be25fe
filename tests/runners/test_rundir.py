"""Run folders are the user's property: --overwrite, run names, one writer per folder, honest resume."""

import json
import os
import shutil

import pytest
from safetensors.torch import load_file

from tests.conftest import run_cli
from tests.helpers import RECIPES, one_line_error, snapshot, train_losses

TINY = RECIPES / "tiny-cpu-lora.yaml"
DATA = RECIPES / "data" / "tiny-instructions.jsonl"
SHORT = ["--set", "train.max_steps=6", "--set", "train.checkpoint_every=2", "--set", "train.eval_every=0"]




@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A completed 6-step run, checkpoints at steps 2 and 4."""
    from advisor.cli import main
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main([str(a) for a in ["run", TINY, "--out", out, *SHORT]]) == 0
    return out


@pytest.fixture
def interrupted(finished, tmp_path):
    """A copy of the run as a SIGKILL after step 4 leaves it: checkpoints, metrics, no report."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "report.json").unlink()
    return out


# --- --overwrite deletes only what Rightsize provably wrote -----------------------------------------------

def test_overwrite_refuses_a_folder_of_documents(tmp_path, capsys):
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "thesis.txt").write_text("years of work")
    (notes / "sub" / "b.md").write_text("more")
    before = snapshot(notes)
    code, _, err = run_cli(["run", TINY, "--out", notes, "--overwrite", *SHORT], capsys)
    one_line_error(code, err, str(notes), "did not write", "--overwrite")
    assert snapshot(notes) == before


def test_overwrite_refuses_the_data_folder_and_a_run_holding_the_data(tmp_path, finished, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(DATA, data_dir / "d.jsonl")
    before = snapshot(data_dir)
    code, _, err = run_cli(["run", TINY, "--out", data_dir, "--overwrite", "--set", f"data.path={data_dir / 'd.jsonl'}"], capsys)
    one_line_error(code, err, str(data_dir))
    assert snapshot(data_dir) == before
    run = tmp_path / "run"  # a real run folder into which the user put the data it trains on
    shutil.copytree(finished, run)
    shutil.copy(DATA, run / "checkpoints" / "d.jsonl")
    before = snapshot(run)
    code, _, err = run_cli(["run", TINY, "--out", run, "--overwrite", "--set", f"data.path={run / 'checkpoints' / 'd.jsonl'}"],
                           capsys)
    one_line_error(code, err, "holds the data")
    assert snapshot(run) == before


def test_overwrite_refuses_the_current_directory_and_its_parents(tmp_path, finished, monkeypatch, capsys):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('mine')")
    monkeypatch.chdir(project / "src")
    before = snapshot(tmp_path)
    for out in (".", "..", str(tmp_path)):
        code, _, err = run_cli(["run", TINY, "--out", out, "--overwrite", *SHORT], capsys)
        one_line_error(code, err, "--out")
    assert snapshot(tmp_path) == before
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    monkeypatch.chdir(run)  # even a real run folder is not replaced while the user stands in it
    before = snapshot(run)
    code, _, err = run_cli(["run", TINY, "--out", ".", "--overwrite", *SHORT], capsys)
    one_line_error(code, err, "current directory")
    assert snapshot(run) == before


def test_overwrite_refuses_a_run_folder_holding_other_files(tmp_path, finished, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "my-notes.txt").write_text("keep me")
    before = snapshot(run)
    code, _, err = run_cli(["run", TINY, "--out", run, "--overwrite", *SHORT], capsys)
    one_line_error(code, err, "my-notes.txt")
    assert snapshot(run) == before


def test_failed_start_with_overwrite_keeps_the_finished_run(tmp_path, finished, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = snapshot(run)
    code, _, err = run_cli(["run", TINY, "--out", run, "--overwrite", "--set", "data.path=typo.jsonl"], capsys)
    one_line_error(code, err, "data.path", "typo.jsonl")
    assert snapshot(run) == before
    code, _, err = run_cli(["run", TINY, "--out", run, "--overwrite", "--set", "lora.r=0"], capsys)
    one_line_error(code, err, "lora.r")
    assert snapshot(run) == before


def test_overwrite_replaces_a_finished_run_by_moving_it_aside(tmp_path, finished, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    old_id = json.loads((run / ".rightsize-run").read_text())["run_id"]
    code, _, err = run_cli(["run", TINY, "--out", run, "--overwrite", "--set", "train.max_steps=2",
                            "--set", "train.eval_every=0"], capsys)
    assert code == 0, err
    assert json.loads((run / ".rightsize-run").read_text())["run_id"] != old_id
    assert json.loads((run / "report.json").read_text())["steps"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing left aside or staged


@pytest.mark.parametrize("name", ["../../victim", "", "a/b", "..", ".", "x\\y", "-rf"])
def test_run_names_are_names(tmp_path, monkeypatch, capsys, name):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for command in (["validate", TINY], ["run", TINY], ["run", TINY, "--overwrite"]):
        code, _, err = run_cli([*command, "--set", f"name={json.dumps(name)}"], capsys)
        one_line_error(code, err, "name")
    assert (victim / "keep.txt").read_text() == "mine" and not (work / "runs").exists()


# --- one writer per folder ---------------------------------------------------------------------------------

def test_a_second_writer_is_refused_naming_the_holder(interrupted, tmp_path, capsys):
    from runners.rundir import RunFolder
    holder = RunFolder.open(interrupted, resume=True, overwrite=False, protect={})
    try:
        before = snapshot(interrupted)
        code, _, err = run_cli(["run", TINY, "--out", interrupted, "--resume", *SHORT], capsys)
        one_line_error(code, err, "in use", f"pid {os.getpid()}")
        assert snapshot(interrupted) == before
        empty = tmp_path / "new"
        second = RunFolder.open(empty, resume=False, overwrite=False, protect={})
        code, _, err = run_cli(["run", TINY, "--out", empty, *SHORT], capsys)
        one_line_error(code, err, "in use", f"pid {os.getpid()}")
        second.close()
        assert not empty.exists()  # a fresh folder that never became a run is removed again
    finally:
        holder.close()


# --- resume is the same run, or refused --------------------------------------------------------------------

@pytest.mark.parametrize("override, needle", [("train.lr=0.5", "train.lr 0.003 -> 0.5"), ("lora.r=8", "lora.r 16 -> 8"),
                                              ("train.seed=3", "train.seed 0 -> 3")])
def test_resume_with_other_settings_is_refused(interrupted, capsys, override, needle):
    before = snapshot(interrupted)
    code, _, err = run_cli(["run", TINY, "--out", interrupted, "--resume", *SHORT, "--set", override], capsys)
    one_line_error(code, err, needle, "--allow-changes")
    assert snapshot(interrupted) == before  # recipe.resolved.yaml included: nothing rewritten


def test_resume_with_other_data_is_refused(interrupted, tmp_path, capsys):
    other = tmp_path / "other.jsonl"
    other.write_text(DATA.read_text().replace("yellow", "purple"))
    before = snapshot(interrupted)
    code, _, err = run_cli(["run", TINY, "--out", interrupted, "--resume", *SHORT, "--set", f"data.path={other}"], capsys)
    one_line_error(code, err, "content changed", "--allow-changes")
    assert snapshot(interrupted) == before


def test_resume_of_a_finished_run_is_refused(tmp_path, finished, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = snapshot(run)
    for extra in ([], ["--set", "train.lr=0.5"], ["--set", "train.lr=0.5", "--allow-changes"]):
        code, _, err = run_cli(["run", TINY, "--out", run, "--resume", *SHORT, *extra], capsys)
        one_line_error(code, err, "already complete")
    assert snapshot(run) == before


def test_resume_without_a_checkpoint_is_an_error(tmp_path, interrupted, capsys):
    code, _, err = run_cli(["run", TINY, "--out", tmp_path / "typo", "--resume", *SHORT], capsys)
    one_line_error(code, err, "--resume", "typo", "check --out")
    assert not (tmp_path / "typo").exists()
    shutil.rmtree(interrupted / "checkpoints")
    before = snapshot(interrupted)
    code, _, err = run_cli(["run", TINY, "--out", interrupted, "--resume", *SHORT], capsys)
    one_line_error(code, err, "no intact checkpoint", "--overwrite")
    assert snapshot(interrupted) == before
    code, _, err = run_cli(["run", TINY, "--out", interrupted, "--resume", "--overwrite", *SHORT], capsys)
    one_line_error(code, err, "choose one")


def test_damaged_checkpoint_and_metrics_line_resume_exactly(interrupted, finished, capsys):
    """The newest checkpoint truncated and a damaged metrics line: resume falls back to step 2, keeps the intact
    metrics lines after the damaged one, and ends with the uninterrupted run's adapter and loss curve."""
    trainer = interrupted / "checkpoints" / "step-00000004" / "trainer.pt"
    trainer.write_bytes(trainer.read_bytes()[: trainer.stat().st_size // 2])
    lines = (interrupted / "metrics.jsonl").read_text().splitlines(keepends=True)
    (interrupted / "metrics.jsonl").write_text(lines[0] + '{"step": 1.5, "lo\x00ss\n' + "".join(lines[1:]))
    code, _, err = run_cli(["run", TINY, "--out", interrupted, "--resume", *SHORT], capsys)
    assert code == 0, err
    assert "step-00000004" in err and "falling back" in err
    report = json.loads((interrupted / "report.json").read_text())
    assert report["resumed_from_step"] == 2 and report["steps"] == 6 and report["resume_changes"] == []
    a = load_file(finished / "adapter" / "adapter_model.safetensors")
    b = load_file(interrupted / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert train_losses(interrupted) == train_losses(finished)


def test_allow_changes_resumes_and_records_them(interrupted, capsys):
    code, _, err = run_cli(["run", TINY, "--out", interrupted, "--resume", "--allow-changes", *SHORT,
                            "--set", "train.lr=0.001"], capsys)
    assert code == 0, err
    report = json.loads((interrupted / "report.json").read_text())
    assert report["resume_changes"] == ["at step 4: train.lr 0.003 -> 0.001"]
    assert "lr: 0.001" in (interrupted / "recipe.resolved.yaml").read_text()
    code, _, err = run_cli(["run", TINY, "--allow-changes", "--out", interrupted, *SHORT], capsys)
    one_line_error(code, err, "--allow-changes", "--resume")


def test_resume_hint_reproduces_the_command(tmp_path, finished, monkeypatch, capsys):
    import runners.launch
    from advisor.measure.runreport import load_report
    interrupted = load_report(finished).model_copy(update={"status": "interrupted", "interrupted_by": "SIGINT", "steps": 4})
    monkeypatch.setattr(runners.launch, "launch", lambda *a, **k: interrupted)
    out = tmp_path / "my run"
    code, _, err = run_cli(["run", TINY, "--out", out, "--set", "train.lr=1e-3", "--set", "data.seq_len=128",
                            "--gpu", "H100"], capsys)
    assert code == 130
    assert (f"advisor run {TINY} --out '{out}' --set train.lr=1e-3 --set data.seq_len=128 --gpu H100 --resume"
            in err), err


def test_read_jsonl_keeps_intact_lines_after_a_damaged_one(tmp_path):
    from runners.io import read_jsonl
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 2, "lo\xff\n{"step": 3}\n[1]\n{"step": 4')
    assert read_jsonl(path) == [{"step": 1}, {"step": 3}]
