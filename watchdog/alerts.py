"""Alerts: when a pipeline's state deserves a notification.

An alert starts firing when its pipeline enters a problem state (``stale`` or
``missing``) and resolves when the pipeline is ``fresh`` again.  Moving between
problem states keeps the one alert firing; ``unknown`` changes nothing, so an
outage of Prometheus neither raises nor clears an alert.

The tracker keeps its state in memory: after a restart, a pipeline that is still
late is notified again.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from watchdog.freshness import FreshnessState, PipelineStatus


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


class AlertTracker:
    """Remembers which pipelines' alerts are firing, and reports changes."""

    def __init__(self) -> None:
        self._firing: dict[str, float] = {}

    def firing(self) -> Mapping[str, float]:
        """Pipeline name -> evaluation time its alert started firing."""
        return dict(self._firing)

    def update(
        self, statuses: Iterable[PipelineStatus], forgotten: Iterable[PipelineStatus] = ()
    ) -> list[AlertEvent]:
        """Apply one cycle's statuses; return the events to notify, firing ones first."""
        fired: list[AlertEvent] = []
        resolved: list[AlertEvent] = []

        for status in statuses:
            since = self._firing.get(status.pipeline)
            if status.is_problem and since is None:
                self._firing[status.pipeline] = status.evaluated_at
                fired.append(AlertEvent(AlertStatus.firing, status, status.evaluated_at))
            elif status.state is FreshnessState.fresh and since is not None:
                del self._firing[status.pipeline]
                resolved.append(AlertEvent(AlertStatus.resolved, status, since))

        # A forgotten pipeline will never be evaluated again: close its alert for good.
        for status in forgotten:
            since = self._firing.pop(status.pipeline, None)
            if since is not None:
                reason = "no longer watched: no series for longer than forget_after"
                resolved.append(AlertEvent(AlertStatus.resolved, status, since, reason))

        return fired + resolved
