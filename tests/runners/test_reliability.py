"""Reliability: bad input everywhere, interrupted and killed runs, NaN losses, full disks, untrusted files."""

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.torch import load_file

from tests.conftest import ROOT, run_cli
from tests.helpers import RECIPES, train_losses

from bench.reliability import disk_full_on_call, nan_loss_from  # the campaign's own fault injectors

TINY = RECIPES / "tiny-cpu-lora.yaml"

# --- bad input on every command and flag ------------------------------------------------------------------

NUMERIC = {  # command prefix -> numeric flags it takes
    ("estimate", "--model", "Llama-3.1-8B"): ["--rank", "--seq-len", "--micro-batch", "--gpus", "--tokens", "--efficiency", "--price"],
    ("scaling", "optimal"): ["--compute", "--tokens"],
    ("scaling", "loss", "--params", "7B", "--tokens", "1T"): ["--params", "--tokens"],
    ("scaling", "repeat", "--params", "1B", "--tokens", "8B", "--unique-tokens", "2B"): ["--params", "--tokens", "--unique-tokens"],
    ("scaling", "inference", "--loss", "2", "--inference-tokens", "1T"): ["--loss", "--inference-tokens"],
    ("recommend", "--tokens", "2e9"): ["--tokens", "--docs", "--quality", "--gpus", "--budget", "--epochs", "--seq-len"],
    ("run", str(TINY)): ["--nproc-per-node", "--nnodes", "--node-rank"],
}
NAMES = {
    ("estimate", "--model", "Llama-3.1-8B"): ["--gpu", "--method", "--optimizer", "--targets"],
    ("estimate", "--gpu", "H100"): ["--model"],
    ("recommend", "--tokens", "2e9"): ["--gpu", "--api", "--base-model", "--task"],
    ("scaling", "optimal", "--compute", "1e21"): ["--fit"],
    ("run", str(TINY)): ["--gpu"],
}
BAD_NUMBERS = ["", " ", "-1", "-0.5", "nan", "NaN", "inf", "-inf", "1e999", "abc", "1..2", "0x1F", "--", "1e", "k", "5MM",
               "1,2,3e", "∞", "１２"]
bad_number = st.one_of(st.sampled_from(BAD_NUMBERS), st.floats(max_value=-1e-12).map(repr),
                       st.text(alphabet="abcxyz!@#$%^&*()[]{}<>?/\\|;:'\"`~ ", min_size=1, max_size=6))
bad_name = st.one_of(st.sampled_from(["", " ", "h100x", "GPT-9", "q_proj,,", "../../etc/passwd", "\x00", "lora;rm -rf"]),
                     st.text(alphabet="QWXZqwxz_-./", min_size=1, max_size=8))


def assert_one_line_error(code, out, err, args):
    assert code in (1, 2), (args, code, out[-300:])
    assert "Traceback" not in out + err, args
    assert len(err.strip().splitlines()) == 1, (args, err)
    assert err.startswith("advisor: error: ")


@pytest.mark.parametrize("flags, values", [(NUMERIC, bad_number), (NAMES, bad_name)], ids=["numbers", "names"])
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_bad_values_every_command(capsys, flags, values, data):
    prefix = data.draw(st.sampled_from(sorted(flags)))
    args = [*prefix, data.draw(st.sampled_from(flags[prefix])), data.draw(values)]
    code, out, err = run_cli(args, capsys)
    assert_one_line_error(code, out, err, args)


def test_overflowing_combinations(capsys):
    for args in (["scaling", "optimal", "--compute", "1e300"], ["scaling", "loss", "--params", "1e-300", "--tokens", "1e-300"],
                 ["estimate", "--model", "Llama-3.1-405B", "--gpu", "T4", "--tokens", "1e30", "--seq-len", "1048576"],
                 ["recommend", "--tokens", "1e30", "--requests-per-day", "1e30"]):
        code, out, err = run_cli(args, capsys)
        assert code in (0, 2) and "Traceback" not in out + err, args
        if code == 0 and "--json" not in args:
            assert "nan" not in out.lower().split()


@pytest.mark.parametrize("content, needle", [
    (None, "no such file"), ("", "empty file"), ("[1, 2]\n", "expected a mapping"), ("42\n", "expected a mapping"),
    ("\x00\x01\x02binary", "invalid YAML"), ("a: b: c\n", "invalid YAML"), ("name: t\nmodle: {}\n", "did you mean model"),
    ("!!python/object/new:os.system [ls]\n", "invalid YAML"), ("name: x\n" * 2, "duplicate key"),
])
@pytest.mark.parametrize("command", ["validate", "run", "estimate"])
def test_bad_recipe_files(tmp_path, capsys, content, needle, command):
    path = tmp_path / "recipe.yaml"
    if content is not None:
        path.write_bytes(content.encode("utf-8", "surrogateescape"))
    code, out, err = run_cli([command, path, *(["--out", tmp_path / "o"] if command == "run" else [])], capsys)
    assert_one_line_error(code, out, err, command)
    assert needle in err, err


def test_paths_that_are_not_files(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for args in (["validate", tmp_path], ["validate", tmp_path / "file" / "below.yaml"], ["compare", tmp_path / "nope"],
                 ["calibrate", tmp_path], ["estimate", "--model", tmp_path / "file" / "config.json"],
                 ["recommend", "--tokens", "1e9", "--report", tmp_path / "file" / "r.md"]):
        code, out, err = run_cli(args, capsys)
        assert_one_line_error(code, out, err, args)


# --- interrupted and killed runs --------------------------------------------------------------------------

SHORT = ["--set", "train.max_steps=60", "--set", "train.checkpoint_every=5", "--set", "train.eval_every=0"]


def _start(out: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "advisor.cli", "run", str(TINY), "--out", str(out), *SHORT, *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    proc = _start(out)
    assert proc.wait(timeout=300) == 0, proc.stdout.read()
    return out


def _same_adapter(a: Path, b: Path) -> None:
    x, y = load_file(a / "adapter" / "adapter_model.safetensors"), load_file(b / "adapter" / "adapter_model.safetensors")
    assert x.keys() == y.keys() and all((x[k] == y[k]).all() for k in x)
    assert train_losses(a) == train_losses(b)


def _last_step(out: Path) -> int:
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1])["step"] if lines and lines[-1].endswith("}") else 0


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(straight_run, tmp_path):
    """SIGKILL a real run at random points, three times, resuming each time: the final adapter and loss curve are
    those of the uninterrupted run, and each kill loses at most one checkpoint interval."""
    out, rng = tmp_path / "run", random.Random(1234)
    proc = _start(out)
    for kill in range(3):
        target = _last_step(out) + rng.randint(1, 9)  # a random step of this segment, then a random instant
        deadline = time.time() + 120
        while _last_step(out) < target and proc.poll() is None:
            assert time.time() < deadline
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.05))  # inside the next step, or inside a checkpoint write
        assert proc.poll() is None, f"run ended before kill {kill + 1}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reached = _last_step(out)
        saved = [json.loads((p / "state.json").read_text())["step"] for p in (out / "checkpoints").glob("step-*")
                 if (p / "state.json").is_file()] if (out / "checkpoints").exists() else []
        assert reached - max(saved, default=0) <= 5  # at most one checkpoint interval (checkpoint_every=5) lost
        assert not (out / "report.json").exists()
        proc = _start(out, "--resume")
    assert proc.wait(timeout=300) == 0, proc.stdout.read()
    _same_adapter(straight_run, out)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_checkpoints_and_exits_cleanly(straight_run, tmp_path, sig, code):
    out = tmp_path / "run"
    proc = _start(out)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "step-00000010").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == code, output
    assert "Traceback" not in output and "--resume" in output
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "interrupted" and report["interrupted_by"] == sig.name
    saved = sorted(p.name for p in (out / "checkpoints").glob("step-*"))[-1]
    assert int(saved.split("-")[1]) == report["steps"]  # checkpoint of the very step it stopped at: nothing lost
    resumed = _start(out, "--resume")
    assert resumed.wait(timeout=300) == 0
    _same_adapter(straight_run, out)


# --- faults inside a run (in-process, injected) ------------------------------------------------------------

def _run_in_process(tmp_path, capsys, *extra):
    return run_cli(["run", TINY, "--out", tmp_path / "run", *SHORT, *extra], capsys)


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, capsys, monkeypatch):
    import runners.session as session_module
    monkeypatch.setattr(session_module, "attach_adapters", nan_loss_from(session_module.attach_adapters, 13))
    code, out, err = _run_in_process(tmp_path, capsys)
    assert code == 2 and "loss became nan at step 13" in err and "--resume" in err
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert checkpoints[-1] == "step-00000010"
    from runners.checkpoint import latest_checkpoint
    import torch
    blob = torch.load(latest_checkpoint(tmp_path / "run") / "trainer.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in blob["model"].values())


def test_full_disk_while_checkpointing_keeps_previous(tmp_path, capsys, monkeypatch):
    import runners.checkpoint as checkpoint_module
    original = checkpoint_module.atomic_replace_dir
    monkeypatch.setattr(checkpoint_module, "atomic_replace_dir", disk_full_on_call(original, 3))
    code, out, err = _run_in_process(tmp_path, capsys)
    assert code == 2 and "No space left on device" in err and "step-00000010 is intact" in err
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000005", "step-00000010"]  # no torn temporary left
    assert json.loads((ckpts / "step-00000010" / "state.json").read_text())["step"] == 10
    monkeypatch.setattr(checkpoint_module, "atomic_replace_dir", original)
    code, out, err = _run_in_process(tmp_path, capsys, "--resume")
    assert code == 0, err


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    from runners import io as rio
    target = tmp_path / "report.json"
    rio.atomic_write_json(target, {"version": 1})
    real_fsync = os.fsync
    monkeypatch.setattr(rio.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError):
        rio.atomic_write_json(target, {"version": 2})
    monkeypatch.setattr(rio.os, "fsync", real_fsync)
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_torn_metrics_line_is_dropped(tmp_path):
    from runners.io import read_jsonl
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]


# --- data safety: the CI subset of bench/reliability_safety.py ---------------------------------------------------

def test_safety_campaign_subset(tmp_path):
    """Adversarial recipes, calibration files and malformed JSONL data, as the campaign tries them: each refused in one
    line naming the file (or accepted where it is valid), nothing of the user's changed. The other categories (run
    folders, concurrent writers, resume with changes, corrupted state) are in tests/runners/test_rundir.py."""
    from bench.reliability_safety import data_cases, recipe_cases
    cases = recipe_cases(tmp_path / "recipes") + data_cases(tmp_path / "data", kinds=("jsonl",))
    assert len(cases) >= 30
    assert [c for c in cases if not c.handled or c.data_lost] == []


# --- untrusted files -------------------------------------------------------------------------------------

def test_trust_remote_code_is_off_unless_set_and_announced(tmp_path, capsys):
    from advisor.plan.recipe import load_recipe
    assert load_recipe(TINY).model.trust_remote_code is False
    code, out, err = run_cli(["run", TINY, "--out", tmp_path / "r", "--set", "train.max_steps=2",
                              "--set", "model.trust_remote_code=true"], capsys)
    assert code == 0 and "trust_remote_code is ON" in err


def test_no_unsafe_loading_in_the_code():
    import yaml

    from advisor.core.yaml_keys import UniqueKeyLoader
    assert issubclass(UniqueKeyLoader, yaml.SafeLoader)  # the one YAML loader: safe, and refuses duplicate keys
    sources = {p: p.read_text() for d in ("advisor", "runners", "bench", "scripts") for p in (ROOT / d).rglob("*.py")}
    for path, text in sources.items():
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"
        for line in text.splitlines():
            if "yaml.load(" in line:
                assert re.search(r"Loader=(UniqueKeyLoader|_YAML_LOADER)", line), f"{path}: {line}"
        assert "yaml.unsafe_load" not in text and "pickle.load" not in text, path
        for call in re.findall(r"from_pretrained\([^)]*\)", text, flags=re.S):
            if "AutoModelForCausalLM" in text and "recipe.model.name" in call:
                assert "use_safetensors=True" in call, f"{path}: {call}"


def test_tests_run_offline():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    import huggingface_hub.constants
    assert huggingface_hub.constants.HF_HUB_OFFLINE
