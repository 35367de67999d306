"""Delivery you can trust, against real HTTP receivers on 127.0.0.1 that fail in each
way: the webhook path is real, the dispatcher's clock is injected where timing
matters, and the daemon is a real process where a kill matters."""

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from testbed.receiver import RecordingReceiver
from testbed.servers import ExporterProcess, PrometheusServer, WatchdogProcess, wait_until
from watchdog.alerts import AlertEvent, AlertStatus
from watchdog.config import DeliveryConfig, WebhookReceiverConfig
from watchdog.delivery import Dispatcher
from watchdog.freshness import FreshnessState, PipelineStatus
from watchdog.metrics import WatchdogMetrics
from watchdog.receivers import WebhookReceiver
from watchdog.store import StateStore
from watchdog.transport import new_session


def event(status: AlertStatus, name: str = "train") -> AlertEvent:
    pipeline = PipelineStatus(name, FreshnessState.stale, 1000.0, threshold="1h", last_success=1.0)
    return AlertEvent(status, pipeline, firing_since=1000.0)


def sender(url: str, clock, store: StateStore | None = None, timeout: float = 2.0) -> Dispatcher:
    config = WebhookReceiverConfig(name="hook", type="webhook", url=url, timeout=timeout)
    receiver = WebhookReceiver(config, new_session())
    return Dispatcher(
        [receiver],
        WatchdogMetrics(["hook"]),
        clock,
        store=store,
        config=DeliveryConfig(initial_backoff=2, max_attempts=5),
        jitter=lambda: 1.0,
    )


def attempts(dispatcher: Dispatcher, result: str) -> float | None:
    return dispatcher._metrics.registry.get_sample_value(
        "ml_watchdog_notification_attempts_total", {"receiver": "hook", "result": result}
    )


@pytest.fixture
def receiver() -> Iterator[RecordingReceiver]:
    with RecordingReceiver() as server:
        yield server


def test_500_then_200_is_retried_and_delivered_once(receiver: RecordingReceiver, clock) -> None:
    receiver.enqueue_responses([(500, b"boom")])
    dispatcher = sender(receiver.url(), clock)
    dispatcher.submit([event(AlertStatus.firing)], clock())

    dispatcher.deliver_due()
    clock.advance(2)
    dispatcher.deliver_due()

    bodies = [r.json() for r in receiver.requests()]
    assert len(bodies) == 2
    assert bodies[0]["id"] == bodies[1]["id"]
    assert attempts(dispatcher, "failed") == 1
    assert attempts(dispatcher, "delivered") == 1


def test_429_waits_as_long_as_retry_after_says(receiver: RecordingReceiver, clock) -> None:
    receiver.enqueue_responses([(429, b"slow down", {"Retry-After": "30"})])
    dispatcher = sender(receiver.url(), clock)
    dispatcher.submit([event(AlertStatus.firing)], clock())
    dispatcher.deliver_due()

    clock.advance(29)
    dispatcher.deliver_due()
    early = len(receiver.requests())
    clock.advance(1)
    dispatcher.deliver_due()

    assert early == 1
    assert len(receiver.requests()) == 2


def test_400_is_permanent_and_not_retried(receiver: RecordingReceiver, clock) -> None:
    receiver.respond_with(400, b"invalid_payload")
    dispatcher = sender(receiver.url(), clock)
    dispatcher.submit([event(AlertStatus.firing)], clock())

    dispatcher.deliver_due()
    clock.advance(3600)
    dispatcher.deliver_due()

    assert len(receiver.requests()) == 1
    assert dispatcher.pending() == 0
    assert (
        dispatcher._metrics.registry.get_sample_value(
            "ml_watchdog_notifications_total", {"receiver": "hook", "result": "failed"}
        )
        == 1
    )


def test_slow_receiver_times_out_and_is_retried(receiver: RecordingReceiver, clock) -> None:
    receiver.delay = 1.5
    dispatcher = sender(receiver.url(), clock, timeout=0.5)
    dispatcher.submit([event(AlertStatus.firing)], clock())
    dispatcher.deliver_due()
    receiver.delay = 0.0

    clock.advance(2)
    dispatcher.deliver_due()

    assert attempts(dispatcher, "failed") == 1
    assert attempts(dispatcher, "delivered") == 1
    ids = {r.json()["id"] for r in receiver.requests()}
    assert len(ids) == 1


def test_connection_refused_then_back_delivers_in_order(clock, tmp_path: Path) -> None:
    down = RecordingReceiver().start()
    port = down.port
    down.stop()
    dispatcher = sender(f"http://127.0.0.1:{port}/hook", clock)
    dispatcher.submit([event(AlertStatus.firing)], clock())
    dispatcher.deliver_due()
    dispatcher.submit([event(AlertStatus.resolved)], clock())
    dispatcher.submit([event(AlertStatus.firing)], clock())

    with RecordingReceiver(port=port) as back:
        clock.advance(3600)
        dispatcher.deliver_due()
        statuses = [r.json()["status"] for r in back.requests()]

    assert statuses == ["firing", "resolved", "firing"]


def test_idempotency_key_is_the_body_id(receiver: RecordingReceiver, clock) -> None:
    dispatcher = sender(receiver.url(), clock)
    dispatcher.submit([event(AlertStatus.firing)], clock())

    dispatcher.deliver_due()

    request = receiver.requests()[0]
    assert request.headers["idempotency-key"] == request.json()["id"]


def test_workers_drain_on_stop_and_a_down_receiver_never_delays_another(
    receiver: RecordingReceiver,
) -> None:
    slow = RecordingReceiver(delay=3.0).start()
    fast_config = WebhookReceiverConfig(name="fast", type="webhook", url=receiver.url())
    slow_config = WebhookReceiverConfig(name="slow", type="webhook", url=slow.url(), timeout=5)
    dispatcher = Dispatcher(
        [WebhookReceiver(slow_config, new_session()), WebhookReceiver(fast_config, new_session())],
        WatchdogMetrics(["slow", "fast"]),
        time.time,
    )
    dispatcher.start()

    dispatcher.submit([event(AlertStatus.firing)], time.time())
    # The fast receiver is served while the slow one still holds its request.
    fast = receiver.wait_for(lambda requests: len(requests) == 1, timeout=2.5)
    slow_pending = dispatcher._metrics.registry.get_sample_value(
        "ml_watchdog_outbox_pending", {"receiver": "slow"}
    )
    dispatcher.stop(timeout=10)
    slow.stop()

    assert len(fast) == 1
    assert slow_pending == 1
    assert len(slow.requests()) == 1
    assert dispatcher.pending() == 0


# The daemon, killed between a decision and its delivery -------------------------------


def daemon_config(prometheus: PrometheusServer, hook_url: str, pipeline: str) -> dict[str, Any]:
    return {
        "prometheus": {"url": prometheus.url},
        "evaluation_interval": "1s",
        "defaults": {"max_age": "1h"},
        "pipelines": [{"name": pipeline}],
        "discovery": {"include": [pipeline]},
        "receivers": [{"name": "hook", "type": "webhook", "url": hook_url, "timeout": "2s"}],
        "delivery": {"initial_backoff": "200ms", "max_backoff": "500ms"},
    }


def outbox_size(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM outbox").fetchone()[0])


def test_sigkill_before_delivery_then_restart_delivers_exactly_once(
    prometheus: PrometheusServer, exporter: ExporterProcess, tmp_path: Path
) -> None:
    pipeline = "outbox-kill"
    recorded = exporter.succeed(pipeline, time.time() - 7200)
    query = f'ml_pipeline_last_success_timestamp{{pipeline="{pipeline}"}} == {recorded}'
    wait_until(lambda: bool(prometheus.query(query)), 15, what="the old timestamp scraped")
    down = RecordingReceiver().start()
    port = down.port
    down.stop()
    hook = f"http://127.0.0.1:{port}/hook"
    state = tmp_path / "state.db"
    config = {**daemon_config(prometheus, hook, pipeline), "state": {"path": str(state)}}

    first = WatchdogProcess(tmp_path, config, name="first").start()
    wait_until(lambda: state.exists() and outbox_size(state) >= 1, 20, what="a stored decision")
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    wait_until(lambda: not first.running(), 10, what="the killed daemon gone")

    with RecordingReceiver(port=port) as receiver:
        second = WatchdogProcess(tmp_path, config, name="second").start()
        try:
            receiver.wait_for(lambda requests: len(requests) >= 1, timeout=20)
            # A few more cycles: the alert is still firing and already notified.
            wait_until(lambda: _cycles(second) >= 4, 20, what="four more cycles")
            bodies = [r.json() for r in receiver.requests()]
        finally:
            exporter.remove(pipeline)
            second.stop()

    assert [b["status"] for b in bodies] == ["firing"]
    assert bodies[0]["alerts"][0]["pipeline"] == pipeline
    assert outbox_size(state) == 0


def _cycles(process: WatchdogProcess) -> float:
    for line in process.metrics_text().splitlines():
        if line.startswith('ml_watchdog_evaluations_total{result="success"}'):
            return float(line.split()[-1])
    return 0.0


def test_receiver_down_for_many_cycles_gets_everything_in_order_once(
    prometheus: PrometheusServer, exporter: ExporterProcess, tmp_path: Path
) -> None:
    pipeline = "outbox-down"
    down = RecordingReceiver().start()
    port = down.port
    down.stop()
    config = daemon_config(prometheus, f"http://127.0.0.1:{port}/hook", pipeline)
    config["defaults"] = {"max_age": "2s"}
    exporter.succeed(pipeline)
    daemon = WatchdogProcess(tmp_path, config).start()
    try:
        # Episode 1: stale (no success), then fresh again; episode 2: stale again.
        wait_until(lambda: _firing(daemon) == 1, 20, what="first episode firing")
        exporter.succeed(pipeline)
        wait_until(lambda: _firing(daemon) == 0, 20, what="first episode resolved")
        wait_until(lambda: _firing(daemon) == 1, 20, what="second episode firing")

        with RecordingReceiver(port=port) as receiver:
            receiver.wait_for(lambda requests: len(requests) >= 3, timeout=30)
            bodies = [r.json() for r in receiver.requests()]
            keys = [r.headers["idempotency-key"] for r in receiver.requests()]
    finally:
        exporter.remove(pipeline)
        daemon.stop()

    assert [b["status"] for b in bodies] == ["firing", "resolved", "firing"]
    assert len(set(keys)) == len(keys)


def _firing(process: WatchdogProcess) -> int:
    response = requests.get(process.url + "/api/v1/alerts", timeout=5)
    alerts = json.loads(response.text)["alerts"]
    return sum(1 for a in alerts if a["alert"] == "firing")
