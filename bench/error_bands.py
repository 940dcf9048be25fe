"""Regenerate advisor/catalog/data/error_bands.json: the 80% intervals `advisor estimate` gives, from the leave-one-out
errors of the published rows (bench/published/rows.yaml) and the out-of-sample errors of the candidate rows not in the
fit (bench/published/rows_candidates.yaml: the constants never saw them), by GPU generation, method and dense/MoE;
and their coverage (each row's own error against the interval built from the other rows, the group chosen as for an
estimate). The candidates are what give Hopper and Blackwell intervals of their own (bench/published/README.md).

Usage: python bench/error_bands.py [--check]   (--check: exit 1 if the shipped file differs)
"""

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from advisor.measure.published import (  # noqa: E402
    ROWS_FILE, load_rows, row_case, row_memory_gib, row_tokens_per_second,
)
from advisor.measure.published_fit import fit_published  # noqa: E402

CANDIDATES_FILE = ROWS_FILE.with_name("rows_candidates.yaml")
from advisor.plan.uncertainty import (  # noqa: E402
    ANY, BAND_LEVEL, BANDS_FILE, MIN_GROUP_ROWS, choose_band, group_keys, residual_quantiles,
)


def residuals() -> dict[str, list[tuple[str, tuple[str, str, str], float]]]:
    """Per quantity: (row id, (generation, method, kind), log(measured / leave-one-out estimate))."""
    cases = {c.row.id: c for c in (row_case(r) for r in load_rows(ROWS_FILE))}
    fit = fit_published(list(cases.values()))
    out: dict[str, list] = {"throughput": [], "memory": []}
    for quantity, loo in (("throughput", fit.throughput_loo), ("memory", fit.memory_loo)):
        for row_id, ratio in sorted(loo.items()):
            c = cases[row_id]
            kind = "moe" if c.moe else "dense"
            out[quantity].append((row_id, (c.generation, c.row.method, kind), -math.log(ratio)))
    if CANDIDATES_FILE.is_file():  # out of sample: estimated with the constants fitted without them
        for c in (row_case(r) for r in load_rows(CANDIDATES_FILE)):
            key = (c.generation, c.row.method, "moe" if c.moe else "dense")
            if c.throughput_reason is None and (tps := row_tokens_per_second(c, fit.constants)):
                out["throughput"].append((c.row.id, key, math.log(c.row.tokens_per_second_per_gpu / tps)))
            if c.memory_reason is None and c.row.peak_memory_gib and (gib := row_memory_gib(c, fit.overhead_fraction)):
                out["memory"].append((c.row.id, key, math.log(c.row.peak_memory_gib / gib)))
    return out


def groups_of(rows) -> dict:
    members: dict[str, list[float]] = {}
    for _, (g, m, k), r in rows:
        for key in {f"{g}/{m}/{k}", f"{g}/{ANY}/{k}", f"{g}/{ANY}/{ANY}", f"{ANY}/{m}/{k}", f"{ANY}/{ANY}/{k}",
                    f"{ANY}/{ANY}/{ANY}"}:
            members.setdefault(key, []).append(r)
    out = {}
    for key, values in sorted(members.items()):
        entry = {"rows": len(values)}
        if len(values) >= MIN_GROUP_ROWS:
            entry["low"], entry["high"] = (round(x, 4) for x in residual_quantiles(values))
        out[key] = entry
    return out


def coverage(rows) -> dict:
    """The share of rows whose own error falls inside the interval built without them."""
    inside = total = 0
    for i, (_, (g, m, k), r) in enumerate(rows):
        band = choose_band(groups_of(rows[:i] + rows[i + 1:]), g, m, k, "")
        if band is None:
            continue
        total += 1
        inside += math.log(band.low) <= r <= math.log(band.high)
    return {"rows": total, "covered": round(inside / total, 3) if total else None}


def build() -> dict:
    res = residuals()
    return {"level": BAND_LEVEL, "source": "python bench/error_bands.py (leave-one-out on bench/published/rows.yaml; out-of-sample on "
                      "bench/published/rows_candidates.yaml)",
            "group_order": group_keys("generation", "method", "kind"),
            **{q: groups_of(rows) for q, rows in res.items()},
            "coverage": {q: coverage(rows) for q, rows in res.items()}}


def main() -> None:
    data = build()
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if "--check" in sys.argv:
        sys.exit(0 if BANDS_FILE.is_file() and BANDS_FILE.read_text() == text else 1)
    BANDS_FILE.write_text(text)
    print(f"wrote {BANDS_FILE}: coverage {data['coverage']}")


if __name__ == "__main__":
    main()
