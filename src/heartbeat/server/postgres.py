"""The PostgreSQL store: servers sharing one database (``store_url``), through psycopg 3.

:class:`PostgresBackend` is the :class:`~heartbeat.server.tables.Backend` of
such a store: one connection for the writer thread (a batch is one
transaction), another for the reader thread, each opened when first needed and
again after it broke. Its :class:`PostgresTables` run the same SQL as SQLite's
(``heartbeat.server.tables``) in PostgreSQL's dialect. The schema has the same
versions and steps as SQLite's (``heartbeat.server.migrations``, each step's
``postgresql`` DDL); the version is the one row of ``heartbeat_schema``, and
servers starting together upgrade one at a time (a transaction-level advisory
lock). The password comes from ``store_password_file`` or libpq's own
environment (``PGPASSWORD``, ``~/.pgpass``), never from the URL. docs/HA.md.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import psycopg
from twisted.application.service import Service
from twisted.logger import Logger

from heartbeat.config.server import ServerConfig
from heartbeat.server import migrations
from heartbeat.server.leader import node_name
from heartbeat.server.migrations import (
    NEWEST,
    STEPS,
    SchemaError,
    Step,
    StoreVersion,
    check_not_newer,
)
from heartbeat.server.tables import TABLES, Dialect, SqlTables, Tables

__all__ = [
    "CHANGES_CHANNEL",
    "POSTGRESQL",
    "ChangeListener",
    "PostgresBackend",
    "PostgresTables",
    "connect_options",
    "inspect_postgres",
    "node_name",
    "open_store",
    "upgrade",
]

T = TypeVar("T")
log = Logger()

POSTGRESQL: Final = Dialect("postgresql", "%s", "strpos({0}, {1}) > 0", "GREATEST")
VERSION_TABLE: Final = "heartbeat_schema"
UPGRADE_LOCK: Final = 0x68625F7363686D61
"""Advisory lock key held by the server upgrading the schema (others wait for it)."""
CONNECT_TIMEOUT: Final = 5


class PostgresTables(SqlTables):
    """:class:`~heartbeat.server.tables.Tables` on one psycopg connection."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        def execute(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []

        def executemany(sql: str, rows: list[Sequence[Any]]) -> int:
            with conn.cursor() as cursor:
                cursor.executemany(sql, rows)
                return cursor.rowcount

        super().__init__(POSTGRESQL, execute, executemany)


def connect_options(config: ServerConfig) -> dict[str, Any]:
    """libpq options of every connection: the password from its file, a short connect
    timeout, TCP keepalives (a dead peer is noticed in seconds), the server's name."""
    options: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT, "keepalives": 1, "keepalives_idle": 5,
        "keepalives_interval": 2, "keepalives_count": 3,
        "application_name": f"heartbeat {node_name(config)}",
    }
    if config.store_password_file is not None:
        try:
            with open(config.store_password_file, encoding="utf-8") as f:
                options["password"] = f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise SystemExit(f"heartbeat: store_password_file: cannot read "
                             f"{config.store_password_file}: {e}") from None
    return options


def _read_version(conn: psycopg.Connection[Any], where: str) -> StoreVersion:
    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
    if found is not None and found[0]:
        row = conn.execute(f"SELECT version FROM {VERSION_TABLE}").fetchone()
        return StoreVersion(row[0] if row is not None else 0)
    ours = {t.name for t in TABLES}
    present = sorted(name for (name,) in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()") if name in ours)
    if present:
        raise SchemaError(f"{where} is not a heartbeat store: it has no {VERSION_TABLE} table "
                          f"but tables of heartbeat's names ({', '.join(present)})")
    return StoreVersion(0)


def upgrade(conn: psycopg.Connection[Any], where: str,
            steps: Sequence[Step] = STEPS) -> migrations.Upgrade:
    """Bring the database on ``conn`` (autocommit) to the last of ``steps``, in one
    transaction, one server at a time; SchemaError (nothing kept) as for SQLite."""
    newest = steps[-1].version
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (UPGRADE_LOCK,))
        found = _read_version(conn, where)
        check_not_newer(found, where, newest)
        if found.version == newest:
            return migrations.Upgrade(found, newest)
    step = steps[found.version]
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (UPGRADE_LOCK,))
            again = _read_version(conn, where)  # another server may have done it meanwhile
            check_not_newer(again, where, newest)
            if again.version == newest:
                return migrations.Upgrade(again, newest)
            if again.version == 0:
                conn.execute(f"CREATE TABLE {VERSION_TABLE} (one BOOLEAN PRIMARY KEY DEFAULT TRUE"
                             f" CHECK (one), version INTEGER NOT NULL)")
                conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (0)")
            for step in steps[again.version:]:
                conn.execute(step.postgresql)
            conn.execute(f"UPDATE {VERSION_TABLE} SET version = %s", (newest,))
            found = again
    except psycopg.Error as e:
        raise SchemaError(
            f"cannot upgrade the store {where} from schema version {found.version} to {newest}: "
            f"step {step.version} ({step.summary}) failed: {e}; the database is unchanged"
        ) from e
    return migrations.Upgrade(found, newest)


def inspect_postgres(config: ServerConfig, newest: int = NEWEST) -> StoreVersion:
    """The version of the store at ``store_url``, writing nothing (for ``--check``)."""
    where = str(config.store_url)
    try:
        with psycopg.connect(where, autocommit=True, **connect_options(config)) as conn:
            found = _read_version(conn, where)
    except psycopg.Error as e:
        raise SchemaError(f"cannot read the store {where}: {_one_line(e)}") from None
    check_not_newer(found, where, newest)
    return found


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


class PostgresBackend:
    """The writer's and the reader's connections to one PostgreSQL database.

    Each is opened on first use and again after it broke (a failed connection
    is closed and dropped, so the next batch or read connects anew).
    """

    kind = "postgresql"
    separate_reader = True
    integrity: str | None = None
    """PostgreSQL checks its own pages (data checksums): no ``quick_check`` here."""

    def __init__(self, where: str, options: dict[str, Any]) -> None:
        self.where = where
        self._options = options
        self._writer: psycopg.Connection[Any] | None = None
        self._reader: psycopg.Connection[Any] | None = None

    def connect(self, role: str = "store") -> psycopg.Connection[Any]:
        options = dict(self._options)
        options["application_name"] = f"{options['application_name']} {role}"[:63]
        return psycopg.connect(self.where, autocommit=True, **options)

    def _writer_conn(self) -> psycopg.Connection[Any]:
        if self._writer is None or self._writer.closed:
            self._writer = self.connect("writer")
        return self._writer

    def _reader_conn(self) -> psycopg.Connection[Any]:
        if self._reader is None or self._reader.closed:
            self._reader = self.connect("reader")
        return self._reader

    @staticmethod
    def _run(conn: psycopg.Connection[Any], work: Callable[[psycopg.Connection[Any]], T]) -> T:
        try:
            return work(conn)
        except psycopg.OperationalError:
            conn.close()  # broken: the next use connects again
            raise

    def transaction(self, work: Callable[[Tables], T]) -> T:
        def run(conn: psycopg.Connection[Any]) -> T:
            with conn.transaction():
                return work(PostgresTables(conn))

        return self._run(self._writer_conn(), run)

    def read(self, work: Callable[[Tables], T]) -> T:
        return self._run(self._reader_conn(), lambda conn: work(PostgresTables(conn)))

    def transient(self, error: BaseException) -> bool:
        # OperationalError covers a lost connection, a full disk (class 53) and a
        # read-only or shutting-down server; a row's own errors are IntegrityError,
        # DataError and ProgrammingError (or Python's, binding a value).
        return isinstance(error, psycopg.OperationalError | psycopg.InternalError | OSError
                          | MemoryError)

    def close(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()
        self._writer = self._reader = None


def open_store(config: ServerConfig) -> PostgresBackend:
    """Connect to ``store_url`` and bring its schema to the newest version (start-up,
    before any thread); SystemExit with one line naming ``store_url`` if it cannot."""
    where = str(config.store_url)
    backend = PostgresBackend(where, connect_options(config))
    try:
        conn = backend.connect("start-up")
    except psycopg.Error as e:
        raise SystemExit(f"heartbeat: store_url: cannot connect to {where}: "
                         f"{_one_line(e)}") from None
    try:
        done = upgrade(conn, where)
    except SchemaError as e:
        raise SystemExit(f"heartbeat: store_url: {e}") from None
    except psycopg.Error as e:
        raise SystemExit(f"heartbeat: store_url: cannot open the store {where}: "
                         f"{_one_line(e)}") from None
    finally:
        conn.close()
    if done.found.version == 0:
        log.info("store: created {where} at schema version {version}", where=where,
                 version=done.version)
    elif done.changed:
        log.info("store: {where} upgraded from schema version {old} to {version}",
                 where=where, old=done.found.version, version=done.version)
    return backend


CHANGES_CHANNEL: Final = "heartbeat_changes"
"""What the store's triggers NOTIFY (schema version 9): the name of the table changed."""
RECONNECTED: Final = "*"
"""Told to the listener's subscribers after (re)connecting: anything may have changed."""


class ChangeListener(Service):
    """LISTENs on its own connection and thread for what other servers changed.

    Triggers on the tables of users, access lists, API keys, second factors and
    sessions (ended or unrestricted) NOTIFY :data:`CHANGES_CHANNEL` with the
    table's name when a transaction that changed them commits, whichever server
    made it. The tables named within ``settle`` seconds are handed together to
    each ``on_change(tables)`` on the reactor thread; after a (re)connection,
    ``{RECONNECTED}`` (what happened meanwhile was not heard). The thread waits
    at most ``poll`` s at a time, so stopping never waits longer.
    """

    name = "store-changes"

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], reactor: Any,
                 worker: Any, *, settle: float = 0.05, poll: float = 0.5,
                 retry: float = 1.0) -> None:
        self._connect = connect
        self._reactor = reactor
        self._worker = worker
        self.settle = settle
        self.poll = poll
        self.retry = retry
        self._stop = threading.Event()
        self._listeners: list[Callable[[set[str]], object]] = []
        self._heard: set[str] = set()
        self._call: Any = None
        self.notifications = 0
        self.connects = 0
        self.last_error: str | None = None

    def on_change(self, listener: Callable[[set[str]], object]) -> None:
        self._listeners.append(listener)

    def _loop(self) -> None:
        """On the listener's thread until stopped: connect, LISTEN, hand on what comes."""
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self._reactor.callFromThread(self._connected)
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=self.poll):
                            self._reactor.callFromThread(self._heard_one, note.payload)
            except psycopg.Error as e:
                self._reactor.callFromThread(self._failed, _one_line(e))
                self._stop.wait(self.retry)

    def _connected(self) -> None:
        self.connects += 1
        if self.connects > 1 or self.last_error is not None:
            self._heard_one(RECONNECTED)
        self.last_error = None

    def _failed(self, error: str) -> None:
        if error != self.last_error:
            log.warn("store: listening for other servers' changes failed ({error}); "
                     "trying again", error=error)
        self.last_error = error

    def _heard_one(self, table: str) -> None:
        self.notifications += 1
        self._heard.add(table)
        if self._call is None or not self._call.active():
            self._call = self._reactor.callLater(self.settle, self._hand_on)

    def _hand_on(self) -> None:
        heard, self._heard = self._heard, set()
        for listener in self._listeners:
            try:
                listener(heard)
            except Exception:
                log.failure("store: acting on another server's change failed")

    def startService(self) -> None:
        super().startService()
        self._stop.clear()
        self._worker.start()
        self._worker.run(self._loop).addErrback(
            lambda f: log.failure("store: the change listener ended", f))

    def stopService(self) -> Any:
        super().stopService()
        self._stop.set()
        if self._call is not None and self._call.active():
            self._call.cancel()
        return self._worker.stop()

    def to_json(self) -> dict[str, Any]:
        return {"notifications": self.notifications, "connects": self.connects,
                "last_error": self.last_error}
