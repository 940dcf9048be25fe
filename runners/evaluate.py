"""`advisor eval`: the base model and base + adapter side by side on held-out rows — loss and perplexity under the
training loss mask, and greedy answers scored against the references — written to RUN/eval.json and
RUN/eval/rows.jsonl, and reused while the adapter, the data and the settings are unchanged.

- The rows are the run's own eval rows (runners.data.build_dataset: its val_fraction split or data.eval_path, packed
  as in training), or a --data file read and rendered in the run's format; losses come from runners.train.evaluate.
- An example's reference answer is its first run of target tokens (instruction and completion data: the response),
  its prompt every token before it, so each model answers the exact tokens training saw before the response.
- The base is the same loaded model with its adapter disabled (peft's disable_adapter): one copy in memory.
- `--tasks`: lm-evaluation-harness tasks on the same loaded model (runners.lm_eval_tasks), kept in eval.json's
  `tasks` under their own key: new tasks or a new --limit run only the tasks, the held-out eval stays cached.
"""

import fcntl
import hashlib
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Callable

import torch

from advisor.core.errors import AdvisorError
from advisor.formulas.quality import exact_match, mean_score, normalized_match, perplexity_from_loss, token_f1
from advisor.measure.runreport import EVAL_FILE, EVAL_FORMAT, EvalReport, QualityScores
from advisor.plan.recipe import DataSection, Recipe, load_recipe
from runners.data import PackedRows, TokenizedData
from runners.data import loss_tokens as count_loss_tokens
from runners.examples import IGNORE_INDEX
from runners.lm_eval_tasks import TaskRequest, TaskResults, harness_version, load_tasks, run_tasks, tasks_key

ROWS_DIR, ROWS_FILE = "eval", "rows.jsonl"  # RUN/eval/rows.jsonl: one line per generated example
# Prompts generated together: a batch's KV cache is batch x (prompt + new tokens) positions, so memory stays bounded
# whatever the number of rows; 8 keeps the left padding short when prompt lengths differ.
GENERATE_BATCH = 8
# Formats whose examples end in one reference answer (the response or completion); text has none, and chat and
# ShareGPT conversations hold several answers that depend on the turns before them.
REFERENCE_FORMATS = ("instruction", "completion")


@dataclass(frozen=True)
class EvalRequest:
    """What `advisor eval` was asked: a run (base + its adapter), or a base model alone (--model or --recipe);
    its held-out rows or a --data file; where eval.json goes (the run, or --out; None: printed only)."""

    run_dir: Path | None = None
    model: str | None = None
    recipe_path: Path | None = None
    data_path: Path | None = None
    data_format: str | None = None  # with --model: the --data file's format (default instruction)
    out_dir: Path | None = None
    max_new_tokens: int | None = None
    batch_size: int = GENERATE_BATCH
    tasks: TaskRequest | None = None  # --tasks: lm-eval tasks on the same models


@dataclass(frozen=True)
class Example:
    """One held-out example as training saw it: its prompt tokens and, where it has one, its reference answer."""

    prompt_ids: list[int]
    reference_ids: list[int]


@dataclass
class EvalResult:
    report: EvalReport
    rows: list[dict]
    cached: bool
    written: Path | None
    tasks: TaskResults | None = None


def evaluate_request(request: EvalRequest) -> EvalResult:
    """Resolve the request, reuse a matching eval.json, or evaluate (holding the run's lock) and write the result;
    with --tasks, the held-out eval and the tasks are each reused while their own key matches."""
    recipe, adapter, source = _resolve(request)
    out_dir = request.out_dir or request.run_dir
    data = recipe.data
    max_new_tokens = request.max_new_tokens or recipe.eval.max_new_tokens
    key = _cache_key(recipe, adapter, source, max_new_tokens, request.batch_size)
    task_key = tasks_key(request.tasks, _model_key(recipe, adapter, request.batch_size)) if request.tasks else None
    with RunLock(request.run_dir):
        cached = _cached(Path(out_dir), key) if out_dir is not None else None
        if cached is not None and (task_key is None or (cached.tasks is not None and cached.tasks.key == task_key)):
            return cached
        if out_dir is not None:
            _check_ours(Path(out_dir))  # before minutes of work, not after
        harness = load_tasks(request.tasks) if request.tasks else None  # names and datasets, before the model
        load = cache(lambda: _load(recipe, adapter))  # loaded once, on first use, for the held-out eval and the tasks
        if cached is None:
            start = time.perf_counter()
            report, rows = _evaluate(recipe, adapter, data, source, key, max_new_tokens, request.batch_size, load)
            report = report.model_copy(update={"seconds": time.perf_counter() - start})
        else:
            report, rows = cached.report, cached.rows
        tasks = None
        if request.tasks and harness is not None and task_key is not None:
            tasks = _run_tasks(request.tasks, harness, task_key, recipe, adapter, load, request.batch_size)
        written = _write(Path(out_dir), report, rows, tasks) if out_dir is not None else None
    return EvalResult(report, rows, False, written, tasks)


# --- what is evaluated ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """The eval rows' origin: the run's held-out rows, or a --data file, with its content hash."""

    description: str
    data_sha256: str
    file: Path | None  # the --data file; None: the recipe's own held-out rows


def _resolve(request: EvalRequest) -> tuple[Recipe, Path | None, Source]:
    """The recipe to load the base from, the adapter folder (None for a base alone) and the data."""
    if sum(x is not None for x in (request.run_dir, request.model, request.recipe_path)) != 1:
        raise AdvisorError("give one of RUN (a run directory), --model BASE or --recipe RECIPE")
    if request.data_format is not None and request.model is None:
        raise AdvisorError("--format applies with --model: a run or a recipe reads --data in its own data.format",
                           flag="--format")
    adapter = None
    if request.run_dir is not None:
        run = Path(request.run_dir)
        if not (run / "recipe.resolved.yaml").is_file():
            raise AdvisorError(f"{run}: not a run directory (no recipe.resolved.yaml)")
        adapter = run / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            raise AdvisorError(f"{run}: no trained adapter (adapter/ is written when the run completes): nothing to "
                               f"compare with the base; evaluate the base alone with --recipe {run / 'recipe.resolved.yaml'}")
        recipe = load_recipe(run / "recipe.resolved.yaml")
    elif request.recipe_path is not None:
        recipe = load_recipe(request.recipe_path)
    else:
        if request.data_path is None:
            raise AdvisorError("--model needs --data FILE: a base model alone has no held-out split")
        recipe = _base_recipe(str(request.model), request.data_path, request.data_format or "instruction")
    if request.data_path is not None:
        path = Path(request.data_path).expanduser().resolve()
        if not path.exists():
            raise AdvisorError(f"--data {request.data_path}: no such file or directory", flag="--data")
        data = recipe.data.model_copy(update={"path": str(path), "hub": False, "mix": (), "eval_path": None,
                                              "split": "train", "max_examples": None})
        recipe = recipe.model_copy(update={"data": data})
        return recipe, adapter, Source(f"--data {request.data_path}", _sha256([path]), path)
    from runners.datasources import source_files
    d = recipe.data
    held_out = f"data.eval_path {d.eval_path}" if d.eval_path else f"the held-out {d.val_fraction:g} of data.path {d.path}"
    return recipe, adapter, Source(held_out, _sha256(source_files(d)), None)


def _base_recipe(model: str, data_path: Path, data_format: str) -> Recipe:
    """A recipe holding only what evaluating a hub or local model needs: the model and the data's format."""
    from pydantic import ValidationError

    from advisor.plan.recipe import describe_validation_error
    try:
        return Recipe.model_validate({"name": "eval", "model": {"name": model},
                                      "data": {"path": str(data_path), "format": data_format}})
    except ValidationError as exc:
        raise AdvisorError(describe_validation_error(exc, "--model")) from None


def _sha256(files: list[Path]) -> str:
    from runners.environment import cache_root
    from runners.fingerprint import data_sha256
    digest = hashlib.sha256()
    for f in files:
        digest.update(data_sha256(f, cache_root()).encode())
    return digest.hexdigest()


def _adapter_sha256(adapter: Path | None) -> str | None:
    """The adapter's content: its config and weights (a retrained adapter in the same folder voids the cache)."""
    if adapter is None:
        return None
    from runners.fingerprint import file_sha256
    return hashlib.sha256("".join(file_sha256(f) for f in sorted(adapter.glob("adapter_*")) if f.is_file()).encode()).hexdigest()


def _cache_key(recipe: Recipe, adapter: Path | None, source: Source, max_new_tokens: int, batch_size: int) -> str:
    """What eval.json depends on: the format, the model and data settings, the adapter's and the data's content,
    the generation settings."""
    settings = [EVAL_FORMAT, recipe.model.model_dump(mode="json"), recipe.quant.model_dump(mode="json") if recipe.quant
                else None, recipe.data.model_dump(mode="json", exclude={"path", "eval_path", "mix"}), recipe.train.seed,
                _adapter_sha256(adapter), source.description, source.data_sha256, max_new_tokens, batch_size]
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]


def _model_key(recipe: Recipe, adapter: Path | None, batch_size: int) -> list:
    """What a task's scores depend on besides the task: the model as loaded, the adapter's content, the batching."""
    return [EVAL_FORMAT, recipe.model.model_dump(mode="json"),
            recipe.quant.model_dump(mode="json") if recipe.quant else None, recipe.train.seed,
            _adapter_sha256(adapter), batch_size]


def _run_tasks(request: TaskRequest, harness: tuple[Any, list[Any]], key: str, recipe: Recipe,
               adapter: Path | None, load: Callable[[], tuple[Any, torch.device]], batch_size: int) -> TaskResults:
    from runners.environment import quiet_libraries
    from runners.tokenizer import load_tokenizer
    quiet_libraries()
    manager, tasks = harness
    model, _ = load()
    _progress(f"lm-eval: {', '.join(request.names)} on the base" + (" and base + adapter" if adapter else "")
              + (f", first {request.limit} example(s) each" if request.limit else ""))
    start = time.perf_counter()
    scores = run_tasks(model, load_tokenizer(recipe), manager, tasks, adapter is not None, request.limit, batch_size,
                       recipe.train.seed)
    return TaskResults(key, request.names, request.limit, harness_version(), scores, time.perf_counter() - start)


# --- the run's lock and the cache --------------------------------------------------------------------------------

class RunLock:
    """A shared flock on the run's LOCK while evaluating: refused while a run or resume holds it (training), and a
    resume cannot start meanwhile. A finished run has no lock file, and none is created (eval writes only eval*)."""

    def __init__(self, run_dir: Path | None):
        self.fd = None
        if run_dir is None:
            return
        from runners.rundir import LOCK
        lock = Path(run_dir) / LOCK
        if not lock.is_file():
            return
        self.fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            raise AdvisorError(f"{run_dir} is training ({holder} holds {LOCK}): evaluate it when the run has "
                               "finished") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def _cached(out_dir: Path, key: str) -> EvalResult | None:
    """The eval.json in out_dir and its rows, when they were written for this key."""
    from advisor.measure.runreport import load_eval
    from runners.io import read_jsonl
    report = load_eval(out_dir)
    rows_file = out_dir / ROWS_DIR / ROWS_FILE
    if report is None or report.key != key or not rows_file.is_file():
        return None
    tasks = TaskResults.from_json(json.loads((out_dir / EVAL_FILE).read_text()))  # beside the report's own keys
    return EvalResult(report, read_jsonl(rows_file), True, out_dir / EVAL_FILE, tasks)


def _check_ours(out_dir: Path) -> None:
    """eval.json and eval/rows.jsonl are written only where absent or written by advisor eval before."""
    target = out_dir / EVAL_FILE
    if target.exists():
        try:
            ours = str(json.loads(target.read_text()).get("format", "")).startswith("rightsize-eval-")
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise AdvisorError(f"{target} exists and was not written by advisor eval: move it, or choose another --out")
    rows = out_dir / ROWS_DIR
    if rows.exists() and (not rows.is_dir() or any(p.name != ROWS_FILE and not p.name.startswith(f".{ROWS_FILE}.")
                                                   for p in rows.iterdir())):
        raise AdvisorError(f"{rows} holds files advisor eval did not write: move them, or choose another --out")


def _write(out_dir: Path, report: EvalReport, rows: list[dict], tasks: TaskResults | None) -> Path:
    """rows.jsonl, then eval.json (atomically, last: an eval.json always describes whole rows), with the tasks'
    results where --tasks ran."""
    from runners.io import atomic_write_json, atomic_write_text
    from runners.rundir import claim, read_marker
    _check_ours(out_dir)
    if read_marker(out_dir) is not None:  # a run folder: recorded in its manifest, so --overwrite knows them as its own
        claim(out_dir, *(name for name in (EVAL_FILE, ROWS_DIR) if not (out_dir / name).exists()))
    atomic_write_text(out_dir / ROWS_DIR / ROWS_FILE, "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))
    atomic_write_json(out_dir / EVAL_FILE, report.model_dump(mode="json") | (tasks.to_json() if tasks else {}))
    return out_dir / EVAL_FILE


# --- the evaluation ----------------------------------------------------------------------------------------------

def _progress(message: str) -> None:
    print(f"eval: {message}", file=sys.stderr, flush=True)


def _evaluate(recipe: Recipe, adapter: Path | None, data: DataSection, source: Source, key: str,
              max_new_tokens: int, batch_size: int,
              load: Callable[[], tuple[Any, torch.device]]) -> tuple[EvalReport, list[dict]]:
    from runners.environment import quiet_libraries
    from runners.tokenizer import load_tokenizer
    from runners.train import seed_everything
    quiet_libraries()
    seed_everything(recipe.train.seed)
    tokenizer = load_tokenizer(recipe)
    rows = _eval_rows(recipe, tokenizer, source)
    if len(rows) == 0:
        raise AdvisorError(f"{source.description}: no held-out rows (data.val_fraction 0 and no data.eval_path): "
                           "give --data FILE")
    examples = split_examples(rows)
    note = _generation_note(data)
    model, device = load()
    # the base: the same model with its adapter switched off for the block (peft's disable_adapter)
    models = [("base", model.disable_adapter() if adapter is not None else nullcontext())]
    if adapter is not None:
        models.append(("adapter", nullcontext()))
    scores: dict[str, QualityScores] = {}
    answers: dict[str, list[str]] = {}
    loss_tokens = count_loss_tokens(rows.rows())
    with_reference = [e for e in examples if e.reference_ids] if note is None else []
    for name, context in models:
        with context:
            _progress(f"{name}: loss on {len(examples)} example(s), {loss_tokens:,} target tokens")
            loss = _mean_loss(model, rows, recipe, tokenizer, device)
            answers[name] = _answers(model, tokenizer, with_reference, max_new_tokens, batch_size, name)
        scores[name] = _scores(loss, answers[name], with_reference, tokenizer)
    per_row = _per_row(with_reference, answers, tokenizer)
    report = EvalReport(key=key, model=_model_name(recipe), adapter_path=str(adapter) if adapter else None,
                        adapter_sha256=_adapter_sha256(adapter), data=source.description, data_sha256=source.data_sha256,
                        examples=len(examples), loss_tokens=loss_tokens, generated=len(with_reference),
                        generation_note=note or (None if with_reference else "no example has a target token"),
                        max_new_tokens=max_new_tokens, batch_size=batch_size, seed=recipe.train.seed,
                        base=scores["base"], adapter=scores.get("adapter"), seconds=0.0, device=str(device))
    return report, per_row


def _model_name(recipe: Recipe) -> str:
    return recipe.model.name or f"{recipe.name} (inline {recipe.model.arch.model_type if recipe.model.arch else 'model'})"


def _generation_note(data: DataSection) -> str | None:
    """Why the rows carry no reference answer to generate against, or None when they do."""
    if data.format not in REFERENCE_FORMATS:
        return f"data.format {data.format}: no single reference answer per example (answers are scored for " \
               f"{' and '.join(REFERENCE_FORMATS)} data); loss only"
    if data.train_on_prompt:
        return "data.train_on_prompt: the loss mask covers the prompt, so it does not mark the answer; loss only"
    return None


def _eval_rows(recipe: Recipe, tokenizer, source: Source) -> PackedRows:
    """The run's eval rows (build_dataset: the split and packing training used), or the --data file's rows."""
    from runners.environment import cache_root
    if source.file is None:
        from runners.prepare import build_dataset
        return build_dataset(recipe, tokenizer, cache_root()).val
    return read_eval_file(recipe.data, tokenizer)


def read_eval_file(data: DataSection, tokenizer) -> PackedRows:
    """Every row of a --data file, checked against the format (one line naming the file and line of the first bad
    row), rendered with the training loss mask and packed as training packs."""
    from runners.data import pack
    from runners.examples import clip_example, render_example
    from runners.rows import iter_rows, row_problem
    from runners.tokenizer import max_text_chars
    max_chars, rendered = max_text_chars(tokenizer, data.seq_len), []
    for where, example, problem in iter_rows(data):
        problem = problem or row_problem(example, data)
        if problem:
            raise AdvisorError(f"--data {data.path} {where}: {problem} (data.format {data.format})", flag="--data")
        assert isinstance(example, dict)  # row_problem refuses anything else
        rendered.append(render_example(clip_example(example, data, max_chars), data, tokenizer))
    if not rendered:
        raise AdvisorError(f"--data {data.path}: no examples (the file is empty)", flag="--data")
    return pack(rendered, data.seq_len, data.packing)


def split_examples(rows: PackedRows) -> list[Example]:
    """The examples packed into eval rows (each starts at position 0), each split at its first target token: the
    prompt before it, the reference answer its run of target tokens (what training taught it to answer)."""
    examples = []
    for row in rows.rows():
        ids, labels, positions = row["input_ids"].tolist(), row["labels"].tolist(), row["position_ids"].tolist()
        starts = [i for i, p in enumerate(positions) if p == 0] + [len(ids)]
        for start, end in zip(starts, starts[1:]):
            target = [i for i in range(start + 1, end) if labels[i] != IGNORE_INDEX]
            if not target:
                examples.append(Example(ids[start:end], []))
                continue
            first = target[0]
            stop = next((i for i in range(first, end) if labels[i] == IGNORE_INDEX), end)
            examples.append(Example(ids[start:first], ids[first:stop]))
    return examples


def _load(recipe: Recipe, adapter: Path | None) -> tuple[Any, torch.device]:
    """The base model (as training built it), with the adapter on top where there is one; CPU or GPU 0."""
    from runners.environment import cache_root
    from runners.model import load_model
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    _progress(f"loading {_model_name(recipe)}" + (f" + {adapter}" if adapter else "") + f" on {device}")
    model = load_model(recipe, device, cache_root(), recipe.train.seed)
    if adapter is not None:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, str(adapter))
    return model.eval(), device


def _mean_loss(model, rows: PackedRows, recipe: Recipe, tokenizer, device: torch.device) -> float | None:
    """Mean loss per target token, with the training loop's own eval (runners.train.evaluate) on these rows."""
    from runners.distributed import DistContext
    from runners.model import compute_dtype
    from runners.train import evaluate
    held_out = TokenizedData(train=rows, val=rows, train_tokens=0, examples=len(rows), cache_hit=False, cache_path=Path())
    ctx = DistContext(rank=0, local_rank=0, world_size=1, device=device)
    loss = evaluate(model, held_out, recipe, ctx, tokenizer.pad_token_id, compute_dtype(recipe, device))
    model.eval()
    return loss


def _answers(model, tokenizer, examples: list[Example], max_new_tokens: int, batch_size: int, name: str) -> list[str]:
    """Greedy answers to every example's prompt, batch by batch, with progress."""
    from runners.generate import generate_batch
    out: list[str] = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        out += generate_batch(model, tokenizer, [e.prompt_ids for e in batch], max_new_tokens)
        _progress(f"{name}: answered {len(out)}/{len(examples)}")
    return out


def _scores(loss: float | None, answers: list[str], examples: list[Example], tokenizer) -> QualityScores:
    references = [_text(tokenizer, e.reference_ids) for e in examples]
    pairs = list(zip(answers, references))
    perplexity = perplexity_from_loss(loss) if loss is not None else None
    return QualityScores(loss=loss, perplexity=perplexity if perplexity is not None and math.isfinite(perplexity) else None,
                         exact_match=mean_score(exact_match(a, r) for a, r in pairs),
                         normalized_match=mean_score(normalized_match(a, r) for a, r in pairs),
                         token_f1=mean_score(token_f1(a, r) for a, r in pairs))


def _text(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


def _per_row(examples: list[Example], answers: dict[str, list[str]], tokenizer) -> list[dict]:
    """One record per generated example: its prompt, reference, and each model's answer with its scores."""
    rows = []
    for i, example in enumerate(examples):
        reference = _text(tokenizer, example.reference_ids)
        row: dict = {"index": i, "prompt": _text(tokenizer, example.prompt_ids), "reference": reference}
        for name, texts in answers.items():
            answer = texts[i]
            row[name] = {"answer": answer, "exact_match": exact_match(answer, reference),
                         "normalized_match": normalized_match(answer, reference),
                         "token_f1": token_f1(answer, reference)}
        rows.append(row)
    return rows

