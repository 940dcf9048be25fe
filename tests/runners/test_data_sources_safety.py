"""Every data source (training file, data.mix, data.eval_path, cached hub datasets) goes through one validator with
file:line in every error and one summary per source; settings that cannot act are refused or noted; `advisor
validate` refuses what `advisor run` refuses before loading; a huge row costs memory bounded by data.seq_len."""

import json
import tracemalloc

import pytest

from advisor.core.errors import AdvisorError
from advisor.plan.recipe import load_recipe
from runners.prepare import build_dataset
from runners.examples import IGNORE_INDEX, clip_example, render_example
from runners.rows import check_data
from runners.tokenizer import byte_tokenizer, max_text_chars, max_token_chars
from tests.conftest import run_cli
from tests.helpers import RECIPES

ARCH = ("{arch: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, "
        "num_key_value_heads: 2, vocab_size: 259}}")
GOOD = [{"text": f"row {i} of good text"} for i in range(6)]
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def recipe(tmp_path, data: str):
    path = tmp_path / "r.yaml"
    path.write_text(f"name: t\nmodel: {ARCH}\ndata: {{path: t.jsonl, format: text, seq_len: 64, val_fraction: 0.0"
                    f"{', ' + data if data else ''}}}\ntrain: {{max_steps: 2}}\n")
    jsonl(tmp_path / "t.jsonl", GOOD)
    return path


def refused(tmp_path, tok, path, *needles) -> str:
    with pytest.raises(AdvisorError) as info:
        build_dataset(load_recipe(path), tok, tmp_path / "cache")
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def decoded_train(tok, data) -> str:
    return tok.decode(data.train.input_ids.tolist())


# --- one validator, file:line, one summary per source --------------------------------------------------------------

def test_a_null_row_in_a_mix_file_is_refused_with_file_and_line_never_trained_as_none(tmp_path, tok, capsys):
    jsonl(tmp_path / "m.jsonl", [GOOD[0], {"text": None}, GOOD[1]])
    path = recipe(tmp_path, "mix: [{path: m.jsonl}]")
    refused(tmp_path, tok, path, "data.mix[0].path", "m.jsonl line 2: field 'text' is null", "1 of 3 rows")
    path = recipe(tmp_path, "mix: [{path: m.jsonl}], on_bad_rows: skip")
    data = build_dataset(load_recipe(path), tok, tmp_path / "cache")
    assert data.examples == 8 and data.skipped_rows == 1 and "None" not in decoded_train(tok, data)
    err = capsys.readouterr().err
    assert "data.mix[0].path" in err and "m.jsonl: left out 1 of 3 rows (1 null field); first: line 2" in err
    assert data.notes == [line.removeprefix("advisor: note: ") for line in err.splitlines() if "left out" in line]


def test_eval_rows_are_validated_like_training_rows(tmp_path, tok):
    jsonl(tmp_path / "e.jsonl", [GOOD[0], {"text": ["a"]}])
    refused(tmp_path, tok, recipe(tmp_path, "eval_path: e.jsonl"),
            "data.eval_path", "e.jsonl line 2: field 'text' is a list, expected a string")
    data = build_dataset(load_recipe(recipe(tmp_path, "eval_path: e.jsonl, on_bad_rows: skip")), tok, tmp_path / "c")
    assert len(data.val) == 1 and data.skipped_rows == 1 and any("data.eval_path" in n for n in data.notes)


@pytest.mark.parametrize("key", ["mix: [{path: bad.jsonl}]", "eval_path: bad.jsonl"])
def test_unreadable_and_empty_mix_and_eval_files_are_one_line(tmp_path, tok, key):
    where = "data.mix[0].path" if key.startswith("mix") else "data.eval_path"
    (tmp_path / "bad.jsonl").write_bytes((json.dumps(GOOD[0]) + "\n").encode() + '{"text": "caf\xe9"}\n'.encode("latin-1"))
    offset = len(json.dumps(GOOD[0])) + 1 + len('{"text": "caf')
    refused(tmp_path, tok, recipe(tmp_path, key), where, f"bad.jsonl: not UTF-8 at byte {offset} (line 2)")
    jsonl(tmp_path / "bad.jsonl", [GOOD[0], '{"text": "unterminated'])
    refused(tmp_path, tok, recipe(tmp_path, key), where, "bad.jsonl line 2: invalid JSON")
    (tmp_path / "bad.jsonl").write_text("")
    refused(tmp_path, tok, recipe(tmp_path, key), where, "bad.jsonl: no examples (the file is empty)")


def test_hub_rows_are_validated_with_dataset_file_and_line(tmp_path, tok, monkeypatch):
    import huggingface_hub.constants
    folder = tmp_path / "hub" / "datasets--tiny--text" / "snapshots" / ("0" * 40) / "data"
    folder.mkdir(parents=True)
    (tmp_path / "hub" / "datasets--tiny--text" / "refs").mkdir()
    (tmp_path / "hub" / "datasets--tiny--text" / "refs" / "main").write_text("0" * 40)
    jsonl(folder / "train-00000-of-00001.jsonl", [GOOD[0], {"text": None}])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    refused(tmp_path, tok, recipe(tmp_path, "mix: [{path: tiny/text, hub: true}]"),
            "data.mix[0].path tiny/text", "train-00000-of-00001.jsonl line 2: field 'text' is null")


# --- formats, weights, limits: notes or one-line refusals ----------------------------------------------------------

def test_rows_of_another_format_are_named_counted_and_a_source_of_only_them_refused(tmp_path, tok):
    jsonl(tmp_path / "m.jsonl", [GOOD[0], CHAT, CHAT])
    refused(tmp_path, tok, recipe(tmp_path, "mix: [{path: m.jsonl}]"), "m.jsonl line 2", "the row is a chat row, not text")
    data = build_dataset(load_recipe(recipe(tmp_path, "mix: [{path: m.jsonl}], on_bad_rows: skip")), tok, tmp_path / "c")
    assert data.examples == 7
    assert any("left out 2 of 3 rows (2 other format (chat))" in n for n in data.notes)
    assert any("most rows are chat rows, not text" in n for n in data.notes)
    jsonl(tmp_path / "m.jsonl", [CHAT] * 3)
    refused(tmp_path, tok, recipe(tmp_path, "mix: [{path: m.jsonl}], on_bad_rows: skip"),
            "none of its 3 rows is a valid text example", "set data.format: chat")


def test_a_weight_that_selects_no_row_is_refused(tmp_path, tok):
    jsonl(tmp_path / "m.jsonl", GOOD[:3])
    refused(tmp_path, tok, recipe(tmp_path, "mix: [{path: m.jsonl, weight: 0.2}]"),
            "data.mix[0].weight 0.2", "floor(3 x 0.2) uses none of them", "at least 0.333")
    first, second = check_data(load_recipe(recipe(tmp_path, "mix: [{path: m.jsonl, weight: 0.34}]")).data, 0)
    assert len(first.picks) == 6 and len(second.picks) == 1


def test_max_examples_that_leaves_a_source_out_is_a_note(tmp_path, tok):
    jsonl(tmp_path / "m.jsonl", GOOD[:3])
    data = build_dataset(load_recipe(recipe(tmp_path, "mix: [{path: m.jsonl}], max_examples: 4")), tok, tmp_path / "c")
    assert data.examples == 4
    assert any("data.max_examples 4" in n and "m.jsonl contributes no rows" in n for n in data.notes)


def test_a_source_whose_rows_carry_no_loss_is_refused(tmp_path, tok):
    (tmp_path / "m.jsonl").write_text(json.dumps({"instruction": "x" * 600, "output": "y"}) + "\n")
    path = tmp_path / "r.yaml"
    path.write_text(f"name: t\nmodel: {ARCH}\ndata: {{path: t.jsonl, format: instruction, seq_len: 512, "
                    "val_fraction: 0.0, on_bad_rows: skip, mix: [{path: m.jsonl}]}\n")
    jsonl(tmp_path / "t.jsonl", [{"instruction": "Add.", "output": "3"}] * 4)
    refused(tmp_path, tok, path, "data.mix[0].path", "m.jsonl: no token carries loss in any of its 1 rows")


def test_a_falsy_input_is_kept(tmp_path, tok):
    path = tmp_path / "r.yaml"
    path.write_text(f"name: t\nmodel: {ARCH}\ndata: {{path: i.jsonl, format: instruction, seq_len: 512, "
                    "val_fraction: 0.0}\n")
    jsonl(tmp_path / "i.jsonl", [{"instruction": "Add one.", "input": 0, "output": 1}] * 2)
    loaded = load_recipe(path)
    ids, labels = render_example({"instruction": "Add one.", "input": 0, "output": 1}, loaded.data, tok)
    assert "### Input:\n0\n" in tok.decode(ids) and tok.decode([t for t in labels if t != IGNORE_INDEX]).startswith("1")
    assert "### Input:\n0\n" in decoded_train(tok, build_dataset(loaded, tok, tmp_path / "cache"))


def test_eval_equal_to_a_training_source_is_refused_by_validate(tmp_path, capsys):
    jsonl(tmp_path / "m.jsonl", GOOD)
    code, _, err = run_cli(["validate", recipe(tmp_path, "mix: [{path: m.jsonl}], eval_path: m.jsonl")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "data.eval_path is data.mix[0].path" in err
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "m.jsonl")
    code, _, err = run_cli(["validate", recipe(tmp_path, "mix: [{path: m.jsonl}], eval_path: link.jsonl")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "is the same file as data.mix[0].path" in err


# --- validate refuses what run refuses before loading --------------------------------------------------------------

def test_validate_checks_every_source_and_the_architecture_as_run_does(tmp_path, capsys):
    jsonl(tmp_path / "m.jsonl", [GOOD[0], {"text": None}])
    path = recipe(tmp_path, "mix: [{path: m.jsonl}]")
    code, _, err = run_cli(["validate", path], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "m.jsonl line 2: field 'text' is null" in err
    code, out, err = run_cli(["validate", recipe(tmp_path, "mix: [{path: m.jsonl}], on_bad_rows: skip")], capsys)
    assert code == 0 and out.startswith("ok:") and "m.jsonl: 1 of 2 rows valid" in out and "left out 1 of 2" in out
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("name: u\nmodel: {name: nobody/unknown-model}\ndata: {path: t.jsonl}\n")
    code, _, validate_err = run_cli(["validate", unknown], capsys)
    assert code == 2 and "nobody/unknown-model" in validate_err
    code, _, run_err = run_cli(["run", unknown, "--out", tmp_path / "run"], capsys)
    assert code == 2 and run_err == validate_err and not (tmp_path / "run").exists()
    no_tokenizer = tmp_path / "tok.yaml"
    no_tokenizer.write_text(f"name: u\nmodel: {{tokenizer: ./no-such-tokenizer, {ARCH[1:-1]}}}\n"
                            "data: {path: t.jsonl}\n")
    for command in (["validate", no_tokenizer], ["run", no_tokenizer, "--out", tmp_path / "run"]):
        code, _, err = run_cli(command, capsys)
        assert code == 2 and "model.tokenizer ./no-such-tokenizer: no such folder" in err, err


def test_data_notes_reach_the_run_output_and_report(tmp_path, capsys):
    rows = [{"instruction": "Add 1 and 2.", "output": "3"}, {"instruction": "Add.", "output": ""}]
    mix = jsonl(tmp_path / "m.jsonl", rows * 4)
    out = tmp_path / "run"
    code, _, err = run_cli(["run", str(RECIPES / "tiny-cpu-lora.yaml"), "--out", str(out), "--set", "train.max_steps=2",
                            "--set", "train.checkpoint_every=0", "--set", "train.eval_every=0",
                            "--set", "data.on_bad_rows=skip", "--set", f"data.mix=[{{path: {mix}}}]"], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert len(report["data_notes"]) == 1 and "m.jsonl: left out 4 of 8 rows (4 empty text)" in report["data_notes"][0]
    assert report["data_notes"][0] in err


# --- bounded memory for a huge row ---------------------------------------------------------------------------------

def test_clipping_keeps_the_tokens_a_row_keeps(tok):
    data = load_recipe_data_for(seq_len=64)
    bound = max_text_chars(tok, 64)
    assert bound == (64 + 16) * max_token_chars(tok)
    long_text = "tokens beyond the sequence length " * 400
    clipped = clip_example({"text": long_text}, data, bound)
    assert len(clipped["text"]) == bound
    whole = render_example({"text": long_text}, data, tok)[0][:64]
    assert render_example(clipped, data, tok)[0][:64] == whole
    chat = {"messages": [{"role": "user", "content": "x" * 10 * bound}, {"role": "assistant", "content": "y"}]}
    clipped = clip_example(chat, data.model_copy(update={"format": "chat"}), bound)
    assert [len(m["content"]) for m in clipped["messages"]] == [bound]  # the turns past the bound are left out


def load_recipe_data_for(seq_len: int):
    from advisor.plan.recipe_sections import DataSection
    return DataSection(path="unused.jsonl", format="text", seq_len=seq_len)


ROW_BYTES = 10 * 2**20
# Python allocations (tracemalloc) while a 10 MB single-line row is validated, tokenized and packed: 250 MB before
# rows were clipped (the tokenizer's output for 10M characters; RSS grew by 1.9 GB), 40 MB after (the line's bytes,
# its text and the parsed value while it is read). The bound leaves room for what the first call imports.
MEMORY_BOUND_BYTES = 64 * 2**20


def test_a_10_mb_single_line_row_costs_bounded_memory(tmp_path, tok):
    text = "word " * (ROW_BYTES // 5)
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": text}) + "\n" + json.dumps({"text": "a short row"}) + "\n")
    path = tmp_path / "r.yaml"
    path.write_text(f"name: t\nmodel: {ARCH}\ndata: {{path: t.jsonl, format: text, seq_len: 256, val_fraction: 0.0}}\n")
    loaded = load_recipe(path)
    del text
    tracemalloc.start()
    try:
        data = build_dataset(loaded, tok, tmp_path / "cache")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data.examples == 2 and data.train_tokens == 256 + 13  # the long row cut to seq_len, the short one whole
    assert peak < MEMORY_BOUND_BYTES, peak


def test_batches_cut_by_characters_pack_the_same_rows(tmp_path, tok, monkeypatch):
    import runners.prepare
    path = recipe(tmp_path, "mix: [{path: m.jsonl, weight: 1.5}]")
    jsonl(tmp_path / "m.jsonl", [{"text": "a longer mixed-in row " * (i + 1)} for i in range(8)])
    whole = build_dataset(load_recipe(path), tok, tmp_path / "c1")
    monkeypatch.setattr(runners.prepare, "RENDER_BATCH_CHARS", 100)  # about one row per tokenizer call
    cut = build_dataset(load_recipe(path), tok, tmp_path / "c2")
    assert whole.examples == cut.examples == 6 + 12 and whole.train.equal(cut.train)
