"""What the Prometheus client and the receivers share about HTTP."""

import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import requests
from urllib3.exceptions import ReadTimeoutError

from watchdog import __version__

USER_AGENT = f"pipeline-watchdog/{__version__}"

# OpenSSL verification codes whose message names the host we connected to.
# https://github.com/openssl/openssl/blob/openssl-3.0/include/openssl/x509_vfy.h.in
_X509_V_ERR_HOSTNAME_MISMATCH = 62
_X509_V_ERR_IP_ADDRESS_MISMATCH = 64


def new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    # Proxies from the environment would route loopback or in-cluster traffic elsewhere
    # by surprise; a proxy is not something this daemon needs.  This also keeps
    # credentials from ~/.netrc out of requests.
    session.trust_env = False
    return session


class ResponseTooLarge(requests.RequestException):
    """The answer was larger than the caller accepts."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer read whole, within a deadline and a size limit."""

    status_code: int
    content: bytes
    headers: Mapping[str, str]

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


def post(
    session: requests.Session,
    url: str,
    *,
    data: bytes | Mapping[str, str],
    timeout: float,
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """POST and read the answer, taking at most about ``timeout`` seconds in all.

    requests applies its timeout to each socket read, so a server that drips a byte
    a second would hold the caller forever; here the body is read in chunks against
    one deadline (a read already waiting may add up to ``timeout`` once more).
    Redirects are not followed: they would turn a POST into a body-less GET and
    could carry credentials elsewhere.  Raises requests exceptions, including
    ReadTimeout when the deadline passes and ResponseTooLarge.
    """
    deadline = time.monotonic() + timeout
    response = session.post(
        url, data=data, headers=headers, timeout=timeout, allow_redirects=False, stream=True
    )
    try:
        chunks, size = [], 0
        # read1 returns what has arrived instead of waiting for a full chunk, so the
        # deadline is checked between a dripping server's bytes too.
        while chunk := response.raw.read1(65536, decode_content=True):
            size += len(chunk)
            if size > max_bytes:
                raise ResponseTooLarge(f"answer larger than {max_bytes // 1024} KiB")
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise requests.exceptions.ReadTimeout("answer not complete within the timeout")
        return Answer(response.status_code, b"".join(chunks), response.headers)
    finally:
        response.close()


def is_timeout(exc: requests.RequestException) -> bool:
    """Whether the request failed for want of an answer in time.

    requests raises Timeout for a slow connect or a slow first byte, but a
    ConnectionError wrapping urllib3's ReadTimeoutError when the body is slow.
    """
    return isinstance(exc, requests.Timeout) or any(
        isinstance(cause, ReadTimeoutError) for cause in _causes(exc)
    )


def transport_reason(exc: requests.RequestException) -> str:
    """Why a request failed, without its URL: ``str(exc)`` names it, and it may be a secret."""
    if is_timeout(exc):
        return "timed out"
    if isinstance(exc, ResponseTooLarge):
        return str(exc)

    verification = next(
        (c for c in _causes(exc) if isinstance(c, ssl.SSLCertVerificationError)), None
    )
    if verification is not None:
        return _verification_reason(verification)

    text = str(exc)
    for marker, reason in (
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
        ("WRONG_VERSION_NUMBER", "TLS handshake failed: the server does not speak TLS"),
        ("CERTIFICATE_REQUIRED", "TLS handshake failed: the server wants a client certificate"),
        ("UNKNOWN_CA", "TLS handshake failed: the server does not trust the client certificate"),
        ("BAD_CERTIFICATE", "TLS handshake failed: the server refused the client certificate"),
        (
            "EOF occurred in violation of protocol",
            "TLS handshake failed: the server closed the connection "
            "(it may want a client certificate)",
        ),
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


def _verification_reason(error: ssl.SSLCertVerificationError) -> str:
    # The mismatch messages quote the host; the others ("self-signed certificate",
    # "certificate has expired", ...) name no address.
    if error.verify_code in (_X509_V_ERR_HOSTNAME_MISMATCH, _X509_V_ERR_IP_ADDRESS_MISMATCH):
        return "TLS certificate not valid for this host name or address"
    return f"TLS certificate not trusted: {error.verify_message}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and those it wraps: requests and urllib3 nest them in ``args`` and
    ``reason`` as well as in ``__cause__``."""
    pending, seen = [exc], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current

        nested = [*current.args, getattr(current, "reason", None), current.__cause__]
        pending += [item for item in nested if isinstance(item, BaseException)]


def redact_url(url: str) -> str:
    """The URL without credentials or query string, fit for a log line."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
