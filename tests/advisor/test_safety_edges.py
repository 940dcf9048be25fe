"""Issue 27's advisor edges: no output written over an input, numbers at the edges, degenerate calibration inputs,
plot paths, newer reports, duplicate catalog entries and odd configs — each one line naming the flag or file."""

import copy
import json

import pytest
import yaml

from advisor.measure.published import ROWS_FILE, load_rows, row_case
from tests.advisor.test_compare import synthetic
from tests.conftest import run_cli


def one_error(code: int, err: str, *named: str) -> str:
    """Exit 2, one line on stderr, naming each of `named`."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert all(n in lines[0] for n in named), lines[0]
    return lines[0]


# --- 1. no command writes an output over one of its own inputs -----------------------------------------------

def test_calibrate_out_inside_an_input_run_is_refused(tmp_path, capsys):
    synthetic(tmp_path, "a")
    report = tmp_path / "a" / "report.json"
    before = report.read_bytes()
    code, _, err = run_cli(["calibrate", tmp_path / "a", "--out", report], capsys)
    one_error(code, err, "--out", str(report))
    assert report.read_bytes() == before


def test_review_report_over_its_calibration_is_refused(tmp_path, capsys, monkeypatch):
    synthetic(tmp_path, "a")
    cal = tmp_path / "c.json"
    assert run_cli(["calibrate", tmp_path / "a", "--out", cal], capsys)[0] == 0
    before = cal.read_bytes()
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["review", "--model", "7B", "--tokens", "2e9", "--calibration", cal, "--report", "./c.json"],
                           capsys)
    one_error(code, err, "--report", "--calibration")
    code, _, err = run_cli(["recommend", "--tokens", "2e9", "--calibration", "c.json", "--report", cal], capsys)
    one_error(code, err, "--report", "--calibration")
    assert cal.read_bytes() == before


def test_review_report_over_its_model_config_is_refused(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 512, "intermediate_size": 1024,
                                  "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 1000}))
    before = config.read_bytes()
    code, _, err = run_cli(["review", "--model", config, "--tokens", "2e9", "--report", config], capsys)
    one_error(code, err, "--report", "--model")
    assert config.read_bytes() == before


def test_compare_plot_into_an_input_run_is_refused(tmp_path, capsys):
    synthetic(tmp_path, "a")
    code, _, err = run_cli(["compare", tmp_path / "a", "--plot", tmp_path / "a"], capsys)
    one_error(code, err, "--plot")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["report.json"]


# --- 2. numbers at the edges ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["1e-320", "1e-200", "1e-400"])
def test_underflowing_numbers_are_refused(value, capsys):
    code, _, err = run_cli(["recommend", "--tokens", value], capsys)
    one_error(code, err, "--tokens", "too small")


@pytest.mark.parametrize(("value", "suggested"), [("1,5", "1.5"), ("10,00", "10.00"), ("2,5k", "2.5k")])
def test_decimal_comma_is_refused_with_the_decimal_point_suggested(value, suggested, capsys):
    code, _, err = run_cli(["review", "--model", "7B", "--tokens", "2e9", "--epochs", value], capsys)
    one_error(code, err, "--epochs", f"use a decimal point ({suggested})")


def test_thousands_separators_still_read(capsys):
    from advisor.core.numbers import parse_quantity
    assert parse_quantity("1,000") == 1000 and parse_quantity("2,500,000.5") == 2_500_000.5
    code, _, err = run_cli(["review", "--model", "7B", "--tokens", "2,000,000,000", "--json"], capsys)
    assert code == 0, err


# --- 3. degenerate calibration inputs -------------------------------------------------------------------------

def _published_rows(n: int = 3) -> list[dict]:
    """The first `n` shipped rows whose throughput the estimator fits, as the YAML dicts a user would give."""
    fitted = {r.id for r in load_rows() if row_case(r).throughput_reason is None}
    raw = [r for r in yaml.safe_load(ROWS_FILE.read_text()) if r["id"] in fitted]
    return copy.deepcopy(raw[:n])


@pytest.mark.parametrize(("change", "named"), [
    (lambda rows: rows[:1], "at least 2"),
    (lambda rows: [rows[0], dict(rows[1], tokens_per_second_per_gpu=0.0), rows[2]], "tokens_per_second_per_gpu"),
    (lambda rows: [rows[0], dict(rows[1], gpus=0), rows[2]], "gpus"),
    (lambda rows: [rows[0], dict(rows[1], tokens_per_second_per_gpu=float("nan")), rows[2]], "tokens_per_second_per_gpu"),
    (lambda rows: [rows[0], dict(rows[1], peak_memory_gib=float("nan")), rows[2]], "peak_memory_gib"),
    (lambda rows: [rows[0], dict(rows[1], tokens_per_second_per_gpu=1e9), rows[2]], "efficiency above 1"),
    (lambda rows: rows + [rows[0]], "appears twice"),
])
def test_degenerate_published_rows_are_refused(tmp_path, capsys, change, named):
    rows_file = tmp_path / "rows.yaml"
    rows_file.write_text(yaml.safe_dump(change(_published_rows())))
    out = tmp_path / "cal.json"
    code, _, err = run_cli(["calibrate", rows_file, "--out", out], capsys)
    one_error(code, err, str(rows_file), named)
    assert not out.exists()


def test_a_row_in_two_files_is_refused(tmp_path, capsys):
    rows = _published_rows()
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(rows))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(rows[:1]))
    code, _, err = run_cli(["calibrate", tmp_path / "a.yaml", tmp_path / "b.yaml", "--out", tmp_path / "c.json"], capsys)
    one_error(code, err, rows[0]["id"], "b.yaml")


@pytest.mark.parametrize(("edit", "named"), [
    ({"wall_seconds": float("nan")}, "wall_seconds"),
    ({"gpus": 0}, "gpus"),
    ({"executed_flops": 0.0}, "efficiency"),
    ({"executed_flops": 1e30}, "efficiency"),
])
def test_degenerate_runs_are_refused(tmp_path, capsys, edit, named):
    synthetic(tmp_path, "a")
    report = tmp_path / "a" / "report.json"
    report.write_text(json.dumps(json.loads(report.read_text()) | edit))
    code, _, err = run_cli(["calibrate", tmp_path / "a", "--out", tmp_path / "c.json"], capsys)
    one_error(code, err, str(report), named)


# --- 4. plot paths --------------------------------------------------------------------------------------------

def test_plot_with_an_unsupported_suffix_or_a_directory_is_refused(tmp_path, capsys):
    synthetic(tmp_path, "a")
    code, _, err = run_cli(["compare", tmp_path / "a", "--plot", tmp_path / "plot.docx"], capsys)
    one_error(code, err, "--plot", ".docx")
    (tmp_path / "plots" / "comparison.png").mkdir(parents=True)
    code, _, err = run_cli(["compare", tmp_path / "a", "--plot", tmp_path / "plots"], capsys)
    one_error(code, err, "--plot", "is a directory")


# --- 5. a report from a newer version -------------------------------------------------------------------------

def test_a_newer_reports_extra_key_is_ignored_with_a_note(tmp_path, capsys):
    synthetic(tmp_path, "a")
    report = tmp_path / "a" / "report.json"
    data = json.loads(report.read_text())
    data["future_key"] = 1
    data["loss"]["future_loss"] = 2.0
    report.write_text(json.dumps(data))
    code, out, err = run_cli(["compare", tmp_path / "a", "--json"], capsys)
    assert code == 0 and len(json.loads(out)) == 1
    assert "'future_key' ignored" in err and "'loss.future_loss' ignored" in err and str(report) in err
    code, _, err = run_cli(["calibrate", tmp_path / "a", "--out", tmp_path / "c.json"], capsys)
    assert code == 0, err


def test_a_report_with_a_wrong_value_names_the_key(tmp_path, capsys):
    (tmp_path / "report.json").write_text(json.dumps({"recipe": 1}))
    code, _, err = run_cli(["compare", tmp_path], capsys)
    one_error(code, err, str(tmp_path / "report.json"), "recipe")


# --- 6. user catalogs -----------------------------------------------------------------------------------------

def _user_gpu(name: str = "MyGPU", **fields) -> dict:
    shipped = yaml.safe_load((ROWS_FILE.parents[2] / "advisor" / "catalog" / "data" / "gpus.yaml").read_text())[0]
    return {k: v for k, v in shipped.items() if k != "aliases"} | {"name": name} | fields


def test_user_catalog_duplicate_key_or_entry_is_refused(tmp_path, capsys, monkeypatch):
    from advisor.catalog import load as catalog
    user = tmp_path / "config"
    user.mkdir()
    monkeypatch.setenv("RIGHTSIZE_CONFIG_DIR", str(user))
    gpus = user / "gpus.yaml"
    gpus.write_text("- name: MyGPU\n  name: Other\n  memory_gib: 80\n")
    catalog.load.cache_clear()
    code, _, err = run_cli(["catalog", "gpus"], capsys)
    one_error(code, err, str(gpus), "line 2", "duplicate key 'name'")
    gpus.write_text(yaml.safe_dump([_user_gpu(), _user_gpu(memory_gib=10)]))
    catalog.load.cache_clear()
    code, _, err = run_cli(["catalog", "gpus"], capsys)
    one_error(code, err, str(gpus), "'MyGPU'", "entry 2")


# --- 7. model configs -----------------------------------------------------------------------------------------

def test_kv_heads_that_do_not_divide_the_heads_are_refused(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                                  "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 5,
                                  "vocab_size": 32000}))
    code, _, err = run_cli(["estimate", "--model", config, "--gpu", "A100-80GB"], capsys)
    one_error(code, err, str(config), "num_key_value_heads")


def test_a_rope_theta_of_zero_is_refused_before_it_becomes_a_nan(tmp_path, capsys):
    """rope_theta 0 makes every rotary frequency infinite: NaN from the first step, which the run would otherwise
    diagnose as a learning-rate problem. The recipe's inline architecture refuses it, naming the field."""
    from tests.helpers import RECIPES
    recipe = tmp_path / "r.yaml"
    text = (RECIPES / "tiny-cpu-lora.yaml").read_text().replace(
        "max_position_embeddings: 512", "max_position_embeddings: 512\n    rope_theta: 0")
    recipe.write_text(text.replace("path: data/", f"path: {RECIPES / 'data'}/"))
    code, _, err = run_cli(["validate", recipe], capsys)
    assert code == 2 and "model.arch.rope_theta" in err and "Traceback" not in err, err
