"""Data people have: ShareGPT, prompt-completion, raw text, datasets saved with save_to_disk, hub datasets from the
local cache (offline), several datasets mixed with weights, a separate eval file; each renders as expected and
trains on the tiny model."""

import json

import pytest

from advisor.core.errors import AdvisorError
from advisor.plan.recipe import load_recipe
from runners.prepare import build_dataset
from runners.rows import check_data
from runners.examples import IGNORE_INDEX, render_example
from runners.tokenizer import byte_tokenizer
from tests.conftest import run_cli
from tests.helpers import RECIPES, metrics

ALPACA = [json.loads(line) for line in (RECIPES / "data" / "tiny-instructions.jsonl").read_text().splitlines()[:48]]


def _rows(fmt: str) -> list[dict]:
    if fmt == "sharegpt":
        return [{"conversations": [{"from": "system", "value": "Answer briefly."},
                                   {"from": "human", "value": f"{r['instruction']} {r['input']}".strip()},
                                   {"from": "gpt", "value": r["output"]}]} for r in ALPACA]
    if fmt == "completion":
        return [{"prompt": f"{r['instruction']} {r['input']}\nAnswer: ", "completion": r["output"]} for r in ALPACA]
    return [{"text": f"{r['instruction']} {r['input']} -> {r['output']}"} for r in ALPACA]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _recipe(tmp_path, data: str):
    path = tmp_path / "r.yaml"
    path.write_text("name: t\nmodel: {arch: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, "
                    "num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 259}}\n"
                    f"data: {{{data}, seq_len: 128, val_fraction: 0.1}}\n")
    return load_recipe(path)


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def test_sharegpt_renders_as_chat_with_loss_on_gpt_turns(tmp_path, tok):
    recipe = _recipe(tmp_path, f"path: {_jsonl(tmp_path / 's.jsonl', _rows('sharegpt'))}, format: sharegpt")
    example = _rows("sharegpt")[2]
    ids, labels = render_example(example, recipe.data, tok)
    chat = render_example({"messages": [{"role": r, "content": t["value"]} for r, t in
                                        zip(("system", "user", "assistant"), example["conversations"])]},
                          recipe.data.model_copy(update={"format": "chat"}), tok)
    assert (ids, labels) == chat
    assert tok.decode([t for t in labels if t != IGNORE_INDEX]).startswith(ALPACA[2]["output"])


def test_sharegpt_unknown_speaker_named(tmp_path, tok):
    recipe = _recipe(tmp_path, f"path: {_jsonl(tmp_path / 's.jsonl', _rows('sharegpt'))}, format: sharegpt")
    with pytest.raises(AdvisorError, match="unknown speaker 'robot'"):
        render_example({"conversations": [{"from": "robot", "value": "x"}]}, recipe.data, tok)


def test_completion_loss_on_completion_only(tmp_path, tok):
    recipe = _recipe(tmp_path, f"path: {_jsonl(tmp_path / 'c.jsonl', _rows('completion'))}, format: completion")
    ids, labels = render_example({"prompt": "2+2=", "completion": "4"}, recipe.data, tok)
    assert tok.decode([t for t in labels if t != IGNORE_INDEX]) == "4" + tok.eos_token
    assert tok.decode(ids) == tok.bos_token + "2+2=4" + tok.eos_token


def test_mix_weights_examples(tmp_path, tok):
    a = _jsonl(tmp_path / "a.jsonl", [{"text": f"a{i}", "other": i} for i in range(10)])
    b = _jsonl(tmp_path / "b.jsonl", [{"text": f"b{i}"} for i in range(10)])
    recipe = _recipe(tmp_path, f"path: {a}, weight: 0.5, mix: [{{path: {b}, weight: 2}}]")
    first, second = check_data(recipe.data, 0)
    assert len(first.picks) == 5 and len(second.picks) == 20 and len(set(second.picks)) == 10
    data = build_dataset(recipe, tok, tmp_path / "cache")
    assert data.examples == 25


def test_eval_file_replaces_the_split(tmp_path, tok, monkeypatch):
    monkeypatch.setenv("RIGHTSIZE_CACHE_DIR", str(tmp_path / "cache"))
    train = _jsonl(tmp_path / "t.jsonl", _rows("text"))
    held = _jsonl(tmp_path / "e.jsonl", [{"text": "held out"}] * 3)
    recipe = _recipe(tmp_path, f"path: {train}, eval_path: {held}")
    data = build_dataset(recipe, tok, tmp_path / "cache")
    assert data.examples == len(ALPACA) and len(data.val) == 1  # 3 short examples packed in one row
    assert "held out" in tok.decode(data.val.row(0)["input_ids"])


def _save_to_disk(tmp_path, rows):
    import datasets
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(folder))
    return folder


def _hub_cache(tmp_path, monkeypatch, dataset_id: str, rows) -> None:
    """A hub dataset laid out in the local cache as huggingface_hub stores it (refs/main -> snapshots/<sha>)."""
    import huggingface_hub.constants
    cache = tmp_path / "hub"
    repo = cache / f"datasets--{dataset_id.replace('/', '--')}"
    sha = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    (repo / "snapshots" / sha / "data").mkdir(parents=True)
    _jsonl(repo / "snapshots" / sha / "data" / "train-00000-of-00001.jsonl", rows)
    _jsonl(repo / "snapshots" / sha / "data" / "test-00000-of-00001.jsonl", rows[:2])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))


def test_hub_dataset_read_from_the_local_cache_offline(tmp_path, monkeypatch):
    _hub_cache(tmp_path, monkeypatch, "tiny/sharegpt", _rows("sharegpt"))
    recipe = _recipe(tmp_path, "path: tiny/sharegpt, hub: true, format: sharegpt")
    assert recipe.data.path == "tiny/sharegpt"  # a hub id is not resolved as a local path
    assert len(check_data(recipe.data, 0)[0].picks) == len(ALPACA)
    test_split = recipe.data.model_copy(update={"split": "test"})
    assert len(check_data(test_split, 0)[0].picks) == 2
    with pytest.raises(AdvisorError, match="data.path nobody/nothing .hub: true. is not in the local hub cache"):
        check_data(recipe.data.model_copy(update={"path": "nobody/nothing"}), 0)


SOURCES = ["text", "sharegpt", "completion", "save_to_disk", "hub", "mix", "eval_file"]


@pytest.mark.parametrize("source", SOURCES)
def test_every_data_format_trains_on_the_tiny_model(tmp_path, capsys, monkeypatch, source):
    fmt = source if source in ("text", "sharegpt", "completion") else "sharegpt" if source == "hub" else "text"
    data = _jsonl(tmp_path / "d.jsonl", _rows(fmt))
    sets = [f"data.path={data}", f"data.format={fmt}"]
    if source == "save_to_disk":
        sets[0] = f"data.path={_save_to_disk(tmp_path, _rows(fmt))}"
    elif source == "hub":
        _hub_cache(tmp_path, monkeypatch, "tiny/sharegpt", _rows("sharegpt"))
        sets += ["data.path=tiny/sharegpt", "data.hub=true"]
    elif source == "mix":
        sets += [f"data.mix=[{{path: {_jsonl(tmp_path / 'm.jsonl', _rows('text')[:8])}, weight: 3}}]"]
    elif source == "eval_file":
        sets += [f"data.eval_path={_jsonl(tmp_path / 'e.jsonl', _rows('text')[:4])}"]
    out = tmp_path / "run"
    args = ["run", RECIPES / "tiny-cpu-lora.yaml", "--out", out, "--set", "train.max_steps=3", "--set",
            "train.checkpoint_every=0", "--set", "train.eval_every=0", "--set", "train.micro_batch=2"]
    for assignment in sets:
        args += ["--set", assignment]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 3 and report["loss"]["eval"] is not None
    assert [m["step"] for m in metrics(out) if "loss" in m] == [1, 2, 3]
