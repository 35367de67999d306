"""The project's exceptions.

Everything the watchdog raises on purpose derives from :class:`WatchdogError`:

- :class:`ConfigError`: the configuration cannot be used; carries one line per problem.
- :class:`SourceError`: Prometheus could not answer a query.  Its subclasses tell a
  source that cannot be reached (:class:`SourceUnavailable`) from one that answered
  with an error (:class:`QueryFailed`) or with something that is not a valid answer
  (:class:`InvalidResponse`).  Each carries a ``kind``, one of
  :data:`SOURCE_ERROR_KINDS`, fit for a metric label.
- :class:`DeliveryError`: a notification did not reach its receiver; ``permanent``
  says whether trying again can help.
- :class:`StoreError`: the state file (``state.path``) cannot be opened, read or
  written; one line naming the path and the cause.

One more lives beside its subject: :class:`watchdog.silences.ConfigSilenceError`,
raised when the API is asked to expire a silence written in the configuration.

Messages never contain URLs or credentials: webhook URLs are secrets, and a
Prometheus URL may carry a password.
"""


class WatchdogError(Exception):
    """Base class of the project's exceptions."""


class ConfigError(WatchdogError):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


# Every ``kind`` a SourceError can have, for metric labels:
# - unavailable: no connection (refused, DNS, TLS handshake or certificate), or a proxy
#   in front of the server answered 502/503;
# - timeout: no answer within ``prometheus.timeout`` (or a proxy answered 504);
# - unauthorized: HTTP 401 or 403, the credentials are missing or refused;
# - query_error: the server answered an API error (``QueryFailed.error_type`` says which);
# - invalid_response: the answer is not a query result (wrong URL, not Prometheus).
SOURCE_ERROR_KINDS = ("unavailable", "timeout", "unauthorized", "query_error", "invalid_response")


class SourceError(WatchdogError):
    """A query to Prometheus did not produce a usable result."""

    kind = "error"


class SourceUnavailable(SourceError):
    """Prometheus could not be reached (``unavailable``), or did not answer in time
    (``timeout``)."""

    kind = "unavailable"

    def __init__(self, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.timed_out = timed_out
        self.kind = "timeout" if timed_out else "unavailable"


class QueryFailed(SourceError):
    """Prometheus answered with an error status.

    ``error_type`` is the API's ``errorType`` (``bad_data``, ``execution``,
    ``timeout``, ``canceled``, ...), or ``unauthorized`` / ``forbidden`` for HTTP
    401 / 403, whose ``kind`` is ``unauthorized`` rather than ``query_error``.
    """

    kind = "query_error"

    def __init__(
        self, reason: str, *, error_type: str = "unknown", status_code: int | None = None
    ) -> None:
        super().__init__(reason)
        self.error_type = error_type
        self.status_code = status_code
        if error_type in ("unauthorized", "forbidden"):
            self.kind = "unauthorized"


class InvalidResponse(SourceError):
    """Prometheus answered with something that is not a valid query result."""

    kind = "invalid_response"


class DeliveryError(WatchdogError):
    """A notification was not accepted by its receiver."""

    def __init__(self, reason: str, *, permanent: bool, retry_after: float | None = None) -> None:
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after  # seconds the receiver asked us to wait, if it did
        super().__init__(reason)


class StoreError(WatchdogError):
    """The state file cannot be opened, read or written (or is too new to use)."""
