"""See what was trained: eval samples written at each eval, `advisor generate` and `advisor chat` on a run's adapter,
the merged export reloaded with its tokenizer, and the adapter's model card."""

import io
import json

import pytest
import torch

from tests.conftest import run_cli
from tests.helpers import RECIPES

PROMPTS = ["Add 65 and 62.", "How many letters does the word have?"]


@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "run"
    from advisor.cli import main
    assert main(["run", str(RECIPES / "tiny-cpu-lora.yaml"), "--out", str(out), "--set", "train.max_steps=4",
                 "--set", "train.eval_every=2", "--set", "train.checkpoint_every=0", "--set", "train.merge=true",
                 "--set", f"eval.samples={json.dumps(PROMPTS)}", "--set", "eval.max_new_tokens=8"]) == 0
    return out


def test_samples_generated_at_each_eval(sampled_run):
    rows = [json.loads(line) for line in (sampled_run / "samples.jsonl").read_text().splitlines()]
    assert [(r["step"], r["prompt"]) for r in rows] == [(2, PROMPTS[0]), (2, PROMPTS[1]), (4, PROMPTS[0]), (4, PROMPTS[1])]
    assert all(isinstance(r["completion"], str) for r in rows)


def test_generate_on_a_runs_adapter(sampled_run, capsys):
    from runners.generate import format_prompt, generate_text, load_run_model
    code, out, err = run_cli(["generate", sampled_run, "--prompt", PROMPTS[0], "--max-new-tokens", "8", "--json"], capsys)
    assert code == 0, err
    (row,) = json.loads(out)
    model, tokenizer, recipe = load_run_model(sampled_run)
    assert row == {"prompt": PROMPTS[0], "completion": generate_text(
        model, tokenizer, format_prompt(recipe, tokenizer, PROMPTS[0]), 8)}
    assert "### Instruction:\nAdd 65 and 62." in format_prompt(recipe, tokenizer, PROMPTS[0])  # as the data was
    final = [json.loads(line) for line in (sampled_run / "samples.jsonl").read_text().splitlines()][-2]
    assert final["completion"] == row["completion"]  # the last eval's sample, from the saved adapter


def test_chat_answers_each_line(sampled_run, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{PROMPTS[0]}\n{PROMPTS[1]}\n\n"))
    code, out, err = run_cli(["chat", sampled_run, "--max-new-tokens", "4"], capsys)
    assert code == 0, err
    code, single, _ = run_cli(["generate", sampled_run, "--prompt", PROMPTS[0], "--prompt", PROMPTS[1],
                               "--max-new-tokens", "4", "--json"], capsys)
    # instruction data: each line is answered alone, as `advisor generate` answers it
    from advisor.render.samples import completion_text  # an empty answer prints a line saying so, as generate's does
    assert out == "".join(completion_text(row["completion"]) + "\n" for row in json.loads(single))


def test_generate_refuses_a_folder_without_a_run(tmp_path, capsys):
    code, _, err = run_cli(["generate", tmp_path, "--prompt", "hi"], capsys)
    assert code == 2 and "not a run directory" in err


def test_merged_export_reloads_with_its_tokenizer(sampled_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    merged = sampled_run / "merged"
    model = AutoModelForCausalLM.from_pretrained(str(merged)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    config = GenerationConfig.from_pretrained(str(merged))
    assert config.eos_token_id == tokenizer.eos_token_id and config.pad_token_id == tokenizer.pad_token_id
    ids = tokenizer("Add 1 and 2.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > ids.shape[1]


def test_model_card_and_short_target_modules(sampled_run):
    card = (sampled_run / "adapter" / "README.md").read_text()
    report = json.loads((sampled_run / "report.json").read_text())
    assert card.startswith("---\nbase_model: ") and "library_name: peft" in card
    for needle in ("tiny-cpu-lora", "fingerprint `", f"{report['steps']} steps", f"last {report['loss']['last']:.4f}",
                   f"{report['tokens']:,} tokens", "tokens/s"):
        assert needle in card, needle
    config = json.loads((sampled_run / "adapter" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_generation_stays_within_the_position_limit(sampled_run, capsys):
    # issue 27: generation past the model's position limit ran on positions the model never learned, silently
    from advisor.core.errors import AdvisorError
    from runners.generate import format_prompt, generate_text, load_run_model, within_position_limit
    assert within_position_limit(10, 8, 64) == 8 and within_position_limit(10, 8, None) == 8
    assert within_position_limit(60, 8, 64) == 4
    assert "capped at 4 new tokens" in capsys.readouterr().err
    with pytest.raises(AdvisorError, match="position limit"):
        within_position_limit(64, 8, 64)
    model, tokenizer, recipe = load_run_model(sampled_run)
    text = format_prompt(recipe, tokenizer, PROMPTS[0])
    prompt = 1 + len(tokenizer(text, add_special_tokens=False)["input_ids"])
    model.config.max_position_embeddings = prompt + 3
    completion = generate_text(model, tokenizer, text, 50)
    assert len(tokenizer(completion, add_special_tokens=False)["input_ids"]) <= 3 + 1  # decoding may merge or split one


@pytest.mark.parametrize("damage", ["adapter_model.safetensors", "adapter_config.json"])
def test_a_damaged_adapter_is_named_in_one_line(sampled_run, damage, tmp_path, capsys):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(sampled_run, run)
    (run / "adapter" / damage).write_bytes(b"{not what it was")
    for command in (["generate", run, "--prompt", "hi"], ["chat", run]):
        code, _, err = run_cli(command, capsys)
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert str(run / "adapter" / damage) in err


def test_chat_refuses_input_that_is_not_utf8_in_one_line(sampled_run, capsys, monkeypatch):
    # stdin decodes undecodable bytes as surrogates (surrogateescape): the line is refused by number, not tokenized
    monkeypatch.setattr("sys.stdin", io.StringIO("Add 1 and 2.\ncaf\udce9\n"))
    code, out, err = run_cli(["chat", sampled_run, "--max-new-tokens", "2"], capsys)
    assert code == 2 and "standard input line 2 is not UTF-8" in err and "Traceback" not in err, err
    assert out.strip()  # the first line was answered


def test_chat_with_closed_input_ends_quietly(sampled_run, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = run_cli(["chat", sampled_run], capsys)
    assert code == 0 and out == "" and "Traceback" not in err, err
