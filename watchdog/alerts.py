"""Alerts: the lifecycle that decides when a pipeline's state deserves a notification.

One alert per pipeline and check.  Its condition holds while the check is in a
problem state (severity ``critical``) or past ``warn_after`` (``warning``):

    inactive -> pending -> firing -> inactive (resolved)

1. When the condition starts holding the alert is **pending**; it **fires** once it
   has held for ``for`` (at once when ``for`` is 0), and receivers are notified.
2. While firing: a move from ``warning`` to ``critical`` sends an **escalation**
   (the way back does not page again); every ``repeat_interval`` since the last
   notification a **reminder** says how long it has been firing.
3. When the condition stops holding, a firing alert **resolves** once it has stayed
   clear for ``keep_firing_for`` (at once when 0); a pending one just goes away.
4. ``unknown`` (the source failed) changes nothing: no start, no resolution, no
   reminder.
5. Dependencies: while an upstream (``depends_on``) is in a problem state, a
   downstream alert stays pending, held by it, so an upstream outage pages once.
   When the upstream recovers, a downstream alert still late fires.
6. Silences: a notification due while its alert is silenced is not sent but kept
   due; when the silence ends and the alert still fires, it is sent.  An all-clear
   is sent to every receiver that was told of the firing, silence or not, so no
   incident is left open.

The records are kept by :mod:`watchdog.store`, so all of this holds across
restarts: a notified alert is not notified again, a pending alert keeps its ``for``
clock, a reminder comes at the planned time, and an alert that cleared while the
watchdog was down resolves on its first evaluation.
"""

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from watchdog.freshness import FreshnessState, PipelineStatus, StatusKey
from watchdog.logs import printable
from watchdog.routing import Router
from watchdog.rules import RuleBook
from watchdog.store import AlertRecord

log = logging.getLogger(__name__)

SOURCE_CHECK = "source"

# (labels, now) -> whether a silence covers an alert with these labels.
Silencer = Callable[[Mapping[str, str], float], bool]


class AlertStatus(StrEnum):
    firing = "firing"
    resolved = "resolved"


class EventKind(StrEnum):
    firing = "firing"  # started firing (or its notification was held by a silence until now)
    escalated = "escalated"  # warning -> critical
    reminder = "reminder"  # still firing after repeat_interval
    resolved = "resolved"


@dataclass(frozen=True)
class AlertEvent:
    """A change receivers are told about."""

    status: AlertStatus
    pipeline: PipelineStatus
    firing_since: float  # evaluation time at which the alert started firing
    reason: str = ""  # why it resolved, when not because the pipeline is fresh
    holding: tuple[str, ...] = ()  # downstream pipelines whose alerts this one holds back
    held_by: str = ""  # the upstream that held this alert back until now
    kind: EventKind = EventKind.firing
    severity: str = "critical"
    receivers: tuple[str, ...] | None = None  # None: every receiver

    @property
    def is_source(self) -> bool:
        """An alert about the watchdog's own source (Prometheus), not a pipeline."""
        return self.pipeline.check == SOURCE_CHECK


@dataclass(frozen=True)
class Transition:
    key: StatusKey
    old: str  # inactive, pending or firing
    new: str


def alert_labels(status: PipelineStatus, severity: str | None) -> dict[str, str]:
    """What silences and routes match on."""
    labels = dict(status.labels)
    labels.update(pipeline=status.pipeline, check=status.check, severity=severity or "")
    return labels


@dataclass
class _Cycle:
    """What one update produced."""

    events: list[AlertEvent] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)


class AlertTracker:
    """Runs every alert's lifecycle and remembers what changed for the store."""

    def __init__(
        self,
        rules: RuleBook,
        router: Router,
        records: Mapping[StatusKey, AlertRecord] | None = None,
        silenced: Silencer | None = None,
    ) -> None:
        self._rules = rules
        self._router = router
        self._upstreams = rules.upstreams()
        self._records: dict[StatusKey, AlertRecord] = dict(records or {})
        self._silenced = silenced or (lambda labels, now: False)
        self._changed: set[StatusKey] = set()
        self._deleted: set[StatusKey] = set()
        self.last_transitions: list[Transition] = []

    def records(self) -> dict[StatusKey, AlertRecord]:
        return dict(self._records)

    def firing(self) -> dict[StatusKey, float]:
        """(pipeline, check) -> when its alert started firing."""
        return {
            key: r.firing_since
            for key, r in self._records.items()
            if r.state == "firing" and r.firing_since is not None
        }

    def held(self) -> dict[StatusKey, str]:
        """(pipeline, check) -> the late upstream holding its alert back."""
        return {key: r.held_by for key, r in self._records.items() if r.held_by}

    def drain_changes(self) -> tuple[list[AlertRecord], list[StatusKey]]:
        """Records changed and keys deleted since the last call, for the store."""
        changed = [self._records[k] for k in sorted(self._changed) if k in self._records]
        deleted = sorted(self._deleted - set(self._records))
        self._changed.clear()
        self._deleted.clear()
        return changed, deleted

    def update(
        self,
        statuses: Iterable[PipelineStatus],
        forgotten: Iterable[PipelineStatus] = (),
        now: float | None = None,
    ) -> list[AlertEvent]:
        """Apply one cycle's statuses; return the events to notify, firing ones first."""
        statuses = list(statuses)
        forgotten = list(forgotten)
        evaluated = {s.key for s in statuses} | {s.key for s in forgotten}
        statuses = [s for s in statuses if s.state is not FreshnessState.unknown]
        if now is None:
            now = max((s.evaluated_at for s in statuses), default=0.0)
        late = {s.pipeline for s in statuses if s.is_problem}
        cycle = _Cycle()

        # An alert whose pipeline or check is no longer evaluated at all (excluded or
        # removed by a reload, or a check taken out) would otherwise fire forever.
        for key in [k for k in self._records if k not in evaluated]:
            orphan = PipelineStatus(key[0], FreshnessState.missing, now, check=key[1])
            self._resolve(orphan, now, cycle, "no longer watched: removed from the configuration")

        for status in statuses:
            if status.severity is None:
                self._clear(status, now, cycle)
            else:
                self._hold(status, now, late, cycle)

        # A forgotten pipeline will never be evaluated again: close its alert for good.
        for status in forgotten:
            reason = "no longer watched: no series for longer than forget_after"
            self._resolve(status, now, cycle, reason)

        self.last_transitions = cycle.transitions
        holding = self._holding()
        firing = [
            _with_holding(e, holding) for e in cycle.events if e.status is AlertStatus.firing
        ]
        return firing + [e for e in cycle.events if e.status is AlertStatus.resolved]

    def _holding(self) -> dict[str, tuple[str, ...]]:
        """Upstream pipeline -> the downstream pipelines it holds back (one pass)."""
        held: dict[str, set[str]] = {}
        for (pipeline, _), record in self._records.items():
            if record.held_by:
                held.setdefault(record.held_by, set()).add(pipeline)
        return {upstream: tuple(sorted(names)) for upstream, names in held.items()}

    # Condition holds --------------------------------------------------------------

    def _hold(self, status: PipelineStatus, now: float, late: set[str], cycle: _Cycle) -> None:
        record = self._records.get(status.key)
        severity = status.severity
        if record is None:
            record = AlertRecord(status.pipeline, status.check, "pending", severity, now)
            self._set(record, cycle, "inactive")

        if record.state == "pending":
            self._pending(record, status, now, late, cycle)
        else:
            self._still_firing(record, status, now, cycle)

    def _pending(
        self,
        record: AlertRecord,
        status: PipelineStatus,
        now: float,
        late: set[str],
        cycle: _Cycle,
    ) -> None:
        rules = self._rules.for_pipeline(status.pipeline)
        updated = replace(record, severity=status.severity)
        if now - record.active_since < rules.for_:
            self._set(updated, cycle)
            return

        upstream = next((u for u in self._upstreams.get(status.pipeline, ()) if u in late), None)
        if upstream is not None:
            self._set(replace(updated, held_by=upstream), cycle)
            return

        labels = alert_labels(status, status.severity)
        firing = replace(
            updated,
            state="firing",
            firing_since=now,
            held_by=None,
            receivers=self._router.receivers_for(labels),
        )
        self._set(firing, cycle, "pending")
        self._notify(firing, status, now, cycle, EventKind.firing, held_by=record.held_by or "")

    def _still_firing(
        self, record: AlertRecord, status: PipelineStatus, now: float, cycle: _Cycle
    ) -> None:
        rules = self._rules.for_pipeline(status.pipeline)
        updated = replace(record, severity=status.severity, clear_since=None)
        self._set(updated, cycle)

        escalated = record.severity == "warning" and status.severity == "critical"
        since_notified = now - (record.last_notified_at or record.firing_since or now)
        if escalated:
            self._notify(updated, status, now, cycle, EventKind.escalated)
        elif record.notify_pending:
            self._notify(updated, status, now, cycle, EventKind.firing)
        elif rules.repeat_interval and since_notified >= rules.repeat_interval:
            self._notify(updated, status, now, cycle, EventKind.reminder)

    # Condition clear --------------------------------------------------------------

    def _clear(self, status: PipelineStatus, now: float, cycle: _Cycle) -> None:
        record = self._records.get(status.key)
        if record is None:
            return
        if record.state == "pending":
            self._delete(record, cycle)
            return

        rules = self._rules.for_pipeline(status.pipeline)
        clear_since = record.clear_since if record.clear_since is not None else now
        if now - clear_since >= rules.keep_firing_for:
            self._resolve(status, now, cycle)
        elif record.clear_since is None:
            self._set(replace(record, clear_since=now), cycle)

    def _resolve(
        self, status: PipelineStatus, now: float, cycle: _Cycle, reason: str = ""
    ) -> None:
        record = self._records.get(status.key)
        if record is None:
            return
        self._delete(record, cycle)
        if record.state != "firing" or not record.receivers or record.last_notified_at is None:
            return  # nobody was told it fired: nobody needs the all-clear

        receivers = self._current(record.receivers)
        if not receivers:
            # Every receiver told of the firing was removed or renamed by a reload: the
            # all-clear goes where the alert would be routed now, rather than nowhere.
            labels = alert_labels(status, record.severity)
            receivers = self._router.receivers_for(labels)
            log.warning(
                "pipeline %s: the receivers of its firing alert are gone; all-clear to %s",
                printable(status.pipeline),
                ", ".join(receivers) or "nobody",
            )
        event = AlertEvent(
            AlertStatus.resolved,
            status,
            record.firing_since or now,
            reason,
            kind=EventKind.resolved,
            severity=record.severity or "critical",
            receivers=tuple(receivers),
        )
        cycle.events.append(event)

    # Bookkeeping ------------------------------------------------------------------

    def _notify(
        self,
        record: AlertRecord,
        status: PipelineStatus,
        now: float,
        cycle: _Cycle,
        kind: EventKind,
        held_by: str = "",
    ) -> None:
        severity = status.severity or "critical"
        if self._silenced(alert_labels(status, severity), now):
            self._set(replace(record, notify_pending=True), cycle)
            return

        # Routed again each time: an escalation to critical reaches receivers that take
        # only critical alerts, and a receiver renamed by a reload is replaced.
        routed = self._router.receivers_for(alert_labels(status, severity))
        receivers = self._current(record.receivers) + [
            name for name in routed if name not in record.receivers
        ]
        self._set(
            replace(
                record,
                notify_pending=False,
                last_notified_at=now,
                last_notified_severity=severity,
                receivers=receivers,
            ),
            cycle,
        )
        event = AlertEvent(
            AlertStatus.firing,
            status,
            record.firing_since or now,
            held_by=held_by,
            kind=kind,
            severity=severity,
            receivers=tuple(receivers),
        )
        cycle.events.append(event)

    def _current(self, receivers: list[str]) -> list[str]:
        """The receivers still configured, of those an alert was routed to."""
        known = set(self._router.names)
        return [name for name in receivers if name in known]

    def _set(self, record: AlertRecord, cycle: _Cycle, old_state: str | None = None) -> None:
        if old_state is not None:
            cycle.transitions.append(Transition(record.key, old_state, record.state))
        if self._records.get(record.key) != record:
            self._records[record.key] = record
            self._changed.add(record.key)

    def _delete(self, record: AlertRecord, cycle: _Cycle) -> None:
        cycle.transitions.append(Transition(record.key, record.state, "inactive"))
        del self._records[record.key]
        self._changed.discard(record.key)
        self._deleted.add(record.key)


def _with_holding(event: AlertEvent, holding: Mapping[str, tuple[str, ...]]) -> AlertEvent:
    held = holding.get(event.pipeline.pipeline)
    return replace(event, holding=held) if held else event
