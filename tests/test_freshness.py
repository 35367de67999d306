import math

import pytest

from watchdog.config import Settings
from watchdog.freshness import FreshnessState, evaluate, unknown

NOW = 1_800_000_000.0


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"defaults": {"max_age": "1h", "forget_after": "1d"}}
    values.update(overrides)
    return Settings(**values)


def test_age_is_measured_against_the_evaluation_time() -> None:
    result = evaluate({"train": NOW - 600}, NOW, settings(), {})

    status = result.statuses["train"]
    assert status.state is FreshnessState.fresh
    assert status.age == 600
    assert status.last_success == NOW - 600


def test_stale_only_when_age_is_strictly_greater_than_max_age() -> None:
    at_limit = evaluate({"p": NOW - 3600}, NOW, settings(), {}).statuses["p"]
    past_limit = evaluate({"p": NOW - 3600.001}, NOW, settings(), {}).statuses["p"]

    assert at_limit.state is FreshnessState.fresh
    assert past_limit.state is FreshnessState.stale


def test_pipeline_entry_overrides_the_default_threshold() -> None:
    config = settings(pipelines=[{"name": "fast", "max_age": "5m"}])

    statuses = evaluate({"fast": NOW - 400, "slow": NOW - 400}, NOW, config, {}).statuses

    assert statuses["fast"].state is FreshnessState.stale
    assert statuses["fast"].max_age == 300
    assert statuses["slow"].state is FreshnessState.fresh


def test_expected_pipeline_without_series_is_missing() -> None:
    config = settings(pipelines=[{"name": "ghost"}])

    status = evaluate({}, NOW, config, {}).statuses["ghost"]

    assert status.state is FreshnessState.missing
    assert status.age is None
    assert status.last_seen is None


@pytest.mark.parametrize("value", [0.0, -5.0, math.nan, math.inf])
def test_value_that_is_not_a_timestamp_is_missing_never_fresh(value: float) -> None:
    status = evaluate({"p": value}, NOW, settings(), {}).statuses["p"]

    assert status.state is FreshnessState.missing
    assert status.last_success is None


def test_vanished_pipeline_is_missing_and_keeps_ageing() -> None:
    first = evaluate({"p": NOW - 60}, NOW, settings(), {})

    later = evaluate({}, NOW + 600, settings(), first.statuses).statuses["p"]

    assert later.state is FreshnessState.missing
    assert later.last_success == NOW - 60
    assert later.age == 660
    assert later.last_seen == NOW


def test_vanished_discovered_pipeline_is_forgotten_after_forget_after() -> None:
    first = evaluate({"p": NOW - 60}, NOW, settings(), {})
    kept = evaluate({}, NOW + 86400, settings(), first.statuses)

    dropped = evaluate({}, NOW + 86400.5, settings(), kept.statuses)

    assert "p" in kept.statuses
    assert "p" not in dropped.statuses
    assert [s.pipeline for s in dropped.forgotten] == ["p"]


def test_expected_pipeline_is_never_forgotten() -> None:
    config = settings(pipelines=[{"name": "p"}])
    first = evaluate({"p": NOW - 60}, NOW, config, {})

    later = evaluate({}, NOW + 10 * 86400, config, first.statuses)

    assert later.statuses["p"].state is FreshnessState.missing
    assert later.forgotten == []


def test_unknown_keeps_history_and_covers_expected_pipelines() -> None:
    config = settings(pipelines=[{"name": "never-evaluated"}])
    first = evaluate({"p": NOW - 60}, NOW, config, {})

    statuses = unknown({"p": first.statuses["p"]}, config, NOW + 30)

    assert statuses["p"].state is FreshnessState.unknown
    assert statuses["p"].last_success == NOW - 60
    assert statuses["never-evaluated"].state is FreshnessState.unknown
    assert not statuses["p"].is_problem
