"""`advisor validate`, `run`, `compare` and `calibrate`: recipes and measured runs."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from advisor.catalog import load as catalog
from advisor.cli.app import app
from advisor.cli.options import JsonFlag, _calibration, _emit_json, _finite, _number, _refuse_overwriting_inputs
from advisor.core.errors import AdvisorError
from advisor.core.convert import to_json


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML.")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override key.path=value.")] = None,
):
    """Check a recipe without running it: everything `advisor run` checks before it loads a weight (schema,
    cross-field rules, the files it names, the model's architecture, installed trackers) and every row of every data
    source (training file, data.mix, data.eval_path, cached hub datasets) through the runner's own validator."""
    from advisor.plan.recipe import check_before_loading, load_recipe
    loaded = load_recipe(recipe, set_ or [])
    arch = check_before_loading(loaded, recipe)
    lines = _runner_checks(loaded)
    typer.echo(f"ok: {loaded.name} ({loaded.method}, {arch.name}, {loaded.world_size} process(es))")
    for line in lines:
        typer.echo(f"  {line}")


@app.command()
def prepare(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML.")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override key.path=value.")] = None,
    processes: Annotated[Optional[int], typer.Option(parser=_number(integer=True, upper=1024), help="Processes that tokenize (default: every core; one for small data).")] = None,
    json_out: JsonFlag = False,
):
    """Validate, tokenize and pack the recipe's data once, with every core, into the memory-mapped cache that
    `advisor run` opens (it prepares by itself when the cache is missing; this does it ahead, e.g. on a login node
    or before a multi-GPU job). A second call on unchanged data and settings finds the cache."""
    from advisor.plan.recipe import check_before_loading, load_recipe
    loaded = load_recipe(recipe, set_ or [])
    check_before_loading(loaded, recipe)
    try:
        from runners.launch import prepare_data  # the ML stack, as `advisor run`
    except ImportError as exc:
        raise AdvisorError(f"preparing data needs the ML stack ({exc.name} is missing): pip install 'rightsize[runner]'") from None
    data = prepare_data(loaded, processes)
    index = data.index
    if json_out:
        _emit_json({"cache": str(data.cache_path), "cache_hit": data.cache_hit, **index})
        return
    verb = "found prepared" if data.cache_hit else "prepared"
    typer.echo(f"{verb}: {index['train_tokens'] + index['val_tokens']:,} tokens ({index['train_rows']:,} training "
               f"rows, {index['val_rows']:,} eval rows) from {index['examples']:,} examples; "
               f"{index['bytes'] / 1e6:,.1f} MB at {data.cache_path}")
    typer.echo(f"  built in {index['seconds']:.1f} s with {index['processes']} process(es)"
               + (f", {index['tokens_per_second'] / 1e6:.2f}M tokens/s" if index.get("tokens_per_second") else ""))


def _runner_checks(loaded) -> list[str]:
    """The runner's checks that need no model or tokenizer (runners.rows.check_data on every data source, the
    trackers installed): lines to print, or one AdvisorError. Skipped, with a line saying so, without the ML stack's
    readers (Parquet, save_to_disk and hub data need them; JSONL, JSON and CSV do not)."""
    try:
        from runners.rows import check_data, data_notes
        from runners.tracking import check_trackers_installed
        check_trackers_installed(loaded)
        checks = check_data(loaded.data, loaded.train.seed)
    except ImportError as exc:
        return [f"data rows not checked: {exc.name} is missing (pip install 'rightsize[runner]')"]
    rows = [f"{c.source.label}: {len(c.good)} of {c.rows} rows valid" + ("" if c.source.is_eval else
            f", {len(c.picks)} used per epoch") for c in checks]
    return rows + [f"note: {note}" for note in data_notes(checks, loaded.data)]


@app.command(context_settings={"allow_extra_args": False})
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML.")],
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default runs/<recipe name>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run directory's last checkpoint.")] = False,
    resume_auto: Annotated[bool, typer.Option("--resume-auto", help="Start, continue or skip, as the run directory "
                                              "says: empty starts, this run continues from its checkpoint, a finished "
                                              "one exits 0 (already complete); another's folder or recipe is refused. "
                                              "For schedulers that requeue the same command.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run directory (only one Rightsize "
                                                              "wrote, after the new run's inputs have loaded).")] = False,
    allow_changes: Annotated[bool, typer.Option("--allow-changes", help="With --resume: continue although the recipe, "
                                                "overrides or data changed (recorded in report.json).")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override key.path=value, e.g. train.lr=1e-4.")] = None,
    nproc_per_node: Annotated[Optional[int], typer.Option(parser=_number(integer=True, upper=64), help="Processes per node (torchrun).")] = None,
    nnodes: Annotated[Optional[int], typer.Option(parser=_number(integer=True, upper=4096), help="Nodes (torchrun --nnodes).")] = None,
    node_rank: Annotated[Optional[int], typer.Option(parser=_number(integer=True, allow_zero=True, upper=4095), help="This node's rank.")] = None,
    rdzv_endpoint: Annotated[Optional[str], typer.Option(help="host:port of the rendezvous (torchrun).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Run even if the estimate says it will not fit.")] = False,
    calibration: Annotated[Optional[Path], typer.Option(help="Calibration file for the estimate.")] = None,
    gpu: Annotated[Optional[str], typer.Option(help="GPU type to check the plan against (default: the detected GPU).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (estimate and fit verdict) and stop; loads "
                                                            "nothing, needs no GPU (the GPU: --gpu or launch.gpu).")] = False,
):
    """Fine-tune from a recipe, measuring every step; writes report.json, metrics.jsonl and the adapter."""
    from advisor.plan.recipe import check_before_loading, load_recipe
    if allow_changes and not resume:
        raise AdvisorError("--allow-changes applies to --resume only")
    overrides = list(set_ or [])
    if nproc_per_node:
        overrides.append(f"launch.nproc_per_node={nproc_per_node}")
    if nnodes:
        overrides.append(f"launch.nnodes={nnodes}")
    loaded = load_recipe(recipe, overrides)
    check_before_loading(loaded, recipe)
    cal = _calibration(calibration)
    if gpu is not None:
        catalog.get_gpu(gpu)
    if dry_run:
        _plan_only(loaded, recipe, gpu, cal, force)
        return
    try:
        from runners.launch import launch  # the one place the advisor reaches into the ML stack
    except ImportError as exc:
        raise AdvisorError(f"the runner needs the ML stack ({exc.name} is missing): pip install 'rightsize[runner]'") from None
    report = launch(loaded, recipe_path=recipe, out_dir=out, resume=resume, overwrite=overwrite, force=force,
                    calibration=cal, overrides=overrides, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint, gpu=gpu,
                    allow_changes=allow_changes, resume_auto=resume_auto)
    if report is not None:
        typer.echo(report.summary())
        if report.status == "interrupted":
            import signal
            again = resume_command(recipe, out or Path("runs") / loaded.name, set_ or [], nproc_per_node, nnodes,
                                   node_rank, rdzv_endpoint, force, calibration, gpu)
            sys.stderr.write(f"advisor: interrupted by {report.interrupted_by} at step {report.steps}; the checkpoint is "
                             f"saved: continue with `{again}`\n")
            raise typer.Exit(128 + int(getattr(signal, report.interrupted_by or "SIGINT", signal.SIGINT)))


def _plan_only(loaded, recipe: Path, gpu: str | None, cal, force: bool) -> None:
    """`run --dry-run`: the estimate the run would start from and whether it would start (exit 2 if it would stop)."""
    from advisor.plan.estimate import estimate_recipe, plan_refusal
    from advisor.render.estimate import render_estimate
    estimate = estimate_recipe(loaded, gpu, calibration=cal)
    typer.echo(render_estimate(estimate))
    if estimate.gpu is None:
        typer.echo("  (no --gpu and no launch.gpu: planned as a CPU run; on a GPU the run plans against the detected one)")
    refusal = plan_refusal(estimate)
    if refusal and not force:
        raise AdvisorError(f"the run would stop before loading anything: {refusal}")
    typer.echo(f"\nPlan only (--dry-run): nothing loaded. Without --dry-run the run starts on {loaded.world_size} "
               f"process(es) and writes its directory.")


def resume_command(recipe: Path, out: Path, overrides: list[str], nproc_per_node: int | None, nnodes: int | None,
                   node_rank: int | None, rdzv_endpoint: str | None, force: bool, calibration: Path | None, gpu: str | None) -> str:
    """The exact command that continues an interrupted run: the same recipe, folder, overrides and flags, plus --resume."""
    import shlex
    args = ["advisor", "run", str(recipe), "--out", str(out)]
    for assignment in overrides:
        args += ["--set", assignment]
    args += ["--nproc-per-node", str(nproc_per_node)] if nproc_per_node else []
    args += ["--nnodes", str(nnodes)] if nnodes else []
    args += ["--node-rank", str(node_rank)] if node_rank is not None else []
    args += ["--rdzv-endpoint", rdzv_endpoint] if rdzv_endpoint else []
    args += ["--calibration", str(calibration)] if calibration else []
    args += ["--gpu", gpu] if gpu else []
    args += ["--force"] if force else []
    return shlex.join(args + ["--resume"])


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories holding report.json (one started without "
                                                        "finishing is listed as failed), and/or published-rows files "
                                                        "(bench/published/rows.yaml).")],
    plot: Annotated[Optional[Path], typer.Option(help="Write estimated-vs-measured plot (PNG; needs matplotlib; a "
                                                      "directory gets comparison.png in it).")] = None,
    as_json: JsonFlag = False,
):
    """Estimated against measured: GPU-hours, peak memory, tokens/s and MFU, with ratios."""
    from advisor.measure.compare import compare_runs, plot_comparison, plot_path
    from advisor.render.compare import render_comparison
    if plot:
        _refuse_overwriting_inputs("--plot", plot_path(plot), {"RUN_DIRS": run_dirs})
    rows = compare_runs(run_dirs)
    written = plot_comparison(rows, plot) if plot else None
    if as_json:
        _emit_json(_finite([to_json(r) for r in rows]))
    else:
        typer.echo(render_comparison(rows))
        if written:
            typer.echo(f"Wrote {written}")


@app.command()
def calibrate(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories holding report.json, and/or published-rows "
                                                        "files (bench/published/rows.yaml).")],
    out: Annotated[Optional[Path], typer.Option(help="Calibration file to write (default: the user's config directory).")] = None,
    as_json: JsonFlag = False,
):
    """Fit efficiency and memory overhead per GPU type and method from measured runs, and the step-time constants and
    allocator reserve from published rows; report leave-one-out error."""
    from advisor.plan.calibration import default_calibration_path
    from advisor.measure.compare import calibrate_sources, save_calibration
    from advisor.render.compare import render_calibration
    target = out or default_calibration_path()
    _refuse_overwriting_inputs("--out", target, {"RUN_DIRS": run_dirs})
    cal = calibrate_sources(run_dirs)
    path = save_calibration(cal, target)
    if as_json:
        _emit_json(_finite(to_json(cal) | {"path": str(path)}))
    else:
        typer.echo(render_calibration(cal))
        typer.echo(f"Wrote {path}")



def _runner(what: str):
    """The runner's generation module, imported only inside the commands that need it."""
    try:
        import runners.generate as generate
    except ImportError as exc:
        raise AdvisorError(f"{what} needs the ML stack ({exc.name} is missing): pip install 'rightsize[runner]'") from None
    return generate


@app.command()
def generate(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (holds recipe.resolved.yaml and adapter/).")],
    prompt: Annotated[list[str], typer.Option("--prompt", help="Prompt, formatted as the run's data; repeatable.")],
    max_new_tokens: Annotated[Optional[int], typer.Option(parser=_number(integer=True, upper=4096), help="Tokens to generate (default: the recipe's eval.max_new_tokens).")] = None,
    as_json: JsonFlag = False,
):
    """Generate from a run's base model + adapter (greedy), for each --prompt."""
    from advisor.render.samples import render_samples
    rows = _runner("advisor generate").generate_for_run(run_dir, list(prompt), max_new_tokens)
    if as_json:
        _emit_json(rows)
    else:
        typer.echo(render_samples(rows))


@app.command()
def chat(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (holds recipe.resolved.yaml and adapter/).")],
    max_new_tokens: Annotated[Optional[int], typer.Option(parser=_number(integer=True, upper=4096), help="Tokens per answer (default: the recipe's eval.max_new_tokens).")] = None,
):
    """Talk to a run's adapter: one line in, one answer out (chat data keeps the conversation); an empty line ends."""
    generate_module = _runner("advisor chat")
    interactive = sys.stdin.isatty()

    lines = [0]

    def read() -> str:
        if interactive:
            sys.stderr.write("> ")
            sys.stderr.flush()
        lines[0] += 1
        try:
            line = sys.stdin.readline()
            line.encode("utf-8")  # stdin decodes undecodable bytes to surrogates, which no tokenizer takes
        except (UnicodeDecodeError, UnicodeEncodeError):
            raise AdvisorError(f"chat: standard input line {lines[0]} is not UTF-8 text: send UTF-8") from None
        return line
    from advisor.render.samples import completion_text
    generate_module.chat_loop(run_dir, read, lambda answer: typer.echo(completion_text(answer)), max_new_tokens)
