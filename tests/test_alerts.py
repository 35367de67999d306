"""The alert lifecycle, driven with explicit evaluation times (no clock, no sleeping)."""

from dataclasses import replace

import pytest

from watchdog.alerts import AlertStatus, AlertTracker, EventKind
from watchdog.config import Settings
from watchdog.freshness import FreshnessState, PipelineStatus
from watchdog.routing import Router
from watchdog.rules import RuleBook
from watchdog.store import AlertRecord

T0 = 1_800_000_000.0
STALE, FRESH, UNKNOWN = FreshnessState.stale, FreshnessState.fresh, FreshnessState.unknown


def status(state: FreshnessState, at: float = T0, name: str = "train", age: float = 7200):
    return PipelineStatus(
        pipeline=name,
        state=state,
        evaluated_at=at,
        max_age=3600,
        threshold="1h",
        last_success=at - age,
        warn_after=1800,
    )


def tracker(
    silenced: object = None, records: dict | None = None, **defaults: object
) -> AlertTracker:
    config: dict[str, object] = {
        "defaults": {"repeat_interval": 0, **defaults},
        "pipelines": [
            {"name": "train", "depends_on": ["features"]},
            {"name": "features"},
        ],
        "receivers": [
            {"name": "all", "type": "webhook", "url": "http://127.0.0.1:1/a"},
            {
                "name": "critical-only",
                "type": "webhook",
                "url": "http://127.0.0.1:1/c",
                "match": {"severity": ["critical"]},
            },
        ],
    }
    settings = Settings(**config)
    return AlertTracker(
        RuleBook(settings),
        Router(settings.receivers),
        records,
        silenced=silenced,  # type: ignore[arg-type]
    )


def notified_firing(pipeline: str, receivers: list[str]) -> dict:
    """A stored alert that fired at T0 and was notified to ``receivers``."""
    record = AlertRecord(
        pipeline,
        "last_success",
        "firing",
        "critical",
        T0,
        firing_since=T0,
        last_notified_at=T0,
        receivers=receivers,
    )
    return {record.key: record}


def kinds(events) -> list[tuple[str, str]]:
    return [(str(e.kind), e.pipeline.pipeline) for e in events]


def test_stale_pipeline_fires_once() -> None:
    alerts = tracker()

    first = alerts.update([status(STALE)], now=T0)
    second = alerts.update([status(STALE, T0 + 30)], now=T0 + 30)

    assert kinds(first) == [("firing", "train")]
    assert first[0].receivers == ("all", "critical-only")
    assert second == []


def test_pending_fires_only_after_for_has_passed() -> None:
    alerts = tracker(**{"for": "5m"})

    start = alerts.update([status(STALE)], now=T0)
    before = alerts.update([status(STALE, T0 + 299)], now=T0 + 299)
    at = alerts.update([status(STALE, T0 + 300)], now=T0 + 300)

    assert start == [] and before == []
    assert kinds(at) == [("firing", "train")]
    assert at[0].firing_since == T0 + 300


def test_pending_that_clears_goes_away_without_a_word() -> None:
    alerts = tracker(**{"for": "5m"})
    alerts.update([status(STALE)], now=T0)

    events = alerts.update([status(FRESH, T0 + 60, age=10)], now=T0 + 60)

    assert events == []
    assert alerts.records() == {}


def test_recovery_resolves_once_to_the_receivers_that_got_the_firing() -> None:
    alerts = tracker()
    alerts.update([status(STALE)], now=T0)

    resolved = alerts.update([status(FRESH, T0 + 60, age=10)], now=T0 + 60)
    again = alerts.update([status(FRESH, T0 + 90, age=10)], now=T0 + 90)

    assert kinds(resolved) == [("resolved", "train")]
    assert resolved[0].status is AlertStatus.resolved
    assert resolved[0].firing_since == T0
    assert resolved[0].receivers == ("all", "critical-only")
    assert again == []


def test_keep_firing_for_resolves_only_after_staying_clear_that_long() -> None:
    alerts = tracker(keep_firing_for="10m")
    alerts.update([status(STALE)], now=T0)

    clear = alerts.update([status(FRESH, T0 + 60, age=10)], now=T0 + 60)
    flap = alerts.update([status(STALE, T0 + 120)], now=T0 + 120)
    clear_again = alerts.update([status(FRESH, T0 + 180, age=10)], now=T0 + 180)
    still = alerts.update([status(FRESH, T0 + 779, age=10)], now=T0 + 779)
    done = alerts.update([status(FRESH, T0 + 780, age=10)], now=T0 + 780)

    assert clear == [] and flap == [] and clear_again == [] and still == []
    assert kinds(done) == [("resolved", "train")]


def test_new_episode_after_a_real_recovery_notifies_again() -> None:
    alerts = tracker()
    alerts.update([status(STALE)], now=T0)
    alerts.update([status(FRESH, T0 + 60, age=10)], now=T0 + 60)

    events = alerts.update([status(STALE, T0 + 120)], now=T0 + 120)

    assert kinds(events) == [("firing", "train")]
    assert events[0].firing_since == T0 + 120


def test_warning_then_critical_escalates_once_and_back_does_not_page() -> None:
    alerts = tracker()

    warning = alerts.update([status(FRESH, T0, age=2000)], now=T0)
    escalated = alerts.update([status(STALE, T0 + 60)], now=T0 + 60)
    back = alerts.update([status(FRESH, T0 + 120, age=2000)], now=T0 + 120)

    assert kinds(warning) == [("firing", "train")]
    assert warning[0].severity == "warning"
    assert warning[0].receivers == ("all",)
    assert kinds(escalated) == [("escalated", "train")]
    assert escalated[0].severity == "critical"
    assert escalated[0].receivers == ("all", "critical-only")
    assert back == []


def test_reminders_come_every_repeat_interval_while_firing() -> None:
    alerts = tracker(repeat_interval="4h")
    alerts.update([status(STALE)], now=T0)

    early = alerts.update([status(STALE, T0 + 14399)], now=T0 + 14399)
    due = alerts.update([status(STALE, T0 + 14400)], now=T0 + 14400)
    next_one = alerts.update([status(STALE, T0 + 28800)], now=T0 + 28800)

    assert early == []
    assert kinds(due) == [("reminder", "train")]
    assert due[0].firing_since == T0
    assert kinds(next_one) == [("reminder", "train")]


def test_unknown_neither_starts_resolves_nor_reminds() -> None:
    alerts = tracker(repeat_interval="1m")
    alerts.update([status(STALE, name="late")], now=T0)

    events = alerts.update(
        [status(UNKNOWN, T0 + 600, "late"), status(UNKNOWN, T0 + 600, "new")], now=T0 + 600
    )

    assert events == []
    assert set(alerts.firing()) == {("late", "last_success")}


@pytest.mark.parametrize(
    "state", [FreshnessState.missing, FreshnessState.never_succeeded, FreshnessState.invalid]
)
def test_missing_never_succeeded_and_invalid_are_critical_alerts(state: FreshnessState) -> None:
    alerts = tracker()

    events = alerts.update([status(state)], now=T0)

    assert [(e.severity, e.pipeline.state) for e in events] == [("critical", state)]


def test_stale_to_missing_keeps_the_same_alert() -> None:
    alerts = tracker()
    alerts.update([status(STALE)], now=T0)

    events = alerts.update([status(FreshnessState.missing, T0 + 30)], now=T0 + 30)

    assert events == []
    assert alerts.firing() == {("train", "last_success"): T0}


def test_downstream_is_held_while_its_upstream_is_late_then_released() -> None:
    alerts = tracker()

    outage = alerts.update([status(STALE, name="features"), status(STALE)], now=T0)
    still = alerts.update(
        [status(STALE, T0 + 30, "features"), status(STALE, T0 + 30)], now=T0 + 30
    )
    back = alerts.update(
        [status(FRESH, T0 + 60, "features", age=10), status(STALE, T0 + 60)], now=T0 + 60
    )

    assert [(e.pipeline.pipeline, e.holding) for e in outage] == [("features", ("train",))]
    assert still == []
    assert [(str(e.status), e.pipeline.pipeline, e.held_by) for e in back] == [
        ("firing", "train", "features"),
        ("resolved", "features", ""),
    ]


def test_held_alert_that_recovers_with_its_upstream_never_pages() -> None:
    alerts = tracker()
    alerts.update([status(STALE, name="features"), status(STALE)], now=T0)

    events = alerts.update(
        [status(FRESH, T0 + 60, "features", age=10), status(FRESH, T0 + 60, age=10)],
        now=T0 + 60,
    )

    assert kinds(events) == [("resolved", "features")]
    assert alerts.held() == {}


def test_silenced_alert_keeps_its_state_sends_nothing_then_notifies_when_it_ends() -> None:
    silence_ends = T0 + 600
    alerts = tracker(silenced=lambda labels, now: now < silence_ends)

    during = alerts.update([status(STALE)], now=T0)
    still = alerts.update([status(STALE, T0 + 300)], now=T0 + 300)
    after = alerts.update([status(STALE, T0 + 600)], now=T0 + 600)

    assert during == [] and still == []
    assert alerts.firing() == {("train", "last_success"): T0}
    assert kinds(after) == [("firing", "train")]
    assert after[0].firing_since == T0


def test_alert_silenced_all_along_resolves_silently() -> None:
    alerts = tracker(silenced=lambda labels, now: True)
    alerts.update([status(STALE)], now=T0)

    events = alerts.update([status(FRESH, T0 + 60, age=10)], now=T0 + 60)

    assert events == []


def test_restart_with_stored_records_does_not_renotify_and_keeps_clocks() -> None:
    first = tracker(repeat_interval="4h", **{"for": "5m"})
    first.update([status(STALE), status(STALE, name="features")], now=T0)
    first.update([status(STALE, T0 + 300, name="features")], now=T0 + 300)
    stored = first.records()

    restarted = tracker(records=stored, repeat_interval="4h", **{"for": "5m"})
    same = restarted.update([status(STALE, T0 + 400, name="features")], now=T0 + 400)
    reminder = restarted.update(
        [status(STALE, T0 + 300 + 14400, name="features")], now=T0 + 300 + 14400
    )

    assert same == []
    assert kinds(reminder) == [("reminder", "features")]


def test_alert_that_cleared_while_down_resolves_on_the_first_evaluation() -> None:
    alerts = tracker(records=notified_firing("train", ["all"]))

    events = alerts.update([status(FRESH, T0 + 3600, age=10)], now=T0 + 3600)

    assert kinds(events) == [("resolved", "train")]
    assert events[0].receivers == ("all",)


def test_only_changes_are_handed_to_the_store() -> None:
    alerts = tracker()
    alerts.update([status(STALE)], now=T0)
    first = alerts.drain_changes()

    alerts.update([status(STALE, T0 + 30)], now=T0 + 30)
    quiet = alerts.drain_changes()
    alerts.update([status(FRESH, T0 + 60, age=10)], now=T0 + 60)
    gone = alerts.drain_changes()

    assert [r.state for r in first[0]] == ["firing"] and first[1] == []
    assert quiet == ([], [])
    assert gone == ([], [("train", "last_success")])


def test_forgotten_firing_pipeline_is_closed_with_a_reason() -> None:
    alerts = tracker()
    missing = status(FreshnessState.missing)
    alerts.update([missing], now=T0)

    events = alerts.update(
        [], forgotten=[replace(missing, evaluated_at=T0 + 90000)], now=T0 + 90000
    )

    assert kinds(events) == [("resolved", "train")]
    assert "no longer watched" in events[0].reason


def test_checks_of_one_pipeline_are_separate_alerts() -> None:
    alerts = tracker()
    lag = replace(status(STALE), check="lag")

    events = alerts.update([status(STALE), lag], now=T0)

    assert sorted(e.pipeline.key for e in events) == [("train", "lag"), ("train", "last_success")]
    assert all(e.kind is EventKind.firing for e in events)


def test_alert_no_longer_evaluated_is_closed_once() -> None:
    alerts = tracker()
    alerts.update([status(STALE, name="other"), status(STALE, name="features")], now=T0)

    closed = alerts.update([status(STALE, T0 + 30, name="features")], now=T0 + 30)
    later = alerts.update([status(STALE, T0 + 60, name="features")], now=T0 + 60)

    assert kinds(closed) == [("resolved", "other")]
    assert "no longer watched" in closed[0].reason
    assert later == []
    assert set(alerts.firing()) == {("features", "last_success")}


def test_all_clear_of_an_alert_whose_receivers_were_renamed_goes_to_the_current_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    alerts = tracker(records=notified_firing("train", ["old-name"]))

    events = alerts.update([status(FRESH, T0 + 60, age=10)], now=T0 + 60)

    assert kinds(events) == [("resolved", "train")]
    assert events[0].receivers == ("all", "critical-only")
    assert "the receivers of its firing alert are gone" in caplog.text
