"""`advisor scaling ...`: the scaling laws' answers as text."""

from advisor.core.numbers import human


def optimal_text(point) -> str:
    return "\n".join([
        f"fit: {point.fit}", f"params: {human(point.params)}", f"tokens: {human(point.tokens)}",
        f"flops: {point.flops:.3g}", f"loss: {point.loss:.4f} (predicted by {point.loss_fit})",
        f"tokens per parameter: {point.tokens / point.params:.1f}"])


def loss_text(point) -> str:
    return "\n".join([f"fit: {point.loss_fit}", f"loss: {point.loss:.4f}", f"flops: {point.flops:.3g}"])


def repeat_text(r) -> str:
    return "\n".join([
        f"epochs: {r.epochs:.2f}", f"effective_tokens: {human(r.effective_tokens)} of {human(r.tokens)}",
        f"effective_params: {human(r.effective_params)}", f"loss: {r.loss:.4f} (unique data would give {r.loss_if_unique:.4f})"])


def inference_text(r) -> str:
    return "\n".join([
        f"params: {human(r.params)} trained on {human(r.tokens)} tokens ({r.tokens / r.params:.0f} per parameter)",
        f"flops: {r.flops:.3g} training + {r.inference_flops:.3g} inference = {r.total_flops:.3g}",
        f"Chinchilla-optimal for the same loss: {human(r.chinchilla_params)} params, {r.chinchilla_total_flops:.3g} FLOPs in total",
        f"saving: {r.savings_fraction:.1%}"])
