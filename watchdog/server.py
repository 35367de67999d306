"""The watchdog's HTTP endpoints: ``/metrics``, ``/healthz``, ``/readyz`` and the API.

A small threaded WSGI server from the standard library; prometheus_client's WSGI
app serves the metrics (content negotiation and gzip included), paths under
``/api/`` (and ``/-/reload``) go to the API's own WSGI app (:mod:`watchdog.api`), and ``/`` is the
status page for people (:mod:`watchdog.statuspage`).
"""

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger(__name__)

# A probe answers (healthy, reason); the reason is shown in the response body.
Probe = Callable[[], tuple[bool, str]]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128  # the default of 5 refuses bursts of probes and API calls


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    # A client that opens a connection and sends nothing must not hold a thread for ever.
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        # Probes and scrapes arrive every few seconds; logging each is noise.
        log.debug("%s %s", self.address_string(), format % args)


def make_app(
    registry: CollectorRegistry,
    healthz: Probe,
    readyz: Probe,
    api: WSGIApp | None = None,
    status_page: WSGIApp | None = None,
) -> WSGIApp:
    """The whole site; ``/api/...`` answers 404 when no ``api`` is given, and ``/``
    when no ``status_page`` is (:func:`watchdog.statuspage.make_status_page`)."""
    metrics_app = make_wsgi_app(registry)
    probes = {"/healthz": healthz, "/readyz": readyz}

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path in probes:
            ok, reason = probes[path]()
            return _text(start_response, "200 OK" if ok else "503 Service Unavailable", reason)
        if (path.startswith("/api/") or path == "/-/reload") and api is not None:
            return api(environ, start_response)
        if path == "/" and status_page is not None:
            return status_page(environ, start_response)
        return _text(start_response, "404 Not Found", "not found")

    return app


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = (body + "\n").encode()
    start_response(
        status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))]
    )
    return [data]


class HttpServer:
    """Serves the app on a background thread until ``stop``."""

    def __init__(self, host: str, port: int, app: Any) -> None:
        server_class = _Server6 if ":" in host else _Server
        # Binding here, not in start(), makes a taken port a start-up error.
        self._server = make_server(host, port, app, server_class, _QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
