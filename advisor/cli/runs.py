"""`advisor validate`, `run`, `compare` and `calibrate`: recipes and measured runs."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from advisor import catalog
from advisor.cli.app import app
from advisor.cli.options import JsonFlag, _calibration, _emit_json, _finite, _number
from advisor.errors import AdvisorError


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML.")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override key.path=value.")] = None,
):
    """Check a recipe without running it: schema, cross-field rules, the model's architecture and data path."""
    from advisor.recipe import load_recipe
    loaded = load_recipe(recipe, set_ or [])
    arch = loaded.model.resolve_arch() if (loaded.model.arch or loaded.model.random_init) else _arch_or_none(loaded)
    if not Path(loaded.data.path).exists():
        raise AdvisorError(f"{recipe}: data.path {loaded.data.path} does not exist")
    detail = f", {arch.name}" if arch else ""
    typer.echo(f"ok: {loaded.name} ({loaded.method}{detail}, {loaded.world_size} process(es))")


def _arch_or_none(recipe):
    try:
        return recipe.model.resolve_arch()
    except AdvisorError:
        return None


@app.command(context_settings={"allow_extra_args": False})
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML.")],
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default runs/<recipe name>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run directory's last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run directory.")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override key.path=value, e.g. train.lr=1e-4.")] = None,
    nproc_per_node: Annotated[Optional[int], typer.Option(parser=_number(integer=True, upper=64), help="Processes per node (torchrun).")] = None,
    nnodes: Annotated[Optional[int], typer.Option(parser=_number(integer=True, upper=4096), help="Nodes (torchrun --nnodes).")] = None,
    node_rank: Annotated[Optional[int], typer.Option(parser=_number(integer=True, allow_zero=True, upper=4095), help="This node's rank.")] = None,
    rdzv_endpoint: Annotated[Optional[str], typer.Option(help="host:port of the rendezvous (torchrun).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Run even if the estimate says it will not fit.")] = False,
    calibration: Annotated[Optional[Path], typer.Option(help="Calibration file for the estimate.")] = None,
    gpu: Annotated[Optional[str], typer.Option(help="GPU type to check the plan against (default: the detected GPU).")] = None,
):
    """Fine-tune from a recipe, measuring every step; writes report.json, metrics.jsonl and the adapter."""
    from advisor.recipe import load_recipe
    overrides = list(set_ or [])
    if nproc_per_node:
        overrides.append(f"launch.nproc_per_node={nproc_per_node}")
    if nnodes:
        overrides.append(f"launch.nnodes={nnodes}")
    loaded = load_recipe(recipe, overrides)
    cal = _calibration(calibration)
    if gpu is not None:
        catalog.get_gpu(gpu)
    try:
        from runners.launch import launch  # the one place the advisor reaches into the ML stack
    except ImportError as exc:
        raise AdvisorError(f"the runner needs the ML stack ({exc.name} is missing): pip install 'rightsize[runner]'") from None
    report = launch(loaded, recipe_path=recipe, out_dir=out, resume=resume, overwrite=overwrite, force=force,
                    calibration=cal, overrides=overrides, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint, gpu=gpu)
    if report is not None:
        typer.echo(report.summary())
        if report.status == "interrupted":
            import signal
            sys.stderr.write(f"advisor: interrupted by {report.interrupted_by} at step {report.steps}; the checkpoint is "
                             f"saved: continue with `advisor run {recipe} --out {out or 'runs/' + loaded.name} --resume`\n")
            raise typer.Exit(128 + int(getattr(signal, report.interrupted_by or "SIGINT", signal.SIGINT)))


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories holding report.json, and/or published-rows "
                                                        "files (bench/published/rows.yaml).")],
    plot: Annotated[Optional[Path], typer.Option(help="Write estimated-vs-measured plot (PNG; needs matplotlib).")] = None,
    as_json: JsonFlag = False,
):
    """Estimated against measured: GPU-hours, peak memory, tokens/s and MFU, with ratios."""
    from advisor.compare import compare_runs, plot_comparison
    from advisor.render.compare import render_comparison
    rows = compare_runs(run_dirs)
    if plot:
        plot_comparison(rows, plot)
    if as_json:
        _emit_json(_finite([r.model_dump(mode="json") for r in rows]))
    else:
        typer.echo(render_comparison(rows))
        if plot:
            typer.echo(f"Wrote {plot}")


@app.command()
def calibrate(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories holding report.json, and/or published-rows "
                                                        "files (bench/published/rows.yaml).")],
    out: Annotated[Optional[Path], typer.Option(help="Calibration file to write (default: the user's config directory).")] = None,
    as_json: JsonFlag = False,
):
    """Fit efficiency and memory overhead per GPU type and method from measured runs, and the step-time constants and
    allocator reserve from published rows; report leave-one-out error."""
    from advisor.calibration import default_calibration_path
    from advisor.compare import calibrate_sources, save_calibration
    from advisor.render.compare import render_calibration
    cal = calibrate_sources(run_dirs)
    path = save_calibration(cal, out or default_calibration_path())
    if as_json:
        _emit_json(_finite(cal.model_dump(mode="json") | {"path": str(path)}))
    else:
        typer.echo(render_calibration(cal))
        typer.echo(f"Wrote {path}")

