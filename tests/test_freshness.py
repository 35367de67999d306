import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from watchdog.config import Settings
from watchdog.freshness import (
    LAST_SUCCESS,
    CheckResult,
    Evaluation,
    FreshnessState,
    Observation,
    PipelineStatus,
    PushTimes,
    StatusKey,
    evaluate,
    unknown,
)
from watchdog.rules import RuleBook

NOW = 1_800_000_000.0


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"defaults": {"max_age": "1h", "forget_after": "1d"}}
    values.update(overrides)
    return Settings(**values)


def run(
    observed: dict[str, float],
    at: float,
    config: Settings,
    previous: dict[StatusKey, PipelineStatus] | None = None,
    pushes: dict[str, PushTimes] | None = None,
) -> Evaluation:
    result = CheckResult(LAST_SUCCESS, at, {n: Observation(v) for n, v in observed.items()})
    return evaluate([result], RuleBook(config), previous or {}, pushes=pushes)


def status_of(observed: dict[str, float], at: float, config: Settings, name: str = "p"):
    return run(observed, at, config).statuses[name]


def test_age_is_measured_against_the_evaluation_time() -> None:
    status = status_of({"p": NOW - 600}, NOW, settings())

    assert status.state is FreshnessState.fresh
    assert status.age == 600
    assert status.deadline == NOW - 600 + 3600
    assert status.overdue == 0


def test_stale_only_when_age_is_strictly_greater_than_max_age() -> None:
    at_limit = status_of({"p": NOW - 3600}, NOW, settings())
    past_limit = status_of({"p": NOW - 3600.001}, NOW, settings())

    assert at_limit.state is FreshnessState.fresh
    assert past_limit.state is FreshnessState.stale
    assert past_limit.overdue == pytest.approx(0.001, abs=1e-6)


def test_pipeline_entry_overrides_the_default_threshold() -> None:
    config = settings(pipelines=[{"name": "fast", "max_age": "5m"}])

    statuses = run({"fast": NOW - 400, "slow": NOW - 400}, NOW, config).statuses

    assert statuses["fast"].state is FreshnessState.stale
    assert statuses["fast"].max_age == 300
    assert statuses["slow"].state is FreshnessState.fresh


def test_regex_entry_overrides_and_exact_name_wins_over_it() -> None:
    config = settings(
        pipelines=[
            {"match": "etl-.*", "max_age": "10m", "labels": {"team": "data"}},
            {"name": "etl-special", "max_age": "2h"},
        ]
    )

    statuses = run({"etl-a": NOW - 900, "etl-special": NOW - 900}, NOW, config).statuses

    assert statuses["etl-a"].state is FreshnessState.stale
    assert statuses["etl-a"].labels == {"team": "data"}
    assert statuses["etl-special"].state is FreshnessState.fresh
    assert statuses["etl-special"].labels == {"team": "data"}


def test_regex_entries_do_not_declare_pipelines_expected() -> None:
    config = settings(pipelines=[{"match": "etl-.*", "max_age": "10m"}])

    assert run({}, NOW, config).statuses == {}


def test_include_and_exclude_filter_discovered_pipelines_only() -> None:
    config = settings(
        discovery={"include": ["team-a-.*"], "exclude": [".*-test"]},
        pipelines=[{"name": "other-expected"}],
    )
    observed = {
        "team-a-train": NOW,
        "team-a-train-test": NOW,
        "team-b": NOW,
        "other-expected": NOW,
    }

    statuses = run(observed, NOW, config).statuses

    assert set(statuses) == {"team-a-train", "other-expected"}


def test_expected_pipeline_without_series_is_missing() -> None:
    config = settings(pipelines=[{"name": "ghost"}])

    status = run({}, NOW, config).statuses["ghost"]

    assert status.state is FreshnessState.missing
    assert status.age is None
    assert status.deadline is None


@pytest.mark.parametrize("value", [0.0, -5.0, math.nan])
def test_zero_negative_or_nan_has_never_succeeded(value: float) -> None:
    status = status_of({"p": value}, NOW, settings())

    assert status.state is FreshnessState.never_succeeded
    assert status.is_problem
    assert status.age is None
    assert status.reason.startswith("no success recorded (value")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (NOW * 1e3, "looks like a timestamp in milliseconds"),
        (NOW * 1e6, "looks like a timestamp in microseconds"),
        (NOW * 1e9, "looks like a timestamp in nanoseconds"),
        (NOW + 3600, "last success is 1h in the future"),
        (math.inf, "is not a timestamp"),
    ],
)
def test_timestamp_that_cannot_be_true_is_invalid_never_fresh(value: float, reason: str) -> None:
    status = status_of({"p": value}, NOW, settings())

    assert status.state is FreshnessState.invalid
    assert reason in status.reason
    assert status.is_problem


def test_small_clock_skew_into_the_future_is_tolerated() -> None:
    status = status_of({"p": NOW + 299}, NOW, settings())

    assert status.state is FreshnessState.fresh


def test_timestamp_unit_accepts_milliseconds_on_purpose() -> None:
    config = settings(pipelines=[{"name": "p", "timestamp_unit": "milliseconds"}])

    status = status_of({"p": (NOW - 60) * 1000}, NOW, config)

    assert status.state is FreshnessState.fresh
    assert status.age == pytest.approx(60)


def test_failed_push_newer_than_the_last_good_one_is_invalid() -> None:
    pushes = {
        "p": PushTimes(push=NOW - 600, failure=NOW - 60),
        "q": PushTimes(NOW - 60, NOW - 600),
    }

    statuses = run({"p": NOW - 600, "q": NOW - 60}, NOW, settings(), pushes=pushes).statuses

    assert statuses["p"].state is FreshnessState.invalid
    assert "the last push to the Pushgateway failed" in statuses["p"].reason
    assert statuses["q"].state is FreshnessState.fresh


def test_vanished_pipeline_is_missing_and_keeps_ageing() -> None:
    first = run({"p": NOW - 60}, NOW, settings())

    later = run({}, NOW + 600, settings(), first.results).statuses["p"]

    assert later.state is FreshnessState.missing
    assert later.last_success == NOW - 60
    assert later.age == 660
    assert later.last_seen == NOW


def test_vanished_discovered_pipeline_is_forgotten_after_forget_after() -> None:
    first = run({"p": NOW - 60}, NOW, settings())
    kept = run({}, NOW + 86400, settings(), first.results)

    dropped = run({}, NOW + 86400.5, settings(), kept.results)

    assert "p" in kept.statuses
    assert "p" not in dropped.statuses
    assert [s.pipeline for s in dropped.forgotten] == ["p"]


def test_expected_pipeline_is_never_forgotten() -> None:
    config = settings(pipelines=[{"name": "p"}])
    first = run({"p": NOW - 60}, NOW, config)

    later = run({}, NOW + 10 * 86400, config, first.results)

    assert later.statuses["p"].state is FreshnessState.missing
    assert later.forgotten == []


def test_unknown_keeps_history_and_covers_expected_pipelines() -> None:
    config = settings(pipelines=[{"name": "never-evaluated"}])
    first = run({"p": NOW - 60}, NOW, config)

    statuses = unknown(first.results, RuleBook(config), NOW + 30)

    assert statuses[("p", LAST_SUCCESS)].state is FreshnessState.unknown
    assert statuses[("p", LAST_SUCCESS)].last_success == NOW - 60
    assert statuses[("never-evaluated", LAST_SUCCESS)].state is FreshnessState.unknown
    assert not statuses[("p", LAST_SUCCESS)].is_problem


# Schedules ---------------------------------------------------------------------------


def ts(text: str, zone: str = "UTC") -> float:
    """Unix seconds of a wall-clock time in ``zone`` (fold 0 for repeated times)."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def nightly(**extra: object) -> Settings:
    entry = {"name": "p", "schedule": "0 2 * * *", "timezone": "Europe/Berlin", "grace": "2h"}
    entry.update(extra)
    return settings(pipelines=[entry])


def test_schedule_success_keeps_fresh_until_next_runs_deadline() -> None:
    success = ts("2026-12-03 02:40", "Europe/Berlin")

    before = status_of({"p": success}, ts("2026-12-04 03:59", "Europe/Berlin"), nightly())
    at_deadline = status_of({"p": success}, ts("2026-12-04 04:00", "Europe/Berlin"), nightly())
    after = status_of({"p": success}, ts("2026-12-04 04:00:01", "Europe/Berlin"), nightly())

    assert before.state is FreshnessState.fresh
    assert before.deadline == ts("2026-12-04 04:00", "Europe/Berlin")
    assert at_deadline.state is FreshnessState.fresh
    assert after.state is FreshnessState.stale
    assert after.overdue == pytest.approx(1)


def test_missed_nightly_run_is_late_at_its_deadline_not_a_day_later() -> None:
    # A max_age of 26h would only notice at 04:40 on the 5th.
    success = ts("2026-12-03 02:40", "Europe/Berlin")

    status = status_of({"p": success}, ts("2026-12-04 04:30", "Europe/Berlin"), nightly())

    assert status.state is FreshnessState.stale
    assert status.overdue == pytest.approx(1800)
    assert status.max_age is None


def test_early_success_does_not_satisfy_the_coming_run() -> None:
    early = ts("2026-12-04 01:50", "Europe/Berlin")

    status = status_of({"p": early}, ts("2026-12-04 04:01", "Europe/Berlin"), nightly())

    assert status.state is FreshnessState.stale


def test_success_exactly_at_the_scheduled_time_counts() -> None:
    on_time = ts("2026-12-04 02:00", "Europe/Berlin")

    status = status_of({"p": on_time}, ts("2026-12-04 04:01", "Europe/Berlin"), nightly())

    assert status.state is FreshnessState.fresh
    assert status.deadline == ts("2026-12-05 04:00", "Europe/Berlin")


def test_schedule_and_max_age_combine_late_if_either_says_so() -> None:
    config = nightly(max_age="6h")
    success = ts("2026-12-04 02:10", "Europe/Berlin")

    status = status_of({"p": success}, ts("2026-12-04 08:11", "Europe/Berlin"), config)

    assert status.state is FreshnessState.stale
    assert status.deadline == success + 6 * 3600


def test_scheduled_pipeline_ignores_the_default_max_age() -> None:
    success = ts("2026-12-04 02:10", "Europe/Berlin")

    status = status_of({"p": success}, ts("2026-12-04 20:00", "Europe/Berlin"), nightly())

    assert status.state is FreshnessState.fresh


@pytest.mark.parametrize(
    ("zone", "last_success", "deadline"),
    [
        # Spring forward: 02:30 does not exist that night; cron runs at 03:00.
        ("Europe/Berlin", "2026-03-28 02:30", "2026-03-29 03:30"),
        ("America/New_York", "2026-03-07 02:30", "2026-03-08 03:30"),
    ],
)
def test_run_time_in_the_skipped_hour_runs_once_at_the_first_valid_minute(
    zone: str, last_success: str, deadline: str
) -> None:
    config = settings(
        pipelines=[{"name": "p", "schedule": "30 2 * * *", "timezone": zone, "grace": "30m"}]
    )

    status = status_of({"p": ts(last_success, zone)}, ts(last_success, zone) + 3600, config)

    assert status.deadline == ts(deadline, zone)
    # 02:30 to the next day's 03:00 is 24h30m of wall clock but 23h30m of real time.
    assert status.deadline - ts(last_success, zone) == 23.5 * 3600 + 1800


@pytest.mark.parametrize(
    ("zone", "day_before", "change_day"),
    [
        ("Europe/Berlin", "2026-10-24 02:30", "2026-10-25"),
        ("America/New_York", "2026-10-31 01:30", "2026-11-01"),
    ],
)
def test_run_time_in_the_repeated_hour_runs_once(
    zone: str, day_before: str, change_day: str
) -> None:
    hour = day_before[11:]
    config = settings(
        pipelines=[
            {
                "name": "p",
                "schedule": f"{hour[3:]} {hour[:2]} * * *",
                "timezone": zone,
                "grace": "0s",
            }
        ]
    )
    first_pass = ts(f"{change_day} {hour}", zone)  # fold 0: the first occurrence
    second_pass = first_pass + 3600  # the same wall-clock time, an hour later

    after_success = status_of({"p": first_pass}, second_pass + 60, config)

    assert status_of({"p": ts(day_before, zone)}, first_pass + 1, config).state is (
        FreshnessState.stale
    )
    assert after_success.state is FreshnessState.fresh
    assert after_success.deadline == first_pass + 24 * 3600 + 3600


def test_every_30_minutes_follows_real_time_across_fall_back() -> None:
    config = settings(
        pipelines=[
            {"name": "p", "schedule": "*/30 * * * *", "timezone": "Europe/Berlin", "grace": "5m"}
        ]
    )
    success = datetime(2026, 10, 25, 0, 40, tzinfo=UTC).timestamp()  # 02:40 CEST

    status = status_of({"p": success}, success + 60, config)

    # Next run 02:00 CET, which is 01:00 UTC: 20 real minutes later.
    assert status.deadline == datetime(2026, 10, 25, 1, 5, tzinfo=UTC).timestamp()


# Custom checks -------------------------------------------------------------------------


def custom(check: dict[str, object], values: dict[str, float], at: float = NOW):
    config = settings(checks=[check])
    result = CheckResult(str(check["name"]), at, {n: Observation(v) for n, v in values.items()})
    checks = {c.name: c for c in config.checks}
    return evaluate([result], RuleBook(config), {}, checks).results


def test_timestamp_check_is_late_when_older_than_its_threshold() -> None:
    check = {"name": "table", "type": "timestamp", "expr": "x", "threshold": "1h"}

    results = custom(check, {"a": NOW - 3601, "b": NOW - 60})

    assert results[("a", "table")].state is FreshnessState.stale
    assert results[("b", "table")].state is FreshnessState.fresh
    assert results[("b", "table")].deadline == NOW - 60 + 3600


def test_age_check_reads_seconds_of_age() -> None:
    check = {"name": "age", "type": "age", "expr": "x", "threshold": "10m"}

    results = custom(check, {"a": 601, "b": 599})

    assert results[("a", "age")].state is FreshnessState.stale
    assert results[("a", "age")].age == 601
    assert results[("b", "age")].state is FreshnessState.fresh


def test_lag_check_compares_the_difference_to_its_threshold() -> None:
    check = {"name": "lag", "type": "lag", "expr": "a", "baseline": "b", "threshold": "1h"}

    results = custom(check, {"a": 3601, "b": 3600})

    assert results[("a", "lag")].state is FreshnessState.stale
    assert results[("a", "lag")].lag == 3601
    assert results[("a", "lag")].deadline is None
    assert results[("b", "lag")].state is FreshnessState.fresh


def test_pipeline_only_expected_then_removed_from_config_is_forgotten_at_once() -> None:
    before = run({}, NOW, settings(pipelines=[{"name": "gone"}]))

    after = run({}, NOW + 30, settings(), before.results)

    assert "gone" not in after.statuses
    assert [s.pipeline for s in after.forgotten] == ["gone"]
