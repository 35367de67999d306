"""The status page at ``/``: order, filter, escaping and headers through a real
server on 127.0.0.1, and the page as a person sees it in a real headless Chromium."""

import html
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

from watchdog.durations import format_duration, iso_time
from watchdog.server import HttpServer, WSGIApp, make_app
from watchdog.statuspage import SCHEMES, STATES, TONES, make_status_page

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
HOUR = 3600.0
EVIL = "<img src=x onerror=alert(1)>"
DOUBLE = '" onmouseover="alert(2)'  # breaks out of a double-quoted attribute if not escaped
SINGLE = "' onfocus='alert(3)"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_BUDGET = 20.0  # seconds for both Chromium runs together

# Every flag keeps Chromium from contacting anything but the page on 127.0.0.1.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def alert(pipeline: str, state: str = "fresh", alert: str = "inactive", **changes: Any) -> dict:
    """One row as ``Watchdog.alerts_view`` gives it."""
    row: dict[str, Any] = {
        "pipeline": pipeline,
        "check": "last_success",
        "state": state,
        "alert": alert,
        "severity": "critical",
        "since": None,
        "firing_since": None,
        "age_seconds": 600.0,
        "threshold": "2h",
        "next_deadline": iso_time(NOW + 2 * HOUR - 600),
        "last_success": iso_time(NOW - 600),
        "silenced_by": None,
        "held_by": None,
        "last_notified_at": None,
        "receivers": [],
        "labels": {},
    }
    row.update(changes)
    return row


class Board:
    """A watchdog as the page sees it, with whatever a test puts on it."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.cycles = 3
        self.last_cycle_at: float | None = NOW - 12
        self.failures_in_a_row = 0
        self.settings = SimpleNamespace(evaluation_interval=30.0)

    def alerts_view(self) -> list[dict[str, Any]]:
        return [dict(a) for a in self.alerts]


class Recorder:
    """Serves the app and remembers every path asked for."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self.paths: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.paths.append(environ.get("PATH_INFO", ""))
        return self.app(environ, start_response)


@dataclass
class Site:
    url: str
    board: Board
    recorder: Recorder
    session: requests.Session

    def get(self, query: str = "", method: str = "GET") -> requests.Response:
        return self.session.request(method, f"{self.url}/{query}", timeout=5)


def always_ok() -> tuple[bool, str]:
    return True, "ok"


@pytest.fixture(scope="module")
def running() -> Iterator[Site]:
    board = Board()
    page = make_status_page(lambda: board, version="0.1.0", clock=lambda: NOW)
    recorder = Recorder(make_app(CollectorRegistry(), always_ok, always_ok, status_page=page))
    server = HttpServer("127.0.0.1", 0, recorder)
    server.start()
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: 127.0.0.1 only
    try:
        yield Site(f"http://127.0.0.1:{server.port}", board, recorder, session)
    finally:
        session.close()
        server.stop()


@pytest.fixture
def site(running: Site) -> Site:
    # One server for the module; each test starts from a fresh board.
    running.board.reset()
    running.recorder.paths.clear()
    return running


@dataclass
class Parsed:
    """What a browser would build from the page: tags, attributes, text, rows."""

    tags: list[str] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    text: str = ""
    rows: list[tuple[str, str]] = field(default_factory=list)  # (row class, name)


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.result = Parsed()
        self._row_class = ""
        self._in_name = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.result.tags.append(tag)
        self.result.attributes += attrs
        if tag == "tr":
            self._row_class = dict(attrs).get("class") or ""
        self._in_name = tag == "th" and ("scope", "row") in attrs

    def handle_data(self, data: str) -> None:
        self.result.text += data
        if self._in_name:
            self.result.rows.append((self._row_class, data))
            self._in_name = False


def parse(page: str) -> Parsed:
    parser = _Parser()
    parser.feed(page)
    parser.close()
    return parser.result


def names(page: str) -> list[str]:
    return [name for _, name in parse(page).rows]


# Order and states


def test_problems_come_first_then_names(site: Site) -> None:
    site.board.alerts = [
        alert("alpha"),
        alert("echo", "unknown"),
        alert("delta", "stale", "pending", held_by="upstream"),
        alert("foxtrot", "stale"),
        alert("charlie", "stale", "pending"),
        alert("bravo", "fresh", "firing", severity="warning"),
        alert("zulu", "missing", "firing"),
        alert("yankee", "stale", "firing"),
    ]

    page = site.get().text

    assert names(page) == [
        "yankee",
        "zulu",
        "bravo",
        "charlie",
        "delta",
        "foxtrot",
        "echo",
        "alpha",
    ]


def test_each_row_says_its_state_in_words_and_colour(site: Site) -> None:
    site.board.alerts = [
        alert("held-one", "stale", "pending", held_by="upstream"),
        alert("late", "stale", "firing"),
        alert("warm", "fresh", "firing", severity="warning"),
        alert("waiting", "never_succeeded", "pending", age_seconds=None, last_success=None),
        alert("dark", "unknown"),
        alert("fine"),
    ]

    parsed = parse(site.get().text)

    assert dict((name, cls) for cls, name in parsed.rows) == {
        "late": "row-critical",
        "warm": "row-warning",
        "waiting": "row-pending",
        "held-one": "row-held",
        "dark": "row-unknown",
        "fine": "row-fresh",
    }
    for words in ("firing, critical", "firing, warning", "held by upstream", "never succeeded"):
        assert words in parsed.text


def test_checks_and_labels_show_under_the_pipeline(site: Site) -> None:
    site.board.alerts = [alert("ingest", check="source_lag", labels={"team": "ml"})]

    text = parse(site.get().text).text

    assert "check source_lag" in text
    assert "team=ml" in text


def test_a_silenced_row_says_by_which_silence_until_when_and_why(site: Site) -> None:
    site.board.alerts = [
        alert(
            "reports",
            "stale",
            "firing",
            silenced_by="s-1",
            silenced_until="2027-01-15T10:00:00Z",
            silence_comment="<b>warehouse</b> migration",
        )
    ]

    page = site.get().text
    text = parse(page).text

    assert "by s-1" in text
    assert "until" in text
    assert "<b>warehouse</b> migration" in text
    assert "&lt;b&gt;warehouse&lt;/b&gt;" in page


# Filter


def test_the_state_filter_keeps_only_that_state(site: Site) -> None:
    site.board.alerts = [alert("a"), alert("b", "stale", "firing"), alert("c", "missing")]

    page = site.get("?state=stale").text

    assert names(page) == ["b"]
    assert '<a href="?state=stale" aria-current="page">' in page
    assert "1 of 3 pipelines and checks" in page


def test_every_state_has_a_filter_link_with_its_total(site: Site) -> None:
    site.board.alerts = [alert("a"), alert("b"), alert("c", "stale", "firing")]

    page = site.get().text

    links = [value for name, value in parse(page).attributes if name == "href"]
    assert [f"?state={state}" for state in ("all", *STATES)] == links[: len(STATES) + 1]
    assert '<span class="pill tone-fresh">fresh</span> 2</a>' in page
    assert '<span class="pill tone-critical">stale</span> 1</a>' in page
    assert '<a href="?state=all" aria-current="page"><span class="pill ">all</span> 3</a>' in page


def test_an_unknown_state_in_the_filter_is_400_and_shows_every_row(site: Site) -> None:
    site.board.alerts = [alert("a"), alert("b", "stale", "firing")]

    response = site.get("?state=%3Cb%3Elate")

    assert response.status_code == 400
    notice = "There is no state named '<b>late'; showing every state."
    assert notice in parse(response.text).text
    assert names(response.text) == ["b", "a"]


def test_a_filter_without_matches_says_so(site: Site) -> None:
    site.board.alerts = [alert("a")]

    page = site.get("?state=never_succeeded").text

    assert "No pipeline is never succeeded right now." in page
    assert "<table" not in page


# Escaping


def test_names_and_label_values_are_escaped_in_text_and_attributes(site: Site) -> None:
    site.board.alerts = [
        alert(
            EVIL,
            "stale",
            "firing",
            check="<b>bold</b>",
            labels={"team": DOUBLE, "owner": SINGLE, "x": "</span><script>alert(4)</script>"},
            silenced_by='"><img src=y>',
            last_notified_at=iso_time(NOW - 60),
            receivers=["<i>pager</i>"],
        )
    ]

    page = site.get().text
    parsed = parse(page)

    assert EVIL not in page
    assert html.escape(EVIL, quote=True) in page
    assert names(page) == [EVIL]
    assert not {"img", "script", "b", "i"} & set(parsed.tags)
    assert not [name for name, _ in parsed.attributes if name.startswith("on")]
    titles = {value for name, value in parsed.attributes if name == "title"}
    assert {f"team={DOUBLE}", f"owner={SINGLE}"} <= titles
    for shown in ("<b>bold</b>", f"team={DOUBLE}", '"><img src=y>', "to <i>pager</i>"):
        assert shown in parsed.text


# Headers and method


def test_the_page_forbids_scripts_sniffing_and_caching(site: Site) -> None:
    site.board.alerts = [alert("a")]

    response = site.get()

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = [part.strip() for part in response.headers["Content-Security-Policy"].split(";")]
    assert policy[:2] == ["default-src 'none'", "style-src 'unsafe-inline'"]
    assert not [part for part in policy if part.startswith("script-src")]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


def test_the_page_loads_nothing_from_anywhere(site: Site) -> None:
    site.board.alerts = [alert("a", labels={"team": "ml"})]

    page = site.get().text
    parsed = parse(page)

    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(parsed.tags)
    assert not [n for n, v in parsed.attributes if n == "src"]
    for outside in ("://", "@import", "url(", "@font-face"):
        assert outside not in page


def test_head_answers_headers_only_and_post_is_405(site: Site) -> None:
    head = site.get(method="HEAD")
    post = site.get(method="POST")

    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["Content-Length"]) > 0
    assert post.status_code == 405
    assert post.headers["Allow"] == "GET, HEAD"


def test_without_a_status_page_the_root_stays_404() -> None:
    app = make_app(CollectorRegistry(), always_ok, always_ok)
    answers: list[str] = []

    body = b"".join(app({"PATH_INFO": "/"}, lambda status, headers: answers.append(status)))

    assert answers == ["404 Not Found"]
    assert body == b"not found\n"


# Header and times


def test_an_empty_watchdog_says_no_pipelines_are_watched_yet(site: Site) -> None:
    site.board.cycles, site.board.last_cycle_at = 0, None

    text = parse(site.get().text).text

    assert "No pipelines watched yet." in text
    assert "Last evaluationnone yet" in text
    assert "Prometheusnot queried yet" in text


def test_the_header_shows_version_evaluation_and_prometheus_up(site: Site) -> None:
    site.board.alerts = [alert("a", "stale", "firing"), alert("b", "stale", "pending")]

    page = site.get().text
    text = parse(page).text

    assert "pipeline-watchdog 0.1.0" in text
    assert "Last evaluation12s ago2027-01-15T07:59:48Z" in text
    assert '<dd><span class="pill tone-fresh">up</span></dd>' in page
    assert "Alerts1 firing, 1 pending" in text
    assert "<title>1 firing · pipeline-watchdog</title>" in page


def test_the_header_says_when_prometheus_is_down_and_evaluations_are_overdue(
    site: Site,
) -> None:
    site.board.failures_in_a_row = 4
    site.board.last_cycle_at = NOW - 10 * 60

    text = parse(site.get().text).text

    assert "Prometheusdown 4 failed cycles in a row; states are unknown" in text
    assert "10m ago2027-01-15T07:50:00Z overdue" in text


def test_times_are_relative_and_absolute_in_utc(site: Site) -> None:
    site.board.alerts = [
        alert(
            "training",
            "stale",
            "firing",
            age_seconds=3 * HOUR + 12 * 60,
            last_success=iso_time(NOW - 3 * HOUR - 12 * 60),
            next_deadline=iso_time(NOW - HOUR - 12 * 60),
            last_notified_at=iso_time(NOW - HOUR),
            receivers=["slack-ml", "oncall"],
        ),
        alert("nightly", next_deadline=iso_time(NOW + 47 * 60)),
    ]

    page = site.get().text
    text = parse(page).text

    assert "3h 12m ago2027-01-15T04:48:00Z" in text
    assert "2hdeadline 1h 12m ago2027-01-15T06:48:00Z" in text
    assert "1h ago2027-01-15T07:00:00Z" in text
    assert "to slack-ml, oncall" in text
    assert "deadline in 47m2027-01-15T08:47:00Z" in text
    assert '<time class="abs" datetime="2027-01-15T04:48:00Z">' in page


@pytest.mark.parametrize(("interval", "refresh"), [(30.0, 30), (15.0, 15), (2.0, 10), (3600, 300)])
def test_the_page_refreshes_with_the_evaluation_interval(
    site: Site, interval: float, refresh: int
) -> None:
    site.board.settings.evaluation_interval = interval

    page = site.get().text

    assert f'<meta http-equiv="refresh" content="{refresh}">' in page


# Contrast


def _luminance(colour: str) -> float:
    # https://www.w3.org/TR/WCAG21/#dfn-relative-luminance
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(first: str, second: str) -> float:
    light, dark = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_every_colour_pair_has_aa_contrast() -> None:
    pairs = list(TONES.values())
    for background, text, muted, link in SCHEMES.values():
        pairs += [(background, text), (background, muted), (background, link)]

    ratios = {pair: round(contrast(*pair), 2) for pair in pairs}

    assert {pair: ratio for pair, ratio in ratios.items() if ratio < 4.5} == {}


# In a real browser


def aged(age: float, threshold: float = 2 * HOUR) -> dict[str, Any]:
    """Age, last success, threshold and deadline that agree with each other."""
    return {
        "age_seconds": age,
        "last_success": iso_time(NOW - age),
        "threshold": format_duration(threshold),
        "next_deadline": iso_time(NOW - age + threshold),
    }


def showcase() -> list[dict[str, Any]]:
    """A night with a bit of everything, and a pipeline named like an attack."""
    late = {"state": "stale", "alert": "firing", "firing_since": iso_time(NOW - 70 * 60)}
    return [
        alert(EVIL, "missing", "firing", **aged(26 * HOUR), labels={"team": "ml-platform"}),
        alert(
            "training",
            **aged(3 * HOUR + 12 * 60),
            last_notified_at=iso_time(NOW - 70 * 60),
            receivers=["slack-ml", "oncall"],
            labels={"team": "ml", "owner": "alice"},
            **late,
        ),
        alert(
            "reports",
            **aged(5 * HOUR, 4 * HOUR),
            silenced_by="5c1e0d2a-7f3b-4e61-9a0c-2d8e6b4f1a37",
            **late,
        ),
        alert(
            "features",
            "fresh",
            "firing",
            severity="warning",
            **aged(5 * HOUR + 10 * 60, 6 * HOUR),
            labels={"team": DOUBLE},
        ),
        alert("embeddings", "stale", "pending", **aged(2 * HOUR + 120)),
        alert("scoring", "stale", "pending", held_by="training", **aged(2 * HOUR + 300)),
        alert("backfill", "unknown", **aged(40 * 60)),
        alert("ingest", check="source_lag", **aged(20 * 60, HOUR)),
        alert(
            "nightly-export",
            **{
                **aged(6 * HOUR, 26 * HOUR),
                "threshold": "schedule '0 2 * * *' Europe/Berlin + 2h grace",
            },
        ),
    ]


def chromium(args: list[str], profile: Path, deadline: float) -> str:
    """Run headless Chromium with a new profile; its stdout, or a clear failure."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: run scripts/install --test (Debian: chromium)")
    # HOME and the XDG folders point into the test's directory, so nothing is
    # written beside the user's own files.
    env = {**os.environ, "HOME": str(profile), "XDG_CONFIG_HOME": str(profile / "config")}
    env["XDG_CACHE_HOME"] = str(profile / "cache")
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile / 'data'}", *args]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            timeout=max(deadline - time.monotonic(), 1.0),
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within {CHROMIUM_BUDGET:g}s: {' '.join(args)}")
    if done.returncode != 0:
        pytest.fail(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def test_a_hostile_pipeline_name_shows_as_text_and_runs_nothing_in_chromium(
    site: Site, tmp_path: Path
) -> None:
    site.board.alerts = showcase()
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "statuspage.png"
    screenshot.unlink(missing_ok=True)
    deadline = time.monotonic() + CHROMIUM_BUDGET

    picture = [f"--screenshot={screenshot}", "--window-size=1280,900", f"{site.url}/"]
    chromium(picture, tmp_path / "shot", deadline)
    dom = chromium(["--dump-dom", f"{site.url}/"], tmp_path / "dom", deadline)
    parsed = parse(dom)

    assert [name for _, name in parsed.rows][:2] == [EVIL, "reports"]
    assert EVIL in parsed.text
    assert dom.count("<img") == 0
    assert "img" not in parsed.tags
    assert not [name for name, _ in parsed.attributes if name.startswith("on")]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one
    assert set(site.recorder.paths) <= {"/", "/favicon.ico"}
