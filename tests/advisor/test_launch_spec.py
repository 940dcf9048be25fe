"""From the decision to a job file: `advisor recommend --recipe-out` writes the chosen option as a recipe whose estimate
is the recommendation's, and `advisor launch` turns a recipe into a Slurm script or a SkyPilot task whose resources
and time limit follow the estimate, quoting everything it embeds and writing no secret."""

import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from advisor.plan.jobspec import STARTUP_ALLOWANCE_S, TIME_MARGIN
from advisor.plan.recipe import load_recipe
from advisor.plan.recipe_sections import DATA_PLACEHOLDER
from tests.conftest import ROOT, run_cli

TINY = ROOT / "recipes" / "tiny-cpu-lora.yaml"
# Situations whose chosen option is a LoRA/QLoRA plan: one node of 8, two nodes (70B on 16 GPUs), fp16 cards (T4)
PLANS = [[], ["--base-model", "Llama-3.1-70B", "--gpus", "16"], ["--gpu", "T4", "--gpus", "4"]]


def _cli(args: list, capsys) -> tuple[int, str, str]:
    return run_cli([str(a) for a in args], capsys)


def _recommend(capsys, out: Path, *args) -> dict:
    code, stdout, err = _cli(["recommend", "--tokens", "2e9", "--api-insufficient", "--recipe-out", out, "--json",
                                 *args], capsys)
    assert code == 0, err
    return json.loads(stdout)


def _sbatch_options(script: str) -> dict[str, str]:
    """The script's #SBATCH options as sbatch reads them (shell words: the values are shell-quoted)."""
    options = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            option = shlex.split(line.removeprefix("#SBATCH "))[0]
            name, _, value = option.removeprefix("--").partition("=")
            options[name] = value
    return options


@pytest.mark.parametrize("args", PLANS, ids=["8xA100", "70B-2-nodes", "T4-fp16"])
def test_recipe_out_estimates_as_the_recommendation(tmp_path, capsys, args):
    plan = tmp_path / "plan.yaml"
    chosen = _recommend(capsys, plan, "--data", tmp_path / "train.jsonl", *args)["options"][0]
    recipe = load_recipe(plan)  # the one schema validates it
    assert recipe.plan is not None and recipe.plan.gpus == chosen["gpus"] == recipe.world_size
    assert recipe.method == chosen["method"] and recipe.launch.gpu == chosen["gpu"]
    assert Path(recipe.data.path) == (tmp_path / "train.jsonl").resolve()
    code, out, err = _cli(["estimate", plan, "--json"], capsys)
    assert code == 0, err
    estimate = json.loads(out)
    assert estimate["gpu_hours"] == pytest.approx(chosen["gpu_hours"], rel=1e-9)
    assert estimate["gpu_hours_high"] == pytest.approx(chosen["gpu_hours_high"], rel=1e-9)
    assert estimate["peak_memory_gib"] == pytest.approx(chosen["memory_gib_per_gpu"], rel=1e-9)
    assert estimate["gpus"] == chosen["gpus"] and estimate["sharding"] == chosen["sharding"]
    assert estimate["tokens_source"].startswith("plan.tokens")


def test_review_recipe_out_estimates_as_the_review(tmp_path, capsys):
    plan = tmp_path / "review.yaml"
    code, out, err = _cli(["review", "--model", "7B", "--method", "qlora", "--gpus", "2xA100", "--tokens", "1e9",
                              "--recipe-out", plan, "--json"], capsys)
    assert code == 0, err
    computed = json.loads(out)["computed"]
    code, out, err = _cli(["estimate", plan, "--json"], capsys)
    assert code == 0, err
    estimate = json.loads(out)
    assert estimate["method"] == "qlora" and estimate["gpus"] == 2
    assert estimate["gpu_hours"] == pytest.approx(computed["gpu_hours"], rel=1e-9)
    assert estimate["peak_memory_gib"] == pytest.approx(computed["memory_gib_per_gpu"], rel=1e-9)


def test_two_node_plan_is_two_full_nodes(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    _recommend(capsys, plan, "--base-model", "Llama-3.1-70B", "--gpus", "16")
    recipe = load_recipe(plan)
    assert (recipe.launch.nproc_per_node, recipe.launch.nnodes, recipe.plan and recipe.plan.nodes) == (8, 2, 2)


def test_recipe_out_is_never_overwritten_unless_asked(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("mine\n")
    code, _, err = _cli(["recommend", "--tokens", "2e9", "--api-insufficient", "--recipe-out", plan], capsys)
    assert code == 2 and err.count("\n") == 1 and "--recipe-out" in err and "exists" in err
    assert plan.read_text() == "mine\n"
    _recommend(capsys, plan, "--overwrite")
    assert load_recipe(plan).plan is not None


def test_data_flag_needs_recipe_out(capsys):
    code, _, err = _cli(["recommend", "--tokens", "2e9", "--data", "train.jsonl"], capsys)
    assert code == 2 and "--recipe-out" in err and err.count("\n") == 1


def test_a_tier_the_runner_does_not_train_is_refused(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    code, _, err = _cli(["recommend", "--docs", "500k", "--tokens", "2e9", "--recipe-out", plan], capsys)
    assert code == 2 and "--recipe-out" in err and "LoRA or QLoRA" in err and err.count("\n") == 1
    assert not plan.exists()


def test_placeholder_data_is_refused_by_validate_and_launch_but_estimated(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    _recommend(capsys, plan)
    assert Path(load_recipe(plan).data.path).name == DATA_PLACEHOLDER
    for args in (["validate", plan], ["launch", plan, "--target", "slurm"]):
        code, _, err = _cli(args, capsys)
        assert code == 2 and "data.path is the placeholder" in err and err.count("\n") == 1, args
    code, _, err = _cli(["estimate", plan, "--json"], capsys)
    assert code == 0, err


@pytest.fixture
def plan_16(tmp_path, capsys) -> Path:
    """A recommended 70B LoRA on 16 A100s (two nodes), its data present."""
    (tmp_path / "train.jsonl").write_text('{"text": "hello"}\n')
    plan = tmp_path / "plan.yaml"
    _recommend(capsys, plan, "--data", tmp_path / "train.jsonl", "--base-model", "Llama-3.1-70B", "--gpus", "16")
    return plan


def test_slurm_script_follows_the_plan(plan_16, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(["launch", plan_16, "--target", "slurm", "--partition", "gpu", "--account", "lab",
                              "--qos", "high", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    script_path = Path(result["job_file"]).resolve()
    assert script_path == tmp_path / "runs" / "Llama-3.1-70B-lora.sbatch"  # beside the run folder, not in it
    script = script_path.read_text()
    subprocess.run(["bash", "-n", str(script_path)], check=True)
    options = _sbatch_options(script)
    plan = load_recipe(plan_16).plan
    assert plan is not None and plan.gpu_hours_high is not None
    seconds = math.ceil(plan.gpu_hours_high / 16 * 3600 * TIME_MARGIN) + STARTUP_ALLOWANCE_S
    days, rest = divmod(seconds, 86400)
    assert options["time"] == f"{days}-{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    assert options["nodes"] == "2" and options["gpus-per-node"] == "8" and options["ntasks-per-node"] == "1"
    assert options["cpus-per-task"] == "64" and options["mem"] == "0"
    assert options["signal"] == "B:USR1@300" and options["open-mode"] == "append" and "requeue" in options
    assert (options["partition"], options["account"], options["qos"]) == ("gpu", "lab", "high")
    assert options["export"] == "ALL"
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST"' in script
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    inner = shlex.split(srun)[-2]  # bash -c WORDS &
    assert inner.startswith(f"advisor run {plan_16} --out {tmp_path / 'runs' / 'Llama-3.1-70B-lora'} --resume-auto")
    assert '--node-rank "$SLURM_NODEID" --rdzv-endpoint "$RDZV_ENDPOINT"' in inner


def test_time_margin_scales_the_upper_bound(plan_16, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(["launch", plan_16, "--target", "slurm", "--time-margin", "2", "--json"], capsys)
    assert code == 0, err
    plan = load_recipe(plan_16).plan
    assert plan is not None and plan.gpu_hours_high is not None
    spec = json.loads(out)["spec"]
    assert spec["time_limit_s"] == math.ceil(plan.gpu_hours_high / 16 * 3600 * 2) + STARTUP_ALLOWANCE_S
    assert "x 2 margin" in spec["time_basis"]


def test_a_plan_that_no_longer_matches_the_recipe_is_refused(plan_16, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    edited = yaml.safe_load(plan_16.read_text())
    edited["launch"]["nnodes"] = 1  # 8 GPUs now, the plan's estimate was for 16
    plan_16.write_text(yaml.safe_dump(edited))
    code, _, err = _cli(["launch", plan_16, "--target", "slurm"], capsys)
    assert code == 2 and "plan.gpus 16" in err and err.count("\n") == 1
    code, _, err = _cli(["launch", plan_16, "--target", "slurm", "--time-limit", "2d"], capsys)
    assert code == 0, err  # a time limit of the user's own does not need the plan


def test_cpu_plan_asks_for_no_gpus_and_needs_a_time_limit(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(["launch", TINY, "--target", "slurm"], capsys)
    assert code == 2 and "--time-limit" in err and err.count("\n") == 1
    code, out, err = _cli(["launch", TINY, "--target", "slurm", "--time-limit", "0.5h", "--json"], capsys)
    assert code == 0, err
    options = _sbatch_options(Path(json.loads(out)["job_file"]).read_text())
    assert "gpus-per-node" not in options and options["cpus-per-task"] == "1" and options["time"] == "0-00:30:00"
    assert options["signal"] == "B:USR1@300"


def test_job_file_is_never_overwritten_nor_put_in_the_run_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = tmp_path / "job.sh"
    job.write_text("mine\n")
    args = ["launch", TINY, "--target", "slurm", "--time-limit", "1h"]
    code, _, err = _cli(args + ["--job-file", job], capsys)
    assert code == 2 and "exists" in err and job.read_text() == "mine\n"
    code, _, err = _cli(args + ["--out", tmp_path / "run", "--job-file", tmp_path / "run" / "job.sh"], capsys)
    assert code == 2 and "inside the run folder" in err
    code, _, err = _cli(args + ["--job-file", TINY], capsys)
    assert code == 2 and "RECIPE input" in err
    code, _, err = _cli(args + ["--job-file", job, "--overwrite"], capsys)
    assert code == 0, err
    assert job.read_text().startswith("#!/bin/bash")


HOSTILE = "we ird $(touch PWNED) `touch PWNED` 'q' \"dq\" ;touch PWNED"


def _hostile_recipe(tmp_path: Path) -> Path:
    """The tiny recipe and its data in a folder whose name would run commands if pasted into a shell unquoted."""
    folder = tmp_path / HOSTILE
    folder.mkdir()
    (folder / "data file $(touch PWNED).jsonl").write_text((ROOT / "recipes" / "data" / "tiny-instructions.jsonl").read_text())
    recipe = yaml.safe_load(TINY.read_text())
    recipe["data"]["path"] = "data file $(touch PWNED).jsonl"
    path = folder / "recipe `touch PWNED`.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_slurm_script_quotes_every_path_it_embeds(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = _hostile_recipe(tmp_path)
    out = tmp_path / HOSTILE / "run $(touch PWNED)"
    code, stdout, err = _cli(["launch", recipe, "--target", "slurm", "--time-limit", "1h", "--out", out,
                                 "--partition", "p $(touch PWNED)", "--json"], capsys)
    assert code == 0, err
    job = Path(json.loads(stdout)["job_file"])
    subprocess.run(["bash", "-n", str(job)], check=True)
    script = job.read_text()
    assert _sbatch_options(script)["partition"] == "p $(touch PWNED)"
    assert _sbatch_options(script)["output"] == f"{out}.slurm-%j.out"
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    words = shlex.split(srun)
    assert words[-3:-1] == ["-c", words[-2]] and words[-4] == "bash"
    # the node's command, run by bash as srun would, with `advisor` replaced by printf: it prints its words, runs nothing
    printed = subprocess.run(["bash", "-c", "advisor() { printf '%s\\n' \"$@\"; }; " + words[-2]], cwd=tmp_path,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert printed == ["run", str(recipe), "--out", str(out), "--resume-auto"]
    assert not list(tmp_path.rglob("PWNED"))


# SkyPilot's own loader, from the side environment scripts/setup-sky makes (make test runs it: SkyPilot and its
# dependencies, 459 MB, stay out of the main environment and its pinned versions), or from this one if it has it.
# One subprocess per file: importing sky takes about 3.5 s, so the script itself reports a missing sky (exit 77)
# rather than a separate probe.
SKY_PYTHONS = [ROOT / ".venv-sky" / "bin" / "python", Path(sys.executable)]
SKY_MISSING = 77
SKY_PARSE = f"""import json, sys
try:
    import sky
except ImportError as e:
    print(e, file=sys.stderr)
    sys.exit({SKY_MISSING})
task = sky.Task.from_yaml(sys.argv[1])
print(json.dumps({{"num_nodes": task.num_nodes, "run": task.run, "workdir": task.workdir,
                  "accelerators": [r.accelerators for r in task.resources],
                  "clouds": [str(r.cloud) for r in task.resources],
                  "regions": [r.region for r in task.resources],
                  "use_spot": [r.use_spot for r in task.resources],
                  "secrets": sorted(task.secrets),
                  "secret_refs": [ref.name for ref in task.managed_secret_refs]}}))
"""


def _parsed_by_skypilot(path: Path) -> dict:
    """The task file as SkyPilot's `sky.Task.from_yaml` parses it; skips where no environment here has SkyPilot."""
    missing = []
    for python in SKY_PYTHONS:
        if not python.is_file():
            continue
        done = subprocess.run([str(python), "-c", SKY_PARSE, str(path.resolve())], capture_output=True, text=True)
        if done.returncode == SKY_MISSING:
            missing.append(f"{python}: {done.stderr.strip()}")
            continue
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])
    pytest.skip("SkyPilot's loader not installed: run scripts/setup-sky (make test runs it) to make .venv-sky, "
                f"or pip install 'rightsize[launch]' ({'; '.join(missing) or 'no .venv-sky'})")


def test_skypilot_task_is_yaml_of_what_it_embeds(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = _hostile_recipe(tmp_path)
    code, stdout, err = _cli(["launch", recipe, "--target", "skypilot", "--time-limit", "1h", "--region",
                                 "eu 'west' $(x)", "--json"], capsys)
    assert code == 0, err
    task = yaml.safe_load(Path(json.loads(stdout)["job_file"]).read_text())
    assert task["resources"]["region"] == "eu 'west' $(x)" and task["workdir"] == str(tmp_path)
    run = task["run"].strip()
    printed = subprocess.run(["bash", "-c", "advisor() { printf '%s\\n' \"$@\"; }; " + run], cwd=tmp_path,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert printed == ["run", str(recipe.relative_to(tmp_path)), "--out", f"runs/{yaml.safe_load(recipe.read_text())['name']}",
                       "--resume-auto"]
    assert not list(tmp_path.rglob("PWNED"))
    parsed = _parsed_by_skypilot(Path(json.loads(stdout)["job_file"]))  # SkyPilot's loader reads back what was quoted
    assert parsed["regions"] == ["eu 'west' $(x)"] and parsed["run"] == task["run"] and parsed["workdir"] == str(tmp_path)


@pytest.mark.parametrize("flag", ["--out", "--partition", "--advisor-command"])
def test_a_newline_in_an_embedded_value_is_refused(tmp_path, capsys, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(["launch", TINY, "--target", "slurm", "--time-limit", "1h", flag, "a\n#SBATCH --x"], capsys)
    assert code == 2 and flag in err and "newline" in err and err.count("\n") == 1
    assert not list(tmp_path.rglob("*.sbatch"))


def test_no_secret_is_written_into_a_job_file(plan_16, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue123")
    monkeypatch.setenv("WANDB_API_KEY", "wandb_secretvalue456")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    for target in ("slurm", "skypilot"):
        code, out, err = _cli(["launch", plan_16, "--target", target, "--json"], capsys)
        assert code == 0, err
        text = Path(json.loads(out)["job_file"]).read_text()
        assert "secretvalue" not in text
    task = yaml.safe_load(text)
    assert task["secrets"] == {"HF_TOKEN": None, "WANDB_API_KEY": None}  # by name: SkyPilot fills them at launch
    parsed = _parsed_by_skypilot(Path(json.loads(out)["job_file"]))  # SkyPilot 0.14: a null secret is a reference
    assert parsed["secrets"] == [] and parsed["secret_refs"] == ["HF_TOKEN", "WANDB_API_KEY"]


def test_skypilot_two_node_plan_takes_its_rendezvous_from_skypilot(plan_16, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(["launch", plan_16, "--target", "skypilot", "--cloud", "aws", "--spot", "--json"], capsys)
    assert code == 0, err
    path = Path(json.loads(out)["job_file"])
    task = yaml.safe_load(path.read_text())
    assert task["num_nodes"] == 2
    assert task["resources"] == {"accelerators": "A100-80GB:8", "cloud": "aws", "use_spot": True}
    for name in ("SKYPILOT_NODE_RANK", "SKYPILOT_NODE_IPS", "SKYPILOT_NUM_GPUS_PER_NODE", "SKYPILOT_NUM_NODES"):
        assert f"${name}" in task["run"]
    subprocess.run(["bash", "-n"], input=task["run"], text=True, check=True)
    parsed = _parsed_by_skypilot(path)
    assert parsed["num_nodes"] == 2 and parsed["accelerators"] == [{"A100-80GB": 8}]
    assert parsed["use_spot"] == [True] and parsed["clouds"] == ["AWS"]
    for name in ("SKYPILOT_NODE_RANK", "SKYPILOT_NODE_IPS", "SKYPILOT_NUM_GPUS_PER_NODE", "SKYPILOT_NUM_NODES"):
        assert f"${name}" in parsed["run"]  # the rendezvous, as SkyPilot parsed the run section


def test_submit_without_sbatch_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    code, _, err = _cli(["launch", TINY, "--target", "slurm", "--time-limit", "1h", "--submit"], capsys)
    assert code == 2 and "sbatch is not on PATH" in err and err.count("\n") == 1
    assert (tmp_path / "runs" / "tiny-cpu-lora.sbatch").is_file()  # written all the same, to submit by hand


def test_launch_imports_no_torch():
    code = ("import sys; from advisor.cli import main; main(['launch', '--help']); "
            "print([m for m in ('torch', 'transformers', 'peft') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr
