"""The command line, run as a user runs it: a separate process against real servers."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from testbed.receiver import RecordingReceiver
from testbed.servers import ExporterProcess, PrometheusServer, free_port, wait_until
from watchdog.queries import promql_string

SECRET = "SECRETTOKEN"


def watchdog_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "watchdog", *args]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WATCHDOG_")}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        watchdog_command(*args), capture_output=True, text=True, timeout=60, env=clean_env()
    )


def visible(prometheus: PrometheusServer, pipeline: str, value: float) -> Callable[[], bool]:
    def check() -> bool:
        selector = f"ml_pipeline_last_success_timestamp{{pipeline={promql_string(pipeline)}}}"
        result = prometheus.query(f"{selector} == {value}")
        return bool(result)

    return check


@pytest.fixture
def only_fresh_pipelines(
    prometheus: PrometheusServer, exporter: ExporterProcess
) -> Iterator[Callable[[str, float], None]]:
    """Publishes pipelines for one test; each is removed (and so goes stale) afterwards."""
    published: set[str] = set()

    def publish(name: str, timestamp: float) -> None:
        recorded = exporter.succeed(name, timestamp)
        published.add(name)
        wait_until(visible(prometheus, name, recorded), 15, what=f"{name} in Prometheus")

    yield publish
    for name in published:
        exporter.remove(name)


def test_check_exits_0_when_all_fresh_and_1_when_one_is_late(
    prometheus: PrometheusServer, only_fresh_pipelines: Callable[[str, float], None], write_config
) -> None:
    config = write_config(
        {
            "prometheus": {"url": prometheus.url},
            "pipelines": [{"name": "cli-old", "max_age": "1h"}],
        }
    )
    only_fresh_pipelines("cli-old", time.time() - 60)

    fresh = run_cli("check", "--config", str(config))
    only_fresh_pipelines("cli-old", time.time() - 7200)
    late = run_cli("check", "--config", str(config), "--format", "json")

    assert fresh.returncode == 0, fresh.stderr
    header, *rows = fresh.stdout.splitlines()
    assert header.split() == [
        "PIPELINE",
        "STATE",
        "AGE",
        "THRESHOLD",
        "NEXT",
        "DEADLINE",
        "OVERDUE",
    ]
    assert any(row.split()[:2] == ["cli-old", "fresh"] for row in rows)
    assert late.returncode == 1, late.stderr
    report = json.loads(late.stdout)
    old = next(p for p in report["pipelines"] if p["pipeline"] == "cli-old")
    assert old["state"] == "stale"
    assert 7200 <= old["age_seconds"] < 7300
    assert old["max_age_seconds"] == 3600
    assert old["summary"].startswith("cli-old is stale: last success 2h")


def test_check_pipeline_selects_names_that_promql_must_escape(
    prometheus: PrometheusServer, only_fresh_pipelines: Callable[[str, float], None], write_config
) -> None:
    odd = 'odd "quoted" \\ back\nslash ü'
    only_fresh_pipelines(odd, time.time() - 60)
    only_fresh_pipelines("cli-late-bystander", time.time() - 7200)
    config = write_config({"prometheus": {"url": prometheus.url}})

    result = run_cli("check", "--config", str(config), "--pipeline", odd, "--format", "json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["pipelines"]
    assert [(p["pipeline"], p["state"]) for p in report] == [(odd, "fresh")]


def test_check_reports_a_missing_expected_pipeline(prometheus: PrometheusServer, write_config):
    config = write_config(
        {"prometheus": {"url": prometheus.url}, "pipelines": [{"name": "cli-absent"}]}
    )

    result = run_cli("check", "--config", str(config), "--format", "json")

    assert result.returncode == 1
    absent = next(
        p for p in json.loads(result.stdout)["pipelines"] if p["pipeline"] == "cli-absent"
    )
    assert absent["state"] == "missing"


def test_check_that_finds_no_pipeline_at_all_is_an_error(
    prometheus: PrometheusServer, write_config
) -> None:
    config = write_config({"prometheus": {"url": prometheus.url}, "metric": "ml_pipeline_typo"})

    result = run_cli("check", "--config", str(config))

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pipeline-watchdog: no pipelines found: no series of ml_pipeline_typo with a pipeline "
        "label, and none listed under pipelines"
    ]


def test_check_exits_2_with_one_line_when_prometheus_is_unreachable(write_config) -> None:
    config = write_config({"prometheus": {"url": f"http://127.0.0.1:{free_port()}"}})

    result = run_cli("check", "--config", str(config))

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "pipeline-watchdog: cannot evaluate: Prometheus query failed: connection refused"
    ]


def test_validate_accepts_a_good_config(write_config) -> None:
    config = write_config({"pipelines": [{"name": "a", "max_age": "1h"}]})

    result = run_cli("validate", "--config", str(config))

    assert result.returncode == 0
    assert "valid (1 pipeline entry, 0 checks, 0 receivers)" in result.stdout


def test_validate_names_each_bad_field_without_a_traceback(write_config) -> None:
    config = write_config(
        {
            "pipelines": [{"name": "a"}, {"name": "b"}, {"name": "c", "max_age": "2 hours"}],
            "receivers": [{"name": "s", "type": "slack", "url": f"ftp://x/{SECRET}"}],
        }
    )

    result = run_cli("validate", "--config", str(config))

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "pipeline-watchdog: pipelines[2].max_age: invalid duration '2 hours' "
        "(expected e.g. 500ms, 30s, 5m, 2h, 1d or seconds)",
        "pipeline-watchdog: receivers[0].url: must be an http:// or https:// URL",
    ]
    assert SECRET not in result.stderr


def test_validate_of_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("validate", "--config", str(tmp_path / "nope.yaml"))

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "No such file or directory" in result.stderr


def test_run_with_a_taken_port_exits_2(write_config, tmp_path: Path) -> None:
    with RecordingReceiver() as taken:
        state = {"path": str(tmp_path / "state.db")}
        config = write_config({"listen": f"127.0.0.1:{taken.port}", "state": state})

        result = run_cli("run", "--config", str(config))

    assert result.returncode == 2
    assert result.stderr.strip().endswith("Address already in use")


class Daemon:
    """``pipeline-watchdog run`` as a child process."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                watchdog_command("run", "--config", str(config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=clean_env(),
            )

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=5)

    def answers(self, path: str, status: int) -> Callable[[], bool]:
        def check() -> bool:
            try:
                return self.get(path).status_code == status
            except requests.ConnectionError:
                return False

        return check

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def test_daemon_serves_probes_and_metrics_notifies_and_stops_on_sigterm(
    prometheus: PrometheusServer,
    exporter: ExporterProcess,
    write_config,
    tmp_path: Path,
) -> None:
    port = free_port()
    recorded = exporter.succeed("daemon-late", time.time() - 7200)
    wait_until(visible(prometheus, "daemon-late", recorded), 15, what="daemon-late scraped")
    with RecordingReceiver() as receiver:
        config = write_config(
            {
                "prometheus": {"url": prometheus.url},
                "evaluation_interval": "1s",
                "listen": f"127.0.0.1:{port}",
                "state": {"path": str(tmp_path / "state.db")},
                "pipelines": [{"name": "daemon-late", "max_age": "1h"}],
                "receivers": [
                    {"name": "slack", "type": "slack", "url": receiver.url(f"/T/B/{SECRET}")}
                ],
            }
        )
        daemon = Daemon(config, port, tmp_path / "daemon.log")
        try:
            wait_until(daemon.answers("/readyz", 200), 30, what="/readyz 200")
            wait_until(lambda: bool(receiver.requests()), 30, what="a notification")
            healthz = daemon.get("/healthz")
            metrics = daemon.get("/metrics").text
            missing_page = daemon.get("/nope")
        finally:
            code = daemon.stop()
            exporter.remove("daemon-late")

    log = daemon.log.read_text()
    assert code == 0, log
    assert healthz.status_code == 200
    assert missing_page.status_code == 404
    assert 'ml_watchdog_pipeline_stale{pipeline="daemon-late"} 1.0' in metrics
    assert 'ml_watchdog_pipeline_staleness_seconds{pipeline="daemon-late"}' in metrics
    assert "ml_watchdog_prometheus_up 1.0" in metrics
    assert 'ml_watchdog_notifications_total{receiver="slack",result="sent"} 1.0' in metrics
    assert "ml_watchdog_evaluation_duration_seconds_count" in metrics
    assert "ml_watchdog_last_evaluation_timestamp_seconds" in metrics
    assert "pipeline daemon-late: new -> stale" in log
    assert "notification sent: receiver=slack status=firing" in log
    assert "pipeline-watchdog stopped" in log
    assert SECRET not in log
    assert SECRET not in metrics
    assert len(receiver.requests()) == 1


def test_daemon_is_not_ready_before_its_first_evaluation(write_config, tmp_path: Path) -> None:
    # Prometheus is unreachable and the query times out slowly: no cycle finishes for a while.
    with RecordingReceiver(delay=3) as slow_prometheus:
        port = free_port()
        config = write_config(
            {
                "prometheus": {"url": slow_prometheus.url(""), "timeout": "3s"},
                "listen": f"127.0.0.1:{port}",
                "state": {"path": str(tmp_path / "state.db")},
            }
        )
        daemon = Daemon(config, port, tmp_path / "daemon.log")
        try:
            wait_until(daemon.answers("/healthz", 200), 30, what="/healthz 200")
            before: Any = daemon.get("/readyz")
            wait_until(daemon.answers("/readyz", 200), 30, what="/readyz 200 after the cycle")
            metrics = daemon.get("/metrics").text
        finally:
            code = daemon.stop()

    assert before.status_code == 503
    assert before.text.strip() == "no evaluation cycle finished yet"
    assert "ml_watchdog_prometheus_up 0.0" in metrics
    assert code == 0
