from dataclasses import replace

from watchdog.alerts import AlertStatus, AlertTracker
from watchdog.freshness import FreshnessState, PipelineStatus

NOW = 1_800_000_000.0


def status(state: FreshnessState, at: float = NOW, name: str = "train") -> PipelineStatus:
    return PipelineStatus(
        pipeline=name, state=state, max_age=3600, evaluated_at=at, last_success=NOW - 7200
    )


def test_stale_pipeline_fires_once() -> None:
    tracker = AlertTracker()

    first = tracker.update([status(FreshnessState.stale)])
    second = tracker.update([status(FreshnessState.stale, NOW + 30)])

    assert [(e.status, e.pipeline.pipeline) for e in first] == [(AlertStatus.firing, "train")]
    assert second == []


def test_recovery_resolves_once_with_the_firing_start() -> None:
    tracker = AlertTracker()
    tracker.update([status(FreshnessState.stale)])

    resolved = tracker.update([status(FreshnessState.fresh, NOW + 60)])
    again = tracker.update([status(FreshnessState.fresh, NOW + 90)])

    assert [e.status for e in resolved] == [AlertStatus.resolved]
    assert resolved[0].firing_since == NOW
    assert again == []


def test_stale_to_missing_keeps_the_same_alert() -> None:
    tracker = AlertTracker()
    tracker.update([status(FreshnessState.stale)])

    events = tracker.update([status(FreshnessState.missing, NOW + 30)])

    assert events == []
    assert tracker.firing() == {("train", "last_success"): NOW}


def test_unknown_neither_fires_nor_resolves() -> None:
    tracker = AlertTracker()
    tracker.update([status(FreshnessState.stale, name="late")])

    events = tracker.update(
        [status(FreshnessState.unknown, name="late"), status(FreshnessState.unknown, name="new")]
    )
    back = tracker.update([status(FreshnessState.stale, NOW + 60, name="late")])

    assert events == []
    assert back == []
    assert set(tracker.firing()) == {("late", "last_success")}


def test_new_episode_after_recovery_fires_again() -> None:
    tracker = AlertTracker()
    tracker.update([status(FreshnessState.stale)])
    tracker.update([status(FreshnessState.fresh, NOW + 60)])

    events = tracker.update([status(FreshnessState.stale, NOW + 120)])

    assert [e.status for e in events] == [AlertStatus.firing]
    assert events[0].firing_since == NOW + 120


def test_forgotten_firing_pipeline_is_closed_with_a_reason() -> None:
    tracker = AlertTracker()
    missing = status(FreshnessState.missing)
    tracker.update([missing])

    events = tracker.update([], forgotten=[replace(missing, evaluated_at=NOW + 90000)])

    assert [e.status for e in events] == [AlertStatus.resolved]
    assert "no longer watched" in events[0].reason
    assert tracker.firing() == {}


def test_firing_events_come_before_resolved_ones() -> None:
    tracker = AlertTracker()
    tracker.update([status(FreshnessState.stale, name="a")])

    events = tracker.update(
        [status(FreshnessState.fresh, NOW + 30, "a"), status(FreshnessState.stale, NOW + 30, "b")]
    )

    assert [(e.status, e.pipeline.pipeline) for e in events] == [
        (AlertStatus.firing, "b"),
        (AlertStatus.resolved, "a"),
    ]


def test_downstream_alert_is_held_while_its_upstream_is_late_then_released() -> None:
    tracker = AlertTracker({"train": ("features",)})

    outage = tracker.update(
        [status(FreshnessState.stale, name="features"), status(FreshnessState.stale)]
    )
    still = tracker.update(
        [
            status(FreshnessState.stale, NOW + 30, "features"),
            status(FreshnessState.stale, NOW + 30),
        ]
    )
    upstream_back = tracker.update(
        [
            status(FreshnessState.fresh, NOW + 60, "features"),
            status(FreshnessState.stale, NOW + 60),
        ]
    )

    assert [(e.status, e.pipeline.pipeline, e.holding) for e in outage] == [
        (AlertStatus.firing, "features", ("train",))
    ]
    assert still == []
    assert [(e.status, e.pipeline.pipeline, e.held_by) for e in upstream_back] == [
        (AlertStatus.firing, "train", "features"),
        (AlertStatus.resolved, "features", ""),
    ]


def test_held_alert_that_recovers_with_its_upstream_never_pages() -> None:
    tracker = AlertTracker({"train": ("features",)})
    tracker.update([status(FreshnessState.stale, name="features"), status(FreshnessState.stale)])

    events = tracker.update(
        [
            status(FreshnessState.fresh, NOW + 60, "features"),
            status(FreshnessState.fresh, NOW + 60),
        ]
    )

    assert [(e.status, e.pipeline.pipeline) for e in events] == [
        (AlertStatus.resolved, "features")
    ]
    assert tracker.held() == {}


def test_alert_already_firing_keeps_firing_when_upstream_goes_late() -> None:
    tracker = AlertTracker({"train": ("features",)})
    tracker.update([status(FreshnessState.stale)])

    events = tracker.update(
        [
            status(FreshnessState.stale, NOW + 30, "features"),
            status(FreshnessState.stale, NOW + 30),
        ]
    )

    assert [(e.pipeline.pipeline, e.holding) for e in events] == [("features", ())]
    assert ("train", "last_success") in tracker.firing()


def test_checks_of_one_pipeline_are_separate_alerts() -> None:
    tracker = AlertTracker()
    lag = replace(status(FreshnessState.stale), check="lag")

    events = tracker.update([status(FreshnessState.stale), lag])

    assert sorted(e.pipeline.key for e in events) == [("train", "lag"), ("train", "last_success")]
