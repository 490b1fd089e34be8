"""The store's schema as an ordered list of steps, and the upgrade that runs them.

A store records the version of its schema in the file (SQLite's
``PRAGMA user_version``): version N is what steps 1..N made. At start-up
:func:`upgrade` brings the file to :data:`NEWEST`:

- a new (empty) file gets every step, in one transaction;
- an older file gets the steps it lacks, in one transaction (each step runs
  whole or not at all, and so does the upgrade: a failing step leaves the file
  exactly as it was, still usable by the release that made it);
- a file newer than this code, or not a heartbeat store, is refused with
  :class:`SchemaError` before anything is written;
- a file made before versions existed (no ``user_version``, tables made by
  ``CREATE TABLE IF NOT EXISTS``) is recognised as version 1: step 1 is re-run
  (it only creates what such a file lacks), its tables must have step 1's
  columns, and the version is recorded.

To change the schema, append a :class:`Step`; never edit a released one (it is
what older files went through). docs/STORE.md says how, and how the upgrade is
tested against a database made by each earlier release (tests/fixtures/store/).

The steps are backend-neutral data: each holds its work per SQL dialect
(``sqlite``, ``postgresql``): both backends share one list, one numbering and
one upgrade order. A PostgreSQL store records its version in a one-row table
(``heartbeat.server.postgres``), not in ``PRAGMA user_version``.
No reactor here: the upgrade runs once at start-up, before any thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Final, TypeAlias

import heartbeat
from heartbeat.server.tables import plugin_times_text
from heartbeat.text import json_bytes

__all__ = [
    "NEWEST",
    "STEPS",
    "SchemaError",
    "Step",
    "StoreVersion",
    "check_not_newer",
    "inspect_store",
    "read_version",
    "statements",
    "upgrade",
]

Script: TypeAlias = "str | Callable[[sqlite3.Connection], None]"
"""A step's work: SQL statements, or a function given the connection (inside the
upgrade's transaction: it must neither commit nor roll back)."""


@dataclass(frozen=True, slots=True)
class Step:
    """What brings a store from ``version - 1`` to ``version``."""

    version: int
    summary: str
    """What the step does and why, for the log and docs/STORE.md."""
    sqlite: Script
    postgresql: str
    """The same step for a PostgreSQL store (DDL; heartbeat.server.postgres runs it)."""


class SchemaError(Exception):
    """The store cannot be used by this code; the message is one line for the operator."""


_V1_SQLITE = """
CREATE TABLE IF NOT EXISTS hosts (
    name TEXT PRIMARY KEY, state TEXT NOT NULL, addr TEXT, port INTEGER,
    first_seen REAL, last_seen REAL, since REAL, interval REAL, rtt REAL,
    version TEXT, boot_time REAL, down_reason TEXT, expected_by REAL
);
CREATE TABLE IF NOT EXISTS plugin_latest (
    host TEXT NOT NULL, plugin TEXT NOT NULL, ts REAL NOT NULL, message TEXT NOT NULL,
    PRIMARY KEY (host, plugin)
);
CREATE TABLE IF NOT EXISTS plugin_history (
    host TEXT NOT NULL, ts REAL NOT NULL, plugins TEXT NOT NULL, message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS plugin_history_by_host ON plugin_history (host, ts);
CREATE TABLE IF NOT EXISTS commands (
    host TEXT NOT NULL, cmd_id TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
    queued REAL NOT NULL, by TEXT, attempts INTEGER NOT NULL, PRIMARY KEY (host, cmd_id)
);
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, data TEXT);
CREATE TABLE IF NOT EXISTS host_access (
    host TEXT PRIMARY KEY, owner TEXT, managers TEXT NOT NULL, monitors TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    key TEXT PRIMARY KEY, user TEXT NOT NULL, created REAL NOT NULL, last_used REAL NOT NULL,
    csrf TEXT NOT NULL, address TEXT
);
CREATE TABLE IF NOT EXISTS alert_states (
    host TEXT NOT NULL, metric_path TEXT NOT NULL, plugin TEXT NOT NULL,
    level TEXT NOT NULL, value TEXT, threshold_value TEXT, operator TEXT NOT NULL,
    display TEXT NOT NULL, since REAL NOT NULL, last_notified REAL,
    PRIMARY KEY (host, metric_path)
);
"""
# Version 1 is the schema of the releases before versions: the store's tables
# (hosts; plugin data as the PLG message's JSON text, one history row per
# message and per host and plugin the newest; queued commands), the auth
# tables (``users.data`` NULL for a config user deleted through the API) and
# the alert states. IF NOT EXISTS lets it complete a store of such a release.

_V2_SQLITE = """
CREATE TABLE maintenance_windows (
    id TEXT PRIMARY KEY, spec TEXT NOT NULL, author TEXT, created REAL NOT NULL
);
CREATE TABLE silences (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, metric TEXT NOT NULL, starts REAL NOT NULL,
    ends REAL NOT NULL, author TEXT, comment TEXT NOT NULL, created REAL NOT NULL,
    ended_by TEXT
);
CREATE TABLE acknowledgements (
    host TEXT NOT NULL, target TEXT NOT NULL, level TEXT NOT NULL, author TEXT,
    comment TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (host, target)
);
CREATE TABLE held_problems (
    host TEXT NOT NULL, key TEXT NOT NULL, level TEXT NOT NULL, reason TEXT NOT NULL,
    label TEXT NOT NULL, since REAL NOT NULL, PRIMARY KEY (host, key)
);
CREATE TABLE flap_states (
    host TEXT NOT NULL, subject TEXT NOT NULL, history TEXT NOT NULL,
    flapping INTEGER NOT NULL, since REAL, PRIMARY KEY (host, subject)
);
CREATE TABLE operation_ids (kind TEXT PRIMARY KEY, last INTEGER NOT NULL);
"""
# Version 2 (issue 14): maintenance windows made through the API (``spec`` is the
# window as given, JSON), silences, acknowledgements (``target`` '' for a host's own
# state, else a metric path), problems whose notices were held back, flap histories
# (``history`` the states, oldest first, JSON), and the last id given to a window and
# a silence, so ids are never given twice.

_V3_API_KEYS = """
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, user TEXT NOT NULL,
    name TEXT NOT NULL, scope TEXT NOT NULL, created REAL NOT NULL, expires REAL,
    last_used REAL, last_address TEXT
);
"""
# Version 3: users' API keys (docs/USERS.md), only the SHA-256 of each token.

_V4_SECOND_FACTOR = """
CREATE TABLE totp (
    user TEXT PRIMARY KEY, secret TEXT NOT NULL, enrolled REAL NOT NULL, last_step INTEGER,
    recovery TEXT NOT NULL
);
CREATE TABLE auth_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
ALTER TABLE sessions ADD COLUMN restricted INTEGER NOT NULL DEFAULT 0;
"""
# Version 4: second factors (docs/USERS.md): each user's TOTP secret, the last time
# step used and the digests of the recovery codes left (JSON list); settings changed
# through the API (totp_required); sessions that may only enrol a second factor.

_V5_BADGES = """
CREATE TABLE badges (
    token TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL, created REAL NOT NULL
);
CREATE UNIQUE INDEX badges_by_target ON badges (kind, target);
"""
# Version 5: the badges of hosts and status pages (docs/STATUS_PAGES.md): a random
# token per host or page, so a badge can be published, and revoked, on its own.

_V1_POSTGRESQL = """
CREATE TABLE hosts (
    name TEXT PRIMARY KEY, state TEXT NOT NULL, addr TEXT, port INTEGER,
    first_seen DOUBLE PRECISION, last_seen DOUBLE PRECISION, since DOUBLE PRECISION,
    "interval" DOUBLE PRECISION, rtt DOUBLE PRECISION, version TEXT,
    boot_time DOUBLE PRECISION, down_reason TEXT, expected_by DOUBLE PRECISION
);
CREATE TABLE plugin_latest (
    host TEXT NOT NULL, plugin TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL,
    message TEXT NOT NULL, PRIMARY KEY (host, plugin)
);
CREATE TABLE plugin_history (
    host TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, plugins TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX plugin_history_by_host ON plugin_history (host, ts);
CREATE TABLE commands (
    host TEXT NOT NULL, cmd_id TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
    queued DOUBLE PRECISION NOT NULL, "by" TEXT, attempts INTEGER NOT NULL,
    PRIMARY KEY (host, cmd_id)
);
CREATE TABLE users (name TEXT PRIMARY KEY, data TEXT);
CREATE TABLE host_access (
    host TEXT PRIMARY KEY, owner TEXT, managers TEXT NOT NULL, monitors TEXT NOT NULL
);
CREATE TABLE sessions (
    key TEXT PRIMARY KEY, "user" TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
    last_used DOUBLE PRECISION NOT NULL, csrf TEXT NOT NULL, address TEXT
);
CREATE TABLE alert_states (
    host TEXT NOT NULL, metric_path TEXT NOT NULL, plugin TEXT NOT NULL,
    level TEXT NOT NULL, value TEXT, threshold_value TEXT, operator TEXT NOT NULL,
    display TEXT NOT NULL, since DOUBLE PRECISION NOT NULL, last_notified DOUBLE PRECISION,
    PRIMARY KEY (host, metric_path)
);
"""
# PostgreSQL: the same tables (times as DOUBLE PRECISION, SQLite's REAL; "user" and
# "interval" quoted, being SQL keywords). No store predates versions there.

_V2_POSTGRESQL = """
CREATE TABLE maintenance_windows (
    id TEXT PRIMARY KEY, spec TEXT NOT NULL, author TEXT, created DOUBLE PRECISION NOT NULL
);
CREATE TABLE silences (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, metric TEXT NOT NULL,
    starts DOUBLE PRECISION NOT NULL, ends DOUBLE PRECISION NOT NULL, author TEXT,
    comment TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, ended_by TEXT
);
CREATE TABLE acknowledgements (
    host TEXT NOT NULL, target TEXT NOT NULL, level TEXT NOT NULL, author TEXT,
    comment TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, PRIMARY KEY (host, target)
);
CREATE TABLE held_problems (
    host TEXT NOT NULL, key TEXT NOT NULL, level TEXT NOT NULL, reason TEXT NOT NULL,
    label TEXT NOT NULL, since DOUBLE PRECISION NOT NULL, PRIMARY KEY (host, key)
);
CREATE TABLE flap_states (
    host TEXT NOT NULL, subject TEXT NOT NULL, history TEXT NOT NULL,
    flapping INTEGER NOT NULL, since DOUBLE PRECISION, PRIMARY KEY (host, subject)
);
CREATE TABLE operation_ids (kind TEXT PRIMARY KEY, last INTEGER NOT NULL);
"""

_V3_API_KEYS_POSTGRESQL = """
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, "user" TEXT NOT NULL,
    name TEXT NOT NULL, scope TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION, last_used DOUBLE PRECISION, last_address TEXT
);
"""

_V4_POSTGRESQL = """
CREATE TABLE totp (
    "user" TEXT PRIMARY KEY, secret TEXT NOT NULL, enrolled DOUBLE PRECISION NOT NULL,
    last_step BIGINT, recovery TEXT NOT NULL
);
CREATE TABLE auth_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
ALTER TABLE sessions ADD COLUMN restricted INTEGER NOT NULL DEFAULT 0;
"""

_V5_POSTGRESQL = """
CREATE TABLE badges (
    token TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE UNIQUE INDEX badges_by_target ON badges (kind, target);
"""

_V6_HISTORY_ONCE = """
ALTER TABLE plugin_history ADD COLUMN seq INTEGER;
ALTER TABLE plugin_history ADD COLUMN sent REAL;
CREATE UNIQUE INDEX plugin_history_once ON plugin_history (host, seq, sent);
"""
_V6_POSTGRESQL = """
ALTER TABLE plugin_history ADD COLUMN seq BIGINT;
ALTER TABLE plugin_history ADD COLUMN sent DOUBLE PRECISION;
CREATE UNIQUE INDEX plugin_history_once ON plugin_history (host, seq, sent);
"""
# Version 6 (issue 18): a history row knows its message's own seq and ts (``sent``), so
# servers sharing one store keep a PLG that each of them received once. A message
# without them is kept as often as it was received (NULLs never collide).

_V7_JOBS = """
CREATE TABLE jobs (
    name TEXT PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, created REAL NOT NULL, state TEXT NOT NULL
);
CREATE TABLE job_runs (
    job TEXT NOT NULL, recorded REAL NOT NULL, started REAL, ended REAL,
    outcome TEXT NOT NULL, exit_code INTEGER, log TEXT NOT NULL, source TEXT
);
CREATE INDEX job_runs_by_job ON job_runs (job, recorded);
"""
_V7_POSTGRESQL = """
CREATE TABLE jobs (
    name TEXT PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, created DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE job_runs (
    job TEXT NOT NULL, recorded DOUBLE PRECISION NOT NULL, started DOUBLE PRECISION,
    ended DOUBLE PRECISION, outcome TEXT NOT NULL, exit_code INTEGER, log TEXT NOT NULL,
    source TEXT
);
CREATE INDEX job_runs_by_job ON job_runs (job, recorded);
"""
# Version 7 (issue 17): cron jobs (docs/JOBS.md): each job's ping UUID (made once when the
# config gives none, so its URLs outlive a restart) and live state (JSON), and its runs.
_V8_NOTICES = """
CREATE TABLE notices (
    key TEXT PRIMARY KEY, state TEXT NOT NULL, at REAL NOT NULL, node TEXT NOT NULL
);
"""
_V8_POSTGRESQL = """
CREATE TABLE notices (
    key TEXT PRIMARY KEY, state TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, node TEXT NOT NULL
);
"""
# Version 8 (issue 18): what the leader of servers sharing a store last notified per
# notice key, so the next leader sends what it had not and nothing it had.

_V9_PLUGIN_DATA = """
CREATE TABLE plugin_data (
    host TEXT NOT NULL, plugin TEXT NOT NULL, ts REAL NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (host, plugin)
) WITHOUT ROWID;
CREATE INDEX plugin_data_times ON plugin_data (host, plugin, ts);
ALTER TABLE hosts ADD COLUMN latest_ts REAL;
ALTER TABLE hosts ADD COLUMN latest TEXT;
"""
_V9_POSTGRESQL = """
CREATE TABLE plugin_data (
    host TEXT NOT NULL, plugin TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL,
    data TEXT NOT NULL, PRIMARY KEY (host, plugin)
);
CREATE INDEX plugin_data_times ON plugin_data (host, plugin, ts);
ALTER TABLE hosts ADD COLUMN latest_ts DOUBLE PRECISION;
ALTER TABLE hosts ADD COLUMN latest TEXT;
INSERT INTO plugin_data (host, plugin, ts, data)
    SELECT host, plugin, ts, (message::json -> 'plugins' -> plugin)::text FROM plugin_latest
    WHERE message::json -> 'plugins' -> plugin IS NOT NULL;
DROP TABLE plugin_latest;
"""


def _v9_sqlite(conn: sqlite3.Connection) -> None:
    """Step 9 on SQLite: each plugin's part of the message it came in, its own row."""
    for statement in statements(_V9_PLUGIN_DATA):
        conn.execute(statement)
    rows = []
    parsed: dict[str, Any] = {}
    for host, plugin, ts, message in conn.execute(
            "SELECT host, plugin, ts, message FROM plugin_latest ORDER BY host, message"):
        if message not in parsed:
            parsed.clear()  # the rows of one message are adjacent: memory stays flat
            parsed[message] = json.loads(message).get("plugins", {})
        if plugin in parsed[message]:
            rows.append((host, plugin, ts, json_bytes(parsed[message][plugin]).decode()))
        if len(rows) >= 10_000:
            conn.executemany("INSERT INTO plugin_data VALUES (?, ?, ?, ?)", rows)
            rows.clear()
    conn.executemany("INSERT INTO plugin_data VALUES (?, ?, ?, ?)", rows)
    conn.execute("DROP TABLE plugin_latest")


# Version 9 (issue 16): each plugin's latest data stored once, as its own JSON text
# (``plugin_data``; ``plugin_latest`` held the whole PLG once per plugin it carried, five
# copies of 1.5 KB for a typical host), with an index of (host, plugin, ts) that start-up
# reads instead of the data; and each host's latest message (``latest``, JSON, received
# at ``latest_ts``) so the host list shows it after a restart (issue 15).

_V10_POSTGRESQL = """
CREATE FUNCTION heartbeat_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('heartbeat_changes', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION heartbeat_changed();
CREATE TRIGGER host_access_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON host_access
    FOR EACH STATEMENT EXECUTE FUNCTION heartbeat_changed();
CREATE TRIGGER api_keys_changed AFTER INSERT OR DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION heartbeat_changed();
CREATE TRIGGER totp_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON totp
    FOR EACH STATEMENT EXECUTE FUNCTION heartbeat_changed();
CREATE TRIGGER auth_settings_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON auth_settings FOR EACH STATEMENT EXECUTE FUNCTION heartbeat_changed();
CREATE TRIGGER sessions_changed AFTER DELETE OR TRUNCATE OR UPDATE OF restricted ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION heartbeat_changed();
"""
# Version 10 (issue 18): servers sharing a PostgreSQL store hear, within a second, what
# another changed of users, access lists, API keys, second factors and sessions (ended or
# unrestricted; a new one is read on a miss, a touch is not told): each such statement
# NOTIFYs heartbeat_changes with its table's name at commit. An SQLite store is one
# server's: nothing to do.

_V11_POSTGRESQL = """
ALTER TABLE plugin_history ALTER COLUMN message TYPE BYTEA USING convert_to(message, 'UTF8');
"""
# Version 11 (issue 16): a history row's message is its JSON text zlib-compressed (half
# the bytes of a typical PLG), written as a BLOB. SQLite keeps the column's declared TEXT
# (a BLOB is stored as given): nothing to run. PostgreSQL's column becomes BYTEA, its
# rows their text's UTF-8 bytes; readers tell the forms apart (store.history_text).

_V12_DROP_TIMES = """
DROP INDEX plugin_data_times;
"""
# Version 12 (issue 16): ``plugin_data`` without its index of (host, plugin, ts) (20.5 MB
# of a 303.5 MB file at 100,000 hosts, and a second b-tree written at every PLG). Start-up
# reads host, plugin and ts from the table itself: SQLite reads a row's leading columns
# without touching the data after them, so the scan costs about what the index's did.

def _v13_sqlite(conn: sqlite3.Connection) -> None:
    """Step 13 on SQLite: each host's plugins and their times from ``plugin_data``, in
    Python (SQLite's JSON writes a REAL with 15 digits: a time would not read back equal)."""
    conn.execute("ALTER TABLE hosts ADD COLUMN plugins TEXT")
    rows: list[tuple[str | None, str]] = []
    name: str | None = None
    pairs: list[tuple[str, float]] = []
    for host, plugin, ts in chain(conn.execute(
            "SELECT host, plugin, ts FROM plugin_data ORDER BY host"), [(None, "", 0.0)]):
        if host != name:
            if name is not None:
                rows.append((plugin_times_text(pairs), name))
            name, pairs = host, []
        pairs.append((plugin, ts))
        if len(rows) >= 10_000:
            conn.executemany("UPDATE hosts SET plugins = ? WHERE name = ?", rows)
            rows.clear()
    conn.executemany("UPDATE hosts SET plugins = ? WHERE name = ?", rows)


_V13_POSTGRESQL = """
ALTER TABLE hosts ADD COLUMN plugins TEXT;
UPDATE hosts SET plugins = grouped.times FROM (
    SELECT host, '[' || string_agg(one, ',') || ']' AS times FROM (
        SELECT host, '[' || to_json(ts)::text || ','
            || string_agg(to_json(plugin)::text, ',') || ']' AS one
        FROM plugin_data GROUP BY host, ts) AS by_time
    GROUP BY host) AS grouped
WHERE hosts.name = grouped.host;
"""
# Version 13 (issue 16): each host's row says which plugins it has and when each last
# reported (``hosts.plugins``, JSON, one list per time: ``[[ts, "cpu", "os"]]``), written
# with the row the registry marks dirty at every PLG anyway. Start-up reads it with the
# hosts instead of 500,000 rows of ``plugin_data`` at 100,000 hosts.

_V14_CLEAN_STOP = """
CREATE TABLE clean_stop (at REAL NOT NULL);
"""
# Version 14 (issue 16): an SQLite store says it was closed by a server that stopped
# cleanly and had found it sound (one row, written at the stop, deleted at the next start).
# Such a file's quick_check (0.5 s at 100,000 hosts) runs once the API answers, on a thread
# of its own; any other file's, before anything is read, as before. A PostgreSQL server
# checks its own pages: nothing to do there.
_V15_POSTGRESQL = """
CREATE TRIGGER maintenance_windows_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON maintenance_windows FOR EACH STATEMENT EXECUTE FUNCTION heartbeat_changed();
CREATE TRIGGER silences_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON silences
    FOR EACH STATEMENT EXECUTE FUNCTION heartbeat_changed();
CREATE TRIGGER acknowledgements_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON acknowledgements FOR EACH STATEMENT EXECUTE FUNCTION heartbeat_changed();
"""
# Version 15 (issue 14): servers sharing a PostgreSQL store hear, within a second, that the
# leader changed a maintenance window, a silence or an acknowledgement, and the others
# list and apply them at once (before, only at a takeover). SQLite: nothing to do.

STEPS: Final[Sequence[Step]] = (
    Step(1, "hosts, plugin data, queued commands, users, sessions, host access, alert states",
         sqlite=_V1_SQLITE, postgresql=_V1_POSTGRESQL),
    Step(2, "maintenance windows, silences, acknowledgements, held problems, flap histories",
         sqlite=_V2_SQLITE, postgresql=_V2_POSTGRESQL),
    Step(3, "API keys", sqlite=_V3_API_KEYS, postgresql=_V3_API_KEYS_POSTGRESQL),
    Step(4, "second factors (TOTP), auth settings, restricted sessions",
         sqlite=_V4_SECOND_FACTOR, postgresql=_V4_POSTGRESQL),
    Step(5, "badges of hosts and status pages", sqlite=_V5_BADGES, postgresql=_V5_POSTGRESQL),
    Step(6, "plugin history keyed by the message's host, seq and ts: stored once by servers "
         "sharing a store", sqlite=_V6_HISTORY_ONCE, postgresql=_V6_POSTGRESQL),
    Step(7, "cron jobs: their ping UUIDs, states and runs", sqlite=_V7_JOBS,
         postgresql=_V7_POSTGRESQL),
    Step(8, "notices: what the leader of servers sharing a store last notified per subject",
         sqlite=_V8_NOTICES, postgresql=_V8_POSTGRESQL),
    Step(9, "each plugin's latest data stored once, on its own; each host's latest message",
         sqlite=_v9_sqlite, postgresql=_V9_POSTGRESQL),
    Step(10, "servers sharing a PostgreSQL store told of changes to users, access, keys, "
         "second factors and sessions (LISTEN/NOTIFY)", sqlite="", postgresql=_V10_POSTGRESQL),
    Step(11, "plugin history stored zlib-compressed (PostgreSQL: message becomes BYTEA)",
         sqlite="", postgresql=_V11_POSTGRESQL),
    Step(12, "plugin data without its index of times: start-up reads the table",
         sqlite=_V12_DROP_TIMES, postgresql=_V12_DROP_TIMES),
    Step(13, "each host's row lists its plugins and their times: start-up reads no plugin "
         "data", sqlite=_v13_sqlite, postgresql=_V13_POSTGRESQL),
    Step(14, "a clean stop marked in the file: its quick_check runs once the API answers",
         sqlite=_V14_CLEAN_STOP, postgresql=""),
    Step(15, "servers sharing a PostgreSQL store told of changes to maintenance windows, "
         "silences and acknowledgements (LISTEN/NOTIFY)", sqlite="", postgresql=_V15_POSTGRESQL),
)
NEWEST: Final = STEPS[-1].version
"""The schema version this code reads and writes."""


@dataclass(frozen=True, slots=True)
class StoreVersion:
    """Where a store file stands: its version (0: no store yet) and whether it says so."""

    version: int
    recorded: bool = True
    """False for a store made before versions (it is version 1 all the same)."""

    def describe(self, newest: int = NEWEST) -> str:
        """For ``--check``: the version and what start-up will do to it."""
        if self.version == 0:
            return f"not created yet (schema version {newest} at the first start)"
        text = f"schema version {self.version}"
        if not self.recorded:
            text += " (made before schema versions)"
        if self.version < newest:
            return f"{text}, upgrade to {newest} due at the next start (back the file up first)"
        return f"{text}, current" + ("" if self.recorded else "; start-up records it")


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}


def read_version(conn: sqlite3.Connection, path: Path) -> StoreVersion:
    """The version of the store open on ``conn``; SchemaError if it is no heartbeat store."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > 0:
        return StoreVersion(version)
    tables = _tables(conn)
    if not tables:
        return StoreVersion(0)
    if "hosts" in tables:  # every release before versions made it first
        return StoreVersion(1, recorded=False)
    raise SchemaError(f"{path} is not a heartbeat store: it has no schema version and none "
                      f"of its tables ({', '.join(sorted(tables))})")


def check_not_newer(found: StoreVersion, path: Path | str, newest: int) -> None:
    """SchemaError (one line) if the store is of a later release than this code."""
    if found.version > newest:
        raise SchemaError(
            f"the store {path} is at schema version {found.version}, newer than this heartbeat "
            f"({heartbeat.__version__}) knows (up to {newest}): run the release that made it, "
            f"or restore the backup taken before upgrading")


def inspect_store(path: Path, newest: int = NEWEST) -> StoreVersion:
    """The version of the store at ``path`` without writing anything (for ``--check``).

    The file is opened read-only; when no ``-wal`` file exists (no server has
    it open) it is also opened immutable, so not even a ``-shm`` file is made
    (``--check`` may run as root beside a service user's store).
    """
    try:
        if not path.exists() or path.stat().st_size == 0:
            return StoreVersion(0)
        wal = path.with_name(path.name + "-wal")
        uri = f"{path.absolute().as_uri()}?mode=ro" + ("" if wal.exists() else "&immutable=1")
        conn = sqlite3.connect(uri, uri=True)
        try:
            found = read_version(conn, path)
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as e:
        raise SchemaError(f"cannot read the store {path}: {e}") from None
    check_not_newer(found, path, newest)
    return found


def statements(script: str) -> list[str]:
    """``script`` cut into whole SQL statements (``executescript`` would commit first)."""
    found: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                found.append(pending.strip())
            pending = ""
    if pending.strip(" \t\r\n;"):
        raise ValueError(f"an incomplete SQL statement: {pending.strip()[:60]!r}")
    return found


def _run(conn: sqlite3.Connection, work: Script) -> None:
    if isinstance(work, str):
        for statement in statements(work):
            conn.execute(statement)
    else:
        work(conn)


def _columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, str, int, int]]:
    return [(name, kind.upper(), notnull, pk) for _, name, kind, notnull, _, pk in
            conn.execute(f"PRAGMA table_info({table})")]


def _check_first_tables(conn: sqlite3.Connection, path: Path, first: Step) -> None:
    """An unversioned store's tables must be those step 1 makes (it made them)."""
    reference = sqlite3.connect(":memory:")
    try:
        _run(reference, first.sqlite)
        for table in sorted(_tables(reference)):
            made, found = _columns(reference, table), _columns(conn, table)
            if found != made:
                raise SchemaError(
                    f"{path}: table {table} has the columns "
                    f"({', '.join(c[0] for c in found)}), not those heartbeat made "
                    f"({', '.join(c[0] for c in made)}): not a heartbeat store, or damaged")
    finally:
        reference.close()


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What :func:`upgrade` found and did."""

    found: StoreVersion
    version: int

    @property
    def changed(self) -> bool:
        return self.found.version != self.version or not self.found.recorded


def upgrade(conn: sqlite3.Connection, path: Path, steps: Sequence[Step] = STEPS) -> Upgrade:
    """Bring the store open on ``conn`` (autocommit mode) to the last of ``steps``.

    Refuses (SchemaError, nothing written) a store newer than ``steps`` or not
    made by heartbeat; a failing step rolls the whole upgrade back and is
    reported as SchemaError naming the file, the versions and the step.
    """
    newest = steps[-1].version
    found = read_version(conn, path)
    check_not_newer(found, path, newest)
    if found.version == newest and found.recorded:
        return Upgrade(found, newest)
    start = found.version if found.recorded else 0
    step = steps[start]
    conn.execute("BEGIN IMMEDIATE")
    try:
        for step in steps[start:]:
            _run(conn, step.sqlite)
            if step.version == 1 and not found.recorded:
                _check_first_tables(conn, path, step)
        conn.execute(f"PRAGMA user_version = {int(newest)}")
    except BaseException as e:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(e, SchemaError) or not isinstance(e, Exception):
            raise
        raise SchemaError(
            f"cannot upgrade the store {path} from schema version {found.version} to {newest}: "
            f"step {step.version} ({step.summary}) failed: {e}; the file is unchanged") from e
    conn.execute("COMMIT")
    return Upgrade(found, newest)
