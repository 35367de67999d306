"""Freshness: from the last-success timestamps Prometheus holds to a state per pipeline.

A pipeline is

- ``fresh`` while ``now - last_success <= max_age``;
- ``stale`` once ``now - last_success > max_age`` (strictly greater, as dbt does);
- ``missing`` when it is expected (listed under ``pipelines``) but Prometheus has no
  series for it, when a pipeline seen before has vanished, or when its value is not
  a usable timestamp (zero, negative, NaN);
- ``unknown`` when the query failed, so nothing can be said.

``now`` is always the evaluation time Prometheus reports, never the local clock,
so a skewed clock on the watchdog's host cannot make pipelines late.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from watchdog.config import Settings
from watchdog.prometheus import QueryResult


class FreshnessState(StrEnum):
    fresh = "fresh"
    stale = "stale"
    missing = "missing"
    unknown = "unknown"


# States in which a pipeline needs someone's attention.
PROBLEM_STATES = frozenset({FreshnessState.stale, FreshnessState.missing})


@dataclass(frozen=True)
class PipelineStatus:
    """What one evaluation found out about one pipeline."""

    pipeline: str
    state: FreshnessState
    max_age: float
    evaluated_at: float
    last_success: float | None = None
    last_seen: float | None = None  # the last evaluation at which it had a series
    value: float | None = None  # the raw value, kept to explain a missing state

    @property
    def age(self) -> float | None:
        """Seconds since the last success, as of the evaluation; None if never seen."""
        if self.last_success is None:
            return None
        return self.evaluated_at - self.last_success

    @property
    def is_problem(self) -> bool:
        return self.state in PROBLEM_STATES


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one cycle: a status per watched pipeline, and who was dropped."""

    statuses: dict[str, PipelineStatus]
    forgotten: list[PipelineStatus]


def last_success_query(metric: str, pipeline_label: str) -> str:
    """The one PromQL query a cycle runs, for every pipeline at once.

    Several series for one pipeline (replicas, instances, extra labels) are reduced to
    the newest success.  ``or vector(time())`` guarantees at least one sample, so the
    evaluation time is known even when no pipeline has a series; that sample has no
    pipeline label and is ignored.
    """
    return f"max by ({pipeline_label}) ({metric}) or vector(time())"


def observations(result: QueryResult, pipeline_label: str) -> dict[str, float]:
    """The last-success value per pipeline name in a query result."""
    observed = {}
    for sample in result.samples:
        name = sample.labels.get(pipeline_label)
        if name:
            observed[name] = sample.value
    return observed


def evaluate(
    observed: Mapping[str, float],
    evaluated_at: float,
    settings: Settings,
    previous: Mapping[str, PipelineStatus],
) -> Evaluation:
    """Decide each pipeline's state as of ``evaluated_at``.

    1. Every pipeline with a series, every expected one, and every one seen before is
       evaluated.
    2. A pipeline seen before that has vanished keeps its last success (its age keeps
       growing) and is ``missing``.
    3. A discovered pipeline that has had no series for ``forget_after`` is forgotten;
       an expected one never is.
    """
    expected = {p.name for p in settings.pipelines}
    names = sorted(set(observed) | expected | set(previous))

    statuses = {}
    forgotten = []
    for name in names:
        status = _evaluate_one(name, observed, evaluated_at, settings, previous.get(name))
        if name not in expected and _is_forgotten(status, settings):
            forgotten.append(status)
        else:
            statuses[name] = status
    return Evaluation(statuses=statuses, forgotten=forgotten)


def _evaluate_one(
    name: str,
    observed: Mapping[str, float],
    evaluated_at: float,
    settings: Settings,
    previous: PipelineStatus | None,
) -> PipelineStatus:
    max_age = max_age_for(settings, name)
    base = PipelineStatus(
        pipeline=name,
        state=FreshnessState.missing,
        max_age=max_age,
        evaluated_at=evaluated_at,
        last_success=previous.last_success if previous else None,
        last_seen=previous.last_seen if previous else None,
    )

    if name not in observed:
        return base

    value = observed[name]
    seen = replace(base, last_seen=evaluated_at, value=value)
    if not math.isfinite(value) or value <= 0:
        return seen

    age = evaluated_at - value
    state = FreshnessState.stale if age > max_age else FreshnessState.fresh
    return replace(seen, state=state, last_success=value)


def _is_forgotten(status: PipelineStatus, settings: Settings) -> bool:
    if status.state is not FreshnessState.missing or status.last_seen is None:
        return False
    return status.evaluated_at - status.last_seen > forget_after_for(settings, status.pipeline)


def unknown(
    previous: Mapping[str, PipelineStatus], settings: Settings, now: float
) -> dict[str, PipelineStatus]:
    """Statuses for a cycle whose query failed: every pipeline ``unknown``, history kept.

    ``now`` (the local clock) only dates expected pipelines never evaluated before.
    """
    statuses = {name: replace(s, state=FreshnessState.unknown) for name, s in previous.items()}
    for pipeline in settings.pipelines:
        if pipeline.name not in statuses:
            statuses[pipeline.name] = PipelineStatus(
                pipeline=pipeline.name,
                state=FreshnessState.unknown,
                max_age=max_age_for(settings, pipeline.name),
                evaluated_at=now,
            )
    return dict(sorted(statuses.items()))


def max_age_for(settings: Settings, name: str) -> float:
    override = settings.pipeline(name)
    if override is not None and override.max_age is not None:
        return override.max_age
    return settings.defaults.max_age


def forget_after_for(settings: Settings, name: str) -> float:
    override = settings.pipeline(name)
    if override is not None and override.forget_after is not None:
        return override.forget_after
    return settings.defaults.forget_after
