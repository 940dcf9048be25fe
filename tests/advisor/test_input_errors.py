"""The remaining bad inputs answer in one line naming the file or flag: recipes (merge keys accepted, deep nesting,
LoRA rank), model folders, calibration files and run reports."""

import json

import pytest

from tests.conftest import run_cli
from tests.helpers import RECIPES

TINY = RECIPES / "tiny-cpu-lora.yaml"
DATA = RECIPES / "data" / "tiny-instructions.jsonl"


def one_line_error(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and err.startswith("advisor: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)


def test_yaml_merge_keys_are_accepted(tmp_path, capsys):
    recipe = tmp_path / "merge.yaml"
    recipe.write_text(
        "name: merged\n"
        "model:\n  arch: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 259}\n"
        f"data: {{path: {DATA}, format: instruction, seq_len: 64}}\n"
        "lora:\n  <<: {r: 8, alpha: 16}\n  alpha: 32\n")
    code, out, err = run_cli(["validate", recipe], capsys)
    assert code == 0 and "ok: merged" in out, err
    from advisor.plan.recipe import load_recipe, read_yaml_mapping
    lora = load_recipe(recipe).lora
    assert (lora.r, lora.alpha) == (8, 32)  # merged keys, overridden by the mapping's own: YAML's merge semantics
    (tmp_path / "m2.yaml").write_text("common: &c {micro_batch: 2, lr: 1.0e-3}\nrecipe:\n  train:\n    <<: *c\n    lr: 5.0e-4\n")
    assert read_yaml_mapping(tmp_path / "m2.yaml")["recipe"]["train"] == {"micro_batch": 2, "lr": 5.0e-4}
    (tmp_path / "dupe.yaml").write_text("a: &c {x: 1}\nb:\n  <<: *c\n  y: 1\n  y: 2\n")
    code, _, err = run_cli(["validate", tmp_path / "dupe.yaml"], capsys)
    one_line_error(code, err, "duplicate key 'y'")


def test_deeply_nested_yaml_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "deep.yaml"
    recipe.write_text("name: t\nx: " + "[" * 5000 + "]" * 5000 + "\n")
    for command in ("validate", "estimate"):
        code, _, err = run_cli([command, recipe], capsys)
        one_line_error(code, err, str(recipe))


def test_lora_rank_is_bounded_by_the_adapted_layers(capsys):
    code, _, err = run_cli(["validate", TINY, "--set", "lora.r=4096"], capsys)
    one_line_error(code, err, "lora.r 4096 exceeds the 64 dimensions of k_proj", "lora.r <= 64")
    code, _, err = run_cli(["validate", TINY, "--set", "lora.r=64"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["validate", TINY, "--set", "lora.r=200", "--set", "lora.targets=[q_proj]"], capsys)
    one_line_error(code, err, "exceeds the 128 dimensions of q_proj")
    code, _, err = run_cli(["validate", RECIPES / "llama3.1-8b-lora.yaml", "--set", "lora.r=2048"], capsys)
    one_line_error(code, err, "lora.r 2048 exceeds the 1024 dimensions of k_proj")


def test_model_paths_are_checked(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: local\nmodel: {{name: {tmp_path / 'no-such-model'}}}\n"
                      f"data: {{path: {DATA}, format: instruction, seq_len: 64}}\n")
    code, _, err = run_cli(["validate", recipe], capsys)
    one_line_error(code, err, "model.name", "no such model folder")
    only_config = tmp_path / "only-config"
    only_config.mkdir()
    (only_config / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                                                         "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 259}))
    recipe.write_text(recipe.read_text().replace(str(tmp_path / "no-such-model"), str(only_config)))
    code, _, err = run_cli(["validate", recipe], capsys)
    one_line_error(code, err, "no *.safetensors weights")
    code, _, err = run_cli(["run", recipe, "--out", tmp_path / "out"], capsys)
    one_line_error(code, err, "no *.safetensors weights")
    assert not (tmp_path / "out").exists()


def _calibration(tmp_path, **entry):
    cell = {"gpu": "H100-SXM", "method": "lora", "runs": 3, "efficiency": 0.4, "efficiency_min": 0.35,
            "efficiency_max": 0.45, "memory_overhead_fraction": 0.1, "memory_overhead_min": 0.05,
            "memory_overhead_max": 0.15} | entry
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"entries": [cell]}))
    return path


@pytest.mark.parametrize("entry, needle", [
    ({"memory_overhead_fraction": -0.8}, "memory_overhead_fraction -0.8"),
    ({"efficiency": 1.5}, "efficiency"), ({"efficiency": 0}, "efficiency"), ({"efficiency": -0.3}, "efficiency"),
])
def test_calibration_files_are_validated(tmp_path, capsys, entry, needle):
    path = _calibration(tmp_path, **entry)
    code, _, err = run_cli(["estimate", "--model", "Llama-3.1-8B", "--gpu", "H100", "--tokens", "1e8", "--calibration",
                            path], capsys)
    one_line_error(code, err, str(path), needle)
    code, _, err = run_cli(["estimate", "--model", "Llama-3.1-8B", "--gpu", "H100", "--tokens", "1e8", "--calibration",
                            _calibration(tmp_path)], capsys)
    assert code == 0, err


def test_calibration_file_with_invalid_bytes(tmp_path, capsys):
    path = tmp_path / "cal.json"
    path.write_bytes(b'{"entries": [\xff\xfe]}')
    code, _, err = run_cli(["estimate", "--model", "Llama-3.1-8B", "--gpu", "H100", "--calibration", path], capsys)
    one_line_error(code, err, str(path), "not UTF-8 at byte 13")


def test_report_with_invalid_bytes_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_bytes(b'{"recipe": "\xc3\x28"}')
    for command in ("compare", "calibrate"):
        code, _, err = run_cli([command, run], capsys)
        one_line_error(code, err, "report.json", "not UTF-8 at byte 12")
