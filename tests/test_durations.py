import math

import pytest

from watchdog.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("2h", 7200),
        ("1d", 86400),
        ("1w", 604800),
        ("1h30m", 5400),
        ("1d2h3m4s", 93784),
        ("90", 90),
        ("1.5", 1.5),
        (" 10s ", 10),
        (45, 45),
        (0.25, 0.25),
    ],
)
def test_parse_duration_accepts_prometheus_style_and_seconds(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["2 hours", "", "h", "5x", "1m1h", "-5s", "-3", "nan", "inf", "1.5h", True, None, [1]]
)
def test_parse_duration_rejects_other_input_naming_it(text: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (59, "59s"),
        (60, "1m"),
        (11520, "3h 12m"),
        (10805, "3h"),
        (7200, "2h"),
        (90061, "1d 1h"),
        (-90, "-1m 30s"),
        (math.nan, "unknown"),
    ],
)
def test_format_duration_shows_the_two_largest_units(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
