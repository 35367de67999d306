"""The long-running service: scheduler, HTTP endpoints, reload and signal handling.

APScheduler runs one evaluation job: never two at once (``max_instances=1``),
and a cycle that overran its interval is followed by one catch-up run, not a
burst (``coalesce=True``).

The configuration reloads without a restart on SIGHUP, on a change of the file
(a Kubernetes ConfigMap update arrives as a symlink swap, which is seen because
the content is compared, not the path) and on ``POST /-/reload`` (with the API
token).  A new configuration is validated first: a bad one is logged and the old
one keeps running.  Alert state, silences and undelivered notifications carry
over; ``listen`` and ``state.path`` only change with a restart.
"""

import hashlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from watchdog import __version__
from watchdog.api import make_api
from watchdog.config import Settings, load_settings, parse_listen
from watchdog.exceptions import ConfigError
from watchdog.heartbeat import Heartbeat
from watchdog.metrics import WatchdogMetrics
from watchdog.server import HttpServer, WSGIApp, make_app
from watchdog.service import Clock, Watchdog
from watchdog.silences import SilenceBook
from watchdog.statuspage import make_status_page
from watchdog.store import StateStore
from watchdog.transport import redact_url

log = logging.getLogger(__name__)

# How often the configuration file is compared with what is loaded.
FILE_CHECK_INTERVAL = 5.0


class Daemon:
    """Wires a Watchdog to a scheduler and an HTTP server."""

    def __init__(
        self, settings: Settings, *, config_path: Path | None = None, clock: Clock = time.time
    ) -> None:
        """Open the state file and bind the port; raise StoreError or OSError if not."""
        self.settings = settings
        self.config_path = config_path
        self.clock = clock
        self.metrics = WatchdogMetrics(r.name for r in settings.receivers)
        self.store = StateStore.open(
            settings.state.path, on_write=self.metrics.state_write_duration.observe
        )
        self.silences = SilenceBook(self.store, clock)
        self.silences.load(settings.silences)
        self.watchdog = self._watchdog(settings)
        self.heartbeat = (
            Heartbeat(settings.heartbeat, self.metrics) if settings.heartbeat else None
        )
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self._started_at = clock()
        self._stopping = threading.Event()
        self._cycle_lock = threading.Lock()  # a cycle and a reload never overlap
        self._config_digest = _digest(config_path)
        self._api = self._make_api(settings)
        self._loaded()

        host, port = parse_listen(settings.listen)
        # Through lambdas, so the page and the API follow a reload's new watchdog.
        status_page = make_status_page(lambda: self.watchdog, version=__version__, clock=clock)
        app = make_app(
            self.metrics.registry,
            self.healthz,
            self.readyz,
            api=self._route_api,
            status_page=status_page,
        )
        try:
            self.server = HttpServer(host, port, app)
        except OSError:
            self.store.close()
            raise

    def _watchdog(self, settings: Settings) -> Watchdog:
        return Watchdog(
            settings,
            clock=self.clock,
            metrics=self.metrics,
            store=self.store,
            silences=self.silences,
        )

    def _make_api(self, settings: Settings) -> WSGIApp:
        token = settings.api.resolve_token()
        api = make_api(self.silences, token, lambda: self.watchdog.alerts_view())
        return _with_reload(api, token, self._reload_from_api)

    def _route_api(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        # Through an attribute, so a reload can swap the token.
        return self._api(environ, start_response)

    # Probes -----------------------------------------------------------------------

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

    # Running ----------------------------------------------------------------------

    def start(self) -> None:
        self.server.start()
        self.scheduler.add_job(
            self._cycle,
            IntervalTrigger(seconds=self.settings.evaluation_interval),
            id="evaluate",
            name="evaluate",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
        )
        if self.config_path is not None:
            self.scheduler.add_job(
                self._check_file,
                IntervalTrigger(seconds=FILE_CHECK_INTERVAL),
                id="config-file",
                max_instances=1,
                coalesce=True,
            )
        self.scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES)
        self.watchdog.dispatcher.start()
        self.scheduler.start()
        log.info(
            "pipeline-watchdog %s started: prometheus=%s every %gs, %d pipeline entries, "
            "%d receivers, listening on %s:%d",
            __version__,
            redact_url(self.settings.prometheus.url),
            self.settings.evaluation_interval,
            len(self.settings.pipelines),
            len(self.settings.receivers),
            parse_listen(self.settings.listen)[0],
            self.server.port,
        )

    def _cycle(self) -> None:
        with self._cycle_lock:
            outcome = self.watchdog.run_cycle()
        if outcome.ok and self.heartbeat is not None:
            self.heartbeat.ping()

    def _skipped(self, event: object) -> None:
        # APScheduler runs at most one cycle at a time; say plainly when one is dropped.
        if getattr(event, "job_id", "evaluate") != "evaluate":
            return
        self.metrics.evaluations.labels("skipped").inc()
        log.warning(
            "evaluation skipped: the previous cycle is still running after %gs "
            "(a slow Prometheus or receiver)",
            self.settings.evaluation_interval,
        )

    def stop(self) -> None:
        """Let a running cycle finish, drain the outbox a while, close the state file."""
        self.scheduler.shutdown(wait=True)
        self.watchdog.dispatcher.stop(self.settings.delivery.shutdown_timeout)
        if self.heartbeat is not None:
            self.heartbeat.wait(self.settings.heartbeat.timeout if self.settings.heartbeat else 0)
        self.server.stop()
        self.store.close()
        log.info("pipeline-watchdog stopped")

    def request_stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        if signum:
            log.info("received %s, stopping", signal.Signals(signum).name)
        self._stopping.set()

    def request_reload(self, signum: int = 0, frame: FrameType | None = None) -> None:
        # Not in the signal handler itself: the reload waits for a running cycle.
        self.scheduler.add_job(self.reload, args=("SIGHUP",), id="reload", replace_existing=True)

    def run_until_stopped(self) -> None:
        """Run until SIGTERM or SIGINT (main thread only, where signals arrive)."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        self.start()
        try:
            self._stopping.wait()
        finally:
            self.stop()

    # Reloading --------------------------------------------------------------------

    def _check_file(self) -> None:
        digest = _digest(self.config_path)
        if digest is not None and digest != self._config_digest:
            self.reload("file change")

    def _reload_from_api(self) -> tuple[bool, list[str]]:
        return self.reload("POST /-/reload")

    def reload(self, reason: str) -> tuple[bool, list[str]]:
        """Load the configuration file again; keep the running one if it is bad.

        1. Read and validate; on a problem, log it, set the metric, change nothing.
        2. Between two cycles: stop the old delivery workers (their outbox stays in
           the state file), build the new watchdog with the old one's state, start it.
        """
        if self.config_path is None:
            return False, ["no configuration file to reload"]
        digest = _digest(self.config_path)
        try:
            settings = load_settings(self.config_path)
        except ConfigError as exc:
            self._config_digest = digest  # do not retry the same bad file every 5s
            self.metrics.config_reload_successful.set(0)
            log.error(
                "configuration reload (%s) rejected, the running configuration stays: %s",
                reason,
                "; ".join(exc.problems),
            )
            return False, exc.problems

        with self._cycle_lock:
            try:
                self._swap(settings)
            except Exception:
                # Whatever broke, the old watchdog keeps running, delivering included.
                log.exception("configuration reload (%s) failed; the running one stays", reason)
                self.watchdog.dispatcher.start()
                self._config_digest = digest
                self.metrics.config_reload_successful.set(0)
                return False, ["the new configuration could not be applied (see the log)"]
        self._config_digest = digest
        self._loaded()
        log.info(
            "configuration reloaded (%s): %d pipeline entries, %d checks, %d receivers",
            reason,
            len(settings.pipelines),
            len(settings.checks),
            len(settings.receivers),
        )
        return True, []

    def _swap(self, settings: Settings) -> None:
        for name in ("listen", "state"):
            if getattr(settings, name) != getattr(self.settings, name):
                log.warning("%s changed: it takes effect at the next restart", name)
        settings = settings.model_copy(
            update={"listen": self.settings.listen, "state": self.settings.state}
        )

        old = self.watchdog
        old.dispatcher.stop(timeout=min(settings.delivery.shutdown_timeout, 5.0))
        watchdog = self._watchdog(settings)
        watchdog.inherit(old)
        self.metrics.add_receivers(r.name for r in settings.receivers)
        self.silences.load(settings.silences)
        watchdog.dispatcher.start()

        self.watchdog = watchdog
        if settings.evaluation_interval != self.settings.evaluation_interval:
            trigger = IntervalTrigger(seconds=settings.evaluation_interval)
            self.scheduler.reschedule_job("evaluate", trigger=trigger)
        self.settings = settings
        self.heartbeat = (
            Heartbeat(settings.heartbeat, self.metrics) if settings.heartbeat else None
        )
        self._api = self._make_api(settings)

    def _loaded(self) -> None:
        self.metrics.config_reload_successful.set(1)
        self.metrics.config_reload_timestamp.set(self.clock())


def _heartbeat(settings: Settings, metrics: WatchdogMetrics) -> Heartbeat | None:
    return Heartbeat(settings.heartbeat, metrics) if settings.heartbeat else None


def _digest(path: Path | None) -> str | None:
    """The file's content hash (following symlinks), or None if it cannot be read."""
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _with_reload(
    api: WSGIApp, token: str | None, reload: Callable[[], tuple[bool, list[str]]]
) -> WSGIApp:
    """Add ``POST /-/reload`` (bearer token, like the silences API) in front of ``api``."""
    from watchdog.api import reload_endpoint

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/-/reload":
            return reload_endpoint(environ, start_response, token, reload)
        return api(environ, start_response)

    return app
