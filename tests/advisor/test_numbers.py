import math

import pytest
from hypothesis import given, strategies as st

from advisor.core.errors import AdvisorError
from advisor.core.numbers import human, parse_count, parse_quantity


@pytest.mark.parametrize("text, value", [
    ("500k", 5e5), ("2e9", 2e9), ("1.5M", 1.5e6), ("2B", 2e9), ("70e9", 70e9), ("3T", 3e12), ("1_000", 1000),
    ("1,000,000", 1e6), (" 7b ", 7e9), ("0.5", 0.5), ("1G", 1e9),
])
def test_people_notation(text, value):
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", " ", "abc", "nan", "inf", "-inf", "1e400", "2X", "--1", "1.2.3", "k", "1e", "5MM"])
def test_rejects_non_numbers(text):
    with pytest.raises(AdvisorError, match="500k"):
        parse_quantity(text)


def test_rejects_negative_and_zero():
    with pytest.raises(AdvisorError, match="greater than zero"):
        parse_quantity("-1")
    with pytest.raises(AdvisorError, match="greater than zero"):
        parse_quantity("0")
    assert parse_quantity("0", allow_zero=True) == 0


def test_count_rounds_to_int():
    assert parse_count("1.5M") == 1_500_000


def test_human():
    assert human(8.03e9) == "8.03B"
    assert human(1e8) == "100M"


@given(st.floats(min_value=1e-3, max_value=1e20, allow_nan=False))
def test_round_trip_of_repr(x):
    assert math.isclose(parse_quantity(repr(x)), x, rel_tol=1e-12)


@given(st.text())
def test_any_text_parses_or_raises_advisor_error(text):
    try:
        value = parse_quantity(text)
    except AdvisorError:
        return
    assert math.isfinite(value) and value > 0
