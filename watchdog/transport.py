"""What the Prometheus client and the receivers share about HTTP."""

from urllib.parse import urlsplit, urlunsplit

import requests

from watchdog import __version__

USER_AGENT = f"pipeline-watchdog/{__version__}"


def new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    # Proxies from the environment would route loopback or in-cluster traffic elsewhere
    # by surprise; a proxy is not something this daemon needs.
    session.trust_env = False
    return session


def transport_reason(exc: requests.RequestException) -> str:
    """Why a request failed, without its URL: ``str(exc)`` names it, and it may be a secret."""
    if isinstance(exc, requests.Timeout):
        return "timed out"

    text = str(exc)
    for marker, reason in (
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host name not found"),
        ("Temporary failure in name resolution", "host name not found"),
        ("RemoteDisconnected", "connection closed by server"),
        ("Connection reset", "connection reset"),
    ):
        if marker in text:
            return reason

    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return type(exc).__name__


def redact_url(url: str) -> str:
    """The URL without credentials or query string, fit for a log line."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
