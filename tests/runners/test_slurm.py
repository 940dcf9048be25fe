"""A real Slurm (one node on this machine, scripts/slurm-local) runs what `advisor launch --target slurm --submit`
writes: a tiny CPU recipe on two gloo ranks completes; a second job requeued mid-run (`scontrol requeue`) restarts,
continues from its checkpoint (`advisor run --resume-auto`) and finishes with the same adapter.

Skipped, with the reason, where Slurm cannot be started (not root, no apt-get, no network for the packages)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cli

# Bounds on waiting for the scheduler: the tiny job takes about a minute and a half on a loaded 2-core machine
# (two ranks, torch imported three times); these only stop a stuck test, they assert no speed.
JOB_WAIT_S = 420
STATE_WAIT_S = 120
START_SLURM_S = 300


def _slurm_or_skip() -> None:
    if shutil.which("sinfo") and _node_state() == "idle":
        return
    try:
        done = subprocess.run([str(ROOT / "scripts" / "slurm-local")], capture_output=True, text=True,
                              timeout=START_SLURM_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"slurm unavailable: scripts/slurm-local did not finish ({exc})")
    if done.returncode != 0:
        pytest.skip(f"slurm unavailable: {(done.stderr.strip().splitlines() or ['scripts/slurm-local failed'])[-1]}")


def _node_state() -> str:
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, check=False)
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""


def _job_state(job: str) -> str:
    """The job's state as squeue shows it; '' once it has left the queue."""
    done = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def _wait(condition, what: str, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"gave up waiting for {what} after {seconds:.0f} s")


@pytest.fixture(scope="module")
def slurm():
    _slurm_or_skip()
    run_help = subprocess.run([sys.executable, "-m", "advisor.cli", "run", "--help"], capture_output=True, text=True)
    if "--resume-auto" not in run_help.stdout:
        pytest.skip("advisor run has no --resume-auto yet: the job's command needs it")


@pytest.fixture(scope="module")
def tiny(slurm, tmp_path_factory):
    """The tiny CPU recipe on two gloo ranks, 40 steps with a checkpoint every 4 (room to requeue mid-run), in a
    folder the module's jobs share; yields (recipe, folder)."""
    folder = tmp_path_factory.mktemp("slurm")
    recipe = yaml.safe_load((ROOT / "recipes" / "tiny-cpu-lora.yaml").read_text())
    recipe["name"] = "tiny-slurm"
    recipe["data"]["path"] = str(ROOT / "recipes" / "data" / "tiny-instructions.jsonl")
    recipe["train"].update(max_steps=40, checkpoint_every=4, eval_every=0)
    recipe["launch"].update(nproc_per_node=2, backend="gloo")
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        # the job runs `advisor` from this environment: sbatch --export=ALL passes PATH (and the offline settings)
        patch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        yield path, folder


@pytest.fixture(scope="module")
def straight(tiny) -> tuple[Path, str]:
    """A job submitted with `advisor launch --submit`, run to the end: its run folder and job id."""
    recipe, folder = tiny
    out = folder / "straight"
    job = _submit(recipe, out)
    _wait(lambda: _job_state(job) == "", f"slurm job {job}", JOB_WAIT_S)
    return out, job


def _submit(recipe: Path, out: Path) -> str:
    """`advisor launch --submit` (in a subprocess: module fixtures have no capsys); the job id."""
    done = subprocess.run([sys.executable, "-m", "advisor.cli", "launch", str(recipe), "--target", "slurm", "--out",
                           str(out), "--time-limit", "0.25h", "--mem-gib", "4", "--submit", "--json"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)["submitted"].removeprefix("slurm job ")


def _log(out: Path, job: str) -> str:
    return Path(f"{out}.slurm-{job}.out").read_text()


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_job_completes_on_two_ranks(straight):
    out, job = straight
    report = _report(out)
    assert report["status"] == "completed" and report["steps"] == 40, _log(out, job)[-2000:]
    assert "restart 0" in _log(out, job)


def test_requeued_job_resumes_to_the_same_adapter(tiny, straight, capsys):
    recipe, folder = tiny
    requeued = folder / "requeued"
    job = _submit(recipe, requeued)
    _wait(lambda: list((requeued / "checkpoints").glob("step-*")) if (requeued / "checkpoints").is_dir() else [],
          "the first checkpoint", JOB_WAIT_S)
    subprocess.run(["scontrol", "requeue", job], check=True)
    # a requeued batch job waits for a begin time Slurm sets after it; release it now
    _wait(lambda: _job_state(job) == "PENDING", f"job {job} back in the queue", STATE_WAIT_S)
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True)
    _wait(lambda: _job_state(job) == "", f"slurm job {job} after its requeue", JOB_WAIT_S)
    log = _log(requeued, job)
    assert "restart 1" in log, log[-2000:]
    report, reference = _report(requeued), _report(straight[0])
    assert report["status"] == "completed" and report["steps"] == 40, log[-2000:]
    assert report["adapter_checksums"] == reference["adapter_checksums"]
    code, _, err = run_cli(["compare", straight[0], requeued], capsys)
    assert code == 0, err
