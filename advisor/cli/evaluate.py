"""`advisor eval`: did the training pay off? A run's base model and base + adapter on its held-out rows."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from advisor.cli.app import app
from advisor.cli.options import JsonFlag, _emit_json, _finite, _number
from advisor.core.errors import AdvisorError


@app.command(name="eval")
def eval_(
    run_dir: Annotated[Optional[Path], typer.Argument(help="Run directory (holds recipe.resolved.yaml and adapter/).")] = None,
    model: Annotated[Optional[str], typer.Option(help="A base model alone (hub id or local folder), on --data.")] = None,
    recipe: Annotated[Optional[Path], typer.Option(help="A recipe's base model alone, on its held-out rows or --data.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Eval file in the run's (or --format's) data format, instead of "
                                                      "the held-out rows.")] = None,
    data_format: Annotated[Optional[str], typer.Option("--format", help="With --model: the --data file's format "
                                                                        "(instruction, the default; completion, chat, "
                                                                        "sharegpt, text).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for eval.json and eval/rows.jsonl (default: RUN; without "
                                                     "RUN or --out nothing is written).")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(parser=_number(integer=True, upper=4096), help="Tokens per "
                                                          "answer (default: the recipe's eval.max_new_tokens).")] = None,
    batch_size: Annotated[int, typer.Option(parser=_number(integer=True, upper=4096), help="Prompts generated together.")] = 8,
    tasks: Annotated[Optional[str], typer.Option(help="lm-evaluation-harness tasks, comma-separated, on the base and "
                                                      "base + adapter (pip install 'rightsize[eval]'); rightsize_tiny "
                                                      "ships with Rightsize.")] = None,
    tasks_dir: Annotated[Optional[Path], typer.Option(help="With --tasks: a folder of lm-eval task YAMLs to find "
                                                           "them in too.")] = None,
    limit: Annotated[Optional[int], typer.Option(parser=_number(integer=True), help="With --tasks: the first "
                                                 "N examples of each task (default: all).")] = None,
    as_json: JsonFlag = False,
):
    """Base against base + adapter on held-out data: loss, perplexity, and greedy answers scored against the
    references (exact, normalised match, token F1); with --tasks, lm-evaluation-harness tasks on both; writes
    RUN/eval.json and RUN/eval/rows.jsonl, reused while the adapter, data, tasks and settings are unchanged."""
    from advisor.render.compare import render_eval
    if tasks is None and (tasks_dir is not None or limit is not None):
        raise AdvisorError(f"{'--tasks-dir' if tasks_dir is not None else '--limit'} applies with --tasks NAMES",
                           flag="--tasks-dir" if tasks_dir is not None else "--limit")
    try:
        from runners.evaluate import EvalRequest, evaluate_request
        from runners.lm_eval_tasks import TaskRequest, parse_task_names
    except ImportError as exc:
        raise AdvisorError(f"advisor eval needs the ML stack ({exc.name} is missing): pip install 'rightsize[runner]'") from None
    task_request = TaskRequest(parse_task_names(tasks), tasks_dir, limit) if tasks is not None else None
    result = evaluate_request(EvalRequest(run_dir=run_dir, model=model, recipe_path=recipe, data_path=data,
                                          data_format=data_format, out_dir=out, max_new_tokens=max_new_tokens,
                                          batch_size=batch_size, tasks=task_request))
    task_json = result.tasks.to_json() if result.tasks is not None else {}
    if as_json:
        _emit_json(_finite(result.report.model_dump(mode="json") | task_json | {
            "cached": result.cached, "written": str(result.written) if result.written else None,
            "loss_delta": result.report.loss_delta, "exact_match_delta": result.report.exact_match_delta}))
    else:
        typer.echo(render_eval(result.report, result.cached, result.written))
        if result.tasks is not None:
            typer.echo(_render_tasks(result.tasks, result.report.adapter is not None))


def _render_tasks(results, with_adapter: bool) -> str:
    """The lm-eval tasks: one row per task and metric, base beside base + adapter and the delta."""
    from advisor.render import table
    fmt = lambda x, spec=".4f": "-" if x is None else format(x, spec)  # noqa: E731
    rows = [[task, metric, fmt(m.base)] + ([fmt(m.adapter), fmt(m.delta, "+.4f")] if with_adapter else [])
            for task, metrics in results.scores.items() for metric, m in metrics.items()]
    headers = ["lm-eval task", "metric", "base"] + (["base + adapter", "delta"] if with_adapter else [])
    limit = f", first {results.limit} example(s) per task" if results.limit else ""
    return "\n".join([table(headers, rows), f"(lm-eval {results.lm_eval}{limit}, {results.seconds:.1f} s)"])

