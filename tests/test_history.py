"""``check --at`` against history backfilled into a real Prometheus with promtool.

Two nightly pipelines (``0 2 * * *`` in Europe/Berlin, 2h grace): one succeeds every
night at 02:30, the other misses the night of 2026-11-21.  Asking about that night
after the fact is how a team checks "was anything late at 04:30?".
"""

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from testbed.servers import PrometheusServer

BERLIN = ZoneInfo("Europe/Berlin")
METRIC = "ml_pipeline_last_success_timestamp"


def berlin(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


SUCCESSES = {
    "nightly-ok": [berlin(f"2026-11-{day} 02:30") for day in (19, 20, 21, 22)],
    "nightly-missed": [berlin(f"2026-11-{day} 02:40") for day in (19, 20)],
}
START, END = berlin("2026-11-19 12:00"), berlin("2026-11-22 12:00")


def openmetrics() -> str:
    """One sample a minute per pipeline: the time of its latest success so far."""
    lines = [f"# TYPE {METRIC} gauge"]
    for pipeline, successes in SUCCESSES.items():
        at = START
        while at <= END:
            latest = max(s for s in successes if s <= at)
            lines.append(f'{METRIC}{{pipeline="{pipeline}"}} {latest:.0f} {at:.0f}')
            at += 60
    return "\n".join([*lines, "# EOF", ""])


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    work = tmp_path_factory.mktemp("history")
    server = PrometheusServer(work, name="history")
    source = work / "history.om"
    source.write_text(openmetrics())
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with the Debian package prometheus"
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(server.data_dir)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with server:
        yield server


def check_at(history: PrometheusServer, config: Path, at: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "watchdog",
            "check",
            "--config",
            str(config),
            "--at",
            at,
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def config(write_config, history: PrometheusServer) -> Path:
    entry = {"schedule": "0 2 * * *", "timezone": "Europe/Berlin", "grace": "2h"}
    return write_config(
        {
            "prometheus": {"url": history.url},
            "pipelines": [{"name": name, **entry} for name in SUCCESSES],
        }
    )


def by_name(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    return {p["pipeline"]: p for p in json.loads(result.stdout)["pipelines"]}


def test_before_the_deadline_nothing_was_late(history: PrometheusServer, config: Path) -> None:
    result = check_at(history, config, "2026-11-21T03:00:00+01:00")

    assert result.returncode == 0, result.stderr
    pipelines = by_name(result)
    assert pipelines["nightly-missed"]["state"] == "fresh"
    assert pipelines["nightly-missed"]["next_deadline"] == "2026-11-21T03:00:00Z"


def test_after_the_deadline_the_missed_run_was_late_by_the_exact_amount(
    history: PrometheusServer, config: Path
) -> None:
    result = check_at(history, config, "2026-11-21T04:30:00+01:00")

    assert result.returncode == 1, result.stderr
    pipelines = by_name(result)
    missed = pipelines["nightly-missed"]
    assert missed["state"] == "stale"
    assert missed["overdue_seconds"] == 1800
    assert missed["last_success"] == "2026-11-20T01:40:00Z"
    assert "deadline was 2026-11-21 04:00 CET" in str(missed["summary"])
    assert pipelines["nightly-ok"]["state"] == "fresh"
    assert pipelines["nightly-ok"]["next_deadline"] == "2026-11-22T03:00:00Z"


def test_at_takes_unix_seconds_too(history: PrometheusServer, config: Path) -> None:
    result = check_at(history, config, str(int(berlin("2026-11-21 04:30"))))

    assert result.returncode == 1
    assert by_name(result)["nightly-missed"]["overdue_seconds"] == 1800


def test_bad_at_value_is_one_line_and_exit_2(history: PrometheusServer, config: Path) -> None:
    result = check_at(history, config, "last tuesday")

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pipeline-watchdog: --at: invalid time 'last tuesday': expected RFC 3339 with a zone "
        "(2026-12-04T03:00:00Z, 2026-12-04T04:00:00+01:00) or unix seconds"
    ]
