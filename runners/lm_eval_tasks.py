"""`advisor eval --tasks`: benchmark tasks through lm-evaluation-harness on the base and on base + adapter.

- lm-eval's Python API: a TaskManager finds the tasks (ours in runners/eval_tasks, a --tasks-dir, then lm-eval's
  own), simple_evaluate runs them on HFLM wrapping the model `advisor eval` already loaded (the adapter on top, the
  base through peft's disable_adapter, a 4-bit base as the recipe loads it): one copy in memory.
- Tasks are checked and their datasets loaded before the model is: a name lm-eval does not know, or a dataset not in
  the local cache while offline, is one line naming it.
- Results are kept per task and metric (lm-eval's `metric,filter` keys, `,none` dropped), base beside adapter.
"""

import difflib
import hashlib
import json
import logging
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, cast

from advisor.core.errors import AdvisorError

TASKS_DIR = Path(__file__).with_name("eval_tasks")  # tasks shipped with Rightsize (rightsize_tiny), found by name
INSTALL_HINT = "--tasks needs lm-evaluation-harness: pip install 'rightsize[eval]'"
# Indexing lm-eval's own ~15,000 task files takes 10-15 s, so names found in ours or --tasks-dir skip it.
CLOSE_MATCHES = 3  # names suggested for an unknown task


@dataclass(frozen=True)
class TaskRequest:
    """What --tasks asked: lm-eval task (or group, or tag) names, an extra folder of task YAMLs, examples per task."""

    names: tuple[str, ...]
    tasks_dir: Path | None = None
    limit: int | None = None  # lm-eval's --limit: the first N examples of each task; None: all


@dataclass(frozen=True)
class TaskMetric:
    """One metric of one task: the base's value and base + adapter's (None for a base model alone)."""

    base: float | None
    adapter: float | None

    @property
    def delta(self) -> float | None:
        """Adapter minus base (whether higher is better depends on the metric: lm-eval's higher_is_better)."""
        return None if self.base is None or self.adapter is None else self.adapter - self.base


@dataclass(frozen=True)
class TaskResults:
    """eval.json's `tasks` ({task: {metric: {base, adapter, delta}}}) and `tasks_settings` (what they depend on)."""

    key: str
    names: tuple[str, ...]
    limit: int | None
    lm_eval: str  # lm-eval's version
    scores: dict[str, dict[str, TaskMetric]]
    seconds: float

    def to_json(self) -> dict:
        return {"tasks": {task: {metric: {"base": m.base, "adapter": m.adapter, "delta": m.delta}
                                 for metric, m in metrics.items()} for task, metrics in self.scores.items()},
                "tasks_settings": {"key": self.key, "names": list(self.names), "limit": self.limit,
                                   "lm_eval": self.lm_eval, "seconds": self.seconds}}

    @classmethod
    def from_json(cls, data: dict) -> "TaskResults | None":
        """The tasks an eval.json holds, or None where it holds none (or not in this form)."""
        try:
            settings, tasks = data["tasks_settings"], data["tasks"]
            scores = {task: {metric: TaskMetric(m["base"], m["adapter"]) for metric, m in metrics.items()}
                      for task, metrics in tasks.items()}
            return cls(settings["key"], tuple(settings["names"]), settings["limit"], settings["lm_eval"], scores,
                       float(settings["seconds"]))
        except (KeyError, TypeError, AttributeError, ValueError):
            return None


def parse_task_names(text: str) -> tuple[str, ...]:
    """`--tasks a,b` as names, in order, each once."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise AdvisorError("--tasks: give task names separated by commas (e.g. --tasks rightsize_tiny)", flag="--tasks")
    return names


def harness_version() -> str:
    """lm-eval's installed version (read from its metadata: nothing imported), or the install hint as an error."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        version("lm_eval")
        import lm_eval  # noqa: F401  (installed but broken counts as missing)
    except (PackageNotFoundError, ImportError):
        raise AdvisorError(INSTALL_HINT, flag="--tasks") from None
    return version("lm_eval")


def tasks_key(request: TaskRequest, model_key: list) -> str:
    """What the tasks' results depend on: the model, base and adapter (model_key), the task names and limit, the
    task files (ours and --tasks-dir, by content) and lm-eval's version (its own tasks)."""
    digest = hashlib.sha256()
    for folder in [TASKS_DIR] + ([Path(request.tasks_dir)] if request.tasks_dir is not None else []):
        for f in sorted(folder.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                digest.update(str(f.relative_to(folder)).encode() + hashlib.sha256(f.read_bytes()).digest())
    settings = [model_key, list(request.names), request.limit, harness_version(), digest.hexdigest()]
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]


def load_tasks(request: TaskRequest) -> tuple[Any, list[Any]]:
    """The TaskManager and the loaded tasks (a group as its Group, so lm-eval reports its aggregate too; a tag as its
    tasks), their datasets read; one line for an unknown name or a dataset that cannot be loaded."""
    harness_version()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its warnings repeat per task; errors still show
    if request.tasks_dir is not None and not Path(request.tasks_dir).is_dir():
        raise AdvisorError(f"--tasks-dir {request.tasks_dir}: no such folder", flag="--tasks-dir")
    from lm_eval.tasks import TaskManager
    ours = [TASKS_DIR] + ([Path(request.tasks_dir)] if request.tasks_dir else [])
    manager = TaskManager(include_path=[str(p) for p in ours], include_defaults=False)
    if not all(name in manager.all_tasks for name in request.names):
        manager = TaskManager(include_path=[str(p) for p in ours])  # lm-eval's own tasks too
    for name in request.names:
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=CLOSE_MATCHES)
            raise AdvisorError(f"--tasks {name}: no such lm-eval task, group or tag"
                               + (f" (close: {', '.join(close)})" if close else "")
                               + f"; ours are in {TASKS_DIR}, add a folder of task YAMLs with --tasks-dir", flag="--tasks")
    tasks: list[Any] = []
    seen: dict[str, str] = {}  # each task once: lm-eval refuses a task named twice (alone and in a group)
    for name in request.names:
        try:
            loaded = manager.load([name])
        except Exception as exc:  # noqa: BLE001  (datasets raises many kinds; every one is this task's data)
            raise AdvisorError(_dataset_problem(manager, name, exc), flag="--tasks") from None
        groups, leaves = loaded.get("groups", {}), loaded.get("tasks", {})
        for task in leaves:
            if task in seen:
                raise AdvisorError(f"--tasks: {task} is in both {seen[task]} and {name}: name it once", flag="--tasks")
            seen[task] = name
        tasks += [groups[name]] if name in groups else list(leaves.values())
    return manager, tasks


def _dataset_problem(manager, name: str, exc: Exception) -> str:
    """One line: the task, its dataset, and why it did not load (offline: not in the local cache)."""
    entry = manager.task_index.get(name)
    cfg = (entry.cfg if entry is not None else None) or {}
    dataset = " ".join(str(cfg[k]) for k in ("dataset_path", "dataset_name") if cfg.get(k)) or "its data"
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
    if offline:
        return f"--tasks {name}: dataset {dataset} is not in the local datasets cache and the hub is offline " \
               f"(HF_DATASETS_OFFLINE/HF_HUB_OFFLINE): load it once online ({reason})"
    return f"--tasks {name}: dataset {dataset} did not load: {reason}"


def run_tasks(model, tokenizer, manager, tasks: list[Any], has_adapter: bool, limit: int | None,
              batch_size: int, seed: int) -> dict[str, dict[str, TaskMetric]]:
    """Every task on the base (the adapter disabled) and on base + adapter; {task: {metric: TaskMetric}}."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    # lm-eval's decorators (positional_deprecated, register_model) hide both signatures from type checkers
    evaluate, wrap = cast(Callable[..., Any], simple_evaluate), cast(Callable[..., Any], HFLM)
    lm = wrap(pretrained=model, tokenizer=bos_first(tokenizer), batch_size=batch_size)
    runs = [("base", model.disable_adapter() if has_adapter else nullcontext())]
    if has_adapter:
        runs.append(("adapter", nullcontext()))
    values: dict[str, dict[str, dict[str, float | None]]] = {}
    for name, context in runs:
        with context:
            out = evaluate(model=lm, tasks=tasks, limit=limit, task_manager=manager, bootstrap_iters=0,
                           log_samples=False, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                           fewshot_random_seed=seed)
        assert out is not None  # None only on ranks other than 0; this is one process
        values[name] = _metrics(out["results"])
    base, adapter = values["base"], values.get("adapter", {})
    return {task: {metric: TaskMetric(v, adapter.get(task, {}).get(metric)) for metric, v in metrics.items()}
            for task, metrics in base.items()}


def _metrics(results: dict) -> dict[str, dict[str, float | None]]:
    """lm-eval's results as {task: {metric: value}}: `metric,filter` keys (`,none` dropped), no stderr, no labels."""
    out: dict[str, dict[str, float | None]] = {}
    for task, row in results.items():
        out[task] = {key.removesuffix(",none"): float(v) if math.isfinite(v) else None for key, v in row.items()
                     if "," in key and "_stderr" not in key and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return out


def bos_first(tokenizer):
    """The tokenizer as training uses it: the bos token first (runners.examples prepends it). lm-eval encodes with
    the tokenizer's own special tokens, which for Rightsize's byte tokenizer add none, so a fast tokenizer with a bos
    token that does not add it gets a copy that does."""
    bos = tokenizer.bos_token_id
    if bos is None or not getattr(tokenizer, "is_fast", False) or tokenizer("a")["input_ids"][:1] == [bos]:
        return tokenizer
    import copy

    from tokenizers import processors
    tok = copy.deepcopy(tokenizer)
    token = tokenizer.bos_token
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{token} $A", pair=f"{token} $A $B", special_tokens=[(token, bos)])
    return tok
