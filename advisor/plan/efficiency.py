"""The rate a training setup runs at on a GPU: given, calibrated, or the step-time model's; and its GPU-hours.

Its own module so that `advisor recommend`, which costs fine-tunes with it, does not import advisor.plan.estimate.
`advisor estimate`, `advisor recommend`, `advisor review` and the runner's report all use `training_rate`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from msgspec import Struct

from advisor.formulas.flops import flops_per_token, gpu_hours_at_rate
from advisor.formulas.memory import decided_sharding
from advisor.formulas.step_time import DEFAULT_STEP_TIME, StepTime, step_seconds, step_work

if TYPE_CHECKING:  # annotations only
    from advisor.plan.calibration import Calibration
    from advisor.catalog.types import Gpu
    from advisor.formulas.setup import TrainingSetup


class TrainingRate(Struct, frozen=True):
    """How fast one GPU trains a setup, and where the figure comes from."""
    efficiency: float                 # flops_per_token().total x tokens/s / dense peak
    source: str
    tokens_per_second: float | None   # per GPU (None: no GPU)
    step: StepTime | None             # the step-time model's terms (also beside a given or calibrated efficiency)

    def gpu_hours(self, tokens: float) -> float:
        """GPU-hours to train on `tokens` tokens at this rate (0 with no GPU: a CPU run costs none)."""
        return gpu_hours_at_rate(tokens, self.tokens_per_second) if self.tokens_per_second else 0.0


def training_rate(setup: TrainingSetup, gpu: Gpu | None, calibration: Calibration | None = None,
                  given: float | None = None) -> TrainingRate:
    """The rate of a setup whose sharding is decided (advisor.plan.launch_plan.plan_launch) on `gpu`: given
    (--efficiency) or a calibration's fit for this GPU and method, as a fraction of peak over the setup's FLOPs per
    token (advisor.formulas.flops); otherwise the step-time model's tokens/s (advisor.formulas.step_time,
    communication included), whose efficiency is the same FLOPs per token times that rate over the peak. Never capped:
    GPU-hours come from the tokens/s; where the FLOPs per token count more than a step executes (full-context attention
    in PaLM's counting, which a causal kernel halves) the fraction can pass the matmul ceiling, and the estimate says
    so (advisor.plan.estimate)."""
    if gpu is None:
        return TrainingRate(given if given is not None else 1.0,
                            "given (--efficiency)" if given is not None else "no GPU", None, None)
    constants = (calibration.step_time_constants() if calibration else None) or DEFAULT_STEP_TIME
    work = step_work(setup, decided_sharding(setup))
    step = step_seconds(work, gpu, setup.compile, constants)
    calibrated = calibration.efficiency(gpu.name, setup.method) if calibration and given is None else None
    fixed = given if given is not None else calibrated
    if fixed is not None:
        flops = flops_per_token(setup.arch, setup.seq_len, setup.method, setup.trainable_params,
                                setup.gradient_checkpointing)
        source = "given (--efficiency)" if given is not None else f"calibration {calibration.path}"  # type: ignore[union-attr]
        return TrainingRate(fixed, source, gpu.peak_flops * fixed / flops.total, step)
    flops = flops_per_token(setup.arch, setup.seq_len, setup.method, setup.trainable_params, setup.gradient_checkpointing)
    efficiency = flops.total * step.tokens_per_second / gpu.peak_flops
    return TrainingRate(efficiency, f"step-time model (advisor.formulas.step_time; {constants.source})",
                        step.tokens_per_second, step)


def training_efficiency(setup: TrainingSetup, gpu: Gpu | None, calibration: Calibration | None = None,
                        given: float | None = None):
    """(efficiency, source, StepTime or None) of `training_rate`."""
    rate = training_rate(setup, gpu, calibration, given)
    return rate.efficiency, rate.source, rate.step
