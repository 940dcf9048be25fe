"""`advisor eval` on a tiny CPU run: base against base + adapter on the run's held-out rows (loss under the training
mask, greedy answers scored), eval.json and rows.jsonl, the cache, and bad input in one line each."""

import fcntl
import json
import os

import pytest

from tests.conftest import run_cli
from tests.helpers import RECIPES, train_tiny_lora

# Long enough for the adapter to answer some held-out rows of the tiny instruction data exactly (letter counts,
# capitals, reversals, sums), short enough for the suite; answers there are at most a dozen byte tokens.
STEPS = 40
NEW_TOKENS = "12"
ROWS = [{"instruction": "Add 2 and 3.", "input": "", "output": "5"},
        {"instruction": "Write the word in capital letters.", "input": "river", "output": "RIVER"},
        {"instruction": "How many letters does the word have?", "input": "tiger", "output": "5"}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_lora(tmp_path_factory.mktemp("eval") / "run", STEPS)


@pytest.fixture(scope="module")
def evaluated(trained):
    from advisor.cli import main
    assert main(["eval", str(trained), "--max-new-tokens", NEW_TOKENS]) == 0
    return trained


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_prints_base_against_adapter_and_writes_its_files(evaluated, capsys):
    code, out, err = run_cli(["eval", evaluated, "--max-new-tokens", NEW_TOKENS], capsys)  # from the cache
    assert code == 0, err
    assert "base + adapter" in out and "exact" in out and "loss" in out
    result = json.loads((evaluated / "eval.json").read_text())
    report = json.loads((evaluated / "report.json").read_text())
    rows = [json.loads(line) for line in (evaluated / "eval" / "rows.jsonl").read_text().splitlines()]
    # the same held-out rows and mask as training's eval: the adapter's loss is the run's own final eval loss
    assert result["adapter"]["loss"] == pytest.approx(report["loss"]["eval"], rel=1e-5)
    assert result["examples"] == result["generated"] == len(rows) == 30  # 5% of the 600 tiny rows
    # the adapter beats the (random) base on the task it was trained on: loss, and answers matched exactly
    assert result["adapter"]["loss"] < result["base"]["loss"] - 0.3
    assert result["adapter"]["exact_match"] > result["base"]["exact_match"]
    assert result["adapter"]["exact_match"] == pytest.approx(sum(r["adapter"]["exact_match"] for r in rows) / len(rows))
    assert all(r["reference"] and "### Response:" in r["prompt"] for r in rows)
    assert f"{result['base']['loss']:.4f}" in out and f"{result['adapter']['loss']:.4f}" in out


def test_a_second_call_reuses_the_result(evaluated, capsys):
    before = (evaluated / "eval.json").stat().st_mtime_ns
    code, out, err = run_cli(["eval", evaluated, "--max-new-tokens", NEW_TOKENS, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["cached"] is True and (evaluated / "eval.json").stat().st_mtime_ns == before
    assert "loading" not in err  # nothing was loaded


def test_changed_data_or_settings_evaluate_again(trained, tmp_path, capsys):
    data, out_dir = _jsonl(tmp_path / "held.jsonl", ROWS), tmp_path / "out"
    args = ["eval", trained, "--data", data, "--out", out_dir, "--max-new-tokens", "6", "--json"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    first = json.loads(out)
    assert first["cached"] is False and first["examples"] == 3 and (out_dir / "eval.json").is_file()
    assert not (trained / "eval.json").exists() or json.loads((trained / "eval.json").read_text())["data"] != first["data"]
    assert json.loads(run_cli(args, capsys)[1])["cached"] is True
    _jsonl(data, ROWS[:2])  # the file changed: its hash, so the cache no longer matches
    second = json.loads(run_cli(args, capsys)[1])
    assert second["cached"] is False and second["examples"] == 2 and second["data_sha256"] != first["data_sha256"]
    # an untrained base alone (the recipe's) on the same rows: the run's base loss, nothing written without --out
    code, out, err = run_cli(["eval", "--recipe", RECIPES / "tiny-cpu-lora.yaml", "--data", data,
                              "--max-new-tokens", "6", "--json"], capsys)
    assert code == 0, err
    alone = json.loads(out)
    assert alone["adapter"] is None and alone["written"] is None
    assert alone["base"]["loss"] == pytest.approx(second["base"]["loss"], rel=1e-5)


def test_a_base_model_from_a_folder(tmp_path, capsys):
    # `--model BASE --data FILE`: an untrained model saved with its tokenizer scores as the recipe's base does
    import torch

    from advisor.plan.recipe import load_recipe
    from runners.environment import cache_root
    from runners.model import load_model
    from runners.tokenizer import load_tokenizer
    recipe = load_recipe(RECIPES / "tiny-cpu-lora.yaml")
    folder = tmp_path / "base"
    load_model(recipe, torch.device("cpu"), cache_root(), recipe.train.seed).save_pretrained(folder)
    load_tokenizer(recipe).save_pretrained(folder)
    data = _jsonl(tmp_path / "rows.jsonl", ROWS)
    runs = [run_cli(["eval", *source, "--data", data, "--max-new-tokens", "4", "--json"], capsys)
            for source in (["--model", folder], ["--recipe", RECIPES / "tiny-cpu-lora.yaml"])]
    assert all(code == 0 for code, _, _ in runs), [err for _, _, err in runs]
    from_folder, from_recipe = (json.loads(out) for _, out, _ in runs)
    assert from_folder["model"] == str(folder) and from_folder["examples"] == 3
    assert from_folder["base"]["loss"] == pytest.approx(from_recipe["base"]["loss"], rel=1e-5)


def test_batched_answers_equal_one_at_a_time(trained):
    from runners.generate import generate_batch, generate_text, load_run_model
    from runners.examples import ALPACA_PROMPT, ALPACA_PROMPT_INPUT
    model, tokenizer, _ = load_run_model(trained)
    texts = [ALPACA_PROMPT.format(instruction="Add 2 and 3."),
             ALPACA_PROMPT_INPUT.format(instruction="Reverse the word.", input="window")]
    prompts = [[tokenizer.bos_token_id] + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert generate_batch(model, tokenizer, prompts, 8) == [generate_text(model, tokenizer, t, 8) for t in texts]


def test_examples_split_at_the_first_target_token():
    from runners.data import pack
    from runners.evaluate import split_examples
    from runners.examples import IGNORE_INDEX as X
    rows = pack([([1, 5, 6, 7, 2], [X, X, X, 7, 2]), ([1, 8, 9, 2], [X, X, 9, 2]), ([1, 4], [X, X])], 16, True)
    assert [(e.prompt_ids, e.reference_ids) for e in split_examples(rows)] == \
        [([1, 5, 6], [7, 2]), ([1, 8], [9, 2]), ([1, 4], [])]


def test_bad_input_is_one_line(trained, tmp_path, capsys):
    def refused(args):
        code, out, err = run_cli(args, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, (code, err)
        return err

    not_trained = tmp_path / "interrupted"
    not_trained.mkdir()
    (not_trained / "recipe.resolved.yaml").write_text((trained / "recipe.resolved.yaml").read_text())
    assert "no trained adapter" in refused(["eval", not_trained])
    bad = _jsonl(tmp_path / "bad.jsonl", [ROWS[0], {"instruction": "Add 1 and 1.", "answer": "2"}])
    assert f"--data {bad} line 2: missing field 'output'" in refused(["eval", trained, "--data", bad])
    assert "not a run directory" in refused(["eval", tmp_path])
    assert "--format applies with --model" in refused(["eval", trained, "--data", bad, "--format", "chat"])
    assert "--model needs --data" in refused(["eval", "--model", tmp_path])
    assert "give one of RUN" in refused(["eval"])


def test_a_run_that_is_training_is_not_evaluated(trained, capsys):
    from runners.rundir import LOCK
    lock = trained / LOCK
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, b"pid 1 on test\n", 0)
        code, _, err = run_cli(["eval", trained], capsys)
        assert code == 2 and "is training (pid 1 on test" in err
    finally:
        os.close(fd)
        lock.unlink()


def test_never_overwrites_a_users_files(trained, tmp_path, capsys):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "eval.json").write_text('{"my": "notes"}')
    code, _, err = run_cli(["eval", trained, "--data", _jsonl(tmp_path / "d.jsonl", ROWS), "--out", target], capsys)
    assert code == 2 and "not written by advisor eval" in err
    assert (target / "eval.json").read_text() == '{"my": "notes"}'
