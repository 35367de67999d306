"""The end-to-end demo: a pipeline stops succeeding, the watchdog notices, it recovers.

Run by ``scripts/demo``. In a temporary directory it starts, all on 127.0.0.1:

1. a receiver that prints each notification as it arrives;
2. the example exporter with two scripted pipelines: ``feature-build`` succeeds
   every 2 s, ``training`` too but pauses 8 s after start for 30 s;
3. Prometheus scraping the exporter every second;
4. ``pipeline-watchdog run`` with a 15 s maximum age.

It then waits for a firing notification for ``training`` and a resolved one
after it, prints the watchdog's per-pipeline metrics and stops everything.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

from testbed.receiver import ReceivedRequest, RecordingReceiver, format_notification
from testbed.servers import (
    ExporterProcess,
    ManagedProcess,
    MissingBinaryError,
    PrometheusServer,
    ServerStartError,
    WatchdogProcess,
    free_port,
    wait_until,
)

logger = logging.getLogger(__name__)

P = TypeVar("P", bound=ManagedProcess)

DEMO_TIMEOUT = 90.0
STALE_PIPELINE = "training"
PIPELINE_SPECS = ("feature-build:every=2", "training:every=2,pause_at=8,pause_for=30")
WEBHOOK_PATH = "/hook"
SLACK_PATH = "/slack"
METRIC_PREFIX = "ml_watchdog_pipeline_"
LOG_LINES = 15


class DemoFailed(Exception):
    """The demo could not show what it should; the message says what went wrong."""


def watchdog_config(prometheus_url: str, receiver: RecordingReceiver) -> dict[str, Any]:
    """The daemon's configuration for the demo."""
    return {
        "prometheus": {"url": prometheus_url, "timeout": "5s"},
        "evaluation_interval": "2s",
        "listen": f"127.0.0.1:{free_port()}",
        "pipeline_label": "pipeline",
        "defaults": {"max_age": "15s"},
        "pipelines": [{"name": "feature-build"}, {"name": STALE_PIPELINE}],
        "receivers": [
            {"name": "demo-webhook", "type": "webhook", "url": receiver.url(WEBHOOK_PATH)},
            {"name": "demo-slack", "type": "slack", "url": receiver.url(SLACK_PATH)},
        ],
    }


def notification_index(
    requests: Sequence[ReceivedRequest], pipeline: str, status: str, after: int = -1
) -> int | None:
    """Index of the first webhook notification past ``after`` with this status naming
    the pipeline, or None."""
    for index, request in enumerate(requests):
        if index > after and _names_pipeline(request, pipeline, status):
            return index
    return None


def _names_pipeline(request: ReceivedRequest, pipeline: str, status: str) -> bool:
    payload = request.json_or_none()
    if request.path != WEBHOOK_PATH or not isinstance(payload, dict):
        return False
    if payload.get("status") != status or not isinstance(payload.get("alerts"), list):
        return False
    return any(
        isinstance(alert, dict) and alert.get("pipeline") == pipeline
        for alert in payload["alerts"]
    )


class Demo:
    """The running servers of one demo, torn down by the ExitStack they join."""

    def __init__(self, work_dir: Path, stack: ExitStack, deadline: float) -> None:
        self.work_dir = work_dir
        self.stack = stack
        self.deadline = deadline
        self.processes: list[ManagedProcess] = []
        self.receiver = RecordingReceiver(
            on_request=lambda request: print(format_notification(request), flush=True)
        )

    def start(self) -> WatchdogProcess:
        """Start the receiver, exporter, Prometheus and watchdog, narrating each."""
        self.stack.enter_context(self.receiver)
        narrate(
            f"receiver on {self.receiver.url('')} ({WEBHOOK_PATH} webhook, {SLACK_PATH} Slack)"
        )

        exporter = self._start(ExporterProcess(self.work_dir, PIPELINE_SPECS))
        narrate(
            f"exporter on {exporter.target}: feature-build succeeds every 2s; "
            "training every 2s, but not from 8s to 38s after start"
        )

        prometheus = self._start(PrometheusServer(self.work_dir, [exporter.target]))
        narrate(
            f"Prometheus on {prometheus.url}, scraping every 1s; waiting for its first scrape…"
        )
        started = time.monotonic()
        prometheus.wait_for_targets_up(timeout=self.remaining())
        narrate(f"first scrape done after {time.monotonic() - started:.1f}s")

        config = watchdog_config(prometheus.url, self.receiver)
        watchdog = self._start(WatchdogProcess(self.work_dir, config))
        narrate(f"pipeline-watchdog on {watchdog.url} (max age 15s, evaluated every 2s)")
        return watchdog

    def remaining(self) -> float:
        """Seconds left of the demo's overall time limit."""
        return max(0.1, self.deadline - time.monotonic())

    def wait_for_notification(self, watchdog: WatchdogProcess, status: str, after: int) -> int:
        """Wait for a webhook notification about the stale pipeline; return its index."""
        found: list[int] = []

        def arrived() -> bool:
            index = notification_index(self.receiver.requests(), STALE_PIPELINE, status, after)
            if index is not None:
                found.append(index)
            return index is not None or not watchdog.running()

        what = f"a {status} notification for training"
        wait_until(arrived, round(self.remaining(), 1), interval=0.1, what=what)
        if not found:
            raise DemoFailed(f"the watchdog exited with code {watchdog.returncode}")
        return found[0]

    def print_logs(self) -> None:
        for process in self.processes:
            print(f"--- last lines of {process.log_path}", flush=True)
            print(process.log_tail(LOG_LINES), flush=True)

    def _start(self, process: P) -> P:
        self.processes.append(process)
        self.stack.enter_context(process)
        return process


def narrate(line: str) -> None:
    print(f"demo: {line}", flush=True)


def run(work_dir: Path, timeout: float) -> None:
    """Run the demo; raise DemoFailed, TimeoutError or ServerStartError on failure."""
    with ExitStack() as stack:
        demo = Demo(work_dir, stack, time.monotonic() + timeout)
        try:
            _show(demo, demo.start())
        except (DemoFailed, TimeoutError, ServerStartError):
            demo.print_logs()
            raise


def _show(demo: Demo, watchdog: WatchdogProcess) -> None:
    narrate("waiting for training to go stale… (last success ~6s after start, max age 15s)")
    fired = demo.wait_for_notification(watchdog, "firing", after=-1)

    narrate("waiting for recovery… (training succeeds again 38s after start)")
    demo.wait_for_notification(watchdog, "resolved", after=fired)

    narrate("the watchdog's per-pipeline metrics:")
    for line in watchdog.metrics_text().splitlines():
        if line.startswith(METRIC_PREFIX):
            print(f"    {line}", flush=True)

    slack = len(demo.receiver.requests(SLACK_PATH))
    narrate(f"Slack endpoint got {slack} message(s); stopping the watchdog")
    code = watchdog.stop()
    if code != 0:
        raise DemoFailed(f"the watchdog exited with code {code} on SIGTERM, not 0")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--timeout", type=float, default=DEMO_TIMEOUT, help="give up after this many seconds"
    )
    parser.add_argument(
        "--work-dir", type=Path, help="keep configs, data and logs here instead of a temp dir"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="pipeline-watchdog-demo-") as temp_dir:
        work_dir = args.work_dir or Path(temp_dir)
        narrate(f"work directory {work_dir}")
        try:
            run(work_dir, args.timeout)
        except MissingBinaryError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 1
        except (DemoFailed, TimeoutError, ServerStartError) as exc:
            print(f"demo: FAILED: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    narrate("done: training went stale, the watchdog notified, and it recovered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
