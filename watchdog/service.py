"""The watchdog's main job: one evaluation cycle, and the state kept between cycles.

A cycle runs the built-in last-success query, one query per custom check and,
when enabled, the Pushgateway query; decides every pipeline's state; updates the
metrics; turns state changes into alert events and hands them to the dispatcher.

A failed last-success query marks every pipeline ``unknown`` and changes no alert;
after ``source_failure_alert_after`` such cycles in a row the watchdog raises its
own "cannot evaluate" alert, resolved by the next successful cycle.  A failed
custom-check query makes only that check ``unknown``.
"""

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from watchdog.alertmanager import AlertmanagerPush, AlertmanagerPusher
from watchdog.alerts import (
    SOURCE_CHECK,
    AlertEvent,
    AlertStatus,
    AlertTracker,
    EventKind,
    alert_labels,
)
from watchdog.config import AlertmanagerReceiverConfig, CheckConfig, Settings
from watchdog.delivery import Dispatcher, Policy
from watchdog.durations import iso_time
from watchdog.exceptions import InvalidResponse, SourceError, StoreError
from watchdog.freshness import (
    LAST_SUCCESS,
    CheckResult,
    Evaluation,
    FreshnessState,
    PipelineStatus,
    PushTimes,
    StatusKey,
    evaluate,
    observations,
    push_times,
    unknown,
)
from watchdog.logs import printable
from watchdog.metrics import WatchdogMetrics
from watchdog.notifications import explain, subject
from watchdog.prometheus import PrometheusClient, QueryResult
from watchdog.queries import SIGNAL_LABEL, check_query, last_success_query, push_query
from watchdog.receivers import build_receiver
from watchdog.routing import Router
from watchdog.rules import RuleBook
from watchdog.silences import SilenceBook
from watchdog.store import AlertRecord, StateStore
from watchdog.transport import new_session

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# Where the state file keeps when the watchdog's own "cannot evaluate" alert fired.
SOURCE_ALERT_META = "source_alert_since"


@dataclass(frozen=True)
class CycleOutcome:
    """What one cycle did: for logs, tests and the health endpoints."""

    results: dict[StatusKey, PipelineStatus]
    events: list[AlertEvent] = field(default_factory=list)
    error: SourceError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def statuses(self) -> dict[str, PipelineStatus]:
        """The built-in check's status per pipeline."""
        return {p: s for (p, check), s in self.results.items() if check == LAST_SUCCESS}


class Watchdog:
    """Evaluates pipelines against Prometheus and notifies receivers of changes."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = time.time,
        metrics: WatchdogMetrics | None = None,
        client: PrometheusClient | None = None,
        store: StateStore | None = None,
        silences: SilenceBook | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.rules = RuleBook(settings)
        self.metrics = metrics or WatchdogMetrics(r.name for r in settings.receivers)
        self.client = client or PrometheusClient.from_config(settings.prometheus)
        # An Alertmanager is kept in sync every cycle rather than sent each change.
        receivers = [
            build_receiver(r, new_session())
            for r in settings.receivers
            if not isinstance(r, AlertmanagerReceiverConfig)
        ]
        self.pushers = [
            AlertmanagerPush(
                AlertmanagerPusher(
                    r, new_session(), evaluation_interval=settings.evaluation_interval
                ),
                self.metrics,
            )
            for r in settings.receivers
            if isinstance(r, AlertmanagerReceiverConfig)
        ]
        policies = {
            r.name: Policy(tuple(r.group_by), r.max_alerts, r.send_resolved)
            for r in settings.receivers
        }
        self.dispatcher = Dispatcher(
            receivers, self.metrics, clock, policies, store=store, config=settings.delivery
        )

        # Without a store (``check``, tests) alert state lives only in this object.
        self.store = store
        self.silences = silences
        records = store.load_alerts() if store is not None else {}
        self.tracker = AlertTracker(
            self.rules, Router(settings.receivers), records, silenced=self._silenced
        )

        self._lock = threading.Lock()
        self._results: dict[StatusKey, PipelineStatus] = {}
        self._last_known: dict[StatusKey, PipelineStatus] = {}  # from the last good cycle
        self._known_states: dict[StatusKey, FreshnessState] = {}
        # The watchdog's own alert is kept in the state file too, so a restart neither
        # pages it twice nor forgets to resolve it.
        self._source_alert_since: float | None = _stored_time(store, SOURCE_ALERT_META)
        self._unsaved: set[StatusKey] | None = None  # deletions not yet written, after a failure
        self.failures_in_a_row = 0
        self.cycles = 0
        self.last_cycle_at: float | None = None

    def results(self) -> dict[StatusKey, PipelineStatus]:
        """The latest status of every pipeline and check (safe from other threads)."""
        with self._lock:
            return dict(self._results)

    def alerts_view(self) -> list[dict[str, Any]]:
        """Every watched pipeline and check with its alert, for ``GET /api/v1/alerts``."""
        now = self.clock()
        records = self.tracker.records()
        view = []
        for key, status in sorted(self.results().items()):
            record = records.get(key)
            severity = record.severity if record else status.severity
            labels = alert_labels(status, severity)
            silence = self.silences.silencing(labels, now) if self.silences else None
            view.append(
                {
                    "pipeline": status.pipeline,
                    "check": status.check,
                    "state": str(status.state),
                    "alert": record.state if record else "inactive",
                    "severity": severity,
                    "since": iso_time(record.active_since if record else None),
                    "firing_since": iso_time(record.firing_since if record else None),
                    "age_seconds": None if status.age is None else round(status.age, 3),
                    "threshold": status.threshold,
                    "next_deadline": iso_time(status.deadline),
                    "last_success": iso_time(status.last_success),
                    "silenced_by": silence.id if silence else None,
                    "silence_comment": silence.comment if silence else None,
                    "silenced_until": iso_time(silence.ends_at) if silence else None,
                    "held_by": record.held_by if record else None,
                    "last_notified_at": iso_time(record.last_notified_at if record else None),
                    "receivers": list(record.receivers) if record else [],
                    "labels": status.labels,
                }
            )
        return view

    def statuses(self) -> dict[str, PipelineStatus]:
        """The latest built-in check's status per pipeline (safe from other threads)."""
        return {p: s for (p, check), s in self.results().items() if check == LAST_SUCCESS}

    def evaluate(self, *, at: float | None = None, pipelines: Sequence[str] = ()) -> Evaluation:
        """Query Prometheus and decide every state; raise SourceError if the main query fails.

        ``at`` evaluates as of a past instant; ``pipelines`` limits the built-in
        check to those names (for ``check --pipeline``).
        """
        settings = self.settings
        query = last_success_query(settings, pipelines)
        main = self._reduce(LAST_SUCCESS, self._query(query, at), newest=True)

        results = [main]
        failed: set[str] = set()
        for check in settings.checks:
            try:
                answer = self._query(check_query(check, settings), at)
                results.append(self._reduce(check.name, answer, newest=check.type != "age"))
            except SourceError as exc:
                self._check_failed(check, exc)
                failed.add(check.name)

        checks = {check.name: check for check in settings.checks}
        evaluation = evaluate(results, self.rules, self.results(), checks, self._pushes(at))
        return self._keep_unknown(evaluation, failed)

    def _query(self, expr: str, at: float | None) -> QueryResult:
        result = self.client.query(expr, at=at)
        if result.warnings:
            self.metrics.query_warnings.labels("partial" if result.partial else "other").inc()
        for warning in result.warnings:
            log.warning("Prometheus warned about a query: %s", printable(warning, limit=500))
        if result.partial:
            # Data may be missing: pipelines that are absent could look missing.
            log.warning("Prometheus says the answer is partial; states may be incomplete")
        return result

    def _reduce(self, check: str, result: QueryResult, *, newest: bool) -> CheckResult:
        evaluated_at = result.evaluated_at
        if evaluated_at is None:
            # Every query ends in ``or vector(time())``: an empty answer is not Prometheus's.
            raise InvalidResponse("empty answer to a query that always has a sample")
        settings = self.settings
        carry = settings.carry_labels if check == LAST_SUCCESS else []
        observed = observations(result, settings.pipeline_label, carry, newest)
        return CheckResult(check=check, evaluated_at=evaluated_at, observed=observed)

    def _pushes(self, at: float | None) -> dict[str, PushTimes] | None:
        if not self.settings.pushgateway_signals:
            return None
        try:
            result = self._query(push_query(self.settings), at)
        except SourceError as exc:
            self.metrics.query_errors.labels(exc.kind).inc()
            log.warning("Pushgateway signals not read this cycle (%s): %s", exc.kind, exc)
            return None
        return push_times(result, self.settings.pipeline_label, SIGNAL_LABEL)

    def _check_failed(self, check: CheckConfig, exc: SourceError) -> None:
        self.metrics.query_errors.labels(exc.kind).inc()
        log.warning(
            "check %s: query failed (%s): %s; its results are unknown", check.name, exc.kind, exc
        )

    def _keep_unknown(self, evaluation: Evaluation, failed: set[str]) -> Evaluation:
        """Carry the statuses of checks whose query failed as ``unknown``."""
        if not failed:
            return evaluation
        results = dict(evaluation.results)
        for key, status in self.results().items():
            if key[1] in failed:
                results[key] = replace(status, state=FreshnessState.unknown)
        return Evaluation(results=results, forgotten=evaluation.forgotten)

    def run_cycle(self) -> CycleOutcome:
        """Evaluate, update metrics and alerts, and deliver what is due."""
        started = self.clock()
        try:
            evaluation = self.evaluate()
        except SourceError as exc:
            outcome = self._failed(exc, started)
        else:
            outcome = self._evaluated(evaluation)

        try:
            # The daemon's workers deliver in the background; without them, send now.
            if not self.dispatcher.running:
                self.dispatcher.deliver_due()
        except Exception:
            # Keep the daemon evaluating; the defect is logged with its traceback.
            log.exception("delivering notifications failed")

        finished = self.clock()
        self.metrics.evaluation_duration.observe(max(finished - started, 0.0))
        with self._lock:
            self.cycles += 1
            self.last_cycle_at = finished
        return outcome

    def _evaluated(self, evaluation: Evaluation) -> CycleOutcome:
        results = evaluation.results
        self._log_changes(evaluation)

        now = max((s.evaluated_at for s in results.values()), default=self.clock())
        events = self.tracker.update(results.values(), evaluation.forgotten, now)
        events += self._source_recovered(now)
        self._persist(events, now)

        with self._lock:
            self._results = results
        self._last_known = results
        self._push(events, now)
        if self.failures_in_a_row:
            log.info("Prometheus answers again after %d failed cycles", self.failures_in_a_row)
        self.failures_in_a_row = 0
        self.metrics.observe_statuses(results.values())
        self.metrics.evaluations.labels("success").inc()
        self.metrics.prometheus_up.set(1)
        self.metrics.last_evaluation.set(self.clock())
        return CycleOutcome(results=results, events=events)

    def inherit(self, old: "Watchdog") -> None:
        """Carry a running watchdog's state into this one, built from a new config."""
        self.tracker = AlertTracker(
            self.rules, Router(self.settings.receivers), old.tracker.records(), self._silenced
        )
        with old._lock:
            self._results = dict(old._results)
        self._last_known = old._last_known
        self._known_states = dict(old._known_states)
        self._source_alert_since = old._source_alert_since
        self._unsaved = old._unsaved
        self.failures_in_a_row = old.failures_in_a_row
        self.cycles = old.cycles
        self.last_cycle_at = old.last_cycle_at
        # An unchanged Alertmanager receiver keeps what it must still re-send.
        kept = {p.pusher.name: p for p in old.pushers}
        self.pushers = [kept.get(p.pusher.name, p) for p in self.pushers]

    def _silenced(self, labels: Mapping[str, str], now: float) -> bool:
        # Silences are timed by the local clock, as people set them; ``now`` is
        # Prometheus's evaluation time and only differs by clock skew.
        return (
            self.silences is not None and self.silences.silencing(labels, self.clock()) is not None
        )

    def _persist(self, events: list[AlertEvent], now: float) -> None:
        """Store what the lifecycle changed and the notifications it decided, together.

        One transaction holds both, so after a kill at any point a restart neither
        sends the same news twice nor loses what was decided; only then are the
        notifications queued for sending.  If the write fails they are sent anyway.
        """
        entries = self.dispatcher.prepare(events, now)
        changed, deleted = self.tracker.drain_changes()
        for transition in self.tracker.last_transitions:
            self.metrics.alert_transitions.labels(transition.old, transition.new).inc()
        self.metrics.observe_alerts(self.tracker.records().values())
        if self.silences is not None:
            self.metrics.silences_active.set(len(self.silences.active(self.clock())))
        if self.store is None:
            self.dispatcher.enqueue(entries)
            return
        if self._unsaved is not None:
            # The last write failed: write everything, so the file cannot keep old rows.
            changed = list(self.tracker.records().values())
            deleted = sorted(self._unsaved | set(deleted))
        try:
            self.store.save_alerts(changed, deleted, entries)
        except (StoreError, ValueError) as exc:
            # Keep evaluating and notifying from memory; the state file catches up later.
            log.error("alert state not saved (%d changes): %s", len(changed) + len(deleted), exc)
            self._unsaved = set(deleted) | (self._unsaved or set())
        else:
            self._unsaved = None
        self.dispatcher.enqueue(entries)

    def _failed(self, exc: SourceError, started: float) -> CycleOutcome:
        self.failures_in_a_row += 1
        log.warning(
            "Prometheus query failed (%s, %d in a row): %s; pipelines are unknown until it works",
            exc.kind,
            self.failures_in_a_row,
            exc,
        )
        results = unknown(self.results(), self.rules, started)
        with self._lock:
            self._results = results
        self.metrics.evaluations.labels("error").inc()
        self.metrics.query_errors.labels(exc.kind).inc()
        self.metrics.prometheus_up.set(0)
        self.metrics.pipelines.mark_unknown()

        events = self._source_failing(exc, started)
        if events:
            self._persist(events, started)
        # Keep Alertmanager's alerts alive through the outage, or it would resolve them.
        self._push(events, started)
        return CycleOutcome(results=results, events=events, error=exc)

    def _push(self, events: list[AlertEvent], now: float) -> None:
        """Send every Alertmanager receiver the alerts firing for it, and new all-clears."""
        if not self.pushers:
            return
        records = self.tracker.records()
        for push in self.pushers:
            name = push.pusher.name
            firing = [
                (self._last_known[key], record)
                for key, record in records.items()
                if record.state == "firing"
                and name in record.receivers
                and not record.notify_pending
                and key in self._last_known
            ]
            if self._source_alert_since is not None:
                since = self._source_alert_since
                source = AlertRecord("", SOURCE_CHECK, "firing", "critical", since, since)
                firing.append((self._source_status(now, "the Prometheus query fails"), source))
            resolved = [
                (e.pipeline, _resolved_record(e), now)
                for e in events
                if e.status is AlertStatus.resolved and e.receivers and name in e.receivers
            ]
            push.send(firing, resolved, now)

    def _source_failing(self, exc: SourceError, now: float) -> list[AlertEvent]:
        """The watchdog's own alert, once the source has failed often enough in a row."""
        threshold = self.settings.source_failure_alert_after
        if not threshold or self.failures_in_a_row < threshold or self._source_alert_since:
            return []

        self._source_alert_since = now
        self._store_source_alert()
        reason = (
            f"the Prometheus query failed {self.failures_in_a_row} times in a row "
            f"({exc.kind}: {exc}); pipeline states are unknown"
        )
        log.error("cannot evaluate pipelines: %s", reason)
        return [AlertEvent(AlertStatus.firing, self._source_status(now, reason), now)]

    def _source_recovered(self, now: float) -> list[AlertEvent]:
        since = self._source_alert_since
        if since is None:
            return []
        self._source_alert_since = None
        self._store_source_alert()
        reason = "queries succeed again"
        status = self._source_status(now, reason)
        return [AlertEvent(AlertStatus.resolved, status, since, kind=EventKind.resolved)]

    def _store_source_alert(self) -> None:
        if self.store is None:
            return
        since = self._source_alert_since
        try:
            self.store.set_meta(SOURCE_ALERT_META, "" if since is None else repr(since))
        except StoreError as exc:
            log.error("the source alert's state was not saved: %s", exc)

    def _source_status(self, now: float, reason: str) -> PipelineStatus:
        return PipelineStatus(
            pipeline="",
            check=SOURCE_CHECK,
            state=FreshnessState.unknown,
            evaluated_at=now,
            reason=reason,
        )

    def _log_changes(self, evaluation: Evaluation) -> None:
        """Log each status whose state differs from the last one known (not unknown)."""
        for key, status in evaluation.results.items():
            if status.state is FreshnessState.unknown:
                continue
            before = self._known_states.get(key)
            self._known_states[key] = status.state
            if before is status.state or (before is None and not status.is_problem):
                continue
            if before is None and key in self.tracker.records():
                continue  # a problem the state file already knew of: not news after a restart
            log.info(
                "pipeline %s: %s -> %s (%s)",
                printable(subject(status)),
                before or "new",
                status.state,
                printable(explain(status), limit=1000),
                extra={
                    "pipeline": status.pipeline,
                    "check": status.check,
                    "state": status.state,
                    "old_state": before or "new",
                },
            )

        for status in evaluation.forgotten:
            self._known_states.pop(status.key, None)
            log.info(
                "pipeline %s: forgotten, no series for longer than forget_after",
                printable(subject(status)),
            )


def _stored_time(store: StateStore | None, key: str) -> float | None:
    value = store.get_meta(key) if store is not None else None
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _resolved_record(event: AlertEvent) -> AlertRecord:
    since = event.firing_since
    return AlertRecord(
        event.pipeline.pipeline,
        event.pipeline.check,
        "firing",
        event.severity,
        since,
        firing_since=since,
        receivers=list(event.receivers or ()),
    )
