import json
from dataclasses import replace

from watchdog.alerts import AlertEvent, AlertStatus
from watchdog.freshness import FreshnessState, PipelineStatus
from watchdog.notifications import Notification, describe, headline, slack_body, webhook_body

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def stale(name: str = "feature-build", age: float = 11520) -> PipelineStatus:
    return PipelineStatus(
        pipeline=name,
        state=FreshnessState.stale,
        max_age=7200,
        threshold="2h",
        deadline=NOW - age + 7200,
        evaluated_at=NOW,
        last_success=NOW - age,
        last_seen=NOW,
    )


def notification(*events: AlertEvent) -> Notification:
    return Notification(
        receiver="ops", status=events[0].status, events=list(events), created_at=NOW, id="abc"
    )


def test_stale_summary_says_how_late_and_the_threshold() -> None:
    assert describe(stale()) == (
        "feature-build is stale: last success 3h 12m ago, threshold 2h (1h 12m late)"
    )


def test_missing_summaries_say_why() -> None:
    never = PipelineStatus("ghost", FreshnessState.missing, NOW)
    vanished = PipelineStatus(
        "gone", FreshnessState.missing, NOW, last_success=NOW - 4000, last_seen=NOW - 600
    )
    zero = PipelineStatus(
        "zero", FreshnessState.never_succeeded, NOW, reason="no success recorded (value 0)"
    )

    assert describe(never) == "ghost is missing: Prometheus has no last-success series for it"
    assert describe(vanished) == (
        "gone is missing: its last-success series vanished 10m ago; last success 1h 6m ago"
    )
    assert describe(zero) == "zero has never succeeded: no success recorded (value 0)"


def test_scheduled_pipeline_says_when_its_deadline_was_in_its_own_zone() -> None:
    late = PipelineStatus(
        "nightly",
        FreshnessState.stale,
        NOW,
        threshold="schedule '0 2 * * *' Europe/Berlin + 2h grace",
        deadline=NOW - 1800,
        last_success=NOW - 26 * 3600,
        timezone="Europe/Berlin",
    )

    assert describe(late) == (
        "nightly is stale: last success 1d 2h ago, threshold schedule '0 2 * * *' "
        "Europe/Berlin + 2h grace (30m late, deadline was 2027-01-15 08:30 CET)"
    )


def test_lag_check_summary_names_the_check() -> None:
    lagging = PipelineStatus(
        "features", FreshnessState.stale, NOW, check="lag", max_age=3600, threshold="1h", lag=4800
    )

    assert describe(lagging) == "features (lag) is stale: lag 1h 20m, threshold 1h (20m over)"


def test_webhook_body_carries_the_documented_fields() -> None:
    event = AlertEvent(AlertStatus.firing, stale(), firing_since=NOW)

    body = webhook_body(notification(event))

    assert body == {
        "version": "1",
        "id": "abc",
        "status": "firing",
        "receiver": "ops",
        "created_at": "2027-01-15T08:00:00Z",
        "summary": "1 pipeline stale: feature-build",
        "group": {},
        "omitted": 0,
        "alerts": [
            {
                "pipeline": "feature-build",
                "check": "last_success",
                "status": "firing",
                "kind": "firing",
                "severity": "critical",
                "state": "stale",
                "age_seconds": 11520,
                "max_age_seconds": 7200,
                "threshold": "2h",
                "last_success": "2027-01-15T04:48:00Z",
                "next_deadline": "2027-01-15T06:48:00Z",
                "overdue_seconds": 4320,
                "lag_seconds": None,
                "evaluated_at": "2027-01-15T08:00:00Z",
                "firing_since": "2027-01-15T08:00:00Z",
                "reason": "",
                "labels": {},
                "holding": [],
                "held_by": None,
                "summary": (
                    "feature-build is stale: last success 3h 12m ago, threshold 2h (1h 12m late)"
                ),
            }
        ],
    }
    json.dumps(body)  # serialisable as is


def test_resolved_summary_says_how_long_it_fired() -> None:
    fresh = PipelineStatus(
        "feature-build", FreshnessState.fresh, NOW, threshold="2h", last_success=NOW - 30
    )
    event = AlertEvent(AlertStatus.resolved, fresh, firing_since=NOW - 5400)

    body = webhook_body(notification(event))

    assert body["status"] == "resolved"
    assert body["summary"] == "1 pipeline recovered: feature-build"
    assert body["alerts"][0]["summary"] == (
        "feature-build recovered after 1h 30m: last success 30s ago, threshold 2h"
    )


def test_slack_message_has_text_fallback_and_escapes_names() -> None:
    event = AlertEvent(AlertStatus.firing, stale("<b>&co</b>"), firing_since=NOW)

    body = slack_body(notification(event))

    assert body["text"].startswith(":red_circle: 1 pipeline stale: &lt;b&gt;&amp;co&lt;/b&gt;")
    assert "last success 3h 12m ago, threshold 2h" in body["text"]
    section = body["blocks"][1]["text"]["text"]
    assert "*&lt;b&gt;&amp;co&lt;/b&gt;*" in section
    assert "Last success: 2027-01-15T04:48:00Z" in section
    assert "<b>" not in json.dumps(body)


def test_slack_message_stays_within_block_limit() -> None:
    events = [AlertEvent(AlertStatus.firing, stale(f"p{i}"), NOW) for i in range(120)]

    body = slack_body(notification(*events))

    assert len(body["blocks"]) <= 50
    assert body["blocks"][-1]["elements"][0]["text"] == "…and 80 more"
    assert body["text"].startswith(
        ":red_circle: 120 pipelines stale: p0, p1, p2, p3, p4 and 115 more"
    )


def test_headline_counts_states_when_they_differ() -> None:
    missing = replace(stale("b"), state=FreshnessState.missing)
    events = [AlertEvent(AlertStatus.firing, s, NOW) for s in (stale("a"), missing, stale("c"))]

    assert headline(notification(*events)) == "3 pipelines late (2 stale, 1 missing): a, b, c"


def test_time_beyond_the_calendar_renders_as_null_not_a_crash() -> None:
    event = AlertEvent(AlertStatus.firing, replace(stale(), last_success=NOW * 1e6), NOW)

    body = webhook_body(notification(event))

    assert body["alerts"][0]["last_success"] is None


def test_printable_escapes_control_characters_and_cuts_long_names() -> None:
    from watchdog.logs import printable

    assert printable("a\nERROR forged") == "a\\nERROR forged"
    assert printable("ü ok") == "ü ok"
    assert len(printable("x" * 5000)) == 200
