"""The advisor command as a user meets it: output, JSON interface, exit codes, and a light import."""

import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.conftest import ROOT, run_cli


def test_recommend_example(capsys):
    code, out, err = run_cli(["recommend", "--docs", "500k", "--tokens", "2e9"], capsys)
    assert code == 0, err
    assert "Recommendation: API" in out
    assert "~100M parameters" in out
    assert "Pretraining is not viable" in out
    for method in ("lora", "qlora", "full"):
        assert f"  {method} " in out or f" {method}  " in out
    assert "A100-80GB" in out and "$" in out
    assert "Assumptions:" in out and "source:" in out


def test_recommend_json_keys(capsys):
    code, out, _ = run_cli(["recommend", "--docs", "500k", "--tokens", "2e9", "--json"], capsys)
    data = json.loads(out)
    assert data["tier"] == "api"
    assert data["effective_tokens"] == 2e9
    assert data["compute_optimal_params"] == pytest.approx(1e8)
    for option in data["options"]:
        assert {"tier", "method", "model", "gpu", "gpus", "gpu_hours", "cost_usd", "memory_gib_per_gpu"} <= option.keys()
    for reason in data["reasons"]:
        assert {"rule", "finding", "source"} <= reason.keys()


@pytest.mark.parametrize("flags, expected", [
    # issue 12: on premises or at high volume the answer is an off-the-shelf model self-hosted (tier api), not a
    # fine-tune (these two were "peft" before); training needs --api-insufficient or a task kind that needs it.
    ([], "api"), (["--on-prem"], "api"), (["--api-insufficient"], "peft"), (["--requests-per-day", "1M"], "api"),
    (["--on-prem", "--api-insufficient"], "peft"),
    (["--api-insufficient", "--task", "domain"], "full"),
])
def test_flags_change_tier(capsys, flags, expected):
    code, out, _ = run_cli(["recommend", "--tokens", "2e9", "--json", *flags], capsys)
    assert code == 0 and json.loads(out)["tier"] == expected


def test_report_file(capsys, tmp_path):
    report = tmp_path / "justification.md"
    code, _, _ = run_cli(["recommend", "--tokens", "2e9", "--report", report], capsys)
    text = report.read_text()
    assert code == 0 and text.startswith("# Scaling justification")
    assert "| tier |" in text and "Hoffmann" in text


def test_estimate_json_keys(capsys):
    code, out, _ = run_cli(["estimate", "--model", "Llama-3.1-8B", "--method", "qlora", "--gpu", "A10G",
                            "--tokens", "1e8", "--json"], capsys)
    data = json.loads(out)
    assert code == 0
    assert {"total_params", "trainable_params", "flops_per_token", "memory_gib", "gpus_needed", "gpu_hours", "cost_usd"} <= data.keys()
    assert {"weights", "adapters", "gradients", "optimizer", "activations", "overhead", "total"} <= data["memory_gib"].keys()
    assert data["trainable_params"] == 41_943_040 and data["gpus_needed"] == 1


def test_estimate_without_tokens_has_no_hours(capsys):
    code, out, _ = run_cli(["estimate", "--model", "Llama-3.1-70B", "--method", "full", "--gpu", "H100", "--json"], capsys)
    data = json.loads(out)
    assert data["gpu_hours"] is None and data["gpus_needed"] > 8 and not data["fits"] and data["suggestions"]


@pytest.mark.parametrize("args, keys", [
    (["scaling", "optimal", "--compute", "1e21"], {"params", "tokens", "flops", "loss"}),
    (["scaling", "optimal", "--tokens", "2e9", "--fit", "epoch2024"], {"params", "tokens", "flops", "loss"}),
    (["scaling", "loss", "--params", "7B", "--tokens", "2T"], {"params", "tokens", "flops", "loss"}),
    (["scaling", "inference", "--loss", "2.0", "--inference-tokens", "2T"], {"params", "tokens", "flops", "loss"}),
    (["scaling", "repeat", "--params", "1B", "--tokens", "80B", "--unique-tokens", "20B"], {"effective_tokens", "loss"}),
])
def test_scaling_json(capsys, args, keys):
    code, out, err = run_cli([*args, "--json"], capsys)
    assert code == 0, err
    assert keys <= json.loads(out).keys()


@pytest.mark.parametrize("kind", ["gpus", "models", "apis"])
def test_catalog(capsys, kind):
    code, out, _ = run_cli(["catalog", kind], capsys)
    assert code == 0 and len(out.splitlines()) > 5
    code, out, _ = run_cli(["catalog", kind, "--json"], capsys)
    assert all("source" in e and "date" in e for e in json.loads(out))


@pytest.mark.parametrize("args, needle", [
    (["recommend", "--tokens", "-5"], "--tokens"),
    (["recommend", "--tokens", "0"], "--tokens"),
    (["recommend", "--tokens", "abc"], "500k"),
    (["recommend", "--tokens", "inf"], "--tokens"),
    (["recommend", "--tokens", "1e999"], "too large"),
    (["recommend", "--tokens", ""], "--tokens"),
    (["recommend", "--tokens", "2e9", "--quality", "0"], "(0, 1]"),
    (["recommend", "--tokens", "2e9", "--quality", "1.01"], "(0, 1]"),
    (["recommend", "--tokens", "2e9", "--gpu", "Z900"], "unknown GPU"),
    (["recommend", "--tokens", "2e9", "--base-model", "gpt-5"], "unknown model"),
    (["recommend", "--tokens", "2e9", "--api", "nope"], "unknown API"),
    (["recommend", "--tokens", "2e9", "--task", "poetry"], "--task"),
    (["recommend", "--tokens", "2e9", "--gpus", "1.5"], "whole number"),
    (["recommend"], "--tokens"),
    (["estimate", "--model", "Llama-3.1-8B", "--method", "dora"], "--method"),
    (["estimate", "--model", "Llama-3.1-8B", "--targets", "q_proj,foo"], "LoRA target"),
    (["estimate", "--model", "/nonexistent/config.json"], "no such file"),
    (["estimate"], "RECIPE or --model"),
    (["scaling", "optimal"], "exactly one"),
    (["scaling", "optimal", "--compute", "1e21", "--fit", "kaplan"], "--fit"),
    (["scaling", "inference", "--loss", "1.0", "--inference-tokens", "1T"], "irreducible"),
    (["scaling", "loss", "--params", "7B"], "--tokens"),
    (["nonsense"], "No such command"),
])
def test_bad_input_is_one_line_exit_2(capsys, args, needle):
    code, out, err = run_cli(args, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert "Traceback" not in err + out


NUMERIC_FLAGS = ["--tokens", "--docs", "--quality", "--requests-per-day", "--gpus", "--budget", "--price", "--epochs",
                 "--seq-len", "--availability", "--tokens-per-request", "--deadline", "--output-share"]
bad_numbers = st.one_of(
    st.sampled_from(["", "-1", "0x10", "nan", "NaN", "inf", "-inf", "1e999", "--", "1..2", "⑤", "1e", "k", "2QQ", " "]),
    st.text(alphabet=st.characters(blacklist_categories=("Nd",)), min_size=1, max_size=8),
    st.floats(max_value=-1e-9).map(repr),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(NUMERIC_FLAGS), value=bad_numbers)
def test_property_bad_numbers(capsys, flag, value):
    args = ["recommend", "--tokens", "2e9", flag, value] if flag != "--tokens" else ["recommend", flag, value]
    code, out, err = run_cli(args, capsys)
    assert code == 2, (args, out)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(st.text(min_size=0, max_size=12), min_size=0, max_size=5))
def test_property_any_arguments_never_traceback(capsys, args):
    code, out, err = run_cli(["recommend", *args], capsys)
    assert code in (0, 2)
    assert "Traceback" not in err + out and (code == 0 or len(err.strip().splitlines()) == 1)


def test_advisor_import_is_light():
    """Importing the CLI and answering `recommend` must not pull in the ML stack."""
    code = ("import sys; from advisor.cli import main; main(['recommend','--tokens','2e9','--json']) if False else None;"
            "import advisor.decide.choose, advisor.plan.estimate, advisor.plan.recipe, advisor.measure.compare, advisor.render;"
            "heavy=[m for m in ('torch','transformers','peft','bitsandbytes','datasets','numpy') if m in sys.modules];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""
    run = subprocess.run([sys.executable, "-c", "import sys; from advisor.cli import main\n"
                          "try: main(['recommend','--tokens','2e9'])\nexcept SystemExit: pass\n"
                          "print([m for m in ('torch','transformers','peft') if m in sys.modules])"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    assert run.stdout.strip().endswith("[]")


def test_estimate_recipe_json(capsys):
    recipe = ROOT / "recipes" / "llama3.1-8b-qlora.yaml"
    code, out, err = run_cli(["estimate", recipe, "--gpu", "L4", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["recipe"] == "llama3.1-8b-qlora" and data["gpu"] == "L4" and data["method"] == "qlora"
    assert data["tokens"] > 0 and data["gpu_hours"] > 0 and data["cost_usd"] > 0 and data["total_flops"] > 0
    assert set(data["memory_gib"]) >= {"weights", "adapters", "gradients", "optimizer", "activations", "overhead", "total"}
    code, out, _ = run_cli(["estimate", recipe, "--gpu", "L4", "--tokens", "1e6", "--json"], capsys)
    assert json.loads(out)["tokens"] == 1e6
    code, _, err = run_cli(["estimate", recipe, "--model", "Llama-3.1-8B"], capsys)
    assert code == 2 and "not both" in err


def test_command_modules_match_the_app():
    """advisor.cli.COMMAND_MODULES (which module a command's import needs) names every command the full app has,
    each in the module that registers it, so running one command never misses its registration."""
    import typer

    from advisor.cli import COMMAND_MODULES, app
    group = typer.main.get_command(app)
    assert set(group.commands) == set(COMMAND_MODULES)
    modules = {name: (cmd.callback.__module__ if cmd.callback else None) for name, cmd in group.commands.items()}
    for name, cmd in group.commands.items():
        if isinstance(cmd, typer.core.TyperGroup):  # a sub-app: its commands' module
            modules[name] = next(iter(cmd.commands.values())).callback.__module__
    assert modules == {name: f"advisor.cli.{module}" for name, module in COMMAND_MODULES.items()}


def test_recommend_imports_only_its_command_module():
    """`advisor recommend` registers only advisor.cli.recommend: the other commands' modules, the recipe schema,
    pydantic (msgspec Structs instead; typer below 0.29), the review without a proposal, calibration without a file and YAML
    are not imported (start-up time, bench/advisor_latency.py)."""
    code = ("import sys; from advisor.cli import main\n"
            "try: main(['recommend','--tokens','2e9'])\nexcept SystemExit: pass\n"
            "print('loaded:' + ','.join(m for m in ('advisor.cli.advise','advisor.cli.runs','advisor.cli.scaling',"
            "'advisor.cli.catalogs','advisor.plan.recipe','advisor.decide.review','advisor.plan.calibration','advisor.decide.alternatives',"
            "'advisor.plan.estimate','pydantic','statistics','hashlib','yaml') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip().splitlines()[-1] == "loaded:"


def test_help_lists_every_command():
    run = subprocess.run([sys.executable, "-m", "advisor.cli", "--help"], capture_output=True, text=True, check=True)
    for name in ("recommend", "review", "estimate", "validate", "run", "compare", "calibrate", "generate", "chat",
                 "scaling", "catalog"):
        assert name in run.stdout
