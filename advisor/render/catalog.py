"""`advisor catalog ...`: catalog entries as a table."""

from advisor.numbers import human
from advisor.render import table


def catalog_table(entries: list, columns: list[str]) -> str:
    return table(columns, [[cell(getattr(e, c)) for c in columns] for e in entries])


def cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and value > 10**6:
        return human(value)
    return "-" if value is None else str(value)
