"""The HTTP API under ``/api/v1``: the alerts, and the silences behind a bearer token.

- ``GET /api/v1/alerts``: ``{"alerts": [...]}``; read-only, open like ``/metrics``.
- ``GET /api/v1/silences``: ``{"silences": [...]}``, active and pending first, then
  those expired within the last day.
- ``POST /api/v1/silences``: create one from ``{"matchers", "ends_at", "starts_at"?,
  "comment", "created_by"?}`` (times in RFC 3339); 201 with the silence.
- ``GET`` / ``DELETE /api/v1/silences/<id>``: one silence; ``DELETE`` expires it
  (409 for a silence from the configuration).

The silences endpoints need ``Authorization: Bearer <api.token>``; without a
configured token they are disabled (403).  Every answer is JSON; an error is
``{"error": "<one line>"}`` naming the field at fault.  The token never appears
in an answer or a log line.
"""

import hmac
import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from http import HTTPStatus
from typing import Any, TypeVar

from watchdog.durations import iso_time
from watchdog.exceptions import StoreError
from watchdog.server import StartResponse, WSGIApp
from watchdog.silences import ConfigSilenceError, Silence, SilenceBook, parse_matchers

log = logging.getLogger(__name__)

ALERTS = "/api/v1/alerts"
SILENCES = "/api/v1/silences"

MAX_BODY = 64 * 1024
# A larger body is read and dropped up to this size before the 413, so the client
# reads the answer instead of a connection reset; beyond it the connection just closes.
_DRAIN_LIMIT = 1024 * 1024

_DISABLED = "the silences API is disabled: set api.token or api.token_file"
_CREATE_FIELDS = frozenset({"matchers", "ends_at", "starts_at", "comment", "created_by"})
_TIME_FORMAT = "an RFC 3339 time with a zone, such as 2026-12-04T03:00:00Z"

Alerts = Callable[[], list[dict[str, Any]]]
_T = TypeVar("_T")


class _HttpError(Exception):
    """Ends a request with this status and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


def make_api(book: SilenceBook, token: str | None, alerts: Alerts) -> WSGIApp:
    """The API as a WSGI app, for :func:`watchdog.server.make_app`'s ``api``.

    ``token`` guards the silences endpoints; None (or empty) disables them.
    ``alerts`` gives the current alerts, each already a JSON-ready dict.
    """
    # An empty token would let "Bearer " in: treat it as no token at all.
    secret = token.encode() if token else None

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            status, body = _route(environ, book, secret, alerts)
        except _HttpError as exc:
            if exc.status == 401:
                log.warning(
                    "silences API request from %s refused: %s",
                    environ.get("REMOTE_ADDR", "?"),
                    exc.message,
                )
            return _json(start_response, exc.status, {"error": exc.message}, exc.headers)
        except StoreError as exc:
            # The change was not saved, and so not made: say so, in one line.
            log.error("API request %s failed: %s", environ.get("REQUEST_METHOD"), exc)
            return _json(start_response, 500, {"error": f"the state store failed: {exc}"})
        except Exception:
            log.exception("API request %s failed", environ.get("REQUEST_METHOD"))
            return _json(start_response, 500, {"error": "internal error (see the log)"})
        return _json(start_response, status, body)

    return app


def _route(
    environ: dict[str, Any], book: SilenceBook, secret: bytes | None, alerts: Alerts
) -> tuple[int, object]:
    path = environ.get("PATH_INFO", "")
    method = environ.get("REQUEST_METHOD", "GET")

    if path == ALERTS:
        _allow(method, "GET")
        return 200, {"alerts": alerts()}

    if path == SILENCES:
        _allow(method, "GET", "POST")
        _authorize(environ, secret)
        if method == "GET":
            now = book.now()
            return 200, {"silences": [silence_json(s, now) for s in book.list(now)]}
        silence = _create(book, _read_json(environ))
        return 201, silence_json(silence, book.now())

    silence_id = path.removeprefix(SILENCES + "/")
    if silence_id != path and silence_id and "/" not in silence_id:
        _allow(method, "GET", "DELETE")
        _authorize(environ, secret)
        return 200, silence_json(_one(book, silence_id, expire=method == "DELETE"), book.now())

    raise _HttpError(404, "not found")


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise _HttpError(405, f"method {method} not allowed", [("Allow", ", ".join(allowed))])


def _authorize(environ: dict[str, Any], secret: bytes | None) -> None:
    if secret is None:
        raise _HttpError(403, _DISABLED)

    # https://www.rfc-editor.org/rfc/rfc6750#section-2.1; the scheme is case-insensitive.
    scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    # WSGI hands headers over as latin-1 text: encoding back gives the bytes sent.
    presented = given.strip().encode("latin-1", "replace")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented, secret):
        raise _HttpError(401, "missing or wrong bearer token", [("WWW-Authenticate", "Bearer")])


def _one(book: SilenceBook, silence_id: str, *, expire: bool) -> Silence:
    try:
        if expire:
            book.expire(silence_id)
    except ConfigSilenceError as exc:
        raise _HttpError(409, str(exc)) from None

    # Silences are never removed while listed, so an expired one is still there.
    silence = book.get(silence_id)
    if silence is None:
        raise _HttpError(404, f"no silence {silence_id}")
    return silence


def _read_json(environ: dict[str, Any]) -> object:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if length < 0:
        raise _HttpError(400, "Content-Length: must be a whole number of bytes")
    if length > MAX_BODY:
        _drain(environ["wsgi.input"], min(length, _DRAIN_LIMIT))
        raise _HttpError(413, f"body: larger than {MAX_BODY // 1024} KiB")

    raw = environ["wsgi.input"].read(length)
    if not raw.strip():
        raise _HttpError(400, "body: empty; expected a JSON object")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError says where ("line 1 column 9"), never what the body holds.
        raise _HttpError(400, f"body: invalid JSON: {exc}") from None


def _drain(stream: Any, length: int) -> None:
    while length > 0:
        chunk = stream.read(min(length, 65536))
        if not chunk:
            return
        length -= len(chunk)


def _create(book: SilenceBook, data: object) -> Silence:
    if not isinstance(data, dict):
        raise _HttpError(400, "body: must be a JSON object")
    unknown = sorted(set(data) - _CREATE_FIELDS)
    if unknown:
        raise _HttpError(400, f"{unknown[0]}: unknown field")

    try:
        if "matchers" not in data:
            raise ValueError("matchers: required")
        return book.create(
            parse_matchers(data["matchers"]),
            ends_at=_required(_time(data, "ends_at"), "ends_at"),
            comment=_required(_text(data, "comment"), "comment"),
            created_by=_text(data, "created_by") or "api",
            starts_at=_time(data, "starts_at"),
        )
    except ValueError as exc:
        raise _HttpError(400, str(exc)) from None


def _required(value: _T | None, name: str) -> _T:
    if value is None:
        raise ValueError(f"{name}: required")
    return value


def _text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name}: must be a string")
    if value is not None and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # JSON can carry lone surrogates ("\ud800"); they are not text to store.
            raise ValueError(f"{name}: not valid Unicode text") from None
    return value


def _time(data: dict[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name}: must be {_TIME_FORMAT}")
    try:
        moment = datetime.fromisoformat(value)
        seconds = moment.timestamp()
    except (ValueError, OverflowError):
        raise ValueError(f"{name}: must be {_TIME_FORMAT}") from None
    if moment.tzinfo is None:
        raise ValueError(f"{name}: must be {_TIME_FORMAT} (the zone is missing)")
    return seconds


def silence_json(silence: Silence, now: float) -> dict[str, Any]:
    """A silence as the API shows it, times in RFC 3339 UTC and its state at ``now``."""
    return {
        "id": silence.id,
        "matchers": [m.to_dict() for m in silence.matchers],
        "starts_at": iso_time(silence.starts_at),
        "ends_at": iso_time(silence.ends_at),
        "comment": silence.comment,
        "created_by": silence.created_by,
        "created_at": iso_time(silence.created_at),
        "source": silence.source,
        "state": silence.state(now),
    }


def _json(
    start_response: StartResponse,
    status: int,
    body: object,
    headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    data = (json.dumps(body, allow_nan=False, default=str) + "\n").encode()
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            # Silences change under the client: a cached list would mislead.
            ("Cache-Control", "no-store"),
            *headers,
        ],
    )
    return [data]


def reload_endpoint(
    environ: dict[str, Any],
    start_response: StartResponse,
    token: str | None,
    reload: Callable[[], tuple[bool, list[str]]],
) -> Iterable[bytes]:
    """``POST /-/reload``: reload the configuration file; the API token guards it.

    200 when the new configuration runs, 400 with its problems when it was
    rejected (the old one keeps running).
    """
    try:
        _allow(environ.get("REQUEST_METHOD", "GET"), "POST")
        if not token:
            raise _HttpError(403, "reload over HTTP is disabled: set api.token or api.token_file")
        _authorize(environ, token.encode())
    except _HttpError as exc:
        return _json(start_response, exc.status, {"error": exc.message}, exc.headers)

    ok, problems = reload()
    if not ok:
        return _json(
            start_response, 400, {"error": "configuration rejected", "problems": problems}
        )
    return _json(start_response, 200, {"status": "reloaded"})
