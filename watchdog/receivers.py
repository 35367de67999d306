"""Receivers: the HTTP endpoints notifications are delivered to.

A receiver works in two steps, so that what is decided can be stored before it is
sent (the outbox):

1. ``render`` turns a notification into one or more :class:`Message` (a Slack
   message that would break Slack's limits is split), each with a stable id;
2. ``deliver`` POSTs one message; the id goes out as the ``Idempotency-Key``
   header (and in the body) so a receiver can drop a repeat after a retry or a
   restart.

Transport errors are translated here into
:class:`~watchdog.exceptions.DeliveryError` whose text never contains the URL: a
webhook URL (Slack's above all) is a credential.
"""

import email.utils
import json
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from watchdog.config import ReceiverConfig, SlackReceiverConfig
from watchdog.exceptions import DeliveryError
from watchdog.notifications import Notification, slack_body, webhook_body
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
    """POSTs the generic JSON body to a URL."""

    min_interval = 0.0

    def __init__(self, config: ReceiverConfig, session: requests.Session) -> None:
        self.name = config.name
        self._url = config.resolve_url()
        self._timeout = config.timeout
        self._session = session

    def render(self, notification: Notification) -> list[Message]:
        body = webhook_body(notification)
        return [self._message(notification, notification.id, body)]

    def _message(self, notification: Notification, id: str, body: dict[str, Any]) -> Message:
        data = json.dumps(body, ensure_ascii=False).encode()
        return Message(id, self.name, data, str(notification.status), len(notification.events))

    def headers(self, message: Message) -> dict[str, str]:
        """Headers for one send; subclasses add authentication or signatures."""
        return {"Content-Type": "application/json", "Idempotency-Key": message.id}

    def deliver(self, message: Message) -> None:
        try:
            answer = post(
                self._session,
                self._url,
                data=message.body,
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
            raise rejected(answer, self._url)


class SlackReceiver(WebhookReceiver):
    """POSTs Slack incoming-webhook messages, at most one a second.

    https://api.slack.com/apis/rate-limits#incoming-webhooks
    """

    min_interval = 1.0

    def render(self, notification: Notification) -> list[Message]:
        return [self._message(notification, notification.id, slack_body(notification))]


def build_receiver(config: ReceiverConfig, session: requests.Session) -> WebhookReceiver:
    if isinstance(config, SlackReceiverConfig):
        return SlackReceiver(config, session)
    return WebhookReceiver(config, session)


def rejected(answer: Answer, url: str) -> DeliveryError:
    """Explain a non-2xx answer; 4xx other than 408 and 429 will fail the same way again.

    A redirect is permanent too: following it would turn the POST into a body-less
    GET, so the receiver's URL needs updating.  429 and 503 may say when to come
    back (``Retry-After``).
    """
    code = answer.status_code
    if 300 <= code < 400:
        return DeliveryError(
            f"HTTP {code}: the receiver redirects; update its URL", permanent=True
        )

    # Some servers echo the request path in errors: in a webhook URL, that is the secret.
    text = " ".join(answer.text.split())
    parts = urlsplit(url)
    for secret in (url, parts.path, parts.query):
        if len(secret) > 1:
            text = text.replace(secret, "<url>")
    text = text[:200]
    permanent = 400 <= code < 500 and code not in (408, 429)
    retry_after = retry_after_seconds(answer) if code in (429, 503) else None
    reason = f"HTTP {code}: {text}" if text else f"HTTP {code}"
    return DeliveryError(reason, permanent=permanent, retry_after=retry_after)


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
