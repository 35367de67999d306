"""Rules: the settings that apply to one pipeline, resolved from the configuration.

For a pipeline, settings come from (later wins, field by field):

1. ``defaults``;
2. the first ``pipelines`` entry whose ``match`` regex matches the whole name;
3. the ``pipelines`` entry with exactly its ``name``.

A pipeline with a ``schedule`` is judged by its schedule: ``max_age`` then applies
only if one of its own entries (2 or 3) sets it, since the default ``max_age`` is
meant for pipelines without a schedule.
"""

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from watchdog.config import PipelineConfig, Settings
from watchdog.durations import format_duration
from watchdog.schedule import Schedule

# Multipliers from a pipeline's timestamp unit to seconds.
UNIT_SECONDS = {
    "seconds": 1.0,
    "milliseconds": 1e-3,
    "microseconds": 1e-6,
    "nanoseconds": 1e-9,
}


@dataclass(frozen=True, eq=False)
class PipelineRules:
    """Everything that decides one pipeline's freshness."""

    max_age: float | None
    schedule: Schedule | None
    grace: float
    forget_after: float
    unit_seconds: float
    future_tolerance: float
    expected: bool
    labels: dict[str, str] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    warn_after: float | None = None
    for_: float = 0.0
    keep_firing_for: float = 0.0
    repeat_interval: float = 0.0

    def deadline(self, last_success: float) -> float:
        """When a pipeline whose last success was at ``last_success`` becomes late.

        The earliest of ``last_success + max_age`` and, with a schedule, the first
        run after the last success plus ``grace``.  Late means the evaluation time
        is strictly after the deadline.
        """
        deadlines = []
        if self.max_age is not None:
            deadlines.append(last_success + self.max_age)
        if self.schedule is not None:
            deadlines.append(self.schedule.next_run_after(last_success) + self.grace)
        return min(deadlines)

    @cached_property
    def threshold_text(self) -> str:
        """How the threshold reads in messages: ``2h`` or ``0 2 * * * Europe/Berlin + 2h``."""
        parts = []
        if self.schedule is not None:
            schedule = self.schedule
            parts.append(
                f"schedule '{schedule.expression}' {schedule.timezone} "
                f"+ {format_duration(self.grace)} grace"
            )
        if self.max_age is not None:
            parts.append(format_duration(self.max_age))
        return " or ".join(parts)


class RuleBook:
    """Resolves and caches the rules of every pipeline under one configuration."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._by_name = {p.name: p for p in settings.pipelines if p.name is not None}
        self._patterns = [
            (re.compile(p.match), p) for p in settings.pipelines if p.match is not None
        ]
        self._include = [re.compile(p) for p in settings.discovery.include]
        self._exclude = [re.compile(p) for p in settings.discovery.exclude]
        self._cache: dict[str, PipelineRules] = {}
        self._by_entries: dict[tuple[int, ...], PipelineRules] = {}

    @cached_property
    def expected(self) -> frozenset[str]:
        """Pipelines listed by name: watched even when Prometheus has no series for them."""
        return frozenset(self._by_name)

    def watches(self, name: str) -> bool:
        """Whether a pipeline found in Prometheus is watched (expected ones always are)."""
        if name in self._by_name:
            return True
        if self._include and not any(p.fullmatch(name) for p in self._include):
            return False
        return not any(p.fullmatch(name) for p in self._exclude)

    def for_pipeline(self, name: str) -> PipelineRules:
        rules = self._cache.get(name)
        if rules is None:
            rules = self._cache[name] = self._shared(name)
        return rules

    def _shared(self, name: str) -> PipelineRules:
        # Pipelines with the same entries share one rules object: a fleet of thousands
        # under ``defaults`` is resolved (and its threshold text written) once.
        entries = self._entries(name)
        key = tuple(id(entry) for entry in entries)
        if name in self._by_name:
            return self._resolve(name, entries)
        rules = self._by_entries.get(key)
        if rules is None:
            rules = self._by_entries[key] = self._resolve(name, entries)
        return rules

    def upstreams(self) -> dict[str, tuple[str, ...]]:
        """Pipeline -> the pipelines it depends on (only those that declare any)."""
        return {name: tuple(p.depends_on) for name, p in self._by_name.items() if p.depends_on}

    def _resolve(self, name: str, entries: list[PipelineConfig]) -> PipelineRules:
        defaults = self.settings.defaults

        def pick(attribute: str, fallback: Any) -> Any:
            for entry in reversed(entries):
                value = getattr(entry, attribute)
                if value is not None:
                    return value
            return fallback

        expression = pick("schedule", None)
        timezone = pick("timezone", defaults.timezone)
        schedule = Schedule(expression, timezone) if expression else None
        own_max_age = pick("max_age", None)
        max_age = own_max_age if (own_max_age is not None or schedule) else defaults.max_age
        labels = dict(defaults.labels)
        for entry in entries:
            labels.update(entry.labels)

        return PipelineRules(
            max_age=max_age,
            schedule=schedule,
            grace=pick("grace", defaults.grace),
            forget_after=pick("forget_after", defaults.forget_after),
            unit_seconds=UNIT_SECONDS[pick("timestamp_unit", defaults.timestamp_unit)],
            future_tolerance=defaults.future_tolerance,
            expected=name in self._by_name,
            labels=labels,
            depends_on=tuple(self._by_name[name].depends_on) if name in self._by_name else (),
            warn_after=pick("warn_after", defaults.warn_after),
            for_=pick("for_", defaults.for_),
            keep_firing_for=pick("keep_firing_for", defaults.keep_firing_for),
            repeat_interval=pick("repeat_interval", defaults.repeat_interval),
        )

    def _entries(self, name: str) -> list[PipelineConfig]:
        entries = []
        pattern = next((p for regex, p in self._patterns if regex.fullmatch(name)), None)
        if pattern is not None:
            entries.append(pattern)
        if name in self._by_name:
            entries.append(self._by_name[name])
        return entries
