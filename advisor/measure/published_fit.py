"""Fit the step-time constants (advisor.formulas.step_time.StepTimeConstants) to published measurements, and the
leave-one-out error that shows whether the fit generalises: each row predicted by constants fitted without it."""

import math
import statistics

from msgspec import Struct
from msgspec.structs import replace

from advisor.core.errors import AdvisorError
from advisor.measure.published import (
    RowCase, cuda_context_gib, memory_parts, memory_stat, row_memory_gib, row_tokens_per_second, row_work,
)
from advisor.formulas.step_time import DEFAULT_STEP_TIME, StepTimeConstants, StepWork

# No GEMM library reaches the datasheet peak: large bf16 matmuls run at about 0.8 of it (the H200 this project's
# device tool lends runs bf16 matrix work at about 790 of 989 TFLOP/s, /work/.library/device/README.md; cuBLAS on an
# A100 about 0.85-0.9 of 312). The fitted ceiling may not exceed this.
MAX_MATMUL_FRACTION = 0.9
# Where each constant may go: a fraction of peak, a token count, seconds, a share of the traffic.
BOUNDS = {"matmul_fraction_max": (0.2, MAX_MATMUL_FRACTION), "matmul_half_tokens": (1.0, 20000.0), "step_fixed_s": (0.0, 5.0),
          "eager_traffic_factor": (1.0, 30.0)}
# Coordinate search: each constant is scaled by these factors in turn, keeping any that lowers the loss, until none
# does at the finest scale.
SCALES = (2.0, 1.25, 1.05, 1.01)


# Leave-one-out fits each row on the others: with one row there are none.
MIN_FIT_ROWS = 2


def peak_fraction(case: RowCase, work: StepWork | None) -> float:
    """The fraction of the GPU's dense peak a row's measured tokens/s implies: its executed FLOPs per token
    (matmuls, attention, experts) x tokens/s / peak. Above 1 the figure cannot be right."""
    if work is None or case.gpu is None or case.row.tokens_per_second_per_gpu is None:
        return 0.0  # not a fit row: nothing measured to compare with the peak
    flops_per_token = (work.matmul_flops + work.attention_flops + work.expert_flops) / work.tokens_per_micro_batch
    return case.row.tokens_per_second_per_gpu * flops_per_token / case.gpu.peak_flops


def fit_rows(cases: list[RowCase]) -> list[tuple[RowCase, StepWork | None]]:
    """The rows a throughput fit may use: expressible (throughput_reason None) and not flagged implausible, with
    their work precomputed (it does not depend on the constants)."""
    return [(c, row_work(c)) for c in cases if c.throughput_reason is None and c.gpu is not None]


def log_loss(rows, constants: StepTimeConstants) -> float:
    """Mean |log(estimate / measured)| over the rows: symmetric in over- and under-estimates, robust to one outlier."""
    total = 0.0
    for case, work in rows:
        est = row_tokens_per_second(case, constants, work)
        total += abs(math.log(est / case.row.tokens_per_second_per_gpu))
    return total / len(rows)


def fit_constants(rows, start: StepTimeConstants = DEFAULT_STEP_TIME) -> StepTimeConstants:
    """Constants minimising `log_loss` by coordinate search within BOUNDS (derivative-free: the step time has a max())."""
    names = list(BOUNDS)
    best, best_loss = start, log_loss(rows, start)
    for scale in SCALES:
        improved = True
        while improved:
            improved = False
            for name in names:
                lo, hi = BOUNDS[name]
                for factor in (scale, 1 / scale):
                    value = min(hi, max(lo, (getattr(best, name) or 1e-3) * factor))
                    trial = replace(best, **{name: value})
                    loss = log_loss(rows, trial)
                    if loss < best_loss - 1e-12:
                        best, best_loss, improved = trial, loss, True
    return replace(best, source=f"fitted to {len(rows)} published rows (mean |log error| {best_loss:.3f})")


class LeaveOneOut(Struct, frozen=True):
    row_id: str
    estimate: float
    measured: float

    @property
    def ratio(self) -> float:
        return self.estimate / self.measured


def leave_one_out(rows, start: StepTimeConstants = DEFAULT_STEP_TIME) -> list[LeaveOneOut]:
    """Each row's tokens/s from constants fitted on all the other rows (started from the fit on all of them)."""
    out = []
    for i, (case, work) in enumerate(rows):
        fitted = fit_constants(rows[:i] + rows[i + 1:], start)
        estimate = row_tokens_per_second(case, fitted, work)
        if estimate is not None:  # the rows fitted are the expressible ones, so each has an estimate
            out.append(LeaveOneOut(case.row.id, estimate, case.row.tokens_per_second_per_gpu))
    return out


def overhead_rows(cases: list[RowCase]) -> list[tuple[RowCase, float, float]]:
    """Expressible rows that report reserved memory (nvidia-smi's figures less the CUDA context), with (estimate
    without the reserve, activations and logits)."""
    out = []
    for c in cases:
        stat = memory_stat(c.row)
        if c.memory_reason is None and stat in ("reserved", "device"):
            base, varied = memory_parts(c)
            base += cuda_context_gib(c.gpu) if stat == "device" else 0.0
            if varied > 0:
                out.append((c, base, varied))
    return out


def fit_overhead_fraction(rows) -> float:
    """The allocator's reserve as a fraction of the activations and logits: the median over rows of
    (measured - estimate without it) / (activations + logits); a median, so one odd row cannot move it far."""
    return statistics.median((c.row.peak_memory_gib - base) / varied for c, base, varied in rows)


def overhead_leave_one_out(rows) -> list[LeaveOneOut]:
    """Each reserved-memory row's estimate with the fraction fitted on the others."""
    out = []
    for i, (c, base, varied) in enumerate(rows):
        fraction = fit_overhead_fraction(rows[:i] + rows[i + 1:])
        out.append(LeaveOneOut(c.row.id, base + fraction * varied, c.row.peak_memory_gib))
    return out


class PublishedFit(Struct, frozen=True):
    """The constants fitted to a set of published rows, each row's estimate with them, and leave-one-out."""
    constants: StepTimeConstants
    overhead_fraction: float | None
    throughput_rows: int
    memory_rows: int
    throughput_loo: dict    # row id -> leave-one-out estimate / measured
    memory_loo: dict        # row id -> leave-one-out estimate / measured (reserved rows; allocated rows fit nothing)


def fit_published(cases: list[RowCase], start: StepTimeConstants = DEFAULT_STEP_TIME) -> PublishedFit:
    """Fit the step-time constants and the allocator's reserve to the rows, with leave-one-out for both."""
    rows = fit_rows(cases)
    if len(rows) < MIN_FIT_ROWS:
        found = f" (only {rows[0][0].row.id})" if rows else ""
        raise AdvisorError(f"{len(rows)} published row(s) with a throughput the estimator can express{found}: a fit "
                           f"needs at least {MIN_FIT_ROWS} (leave-one-out predicts each row from the others)")
    for case, work in rows:
        if (fraction := peak_fraction(case, work)) > 1:
            raise AdvisorError(f"published row {case.row.id!r}: tokens_per_second_per_gpu "
                               f"{case.row.tokens_per_second_per_gpu:g} is {fraction:.3g} x the GPU's dense "
                               "peak (an efficiency above 1): check the figure, its GPU or its GPU count")
    constants = fit_constants(rows, start)
    mem_rows = overhead_rows(cases)
    fraction = fit_overhead_fraction(mem_rows) if mem_rows else None
    tput_loo = {x.row_id: x.ratio for x in leave_one_out(rows, constants)}
    mem_loo = {x.row_id: x.ratio for x in overhead_leave_one_out(mem_rows)} if len(mem_rows) > 1 else {}
    for c in cases:  # allocated figures carry no fitted constant: out-of-sample as they are
        memory = row_memory_gib(c) if c.memory_reason is None and c.row.id not in mem_loo else None
        if memory is not None and c.row.peak_memory_gib:
            mem_loo[c.row.id] = memory / c.row.peak_memory_gib
    return PublishedFit(constants, fraction, len(rows), sum(c.memory_reason is None for c in cases), tput_loo, mem_loo)
