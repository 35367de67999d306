"""The dead-man's switch: a ping after each successful evaluation.

A healthchecks-style endpoint that stops hearing from the watchdog raises its own
alarm, which covers what the watchdog cannot report about itself: being dead.
A ping runs on its own thread and never delays a cycle; while one is still under
way the next is skipped (:mod:`watchdog.background`).  The URL is a secret and never logged.
"""

import logging

import requests

from watchdog.background import OneAtATime
from watchdog.config import HeartbeatConfig
from watchdog.metrics import WatchdogMetrics
from watchdog.transport import new_session, post, transport_reason

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, config: HeartbeatConfig, metrics: WatchdogMetrics) -> None:
        self._url = config.resolve_url()
        self._timeout = config.timeout
        self._metrics = metrics
        self._session = new_session()
        self._background = OneAtATime("heartbeat")

    def ping(self) -> None:
        """Ping in the background; skip when the previous ping has not finished."""
        if not self._background.run(self._send):
            self._metrics.heartbeats.labels("skipped").inc()

    def wait(self, timeout: float) -> None:
        self._background.wait(timeout)

    def _send(self) -> None:
        try:
            answer = post(
                self._session, self._url, data=b"", timeout=self._timeout, max_bytes=4096
            )
        except requests.RequestException as exc:
            self._failed(transport_reason(exc))
            return
        if not 200 <= answer.status_code < 300:
            self._failed(f"HTTP {answer.status_code}")
            return
        self._metrics.heartbeats.labels("sent").inc()

    def _failed(self, reason: str) -> None:
        self._metrics.heartbeats.labels("failed").inc()
        log.warning("heartbeat ping failed: %s", reason)
