"""The PromQL the watchdog runs: one query per check per cycle, never one per pipeline.

Every query ends in ``or vector(time())``: that sample has no pipeline label and is
ignored, but it guarantees the answer carries the evaluation time even when no
pipeline has a series.
"""

import json
from collections.abc import Sequence

from watchdog.config import CheckConfig, Settings

# Label set on the two halves of the Pushgateway query, to tell them apart.
SIGNAL_LABEL = "watchdog_signal"


def promql_string(value: str) -> str:
    """``value`` as a PromQL double-quoted string literal.

    PromQL strings follow Go's escaping rules; JSON's escapes (``\\"``, ``\\\\``,
    ``\\n``, ``\\uXXXX``) are a subset of them.
    https://prometheus.io/docs/prometheus/latest/querying/basics/#string-literals
    """
    return json.dumps(value, ensure_ascii=False)


def _by(settings: Settings) -> str:
    return ", ".join([settings.pipeline_label, *settings.carry_labels])


def _selector(metric: str, label: str, pipelines: Sequence[str]) -> str:
    """``metric``, or the union of its series for the given pipeline names."""
    if not pipelines:
        return metric
    return " or ".join(f"{metric}{{{label}={promql_string(name)}}}" for name in pipelines)


def last_success_query(settings: Settings, pipelines: Sequence[str] = ()) -> str:
    """The newest last-success timestamp of each pipeline (all, or only ``pipelines``).

    Several series of one pipeline (replicas, instances, extra labels) reduce to the
    newest success; carried labels stay in the grouping, and the newest series' values
    win (see ``observations``).
    """
    selector = _selector(settings.metric, settings.pipeline_label, pipelines)
    return f"max by ({_by(settings)}) ({selector}) or vector(time())"


def check_query(check: CheckConfig, settings: Settings) -> str:
    """A custom check's values per pipeline: a timestamp, an age or a lag in seconds."""
    label = settings.pipeline_label
    if check.type == "lag":
        assert check.baseline is not None  # enforced by CheckConfig
        value = (
            f"(max by ({label}) ({check.expr})) - on ({label}) "
            f"(max by ({label}) ({check.baseline}))"
        )
    else:
        # The newest update wins: the largest timestamp, or the smallest age.
        reduce = "max" if check.type == "timestamp" else "min"
        value = f"{reduce} by ({label}) ({check.expr})"
    return f"{value} or vector(time())"


def push_query(settings: Settings) -> str:
    """The Pushgateway's last push and last failed push per pipeline, in one answer.

    https://github.com/prometheus/pushgateway#about-timestamps
    """
    label = settings.pipeline_label
    halves = [
        f'label_replace(max by ({label}) ({metric}), "{SIGNAL_LABEL}", "{signal}", "", "")'
        for metric, signal in (
            ("push_time_seconds", "push"),
            ("push_failure_time_seconds", "push_failure"),
        )
    ]
    return " or ".join([*halves, "vector(time())"])
