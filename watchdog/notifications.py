"""Notifications: what receivers are sent, and how it reads.

One cycle produces at most two notifications per receiver: one listing the alerts
that started firing, one listing those that resolved.  The generic webhook body is
versioned (``"version": "1"``); its schema is in the README.  Summaries name the
pipeline, how late it is and the threshold, so the person paged at night need not
open a dashboard to know what is wrong.
"""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from watchdog.alerts import AlertEvent, AlertStatus
from watchdog.durations import format_duration
from watchdog.freshness import FreshnessState, PipelineStatus

WEBHOOK_SCHEMA_VERSION = "1"

# Slack allows 50 blocks a message; a header, a context line and one section per alert.
# https://api.slack.com/reference/block-kit/blocks
_SLACK_MAX_ALERT_SECTIONS = 40


@dataclass(frozen=True)
class Notification:
    """Alerts of one status, for one receiver, from one cycle."""

    receiver: str
    status: AlertStatus
    events: list[AlertEvent]
    created_at: float
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


def iso_time(timestamp: float | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, or None."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def describe(status: PipelineStatus) -> str:
    """One line on a pipeline's state, for people: ``train is stale: last success …``."""
    return f"{status.pipeline} is {status.state}: {explain(status)}"


def explain(status: PipelineStatus) -> str:
    """Why a pipeline is in its state: ``last success 3h 12m ago, threshold 2h (1h 12m late)``."""
    threshold = format_duration(status.max_age)
    age = status.age

    if status.state is FreshnessState.missing:
        return _missing_reason(status)
    if status.state is FreshnessState.unknown:
        return "Prometheus could not be queried"
    if age is None:
        return f"no success recorded, threshold {threshold}"

    text = f"last success {format_duration(age)} ago, threshold {threshold}"
    if status.state is FreshnessState.stale:
        text += f" ({format_duration(age - status.max_age)} late)"
    return text


def _missing_reason(status: PipelineStatus) -> str:
    if status.value is not None:
        return f"its last-success value {status.value:g} is not a timestamp"

    reason = "Prometheus has no last-success series for it"
    if status.last_seen is not None:
        gone = format_duration(status.evaluated_at - status.last_seen)
        reason = f"its last-success series vanished {gone} ago"
    if status.age is not None:
        reason += f"; last success {format_duration(status.age)} ago"
    return reason


def summarize(event: AlertEvent) -> str:
    """The line a notification shows for one alert."""
    status = event.pipeline
    if event.status is AlertStatus.firing:
        return describe(status)

    duration = format_duration(status.evaluated_at - event.firing_since)
    if event.reason:
        return f"{status.pipeline}: alert closed after {duration}, {event.reason}"
    return f"{status.pipeline} recovered after {duration}: {explain(status)}"


def headline(notification: Notification) -> str:
    """``2 pipelines late: a, b`` or ``1 pipeline recovered: a``."""
    names = [event.pipeline.pipeline for event in notification.events]
    count = f"{len(names)} pipeline{'s' if len(names) != 1 else ''}"
    verb = "late" if notification.status is AlertStatus.firing else "recovered"
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"{count} {verb}: {shown}"


def webhook_body(notification: Notification) -> dict[str, Any]:
    """The generic webhook JSON (schema version 1, documented in the README)."""
    return {
        "version": WEBHOOK_SCHEMA_VERSION,
        "id": notification.id,
        "status": str(notification.status),
        "receiver": notification.receiver,
        "created_at": iso_time(notification.created_at),
        "summary": headline(notification),
        "alerts": [_webhook_alert(event) for event in notification.events],
    }


def _webhook_alert(event: AlertEvent) -> dict[str, Any]:
    status = event.pipeline
    return {
        "pipeline": status.pipeline,
        "status": str(event.status),
        "state": str(status.state),
        "age_seconds": _rounded(status.age),
        "max_age_seconds": status.max_age,
        "last_success": iso_time(status.last_success),
        "evaluated_at": iso_time(status.evaluated_at),
        "firing_since": iso_time(event.firing_since),
        "summary": summarize(event),
    }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def slack_body(notification: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` for previews, blocks for the layout."""
    firing = notification.status is AlertStatus.firing
    icon = ":red_circle:" if firing else ":large_green_circle:"
    title = f"{icon} {headline(notification)}"

    events = notification.events
    shown = events[:_SLACK_MAX_ALERT_SECTIONS]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_escape(title)}*"}}
    ]
    blocks += [_slack_section(event) for event in shown]
    if len(events) > len(shown):
        more = f"…and {len(events) - len(shown)} more"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})

    text = _escape(title + "\n" + "\n".join(summarize(event) for event in events[:10]))
    return {"text": text, "blocks": blocks}


def _slack_section(event: AlertEvent) -> dict[str, Any]:
    status = event.pipeline
    lines = [f"*{_escape(status.pipeline)}* — {_escape(summarize(event))}"]
    if status.last_success is not None:
        lines.append(f"Last success: {iso_time(status.last_success)}")
    lines.append(f"Threshold: {format_duration(status.max_age)}")
    return {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]}}


def _escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters.
    # https://api.slack.com/reference/surfaces/formatting#escaping
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
