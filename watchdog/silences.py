"""Silences: alerts whose labels match a silence send nothing while it is active.

A silence is a set of label matchers and a time window, as in Alertmanager
(https://prometheus.io/docs/alerting/latest/alertmanager/#silences).  An alert
is silenced when every matcher of an active silence matches its labels:
``pipeline``, ``check``, ``severity`` and the carried labels.

Silences come from two places.  Those written in the configuration (source
``config``) are rebuilt from it on each load, with ids derived from their
content, so a restart gives them the same ids; they are never stored, and the
API cannot expire them (edit the configuration instead).  Those created through
the API (source ``api``) are kept in the state store and survive restarts.
Expired silences stay listed for a day, then are dropped from the store.

The book is shared by the HTTP API's threads and the evaluation thread: every
read and write goes through one lock, and silences themselves are immutable.
"""

import hashlib
import json
import logging
import math
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from watchdog.config import SilenceConfig
from watchdog.durations import iso_time
from watchdog.exceptions import StoreError, WatchdogError
from watchdog.store import SilenceRecord

log = logging.getLogger(__name__)

CONFIG = "config"
API = "api"

SilenceState = Literal["pending", "active", "expired"]

# How long an expired silence stays listed (and stored) after it ended.
RETENTION = 24 * 3600.0

# Label names as Prometheus defines them:
# https://prometheus.io/docs/concepts/data_model/#metric-names-and-labels
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class SilenceStore(Protocol):
    """Where API silences are kept across restarts: the silence methods of
    :class:`watchdog.store.StateStore`."""

    def load_silences(self) -> list[SilenceRecord]: ...

    def save_silence(self, silence: SilenceRecord) -> None: ...

    def delete_silence(self, silence_id: str) -> bool: ...


class ConfigSilenceError(WatchdogError):
    """A silence from the configuration cannot be changed through the API."""


@dataclass(frozen=True)
class Matcher:
    """One label condition, with Alertmanager's semantics.

    A regex must match the whole value (it is anchored at both ends); a label the
    alert does not have counts as the empty string; ``is_equal=False`` negates.
    """

    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.is_regex:
            return
        try:
            pattern = re.compile(self.value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {self.value!r}: {exc}") from None
        object.__setattr__(self, "_pattern", pattern)

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.name, "")
        if self._pattern is not None:
            found = self._pattern.fullmatch(value) is not None
        else:
            found = value == self.value
        return found == self.is_equal

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "is_regex": self.is_regex,
            "is_equal": self.is_equal,
        }


@dataclass(frozen=True)
class Silence:
    """Matchers and a window ``[starts_at, ends_at)`` in unix seconds."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    comment: str
    created_by: str
    created_at: float
    source: str  # CONFIG or API

    def is_active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str], now: float) -> bool:
        """Whether this silence, active at ``now``, silences an alert with these labels."""
        return self.is_active(now) and all(m.matches(labels) for m in self.matchers)

    def state(self, now: float) -> SilenceState:
        """``pending`` before it starts, ``active`` during its window, then ``expired``."""
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def to_record(self) -> SilenceRecord:
        return SilenceRecord(
            id=self.id,
            matchers=[m.to_dict() for m in self.matchers],
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            comment=self.comment,
            created_by=self.created_by,
            created_at=self.created_at,
            source=self.source,
        )

    @classmethod
    def from_record(cls, record: SilenceRecord) -> "Silence":
        return cls(
            id=record.id,
            matchers=tuple(Matcher(**m) for m in record.matchers),
            starts_at=record.starts_at,
            ends_at=record.ends_at,
            comment=record.comment,
            created_by=record.created_by,
            created_at=record.created_at,
            source=record.source,
        )


def parse_matchers(data: object) -> list[Matcher]:
    """Matchers from JSON-like data (``[{"name", "value", "is_regex"?, "is_equal"?}]``).

    Raises ValueError with one line naming the field, such as
    ``matchers[1].value: invalid regular expression '(': ...``.
    """
    if not isinstance(data, list):
        raise ValueError("matchers: must be a list of {name, value, is_regex, is_equal}")
    return [_parse_matcher(item, f"matchers[{index}]") for index, item in enumerate(data)]


def _parse_matcher(item: object, where: str) -> Matcher:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: must be an object with name and value")
    unknown = sorted(set(item) - {"name", "value", "is_regex", "is_equal"})
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown field")

    for key, kind, required in (
        ("name", str, True),
        ("value", str, True),
        ("is_regex", bool, False),
        ("is_equal", bool, False),
    ):
        if key not in item and required:
            raise ValueError(f"{where}.{key}: required")
        if key in item and not isinstance(item[key], kind):
            raise ValueError(f"{where}.{key}: must be a {'string' if kind is str else 'boolean'}")

    try:
        return Matcher(**item)
    except ValueError as exc:
        raise ValueError(f"{where}.value: {exc}") from None


class SilenceBook:
    """Every silence, from the configuration and the API; safe to share between threads."""

    def __init__(self, store: SilenceStore, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._silences: dict[str, Silence] = {}

    def load(self, config_silences: Sequence[SilenceConfig]) -> None:
        """Replace every silence with the stored API ones and those of the configuration."""
        now = self._clock()
        with self._lock:
            stored = _from_records(self._store.load_silences())
            # The configuration is the only source of config silences: stale copies go.
            silences = [s for s in stored if s.source != CONFIG]
            silences += [_from_config(config, now) for config in config_silences]

            self._silences = {s.id: s for s in silences}
            self._drop_old(now)
        log.debug(
            "loaded %d silences (%d from the configuration)", len(silences), len(config_silences)
        )

    def create(
        self,
        matchers: Sequence[Matcher],
        ends_at: float,
        comment: str,
        created_by: str,
        starts_at: float | None = None,
    ) -> Silence:
        """Validate, store and return a new API silence; ValueError names the bad field.

        A start in the past becomes now, as in Alertmanager: a silence cannot
        have silenced anything before it existed.
        """
        now = self._clock()
        if starts_at is not None and not math.isfinite(starts_at):
            raise ValueError("starts_at: must be a finite time")
        start = now if starts_at is None else max(starts_at, now)
        _check(matchers, start, ends_at, now, comment, created_by)
        silence = Silence(
            id=str(uuid.uuid4()),
            matchers=tuple(matchers),
            starts_at=start,
            ends_at=ends_at,
            comment=comment.strip(),
            created_by=created_by.strip(),
            created_at=now,
            source=API,
        )

        with self._lock:
            # Stored first: a silence the store refused must not silence anything.
            self._store.save_silence(silence.to_record())
            self._silences[silence.id] = silence
            self._drop_old(now)
        log.info(
            "silence %s created by %s until %s: %s",
            silence.id,
            _one_line(silence.created_by),
            iso_time(silence.ends_at),
            _one_line(silence.comment),
        )
        return silence

    def expire(self, silence_id: str) -> bool:
        """End an API silence now; False if there is no such silence.

        Raises ConfigSilenceError for a silence from the configuration.  An
        already expired silence is left as it was.
        """
        now = self._clock()
        with self._lock:
            silence = self._silences.get(silence_id)
            if silence is None:
                return False
            if silence.source == CONFIG:
                raise ConfigSilenceError(
                    f"silence {silence_id} comes from the configuration: remove it there"
                )
            if silence.state(now) == "expired":
                return True

            # A pending silence ends before it starts: its window becomes empty.
            expired = replace(silence, starts_at=min(silence.starts_at, now), ends_at=now)
            self._store.save_silence(expired.to_record())
            self._silences[silence_id] = expired
        log.info("silence %s expired: %s", silence_id, _one_line(silence.comment))
        return True

    def now(self) -> float:
        """The book's clock, so callers show states as of the same moment."""
        return self._clock()

    def get(self, silence_id: str) -> Silence | None:
        with self._lock:
            return self._silences.get(silence_id)

    # list() follows these: after it, ``list`` in this class's annotations is the method.
    def active(self, now: float) -> list[Silence]:
        with self._lock:
            return [s for s in self._silences.values() if s.is_active(now)]

    def silencing(self, labels: Mapping[str, str], now: float) -> Silence | None:
        """The active silence that silences these labels, or None.

        When several do, the one ending last: the alert stays silent until then.
        """
        matching = [s for s in self.active(now) if s.matches(labels, now)]
        return max(matching, key=lambda s: (s.ends_at, s.id), default=None)

    def list(self, now: float | None = None) -> list[Silence]:
        """Active and pending silences first, then those expired within the last day.

        Active and pending ones come soonest ending first; expired ones most
        recently ended first.
        """
        moment = self._clock() if now is None else now
        with self._lock:
            silences = list(self._silences.values())

        def order(silence: Silence) -> tuple[int, float, str]:
            if silence.state(moment) == "expired":
                return (1, -silence.ends_at, silence.id)
            return (0, silence.ends_at, silence.id)

        shown = [s for s in silences if s.ends_at > moment - RETENTION]
        return sorted(shown, key=order)

    def _drop_old(self, now: float) -> None:
        """Forget silences that expired more than RETENTION ago (lock held)."""
        old = [s for s in self._silences.values() if s.ends_at <= now - RETENTION]
        for silence in old:
            del self._silences[silence.id]
            if silence.source == API:
                self._forget(silence.id)
        if old:
            log.debug("dropped %d silences expired more than a day ago", len(old))

    def _forget(self, silence_id: str) -> None:
        try:
            self._store.delete_silence(silence_id)
        except StoreError as exc:
            # Housekeeping only: the next load tries again, and the caller's own
            # change (a new silence, say) was already saved.
            log.warning("could not delete expired silence %s: %s", silence_id, exc)


def _from_records(records: Sequence[SilenceRecord]) -> list[Silence]:
    silences = []
    for record in records:
        try:
            silences.append(Silence.from_record(record))
        except (TypeError, ValueError) as exc:
            # One damaged row must not keep the watchdog from starting.
            log.warning("stored silence %s ignored: %s", record.id, exc)
    return silences


def _check(
    matchers: Sequence[Matcher],
    starts_at: float,
    ends_at: float,
    now: float,
    comment: str,
    created_by: str,
) -> None:
    if not matchers:
        raise ValueError("matchers: at least one matcher is required")
    for index, matcher in enumerate(matchers):
        if not _LABEL_NAME.match(matcher.name):
            raise ValueError(f"matchers[{index}].name: invalid label name {matcher.name!r}")
    # As Alertmanager does: matchers that all accept an absent label would silence
    # every alert, which is never what was meant.
    if all(m.matches({}) for m in matchers):
        raise ValueError(
            "matchers: at least one matcher must not match the empty string "
            "(these would silence every alert)"
        )

    if not math.isfinite(ends_at):
        raise ValueError("ends_at: must be a finite time")
    if ends_at <= now:
        raise ValueError("ends_at: must be in the future")
    if ends_at <= starts_at:
        raise ValueError("ends_at: must be after starts_at")
    if not comment.strip():
        raise ValueError("comment: must not be empty")
    if not created_by.strip():
        raise ValueError("created_by: must not be empty")


def _from_config(config: SilenceConfig, now: float) -> Silence:
    matchers = tuple(
        Matcher(m.name, m.value, is_regex=m.is_regex, is_equal=m.is_equal) for m in config.matchers
    )
    starts_at = config.starts_at.timestamp() if config.starts_at is not None else None
    ends_at = config.ends_at.timestamp()
    content = {
        "matchers": [m.to_dict() for m in matchers],
        "starts_at": starts_at,
        "ends_at": ends_at,
        "comment": config.comment,
        "created_by": config.created_by,
    }
    return Silence(
        id=_content_id(content),
        matchers=matchers,
        # Without a start it is in force from the moment the configuration is loaded.
        starts_at=now if starts_at is None else starts_at,
        ends_at=ends_at,
        comment=config.comment,
        created_by=config.created_by,
        created_at=now,
        source=CONFIG,
    )


def _content_id(content: Mapping[str, Any]) -> str:
    # Times are unix seconds, so 04:00+01:00 and 03:00Z give the same id.
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return "config-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _one_line(text: str) -> str:
    # A comment is free text from a client: escape anything that could forge a log line.
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
