"""Estimated against measured: per-run comparison, calibration fit, and leave-one-out error (no torch)."""

import json
import math
import statistics
import os
from pathlib import Path

from msgspec.structs import replace
from pydantic import BaseModel, ConfigDict, Field

from advisor.plan.calibration import Calibration, CalibrationEntry
from advisor.core.errors import AdvisorError
from advisor.formulas.flops import cost_usd, flops_utilization, gpu_hours
from advisor.formulas.quality import delta
from advisor.core.convert import to_json
from advisor.measure.runreport import EvalReport, RunReport, load_eval, load_report


class QualityDelta(BaseModel):
    """A run's eval.json (advisor eval) in brief: base and base + adapter on the same held-out rows."""

    model_config = ConfigDict(frozen=True)
    data: str = Field(description="What was evaluated: the run's held-out rows or a --data file.")
    examples: int
    base_loss: float | None
    adapter_loss: float | None
    loss_delta: float | None = Field(description="Adapter loss minus base loss (nats per target token): negative is better.")
    base_exact_match: float | None
    adapter_exact_match: float | None
    exact_match_delta: float | None = Field(description="Adapter exact-match rate minus the base's: positive is better.")
    token_f1_delta: float | None = None


def quality_delta(report: EvalReport) -> QualityDelta:
    """The quality delta over the base that `advisor compare` shows beside the run's cost."""
    tuned = report.adapter
    return QualityDelta(data=report.data, examples=report.examples, base_loss=report.base.loss,
                        adapter_loss=tuned.loss if tuned else None, loss_delta=report.loss_delta,
                        base_exact_match=report.base.exact_match,
                        adapter_exact_match=tuned.exact_match if tuned else None,
                        exact_match_delta=report.exact_match_delta,
                        token_f1_delta=delta(tuned.token_f1, report.base.token_f1) if tuned else None)


class Comparison(BaseModel):
    """One run's estimate (scaled to the tokens it really processed) beside its measurement."""

    model_config = ConfigDict(frozen=True)
    run: str
    recipe: str
    status: str = Field(default="completed", description="completed, interrupted (checkpoint saved), failed (no report.json: "
                                                 "the run stopped with an error; only the recipe is known) or running "
                                                 "(no report.json yet and another process holds the run's lock)")
    method: str
    gpu: str | None
    gpus: int
    estimated_gpu_hours: float | None
    measured_gpu_hours: float | None
    gpu_hours_ratio: float | None
    estimated_peak_memory_gib: float | None
    measured_peak_memory_gib: float | None
    memory_ratio: float | None
    estimated_tokens_per_second: float | None
    measured_tokens_per_second: float | None
    tokens_per_second_ratio: float | None
    estimated_mfu: float | None
    measured_mfu: float | None
    mfu_ratio: float | None
    measured_cost_usd: float | None = Field(default=None, description="Measured GPU-hours x the catalog price of the "
                                            "run's GPU (None on CPU or an uncatalogued GPU).")
    quality: QualityDelta | None = Field(default=None, description="The run's eval.json (advisor eval): the adapter's "
                                         "quality over the base; None: no eval yet.")


def load_reports(run_dirs: list[Path]) -> list[tuple[Path, RunReport]]:
    if not run_dirs:
        raise AdvisorError("give at least one run directory")
    return [(Path(d), load_report(Path(d))) for d in run_dirs]


def _ratio(measured: float | None, estimated: float | None) -> float | None:
    if measured is None or not estimated:
        return None
    return measured / estimated


def estimated_gpu_hours_for_run(r: RunReport) -> float | None:
    """The pre-run estimate scaled to the tokens the run really processed (an interrupted run, or padding,
    changes the work done, not the estimator's accuracy)."""
    e = r.estimate
    if e.gpu_hours is None or not e.tokens or e.gpu is None:
        return None
    return e.gpu_hours * r.processed_tokens / e.tokens


def compare_report(run: Path, r: RunReport) -> Comparison:
    e = r.estimate
    est_hours = estimated_gpu_hours_for_run(r)
    est_tps = r.tokens / (est_hours * 3600 / max(r.gpus, 1)) if est_hours else None
    est_mfu = e.efficiency * e.flops_breakdown["model"] / e.flops_per_token if e.gpu else None
    measured_memory = r.peak_memory_gib.reserved
    return Comparison(
        run=str(run), recipe=r.recipe, status=r.status, method=r.method, gpu=r.gpu_name, gpus=r.gpus,
        estimated_gpu_hours=est_hours, measured_gpu_hours=r.gpu_hours, gpu_hours_ratio=_ratio(r.gpu_hours, est_hours),
        estimated_peak_memory_gib=e.peak_memory_gib, measured_peak_memory_gib=measured_memory,
        memory_ratio=_ratio(measured_memory, e.peak_memory_gib),
        estimated_tokens_per_second=est_tps, measured_tokens_per_second=r.tokens_per_second,
        tokens_per_second_ratio=_ratio(r.tokens_per_second, est_tps),
        estimated_mfu=est_mfu, measured_mfu=r.mfu, mfu_ratio=_ratio(r.mfu, est_mfu),
        measured_cost_usd=measured_cost_usd(r), quality=_quality(run),
    )


def measured_cost_usd(r: RunReport) -> float | None:
    """What the measured GPU-hours cost at the catalog price of the run's GPU (a CPU run: None, not $0)."""
    if not r.gpus or r.gpu_name is None:
        return None
    from advisor.catalog.load import get_gpu
    try:
        price = get_gpu(r.gpu_name).price_usd_per_hour
    except AdvisorError:
        return None  # a GPU no longer in the catalog
    return cost_usd(r.gpu_hours, price) if price is not None else None


def _quality(run: Path) -> QualityDelta | None:
    report = load_eval(run) if run.is_dir() else None
    return quality_delta(report) if report is not None else None


# The lock a run holds for its lifetime (runners.rundir.LOCK; a test keeps the two names equal).
RUN_LOCK = ".rightsize-lock"


def is_running(run: Path) -> bool:
    """Another process holds the run folder's lock (an exclusive flock, held while `advisor run` trains)."""
    import fcntl
    try:
        fd = os.open(Path(run) / RUN_LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock this process took
    return False


def failed_run(run: Path) -> Comparison:
    """A directory `advisor run` started (it holds recipe.resolved.yaml) but that has no report.json: the run failed
    before it finished, or is still running when another process holds its lock (status "running"); what it was is
    known from its recipe, nothing was measured yet."""
    from advisor.plan.recipe import Recipe, read_yaml_mapping
    from pydantic import ValidationError
    try:
        recipe = Recipe.model_validate(read_yaml_mapping(run / "recipe.resolved.yaml"))
    except ValidationError as exc:
        raise AdvisorError(f"{run}: no report.json and an unreadable recipe.resolved.yaml ({exc.errors()[0]['msg']})") from None
    return Comparison(run=str(run), recipe=recipe.name, status="running" if is_running(run) else "failed",
                      method=recipe.method, gpu=None,
                      gpus=recipe.world_size, estimated_gpu_hours=None, measured_gpu_hours=None, gpu_hours_ratio=None,
                      estimated_peak_memory_gib=None, measured_peak_memory_gib=None, memory_ratio=None,
                      estimated_tokens_per_second=None, measured_tokens_per_second=None, tokens_per_second_ratio=None,
                      estimated_mfu=None, measured_mfu=None, mfu_ratio=None)


def compare_runs(run_dirs: list[Path]) -> list[Comparison]:
    """One row per run directory, in the order given: finished and interrupted runs from report.json, failed ones
    (a started directory without report.json) from their recipe."""
    if not run_dirs:
        raise AdvisorError("give at least one run directory")
    rows = []
    for run in map(Path, run_dirs):
        started = (run / "recipe.resolved.yaml").is_file() and not (run / "report.json").exists()
        rows.append(failed_run(run) if started else compare_report(run, load_report(run)))
    return rows


def median_abs_error(ratios: list[float | None]) -> float | None:
    """Median of |measured/estimated - 1| over the runs that have the ratio."""
    values = [abs(x - 1) for x in ratios if x is not None]
    return statistics.median(values) if values else None


# The formats matplotlib 3.x's savefig writes (FigureCanvasBase.get_supported_filetypes()), listed here so a wrong
# suffix is refused before the runs are read, without importing matplotlib.
PLOT_SUFFIXES = (".avif", ".eps", ".gif", ".jpeg", ".jpg", ".pdf", ".pgf", ".png", ".ps", ".raw", ".rgba", ".svg",
                 ".svgz", ".tif", ".tiff", ".webp")


def plot_path(path: Path) -> Path:
    """The file --plot writes: PATH itself when it names a file with a suffix, PATH/comparison.png for a directory,
    PATH.png otherwise (matplotlib would add the .png itself). A suffix matplotlib cannot write, or a target that is
    a directory, is one line naming --plot."""
    path = Path(path)
    target = path / "comparison.png" if path.is_dir() else path if path.suffix else path.with_name(path.name + ".png")
    if target.suffix.lower() not in PLOT_SUFFIXES:
        raise AdvisorError(f"--plot {path}: cannot write a {target.suffix} image (supported: "
                           f"{', '.join(s[1:] for s in PLOT_SUFFIXES)})", flag="--plot")
    if target.is_dir():
        raise AdvisorError(f"--plot {path}: {target} is a directory; give a file name such as comparison.png",
                           flag="--plot")
    return target


def plot_comparison(rows: list[Comparison], path: Path) -> Path:
    """Estimated against measured on log axes with y = x, one marker per method (matplotlib, optional); returns the
    path written (plot_path)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise AdvisorError("--plot needs matplotlib: pip install 'rightsize[plot]'") from None
    markers = {"lora": "o", "qlora": "s", "full": "^"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    panels = [("GPU-hours", "estimated_gpu_hours", "measured_gpu_hours"),
              ("peak memory per GPU (GiB)", "estimated_peak_memory_gib", "measured_peak_memory_gib")]
    for ax, (title, est_key, meas_key) in zip(axes, panels):
        points = [(getattr(r, est_key), getattr(r, meas_key), r.method) for r in rows
                  if getattr(r, est_key) and getattr(r, meas_key)]
        for method, marker in markers.items():
            xs = [p[0] for p in points if p[2] == method]
            ys = [p[1] for p in points if p[2] == method]
            if xs:
                ax.scatter(xs, ys, marker=marker, label=method)
        if points:
            lo = min(min(p[0], p[1]) for p in points) / 1.5
            hi = max(max(p[0], p[1]) for p in points) * 1.5
            ax.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="y = x")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no GPU runs yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("estimated")
        ax.set_ylabel("measured")
        ax.set_title(title)
    fig.tight_layout()
    path = plot_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- calibration ---------------------------------------------------------------------------------------

def run_efficiency(r: RunReport) -> float | None:
    """Achieved fraction of peak: executed FLOPs / (wall x GPUs x dense peak), the inverse of the estimate's gpu_hours."""
    if not r.peak_flops_per_gpu or not r.gpus or r.wall_seconds <= 0:
        return None
    return flops_utilization(r.executed_flops, r.wall_seconds, r.gpus, r.peak_flops_per_gpu)


def run_memory_overhead(r: RunReport) -> float | None:
    """Measured reserved peak over the estimate's peak without its overhead term, minus one."""
    base = r.estimate.peak_memory_gib - r.estimate.memory_gib["overhead"]
    if r.peak_memory_gib.reserved is None or base <= 0:
        return None
    return r.peak_memory_gib.reserved / base - 1


def _cells(reports: list[RunReport]) -> dict[tuple[str, str], list[RunReport]]:
    cells: dict[tuple[str, str], list[RunReport]] = {}
    for r in reports:
        if r.gpu_name and run_efficiency(r) is not None:
            cells.setdefault((r.gpu_name, r.method), []).append(r)
    return cells


def _entry(gpu: str, method: str, runs: list[RunReport]) -> CalibrationEntry:
    eff = [e for e in (run_efficiency(r) for r in runs) if e is not None]
    mem = [m for m in (run_memory_overhead(r) for r in runs) if m is not None] or [0.0]
    return CalibrationEntry(gpu=gpu, method=method, runs=len(runs), efficiency=statistics.median(eff),
                            efficiency_min=min(eff), efficiency_max=max(eff),
                            memory_overhead_fraction=max(0.0, statistics.median(mem)), memory_overhead_min=min(mem),
                            memory_overhead_max=max(mem))


def _predict(r: RunReport, entry: CalibrationEntry) -> tuple[float, float | None]:
    """GPU-hours and peak memory of run r as a calibration entry would have predicted them."""
    assert r.peak_flops_per_gpu, "only GPU runs (a peak to divide by) are calibrated"
    hours = gpu_hours(r.executed_flops, r.peak_flops_per_gpu, entry.efficiency)
    base = r.estimate.peak_memory_gib - r.estimate.memory_gib["overhead"]
    return hours, base * (1 + entry.memory_overhead_fraction)


def leave_one_out(reports: list[RunReport]) -> dict[str, float]:
    """Each run predicted by a calibration fitted on the other runs of its (GPU, method) cell, or, where it is
    alone in its cell, of its GPU; median |predicted/measured - 1| for GPU-hours and peak memory."""
    hours_err, mem_err = [], []
    usable = [r for r in reports if r.gpu_name and run_efficiency(r) is not None]
    for i, r in enumerate(usable):
        others = [o for j, o in enumerate(usable) if j != i]
        peers = [o for o in others if (o.gpu_name, o.method) == (r.gpu_name, r.method)] or \
                [o for o in others if o.gpu_name == r.gpu_name]
        if not peers:
            continue
        hours, memory = _predict(r, _entry(r.gpu_name or "", r.method, peers))  # usable runs name their GPU
        hours_err.append(abs(hours / r.gpu_hours - 1))
        if memory is not None and r.peak_memory_gib.reserved:
            mem_err.append(abs(memory / r.peak_memory_gib.reserved - 1))
    out = {"runs": float(len(hours_err))}
    if hours_err:
        out["gpu_hours_median_abs_error"] = statistics.median(hours_err)
    if mem_err:
        out["memory_median_abs_error"] = statistics.median(mem_err)
    return out


def run_calibration_problem(r: RunReport) -> str | None:
    """Why a GPU run's report cannot be fitted (the key and its value), or None: a run on a named GPU needs a GPU
    count, a finite positive wall time, and an efficiency in (0, 1] (above 1 the run beat the GPU's peak: a wrong
    GPU, wall time or FLOP count)."""
    if r.gpu_name is None or not r.peak_flops_per_gpu:
        return None  # a CPU run or an uncatalogued GPU: left out of the fit, as before
    if r.gpus < 1:
        return f"gpus: {r.gpus} on {r.gpu_name} (a GPU run needs 1 or more)"
    if not math.isfinite(r.wall_seconds) or r.wall_seconds <= 0:
        return f"wall_seconds: {r.wall_seconds} (needs a finite time above 0)"
    efficiency = run_efficiency(r)
    if efficiency is None or not math.isfinite(efficiency) or not 0 < efficiency <= 1:
        return (f"efficiency {efficiency:.3g} from executed_flops {r.executed_flops:.3g}, wall_seconds "
                f"{r.wall_seconds:.3g} and peak_flops_per_gpu {r.peak_flops_per_gpu:.3g} (needs a fraction in (0, 1])")
    return None


def fit_calibration(loaded: list[tuple[Path, RunReport]]) -> Calibration:
    """Per (GPU type, method): median efficiency and memory overhead over the runs, with their spread."""
    for run, r in loaded:
        if (problem := run_calibration_problem(r)) is not None:
            report = run / "report.json" if run.is_dir() else run
            raise AdvisorError(f"{report}: cannot calibrate from this run: {problem}")
    reports = [r for _, r in loaded]
    cells = _cells(reports)
    if not cells:
        raise AdvisorError("no GPU runs among these reports: calibration needs runs measured on a catalogued GPU")
    entries = [_entry(gpu, method, runs) for (gpu, method), runs in sorted(cells.items())]
    return Calibration(entries=entries, leave_one_out=leave_one_out(reports))


def save_calibration(cal: Calibration, path: Path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({k: v for k, v in to_json(cal).items() if k != "path"}, indent=2) + "\n")
    except OSError as exc:
        raise AdvisorError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


# --- calibration from published measurements ---------------------------------------------------------------------

def is_published_rows(path: Path) -> bool:
    """A published-rows file (bench/published/rows.yaml's format) rather than a run directory."""
    return Path(path).is_file() and Path(path).suffix in (".yaml", ".yml")


def calibrate_sources(paths: list[Path]) -> Calibration:
    """A calibration from run directories (per GPU type and method, as fit_calibration) and/or published-rows files
    (the step-time constants and the allocator's reserve, advisor.measure.published_fit), each with its leave-one-out error.
    Where both are given, a run's (GPU, method) cell takes precedence over the published fit."""
    from advisor.measure.published import abs_errors, estimate_rows, load_rows, row_case
    from advisor.measure.published_fit import fit_published
    if not paths:
        raise AdvisorError("give at least one run directory or published-rows file")
    row_files = [Path(p) for p in paths if is_published_rows(p)]
    run_dirs = [Path(p) for p in paths if not is_published_rows(p)]
    runs = fit_calibration(load_reports(run_dirs)) if run_dirs else Calibration()
    if not row_files:
        return runs
    rows_by_file = [(f, load_rows(f)) for f in row_files]
    first_file: dict[str, Path] = {}
    for f, rows_of_file in rows_by_file:
        for r in rows_of_file:
            if r.id in first_file:  # counted twice, and leave-one-out would fit a row with its own copy
                raise AdvisorError(f"{f}: published row id {r.id!r} is also in {first_file[r.id]}: give each row once")
            first_file[r.id] = f
    cases = [row_case(r, f.parent) for f, rows_of_file in rows_by_file for r in rows_of_file]
    files = ", ".join(map(str, row_files))
    try:
        fit = fit_published(cases)
    except AdvisorError as exc:
        raise AdvisorError(f"{files}: {exc}") from None
    rows = estimate_rows(cases, fit.constants)
    in_tput = abs_errors(r.throughput_ratio for r in rows if r.case.throughput_reason is None)
    in_mem = abs_errors(r.memory_ratio for r in rows if r.case.memory_reason is None)
    c = fit.constants
    published = {"files": files, "throughput_rows": float(fit.throughput_rows),
                 "memory_rows": float(fit.memory_rows),
                 "throughput_median_abs_error": statistics.median(in_tput),
                 "throughput_leave_one_out_median_abs_error": statistics.median(abs_errors(fit.throughput_loo.values())),
                 "memory_median_abs_error": statistics.median(in_mem) if in_mem else float("nan"),
                 "memory_leave_one_out_median_abs_error":
                     statistics.median(abs_errors(fit.memory_loo.values())) if fit.memory_loo else float("nan")}
    return replace(runs, **{
        "step_time": {"matmul_fraction_max": c.matmul_fraction_max, "matmul_half_tokens": c.matmul_half_tokens,
                      "step_fixed_s": c.step_fixed_s, "eager_traffic_factor": c.eager_traffic_factor},
        "memory_overhead_fraction": fit.overhead_fraction, "published": published})
