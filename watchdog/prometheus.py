"""The one boundary with Prometheus's HTTP API (and compatible backends).

Only instant queries are needed.  Every failure of ``requests`` or of parsing is
translated here into a :class:`~watchdog.exceptions.SourceError`, so the rest of
the watchdog never sees a transport exception (whose text would carry the URL).
Reasons are one line, name no URL, and have every configured secret blanked out
(in case a server echoes a credential back).

Compatible backends answer the same API with small differences:

- VictoriaMetrics (1.79, measured) puts the HTTP status in ``errorType`` (``"422"``)
  where Prometheus names the error (``bad_data``, ``execution``, ``timeout``, ...);
  its "timeout exceeded" errors are given the error type ``timeout`` here.
- A **partial** answer is one the backend says may lack data because part of it
  failed.  ``QueryResult.partial`` is true when the body has ``"isPartial": true``
  (VictoriaMetrics cluster,
  https://docs.victoriametrics.com/cluster-victoriametrics/#cluster-availability)
  or when a warning contains "partial response", case-insensitively (how Thanos and
  Mimir are expected to say it; Thanos returns partial answers with warnings,
  https://thanos.io/tip/components/query.md/#partial-response, but documents no
  fixed wording).  The warnings themselves are always kept.
- A redirect is not followed: it would carry the credentials to another address.

API reference: https://prometheus.io/docs/prometheus/latest/querying/api/
"""

import base64
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from requests.auth import HTTPBasicAuth

from watchdog.config import PrometheusConfig
from watchdog.exceptions import InvalidResponse, QueryFailed, SourceError, SourceUnavailable
from watchdog.transport import (
    ResponseTooLarge,
    is_timeout,
    new_session,
    post,
    transport_reason,
)

log = logging.getLogger(__name__)

# A 100k-series answer is about 12 MB of JSON; far more means a runaway query.
MAX_ANSWER_BYTES = 256 * 1024 * 1024

# How much of a server's own words goes into a reason: an error message from the
# API (VictoriaMetrics repeats the whole query in it), or the start of a plain-text body.
_ERROR_CHARS = 300
_EXCERPT_CHARS = 120


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
    partial: bool = False  # the backend says data may be missing (module docstring)


class PrometheusClient:
    """Runs instant queries against one Prometheus-compatible server."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        session: requests.Session | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self._query_url = url.rstrip("/") + "/api/v1/query"
        self._timeout = timeout
        self._session = session or new_session()
        # Longest first, so that no part of a secret survives a shorter one inside it.
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    @classmethod
    def from_config(cls, config: PrometheusConfig) -> "PrometheusClient":
        """A client with the configuration's headers, credentials and TLS settings."""
        session = new_session()
        session.headers.update(config.request_headers())
        secrets = config.secret_values()

        if config.basic_auth is not None:
            username, password = config.basic_auth.username, config.basic_auth.resolve_password()
            # As bytes, so that a non-Latin-1 password is sent as UTF-8, not refused.
            session.auth = HTTPBasicAuth(username.encode(), password.encode())
            secrets.append(base64.b64encode(f"{username}:{password}".encode()).decode())

        _apply_tls(session, config)
        return cls(config.url, timeout=config.timeout, session=session, secrets=secrets)

    def query(self, expr: str, *, at: float | None = None) -> QueryResult:
        """Evaluate ``expr`` as an instant vector, now or at unix time ``at``."""
        # Whole milliseconds: Prometheus 2.x refuses fractional seconds such as "0.5s".
        form = {"query": expr, "timeout": f"{max(round(self._timeout * 1000), 1)}ms"}
        if at is not None:
            form["time"] = f"{at:.3f}"

        try:
            # POST keeps long expressions out of URL length limits.
            response = post(
                self._session,
                self._query_url,
                data=form,
                timeout=self._timeout,
                max_bytes=MAX_ANSWER_BYTES,
            )
        except requests.RequestException as exc:
            raise _unavailable(exc, self._timeout) from None

        return parse_query_response(response.status_code, response.content, secrets=self._secrets)

    def close(self) -> None:
        self._session.close()


def _apply_tls(session: requests.Session, config: PrometheusConfig) -> None:
    tls = config.tls
    if tls.cert_file is not None and tls.key_file is not None:
        session.cert = (str(tls.cert_file), str(tls.key_file))

    if tls.ca_file is not None:
        session.verify = str(tls.ca_file)
    if tls.insecure_skip_verify:
        session.verify = False
        # urllib3 would warn on every query; this one line says it once.
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        log.warning(
            "TLS certificate verification is off for Prometheus "
            "(prometheus.tls.insecure_skip_verify)"
        )


def _unavailable(exc: requests.RequestException, timeout: float) -> SourceError:
    if isinstance(exc, ResponseTooLarge):
        return InvalidResponse(str(exc))
    if is_timeout(exc):
        return SourceUnavailable(f"no answer within {timeout:g}s", timed_out=True)
    return SourceUnavailable(transport_reason(exc))


def parse_query_response(
    status_code: int, body: bytes, *, secrets: Sequence[str] = ()
) -> QueryResult:
    """Turn an HTTP status and body from ``/api/v1/query`` into a QueryResult.

    Raises QueryFailed for an API error or a refused authentication,
    InvalidResponse for anything that is not a vector result.  ``secrets`` are
    blanked out of any text of the server's that goes into a reason.
    """
    if status_code in (401, 403):
        raise _unauthorized(status_code, body, secrets)
    document = _decode(status_code, body, secrets)

    if document.get("status") != "success":
        raise _api_error(status_code, document, secrets)

    data = document.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        result_type = data.get("resultType") if isinstance(data, dict) else None
        raise InvalidResponse(f"expected a vector result, got {result_type!r}")

    samples, evaluated_at = _samples(data.get("result"))
    warnings = [str(w) for w in document.get("warnings") or []]
    return QueryResult(
        evaluated_at=evaluated_at,
        samples=samples,
        warnings=warnings,
        partial=_is_partial(document, warnings),
    )


def _unauthorized(status_code: int, body: bytes, secrets: Sequence[str]) -> QueryFailed:
    said = _excerpt(body, secrets)
    if status_code == 401:
        reason = "HTTP 401: credentials missing or refused"
        error_type = "unauthorized"
    else:
        reason = "HTTP 403: these credentials may not query"
        error_type = "forbidden"
    reason += f" (the server said {said!r})" if said else ""
    return QueryFailed(reason, error_type=error_type, status_code=status_code)


def _api_error(status_code: int, document: dict[str, Any], secrets: Sequence[str]) -> QueryFailed:
    error_type = _one_line(str(document.get("errorType", "unknown")), secrets, 50)
    message = str(document.get("error", "no error message"))

    # VictoriaMetrics gives the HTTP status as errorType; its query timeouts say so.
    if error_type.isdigit() and "timeout exceeded" in message:
        error_type = "timeout"
    error = _one_line(message, secrets, _ERROR_CHARS)
    return QueryFailed(
        f"HTTP {status_code}, {error_type}: {error}",
        error_type=error_type,
        status_code=status_code,
    )


def _is_partial(document: dict[str, Any], warnings: list[str]) -> bool:
    if document.get("isPartial") is True:
        return True
    return any("partial response" in warning.lower() for warning in warnings)


def _decode(status_code: int, body: bytes, secrets: Sequence[str]) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        if status_code in (502, 503, 504):
            # A proxy in front, or a Prometheus still starting: the source is not there.
            reason = _not_json(status_code, body, secrets)
            raise SourceUnavailable(reason, timed_out=status_code == 504) from None
        raise InvalidResponse(_not_json(status_code, body, secrets)) from None
    if not isinstance(document, dict):
        raise InvalidResponse(f"HTTP {status_code} with JSON that is not an object")
    return document


def _not_json(status_code: int, body: bytes, secrets: Sequence[str]) -> str:
    reason = f"HTTP {status_code} with a body that is not JSON"
    if status_code == 404:
        return f"{reason}: no query API here (check the path prefix of prometheus.url)"
    if 300 <= status_code < 400:
        return f"{reason}: a redirect (set prometheus.url to the address it points to)"

    said = _excerpt(body, secrets)
    return f"{reason} ({said!r})" if said else reason


def _excerpt(body: bytes, secrets: Sequence[str]) -> str:
    """The first line of a short plain-text answer; nothing for an HTML page."""
    text = body.decode("utf-8", errors="replace").strip()
    if not text or text.startswith("<"):
        return ""
    return _one_line(text.splitlines()[0], secrets)


def _one_line(text: str, secrets: Sequence[str], limit: int = _EXCERPT_CHARS) -> str:
    for secret in secrets:
        text = text.replace(secret, "<secret>")
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


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
        if not math.isfinite(evaluated_at) or evaluated_at <= 0:
            # Every age is measured against this time: a bad one would make all of them lie.
            raise InvalidResponse(f"evaluation time {timestamp!r:.50} is not a time")
    return samples, evaluated_at
