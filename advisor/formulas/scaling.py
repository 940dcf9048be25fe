"""Scaling laws: compute-optimal model size, parametric loss, repeated data and inference-aware optima.

Every function cites its paper; every fit carries that paper's own constants. Units: N parameters,
D training tokens, C training FLOPs, losses in nats per token (the papers' MassiveText / C4 losses).
"""

import math
from typing import Literal

from msgspec import Struct
from msgspec.structs import asdict

from advisor.core.errors import AdvisorError

FitName = Literal["chinchilla-rule", "hoffmann2022", "epoch2024"]

# Hoffmann et al. 2022 ("Chinchilla", §3.4 and Table 3): ~20 tokens per parameter at the compute optimum.
CHINCHILLA_TOKENS_PER_PARAM = 20.0
# Kaplan et al. 2020 §2.1 / Hoffmann et al. 2022: training FLOPs ~= 6 N D (2 forward + 4 backward per parameter-token).
FLOPS_PER_PARAM_TOKEN_TRAIN = 6.0
# Kaplan et al. 2020 §2.1: a forward pass costs ~2 N FLOPs per token (what inference spends).
FLOPS_PER_PARAM_TOKEN_INFER = 2.0


class LossFit(Struct, frozen=True):
    """L(N, D) = E + A / N^alpha + B / D^beta, with one paper's fitted constants."""

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str


HOFFMANN2022 = LossFit(
    name="hoffmann2022", E=1.69, A=406.4, B=410.7, alpha=0.3392, beta=0.2849,
    source="Hoffmann et al. 2022, Training Compute-Optimal LLMs, Approach 3 (eq. 10); alpha and beta as in the "
           "paper's TeX source (the body rounds them to 0.34/0.28), per Besiroglu et al. 2024 §2",
)
EPOCH2024 = LossFit(
    name="epoch2024", E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658,
    source="Besiroglu, Erdil, Barnett, You 2024, Chinchilla Scaling: A replication attempt (Epoch AI), Table 1",
)
# Muennighoff et al. 2023, Scaling Data-Constrained LMs, Appendix (fitted on C4): the same loss form refit with
# their runs, plus the repetition half-lives R_D* and R_N*.
MUENNIGHOFF2023 = LossFit(
    name="muennighoff2023", E=math.exp(0.6254804), A=math.exp(6.255414), B=math.exp(7.3049974),
    alpha=0.3526596, beta=0.3526596,
    source="Muennighoff et al. 2023, Scaling Data-Constrained Language Models, eq. 5 and the fitted values",
)
MUENNIGHOFF_RD_STAR = 15.387756  # repetitions of data after which its value has decayed by 1/e
MUENNIGHOFF_RN_STAR = 5.309743   # likewise for parameters in excess of the compute-optimal size

LOSS_FITS = {fit.name: fit for fit in (HOFFMANN2022, EPOCH2024)}
FITS = ("chinchilla-rule", "hoffmann2022", "epoch2024")


class ScalingPoint(Struct, frozen=True):
    """A model size and token count, the training FLOPs they cost and the loss a fit predicts for them."""

    params: float
    tokens: float
    flops: float
    loss: float | None
    fit: str
    loss_fit: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def training_flops(params: float, tokens: float) -> float:
    """C = 6 N D. Source: Kaplan et al. 2020 §2.1; used throughout Hoffmann et al. 2022."""
    return FLOPS_PER_PARAM_TOKEN_TRAIN * params * tokens


def loss_fit(fit: str) -> LossFit:
    """The parametric fit behind a fit name; `chinchilla-rule` predicts losses with Hoffmann et al.'s fit."""
    if fit == "chinchilla-rule":
        return HOFFMANN2022
    try:
        return LOSS_FITS[fit]
    except KeyError:
        raise AdvisorError(f"unknown fit {fit!r}; expected one of {', '.join(FITS)}") from None


def parametric_loss(params: float, tokens: float, fit: LossFit = HOFFMANN2022) -> float:
    """L(N, D) = E + A/N^alpha + B/D^beta. Source: Hoffmann et al. 2022 eq. 2 (constants per `fit`)."""
    return fit.E + fit.A / params**fit.alpha + fit.B / tokens**fit.beta


def _allocation(fit: LossFit) -> tuple[float, float, float]:
    """G, a, b of Hoffmann et al. 2022 eq. 4: N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b."""
    G = (fit.alpha * fit.A / (fit.beta * fit.B)) ** (1 / (fit.alpha + fit.beta))
    return G, fit.beta / (fit.alpha + fit.beta), fit.alpha / (fit.alpha + fit.beta)


def compute_optimal_for_compute(compute: float, fit: str = "chinchilla-rule") -> ScalingPoint:
    """The N and D that minimise loss for C training FLOPs.

    chinchilla-rule: D = 20 N and C = 6 N D, so N = sqrt(C / 120) (Hoffmann et al. 2022, Table 3).
    Parametric fits: N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b with G = (alpha A / (beta B))^(1/(alpha+beta)),
    a = beta/(alpha+beta), b = alpha/(alpha+beta) (Hoffmann et al. 2022, eq. 4 / Appendix D.2).
    """
    lf = loss_fit(fit)
    if fit == "chinchilla-rule":
        params = math.sqrt(compute / (FLOPS_PER_PARAM_TOKEN_TRAIN * CHINCHILLA_TOKENS_PER_PARAM))
        tokens = CHINCHILLA_TOKENS_PER_PARAM * params
    else:
        G, a, b = _allocation(lf)
        params = G * (compute / FLOPS_PER_PARAM_TOKEN_TRAIN) ** a
        tokens = (compute / FLOPS_PER_PARAM_TOKEN_TRAIN) ** b / G
    return ScalingPoint(params, tokens, compute, parametric_loss(params, tokens, lf), fit, lf.name)


def compute_optimal_for_tokens(tokens: float, fit: str = "chinchilla-rule") -> ScalingPoint:
    """The model size whose compute-optimal token count is D: the largest model D tokens train well.

    chinchilla-rule: N = D / 20. Parametric fits: invert D_opt = G^-1 (C/6)^b for C, then N = C / (6 D).
    Source: Hoffmann et al. 2022, eq. 4.
    """
    lf = loss_fit(fit)
    if fit == "chinchilla-rule":
        params = tokens / CHINCHILLA_TOKENS_PER_PARAM
    else:
        G, _, b = _allocation(lf)
        compute_over_6 = (tokens * G) ** (1 / b)
        params = compute_over_6 / tokens
    return ScalingPoint(params, tokens, training_flops(params, tokens), parametric_loss(params, tokens, lf), fit, lf.name)


def loss_at(params: float, tokens: float, fit: str = "hoffmann2022") -> ScalingPoint:
    """Predicted loss of N parameters trained on D tokens, with the chosen fit (eq. 2 of Hoffmann et al. 2022)."""
    lf = loss_fit(fit)
    return ScalingPoint(params, tokens, training_flops(params, tokens), parametric_loss(params, tokens, lf), fit, lf.name)


class RepeatedData(Struct, frozen=True):
    """Muennighoff et al. 2023's accounting of D tokens drawn from U unique ones, for an N-parameter model."""

    params: float
    tokens: float
    unique_tokens: float
    epochs: float
    effective_tokens: float
    effective_params: float
    loss: float
    loss_if_unique: float

    def as_dict(self) -> dict:
        return asdict(self)


def effective_repeated_tokens(tokens: float, unique_tokens: float, rd_star: float = MUENNIGHOFF_RD_STAR) -> float:
    """D' = U + U R* (1 - exp(-R / R*)), R = D/U - 1 repetitions. Source: Muennighoff et al. 2023, eq. 4-5.

    Tokens beyond the first epoch are worth less and less; D' saturates at U (1 + R*).
    """
    if tokens <= unique_tokens:
        return tokens
    repetitions = tokens / unique_tokens - 1
    return unique_tokens + unique_tokens * rd_star * (1 - math.exp(-repetitions / rd_star))


def repeated_data(params: float, tokens: float, unique_tokens: float) -> RepeatedData:
    """Loss of N params trained on D tokens of which U are unique: Muennighoff et al. 2023, eq. 5.

    L = E + A / N'^alpha + B / D'^beta, with D' as in `effective_repeated_tokens` and N' the same decay
    applied to parameters beyond U_N, the compute-optimal size for U unique tokens (R_N* = 5.31).
    """
    fit = MUENNIGHOFF2023
    eff_tokens = effective_repeated_tokens(tokens, unique_tokens)
    G, _, b = _allocation(fit)
    optimal_params_for_unique = (unique_tokens * G) ** (1 / b) / unique_tokens
    unique_params = min(params, optimal_params_for_unique)
    excess = params / unique_params - 1
    eff_params = unique_params + unique_params * MUENNIGHOFF_RN_STAR * (1 - math.exp(-excess / MUENNIGHOFF_RN_STAR))
    return RepeatedData(
        params=params, tokens=tokens, unique_tokens=unique_tokens, epochs=tokens / unique_tokens,
        effective_tokens=eff_tokens, effective_params=eff_params,
        loss=parametric_loss(eff_params, eff_tokens, fit),
        loss_if_unique=parametric_loss(params, tokens, fit),
    )


class InferenceOptimum(Struct, frozen=True):
    """Sardana et al. 2024: the model that reaches a loss at the least training + lifetime inference FLOPs."""

    params: float
    tokens: float
    flops: float             # training FLOPs, 6 N D
    inference_flops: float   # 2 N T over the model's lifetime
    total_flops: float
    loss: float
    chinchilla_params: float
    chinchilla_tokens: float
    chinchilla_total_flops: float
    savings_fraction: float
    fit: str

    def as_dict(self) -> dict:
        return asdict(self)


def tokens_for_loss(params: float, target_loss: float, fit: LossFit) -> float:
    """D such that L(N, D) = target (inf if N alone cannot reach it): Hoffmann et al. 2022 eq. 2 solved for D."""
    gap = target_loss - fit.E - fit.A / params**fit.alpha
    return math.inf if gap <= 0 else (fit.B / gap) ** (1 / fit.beta)


def inference_aware_optimum(target_loss: float, inference_tokens: float, fit: str = "hoffmann2022") -> InferenceOptimum:
    """Minimise 6 N D_tr + 2 N D_inf subject to L(N, D_tr) = target. Source: Sardana et al. 2024,
    Beyond Chinchilla-Optimal: Accounting for Inference in LM Scaling Laws, §2 (eq. 2); solved here by a
    golden-section search over log N (the objective is unimodal along the iso-loss curve).
    With inference_tokens = 0 it reduces to the Chinchilla optimum for that loss.
    """
    lf = loss_fit(fit)
    if target_loss <= lf.E:
        raise AdvisorError(f"--loss must be above the fit's irreducible loss E = {lf.E:.4g} for {lf.name}")

    def total(log_n: float) -> float:
        n = math.exp(log_n)
        return FLOPS_PER_PARAM_TOKEN_TRAIN * n * tokens_for_loss(n, target_loss, lf) + FLOPS_PER_PARAM_TOKEN_INFER * n * inference_tokens

    def argmin(f, lo: float, hi: float) -> float:
        ratio = (math.sqrt(5) - 1) / 2
        for _ in range(200):
            x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
            lo, hi = (lo, x2) if f(x1) < f(x2) else (x1, hi)
        return (lo + hi) / 2

    # Smallest N that can reach the target at all (infinite data), then search above it.
    n_min = (lf.A / (target_loss - lf.E)) ** (1 / lf.alpha)
    lo, hi = math.log(n_min) + 1e-9, math.log(n_min) + 30
    best = math.exp(argmin(total, lo, hi))
    chin = math.exp(argmin(lambda x: FLOPS_PER_PARAM_TOKEN_TRAIN * math.exp(x) * tokens_for_loss(math.exp(x), target_loss, lf), lo, hi))
    tokens = tokens_for_loss(best, target_loss, lf)
    chin_tokens = tokens_for_loss(chin, target_loss, lf)
    train = training_flops(best, tokens)
    infer = FLOPS_PER_PARAM_TOKEN_INFER * best * inference_tokens
    chin_total = training_flops(chin, chin_tokens) + FLOPS_PER_PARAM_TOKEN_INFER * chin * inference_tokens
    return InferenceOptimum(
        params=best, tokens=tokens, flops=train, inference_flops=infer, total_flops=train + infer,
        loss=target_loss, chinchilla_params=chin, chinchilla_tokens=chin_tokens, chinchilla_total_flops=chin_total,
        savings_fraction=1 - (train + infer) / chin_total, fit=lf.name,
    )
