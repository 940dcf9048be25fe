"""The fraction of dense peak a training setup achieves on a GPU: given, calibrated, or the step-time model's.

Its own module so that `advisor recommend`, which costs fine-tunes with it, does not import advisor.plan.estimate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from advisor.formulas.flops import flops_per_token
from advisor.formulas.memory import decided_sharding
from advisor.formulas.step_time import DEFAULT_STEP_TIME, step_seconds, step_work

if TYPE_CHECKING:  # annotations only
    from advisor.plan.calibration import Calibration
    from advisor.catalog.types import Gpu
    from advisor.formulas.setup import TrainingSetup


def training_efficiency(setup: TrainingSetup, gpu: Gpu | None, calibration: Calibration | None = None,
                        given: float | None = None):
    """The achieved fraction of dense peak that GPU-hours divide executed FLOPs by, and where it comes from, for a
    setup whose sharding is decided (advisor.plan.launch_plan.plan_launch): given (--efficiency), a calibration's fit for this GPU and method, or the step-time model's throughput for this setup
    on this GPU (advisor.formulas.step_time, communication included) expressed as the executed-FLOPs fraction of peak it
    implies. `advisor estimate`, `advisor recommend` and the runner's report all use this one function.
    Returns (efficiency, source, the step-time model's StepTime or None)."""
    if gpu is None:
        return (given if given is not None else 1.0), ("given (--efficiency)" if given is not None else "no GPU"), None
    constants = (calibration.step_time_constants() if calibration else None) or DEFAULT_STEP_TIME
    step = step_seconds(step_work(setup, decided_sharding(setup)), gpu, setup.compile, constants)
    if given is not None:
        return given, "given (--efficiency)", step
    calibrated = calibration.efficiency(gpu.name, setup.method) if calibration else None
    if calibration is not None and calibrated is not None:
        return calibrated, f"calibration {calibration.path}", step
    flops = flops_per_token(setup.arch, setup.seq_len, setup.method, setup.trainable_params, setup.gradient_checkpointing)
    return min(1.0, flops.total * step.tokens_per_second / gpu.peak_flops), \
        f"step-time model (advisor.formulas.step_time; {constants.source})", step
