"""The long-running service: scheduler, HTTP endpoints and signal handling.

APScheduler runs one evaluation job: never two at once (``max_instances=1``),
and a cycle that overran its interval is followed by one catch-up run, not a
burst (``coalesce=True``).
"""

import logging
import signal
import threading
import time
from datetime import UTC, datetime
from types import FrameType

from apscheduler.events import EVENT_JOB_MAX_INSTANCES
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from watchdog import __version__
from watchdog.api import make_api
from watchdog.config import Settings, parse_listen
from watchdog.metrics import WatchdogMetrics
from watchdog.server import HttpServer, make_app
from watchdog.service import Clock, Watchdog
from watchdog.silences import SilenceBook
from watchdog.store import StateStore
from watchdog.transport import redact_url

log = logging.getLogger(__name__)


class Daemon:
    """Wires a Watchdog to a scheduler and an HTTP server."""

    def __init__(self, settings: Settings, *, clock: Clock = time.time) -> None:
        """Open the state file and bind the port; raise StoreError or OSError if not."""
        self.settings = settings
        self.clock = clock
        metrics = WatchdogMetrics(r.name for r in settings.receivers)
        self.store = StateStore.open(
            settings.state.path, on_write=metrics.state_write_duration.observe
        )
        self.silences = SilenceBook(self.store, clock)
        self.silences.load(settings.silences)
        self.watchdog = Watchdog(
            settings, clock=clock, metrics=metrics, store=self.store, silences=self.silences
        )
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self._started_at = clock()
        self._stopping = threading.Event()

        host, port = parse_listen(settings.listen)
        api = make_api(self.silences, settings.api.resolve_token(), self.watchdog.alerts_view)
        app = make_app(metrics.registry, self.healthz, self.readyz, api=api)
        try:
            self.server = HttpServer(host, port, app)
        except OSError:
            self.store.close()
            raise

    def healthz(self) -> tuple[bool, str]:
        """Alive: the scheduler runs and a cycle finished recently."""
        if not self.scheduler.running:
            return False, "scheduler is not running"

        last = self.watchdog.last_cycle_at or self._started_at
        silent_for = self.clock() - last
        if silent_for > self._stall_limit():
            return False, f"no evaluation cycle finished for {silent_for:.0f}s"
        return True, "ok"

    def readyz(self) -> tuple[bool, str]:
        """Ready: configuration loaded and one evaluation cycle done."""
        if self.watchdog.cycles == 0:
            return False, "no evaluation cycle finished yet"
        return True, "ok"

    def _stall_limit(self) -> float:
        # A cycle takes at most the query timeout plus delivery; three missed
        # intervals beyond that mean the scheduler thread is stuck.
        interval = self.settings.evaluation_interval
        return 3 * interval + self.settings.prometheus.timeout + 60

    def start(self) -> None:
        self.server.start()
        self.scheduler.add_job(
            self.watchdog.run_cycle,
            IntervalTrigger(seconds=self.settings.evaluation_interval),
            id="evaluate",
            name="evaluate",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
        )
        self.scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES)
        self.watchdog.dispatcher.start()
        self.scheduler.start()
        log.info(
            "pipeline-watchdog %s started: prometheus=%s every %gs, %d expected pipelines, "
            "%d receivers, listening on %s:%d",
            __version__,
            redact_url(self.settings.prometheus.url),
            self.settings.evaluation_interval,
            len(self.settings.pipelines),
            len(self.settings.receivers),
            parse_listen(self.settings.listen)[0],
            self.server.port,
        )

    def _skipped(self, event: object) -> None:
        # APScheduler runs at most one cycle at a time; say plainly when one is dropped.
        self.watchdog.metrics.evaluations.labels("skipped").inc()
        log.warning(
            "evaluation skipped: the previous cycle is still running after %gs "
            "(a slow Prometheus or receiver)",
            self.settings.evaluation_interval,
        )

    def stop(self) -> None:
        """Wait for a running cycle to finish, then stop serving and close the state file."""
        self.scheduler.shutdown(wait=True)
        self.watchdog.dispatcher.stop(self.settings.delivery.shutdown_timeout)
        self.server.stop()
        self.store.close()
        log.info("pipeline-watchdog stopped")

    def request_stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        if signum:
            log.info("received %s, stopping", signal.Signals(signum).name)
        self._stopping.set()

    def run_until_stopped(self) -> None:
        """Run until SIGTERM or SIGINT (main thread only, where signals arrive)."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.start()
        try:
            self._stopping.wait()
        finally:
            self.stop()
