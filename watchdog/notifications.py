"""Notifications: what receivers are sent, and how it reads.

One cycle produces at most two notifications per receiver: one listing the alerts
that started firing, one listing those that resolved.  The generic webhook body is
versioned (``"version": "1"``); its schema is in the README.  Summaries name the
pipeline, how late it is and the threshold, so the person paged at night need not
open a dashboard to know what is wrong.
"""

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from watchdog.alerts import SOURCE_CHECK, AlertEvent, AlertStatus, EventKind
from watchdog.durations import format_duration, iso_time
from watchdog.freshness import LAST_SUCCESS, FreshnessState, PipelineStatus
from watchdog.schedule import zone

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


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe for one log line: control characters escaped, long text cut.

    Pipeline names come from label values, which may hold newlines that would
    otherwise forge log lines.
    """
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


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
    """A Slack incoming-webhook message: ``text`` for previews, blocks for the layout."""
    firing = notification.status is AlertStatus.firing
    icon = ":red_circle:" if firing else ":large_green_circle:"
    title = f"{icon} {headline(notification)}"

    events = notification.events
    shown = events[:_SLACK_MAX_ALERT_SECTIONS]
    # A section's text is capped at 3000 characters by Slack; names can be long.
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_escape(title)}*"[:3000]}}
    ]
    blocks += [_slack_section(event) for event in shown]
    hidden = len(events) - len(shown) + notification.omitted
    if hidden:
        more = f"…and {hidden} more"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})

    text = _escape(title + "\n" + "\n".join(summarize(event) for event in events[:10]))
    return {"text": text, "blocks": blocks}


def _slack_section(event: AlertEvent) -> dict[str, Any]:
    status = event.pipeline
    lines = [f"*{_escape(subject(status))}* — {_escape(summarize(event))}"]
    if status.last_success is not None:
        lines.append(f"Last success: {iso_time(status.last_success)}")
    if status.threshold:
        lines.append(f"Threshold: {_escape(status.threshold)}")
    return {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]}}


def _escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters.
    # https://api.slack.com/reference/surfaces/formatting#escaping
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
