"""Freshness: from the values Prometheus holds to a state per pipeline and check.

The built-in check, ``last_success``, reads each pipeline's last-success timestamp.
With ``now`` the evaluation time Prometheus reports (never the local clock), a
pipeline is

- ``fresh`` while ``now <= deadline``;
- ``stale`` once ``now > deadline`` (strictly after, so exactly at the deadline it
  is still fresh);
- ``missing`` when it is expected (listed by name) but Prometheus has no series for
  it, or when a pipeline seen before has vanished (its last success is kept, so its
  age keeps growing);
- ``never_succeeded`` when its value is 0, negative or NaN: it has not run yet;
- ``invalid`` when its value cannot be a time of success: in the future beyond
  ``future_tolerance`` (often milliseconds sent as seconds), or newer than a failed
  push to the Pushgateway;
- ``unknown`` when the query failed, so nothing can be said.

The deadline is ``last_success + max_age``, or with a schedule the first scheduled
run after the last success plus ``grace``, whichever comes first (see
:mod:`watchdog.rules`).  Custom checks (``timestamp``, ``age``, ``lag``) follow the
same states with their own threshold.
"""

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from watchdog.config import CheckConfig
from watchdog.durations import format_duration, iso_time
from watchdog.prometheus import QueryResult
from watchdog.rules import PipelineRules, RuleBook


class FreshnessState(StrEnum):
    fresh = "fresh"
    stale = "stale"
    missing = "missing"
    never_succeeded = "never_succeeded"
    invalid = "invalid"
    unknown = "unknown"


# States in which a pipeline needs someone's attention.
PROBLEM_STATES = frozenset(
    {
        FreshnessState.stale,
        FreshnessState.missing,
        FreshnessState.never_succeeded,
        FreshnessState.invalid,
    }
)

LAST_SUCCESS = "last_success"

# Key of one status: (pipeline, check).
StatusKey = tuple[str, str]


@dataclass(frozen=True)
class PipelineStatus:
    """What one evaluation found out about one check of one pipeline."""

    pipeline: str
    state: FreshnessState
    evaluated_at: float
    check: str = LAST_SUCCESS
    max_age: float | None = None  # the age threshold; for a lag check, the lag threshold
    threshold: str = ""  # the threshold as people read it
    deadline: float | None = None  # when it becomes (or became) late
    last_success: float | None = None  # for a timestamp or age check: the last update
    lag: float | None = None  # for a lag check: the lag in seconds
    last_seen: float | None = None  # the last evaluation at which it had a value
    value: float | None = None  # the value as Prometheus gave it
    reason: str = ""  # why it is invalid or never succeeded
    timezone: str = "UTC"  # where deadlines are shown in local time
    labels: dict[str, str] = field(default_factory=dict)
    warn_after: float | None = None  # the age past which a fresh pipeline earns a warning

    @property
    def key(self) -> StatusKey:
        return (self.pipeline, self.check)

    @property
    def age(self) -> float | None:
        """Seconds since the last success (or update), as of the evaluation."""
        if self.last_success is None:
            return None
        return self.evaluated_at - self.last_success

    @property
    def overdue(self) -> float | None:
        """Seconds past the deadline; 0 when not late, None without a deadline."""
        if self.deadline is None:
            return None
        return max(self.evaluated_at - self.deadline, 0.0)

    @property
    def is_problem(self) -> bool:
        return self.state in PROBLEM_STATES

    @property
    def severity(self) -> str | None:
        """``critical`` in a problem state, ``warning`` past ``warn_after``, else None."""
        if self.is_problem:
            return "critical"
        age = self.age
        if self.state is FreshnessState.fresh and self.warn_after is not None and age is not None:
            return "warning" if age > self.warn_after else None
        return None


@dataclass(frozen=True)
class Observation:
    """A pipeline's value in one query, with the labels carried from its series."""

    value: float
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PushTimes:
    """The Pushgateway's ``push_time_seconds`` and ``push_failure_time_seconds``."""

    push: float | None = None
    failure: float | None = None

    @property
    def failed_last(self) -> bool:
        """A failed push newer than the last good one: the value may be out of date."""
        if not self.failure:
            return False
        return self.push is None or self.failure > self.push


@dataclass(frozen=True)
class CheckResult:
    """One check's query result, reduced to a value per pipeline."""

    check: str
    evaluated_at: float
    observed: dict[str, Observation]


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one cycle: a status per watched pipeline and check, and who left."""

    results: dict[StatusKey, PipelineStatus]
    forgotten: list[PipelineStatus]

    @property
    def statuses(self) -> dict[str, PipelineStatus]:
        """The built-in check's status per pipeline."""
        return {p: s for (p, check), s in self.results.items() if check == LAST_SUCCESS}

    def __iter__(self) -> Iterator[PipelineStatus]:
        return iter(self.results.values())


def observations(
    result: QueryResult, pipeline_label: str, carry_labels: list[str], newest: bool = True
) -> dict[str, Observation]:
    """One value per pipeline name; with several series, the newest (or youngest) wins."""
    observed: dict[str, Observation] = {}
    for sample in result.samples:
        name = sample.labels.get(pipeline_label)
        if not name:
            continue
        seen = observed.get(name)
        if seen is not None and not _better(sample.value, seen.value, newest):
            continue
        carried = {k: sample.labels[k] for k in carry_labels if sample.labels.get(k)}
        observed[name] = Observation(sample.value, carried)
    return observed


def _better(value: float, than: float, newest: bool) -> bool:
    if math.isnan(than):
        return not math.isnan(value)
    return value > than if newest else value < than


def push_times(
    result: QueryResult, pipeline_label: str, signal_label: str
) -> dict[str, PushTimes]:
    times: dict[str, PushTimes] = {}
    for sample in result.samples:
        name = sample.labels.get(pipeline_label)
        signal = sample.labels.get(signal_label)
        if not name or signal not in ("push", "push_failure"):
            continue
        current = times.get(name, PushTimes())
        if signal == "push":
            times[name] = replace(current, push=sample.value)
        else:
            times[name] = replace(current, failure=sample.value)
    return times


def evaluate(
    results: list[CheckResult],
    book: RuleBook,
    previous: Mapping[StatusKey, PipelineStatus],
    checks: Mapping[str, CheckConfig] | None = None,
    pushes: Mapping[str, PushTimes] | None = None,
) -> Evaluation:
    """Decide every pipeline's state for every check.

    1. The built-in check covers every watched pipeline with a series, every expected
       one, and every one it saw before; a custom check covers the watched pipelines
       its expression returns, and those it saw before.
    2. A pipeline that vanished keeps its last success and is ``missing``.
    3. A discovered pipeline that has had no series for ``forget_after`` is forgotten;
       an expected one never is.
    """
    statuses: dict[StatusKey, PipelineStatus] = {}
    forgotten: list[PipelineStatus] = []
    for result in results:
        config = (checks or {}).get(result.check)
        names = {n for n in result.observed if book.watches(n)}
        # A pipeline seen before stays (missing, ageing) only while still watched; one a
        # reload excluded is dropped, and its alert closes as no longer watched.
        names |= {p for (p, check) in previous if check == result.check and book.watches(p)}
        if result.check == LAST_SUCCESS:
            names |= book.expected

        for name in sorted(names):
            rules = book.for_pipeline(name)
            before = previous.get((name, result.check))
            if config is None:
                status = _judge_last_success(name, result, rules, before, (pushes or {}).get(name))
            else:
                status = _judge_check(name, result, config, rules, before)

            if not rules.expected and _is_forgotten(status, rules):
                forgotten.append(status)
            else:
                statuses[status.key] = status
    return Evaluation(results=statuses, forgotten=forgotten)


def _base(
    name: str,
    check: str,
    result: CheckResult,
    rules: PipelineRules,
    before: PipelineStatus | None,
    **values: Any,
) -> PipelineStatus:
    """The status of a pipeline without a value this cycle (missing, history kept),
    with ``values`` overriding fields: one construction, as this runs per pipeline."""
    observation = result.observed.get(name)
    labels = dict(rules.labels)
    labels.update(observation.labels if observation else (before.labels if before else {}))
    fields: dict[str, Any] = {
        "pipeline": name,
        "check": check,
        "state": FreshnessState.missing,
        "evaluated_at": result.evaluated_at,
        "max_age": rules.max_age,
        "threshold": rules.threshold_text,
        "last_success": before.last_success if before else None,
        "lag": before.lag if before else None,
        "last_seen": before.last_seen if before else None,
        "timezone": rules.schedule.timezone if rules.schedule else "UTC",
        "labels": labels,
        "warn_after": rules.warn_after if check == LAST_SUCCESS else None,
    }
    fields.update(values)
    return PipelineStatus(**fields)


def _judge_last_success(
    name: str,
    result: CheckResult,
    rules: PipelineRules,
    before: PipelineStatus | None,
    push: PushTimes | None,
) -> PipelineStatus:
    observation = result.observed.get(name)
    if observation is None:
        last = before.last_success if before else None
        deadline = rules.deadline(last) if last is not None else None
        return _base(name, LAST_SUCCESS, result, rules, before, deadline=deadline)

    raw = observation.value
    now = result.evaluated_at
    seen = {"last_seen": now, "value": raw}
    problem = _lie(raw * rules.unit_seconds, raw, now, rules.future_tolerance)
    if problem is not None:
        state, reason = problem
        return _base(name, LAST_SUCCESS, result, rules, before, state=state, reason=reason, **seen)

    last_success = raw * rules.unit_seconds
    deadline = rules.deadline(last_success)
    if push is not None and push.failed_last:
        state, reason = FreshnessState.invalid, _push_reason(push)
    else:
        state = FreshnessState.stale if now > deadline else FreshnessState.fresh
        reason = ""
    return _base(
        name,
        LAST_SUCCESS,
        result,
        rules,
        before,
        state=state,
        reason=reason,
        last_success=last_success,
        deadline=deadline,
        **seen,
    )


def _lie(
    seconds: float, raw: float, now: float, tolerance: float
) -> tuple[FreshnessState, str] | None:
    """Why a value cannot be a time of success, or None if it can."""
    if math.isnan(seconds) or seconds <= 0:
        return FreshnessState.never_succeeded, f"no success recorded (value {raw:g})"
    if seconds - now <= tolerance:
        return None

    # A timestamp in milliseconds read as seconds lies tens of thousands of years ahead.
    for unit, factor in (("milliseconds", 1e3), ("microseconds", 1e6), ("nanoseconds", 1e9)):
        if abs(seconds / factor - now) <= 10 * 365 * 86400:
            return FreshnessState.invalid, (
                f"value {raw:.0f} looks like a timestamp in {unit} "
                "(set timestamp_unit if that is intended)"
            )
    if math.isinf(seconds):
        return FreshnessState.invalid, f"value {raw:g} is not a timestamp"
    ahead = format_duration(seconds - now)
    return FreshnessState.invalid, f"last success is {ahead} in the future"


def _push_reason(push: PushTimes) -> str:
    good = f"after the last good push at {iso_time(push.push)}" if push.push else "never pushed"
    return f"the last push to the Pushgateway failed at {iso_time(push.failure)}, {good}"


def _judge_check(
    name: str,
    result: CheckResult,
    check: CheckConfig,
    rules: PipelineRules,
    before: PipelineStatus | None,
) -> PipelineStatus:
    status = replace(
        _base(name, check.name, result, rules, before),
        max_age=check.threshold,
        threshold=format_duration(check.threshold),
    )
    if check.type != "lag" and status.last_success is not None:
        status = replace(status, deadline=status.last_success + check.threshold)
    if name not in result.observed:
        return status

    value = result.observed[name].value
    status = replace(status, last_seen=result.evaluated_at, value=value)
    if not math.isfinite(value):
        return replace(status, state=FreshnessState.invalid, reason=f"value {value:g}")

    if check.type == "lag":
        state = FreshnessState.stale if value > check.threshold else FreshnessState.fresh
        return replace(status, state=state, lag=value)

    updated = value if check.type == "timestamp" else result.evaluated_at - value
    if check.type == "timestamp":
        problem = _lie(updated, value, result.evaluated_at, rules.future_tolerance)
        if problem is not None:
            return replace(status, state=problem[0], reason=problem[1], deadline=None)
    deadline = updated + check.threshold
    state = FreshnessState.stale if result.evaluated_at > deadline else FreshnessState.fresh
    return replace(status, state=state, last_success=updated, deadline=deadline)


def _is_forgotten(status: PipelineStatus, rules: PipelineRules) -> bool:
    """A pipeline no longer expected, without a series for ``forget_after``.

    One that never had a series (it was only expected, and a reload removed it from
    the configuration) has nothing to wait for and is forgotten at once.
    """
    if status.state is not FreshnessState.missing:
        return False
    if status.last_seen is None:
        return True
    return status.evaluated_at - status.last_seen > rules.forget_after


def unknown(
    previous: Mapping[StatusKey, PipelineStatus], book: RuleBook, now: float
) -> dict[StatusKey, PipelineStatus]:
    """Statuses for a cycle whose query failed: every pipeline ``unknown``, history kept.

    ``now`` (the local clock) only dates expected pipelines never evaluated before.
    """
    statuses = {key: replace(s, state=FreshnessState.unknown) for key, s in previous.items()}
    for name in book.expected:
        if (name, LAST_SUCCESS) not in statuses:
            rules = book.for_pipeline(name)
            statuses[(name, LAST_SUCCESS)] = PipelineStatus(
                pipeline=name,
                state=FreshnessState.unknown,
                evaluated_at=now,
                max_age=rules.max_age,
                threshold=rules.threshold_text,
                labels=dict(rules.labels),
            )
    return dict(sorted(statuses.items()))
