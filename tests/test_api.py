"""The HTTP API, through a real server on 127.0.0.1: routes, status codes, the bearer
token, and a silence's round trip."""

import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

from watchdog.api import make_api
from watchdog.config import SilenceConfig
from watchdog.exceptions import StoreError
from watchdog.server import HttpServer, WSGIApp, make_app
from watchdog.silences import SilenceBook
from watchdog.store import SilenceRecord

TOKEN = "s3cret-token-1234"
WRONG = "guess-token-5678"
NOW_ISO = "2027-01-15T08:00:00Z"  # the FakeClock's start
IN_AN_HOUR = "2027-01-15T09:00:00Z"
DISABLED = "the silences API is disabled: set api.token or api.token_file"
ALERTS = [{"pipeline": "train", "check": "last_success", "status": "firing"}]


class FakeStore:
    """The state store's silence methods, in memory."""

    def __init__(self) -> None:
        self.records: dict[str, SilenceRecord] = {}
        self.broken = False

    def load_silences(self) -> list[SilenceRecord]:
        return [_copy(r) for r in self.records.values()]

    def save_silence(self, silence: SilenceRecord) -> None:
        if self.broken:
            raise StoreError("cannot write state.path '/tmp/state.db': disk full")
        self.records[silence.id] = _copy(silence)

    def delete_silence(self, silence_id: str) -> bool:
        return self.records.pop(silence_id, None) is not None


def _copy(record: SilenceRecord) -> SilenceRecord:
    return replace(record, matchers=[dict(m) for m in record.matchers])


@dataclass
class Site:
    """A running server and what it serves."""

    url: str
    book: SilenceBook
    store: FakeStore
    session: requests.Session

    def call(
        self, method: str, path: str, token: str | None = TOKEN, **kwargs: Any
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.session.request(method, self.url + path, headers=headers, timeout=5, **kwargs)

    def create(self, **changes: Any) -> requests.Response:
        body = {
            "matchers": [{"name": "pipeline", "value": "train"}],
            "ends_at": IN_AN_HOUR,
            "comment": "retraining the model",
            "created_by": "alice",
        }
        body.update(changes)
        return self.call("POST", "/api/v1/silences", json=body)


class Switch:
    """Serves whichever app a test plugs in, so one server lasts the whole module
    (stopping a server waits up to half a second)."""

    def __init__(self) -> None:
        self.app: WSGIApp | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        assert self.app is not None, "no app plugged in"
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Switch, str]]:
    switch = Switch()
    running = HttpServer("127.0.0.1", 0, switch)
    running.start()
    try:
        yield switch, f"http://127.0.0.1:{running.port}"
    finally:
        running.stop()


@contextmanager
def serve(server: tuple[Switch, str], app: WSGIApp) -> Iterator[requests.Session]:
    switch, _ = server
    switch.app = app
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: 127.0.0.1 only
    try:
        yield session
    finally:
        session.close()
        switch.app = None


def always_ok() -> tuple[bool, str]:
    return True, "ok"


@contextmanager
def start_site(
    server: tuple[Switch, str], clock: Any, token: str | None, alerts: Any = None
) -> Iterator[Site]:
    store = FakeStore()
    book = SilenceBook(store, clock)
    book.load([config_silence()])
    api = make_api(book, token, alerts or (lambda: ALERTS))
    with serve(server, make_app(CollectorRegistry(), always_ok, always_ok, api=api)) as session:
        yield Site(server[1], book, store, session)


def config_silence() -> SilenceConfig:
    return SilenceConfig.model_validate(
        {
            "matchers": [{"name": "team", "value": "ml"}],
            "ends_at": "2027-01-16T00:00:00Z",
            "comment": "from the config",
        }
    )


@pytest.fixture
def site(server: tuple[Switch, str], clock) -> Iterator[Site]:
    with start_site(server, clock, TOKEN) as running:
        yield running


@pytest.fixture
def disabled_site(server: tuple[Switch, str], clock) -> Iterator[Site]:
    with start_site(server, clock, None) as running:
        yield running


def error(response: requests.Response) -> str:
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    return str(body["error"])


def config_id(site: Site) -> str:
    return next(s.id for s in site.book.list() if s.source == "config")


# Alerts


def test_alerts_are_listed_without_a_token(site: Site) -> None:
    response = site.call("GET", "/api/v1/alerts", token=None)

    assert response.status_code == 200
    assert response.json() == {"alerts": ALERTS}


def test_alerts_are_read_only(site: Site) -> None:
    response = site.call("POST", "/api/v1/alerts", json={})

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"
    assert error(response) == "method POST not allowed"


# Authorization


@pytest.mark.parametrize(
    "authorization",
    [None, f"Bearer {WRONG}", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"],
)
def test_silences_refuse_a_missing_or_wrong_token_with_401(
    site: Site, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    response = site.call("GET", "/api/v1/silences", token=None, headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert error(response) == "missing or wrong bearer token"
    assert TOKEN not in response.text and WRONG not in response.text


def test_the_bearer_scheme_is_case_insensitive(site: Site) -> None:
    response = site.call(
        "GET", "/api/v1/silences", token=None, headers={"Authorization": f"bearer {TOKEN}"}
    )

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/silences"),
        ("POST", "/api/v1/silences"),
        ("DELETE", "/api/v1/silences/anything"),
    ],
)
def test_silences_answer_403_when_no_token_is_configured(
    disabled_site: Site, method: str, path: str
) -> None:
    response = disabled_site.call(method, path, token=TOKEN, json={})

    assert response.status_code == 403
    assert error(response) == DISABLED


def test_an_empty_configured_token_disables_the_silences_api(
    server: tuple[Switch, str], clock
) -> None:
    with start_site(server, clock, "") as site:
        response = site.call("GET", "/api/v1/silences", token="")

        assert response.status_code == 403


# Silences: the round trip


def test_create_list_and_expire_a_silence(site: Site, clock) -> None:
    created = site.create()
    listed = site.call("GET", "/api/v1/silences")
    clock.advance(60)
    deleted = site.call("DELETE", f"/api/v1/silences/{created.json()['id']}")
    after = site.call("GET", "/api/v1/silences")

    assert created.status_code == 201
    silence = created.json()
    assert silence == {
        "id": silence["id"],
        "matchers": [{"name": "pipeline", "value": "train", "is_regex": False, "is_equal": True}],
        "starts_at": NOW_ISO,
        "ends_at": IN_AN_HOUR,
        "comment": "retraining the model",
        "created_by": "alice",
        "created_at": NOW_ISO,
        "source": "api",
        "state": "active",
    }
    assert listed.status_code == 200
    assert [s["id"] for s in listed.json()["silences"]] == [silence["id"], config_id(site)]
    assert deleted.status_code == 200
    assert deleted.json() == {**silence, "ends_at": "2027-01-15T08:01:00Z", "state": "expired"}
    assert [(s["id"], s["state"]) for s in after.json()["silences"]] == [
        (config_id(site), "active"),
        (silence["id"], "expired"),
    ]
    assert site.store.records[silence["id"]].ends_at == clock()


def test_a_created_silence_silences_matching_alerts(site: Site, clock) -> None:
    site.create(
        matchers=[{"name": "pipeline", "value": "nightly-.*", "is_regex": True}],
        starts_at="2027-01-15T09:00:00+01:00",
        created_by=None,
    )

    found = site.book.silencing({"pipeline": "nightly-train", "check": "last_success"}, clock())

    assert found is not None
    assert (found.created_by, found.starts_at) == ("api", clock())


def test_one_silence_can_be_read_by_id(site: Site) -> None:
    created = site.create().json()

    response = site.call("GET", f"/api/v1/silences/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created


def test_deleting_an_unknown_silence_is_404(site: Site) -> None:
    response = site.call("DELETE", "/api/v1/silences/no-such-id")

    assert response.status_code == 404
    assert error(response) == "no silence no-such-id"


def test_deleting_a_config_silence_is_409(site: Site) -> None:
    silence_id = config_id(site)

    response = site.call("DELETE", f"/api/v1/silences/{silence_id}")

    assert response.status_code == 409
    assert error(response) == f"silence {silence_id} comes from the configuration: remove it there"
    assert site.book.list()[0].state(site.book.now()) == "active"


# Silences: bad requests


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ends_at": None}, "ends_at: required"),
        (
            {"ends_at": "tomorrow"},
            "ends_at: must be an RFC 3339 time with a zone, such as 2026-12-04T03:00:00Z",
        ),
        (
            {"ends_at": "2027-01-15T09:00:00"},
            "ends_at: must be an RFC 3339 time with a zone, such as 2026-12-04T03:00:00Z "
            "(the zone is missing)",
        ),
        (
            {"ends_at": 1800003600},
            "ends_at: must be an RFC 3339 time with a zone, such as 2026-12-04T03:00:00Z",
        ),
        ({"ends_at": "2027-01-15T07:00:00Z"}, "ends_at: must be in the future"),
        ({"starts_at": "2027-01-15T10:00:00Z"}, "ends_at: must be after starts_at"),
        ({"comment": ""}, "comment: must not be empty"),
        ({"comment": None}, "comment: required"),
        ({"comment": "\ud800"}, "comment: not valid Unicode text"),
        ({"comment": ["x"]}, "comment: must be a string"),
        ({"matchers": None}, "matchers: must be a list of {name, value, is_regex, is_equal}"),
        ({"matchers": []}, "matchers: at least one matcher is required"),
        (
            {"matchers": [{"name": "pipeline", "value": "(", "is_regex": True}]},
            "matchers[0].value: invalid regular expression '(': "
            "missing ), unterminated subpattern at position 0",
        ),
        ({"endsAt": IN_AN_HOUR}, "endsAt: unknown field"),
    ],
)
def test_a_bad_field_is_400_naming_it(site: Site, changes: dict[str, Any], message: str) -> None:
    response = site.create(**changes)

    assert response.status_code == 400
    assert error(response) == message
    assert site.store.records == {}


def test_a_missing_matchers_field_is_400(site: Site) -> None:
    body = {"ends_at": IN_AN_HOUR, "comment": "c"}

    response = site.call("POST", "/api/v1/silences", json=body)

    assert response.status_code == 400
    assert error(response) == "matchers: required"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b"{",
            "body: invalid JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)",
        ),
        (b"", "body: empty; expected a JSON object"),
        (b"[1]", "body: must be a JSON object"),
        (
            b"\xff",
            "body: invalid JSON: 'utf-8' codec can't decode byte 0xff in position 0: "
            "invalid start byte",
        ),
    ],
)
def test_a_body_that_is_not_a_json_object_is_400(site: Site, body: bytes, message: str) -> None:
    response = site.call("POST", "/api/v1/silences", data=body)

    assert response.status_code == 400
    assert error(response) == message


def test_a_body_over_64_kib_is_413(site: Site) -> None:
    body = json.dumps({"comment": "x" * 65536}).encode()

    response = site.call("POST", "/api/v1/silences", data=body)

    assert response.status_code == 413
    assert error(response) == "body: larger than 64 KiB"


# Routing


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/api/v1/silences", "GET, POST"),
        ("POST", "/api/v1/silences/some-id", "GET, DELETE"),
        ("HEAD", "/api/v1/alerts", "GET"),
    ],
)
def test_a_wrong_method_is_405_with_allow(site: Site, method: str, path: str, allow: str) -> None:
    response = site.call(method, path)

    assert response.status_code == 405
    assert response.headers["Allow"] == allow


@pytest.mark.parametrize(
    "path", ["/api/v1/nope", "/api/v2/silences", "/api/v1/silences/", "/api/v1/silences/a/b"]
)
def test_an_unknown_api_path_is_404_in_json(site: Site, path: str) -> None:
    response = site.call("GET", path)

    assert response.status_code == 404
    assert error(response) == "not found"


def test_without_an_api_its_paths_are_404_and_the_rest_is_unchanged(
    server: tuple[Switch, str],
) -> None:
    app = make_app(CollectorRegistry(), always_ok, lambda: (False, "starting"))
    url = server[1]

    with serve(server, app) as session:
        api = session.get(url + "/api/v1/alerts", timeout=5)
        healthz = session.get(url + "/healthz", timeout=5)
        readyz = session.get(url + "/readyz", timeout=5)
        metrics = session.get(url + "/metrics", timeout=5)

    assert (api.status_code, api.text) == (404, "not found\n")
    assert (healthz.status_code, healthz.text) == (200, "ok\n")
    assert (readyz.status_code, readyz.text) == (503, "starting\n")
    assert metrics.status_code == 200


def test_probes_and_metrics_still_answer_beside_the_api(site: Site) -> None:
    healthz = site.call("GET", "/healthz", token=None)
    metrics = site.call("GET", "/metrics", token=None)

    assert (healthz.status_code, healthz.text) == (200, "ok\n")
    assert metrics.status_code == 200


def test_a_failing_alerts_source_is_500_in_json(server: tuple[Switch, str], clock, caplog) -> None:
    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("tracker exploded")

    with start_site(server, clock, TOKEN, broken) as site:
        response = site.call("GET", "/api/v1/alerts")

        assert response.status_code == 500
        assert error(response) == "internal error (see the log)"
    assert "tracker exploded" in caplog.text


def test_a_store_failure_is_500_and_silences_nothing(site: Site, clock) -> None:
    site.store.broken = True

    response = site.create()

    assert response.status_code == 500
    assert error(response) == (
        "the state store failed: cannot write state.path '/tmp/state.db': disk full"
    )
    assert site.book.silencing({"pipeline": "train"}, clock()) is None


# Logs and secrets


def test_the_token_appears_in_no_answer_and_no_log_line(site: Site, clock, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    answers = [
        site.create(),
        site.call("GET", "/api/v1/silences"),
        site.call("GET", "/api/v1/silences", token=WRONG),
        site.call("GET", "/api/v1/silences", token=None),
        site.call("DELETE", "/api/v1/silences/unknown"),
        site.create(ends_at="bad"),
        site.call("POST", "/api/v1/silences", data=b"{" + TOKEN.encode()),
        site.call("PATCH", "/api/v1/silences"),
        site.call("GET", "/api/v1/alerts"),
    ]
    clock.advance(1)
    answers.append(site.call("DELETE", f"/api/v1/silences/{answers[0].json()['id']}"))

    for answer in answers:
        assert TOKEN not in answer.text
        assert TOKEN not in str(answer.headers)
    assert TOKEN not in caplog.text
    assert WRONG not in caplog.text


def test_creation_expiry_and_refusals_are_logged(site: Site, caplog) -> None:
    caplog.set_level(logging.INFO)

    silence_id = site.create().json()["id"]
    site.call("DELETE", f"/api/v1/silences/{silence_id}")
    site.call("GET", "/api/v1/silences", token=WRONG)

    messages = [r.getMessage() for r in caplog.records if r.name.startswith("watchdog.")]
    assert messages == [
        f"silence {silence_id} created by alice until {IN_AN_HOUR}: retraining the model",
        f"silence {silence_id} expired: retraining the model",
        "silences API request from 127.0.0.1 refused: missing or wrong bearer token",
    ]
