"""Notifications: what receivers are sent, and how it reads.

One cycle produces at most two notifications per receiver: one listing the alerts
that started firing, one listing those that resolved.  The generic webhook body is
versioned (``"version": "1"``); its schema is in the README.  Summaries name the
pipeline, how late it is and the threshold, so the person paged at night need not
open a dashboard to know what is wrong.

Besides the generic body, a notification can be written as Alertmanager's webhook
body (version 4), as PagerDuty events (one per alert) and as Slack messages (split
into parts when it lists more alerts than one message can hold).
"""

import hashlib
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from watchdog.alerts import SOURCE_CHECK, AlertEvent, AlertStatus, EventKind, alert_labels
from watchdog.durations import format_duration, iso_time
from watchdog.freshness import LAST_SUCCESS, FreshnessState, PipelineStatus
from watchdog.logs import printable
from watchdog.schedule import zone

WEBHOOK_SCHEMA_VERSION = "1"

# Slack allows 50 blocks a message; a header, a context line and one section per alert.
# https://api.slack.com/reference/block-kit/blocks
_SLACK_MAX_ALERT_SECTIONS = 40
SLACK_MAX_BLOCKS = 50
# https://api.slack.com/reference/block-kit/blocks#section
SLACK_MAX_SECTION_TEXT = 3000
# Slack asks for a top-level text of at most 4000 characters (longer is cut at 40000).
# https://api.slack.com/methods/chat.postMessage#truncating
SLACK_MAX_TEXT = 4000
# A notification listing more alerts is split into parts of this many, up to this
# many parts; the last part then says how many more there are.
SLACK_ALERTS_PER_PART = _SLACK_MAX_ALERT_SECTIONS
SLACK_MAX_PARTS = 5

ALERTMANAGER_SCHEMA_VERSION = "4"
# How Go writes its zero time.Time; Alertmanager sends it as endsAt while an alert fires.
ALERTMANAGER_NOT_ENDED = "0001-01-01T00:00:00Z"

# The alertname label of each kind of alert, in Alertmanager-format bodies.
ALERTNAME_STALE = "PipelineStale"  # the built-in last_success check
ALERTNAME_CHECK = "PipelineCheckFailing"  # a custom check
ALERTNAME_SOURCE = "WatchdogCannotEvaluate"  # Prometheus cannot be queried
# One line of summary is what Alertmanager's default templates show in a title.
_ALERTMANAGER_SUMMARY_LIMIT = 500

# https://developer.pagerduty.com/docs/events-api-v2/trigger-events/
PAGERDUTY_MAX_SUMMARY = 1024
PAGERDUTY_MAX_DEDUP_KEY = 255
PAGERDUTY_SOURCE = "pipeline-watchdog"


@dataclass(frozen=True)
class Notification:
    """Alerts of one status, for one receiver, from one cycle."""

    receiver: str
    status: AlertStatus
    events: list[AlertEvent]
    created_at: float
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    group: dict[str, str] = field(default_factory=dict)  # the group_by labels' values
    omitted: int = 0  # alerts of this group beyond the receiver's max_alerts


_STATE_WORDS = {
    FreshnessState.fresh: "is fresh",
    FreshnessState.stale: "is stale",
    FreshnessState.missing: "is missing",
    FreshnessState.never_succeeded: "has never succeeded",
    FreshnessState.invalid: "has an invalid timestamp",
    FreshnessState.unknown: "is unknown",
}


def subject(status: PipelineStatus) -> str:
    """What an alert is about: ``train``, ``train (table_update)`` or the watchdog itself."""
    if status.check == SOURCE_CHECK:
        return "pipeline-watchdog"
    if status.check == LAST_SUCCESS:
        return status.pipeline
    return f"{status.pipeline} ({status.check})"


def describe(status: PipelineStatus) -> str:
    """One line on a pipeline's state, for people: ``train is stale: last success …``."""
    if status.check == SOURCE_CHECK:
        return f"pipeline-watchdog cannot evaluate pipelines: {status.reason}"
    if status.severity == "warning" and status.warn_after is not None:
        return (
            f"{subject(status)} is getting late: {explain(status)}, "
            f"warning after {format_duration(status.warn_after)}"
        )
    return f"{subject(status)} {_STATE_WORDS[status.state]}: {explain(status)}"


def explain(status: PipelineStatus) -> str:
    """Why a pipeline is in its state: ``last success 3h 12m ago, threshold 2h (1h 12m late)``."""
    if status.state is FreshnessState.missing:
        return _missing_reason(status)
    if status.state is FreshnessState.unknown:
        return status.reason or "Prometheus could not be queried"
    if status.state in (FreshnessState.never_succeeded, FreshnessState.invalid):
        return status.reason
    if status.lag is not None:
        return _lag_text(status)
    if status.age is None:
        return f"no success recorded, threshold {status.threshold}"

    what = "last success" if status.check == LAST_SUCCESS else "last update"
    text = f"{what} {format_duration(status.age)} ago, threshold {status.threshold}"
    schedule = "schedule" in status.threshold
    if status.state is FreshnessState.stale and status.overdue is not None:
        text += f" ({format_duration(status.overdue)} late"
        text += f", deadline was {_local(status)})" if schedule else ")"
    elif schedule and status.deadline is not None:
        text += f", next deadline {_local(status)}"
    return text


def _lag_text(status: PipelineStatus) -> str:
    assert status.lag is not None and status.max_age is not None
    text = f"lag {format_duration(status.lag)}, threshold {status.threshold}"
    if status.state is FreshnessState.stale:
        text += f" ({format_duration(status.lag - status.max_age)} over)"
    return text


def _local(status: PipelineStatus) -> str:
    """The deadline in the pipeline's own time zone, as its team thinks of it."""
    assert status.deadline is not None
    moment = datetime.fromtimestamp(status.deadline, zone(status.timezone))
    return moment.strftime("%Y-%m-%d %H:%M %Z")


def _missing_reason(status: PipelineStatus) -> str:
    series = "last-success series" if status.check == LAST_SUCCESS else "value"
    reason = f"Prometheus has no {series} for it"
    if status.last_seen is not None:
        gone = format_duration(status.evaluated_at - status.last_seen)
        reason = f"its {series} vanished {gone} ago"
    if status.age is not None:
        reason += f"; last success {format_duration(status.age)} ago"
    return reason


def summarize(event: AlertEvent) -> str:
    """The line a notification shows for one alert."""
    status = event.pipeline
    if event.status is AlertStatus.firing:
        text = describe(status)
        if event.kind is EventKind.reminder:
            firing_for = format_duration(status.evaluated_at - event.firing_since)
            text = f"still firing after {firing_for}: {text}"
        elif event.kind is EventKind.escalated:
            text = f"escalated to critical: {text}"
        if event.holding:
            text += f"; holding back alerts of downstream {', '.join(event.holding)}"
        if event.held_by:
            text += f" (held back while upstream {event.held_by} was late)"
        return text

    duration = format_duration(status.evaluated_at - event.firing_since)
    if event.is_source:
        return f"pipeline-watchdog can evaluate pipelines again, after {duration}"
    if event.reason:
        return f"{subject(status)}: alert closed after {duration}, {event.reason}"
    return f"{subject(status)} recovered after {duration}: {explain(status)}"


def headline(notification: Notification) -> str:
    """``2 pipelines stale: a, b``, ``3 pipelines late (2 stale, 1 missing): …``."""
    pipelines = [e for e in notification.events if not e.is_source]
    firing = notification.status is AlertStatus.firing
    parts = []
    if len(pipelines) < len(notification.events):
        parts.append("cannot evaluate pipelines" if firing else "evaluating pipelines again")
    if pipelines:
        names = [subject(event.pipeline) for event in pipelines]
        total = len(names) + notification.omitted
        count = f"{total} pipeline{'s' if total != 1 else ''}"
        shown = ", ".join(names[:5]) + (f" and {total - 5} more" if total > 5 else "")
        parts.append(f"{count} {_verb(pipelines) if firing else 'recovered'}: {shown}")
    return "; ".join(parts)


def _verb(events: list[AlertEvent]) -> str:
    """The states of firing alerts: ``stale``, or ``late (2 stale, 1 missing)``."""
    counts = Counter(str(e.pipeline.state).replace("_", " ") for e in events)
    if len(counts) == 1:
        return next(iter(counts))
    return "late (" + ", ".join(f"{n} {state}" for state, n in counts.most_common()) + ")"


def webhook_body(notification: Notification) -> dict[str, Any]:
    """The generic webhook JSON (schema version 1, documented in the README)."""
    return {
        "version": WEBHOOK_SCHEMA_VERSION,
        "id": notification.id,
        "status": str(notification.status),
        "receiver": notification.receiver,
        "created_at": iso_time(notification.created_at),
        "summary": headline(notification),
        "group": notification.group,
        "omitted": notification.omitted,
        "alerts": [_webhook_alert(event) for event in notification.events],
    }


def _webhook_alert(event: AlertEvent) -> dict[str, Any]:
    status = event.pipeline
    return {
        "pipeline": None if event.is_source else status.pipeline,
        "check": status.check,
        "status": str(event.status),
        "kind": str(event.kind),
        "severity": event.severity,
        "state": str(status.state),
        "age_seconds": _rounded(status.age),
        "max_age_seconds": status.max_age,
        "threshold": status.threshold,
        "last_success": iso_time(status.last_success),
        "next_deadline": iso_time(status.deadline),
        "overdue_seconds": _rounded(status.overdue),
        "lag_seconds": _rounded(status.lag),
        "evaluated_at": iso_time(status.evaluated_at),
        "firing_since": iso_time(event.firing_since),
        "reason": status.reason,
        "labels": status.labels,
        "holding": list(event.holding),
        "held_by": event.held_by or None,
        "summary": summarize(event),
    }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def slack_body(notification: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` for previews, blocks for the layout.

    One message: alerts beyond the first 40 are only counted.  Receivers send
    :func:`slack_messages`, which lists more of them over several messages.
    """
    events = notification.events
    shown = events[:_SLACK_MAX_ALERT_SECTIONS]
    hidden = len(events) - len(shown) + notification.omitted
    return _slack_message(_slack_title(notification), shown, hidden)


def slack_messages(notification: Notification) -> list[dict[str, Any]]:
    """The Slack messages that carry ``notification``, each within Slack's limits.

    Up to 40 alerts go in one message.  More are split into parts of 40 alerts,
    each titled "part k of n", up to 5 parts; alerts beyond 200 are not listed but
    counted ("…and N more") at the end of the last part, with those the receiver's
    ``max_alerts`` left out.
    """
    events = notification.events
    listed = events[: SLACK_ALERTS_PER_PART * SLACK_MAX_PARTS]
    chunks = [
        listed[start : start + SLACK_ALERTS_PER_PART]
        for start in range(0, len(listed), SLACK_ALERTS_PER_PART)
    ] or [[]]
    hidden = len(events) - len(listed) + notification.omitted

    title = _slack_title(notification)
    if len(chunks) == 1:
        return [_slack_message(title, chunks[0], hidden)]

    messages = []
    for number, chunk in enumerate(chunks, start=1):
        part = f"{title} (part {number} of {len(chunks)})"
        messages.append(_slack_message(part, chunk, hidden if number == len(chunks) else 0))
    return messages


def _slack_title(notification: Notification) -> str:
    firing = notification.status is AlertStatus.firing
    icon = ":red_circle:" if firing else ":large_green_circle:"
    return f"{icon} {headline(notification)}"


def _slack_message(title: str, events: list[AlertEvent], hidden: int) -> dict[str, Any]:
    """One message: the title, a section per alert, then how many are not listed."""
    blocks: list[dict[str, Any]] = [_mrkdwn_section(f"*{_escape(title)}*")]
    blocks += [_slack_section(event) for event in events]
    if hidden:
        more = f"…and {hidden} more"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})

    lines = [title, *(summarize(event) for event in events[:10])]
    return {"text": _cut_escaped(_escape("\n".join(lines)), SLACK_MAX_TEXT), "blocks": blocks}


def _slack_section(event: AlertEvent) -> dict[str, Any]:
    status = event.pipeline
    lines = [f"*{_escape(subject(status))}* — {_escape(summarize(event))}"]
    if status.last_success is not None:
        lines.append(f"Last success: {iso_time(status.last_success)}")
    if status.threshold:
        lines.append(f"Threshold: {_escape(status.threshold)}")
    return _mrkdwn_section("\n".join(lines))


def _mrkdwn_section(text: str) -> dict[str, Any]:
    # Names and reasons come from label values and can be long: stay within the limit.
    text = _cut_escaped(text, SLACK_MAX_SECTION_TEXT)
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters.
    # https://api.slack.com/reference/surfaces/formatting#escaping
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, ending in … when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut_escaped(text: str, limit: int) -> str:
    """Like :func:`_cut`, for escaped text: never ends inside an escape like ``&amp;``."""
    if len(text) <= limit:
        return text
    return re.sub(r"&[a-z]*$", "", text[: limit - 1]) + "…"


# Alertmanager webhook format -----------------------------------------------------


def alertname(event: AlertEvent) -> str:
    """The alert's name in Alertmanager terms: fixed per kind of check."""
    if event.is_source:
        return ALERTNAME_SOURCE
    if event.pipeline.check == LAST_SUCCESS:
        return ALERTNAME_STALE
    return ALERTNAME_CHECK


def alertmanager_body(notification: Notification, external_url: str = "") -> dict[str, Any]:
    """The body Alertmanager's webhook receiver gets (version 4), for tools that read it.

    https://prometheus.io/docs/alerting/latest/configuration/#webhook_config
    """
    alerts = [
        _alertmanager_alert(event, notification, external_url) for event in notification.events
    ]
    firing = any(alert["status"] == "firing" for alert in alerts)
    return {
        "version": ALERTMANAGER_SCHEMA_VERSION,
        "groupKey": _group_key(notification),
        "truncatedAlerts": notification.omitted,
        "status": "firing" if firing else "resolved",
        "receiver": notification.receiver,
        "groupLabels": dict(notification.group),
        "commonLabels": _common([alert["labels"] for alert in alerts]),
        "commonAnnotations": _common([alert["annotations"] for alert in alerts]),
        "externalURL": external_url,
        "alerts": alerts,
    }


def _alertmanager_alert(
    event: AlertEvent, notification: Notification, external_url: str
) -> dict[str, Any]:
    firing = event.status is AlertStatus.firing
    # The alert's end is the evaluation that resolved it, never before its start.
    ended = max(notification.created_at, event.firing_since)
    annotations = {
        "summary": printable(summarize(event), _ALERTMANAGER_SUMMARY_LIMIT),
        "description": alertmanager_description(event.pipeline),
    }
    return {
        "status": str(event.status),
        "labels": alertmanager_labels(event),
        "annotations": annotations,
        "startsAt": iso_time(event.firing_since) or ALERTMANAGER_NOT_ENDED,
        "endsAt": ALERTMANAGER_NOT_ENDED if firing else iso_time(ended),
        "generatorURL": f"{external_url}/api/v1/alerts" if external_url else "",
        "fingerprint": fingerprint(event),
    }


def alertmanager_labels(event: AlertEvent) -> dict[str, str]:
    """The alert's labels and ``alertname``, ``pipeline``, ``check``, ``severity`` (these
    win over a carried label of the same name).  Empty values are left out, as
    Alertmanager treats an empty label as an absent one: the source alert has no
    ``pipeline``."""
    labels = alert_labels(event.pipeline, event.severity)
    labels["alertname"] = alertname(event)
    return {name: value for name, value in labels.items() if value}


def fingerprint(event: AlertEvent) -> str:
    """16 hex digits naming the alert (its pipeline and check), stable across
    notifications: a severity change or a new carried label does not make it a
    different alert, so its resolution closes what its firing opened."""
    identity = {
        "alertname": alertname(event),
        "pipeline": "" if event.is_source else event.pipeline.pipeline,
        "check": event.pipeline.check,
    }
    text = json.dumps(sorted(identity.items()), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _group_key(notification: Notification) -> str:
    """Alertmanager's ``<route>:<group labels>``, with the receiver standing for the
    route, so that each receiver's groups keep their own key."""
    route = "{}/{receiver=" + json.dumps(notification.receiver, ensure_ascii=False) + "}"
    labels = ", ".join(
        f"{name}={json.dumps(value, ensure_ascii=False)}"
        for name, value in sorted(notification.group.items())
    )
    return f"{route}:{{{labels}}}"


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    """The pairs every map has, with the same value (empty for no maps)."""
    if not maps:
        return {}
    common = dict(maps[0])
    for other in maps[1:]:
        common = {key: value for key, value in common.items() if other.get(key) == value}
    return common


def alertmanager_description(status: PipelineStatus) -> str:
    """What the alert is about, then the figures it rests on, one per line."""
    lines = [describe(status)]
    if status.age is not None:
        lines.append(f"Age: {format_duration(status.age)}")
    if status.threshold:
        lines.append(f"Threshold: {status.threshold}")
    if status.deadline is not None:
        lines.append(f"Deadline: {iso_time(status.deadline)}")
    if status.last_success is not None:
        lines.append(f"Last success: {iso_time(status.last_success)}")
    return "\n".join(lines)


# PagerDuty Events API v2 ---------------------------------------------------------


def pagerduty_events(notification: Notification) -> list[dict[str, Any]]:
    """One Events API v2 event per alert, without ``routing_key`` (added at send time).

    A firing alert (started, escalated or reminded) is a ``trigger``, a resolved one
    a ``resolve``; both carry the alert's ``dedup_key``, so PagerDuty folds a
    reminder into the open incident and the resolve closes it.
    https://developer.pagerduty.com/docs/events-api-v2/trigger-events/
    """
    return [_pagerduty_event(event) for event in notification.events]


def dedup_key(event: AlertEvent) -> str:
    """``pipeline-watchdog/<pipeline>/<check>``: the same for every event of one alert.

    PagerDuty takes at most 255 characters; a longer key is replaced by a hash of it.
    """
    if event.is_source:
        return f"{PAGERDUTY_SOURCE}/{SOURCE_CHECK}"
    key = f"{PAGERDUTY_SOURCE}/{event.pipeline.pipeline}/{event.pipeline.check}"
    if len(key) <= PAGERDUTY_MAX_DEDUP_KEY:
        return key
    return f"{PAGERDUTY_SOURCE}/sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def _pagerduty_event(event: AlertEvent) -> dict[str, Any]:
    if event.status is AlertStatus.resolved:
        # A resolve needs only the key; a payload would be ignored.
        # https://developer.pagerduty.com/docs/events-api-v2/overview/
        return {"event_action": "resolve", "dedup_key": dedup_key(event)}

    status = event.pipeline
    payload = {
        "summary": _cut(summarize(event), PAGERDUTY_MAX_SUMMARY),
        "source": PAGERDUTY_SOURCE,
        # Our two severities are two of PagerDuty's four (critical, error, warning, info).
        "severity": "warning" if event.severity == "warning" else "critical",
        "timestamp": iso_time(status.evaluated_at),
        "component": PAGERDUTY_SOURCE if event.is_source else status.pipeline,
        "group": status.check,
        "class": "late" if event.severity == "warning" else str(status.state),
        "custom_details": _pagerduty_details(event),
    }
    return {"event_action": "trigger", "dedup_key": dedup_key(event), "payload": payload}


def _pagerduty_details(event: AlertEvent) -> dict[str, Any]:
    status = event.pipeline
    return {
        "kind": str(event.kind),
        "state": str(status.state),
        "age_seconds": _rounded(status.age),
        "threshold": status.threshold,
        "last_success": iso_time(status.last_success),
        "next_deadline": iso_time(status.deadline),
        "overdue_seconds": _rounded(status.overdue),
        "lag_seconds": _rounded(status.lag),
        "firing_since": iso_time(event.firing_since),
        "reason": status.reason,
        "labels": dict(status.labels),
        "holding": list(event.holding),
    }
