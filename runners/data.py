"""Data: load local files, render text/instruction/chat examples with loss masks, pack, split, cache."""

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from advisor.errors import AdvisorError
from advisor.recipe import DataSection, Recipe

IGNORE_INDEX = -100  # labels torch's cross_entropy skips
# The Alpaca prompt (Taori et al. 2023, stanford_alpaca), with and without an input field.
ALPACA_PROMPT = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
ALPACA_PROMPT_INPUT = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"


@dataclass
class TokenizedData:
    train: list[dict]          # rows of input_ids, labels, position_ids (equal lengths)
    val: list[dict]
    train_tokens: int          # non-padding tokens in train rows (one epoch)
    examples: int
    cache_hit: bool
    cache_path: Path


def load_raw(data: DataSection):
    """A datasets.Dataset from a JSONL/JSON/Parquet/CSV file or a save_to_disk directory."""
    import datasets

    path = Path(data.path)
    if not path.exists():
        raise AdvisorError(f"data.path {path}: no such file or directory")
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        return loaded["train"] if isinstance(loaded, datasets.DatasetDict) else loaded
    kinds = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
    kind = kinds.get(path.suffix.lower())
    if kind is None:
        raise AdvisorError(f"data.path {path}: unsupported file type {path.suffix!r}; use .jsonl, .json, .parquet or .csv")
    reader = {"json": datasets.Dataset.from_json, "parquet": datasets.Dataset.from_parquet, "csv": datasets.Dataset.from_csv}[kind]
    return reader(str(path), keep_in_memory=True)


def render_example(example: dict, data: DataSection, tokenizer) -> tuple[list[int], list[int]]:
    """Token ids and labels for one example; prompt tokens get IGNORE_INDEX unless data.train_on_prompt."""
    fmt = data.format
    if fmt == "text":
        ids = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        ids += tokenizer(str(_field(example, data.text_field)), add_special_tokens=False)["input_ids"]
        ids.append(tokenizer.eos_token_id)
        return ids, list(ids)
    if fmt == "instruction":
        context = example.get(data.input_field) or ""
        template = ALPACA_PROMPT_INPUT if context else ALPACA_PROMPT
        prompt = template.format(instruction=_field(example, data.instruction_field), input=context)
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        prompt_ids = bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(str(_field(example, data.output_field)), add_special_tokens=False)["input_ids"]
        response_ids.append(tokenizer.eos_token_id)
        prompt_labels = list(prompt_ids) if data.train_on_prompt else [IGNORE_INDEX] * len(prompt_ids)
        return prompt_ids + response_ids, prompt_labels + response_ids
    return _render_chat(_field(example, data.messages_field), data, tokenizer)


def _render_chat(messages, data: DataSection, tokenizer) -> tuple[list[int], list[int]]:
    """Chat template rendering; loss on assistant turns only, found by rendering each turn's prefix."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise AdvisorError(f"data.{data.messages_field}: expected a list of {{role, content}} messages")
    if tokenizer.chat_template is None:
        raise AdvisorError("data.format chat needs a tokenizer with a chat template (model.tokenizer)")
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)) if i else 0
        end = len(tokenizer.apply_chat_template(messages[: i + 1], tokenize=False))
        spans.append((start, end))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"]
    if data.train_on_prompt:
        return ids, list(ids)
    labels = [tok if any(s <= start < e for s, e in spans) else IGNORE_INDEX
              for tok, (start, _) in zip(ids, encoded["offset_mapping"])]
    return ids, labels


def _field(example: dict, name: str):
    if name not in example:
        raise AdvisorError(f"data: examples have no field {name!r} (fields: {', '.join(example)}); map it in the recipe's data section")
    return example[name]


def pack(examples: list[tuple[list[int], list[int]]], seq_len: int, packing: bool) -> list[dict]:
    """Rows for training. With packing, examples fill rows of seq_len in order (an example that does not fit
    starts a new row); positions restart at each example, so attention does not cross examples (transformers
    builds a block-causal mask from position_ids), and each example's first label is ignored so no token is
    predicted from the previous example. Without packing, one example per row."""
    rows, ids, labels, positions = [], [], [], []

    def flush():
        if ids:
            rows.append({"input_ids": list(ids), "labels": list(labels), "position_ids": list(positions)})
            ids.clear(), labels.clear(), positions.clear()

    for example_ids, example_labels in examples:
        example_ids, example_labels = example_ids[:seq_len], example_labels[:seq_len]
        if not packing or len(ids) + len(example_ids) > seq_len:
            flush()
        ids.extend(example_ids)
        labels.extend([IGNORE_INDEX] + example_labels[1:])
        positions.extend(range(len(example_ids)))
    flush()
    return rows


def _fingerprint(recipe: Recipe, tokenizer_id: str) -> str:
    path = Path(recipe.data.path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(f.name.encode())
        with f.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    settings = recipe.data.model_dump(exclude={"path"})
    digest.update(json.dumps([settings, tokenizer_id, recipe.train.seed], sort_keys=True).encode())
    return digest.hexdigest()[:20]


def build_dataset(recipe: Recipe, tokenizer, cache_root: Path) -> TokenizedData:
    """Tokenize, mask, split and pack the recipe's data, or load the identical result from the cache."""
    from runners.tokenizer import tokenizer_identity
    from runners.io import atomic_write_bytes

    key = _fingerprint(recipe, tokenizer_identity(tokenizer))
    cache = Path(cache_root) / "tokenized" / f"{key}.pt"
    if cache.is_file():
        blob = torch.load(cache, weights_only=True)
        return TokenizedData(blob["train"], blob["val"], blob["train_tokens"], blob["examples"], True, cache)
    raw = load_raw(recipe.data)
    if recipe.data.max_examples:
        raw = raw.select(range(min(recipe.data.max_examples, len(raw))))
    if len(raw) == 0:
        raise AdvisorError(f"data.path {recipe.data.path}: no examples")
    order = torch.randperm(len(raw), generator=torch.Generator().manual_seed(recipe.train.seed)).tolist()
    n_val = math.ceil(len(raw) * recipe.data.val_fraction) if recipe.data.val_fraction > 0 and len(raw) > 1 else 0
    val_idx, train_idx = sorted(order[:n_val]), sorted(order[n_val:])
    rendered = [render_example(raw[i], recipe.data, tokenizer) for i in range(len(raw))]
    train = pack([rendered[i] for i in train_idx], recipe.data.seq_len, recipe.data.packing)
    val = pack([rendered[i] for i in val_idx], recipe.data.seq_len, recipe.data.packing)
    train_tokens = sum(len(r["input_ids"]) for r in train)
    blob = {"train": train, "val": val, "train_tokens": train_tokens, "examples": len(raw)}
    import io
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    atomic_write_bytes(cache, buffer.getvalue())
    return TokenizedData(train, val, train_tokens, len(raw), False, cache)


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad rows to the longest; padding gets its own position block and ignored labels (no attention mask needed)."""
    length = max(len(r["input_ids"]) for r in rows)
    out = {"input_ids": [], "labels": [], "position_ids": []}
    for r in rows:
        pad = length - len(r["input_ids"])
        out["input_ids"].append(r["input_ids"] + [pad_id] * pad)
        out["labels"].append(r["labels"] + [IGNORE_INDEX] * pad)
        out["position_ids"].append(r["position_ids"] + list(range(pad)))
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


def epoch_order(n_rows: int, epoch: int, seed: int) -> list[int]:
    """The rows of one epoch in a shuffled order that depends only on (seed, epoch): resumable."""
    return torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()


def micro_batches_per_epoch(n_rows: int, micro_batch: int, world_size: int) -> int:
    per_step = micro_batch * world_size
    if n_rows < per_step:
        raise AdvisorError(f"only {n_rows} training sequences for micro_batch {micro_batch} x {world_size} processes: "
                           "add data, lower train.micro_batch, or disable data.packing")
    return n_rows // per_step


def rank_rows(order: list[int], index: int, micro_batch: int, rank: int, world_size: int) -> list[int]:
    """Row indices of micro-batch `index` for this rank: each global micro-batch is split across ranks."""
    start = index * micro_batch * world_size + rank * micro_batch
    return order[start:start + micro_batch]
