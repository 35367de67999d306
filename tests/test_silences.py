"""Silences: matcher semantics, states, the book's rules, with an injected clock and an
in-memory store."""

import logging
import threading
from dataclasses import replace
from typing import Any

import pytest

from watchdog.config import SilenceConfig
from watchdog.exceptions import StoreError
from watchdog.silences import (
    ConfigSilenceError,
    Matcher,
    Silence,
    SilenceBook,
    parse_matchers,
)
from watchdog.store import SilenceRecord

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z, the FakeClock's start
HOUR = 3600.0
DAY = 86400.0


class FakeStore:
    """The state store's silence methods, in memory; hands out copies like a database."""

    def __init__(self) -> None:
        self.records: dict[str, SilenceRecord] = {}
        self.lock = threading.Lock()
        self.broken = False  # deletions fail, as on a full disk

    def load_silences(self) -> list[SilenceRecord]:
        with self.lock:
            return [_copy(r) for r in self.records.values()]

    def save_silence(self, silence: SilenceRecord) -> None:
        with self.lock:
            self.records[silence.id] = _copy(silence)

    def delete_silence(self, silence_id: str) -> bool:
        if self.broken:
            raise StoreError("cannot write state.path 'state.db': disk full")
        with self.lock:
            return self.records.pop(silence_id, None) is not None


def _copy(record: SilenceRecord) -> SilenceRecord:
    return replace(record, matchers=[dict(m) for m in record.matchers])


def train_only() -> list[Matcher]:
    return [Matcher("pipeline", "train")]


def config_silence(**changes: Any) -> SilenceConfig:
    data: dict[str, Any] = {
        "matchers": [{"name": "team", "value": "ml"}],
        "ends_at": "2027-01-16T00:00:00Z",
        "comment": "migration week",
    }
    data.update(changes)
    return SilenceConfig.model_validate(data)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def book(store: FakeStore, clock) -> SilenceBook:
    book = SilenceBook(store, clock)
    book.load([])
    return book


# Matchers


def test_regex_matcher_must_match_the_whole_value() -> None:
    exact = Matcher("pipeline", "train", is_regex=True)
    prefix = Matcher("pipeline", "train.*", is_regex=True)

    assert exact.matches({"pipeline": "train"})
    assert not exact.matches({"pipeline": "training"})
    assert not exact.matches({"pipeline": "pretrain"})
    assert prefix.matches({"pipeline": "training"})


def test_alternation_is_anchored_as_a_whole() -> None:
    matcher = Matcher("pipeline", "a|b", is_regex=True)

    assert matcher.matches({"pipeline": "a"})
    assert not matcher.matches({"pipeline": "ab"})
    assert not matcher.matches({"pipeline": "xa"})


def test_equality_matcher_takes_regex_characters_literally() -> None:
    matcher = Matcher("pipeline", "a.c")

    assert matcher.matches({"pipeline": "a.c"})
    assert not matcher.matches({"pipeline": "abc"})


def test_is_equal_false_negates_both_kinds() -> None:
    not_train = Matcher("pipeline", "train", is_equal=False)
    not_nightly = Matcher("pipeline", "nightly-.*", is_regex=True, is_equal=False)

    assert not not_train.matches({"pipeline": "train"})
    assert not_train.matches({"pipeline": "serve"})
    assert not not_nightly.matches({"pipeline": "nightly-build"})
    assert not_nightly.matches({"pipeline": "hourly-build"})


def test_a_missing_label_counts_as_the_empty_string() -> None:
    no_team: dict[str, str] = {}

    assert Matcher("team", "").matches(no_team)
    assert not Matcher("team", "ml").matches(no_team)
    assert not Matcher("team", "", is_equal=False).matches(no_team)
    assert Matcher("team", "", is_equal=False).matches({"team": "ml"})
    assert Matcher("team", "ml|", is_regex=True).matches(no_team)
    assert Matcher("team", "ml", is_equal=False).matches(no_team)


def test_an_invalid_regex_is_refused_when_the_matcher_is_made() -> None:
    with pytest.raises(ValueError, match=r"^invalid regular expression '\(':"):
        Matcher("pipeline", "(", is_regex=True)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "a"}, "matchers: must be a list of {name, value, is_regex, is_equal}"),
        (["a=b"], "matchers[0]: must be an object with name and value"),
        ([{"value": "x"}], "matchers[0].name: required"),
        ([{"name": "a", "value": 1}], "matchers[0].value: must be a string"),
        (
            [{"name": "a", "value": "x", "is_regex": "yes"}],
            "matchers[0].is_regex: must be a boolean",
        ),
        ([{"name": "a", "value": "x", "isRegex": True}], "matchers[0].isRegex: unknown field"),
    ],
)
def test_parse_matchers_names_the_bad_field(data: object, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_matchers(data)

    assert str(raised.value) == message


def test_parse_matchers_names_the_matcher_with_a_bad_regex() -> None:
    data = [{"name": "a", "value": "x"}, {"name": "b", "value": "[", "is_regex": True}]

    with pytest.raises(ValueError) as raised:
        parse_matchers(data)

    assert str(raised.value).startswith("matchers[1].value: invalid regular expression '['")


def test_parse_matchers_fills_alertmanager_defaults() -> None:
    matchers = parse_matchers([{"name": "pipeline", "value": "train"}])

    assert matchers == [Matcher("pipeline", "train", is_regex=False, is_equal=True)]


# Silences


def silence(starts_at: float, ends_at: float, matchers: list[Matcher] | None = None) -> Silence:
    return Silence(
        id="s1",
        matchers=tuple(matchers or train_only()),
        starts_at=starts_at,
        ends_at=ends_at,
        comment="c",
        created_by="me",
        created_at=NOW,
        source="api",
    )


def test_silence_is_pending_then_active_then_expired_at_its_end() -> None:
    window = silence(NOW + HOUR, NOW + 2 * HOUR)

    assert window.state(NOW) == "pending"
    assert window.state(NOW + HOUR) == "active"
    assert window.is_active(NOW + 2 * HOUR - 1)
    assert window.state(NOW + 2 * HOUR) == "expired"
    assert not window.is_active(NOW + 2 * HOUR)


def test_silence_matches_only_while_active_and_when_every_matcher_matches() -> None:
    window = silence(
        NOW, NOW + HOUR, [Matcher("pipeline", "train"), Matcher("severity", "warning")]
    )
    labels = {"pipeline": "train", "check": "last_success", "severity": "warning"}

    assert window.matches(labels, NOW)
    assert not window.matches({**labels, "severity": "critical"}, NOW)
    assert not window.matches(labels, NOW - 1)
    assert not window.matches(labels, NOW + HOUR)


# The book: create


def test_created_silence_is_stored_active_and_listed(book: SilenceBook, store: FakeStore) -> None:
    created = book.create(train_only(), NOW + HOUR, " deploying ", "alice")

    assert created.state(NOW) == "active"
    assert (created.starts_at, created.created_at, created.source) == (NOW, NOW, "api")
    assert created.comment == "deploying"
    assert book.list() == [created]
    record = store.records[created.id]
    assert record.matchers == [
        {"name": "pipeline", "value": "train", "is_regex": False, "is_equal": True}
    ]
    assert (record.ends_at, record.source, record.created_by) == (NOW + HOUR, "api", "alice")


def test_a_start_in_the_past_becomes_now(book: SilenceBook) -> None:
    created = book.create(train_only(), NOW + HOUR, "c", "alice", starts_at=NOW - HOUR)

    assert created.starts_at == NOW


def test_a_future_start_makes_a_pending_silence(book: SilenceBook) -> None:
    created = book.create(train_only(), NOW + 2 * HOUR, "c", "alice", starts_at=NOW + HOUR)

    assert created.state(NOW) == "pending"
    assert book.active(NOW) == []


@pytest.mark.parametrize(
    ("matchers", "ends_at", "starts_at", "comment", "message"),
    [
        ([], NOW + HOUR, None, "c", "matchers: at least one matcher is required"),
        (
            [Matcher("bad-name", "x")],
            NOW + HOUR,
            None,
            "c",
            "matchers[0].name: invalid label name 'bad-name'",
        ),
        (
            [Matcher("team", ".*", is_regex=True), Matcher("x", "")],
            NOW + HOUR,
            None,
            "c",
            "matchers: at least one matcher must not match the empty string "
            "(these would silence every alert)",
        ),
        (train_only(), NOW, None, "c", "ends_at: must be in the future"),
        (train_only(), float("nan"), None, "c", "ends_at: must be a finite time"),
        (train_only(), NOW + HOUR, NOW + 2 * HOUR, "c", "ends_at: must be after starts_at"),
        (train_only(), NOW + HOUR, None, "  ", "comment: must not be empty"),
    ],
)
def test_create_refuses_with_one_line_naming_the_field(
    book: SilenceBook,
    store: FakeStore,
    matchers: list[Matcher],
    ends_at: float,
    starts_at: float | None,
    comment: str,
    message: str,
) -> None:
    with pytest.raises(ValueError) as raised:
        book.create(matchers, ends_at, comment, "alice", starts_at=starts_at)

    assert str(raised.value) == message
    assert store.records == {}
    assert book.list() == []


def test_create_refuses_an_empty_author(book: SilenceBook) -> None:
    with pytest.raises(ValueError, match=r"^created_by: must not be empty$"):
        book.create(train_only(), NOW + HOUR, "c", " ")


def test_creation_is_logged_on_one_line(book: SilenceBook, caplog) -> None:
    caplog.set_level(logging.INFO, logger="watchdog.silences")

    created = book.create(train_only(), NOW + HOUR, "deploy\nsilence x expired: forged", "al")

    assert caplog.messages == [
        f"silence {created.id} created by al until 2027-01-15T09:00:00Z: "
        "deploy\\nsilence x expired: forged"
    ]


# The book: expire


def test_expire_ends_an_api_silence_now_and_stores_it(
    book: SilenceBook, store: FakeStore, clock
) -> None:
    created = book.create(train_only(), NOW + HOUR, "c", "alice")
    clock.advance(60)

    expired = book.expire(created.id)

    assert expired is True
    after = book.get(created.id)
    assert after is not None
    assert (after.state(clock()), after.ends_at) == ("expired", NOW + 60)
    assert store.records[created.id].ends_at == NOW + 60
    assert book.silencing({"pipeline": "train"}, clock()) is None


def test_expire_of_a_pending_silence_leaves_an_empty_window(book: SilenceBook) -> None:
    created = book.create(train_only(), NOW + 2 * HOUR, "c", "alice", starts_at=NOW + HOUR)

    book.expire(created.id)

    after = book.get(created.id)
    assert after is not None
    assert (after.starts_at, after.ends_at, after.state(NOW)) == (NOW, NOW, "expired")


def test_expiring_twice_keeps_the_first_end(book: SilenceBook, clock) -> None:
    created = book.create(train_only(), NOW + HOUR, "c", "alice")
    book.expire(created.id)
    clock.advance(60)

    again = book.expire(created.id)

    assert again is True
    after = book.get(created.id)
    assert after is not None and after.ends_at == NOW


def test_expire_of_an_unknown_id_is_false(book: SilenceBook) -> None:
    assert book.expire("no-such-silence") is False


def test_a_config_silence_cannot_be_expired(store: FakeStore, clock) -> None:
    book = SilenceBook(store, clock)
    book.load([config_silence()])
    (from_config,) = book.list()

    with pytest.raises(ConfigSilenceError, match="comes from the configuration"):
        book.expire(from_config.id)

    assert book.list() == [from_config]


# The book: list, active, silencing


def test_list_shows_live_silences_soonest_ending_first_then_recently_expired(
    book: SilenceBook, clock
) -> None:
    long = book.create(train_only(), NOW + 3 * HOUR, "long", "a")
    pending = book.create(train_only(), NOW + 2 * HOUR, "pending", "a", starts_at=NOW + HOUR)
    short = book.create(train_only(), NOW + HOUR, "short", "a")
    first_expired = book.create(train_only(), NOW + HOUR, "first", "a")
    later_expired = book.create(train_only(), NOW + HOUR, "later", "a")
    book.expire(first_expired.id)
    clock.advance(60)
    book.expire(later_expired.id)

    listed = book.list()

    assert [s.comment for s in listed] == ["short", "pending", "long", "later", "first"]
    assert [s.state(clock()) for s in listed] == [
        "active",
        "pending",
        "active",
        "expired",
        "expired",
    ]
    assert {long.id, pending.id, short.id} <= {s.id for s in listed}


def test_silences_expired_over_a_day_ago_leave_the_list_and_the_store(
    book: SilenceBook, store: FakeStore, clock
) -> None:
    old = book.create(train_only(), NOW + HOUR, "old", "a")
    clock.advance(HOUR + DAY - 1)
    still_listed = book.list()
    clock.advance(1)

    listed = book.list()
    book.load([])

    assert [s.id for s in still_listed] == [old.id]
    assert listed == []
    assert store.records == {}


def test_a_failed_cleanup_does_not_fail_a_creation(
    book: SilenceBook, store: FakeStore, clock, caplog
) -> None:
    old = book.create(train_only(), NOW + HOUR, "old", "a")
    clock.advance(HOUR + DAY)
    store.broken = True

    created = book.create(train_only(), clock() + HOUR, "new", "a")

    assert book.list() == [created]
    assert set(store.records) == {old.id, created.id}
    assert f"could not delete expired silence {old.id}: cannot write" in caplog.text


def test_silencing_returns_the_matching_active_silence_that_ends_last(book: SilenceBook) -> None:
    book.create(train_only(), NOW + HOUR, "short", "a")
    longest = book.create([Matcher("pipeline", "tr.*", is_regex=True)], NOW + 2 * HOUR, "l", "a")
    book.create([Matcher("pipeline", "serve")], NOW + 3 * HOUR, "other pipeline", "a")
    book.create(train_only(), NOW + 4 * HOUR, "pending", "a", starts_at=NOW + HOUR)
    labels = {"pipeline": "train", "check": "last_success", "severity": "critical"}

    found = book.silencing(labels, NOW)

    assert found == longest
    assert len(book.active(NOW)) == 3
    assert book.silencing({"pipeline": "feature-build"}, NOW) is None


# The book: load, config silences, persistence


def test_api_silences_survive_a_restart_through_the_store(store: FakeStore, clock) -> None:
    before = SilenceBook(store, clock)
    before.load([])
    matchers = [Matcher("pipeline", "train"), Matcher("team", "ml|data", True, is_equal=False)]
    created = before.create(matchers, NOW + HOUR, "c", "alice")

    after = SilenceBook(store, clock)
    after.load([])

    assert after.list() == [created]
    assert after.silencing({"pipeline": "train", "team": "infra"}, NOW) == created
    assert after.silencing({"pipeline": "train", "team": "ml"}, NOW) is None


def test_config_silences_keep_their_ids_across_restarts_and_are_never_stored(
    store: FakeStore, clock
) -> None:
    configs = [config_silence(), config_silence(comment="other")]
    first, second = SilenceBook(store, clock), SilenceBook(store, clock)

    first.load(configs)
    clock.advance(HOUR)
    second.load(configs)

    ids = [s.id for s in first.list()]
    assert ids == [s.id for s in second.list()]
    assert len(set(ids)) == 2
    assert all(i.startswith("config-") for i in ids)
    assert {s.source for s in second.list()} == {"config"}
    assert store.records == {}


def test_config_silence_id_depends_on_the_instant_not_its_notation(
    store: FakeStore, clock
) -> None:
    utc, berlin, later = (
        SilenceBook(store, clock),
        SilenceBook(store, clock),
        SilenceBook(store, clock),
    )

    utc.load([config_silence(ends_at="2027-01-16T00:00:00Z")])
    berlin.load([config_silence(ends_at="2027-01-16T01:00:00+01:00")])
    later.load([config_silence(ends_at="2027-01-16T00:00:01Z")])

    assert utc.list()[0].id == berlin.list()[0].id
    assert utc.list()[0].id != later.list()[0].id


def test_a_config_silence_without_a_start_is_in_force_from_the_load(
    book: SilenceBook, clock
) -> None:
    book.load([config_silence(created_by="ops")])

    (loaded,) = book.active(NOW)

    assert (loaded.starts_at, loaded.created_by, loaded.source) == (NOW, "ops", "config")
    assert book.silencing({"pipeline": "train", "team": "ml"}, NOW) == loaded


def test_reloading_replaces_config_silences_and_keeps_api_ones(book: SilenceBook) -> None:
    book.load([config_silence()])
    created = book.create(train_only(), NOW + HOUR, "c", "alice")

    book.load([config_silence(comment="changed")])

    assert sorted(s.comment for s in book.list()) == ["c", "changed"]
    assert book.get(created.id) == created


def test_config_records_found_in_the_store_are_ignored(store: FakeStore, clock) -> None:
    stray = silence(NOW, NOW + HOUR).to_record()
    store.save_silence(replace(stray, id="config-stale", source="config"))
    book = SilenceBook(store, clock)

    book.load([])

    assert book.list() == []


def test_a_damaged_stored_silence_is_skipped_with_a_warning(
    store: FakeStore, clock, caplog
) -> None:
    good = silence(NOW, NOW + HOUR).to_record()
    bad = replace(good, id="s2", matchers=[{"name": "a", "value": "(", "is_regex": True}])
    store.save_silence(good)
    store.save_silence(bad)
    book = SilenceBook(store, clock)

    book.load([])

    assert [s.id for s in book.list()] == ["s1"]
    assert "stored silence s2 ignored: invalid regular expression" in caplog.text


# Threads


def test_api_threads_and_the_evaluation_thread_can_share_the_book(
    book: SilenceBook, store: FakeStore
) -> None:
    errors: list[BaseException] = []
    labels = {"pipeline": "train"}

    def create_and_expire(worker: int) -> None:
        try:
            for n in range(50):
                made = book.create(train_only(), NOW + HOUR, f"{worker}-{n}", "t")
                book.silencing(labels, NOW)
                if n % 2:
                    book.expire(made.id)
                book.list(NOW)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create_and_expire, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert not any(t.is_alive() for t in threads)
    assert len(book.list()) == len(store.records) == 400
    assert len(book.active(NOW)) == 200
