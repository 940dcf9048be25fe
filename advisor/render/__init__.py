"""Everything the advisor prints for people: tables and text, built from the typed results (no rich: it starts fast).

One module per command family: recommendation (recommend and its --report), estimate, compare (compare and
calibrate), text (the sentences the decision's JSON also carries). This module holds the shared cell formats.
"""

import math


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned text table with a rule under the header."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def money(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "n/a"
    if 0 < x < 0.005:  # would print as $0.00: a cost that is small, not free
        return "under $0.01"
    return f"${x:,.0f}" if x >= 100 else f"${x:,.2f}"


def hours(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "n/a"
    return f"{x:,.1f}" if x < 1000 else f"{x:,.0f}"


def gib(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"
