"""`advisor scaling ...`: compute-optimal size, loss, repeated data, inference-aware size."""

from typing import Annotated, Optional

import typer

from advisor.formulas import scaling
from advisor.cli.app import scaling_app
from advisor.cli.options import Count, CountOrZero, JsonFlag, _emit_json, _finite
from advisor.core.errors import AdvisorError
from advisor.render import scaling as render

FitOption = Annotated[str, typer.Option(help="chinchilla-rule | hoffmann2022 | epoch2024")]


def _fit(fit: str) -> str:
    if fit not in scaling.FITS:
        raise AdvisorError(f"--fit {fit!r}: expected one of {', '.join(scaling.FITS)}")
    return fit


def _show_point(data: dict, as_json: bool, text: str) -> None:
    if as_json:
        _emit_json(_finite(data))
    else:
        typer.echo(text)


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
    if compute is not None:
        point = scaling.compute_optimal_for_compute(compute, _fit(fit))
    else:
        assert tokens is not None  # exactly one of the two was given (checked above)
        point = scaling.compute_optimal_for_tokens(tokens, _fit(fit))
    _show_point(point.as_dict(), as_json, render.optimal_text(point))


@scaling_app.command("loss")
def scaling_loss(
    params: Annotated[float, typer.Option(parser=Count, help="Model parameters, e.g. 7B.")],
    tokens: Annotated[float, typer.Option(parser=Count, help="Training tokens, e.g. 2T.")],
    fit: FitOption = "hoffmann2022",
    as_json: JsonFlag = False,
):
    """Predicted loss of N parameters trained on D tokens."""
    point = scaling.loss_at(params, tokens, _fit(fit))
    _show_point(point.as_dict(), as_json, render.loss_text(point))


@scaling_app.command("repeat")
def scaling_repeat(
    params: Annotated[float, typer.Option(parser=Count, help="Model parameters.")],
    tokens: Annotated[float, typer.Option(parser=Count, help="Total training tokens (all epochs).")],
    unique_tokens: Annotated[float, typer.Option(parser=Count, help="Unique tokens they are drawn from.")],
    as_json: JsonFlag = False,
):
    """Effective tokens and loss when D training tokens repeat U unique ones (Muennighoff et al. 2023)."""
    r = scaling.repeated_data(params, tokens, unique_tokens)
    _show_point(r.as_dict(), as_json, render.repeat_text(r))


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
    _show_point(r.as_dict(), as_json, render.inference_text(r))

