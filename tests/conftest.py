"""Fixtures shared by the tests: a clean environment, a clock tests can move, and
the real servers (an exporter, a Prometheus scraping it, a receiver)."""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from testbed.receiver import RecordingReceiver
from testbed.servers import ExporterProcess, PrometheusServer


@pytest.fixture(autouse=True)
def _no_watchdog_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A WATCHDOG_* variable in the developer's shell would silently change configs.
    for name in list(os.environ):
        if name.startswith("WATCHDOG_"):
            monkeypatch.delenv(name)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def write_config(tmp_path: Path) -> Iterator[object]:
    """Write a dict (or text) as a YAML config file and return its path."""

    def write(content: dict[str, object] | str, name: str = "watchdog.yaml") -> Path:
        path = tmp_path / name
        text = content if isinstance(content, str) else yaml.safe_dump(content)
        path.write_text(text, encoding="utf-8")
        return path

    yield write


@pytest.fixture(scope="session")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    with ExporterProcess(tmp_path_factory.mktemp("exporter")) as process:
        yield process


@pytest.fixture(scope="session")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, exporter: ExporterProcess
) -> Iterator[PrometheusServer]:
    with PrometheusServer(tmp_path_factory.mktemp("prometheus"), [exporter.target]) as server:
        server.wait_for_targets_up()
        yield server


@pytest.fixture
def receiver() -> Iterator[RecordingReceiver]:
    with RecordingReceiver() as server:
        yield server


@pytest.fixture
def pipelines(exporter: ExporterProcess) -> Iterator[Callable[[str], str]]:
    """Hands out pipeline names and removes their series after the test."""
    used: list[str] = []

    def name(base: str) -> str:
        used.append(base)
        return base

    yield name
    for pipeline in used:
        if pipeline in exporter.pipelines():
            exporter.remove(pipeline)
