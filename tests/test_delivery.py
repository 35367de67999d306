"""Queueing and retry rules of the dispatcher, with an injected clock.

The receiver here is a scripted stand-in: what goes over HTTP is tested against
real receivers in test_integration.py.
"""

import logging

import pytest

from watchdog.alerts import AlertEvent, AlertStatus
from watchdog.delivery import MAX_ATTEMPTS, Dispatcher
from watchdog.exceptions import DeliveryError
from watchdog.freshness import FreshnessState, PipelineStatus
from watchdog.metrics import WatchdogMetrics
from watchdog.notifications import Notification


class ScriptedReceiver:
    def __init__(self, name: str, failures: list[DeliveryError] | None = None) -> None:
        self.name = name
        self.failures = list(failures or [])
        self.attempts: list[Notification] = []
        self.delivered: list[Notification] = []

    def send(self, notification: Notification) -> None:
        self.attempts.append(notification)
        if self.failures:
            raise self.failures.pop(0)
        self.delivered.append(notification)


def event(status: AlertStatus, name: str = "train") -> AlertEvent:
    pipeline = PipelineStatus(name, FreshnessState.stale, 3600, 1000.0, last_success=1.0)
    return AlertEvent(status, pipeline, firing_since=1000.0)


def sent(metrics: WatchdogMetrics, receiver: str, result: str) -> float | None:
    return metrics.registry.get_sample_value(
        "ml_watchdog_notifications_total", {"receiver": receiver, "result": result}
    )


def test_one_notification_per_status_and_receiver(clock) -> None:
    a, b = ScriptedReceiver("a"), ScriptedReceiver("b")
    metrics = WatchdogMetrics(["a", "b"])
    dispatcher = Dispatcher([a, b], metrics, clock)

    dispatcher.submit([event(AlertStatus.firing, "x"), event(AlertStatus.firing, "y")], clock())
    dispatcher.deliver_due()

    assert [len(n.events) for n in a.delivered] == [2]
    assert [n.status for n in b.delivered] == [AlertStatus.firing]
    assert sent(metrics, "a", "sent") == 1
    assert dispatcher.pending() == 0


def test_transient_failure_is_retried_with_backoff_and_order_kept(clock) -> None:
    flaky = ScriptedReceiver("r", [DeliveryError("HTTP 500", permanent=False)])
    metrics = WatchdogMetrics(["r"])
    dispatcher = Dispatcher([flaky], metrics, clock)
    dispatcher.submit([event(AlertStatus.firing)], clock())
    dispatcher.deliver_due()

    dispatcher.submit([event(AlertStatus.resolved)], clock())
    dispatcher.deliver_due()
    waiting = dispatcher.pending()
    clock.advance(2)
    dispatcher.deliver_due()

    assert waiting == 2
    assert [n.status for n in flaky.delivered] == [AlertStatus.firing, AlertStatus.resolved]
    assert len(flaky.attempts) == 3
    assert metrics.registry.get_sample_value("ml_watchdog_notifications_pending") == 0


def test_permanent_failure_is_dropped_loudly(clock, caplog: pytest.LogCaptureFixture) -> None:
    broken = ScriptedReceiver("r", [DeliveryError("HTTP 404: no_service", permanent=True)])
    metrics = WatchdogMetrics(["r"])
    dispatcher = Dispatcher([broken], metrics, clock)

    with caplog.at_level(logging.ERROR):
        dispatcher.submit([event(AlertStatus.firing)], clock())
        dispatcher.deliver_due()

    assert len(broken.attempts) == 1
    assert sent(metrics, "r", "failed") == 1
    assert "notification dropped: receiver=r" in caplog.text
    assert "HTTP 404: no_service" in caplog.text


def test_retries_are_bounded(clock) -> None:
    failures = [DeliveryError("timed out", permanent=False) for _ in range(MAX_ATTEMPTS)]
    down = ScriptedReceiver("r", failures)
    metrics = WatchdogMetrics(["r"])
    dispatcher = Dispatcher([down], metrics, clock)
    dispatcher.submit([event(AlertStatus.firing)], clock())

    for _ in range(MAX_ATTEMPTS):
        dispatcher.deliver_due()
        clock.advance(3600)

    assert len(down.attempts) == MAX_ATTEMPTS
    assert dispatcher.pending() == 0
    assert sent(metrics, "r", "failed") == 1


def test_one_receiver_failing_does_not_hold_back_another(clock) -> None:
    down = ScriptedReceiver("down", [DeliveryError("connection refused", permanent=False)])
    up = ScriptedReceiver("up")
    dispatcher = Dispatcher([down, up], WatchdogMetrics(["down", "up"]), clock)

    dispatcher.submit([event(AlertStatus.firing)], clock())
    dispatcher.deliver_due()

    assert down.delivered == []
    assert len(up.delivered) == 1


def test_a_defect_while_sending_drops_that_notification_and_keeps_the_queue_moving(
    clock, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(ScriptedReceiver):
        def send(self, notification: Notification) -> None:
            if notification.status is AlertStatus.firing:
                raise ValueError("year 58895 is out of range")
            super().send(notification)

    broken = Broken("r")
    metrics = WatchdogMetrics(["r"])
    dispatcher = Dispatcher([broken], metrics, clock)

    dispatcher.submit([event(AlertStatus.firing), event(AlertStatus.resolved)], clock())
    dispatcher.deliver_due()

    assert [n.status for n in broken.delivered] == [AlertStatus.resolved]
    assert sent(metrics, "r", "failed") == 1
    assert "internal error: ValueError" in caplog.text


def test_notification_dated_by_a_clock_ahead_of_ours_goes_out_at_once(clock) -> None:
    receiver = ScriptedReceiver("r")
    dispatcher = Dispatcher([receiver], WatchdogMetrics(["r"]), clock)

    dispatcher.submit([event(AlertStatus.firing)], clock() + 3600)
    dispatcher.deliver_due()

    assert len(receiver.delivered) == 1
