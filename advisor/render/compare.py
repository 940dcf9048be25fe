"""`advisor compare` and `advisor calibrate`: estimated against measured, and the fitted calibration."""

import math
from pathlib import Path

from advisor.formulas.quality import delta
from advisor.plan.calibration import Calibration
from advisor.measure.compare import Comparison, median_abs_error
from advisor.measure.runreport import EvalReport
from advisor.render import money, table


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def render_comparison(rows: list[Comparison]) -> str:
    headers = ["run", "status", "method", "GPUs", "GPU-h est", "GPU-h meas", "ratio", "GiB est", "GiB meas", "ratio",
               "tok/s est", "tok/s meas", "MFU est", "MFU meas", "$ meas", "quality vs base"]
    body = [[Path(r.run).name, r.status, r.method, _where(r), _fmt(r.estimated_gpu_hours, ".4g"),
             _fmt(r.measured_gpu_hours if r.gpus else None, ".4g"),  # a CPU run has no GPU-hours, not zero
             _fmt(r.gpu_hours_ratio, ".2f"), _fmt(r.estimated_peak_memory_gib, ".1f"),
             _fmt(r.measured_peak_memory_gib, ".1f"), _fmt(r.memory_ratio, ".2f"), _fmt(r.estimated_tokens_per_second, ",.0f"),
             _fmt(r.measured_tokens_per_second, ",.0f"), _fmt(r.estimated_mfu, ".1%"), _fmt(r.measured_mfu, ".1%"),
             money(r.measured_cost_usd), quality_cell(r)]
            for r in rows]
    return table(headers, body) + "\n" + "\n".join(comparison_summary(rows))


def quality_cell(r: Comparison) -> str:
    """The adapter's quality delta over the base on held-out rows (advisor eval): loss and exact-match deltas, or
    "no eval yet" (a failed run has no adapter to evaluate)."""
    q = r.quality
    if q is None:
        return "-" if r.status in ("failed", "running") else "no eval yet"
    em = f", EM {_fmt(q.exact_match_delta, '+.1%')}" if q.exact_match_delta is not None else ""
    return f"loss {_fmt(q.loss_delta, '+.4f')}{em}"


def _where(r: Comparison) -> str:
    if r.status in ("failed", "running"):
        return f"{r.gpus} process(es)"
    return f"{r.gpus} x {r.gpu}" if r.gpu else ("cpu" if r.gpus == 0 else f"{r.gpus} x uncatalogued GPU")


def comparison_summary(rows: list[Comparison]) -> list[str]:
    """What the ratios are over, counted from the rows: GPU runs with an estimate, CPU runs (no GPU-hours to compare),
    GPU runs on a GPU missing from the catalog, interrupted runs (compared on the tokens they processed), failed runs."""
    measured = [r for r in rows if r.status not in ("failed", "running")]
    with_ratio = [r for r in measured if r.gpus > 0 and (r.gpu_hours_ratio is not None or r.memory_ratio is not None)]
    cpu = [r for r in measured if r.gpus == 0]
    unknown_gpu = [r for r in measured if r.gpus > 0 and r not in with_ratio]
    lines = []
    if with_ratio:
        hours_err = median_abs_error([r.gpu_hours_ratio for r in with_ratio])
        mem_err = median_abs_error([r.memory_ratio for r in with_ratio])
        lines.append(f"median |measured/estimated - 1| over {len(with_ratio)} GPU run(s): GPU-hours {_fmt(hours_err, '.1%')}, "
                     f"peak memory {_fmt(mem_err, '.1%')}")
    else:
        lines.append("no ratios: they need a run measured on a catalogued GPU")
    if cpu:
        lines.append(f"{len(cpu)} CPU run(s): no GPU-hours or GPU memory to compare")
    if unknown_gpu:
        lines.append(f"{len(unknown_gpu)} GPU run(s) without an estimate to compare (a GPU missing from the catalog: "
                     "add it to ~/.config/rightsize/gpus.yaml)")
    interrupted = [r for r in rows if r.status == "interrupted"]
    if interrupted:
        lines.append(f"{len(interrupted)} interrupted run(s): compared on the tokens they processed (resume with "
                     "advisor run RECIPE --out RUN --resume)")
    failed = [r for r in rows if r.status == "failed"]
    if failed:
        lines.append(f"{len(failed)} failed run(s): started but no report.json, nothing measured (the run's own output "
                     "says why)")
    running = [r for r in rows if r.status == "running"]
    if running:
        lines.append(f"{len(running)} run(s) still training (another process holds the folder's lock): nothing measured "
                     "yet; compare them when they finish")
    evaluated = [r for r in rows if r.quality is not None]
    lines.append(f"quality vs base over {len(evaluated)} evaluated run(s): held-out loss (adapter minus base, negative "
                 "is better) and exact-match rate (positive is better), from RUN/eval.json" if evaluated else
                 "quality vs base: no eval yet (advisor eval RUN scores the adapter against its base on held-out rows)")
    return lines


def render_calibration(cal: Calibration) -> str:
    rows = [[e.gpu, e.method, str(e.runs), f"{e.efficiency:.3f} ({e.efficiency_min:.3f}-{e.efficiency_max:.3f})",
             f"{e.memory_overhead_fraction:+.1%} ({e.memory_overhead_min:+.1%} to {e.memory_overhead_max:+.1%})"]
            for e in cal.entries]
    loo = cal.leave_one_out
    lines = [table(["GPU", "method", "runs", "efficiency (min-max)", "memory overhead (min to max)"], rows), ""] \
        if rows else []
    if cal.step_time:
        p, st = cal.published, cal.step_time
        lines += [f"published rows ({p['files']}): step time fitted to {int(p['throughput_rows'])} rows: matmul fraction "
                  f"{st['matmul_fraction_max']:.2f} n/(n + {st['matmul_half_tokens']:.0f}), eager traffic "
                  f"x{st['eager_traffic_factor']:.2f}, fixed {st['step_fixed_s']:.3f} s/step; median |est/meas - 1| "
                  f"tokens/s {p['throughput_median_abs_error']:.1%} (leave-one-out "
                  f"{p['throughput_leave_one_out_median_abs_error']:.1%})",
                  f"allocator reserve {_fmt(cal.memory_overhead_fraction, '.2f')} of activations + logits; peak memory "
                  f"over {int(p['memory_rows'])} rows {p['memory_median_abs_error']:.1%} (leave-one-out "
                  f"{p['memory_leave_one_out_median_abs_error']:.1%})"]
        if not rows:
            return "\n".join(lines)
    if loo.get("gpu_hours_median_abs_error") is not None:
        lines.append(f"leave-one-out over {int(loo['runs'])} run(s): median |predicted/measured - 1| GPU-hours "
                     f"{loo['gpu_hours_median_abs_error']:.1%}, peak memory {_fmt(loo.get('memory_median_abs_error'), '.1%')}")
    else:
        lines.append("leave-one-out: needs at least two runs on the same GPU type")
    return "\n".join(lines)


def render_eval(report: EvalReport, cached: bool, written: Path | None) -> str:
    """`advisor eval`: base and base + adapter side by side (loss, perplexity, matches, F1), and the deltas."""
    names = ["base"] + (["base + adapter"] if report.adapter is not None else [])
    scores = [report.base] + ([report.adapter] if report.adapter is not None else [])
    rows = [[name, _fmt(s.loss, ".4f"), _fmt(s.perplexity, ".3g"), _fmt(s.exact_match, ".1%"),
             _fmt(s.normalized_match, ".1%"), _fmt(s.token_f1, ".3f")] for name, s in zip(names, scores)]
    if report.adapter is not None:
        a, b = report.adapter, report.base
        rows.append(["delta", _fmt(report.loss_delta, "+.4f"), "", _fmt(report.exact_match_delta, "+.1%"),
                     _fmt(delta(a.normalized_match, b.normalized_match), "+.1%"), _fmt(delta(a.token_f1, b.token_f1), "+.3f")])
    lines = [f"{report.model}" + (f" + {report.adapter_path}" if report.adapter_path else "") + f" on {report.data}: "
             f"{report.examples} example(s), {report.loss_tokens:,} target tokens, {report.generated} answered "
             f"(greedy, up to {report.max_new_tokens} new tokens)",
             table(["model", "loss", "perplexity", "exact", "normalised", "token F1"], rows)]
    if report.generation_note:
        lines.append(f"no answers scored: {report.generation_note}")
    if cached:
        lines.append(f"cached: {written} matches this adapter, data and settings (evaluated in {report.seconds:.1f} s)")
    elif written:
        lines.append(f"Wrote {written} and {written.parent / 'eval' / 'rows.jsonl'} ({report.seconds:.1f} s)")
    return "\n".join(lines)
