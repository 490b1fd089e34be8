"""The storage interface: the store's tables and the operations the server needs on them.

Every part that keeps state (the host recorder, auth, alerting, operations)
speaks to its store only through :class:`Tables`: whole rows of a named
:class:`Table` put by key, added when new, updated in part, deleted by key or
by age, read back whole, and the few operations that are not about one row
(plugin history by plugin, the per-host history cap, the last ids given).
Two backends implement it with the same SQL, written once here and told apart
by a :class:`Dialect`: SQLite (:class:`SqliteTables`, the embedded default) and
PostgreSQL (``heartbeat.server.postgres``, servers sharing one database). A
:class:`Backend` runs batches of these operations in one transaction on its
writer thread and reads on its reader thread; ``heartbeat.server.store`` owns
when. The DDL of each table, per dialect, is in ``heartbeat.server.migrations``;
tests/test_store_backends.py runs one suite against both backends and checks
that each :class:`Table` here names its table's columns.

No reactor here: every operation runs on a backend's own thread.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeVar

from heartbeat.text import json_bytes

__all__ = [
    "ACKNOWLEDGEMENTS",
    "ALERT_STATES",
    "API_KEYS",
    "AUTH_SETTINGS",
    "BADGES",
    "COMMANDS",
    "FLAP_STATES",
    "HELD_PROBLEMS",
    "HOSTS",
    "HOST_ACCESS",
    "JOBS",
    "JOB_RUNS",
    "MAINTENANCE_WINDOWS",
    "NOTICES",
    "OPERATION_IDS",
    "PLUGIN_DATA",
    "PLUGIN_HISTORY",
    "SESSIONS",
    "SILENCES",
    "TABLES",
    "TOTP",
    "USERS",
    "Backend",
    "Dialect",
    "Read",
    "Rows",
    "SqlTables",
    "SqliteBackend",
    "SqliteTables",
    "Table",
    "Tables",
    "Write",
    "plugin_times_text",
]

T = TypeVar("T")
Row = Sequence[Any]


def plugin_times_text(plugins: Iterable[tuple[str, float]]) -> str | None:
    """``hosts.plugins``: a host's (plugin, ts) pairs as JSON, one list per time, the time
    first (``[[ts, "cpu", "os"], ...]``: a PLG's plugins share one); None for none."""
    times: dict[float, list[Any]] = {}
    for name, ts in plugins:
        group = times.get(ts)
        if group is None:
            group = times[ts] = [ts]
        group.append(name)
    return json_bytes(list(times.values())).decode() if times else None


@dataclass(frozen=True, slots=True)
class Table:
    """A table of the store: its name, its columns in order, the columns of its key."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...] = ()
    """Empty: rows are only added, never put or found by key (plugin history)."""
    rest: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rest", tuple(c for c in self.columns if c not in self.key))


HOSTS: Final = Table("hosts", (
    "name", "state", "addr", "port", "first_seen", "last_seen", "since", "interval", "rtt",
    "version", "boot_time", "down_reason", "expected_by", "latest_ts", "latest", "plugins"),
    ("name",))
"""``latest``: the host's latest MSG, BOOT, SHUT or RES as the host list shows it (JSON),
received at ``latest_ts``. ``plugins``: its plugins and when each last reported
(:func:`plugin_times_text`; NULL: none), what start-up restores without reading
``plugin_data`` (since schema version 13)."""
PLUGIN_DATA: Final = Table("plugin_data", ("host", "plugin", "ts", "data"), ("host", "plugin"))
"""Each plugin's latest data per host, its own JSON text (not the whole PLG's)."""
PLUGIN_HISTORY: Final = Table("plugin_history", (
    "host", "ts", "plugins", "message", "seq", "sent"), ("host", "seq", "sent"))
"""Keyed by a unique index, not a primary key: the message's own seq and ts (``sent``), so
a PLG heard by several servers sharing the store is kept once (added, never put)."""
COMMANDS: Final = Table("commands", (
    "host", "cmd_id", "kind", "payload", "queued", "by", "attempts"), ("host", "cmd_id"))
USERS: Final = Table("users", ("name", "data"), ("name",))
HOST_ACCESS: Final = Table("host_access", ("host", "owner", "managers", "monitors"), ("host",))
SESSIONS: Final = Table("sessions", (
    "key", "user", "created", "last_used", "csrf", "address", "restricted"), ("key",))
API_KEYS: Final = Table("api_keys", (
    "key_id", "digest", "user", "name", "scope", "created", "expires", "last_used",
    "last_address"), ("key_id",))
ALERT_STATES: Final = Table("alert_states", (
    "host", "metric_path", "plugin", "level", "value", "threshold_value", "operator", "display",
    "since", "last_notified"), ("host", "metric_path"))
MAINTENANCE_WINDOWS: Final = Table("maintenance_windows", ("id", "spec", "author", "created"),
                                   ("id",))
SILENCES: Final = Table("silences", (
    "id", "host", "metric", "starts", "ends", "author", "comment", "created", "ended_by"),
    ("id",))
ACKNOWLEDGEMENTS: Final = Table("acknowledgements", (
    "host", "target", "level", "author", "comment", "at"), ("host", "target"))
HELD_PROBLEMS: Final = Table("held_problems", (
    "host", "key", "level", "reason", "label", "since"), ("host", "key"))
FLAP_STATES: Final = Table("flap_states", (
    "host", "subject", "history", "flapping", "since"), ("host", "subject"))
OPERATION_IDS: Final = Table("operation_ids", ("kind", "last"), ("kind",))
TOTP: Final = Table("totp", ("user", "secret", "enrolled", "last_step", "recovery"), ("user",))
AUTH_SETTINGS: Final = Table("auth_settings", ("name", "value"), ("name",))
BADGES: Final = Table("badges", ("token", "kind", "target", "created"), ("token",))
JOBS: Final = Table("jobs", ("name", "uuid", "created", "state"), ("name",))
JOB_RUNS: Final = Table("job_runs", (
    "job", "recorded", "started", "ended", "outcome", "exit_code", "log", "source"))
NOTICES: Final = Table("notices", ("key", "state", "at", "node"), ("key",))
"""What the leader of servers sharing a store last notified per notice key
(``heartbeat.server.notices``)."""

TABLES: Final = (HOSTS, PLUGIN_DATA, PLUGIN_HISTORY, COMMANDS, USERS, HOST_ACCESS, SESSIONS,
                 API_KEYS, ALERT_STATES, MAINTENANCE_WINDOWS, SILENCES, ACKNOWLEDGEMENTS,
                 HELD_PROBLEMS, FLAP_STATES, OPERATION_IDS, TOTP, AUTH_SETTINGS, BADGES, JOBS,
                 JOB_RUNS, NOTICES)
"""Every table of the newest schema (a test compares them with both backends' own)."""


class Tables(Protocol):
    """What the server asks of its store. Writes run inside the batch's transaction."""

    def rows(self, table: Table, **equal: Any) -> list[tuple[Any, ...]]:
        """The rows of ``table`` (columns in its order) whose columns equal ``equal``."""
        ...

    def pick(self, table: Table, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """Only ``columns`` of every row of ``table`` (the others are not decoded)."""
        ...

    def put(self, table: Table, rows: Iterable[Row]) -> None:
        """Whole rows, each replacing the row of its key if there is one."""
        ...

    def add(self, table: Table, rows: Iterable[Row]) -> None:
        """Whole rows; one whose key is already there leaves that row as it is."""
        ...

    def update(self, table: Table, columns: Sequence[str], rows: Iterable[Row]) -> int:
        """Rows of ``(*values of columns, *key)``: those columns of existing rows only;
        returns how many rows there were to update."""
        ...

    def delete(self, table: Table, keys: Iterable[Row], by: Sequence[str] = ()) -> None:
        """The rows whose ``by`` columns (default: the key) equal each of ``keys``."""
        ...

    def delete_before(self, table: Table, column: str, before: float) -> None:
        """The rows whose ``column`` (a time) is older than ``before`` (retention)."""
        ...

    def raise_to(self, table: Table, rows: Iterable[Row]) -> None:
        """Rows of a two-column table (key, number): the number never goes down."""
        ...

    def history(self, host: str, plugin: str, limit: int,
                since: float | None) -> list[tuple[float, Any]]:
        """(ts, message) of the newest ``limit`` history rows of ``host`` naming ``plugin``."""
        ...

    def history_over(self, cap: int) -> list[str]:
        """The hosts holding more than ``cap`` history rows."""
        ...

    def trim_history(self, host: str, keep: int) -> None:
        """Keep the newest ``keep`` history rows of ``host``."""
        ...

    def history_bytes(self) -> dict[str, int]:
        """The bytes of history text each host holds."""
        ...

    def trim_history_bytes(self, host: str, keep: int) -> None:
        """Keep the newest history rows of ``host`` whose texts add up to ``keep`` bytes."""
        ...


Write = Callable[[Tables], object]
"""A queued write: runs on the writer thread inside the batch's transaction."""
Read = Callable[[Tables], T]


@dataclass(frozen=True, slots=True)
class Rows:
    """A write of whole rows to one table (put, add, delete by ``by``, or refresh ``by``):
    a :data:`Write` the store can split row by row to find the one row a batch could not
    commit. A refresh updates only the ``by`` columns of rows already there, and puts all
    its rows whole if any is missing (so it never loses a row, and costs a put only then):
    the store's write of hosts a steady heartbeat changed."""

    op: Literal["put", "add", "delete", "refresh"]
    table: Table
    rows: Sequence[Row]
    by: tuple[str, ...] = ()
    encode: Callable[[Row], Row] | None = None
    """Turns each row into the row stored, on the writer thread (JSON text made there,
    not on the reactor thread that queued it)."""

    def __call__(self, tables: Tables) -> None:
        encode = self.encode
        if self.op == "refresh":
            table = self.table
            pick = itemgetter(*(table.columns.index(c) for c in (*self.by, *table.key)))
            if tables.update(table, self.by, [pick(row) for row in self.rows]) == len(self.rows):
                return
        rows = self.rows if encode is None else [encode(row) for row in self.rows]
        if self.op == "delete":
            tables.delete(self.table, rows, self.by)
        elif self.op == "put":
            tables.put(self.table, rows)
        else:
            tables.add(self.table, rows)

    def __len__(self) -> int:
        return len(self.rows)

    def split(self) -> list[Rows]:
        """One write per row."""
        return [Rows(self.op, self.table, [row], self.by, self.encode) for row in self.rows]


def _quoted(name: str) -> str:
    return f'"{name}"'


def _names(columns: Iterable[str]) -> str:
    return ", ".join(_quoted(c) for c in columns)


@dataclass(frozen=True, slots=True)
class Dialect:
    """Where the two backends' SQL differs (everything else is written once)."""

    name: str
    param: str
    """The placeholder of one parameter."""
    contains: str
    """An expression true when ``{0}`` contains the text ``{1}``."""
    greatest: str
    """The function giving the larger of two values."""
    octets: str = "octet_length({0})"
    """The length in bytes of the text ``{0}``."""


SQLITE: Final = Dialect("sqlite", "?", "instr({0}, {1}) > 0", "MAX",
                        "LENGTH(CAST({0} AS BLOB))")


class SqlTables:
    """:class:`Tables` in SQL both backends read; statements are made once per table.

    ``execute(sql, params)`` returns the rows of one statement, ``executemany(sql,
    rows)`` runs one statement per row and returns how many rows they changed: the
    backend's own calls on its connection.
    """

    def __init__(self, dialect: Dialect, execute: Callable[[str, Row], list[tuple[Any, ...]]],
                 executemany: Callable[[str, list[Row]], int]) -> None:
        self.dialect = dialect
        self._execute = execute
        self._executemany = executemany
        self._cache: dict[tuple[Any, ...], str] = {}

    def _marks(self, n: int) -> str:
        return ", ".join([self.dialect.param] * n)

    def _equal(self, columns: Iterable[str]) -> str:
        return " AND ".join(f"{_quoted(c)} = {self.dialect.param}" for c in columns)

    def _sql(self, key: tuple[Any, ...], make: Callable[[], str]) -> str:
        sql = self._cache.get(key)
        if sql is None:
            sql = self._cache[key] = make()
        return sql

    def _insert(self, table: Table, on_conflict: str) -> str:
        return (f"INSERT INTO {_quoted(table.name)} ({_names(table.columns)}) "
                f"VALUES ({self._marks(len(table.columns))}){on_conflict}")

    def _many(self, sql: str, rows: Iterable[Row]) -> int:
        batch = rows if isinstance(rows, list) else list(rows)
        return self._executemany(sql, batch) if batch else 0

    def rows(self, table: Table, **equal: Any) -> list[tuple[Any, ...]]:
        columns = tuple(equal)
        sql = self._sql(("rows", table.name, columns), lambda: (
            f"SELECT {_names(table.columns)} FROM {_quoted(table.name)}"
            + (f" WHERE {self._equal(columns)}" if columns else "")))
        return self._execute(sql, tuple(equal.values()))

    def pick(self, table: Table, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        cols = tuple(columns)
        sql = self._sql(("pick", table.name, cols), lambda: (
            f"SELECT {_names(cols)} FROM {_quoted(table.name)}"))
        return self._execute(sql, ())

    def put(self, table: Table, rows: Iterable[Row]) -> None:
        def make() -> str:
            if not table.key:
                raise ValueError(f"{table.name} has no key: rows are only added")
            update = ", ".join(f"{_quoted(c)} = excluded.{_quoted(c)}" for c in table.rest)
            action = f"DO UPDATE SET {update}" if update else "DO NOTHING"
            return self._insert(table, f" ON CONFLICT ({_names(table.key)}) {action}")

        self._many(self._sql(("put", table.name), make), rows)

    def add(self, table: Table, rows: Iterable[Row]) -> None:
        sql = self._sql(("add", table.name), lambda: self._insert(
            table, f" ON CONFLICT ({_names(table.key)}) DO NOTHING" if table.key else ""))
        self._many(sql, rows)

    def update(self, table: Table, columns: Sequence[str], rows: Iterable[Row]) -> int:
        cols = tuple(columns)
        sql = self._sql(("update", table.name, cols), lambda: (
            f"UPDATE {_quoted(table.name)} SET "
            + ", ".join(f"{_quoted(c)} = {self.dialect.param}" for c in cols)
            + f" WHERE {self._equal(table.key)}"))
        return self._many(sql, rows)

    def delete(self, table: Table, keys: Iterable[Row], by: Sequence[str] = ()) -> None:
        columns = tuple(by) or table.key
        sql = self._sql(("delete", table.name, columns), lambda: (
            f"DELETE FROM {_quoted(table.name)} WHERE {self._equal(columns)}"))
        self._many(sql, keys)

    def delete_before(self, table: Table, column: str, before: float) -> None:
        sql = self._sql(("before", table.name, column), lambda: (
            f"DELETE FROM {_quoted(table.name)} WHERE {_quoted(column)} < {self.dialect.param}"))
        self._execute(sql, (before,))

    def raise_to(self, table: Table, rows: Iterable[Row]) -> None:
        def make() -> str:
            (key,), (number,) = table.key, table.rest
            name, col = _quoted(table.name), _quoted(number)
            return self._insert(table, (
                f" ON CONFLICT ({_quoted(key)}) DO UPDATE SET {col} = "
                f"{self.dialect.greatest}({name}.{col}, excluded.{col})"))

        self._many(self._sql(("raise", table.name), make), rows)

    def history(self, host: str, plugin: str, limit: int,
                since: float | None) -> list[tuple[float, Any]]:
        p = self.dialect.param
        sql = self._sql(("history", since is None), lambda: (
            f"SELECT ts, message FROM plugin_history WHERE host = {p}"
            + ("" if since is None else f" AND ts >= {p}")
            + " AND " + self.dialect.contains.format("plugins", p)
            + f" ORDER BY ts DESC LIMIT {p}"))
        params = (host, f",{plugin},", limit) if since is None \
            else (host, since, f",{plugin},", limit)
        return self._execute(sql, params)

    def history_over(self, cap: int) -> list[str]:
        p = self.dialect.param
        rows = self._execute(
            f"SELECT host FROM plugin_history GROUP BY host HAVING COUNT(*) > {p}", (cap,))
        return [host for (host,) in rows]

    def trim_history(self, host: str, keep: int) -> None:
        p = self.dialect.param
        self._execute(
            f"DELETE FROM plugin_history WHERE host = {p} AND ts < ("
            f" SELECT ts FROM plugin_history WHERE host = {p}"
            f" ORDER BY ts DESC LIMIT 1 OFFSET {p})", (host, host, keep - 1))

    def history_bytes(self) -> dict[str, int]:
        size = self.dialect.octets.format("message")
        rows = self._execute(f"SELECT host, SUM({size}) FROM plugin_history GROUP BY host", ())
        return {host: int(total) for host, total in rows}

    def trim_history_bytes(self, host: str, keep: int) -> None:
        p = self.dialect.param
        size = self.dialect.octets.format("message")
        self._execute(
            f"DELETE FROM plugin_history WHERE host = {p} AND ts <= ("
            f" SELECT ts FROM (SELECT ts, SUM({size}) OVER (ORDER BY ts DESC"
            f" ROWS UNBOUNDED PRECEDING) AS total FROM plugin_history WHERE host = {p}) newest"
            f" WHERE total > {p} ORDER BY ts DESC LIMIT 1)", (host, host, keep))


class SqliteTables(SqlTables):
    """:class:`Tables` on one SQLite connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(SQLITE, lambda sql, params: conn.execute(sql, params).fetchall(),
                         lambda sql, rows: conn.executemany(sql, rows).rowcount)


class Backend(Protocol):
    """A database and the connections the store uses on it (each on one thread).

    ``transaction`` runs on the store's writer thread; ``read`` on its reader
    thread, which for SQLite is the writer thread itself (one connection).
    """

    kind: str
    """``sqlite`` or ``postgresql``."""
    where: str
    """The file or the URL (never a password), for messages."""
    separate_reader: bool
    """Whether reads have their own connection and thread."""
    integrity: str | None
    """SQLite: what the file's ``quick_check`` found (:class:`SqliteBackend`); None where
    the database server checks its own pages (PostgreSQL)."""

    def transient(self, error: BaseException) -> bool:
        """Whether ``error`` (raised by a transaction) is the database's or the disk's
        (full, read-only, gone, locked: worth retrying) rather than one row's, which
        no retry can commit (a constraint, a value out of range, a wrong row)."""
        ...

    def transaction(self, work: Callable[[Tables], T]) -> T:
        """``work`` in one transaction: committed whole, or rolled back and raised."""
        ...

    def read(self, work: Callable[[Tables], T]) -> T:
        """``work`` over the committed state (outside any writer transaction)."""
        ...

    def close(self) -> None: ...


class SqliteBackend:
    """The SQLite file of one server: one connection, used by the store's one thread.

    ``integrity``: what the file's ``quick_check`` found: ``ok``, ``pending`` (not run
    yet: the file was stopped cleanly, so its check runs once the server runs,
    :meth:`quick_check`), ``checking``, or the damage found. Closed while ``ok``, the
    file is marked as stopped cleanly (``clean_stop``), and the next start may defer
    its check again; closed otherwise, the next start checks it before anything is read.
    """

    kind = "sqlite"
    separate_reader = False

    def __init__(self, conn: sqlite3.Connection, where: str = "", *,
                 integrity: str = "ok") -> None:
        self.conn = conn
        self.where = where
        self.tables = SqliteTables(conn)
        self.integrity: str | None = integrity

    def quick_check(self) -> str:
        """SQLite's ``quick_check`` of the file on a connection of its own (any thread; the
        writer goes on meanwhile): ``ok``, or the first problems found, one line. It runs
        on a thread of its own at the lowest CPU priority (Linux: a thread's own nice
        value), so on a busy core it takes only what the server leaves."""
        outcome: list[str | BaseException] = []

        def run() -> None:
            if sys.platform == "linux":
                with suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            try:
                conn = sqlite3.connect(f"{Path(self.where).absolute().as_uri()}?mode=ro",
                                       uri=True)
                try:
                    found = [row[0] for row in conn.execute("PRAGMA quick_check(10)")]
                finally:
                    conn.close()
                outcome.append("ok" if found == ["ok"] else "; ".join(found))
            except BaseException as e:  # raised again on the caller's thread
                outcome.append(e)

        thread = threading.Thread(target=run, name="heartbeat-store-check", daemon=True)
        thread.start()
        thread.join()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def transaction(self, work: Callable[[Tables], T]) -> T:
        self.conn.execute("BEGIN")
        try:
            result = work(self.tables)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # SQLITE_FULL and I/O errors have rolled it back
                self.conn.execute("ROLLBACK")
            raise
        return result

    def read(self, work: Callable[[Tables], T]) -> T:
        return work(self.tables)

    def transient(self, error: BaseException) -> bool:
        # IntegrityError, ProgrammingError (a wrong row), OverflowError and the like
        # belong to a row; OperationalError (full, read-only, I/O, locked) and a bare
        # DatabaseError (a damaged file) to the database.
        return isinstance(error, sqlite3.OperationalError | OSError | MemoryError) or type(
            error) in (sqlite3.DatabaseError, sqlite3.InternalError)

    def close(self) -> None:
        if self.integrity == "ok":
            with suppress(sqlite3.Error):  # not marked: the next start checks the file first
                self.conn.execute(
                    "INSERT INTO clean_stop VALUES ((julianday('now') - 2440587.5) * 86400)")
        self.conn.close()
