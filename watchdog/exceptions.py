"""The project's exceptions.

Everything the watchdog raises on purpose derives from :class:`WatchdogError`:

- :class:`ConfigError`: the configuration cannot be used; carries one line per problem.
- :class:`SourceError`: Prometheus could not answer a query.  Its subclasses tell a
  source that cannot be reached (:class:`SourceUnavailable`) from one that answered
  with an error (:class:`QueryFailed`) or with something that is not a valid answer
  (:class:`InvalidResponse`).
- :class:`DeliveryError`: a notification did not reach its receiver; ``permanent``
  says whether trying again can help.

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


class SourceError(WatchdogError):
    """A query to Prometheus did not produce a usable result."""

    kind = "error"


class SourceUnavailable(SourceError):
    """Prometheus could not be reached, or timed out."""

    kind = "unavailable"


class QueryFailed(SourceError):
    """Prometheus answered with an error status."""

    kind = "query_error"


class InvalidResponse(SourceError):
    """Prometheus answered with something that is not a valid query result."""

    kind = "invalid_response"


class DeliveryError(WatchdogError):
    """A notification was not accepted by its receiver."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        self.reason = reason
        self.permanent = permanent
        super().__init__(reason)
