"""Alertmanager: keep a Prometheus Alertmanager's view of the watchdog's alerts in sync.

Webhook receivers get one notification per change.  An Alertmanager is instead told
the whole state every cycle, as Prometheus tells it
(https://prometheus.io/docs/alerting/latest/clients/):

1. every firing alert is sent again each cycle, with ``endsAt`` four evaluation
   intervals ahead, so that should the watchdog die its alerts end on their own in
   Alertmanager (which then notifies their resolution) instead of firing forever;
2. a resolved alert is sent with its resolution time as ``endsAt``, and sent again
   every cycle for ``resolved_resend_for`` (15 minutes), so that an Alertmanager
   restarted meanwhile still learns of the all-clear;
3. an alert sent as firing last cycle that is neither firing nor resolved now (its
   labels changed: a new severity, a carried label) is resolved at once the same
   way, rather than left to expire.

All alerts of a cycle go out in one POST to ``/api/v2/alerts``.  Alertmanager then
deduplicates, groups, routes, inhibits and silences them, and its own receivers
notify on its own schedule.  Nothing is retried here: the next cycle sends the
whole state again.
"""

import base64
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from watchdog.alerts import AlertEvent, AlertStatus, EventKind
from watchdog.background import OneAtATime
from watchdog.config import AlertmanagerReceiverConfig
from watchdog.exceptions import DeliveryError
from watchdog.freshness import PipelineStatus
from watchdog.logs import printable
from watchdog.metrics import WatchdogMetrics
from watchdog.notifications import (
    alertmanager_description,
    alertmanager_labels,
    summarize,
)
from watchdog.store import AlertRecord
from watchdog.transport import Answer, is_timeout, post, transport_reason

log = logging.getLogger(__name__)

API_PATH = "/api/v2/alerts"

# Prometheus sends each firing alert with endsAt four resend periods ahead, so that
# Alertmanager ends it by itself only after several missed sends.
# https://github.com/prometheus/prometheus/blob/v2.42.0/rules/alerting.go (sendAlerts)
ENDS_AT_INTERVALS = 4

# Alertmanager answers an empty body or a short error; nothing larger is worth reading.
MAX_ANSWER_BYTES = 64 * 1024

# One line of summary is what Alertmanager's default templates show in a title.
_SUMMARY_LIMIT = 500

# An alert's identity in Alertmanager: its label set.
_LabelKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _Resolution:
    alert: dict[str, Any]
    resolved_at: float


class AlertmanagerPusher:
    """Pushes the firing and recently resolved alerts routed to one Alertmanager.

    Call :meth:`push` once per evaluation cycle.  It remembers what it sent as
    firing and what resolved, so the caller only reports the present.  Call it in
    cycles whose queries failed too, with the alerts still firing: an alert not sent
    for four evaluation intervals ends in Alertmanager, which notifies an all-clear.
    """

    def __init__(
        self,
        config: AlertmanagerReceiverConfig,
        session: requests.Session,
        *,
        evaluation_interval: float,
    ) -> None:
        self.name = config.name
        self._url = api_url(config.resolve_url())
        self._session = session
        self._timeout = config.timeout
        self._headers = _request_headers(config)
        self._send_resolved = config.send_resolved
        self._resend_for = config.resolved_resend_for
        self._valid_for = ENDS_AT_INTERVALS * evaluation_interval
        self._firing: dict[_LabelKey, dict[str, Any]] = {}
        self._resolved: dict[_LabelKey, _Resolution] = {}

    def push(
        self,
        firing: Sequence[tuple[PipelineStatus, AlertRecord]],
        resolved: Sequence[tuple[PipelineStatus, AlertRecord, float]],
        now: float,
    ) -> None:
        """Send Alertmanager the current state of this receiver's alerts.

        - ``firing``: every alert firing now for this receiver, each with its
          latest status (the last known one if this cycle could not evaluate it)
          and its record (``severity``, ``firing_since``).  It is the whole set:
          an alert sent as firing before and missing now is resolved at ``now``.
          Pass firing records only; for the watchdog's own alert, a record with
          check ``source``, its severity and ``firing_since``.
        - ``resolved``: the alerts that resolved since the last call, each with
          its status at resolution and the resolution time.  Pass each once: they
          are remembered and sent again every call until ``resolved_resend_for``
          has passed since they resolved, or until they fire again.
        - ``now``: the evaluation time of this cycle (unix seconds).

        Remembered state is updated even when the POST fails, so the next call
        sends everything still due.  Raises DeliveryError when Alertmanager does
        not take the alerts: ``permanent=False`` for a connection error, a timeout
        or a 5xx; ``permanent=True`` for a 4xx (Alertmanager keeps the valid alerts
        of a batch and names the invalid ones in its answer) or a redirect.
        """
        alerts = self._sync(firing, resolved, now)
        if not alerts:
            return

        started = time.monotonic()
        self._post(alerts)
        log.debug(
            "alertmanager %s: pushed %d alerts (%d firing) in %.3fs",
            printable(self.name),
            len(alerts),
            len(self._firing),
            time.monotonic() - started,
        )

    def _sync(
        self,
        firing: Sequence[tuple[PipelineStatus, AlertRecord]],
        resolved: Sequence[tuple[PipelineStatus, AlertRecord, float]],
        now: float,
    ) -> list[dict[str, Any]]:
        """Update what is remembered; return every alert to send this cycle."""
        current = {}
        for status, record in firing:
            alert = firing_alert(status, record, now + self._valid_for)
            current[_key(alert)] = alert

        # Firing last cycle and gone without a word: resolved now (never before it
        # started; the timestamps share one format, so they compare as text).
        for key, alert in self._firing.items():
            if key not in current:
                ended = {**alert, "endsAt": max(rfc3339(now), alert["startsAt"])}
                self._resolved[key] = _Resolution(ended, now)
        for status, record, resolved_at in resolved:
            alert = resolved_alert(status, record, resolved_at)
            self._resolved[_key(alert)] = _Resolution(alert, resolved_at)

        # An alert firing again replaces its resolution: same labels, same alert.
        self._resolved = {
            key: resolution
            for key, resolution in self._resolved.items()
            if key not in current and now - resolution.resolved_at <= self._resend_for
        }
        self._firing = current

        resolutions = [r.alert for r in self._resolved.values()] if self._send_resolved else []
        return [*current.values(), *resolutions]

    def _post(self, alerts: list[dict[str, Any]]) -> None:
        body = json.dumps(alerts, ensure_ascii=False).encode()
        try:
            answer = post(
                self._session,
                self._url,
                data=body,
                headers=self._headers,
                timeout=self._timeout,
                max_bytes=MAX_ANSWER_BYTES,
            )
        except requests.RequestException as exc:
            # Not chained: the requests exception's text holds the URL.
            reason = f"no answer within {self._timeout:g}s" if is_timeout(exc) else None
            raise DeliveryError(reason or transport_reason(exc), permanent=False) from None

        if not 200 <= answer.status_code < 300:
            raise _rejected(answer, self._url)


def api_url(base: str) -> str:
    """The alerts endpoint under Alertmanager's base URL (which may carry a route prefix)."""
    base = base.rstrip("/")
    return base if base.endswith(API_PATH) else base + API_PATH


def firing_alert(status: PipelineStatus, record: AlertRecord, ends_at: float) -> dict[str, Any]:
    """An alert that fires until ``ends_at`` unless sent again.

    https://prometheus.io/docs/alerting/latest/clients/
    """
    return _alert(_event(AlertStatus.firing, status, record), ends_at)


def resolved_alert(
    status: PipelineStatus, record: AlertRecord, resolved_at: float
) -> dict[str, Any]:
    """An alert that ended at ``resolved_at``."""
    # A status still in a problem state resolves only when its pipeline is forgotten.
    reason = "no longer watched" if status.is_problem else ""
    return _alert(_event(AlertStatus.resolved, status, record, reason), resolved_at)


def rfc3339(timestamp: float) -> str:
    """Unix seconds as RFC 3339 in UTC with milliseconds, as Alertmanager writes them."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(
    status: AlertStatus, pipeline: PipelineStatus, record: AlertRecord, reason: str = ""
) -> AlertEvent:
    """The alert as notifications see it, so that both read and are labelled alike."""
    since = record.firing_since if record.firing_since is not None else record.active_since
    kind = EventKind.firing if status is AlertStatus.firing else EventKind.resolved
    severity = record.severity or pipeline.severity or "critical"
    return AlertEvent(status, pipeline, since, reason, kind=kind, severity=severity)


def _alert(event: AlertEvent, ends_at: float) -> dict[str, Any]:
    # Empty label values are left out, as Alertmanager drops them (an empty label is
    # an absent one): the watchdog's own alert has no pipeline.
    labels = {name: value for name, value in alertmanager_labels(event).items() if value}
    annotations = {
        "summary": printable(summarize(event), _SUMMARY_LIMIT),  # names may hold newlines
        "description": alertmanager_description(event.pipeline),
        "state": str(event.pipeline.state),
    }
    # No generatorURL: the watchdog has no page per alert, and Alertmanager accepts
    # an alert without one.
    return {
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(event.firing_since),
        "endsAt": rfc3339(max(ends_at, event.firing_since)),
    }


def _key(alert: dict[str, Any]) -> _LabelKey:
    return tuple(sorted(alert["labels"].items()))


def _request_headers(config: AlertmanagerReceiverConfig) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    auth = config.basic_auth
    if auth is not None:
        # https://www.rfc-editor.org/rfc/rfc7617#section-2
        pair = f"{auth.username}:{auth.resolve_password()}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    return headers


def _rejected(answer: Answer, url: str) -> DeliveryError:
    """Explain a non-2xx answer; a 4xx other than 408 and 429 fails the same way again.

    Alertmanager answers a rejected alert with a JSON string (``"invalid label set:
    ..."``) and a malformed request with ``{"code": ..., "message": ...}``.
    https://github.com/prometheus/alertmanager/blob/v0.25.0/api/v2/openapi.yaml
    """
    code = answer.status_code
    if 300 <= code < 400:
        reason = f"HTTP {code}: Alertmanager redirects; update its URL"
        return DeliveryError(reason, permanent=True)

    text = " ".join(_error_text(answer).split())
    for secret in (url, urlsplit(url).netloc):
        if secret:
            text = text.replace(secret, "<url>")
    reason = f"HTTP {code}: {text[:200]}" if text else f"HTTP {code}"
    return DeliveryError(reason, permanent=400 <= code < 500 and code not in (408, 429))


def _error_text(answer: Answer) -> str:
    try:
        body = json.loads(answer.content)
    except ValueError:
        return answer.text
    if isinstance(body, dict):
        return str(body.get("message", answer.text))
    return body if isinstance(body, str) else answer.text


class AlertmanagerPush:
    """Runs one Alertmanager receiver's push in the background, so a slow or absent
    Alertmanager never delays a cycle; while a push is under way the next is skipped
    (the one after re-sends everything anyway)."""

    def __init__(self, pusher: AlertmanagerPusher, metrics: WatchdogMetrics) -> None:
        self.pusher = pusher
        self._metrics = metrics
        self._background = OneAtATime("alertmanager")

    def send(
        self,
        firing: list[tuple[PipelineStatus, AlertRecord]],
        resolved: list[tuple[PipelineStatus, AlertRecord, float]],
        now: float,
    ) -> None:
        if not self._background.run(lambda: self._run(firing, resolved, now)):
            log.warning("Alertmanager %s: previous push still running; skipped", self.pusher.name)

    def wait(self, timeout: float) -> None:
        self._background.wait(timeout)

    def _run(
        self,
        firing: list[tuple[PipelineStatus, AlertRecord]],
        resolved: list[tuple[PipelineStatus, AlertRecord, float]],
        now: float,
    ) -> None:
        name = self.pusher.name
        try:
            self.pusher.push(firing, resolved, now)
        except DeliveryError as exc:
            self._metrics.notification_attempts.labels(name, "failed").inc()
            log.warning("Alertmanager %s: push failed: %s", name, exc.reason)
            return
        self._metrics.notification_attempts.labels(name, "delivered").inc()
