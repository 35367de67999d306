"""The status page at ``/``: every pipeline and check at a glance, for people.

One HTML document rendered on the server from the rows of
:meth:`watchdog.service.Watchdog.alerts_view`: problems first (firing critical,
firing warning, pending, held, then the rest), each state as a word and a
colour, a filter by state as plain links (``/?state=stale``) and a refresh tied
to the evaluation interval.

The page has no script and loads nothing: its styles are inline, so it works
offline, and its Content-Security-Policy forbids everything else.  Every value
that comes from Prometheus or the configuration (pipeline names, label values,
silence ids, receiver names) is escaped, in text and in attributes alike.
"""

import html
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qs

from watchdog.durations import format_duration, iso_time
from watchdog.freshness import LAST_SUCCESS, PROBLEM_STATES, FreshnessState
from watchdog.server import StartResponse, WSGIApp

Alert = Mapping[str, Any]

STATES = tuple(state.value for state in FreshnessState)

# Inline styles only; nothing else may load or run.  frame-ancestors and
# base-uri are not covered by default-src, so they are closed explicitly.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)

# A page refreshing faster than every 10s only loads the watchdog; slower than
# every 5 minutes it shows old news at 3 a.m.
MIN_REFRESH = 10
MAX_REFRESH = 300

# Colour of each tone: (background, text).  Every pair keeps a contrast ratio of
# at least 4.5:1 (WCAG AA for normal text); the tests measure it.
TONES = {
    "critical": ("#b42318", "#ffffff"),
    "warning": ("#f97316", "#1c0a00"),
    "pending": ("#fde68a", "#422006"),
    "held": ("#5b21b6", "#ffffff"),
    "unknown": ("#4b5563", "#ffffff"),
    "fresh": ("#166534", "#ffffff"),
}

# Page colours for light and dark screens: (background, text, muted text, links).
SCHEMES = {
    "light": ("#ffffff", "#1f2328", "#57606a", "#0b57d0"),
    "dark": ("#111418", "#e6e8eb", "#a8b0ba", "#8ab4f8"),
}


class Watched(Protocol):
    """What the page reads from the running :class:`watchdog.service.Watchdog`."""

    @property
    def cycles(self) -> int: ...

    @property
    def last_cycle_at(self) -> float | None: ...

    @property
    def failures_in_a_row(self) -> int: ...

    @property
    def settings(self) -> "_Interval": ...

    def alerts_view(self) -> list[dict[str, Any]]: ...


class _Interval(Protocol):
    @property
    def evaluation_interval(self) -> float: ...


@dataclass(frozen=True)
class PageFacts:
    """What the header says besides the rows."""

    version: str
    now: float  # the local clock when the page is rendered, for "3h 12m ago"
    last_evaluation: float | None  # when the last cycle finished; None before the first
    prometheus_up: bool | None  # None before the first cycle
    failures_in_a_row: int = 0
    evaluation_interval: float = 30.0

    @property
    def refresh_seconds(self) -> int:
        return int(min(max(self.evaluation_interval, MIN_REFRESH), MAX_REFRESH))


def facts_of(watched: Watched, *, version: str, now: float) -> PageFacts:
    """The header's facts from a running watchdog."""
    # Single attribute reads: each is consistent on its own, which is all a page needs.
    cycles = watched.cycles
    failures = watched.failures_in_a_row
    return PageFacts(
        version=version,
        now=now,
        last_evaluation=watched.last_cycle_at,
        prometheus_up=None if cycles == 0 else failures == 0,
        failures_in_a_row=failures,
        evaluation_interval=watched.settings.evaluation_interval,
    )


def make_status_page(
    current: Callable[[], Watched], *, version: str, clock: Callable[[], float]
) -> WSGIApp:
    """The page as a WSGI app, for :func:`watchdog.server.make_app`'s ``status_page``.

    ``current`` gives the watchdog running now; a reload replaces it, so it is
    looked up on every request.
    """

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            body = f"method {method} not allowed\n".encode(errors="replace")
            headers = [("Content-Type", "text/plain; charset=utf-8"), ("Allow", "GET, HEAD")]
            return _send(start_response, "405 Method Not Allowed", body, headers, method)

        watched = current()
        facts = facts_of(watched, version=version, now=clock())
        wanted = _wanted_state(environ.get("QUERY_STRING", ""))
        if wanted is not None and wanted not in STATES:
            page = render_page(watched.alerts_view(), facts, notice=_unknown_state(wanted))
            status = "400 Bad Request"
        else:
            page = render_page(watched.alerts_view(), facts, state=wanted)
            status = "200 OK"
        headers = [("Content-Type", "text/html; charset=utf-8")]
        return _send(start_response, status, page.encode(), headers, method)

    return app


def _wanted_state(query: str) -> str | None:
    values = parse_qs(query).get("state", [])
    value = values[0] if values else ""
    return None if value in ("", "all") else value


def _unknown_state(value: str) -> str:
    # Cut, so a long query string cannot fill the page.
    return f"There is no state named {value[:60]!r}; showing every state."


def _send(
    start_response: StartResponse,
    status: str,
    body: bytes,
    headers: list[tuple[str, str]],
    method: str,
) -> list[bytes]:
    start_response(
        status,
        [
            *headers,
            ("Content-Length", str(len(body))),
            ("Content-Security-Policy", CSP),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            # The page is a live view: a cached copy would show a state long gone.
            ("Cache-Control", "no-store"),
        ],
    )
    return [] if method == "HEAD" else [body]


# Rendering ----------------------------------------------------------------------------


def render_page(
    alerts: Sequence[Alert], facts: PageFacts, *, state: str | None = None, notice: str = ""
) -> str:
    """The whole document; ``state`` keeps only the rows in that freshness state."""
    counts = Counter(str(a["state"]) for a in alerts)
    shown = sorted((a for a in alerts if state is None or a["state"] == state), key=sort_key)
    notice_html = f'<p class="notice" role="alert">{_e(notice)}</p>' if notice else ""
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="refresh" content="{facts.refresh_seconds}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="color-scheme" content="light dark">\n'
        f"<title>{_e(_title(alerts))}</title>\n<style>{_css()}</style>\n</head>\n<body>\n"
        f"{_header(alerts, facts)}{_filter(counts, len(alerts), state)}{notice_html}\n"
        f"<main>\n{_table(shown, facts.now, state, len(alerts))}</main>\n"
        f"{_footer(facts)}</body>\n</html>\n"
    )


def sort_key(alert: Alert) -> tuple[int, str, str]:
    """Problems first (firing critical, firing warning, pending, held), then by name."""
    return (_rank(alert), str(alert.get("pipeline") or ""), str(alert.get("check") or ""))


def _rank(alert: Alert) -> int:
    if alert["alert"] == "firing":
        return 0 if alert["severity"] == "critical" else 1
    if alert["alert"] == "pending":
        return 3 if alert.get("held_by") else 2
    if alert["state"] in PROBLEM_STATES:
        return 4
    return 5 if alert["state"] == FreshnessState.unknown else 6


def tone(alert: Alert) -> str:
    """The colour of a row: its alert when there is one, else its freshness state."""
    if alert["alert"] == "firing":
        return "critical" if alert["severity"] == "critical" else "warning"
    if alert["alert"] == "pending":
        return "held" if alert.get("held_by") else "pending"
    return _state_tone(str(alert["state"]))


def _state_tone(state: str) -> str:
    if state in PROBLEM_STATES:
        return "critical"
    return "unknown" if state == FreshnessState.unknown else "fresh"


def _title(alerts: Sequence[Alert]) -> str:
    # The browser tab says at a glance whether anything is wrong.
    firing = sum(1 for a in alerts if a["alert"] == "firing")
    return f"{firing} firing · pipeline-watchdog" if firing else "all quiet · pipeline-watchdog"


def _header(alerts: Sequence[Alert], facts: PageFacts) -> str:
    firing = sum(1 for a in alerts if a["alert"] == "firing")
    pending = sum(1 for a in alerts if a["alert"] == "pending")
    return (
        "<header>\n"
        f'<h1>pipeline-watchdog <span class="muted">{_e(facts.version)}</span></h1>\n'
        '<dl class="facts">\n'
        f"<div><dt>Last evaluation</dt><dd>{_last_evaluation(facts)}</dd></div>\n"
        f"<div><dt>Prometheus</dt><dd>{_prometheus(facts)}</dd></div>\n"
        f"<div><dt>Alerts</dt><dd>{firing} firing, {pending} pending</dd></div>\n"
        "</dl>\n</header>\n"
    )


def _last_evaluation(facts: PageFacts) -> str:
    if facts.last_evaluation is None:
        return "none yet"
    text = _moment(iso_time(facts.last_evaluation), facts.now)
    # Three missed intervals mean the evaluation loop is stuck, whatever the rows say.
    if facts.now - facts.last_evaluation > 3 * facts.evaluation_interval:
        return f'{text} <span class="pill tone-critical">overdue</span>'
    return text


def _prometheus(facts: PageFacts) -> str:
    if facts.prometheus_up is None:
        return "not queried yet"
    if facts.prometheus_up:
        return '<span class="pill tone-fresh">up</span>'
    cycles = "cycle" if facts.failures_in_a_row == 1 else "cycles"
    return (
        '<span class="pill tone-critical">down</span> '
        f"{facts.failures_in_a_row} failed {cycles} in a row; states are unknown"
    )


def _filter(counts: Counter[str], total: int, current: str | None) -> str:
    links = [_filter_link("all", "all", total, current is None, "")]
    links += [
        _filter_link(
            state, _word(state), counts[state], current == state, f"tone-{_state_tone(state)}"
        )
        for state in STATES
    ]
    items = "".join(f"<li>{link}</li>" for link in links)
    return f'<nav aria-label="Filter by state"><ul class="filter">{items}</ul></nav>\n'


def _filter_link(value: str, word: str, count: int, current: bool, tone_class: str) -> str:
    aria = ' aria-current="page"' if current else ""
    return (
        f'<a href="?state={_e(value)}"{aria}>'
        f'<span class="pill {tone_class}">{_e(word)}</span> {count}</a>'
    )


def _table(shown: Sequence[Alert], now: float, state: str | None, total: int) -> str:
    if not total:
        return (
            '<p class="empty">No pipelines watched yet.</p>\n'
            '<p class="muted">Pipelines appear after the first evaluation that finds '
            "<code>ml_pipeline_last_success_timestamp</code> series, or when listed by name "
            "under <code>pipelines</code> in the configuration.</p>\n"
        )
    if not shown:
        return f'<p class="empty">No pipeline is {_e(_word(state or ""))} right now.</p>\n'
    rows = "".join(_row(alert, now) for alert in shown)
    return (
        '<div class="scroll"><table>\n'
        f"<caption>{len(shown)} of {total} pipelines and checks, problems first</caption>\n"
        "<thead><tr>"
        '<th scope="col">State</th><th scope="col">Pipeline</th><th scope="col">Age</th>'
        '<th scope="col">Threshold and deadline</th><th scope="col">Last success</th>'
        '<th scope="col">Silenced</th><th scope="col">Last notification</th>'
        f"</tr></thead>\n<tbody>\n{rows}</tbody>\n</table></div>\n"
    )


def _row(alert: Alert, now: float) -> str:
    cells = [
        f"<td>{_state_cell(alert)}</td>",
        f'<th scope="row">{_name_cell(alert)}</th>',
        f'<td class="age">{_age(alert)}</td>',
        f"<td>{_deadline_cell(alert, now)}</td>",
        f"<td>{_last_success(alert, now)}</td>",
        f"<td>{_silenced_cell(alert, now)}</td>",
        f"<td>{_notified_cell(alert, now)}</td>",
    ]
    return f'<tr class="row-{tone(alert)}">{"".join(cells)}</tr>\n'


def _state_cell(alert: Alert) -> str:
    state = str(alert["state"])
    word = f'<span class="pill tone-{_state_tone(state)}">{_e(_word(state))}</span>'
    status = _alert_words(alert)
    if not status:
        return word
    return f'{word}<br><span class="pill tone-{tone(alert)}">{_e(status)}</span>'


def _alert_words(alert: Alert) -> str:
    if alert["alert"] == "firing":
        return f"firing, {alert['severity']}"
    if alert["alert"] == "pending" and alert.get("held_by"):
        return f"held by {alert['held_by']}"
    return "pending" if alert["alert"] == "pending" else ""


def _name_cell(alert: Alert) -> str:
    name = _e(str(alert.get("pipeline") or "the watchdog"))
    check = str(alert.get("check") or LAST_SUCCESS)
    check_html = (
        "" if check == LAST_SUCCESS else f'<br><span class="muted">check {_e(check)}</span>'
    )
    labels = alert.get("labels") or {}
    chips = "".join(
        f'<span class="label" title="{_e(f"{key}={value}")}">{_e(key)}={_e(value)}</span>'
        for key, value in sorted(labels.items())
    )
    return f"{name}{check_html}{f'<br>{chips}' if chips else ''}"


def _age(alert: Alert) -> str:
    age = alert.get("age_seconds")
    if age is None:
        return "never" if alert["state"] == FreshnessState.never_succeeded else "—"
    return _e(format_duration(float(age)))


def _last_success(alert: Alert, now: float) -> str:
    never = alert["state"] == FreshnessState.never_succeeded
    return _moment(alert.get("last_success"), now, missing="never" if never else "—")


def _deadline_cell(alert: Alert, now: float) -> str:
    threshold = alert.get("threshold")
    parts = [_e(str(threshold))] if threshold else []
    deadline = alert.get("next_deadline")
    if deadline:
        parts.append(f'<span class="muted">deadline</span> {_moment(deadline, now)}')
    return "<br>".join(parts) or "—"


def _silenced_cell(alert: Alert, now: float) -> str:
    silence = alert.get("silenced_by")
    if not silence:
        return "no"
    parts = [f"by <code>{_e(str(silence))}</code>"]
    until = alert.get("silenced_until")
    if until:
        parts.append(f'<span class="muted">until</span> {_moment(until, now)}')
    comment = alert.get("silence_comment")
    if comment:
        parts.append(f'<span class="muted">{_e(str(comment))}</span>')
    return "<br>".join(parts)


def _notified_cell(alert: Alert, now: float) -> str:
    when = alert.get("last_notified_at")
    if not when:
        return "—"
    receivers = ", ".join(str(r) for r in alert.get("receivers") or [])
    to = f'<br><span class="muted">to {_e(receivers)}</span>' if receivers else ""
    return f"{_moment(when, now)}{to}"


def _moment(iso: object, now: float, *, missing: str = "—") -> str:
    """``3h 12m ago`` (or ``in 47m``) over the absolute time in UTC."""
    if not iso:
        return missing
    text = str(iso)
    try:
        seconds = datetime.fromisoformat(text).timestamp()
    except ValueError:
        return _e(text)
    delta = now - seconds
    if not math.isfinite(delta):
        return _e(text)
    relative = f"{format_duration(delta)} ago" if delta >= 0 else f"in {format_duration(-delta)}"
    return f'{_e(relative)}<br><time class="abs" datetime="{_e(text)}">{_e(text)}</time>'


def _word(state: str) -> str:
    return state.replace("_", " ")


def _footer(facts: PageFacts) -> str:
    return (
        f'<footer class="muted">Refreshes every {facts.refresh_seconds}s. Machine-readable: '
        '<a href="api/v1/alerts">api/v1/alerts</a>, <a href="metrics">metrics</a>.</footer>\n'
    )


def _e(value: object) -> str:
    # quote=True: the same escaping is safe inside attribute values.
    return html.escape(str(value), quote=True)


def _css() -> str:
    light, dark = SCHEMES["light"], SCHEMES["dark"]
    tones = "".join(
        f".tone-{name}{{background:{bg};color:{fg}}}"
        f".row-{name} td:first-child{{box-shadow:inset 6px 0 0 {bg}}}"
        for name, (bg, fg) in TONES.items()
    )
    return (
        f":root{{{_scheme_vars(light)}}}"
        f"@media (prefers-color-scheme: dark){{:root{{{_scheme_vars(dark)}}}}}"
        "body{margin:0;padding:1rem 1.5rem;background:var(--bg);color:var(--fg);"
        "font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}"
        "a{color:var(--link)}h1{font-size:1.4rem;margin:0 0 .5rem}"
        ".muted{color:var(--muted)}code,.abs{font-family:ui-monospace,monospace;font-size:.85em}"
        ".abs{color:var(--muted)}.abs,.age{white-space:nowrap}"
        ".facts{display:flex;flex-wrap:wrap;gap:.5rem 2rem;margin:0 0 .75rem}"
        ".facts dt{font-size:.8rem;color:var(--muted)}.facts dd{margin:0}"
        ".filter{list-style:none;display:flex;flex-wrap:wrap;gap:.5rem;padding:0;margin:0 0 1rem}"
        ".filter a{display:inline-block;padding:.2rem .5rem;border:1px solid var(--line);"
        "border-radius:.4rem;text-decoration:none;color:var(--fg)}"
        ".filter a[aria-current]{outline:3px solid var(--link);outline-offset:1px}"
        ".pill{display:inline-block;padding:.05rem .45rem;border-radius:.3rem;font-weight:600;"
        "font-size:.85rem;white-space:nowrap}"
        ".label{display:inline-block;max-width:18rem;overflow:hidden;text-overflow:ellipsis;"
        "white-space:nowrap;vertical-align:bottom;margin:.15rem .3rem 0 0;padding:0 .35rem;"
        "border:1px solid var(--line);border-radius:.3rem;font-size:.8rem;font-weight:400}"
        ".scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}"
        "caption{text-align:left;color:var(--muted);padding:.25rem 0}"
        "th,td{text-align:left;vertical-align:top;padding:.45rem .6rem;"
        "border-bottom:1px solid var(--line)}"
        "thead th{font-size:.8rem;color:var(--muted);border-bottom:2px solid var(--line)}"
        "tbody th{font-weight:600;word-break:break-word}td:first-child{padding-left:.9rem}"
        ".empty{font-size:1.2rem}"
        ".notice{padding:.5rem .75rem;border:2px solid #b42318;border-radius:.4rem}"
        f"footer{{margin-top:1rem;font-size:.85rem}}{tones}"
    )


def _scheme_vars(colours: tuple[str, str, str, str]) -> str:
    bg, fg, muted, link = colours
    return f"--bg:{bg};--fg:{fg};--muted:{muted};--link:{link};--line:{muted}55"
