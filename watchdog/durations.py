"""Durations and times as people write them in configs, and read them in alerts.

Configs take Prometheus-style durations (``500ms``, ``30s``, ``5m``, ``1h30m``,
``1d``) or a plain number of seconds.  Alerts print the two largest units
(``3h 12m``), which is what an on-call person wants at a glance.
"""

import math
import re
from datetime import UTC, datetime

# Nothing the watchdog times needs more; larger values overflow date arithmetic.
MAX_SECONDS = 10 * 365 * 86400.0

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

# Units in descending size, each at most once, as Prometheus accepts them.
_DURATION = re.compile(
    r"^(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?"
    r"(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?$"
)


def parse_duration(value: object) -> float:
    """Return ``value`` in seconds; raise ValueError naming the value if it is not one."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")

    if isinstance(value, int) and abs(value) > MAX_SECONDS:
        raise ValueError("invalid duration: longer than 10 years")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value.strip())
    else:
        raise ValueError(f"invalid duration {value!r}")

    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r:.40}: must be a finite, non-negative time")
    if seconds > MAX_SECONDS:
        raise ValueError(f"invalid duration {value!r:.40}: longer than 10 years")
    return seconds


def _parse_text(text: str) -> float:
    if len(text) > 40:
        raise ValueError(f"invalid duration {text[:40]!r}...: too long")
    try:
        return float(text)
    except ValueError:
        pass

    match = _DURATION.match(text)
    if not text or match is None or not any(match.groups()):
        raise ValueError(
            f"invalid duration {text!r} (expected e.g. 500ms, 30s, 5m, 2h, 1d or seconds)"
        )
    return sum(int(amount) * _UNITS[unit] for unit, amount in match.groupdict().items() if amount)


def format_duration(seconds: float) -> str:
    """Render seconds for people: the two largest non-zero units, e.g. ``3h 12m``."""
    if not math.isfinite(seconds):
        return "unknown"
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms" if seconds else "0s"

    # The largest unit, then the next one down if it is not zero: "3h 12m", "3h", "2d 1h".
    remaining = int(seconds)
    amounts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, remaining = divmod(remaining, size)
        amounts.append((amount, unit))

    first = next(i for i, (amount, _) in enumerate(amounts) if amount)
    shown = [f"{amount}{unit}" for amount, unit in amounts[first : first + 2] if amount]
    return " ".join(shown)


def iso_time(timestamp: float | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``; None for None or a time no calendar can show."""
    if timestamp is None:
        return None
    try:
        moment = datetime.fromtimestamp(timestamp, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None  # beyond year 9999 or NaN: such a value is reported as invalid anyway
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
