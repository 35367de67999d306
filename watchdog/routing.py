"""Routing: which receivers an alert goes to.

- A receiver with ``match`` gets the alerts that satisfy every condition it gives
  (pipeline names, a pipeline regex over the whole name, severities, labels).
- A receiver with neither ``match`` nor ``default`` gets every alert.
- A receiver with ``default: true`` gets the alerts no ``match`` receiver took.

An alert is routed when it starts firing; its reminders, escalation and all-clear
go to the same receivers, so the receiver that opened an incident closes it.
"""

import re
from collections.abc import Mapping, Sequence

from watchdog.config import ReceiverConfig, RouteMatch


class Router:
    def __init__(self, receivers: Sequence[ReceiverConfig]) -> None:
        self._receivers = list(receivers)
        self._patterns = {
            r.name: re.compile(r.match.pipeline_regex)
            for r in receivers
            if r.match is not None and r.match.pipeline_regex is not None
        }

    @property
    def names(self) -> list[str]:
        return [receiver.name for receiver in self._receivers]

    def receivers_for(self, labels: Mapping[str, str]) -> list[str]:
        """Receiver names, in config order, for an alert with these labels.

        ``labels`` holds ``pipeline``, ``check`` and ``severity`` beside the alert's
        carried and configured labels.
        """
        matched = [
            r.name
            for r in self._receivers
            if r.match is not None and self._matches(r.name, r.match, labels)
        ]
        chosen = set(matched)
        chosen |= {r.name for r in self._receivers if r.match is None and not r.default}
        if not matched:
            chosen |= {r.name for r in self._receivers if r.default}
        return [name for name in self.names if name in chosen]

    def _matches(self, name: str, match: RouteMatch, labels: Mapping[str, str]) -> bool:
        pipeline = labels.get("pipeline", "")
        if match.pipelines and pipeline not in match.pipelines:
            return False
        pattern = self._patterns.get(name)
        if pattern is not None and not pattern.fullmatch(pipeline):
            return False
        if match.severity and labels.get("severity") not in match.severity:
            return False
        return all(labels.get(key) == value for key, value in match.labels.items())
