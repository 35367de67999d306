"""The main job end to end: a real Prometheus scraping a real exporter process, the
watchdog evaluating it, and real HTTP receivers getting the notifications.

Prometheus and the exporter are started once per session (conftest.py); each test
uses pipeline names of its own and removes them afterwards.
"""

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testbed.receiver import ReceivedRequest, RecordingReceiver
from testbed.servers import ExporterProcess, PrometheusServer, free_port
from watchdog.config import Settings
from watchdog.freshness import FreshnessState
from watchdog.service import CycleOutcome, Watchdog

SLACK_PATH = "/services/T000/B000/SECRETTOKEN"


def settings_for(
    prometheus_url: str, receiver: RecordingReceiver | None = None, **values: Any
) -> Settings:
    config: dict[str, Any] = {
        "prometheus": {"url": prometheus_url, "timeout": "5s"},
        "evaluation_interval": "1s",
    }
    if receiver is not None:
        config["receivers"] = [
            {"name": "hook", "type": "webhook", "url": receiver.url("/hook")},
            {"name": "slack", "type": "slack", "url": receiver.url(SLACK_PATH)},
        ]
    config.update(values)
    return Settings(**config)


def cycle_until(
    watchdog: Watchdog, predicate: Callable[[CycleOutcome], bool], timeout: float = 20
) -> CycleOutcome:
    """Run cycles until one satisfies ``predicate`` (Prometheus scrapes every second)."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = watchdog.run_cycle()
        if predicate(outcome):
            return outcome
        if time.monotonic() > deadline:
            raise TimeoutError(f"no cycle satisfied the condition in {timeout}s: {outcome}")
        time.sleep(0.2)


def state_is(pipeline: str, state: FreshnessState) -> Callable[[CycleOutcome], bool]:
    def check(outcome: CycleOutcome) -> bool:
        status = outcome.statuses.get(pipeline)
        return status is not None and status.state is state

    return check


def naming(requests: list[ReceivedRequest], pipeline: str, status: str) -> list[Any]:
    """Webhook bodies of ``status`` that list ``pipeline``."""
    bodies = [r.json() for r in requests]
    return [
        body
        for body in bodies
        if body["status"] == status and any(a["pipeline"] == pipeline for a in body["alerts"])
    ]


def slack_naming(requests: list[ReceivedRequest], pipeline: str, word: str) -> list[str]:
    texts = [r.json()["text"] for r in requests]
    return [text for text in texts if pipeline in text and word in text]


def test_pipeline_that_stops_succeeding_fires_once_and_resolves_once(
    prometheus: PrometheusServer,
    exporter: ExporterProcess,
    receiver: RecordingReceiver,
    pipelines: Callable[[str], str],
) -> None:
    name = pipelines("feature-build-stops")
    exporter.succeed(name)
    watchdog = Watchdog(settings_for(prometheus.url, receiver, defaults={"max_age": "3s"}))
    cycle_until(watchdog, state_is(name, FreshnessState.fresh))

    # Its timestamp stops moving: after max_age it is stale, and stays so for a while.
    cycle_until(watchdog, state_is(name, FreshnessState.stale))
    for _ in range(3):
        watchdog.run_cycle()
    firing_hooks = naming(receiver.requests("/hook"), name, "firing")
    firing_slack = slack_naming(receiver.requests(SLACK_PATH), name, "late")

    exporter.succeed(name)
    cycle_until(watchdog, state_is(name, FreshnessState.fresh))
    for _ in range(3):
        watchdog.run_cycle()

    assert len(firing_hooks) == 1
    alert = next(a for a in firing_hooks[0]["alerts"] if a["pipeline"] == name)
    assert alert["state"] == "stale"
    assert alert["max_age_seconds"] == 3
    assert alert["age_seconds"] > 3
    assert alert["last_success"].endswith("Z")
    assert f"{name} is stale: last success" in alert["summary"]
    assert len(firing_slack) == 1
    assert "threshold 3s" in firing_slack[0]
    slack_blocks = [json.dumps(r.json()["blocks"]) for r in receiver.requests(SLACK_PATH)]
    assert any(name in blocks and "Threshold: 3s" in blocks for blocks in slack_blocks)
    resolved = naming(receiver.requests("/hook"), name, "resolved")
    assert len(resolved) == 1
    assert resolved[0]["alerts"][0]["state"] == "fresh"
    assert len(slack_naming(receiver.requests(SLACK_PATH), name, "recovered")) == 1
    assert len(naming(receiver.requests("/hook"), name, "firing")) == 1


def test_expected_pipeline_without_series_is_missing_and_notified(
    prometheus: PrometheusServer, receiver: RecordingReceiver
) -> None:
    watchdog = Watchdog(
        settings_for(prometheus.url, receiver, pipelines=[{"name": "never-exported"}])
    )

    outcome = watchdog.run_cycle()
    watchdog.run_cycle()

    assert outcome.statuses["never-exported"].state is FreshnessState.missing
    firing = naming(receiver.requests("/hook"), "never-exported", "firing")
    assert len(firing) == 1
    alert = firing[0]["alerts"][0]
    assert alert["state"] == "missing"
    assert alert["age_seconds"] is None
    assert alert["last_success"] is None


def test_stopped_prometheus_makes_pipelines_unknown_without_false_alerts_then_says_so(
    tmp_path: Path,
    exporter: ExporterProcess,
    receiver: RecordingReceiver,
    pipelines: Callable[[str], str],
) -> None:
    fresh, late = pipelines("outage-fresh"), pipelines("outage-late")
    exporter.succeed(fresh)
    exporter.succeed(late, timestamp=time.time() - 7200)
    with PrometheusServer(tmp_path, [exporter.target], name="own-prometheus") as own:
        own.wait_for_targets_up()
        config = settings_for(
            own.url, receiver, defaults={"max_age": "1h"}, source_failure_alert_after=3
        )
        watchdog = Watchdog(config)
        cycle_until(watchdog, lambda o: fresh in o.statuses and late in o.statuses)
        before = len(receiver.requests())

        own.stop()
        down = [watchdog.run_cycle() for _ in range(2)]
        during = len(receiver.requests())
        down.append(watchdog.run_cycle())
        own_alert = [r.json() for r in receiver.requests("/hook")][-1]
        registry = watchdog.metrics.registry
        unknown_count = registry.get_sample_value("ml_watchdog_pipelines", {"state": "unknown"})
        late_gauge = registry.get_sample_value("ml_watchdog_pipeline_stale", {"pipeline": late})

        own.start()
        own.wait_for_targets_up()
        back = cycle_until(watchdog, lambda o: o.ok)

    assert all(not o.ok and o.error is not None for o in down)
    assert {s.state for o in down for s in o.statuses.values()} == {FreshnessState.unknown}
    assert down[-1].statuses[late].last_success == back.statuses[late].last_success
    assert during == before
    assert unknown_count is not None and unknown_count >= 2
    assert late_gauge == 1  # the last known value, not a false recovery
    assert own_alert["status"] == "firing"
    assert own_alert["summary"] == "cannot evaluate pipelines"
    assert own_alert["alerts"][0]["pipeline"] is None
    assert own_alert["alerts"][0]["check"] == "source"
    assert (
        "failed 3 times in a row (unavailable: connection refused)"
        in (own_alert["alerts"][0]["summary"])
    )
    after = [r.json() for r in receiver.requests("/hook")][-1]
    assert after["status"] == "resolved"
    assert after["alerts"][0]["check"] == "source"
    # Besides the watchdog's own alert and its resolution, nothing was sent.
    assert len(receiver.requests()) == before + 4
    assert back.statuses[fresh].state is FreshnessState.fresh
    assert back.statuses[late].state is FreshnessState.stale
    assert len(naming(receiver.requests("/hook"), late, "firing")) == 1
    assert registry.get_sample_value("ml_watchdog_evaluations_total", {"result": "error"}) == 3
    assert (
        registry.get_sample_value("ml_watchdog_query_errors_total", {"kind": "unavailable"}) == 3
    )
    assert registry.get_sample_value("ml_watchdog_prometheus_up") == 1


def test_prometheus_behind_a_path_prefix(tmp_path: Path, exporter: ExporterProcess) -> None:
    class PrefixedPrometheus(PrometheusServer):
        ready_path = "/prom/-/ready"

    own = PrefixedPrometheus(
        tmp_path, [exporter.target], extra_args=["--web.route-prefix=/prom"], name="prefixed"
    )
    with own:
        watchdog = Watchdog(settings_for(own.url + "/prom", pipelines=[{"name": "absent"}]))

        outcome = watchdog.run_cycle()

    assert outcome.ok
    assert outcome.statuses["absent"].state is FreshnessState.missing


def test_vanished_pipeline_goes_missing_then_its_series_leave_metrics(
    prometheus: PrometheusServer, exporter: ExporterProcess, receiver: RecordingReceiver
) -> None:
    name = "vanishing"
    exporter.succeed(name)
    watchdog = Watchdog(
        settings_for(prometheus.url, receiver, defaults={"max_age": "1h", "forget_after": "2s"})
    )
    cycle_until(watchdog, state_is(name, FreshnessState.fresh))
    registry = watchdog.metrics.registry

    exporter.remove(name)
    missing = cycle_until(watchdog, state_is(name, FreshnessState.missing))
    gauge_while_missing = registry.get_sample_value(
        "ml_watchdog_pipeline_stale", {"pipeline": name}
    )
    cycle_until(watchdog, lambda o: name not in o.statuses)

    assert missing.statuses[name].last_success is not None
    assert gauge_while_missing == 1
    assert registry.get_sample_value("ml_watchdog_pipeline_stale", {"pipeline": name}) is None
    assert (
        registry.get_sample_value("ml_watchdog_pipeline_staleness_seconds", {"pipeline": name})
        is None
    )
    assert len(naming(receiver.requests("/hook"), name, "firing")) == 1
    closed = naming(receiver.requests("/hook"), name, "resolved")
    assert len(closed) == 1
    assert "no longer watched" in closed[0]["alerts"][0]["summary"]


def test_pipeline_names_needing_escapes_round_trip(
    prometheus: PrometheusServer, exporter: ExporterProcess, pipelines: Callable[[str], str]
) -> None:
    name = pipelines('odd "name" \\ with spaces ü')
    exporter.succeed(name)
    watchdog = Watchdog(settings_for(prometheus.url, pipelines=[{"name": name}]))

    outcome = cycle_until(watchdog, state_is(name, FreshnessState.fresh))

    assert outcome.statuses[name].age is not None


def test_the_source_alert_survives_a_restart_and_resolves_once(
    prometheus: PrometheusServer, receiver: RecordingReceiver, tmp_path: Path
) -> None:
    from watchdog.store import StateStore

    dead = f"http://127.0.0.1:{free_port()}"
    store = StateStore.open(tmp_path / "state.db")
    down = Watchdog(settings_for(dead, receiver, source_failure_alert_after=2), store=store)
    for _ in range(2):
        down.run_cycle()

    restarted = Watchdog(settings_for(dead, receiver, source_failure_alert_after=2), store=store)
    restarted.run_cycle()
    back = Watchdog(settings_for(prometheus.url, receiver), store=store)
    back.run_cycle()
    again = Watchdog(settings_for(prometheus.url, receiver), store=store)
    again.run_cycle()
    store.close()

    own = [r.json() for r in receiver.requests("/hook")]
    source = [b for b in own if b["alerts"][0]["check"] == "source"]
    assert [(b["status"], b["alerts"][0]["kind"]) for b in source] == [
        ("firing", "firing"),
        ("resolved", "resolved"),
    ]


def test_a_restart_does_not_log_known_problems_as_new(
    prometheus: PrometheusServer,
    exporter: ExporterProcess,
    pipelines: Callable[[str], str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from watchdog.store import StateStore

    name = pipelines("restart-quiet")
    exporter.succeed(name, time.time() - 7200)
    store = StateStore.open(tmp_path / "state.db")
    first = Watchdog(settings_for(prometheus.url, defaults={"max_age": "1h"}), store=store)
    cycle_until(first, state_is(name, FreshnessState.stale))

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="watchdog.service"):
        Watchdog(settings_for(prometheus.url, defaults={"max_age": "1h"}), store=store).run_cycle()
    store.close()

    assert f"pipeline {name}: new -> stale" not in caplog.text
