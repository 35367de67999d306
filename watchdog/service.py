"""The watchdog's main job: one evaluation cycle, and the state kept between cycles.

A cycle reads the clock once, runs one query, decides every pipeline's state,
updates the metrics, turns state changes into alert events and hands them to the
dispatcher.  A failed query marks pipelines ``unknown`` and changes no alert.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from watchdog.alerts import AlertEvent, AlertTracker
from watchdog.config import Settings
from watchdog.delivery import Dispatcher
from watchdog.exceptions import SourceError
from watchdog.freshness import (
    Evaluation,
    FreshnessState,
    PipelineStatus,
    evaluate,
    last_success_query,
    observations,
    unknown,
)
from watchdog.metrics import WatchdogMetrics
from watchdog.notifications import explain
from watchdog.prometheus import PrometheusClient
from watchdog.receivers import build_receiver
from watchdog.transport import new_session

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class CycleOutcome:
    """What one cycle did: for logs, tests and the health endpoints."""

    statuses: dict[str, PipelineStatus]
    events: list[AlertEvent] = field(default_factory=list)
    error: SourceError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Watchdog:
    """Evaluates pipelines against Prometheus and notifies receivers of changes."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = time.time,
        metrics: WatchdogMetrics | None = None,
        client: PrometheusClient | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics or WatchdogMetrics(r.name for r in settings.receivers)
        self.client = client or PrometheusClient(
            settings.prometheus.url, timeout=settings.prometheus.timeout
        )
        receivers = [build_receiver(r, new_session()) for r in settings.receivers]
        self.dispatcher = Dispatcher(receivers, self.metrics, clock)
        self.tracker = AlertTracker()

        self._lock = threading.Lock()
        self._statuses: dict[str, PipelineStatus] = {}
        self._known_states: dict[str, FreshnessState] = {}
        self.failures_in_a_row = 0
        self.cycles = 0
        self.last_cycle_at: float | None = None

    def statuses(self) -> dict[str, PipelineStatus]:
        """The latest status of every watched pipeline (safe from other threads)."""
        with self._lock:
            return dict(self._statuses)

    def evaluate(self, *, at: float | None = None) -> Evaluation:
        """Query Prometheus once and decide every pipeline's state; raise SourceError."""
        query = last_success_query(self.settings.metric, self.settings.pipeline_label)
        result = self.client.query(query, at=at)
        for warning in result.warnings:
            log.warning("Prometheus warned about the query: %s", warning)

        evaluated_at = result.evaluated_at
        if evaluated_at is None:
            evaluated_at = at if at is not None else self.clock()
        observed = observations(result, self.settings.pipeline_label)
        return evaluate(observed, evaluated_at, self.settings, self.statuses())

    def run_cycle(self) -> CycleOutcome:
        """Evaluate, update metrics and alerts, and deliver what is due."""
        started = self.clock()
        try:
            evaluation = self.evaluate()
        except SourceError as exc:
            outcome = self._failed(exc, started)
        else:
            outcome = self._evaluated(evaluation)

        self.dispatcher.deliver_due()

        finished = self.clock()
        self.metrics.evaluation_duration.observe(max(finished - started, 0.0))
        with self._lock:
            self.cycles += 1
            self.last_cycle_at = finished
        return outcome

    def _evaluated(self, evaluation: Evaluation) -> CycleOutcome:
        statuses = evaluation.statuses
        self._log_changes(evaluation)

        events = self.tracker.update(statuses.values(), evaluation.forgotten)
        now = max((s.evaluated_at for s in statuses.values()), default=self.clock())
        self.dispatcher.submit(events, now)

        with self._lock:
            self._statuses = statuses
        self.failures_in_a_row = 0
        self.metrics.observe_statuses(statuses)
        self.metrics.evaluations.labels("success").inc()
        self.metrics.prometheus_up.set(1)
        self.metrics.last_evaluation.set(self.clock())
        return CycleOutcome(statuses=statuses, events=events)

    def _failed(self, exc: SourceError, started: float) -> CycleOutcome:
        self.failures_in_a_row += 1
        log.warning(
            "Prometheus query failed (%s, %d in a row): %s; pipelines are unknown until it works",
            exc.kind,
            self.failures_in_a_row,
            exc,
        )
        statuses = unknown(self.statuses(), self.settings, started)
        with self._lock:
            self._statuses = statuses
        self.metrics.evaluations.labels("error").inc()
        self.metrics.query_errors.labels(exc.kind).inc()
        self.metrics.prometheus_up.set(0)
        return CycleOutcome(statuses=statuses, error=exc)

    def _log_changes(self, evaluation: Evaluation) -> None:
        """Log each pipeline whose state differs from the last one known (not unknown)."""
        for name, status in evaluation.statuses.items():
            before = self._known_states.get(name)
            self._known_states[name] = status.state
            if before is status.state or (before is None and not status.is_problem):
                continue
            log.info(
                "pipeline %s: %s -> %s (%s)", name, before or "new", status.state, explain(status)
            )

        for status in evaluation.forgotten:
            self._known_states.pop(status.pipeline, None)
            log.info(
                "pipeline %s: forgotten after no series for %s",
                status.pipeline,
                "longer than forget_after",
            )
