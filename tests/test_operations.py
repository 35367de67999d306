"""Running it: reload without a restart, the heartbeat, JSON logs; each against the
real daemon process, a real Prometheus and real receivers on 127.0.0.1."""

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from testbed.receiver import RecordingReceiver
from testbed.servers import ExporterProcess, PrometheusServer, WatchdogProcess, wait_until

TOKEN = "reload-token-1234"


def metric(process: WatchdogProcess, line_start: str) -> float | None:
    for line in process.metrics_text().splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return None


@pytest.fixture
def pipeline(prometheus: PrometheusServer, exporter: ExporterProcess) -> Iterator[str]:
    name = "ops-pipeline"
    recorded = exporter.succeed(name, time.time() - 600)
    query = f'ml_pipeline_last_success_timestamp{{pipeline="{name}"}} == {recorded}'
    wait_until(lambda: bool(prometheus.query(query)), 15, what=f"{name} scraped")
    yield name
    exporter.remove(name)


def base_config(prometheus: PrometheusServer, name: str, max_age: str) -> dict[str, Any]:
    return {
        "prometheus": {"url": prometheus.url},
        "evaluation_interval": "1s",
        "discovery": {"include": [name]},
        "pipelines": [{"name": name, "max_age": max_age}],
        "api": {"token": TOKEN},
    }


class ConfigMapDir:
    """A config file laid out as a Kubernetes ConfigMap volume: updated by a symlink swap."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir()
        self.path = root / "watchdog.yaml"
        self._version = 0

    def write(self, config: dict[str, Any]) -> None:
        self._version += 1
        data = self.root / f"..2026_{self._version}"
        data.mkdir()
        (data / "watchdog.yaml").write_text(yaml.safe_dump(config))
        link = self.root / "..data_tmp"
        link.symlink_to(data.name)
        link.replace(self.root / "..data")  # atomic, as the kubelet does
        if not self.path.is_symlink():
            self.path.symlink_to("..data/watchdog.yaml")


def start(tmp_path: Path, configmap: ConfigMapDir, config: dict[str, Any]) -> WatchdogProcess:
    configmap.write(config)
    process = WatchdogProcess(tmp_path, config)
    process.config_path = configmap.path  # run from the ConfigMap layout, not a copy
    process.command = (
        lambda: [  # type: ignore[method-assign]
            *WatchdogProcess.command(process)[:-2],
            "--config",
            str(configmap.path),
        ]
    )
    return process.start()


def test_sighup_reloads_and_a_bad_config_is_rejected_while_the_old_one_runs(
    prometheus: PrometheusServer, pipeline: str, tmp_path: Path
) -> None:
    configmap = ConfigMapDir(tmp_path / "config")
    config = base_config(prometheus, pipeline, "1h")
    daemon = start(tmp_path, configmap, config)
    max_age = f'ml_watchdog_pipeline_max_age_seconds{{pipeline="{pipeline}"}}'
    try:
        wait_until(lambda: metric(daemon, max_age) == 3600, 20, what="first evaluation")

        configmap.write(base_config(prometheus, pipeline, "2h"))
        assert daemon.pid is not None
        os.kill(daemon.pid, signal.SIGHUP)
        wait_until(lambda: metric(daemon, max_age) == 7200, 20, what="reload by SIGHUP")
        good = metric(daemon, "ml_watchdog_config_last_reload_successful")

        bad = base_config(prometheus, pipeline, "2 hours")
        configmap.write(bad)
        os.kill(daemon.pid, signal.SIGHUP)
        wait_until(
            lambda: metric(daemon, "ml_watchdog_config_last_reload_successful") == 0,
            20,
            what="the bad config rejected",
        )
        still = metric(daemon, max_age)
        ready = requests.get(daemon.url + "/readyz", timeout=5).status_code
    finally:
        daemon.stop()

    log = daemon.log_path.read_text()
    assert good == 1
    assert still == 7200
    assert ready == 200
    assert "configuration reloaded (SIGHUP)" in log
    assert "configuration reload (SIGHUP) rejected, the running configuration stays: " in log
    assert "pipelines[0].max_age: invalid duration '2 hours'" in log


def test_a_configmap_update_is_picked_up_without_a_signal(
    prometheus: PrometheusServer, pipeline: str, tmp_path: Path
) -> None:
    configmap = ConfigMapDir(tmp_path / "config")
    daemon = start(tmp_path, configmap, base_config(prometheus, pipeline, "1h"))
    max_age = f'ml_watchdog_pipeline_max_age_seconds{{pipeline="{pipeline}"}}'
    try:
        wait_until(lambda: metric(daemon, max_age) == 3600, 20, what="first evaluation")
        before = metric(daemon, "ml_watchdog_config_last_reload_success_timestamp_seconds")

        configmap.write(base_config(prometheus, pipeline, "3h"))
        wait_until(lambda: metric(daemon, max_age) == 10800, 30, what="reload on file change")
        after = metric(daemon, "ml_watchdog_config_last_reload_success_timestamp_seconds")
    finally:
        daemon.stop()

    assert before is not None and after is not None and after > before
    assert "configuration reloaded (file change)" in daemon.log_path.read_text()


def test_post_reload_needs_the_token_and_alert_state_survives(
    prometheus: PrometheusServer, pipeline: str, tmp_path: Path
) -> None:
    configmap = ConfigMapDir(tmp_path / "config")
    with RecordingReceiver() as receiver:
        config = base_config(prometheus, pipeline, "5m")  # 10 minutes old: stale
        config["receivers"] = [{"name": "hook", "type": "webhook", "url": receiver.url()}]
        daemon = start(tmp_path, configmap, config)
        try:
            receiver.wait_for(lambda requests: len(requests) == 1, timeout=20)
            config["pipelines"][0]["max_age"] = "6m"
            configmap.write(config)

            anonymous = requests.post(daemon.url + "/-/reload", timeout=10)
            wrong = requests.post(
                daemon.url + "/-/reload", headers={"Authorization": "Bearer nope"}, timeout=10
            )
            right = requests.post(
                daemon.url + "/-/reload", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            )
            cycles = metric(daemon, 'ml_watchdog_evaluations_total{result="success"}') or 0
            wait_until(
                lambda: (
                    (metric(daemon, 'ml_watchdog_evaluations_total{result="success"}') or 0)
                    >= cycles + 3
                ),
                20,
                what="three cycles after the reload",
            )
            bodies = [r.json() for r in receiver.requests()]
        finally:
            daemon.stop()

    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    assert TOKEN not in wrong.text
    assert right.status_code == 200
    assert right.json() == {"status": "reloaded"}
    assert [b["status"] for b in bodies] == ["firing"]
    assert bodies[0]["alerts"][0]["max_age_seconds"] == 300


def test_heartbeat_is_pinged_after_good_cycles_and_a_failing_one_blocks_nothing(
    prometheus: PrometheusServer, pipeline: str, tmp_path: Path
) -> None:
    with RecordingReceiver() as heartbeat:
        heartbeat.enqueue_responses([(500, b"down")])
        config = base_config(prometheus, pipeline, "1h")
        config["heartbeat"] = {"url": heartbeat.url("/ping/SECRETUUID"), "timeout": "2s"}
        daemon = WatchdogProcess(tmp_path, config).start()
        try:
            heartbeat.wait_for(lambda requests: len(requests) >= 3, timeout=20)
            wait_until(
                lambda: (metric(daemon, 'ml_watchdog_heartbeats_total{result="sent"}') or 0) >= 2,
                10,
                what="two heartbeats counted",
            )
            failed = metric(daemon, 'ml_watchdog_heartbeats_total{result="failed"}')
        finally:
            daemon.stop()

    assert {r.method for r in heartbeat.requests()} == {"POST"}
    assert failed == 1
    log = daemon.log_path.read_text()
    assert "heartbeat ping failed: HTTP 500" in log
    assert "SECRETUUID" not in log


def test_json_logs_carry_the_event_fields(
    prometheus: PrometheusServer, pipeline: str, tmp_path: Path
) -> None:
    with RecordingReceiver() as receiver:
        config = base_config(prometheus, pipeline, "5m")
        config["log_format"] = "json"
        config["receivers"] = [{"name": "hook", "type": "webhook", "url": receiver.url()}]
        daemon = WatchdogProcess(tmp_path, config).start()
        try:
            receiver.wait_for(lambda requests: len(requests) == 1, timeout=20)
            wait_until(lambda: "notification sent" in daemon.log_path.read_text(), 10)
        finally:
            daemon.stop()

    # The testbed heads its log with the command line; the daemon writes the rest.
    text = daemon.log_path.read_text().splitlines()
    lines = [json.loads(line) for line in text if line and not line.startswith("--- ")]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    change = next(line for line in lines if line["message"].startswith(f"pipeline {pipeline}:"))
    assert change["pipeline"] == pipeline
    assert change["state"] == "stale"
    assert change["old_state"] == "new"
    sent = next(line for line in lines if line["message"].startswith("notification sent"))
    assert sent["receiver"] == "hook"
    assert sent["status"] == "firing"


def test_the_running_daemon_serves_its_status_page(
    prometheus: PrometheusServer, pipeline: str, tmp_path: Path
) -> None:
    daemon = WatchdogProcess(tmp_path, base_config(prometheus, pipeline, "1h")).start()
    try:
        wait_until(lambda: requests.get(daemon.url + "/readyz", timeout=5).status_code == 200, 20)
        page = requests.get(daemon.url + "/", timeout=5)
    finally:
        daemon.stop()

    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert pipeline in page.text
    assert "script-src" not in page.headers["Content-Security-Policy"]
