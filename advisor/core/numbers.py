"""Parse quantities as people write them: 500k, 2e9, 1.5M, 2B, 70e9, 1_000, 3T."""

import math
import re

from advisor.core.errors import AdvisorError

# Decimal suffixes, as used for token and parameter counts ("7B model", "2T tokens").
_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
# ASCII digits only: Python's float() also reads other scripts' digits ("１２" is 12), which nobody means on a command line.
_PATTERN = re.compile(r"^\s*([+-]?(?:[0-9][0-9_,]*\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE | re.ASCII)
ACCEPTED_FORM = "a number such as 500k, 2e9, 1.5M, 2B or 70e9"
# Commas are read only as thousands separators in full groups of three (1,000 and 2,500,000.5); any other comma
# (1,5 or 10,00) is a decimal comma or a typo, refused rather than read as 15 or 1000.
_THOUSANDS = re.compile(r"[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:[.eE].*)?", re.ASCII)
# The smallest magnitude accepted: nothing this tool takes (token counts, dollars, fractions, learning rates) means
# anything below it, and a product of two such values (tokens x quality) stays far from float underflow, where a
# subnormal such as 1e-320 turns into a division by zero inside a formula.
SMALLEST_MAGNITUDE = 1e-30


def parse_quantity(text: str, *, positive: bool = True, allow_zero: bool = False, form: str = ACCEPTED_FORM) -> float:
    """Parse `text` into a finite float; suffixes k/M/B(G)/T are powers of 1000.

    Raises AdvisorError (one line: what was wrong, and the accepted `form`) for anything else:
    empty strings, NaN, infinities, overflow, negatives (when `positive`) and zero (unless `allow_zero`).
    """
    if not isinstance(text, str):
        text = str(text)
    match = _PATTERN.match(text)
    if not match:
        raise AdvisorError(f"{text!r} is not {form}")
    mantissa, suffix = match.groups()
    if "," in mantissa and not _THOUSANDS.fullmatch(mantissa):
        point = mantissa.replace(",", ".", 1) if mantissa.count(",") == 1 and "." not in mantissa else None
        suggestion = f"use a decimal point ({point}{suffix}); " if point else ""
        raise AdvisorError(f"{text!r}: {suggestion}a comma is read only as a thousands separator (1,000,000); "
                           f"expected {form}")
    try:
        value = float(mantissa.replace("_", "").replace(",", "")) * _SUFFIXES[suffix.lower()]
    except (ValueError, OverflowError):
        raise AdvisorError(f"{text!r} is not {form}") from None
    if not math.isfinite(value):
        raise AdvisorError(f"{text!r} is too large; expected {form}")
    if value != 0 and abs(value) < SMALLEST_MAGNITUDE or \
            value == 0 and any(c in "123456789" for c in mantissa.split("e")[0].split("E")[0]):
        raise AdvisorError(f"{text!r} is too small (below {SMALLEST_MAGNITUDE:g}); expected {form}")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        bound = "zero or more" if allow_zero else "greater than zero"
        raise AdvisorError(f"{text!r} must be {bound}; expected {form}")
    return value


def parse_count(text: str, *, allow_zero: bool = False) -> int:
    """Parse a whole count (tokens, documents, parameters); fractions like 1.5M are fine if they land on an integer."""
    value = parse_quantity(text, allow_zero=allow_zero)
    if value > 1e30:
        raise AdvisorError(f"{text!r} is too large; expected {ACCEPTED_FORM}")
    return int(round(value))


def human(value: float, digits: int = 3) -> str:
    """Format a count the way people say it: 8.03B, 100M, 2.5k."""
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    value = abs(value)
    units = (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3))
    for i, (suffix, scale) in enumerate(units):
        if value >= scale:
            text = f"{value / scale:.{digits}g}"
            if float(text) >= 1000 and i > 0:  # 999.9M rounds to 1e+03M: say 1B
                suffix, text = units[i - 1][0], f"{value / units[i - 1][1]:.{digits}g}"
            return f"{sign}{text}{suffix}"
    return f"{sign}{value:.{digits}g}"
