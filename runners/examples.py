"""Examples to token ids and labels: each data format rendered with its loss mask (prompt tokens get IGNORE_INDEX)."""

from advisor.core.errors import AdvisorError
from advisor.plan.recipe import DataSection

IGNORE_INDEX = -100  # labels torch's cross_entropy skips
# The Alpaca prompt (Taori et al. 2023, stanford_alpaca), with and without an input field.
ALPACA_PROMPT = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
ALPACA_PROMPT_INPUT = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"


RENDER_BATCH = 1000  # examples tokenized per call: fast tokenizers batch them in Rust


def text_value(value) -> str:
    """A text field as rendered: a string as written, a number as its digits (`"input": 0` is the text "0", not an
    absent input), null as absent (the validator, runners.rows, refuses null where a field is required)."""
    return "" if value is None else value if isinstance(value, str) else str(value)


def text_chars(value) -> int:
    """Characters of text in an example (its strings, in fields, lists and messages): what bounds a render batch."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(text_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(text_chars(v) for v in value)
    return 0


def _clip_turns(turns, key: str, max_chars: int):
    """A conversation cut to about max_chars of text: each turn's text clipped, no turn after the one that
    reaches the bound (those turns would lie beyond data.seq_len)."""
    if not isinstance(turns, list):
        return turns
    out, total = [], 0
    for turn in turns:
        if total >= max_chars:
            break
        if isinstance(turn, dict) and isinstance(turn.get(key), str):
            turn = {**turn, key: turn[key][:max_chars]}
            total += len(turn[key])
        out.append(turn)
    return out


def clip_example(example, data: DataSection, max_chars: int) -> dict:
    """The fields data.format reads, each text cut to max_chars characters (runners.tokenizer.max_text_chars: more
    than the tokens a row keeps), so a 10 MB row costs the tokenizer what a row of data.seq_len tokens costs."""
    fmt = data.format
    if fmt == "chat":
        return {data.messages_field: _clip_turns(example.get(data.messages_field), "content", max_chars)}
    if fmt == "sharegpt":
        return {data.conversations_field: _clip_turns(example.get(data.conversations_field), "value", max_chars)}
    names = {"text": [data.text_field], "instruction": [data.instruction_field, data.input_field, data.output_field],
             "completion": [data.prompt_field, data.completion_field]}[fmt]
    return {name: (example[name][:max_chars] if isinstance(example[name], str) else example[name])
            for name in names if name in example}


def render_batch(batch: dict[str, list], data: DataSection, tokenizer) -> list[tuple[list[int], list[int]]]:
    """Token ids and labels for a batch of examples (columns of equal length); prompt tokens get IGNORE_INDEX
    unless data.train_on_prompt. Text and instruction formats tokenize the whole batch in one call. The runner
    clips each example first (clip_example)."""
    fmt = data.format
    if fmt in ("sharegpt", "completion"):
        return _render_more(batch, data, tokenizer)
    size = len(next(iter(batch.values()))) if batch else 0
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    if fmt == "text":
        texts = [text_value(t) for t in _column(batch, data.text_field)]
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [(ids := bos + e + [tokenizer.eos_token_id], list(ids)) for e in encoded]
    if fmt == "instruction":
        instructions, outputs = _column(batch, data.instruction_field), _column(batch, data.output_field)
        contexts = [text_value(c) for c in batch.get(data.input_field) or [None] * size]
        prompts = [(ALPACA_PROMPT_INPUT if c else ALPACA_PROMPT).format(instruction=text_value(i), input=c)
                   for i, c in zip(instructions, contexts)]
        prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer([text_value(o) for o in outputs], add_special_tokens=False)["input_ids"]
        out = []
        for p, r in zip(prompt_ids, response_ids):
            p, r = bos + p, r + [tokenizer.eos_token_id]
            out.append((p + r, (list(p) if data.train_on_prompt else [IGNORE_INDEX] * len(p)) + r))
        return out
    return [_render_chat(m, data, tokenizer) for m in _column(batch, data.messages_field)]


SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bing": "assistant", "bard": "assistant", "model": "assistant", "system": "system"}


def sharegpt_messages(turns, data: DataSection) -> list[dict]:
    """ShareGPT turns ({from, value}) as chat messages ({role, content})."""
    if not isinstance(turns, list) or not all(isinstance(t, dict) and "from" in t and "value" in t for t in turns):
        raise AdvisorError(f"data.{data.conversations_field}: expected a list of {{from, value}} turns (ShareGPT)")
    unknown = sorted({str(t["from"]) for t in turns} - SHAREGPT_ROLES.keys())
    if unknown:
        raise AdvisorError(f"data.{data.conversations_field}: unknown speaker {unknown[0]!r}; expected one of "
                           + ", ".join(SHAREGPT_ROLES))
    return [{"role": SHAREGPT_ROLES[str(t["from"])], "content": str(t["value"])} for t in turns]


def _render_more(batch: dict[str, list], data: DataSection, tokenizer) -> list[tuple[list[int], list[int]]]:
    """sharegpt: rendered as chat (loss on the assistant turns); completion: prompt + completion, loss on the
    completion (and the prompt with train_on_prompt), no template: the text as written."""
    if data.format == "sharegpt":
        return [_render_chat(sharegpt_messages(t, data), data, tokenizer) for t in _column(batch, data.conversations_field)]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    prompts = tokenizer([text_value(p) for p in _column(batch, data.prompt_field)], add_special_tokens=False)["input_ids"]
    completions = tokenizer([text_value(c) for c in _column(batch, data.completion_field)],
                            add_special_tokens=False)["input_ids"]
    out = []
    for p, c in zip(prompts, completions):
        p, c = bos + p, c + [tokenizer.eos_token_id]
        out.append((p + c, (list(p) if data.train_on_prompt else [IGNORE_INDEX] * len(p)) + c))
    return out


def render_example(example: dict, data: DataSection, tokenizer) -> tuple[list[int], list[int]]:
    """One example's ids and labels (render_batch on a batch of one)."""
    return render_batch({k: [v] for k, v in example.items()}, data, tokenizer)[0]


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


def _column(batch: dict[str, list], name: str) -> list:
    if name not in batch:
        raise AdvisorError(f"data: examples have no field {name!r} (fields: {', '.join(batch)}); map it in the recipe's data section")
    return batch[name]


# --- rendering in preparation processes (runners.prepare): light imports only, so a spawned process starts fast ----
_WORKER: dict = {}


def start_render_process(data_json: str, tokenizer) -> None:
    """A preparation process's initializer: the data section and tokenizer it renders with, and the tokenizer's own
    thread pool off (the processes are the parallelism)."""
    import os
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER.update(data=DataSection.model_validate_json(data_json), tokenizer=tokenizer)


def render_in_process(examples: list[dict]) -> "RenderedBatch":
    """render_packed with the data section and tokenizer of start_render_process."""
    return render_packed(examples, _WORKER["data"], _WORKER["tokenizer"])


class RenderedBatch:
    """A batch of rendered examples as the Packer takes them: int32 ids, labels (each example's first label ignored:
    nothing is predicted from the previous example) and positions, cut to data.seq_len, concatenated; per example
    its kept length, its length before the cut, and whether any label carries loss."""

    __slots__ = ("ids", "labels", "positions", "lengths", "full_lengths", "has_loss")

    def __init__(self, ids: bytes, labels: bytes, positions: bytes, lengths: list[int], full_lengths: list[int],
                 has_loss: list[bool]):
        self.ids, self.labels, self.positions = ids, labels, positions
        self.lengths, self.full_lengths, self.has_loss = lengths, full_lengths, has_loss


def render_packed(examples: list[dict], data: DataSection, tokenizer) -> RenderedBatch:
    """Render a batch of clipped examples (render_batch) into the Packer's int32 arrays (numpy, vectorised: the
    per-token Python work is the flattening alone)."""
    from itertools import chain

    import numpy as np
    keys = list(dict.fromkeys(k for example in examples for k in example))
    rendered = render_batch({k: [example.get(k) for example in examples] for k in keys}, data, tokenizer)
    seq_len = data.seq_len
    full_lengths = [len(ids) for ids, _ in rendered]
    lengths = np.minimum(np.asarray(full_lengths, dtype=np.int64), seq_len) if rendered else np.zeros(0, np.int64)
    total = int(lengths.sum())
    ids = np.fromiter(chain.from_iterable(i[:seq_len] for i, _ in rendered), dtype=np.int32, count=total)
    labels = np.fromiter(chain.from_iterable(l[:seq_len] for _, l in rendered), dtype=np.int32, count=total)
    starts = np.cumsum(lengths) - lengths
    nonempty = starts[lengths > 0]
    labels[nonempty] = IGNORE_INDEX  # each example's first label: nothing is predicted from the one before
    positions = (np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)).astype(np.int32)
    carries = np.add.reduceat((labels != IGNORE_INDEX).astype(np.int64), nonempty) if total else np.zeros(0, np.int64)
    has_loss = np.zeros(len(rendered), dtype=bool)
    has_loss[lengths > 0] = carries > 0
    return RenderedBatch(ids.tobytes(), labels.tobytes(), positions.tobytes(), lengths.tolist(), full_lengths,
                         has_loss.tolist())
