"""Data formats, loss masks, packing without cross-example attention, and the tokenized cache."""

import json

import pytest
import torch

from advisor.plan.recipe import load_recipe
from runners.data import collate, pack
from runners.prepare import build_dataset
from runners.examples import IGNORE_INDEX, render_example
from runners.tokenizer import byte_tokenizer
from tests.helpers import RECIPES


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def _data(tmp_path, fmt, rows, **extra):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fields = ", ".join(f"{k}: {v}" for k, v in extra.items())
    (tmp_path / "r.yaml").write_text(
        "name: t\nmodel: {arch: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, "
        "num_key_value_heads: 2, vocab_size: 259}}\n"
        f"data: {{path: d.jsonl, format: {fmt}, seq_len: 64, val_fraction: 0.0{', ' + fields if fields else ''}}}\n")
    return load_recipe(tmp_path / "r.yaml")


def test_instruction_masks_prompt(tmp_path, tok):
    recipe = _data(tmp_path, "instruction", [{"instruction": "Reverse.", "input": "abc", "output": "cba"}])
    ids, labels = render_example({"instruction": "Reverse.", "input": "abc", "output": "cba"}, recipe.data, tok)
    trained = [t for t in labels if t != IGNORE_INDEX]
    assert tok.decode(trained) == "cba" + tok.eos_token
    assert len(ids) == len(labels) and labels[: len(ids) - 4] == [IGNORE_INDEX] * (len(ids) - 4)


def test_chat_trains_on_assistant_turns_only(tmp_path, tok):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                {"role": "user", "content": "again"}, {"role": "assistant", "content": "ok"}]
    recipe = _data(tmp_path, "chat", [{"messages": messages}])
    ids, labels = render_example({"messages": messages}, recipe.data, tok)
    trained = tok.decode([t for t in labels if t != IGNORE_INDEX])
    assert "yo" in trained and "ok" in trained and "hi" not in trained and "again" not in trained


def test_text_and_field_mapping(tmp_path, tok):
    recipe = _data(tmp_path, "text", [{"body": "hello"}], text_field="body")
    ids, labels = render_example({"body": "hello"}, recipe.data, tok)
    assert ids == labels and tok.decode(ids[1:-1]) == "hello"
    from advisor.core.errors import AdvisorError
    with pytest.raises(AdvisorError, match="no field 'body'"):
        render_example({"text": "x"}, recipe.data, tok)


def test_pack_layout():
    packed = pack([([1, 2, 3], [1, 2, 3]), ([4, 5], [4, 5]), ([6, 7, 8, 9], [6, 7, 8, 9])], seq_len=6, packing=True)
    rows = [{k: v.tolist() for k, v in r.items()} for r in packed.rows()]
    assert rows[0]["input_ids"] == [1, 2, 3, 4, 5] and rows[0]["position_ids"] == [0, 1, 2, 0, 1]
    assert rows[0]["labels"] == [IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5]
    assert rows[1]["input_ids"] == [6, 7, 8, 9]
    assert packed.input_ids.dtype == torch.int32 and packed.tokens == 9
    unpacked = pack([([1, 2, 3], [1, 2, 3]), ([4, 5], [4, 5])], seq_len=6, packing=False)
    assert len(unpacked) == 2


@pytest.mark.parametrize("attention", ["sdpa", "eager", "flex_attention"])  # flex: compiled on first use (~25 s here)
def test_packed_attention_does_not_cross_examples(attention):
    """Logits of an example packed after another equal its logits alone: the block-causal mask holds."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, vocab_size=50, attn_implementation=attention,
                                         use_cache=False)).eval()  # a KV cache disables packed-sequence masks
    a, b = [3, 4, 5, 6, 7], [9, 8, 7, 6]
    packed = collate(pack([(a, a), (b, b)], 16, True).rows(), pad_id=0)
    alone = collate(pack([(b, b)], 16, True).rows(), pad_id=0)
    with torch.no_grad():
        logits_packed = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"]).logits[0, len(a):]
        logits_alone = model(input_ids=alone["input_ids"], position_ids=alone["position_ids"]).logits[0]
    torch.testing.assert_close(logits_packed, logits_alone, rtol=1e-5, atol=1e-5)


def test_padding_gets_ignored_labels():
    t = lambda *v: torch.tensor(v, dtype=torch.int32)  # noqa: E731
    batch = collate([{"input_ids": t(1, 2, 3), "labels": t(-100, 2, 3), "position_ids": t(0, 1, 2)},
                     {"input_ids": t(4), "labels": t(-100), "position_ids": t(0)}], pad_id=0)
    assert batch["input_ids"].tolist()[1] == [4, 0, 0] and batch["labels"].tolist()[1] == [-100, -100, -100]
    assert batch["position_ids"].tolist()[1] == [0, 0, 1]


def test_tokenized_cache_is_reused_and_keyed(tmp_path, tok, monkeypatch):
    recipe = load_recipe(RECIPES / "tiny-cpu-lora.yaml")
    first = build_dataset(recipe, tok, tmp_path)
    second = build_dataset(recipe, tok, tmp_path)
    assert not first.cache_hit and second.cache_hit and first.train.equal(second.train)
    other = build_dataset(recipe.model_copy(update={"data": recipe.data.model_copy(update={"seq_len": 384})}), tok, tmp_path)
    assert not other.cache_hit
    assert first.train_tokens == sum(r["input_ids"].numel() for r in first.train.rows())
    assert len(first.val) > 0 and first.examples == 600


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".json", "dir"])
def test_file_formats(tmp_path, tok, suffix):
    import datasets
    ds = datasets.Dataset.from_list([{"text": f"example {i}"} for i in range(10)])
    path = tmp_path / f"data{suffix if suffix != 'dir' else ''}"
    {".parquet": lambda: ds.to_parquet(str(path)), ".csv": lambda: ds.to_csv(str(path), index=False),
     ".json": lambda: ds.to_json(str(path)), "dir": lambda: ds.save_to_disk(str(path))}[suffix]()
    (tmp_path / "r.yaml").write_text(
        "name: t\nmodel: {arch: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, "
        f"vocab_size: 259}}}}\ndata: {{path: {path.name}, format: text, seq_len: 64, val_fraction: 0.2}}\n")
    data = build_dataset(load_recipe(tmp_path / "r.yaml"), tok, tmp_path / "cache")
    assert data.examples == 10 and data.train_tokens > 0


def test_editing_the_data_invalidates_the_cache(tmp_path, tok):
    recipe = _data(tmp_path, "text", [{"text": "hello"}, {"text": "world"}])
    assert not build_dataset(recipe, tok, tmp_path / "cache").cache_hit
    assert build_dataset(recipe, tok, tmp_path / "cache").cache_hit
    with open(recipe.data.path, "a") as f:
        f.write(json.dumps({"text": "one more"}) + "\n")
    again = build_dataset(recipe, tok, tmp_path / "cache")
    assert not again.cache_hit and again.examples == 3
