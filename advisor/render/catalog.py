"""`advisor catalog ...`: catalog entries as a table, with each entry's date and source; stale prices flagged."""

from advisor.catalog.load import STALE_PRICE_MONTHS, entry_price_stale
from advisor.core.numbers import human
from advisor.render import table

SOURCE_WIDTH = 60  # the table shows the start of each source; --json has it whole


def catalog_table(entries: list, columns: list[str], priced: bool = False) -> str:
    headers = columns + (["note"] if priced else [])
    rows = []
    for e in entries:
        row = [cell(_value(e, c)) for c in columns]
        if priced:
            notes = [f"price stale (>= {STALE_PRICE_MONTHS} months)"] if entry_price_stale(e) else []
            notes += ["retired"] if getattr(e, "retired", False) else []
            row.append(", ".join(notes) or "-")
        rows.append(row)
    return table(headers, rows)


def _value(entry, column: str):
    """A column of an entry: a field, or for models the counts (total, active, experts per layer / per token)."""
    if column in ("total", "active", "experts"):
        from advisor.catalog.arch import describe
        from advisor.formulas.params import param_counts
        counts = param_counts(entry)
        if column == "experts":
            a = describe(entry)
            first = next((layer.experts for layer in a.layers if layer.experts), None)
            return f"{first.count} (top-{first.per_token})" if first else None
        return human(counts.total if column == "total" else counts.active)
    value = getattr(entry, column)
    if column == "source" and isinstance(value, str) and len(value) > SOURCE_WIDTH:
        return value[:SOURCE_WIDTH - 1] + "…"
    return value


def cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and value > 10**6:
        return human(value)
    return "-" if value is None else str(value)
