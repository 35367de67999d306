"""Alerts: when a pipeline's state deserves a notification.

An alert (one per pipeline and check) starts firing when the check enters a
problem state (``stale``, ``missing``, ``never_succeeded``, ``invalid``) and
resolves when it is ``fresh`` again.  Moving between problem states keeps the one
alert firing; ``unknown`` changes nothing, so an outage of Prometheus neither
raises nor clears an alert.

Dependencies: while a pipeline's upstream (``depends_on``) is in a problem state,
the downstream pipeline's new alerts are held back, so an upstream outage pages
once, for its root cause.  When the upstream recovers, a downstream alert still
in a problem state is released and fires.  An alert already firing when its
upstream becomes late keeps firing.  Only direct upstreams count: in a chain
a -> b -> c, c is held while b is late, which b is while a is late.

The tracker keeps its state in memory: after a restart, a pipeline that is still
late is notified again.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from watchdog.freshness import FreshnessState, PipelineStatus, StatusKey

SOURCE_CHECK = "source"


class AlertStatus(StrEnum):
    firing = "firing"
    resolved = "resolved"


@dataclass(frozen=True)
class AlertEvent:
    """A change receivers are told about: an alert that started firing or resolved."""

    status: AlertStatus
    pipeline: PipelineStatus
    firing_since: float  # evaluation time at which the alert started firing
    reason: str = ""  # why it resolved, when not because the pipeline is fresh
    holding: tuple[str, ...] = ()  # downstream pipelines whose alerts this one holds back
    held_by: str = ""  # the upstream that held this alert back until now

    @property
    def is_source(self) -> bool:
        """An alert about the watchdog's own source (Prometheus), not a pipeline."""
        return self.pipeline.check == SOURCE_CHECK


class AlertTracker:
    """Remembers which alerts are firing or held back, and reports changes."""

    def __init__(self, upstreams: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self._upstreams = dict(upstreams or {})
        self._firing: dict[StatusKey, float] = {}
        self._held: dict[StatusKey, str] = {}

    def firing(self) -> dict[StatusKey, float]:
        """(pipeline, check) -> evaluation time its alert started firing."""
        return dict(self._firing)

    def held(self) -> dict[StatusKey, str]:
        """(pipeline, check) -> the late upstream pipeline holding its alert back."""
        return dict(self._held)

    def update(
        self, statuses: Iterable[PipelineStatus], forgotten: Iterable[PipelineStatus] = ()
    ) -> list[AlertEvent]:
        """Apply one cycle's statuses; return the events to notify, firing ones first."""
        statuses = list(statuses)
        late = {s.pipeline for s in statuses if s.is_problem}
        fired: list[AlertEvent] = []
        resolved: list[AlertEvent] = []

        for status in statuses:
            if status.is_problem:
                event = self._problem(status, late)
                if event is not None:
                    fired.append(event)
            elif status.state is FreshnessState.fresh:
                self._held.pop(status.key, None)
                since = self._firing.pop(status.key, None)
                if since is not None:
                    resolved.append(AlertEvent(AlertStatus.resolved, status, since))

        # A forgotten pipeline will never be evaluated again: close its alert for good.
        for status in forgotten:
            self._held.pop(status.key, None)
            since = self._firing.pop(status.key, None)
            if since is not None:
                reason = "no longer watched: no series for longer than forget_after"
                resolved.append(AlertEvent(AlertStatus.resolved, status, since, reason))

        return [self._with_holding(event) for event in fired] + resolved

    def _problem(self, status: PipelineStatus, late: set[str]) -> AlertEvent | None:
        if status.key in self._firing:
            return None

        upstream = next((u for u in self._upstreams.get(status.pipeline, ()) if u in late), None)
        if upstream is not None:
            self._held[status.key] = upstream
            return None

        held_by = self._held.pop(status.key, "")
        self._firing[status.key] = status.evaluated_at
        return AlertEvent(AlertStatus.firing, status, status.evaluated_at, held_by=held_by)

    def _with_holding(self, event: AlertEvent) -> AlertEvent:
        holding = sorted({p for (p, _), u in self._held.items() if u == event.pipeline.pipeline})
        if not holding:
            return event
        return AlertEvent(
            event.status, event.pipeline, event.firing_since, event.reason, tuple(holding)
        )
