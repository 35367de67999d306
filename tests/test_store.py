import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from watchdog.exceptions import StoreError
from watchdog.store import MIGRATIONS, AlertRecord, SilenceRecord, StateStore

NOW = 1_800_000_000.0
REPO = Path(__file__).resolve().parents[1]

# Version 1 of the schema as released, written out here on purpose: a file made by
# the first release must keep opening, whatever the migrations become.
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE alerts (
    pipeline TEXT NOT NULL, check_name TEXT NOT NULL, state TEXT NOT NULL,
    severity TEXT, active_since REAL NOT NULL, firing_since REAL, clear_since REAL,
    last_notified_at REAL, last_notified_severity TEXT,
    notify_pending INTEGER NOT NULL DEFAULT 0, held_by TEXT,
    receivers TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (pipeline, check_name)) WITHOUT ROWID;
CREATE TABLE silences (
    id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts_at REAL NOT NULL,
    ends_at REAL NOT NULL, comment TEXT NOT NULL, created_by TEXT NOT NULL,
    created_at REAL NOT NULL, source TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
"""


class StoreWithOutbox(StateStore):
    """The store as it will be once a later schema version exists."""

    MIGRATIONS = (
        *MIGRATIONS,
        (
            "CREATE TABLE future (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
            "ALTER TABLE alerts ADD COLUMN note TEXT",
        ),
    )
    SCHEMA_VERSION = len(MIGRATIONS)


def alert(pipeline: str = "train", check: str = "last_success", **changes: object) -> AlertRecord:
    record = AlertRecord(
        pipeline=pipeline,
        check=check,
        state="firing",
        severity="critical",
        active_since=NOW - 600.125,
        firing_since=NOW - 300.0000001,
        last_notified_at=NOW,
        last_notified_severity="warning",
        receivers=["ops-webhook", "team-slack"],
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def silence(silence_id: str = "s1", **changes: object) -> SilenceRecord:
    record = SilenceRecord(
        id=silence_id,
        matchers=[{"name": "pipeline", "value": "train.*", "is_regex": True, "is_equal": True}],
        starts_at=NOW,
        ends_at=NOW + 3600.5,
        comment="maintenance \N{WRENCH}",
        created_by="alice",
        created_at=NOW - 1.0,
        source="api",
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def store(path: Path) -> Iterator[StateStore]:
    with StateStore.open(path) as opened:
        yield opened


def write_v1_file(path: Path, *alerts: tuple[str, str]) -> None:
    with sqlite3.connect(path) as connection:
        connection.executescript(V1_SCHEMA)
        connection.executemany(
            "INSERT INTO alerts (pipeline, check_name, state, active_since, receivers)"
            " VALUES (?, ?, 'firing', 1800000000.5, '[\"ops\"]')",
            alerts,
        )
    connection.close()


def schema_version(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    connection.close()
    return str(row[0])


def moved_aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".corrupt-*"))


# Opening


def test_open_creates_the_directory_and_the_current_schema(path: Path) -> None:
    with StateStore.open(path) as store:
        alerts = store.load_alerts()
        silences = store.load_silences()

    assert alerts == {}
    assert silences == []
    assert schema_version(path) == str(StateStore.SCHEMA_VERSION)
    assert store.recovered_from is None


def test_open_uses_the_write_ahead_log(store: StateStore, path: Path) -> None:
    with sqlite3.connect(path) as observer:
        mode = observer.execute("PRAGMA journal_mode").fetchone()[0]
    observer.close()

    assert mode == "wal"


def test_reopened_store_has_what_was_saved(path: Path) -> None:
    with StateStore.open(path) as store:
        store.save_alerts([alert("train"), alert("score", "features")])
        store.save_silence(silence())
        store.set_meta("last_cycle", "42")

    with StateStore.open(path) as store:
        alerts = store.load_alerts()
        silences = store.load_silences()
        meta = store.get_meta("last_cycle")

    assert alerts == {
        ("train", "last_success"): alert("train"),
        ("score", "features"): alert("score", "features"),
    }
    assert silences == [silence()]
    assert meta == "42"


def test_empty_file_is_taken_as_a_new_store(path: Path) -> None:
    path.parent.mkdir()
    path.touch()

    with StateStore.open(path) as store:
        alerts = store.load_alerts()

    assert alerts == {}
    assert store.recovered_from is None
    assert moved_aside(path) == []


# Not writable


def test_parent_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a directory")
    path = tmp_path / "state" / "state.db"

    with pytest.raises(StoreError) as raised:
        StateStore.open(path)

    assert str(raised.value) == (
        f"state.path '{path}': cannot write: Not a directory ('{tmp_path / 'state'}')"
    )


def test_parent_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    path = tmp_path / "file" / "state" / "state.db"

    with pytest.raises(StoreError) as raised:
        StateStore.open(path)

    assert str(raised.value) == (
        f"state.path '{path}': cannot write: Not a directory ('{tmp_path / 'file' / 'state'}')"
    )


def test_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.mkdir()

    with pytest.raises(StoreError) as raised:
        StateStore.open(path)

    assert str(raised.value) == f"state.path '{path}': cannot write: Is a directory"


def open_without_privileges(path: Path) -> subprocess.CompletedProcess[str]:
    """Open the store in a child process that file permissions apply to, even as root
    (root without capabilities is held to the mode bits, as any user)."""
    command = [sys.executable, "-c", OPEN_AND_PRINT_ERROR, str(path)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root, and no setpriv to drop the capabilities that bypass file modes")
        command = [setpriv, "--bounding-set=-all", "--inh-caps=-all", *command]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)


OPEN_AND_PRINT_ERROR = """
import sys
from pathlib import Path
from watchdog.exceptions import StoreError
from watchdog.store import StateStore
try:
    StateStore.open(Path(sys.argv[1])).close()
except StoreError as exc:
    print(exc)
"""


def test_read_only_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o555)

    child = open_without_privileges(directory / "state.db")

    assert child.stderr == ""
    assert (
        child.stdout == f"state.path '{directory / 'state.db'}': cannot write: Permission denied\n"
    )


def test_existing_file_in_read_only_directory_is_refused(path: Path) -> None:
    StateStore.open(path).close()
    path.parent.chmod(0o555)

    child = open_without_privileges(path)

    assert child.stderr == ""
    assert child.stdout == (
        f"state.path '{path}': cannot write: Permission denied ('{path.parent}')\n"
    )


def test_read_only_file_is_refused(path: Path) -> None:
    StateStore.open(path).close()
    path.chmod(0o444)

    child = open_without_privileges(path)

    assert child.stderr == ""
    assert child.stdout == f"state.path '{path}': cannot write: Permission denied\n"


# Alerts


def test_alert_round_trips_every_field_exactly(store: StateStore) -> None:
    saved = AlertRecord(
        pipeline="train",
        check="features",
        state="pending",
        severity=None,
        active_since=0.1 + 0.2,
        firing_since=1_800_000_000.123456789,
        clear_since=5e-324,
        last_notified_at=float("inf"),
        last_notified_severity="critical",
        notify_pending=True,
        held_by="ingest",
        receivers=["ops", 'team "slack"', "\N{PILE OF POO}"],
    )

    store.save_alerts([saved])
    loaded = store.load_alerts()[saved.key]

    assert loaded == saved
    assert loaded.active_since.hex() == (0.1 + 0.2).hex()
    assert loaded.firing_since == 1_800_000_000.123456789


def test_alert_with_defaults_round_trips(store: StateStore) -> None:
    saved = AlertRecord("train", "last_success", "pending", None, NOW)

    store.save_alerts([saved])

    assert store.load_alerts() == {saved.key: saved}


@pytest.mark.parametrize(
    "pipeline",
    [
        'it\'s "quoted"',
        "two\nlines\r\nand a tab\t",
        "nul\x00inside",
        "\N{ROCKET} ñ 日本語 עברית \u200b",
        "'); DROP TABLE alerts; --",
        "back\\slash %s %(x)s ?",
        "x" * 10_000,
        "",
    ],
)
def test_any_pipeline_name_round_trips(store: StateStore, pipeline: str) -> None:
    saved = alert(pipeline, check=pipeline + "/check", held_by=pipeline)

    store.save_alerts([saved])
    loaded = store.load_alerts()

    assert loaded == {(pipeline, pipeline + "/check"): saved}


def test_save_replaces_changed_alerts_and_deletes_the_others(store: StateStore) -> None:
    store.save_alerts([alert("a"), alert("b"), alert("c")])

    store.save_alerts([alert("b", state="pending"), alert("d")], deleted=[("a", "last_success")])

    assert store.load_alerts() == {
        ("b", "last_success"): alert("b", state="pending"),
        ("c", "last_success"): alert("c"),
        ("d", "last_success"): alert("d"),
    }


def test_alert_both_changed_and_deleted_is_saved(store: StateStore) -> None:
    store.save_alerts([alert("a")])

    store.save_alerts([alert("a", severity="warning")], deleted=[("a", "last_success")])

    assert store.load_alerts() == {("a", "last_success"): alert("a", severity="warning")}


def test_deleting_an_unknown_alert_is_not_an_error(store: StateStore) -> None:
    store.save_alerts([], deleted=[("never", "saved")])

    assert store.load_alerts() == {}


def test_save_alerts_is_one_transaction(store: StateStore, path: Path) -> None:
    store.save_alerts([alert("kept")])
    # A failure after the delete and the first insert (as a full disk would cause).
    with sqlite3.connect(path) as other:
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON alerts WHEN NEW.pipeline = 'poison'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    other.close()

    with pytest.raises(StoreError, match="cannot write: refused"):
        store.save_alerts([alert("new"), alert("poison")], deleted=[("kept", "last_success")])

    assert list(store.load_alerts()) == [("kept", "last_success")]


def test_saving_nothing_does_not_touch_the_file(tmp_path: Path) -> None:
    durations: list[float] = []
    path = tmp_path / "state.db"
    store = StateStore.open(path, on_write=durations.append)
    store.save_alerts([alert()])
    files = [path, tmp_path / "state.db-wal", tmp_path / "state.db-shm"]
    before = [(f.stat().st_mtime_ns, f.stat().st_size) for f in files]
    observer = sqlite3.connect(path)
    version_before = observer.execute("PRAGMA data_version").fetchone()[0]

    store.save_alerts([])
    store.save_alerts([], deleted=[])
    store.save_alerts(iter(()), deleted=iter(()))

    assert [(f.stat().st_mtime_ns, f.stat().st_size) for f in files] == before
    assert observer.execute("PRAGMA data_version").fetchone()[0] == version_before
    assert len(durations) == 1
    # The observer does see a real write: the check above can fail.
    store.save_alerts([alert("other")])
    assert observer.execute("PRAGMA data_version").fetchone()[0] != version_before
    observer.close()
    store.close()


def test_nan_time_is_refused_before_writing(store: StateStore) -> None:
    with pytest.raises(ValueError, match="a time is NaN"):
        store.save_alerts([alert(firing_since=float("nan"))])

    assert store.load_alerts() == {}


def test_each_write_reports_its_duration(path: Path) -> None:
    durations: list[float] = []
    store = StateStore.open(path, on_write=durations.append)

    store.save_alerts([alert()])
    store.save_silence(silence())
    store.delete_silence("s1")
    store.set_meta("key", "value")
    store.load_alerts()
    store.close()

    assert len(durations) == 4
    assert all(isinstance(d, float) and d >= 0 for d in durations)


def test_threads_share_one_store(store: StateStore) -> None:
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for i in range(50):
                store.save_alerts([alert(f"t{thread}-{i}")])
                store.load_alerts()
                store.save_silence(silence(f"t{thread}-{i}"))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(store.load_alerts()) == 400
    assert len(store.load_silences()) == 400


def test_closed_store_raises_store_error(path: Path) -> None:
    store = StateStore.open(path)
    store.close()
    store.close()

    with pytest.raises(StoreError, match="closed"):
        store.load_alerts()


# Silences and meta


def test_silence_is_saved_replaced_and_deleted(store: StateStore) -> None:
    store.save_silence(silence("s1"))
    store.save_silence(silence("s2", source="config", matchers=[]))

    store.save_silence(silence("s1", ends_at=NOW + 60))
    after_replace = store.load_silences()
    deleted = store.delete_silence("s1")
    deleted_again = store.delete_silence("s1")

    assert after_replace == [
        silence("s1", ends_at=NOW + 60),
        silence("s2", source="config", matchers=[]),
    ]
    assert (deleted, deleted_again) == (True, False)
    assert [s.id for s in store.load_silences()] == ["s2"]


def test_meta_values_round_trip(store: StateStore) -> None:
    store.set_meta("last_evaluation", "1800000000.5")
    store.set_meta("last_evaluation", "1800000030.5")

    assert store.get_meta("last_evaluation") == "1800000030.5"
    assert store.get_meta("absent") is None
    assert store.get_meta("schema_version") == str(StateStore.SCHEMA_VERSION)


def test_schema_version_cannot_be_set_by_hand(store: StateStore) -> None:
    with pytest.raises(ValueError, match="managed by the store"):
        store.set_meta("schema_version", "99")


# Schema versions


def test_version_1_file_opens_with_its_alerts(path: Path) -> None:
    path.parent.mkdir()
    write_v1_file(path, ("train", "last_success"))

    with StateStore.open(path) as store:
        alerts = store.load_alerts()

    assert alerts == {
        ("train", "last_success"): AlertRecord(
            "train", "last_success", "firing", None, 1800000000.5, receivers=["ops"]
        )
    }
    assert schema_version(path) == str(StateStore.SCHEMA_VERSION)


def test_older_file_is_migrated_to_the_current_version(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path.parent.mkdir()
    write_v1_file(path, ("train", "last_success"))
    caplog.set_level(logging.INFO, logger="watchdog.store")

    with StoreWithOutbox.open(path) as store:
        alerts = store.load_alerts()

    assert list(alerts) == [("train", "last_success")]
    assert schema_version(path) == str(StoreWithOutbox.SCHEMA_VERSION)
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
    connection.close()
    assert f"schema migrated from version 1 to {StoreWithOutbox.SCHEMA_VERSION}" in caplog.text


def test_new_file_gets_every_migration(path: Path) -> None:
    with StoreWithOutbox.open(path) as store:
        store.save_alerts([alert()])

    assert schema_version(path) == str(StoreWithOutbox.SCHEMA_VERSION)


def test_file_from_a_newer_version_is_refused_and_left_alone(path: Path) -> None:
    StoreWithOutbox.open(path).close()
    content = path.read_bytes()

    with pytest.raises(StoreError) as raised:
        StateStore.open(path)

    assert str(raised.value) == (
        f"state.path '{path}': written by a newer pipeline-watchdog "
        f"(schema version {StateStore.SCHEMA_VERSION + 1}, "
        f"this one knows up to {StateStore.SCHEMA_VERSION}); refusing to downgrade"
    )
    assert path.read_bytes() == content
    assert moved_aside(path) == []


def test_failed_migration_changes_nothing(path: Path) -> None:
    path.parent.mkdir()
    write_v1_file(path, ("train", "last_success"))

    class BrokenMigration(StateStore):
        MIGRATIONS = (*MIGRATIONS, ("CREATE TABLE future (id INTEGER)", "NOT SQL"))
        SCHEMA_VERSION = len(MIGRATIONS)

    with pytest.raises(StoreError, match='cannot open: near "NOT": syntax error'):
        BrokenMigration.open(path)

    assert schema_version(path) == "1"
    with StateStore.open(path) as store:
        assert list(store.load_alerts()) == [("train", "last_success")]
    assert moved_aside(path) == []


# Damaged files


def make_store_file(path: Path, alerts: int = 300) -> bytes:
    with StateStore.open(path) as store:
        store.save_alerts([alert(f"pipeline-{i}") for i in range(alerts)])
    return path.read_bytes()


def corrupt_alerts_root_page(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        root = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'alerts'"
        ).fetchone()[0]
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    connection.close()
    content = bytearray(path.read_bytes())
    # Bytes 3-4 of a b-tree page header count its cells: far more than fit.
    header = (root - 1) * page_size
    content[header + 3 : header + 5] = b"\x7f\xff"
    path.write_bytes(bytes(content))


def damage_garbage(path: Path) -> str:
    path.write_bytes(b"this is not a database\n" * 200)
    return "file is not a database"


def damage_truncated(path: Path) -> str:
    size = len(make_store_file(path))
    os.truncate(path, size // 2)
    return "database disk image is malformed"


def damage_truncated_in_header(path: Path) -> str:
    make_store_file(path)
    os.truncate(path, 60)
    return "database disk image is malformed"


def damage_foreign_database(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE users (name TEXT)")
    connection.close()
    return "not a pipeline-watchdog state file (tables: users)"


def damage_missing_table(path: Path) -> str:
    make_store_file(path)
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE alerts")
    connection.close()
    return "table alerts does not match schema version (missing)"


def damage_wrong_columns(path: Path) -> str:
    make_store_file(path)
    with sqlite3.connect(path) as connection:
        connection.execute("ALTER TABLE silences DROP COLUMN comment")
    connection.close()
    return "table silences does not match schema version (id, matchers, starts_at"


def damage_no_version(path: Path) -> str:
    make_store_file(path)
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM meta")
    connection.close()
    return "no schema_version in table meta"


def damage_bad_version(path: Path) -> str:
    make_store_file(path)
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE meta SET value = 'two' WHERE key = 'schema_version'")
    connection.close()
    return "schema_version is not a number: 'two'"


def damage_failing_quick_check(path: Path) -> str:
    make_store_file(path)
    corrupt_alerts_root_page(path)
    return "integrity check failed: *** in database main *** Page"


@pytest.mark.parametrize(
    "damage",
    [
        damage_garbage,
        damage_truncated,
        damage_truncated_in_header,
        damage_foreign_database,
        damage_missing_table,
        damage_wrong_columns,
        damage_no_version,
        damage_bad_version,
        damage_failing_quick_check,
    ],
)
def test_damaged_file_is_moved_aside_and_a_new_one_started(
    path: Path,
    clock: Callable[[], float],
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[Path], str],
) -> None:
    path.parent.mkdir()
    reason = damage(path)
    content = path.read_bytes()

    with StateStore.open(path, clock=clock) as store:
        store.save_alerts([alert()])
        alerts = store.load_alerts()

    moved = path.with_name("state.db.corrupt-1800000000")
    assert store.recovered_from == moved
    assert moved.read_bytes() == content
    assert list(alerts) == [("train", "last_success")]
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.name == "watchdog.store"
    assert f"state.path '{path}' is unusable ({reason}" in error.getMessage()
    assert f"moved it to '{moved}'" in error.getMessage()
    assert "\n" not in error.getMessage()


def test_side_files_are_moved_with_the_damaged_file(
    path: Path, clock: Callable[[], float]
) -> None:
    path.parent.mkdir()
    damage_garbage(path)
    content = path.read_bytes()
    for suffix in ("-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).write_bytes(suffix.encode() * 100)

    store = StateStore.open(path, clock=clock)
    store.close()

    moved = path.with_name("state.db.corrupt-1800000000")
    assert moved.read_bytes() == content
    assert moved.with_name(moved.name + "-wal").read_bytes() == b"-wal" * 100
    # SQLite rewrites the shared-memory index as it reads; that file holds no data.
    assert moved.with_name(moved.name + "-shm").exists()
    # A rollback journal SQLite cannot use is dropped as soon as the file is read.
    assert not path.with_name(path.name + "-journal").exists()


def test_second_damage_in_the_same_second_keeps_both_files(
    path: Path, clock: Callable[[], float]
) -> None:
    path.parent.mkdir()
    damage_garbage(path)
    StateStore.open(path, clock=clock).close()
    path.write_bytes(b"damaged again" * 100)

    store = StateStore.open(path, clock=clock)
    store.close()

    assert store.recovered_from == path.with_name("state.db.corrupt-1800000000-2")
    assert moved_aside(path) == [
        path.with_name("state.db.corrupt-1800000000"),
        path.with_name("state.db.corrupt-1800000000-2"),
    ]


def test_recovered_store_opens_cleanly_next_time(path: Path, clock: Callable[[], float]) -> None:
    path.parent.mkdir()
    damage_garbage(path)
    with StateStore.open(path, clock=clock) as store:
        store.save_alerts([alert()])

    with StateStore.open(path, clock=clock) as reopened:
        alerts = reopened.load_alerts()

    assert reopened.recovered_from is None
    assert list(alerts) == [("train", "last_success")]
    assert len(moved_aside(path)) == 1


# Durability

SAVE_AND_DIE = """
import os, sys
from pathlib import Path
from watchdog.store import AlertRecord, StateStore
store = StateStore.open(Path(sys.argv[1]))
store.save_alerts([AlertRecord("train", "last_success", "firing", "critical", 1800000000.25)])
os.kill(os.getpid(), int(sys.argv[2]))
"""


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_saved_alert_survives_the_process_being_killed(path: Path, signum: int) -> None:
    child = subprocess.run(
        [sys.executable, "-c", SAVE_AND_DIE, str(path), str(signum)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The store was never closed: the alert is only in the write-ahead log.
    wal = path.with_name(path.name + "-wal")
    assert child.returncode == -signum, child.stderr
    assert wal.stat().st_size > 0

    with StateStore.open(path) as store:
        alerts = store.load_alerts()

    assert alerts == {
        ("train", "last_success"): AlertRecord(
            "train", "last_success", "firing", "critical", 1800000000.25
        )
    }
