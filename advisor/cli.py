"""The `advisor` command: parse, call one pure function, render. Errors are one line and exit code 2."""

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from advisor import catalog, scaling
from advisor.errors import AdvisorError
from advisor.numbers import ACCEPTED_FORM, human, parse_quantity

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Rightsize: decide how to adapt a language model, with numbers, then run it.")
scaling_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Scaling laws: optimal size, loss, repeated data, inference.")
catalog_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="List the GPU, model and API catalogs.")
app.add_typer(scaling_app, name="scaling")
app.add_typer(catalog_app, name="catalog")


# --- option parsers: numbers as people write them, one clear message when they are not ---------------

def _number(allow_zero: bool = False, upper: float | None = None, integer: bool = False, inclusive_upper: bool = True):
    def parse(text: str) -> float:
        try:
            value = parse_quantity(text, allow_zero=allow_zero)
        except AdvisorError as exc:
            raise typer.BadParameter(str(exc)) from None
        if upper is not None and (value > upper or (value == upper and not inclusive_upper)):
            raise typer.BadParameter(f"{text!r} must be at most {upper:g}; expected {ACCEPTED_FORM}")
        if integer:
            if value != int(value):
                raise typer.BadParameter(f"{text!r} must be a whole number")
            return int(value)
        return value
    parse.__name__ = "number"
    return parse


def _fraction(text: str) -> float:
    try:
        value = parse_quantity(text)
    except AdvisorError:
        raise typer.BadParameter(f"{text!r} must be a fraction in (0, 1], e.g. 0.8") from None
    if value > 1:
        raise typer.BadParameter(f"{text!r} must be a fraction in (0, 1], e.g. 0.8")
    return value


Count = _number()
CountOrZero = _number(allow_zero=True)
Int = _number(integer=True, upper=1e7)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _emit_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=_json_default, allow_nan=False))


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(obj):
    """JSON has no infinity: an option that cannot run reports null."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _calibration(path: Optional[Path]):
    from advisor.calibration import load_calibration
    return load_calibration(path)


# --- recommend ---------------------------------------------------------------------------------------

@app.command()
def recommend(
    tokens: Annotated[Optional[float], typer.Option(parser=Count, help="Training tokens you have, e.g. 2e9.")] = None,
    docs: Annotated[Optional[float], typer.Option(parser=Count, help="Documents you have, e.g. 500k.")] = None,
    tokens_per_doc: Annotated[float, typer.Option(parser=Count, help="Average tokens per document, used when --tokens is not given.")] = 1000,
    quality: Annotated[float, typer.Option(parser=_fraction, help="Usable fraction of the data, in (0, 1].")] = 1.0,
    requests_per_day: Annotated[float, typer.Option(parser=CountOrZero, help="Production requests per day.")] = 1000,
    tokens_per_request: Annotated[float, typer.Option(parser=Count, help="Prompt + completion tokens per request.")] = 1000,
    task: Annotated[str, typer.Option(help="knowledge | style | task | domain | language")] = "task",
    on_prem: Annotated[bool, typer.Option("--on-prem", help="Data must stay on premises (no hosted API).")] = False,
    api_insufficient: Annotated[bool, typer.Option("--api-insufficient", help="No hosted API meets the quality bar.")] = False,
    api: Annotated[str, typer.Option(help="Hosted model to price (advisor catalog apis).")] = "gpt-4o-mini",
    base_model: Annotated[str, typer.Option(help="Open model to adapt (catalog name or config.json).")] = "Llama-3.1-8B",
    gpu: Annotated[str, typer.Option(help="GPU type available (advisor catalog gpus).")] = "A100-80GB",
    gpus: Annotated[int, typer.Option(parser=Int, help="How many GPUs of that type you have.")] = 8,
    availability: Annotated[float, typer.Option(parser=_fraction, help="Fraction of the time the GPUs are yours.")] = 1.0,
    budget: Annotated[Optional[float], typer.Option(parser=Count, help="Training budget, USD.")] = None,
    price: Annotated[Optional[float], typer.Option(parser=Count, help="Override the GPU's $/GPU-hour.")] = None,
    epochs: Annotated[float, typer.Option(parser=_number(upper=1000), help="Fine-tuning passes over the data.")] = 1.0,
    seq_len: Annotated[int, typer.Option(parser=_number(integer=True, upper=1_048_576), help="Training sequence length.")] = 2048,
    calibration: Annotated[Optional[Path], typer.Option(help="Calibration file (default: the user's, if any).")] = None,
    as_json: JsonFlag = False,
    report: Annotated[Optional[Path], typer.Option(help="Also write a Markdown scaling justification to this file.")] = None,
):
    """Which tier (API, PEFT, full fine-tune, pretrain) your data, usage and hardware call for, with costs."""
    from advisor.decide import Situation, recommend as decide
    from advisor.render import render_recommendation, report_markdown

    if tokens is None and docs is None:
        raise AdvisorError("give --tokens (e.g. 2e9) or --docs (e.g. 500k)")
    situation = _validated(Situation, tokens=tokens if tokens is not None else docs * tokens_per_doc, docs=docs,
                           quality=quality, requests_per_day=requests_per_day, tokens_per_request=tokens_per_request,
                           task=task, on_prem=on_prem, api_sufficient=not api_insufficient, api=api,
                           base_model=base_model, gpu=gpu, gpus=gpus, availability=availability, budget_usd=budget,
                           price_usd_per_gpu_hour=price, epochs=epochs, seq_len=seq_len)
    catalog.get_api(api), catalog.get_gpu(gpu), catalog.get_model(base_model)  # unknown names: one clear line
    rec = decide(situation, _calibration(calibration))
    if report:
        _write_text(report, report_markdown(rec))
    if as_json:
        data = rec.model_dump(mode="json")
        _emit_json(_finite(data))
    else:
        typer.echo(render_recommendation(rec))
        if rec.calibration:
            typer.echo(f"Calibrated with {rec.calibration}.")
        if report:
            typer.echo(f"Wrote {report}")


def _validated(model, **fields):
    from pydantic import ValidationError
    try:
        return model(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else "input"
        raise AdvisorError(f"{flag}: {err['msg']}") from None


def _write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        raise AdvisorError(f"{path}: cannot write ({exc.strerror or exc})") from None


# --- estimate ----------------------------------------------------------------------------------------

@app.command()
def estimate(
    recipe: Annotated[Optional[Path], typer.Argument(help="A recipe YAML to estimate (instead of --model ...).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Catalog model or config.json path.")] = None,
    method: Annotated[str, typer.Option(help="lora | qlora | full")] = "lora",
    rank: Annotated[int, typer.Option(parser=_number(integer=True, upper=4096), help="LoRA rank.")] = 16,
    targets: Annotated[str, typer.Option(help="all-linear, or a comma list such as q_proj,v_proj.")] = "all-linear",
    seq_len: Annotated[int, typer.Option(parser=_number(integer=True, upper=1_048_576), help="Sequence length.")] = 2048,
    micro_batch: Annotated[int, typer.Option(parser=_number(integer=True, upper=4096), help="Sequences per GPU per step.")] = 1,
    gpu: Annotated[Optional[str], typer.Option(help="GPU type (advisor catalog gpus).")] = None,
    gpus: Annotated[Optional[int], typer.Option(parser=_number(integer=True, upper=100000), help="GPU count (FSDP beyond one if needed).")] = None,
    tokens: Annotated[Optional[float], typer.Option(parser=Count, help="Tokens to train on, for GPU-hours and dollars.")] = None,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing")] = True,
    eager_attention: Annotated[bool, typer.Option("--eager-attention", help="No fused attention kernel (keeps the T x T scores).")] = False,
    optimizer: Annotated[str, typer.Option(help="adamw | adamw-8bit | paged-adamw-8bit")] = "adamw",
    efficiency: Annotated[Optional[float], typer.Option(parser=_fraction, help="Achieved fraction of peak (default: calibrated or assumed).")] = None,
    price: Annotated[Optional[float], typer.Option(parser=Count, help="Override $/GPU-hour.")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="Calibration file (default: the user's, if any).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Recipe override key.path=value (with RECIPE).")] = None,
    as_json: JsonFlag = False,
):
    """Memory per GPU, FLOPs, GPU count, GPU-hours and dollars of a fine-tune (flags or a recipe)."""
    from advisor.params import resolve_lora_targets
    from advisor.training import TrainingSetup
    from advisor.estimate import estimate_recipe, estimate_training
    from advisor.recipe import load_recipe
    from advisor.render import render_estimate

    cal = _calibration(calibration)
    if recipe is not None:
        if model is not None:
            raise AdvisorError("give either RECIPE or --model, not both")
        result = estimate_recipe(load_recipe(recipe, set_ or []), gpu, calibration=cal, gpus=gpus, tokens=tokens,
                                 efficiency=efficiency, price=price)
    else:
        if model is None:
            raise AdvisorError("give a RECIPE or --model (e.g. --model Llama-3.1-8B)")
        if method not in ("lora", "qlora", "full"):
            raise AdvisorError(f"--method {method!r}: expected lora, qlora or full")
        if optimizer not in ("adamw", "adamw-8bit", "paged-adamw-8bit"):
            raise AdvisorError(f"--optimizer {optimizer!r}: expected adamw, adamw-8bit or paged-adamw-8bit")
        setup = TrainingSetup(arch=catalog.get_model(model), method=method, lora_rank=rank,
                              lora_targets=resolve_lora_targets(targets), seq_len=seq_len, micro_batch=micro_batch,
                              gpus=gpus or 1, gradient_checkpointing=gradient_checkpointing,
                              flash_attention=not eager_attention, optimizer=optimizer)
        result = estimate_training(setup, catalog.get_gpu(gpu) if gpu is not None else None, tokens,
                                   "given (--tokens)" if tokens is not None else None, efficiency, price, cal)
    if as_json:
        _emit_json(_finite(result.model_dump(mode="json")))
    else:
        typer.echo(render_estimate(result))


# --- scaling -----------------------------------------------------------------------------------------

FitOption = Annotated[str, typer.Option(help="chinchilla-rule | hoffmann2022 | epoch2024")]


def _fit(fit: str) -> str:
    if fit not in scaling.FITS:
        raise AdvisorError(f"--fit {fit!r}: expected one of {', '.join(scaling.FITS)}")
    return fit


def _show_point(data: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        _emit_json(_finite(data))
    else:
        typer.echo("\n".join(lines))


@scaling_app.command("optimal")
def scaling_optimal(
    compute: Annotated[Optional[float], typer.Option(parser=Count, help="Training FLOPs budget, e.g. 1e21.")] = None,
    tokens: Annotated[Optional[float], typer.Option(parser=Count, help="Training tokens you have, e.g. 2e9.")] = None,
    fit: FitOption = "chinchilla-rule",
    as_json: JsonFlag = False,
):
    """Compute-optimal parameters and tokens for a FLOPs budget (--compute) or a token count (--tokens)."""
    if (compute is None) == (tokens is None):
        raise AdvisorError("give exactly one of --compute (FLOPs) or --tokens")
    point = (scaling.compute_optimal_for_compute(compute, _fit(fit)) if compute is not None
             else scaling.compute_optimal_for_tokens(tokens, _fit(fit)))
    _show_point(point.as_dict(), as_json, [
        f"fit: {point.fit}", f"params: {human(point.params)}", f"tokens: {human(point.tokens)}",
        f"flops: {point.flops:.3g}", f"loss: {point.loss:.4f} (predicted by {point.loss_fit})",
        f"tokens per parameter: {point.tokens / point.params:.1f}"])


@scaling_app.command("loss")
def scaling_loss(
    params: Annotated[float, typer.Option(parser=Count, help="Model parameters, e.g. 7B.")],
    tokens: Annotated[float, typer.Option(parser=Count, help="Training tokens, e.g. 2T.")],
    fit: FitOption = "hoffmann2022",
    as_json: JsonFlag = False,
):
    """Predicted loss of N parameters trained on D tokens."""
    point = scaling.loss_at(params, tokens, _fit(fit))
    _show_point(point.as_dict(), as_json, [f"fit: {point.loss_fit}", f"loss: {point.loss:.4f}", f"flops: {point.flops:.3g}"])


@scaling_app.command("repeat")
def scaling_repeat(
    params: Annotated[float, typer.Option(parser=Count, help="Model parameters.")],
    tokens: Annotated[float, typer.Option(parser=Count, help="Total training tokens (all epochs).")],
    unique_tokens: Annotated[float, typer.Option(parser=Count, help="Unique tokens they are drawn from.")],
    as_json: JsonFlag = False,
):
    """Effective tokens and loss when D training tokens repeat U unique ones (Muennighoff et al. 2023)."""
    r = scaling.repeated_data(params, tokens, unique_tokens)
    _show_point(r.as_dict(), as_json, [
        f"epochs: {r.epochs:.2f}", f"effective_tokens: {human(r.effective_tokens)} of {human(r.tokens)}",
        f"effective_params: {human(r.effective_params)}", f"loss: {r.loss:.4f} (unique data would give {r.loss_if_unique:.4f})"])


@scaling_app.command("inference")
def scaling_inference(
    loss: Annotated[float, typer.Option(parser=Count, help="Target loss, e.g. 2.0.")],
    inference_tokens: Annotated[float, typer.Option(parser=CountOrZero, help="Lifetime inference tokens, e.g. 2T.")],
    fit: FitOption = "hoffmann2022",
    as_json: JsonFlag = False,
):
    """The model reaching a loss at the least training + lifetime inference FLOPs (Sardana et al. 2024)."""
    if fit == "chinchilla-rule":
        raise AdvisorError("--fit chinchilla-rule has no loss curve; use hoffmann2022 or epoch2024")
    r = scaling.inference_aware_optimum(loss, inference_tokens, _fit(fit))
    _show_point(r.as_dict(), as_json, [
        f"params: {human(r.params)} trained on {human(r.tokens)} tokens ({r.tokens / r.params:.0f} per parameter)",
        f"flops: {r.flops:.3g} training + {r.inference_flops:.3g} inference = {r.total_flops:.3g}",
        f"Chinchilla-optimal for the same loss: {human(r.chinchilla_params)} params, {r.chinchilla_total_flops:.3g} FLOPs in total",
        f"saving: {r.savings_fraction:.1%}"])


# --- catalog -----------------------------------------------------------------------------------------

def _catalog(kind: str, columns: list[str], as_json: bool) -> None:
    from advisor.render import table
    entries = catalog.entries(kind)
    if as_json:
        _emit_json([e.model_dump(mode="json") for e in entries])
        return
    rows = [[_cell(getattr(e, c)) for c in columns] for e in entries]
    typer.echo(table(columns, rows))


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and value > 10**6:
        return human(value)
    return "-" if value is None else str(value)


@catalog_app.command("gpus")
def catalog_gpus(as_json: JsonFlag = False):
    """GPU types: dense bf16 peak, memory, bandwidth, reference price."""
    _catalog("gpus", ["name", "peak_tflops_bf16", "memory_gib", "memory_bandwidth_gbs", "price_usd_per_hour", "date"], as_json)


@catalog_app.command("models")
def catalog_models(as_json: JsonFlag = False):
    """Model architectures (any command also takes a config.json path)."""
    _catalog("models", ["name", "hub_id", "published_params", "hidden_size", "num_hidden_layers", "num_attention_heads",
                        "num_key_value_heads", "vocab_size", "tie_word_embeddings"], as_json)


@catalog_app.command("apis")
def catalog_apis(as_json: JsonFlag = False):
    """Hosted-model prices per 1M tokens, dated."""
    _catalog("apis", ["name", "vendor", "input_usd_per_mtok", "output_usd_per_mtok", "date"], as_json)


# --- recipes: validate, run, compare, calibrate --------------------------------------------------------

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
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories holding report.json.")],
    plot: Annotated[Optional[Path], typer.Option(help="Write estimated-vs-measured plot (PNG; needs matplotlib).")] = None,
    as_json: JsonFlag = False,
):
    """Estimated against measured: GPU-hours, peak memory, tokens/s and MFU, with ratios."""
    from advisor.compare import compare_runs, plot_comparison, render_comparison
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
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories holding report.json.")],
    out: Annotated[Optional[Path], typer.Option(help="Calibration file to write (default: the user's config directory).")] = None,
    as_json: JsonFlag = False,
):
    """Fit efficiency and memory overhead per GPU type and method from measured runs; report leave-one-out error."""
    from advisor.calibration import default_calibration_path
    from advisor.compare import fit_calibration, load_reports, render_calibration, save_calibration
    cal = fit_calibration(load_reports(run_dirs))
    path = save_calibration(cal, out or default_calibration_path())
    if as_json:
        _emit_json(_finite(cal.model_dump(mode="json") | {"path": str(path)}))
    else:
        typer.echo(render_calibration(cal))
        typer.echo(f"Wrote {path}")


# --- entry point -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every user error becomes one line on stderr and exit code 2, never a traceback."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="advisor", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except AdvisorError as exc:
        code = _fail(str(exc))
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0)) or 0
    except typer.Abort:
        code = _fail("aborted", 130)
    except KeyboardInterrupt:
        code = _fail("interrupted", 130)
    except OSError as exc:  # the machine, not the input: a full disk, a vanished directory
        code = _fail(f"{exc.strerror or exc}{': ' + str(exc.filename) if getattr(exc, 'filename', None) else ''}", 1)
    except Exception as exc:  # noqa: BLE001 - the edge of the program: one line, not a traceback
        if hasattr(exc, "format_message"):  # click-style usage errors (click or typer's vendored copy)
            if type(exc).__name__ == "NoArgsIsHelpError":
                typer.echo(exc.format_message())
                code = 0
            else:
                code = _fail(exc.format_message().replace("\n", " "), getattr(exc, "exit_code", 2) or 2)
        elif os.environ.get("RIGHTSIZE_DEBUG"):
            raise
        else:
            code = _fail(f"internal error: {type(exc).__name__}: {exc} (set RIGHTSIZE_DEBUG=1 for the traceback)", 1)
    if argv is None:
        sys.exit(code)
    return code


def _fail(message: str, code: int = 2) -> int:
    sys.stderr.write(f"advisor: error: {message}\n")
    return code


if __name__ == "__main__":
    main()
