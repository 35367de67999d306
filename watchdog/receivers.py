"""Receivers: the HTTP endpoints notifications are delivered to.

Each receiver turns a notification into its own body and POSTs it.  Transport
errors are translated here into :class:`~watchdog.exceptions.DeliveryError` whose
text never contains the URL: a webhook URL (Slack's above all) is a credential.
"""

import json
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from watchdog.config import ReceiverConfig, SlackReceiverConfig
from watchdog.exceptions import DeliveryError
from watchdog.notifications import Notification, slack_body, webhook_body
from watchdog.transport import Answer, is_timeout, post, transport_reason

# Receivers answer "ok" or a short error; nothing larger is worth reading.
MAX_ANSWER_BYTES = 64 * 1024


class Receiver(Protocol):
    name: str

    def send(self, notification: Notification) -> None:
        """Deliver ``notification``; raise DeliveryError if the receiver did not take it."""


class WebhookReceiver:
    """POSTs the generic JSON body to a URL."""

    def __init__(self, config: ReceiverConfig, session: requests.Session) -> None:
        self.name = config.name
        self._url = config.resolve_url()
        self._timeout = config.timeout
        self._session = session

    def body(self, notification: Notification) -> dict[str, Any]:
        return webhook_body(notification)

    def send(self, notification: Notification) -> None:
        payload = json.dumps(self.body(notification)).encode()
        headers = {"Content-Type": "application/json"}
        try:
            answer = post(
                self._session,
                self._url,
                data=payload,
                headers=headers,
                timeout=self._timeout,
                max_bytes=MAX_ANSWER_BYTES,
            )
        except requests.RequestException as exc:
            if is_timeout(exc):
                reason = f"no answer within {self._timeout:g}s"
                raise DeliveryError(reason, permanent=False) from None
            raise DeliveryError(transport_reason(exc), permanent=False) from None

        if not 200 <= answer.status_code < 300:
            raise _rejected(answer, self._url)


class SlackReceiver(WebhookReceiver):
    """POSTs a Slack incoming-webhook message."""

    def body(self, notification: Notification) -> dict[str, Any]:
        return slack_body(notification)


def build_receiver(config: ReceiverConfig, session: requests.Session) -> WebhookReceiver:
    if isinstance(config, SlackReceiverConfig):
        return SlackReceiver(config, session)
    return WebhookReceiver(config, session)


def _rejected(answer: Answer, url: str) -> DeliveryError:
    """Explain a non-2xx answer; 4xx other than 408 and 429 will fail the same way again.

    A redirect is permanent too: following it would turn the POST into a body-less
    GET, so the receiver's URL needs updating.
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
    return DeliveryError(f"HTTP {code}: {text}" if text else f"HTTP {code}", permanent=permanent)
