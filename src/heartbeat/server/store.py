"""The SQLite store: host state, plugin history and whatever later services keep.

All SQL runs on one :class:`~heartbeat.server.serial.SerialWorker` thread.
Writes are queued on the reactor thread and committed together once per
``flush_interval``, so the store is never more than that behind memory and the
hot path only appends to a list. Reads go through the same thread after the
queued writes, so an API read always sees what was accepted before it.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from heartbeat.events import Event
from heartbeat.server import migrations
from heartbeat.server.registry import Host, HostState, PendingCommand, PluginSample, Registry
from heartbeat.server.serial import Worker
from heartbeat.server.timers import periodic, start_timers, stop_timers
from heartbeat.text import json_bytes

__all__ = [
    "HostRecorder",
    "StoreService",
    "Write",
    "load_hosts",
    "maintenance_period",
    "open_database",
    "read_history",
]

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], object]
"""A queued write: runs on the worker thread inside the batch's transaction."""

# Plugin data is stored as the PLG message's JSON text exactly as received: one
# history row per message (``plugins`` lists its plugin names as ",a,b,") and,
# per host and plugin, the newest message that carried it. Nothing is
# re-encoded on the way in; readers pick the plugin out of the message.

_HOST_COLUMNS = ("name", "state", "addr", "port", "first_seen", "last_seen", "since",
                 "interval", "rtt", "version", "boot_time", "down_reason", "expected_by")
_UPSERT_HOST = (
    f"INSERT OR REPLACE INTO hosts ({', '.join(_HOST_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_HOST_COLUMNS))})"
)

log = Logger()


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating) the store and bring its schema to the newest version.

    A damaged file, one newer than this code or no heartbeat store is refused
    before anything is written (sqlite3.DatabaseError, migrations.SchemaError).
    WAL with ``synchronous=NORMAL`` survives a killed process without losing a
    committed transaction; only a power loss may drop the last one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"{path}: integrity check failed: {check}")
        done = migrations.upgrade(conn, path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    if done.found.version == 0:
        log.info("store: created {path} at schema version {version}", path=str(path),
                 version=done.version)
    elif done.changed:
        found = done.found
        log.info("store: {path}{unrecorded} {what}", path=str(path),
                 unrecorded="" if found.recorded else " (made before schema versions)",
                 what=f"recorded as schema version {done.version}"
                 if found.version == done.version
                 else f"upgraded from schema version {found.version} to {done.version}")
    return conn


def maintenance_period(retention: float) -> float:
    """How often retention runs: every 10 minutes, sooner (a tenth of it, at least 1 s)
    for a ``history_retention`` short enough that 10 minutes would keep many times it."""
    return max(1.0, min(600.0, retention / 10))


def load_hosts(conn: sqlite3.Connection) -> list[Host]:
    """Every stored host with its latest plugin data, for ``Registry.restore``."""
    hosts: dict[str, Host] = {}
    for row in conn.execute(f"SELECT {', '.join(_HOST_COLUMNS)} FROM hosts"):
        values = dict(zip(_HOST_COLUMNS, row, strict=True))
        values["state"] = HostState(values["state"])
        hosts[values["name"]] = Host(**values)
    parsed: dict[str, Any] = {}
    for name, plugin, ts, text in conn.execute(
            "SELECT host, plugin, ts, message FROM plugin_latest ORDER BY host"):
        if name not in hosts:
            continue
        if text not in parsed:
            parsed.clear()  # rows of one message are adjacent per host; keep memory flat
            parsed[text] = json.loads(text)["plugins"]
        hosts[name].plugins[plugin] = PluginSample(ts, parsed[text][plugin])
    for name, cmd_id, kind, payload, queued, by, attempts in conn.execute(
            "SELECT host, cmd_id, kind, payload, queued, by, attempts FROM commands"
            " ORDER BY queued, rowid"):
        if name in hosts:
            hosts[name].pending[cmd_id] = PendingCommand(
                cmd_id, kind, json.loads(payload), queued, by, attempts)
    return list(hosts.values())


def _command_rows(hosts: list[Host]) -> tuple[list[tuple[str]], list[tuple[Any, ...]]]:
    """Each host's queued commands as rows, replacing what the store held for it."""
    rows = [(host.name, c.cmd_id, c.kind, json_bytes(c.payload).decode(), c.queued, c.by,
             c.attempts) for host in hosts for c in host.pending.values()]
    return [(host.name,) for host in hosts], rows


def _host_row(host: Host) -> tuple[Any, ...]:
    return (host.name, host.state.value, host.addr, host.port, host.first_seen, host.last_seen,
            host.since, host.interval, host.rtt, host.version, host.boot_time, host.down_reason,
            host.expected_by)


class StoreService(Service):
    """Owns the SQLite connection; batches writes onto the worker thread."""

    name = "store"

    def __init__(
        self,
        conn: sqlite3.Connection,
        worker: Worker,
        clock: IReactorTime,
        flush_interval: float = 0.5,
        maintenance_interval: float = 600.0,
    ) -> None:
        self.conn = conn
        self._worker = worker
        self._clock = clock
        self._flush_interval = flush_interval
        self._maintenance_interval = maintenance_interval
        self._pending: list[Write] = []
        self._sources: list[Callable[[], list[Write]]] = []
        self._maintenance: list[Callable[[sqlite3.Connection, float], None]] = []
        self._timers = [periodic("store flush", flush_interval, self.flush, clock),
                        periodic("store retention", maintenance_interval, self._maintain, clock)]
        self.commits = 0
        self.failures = 0
        self.dropped_rows = 0
        """Rows a recorder gave up on while the disk was behind (see HostRecorder)."""
        self.last_commit: float | None = None
        """Clock time at which the last successful batch was taken for commit."""

    def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Queue one statement for the next commit."""
        self._pending.append(lambda conn: conn.execute(sql, params))

    def submit(self, write: Write) -> None:
        """Queue ``write(conn)`` for the next commit (for batches built on the worker)."""
        self._pending.append(write)

    def add_source(self, source: Callable[[], list[Write]]) -> None:
        """``source()`` is asked for writes at every flush (e.g. dirty hosts)."""
        self._sources.append(source)

    def add_maintenance(self, task: Callable[[sqlite3.Connection, float], None]) -> None:
        """``task(conn, now)`` runs on the worker every ``maintenance_interval`` (retention)."""
        self._maintenance.append(task)

    def _take(self) -> list[Write]:
        batch = self._pending
        self._pending = []
        for source in self._sources:
            batch.extend(source())
        return batch

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[Write]) -> None:
        conn.execute("BEGIN")
        try:
            for write in batch:
                write(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def flush(self) -> Deferred[None]:
        """Commit everything queued so far; fires when it is on disk."""
        batch = self._take()
        if not batch:
            return self._worker.run(lambda: None)
        taken = self._clock.seconds()
        d = self._worker.run(self._commit, self.conn, batch)
        d.addCallbacks(self._committed, self._failed, callbackArgs=(taken,))
        return d

    def _committed(self, _: None, taken: float) -> None:
        self.commits += 1
        self.last_commit = taken

    def to_json(self) -> dict[str, Any]:
        return {"commits": self.commits, "failures": self.failures,
                "last_commit": self.last_commit, "dropped_rows": self.dropped_rows,
                "queued": len(self._pending)}

    def _failed(self, failure: Any) -> None:
        self.failures += 1
        log.failure("store: a write batch failed and was rolled back", failure)

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> Deferred[T]:
        """Run ``fn(conn)`` on the worker after every write queued before it."""
        self.flush()
        return self._worker.run(fn, self.conn)

    def _maintain(self) -> Deferred[None]:
        now = self._clock.seconds()

        def run(conn: sqlite3.Connection) -> None:
            for task in self._maintenance:
                task(conn, now)

        d = self._worker.run(run, self.conn)
        d.addErrback(lambda f: log.failure("store: maintenance failed", f))
        return d

    def startService(self) -> None:
        super().startService()
        self._worker.start()
        start_timers(self._timers)

    def stopService(self) -> Deferred[None]:
        """The last commit (after a flush in progress), then the connection and the thread."""
        super().stopService()
        d = stop_timers(self._timers)
        d.addCallback(lambda _: self.flush())
        d.addErrback(lambda f: None)  # already logged by _failed
        d.addCallback(lambda _: self._worker.run(self.conn.close))
        d.addErrback(lambda f: log.failure("store: closing the database failed", f))
        d.addBoth(lambda _: self._worker.stop())
        return d


class HostRecorder:
    """Keeps the store in step with the registry: host rows, latest and history.

    History is trimmed to ``max_samples`` per host by the periodic maintenance
    and, for a host that sends faster than that, as soon as it has added
    ``max_samples`` rows since its last trim: no host holds more than twice its
    cap at the end of a batch, however hard it floods between two maintenance runs.
    While the store is behind, at most ``max_pending`` history rows wait in
    memory; later ones are counted in ``dropped_rows`` (the latest data of
    each plugin is still kept).
    """

    def __init__(
        self, registry: Registry, store: StoreService, retention: float, max_samples: int,
        max_pending: int = 100_000,
    ) -> None:
        self._registry = registry
        self._store = store
        self._retention = retention
        self._max_samples = max_samples
        self._max_pending = max_pending
        self._history: list[tuple[str, float, str, str]] = []
        self._latest: dict[tuple[str, str], tuple[str, str, float, str]] = {}
        self._added: dict[str, int] = {}
        self._trim_due: set[str] = set()
        store.add_source(self._statements)
        store.add_maintenance(self.prune)

    def on_received(self, event: Event) -> None:
        """A ``message``: a PLG's text is queued for the history and latest tables."""
        message = event.data["message"]
        if message["ID"] != "PLG" or not message["plugins"]:
            return
        text = (event.raw if event.raw is not None else json_bytes(message)).decode("utf-8")
        names = message["plugins"]
        host = event.host
        if len(self._history) < self._max_pending:
            self._history.append((host, event.ts, f",{','.join(names)},", text))
        else:
            self._store.dropped_rows += 1
        for plugin in names:
            self._latest[host, plugin] = (host, plugin, event.ts, text)
        added = self._added.get(host, 0) + 1
        if added >= self._max_samples:
            added = 0
            self._trim_due.add(host)
        self._added[host] = added

    def on_removed(self, event: Event) -> None:
        self._latest = {k: v for k, v in self._latest.items() if k[0] != event.host}
        self._added.pop(event.host, None)
        self._trim_due.discard(event.host)
        for table in ("hosts WHERE name", "plugin_latest WHERE host", "plugin_history WHERE host",
                      "commands WHERE host"):
            self._store.write(f"DELETE FROM {table} = ?", (event.host,))

    def _statements(self) -> list[Write]:
        writes: list[Write] = []
        hosts = self._registry.take_dirty()
        if hosts:
            rows = [_host_row(h) for h in hosts]
            writes.append(lambda conn: conn.executemany(_UPSERT_HOST, rows))
        commanded = self._registry.take_commands_dirty()
        if commanded:
            cleared, commands = _command_rows(commanded)
            writes.append(lambda conn: (
                conn.executemany("DELETE FROM commands WHERE host = ?", cleared),
                conn.executemany("INSERT INTO commands VALUES (?, ?, ?, ?, ?, ?, ?)", commands)))
        if self._history:
            history, self._history = self._history, []
            latest, self._latest = list(self._latest.values()), {}
            writes.append(lambda conn: _insert_samples(conn, history, latest))
        if self._trim_due:
            due, self._trim_due = self._trim_due, set()
            writes.append(lambda conn: self._trim_all(conn, due))
        return writes

    def _trim_all(self, conn: sqlite3.Connection, hosts: Iterable[str]) -> None:
        for host in hosts:
            self._trim(conn, host)

    def prune(self, conn: sqlite3.Connection, now: float) -> None:
        """Drop history past the retention age and past the per-host message cap."""
        conn.execute("DELETE FROM plugin_history WHERE ts < ?", (now - self._retention,))
        over = conn.execute(
            "SELECT host FROM plugin_history GROUP BY host HAVING COUNT(*) > ?",
            (self._max_samples,),
        ).fetchall()
        self._trim_all(conn, (host for (host,) in over))

    def _trim(self, conn: sqlite3.Connection, host: str) -> None:
        """Keep the newest ``max_samples`` history rows of ``host``."""
        conn.execute(
            "DELETE FROM plugin_history WHERE host = ? AND ts < ("
            " SELECT ts FROM plugin_history WHERE host = ?"
            " ORDER BY ts DESC LIMIT 1 OFFSET ?)",
            (host, host, self._max_samples - 1),
        )


def _insert_samples(
    conn: sqlite3.Connection,
    history: list[tuple[str, float, str, str]],
    latest: list[tuple[str, str, float, str]],
) -> None:
    conn.executemany(
        "INSERT INTO plugin_history (host, ts, plugins, message) VALUES (?, ?, ?, ?)", history)
    conn.executemany(
        "INSERT OR REPLACE INTO plugin_latest (host, plugin, ts, message) VALUES (?, ?, ?, ?)",
        latest)


def read_history(
    host: str, plugin: str, limit: int, since: float | None = None
) -> Callable[[sqlite3.Connection], list[dict[str, Any]]]:
    """A store read returning the newest ``limit`` samples of one plugin, newest first.

    ``since``: only samples received at or after that time (a chart's range).
    """

    def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
        rows = conn.execute(
            "SELECT ts, message FROM plugin_history WHERE host = ? AND ts >= ? "
            "AND instr(plugins, ?) > 0 ORDER BY ts DESC LIMIT ?",
            (host, -math.inf if since is None else since, f",{plugin},", limit))
        samples = []
        for ts, text in rows:
            plugins = json.loads(text)["plugins"]
            if plugin in plugins:  # a name with a comma could match another's list
                samples.append({"ts": ts, "data": plugins[plugin]})
        return samples

    return run

