"""Pipelines that push to a real Pushgateway, scraped by a real Prometheus.

Pushed series never go stale in Prometheus, so ages must come from the values.
The Pushgateway is also the source of the custom-check metrics and of the
dependency scenario here, since any gauge can be pushed to it.
"""

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.receiver import RecordingReceiver
from testbed.servers import PrometheusServer, PushgatewayServer, ScrapeTarget, wait_until
from watchdog.config import Settings
from watchdog.freshness import FreshnessState
from watchdog.service import Watchdog

GAUGE = "# TYPE {metric} gauge\n"


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushgatewayServer]:
    with PushgatewayServer(tmp_path_factory.mktemp("pushgateway")) as server:
        yield server


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, pushgateway: PushgatewayServer
) -> Iterator[PrometheusServer]:
    target = ScrapeTarget(pushgateway.target, job="pushgateway", honor_labels=True)
    with PrometheusServer(tmp_path_factory.mktemp("prometheus"), [target]) as server:
        server.wait_for_targets_up()
        yield server


def push(
    pushgateway: PushgatewayServer,
    pipeline: str,
    values: dict[str, float],
    labels: str = "",
    group: str | None = None,
) -> None:
    """Push gauges for one pipeline, in a group of its own unless ``group`` is given."""
    lines = []
    for metric, value in values.items():
        lines.append(
            GAUGE.format(metric=metric) + f'{metric}{{pipeline="{pipeline}"{labels}}} {value!r}'
        )
    pushgateway.push(group or "ml", "\n".join(lines), {"pipeline": pipeline})


def seen(prometheus: PrometheusServer, query: str, count: int = 1) -> Callable[[], bool]:
    return lambda: len(prometheus.query(query)) >= count


def settings_for(prometheus: PrometheusServer, **values: Any) -> Settings:
    config: dict[str, Any] = {"prometheus": {"url": prometheus.url}, "defaults": {"max_age": "1h"}}
    config.update(values)
    return Settings(**config)


def test_pushed_values_are_judged_by_value_with_push_signals_and_carried_labels(
    prometheus: PrometheusServer, pushgateway: PushgatewayServer
) -> None:
    now = time.time()
    metric = "ml_pipeline_last_success_timestamp"
    push(pushgateway, "pg-fresh", {metric: now - 60}, ',team="vision"')
    push(pushgateway, "pg-old", {metric: now - 7200}, ',team="nlp"')
    push(pushgateway, "pg-zero", {metric: 0})
    push(pushgateway, "pg-millis", {metric: now * 1000})
    push(pushgateway, "pg-failing", {metric: now - 60})
    with pytest.raises(Exception, match="400"):
        # A type conflict makes the Pushgateway reject the push and record its time.
        pushgateway.push("ml", f"# TYPE {metric} counter\n{metric} 1", {"pipeline": "pg-failing"})
    wait_until(seen(prometheus, f'{metric}{{pipeline=~"pg-.*"}}', 5), 15, what="pushed series")
    wait_until(seen(prometheus, "push_failure_time_seconds > 0"), 15, what="push failure")
    watchdog = Watchdog(settings_for(prometheus, pushgateway_signals=True, carry_labels=["team"]))

    statuses = watchdog.run_cycle().statuses

    assert statuses["pg-fresh"].state is FreshnessState.fresh
    assert statuses["pg-fresh"].labels == {"team": "vision"}
    assert statuses["pg-old"].state is FreshnessState.stale
    assert statuses["pg-old"].age == pytest.approx(7200, abs=30)
    assert statuses["pg-old"].labels == {"team": "nlp"}
    assert statuses["pg-zero"].state is FreshnessState.never_succeeded
    assert statuses["pg-millis"].state is FreshnessState.invalid
    assert "milliseconds" in statuses["pg-millis"].reason
    assert statuses["pg-failing"].state is FreshnessState.invalid
    assert "the last push to the Pushgateway failed" in statuses["pg-failing"].reason


def test_pipeline_dropped_from_a_replaced_group_goes_missing(
    prometheus: PrometheusServer, pushgateway: PushgatewayServer
) -> None:
    metric = "ml_pipeline_last_success_timestamp"
    now = time.time()
    both = GAUGE.format(metric=metric) + (
        f'{metric}{{pipeline="grp-a"}} {now}\n{metric}{{pipeline="grp-b"}} {now}'
    )
    pushgateway.push("batch", both, {"instance": "grp"})
    wait_until(seen(prometheus, f'{metric}{{pipeline=~"grp-.*"}}', 2), 15, what="group")
    watchdog = Watchdog(settings_for(prometheus))
    first = watchdog.run_cycle().statuses

    pushgateway.push(
        "batch",
        GAUGE.format(metric=metric) + f'{metric}{{pipeline="grp-a"}} {now}',
        {"instance": "grp"},
    )
    wait_until(
        lambda: not prometheus.query(f'{metric}{{pipeline="grp-b"}}'), 15, what="grp-b gone"
    )
    later = watchdog.run_cycle().statuses

    assert first["grp-b"].state is FreshnessState.fresh
    assert later["grp-b"].state is FreshnessState.missing
    assert later["grp-b"].last_success == pytest.approx(now)
    assert later["grp-a"].state is FreshnessState.fresh


def test_custom_checks_of_each_type_evaluate_in_the_same_cycle(
    prometheus: PrometheusServer, pushgateway: PushgatewayServer
) -> None:
    now = time.time()
    push(
        pushgateway,
        "fs-ok",
        {"feature_table_updated": now - 60, "source_arrived": now - 600, "model_age_seconds": 100},
    )
    push(
        pushgateway,
        "fs-late",
        {
            "feature_table_updated": now - 7200,
            "source_arrived": now - 60,
            "model_age_seconds": 99999,
        },
    )
    wait_until(seen(prometheus, 'model_age_seconds{pipeline=~"fs-.*"}', 2), 15, what="checks")
    checks = [
        {"name": "table", "type": "timestamp", "expr": "feature_table_updated", "threshold": "1h"},
        {"name": "model", "type": "age", "expr": "model_age_seconds", "threshold": "1d"},
        {
            "name": "lag",
            "type": "lag",
            "expr": "source_arrived",
            "baseline": "feature_table_updated",
            "threshold": "1h",
        },
    ]
    watchdog = Watchdog(settings_for(prometheus, checks=checks))

    results = watchdog.run_cycle().results

    assert results[("fs-ok", "table")].state is FreshnessState.fresh
    assert results[("fs-late", "table")].state is FreshnessState.stale
    assert results[("fs-ok", "model")].state is FreshnessState.fresh
    assert results[("fs-late", "model")].state is FreshnessState.stale
    assert results[("fs-late", "model")].age == pytest.approx(99999)
    assert results[("fs-ok", "lag")].state is FreshnessState.fresh
    assert results[("fs-late", "lag")].state is FreshnessState.stale
    assert results[("fs-late", "lag")].lag == pytest.approx(7140, abs=1)
    registry = watchdog.metrics.registry
    assert (
        registry.get_sample_value(
            "ml_watchdog_check_stale", {"pipeline": "fs-late", "check": "lag"}
        )
        == 1
    )


def test_broken_check_expression_makes_only_that_check_unknown(
    prometheus: PrometheusServer, pushgateway: PushgatewayServer
) -> None:
    push(pushgateway, "bc-pipe", {"ml_pipeline_last_success_timestamp": time.time()})
    wait_until(seen(prometheus, 'ml_pipeline_last_success_timestamp{pipeline="bc-pipe"}'), 15)
    checks = [{"name": "broken", "type": "age", "expr": "rate(", "threshold": "1h"}]
    watchdog = Watchdog(settings_for(prometheus, checks=checks))

    outcome = watchdog.run_cycle()

    assert outcome.ok
    assert outcome.statuses["bc-pipe"].state is FreshnessState.fresh
    errors = watchdog.metrics.registry.get_sample_value(
        "ml_watchdog_query_errors_total", {"kind": "query_error"}
    )
    assert errors == 1


def test_upstream_outage_pages_once_for_the_root_cause(
    prometheus: PrometheusServer, pushgateway: PushgatewayServer, tmp_path: Path
) -> None:
    metric = "ml_pipeline_last_success_timestamp"
    old = time.time() - 7200
    for name in ("dep-features", "dep-train", "dep-serve"):
        push(pushgateway, name, {metric: old})
    wait_until(seen(prometheus, f'{metric}{{pipeline=~"dep-.*"}}', 3), 15, what="dep pipelines")
    pipelines = [
        {"name": "dep-features"},
        {"name": "dep-train", "depends_on": ["dep-features"]},
        {"name": "dep-serve", "depends_on": ["dep-features"]},
    ]
    with RecordingReceiver() as receiver:
        receivers = [{"name": "hook", "type": "webhook", "url": receiver.url("/hook")}]
        watchdog = Watchdog(
            settings_for(
                prometheus,
                pipelines=pipelines,
                receivers=receivers,
                discovery={"include": ["dep-.*"]},
            )
        )
        watchdog.run_cycle()
        watchdog.run_cycle()
        during = [r.json() for r in receiver.requests()]

        push(pushgateway, "dep-features", {metric: time.time()})
        wait_until(
            lambda: (
                prometheus.query(f'{metric}{{pipeline="dep-features"}}')[0]["value"][1]
                != repr(old)
            ),
            15,
        )
        watchdog.run_cycle()
        after = [r.json() for r in receiver.requests()][len(during) :]

    assert len(during) == 1
    assert [a["pipeline"] for a in during[0]["alerts"]] == ["dep-features"]
    assert during[0]["alerts"][0]["holding"] == ["dep-serve", "dep-train"]
    assert "holding back alerts of downstream dep-serve, dep-train" in json.dumps(during)
    by_status = {body["status"]: body["alerts"] for body in after}
    assert sorted(a["pipeline"] for a in by_status["firing"]) == ["dep-serve", "dep-train"]
    assert {a["held_by"] for a in by_status["firing"]} == {"dep-features"}
    assert [a["pipeline"] for a in by_status["resolved"]] == ["dep-features"]
