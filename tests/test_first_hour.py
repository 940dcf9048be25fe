"""What a new user met in the first hour, each corrected: costed tokens and their source, missing inputs, no GPU,
bf16 on GPUs without it, compare's status and summary, inline models' random_init, and measured README figures."""

import json
import re

import pytest
from msgspec.structs import replace

from advisor.catalog.load import get_gpu
from advisor.plan.recipe import load_recipe, recipe_to_yaml
from advisor.measure.runreport import PeakMemory
from advisor.render.estimate import gpu_time
from advisor.plan.sizing import bf16_conflict, bf16_note
from tests.conftest import ROOT, run_cli
from tests.helpers import RECIPES
from tests.advisor.test_compare import synthetic

TINY = RECIPES / "tiny-cpu-lora.yaml"
QLORA_8B = RECIPES / "llama3.1-8b-qlora.yaml"


def one_line_error(code, err, needle):
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (code, err)


def ends_in_error(code, err, needle):
    """A run may print notes (advisor: note: ...) before it stops; the error is its last line, alone."""
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("advisor: error: ") and needle in last, (code, err)


# --- estimate RECIPE: tokens and their source, small figures in minutes ---------------------------------------------

def test_recipe_estimate_says_where_tokens_come_from_and_never_zero(capsys):
    code, out, err = run_cli(["estimate", QLORA_8B, "--gpu", "H100"], capsys)
    assert code == 0, err
    assert "$0.00" not in out and "GPU-hours: 0.0 " not in out
    assert "the data file tiny-instructions.jsonl" in out and "--tokens" in out
    assert re.search(r"GPU-hours: [\d.]+ \([\d.]+ GPU-(seconds|minutes)\)", out), out
    code, out, _ = run_cli(["estimate", QLORA_8B, "--gpu", "H100", "--tokens", "1e9", "--json"], capsys)
    data = json.loads(out)
    assert data["tokens"] == 1e9 and data["tokens_source"] == "given (--tokens)" and data["cost_usd"] > 1


def test_small_durations_read_in_minutes_and_seconds():
    assert gpu_time(0.026) == "0.026 (1.6 GPU-minutes)"
    assert gpu_time(0.0013) == "0.0013 (4.7 GPU-seconds)"
    assert gpu_time(2.5) == "2.5"


def test_gpu_recipes_say_their_data_is_a_sample():
    for path in RECIPES.glob("*.yaml"):
        if load_recipe(path).launch.gpu:
            assert "sample" in path.read_text() and "--tokens" in path.read_text(), path.name


# --- missing inputs are errors -----------------------------------------------------------------------------------

def _recipe(tmp_path, model="name: meta-llama/Llama-3.1-8B", data="missing.jsonl", extra=""):
    path = tmp_path / "r.yaml"
    path.write_text(f"name: r\nmodel: {{{model}}}\ndata: {{path: {data}}}\nlaunch: {{gpu: A10G}}\n{extra}")
    return path


def test_missing_data_is_an_error_not_zero_tokens(tmp_path, capsys):
    recipe = _recipe(tmp_path)
    code, out, err = run_cli(["estimate", recipe], capsys)
    one_line_error(code, err, "data.path")
    assert "--tokens" in err and "Tokens: 0" not in out
    code, out, err = run_cli(["estimate", recipe, "--tokens", "1e9"], capsys)  # costing data you do not have yet
    assert code == 0 and "Tokens: 1B" in out, err
    for command in (["validate", recipe], ["run", recipe, "--out", tmp_path / "run"], ["run", recipe, "--dry-run"]):
        code, _, err = run_cli(command, capsys)
        one_line_error(code, err, "does not exist")
    assert not (tmp_path / "run").exists()


def test_missing_model_path_is_an_error(tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text('{"text": "hello"}\n')
    recipe = _recipe(tmp_path, model=f"name: {tmp_path / 'no-such-model'}", data="d.jsonl")
    for command in (["validate", recipe], ["estimate", recipe], ["run", recipe, "--out", tmp_path / "run"]):
        code, _, err = run_cli(command, capsys)
        one_line_error(code, err, "model.name")
    code, out, err = run_cli(["validate", _recipe(tmp_path, data="d.jsonl")], capsys)  # a hub id is not a path
    assert code == 0 and out.startswith("ok:"), err


# --- no GPU: a stated default or a request for --gpu, never $0 -------------------------------------------------------

def test_estimate_without_a_gpu_asks_for_one(capsys):
    code, out, err = run_cli(["estimate", "--model", "Llama-3.1-8B", "--tokens", "1e9"], capsys)
    one_line_error(code, err, "--gpu")
    assert "$0.00" not in out
    code, _, err = run_cli(["estimate", TINY], capsys)  # a recipe without launch.gpu
    one_line_error(code, err, "--gpu")


def test_estimate_states_the_recipes_gpu(capsys):
    code, out, err = run_cli(["estimate", QLORA_8B, "--tokens", "1e9"], capsys)
    assert code == 0 and "A10G (the recipe's launch.gpu; --gpu to choose)" in out, err
    code, out, _ = run_cli(["estimate", QLORA_8B, "--tokens", "1e9", "--json"], capsys)
    assert json.loads(out)["gpu_source"] == "the recipe's launch.gpu"


# --- bf16 on a GPU without it, at plan time -------------------------------------------------------------------------

def test_bf16_policy():
    t4, h100 = get_gpu("T4"), get_gpu("H100")
    assert bf16_conflict(h100, "bfloat16", "bfloat16") is None
    assert bf16_conflict(t4, "auto", None) is None and bf16_conflict(None, "bfloat16") is None
    assert "model.dtype: float16" in bf16_conflict(t4, "bfloat16")
    assert "quant.compute_dtype: float16" in bf16_conflict(t4, "auto", "bfloat16")
    assert bf16_note(h100) is None and "fp16" in bf16_note(get_gpu("V100"))


def test_bf16_recipe_on_t4_warns_in_estimate_and_refuses_in_run(tmp_path, capsys):
    code, out, err = run_cli(["estimate", QLORA_8B, "--gpu", "T4", "--tokens", "1e9"], capsys)
    assert code == 0 and "warning: quant.compute_dtype: bfloat16 on the T4" in out, err
    code, out, _ = run_cli(["estimate", QLORA_8B, "--gpu", "V100", "--json"], capsys)
    assert "float16" in json.loads(out)["precision_conflict"]
    code, _, err = run_cli(["run", QLORA_8B, "--gpu", "T4", "--dry-run"], capsys)
    one_line_error(code, err, "no bf16")
    # the real run stops at its plan, before loading any model (the tiny recipe, asked for bf16 on a T4)
    code, _, err = run_cli(["run", TINY, "--gpu", "T4", "--set", "model.dtype=bfloat16", "--out", tmp_path / "run"], capsys)
    ends_in_error(code, err, "model.dtype: bfloat16 on the T4")
    assert not (tmp_path / "run" / "report.json").exists()


def test_recommend_warns_on_a_gpu_without_bf16(capsys):
    code, out, err = run_cli(["recommend", "--tokens", "2e9", "--gpu", "T4"], capsys)
    assert code == 0 and "Warning: the T4 has no bf16" in out, err
    code, out, _ = run_cli(["recommend", "--tokens", "2e9", "--gpu", "T4", "--json"], capsys)
    assert "fp16" in json.loads(out)["warnings"][0]
    code, out, _ = run_cli(["recommend", "--tokens", "2e9", "--gpu", "H100", "--json"], capsys)
    assert json.loads(out)["warnings"] == []


# --- compare: status, accurate summary, the plot path written -------------------------------------------------------

def _cpu_run(tmp_path, name):
    report = synthetic(tmp_path, name)
    cpu = report.model_copy(update={"gpus": 0, "gpu_name": None, "gpu_hours": 0.0, "mfu": None, "device": "cpu",
                                    "peak_memory_gib": PeakMemory(allocated=None, reserved=None, rss=0.5),
                                    "estimate": replace(report.estimate, gpu=None, gpu_hours=None)})
    (tmp_path / name / "report.json").write_text(json.dumps(cpu.model_dump(mode="json")))


def test_compare_status_and_summary(tmp_path, capsys):
    synthetic(tmp_path, "gpu-done")
    interrupted = synthetic(tmp_path, "gpu-stopped")
    (tmp_path / "gpu-stopped" / "report.json").write_text(json.dumps(
        interrupted.model_copy(update={"status": "interrupted", "interrupted_by": "SIGINT"}).model_dump(mode="json")))
    _cpu_run(tmp_path, "cpu-done")
    failed = tmp_path / "crashed"
    failed.mkdir()
    (failed / "recipe.resolved.yaml").write_text(recipe_to_yaml(load_recipe(TINY)))
    runs = [tmp_path / n for n in ("gpu-done", "gpu-stopped", "cpu-done", "crashed")]
    code, out, err = run_cli(["compare", *runs], capsys)
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.split() and line.split()[0] in
            {"gpu-done", "gpu-stopped", "cpu-done", "crashed"}}
    assert rows == {"gpu-done": "completed", "gpu-stopped": "interrupted", "cpu-done": "completed", "crashed": "failed"}
    assert "CPU runs have none" not in out
    assert "over 2 GPU run(s)" in out and "1 CPU run(s)" in out and "1 interrupted" in out and "1 failed" in out
    code, out, _ = run_cli(["compare", *runs, "--json"], capsys)
    assert [r["status"] for r in json.loads(out)] == ["completed", "interrupted", "completed", "failed"]
    code, out, _ = run_cli(["compare", tmp_path / "cpu-done"], capsys)
    assert "no ratios: they need a run measured on a catalogued GPU" in out


@pytest.mark.parametrize("given, written", [("plots/cmp", "plots/cmp.png"), ("plots/cmp.png", "plots/cmp.png"),
                                            ("dir", "dir/comparison.png")])
def test_compare_plot_prints_the_path_written(tmp_path, capsys, given, written):
    synthetic(tmp_path, "a")
    (tmp_path / "dir").mkdir()
    code, out, err = run_cli(["compare", tmp_path / "a", "--plot", tmp_path / given], capsys)
    assert code == 0, err
    assert out.strip().endswith(f"Wrote {tmp_path / written}") and (tmp_path / written).is_file()


# --- an inline architecture is a random model, and its resolved recipe says so --------------------------------------

def test_inline_arch_resolves_to_random_init(tmp_path, capsys):
    recipe = load_recipe(TINY)
    assert recipe.model.random_init is True and "random_init: true" in recipe_to_yaml(recipe)
    code, _, err = run_cli(["validate", TINY, "--set", "model.random_init=false"], capsys)
    one_line_error(code, err, "always initialised randomly")


# --- README figures come from bench/first_hour.py -------------------------------------------------------------------

def test_readme_figures_come_from_the_first_hour_bench():
    results = json.loads((ROOT / "bench" / "results" / "first_hour_cpu.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert "bench/first_hour.py" in readme and results["machine"]["cores"] and results["machine"]["cpu"]
    assert "well under a minute" not in readme and "about a minute" not in readme
    for figure in (f"{results['setup_full_seconds']} s", f"{results['make_demo_first_seconds']} s",
                   f"{results['make_demo_again_seconds']} s", f"{results['tiny_lora']['seconds']} s",
                   f"{results['tiny_lora']['training_seconds']} s", f"{results['tiny_qlora']['seconds']} s"):
        assert figure in readme, f"README should cite {figure} from bench/results/first_hour_cpu.json"


@pytest.mark.slow
def test_first_hour_bench_runs(tmp_path):
    """The script behind the README's figures, cut short (no demo venv, one tiny run of 2 steps), so it cannot rot."""
    import os
    import subprocess
    import sys
    out = tmp_path / "first_hour.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "first_hour.py"), "--no-demo", "--steps", "2", "--only", "tiny_lora",
                    "--out", str(out)],
                   check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    result = json.loads(out.read_text())
    assert result["machine"]["cores"] and "load_average_1m_at_end" in result["machine"]
    assert result["tiny_lora"]["status"] == "completed" and result["tiny_lora"]["steps"] == 2
    assert result["tiny_lora"]["seconds"] > 0 and "tiny_qlora" not in result


def test_resume_of_a_completed_run_keeps_it(tmp_path, capsys):
    """The README's `--resume` line after a finished run: nothing to resume (refused in one line), the report is kept
    (not trained afresh)."""
    args = ["run", TINY, "--out", tmp_path / "run", "--set", "train.max_steps=2", "--set", "train.eval_every=0"]
    code, out, err = run_cli(args, capsys)
    assert code == 0 and "no GPU-hours (CPU)" in out, err
    report = (tmp_path / "run" / "report.json").read_bytes()
    code, out, err = run_cli(args + ["--resume"], capsys)
    assert code == 2 and "nothing to resume" in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "run" / "report.json").read_bytes() == report
