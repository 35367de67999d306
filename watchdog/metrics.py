"""The watchdog's own metrics, served on ``/metrics``.

Names follow the project's convention: prefix ``ml_``, component ``watchdog``,
base units in the name.  Per-pipeline series carry only the ``pipeline`` label
(and ``check`` for custom checks) and come from one snapshot taken after each
successful evaluation, so a forgotten pipeline's series disappear with it.
"""

import threading
from collections import Counter as Tally
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from watchdog import __version__
from watchdog.exceptions import SOURCE_ERROR_KINDS
from watchdog.freshness import LAST_SUCCESS, FreshnessState, PipelineStatus
from watchdog.store import AlertRecord

# Evaluations are one HTTP query plus arithmetic: mostly well under a second.
_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class PipelineCollector(Collector):
    """Per-pipeline gauges, read from the latest evaluation's statuses."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statuses: tuple[PipelineStatus, ...] = ()
        self._unknown = False

    def update(self, statuses: Iterable[PipelineStatus]) -> None:
        snapshot = tuple(statuses)
        with self._lock:
            self._statuses = snapshot
            self._unknown = False

    def mark_unknown(self) -> None:
        """The last query failed: count every pipeline as unknown, keep the last values.

        Per-pipeline gauges keep the last successful evaluation's values, so a
        dashboard does not show an outage of Prometheus as a recovery.
        """
        with self._lock:
            self._unknown = True

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            statuses, unknown = self._statuses, self._unknown

        main = [s for s in statuses if s.check == LAST_SUCCESS]
        yield from _pipeline_families(main)
        yield from _check_families([s for s in statuses if s.check != LAST_SUCCESS])

        per_state = GaugeMetricFamily(
            "ml_watchdog_pipelines",
            "Number of watched pipelines in each freshness state (last_success check).",
            labels=["state"],
        )
        for state in FreshnessState:
            if unknown:
                count = len(main) if state is FreshnessState.unknown else 0
            else:
                count = sum(1 for s in main if s.state is state)
            per_state.add_metric([state.value], count)
        yield per_state


def _pipeline_families(statuses: list[PipelineStatus]) -> Iterator[Metric]:
    staleness = GaugeMetricFamily(
        "ml_watchdog_pipeline_staleness_seconds",
        "Seconds since the pipeline's last success, as of the last successful evaluation.",
        labels=["pipeline"],
    )
    stale = GaugeMetricFamily(
        "ml_watchdog_pipeline_stale",
        "1 if the pipeline is in a problem state (stale, missing, never_succeeded, invalid).",
        labels=["pipeline"],
    )
    max_age = GaugeMetricFamily(
        "ml_watchdog_pipeline_max_age_seconds",
        "The pipeline's max_age threshold (absent when only a schedule applies).",
        labels=["pipeline"],
    )
    deadline = GaugeMetricFamily(
        "ml_watchdog_pipeline_deadline_timestamp_seconds",
        "Unix time at which the pipeline is (or was) late if nothing succeeds.",
        labels=["pipeline"],
    )
    for status in statuses:
        labels = [status.pipeline]
        if status.age is not None:
            staleness.add_metric(labels, status.age)
        stale.add_metric(labels, 1.0 if status.is_problem else 0.0)
        if status.max_age is not None:
            max_age.add_metric(labels, status.max_age)
        if status.deadline is not None:
            deadline.add_metric(labels, status.deadline)
    yield from (staleness, stale, max_age, deadline)


def _check_families(statuses: list[PipelineStatus]) -> Iterator[Metric]:
    value = GaugeMetricFamily(
        "ml_watchdog_check_value_seconds",
        "A custom check's age (timestamp and age checks) or lag (lag checks).",
        labels=["pipeline", "check"],
    )
    stale = GaugeMetricFamily(
        "ml_watchdog_check_stale",
        "1 if a custom check is in a problem state, else 0.",
        labels=["pipeline", "check"],
    )
    for status in statuses:
        labels = [status.pipeline, status.check]
        measured = status.lag if status.lag is not None else status.age
        if measured is not None:
            value.add_metric(labels, measured)
        stale.add_metric(labels, 1.0 if status.is_problem else 0.0)
    yield from (value, stale)


class WatchdogMetrics:
    """Every metric the watchdog exports, in a registry of its own."""

    def __init__(self, receivers: Iterable[str] = (), registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.pipelines = PipelineCollector()
        self.registry.register(self.pipelines)

        self.evaluations = Counter(
            "ml_watchdog_evaluations",
            "Evaluation cycles, by result (success, error, or skipped while one still ran).",
            ["result"],
            registry=self.registry,
        )
        self.query_errors = Counter(
            "ml_watchdog_query_errors",
            "Failed Prometheus queries, by kind: " + ", ".join(SOURCE_ERROR_KINDS) + ".",
            ["kind"],
            registry=self.registry,
        )
        self.query_warnings = Counter(
            "ml_watchdog_query_warnings",
            "Query answers that carried warnings, by kind (partial or other).",
            ["kind"],
            registry=self.registry,
        )
        self.evaluation_duration = Histogram(
            "ml_watchdog_evaluation_duration_seconds",
            "Time one evaluation cycle took, query included.",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.prometheus_up = Gauge(
            "ml_watchdog_prometheus_up",
            "1 if the last query to Prometheus succeeded, else 0.",
            registry=self.registry,
        )
        self.last_evaluation = Gauge(
            "ml_watchdog_last_evaluation_timestamp_seconds",
            "Unix time of the last successful evaluation.",
            registry=self.registry,
        )
        self.notifications = Counter(
            "ml_watchdog_notifications",
            "Notifications by receiver and result (sent, or failed after all retries).",
            ["receiver", "result"],
            registry=self.registry,
        )
        self.notification_attempts = Counter(
            "ml_watchdog_notification_attempts",
            "Attempts to send a notification message, by receiver and result.",
            ["receiver", "result"],
            registry=self.registry,
        )
        self.delivery_duration = Histogram(
            "ml_watchdog_notification_delivery_seconds",
            "Time from the decision to notify to the receiver's 2xx.",
            ["receiver"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600),
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "ml_watchdog_outbox_pending",
            "Notification messages in the outbox: decided, not yet delivered.",
            ["receiver"],
            registry=self.registry,
        )
        self.pending_notifications = Gauge(
            "ml_watchdog_notifications_pending",
            "Notifications waiting for delivery or for a retry.",
            registry=self.registry,
        )
        self.alerts = Gauge(
            "ml_watchdog_alerts",
            "Alerts by lifecycle state (pending, firing) and severity; not per pipeline.",
            ["state", "severity"],
            registry=self.registry,
        )
        self.alert_transitions = Counter(
            "ml_watchdog_alert_transitions",
            "Alert lifecycle transitions, by old and new state (inactive, pending, firing).",
            ["from", "to"],
            registry=self.registry,
        )
        self.silences_active = Gauge(
            "ml_watchdog_silences_active",
            "Silences in force now.",
            registry=self.registry,
        )
        self.state_write_duration = Histogram(
            "ml_watchdog_state_write_duration_seconds",
            "Time one write of alert state to the state file took.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self.heartbeats = Counter(
            "ml_watchdog_heartbeats",
            "Heartbeat pings by result: sent, failed, or skipped while one was under way.",
            ["result"],
            registry=self.registry,
        )
        self.config_reload_successful = Gauge(
            "ml_watchdog_config_last_reload_successful",
            "1 if the last configuration (re)load succeeded, else 0.",
            registry=self.registry,
        )
        self.config_reload_timestamp = Gauge(
            "ml_watchdog_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration (re)load.",
            registry=self.registry,
        )
        Info("ml_watchdog_build", "Version of pipeline-watchdog.", registry=self.registry).info(
            {"version": __version__}
        )
        self._initialise(receivers)

    def add_receivers(self, receivers: Iterable[str]) -> None:
        """Create the per-receiver series of receivers added by a reload."""
        for receiver in receivers:
            for result in ("sent", "failed"):
                self.notifications.labels(receiver, result)
            for result in ("delivered", "failed"):
                self.notification_attempts.labels(receiver, result)
            self.outbox_pending.labels(receiver)

    def _initialise(self, receivers: Iterable[str]) -> None:
        # Series that exist from the start make rate() and absent-based alerts work.
        for result in ("success", "error", "skipped"):
            self.evaluations.labels(result)
        for kind in SOURCE_ERROR_KINDS:
            self.query_errors.labels(kind)
        for kind in ("partial", "other"):
            self.query_warnings.labels(kind)
        for result in ("sent", "failed", "skipped"):
            self.heartbeats.labels(result)
        self.observe_alerts(())
        for receiver in receivers:
            for result in ("sent", "failed"):
                self.notifications.labels(receiver, result)
            for result in ("delivered", "failed"):
                self.notification_attempts.labels(receiver, result)
            self.outbox_pending.labels(receiver)

    def observe_statuses(self, statuses: Iterable[PipelineStatus]) -> None:
        self.pipelines.update(statuses)

    def observe_alerts(self, records: Iterable[AlertRecord]) -> None:
        counts = Tally((r.state, r.severity or "critical") for r in records)
        for state in ("pending", "firing"):
            for severity in ("warning", "critical"):
                self.alerts.labels(state, severity).set(counts.get((state, severity), 0))
