"""The store: host state, plugin history and whatever later services keep.

All SQL runs on the backend's threads (``heartbeat.server.tables``: SQLite by
default, PostgreSQL for servers sharing one database). Writes are queued on the
reactor thread and committed together once per ``flush_interval`` on the
writer's :class:`~heartbeat.server.serial.SerialWorker` thread, so the store is
never more than that behind memory and the hot path only appends to a list.
Reads go after the queued writes (on the same thread for SQLite; after the
flush on the reader's own thread for PostgreSQL), so an API read always sees
what was accepted before it.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Iterable
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
from heartbeat.server.tables import (
    COMMANDS,
    HOSTS,
    PLUGIN_HISTORY,
    PLUGIN_LATEST,
    Backend,
    Read,
    SqliteBackend,
    Tables,
    Write,
)
from heartbeat.server.timers import periodic, start_timers, stop_timers
from heartbeat.text import json_bytes

__all__ = [
    "HostRecorder",
    "StoreService",
    "Write",
    "load_hosts",
    "maintenance_period",
    "message_key",
    "open_database",
    "open_sqlite",
    "read_history",
]

T = TypeVar("T")

# Plugin data is stored as the PLG message's JSON text exactly as received: one
# history row per message (``plugins`` lists its plugin names as ",a,b,") and,
# per host and plugin, the newest message that carried it. Nothing is
# re-encoded on the way in; readers pick the plugin out of the message.

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


def open_sqlite(path: Path) -> SqliteBackend:
    """:func:`open_database` as the store's backend."""
    return SqliteBackend(open_database(path), str(path))


def maintenance_period(retention: float) -> float:
    """How often retention runs: every 10 minutes, sooner (a tenth of it, at least 1 s)
    for a ``history_retention`` short enough that 10 minutes would keep many times it."""
    return max(1.0, min(600.0, retention / 10))


def load_hosts(tables: Tables) -> list[Host]:
    """Every stored host with its latest plugin data, for ``Registry.restore``."""
    hosts: dict[str, Host] = {}
    for row in tables.rows(HOSTS):
        values = dict(zip(HOSTS.columns, row, strict=True))
        values["state"] = HostState(values["state"])
        hosts[values["name"]] = Host(**values)
    parsed: dict[str, Any] = {}
    for name, plugin, ts, text in sorted(tables.rows(PLUGIN_LATEST)):
        if name not in hosts:
            continue
        if text not in parsed:
            parsed.clear()  # rows of one message are adjacent per host; keep memory flat
            parsed[text] = json.loads(text)["plugins"]
        hosts[name].plugins[plugin] = PluginSample(ts, parsed[text][plugin])
    for name, cmd_id, kind, payload, queued, by, attempts in sorted(
            tables.rows(COMMANDS), key=_queue_order):
        if name in hosts:
            hosts[name].pending[cmd_id] = PendingCommand(
                cmd_id, kind, json.loads(payload), queued, by, attempts)
    return list(hosts.values())


def _queue_order(row: tuple[Any, ...]) -> tuple[float, int, str]:
    """Commands in the order they were queued: by time, then by the number ending the id."""
    number = row[1].rpartition("-")[2]
    return row[4], int(number) if number.isdigit() else 0, row[1]


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
    """Owns the backend; batches writes onto its writer thread, reads after them."""

    name = "store"

    def __init__(
        self,
        backend: Backend,
        worker: Worker,
        clock: IReactorTime,
        flush_interval: float = 0.5,
        maintenance_interval: float = 600.0,
        *,
        reader: Worker | None = None,
    ) -> None:
        self.backend = backend
        self._worker = worker
        self._reader = reader if reader is not None and backend.separate_reader else None
        self._clock = clock
        self._flush_interval = flush_interval
        self._maintenance_interval = maintenance_interval
        self._pending: list[Write] = []
        self._sources: list[Callable[[], list[Write]]] = []
        self._maintenance: list[Callable[[Tables, float], None]] = []
        self._timers = [periodic("store flush", flush_interval, self.flush, clock),
                        periodic("store retention", maintenance_interval, self._maintain, clock)]
        self.commits = 0
        self.failures = 0
        self.dropped_rows = 0
        """Rows a recorder gave up on while the disk was behind (see HostRecorder)."""
        self.last_commit: float | None = None
        """Clock time at which the last successful batch was taken for commit."""

    def submit(self, write: Write) -> None:
        """Queue ``write(tables)`` for the next commit."""
        self._pending.append(write)

    def add_source(self, source: Callable[[], list[Write]]) -> None:
        """``source()`` is asked for writes at every flush (e.g. dirty hosts)."""
        self._sources.append(source)

    def add_maintenance(self, task: Callable[[Tables, float], None]) -> None:
        """``task(tables, now)`` runs on the writer every ``maintenance_interval`` (retention)."""
        self._maintenance.append(task)

    def _take(self) -> list[Write]:
        batch = self._pending
        self._pending = []
        for source in self._sources:
            batch.extend(source())
        return batch

    @staticmethod
    def _run_all(batch: list[Write]) -> Callable[[Tables], None]:
        def run(tables: Tables) -> None:
            for write in batch:
                write(tables)

        return run

    def flush(self) -> Deferred[None]:
        """Commit everything queued so far; fires when it is on disk."""
        batch = self._take()
        if not batch:
            return self._worker.run(lambda: None)
        taken = self._clock.seconds()
        d = self._worker.run(self.backend.transaction, self._run_all(batch))
        d.addCallbacks(self._committed, self._failed, callbackArgs=(taken,))
        return d

    def _committed(self, _: None, taken: float) -> None:
        self.commits += 1
        self.last_commit = taken

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend.kind, "commits": self.commits,
                "failures": self.failures, "last_commit": self.last_commit,
                "dropped_rows": self.dropped_rows, "queued": len(self._pending)}

    def _failed(self, failure: Any) -> None:
        self.failures += 1
        log.failure("store: a write batch failed and was rolled back", failure)

    def read(self, fn: Read[T]) -> Deferred[T]:
        """Run ``fn(tables)`` on the backend after every write queued before it."""
        flushed = self.flush()
        reader = self._reader
        if reader is None:
            return self._worker.run(self.backend.read, fn)
        return flushed.addBoth(lambda _: reader.run(self.backend.read, fn))

    def load(self, fn: Read[T]) -> T:
        """``fn(tables)`` on the calling thread: start-up's loads, before any thread runs."""
        return self.backend.read(fn)

    def _maintain(self) -> Deferred[None]:
        now = self._clock.seconds()

        def run(tables: Tables) -> None:
            for task in self._maintenance:
                task(tables, now)

        d = self._worker.run(self.backend.transaction, run)
        d.addErrback(lambda f: log.failure("store: maintenance failed", f))
        return d

    def startService(self) -> None:
        super().startService()
        self._worker.start()
        if self._reader is not None:
            self._reader.start()
        start_timers(self._timers)

    def stopService(self) -> Deferred[None]:
        """The last commit (after a flush in progress), then the connections and threads."""
        super().stopService()
        d = stop_timers(self._timers)
        d.addCallback(lambda _: self.flush())
        d.addErrback(lambda f: None)  # already logged by _failed
        if self._reader is not None:
            reader = self._reader
            d.addCallback(lambda _: reader.stop())
        d.addCallback(lambda _: self._worker.run(self.backend.close))
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
        self._history: list[tuple[str, float, str, str, int | None, float | None]] = []
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
            self._history.append((host, event.ts, f",{','.join(names)},", text,
                                  *message_key(message)))
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
        self._store.submit(lambda tables: _forget_host(tables, event.host))

    def _statements(self) -> list[Write]:
        writes: list[Write] = []
        hosts = self._registry.take_dirty()
        if hosts:
            rows = [_host_row(h) for h in hosts]
            writes.append(lambda tables: tables.put(HOSTS, rows))
        commanded = self._registry.take_commands_dirty()
        if commanded:
            cleared, commands = _command_rows(commanded)
            writes.append(lambda tables: tables.delete(COMMANDS, cleared, by=("host",)))
            writes.append(lambda tables: tables.add(COMMANDS, commands))
        if self._history:
            history, self._history = self._history, []
            latest, self._latest = list(self._latest.values()), {}
            writes.append(lambda tables: tables.add(PLUGIN_HISTORY, history))
            writes.append(lambda tables: tables.put(PLUGIN_LATEST, latest))
        if self._trim_due:
            due, self._trim_due = self._trim_due, set()
            writes.append(lambda tables: self._trim_all(tables, due))
        return writes

    def _trim_all(self, tables: Tables, hosts: Iterable[str]) -> None:
        for host in hosts:
            tables.trim_history(host, self._max_samples)

    def prune(self, tables: Tables, now: float) -> None:
        """Drop history past the retention age and past the per-host message cap."""
        tables.delete_before(PLUGIN_HISTORY, "ts", now - self._retention)
        self._trim_all(tables, tables.history_over(self._max_samples))


_SEQ_LIMIT = 1 << 62


def message_key(message: dict[str, Any]) -> tuple[int | None, float | None]:
    """A message's own ``seq`` and ``ts``: with its host, what it is known by in the history
    of every server that heard it (None for one missing or out of any column's range)."""
    seq, sent = message.get("seq"), message.get("ts")
    if not isinstance(seq, int) or isinstance(seq, bool) or not -_SEQ_LIMIT < seq < _SEQ_LIMIT:
        seq = None
    if not isinstance(sent, int | float) or isinstance(sent, bool) or not math.isfinite(sent):
        sent = None
    return seq, None if sent is None else float(sent)


def _forget_host(tables: Tables, host: str) -> None:
    """A removed host's rows, every table."""
    tables.delete(HOSTS, [(host,)])
    for table in (PLUGIN_LATEST, PLUGIN_HISTORY, COMMANDS):
        tables.delete(table, [(host,)], by=("host",))


def read_history(
    host: str, plugin: str, limit: int, since: float | None = None
) -> Read[list[dict[str, Any]]]:
    """A store read returning the newest ``limit`` samples of one plugin, newest first.

    ``since``: only samples received at or after that time (a chart's range).
    """

    def run(tables: Tables) -> list[dict[str, Any]]:
        samples = []
        for ts, text in tables.history(host, plugin, limit, since):
            plugins = json.loads(text)["plugins"]
            if plugin in plugins:  # a name with a comma could match another's list
                samples.append({"ts": ts, "data": plugins[plugin]})
        return samples

    return run
