"""Pushing alerts to a real Alertmanager (Debian's prometheus-alertmanager 0.25).

One Alertmanager serves the module; its webhook receiver delivers to a local
recording sink, so each test sees both Alertmanager's view (``GET /api/v2/alerts``)
and the notifications it sends.  Alertmanager works on the wall clock, so pushes
here use ``time.time()`` as the evaluation time.  The pusher's own bookkeeping
(re-sending resolutions, label changes) is checked against a recording server.
"""

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from testbed.receiver import RecordingReceiver
from testbed.servers import (
    PROMETHEUS_GUIDE_USER,
    AlertmanagerServer,
    free_port,
    wait_until,
)
from watchdog.alertmanager import AlertmanagerPusher, api_url, rfc3339
from watchdog.alerts import SOURCE_CHECK
from watchdog.config import AlertmanagerReceiverConfig
from watchdog.exceptions import DeliveryError
from watchdog.freshness import FreshnessState, PipelineStatus
from watchdog.store import AlertRecord
from watchdog.transport import new_session

SINK_PATH = "/alertmanager"
HOUR = 3600.0


@pytest.fixture(scope="module")
def sink() -> Iterator[RecordingReceiver]:
    with RecordingReceiver() as server:
        yield server


@pytest.fixture(scope="module")
def alertmanager(
    tmp_path_factory: pytest.TempPathFactory, sink: RecordingReceiver
) -> Iterator[AlertmanagerServer]:
    work_dir = tmp_path_factory.mktemp("alertmanager")
    with AlertmanagerServer(work_dir, sink.url(SINK_PATH)) as server:
        yield server


def stale(pipeline: str, now: float, **fields: Any) -> PipelineStatus:
    """A pipeline two hours past its last success, with a threshold of one hour."""
    values: dict[str, Any] = {
        "max_age": HOUR,
        "threshold": "1h",
        "last_success": now - 2 * HOUR,
        "deadline": now - HOUR,
        "labels": {"team": "ml"},
    }
    values.update(fields)
    return PipelineStatus(pipeline, FreshnessState.stale, now, **values)


def fresh(pipeline: str, now: float) -> PipelineStatus:
    return PipelineStatus(
        pipeline,
        FreshnessState.fresh,
        now,
        max_age=HOUR,
        threshold="1h",
        last_success=now - 60,
        deadline=now - 60 + HOUR,
        labels={"team": "ml"},
    )


def firing_record(status: PipelineStatus, since: float, severity: str = "critical") -> AlertRecord:
    return AlertRecord(status.pipeline, status.check, "firing", severity, since, since)


def pusher(url: str, evaluation_interval: float = 60.0, **config: Any) -> AlertmanagerPusher:
    receiver = AlertmanagerReceiverConfig(type="alertmanager", name="am", url=url, **config)
    return AlertmanagerPusher(receiver, new_session(), evaluation_interval=evaluation_interval)


def notifications(
    sink: RecordingReceiver, pipeline: str, path: str = SINK_PATH
) -> list[dict[str, Any]]:
    """Alertmanager's webhook bodies for the group of ``pipeline``, oldest first."""
    bodies = [request.json() for request in sink.requests(path)]
    return [body for body in bodies if body["groupLabels"].get("pipeline") == pipeline]


def statuses(sink: RecordingReceiver, pipeline: str, path: str = SINK_PATH) -> list[str]:
    return [body["status"] for body in notifications(sink, pipeline, path)]


def wait_for_status(
    sink: RecordingReceiver, pipeline: str, status: str, path: str = SINK_PATH
) -> None:
    wait_until(
        lambda: status in statuses(sink, pipeline, path),
        timeout=10,
        what=f"a {status} notification for {pipeline}",
    )


def pushed(sink: RecordingReceiver, path: str) -> list[list[dict[str, Any]]]:
    """The bodies POSTed to a recording server standing in for Alertmanager."""
    return [request.json() for request in sink.requests(path)]


# Against a real Alertmanager ------------------------------------------------------


def test_firing_alert_is_active_in_alertmanager_and_notified(
    alertmanager: AlertmanagerServer, sink: RecordingReceiver
) -> None:
    now = time.time()
    status = stale("am-firing", now)
    am = pusher(alertmanager.url)

    am.push([(status, firing_record(status, now - 300))], [], now)

    wait_until(lambda: bool(alertmanager.alerts(pipeline="am-firing")), 5, what="the alert")
    [alert] = alertmanager.alerts(pipeline="am-firing")
    assert alert["labels"] == {
        "alertname": "PipelineStale",
        "pipeline": "am-firing",
        "check": "last_success",
        "severity": "critical",
        "team": "ml",
    }
    assert alert["status"]["state"] == "active"
    assert alert["annotations"]["summary"].startswith("am-firing is stale: last success 2h ago")
    assert "Threshold: 1h" in alert["annotations"]["description"]
    assert "Last success: " in alert["annotations"]["description"]
    assert alert["annotations"]["state"] == "stale"

    wait_for_status(sink, "am-firing", "firing")
    [body] = notifications(sink, "am-firing")
    assert body["version"] == "4"
    assert body["receiver"] == "sink"
    assert [a["labels"]["pipeline"] for a in body["alerts"]] == ["am-firing"]
    assert body["alerts"][0]["annotations"]["summary"] == alert["annotations"]["summary"]


def test_pushing_every_cycle_keeps_the_alert_without_duplicate_notifications(
    alertmanager: AlertmanagerServer, sink: RecordingReceiver
) -> None:
    start = time.time()
    record = firing_record(stale("am-repeat", start), start)
    am = pusher(alertmanager.url, evaluation_interval=1)
    am.push([(stale("am-repeat", start), record)], [], start)
    wait_for_status(sink, "am-repeat", "firing")
    first_ends_at = alertmanager.alerts(pipeline="am-repeat")[0]["endsAt"]

    # Three seconds of cycles, 0.5 s apart: three group_intervals in which
    # Alertmanager could notify again.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        now = time.time()
        am.push([(stale("am-repeat", now), record)], [], now)
        time.sleep(0.5)

    [alert] = alertmanager.alerts(pipeline="am-repeat")
    assert alert["startsAt"] == rfc3339(start)
    assert alert["endsAt"] > first_ends_at
    assert statuses(sink, "am-repeat") == ["firing"]


def test_pushed_resolution_is_notified_as_resolved(
    alertmanager: AlertmanagerServer, sink: RecordingReceiver
) -> None:
    start = time.time()
    record = firing_record(stale("am-resolve", start), start)
    am = pusher(alertmanager.url)
    am.push([(stale("am-resolve", start), record)], [], start)
    wait_for_status(sink, "am-resolve", "firing")

    now = time.time()
    am.push([], [(fresh("am-resolve", now), record, now)], now)

    wait_for_status(sink, "am-resolve", "resolved")
    resolved = notifications(sink, "am-resolve")[-1]["alerts"][0]
    assert resolved["status"] == "resolved"
    assert resolved["annotations"]["summary"].startswith("am-resolve recovered after ")
    assert resolved["annotations"]["state"] == "fresh"
    assert alertmanager.alerts(pipeline="am-resolve") == []


def test_alert_ends_on_its_own_when_the_pushes_stop(
    alertmanager: AlertmanagerServer, sink: RecordingReceiver
) -> None:
    now = time.time()
    status = stale("am-expire", now)
    # endsAt is 4 x 0.5 s ahead: the watchdog "dies" right after this push.
    pusher(alertmanager.url, evaluation_interval=0.5).push(
        [(status, firing_record(status, now))], [], now
    )
    wait_for_status(sink, "am-expire", "firing")

    wait_for_status(sink, "am-expire", "resolved")

    assert statuses(sink, "am-expire") == ["firing", "resolved"]
    [alert] = notifications(sink, "am-expire")[-1]["alerts"]
    assert datetime.fromisoformat(alert["endsAt"]).timestamp() == pytest.approx(now + 2, abs=0.01)
    assert alertmanager.alerts(pipeline="am-expire") == []


def test_unreachable_alertmanager_is_a_temporary_failure() -> None:
    now = time.time()
    status = stale("am-down", now)
    am = pusher(f"http://127.0.0.1:{free_port()}")

    with pytest.raises(DeliveryError) as caught:
        am.push([(status, firing_record(status, now))], [], now)

    assert caught.value.permanent is False
    assert caught.value.reason == "connection refused"


def test_invalid_alert_is_a_permanent_failure_and_the_valid_ones_are_kept(
    alertmanager: AlertmanagerServer,
) -> None:
    now = time.time()
    invalid = stale("am-invalid", now, labels={"bad-name": "x"})
    valid = stale("am-valid", now)
    am = pusher(alertmanager.url)

    with pytest.raises(DeliveryError) as caught:
        am.push(
            [(invalid, firing_record(invalid, now)), (valid, firing_record(valid, now))], [], now
        )

    assert caught.value.permanent is True
    assert caught.value.reason == 'HTTP 400: invalid label set: invalid name "bad-name"'
    assert alertmanager.alerts(pipeline="am-invalid") == []
    assert len(alertmanager.alerts(pipeline="am-valid")) == 1


def test_resolution_is_sent_again_to_a_restarted_alertmanager(
    tmp_path: Path, sink: RecordingReceiver
) -> None:
    path = "/restarted"
    start = time.time()
    record = firing_record(stale("am-restart", start), start)
    with AlertmanagerServer(tmp_path, sink.url(path), name="restarted") as server:
        am = pusher(server.url)
        am.push([(stale("am-restart", start), record)], [], start)
        wait_for_status(sink, "am-restart", "firing", path)

        # The resolution is lost while Alertmanager restarts; the next cycle sends it again.
        server.stop()
        now = time.time()
        with pytest.raises(DeliveryError):
            am.push([], [(fresh("am-restart", now), record, now)], now)
        server.start()
        am.push([], [], time.time())

        wait_for_status(sink, "am-restart", "resolved", path)
    assert statuses(sink, "am-restart", path) == ["firing", "resolved"]


def test_basic_auth_reaches_an_alertmanager_that_asks_for_it(
    tmp_path: Path, sink: RecordingReceiver
) -> None:
    user = PROMETHEUS_GUIDE_USER
    now = time.time()
    status = stale("am-auth", now)
    good = {"username": user.username, "password": user.password}
    bad = {"username": user.username, "password": "wrong"}

    with AlertmanagerServer(tmp_path, sink.url("/auth"), user=user, name="auth") as server:
        pusher(server.url, basic_auth=good).push([(status, firing_record(status, now))], [], now)
        with pytest.raises(DeliveryError) as caught:
            pusher(server.url, basic_auth=bad).push(
                [(status, firing_record(status, now))], [], now
            )
        alerts = server.alerts(pipeline="am-auth")

    assert len(alerts) == 1
    assert caught.value.permanent is True
    assert caught.value.reason.startswith("HTTP 401")
    assert user.password not in caught.value.reason


# The pusher's bookkeeping, against a recording server -----------------------------


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingReceiver]:
    with RecordingReceiver() as server:
        yield server


@pytest.fixture
def fake_am(recorder: RecordingReceiver) -> RecordingReceiver:
    """A server standing in for Alertmanager: answers 200 and records what it got."""
    recorder.clear()
    recorder.respond_with(200, b"")
    return recorder


def test_resolution_is_sent_every_cycle_until_resolved_resend_for_has_passed(
    fake_am: RecordingReceiver,
) -> None:
    t0 = 1_800_000_000.0
    record = firing_record(stale("train", t0), t0 - HOUR)
    am = pusher(fake_am.url(""), resolved_resend_for="15m")

    am.push([], [(fresh("train", t0), record, t0)], t0)
    am.push([], [], t0 + 900)
    am.push([], [], t0 + 901)

    bodies = pushed(fake_am, "/api/v2/alerts")
    assert len(bodies) == 2  # the third cycle has nothing to say: no POST
    assert bodies[0] == bodies[1]
    [alert] = bodies[0]
    assert alert["startsAt"] == "2027-01-15T07:00:00.000Z"
    assert alert["endsAt"] == "2027-01-15T08:00:00.000Z"


def test_firing_alert_ends_four_intervals_ahead_and_starts_when_it_fired(
    fake_am: RecordingReceiver,
) -> None:
    t0 = 1_800_000_000.0
    status = stale("train", t0)

    pusher(fake_am.url("/am/"), evaluation_interval=30).push(
        [(status, firing_record(status, t0 - 90))], [], t0
    )

    [[alert]] = pushed(fake_am, "/am/api/v2/alerts")
    assert alert["startsAt"] == "2027-01-15T07:58:30.000Z"
    assert alert["endsAt"] == "2027-01-15T08:02:00.000Z"
    assert "generatorURL" not in alert


def test_alert_firing_again_stops_its_resolution_being_sent(fake_am: RecordingReceiver) -> None:
    t0 = 1_800_000_000.0
    record = firing_record(stale("train", t0), t0 - HOUR)
    am = pusher(fake_am.url(""))
    am.push([], [(fresh("train", t0), record, t0)], t0)

    again = firing_record(stale("train", t0 + 60), t0 + 60)
    am.push([(stale("train", t0 + 60), again)], [], t0 + 60)

    [alert] = pushed(fake_am, "/api/v2/alerts")[-1]
    assert alert["startsAt"] == "2027-01-15T08:01:00.000Z"
    assert alert["endsAt"] > alert["startsAt"]


def test_changed_labels_resolve_the_alert_sent_with_the_old_ones(
    fake_am: RecordingReceiver,
) -> None:
    t0 = 1_800_000_000.0
    warning = PipelineStatus(
        "train", FreshnessState.fresh, t0, last_success=t0 - 50, warn_after=30
    )
    critical = stale("train", t0 + 60, labels={})
    am = pusher(fake_am.url(""))
    am.push([(warning, firing_record(warning, t0, "warning"))], [], t0)

    am.push([(critical, firing_record(critical, t0, "critical"))], [], t0 + 60)

    alerts = pushed(fake_am, "/api/v2/alerts")[-1]
    ends = {a["labels"]["severity"]: a["endsAt"] for a in alerts}
    assert ends["warning"] == "2027-01-15T08:01:00.000Z"
    assert ends["critical"] == "2027-01-15T08:05:00.000Z"


def test_send_resolved_false_sends_no_resolutions(fake_am: RecordingReceiver) -> None:
    t0 = 1_800_000_000.0
    status = stale("train", t0)
    am = pusher(fake_am.url(""), send_resolved=False)
    am.push([(status, firing_record(status, t0))], [], t0)

    am.push([], [(fresh("train", t0 + 60), firing_record(status, t0), t0 + 60)], t0 + 60)

    assert len(pushed(fake_am, "/api/v2/alerts")) == 1


def test_alert_names_say_what_kind_of_alert_it_is(fake_am: RecordingReceiver) -> None:
    t0 = 1_800_000_000.0
    check = stale("train", t0, check="table_update")
    source = PipelineStatus(
        "", FreshnessState.unknown, t0, check=SOURCE_CHECK, reason="Prometheus is down"
    )

    pusher(fake_am.url("")).push(
        [(check, firing_record(check, t0)), (source, firing_record(source, t0))], [], t0
    )

    check_alert, source_alert = pushed(fake_am, "/api/v2/alerts")[0]
    assert check_alert["labels"]["alertname"] == "PipelineCheckFailing"
    assert check_alert["labels"]["check"] == "table_update"
    assert source_alert["labels"] == {
        "alertname": "WatchdogCannotEvaluate",
        "check": "source",
        "severity": "critical",
    }
    assert "Prometheus is down" in source_alert["annotations"]["summary"]


def test_server_error_is_a_temporary_failure_without_the_url(fake_am: RecordingReceiver) -> None:
    t0 = 1_800_000_000.0
    status = stale("train", t0)
    fake_am.respond_with(503, json.dumps({"code": 503, "message": "overloaded"}))
    url = fake_am.url("/secret-prefix")

    with pytest.raises(DeliveryError) as caught:
        pusher(url).push([(status, firing_record(status, t0))], [], t0)

    assert caught.value.permanent is False
    assert caught.value.reason == "HTTP 503: overloaded"


def test_api_url_keeps_a_route_prefix() -> None:
    assert api_url("http://127.0.0.1:9093") == "http://127.0.0.1:9093/api/v2/alerts"
    assert api_url("http://127.0.0.1:9093/am/") == "http://127.0.0.1:9093/am/api/v2/alerts"
    assert api_url("http://127.0.0.1:9093/api/v2/alerts") == "http://127.0.0.1:9093/api/v2/alerts"
