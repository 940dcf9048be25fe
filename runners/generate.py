"""See what was trained: text generated from a run's base model + adapter, for a prompt, a chat, or the recipe's eval
samples at each eval (RUN/samples.jsonl)."""

import json
from pathlib import Path

import torch

from advisor.core.errors import AdvisorError
from advisor.plan.recipe import Recipe, load_recipe


def format_prompt(recipe: Recipe, tokenizer, prompt: str, history: list[dict] | None = None) -> str:
    """The prompt as the model saw its training data: the Alpaca prompt for instruction data, the chat template for
    chat and ShareGPT data (with the conversation so far), the text as given for text and completion data."""
    from runners.examples import ALPACA_PROMPT
    fmt = recipe.data.format
    if fmt == "instruction":
        return ALPACA_PROMPT.format(instruction=prompt)
    if fmt in ("chat", "sharegpt") and tokenizer.chat_template is not None:
        messages = (history or []) + [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt


@torch.no_grad()
def generate_text(model, tokenizer, text: str, max_new_tokens: int, device: torch.device | None = None) -> str:
    """Greedy continuation of `text` (special tokens as the training data had them: bos first, no others added)."""
    device = device or next(model.parameters()).device
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    ids = torch.tensor([bos + tokenizer(text, add_special_tokens=False)["input_ids"]], device=device)
    max_new_tokens = within_position_limit(ids.shape[1], max_new_tokens, getattr(model.config, "max_position_embeddings", None))
    was_training = model.training
    model.eval()
    try:
        with torch.compiler.set_stance("force_eager"):
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, use_cache=True, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
    finally:
        model.train(was_training)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@torch.no_grad()
def generate_batch(model, tokenizer, prompts: list[list[int]], max_new_tokens: int) -> list[str]:
    """Greedy continuations of token-id prompts (special tokens included as given), generated together: the prompts
    are left-padded (the attention mask hides the padding), and each continuation stops at eos or max_new_tokens."""
    if not prompts:
        return []
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    longest = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (longest - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device=device)
    max_new_tokens = within_position_limit(longest, max_new_tokens, getattr(model.config, "max_position_embeddings", None))
    was_training = model.training
    model.eval()
    try:
        with torch.compiler.set_stance("force_eager"):
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 use_cache=True, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    finally:
        model.train(was_training)
    return tokenizer.batch_decode(out[:, longest:], skip_special_tokens=True)


def within_position_limit(prompt_tokens: int, max_new_tokens: int, limit: int | None) -> int:
    """New tokens that fit the model's position limit (max_position_embeddings) after the prompt: generation past it
    runs on positions the model never learned, so it is capped, with a notice; a prompt that fills the limit is
    refused in one line."""
    if limit is None or prompt_tokens + max_new_tokens <= limit:
        return max_new_tokens
    if prompt_tokens >= limit:
        raise AdvisorError(f"the prompt has {prompt_tokens} tokens, at or past the model's position limit "
                           f"(max_position_embeddings {limit}): shorten it")
    from runners.model import notice
    notice(f"generation capped at {limit - prompt_tokens} new tokens (asked {max_new_tokens}): the prompt's "
           f"{prompt_tokens} tokens and the model's position limit {limit} (max_position_embeddings)")
    return limit - prompt_tokens


def write_samples(model, tokenizer, recipe: Recipe, step: int, out_dir: Path, tracker=None, write: bool = True) -> list[dict]:
    """Generate from every eval.samples prompt; rank 0 appends them to RUN/samples.jsonl and sends them to the trackers."""
    from runners.io import append_jsonl
    rows = [{"step": step, "prompt": p,
             "completion": generate_text(model, tokenizer, format_prompt(recipe, tokenizer, p), recipe.eval.max_new_tokens)}
            for p in recipe.eval.samples]
    if write:
        for row in rows:
            append_jsonl(Path(out_dir) / "samples.jsonl", row)
        if tracker is not None and rows:
            tracker.text(step, "eval/samples", "\n\n".join(f"### {r['prompt']}\n{r['completion']}" for r in rows))
    return rows


def load_run_model(run_dir: Path):
    """A finished run's base model with its adapter (PeftModel), its tokenizer and recipe, on the CPU or GPU 0."""
    from peft import PeftModel

    from runners.hostmem import detach_from_checkpoint_file
    from runners.model import load_model
    from runners.environment import cache_root
    from runners.tokenizer import load_tokenizer
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.resolved.yaml").is_file():
        raise AdvisorError(f"{run_dir}: not a run directory (no recipe.resolved.yaml)")
    if not (run_dir / "adapter" / "adapter_config.json").is_file():
        raise AdvisorError(f"{run_dir}: no trained adapter yet (adapter/ is written when the run completes)")
    recipe = load_recipe(run_dir / "recipe.resolved.yaml")
    adapter_problem(run_dir / "adapter")  # before the base model is loaded: a damaged adapter is named, in one line
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    base = load_model(recipe, device, cache_root(), recipe.train.seed)
    detach_from_checkpoint_file(base, device.type, recipe.quant is not None)  # as runners.run does: a chat session lives long
    try:
        model = PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # peft's and safetensors' refusals of a damaged adapter
        raise AdvisorError(f"{run_dir / 'adapter'}: the adapter does not load onto its base "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}); "
                           "it was changed after the run: train it again with --overwrite") from None
    return model, load_tokenizer(recipe), recipe


def adapter_problem(adapter_dir: Path) -> None:
    """adapter_config.json is a JSON object and adapter_model.safetensors a readable safetensors file, or one line
    naming the file."""
    from safetensors import safe_open
    config = Path(adapter_dir) / "adapter_config.json"
    try:
        if not isinstance(json.loads(config.read_text()), dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AdvisorError(f"{config}: not a readable adapter config ({str(exc).splitlines()[0][:100]}); it was "
                           "changed after the run: train it again with --overwrite") from None
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    try:
        with safe_open(str(weights), framework="pt") as f:
            f.keys()
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own SafetensorError (and OSError when absent)
        raise AdvisorError(f"{weights}: not a readable safetensors file ({str(exc).splitlines()[0][:100]}); it was "
                           "changed after the run: train it again with --overwrite") from None


def generate_for_run(run_dir: Path, prompts: list[str], max_new_tokens: int | None = None) -> list[dict]:
    """`advisor generate`: each prompt, formatted as the run's data, and the adapter's greedy completion."""
    from runners.environment import quiet_libraries
    quiet_libraries()
    model, tokenizer, recipe = load_run_model(run_dir)
    tokens = max_new_tokens or recipe.eval.max_new_tokens
    return [{"prompt": p, "completion": generate_text(model, tokenizer, format_prompt(recipe, tokenizer, p), tokens)}
            for p in prompts]


def chat_loop(run_dir: Path, read, write, max_new_tokens: int | None = None) -> None:
    """`advisor chat`: read a line, answer it; chat-format runs keep the conversation, others answer each line alone.
    An empty line or end of input stops."""
    from runners.environment import quiet_libraries
    quiet_libraries()
    model, tokenizer, recipe = load_run_model(run_dir)
    tokens = max_new_tokens or recipe.eval.max_new_tokens
    history: list[dict] = []
    keeps_history = recipe.data.format in ("chat", "sharegpt")
    while True:
        line = read()
        if not line or not line.strip():
            return
        answer = generate_text(model, tokenizer, format_prompt(recipe, tokenizer, line.strip(), history), tokens)
        write(answer)
        if keeps_history:
            history += [{"role": "user", "content": line.strip()}, {"role": "assistant", "content": answer}]


def read_samples(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "samples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
