"""Every data row is checked before training: wrong types, nulls, missing fields, unknown roles, empty messages, rows
with no loss token; malformed files name the file and the line or byte; the tokenized cache is keyed on content."""

import json
import os

import pytest

from advisor.core.errors import AdvisorError
from advisor.plan.recipe import load_recipe
from runners.prepare import build_dataset
from runners.tokenizer import byte_tokenizer
from tests.conftest import run_cli

ARCH = ("{arch: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, "
        "num_key_value_heads: 2, vocab_size: 259}}")


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def recipe_for(tmp_path, data_name, fmt, **extra):
    fields = "".join(f", {k}: {v}" for k, v in extra.items())
    path = tmp_path / "r.yaml"
    path.write_text(f"name: t\nmodel: {ARCH}\ndata: {{path: {data_name}, format: {fmt}, seq_len: 64, "
                    f"val_fraction: 0.0{fields}}}\ntrain: {{max_steps: 2, micro_batch: 1}}\n")
    return path


def jsonl(tmp_path, rows, name="d.jsonl"):
    (tmp_path / name).write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return name


def refused(tmp_path, tok, recipe_path, *needles):
    with pytest.raises(AdvisorError) as info:
        build_dataset(load_recipe(recipe_path), tok, tmp_path / "cache")
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


GOOD = {"text": "hello world"}


@pytest.mark.parametrize("bad, problem", [
    ({"text": None}, "field 'text' is null"),
    ({"text": ["a", "b"]}, "field 'text' is a list, expected a string"),
    ({"text": {"a": 1}}, "field 'text' is an object"),
    ({"body": "x"}, "missing field 'text'"),
    ({"text": ""}, "field 'text' is empty"),
    ([1, 2], "the row is a list, expected an object"),
])
def test_text_rows_are_validated_with_file_and_line(tmp_path, tok, bad, problem):
    path = recipe_for(tmp_path, jsonl(tmp_path, [GOOD, GOOD, bad, GOOD]), "text")
    refused(tmp_path, tok, path, "d.jsonl line 3: " + problem, "1 of 4 rows", "data.on_bad_rows: skip")
    skipped = build_dataset(load_recipe(recipe_for(tmp_path, "d.jsonl", "text", on_bad_rows="skip")), tok, tmp_path / "c2")
    assert skipped.skipped_rows == 1 and skipped.examples == 3


def test_skip_counts_and_says_so(tmp_path, tok, capsys):
    path = recipe_for(tmp_path, jsonl(tmp_path, [GOOD, {"text": None}, {"text": [3]}, GOOD]), "text", on_bad_rows="skip")
    data = build_dataset(load_recipe(path), tok, tmp_path / "cache")
    assert data.skipped_rows == 2 and data.examples == 2
    assert "d.jsonl: left out 2 of 4 rows (1 null field, 1 wrong type)" in capsys.readouterr().err
    again = build_dataset(load_recipe(path), tok, tmp_path / "cache")  # the cache remembers the count
    assert again.cache_hit and again.skipped_rows == 2 and "left out 2" in capsys.readouterr().err


def test_instruction_rows(tmp_path, tok):
    rows = [{"instruction": "Add.", "output": "3"}, {"instruction": "Add.", "output": None}]
    refused(tmp_path, tok, recipe_for(tmp_path, jsonl(tmp_path, rows), "instruction"), "line 2: field 'output' is null")
    rows = [{"instruction": "Add.", "input": [1, 2], "output": "3"}]
    refused(tmp_path, tok, recipe_for(tmp_path, jsonl(tmp_path, rows), "instruction"), "line 1: field 'input' is a list")


def test_an_input_field_no_row_has_is_refused(tmp_path, tok):
    rows = [{"instruction": "Add.", "input": "1 2", "output": "3"}] * 3
    refused(tmp_path, tok, recipe_for(tmp_path, jsonl(tmp_path, rows), "instruction", input_field="context"),
            "data.input_field 'context'", "no row")


@pytest.mark.parametrize("messages, problem", [
    ([], "field 'messages' is an empty list"),
    (None, "field 'messages' is null"),
    ("hi", "field 'messages' is a string"),
    ([{"role": "robot", "content": "x"}], "messages[0].role 'robot' is not one of"),
    ([{"role": "user", "content": "x"}, {"role": "assistant"}], "messages[1].content is missing"),
    ([{"role": "user", "content": None}], "messages[0].content is null"),
    ([{"content": "x"}], "messages[0] has no role"),
])
def test_chat_rows(tmp_path, tok, messages, problem):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    path = recipe_for(tmp_path, jsonl(tmp_path, [good, {"messages": messages}]), "chat")
    refused(tmp_path, tok, path, "line 2: " + problem)


def test_a_run_where_no_token_carries_loss_is_refused(tmp_path, tok, capsys):
    system_only = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}
    path = recipe_for(tmp_path, jsonl(tmp_path, [system_only] * 4), "chat")
    refused(tmp_path, tok, path, "line 1: no token carries loss")
    path = recipe_for(tmp_path, "d.jsonl", "chat", on_bad_rows="skip")
    refused(tmp_path, tok, path, "no token carries loss in any of its 4 rows")
    long_prompt = {"instruction": "x" * 300, "output": "y"}  # the prompt alone is longer than seq_len 64
    path = recipe_for(tmp_path, jsonl(tmp_path, [long_prompt] * 3), "instruction")
    refused(tmp_path, tok, path, "no token carries loss after truncation to data.seq_len 64")
    code, _, err = run_cli(["run", path, "--out", tmp_path / "new" / "out"], capsys)  # refused before it starts
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no token carries loss" in err
    assert not (tmp_path / "new").exists()  # the folders it made for the run are gone again


def test_malformed_files_name_file_and_line_or_byte(tmp_path, tok):
    (tmp_path / "empty.jsonl").write_text("")
    refused(tmp_path, tok, recipe_for(tmp_path, "empty.jsonl", "text"), "empty.jsonl: no examples")
    lines = [json.dumps(GOOD)] * 499 + ['{"text": "unterminated']
    refused(tmp_path, tok, recipe_for(tmp_path, jsonl(tmp_path, lines, "deep.jsonl"), "text"),
            "deep.jsonl line 500: invalid JSON")
    good = (json.dumps(GOOD) + "\n").encode()
    (tmp_path / "latin1.jsonl").write_bytes(good * 2 + '{"text": "caf\xe9"}\n'.encode("latin-1"))
    offset = len(good) * 2 + len('{"text": "caf')
    refused(tmp_path, tok, recipe_for(tmp_path, "latin1.jsonl", "text"), f"not UTF-8 at byte {offset} (line 3)")
    (tmp_path / "garbage.parquet").write_bytes(b"PAR1 this is not parquet at all")
    refused(tmp_path, tok, recipe_for(tmp_path, "garbage.parquet", "text"), "garbage.parquet: not a readable Parquet file")
    (tmp_path / "q.csv").write_text('text\n"fine"\n"never closed\nmore\n')
    refused(tmp_path, tok, recipe_for(tmp_path, "q.csv", "text"), "q.csv line 3: a quoted field opened on line 3 is never closed")
    (tmp_path / "cells.csv").write_text("text\nfine\n")
    assert build_dataset(load_recipe(recipe_for(tmp_path, "cells.csv", "text")), tok, tmp_path / "cache").examples == 1
    (tmp_path / "a.json").write_text('[{"text": "x"}, {"text": null}]')
    refused(tmp_path, tok, recipe_for(tmp_path, "a.json", "text"), "a.json item 1: field 'text' is null")
    (tmp_path / "notdata").mkdir()
    refused(tmp_path, tok, recipe_for(tmp_path, "notdata", "text"), "not a dataset saved with save_to_disk")


def test_cache_is_keyed_on_content_not_name_size_mtime(tmp_path, tok):
    """Two files with the same name, size and mtime but other bytes tokenize to their own tokens."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    jsonl(tmp_path / "a", [{"text": "aaaa"}] * 3)
    jsonl(tmp_path / "b", [{"text": "bbbb"}] * 3)
    for folder in ("a", "b"):
        os.utime(tmp_path / folder / "d.jsonl", ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    first = build_dataset(load_recipe(recipe_for(tmp_path / "a", "d.jsonl", "text")), tok, tmp_path / "cache")
    second = build_dataset(load_recipe(recipe_for(tmp_path / "b", "d.jsonl", "text")), tok, tmp_path / "cache")
    assert not second.cache_hit and not first.train.equal(second.train)
    assert tok.decode(second.train.input_ids[1:5].tolist()) == "bbbb"
    # the same path rewritten in place, its mtime set back: hashed again (its ctime moved), tokenized again
    jsonl(tmp_path / "a", [{"text": "cccc"}] * 3)
    os.utime(tmp_path / "a" / "d.jsonl", ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    third = build_dataset(load_recipe(recipe_for(tmp_path / "a", "d.jsonl", "text")), tok, tmp_path / "cache")
    assert not third.cache_hit and tok.decode(third.train.input_ids[1:5].tolist()) == "cccc"
