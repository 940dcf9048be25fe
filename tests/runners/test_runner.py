"""The runner end to end on a CPU: tiny recipes, real training entry point, assertions on files and numbers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from advisor.plan.estimate import estimate_recipe
from advisor.plan.recipe import load_recipe
from tests.conftest import run_cli
from tests.helpers import RECIPES, ROOT, reload_eval_loss, train_losses

REPORT_FIELDS = {"trainable_params", "total_params", "tokens", "wall_seconds", "gpus", "gpu_hours", "tokens_per_second",
                 "model_flops", "mfu", "peak_memory_gib", "loss", "device", "world_size", "versions", "estimate"}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lora"
    from advisor.cli import main
    assert main(["run", str(RECIPES / "tiny-cpu-lora.yaml"), "--out", str(out)]) == 0
    return out


def _check_run(out: Path, recipe_file: str, rel: float = 1e-5) -> dict:
    report = json.loads((out / "report.json").read_text())
    assert REPORT_FIELDS <= report.keys()
    assert {"first", "last", "eval"} <= report["loss"].keys()
    assert {"allocated", "reserved"} <= report["peak_memory_gib"].keys()
    assert {"torch", "transformers", "peft", "bitsandbytes"} <= report["versions"].keys()
    assert report["status"] == "completed" and report["gpus"] == 0 and report["gpu_hours"] == 0
    assert report["tokens"] > 0 and report["tokens_per_second"] > 0 and report["model_flops"] > 0
    # trainable parameters: the runner's count, the advisor's estimate for the same recipe, exactly
    recipe = load_recipe(RECIPES / recipe_file)
    assert report["trainable_params"] == estimate_recipe(recipe).trainable_params == report["estimate"]["trainable_params"]
    # gradient_checkpointing: auto (the default) on a CPU: nothing to size against, so no recompute is paid
    assert recipe.train.gradient_checkpointing == "auto" and report["estimate"]["gradient_checkpointing"] is False
    assert report["estimate"]["flops_breakdown"]["recompute"] == 0
    # the loss falls: the last tenth of the run below the first tenth and well below the first step (ln 259 = 5.56
    # for the untrained byte model), and eval below the first step's loss
    losses = train_losses(out)
    tenth = max(1, len(losses) // 10)
    assert sum(losses[-tenth:]) / tenth < sum(losses[:tenth]) / tenth
    assert sum(losses[-tenth:]) / tenth < losses[0] - 0.3
    assert report["loss"]["eval"] < report["loss"]["first"]
    for name in ("recipe.resolved.yaml", "metrics.jsonl", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        assert (out / name).is_file(), name
    # the adapter loads back with peft and gives the same outputs: the same eval loss as at the end of training
    assert reload_eval_loss(out) == pytest.approx(report["loss"]["eval"], rel=rel)
    return report


def test_tiny_lora_end_to_end(lora_run):
    report = _check_run(lora_run, "tiny-cpu-lora.yaml")
    assert report["method"] == "lora"


def test_tiny_qlora_end_to_end(tmp_path, capsys):
    out = tmp_path / "qlora"
    code, stdout, err = run_cli(["run", RECIPES / "tiny-cpu-qlora.yaml", "--out", out], capsys)
    assert code == 0, err
    # bitsandbytes' CPU 4-bit matmul does not fix its summation order, so agreement is to ~1e-5, not bitwise
    report = _check_run(out, "tiny-cpu-qlora.yaml", rel=1e-4)
    assert report["method"] == "qlora"
    assert "completed" in stdout


def test_existing_run_dir_is_not_overwritten(lora_run, capsys):
    code, _, err = run_cli(["run", RECIPES / "tiny-cpu-lora.yaml", "--out", lora_run], capsys)
    assert code == 2 and "--resume" in err and "--overwrite" in err
    assert (lora_run / "report.json").is_file()


def test_refuses_what_will_not_fit_before_loading(tmp_path, capsys):
    recipe = tmp_path / "big.yaml"
    recipe.write_text(
        "name: big\nmodel: {name: meta-llama/Llama-3.1-8B, random_init: true}\n"
        f"data: {{path: {RECIPES / 'data/tiny-instructions.jsonl'}, format: instruction, seq_len: 256}}\n"
        "train: {max_steps: 1, micro_batch: 4}\n")
    start = time.perf_counter()
    code, _, err = run_cli(["run", recipe, "--out", tmp_path / "run", "--gpu", "T4"], capsys)
    assert code == 2 and "exceeds the T4" in err and "QLoRA" in err
    assert time.perf_counter() - start < 60  # nothing of the 8B model was built


def _advisor(*args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "advisor.cli", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


SHORT = ["--set", "train.max_steps=40", "--set", "train.checkpoint_every=10", "--set", "train.eval_every=0"]


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _advisor("run", RECIPES / "tiny-cpu-lora.yaml", "--out", straight, *SHORT).wait(timeout=300) == 0
    proc = _advisor("run", RECIPES / "tiny-cpu-lora.yaml", "--out", resumed, *SHORT)
    deadline = time.time() + 300
    while not (resumed / "checkpoints" / "step-00000020" / "state.json").is_file():
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else "timeout"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (resumed / "report.json").exists()
    finish = _advisor("run", RECIPES / "tiny-cpu-lora.yaml", "--out", resumed, "--resume", *SHORT)
    output = finish.communicate(timeout=300)[0]
    assert finish.returncode == 0, output
    a = load_file(straight / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), key
    assert train_losses(straight) == train_losses(resumed)
    report = json.loads((resumed / "report.json").read_text())
    assert report["resumed_from_step"] >= 20 and report["steps"] == 40


@pytest.mark.slow
def test_ddp_two_processes_identical_adapters(tmp_path, capsys):
    out = tmp_path / "ddp"
    code, _, err = run_cli(["run", RECIPES / "tiny-cpu-lora.yaml", "--nproc-per-node", "2", "--out", out,
                            "--set", "train.max_steps=30"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2 and len(report["adapter_checksums"]) == 2
    assert len(set(report["adapter_checksums"])) == 1
    assert report["estimate"]["gpus"] == 2


@pytest.mark.slow
def test_fsdp_two_processes(tmp_path, capsys):
    out = tmp_path / "fsdp"
    code, _, err = run_cli(["run", RECIPES / "tiny-cpu-lora.yaml", "--nproc-per-node", "2", "--out", out,
                            "--set", "launch.strategy=fsdp", "--set", "train.max_steps=20",
                            "--set", "train.checkpoint_every=10"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2 and report["loss"]["last"] < report["loss"]["first"]
    assert (out / "checkpoints" / "step-00000010" / "state.json").is_file()
    assert reload_eval_loss(out) == pytest.approx(report["loss"]["eval"], rel=1e-4)
