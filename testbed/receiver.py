"""A real HTTP server that records the notifications sent to it.

Tests point webhook and Slack receivers at :class:`RecordingReceiver` and read
back exactly what arrived, headers and raw body included. Its answers can be
scripted (a queue first, then a standing response) and delayed, to make
delivery fail in specific ways.

``python -m testbed.receiver --listen 127.0.0.1:PORT`` prints each notification
as it arrives.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Self, cast
from urllib.parse import urlsplit

from testbed.servers import parse_listen_address

logger = logging.getLogger(__name__)

OnRequest = Callable[["ReceivedRequest"], None]
ResponseSpec = tuple[int, bytes | str] | tuple[int, bytes | str, Mapping[str, str]]


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as it arrived; header names are lower-case."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    received_at: float

    def json(self) -> Any:
        return json.loads(self.body)

    def json_or_none(self) -> Any:
        """The parsed body, or None when it is not JSON."""
        try:
            return self.json()
        except ValueError:
            return None


@dataclass(frozen=True)
class CannedResponse:
    status: int
    body: bytes = b"ok"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: ResponseSpec) -> CannedResponse:
        """Build from ``(status, body)`` or ``(status, body, headers)``."""
        status, body, *rest = spec
        headers = rest[0] if rest else {}
        return cls(status, body.encode() if isinstance(body, str) else body, dict(headers))


class RecordingReceiver:
    """A threaded HTTP server on 127.0.0.1 that records every request.

    It answers 200 ``ok`` (Slack's success reply) unless told otherwise.
    """

    def __init__(
        self,
        port: int = 0,
        delay: float = 0.0,
        on_request: OnRequest | None = None,
    ) -> None:
        self.delay = delay
        self.on_request = on_request
        self._port = port
        self._server: _ReceiverServer | None = None
        self._stopping = threading.Event()
        # Reentrant, so that a wait_for predicate may call requests().
        self._changed = threading.Condition(threading.RLock())
        self._requests: list[ReceivedRequest] = []
        self._queue: deque[CannedResponse] = deque()
        self._standing = CannedResponse(200)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("receiver is not started")
        return int(self._server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Self:
        self._stopping.clear()
        self._server = _ReceiverServer(("127.0.0.1", self._port), self)
        thread = threading.Thread(
            target=self._server.serve_forever, name="receiver-http", daemon=True
        )
        thread.start()
        logger.info("receiver listening on %s", self.url(""))
        return self

    def stop(self) -> None:
        """Stop serving and cut open connections, so that pooled clients see it gone."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def requests(self, path: str | None = None) -> list[ReceivedRequest]:
        """Requests so far, oldest first; only those to ``path`` if given."""
        with self._changed:
            return [r for r in self._requests if path is None or r.path == path]

    def wait_for(
        self,
        predicate: Callable[[list[ReceivedRequest]], bool],
        timeout: float = 10.0,
        what: str = "the expected requests",
    ) -> list[ReceivedRequest]:
        """Wait until ``predicate(all requests)`` holds; return the requests then."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(list(self._requests)), timeout):
                raise TimeoutError(
                    f"timed out after {timeout}s waiting for {what} "
                    f"({len(self._requests)} requests received)"
                )
            return list(self._requests)

    def clear(self) -> None:
        with self._changed:
            self._requests.clear()

    def respond_with(
        self, status: int, body: bytes | str = b"ok", headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer every following request so, once the queued responses are used up."""
        with self._changed:
            self._standing = CannedResponse.from_spec((status, body, headers or {}))

    def enqueue_responses(self, responses: Iterable[ResponseSpec]) -> None:
        """Answer the next requests with these, in order, before the standing response."""
        with self._changed:
            self._queue.extend(CannedResponse.from_spec(spec) for spec in responses)

    def _record(self, request: ReceivedRequest) -> CannedResponse:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()
            response = self._queue.popleft() if self._queue else self._standing

        if self.on_request is not None:
            try:
                self.on_request(request)
            except Exception:
                logger.exception("on_request callback failed for %s", request.path)
        return response

    def _pause(self) -> None:
        # Interrupted by stop(), so a slow receiver does not hold up teardown.
        if self.delay > 0:
            self._stopping.wait(self.delay)


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], receiver: RecordingReceiver) -> None:
        self.receiver = receiver
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _ReceiverHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        # Keep-alive connections outlive shutdown(); their threads would go on answering.
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            # Already closed by the client.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (timeouts in the code under test) are expected here.
        logger.debug("connection from %s failed", client_address, exc_info=True)


class _ReceiverHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without this each keep-alive request waits about 40 ms for a delayed ACK.
    disable_nagle_algorithm = True

    @property
    def receiver(self) -> RecordingReceiver:
        return cast(_ReceiverServer, self.server).receiver

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        request = ReceivedRequest(
            method=self.command,
            path=parts.path,
            query=parts.query,
            headers=self._header_dict(),
            body=self._read_body(),
            received_at=time.time(),
        )
        response = self.receiver._record(request)

        self.receiver._pause()
        self._respond(response)

    def _header_dict(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _read_chunked(self) -> bytes:
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

        # Skip trailers up to the blank line that ends the message.
        while self.rfile.readline().strip():
            pass
        return b"".join(chunks)

    def _respond(self, response: CannedResponse) -> None:
        self.send_response(response.status)
        names = {name.lower() for name in response.headers}
        for name, value in response.headers.items():
            self.send_header(name, value)
        if "content-type" not in names:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)


def format_notification(request: ReceivedRequest) -> str:
    """Render a notification for people: a webhook's status and alert summaries,
    a Slack message's text, or else the raw body."""
    stamp = time.strftime("%H:%M:%S", time.localtime(request.received_at))
    header = f"[{stamp}] {request.method} {request.path}"
    payload = request.json_or_none()

    if isinstance(payload, dict) and isinstance(payload.get("alerts"), list):
        lines = [f"{header} status={payload.get('status', '?')}"]
        lines += [f"    - {_alert_summary(alert)}" for alert in payload["alerts"]]
        return "\n".join(lines)
    if isinstance(payload, dict) and isinstance(payload.get("text"), str):
        text = payload["text"].replace("\n", "\n    ")
        return f"{header} text: {text}"
    return f"{header} body: {request.body.decode('utf-8', errors='replace')}"


def _alert_summary(alert: object) -> str:
    """Our webhook puts ``summary`` on the alert, Alertmanager under ``annotations``."""
    if not isinstance(alert, dict):
        return json.dumps(alert)
    annotations = alert.get("annotations")
    if isinstance(alert.get("summary"), str):
        return str(alert["summary"])
    if isinstance(annotations, dict) and isinstance(annotations.get("summary"), str):
        return str(annotations["summary"])
    return json.dumps(alert, sort_keys=True)


def _stop_on_signals(stop: threading.Event) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.receiver", description="Print notifications as they arrive."
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:0", help="127.0.0.1:PORT (port 0: any free one)"
    )
    args = parser.parse_args(argv)
    try:
        _, port = parse_listen_address(args.listen)
    except ValueError as exc:
        print(f"testbed.receiver: error: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()
    _stop_on_signals(stop)
    receiver = RecordingReceiver(
        port, on_request=lambda request: print(format_notification(request), flush=True)
    )
    try:
        receiver.start()
    except OSError as exc:
        print(f"testbed.receiver: error: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    print(f"receiver listening on {receiver.url('')}", flush=True)

    stop.wait()
    receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
