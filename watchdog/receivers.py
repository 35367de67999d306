"""Receivers: the HTTP endpoints notifications are delivered to.

A receiver works in two steps, so that what is decided can be stored before it is
sent (the outbox):

1. ``render`` turns a notification into one or more :class:`Message` (a Slack
   message that would break Slack's limits is split, PagerDuty gets one event per
   alert), each with a stable id;
2. ``deliver`` POSTs one message; the id goes out as the ``Idempotency-Key``
   header (and in the generic body) so a receiver can drop a repeat after a retry
   or a restart.  What must be fresh on each attempt is added then: a webhook's
   HMAC signature and its timestamp, PagerDuty's routing key (kept out of the
   stored message).

Transport errors are translated here into
:class:`~watchdog.exceptions.DeliveryError` whose text never contains the URL: a
webhook URL (Slack's above all) is a credential.  Configured secrets (header
values, tokens, passwords, the HMAC secret, the routing key) are blanked from
receivers' answers quoted in errors too.
"""

import base64
import email.utils
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import requests

from watchdog.config import (
    PagerDutyReceiverConfig,
    ReceiverConfig,
    SlackReceiverConfig,
    WebhookReceiverConfig,
)
from watchdog.exceptions import DeliveryError
from watchdog.notifications import (
    Notification,
    alertmanager_body,
    pagerduty_events,
    slack_messages,
    webhook_body,
)
from watchdog.transport import Answer, is_timeout, post, transport_reason

# Receivers answer "ok" or a short error; nothing larger is worth reading.
MAX_ANSWER_BYTES = 64 * 1024

# A Retry-After beyond this is taken as this: the retry budget decides the rest.
MAX_RETRY_AFTER = 3600.0


@dataclass(frozen=True)
class Message:
    """One HTTP body for one receiver, ready to send (and to store until sent)."""

    id: str  # stable across retries and restarts: the Idempotency-Key
    receiver: str
    body: bytes
    status: str  # firing or resolved, for logs
    alerts: int  # how many alerts it carries, for logs


class Receiver(Protocol):
    name: str
    min_interval: float  # seconds to leave between two sends (pacing)

    def render(self, notification: Notification) -> list[Message]:
        """The messages that carry ``notification``, in the order they must go."""

    def deliver(self, message: Message) -> None:
        """Send one message; raise DeliveryError if the receiver did not take it."""


class WebhookReceiver:
    """POSTs the generic JSON body (or Alertmanager's, with ``format: alertmanager``).

    With ``hmac_secret`` each attempt is signed anew: ``X-Watchdog-Timestamp`` (unix
    seconds) and ``X-Watchdog-Signature: sha256=<hex>``, the HMAC-SHA256 of
    ``<timestamp>.`` followed by the body, so the receiver can refuse a replay.
    """

    min_interval = 0.0

    def __init__(
        self,
        config: ReceiverConfig,
        session: requests.Session,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = config.name
        self._url = config.resolve_url()
        self._timeout = config.timeout
        self._session = session
        self._clock = clock
        self._format = "watchdog"
        self._external_url = ""
        self._extra_headers: dict[str, str] = {}
        self._hmac_key: bytes | None = None
        self._secrets: list[str] = []
        if isinstance(config, WebhookReceiverConfig):
            self._configure(config)

    def _configure(self, config: WebhookReceiverConfig) -> None:
        self._format = config.format
        self._external_url = config.external_url or ""
        self._extra_headers = config.request_headers()
        if config.basic_auth is not None:
            # https://www.rfc-editor.org/rfc/rfc7617#section-2
            pair = f"{config.basic_auth.username}:{config.basic_auth.resolve_password()}"
            basic = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
            self._extra_headers["Authorization"] = basic
        secret = config.resolve_hmac_secret()
        self._hmac_key = secret.encode() if secret is not None else None
        self._secrets = [*config.secret_values(), *self._extra_headers.values()]

    def __repr__(self) -> str:
        # Never the URL, headers or keys: they are credentials.
        return f"<{type(self).__name__} {self.name!r}>"

    def render(self, notification: Notification) -> list[Message]:
        if self._format == "alertmanager":
            body = alertmanager_body(notification, self._external_url)
        else:
            body = webhook_body(notification)
        return [self._message(notification, notification.id, body)]

    def _message(
        self,
        notification: Notification,
        id: str,
        body: dict[str, Any],
        alerts: int | None = None,
    ) -> Message:
        data = json.dumps(body, ensure_ascii=False).encode()
        count = len(notification.events) if alerts is None else alerts
        return Message(id, self.name, data, str(notification.status), count)

    def headers(self, message: Message) -> dict[str, str]:
        """Headers for one attempt: configured ones, the idempotency key, a signature."""
        headers = dict(self._extra_headers)
        headers.update({"Content-Type": "application/json", "Idempotency-Key": message.id})
        if self._hmac_key is not None:
            headers.update(sign(self._hmac_key, message.body, int(self._clock())))
        return headers

    def payload(self, message: Message) -> bytes:
        """The bytes to POST for ``message``; subclasses add what is not stored."""
        return message.body

    def deliver(self, message: Message) -> None:
        try:
            answer = post(
                self._session,
                self._url,
                data=self.payload(message),
                headers=self.headers(message),
                timeout=self._timeout,
                max_bytes=MAX_ANSWER_BYTES,
            )
        except requests.RequestException as exc:
            if is_timeout(exc):
                reason = f"no answer within {self._timeout:g}s"
                raise DeliveryError(reason, permanent=False) from None
            raise DeliveryError(transport_reason(exc), permanent=False) from None

        if not 200 <= answer.status_code < 300:
            raise self.refused(answer)

    def refused(self, answer: Answer) -> DeliveryError:
        """The error for a non-2xx answer; subclasses read their vendor's error codes."""
        return rejected(answer, self._url, secrets=self._secrets)


def sign(key: bytes, body: bytes, timestamp: int) -> dict[str, str]:
    """The signature headers for ``body`` sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Watchdog-Timestamp": str(timestamp), "X-Watchdog-Signature": f"sha256={digest}"}


# What Slack's incoming webhooks answer when they refuse a message (4xx), and what it
# means for whoever reads the log.
# https://api.slack.com/messaging/webhooks#handling_errors
# https://api.slack.com/changelog/2016-05-17-changes-to-errors-for-incoming-webhooks
_SLACK_CODE = re.compile(r"^[a-z_]{1,64}$")
SLACK_ERRORS = {
    "invalid_payload": "the message is malformed",
    "user_not_found": "the user the message is for does not exist",
    "action_prohibited": "an admin restricted posting to this channel",
    "posting_to_general_channel_denied": "only admins may post to this channel",
    "channel_not_found": "the webhook's channel was deleted or is out of reach",
    "channel_is_archived": "the channel is archived",
    "no_service": "the webhook was revoked or deleted",
    "no_service_id": "the webhook URL is incomplete",
    "no_team": "the webhook URL names no workspace",
    "team_disabled": "the workspace was disabled",
    "invalid_token": "the webhook's token is no longer valid",
}


class SlackReceiver(WebhookReceiver):
    """POSTs Slack incoming-webhook messages, at most one a second.

    A notification too long for one message is split (see
    :func:`~watchdog.notifications.slack_messages`); its parts have the ids
    ``<notification id>-1``, ``-2``, ... and go out in order.
    https://api.slack.com/apis/rate-limits#incoming-webhooks
    """

    min_interval = 1.0

    def render(self, notification: Notification) -> list[Message]:
        bodies = slack_messages(notification)
        if len(bodies) == 1:
            return [self._message(notification, notification.id, bodies[0])]
        return [
            self._message(notification, f"{notification.id}-{number}", body, _alerts_in(body))
            for number, body in enumerate(bodies, start=1)
        ]

    def refused(self, answer: Answer) -> DeliveryError:
        """Slack names a refusal in the body: ``no_service``, ``channel_is_archived``.

        429 (too fast) and 5xx (``rollup_error``: Slack's own trouble) are retried.
        """
        code = answer.text.strip()
        status = answer.status_code
        if status in (408, 429) or not 400 <= status < 500 or not _SLACK_CODE.match(code):
            return super().refused(answer)

        meaning = SLACK_ERRORS.get(code)
        reason = f"Slack refused the message: {code}"
        reason += f" ({meaning})" if meaning else f" (HTTP {status})"
        return DeliveryError(reason, permanent=True)


def _alerts_in(body: dict[str, Any]) -> int:
    """The alerts a Slack message lists: its sections but the title."""
    blocks: list[dict[str, Any]] = body["blocks"]
    return len([block for block in blocks if block["type"] == "section"]) - 1


class PagerDutyReceiver(WebhookReceiver):
    """Sends one PagerDuty Events API v2 event per alert.

    The routing key is added to each event when it is sent, so the outbox never holds
    it.  PagerDuty answers 202 when it took the event, 400 for an event it will never
    take, 429 when events come too fast (retried).
    https://developer.pagerduty.com/docs/events-api-v2/overview/
    """

    def __init__(
        self,
        config: PagerDutyReceiverConfig,
        session: requests.Session,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, session, clock)
        self._routing_key = config.resolve_routing_key()
        self._secrets = [self._routing_key]

    def render(self, notification: Notification) -> list[Message]:
        events = pagerduty_events(notification)
        if len(events) == 1:
            return [self._message(notification, notification.id, events[0], alerts=1)]
        return [
            self._message(notification, f"{notification.id}-{number}", event, alerts=1)
            for number, event in enumerate(events, start=1)
        ]

    def payload(self, message: Message) -> bytes:
        event = {"routing_key": self._routing_key, **json.loads(message.body)}
        return json.dumps(event, ensure_ascii=False).encode()

    def refused(self, answer: Answer) -> DeliveryError:
        """PagerDuty explains a 400 in JSON: ``{"message": ..., "errors": [...]}``."""
        try:
            body = json.loads(answer.content)
        except ValueError:
            body = None
        if answer.status_code != 400 or not isinstance(body, dict):
            return super().refused(answer)

        errors = body.get("errors")
        details = [body.get("message"), *(errors if isinstance(errors, list) else [])]
        text = "; ".join(" ".join(str(d).split()) for d in details if d)
        text = _redact(text, self._secrets)[:300] or "HTTP 400"
        return DeliveryError(f"PagerDuty refused the event: {text}", permanent=True)


def build_receiver(config: ReceiverConfig, session: requests.Session) -> WebhookReceiver:
    """The receiver for a ``webhook``, ``slack`` or ``pagerduty`` config.

    ``alertmanager`` receivers work differently (the whole state, every cycle) and are
    built by :mod:`watchdog.alertmanager`.
    """
    if isinstance(config, SlackReceiverConfig):
        return SlackReceiver(config, session)
    if isinstance(config, PagerDutyReceiverConfig):
        return PagerDutyReceiver(config, session)
    if isinstance(config, WebhookReceiverConfig):
        return WebhookReceiver(config, session)
    raise ValueError(f"receiver {config.name!r}: type {config.type!r} is not built here")


def rejected(answer: Answer, url: str, *, secrets: Sequence[str] = ()) -> DeliveryError:
    """Explain a non-2xx answer; 4xx other than 408 and 429 will fail the same way again.

    A redirect is permanent too: following it would turn the POST into a body-less
    GET, so the receiver's URL needs updating.  429 and 503 may say when to come
    back (``Retry-After``).  The URL and ``secrets`` are blanked from the quoted
    answer: some servers echo the request.
    """
    code = answer.status_code
    if 300 <= code < 400:
        return DeliveryError(
            f"HTTP {code}: the receiver redirects; update its URL", permanent=True
        )

    # Some servers echo the request in errors: in a webhook URL, the path is the secret.
    text = " ".join(answer.text.split())
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "<url>")
    text = _redact(text, secrets)[:200]
    permanent = 400 <= code < 500 and code not in (408, 429)
    retry_after = retry_after_seconds(answer) if code in (429, 503) else None
    reason = f"HTTP {code}: {text}" if text else f"HTTP {code}"
    return DeliveryError(reason, permanent=permanent, retry_after=retry_after)


def url_secrets(url: str) -> set[str]:
    """The parts of a URL that may be secret, as sent and as a server may echo them:
    the whole URL, its path, its query and each query value, the password and the
    basic-auth credentials it implies, raw, percent-encoded and decoded."""
    parts = urlsplit(url)
    found = {url, parts.path, parts.query}
    found |= {value for _, value in parse_qsl(parts.query)}
    if parts.password:
        credentials = f"{parts.username or ''}:{parts.password}"
        found |= {parts.password, unquote(parts.password), credentials}
        found.add(base64.b64encode(unquote(credentials).encode()).decode())
    variants = set()
    for secret in found:
        variants |= {secret, quote(secret, safe=""), quote(secret), unquote(secret)}
    # Short pieces ("/", "a") would blank ordinary words; a secret is never that short.
    return {secret for secret in variants if len(secret) >= 4}


def _redact(text: str, secrets: Sequence[str]) -> str:
    # Longest first, so that a header holding a token is blanked whole.
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "<secret>")
    return text


def retry_after_seconds(answer: Answer, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: a number of seconds, or an HTTP date.

    https://www.rfc-editor.org/rfc/rfc9110#field.retry-after
    """
    value = answer.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    wait = moment.timestamp() - (time.time() if now is None else now)
    return min(max(wait, 0.0), MAX_RETRY_AFTER)
