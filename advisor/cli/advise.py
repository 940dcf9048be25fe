"""`advisor review` and `advisor estimate`."""

from msgspec.structs import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from advisor.catalog import load as catalog
from advisor.cli.app import app
from advisor.cli.options import (
    Count, JsonFlag, _calibration, _duration_days, _emit_json, _finite, _fraction, _gpu_spec, _number, _validated,
    _calibration_inputs, _path_inputs, _refuse_overwriting_inputs, _write_text,
)
from advisor.core.bounds import MAX_PRICE_USD_PER_GPU_HOUR, MAX_TOKENS
from advisor.core.errors import AdvisorError
from advisor.core.convert import to_json
from advisor.cli.setup_flags import override_lines, recipe_values, with_setup_flags
from advisor.formulas.setup import METHODS, TrainingSetup, one_of

# The flag that sets a Proposal field, where their names differ (errors name the flag)
_PROPOSAL_FLAGS = {"cost_usd": "--cost", "price_usd_per_gpu_hour": "--price", "gpu": "--gpus"}


@app.command()
def review(
    model: Annotated[str, typer.Option(help="The proposal's model: catalog name, config.json, or a size such as 7B.")],
    tokens: Annotated[float, typer.Option(parser=Count, help="Training tokens, e.g. 2e9.")],
    method: Annotated[str, typer.Option(help="lora | qlora | full")] = "full",
    gpus: Annotated[str, typer.Option(help="GPUs, e.g. 8xA100 (or a count with --gpu).")] = "8",
    gpu: Annotated[str, typer.Option(help="GPU type when --gpus is a count.")] = "A100-80GB",
    days: Annotated[Optional[float], typer.Option(parser=_duration_days, help="The proposal's wall-clock: 14, 14d, 2w.")] = None,
    cost: Annotated[Optional[float], typer.Option(parser=Count, help="The proposal's dollars, e.g. 150k.")] = None,
    epochs: Annotated[float, typer.Option(parser=_number(upper=1000), help="Passes over the tokens.")] = 1.0,
    seq_len: Annotated[int, typer.Option(parser=_number(integer=True, upper=1_048_576, example="2048"), help="Training sequence length.")] = 2048,
    price: Annotated[Optional[float], typer.Option(parser=Count, help="Override the GPU's $/GPU-hour.")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="Calibration file (default: the user's, if any).")] = None,
    as_json: JsonFlag = False,
    report: Annotated[Optional[Path], typer.Option(help="Also write the review as Markdown to this file.")] = None,
    recipe_out: Annotated[Optional[Path], typer.Option(help="Also write the proposal's LoRA/QLoRA plan as a recipe, with its estimate (advisor launch reads it).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="With --recipe-out: the training data file the recipe names (else a placeholder to fill in).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="With --recipe-out: replace an existing file.")] = False,
):
    """Check a proposed plan (model, method, GPUs, days, dollars) against the formulas, and the cheaper path."""
    from advisor.render.review import render_review, review_markdown
    from advisor.decide.review import Proposal, review_proposal

    one_of("--method", method, METHODS)
    if report:
        _refuse_overwriting_inputs("--report", report, _calibration_inputs(calibration) | _path_inputs("--model", model))
    if recipe_out:
        from advisor.render.planned_recipe import check_recipe_out
        _refuse_overwriting_inputs("--recipe-out", recipe_out, _calibration_inputs(calibration) | _path_inputs(
            "--model", model) | {"--report": [report], "--data": [data]})
        check_recipe_out(recipe_out, overwrite)
    elif data is not None or overwrite:
        raise AdvisorError("--data and --overwrite apply to --recipe-out (e.g. --recipe-out plan.yaml --data train.jsonl)")
    count, kind = _gpu_spec(gpus, gpu)
    proposal = _validated(Proposal, _PROPOSAL_FLAGS, model=model, method=method, gpu=kind, gpus=count, days=days, cost_usd=cost,
                          tokens=tokens, epochs=epochs, seq_len=seq_len, price_usd_per_gpu_hour=price)
    result = review_proposal(proposal, _calibration(calibration))
    if report:
        _write_text(report, "\n".join(["# Proposal review", ""] + review_markdown(result)))
    if recipe_out:
        from advisor.render.planned_recipe import planned_recipe, recipe_text
        planned = planned_recipe(result.computed, seq_len, epochs, result.model, "advisor review",
                                 str(data) if data else None, recipe_out.parent)
        _write_text(recipe_out, recipe_text(planned, "review"))
    if as_json:
        _emit_json(_finite(to_json(result)))
    else:
        typer.echo(render_review(result))
        if report:
            typer.echo(f"Wrote {report}")
        if recipe_out:
            typer.echo(f"Wrote {recipe_out} (on a cluster: advisor launch {recipe_out} --target slurm)")


# An estimate is sized against one GPU type; without one there is no fit verdict and no GPU-hours or dollars.
NEED_GPU = "give --gpu to size and cost it (e.g. --gpu A100-80GB; the list: advisor catalog gpus)"


@app.command()
@with_setup_flags
def estimate(
    recipe: Annotated[Optional[Path], typer.Argument(help="A recipe YAML to estimate (instead of --model ...).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Catalog model, hub id (org/name: local HF cache, else the hub) or config.json path.")] = None,
    gpu: Annotated[Optional[str], typer.Option(help="GPU type (advisor catalog gpus).")] = None,
    tokens: Annotated[Optional[float], typer.Option(parser=_number(upper=MAX_TOKENS), help="Tokens to train on, for GPU-hours and dollars.")] = None,
    efficiency: Annotated[Optional[float], typer.Option(parser=_fraction, help="Achieved fraction of peak (default: calibrated or the step-time model's).")] = None,
    price: Annotated[Optional[float], typer.Option(parser=_number(upper=MAX_PRICE_USD_PER_GPU_HOUR), help="Override $/GPU-hour.")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="Calibration file (default: the user's, if any).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Recipe override key.path=value (with RECIPE).")] = None,
    no_data_probe: Annotated[bool, typer.Option("--no-data-probe", help="With RECIPE: skip measuring the data's preparation on a sample (also RIGHTSIZE_DATA_PROBE=0).")] = False,
    as_json: JsonFlag = False,
    *,
    setup_flags: dict,
):
    """Memory per GPU, FLOPs, GPU count, GPU-hours and dollars of a fine-tune (flags or a recipe; with a recipe, a
    setup flag overrides the recipe's value and the estimate says so)."""
    from advisor.plan.estimate import estimate_recipe, estimate_training
    from advisor.plan.recipe import check_inputs, load_recipe
    from advisor.render.estimate import render_estimate

    cal = _calibration(calibration)
    if recipe is not None:
        if model is not None:
            raise AdvisorError("give either RECIPE or --model, not both")
        from advisor.plan.jobspec import planned_tokens
        loaded = load_recipe(recipe, set_ or [])
        planned = planned_tokens(loaded) if tokens is None else None  # a recommendation's recipe: the tokens it costed
        check_inputs(loaded, recipe, data=tokens is None and planned is None)  # with tokens the data need not exist yet
        if gpu is None and loaded.launch.gpu is None:
            raise AdvisorError(f"{recipe} names no launch.gpu: {NEED_GPU}")
        result = estimate_recipe(loaded, gpu, calibration=cal, tokens=tokens if planned is None else planned,
                                 efficiency=efficiency, price=price, overrides=setup_flags,
                                 data_probe=_data_probe(recipe, set_ or [], no_data_probe))
        result = replace(result, overrides=override_lines(setup_flags, recipe_values(loaded)))
        if planned is not None:
            result = replace(result, tokens_source="plan.tokens (what the recommendation costed; --tokens overrides)")
    else:
        if model is None:
            raise AdvisorError("give a RECIPE or --model (e.g. --model Llama-3.1-8B)")
        if no_data_probe:
            raise AdvisorError("--no-data-probe applies to a RECIPE (an estimate from --model reads no data)")
        if set_:
            raise AdvisorError("--set overrides a recipe's keys: give a RECIPE, or the setup flags (advisor estimate --help)")
        checkpointing = setup_flags.pop("gradient_checkpointing", None)
        setup = TrainingSetup(arch=catalog.get_model(model), **setup_flags)
        if setup.mean_seq_len is not None and setup.mean_seq_len > setup.seq_len:
            raise AdvisorError(f"--mean-seq-len {setup.mean_seq_len} exceeds --seq-len {setup.seq_len} (the longest batch)")
        if gpu is None:
            raise AdvisorError(f"no GPU type: {NEED_GPU}")
        result = estimate_training(setup, catalog.get_gpu(gpu), tokens, "given (--tokens)" if tokens is not None else None,
                                   efficiency, price, cal, checkpointing=checkpointing,
                                   checkpointing_reason="set (--gradient-checkpointing)")
    from advisor.render.notices import price_notices
    notices = price_notices([catalog.get_gpu(result.gpu)]) if (result.cost_usd and price is None and result.gpu) else []
    if as_json:
        _emit_json(_finite(to_json(result) | {"notices": notices}))
    else:
        typer.echo(render_estimate(result))
        for line in notices:
            typer.echo(line)


def _data_probe(recipe: Path, overrides: list[str], skip: bool):
    """The recipe's data preparation measured on a sample (advisor.measure.data_probe), or why it is not."""
    from advisor.measure.data_probe import PROBE_ENV, probe_data, probe_disabled
    if skip:
        return "not measured (--no-data-probe)"
    if probe_disabled():
        return f"not measured ({PROBE_ENV}=0)"
    return probe_data(recipe, overrides)
