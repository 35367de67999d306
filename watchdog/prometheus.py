"""The one boundary with Prometheus's HTTP API (and compatible backends).

Only instant queries are needed.  Every failure of ``requests`` or of parsing is
translated here into a :class:`~watchdog.exceptions.SourceError`, so the rest of
the watchdog never sees a transport exception (whose text would carry the URL).

API reference: https://prometheus.io/docs/prometheus/latest/querying/api/
"""

import json
import logging
from dataclasses import dataclass
from typing import Any

import requests

from watchdog.exceptions import InvalidResponse, QueryFailed, SourceUnavailable
from watchdog.transport import new_session, transport_reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and its value."""

    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class QueryResult:
    """An instant vector, with the time Prometheus evaluated it at."""

    evaluated_at: float | None  # None only for an empty vector, which carries no time
    samples: list[Sample]
    warnings: list[str]


class PrometheusClient:
    """Runs instant queries against one Prometheus-compatible server."""

    def __init__(
        self, url: str, *, timeout: float, session: requests.Session | None = None
    ) -> None:
        self._query_url = url.rstrip("/") + "/api/v1/query"
        self._timeout = timeout
        self._session = session or new_session()

    def query(self, expr: str, *, at: float | None = None) -> QueryResult:
        """Evaluate ``expr`` as an instant vector, now or at unix time ``at``."""
        form = {"query": expr, "timeout": f"{self._timeout:g}s"}
        if at is not None:
            form["time"] = f"{at:.3f}"

        try:
            # POST keeps long expressions out of URL length limits.
            response = self._session.post(self._query_url, data=form, timeout=self._timeout)
        except requests.Timeout:
            raise SourceUnavailable(f"no answer within {self._timeout:g}s") from None
        except requests.RequestException as exc:
            raise SourceUnavailable(transport_reason(exc)) from None

        return parse_query_response(response.status_code, response.content)

    def close(self) -> None:
        self._session.close()


def parse_query_response(status_code: int, body: bytes) -> QueryResult:
    """Turn an HTTP status and body from ``/api/v1/query`` into a QueryResult.

    Raises QueryFailed for an API error, InvalidResponse for anything that is
    not a vector result.
    """
    document = _decode(status_code, body)

    if document.get("status") != "success":
        error_type = document.get("errorType", "unknown")
        error = str(document.get("error", "no error message"))
        raise QueryFailed(f"HTTP {status_code}, {error_type}: {error}")

    data = document.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        result_type = data.get("resultType") if isinstance(data, dict) else None
        raise InvalidResponse(f"expected a vector result, got {result_type!r}")

    samples, evaluated_at = _samples(data.get("result"))
    warnings = [str(w) for w in document.get("warnings") or []]
    return QueryResult(evaluated_at=evaluated_at, samples=samples, warnings=warnings)


def _decode(status_code: int, body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        raise InvalidResponse(f"HTTP {status_code} with a body that is not JSON") from None
    if not isinstance(document, dict):
        raise InvalidResponse(f"HTTP {status_code} with JSON that is not an object")
    return document


def _samples(result: object) -> tuple[list[Sample], float | None]:
    """Parse the vector; the evaluation time is the one every sample carries."""
    if not isinstance(result, list):
        raise InvalidResponse("vector result is not a list")

    samples = []
    evaluated_at = None
    for item in result:
        try:
            timestamp, value = item["value"]
            labels = {str(k): str(v) for k, v in item["metric"].items()}
            samples.append(Sample(labels=labels, value=float(value)))
            evaluated_at = float(timestamp)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InvalidResponse(f"malformed sample in vector result: {item!r:.200}") from None
    return samples, evaluated_at
