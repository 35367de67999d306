"""Cron schedules, evaluated in the pipeline's own time zone as cron on a real host would.

A run time is never computed in naive local time.  Across daylight-saving changes
the rules are those of Debian's cron, which the ``cronsim`` package reproduces:

- a fixed run time inside the skipped hour (``30 2 * * *`` on a spring-forward
  night in Europe/Berlin) runs once, at the first valid minute after it (03:00);
- a fixed run time inside the repeated hour runs once, at its first occurrence;
- schedules with ``*`` in the minute or hour field follow real elapsed time.

https://manpages.debian.org/bookworm/cron/cron.8.en.html (daylight saving notes)
"""

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError


class Schedule:
    """A 5-field cron expression in an IANA time zone."""

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        self.expression = expression
        self.timezone = timezone
        self._zone = zone(timezone)
        check_expression(expression)

    def next_run_after(self, timestamp: float) -> float:
        """The first scheduled run strictly after ``timestamp`` (unix seconds).

        A success at exactly a run time counts for that run, so a success at
        02:00:00 for ``0 2 * * *`` is covered, and the next run is tomorrow's.
        """
        start = datetime.fromtimestamp(timestamp, self._zone)
        return next(CronSim(self.expression, start)).timestamp()

    def previous_run(self, timestamp: float) -> float:
        """The last scheduled run at or before ``timestamp``."""
        start = datetime.fromtimestamp(timestamp, self._zone)
        return next(CronSim(self.expression, start, reverse=True)).timestamp()

    def __repr__(self) -> str:
        return f"Schedule({self.expression!r}, {self.timezone!r})"


def check_expression(expression: str) -> None:
    """Raise ValueError naming the problem if ``expression`` is not a 5-field cron."""
    if len(expression.split()) != 5:
        raise ValueError(
            f"invalid cron expression {expression!r}: expected 5 fields "
            "(minute hour day-of-month month day-of-week)"
        )
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=zone("UTC")))
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression {expression!r}: {exc}") from None


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; raise ValueError if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (expected an IANA name)") from None
