"""`advisor recommend`: which tier the data, usage and hardware call for, with costs (its own module, so the command
imports and builds nothing of the other commands)."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from advisor.catalog import load as catalog
from advisor.cli.app import app
from advisor.cli.options import (
    Count, CountOrZero, Int, JsonFlag, _calibration, _duration_days, _emit_json, _finite, _fraction, _gpu_spec, _number,
    _calibration_inputs, _path_inputs, _refuse_overwriting_inputs, _validated, _write_text,
)
from advisor.core.errors import AdvisorError
from advisor.core.convert import to_json

# The flag that sets a Situation or a proposal field, where their names differ (errors name the flag)
_SITUATION_FLAGS = {"output_fraction": "--output-share", "api_sufficient": "--api-insufficient",
                    "budget_usd": "--budget", "deadline_days": "--deadline", "price_usd_per_gpu_hour": "--price",
                    "monthly_budget_usd": "--monthly-budget", "peak_to_average": "--peak-factor"}
_RECOMMEND_PROPOSAL_FLAGS = {"model": "--proposal-model", "method": "--proposal-method", "gpu": "--proposal-gpus",
                             "gpus": "--proposal-gpus", "days": "--proposal-days", "cost_usd": "--proposal-cost",
                             "price_usd_per_gpu_hour": "--price"}


def _catalog_names(api: str, gpu: str, base_model: str) -> tuple[str, str, str]:
    """The catalog's own names for --api, --gpu and --base-model as given (an alias such as A100, a hub id, any case),
    so every option and sentence names them alike; a config.json path or a hub id outside the catalog stays as given.
    An unknown name is one line naming its flag."""
    def named(flag: str, lookup, text: str):
        try:
            return lookup(text)
        except AdvisorError as exc:
            raise AdvisorError(f"{flag}: {exc}", flag=flag) from None
    arch = named("--base-model", catalog.get_model, base_model)
    catalogued = catalog.load("models").get(arch.name.lower()) is arch
    return (named("--api", catalog.get_api, api).name, named("--gpu", catalog.get_gpu, gpu).name,
            arch.name if catalogued else base_model)


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
    api: Annotated[str, typer.Option(help="Hosted model to price (advisor catalog apis).")] = "gpt-6-luna",
    base_model: Annotated[str, typer.Option(help="Open model to adapt (catalog name or config.json).")] = "Llama-3.1-8B",
    gpu: Annotated[str, typer.Option(help="GPU type available (advisor catalog gpus).")] = "A100-80GB",
    gpus: Annotated[int, typer.Option(parser=Int, help="How many GPUs of that type you have.")] = 8,
    availability: Annotated[float, typer.Option(parser=_fraction, help="Fraction of the time the GPUs are yours.")] = 1.0,
    budget: Annotated[Optional[float], typer.Option(parser=Count, help="Training budget, USD (one-off training cost).")] = None,
    deadline: Annotated[Optional[float], typer.Option(parser=_duration_days, help="Wall-clock the training may take: 7d, 36h, 2w (default: assumed 90d).")] = None,
    output_share: Annotated[float, typer.Option(parser=_number(allow_zero=True, upper=1), help="Share of a request's tokens that are output.")] = 0.25,
    proposal_model: Annotated[Optional[str], typer.Option(help="Review a proposed plan too: its model (name or size, e.g. 7B).")] = None,
    proposal_method: Annotated[str, typer.Option(help="The proposal's method: lora | qlora | full.")] = "full",
    proposal_gpus: Annotated[Optional[str], typer.Option(help="The proposal's GPUs, e.g. 8xA100 (default: your cluster).")] = None,
    proposal_days: Annotated[Optional[float], typer.Option(parser=_duration_days, help="The proposal's wall-clock, e.g. 14d.")] = None,
    proposal_cost: Annotated[Optional[float], typer.Option(parser=Count, help="The proposal's dollars, e.g. 150k.")] = None,
    price: Annotated[Optional[float], typer.Option(parser=Count, help="Override the GPU's $/GPU-hour.")] = None,
    epochs: Annotated[float, typer.Option(parser=_number(upper=1000), help="Fine-tuning passes over the data.")] = 1.0,
    seq_len: Annotated[int, typer.Option(parser=_number(integer=True, upper=1_048_576, example="2048"), help="Training sequence length.")] = 2048,
    monthly_budget: Annotated[Optional[float], typer.Option(parser=Count, help="Monthly budget for serving or the API bill, USD (bounds serving as --budget bounds training).")] = None,
    peak_factor: Annotated[float, typer.Option(parser=_number(upper=100), help="Peak request rate over the day's average; serving is sized for the peak (1: a flat load).")] = 2.0,
    calibration: Annotated[Optional[Path], typer.Option(help="Calibration file (default: the user's, if any).")] = None,
    as_json: JsonFlag = False,
    report: Annotated[Optional[Path], typer.Option(help="Also write a Markdown scaling justification to this file.")] = None,
    recipe_out: Annotated[Optional[Path], typer.Option(help="Also write the chosen LoRA/QLoRA option as a recipe, with the estimate it was chosen on (advisor launch reads it).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="With --recipe-out: the training data file the recipe names (else a placeholder to fill in).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="With --recipe-out: replace an existing file.")] = False,
):
    """Which tier (API, PEFT, full fine-tune, pretrain) your data, usage and hardware call for, with costs."""
    from advisor.decide.situation import Situation
    from advisor.render.decision_text import recommend as decide
    from advisor.render.recommendation import render_recommendation, report_markdown
    from advisor.plan.sizing import bf16_note

    if tokens is None and docs is None:
        raise AdvisorError("give --tokens (e.g. 2e9) or --docs (e.g. 500k)")
    if report:
        _refuse_overwriting_inputs("--report", report, _calibration_inputs(calibration) | _path_inputs(
            "--base-model", base_model) | _path_inputs("--proposal-model", proposal_model))
    if recipe_out:
        from advisor.render.planned_recipe import check_recipe_out
        _refuse_overwriting_inputs("--recipe-out", recipe_out, _calibration_inputs(calibration) | _path_inputs(
            "--base-model", base_model) | {"--report": [report], "--data": [data]})
        check_recipe_out(recipe_out, overwrite)
    elif data is not None or overwrite:
        raise AdvisorError("--data and --overwrite apply to --recipe-out (e.g. --recipe-out plan.yaml --data train.jsonl)")
    total = tokens if tokens is not None else (docs or 0.0) * tokens_per_doc  # one of the two is given (above)
    flags = _SITUATION_FLAGS | ({} if tokens is not None else {"tokens": "--docs x --tokens-per-doc"})
    api, gpu, base_model = _catalog_names(api, gpu, base_model)  # aliases resolved once, for every option alike
    situation = _validated(Situation, flags, tokens=total, docs=docs,
                           quality=quality, requests_per_day=requests_per_day, tokens_per_request=tokens_per_request,
                           output_fraction=output_share, task=task, on_prem=on_prem, api_sufficient=not api_insufficient,
                           api=api, base_model=base_model, gpu=gpu, gpus=gpus, availability=availability,
                           budget_usd=budget, deadline_days=deadline, price_usd_per_gpu_hour=price, epochs=epochs,
                           seq_len=seq_len, monthly_budget_usd=monthly_budget, peak_to_average=peak_factor)
    from advisor.render.notices import price_notices

    priced = [catalog.get_api(api), catalog.get_gpu(gpu)]  # unknown names: one clear line
    catalog.get_model(base_model)
    proposal = None
    if proposal_model is None and (proposal_gpus or proposal_days or proposal_cost):
        raise AdvisorError("--proposal-gpus, --proposal-days and --proposal-cost need --proposal-model (e.g. 7B)")
    if proposal_model is not None:
        from advisor.decide.review import Proposal
        count, kind = _gpu_spec(proposal_gpus, gpu) if proposal_gpus else (gpus, catalog.get_gpu(gpu).name)
        proposal = _validated(Proposal, _RECOMMEND_PROPOSAL_FLAGS, model=proposal_model, method=proposal_method, gpu=kind, gpus=count,
                              days=proposal_days, cost_usd=proposal_cost, tokens=situation.tokens, epochs=epochs,
                              seq_len=seq_len, price_usd_per_gpu_hour=price)
    rec = decide(situation, _calibration(calibration), proposal)
    precision = bf16_note(catalog.get_gpu(gpu))
    notices = price_notices(([] if on_prem else priced[:1]) + ([] if price is not None else priced[1:]))
    if report:
        _write_text(report, report_markdown(rec))
    if recipe_out:
        from advisor.render.planned_recipe import planned_recipe, recipe_text
        s = rec.situation
        planned = planned_recipe(rec.options[0], s.seq_len, s.epochs, s.base_model, "advisor recommend",
                                 str(data) if data else None, recipe_out.parent)
        _write_text(recipe_out, recipe_text(planned, "recommend"))
    if as_json:
        data = to_json(rec) | {"warnings": [precision] if precision else [], "notices": notices}
        _emit_json(_finite(data))
    else:
        typer.echo(render_recommendation(rec))
        if precision:
            typer.echo(f"Warning: {precision}.")
        for line in notices:
            typer.echo(line)
        if rec.calibration:
            typer.echo(f"Calibrated with {rec.calibration}.")
        if report:
            typer.echo(f"Wrote {report}")
        if recipe_out:
            typer.echo(f"Wrote {recipe_out} (on a cluster: advisor launch {recipe_out} --target slurm)")
