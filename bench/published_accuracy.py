"""The published-measurements section of docs/accuracy.md: every row of bench/published/rows.yaml with its source,
the estimate (shipped constants) beside the measurement, leave-one-out, the estimator before this model
(bench/results/published_before.json), and median / worst errors by stack and GPU generation.

Called by bench/accuracy.py (which writes docs/accuracy.md); `python bench/published_accuracy.py` prints the section.
"""

import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from advisor.formulas.memory import DEFAULT_OVERHEAD_FRACTION  # noqa: E402
from advisor.measure.published import ROWS_FILE, abs_errors, error_summary, estimate_rows, load_rows, row_case  # noqa: E402
from advisor.measure.published_fit import fit_published  # noqa: E402
from advisor.formulas.step_time import DEFAULT_STEP_TIME  # noqa: E402

BEFORE = ROOT / "bench" / "results" / "published_before.json"


def fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def summary(values: list[float]) -> str:
    s = error_summary(values)
    return "-" if s is None else f"{s[0]:.1%} / {s[1]:.0%} ({s[2]})"


def interval_lines() -> list[str]:
    """The estimate's 80% intervals (advisor/catalog/data/error_bands.json, bench/error_bands.py) and their coverage."""
    from advisor.plan.uncertainty import MIN_GROUP_ROWS, WIDEN_OUTSIDE_GROUP, shipped_bands
    bands = shipped_bands()
    if not bands:
        return []
    out = ["", "### Intervals", "",
           f"`advisor estimate` gives {bands['level']:.0%} intervals: the 10th to 90th percentile of "
           "measured / estimated over the leave-one-out errors of the published rows, and the out-of-sample errors "
           "of the candidate rows, nearest the setup (GPU "
           f"generation, method, dense or MoE; the next wider group where one has fewer than {MIN_GROUP_ROWS} rows, "
           f"widened x{WIDEN_OUTSIDE_GROUP:g} and said). Coverage: each row's own leave-one-out error against the "
           "interval built from the other rows:", ""]
    for q, c in bands["coverage"].items():
        out.append(f"- {q}: {c['covered']:.0%} of {c['rows']} rows inside the {bands['level']:.0%} interval")
    out += ["", "| quantity | group (generation/method/kind) | rows | interval (measured / estimated) |", "|---|---|---|---|"]
    for q in ("throughput", "memory"):
        for key, e in bands[q].items():
            if "low" in e:
                out.append(f"| {q} | {key.replace('*', 'any')} | {e['rows']} | "
                           f"{math.exp(e['low']):.2f}-{math.exp(e['high']):.2f} |")
    return out


def candidate_lines() -> list[str]:
    """Errors of the candidate rows (bench/published/rows_candidates.yaml): verified measurements not in the fit, so
    out of sample for the shipped constants, by group."""
    path = ROWS_FILE.with_name("rows_candidates.yaml")
    if not path.is_file():
        return []
    rows = estimate_rows([row_case(r) for r in load_rows(path)])
    out = ["", "### Candidate rows: out of sample, not in the fit", "",
           f"{len(rows)} more measured runs (`bench/published/rows_candidates.yaml`, the README says why they are not "
           "in the fit yet), estimated with the shipped constants, which never saw them: |estimate / measured - 1| "
           "as median / worst (rows), and the median of estimate / measured (above 1: the estimate is optimistic). "
           "They are in the intervals below.", "",
           "| candidate rows | memory | tok/s | tok/s estimate / measured |", "|---|---|---|---|"]
    groups = [("all", lambda r: True)]
    groups += [(f"GPU: {g}", (lambda g: lambda r: r.case.generation == g)(g))  # noqa: B023 - bound by the outer lambda
               for g in sorted({r.case.generation for r in rows})]
    groups += [(f"stack: {st}", (lambda st: lambda r: r.case.row.stack == st)(st))  # noqa: B023 - bound by the outer lambda
               for st in sorted({r.case.row.stack for r in rows})]
    groups += [("MoE", lambda r: r.case.moe), ("more than 8 GPUs", lambda r: r.case.row.gpus > 8),
               ("sequences of 16k tokens or more", lambda r: (r.case.row.seq_len or 0) >= 16384)]
    for name, keep in groups:
        mem = [r for r in rows if keep(r) and r.case.memory_reason is None]
        tps = [r for r in rows if keep(r) and r.case.throughput_reason is None and r.throughput_ratio]
        if not mem and not tps:
            continue
        median = statistics.median(r.throughput_ratio for r in tps) if tps else None
        out.append(f"| {name} | {summary(abs_errors(r.memory_ratio for r in mem))} | "
                   f"{summary(abs_errors(r.throughput_ratio for r in tps))} | {fmt(median, '.2f')} |")
    return out


def section() -> list[str]:
    cases = [row_case(r) for r in load_rows(ROWS_FILE)]
    rows = estimate_rows(cases)
    fit = fit_published(cases)
    before = json.loads(BEFORE.read_text())["rows"] if BEFORE.is_file() else {}
    before_commit = json.loads(BEFORE.read_text())["commit"] if BEFORE.is_file() else "-"

    def b_ratio(r, key, measured):
        value = before.get(r.case.row.id, {}).get(key)
        return value / measured if (value and measured) else None

    c = DEFAULT_STEP_TIME
    out = ["## Published GPU measurements", "",
           f"{len(cases)} measured fine-tuning runs published by other projects, each with its configuration, source "
           "(repository, file and commit) and the quoted line, are stored in `bench/published/rows.yaml` "
           "(`bench/published/README.md`). litgpt's resource tables and PEFT's `method_comparison` results are left "
           "out on purpose: they are the held-out check. Rows flagged implausible (their notes say why: figures above "
           "the GPU's dense peak, or settings that contradict the sibling rows) are shown but kept out of every "
           "statistic, as are figures whose configuration the estimator cannot express (the reason is given).", "",
           "Shipped constants (`advisor/formulas/step_time.py` `DEFAULT_STEP_TIME`, `advisor/formulas/memory.py`), fitted to these rows "
           "by `advisor calibrate bench/published/rows.yaml`:", "",
           f"- matmuls at {c.matmul_fraction_max:.2f} x n / (n + {c.matmul_half_tokens:.0f}) of the dense peak, n the "
           f"tokens per micro-batch (refit: {fit.constants.matmul_fraction_max:.2f}, "
           f"{fit.constants.matmul_half_tokens:.0f}); the ceiling is bounded at 0.9 (no GEMM reaches the datasheet peak)",
           f"- eager elementwise traffic {c.eager_traffic_factor:.2f} x the fused minimum (refit "
           f"{fit.constants.eager_traffic_factor:.2f}); fixed cost {c.step_fixed_s:.3f} s per step (refit "
           f"{fit.constants.step_fixed_s:.3f})",
           f"- the allocator's reserve: {DEFAULT_OVERHEAD_FRACTION:.2f} of the activations and logits (refit "
           f"{fmt(fit.overhead_fraction, '.3f')}, the median over the rows that report reserved memory)", "",
           "Errors are |estimate / measured - 1|, given as median / worst (rows). In-sample uses the shipped constants; "
           "leave-one-out predicts each row from constants fitted without it (memory: only the reserve is fitted, so "
           "allocated/active figures are out-of-sample as they are). Before: the estimator at commit "
           f"`{before_commit}` (`bench/published_before.py`: fixed efficiencies 0.40/0.35/0.25, the old catalog, no "
           "terms for pure bf16, bf16 adapters, offloading, FSDP buffers or the stacks' losses).", ""]

    groups = [("all", lambda r: True)]
    groups += [(f"stack: {s}", (lambda s: lambda r: r.case.row.stack == s)(s))  # noqa: B023 - bound by the outer lambda
               for s in sorted({c.row.stack for c in cases})]
    groups += [(f"GPU: {g}", (lambda g: lambda r: r.case.generation == g)(g))  # noqa: B023 - bound by the outer lambda
               for g in sorted({c.generation for c in cases})]
    groups += [(f"method: {m}", (lambda m: lambda r: r.case.row.method == m)(m))  # noqa: B023 - bound by the outer lambda
               for m in ("full", "lora", "qlora")]
    groups += [("MoE", lambda r: r.case.moe), ("dense", lambda r: not r.case.moe),
               ("more than 8 GPUs", lambda r: r.case.row.gpus > 8),
               ("sequences of 16k tokens or more", lambda r: (r.case.row.seq_len or 0) >= 16384)]
    out += ["| rows | memory in-sample | memory leave-one-out | memory before | tok/s in-sample | tok/s leave-one-out | "
            "tok/s before |", "|---|---|---|---|---|---|---|"]
    for name, keep in groups:
        mem = [r for r in rows if keep(r) and r.case.memory_reason is None]
        tps = [r for r in rows if keep(r) and r.case.throughput_reason is None]
        if not mem and not tps:
            continue
        out.append("| " + " | ".join([
            name, summary(abs_errors(r.memory_ratio for r in mem)),
            summary(abs_errors(fit.memory_loo.get(r.case.row.id) for r in mem)),
            summary(abs_errors(b_ratio(r, "memory_gib", r.case.row.peak_memory_gib) for r in mem)),
            summary(abs_errors(r.throughput_ratio for r in tps)),
            summary(abs_errors(fit.throughput_loo.get(r.case.row.id) for r in tps)),
            summary(abs_errors(b_ratio(r, "tokens_per_second", r.case.row.tokens_per_second_per_gpu) for r in tps)),
        ]) + " |")

    out += candidate_lines()
    out += interval_lines()
    out += ["", "### Every row", "",
            "Memory in GiB per GPU, throughput in tokens/s per GPU; ratios are estimate / measured "
            "(LOO: leave-one-out, before: the old estimator). A reason instead of a ratio: the figure is not compared.",
            "", "| row | stack | setup | GPUs | GiB meas | GiB est | ratio | LOO | before | tok/s meas | tok/s est | "
            "ratio | LOO | before |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        row, case = r.case.row, r.case
        setup = f"{row.model} {row.method}" + (f" r{row.lora_rank}" if row.lora_rank else "") + \
            f", {row.micro_batch} x {row.seq_len}" + (" ckpt" if row.gradient_checkpointing else "")
        mem_cols = [fmt(row.peak_memory_gib, ".1f"), fmt(r.memory_gib, ".1f")]
        mem_cols += ([fmt(r.memory_ratio, ".2f"), fmt(fit.memory_loo.get(row.id), ".2f"),
                      fmt(b_ratio(r, "memory_gib", row.peak_memory_gib), ".2f")]
                     if case.memory_reason is None else [case.memory_reason, "", ""])
        tps_cols = [fmt(row.tokens_per_second_per_gpu, ",.0f"), fmt(r.tokens_per_second, ",.0f")]
        tps_cols += ([fmt(r.throughput_ratio, ".2f"), fmt(fit.throughput_loo.get(row.id), ".2f"),
                      fmt(b_ratio(r, "tokens_per_second", row.tokens_per_second_per_gpu), ".2f")]
                     if case.throughput_reason is None else [case.throughput_reason, "", ""])
        gpus = f"{row.gpus} x {case.gpu.name if case.gpu else (row.gpu or 'unstated')}"
        out.append("| " + " | ".join([row.id, row.stack, setup, gpus, *mem_cols, *tps_cols]) + " |")

    misses = [r for r in rows if (r.case.memory_reason is None and abs(r.memory_ratio - 1) > 0.3)
              or (r.case.throughput_reason is None and abs(r.throughput_ratio - 1) > 0.3)]
    out += ["", "### Rows the model still misses by more than 30%", ""]
    out += [f"- `{r.case.row.id}`: memory {fmt(r.memory_ratio, '.2f')}, tokens/s {fmt(r.throughput_ratio, '.2f')}"
            for r in misses] or ["- none"]
    out += ["", "### Sources", "", "| row | source | quoted |", "|---|---|---|"]
    for case in cases:
        quote = case.row.quote.replace("|", "\\|").replace("\n", " ")
        out.append(f"| {case.row.id} | {case.row.source.replace('|', '/')} | {quote} |")
    return out


if __name__ == "__main__":
    print("\n".join(section()))
