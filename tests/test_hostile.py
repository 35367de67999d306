"""Servers that misbehave on purpose: the watchdog must stay bounded, quiet about
secrets, and honest about what happened.  Each server is real, on 127.0.0.1."""

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from testbed.receiver import RecordingReceiver
from watchdog.alerts import AlertEvent, AlertStatus
from watchdog.config import WebhookReceiverConfig
from watchdog.exceptions import DeliveryError, SourceUnavailable
from watchdog.freshness import FreshnessState, PipelineStatus
from watchdog.notifications import Notification
from watchdog.prometheus import PrometheusClient
from watchdog.receivers import WebhookReceiver
from watchdog.transport import new_session


class DripServer:
    """Answers every request with headers, then one body byte every 0.2 s for ``seconds``."""

    def __init__(self, seconds: float = 30.0) -> None:
        self.seconds = seconds
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def __enter__(self) -> "DripServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(connection,), daemon=True).start()

    def _drip(self, connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            deadline = time.monotonic() + self.seconds
            while time.monotonic() < deadline and not self._stop.is_set():
                try:
                    connection.sendall(b" ")
                except OSError:
                    return
                self._stop.wait(0.2)


@pytest.fixture
def drip() -> Iterator[DripServer]:
    with DripServer() as server:
        yield server


def notification() -> Notification:
    status = PipelineStatus("p", FreshnessState.stale, 1000.0, threshold="1h", last_success=1.0)
    event = AlertEvent(AlertStatus.firing, status, 1000.0)
    return Notification(receiver="r", status=AlertStatus.firing, events=[event], created_at=1.0)


def send(receiver: WebhookReceiver) -> None:
    for message in receiver.render(notification()):
        receiver.deliver(message)


def receiver_for(url: str, timeout: float = 1.0) -> WebhookReceiver:
    config = WebhookReceiverConfig(name="r", type="webhook", url=url, timeout=timeout)
    return WebhookReceiver(config, new_session())


def test_prometheus_dripping_its_answer_times_out_at_the_deadline(drip: DripServer) -> None:
    client = PrometheusClient(drip.url, timeout=1.0)

    with pytest.raises(SourceUnavailable) as caught:
        client.query("up")

    assert caught.value.kind == "timeout"


def test_receiver_dripping_its_answer_times_out_at_the_deadline(drip: DripServer) -> None:
    receiver = receiver_for(drip.url + "/hook")

    with pytest.raises(DeliveryError) as caught:
        send(receiver)

    assert caught.value.reason == "no answer within 1s"
    assert not caught.value.permanent


def test_redirecting_receiver_is_a_permanent_error_and_is_not_followed() -> None:
    with RecordingReceiver() as server:
        server.respond_with(302, b"", {"Location": server.url("/elsewhere")})
        receiver = receiver_for(server.url("/hook"))

        with pytest.raises(DeliveryError) as caught:
            send(receiver)

        paths = [(r.method, r.path) for r in server.requests()]

    assert caught.value.permanent
    assert caught.value.reason == "HTTP 302: the receiver redirects; update its URL"
    assert paths == [("POST", "/hook")]


def test_receiver_error_that_echoes_the_secret_path_is_blanked() -> None:
    with RecordingReceiver() as server:
        secret_path = "/services/T0/B0/HOOKSECRET"
        server.respond_with(404, f"Cannot POST {secret_path}".encode())
        receiver = receiver_for(server.url(secret_path))

        with pytest.raises(DeliveryError) as caught:
            send(receiver)

    assert caught.value.reason == "HTTP 404: Cannot POST <url>"
    assert "HOOKSECRET" not in str(caught.value)


def test_echoed_url_secrets_are_blanked_in_every_encoding() -> None:
    from watchdog.receivers import url_secrets

    url = "http://watchdog:URLPW9@127.0.0.1:1/services/T0/B0/SLACKPATH?key=QUERYSECRET10"
    echoed = (
        "got key%3DQUERYSECRET10 from d2F0Y2hkb2c6VVJMUFc5 at "
        "%2Fservices%2FT0%2FB0%2FSLACKPATH with password URLPW9"
    )

    for secret in sorted(url_secrets(url), key=len, reverse=True):
        echoed = echoed.replace(secret, "<url>")

    for leaked in ("QUERYSECRET10", "d2F0Y2hkb2c6VVJMUFc5", "SLACKPATH", "URLPW9"):
        assert leaked not in echoed
