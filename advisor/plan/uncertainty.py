"""How far an estimate may be off: intervals from the leave-one-out errors of the published measurements nearest the
setup (bench/published/rows.yaml), grouped by GPU generation, method and dense/MoE.

The residuals are computed by `python bench/error_bands.py` (advisor.measure.published_fit's leave-one-out) and shipped
in advisor/catalog/data/error_bands.json; this module only chooses the group and turns its quantiles into bounds.
"""

import functools
import json
import math
from pathlib import Path

from msgspec import Struct

BANDS_FILE = Path(__file__).resolve().parents[1] / "catalog" / "data" / "error_bands.json"
# The intervals are 80%: from the 10th to the 90th percentile of log(measured / estimated) over the group's rows.
BAND_LEVEL = 0.8
# A group of fewer rows than this gives no percentile worth the name: the next wider group is used instead.
MIN_GROUP_ROWS = 8
# Where the setup's own group has too few rows, the wider group's interval is widened by this factor (in log space):
# its rows are other GPUs or methods, whose errors need not be the setup's.
WIDEN_OUTSIDE_GROUP = 1.5
ANY = "*"


def group_keys(generation: str, method: str, kind: str) -> list[str]:
    """Groups from the setup's own (generation/method/dense-or-moe) to all rows, in the order they are tried."""
    g, m, k = generation or ANY, method, kind
    return [f"{g}/{m}/{k}", f"{g}/{ANY}/{k}", f"{g}/{ANY}/{ANY}", f"{ANY}/{m}/{k}", f"{ANY}/{ANY}/{k}",
            f"{ANY}/{ANY}/{ANY}"]


def residual_quantiles(residuals: list[float]) -> tuple[float, float]:
    """The 10th and 90th percentiles of log(measured / estimated) (inclusive deciles, statistics.quantiles)."""
    import statistics  # only bench/error_bands.py computes them; `advisor recommend` reads the shipped file
    deciles = statistics.quantiles(residuals, n=10, method="inclusive")
    return deciles[0], deciles[-1]


class Band(Struct, frozen=True):
    """An 80% interval as factors on the estimate (measured / estimated), and what it rests on."""
    low: float
    high: float
    rows: int
    group: str
    extrapolating: str | None = None   # the setup is outside the measured groups: said, and the interval widened

    def rate_bounds(self, estimate: float) -> tuple[float, float]:
        """(low, high) of a quantity that grows with the measured rate (tokens/s) or is the measured one (memory)."""
        return estimate * self.low, estimate * self.high

    def time_bounds(self, estimate: float) -> tuple[float, float]:
        """(low, high) of a quantity inversely proportional to the rate: GPU-hours, dollars, wall days."""
        return estimate / self.high, estimate / self.low


def biased_note(band: "Band | None", quantity: str) -> str | None:
    """Where the whole interval lies on one side of the estimate (the nearest published rows all measured above or all
    below it), say so: the point estimate is then off in a known direction and the interval is the figure to plan on."""
    if band is None or band.low <= 1.0 <= band.high:
        return None
    side = "below" if band.high < 1.0 else "above"
    reading = {("throughput", "below"): "optimistic (slower in practice)", ("throughput", "above"): "pessimistic",
               ("memory", "below"): "pessimistic (less memory in practice)",
               ("memory", "above"): "optimistic (more memory in practice)"}[(quantity, side)]
    return (f"biased: the {band.rows} published rows nearest this setup ({band.group.replace('*', 'any')}) measured "
            f"{quantity} {band.low:.2f}-{band.high:.2f} x the estimate, all {side} it: the estimate is likely {reading}; "
            "plan on the interval (docs/accuracy.md)")


def choose_band(groups: dict, generation: str, method: str, kind: str, quantity: str) -> Band | None:
    """The interval of the first group (group_keys) with at least MIN_GROUP_ROWS rows; widened by
    WIDEN_OUTSIDE_GROUP, with a note, when that is not the setup's own group. None where no group has enough rows."""
    keys = group_keys(generation, method, kind)
    own = groups.get(keys[0], {}).get("rows", 0)
    for key in keys:
        entry = groups.get(key)
        if not entry or entry["rows"] < MIN_GROUP_ROWS:
            continue
        lo, hi = entry["low"], entry["high"]
        note = None
        if key != keys[0]:
            centre = (lo + hi) / 2
            lo, hi = centre - (centre - lo) * WIDEN_OUTSIDE_GROUP, centre + (hi - centre) * WIDEN_OUTSIDE_GROUP
            note = (f"extrapolating: {quantity} has {own} published rows for {generation or 'this GPU'} {method} "
                    f"{kind}; the interval comes from {key.replace('*', 'any')} ({entry['rows']} rows), widened "
                    f"x{WIDEN_OUTSIDE_GROUP:g}")
        return Band(math.exp(lo), math.exp(hi), entry["rows"], key, note)
    return None


@functools.cache
def shipped_bands() -> dict:
    """error_bands.json as shipped ({} where it is absent: the estimate then gives no interval and says so)."""
    return json.loads(BANDS_FILE.read_text()) if BANDS_FILE.is_file() else {}


def estimate_bands(generation: str, method: str, moe: bool) -> dict[str, Band | None]:
    """The throughput and memory intervals for a setup of this generation, method and kind."""
    data, kind = shipped_bands(), "moe" if moe else "dense"
    return {q: choose_band(data.get(q, {}), generation, method, kind, q) for q in ("throughput", "memory")}
