"""Receivers against real HTTP servers on 127.0.0.1: what arrives, byte for byte, and
how refusals are reported.

The dispatcher (retries, pacing, the outbox) is tested in test_delivery.py; here each
test renders and delivers messages itself.
"""

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from testbed.receiver import ReceivedRequest, RecordingReceiver
from tests.conftest import FakeClock
from watchdog.alerts import SOURCE_CHECK, AlertEvent, AlertStatus, EventKind
from watchdog.config import ReceiverConfig, load_settings
from watchdog.exceptions import ConfigError, DeliveryError
from watchdog.freshness import FreshnessState, PipelineStatus
from watchdog.notifications import (
    SLACK_MAX_BLOCKS,
    SLACK_MAX_SECTION_TEXT,
    SLACK_MAX_TEXT,
    Notification,
)
from watchdog.receivers import (
    Message,
    PagerDutyReceiver,
    SlackReceiver,
    WebhookReceiver,
    build_receiver,
)
from watchdog.transport import new_session

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
ROUTING_KEY = "R0ut1ngKeyR0ut1ngKeyR0ut1ngKey32"


# The check a receiver runs, as the README shows it (with "now" passed in here).
def verify(secret: bytes, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    timestamp = headers.get("x-watchdog-timestamp", "")
    signature = headers.get("x-watchdog-signature", "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > 300:
        return False  # missing, or older than 5 minutes: a replay
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(signature, "sha256=" + mac.hexdigest())


def stale(name: str = "train", check: str = "last_success", **labels: str) -> PipelineStatus:
    return PipelineStatus(
        pipeline=name,
        state=FreshnessState.stale,
        evaluated_at=NOW,
        check=check,
        max_age=7200,
        threshold="2h",
        deadline=NOW - 4000,
        last_success=NOW - 11200,
        labels=dict(labels),
    )


def firing(status: PipelineStatus, severity: str = "critical") -> AlertEvent:
    return AlertEvent(AlertStatus.firing, status, firing_since=NOW - 600, severity=severity)


def resolved(status: PipelineStatus) -> AlertEvent:
    fresh = replace(status, state=FreshnessState.fresh, last_success=NOW - 60)
    return AlertEvent(AlertStatus.resolved, fresh, firing_since=NOW - 600, kind=EventKind.resolved)


def notification(*events: AlertEvent, id: str = "n1", **fields: Any) -> Notification:
    status = events[0].status if events else AlertStatus.firing
    return Notification("hook", status, list(events), created_at=NOW, id=id, **fields)


def config(**fields: Any) -> Any:
    fields.setdefault("name", "hook")
    return TypeAdapter(ReceiverConfig).validate_python(fields)


def webhook(receiver: RecordingReceiver, clock: FakeClock, **fields: Any) -> WebhookReceiver:
    settings = config(type="webhook", url=receiver.url(), **fields)
    return WebhookReceiver(settings, new_session(), clock)


def only(receiver: RecordingReceiver) -> ReceivedRequest:
    (request,) = receiver.requests()
    return request


def refusal(target: WebhookReceiver, message: Message) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        target.deliver(message)
    return caught.value


@pytest.fixture(scope="module")
def _server() -> Iterator[RecordingReceiver]:
    # One server for the module: stopping one takes half a second.
    with RecordingReceiver() as server:
        yield server


@pytest.fixture
def receiver(_server: RecordingReceiver) -> Iterator[RecordingReceiver]:
    """The module's server, emptied and answering 200 ``ok``."""
    _server.clear()
    _server.respond_with(200)
    yield _server
    _server.clear()


@pytest.fixture
def slack_receiver(receiver: RecordingReceiver) -> Iterator[SlackReceiver]:
    yield SlackReceiver(config(type="slack", url=receiver.url("/services/T0/B0/x")), new_session())


# Generic webhook: signing, headers, credentials ------------------------------------


def test_signed_webhook_verifies_from_the_raw_bytes(
    receiver: RecordingReceiver, clock: FakeClock
) -> None:
    target = webhook(receiver, clock, hmac_secret="s3cret-signing-key")
    (message,) = target.render(notification(firing(stale())))

    target.deliver(message)

    request = only(receiver)
    assert request.headers["x-watchdog-timestamp"] == str(int(clock.now))
    assert verify(b"s3cret-signing-key", request.headers, request.body, clock.now)
    assert not verify(b"another-key", request.headers, request.body, clock.now)
    assert not verify(b"s3cret-signing-key", request.headers, request.body + b" ", clock.now)
    assert request.headers["idempotency-key"] == request.json()["id"] == "n1"
    assert request.json()["version"] == "1"


def test_retry_is_signed_again_with_a_new_timestamp(
    receiver: RecordingReceiver, clock: FakeClock, tmp_path: Path
) -> None:
    secret_file = tmp_path / "hmac"
    secret_file.write_text("from-a-file\n")
    target = webhook(receiver, clock, hmac_secret_file=str(secret_file))
    (message,) = target.render(notification(firing(stale())))
    receiver.enqueue_responses([(503, "busy")])

    first_error = refusal(target, message)
    clock.advance(400)
    target.deliver(message)

    first, second = receiver.requests()
    assert not first_error.permanent
    assert first.body == second.body
    assert (
        int(second.headers["x-watchdog-timestamp"])
        == int(first.headers["x-watchdog-timestamp"]) + 400
    )
    assert verify(b"from-a-file", second.headers, second.body, clock.now)
    # The first attempt, replayed now, is too old.
    assert not verify(b"from-a-file", first.headers, first.body, clock.now)
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == "n1"


def test_custom_headers_and_bearer_token_arrive(
    receiver: RecordingReceiver, clock: FakeClock, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-from-file\n")
    api_key = tmp_path / "api-key"
    api_key.write_text("key-from-file")
    target = webhook(
        receiver,
        clock,
        headers={"X-Team": "ml-platform"},
        header_files={"X-Api-Key": str(api_key)},
        bearer_token_file=str(token_file),
    )

    target.deliver(target.render(notification(firing(stale())))[0])

    headers = only(receiver).headers
    assert headers["x-team"] == "ml-platform"
    assert headers["x-api-key"] == "key-from-file"
    assert headers["authorization"] == "Bearer tok-from-file"
    assert headers["content-type"] == "application/json"
    assert "x-watchdog-signature" not in headers


def test_basic_auth_arrives(receiver: RecordingReceiver, clock: FakeClock) -> None:
    target = webhook(receiver, clock, basic_auth={"username": "watchdog", "password": "pa55"})

    target.deliver(target.render(notification(firing(stale())))[0])

    scheme, _, encoded = only(receiver).headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded) == b"watchdog:pa55"


@pytest.mark.parametrize(
    ("fields", "secret"),
    [
        ({"bearer_token": "bearer-XYZ-123"}, "bearer-XYZ-123"),
        ({"basic_auth": {"username": "u", "password": "basic-PW-456"}}, "basic-PW-456"),
        ({"headers": {"X-Api-Key": "header-KEY-789"}}, "header-KEY-789"),
        ({"hmac_secret": "hmac-SECRET-000"}, "hmac-SECRET-000"),
    ],
)
def test_secrets_echoed_back_never_reach_the_error(
    receiver: RecordingReceiver, clock: FakeClock, fields: dict[str, Any], secret: str
) -> None:
    target = webhook(receiver, clock, **fields)
    message = target.render(notification(firing(stale())))[0]
    target.deliver(message)
    sent = only(receiver).headers.get("authorization", "")
    # A server that echoes what it got, as some do in their errors.
    receiver.respond_with(401, f"refused: {secret} / {sent}")

    error = refusal(target, message)

    assert error.permanent
    assert error.reason.startswith("HTTP 401: refused: <secret>")
    shown = [
        str(error),
        repr(error),
        repr(target),
        repr(config(**fields, type="webhook", url="http://127.0.0.1:1/h")),
    ]
    for text in shown:
        assert secret not in text
        assert not sent or sent.split()[-1] not in text


# Alertmanager format -----------------------------------------------------------------

AM_FIELDS = {
    "version": str,
    "groupKey": str,
    "truncatedAlerts": int,
    "status": str,
    "receiver": str,
    "groupLabels": dict,
    "commonLabels": dict,
    "commonAnnotations": dict,
    "externalURL": str,
    "alerts": list,
}
AM_ALERT_FIELDS = {
    "status": str,
    "labels": dict,
    "annotations": dict,
    "startsAt": str,
    "endsAt": str,
    "generatorURL": str,
    "fingerprint": str,
}


def test_alertmanager_format_has_exactly_the_documented_fields(
    receiver: RecordingReceiver, clock: FakeClock
) -> None:
    target = webhook(
        receiver, clock, format="alertmanager", external_url="https://watchdog.example/"
    )
    events = [
        firing(stale("train", team="ml")),
        firing(stale("feed", "rows", team="ml"), "warning"),
    ]

    target.deliver(target.render(notification(*events, omitted=3, group={"team": "ml"}))[0])

    request = only(receiver)
    body = request.json()
    assert request.headers["idempotency-key"] == "n1"
    assert {k: type(v) for k, v in body.items()} == AM_FIELDS
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "hook"
    assert body["truncatedAlerts"] == 3
    assert body["groupLabels"] == {"team": "ml"}
    assert body["groupKey"] == '{}/{receiver="hook"}:{team="ml"}'
    assert body["commonLabels"] == {"team": "ml"}
    assert body["commonAnnotations"] == {}
    assert body["externalURL"] == "https://watchdog.example"
    for alert in body["alerts"]:
        assert {k: type(v) for k, v in alert.items()} == AM_ALERT_FIELDS
        assert set(alert["annotations"]) == {"summary", "description"}
        assert alert["status"] == "firing"
        assert RFC3339.match(alert["startsAt"])
        assert alert["endsAt"] == "0001-01-01T00:00:00Z"
        assert alert["generatorURL"] == "https://watchdog.example/api/v1/alerts"
        assert re.fullmatch(r"[0-9a-f]{16}", alert["fingerprint"])
    stale_alert, check_alert = body["alerts"]
    assert stale_alert["labels"] == {
        "alertname": "PipelineStale",
        "pipeline": "train",
        "check": "last_success",
        "severity": "critical",
        "team": "ml",
    }
    assert check_alert["labels"]["alertname"] == "PipelineCheckFailing"
    assert check_alert["labels"]["severity"] == "warning"
    assert stale_alert["startsAt"] == "2027-01-15T07:50:00Z"
    assert stale_alert["annotations"]["summary"].startswith("train is stale: last success")


def test_alertmanager_resolution_keeps_the_fingerprint_and_has_an_end(
    receiver: RecordingReceiver, clock: FakeClock
) -> None:
    target = webhook(receiver, clock, format="alertmanager")
    warned = firing(stale(), "warning")
    escalated = firing(stale(), "critical")

    for event in (warned, escalated, resolved(stale())):
        target.deliver(target.render(notification(event))[0])

    bodies = [request.json() for request in receiver.requests()]
    alerts = [body["alerts"][0] for body in bodies]
    assert len({alert["fingerprint"] for alert in alerts}) == 1
    assert bodies[2]["status"] == "resolved"
    assert alerts[2]["endsAt"] == "2027-01-15T08:00:00Z"
    assert alerts[2]["startsAt"] == "2027-01-15T07:50:00Z"
    assert bodies[0]["externalURL"] == alerts[0]["generatorURL"] == ""


def test_alertmanager_source_alert_has_no_pipeline_label(
    receiver: RecordingReceiver, clock: FakeClock
) -> None:
    source = PipelineStatus("", FreshnessState.unknown, NOW, check=SOURCE_CHECK, reason="down")
    target = webhook(receiver, clock, format="alertmanager")

    target.deliver(target.render(notification(firing(source)))[0])

    (alert,) = only(receiver).json()["alerts"]
    assert alert["labels"] == {
        "alertname": "WatchdogCannotEvaluate",
        "check": "source",
        "severity": "critical",
    }


# PagerDuty -------------------------------------------------------------------------


def pagerduty(receiver: RecordingReceiver) -> PagerDutyReceiver:
    settings = config(type="pagerduty", url=receiver.url("/v2/enqueue"), routing_key=ROUTING_KEY)
    return PagerDutyReceiver(settings, new_session())


def test_pagerduty_trigger_and_resolve_share_the_dedup_key(receiver: RecordingReceiver) -> None:
    receiver.respond_with(202, '{"status":"success","message":"Event processed"}')
    target = pagerduty(receiver)
    long_name = "x" * 2000

    triggers = target.render(
        notification(firing(stale("train", env="prod")), firing(stale(long_name)))
    )
    resolves = target.render(notification(resolved(stale("train")), id="n2"))
    for message in triggers + resolves:
        target.deliver(message)

    assert [m.id for m in triggers + resolves] == ["n1-1", "n1-2", "n2"]
    assert all(ROUTING_KEY.encode() not in m.body for m in triggers + resolves)
    trigger, long_trigger, resolve = (r.json() for r in receiver.requests())
    assert trigger["routing_key"] == resolve["routing_key"] == ROUTING_KEY
    assert trigger["event_action"] == "trigger"
    assert resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "pipeline-watchdog/train/last_success"
    payload = trigger["payload"]
    assert payload["source"] == "pipeline-watchdog"
    assert payload["severity"] == "critical"
    assert payload["component"] == "train"
    assert payload["group"] == "last_success"
    assert payload["class"] == "stale"
    assert payload["timestamp"] == "2027-01-15T08:00:00Z"
    assert payload["custom_details"]["labels"] == {"env": "prod"}
    assert payload["custom_details"]["age_seconds"] == 11200
    assert payload["custom_details"]["threshold"] == "2h"
    assert len(long_trigger["payload"]["summary"]) == 1024
    assert len(long_trigger["dedup_key"]) <= 255


def test_pagerduty_refusals(receiver: RecordingReceiver) -> None:
    target = pagerduty(receiver)
    (message,) = target.render(notification(firing(stale())))
    invalid = {
        "status": "invalid event",
        "message": "Event object is invalid",
        "errors": ["'payload.summary' is missing"],
    }
    receiver.enqueue_responses([(400, json.dumps(invalid)), (429, "", {"Retry-After": "7"})])

    bad = refusal(target, message)
    throttled = refusal(target, message)

    assert bad.permanent
    assert bad.reason == (
        "PagerDuty refused the event: Event object is invalid; 'payload.summary' is missing"
    )
    assert not throttled.permanent
    assert throttled.retry_after == 7


# Slack ------------------------------------------------------------------------------


def section_names(body: dict[str, Any]) -> list[str]:
    texts = [block["text"]["text"] for block in body["blocks"][1:] if block["type"] == "section"]
    return [text.split("*")[1] for text in texts]


def assert_within_slack_limits(body: dict[str, Any]) -> None:
    texts = [block["text"]["text"] for block in body["blocks"] if block["type"] == "section"]
    assert len(body["blocks"]) <= SLACK_MAX_BLOCKS
    assert 0 < len(body["text"]) <= SLACK_MAX_TEXT
    assert all(len(text) <= SLACK_MAX_SECTION_TEXT for text in texts)
    # Cutting never leaves half an escape such as "&am".
    assert not re.search(r"&(?!amp;|lt;|gt;)", body["text"] + "".join(texts))


def test_slack_splits_a_long_notification_within_limits(
    receiver: RecordingReceiver, slack_receiver: SlackReceiver
) -> None:
    names = [f"pipeline-{i:03d}-" + "n" * 150 for i in range(130)]
    # Reasons longer than a section may be: each section is cut.
    invalid = [replace(stale(n), state=FreshnessState.invalid, reason="<&>" * 1500) for n in names]
    events = [firing(status) for status in invalid]

    messages = slack_receiver.render(notification(*events))
    for message in messages:
        slack_receiver.deliver(message)

    bodies = [request.json() for request in receiver.requests()]
    assert [m.id for m in messages] == ["n1-1", "n1-2", "n1-3", "n1-4"]
    assert [m.alerts for m in messages] == [40, 40, 40, 10]
    for number, body in enumerate(bodies, start=1):
        assert_within_slack_limits(body)
        assert f"(part {number} of 4)" in body["blocks"][0]["text"]["text"]
        assert body["text"].startswith(":red_circle: 130 pipelines invalid: pipeline-000-")
        assert f"(part {number} of 4)" in body["text"].splitlines()[0]
    listed = [name for body in bodies for name in section_names(body)]
    assert listed == names
    assert all(block["type"] == "section" for body in bodies for block in body["blocks"])


def test_slack_lists_five_parts_then_counts_the_rest(slack_receiver: SlackReceiver) -> None:
    events = [firing(stale(f"p{i}")) for i in range(260)]

    messages = slack_receiver.render(notification(*events, omitted=15))

    bodies = [json.loads(m.body) for m in messages]
    assert len(bodies) == 5
    for body in bodies:
        assert_within_slack_limits(body)
    assert bodies[-1]["blocks"][-1] == {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": "…and 75 more"}],
    }
    listed = [name for body in bodies for name in section_names(body)]
    assert listed == [f"p{i}" for i in range(200)]


def test_slack_short_notification_is_one_message_with_the_notification_id(
    slack_receiver: SlackReceiver,
) -> None:
    (message,) = slack_receiver.render(notification(firing(stale())))

    assert message.id == "n1"
    assert "part" not in json.loads(message.body)["text"]


@pytest.mark.parametrize(
    ("status", "code", "meaning"),
    [
        (400, "invalid_payload", "the message is malformed"),
        (403, "action_prohibited", "an admin restricted posting to this channel"),
        (404, "channel_not_found", "the webhook's channel was deleted or is out of reach"),
        (404, "no_service", "the webhook was revoked or deleted"),
        (410, "channel_is_archived", "the channel is archived"),
    ],
)
def test_slack_refusals_are_permanent_and_say_why(
    receiver: RecordingReceiver,
    slack_receiver: SlackReceiver,
    status: int,
    code: str,
    meaning: str,
) -> None:
    receiver.respond_with(status, code)

    error = refusal(slack_receiver, slack_receiver.render(notification(firing(stale())))[0])

    assert error.permanent
    assert error.reason == f"Slack refused the message: {code} ({meaning})"


def test_slack_rate_limit_and_rollup_error_are_retried(
    receiver: RecordingReceiver, slack_receiver: SlackReceiver
) -> None:
    (message,) = slack_receiver.render(notification(firing(stale())))
    receiver.enqueue_responses(
        [(429, "rate_limited", {"Retry-After": "7"}), (500, "rollup_error")]
    )

    throttled = refusal(slack_receiver, message)
    failed = refusal(slack_receiver, message)

    assert not throttled.permanent
    assert throttled.retry_after == 7
    assert not failed.permanent
    assert failed.reason == "HTTP 500: rollup_error"
    assert "/services/" not in failed.reason + throttled.reason


# Configuration ----------------------------------------------------------------------


def test_receivers_come_from_the_environment_with_their_secrets(
    write_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    receivers = [
        {"name": "hook", "type": "webhook", "url": "http://127.0.0.1:1/h", "hmac_secret": "k"},
        {"name": "pd", "type": "pagerduty", "url": "http://127.0.0.1:1/e", "routing_key": "r"},
        {"name": "chat", "type": "slack", "url": "http://127.0.0.1:1/s"},
    ]
    monkeypatch.setenv("WATCHDOG_RECEIVERS", json.dumps(receivers))

    settings = load_settings(write_config(""))

    built = [build_receiver(r, new_session()) for r in settings.receivers]
    assert [type(r) for r in built] == [WebhookReceiver, PagerDutyReceiver, SlackReceiver]
    assert settings.receivers[0].resolve_hmac_secret() == "k"
    assert "'k'" not in repr(settings.receivers[0])


def test_alertmanager_receivers_are_not_built_here() -> None:
    alertmanager = config(type="alertmanager", url="http://127.0.0.1:9093")

    with pytest.raises(ValueError, match="not built here"):
        build_receiver(alertmanager, new_session())


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (
            {"hmac_secret": "a", "hmac_secret_file": "/dev/null"},
            "receivers[0].hmac_secret_file: '/dev/null' is empty",
        ),
        ({"hmac_secret": ""}, "receivers[0].hmac_secret: must not be empty"),
        (
            {"hmac_secret_file": "/nonexistent/key"},
            "receivers[0].hmac_secret_file: cannot read '/nonexistent/key': "
            "No such file or directory",
        ),
        (
            {"bearer_token": "t", "basic_auth": {"username": "u", "password": "p"}},
            "receivers[0]: set only one of bearer_token and basic_auth",
        ),
        (
            {"headers": {"Idempotency-Key": "x"}},
            "receivers[0].headers: Idempotency-Key is set by the watchdog itself",
        ),
        (
            {"headers": {"X-Key": "two\nlines"}},
            "receivers[0].headers.X-Key: must be printable ASCII on one line "
            "(it is sent in an HTTP header)",
        ),
        (
            {"headers": {"Authorization": "Token x"}, "bearer_token": "t"},
            "receivers[0]: Authorization is set in headers and by bearer_token or basic_auth",
        ),
        (
            {"format": "prometheus"},
            "receivers[0].format: input should be 'watchdog' or 'alertmanager'",
        ),
        (
            {"external_url": "https://watchdog.example"},
            "receivers[0]: external_url only applies to format: alertmanager",
        ),
        (
            {"format": "alertmanager", "external_url": "https://u:p@watchdog.example"},
            "receivers[0].external_url: must be an http:// or https:// URL "
            "without credentials or query",
        ),
        (
            {"type": "pagerduty"},
            "receivers[0]: set exactly one of routing_key and routing_key_file",
        ),
        ({"type": "slack", "hmac_secret": "k"}, "receivers[0].hmac_secret: unknown setting"),
    ],
)
def test_receiver_config_problems_are_one_line_naming_the_field(
    write_config: Any, fields: dict[str, Any], problem: str
) -> None:
    receiver = {"name": "r", "type": "webhook", "url": "http://127.0.0.1:1/h", **fields}

    with pytest.raises(ConfigError) as caught:
        load_settings(write_config({"receivers": [receiver]}))

    assert caught.value.problems == [problem]


def test_both_secret_twins_is_one_problem(write_config: Any, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k2")
    receiver = {
        "name": "r",
        "type": "webhook",
        "url": "http://127.0.0.1:1/h",
        "hmac_secret": "k1",
        "hmac_secret_file": str(key),
    }

    with pytest.raises(ConfigError) as caught:
        load_settings(write_config({"receivers": [receiver]}))

    assert caught.value.problems == [
        "receivers[0]: set only one of hmac_secret and hmac_secret_file"
    ]
