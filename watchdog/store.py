"""Persisted state: active alerts and silences, kept across restarts in a SQLite file.

The file is ``state.path``.  Its schema (version 1):

- ``meta(key, value)``: text settings; ``schema_version`` is the schema's version.
- ``alerts``: one row per pending or firing alert, keyed by ``(pipeline, check_name)``;
  an inactive alert has no row.  Times are unix seconds stored as ``REAL``, the same
  8-byte IEEE float Python uses, so they come back bit for bit; ``receivers`` (the
  receivers told the alert is firing) is a JSON array.
- ``silences``: one row per silence, keyed by ``id``; ``matchers`` is a JSON array
  of ``{"name", "value", "is_regex", "is_equal"}`` objects.

Guarantees:

- Each write (one :meth:`StateStore.save_alerts` call, one silence, one meta value)
  is one transaction: after a crash it is there entirely or not at all.  Saving
  nothing writes nothing, so an idle evaluation cycle never touches the disk.
- A write that returned survives the process ending in any way (SIGTERM, SIGKILL,
  the OOM killer): the file uses SQLite's write-ahead log with ``synchronous=NORMAL``,
  so a commit is in the operating system's hands when it returns.  A power loss or
  a kernel crash may lose the last commits (they are not synced to the disk one by
  one), but never corrupts the file.
  See https://www.sqlite.org/pragma.html#pragma_synchronous.
- One connection serves every thread (the evaluation thread and the HTTP API's),
  one call at a time behind a lock.
- The schema is versioned: opening the file applies the missing steps of
  :data:`MIGRATIONS` in one transaction.  A file written by a newer version of the
  watchdog is refused (:class:`~watchdog.exceptions.StoreError`), never downgraded.
- A file that is not a usable state file (not SQLite, truncated, damaged, or
  without our tables) is logged as an ERROR and moved aside, as found, to
  ``<path>.corrupt-<unix seconds>``, with its ``-wal`` and ``-shm`` files, and the
  watchdog starts with an empty state: alerts still active are notified again.
  Nothing deletes the moved files.  (A leftover rollback ``-journal`` is SQLite's
  to use or drop on the first read.)  An empty file counts as new, not damaged.
- A path that cannot be written (read-only directory or file, a directory, a parent
  that cannot be created) raises :class:`~watchdog.exceptions.StoreError` at
  :meth:`StateStore.open`, naming the path and the cause.

Errors while reading or writing an open store raise ``StoreError`` too; damage
found then is not repaired until the next start.
"""

import contextlib
import errno
import json
import logging
import math
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from watchdog.exceptions import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Each entry takes the schema from the version before it to its own version (the
# first from an empty file to version 1).  Add a version by appending one entry;
# never change an entry that has been released, files out there already have it.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE alerts ("
        " pipeline TEXT NOT NULL, check_name TEXT NOT NULL, state TEXT NOT NULL,"
        " severity TEXT, active_since REAL NOT NULL, firing_since REAL, clear_since REAL,"
        " last_notified_at REAL, last_notified_severity TEXT,"
        " notify_pending INTEGER NOT NULL DEFAULT 0, held_by TEXT,"
        " receivers TEXT NOT NULL DEFAULT '[]',"
        " PRIMARY KEY (pipeline, check_name)) WITHOUT ROWID",
        "CREATE TABLE silences ("
        " id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts_at REAL NOT NULL,"
        " ends_at REAL NOT NULL, comment TEXT NOT NULL, created_by TEXT NOT NULL,"
        " created_at REAL NOT NULL, source TEXT NOT NULL)",
    ),
    (
        # Version 2: the durable outbox, notifications decided but not yet delivered.
        "CREATE TABLE outbox ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " receiver TEXT NOT NULL, body BLOB NOT NULL, status TEXT NOT NULL,"
        " alerts INTEGER NOT NULL, created_at REAL NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL,"
        " last_error TEXT)",
        "CREATE INDEX outbox_by_receiver ON outbox (receiver, seq)",
    ),
)

# How long a write waits for another process holding the file (a second watchdog
# started on the same path) before giving up with an error.
BUSY_TIMEOUT = 5.0

# Primary result codes meaning the file's content is damaged or not a database
# (SQLITE_CORRUPT, SQLITE_NOTADB); every other error is about access to the file.
# https://www.sqlite.org/rescode.html
_DAMAGE_CODES = (11, 26)

_SIDE_FILES = ("-wal", "-shm", "-journal")

_OUTBOX_COLUMNS = (
    "id, receiver, body, status, alerts, created_at, next_attempt_at, attempts, last_error"
)

_ALERT_COLUMNS = (
    "pipeline, check_name, state, severity, active_since, firing_since, clear_since,"
    " last_notified_at, last_notified_severity, notify_pending, held_by, receivers"
)
_SILENCE_COLUMNS = "id, matchers, starts_at, ends_at, comment, created_by, created_at, source"


@dataclass
class AlertRecord:
    """The saved state of one pending or firing alert."""

    pipeline: str
    check: str
    state: str  # "pending" or "firing"
    severity: str | None  # "warning" or "critical"
    active_since: float  # when the condition became true: the `for` clock
    firing_since: float | None = None
    clear_since: float | None = None  # condition false since, while firing (keep_firing_for)
    last_notified_at: float | None = None
    last_notified_severity: str | None = None
    notify_pending: bool = False  # a notification was due but held back (silence)
    held_by: str | None = None  # upstream pipeline holding this alert back
    receivers: list[str] = field(default_factory=list)  # receivers told it is firing

    @property
    def key(self) -> tuple[str, str]:
        return (self.pipeline, self.check)


@dataclass
class OutboxEntry:
    """A notification message decided and kept until its receiver took it."""

    id: str  # the message id: the Idempotency-Key
    receiver: str
    body: bytes
    status: str  # firing or resolved
    alerts: int
    created_at: float  # local clock at the decision
    next_attempt_at: float
    attempts: int = 0
    last_error: str | None = None
    seq: int | None = None  # order of the decision; set when saved


@dataclass
class SilenceRecord:
    """A saved silence, from the configuration or the API."""

    id: str
    matchers: list[dict[str, Any]]  # [{"name", "value", "is_regex", "is_equal"}]
    starts_at: float
    ends_at: float
    comment: str
    created_by: str
    created_at: float
    source: str  # "config" or "api"


class _Damaged(Exception):
    """The file is not a usable state file; it is moved aside, not repaired."""


class StateStore:
    """The state file, open; safe to call from several threads."""

    MIGRATIONS: ClassVar[tuple[tuple[str, ...], ...]] = MIGRATIONS
    SCHEMA_VERSION: ClassVar[int] = len(MIGRATIONS)

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: Path,
        on_write: Callable[[float], None] | None,
        recovered_from: Path | None,
    ) -> None:
        self._connection: sqlite3.Connection | None = connection
        self._path = path
        self._on_write = on_write
        self._recovered_from = recovered_from
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        on_write: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> "StateStore":
        """Open or create the state file; move a damaged one aside and start afresh.

        ``on_write`` is called with the duration in seconds of each write;
        ``clock`` dates the name of a file moved aside.
        """
        path = Path(path)
        _check_writable(path)

        connection = _connect(path)
        try:
            cls._prepare(connection, path)
        except _Damaged as exc:
            # Move the files while they are still open: on closing, SQLite deletes a
            # -wal or -journal file it cannot use, and they may be worth a look.
            try:
                recovered_from = _move_aside(path, str(exc), int(clock()))
            finally:
                connection.close()
            return cls(cls._connect_new(path), path, on_write, recovered_from)
        except BaseException:
            connection.close()
            raise
        return cls(connection, path, on_write, None)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def recovered_from(self) -> Path | None:
        """Where a damaged file was moved when this store was opened, if one was."""
        return self._recovered_from

    def close(self) -> None:
        """Close the file; SQLite folds the write-ahead log into it.  Idempotent."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> "StateStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Alerts

    def load_alerts(self) -> dict[tuple[str, str], AlertRecord]:
        """Every saved alert, by (pipeline, check)."""
        rows = self._read(f"SELECT {_ALERT_COLUMNS} FROM alerts ORDER BY pipeline, check_name")
        alerts = self._decode(rows, _alert_from_row)
        return {alert.key: alert for alert in alerts}

    def save_alerts(
        self,
        changed: Iterable[AlertRecord],
        deleted: Iterable[tuple[str, str]] = (),
        outbox: Iterable[OutboxEntry] = (),
    ) -> None:
        """Delete the ``deleted`` keys, insert or replace the ``changed`` alerts and add
        the ``outbox`` entries, in one transaction (a key in both ends up saved), so a
        decision and the notifications it makes are stored together or not at all.
        Nothing to do writes nothing.  Saved entries get their ``seq``."""
        rows = [_alert_to_row(alert) for alert in changed]
        keys = [(pipeline, check) for pipeline, check in deleted]
        entries = list(outbox)
        if not rows and not keys and not entries:
            return  # no transaction at all: an idle cycle must not touch the disk

        def write(connection: sqlite3.Connection) -> None:
            connection.executemany(
                "DELETE FROM alerts WHERE pipeline = ? AND check_name = ?", keys
            )
            connection.executemany(
                f"INSERT OR REPLACE INTO alerts ({_ALERT_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            for entry in entries:
                cursor = connection.execute(
                    f"INSERT INTO outbox ({_OUTBOX_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    _outbox_to_row(entry),
                )
                entry.seq = cursor.lastrowid

        self._write(write)

    # Outbox

    def load_outbox(self) -> list[OutboxEntry]:
        """Every undelivered notification message, in the order it was decided."""
        rows = self._read(f"SELECT seq, {_OUTBOX_COLUMNS} FROM outbox ORDER BY seq")
        return [_outbox_from_row(row) for row in rows]

    def update_outbox(self, entry: OutboxEntry) -> None:
        """Record an attempt: its count, when to try again, and why it failed."""

        def write(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?",
                (entry.attempts, entry.next_attempt_at, entry.last_error, entry.id),
            )

        self._write(write)

    def delete_outbox(self, entry_id: str) -> None:
        """Forget a message: delivered, or given up."""

        def write(connection: sqlite3.Connection) -> None:
            connection.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))

        self._write(write)

    # Silences

    def load_silences(self) -> list[SilenceRecord]:
        """Every saved silence, expired ones included, by start time."""
        rows = self._read(f"SELECT {_SILENCE_COLUMNS} FROM silences ORDER BY starts_at, id")
        return self._decode(rows, _silence_from_row)

    def save_silence(self, silence: SilenceRecord) -> None:
        """Insert the silence, or replace the one with its id."""
        row = _silence_to_row(silence)
        self._write(
            lambda connection: connection.execute(
                f"INSERT OR REPLACE INTO silences ({_SILENCE_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        )

    def delete_silence(self, silence_id: str) -> bool:
        """Delete a silence; False if there was none with this id."""
        cursor = self._write(
            lambda connection: connection.execute(
                "DELETE FROM silences WHERE id = ?", (silence_id,)
            )
        )
        return cursor.rowcount > 0

    # Meta

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        if key == "schema_version":
            raise ValueError("schema_version is managed by the store")
        self._write(
            lambda connection: connection.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
            )
        )

    # Reading and writing

    def _read(self, sql: str, parameters: tuple[str, ...] = ()) -> list[Any]:
        with self._lock:
            connection = self._open_connection()
            try:
                return connection.execute(sql, parameters).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"state.path '{self._path}': cannot read: {exc}") from exc

    def _decode(self, rows: list[Any], decode: Callable[[Any], T]) -> list[T]:
        try:
            return [decode(row) for row in rows]
        except ValueError as exc:  # JSON damaged by something other than this module
            raise StoreError(f"state.path '{self._path}': cannot read: {exc}") from exc

    def _write(self, steps: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``steps`` in one transaction and report its duration to ``on_write``."""
        with self._lock:
            connection = self._open_connection()
            started = time.perf_counter()
            try:
                with _transaction(connection):
                    result = steps(connection)
            except sqlite3.Error as exc:
                raise StoreError(f"state.path '{self._path}': cannot write: {exc}") from exc
            duration = time.perf_counter() - started

        # Outside the lock: the callback may take its time, or call the store.
        if self._on_write is not None:
            self._on_write(duration)
        return result

    def _open_connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreError(f"state.path '{self._path}': the state store is closed")
        return self._connection

    # Opening

    @classmethod
    def _connect_new(cls, path: Path) -> sqlite3.Connection:
        # The damaged file is gone: damage now is not the file's, and trying again
        # could loop; it is reported as an error.
        connection = _connect(path)
        try:
            cls._prepare(connection, path)
        except _Damaged as exc:
            connection.close()
            raise StoreError(f"state.path '{path}': cannot create a new file: {exc}") from exc
        except BaseException:
            connection.close()
            raise
        return connection

    @classmethod
    def _prepare(cls, connection: sqlite3.Connection, path: Path) -> None:
        """Check the file, then bring it up to date.  Nothing is written to a file that
        turns out damaged, foreign or too new, so the one moved aside is as found.

        1. Check the file's structure, schema version and tables.
        2. Switch to the write-ahead log (a setting kept in the file).
        3. Under the write lock, read the version again (another process may have
           migrated the file meanwhile) and apply the missing migrations.
        """
        try:
            _check_integrity(connection)
            version = _schema_version(connection)
            cls._check_version(path, version)
            _check_tables(connection, _expected_tables(cls.MIGRATIONS[:version]))

            _use_write_ahead_log(connection, path)
            with _transaction(connection):
                cls._migrate(connection, path, _schema_version(connection))
        except sqlite3.Error as exc:
            if exc.sqlite_errorcode & 0xFF in _DAMAGE_CODES:
                raise _Damaged(str(exc)) from exc
            raise _store_error(path, exc) from exc

    @classmethod
    def _check_version(cls, path: Path, version: int) -> None:
        if version > cls.SCHEMA_VERSION:
            raise StoreError(
                f"state.path '{path}': written by a newer pipeline-watchdog (schema version "
                f"{version}, this one knows up to {cls.SCHEMA_VERSION}); refusing to downgrade"
            )

    @classmethod
    def _migrate(cls, connection: sqlite3.Connection, path: Path, version: int) -> None:
        cls._check_version(path, version)
        if version == cls.SCHEMA_VERSION:
            return

        for step in cls.MIGRATIONS[version : cls.SCHEMA_VERSION]:
            for statement in step:
                connection.execute(statement)
        connection.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(cls.SCHEMA_VERSION),),
        )

        if version == 0:
            log.info("state.path '%s': created (schema version %d)", path, cls.SCHEMA_VERSION)
        else:
            log.info(
                "state.path '%s': schema migrated from version %d to %d",
                path,
                version,
                cls.SCHEMA_VERSION,
            )


def _connect(path: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(
            path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise _store_error(path, exc) from exc


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock at once, so a second process on the same file
    # waits (BUSY_TIMEOUT) at BEGIN instead of failing halfway through.
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _use_write_ahead_log(connection: sqlite3.Connection, path: Path) -> None:
    mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        # Some network file systems cannot share memory between processes.
        log.warning(
            "state.path '%s': write-ahead log unavailable, using journal mode %s", path, mode
        )
    connection.execute("PRAGMA synchronous = NORMAL")


def _check_integrity(connection: sqlite3.Connection) -> None:
    # quick_check reads every page but skips the costly index-to-table cross-check.
    problems = [" ".join(row[0].split()) for row in connection.execute("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        raise _Damaged("integrity check failed: " + "; ".join(problems))


def _schema_version(connection: sqlite3.Connection) -> int:
    """The file's schema version; 0 for a new, empty database."""
    tables = _table_names(connection)
    if not tables:
        return 0
    if "meta" not in tables:
        raise _Damaged(f"not a pipeline-watchdog state file (tables: {', '.join(tables)})")

    row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        raise _Damaged("no schema_version in table meta")
    try:
        version = int(row[0])
    except (TypeError, ValueError):
        raise _Damaged(f"schema_version is not a number: {row[0]!r}") from None
    if version < 1:
        raise _Damaged(f"schema_version is not a version: {version}")
    return version


def _check_tables(connection: sqlite3.Connection, expected: dict[str, list[str]]) -> None:
    for table, columns in expected.items():
        found = _columns(connection, table)
        if found != columns:
            found_text = ", ".join(found) if found else "missing"
            raise _Damaged(f"table {table} does not match schema version ({found_text})")


def _expected_tables(migrations: tuple[tuple[str, ...], ...]) -> dict[str, list[str]]:
    """The tables and columns the migrations make, read from a database in memory."""
    with contextlib.closing(sqlite3.connect(":memory:")) as connection:
        for step in migrations:
            for statement in step:
                connection.execute(statement)
        return {table: _columns(connection, table) for table in _table_names(connection)}


def _table_names(connection: sqlite3.Connection) -> list[str]:
    rows = connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY name"
    )
    return [row[0] for row in rows]


def _columns(connection: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in connection.execute("SELECT * FROM pragma_table_info(?)", (table,))]


def _check_writable(path: Path) -> None:
    """Create the parent directory and the file if missing; raise StoreError if either
    cannot be written (SQLite would only say "unable to open database file")."""
    try:
        if path.parent.exists() and not path.parent.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(path.parent))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass  # appends nothing: an existing file is left as it is
    except OSError as exc:
        raise StoreError(f"state.path '{path}': cannot write: {_os_cause(exc, path)}") from exc

    # SQLite creates its -wal and -shm files beside the database.
    try:
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        cause = exc.strerror or str(exc)
        raise StoreError(f"state.path '{path}': cannot write: {cause} ('{path.parent}')") from exc


def _os_cause(exc: OSError, path: Path) -> str:
    cause = exc.strerror or str(exc)
    if exc.filename is not None and str(exc.filename) != str(path):
        cause += f" ('{exc.filename}')"
    return cause


def _store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    return StoreError(f"state.path '{path}': cannot open: {exc}")


def _move_aside(path: Path, reason: str, now: int) -> Path:
    """Rename the damaged file (and its side files) to ``<path>.corrupt-<now>``."""
    target = _free_name(path, now)
    try:
        for suffix in _SIDE_FILES:
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(target.with_name(target.name + suffix))
        path.rename(target)
    except OSError as exc:
        raise StoreError(
            f"state.path '{path}': unusable ({reason}) and cannot be moved aside: "
            f"{_os_cause(exc, path)}"
        ) from exc

    log.error(
        "state.path '%s' is unusable (%s): moved it to '%s' and started with an empty "
        "state; alerts still active will be notified again",
        path,
        reason,
        target,
    )
    return target


def _free_name(path: Path, now: int) -> Path:
    # Two failures within one second must not overwrite the first file moved aside.
    target = path.with_name(f"{path.name}.corrupt-{now}")
    attempt = 1
    while any(target.with_name(target.name + s).exists() for s in ("", *_SIDE_FILES)):
        attempt += 1
        target = path.with_name(f"{path.name}.corrupt-{now}-{attempt}")
    return target


# Rows

_AlertRow = tuple[
    str,
    str,
    str,
    str | None,
    float,
    float | None,
    float | None,
    float | None,
    str | None,
    int,
    str | None,
    str,
]

_SilenceRow = tuple[str, str, float, float, str, str, float, str]


def _alert_to_row(alert: AlertRecord) -> _AlertRow:
    times = (alert.active_since, alert.firing_since, alert.clear_since, alert.last_notified_at)
    if any(t is not None and math.isnan(t) for t in times):
        # SQLite stores NaN as NULL: it would come back as None, or not at all.
        raise ValueError(f"alert {alert.key!r}: a time is NaN")
    return (
        alert.pipeline,
        alert.check,
        alert.state,
        alert.severity,
        alert.active_since,
        alert.firing_since,
        alert.clear_since,
        alert.last_notified_at,
        alert.last_notified_severity,
        int(alert.notify_pending),
        alert.held_by,
        json.dumps(list(alert.receivers), ensure_ascii=False),
    )


def _alert_from_row(row: Any) -> AlertRecord:
    return AlertRecord(
        pipeline=row[0],
        check=row[1],
        state=row[2],
        severity=row[3],
        active_since=row[4],
        firing_since=row[5],
        clear_since=row[6],
        last_notified_at=row[7],
        last_notified_severity=row[8],
        notify_pending=bool(row[9]),
        held_by=row[10],
        receivers=json.loads(row[11]),
    )


def _silence_to_row(silence: SilenceRecord) -> _SilenceRow:
    if any(math.isnan(t) for t in (silence.starts_at, silence.ends_at, silence.created_at)):
        raise ValueError(f"silence {silence.id!r}: a time is NaN")
    return (
        silence.id,
        json.dumps(silence.matchers, ensure_ascii=False),
        silence.starts_at,
        silence.ends_at,
        silence.comment,
        silence.created_by,
        silence.created_at,
        silence.source,
    )


def _silence_from_row(row: Any) -> SilenceRecord:
    return SilenceRecord(
        id=row[0],
        matchers=json.loads(row[1]),
        starts_at=row[2],
        ends_at=row[3],
        comment=row[4],
        created_by=row[5],
        created_at=row[6],
        source=row[7],
    )


def _outbox_to_row(entry: OutboxEntry) -> tuple[Any, ...]:
    return (
        entry.id,
        entry.receiver,
        entry.body,
        entry.status,
        entry.alerts,
        entry.created_at,
        entry.next_attempt_at,
        entry.attempts,
        entry.last_error,
    )


def _outbox_from_row(row: Any) -> OutboxEntry:
    seq, id_, receiver, body, status, alerts, created, next_at, attempts, error = row
    return OutboxEntry(
        id=id_,
        receiver=receiver,
        body=bytes(body),
        status=status,
        alerts=alerts,
        created_at=created,
        next_attempt_at=next_at,
        attempts=attempts,
        last_error=error,
        seq=seq,
    )
