"""Queueing, retry and outbox rules of the dispatcher, with an injected clock.

The receiver here is a scripted stand-in: what goes over HTTP is tested against
real receivers in test_receivers.py, test_hostile.py and the integration tests.
"""

import json
import logging
from pathlib import Path

import pytest

from watchdog.alerts import AlertEvent, AlertStatus
from watchdog.config import DeliveryConfig
from watchdog.delivery import Dispatcher, Policy
from watchdog.exceptions import DeliveryError
from watchdog.freshness import FreshnessState, PipelineStatus
from watchdog.metrics import WatchdogMetrics
from watchdog.notifications import Notification
from watchdog.receivers import Message
from watchdog.store import StateStore


class ScriptedReceiver:
    min_interval = 0.0

    def __init__(self, name: str, failures: list[Exception] | None = None) -> None:
        self.name = name
        self.failures = list(failures or [])
        self.attempts: list[Message] = []
        self.delivered: list[dict[str, object]] = []

    def render(self, notification: Notification) -> list[Message]:
        body = {
            "id": notification.id,
            "status": str(notification.status),
            "pipelines": [e.pipeline.pipeline for e in notification.events],
            "omitted": notification.omitted,
            "group": notification.group,
        }
        data = json.dumps(body).encode()
        return [Message(notification.id, self.name, data, str(notification.status), 1)]

    def deliver(self, message: Message) -> None:
        self.attempts.append(message)
        if self.failures:
            raise self.failures.pop(0)
        self.delivered.append(json.loads(message.body))


def event(status: AlertStatus, name: str = "train", team: str = "") -> AlertEvent:
    labels = {"team": team} if team else {}
    pipeline = PipelineStatus(name, FreshnessState.stale, 1000.0, last_success=1.0, labels=labels)
    return AlertEvent(status, pipeline, firing_since=1000.0)


def counted(metrics: WatchdogMetrics, receiver: str, result: str) -> float | None:
    return metrics.registry.get_sample_value(
        "ml_watchdog_notifications_total", {"receiver": receiver, "result": result}
    )


def dispatcher(clock, *receivers: ScriptedReceiver, **kwargs: object) -> Dispatcher:
    names = [r.name for r in receivers]
    config = DeliveryConfig(**kwargs.pop("config", {}))  # type: ignore[arg-type]
    return Dispatcher(
        list(receivers),
        WatchdogMetrics(names),
        clock,
        config=config,
        jitter=lambda: 0.0,
        **kwargs,  # type: ignore[arg-type]
    )


def test_one_message_per_status_and_receiver(clock) -> None:
    a, b = ScriptedReceiver("a"), ScriptedReceiver("b")
    sender = dispatcher(clock, a, b)

    sender.submit([event(AlertStatus.firing, "x"), event(AlertStatus.firing, "y")], clock())
    sender.deliver_due()

    assert [m["pipelines"] for m in a.delivered] == [["x", "y"]]
    assert [m["status"] for m in b.delivered] == ["firing"]
    assert sender.pending() == 0


def test_group_by_and_max_alerts_shape_the_messages(clock) -> None:
    receiver = ScriptedReceiver("r")
    policies = {"r": Policy(group_by=("team",), max_alerts=2)}
    sender = dispatcher(clock, receiver, policies=policies)
    events = [event(AlertStatus.firing, f"ml-{i}", "ml") for i in range(5)]
    events.append(event(AlertStatus.firing, "etl-0", "etl"))

    sender.submit(events, clock())
    sender.deliver_due()

    assert [(m["group"], m["pipelines"], m["omitted"]) for m in receiver.delivered] == [
        ({"team": "ml"}, ["ml-0", "ml-1"], 3),
        ({"team": "etl"}, ["etl-0"], 0),
    ]


def test_send_resolved_false_sends_no_all_clear(clock) -> None:
    receiver = ScriptedReceiver("r")
    sender = dispatcher(clock, receiver, policies={"r": Policy(send_resolved=False)})

    sender.submit([event(AlertStatus.resolved)], clock())
    sender.deliver_due()

    assert receiver.delivered == []


def test_routed_events_go_only_to_their_receivers(clock) -> None:
    a, b = ScriptedReceiver("a"), ScriptedReceiver("b")
    sender = dispatcher(clock, a, b)
    routed = AlertEvent(
        AlertStatus.firing, event(AlertStatus.firing).pipeline, 1.0, receivers=("b",)
    )

    sender.submit([routed], clock())
    sender.deliver_due()

    assert a.delivered == []
    assert len(b.delivered) == 1


def test_transient_failure_backs_off_exponentially_and_keeps_order(clock) -> None:
    flaky = ScriptedReceiver(
        "r",
        [DeliveryError("HTTP 500", permanent=False), DeliveryError("HTTP 502", permanent=False)],
    )
    sender = dispatcher(clock, flaky, config={"initial_backoff": 2})
    sender.submit([event(AlertStatus.firing)], clock())
    sender.deliver_due()
    sender.submit([event(AlertStatus.resolved)], clock())

    sender.deliver_due()  # not due yet: 1s (half of 2s, no jitter) has not passed
    clock.advance(1)
    sender.deliver_due()  # second failure: next in 2s
    clock.advance(1.9)
    sender.deliver_due()
    waiting = [m["status"] for m in flaky.delivered]
    clock.advance(0.1)
    sender.deliver_due()

    assert waiting == []
    assert [m["status"] for m in flaky.delivered] == ["firing", "resolved"]
    assert len(flaky.attempts) == 4


def test_retry_after_is_honoured(clock) -> None:
    limited = ScriptedReceiver("r", [DeliveryError("HTTP 429", permanent=False, retry_after=7)])
    sender = dispatcher(clock, limited)
    sender.submit([event(AlertStatus.firing)], clock())
    sender.deliver_due()

    clock.advance(6.9)
    sender.deliver_due()
    early = len(limited.attempts)
    clock.advance(0.1)
    sender.deliver_due()

    assert early == 1
    assert len(limited.delivered) == 1


def test_permanent_failure_is_dropped_loudly(clock, caplog: pytest.LogCaptureFixture) -> None:
    broken = ScriptedReceiver("r", [DeliveryError("HTTP 404: no_service", permanent=True)])
    sender = dispatcher(clock, broken)

    with caplog.at_level(logging.ERROR):
        sender.submit([event(AlertStatus.firing)], clock())
        sender.deliver_due()

    assert len(broken.attempts) == 1
    assert counted(sender._metrics, "r", "failed") == 1
    assert "notification dropped: receiver=r" in caplog.text
    assert "HTTP 404: no_service" in caplog.text


def test_retries_are_bounded_by_attempts(clock) -> None:
    down = ScriptedReceiver("r", [DeliveryError("timed out", permanent=False)] * 5)
    sender = dispatcher(clock, down, config={"max_attempts": 3})
    sender.submit([event(AlertStatus.firing)], clock())

    for _ in range(5):
        sender.deliver_due()
        clock.advance(3600)

    assert len(down.attempts) == 3
    assert sender.pending() == 0


def test_retries_are_bounded_by_age(clock) -> None:
    down = ScriptedReceiver("r", [DeliveryError("timed out", permanent=False)] * 5)
    sender = dispatcher(clock, down, config={"max_age": "1h"})
    sender.submit([event(AlertStatus.firing)], clock())
    sender.deliver_due()

    clock.advance(3600)
    sender.deliver_due()

    assert len(down.attempts) == 2
    assert sender.pending() == 0
    assert counted(sender._metrics, "r", "failed") == 1


def test_one_receiver_failing_does_not_hold_back_another(clock) -> None:
    down = ScriptedReceiver("down", [DeliveryError("connection refused", permanent=False)])
    up = ScriptedReceiver("up")
    sender = dispatcher(clock, down, up)

    sender.submit([event(AlertStatus.firing)], clock())
    sender.deliver_due()

    assert down.delivered == []
    assert len(up.delivered) == 1


def test_a_defect_while_sending_drops_that_message_and_keeps_the_queue_moving(
    clock, caplog: pytest.LogCaptureFixture
) -> None:
    broken = ScriptedReceiver("r", [ValueError("year 58895 is out of range")])
    sender = dispatcher(clock, broken)

    sender.submit([event(AlertStatus.firing), event(AlertStatus.resolved)], clock())
    sender.deliver_due()

    assert [m["status"] for m in broken.delivered] == ["resolved"]
    assert "internal error: ValueError" in caplog.text


def test_undelivered_messages_survive_a_restart_through_the_outbox(clock, tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / "state.db")
    down = ScriptedReceiver("r", [DeliveryError("connection refused", permanent=False)])
    first = dispatcher(clock, down, store=store)
    first.submit([event(AlertStatus.firing)], clock())
    first.deliver_due()
    message_id = down.attempts[0].id

    back = ScriptedReceiver("r")
    clock.advance(3600)
    second = dispatcher(clock, back, store=store)
    second.deliver_due()
    left = store.load_outbox()
    store.close()

    assert [m["id"] for m in back.delivered] == [message_id]
    assert left == []


def test_messages_for_a_receiver_that_was_removed_are_dropped_at_start(
    clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore.open(tmp_path / "state.db")
    dispatcher(clock, ScriptedReceiver("old"), store=store).submit(
        [event(AlertStatus.firing)], clock()
    )

    dispatcher(clock, ScriptedReceiver("new"), store=store)

    assert store.load_outbox() == []
    assert "no such receiver any more" in caplog.text
    store.close()


def test_notification_dated_by_a_clock_ahead_of_ours_goes_out_at_once(clock) -> None:
    receiver = ScriptedReceiver("r")
    sender = dispatcher(clock, receiver)

    sender.submit([event(AlertStatus.firing)], clock() + 3600)
    sender.deliver_due()

    assert len(receiver.delivered) == 1


@pytest.mark.parametrize("retry_after", [0.0, -5.0])
def test_retry_after_of_zero_or_in_the_past_still_backs_off(clock, retry_after: float) -> None:
    limited = ScriptedReceiver(
        "r", [DeliveryError("HTTP 429", permanent=False, retry_after=retry_after)] * 3
    )
    sender = dispatcher(clock, limited, config={"initial_backoff": 2})
    sender.submit([event(AlertStatus.firing)], clock())

    for _ in range(5):
        sender.deliver_due()

    assert len(limited.attempts) == 1
