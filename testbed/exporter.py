"""An example exporter of ML-pipeline metrics, with a control API.

Run ``python -m testbed.exporter --listen 127.0.0.1:PORT [--pipeline SPEC ...]``.

``GET /metrics`` exposes, per pipeline:

- ``ml_pipeline_last_success_timestamp`` (gauge): unix seconds of the last success;
- ``ml_pipeline_runs_total{status="success"|"failure"}`` (counter);
- ``ml_pipeline_duration_seconds`` (histogram of successful runs).

The control API takes and returns JSON; a pipeline name is one URL-quoted path
segment and may be any string, the empty one included:

- ``POST /pipelines/<name>/success`` with an optional body
  ``{"timestamp": <unix seconds>, "duration_seconds": <seconds>}`` (default now
  and a random plausible duration). Python's JSON reader also takes ``NaN`` and
  ``Infinity``, which lets tests expose those values;
- ``POST /pipelines/<name>/failure`` counts a failure only;
- ``DELETE /pipelines/<name>`` removes all its series, so that Prometheus marks
  them stale at the next scrape;
- ``GET /pipelines`` returns ``{name: last success or null}``.

A scripted pipeline (``--pipeline NAME:every=S[,pause_at=S,pause_for=S]``)
succeeds every ``every`` seconds from start, except in the window
``[pause_at, pause_at + pause_for)`` seconds after start.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from testbed.servers import parse_listen_address

logger = logging.getLogger(__name__)

# ML runs take minutes to hours; buckets in seconds.
DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
MAX_BODY_BYTES = 64 * 1024
BODY_FIELDS = {"timestamp", "duration_seconds"}


class PipelineMetrics:
    """The exporter's metrics in their own registry, updated by the control API."""

    def __init__(self, registry: CollectorRegistry | None = None, seed: int | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._last_success = Gauge(
            "ml_pipeline_last_success_timestamp",
            "Unix time of the pipeline's last successful run.",
            ["pipeline"],
            registry=self.registry,
        )
        self._runs = Counter(
            "ml_pipeline_runs",
            "Finished runs of the pipeline by outcome.",
            ["pipeline", "status"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "ml_pipeline_duration_seconds",
            "Duration of the pipeline's successful runs.",
            ["pipeline"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._last_successes: dict[str, float | None] = {}

    def succeed(
        self, pipeline: str, timestamp: float | None = None, duration: float | None = None
    ) -> float:
        """Record a successful run finished at ``timestamp`` (default now); return it."""
        finished = time.time() if timestamp is None else timestamp
        with self._lock:
            self._ensure_known(pipeline)
            self._last_successes[pipeline] = finished
            self._last_success.labels(pipeline).set(finished)
            self._runs.labels(pipeline, "success").inc()
            self._duration.labels(pipeline).observe(self._plausible(duration))
        return finished

    def fail(self, pipeline: str) -> None:
        """Count a failed run; the last success, if any, stays as it was."""
        with self._lock:
            self._ensure_known(pipeline)
            self._runs.labels(pipeline, "failure").inc()

    def remove(self, pipeline: str) -> bool:
        """Drop every series of the pipeline; return False if it was unknown."""
        with self._lock:
            if pipeline not in self._last_successes:
                return False
            del self._last_successes[pipeline]
            self._last_success.remove(pipeline)
            self._duration.remove(pipeline)
            self._runs.remove(pipeline, "success")
            self._runs.remove(pipeline, "failure")
        return True

    def last_successes(self) -> dict[str, float | None]:
        with self._lock:
            return dict(self._last_successes)

    def _ensure_known(self, pipeline: str) -> None:
        # Both outcome series start at 0, so that rate() and increase() see the
        # first run of either kind.
        if pipeline not in self._last_successes:
            self._last_successes[pipeline] = None
            self._runs.labels(pipeline, "success")
            self._runs.labels(pipeline, "failure")

    def _plausible(self, duration: float | None) -> float:
        return self._random.uniform(30.0, 600.0) if duration is None else duration


class ControlError(Exception):
    """A request the control API refuses: HTTP status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ExporterServer(ThreadingHTTPServer):
    """The HTTP server; its handler reaches the metrics through ``server.metrics``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: PipelineMetrics) -> None:
        super().__init__(address, ExporterHandler)
        self.metrics = metrics


class ExporterHandler(BaseHTTPRequestHandler):
    """Serves ``/metrics`` and the control API."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm on, each
    # keep-alive request then waits about 40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True

    @property
    def metrics(self) -> PipelineMetrics:
        return cast(ExporterServer, self.server).metrics

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        # The base class writes every request to stderr; keep that for debugging only.
        logger.debug("%s %s", self.address_string(), format % args)

    def _dispatch(self, method: str) -> None:
        try:
            segments = urlsplit(self.path).path.split("/")[1:]
            self._route(method, segments)
        except ControlError as error:
            self._send_json(error.status, {"error": error.reason})

    def _route(self, method: str, segments: list[str]) -> None:
        body = self._read_body()
        match method, segments:
            case "GET", ["metrics"]:
                self._send_metrics()
            case "GET", ["pipelines"]:
                self._send_json(200, self.metrics.last_successes())
            case "POST", ["pipelines", name, "success"]:
                self._succeed(_pipeline_name(name), _parse_body(body))
            case "POST", ["pipelines", name, "failure"]:
                self.metrics.fail(_pipeline_name(name))
                self._send_json(200, {"pipeline": _pipeline_name(name)})
            case "DELETE", ["pipelines", name]:
                self._remove(_pipeline_name(name))
            case _:
                raise ControlError(404, f"no route for {method} {urlsplit(self.path).path}")

    def _succeed(self, pipeline: str, fields: dict[str, float]) -> None:
        finished = self.metrics.succeed(
            pipeline, fields.get("timestamp"), fields.get("duration_seconds")
        )
        self._send_json(200, {"pipeline": pipeline, "last_success": finished})

    def _remove(self, pipeline: str) -> None:
        if not self.metrics.remove(pipeline):
            raise ControlError(404, f"unknown pipeline {pipeline!r}")
        self._send_json(200, {"pipeline": pipeline, "removed": True})

    def _read_body(self) -> bytes:
        length_text = self.headers.get("Content-Length", "0")
        if not length_text.isdigit():
            raise ControlError(400, "Content-Length is not a number")
        if int(length_text) > MAX_BODY_BYTES:
            raise ControlError(413, f"body larger than {MAX_BODY_BYTES} bytes")
        return self.rfile.read(int(length_text))

    def _send_metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        self._send(200, encoder(self.metrics.registry), content_type)

    def _send_json(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode() + b"\n"
        self._send(status, body, "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status >= 400:
            # The request's body may be unread; the connection cannot be reused.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


def _pipeline_name(segment: str) -> str:
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError as exc:
        raise ControlError(400, "pipeline name is not valid UTF-8 once unquoted") from exc


def _parse_body(body: bytes) -> dict[str, float]:
    """Parse the optional JSON body of a success: an object of numeric fields."""
    if not body.strip():
        return {}
    try:
        fields = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlError(400, f"body is not valid JSON: {exc}") from exc

    if not isinstance(fields, dict):
        raise ControlError(400, "body must be a JSON object")
    for key, value in fields.items():
        if key not in BODY_FIELDS:
            raise ControlError(400, f"unknown field {key!r}; accepted: {sorted(BODY_FIELDS)}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ControlError(400, f"field {key!r} must be a number, got {value!r}")
    return {key: float(value) for key, value in fields.items()}


@dataclass(frozen=True)
class ScriptedPipeline:
    """A pipeline that succeeds on a fixed schedule, with an optional pause."""

    name: str
    every: float
    pause_at: float = math.inf
    pause_for: float = 0.0

    def paused(self, elapsed: float) -> bool:
        return self.pause_at <= elapsed < self.pause_at + self.pause_for


def parse_pipeline_spec(spec: str) -> ScriptedPipeline:
    """Parse ``NAME:every=S[,pause_at=S,pause_for=S]``; ValueError names the bad part."""
    name, sep, options_text = spec.rpartition(":")
    if not sep or not name or not options_text:
        raise ValueError(
            f"--pipeline {spec!r}: expected NAME:every=SECONDS[,pause_at=S,pause_for=S]"
        )

    options: dict[str, float] = {}
    for part in options_text.split(","):
        key, _, value = part.partition("=")
        if not part:
            raise ValueError(f"--pipeline {spec!r}: empty option (a stray comma?)")
        if key not in ("every", "pause_at", "pause_for"):
            raise ValueError(f"--pipeline {spec!r}: unknown option {part!r}")
        options[key] = _seconds(spec, key, value)

    return _scripted_pipeline(spec, name, options)


def _seconds(spec: str, key: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(
            f"--pipeline {spec!r}: {key}={value!r} is not a number of seconds"
        ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"--pipeline {spec!r}: {key}={value!r} must be a finite number >= 0")
    return seconds


def _scripted_pipeline(spec: str, name: str, options: dict[str, float]) -> ScriptedPipeline:
    if options.get("every", 0.0) <= 0:
        raise ValueError(f"--pipeline {spec!r}: every=SECONDS is required and must be > 0")
    if ("pause_at" in options) != ("pause_for" in options):
        raise ValueError(f"--pipeline {spec!r}: pause_at and pause_for go together")
    return ScriptedPipeline(name, **options)


def run_scripted(
    metrics: PipelineMetrics, pipeline: ScriptedPipeline, started: float, stop: threading.Event
) -> None:
    """Record successes on the pipeline's schedule until ``stop`` is set.

    Ticks fall at ``started + k * every`` (monotonic clock); a tick missed
    because the thread was late is skipped rather than caught up.
    """
    tick = 0
    while True:
        due = started + tick * pipeline.every
        if stop.wait(max(0.0, due - time.monotonic())):
            return

        if not pipeline.paused(due - started):
            metrics.succeed(pipeline.name)
        tick = max(tick + 1, math.ceil((time.monotonic() - started) / pipeline.every))


def serve(address: tuple[str, int], metrics: PipelineMetrics) -> ExporterServer:
    """Start serving in a daemon thread; stop with ``shutdown()`` and ``server_close()``."""
    server = ExporterServer(address, metrics)
    threading.Thread(target=server.serve_forever, name="exporter-http", daemon=True).start()
    return server


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.exporter",
        description="An example exporter of ML-pipeline metrics, with a control API.",
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:0", help="127.0.0.1:PORT (port 0: any free one)"
    )
    parser.add_argument(
        "--pipeline",
        action="append",
        default=[],
        metavar="SPEC",
        help="scripted pipeline NAME:every=S[,pause_at=S,pause_for=S]; repeatable",
    )
    return parser.parse_args(argv)


def _stop_on_signals(stop: threading.Event) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        address = parse_listen_address(args.listen)
        scripted = [parse_pipeline_spec(spec) for spec in args.pipeline]
    except ValueError as exc:
        print(f"testbed.exporter: error: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()
    _stop_on_signals(stop)
    metrics = PipelineMetrics()
    try:
        server = serve(address, metrics)
    except OSError as exc:
        print(f"testbed.exporter: error: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    logger.info("exporter listening on http://%s:%d/metrics", *server.server_address[:2])

    # Scripted schedules count from the moment the server answers.
    started = time.monotonic()
    threads = [
        threading.Thread(target=run_scripted, args=(metrics, pipeline, started, stop), daemon=True)
        for pipeline in scripted
    ]
    for thread in threads:
        thread.start()

    stop.wait()
    server.shutdown()
    server.server_close()
    logger.info("exporter stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
