"""Alert state across restarts of the real daemon, and one message for a big outage.

Each test runs ``pipeline-watchdog run`` as a child process against the session's
Prometheus scraping the session's exporter, with a state file of its own, and counts
exactly what a real HTTP receiver got.  Each test watches only its own pipelines
(``discovery.include``), so pipelines of other tests cannot add messages.
"""

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.receiver import RecordingReceiver
from testbed.servers import (
    ExporterProcess,
    PrometheusServer,
    WatchdogProcess,
    child_env,
    free_port,
    wait_until,
    watchdog_binary,
)
from watchdog.durations import iso_time
from watchdog.queries import promql_string

HOOK = "/hook"
SLACK = "/services/T000/B000/XXXX"
LONG_AGO = 7200.0  # older than every max_age below: stale at the first evaluation
OUTAGE = [f"upstream-outage-{n:02d}" for n in range(50)]


class Daemon(WatchdogProcess):
    """``pipeline-watchdog run``, ready once its first evaluation cycle has finished."""

    ready_path = "/readyz"

    def kill(self) -> int | None:
        """SIGKILL: the process gets no chance to finish anything; return its exit code."""
        if self.pid is not None and self.running():
            os.kill(self.pid, signal.SIGKILL)
            wait_until(lambda: not self.running(), 10, what=f"{self.name} to die")
        return self.returncode

    def sample(self, series: str) -> float:
        """The value of one series on /metrics (``name{labels}``), 0 when absent."""
        prefix = series + " "
        lines = [line for line in self.metrics_text().splitlines() if line.startswith(prefix)]
        return float(lines[0].removeprefix(prefix)) if lines else 0.0

    def successful_cycles(self) -> int:
        return int(self.sample('ml_watchdog_evaluations_total{result="success"}'))

    def wait_for_sent(self, count: int, receiver: str = "hook") -> None:
        """Wait until the daemon counts ``count`` messages delivered: done with them."""
        series = f'ml_watchdog_notifications_total{{receiver="{receiver}",result="sent"}}'
        wait_until(lambda: self.sample(series) >= count, 10, what=f"{count} sent to {receiver}")

    def wait_for_cycles(self, count: int) -> None:
        """Wait until ``count`` more evaluation cycles have succeeded."""
        target = self.successful_cycles() + count
        wait_until(
            lambda: self.successful_cycles() >= target,
            count * 2 + 10,
            interval=0.2,
            what=f"{count} more evaluation cycles",
        )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Daemon]]:
    """Starts daemons in tmp_path (one after the other: they share the log file)."""
    started: list[Daemon] = []

    def start(config: dict[str, Any]) -> Daemon:
        daemon = Daemon(tmp_path, config)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.stop()


def watchdog_config(
    tmp_path: Path,
    prometheus: PrometheusServer,
    receiver: RecordingReceiver,
    watched: str,
    **values: Any,
) -> dict[str, Any]:
    """A daemon config watching the pipelines matching ``watched``, with one webhook."""
    config: dict[str, Any] = {
        "prometheus": {"url": prometheus.url, "timeout": "5s"},
        "evaluation_interval": "1s",
        "listen": f"127.0.0.1:{free_port()}",
        "state": {"path": str(tmp_path / "state.db")},
        "discovery": {"include": [watched]},
        "defaults": {"max_age": "1h"},
        "receivers": [{"name": "hook", "type": "webhook", "url": receiver.url(HOOK)}],
    }
    config.update(values)
    return config


def publish(
    exporter: ExporterProcess, prometheus: PrometheusServer, names: list[str], age: float
) -> None:
    """Record each pipeline's last success ``age`` seconds ago; wait until all are scraped."""
    recorded = {name: exporter.succeed(name, time.time() - age) for name in names}
    pattern = "|".join(recorded)

    def scraped() -> bool:
        selector = f"ml_pipeline_last_success_timestamp{{pipeline=~{promql_string(pattern)}}}"
        samples = prometheus.query(selector)
        seen = {s["metric"]["pipeline"]: float(s["value"][1]) for s in samples}
        return all(seen.get(name) == value for name, value in recorded.items())

    wait_until(scraped, 15, interval=0.2, what=f"{len(names)} pipelines scraped")


@pytest.fixture
def stale(
    exporter: ExporterProcess, prometheus: PrometheusServer, pipelines: Callable[[str], str]
) -> Callable[[str], str]:
    """A pipeline of this test, late since long ago and scraped; removed afterwards."""

    def make(name: str) -> str:
        publish(exporter, prometheus, [pipelines(name)], LONG_AGO)
        return name

    return make


def bodies(receiver: RecordingReceiver, path: str = HOOK) -> list[Any]:
    return [request.json() for request in receiver.requests(path)]


def kinds(receiver: RecordingReceiver) -> list[tuple[str, str]]:
    """(status, kind of the first alert) of each webhook message, in arrival order."""
    return [(body["status"], body["alerts"][0]["kind"]) for body in bodies(receiver)]


def received(receiver: RecordingReceiver, count: int, path: str = HOOK) -> None:
    receiver.wait_for(
        lambda requests: sum(r.path == path for r in requests) >= count,
        timeout=20,
        what=f"{count} messages on {path}",
    )


def alert_record(state_path: Path, pipeline: str) -> dict[str, Any] | None:
    """The daemon's saved alert for the pipeline's built-in check, read beside it."""
    uri = f"{state_path.as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        connection.row_factory = sqlite3.Row
        row = connection.execute(
            "SELECT * FROM alerts WHERE pipeline = ? AND check_name = 'last_success'",
            (pipeline,),
        ).fetchone()
    return dict(row) if row is not None else None


# Restarts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop_signal", "exit_code"),
    [(signal.SIGTERM, 0), (signal.SIGKILL, -signal.SIGKILL)],
    ids=["sigterm", "sigkill"],
)
def test_restart_mid_episode_neither_repeats_the_firing_nor_loses_the_resolved(
    prometheus: PrometheusServer,
    exporter: ExporterProcess,
    receiver: RecordingReceiver,
    stale: Callable[[str], str],
    daemons: Callable[[dict[str, Any]], Daemon],
    tmp_path: Path,
    stop_signal: signal.Signals,
    exit_code: int,
) -> None:
    name = stale(f"restart-{stop_signal.name.lower()}")
    config = watchdog_config(tmp_path, prometheus, receiver, name)
    first = daemons(config)
    received(receiver, 1)
    first.wait_for_sent(1)

    # Stopped after the firing was delivered, started again while still late.
    code = first.stop() if stop_signal is signal.SIGTERM else first.kill()
    second = daemons(config)
    second.wait_for_cycles(3)
    after_restart = kinds(receiver)

    publish(exporter, prometheus, [name], age=0)
    received(receiver, 2)
    second.wait_for_cycles(2)

    assert code == exit_code
    assert after_restart == [("firing", "firing")]
    assert kinds(receiver) == [("firing", "firing"), ("resolved", "resolved")]
    firing, resolved = bodies(receiver)
    assert [a["pipeline"] for a in resolved["alerts"]] == [name]
    assert resolved["alerts"][0]["state"] == "fresh"
    assert resolved["alerts"][0]["firing_since"] == firing["alerts"][0]["firing_since"]


def test_pending_alert_keeps_its_for_clock_across_a_kill(
    prometheus: PrometheusServer,
    receiver: RecordingReceiver,
    stale: Callable[[str], str],
    daemons: Callable[[dict[str, Any]], Daemon],
    tmp_path: Path,
) -> None:
    name = stale("restart-pending")
    config = watchdog_config(
        tmp_path, prometheus, receiver, name, defaults={"max_age": "1h", "for": "6s"}
    )
    state_path = tmp_path / "state.db"
    first = daemons(config)
    pending = alert_record(state_path, name)
    assert pending is not None and pending["state"] == "pending"
    pending_since = pending["active_since"]

    # Killed about 2 s into the 6 s of ``for``, then started again.
    wait_until(lambda: time.time() >= pending_since + 2, 10, what="2s of pending")
    sent_before_kill = len(receiver.requests())
    first.kill()
    restarted_at = time.time()
    daemons(config)
    received(receiver, 1)
    firing = alert_record(state_path, name)

    assert sent_before_kill == 0
    assert firing is not None and firing["state"] == "firing"
    assert firing["active_since"] == pending_since
    # Fired 6 s after it became pending, before a clock restarted by the restart allows.
    assert pending_since + 6 <= firing["firing_since"] < restarted_at + 6
    (body,) = bodies(receiver)
    assert body["alerts"][0]["kind"] == "firing"
    assert body["alerts"][0]["firing_since"] == iso_time(firing["firing_since"])


def test_reminder_comes_at_the_planned_time_across_a_restart(
    prometheus: PrometheusServer,
    receiver: RecordingReceiver,
    stale: Callable[[str], str],
    daemons: Callable[[dict[str, Any]], Daemon],
    tmp_path: Path,
) -> None:
    name = stale("restart-reminder")
    config = watchdog_config(
        tmp_path, prometheus, receiver, name, defaults={"max_age": "1h", "repeat_interval": "4s"}
    )
    state_path = tmp_path / "state.db"
    first = daemons(config)
    received(receiver, 1)
    first.wait_for_sent(1)
    fired = alert_record(state_path, name)
    assert fired is not None
    firing_since = fired["firing_since"]

    # Restarted 2 s into the 4 s before the reminder.
    wait_until(lambda: time.time() >= firing_since + 2, 10, what="2s of firing")
    code = first.stop()
    restarted_at = time.time()
    second = daemons(config)
    received(receiver, 2)
    reminded = alert_record(state_path, name)
    second.stop()

    assert code == 0
    assert kinds(receiver) == [("firing", "firing"), ("firing", "reminder")]
    assert reminded is not None
    assert firing_since + 4 <= reminded["last_notified_at"] < restarted_at + 4
    reminder = bodies(receiver)[1]["alerts"][0]
    assert reminder["firing_since"] == iso_time(firing_since)
    assert reminder["evaluated_at"] == iso_time(reminded["last_notified_at"])
    assert reminder["summary"].startswith(f"still firing after 4s: {name} is stale")


def test_alert_that_cleared_while_the_daemon_was_down_resolves_at_its_first_cycle(
    prometheus: PrometheusServer,
    exporter: ExporterProcess,
    receiver: RecordingReceiver,
    stale: Callable[[str], str],
    daemons: Callable[[dict[str, Any]], Daemon],
    tmp_path: Path,
) -> None:
    name = stale("restart-resolved-while-down")
    config = watchdog_config(tmp_path, prometheus, receiver, name)
    state_path = tmp_path / "state.db"
    first = daemons(config)
    received(receiver, 1)
    first.wait_for_sent(1)
    code = first.stop()

    publish(exporter, prometheus, [name], age=0)
    second = daemons(config)  # returns once its first cycle is done
    after_first_cycle = alert_record(state_path, name)
    received(receiver, 2)
    second.wait_for_cycles(2)

    assert code == 0
    assert after_first_cycle is None
    assert kinds(receiver) == [("firing", "firing"), ("resolved", "resolved")]
    firing, resolved = bodies(receiver)
    assert resolved["alerts"][0]["pipeline"] == name
    assert resolved["alerts"][0]["state"] == "fresh"
    assert resolved["alerts"][0]["firing_since"] == firing["alerts"][0]["firing_since"]


# The state file -----------------------------------------------------------------------


def test_corrupt_state_file_is_moved_aside_and_the_daemon_keeps_working(
    prometheus: PrometheusServer,
    receiver: RecordingReceiver,
    stale: Callable[[str], str],
    daemons: Callable[[dict[str, Any]], Daemon],
    tmp_path: Path,
) -> None:
    name = stale("restart-corrupt-state")
    state_path = tmp_path / "state.db"
    garbage = b"this is not a SQLite database\n" * 100
    state_path.write_bytes(garbage)
    config = watchdog_config(tmp_path, prometheus, receiver, name)

    daemon = daemons(config)
    readyz = daemon.http.get(f"{daemon.url}/readyz", timeout=5)
    received(receiver, 1)
    daemon.wait_for_cycles(2)
    saved = alert_record(state_path, name)

    assert readyz.status_code == 200
    errors = [line for line in daemon.log().splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert f"state.path '{state_path}' is unusable" in errors[0]
    moved = list(tmp_path.glob("state.db.corrupt-*"))
    assert [path.read_bytes() for path in moved] == [garbage]
    assert str(moved[0]) in errors[0]
    assert kinds(receiver) == [("firing", "firing")]
    assert saved is not None and saved["state"] == "firing"


def test_state_path_under_a_regular_file_exits_2_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where a directory should be\n")
    state_path = blocker / "state.db"
    config = tmp_path / "watchdog.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{free_port()}\nstate:\n  path: '{state_path}'\n", encoding="utf-8"
    )
    env = {k: v for k, v in child_env().items() if not k.startswith("WATCHDOG_")}

    result = subprocess.run(
        [watchdog_binary(), "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )

    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"pipeline-watchdog: state.path '{state_path}': ")
    assert line.endswith(f"Not a directory ('{blocker}')")


# A big outage -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outage(exporter: ExporterProcess, prometheus: PrometheusServer) -> Iterator[list[str]]:
    """50 pipelines late since long ago, all scraped before any daemon looks at them."""
    publish(exporter, prometheus, OUTAGE, LONG_AGO)
    yield OUTAGE
    for name in OUTAGE:
        exporter.remove(name)


def outage_config(
    tmp_path: Path,
    prometheus: PrometheusServer,
    receiver: RecordingReceiver,
    webhook: dict[str, Any] | None = None,
    **both: Any,
) -> dict[str, Any]:
    """Every outage pipeline watched; a webhook (``webhook`` and ``both``) and a Slack
    receiver (``both``)."""
    config = watchdog_config(tmp_path, prometheus, receiver, "upstream-outage-.*")
    config["receivers"] = [
        {"name": "hook", "type": "webhook", "url": receiver.url(HOOK), **both, **(webhook or {})},
        {"name": "slack", "type": "slack", "url": receiver.url(SLACK), **both},
    ]
    return config


def run_until_quiet(daemon: Daemon, receiver: RecordingReceiver, per_receiver: int) -> None:
    """Wait for the expected messages, then two more cycles that must add none."""
    received(receiver, per_receiver, HOOK)
    received(receiver, per_receiver, SLACK)
    daemon.wait_for_cycles(2)


def test_outage_of_50_pipelines_sends_one_message_per_receiver(
    prometheus: PrometheusServer,
    receiver: RecordingReceiver,
    outage: list[str],
    daemons: Callable[[dict[str, Any]], Daemon],
    tmp_path: Path,
) -> None:
    # The webhook may list all 50; Slack keeps its default of 40.
    config = outage_config(tmp_path, prometheus, receiver, webhook={"max_alerts": 50})

    run_until_quiet(daemons(config), receiver, 1)

    (hook,) = bodies(receiver, HOOK)
    assert hook["status"] == "firing"
    assert sorted(a["pipeline"] for a in hook["alerts"]) == outage
    assert hook["omitted"] == 0
    assert hook["summary"].startswith("50 pipelines stale: ")
    (slack,) = bodies(receiver, SLACK)
    assert slack["text"].startswith(":red_circle: 50 pipelines stale: ")
    assert sum(outage_name in slack["text"] for outage_name in outage) == 10
    sections = [b for b in slack["blocks"][1:] if b["type"] == "section"]
    assert len(sections) == 40  # Slack's block limit; the rest is counted
    assert slack["blocks"][-1]["elements"][0]["text"] == "…and 10 more"


def test_outage_grouped_by_team_sends_one_message_per_team_and_receiver(
    prometheus: PrometheusServer,
    receiver: RecordingReceiver,
    outage: list[str],
    daemons: Callable[[dict[str, Any]], Daemon],
    tmp_path: Path,
) -> None:
    webhook = {"max_alerts": 50}
    config = outage_config(tmp_path, prometheus, receiver, webhook, group_by=["team"])
    config["defaults"] = {"max_age": "1h", "labels": {"team": "platform"}}
    config["pipelines"] = [{"match": "upstream-outage-[01][0-9]", "labels": {"team": "features"}}]

    run_until_quiet(daemons(config), receiver, 2)

    hooks = {body["group"]["team"]: body for body in bodies(receiver, HOOK)}
    assert len(bodies(receiver, HOOK)) == 2
    assert sorted(a["pipeline"] for a in hooks["features"]["alerts"]) == outage[:20]
    assert sorted(a["pipeline"] for a in hooks["platform"]["alerts"]) == outage[20:]
    assert {a["labels"]["team"] for a in hooks["features"]["alerts"]} == {"features"}
    slack_heads = sorted(body["text"].split(": ")[1] for body in bodies(receiver, SLACK))
    assert slack_heads == ["20 pipelines stale", "30 pipelines stale"]


def test_outage_beyond_max_alerts_lists_10_and_counts_the_rest(
    prometheus: PrometheusServer,
    receiver: RecordingReceiver,
    outage: list[str],
    daemons: Callable[[dict[str, Any]], Daemon],
    tmp_path: Path,
) -> None:
    config = outage_config(tmp_path, prometheus, receiver, max_alerts=10)

    run_until_quiet(daemons(config), receiver, 1)

    (hook,) = bodies(receiver, HOOK)
    assert len(hook["alerts"]) == 10
    assert hook["omitted"] == 40
    assert {a["pipeline"] for a in hook["alerts"]} <= set(outage)
    assert hook["summary"].startswith("50 pipelines stale: ")
    (slack,) = bodies(receiver, SLACK)
    assert slack["text"].startswith(":red_circle: 50 pipelines stale: ")
    assert slack["text"].splitlines()[0].endswith(" and 45 more")
    assert slack["blocks"][-1]["elements"][0]["text"] == "…and 40 more"
