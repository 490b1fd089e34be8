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

import dataclasses
import json
import math
import sqlite3
import zlib
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from sys import intern
from typing import Any, TypeVar

import orjson
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from heartbeat.events import Event
from heartbeat.protocol import read_json
from heartbeat.server import migrations
from heartbeat.server.registry import (
    BEAT_FIELDS,
    Host,
    HostState,
    PendingCommand,
    PluginSample,
    Registry,
)
from heartbeat.server.retry import Backoff
from heartbeat.server.serial import Worker
from heartbeat.server.tables import (
    COMMANDS,
    HOSTS,
    PLUGIN_DATA,
    PLUGIN_HISTORY,
    Backend,
    Read,
    Rows,
    SqliteBackend,
    Tables,
    Write,
    plugin_times_text,
)
from heartbeat.server.timers import periodic, start_timers, stop_timers
from heartbeat.text import json_bytes

__all__ = [
    "HostRecorder",
    "StoreService",
    "StoreUnavailable",
    "Write",
    "check_integrity",
    "history_text",
    "load_commands",
    "load_hosts",
    "maintenance_period",
    "message_key",
    "open_database",
    "open_sqlite",
    "read_history",
    "read_latest",
    "read_latest_all",
    "stopped_cleanly",
]

T = TypeVar("T")

# Plugin history is stored as the PLG message's JSON text exactly as received,
# zlib-compressed on the writer thread (since schema version 11): one row per message
# (``plugins`` lists its plugin names as ",a,b,"). Each plugin's latest data is its
# own row (``plugin_data``: host, plugin, ts, the plugin's JSON), encoded on the writer
# thread; memory keeps only when each plugin last reported.

log = Logger()


def open_database(path: Path, *, check: bool = True) -> sqlite3.Connection:
    """Open (creating) the store and bring its schema to the newest version.

    A damaged file (``check``: SQLite's ``quick_check`` first), one newer than this
    code or no heartbeat store is refused before anything is written
    (sqlite3.DatabaseError, migrations.SchemaError). A mark of a clean stop is
    taken away: until this server stops cleanly, the file counts as not.
    WAL with ``synchronous=NORMAL`` survives a killed process without losing a
    committed transaction; only a power loss may drop the last one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        if check:
            problem = conn.execute("PRAGMA quick_check").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(f"{path}: integrity check failed: {problem}")
        done = migrations.upgrade(conn, path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("DELETE FROM clean_stop")
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


def stopped_cleanly(path: Path) -> bool:
    """Whether the file was last closed by a server that stopped cleanly and had found it
    sound (``clean_stop``, schema version 14). Reads only; any doubt is a no."""
    if not path.exists():
        return False
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT COUNT(*) FROM clean_stop").fetchone()[0] > 0
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def open_sqlite(path: Path) -> SqliteBackend:
    """:func:`open_database` as the store's backend: the ``quick_check`` of a file stopped
    cleanly is left for :func:`check_integrity` once the server runs (0.5 s of CPU at
    100,000 hosts), any other file's runs first."""
    clean = stopped_cleanly(path)
    return SqliteBackend(open_database(path, check=not clean), str(path),
                         integrity="pending" if clean else "ok")


def check_integrity(backend: SqliteBackend,
                    run_in_thread: Callable[..., Deferred[str]]) -> Deferred[None]:
    """The ``quick_check`` a clean stop let start-up leave, on a thread and a connection of
    its own while the server runs; what it found goes to ``integrity`` (``/api/0/status``
    ``store.integrity``) and the log. Damage found keeps the file from being marked
    clean at the stop, so the next start checks it first, and refuses it."""
    backend.integrity = "checking"

    def found(result: str) -> None:
        backend.integrity = result
        if result == "ok":
            log.info("store: quick_check of {path} (stopped cleanly: run after start-up): ok",
                     path=backend.where)
        else:
            log.error("store: quick_check of {path} found damage: {found}; the server goes "
                      "on with it, the next start refuses it: stop the server and restore "
                      "the file from a backup (docs/STORE.md)", path=backend.where,
                      found=result)

    def failed(failure: Failure) -> None:
        found(f"quick_check could not run: {failure.getErrorMessage()}")

    return run_in_thread(backend.quick_check).addCallbacks(found, failed)


def maintenance_period(retention: float) -> float:
    """How often retention runs: every 10 minutes, sooner (a tenth of it, at least 1 s)
    for a ``history_retention`` short enough that 10 minutes would keep many times it."""
    return max(1.0, min(600.0, retention / 10))


def load_hosts(tables: Tables) -> list[Host]:
    """Every stored host with when each of its plugins last reported, for
    ``Registry.restore``: one pass over ``hosts``, whose rows list their plugins and
    times (``hosts.plugins``, schema version 13): ``plugin_data`` is not read."""
    hosts: list[Host] = []
    states = {state.value: state for state in HostState}
    loads = orjson.loads
    # A fleet's hosts mostly carry the same plugins: each list of names is interned once
    # ("cpu_monitor" once per fleet). A PLG's plugins share one sample (its time).
    known: dict[tuple[str, ...], tuple[str, ...]] = {}
    for (name, state, addr, port, first_seen, last_seen, since, interval, rtt, version,
         boot_time, down_reason, expected_by, latest_ts, latest, times) in tables.rows(HOSTS):
        plugins: dict[str, PluginSample] = {}
        for group in () if times is None else loads(times):
            ts = group.pop(0)
            key = tuple(group)
            names = known.get(key)
            if names is None:
                names = known[key] = tuple(map(intern, key))
            plugins.update(dict.fromkeys(names, PluginSample(ts)))
        hosts.append(Host(
            name, states[state], addr, port, first_seen, last_seen, since, interval, rtt,
            version, boot_time, down_reason, expected_by=expected_by, plugins=plugins,
            latest=None if latest is None else (latest_ts, json.loads(latest))))
    pending = load_commands(tables)
    if pending:
        for host in hosts:
            host.pending = pending.get(host.name, host.pending)
    return hosts


def load_commands(tables: Tables) -> dict[str, dict[str, PendingCommand]]:
    """Every queued CMD/UPD per host, in the order they were queued."""
    pending: dict[str, dict[str, PendingCommand]] = {}
    for name, cmd_id, kind, payload, queued, by, attempts in sorted(
            tables.rows(COMMANDS), key=_queue_order):
        pending.setdefault(name, {})[cmd_id] = PendingCommand(
            cmd_id, kind, json.loads(payload), queued, by, attempts)
    return pending


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
    """A host's row, its latest message still a dict and its plugins still (name, sample)
    pairs (both encoded by :func:`_host_text`)."""
    latest = host.latest
    return (host.name, host.state.value, host.addr, host.port, host.first_seen, host.last_seen,
            host.since, host.interval, host.rtt, host.version, host.boot_time, host.down_reason,
            host.expected_by, None if latest is None else latest[0],
            None if latest is None else latest[1], tuple(host.plugins.items()))


def _host_text(row: Sequence[Any]) -> Sequence[Any]:
    """A row of :func:`_host_row` as stored (writer thread): its latest message as JSON,
    its plugins as ``hosts.plugins`` (tables.plugin_times_text)."""
    latest, plugins = row[-2], row[-1]
    return (*row[:-2], None if latest is None else json_bytes(latest).decode(),
            plugin_times_text([(name, sample.ts) for name, sample in plugins])
            if plugins else None)


def _packed(row: Sequence[Any]) -> Sequence[Any]:
    """A history row as stored: the message's JSON text zlib-compressed (writer thread),
    about half the bytes of a typical PLG's text. A text that came zlib-compressed is
    queued as its stream (starting with ``x``, which no JSON text does) and kept as it
    came: compressing it again took a tenth of the server's time at 3,000 PLG/s."""
    if row[3][:1] == b"x":
        return row
    return (*row[:3], zlib.compress(row[3], 1), *row[4:])


def history_text(stored: str | bytes) -> str | bytes:
    """A history row's message as JSON text: stored zlib-compressed (since schema version
    11), as text (SQLite rows from before), or as the text's bytes (PostgreSQL's, whose
    column became BYTEA). zlib's header byte is 'x', which no JSON text starts with."""
    if isinstance(stored, str):
        return stored
    stored = bytes(stored)
    return zlib.decompress(stored) if stored[:1] == b"x" else stored


def _data_text(row: Sequence[Any]) -> Sequence[Any]:
    """A (host, plugin, ts, data) row as stored: the data as JSON (writer thread)."""
    return (*row[:3], json_bytes(row[3]).decode())


class StoreUnavailable(Exception):
    """A change the store could not commit (the disk full or read-only, the database gone,
    or a row it refuses): nothing of it was kept. The API answers 503."""


@dataclass(eq=False)
class _Entry:
    """A write in a batch; ``waiter`` fires once it is committed, or fails if it cannot be
    (an API change: kept whole or not at all, and never retried after its caller was told)."""

    write: Write
    waiter: Deferred[None] | None = None


@dataclass
class _Outcome:
    """What a batch came to on the writer thread."""

    committed: list[_Entry] = field(default_factory=list)
    kept: list[_Entry] = field(default_factory=list)
    """Not committed because the database failed (transient): retried after a backoff."""
    lost: list[tuple[_Entry, int, BaseException]] = field(default_factory=list)
    """Writes (and how many rows of each) the database refused alone: left out for good."""
    error: BaseException | None = None
    """The transient failure that left ``kept``."""
    whole_failed: bool = False
    """The batch failed as a whole (then went write by write)."""


class StoreService(Service):
    """Owns the backend; batches writes onto its writer thread, reads after them.

    One batch is in flight at a time, so writes commit in the order they were
    queued. A batch that fails is tried again write by write (a write of
    :class:`~heartbeat.server.tables.Rows` row by row), each in its own
    transaction: a row the database refuses on its own (a constraint, a value
    out of range) is left out, counted in ``isolated_rows`` and logged, and the
    rest commits. A failure of the database itself (full or read-only disk,
    lost connection) keeps the batch, which is retried first, after a backoff
    doubling up to ``retry_cap`` s; meanwhile the sources (dirty hosts, new
    history) wait in memory within their own bounds. :meth:`commit` is for
    changes the API answers: committed before the answer, or
    :class:`StoreUnavailable` and nothing kept.
    """

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
        retry_cap: float = 30.0,
    ) -> None:
        self.backend = backend
        self._worker = worker
        self._reader = reader if reader is not None and backend.separate_reader else None
        self._clock = clock
        self._flush_interval = flush_interval
        self._maintenance_interval = maintenance_interval
        self._pending: list[_Entry] = []
        self._kept: list[_Entry] = []
        self._sources: list[Callable[[], list[Write]]] = []
        self._maintenance: list[Callable[[Tables, float], None]] = []
        self._on_start: list[Callable[[], object]] = []
        self._after_flush: list[Callable[[], object]] = []
        self._timers = [periodic("store flush", flush_interval, self.flush, clock),
                        periodic("store retention", maintenance_interval, self._maintain, clock)]
        self._backoff = Backoff(first=min(1.0, retry_cap), cap=retry_cap)
        self._retry_at = 0.0
        self._attempts = 0
        self._busy = False
        self._waiting: list[Deferred[None]] = []
        self._stopping = False
        self.commits = 0
        self.failures = 0
        self.isolated_rows = 0
        """Rows the database refused on their own, left out so that the rest committed."""
        self.dropped_rows = 0
        """Rows a recorder gave up on while the disk was behind (see HostRecorder)."""
        self.last_commit: float | None = None
        """Clock time at which the last successful batch was taken for commit."""
        self._made = clock.seconds()
        """When the store was made: what it is behind from before its first commit."""
        self.last_error: str | None = None
        """The database's last failure while batches are kept for a retry (None once one
        commits)."""

    def submit(self, write: Write) -> None:
        """Queue ``write(tables)`` for the next commit."""
        self._pending.append(_Entry(write))

    def commit(self, *writes: Write) -> Deferred[None]:
        """Commit ``writes`` in one transaction now, after everything queued before them;
        fires once they are on disk, or fails with :class:`StoreUnavailable` (none kept)."""
        waiter: Deferred[None] = Deferred()
        self._pending.append(_Entry(_run_all(list(writes)), waiter))
        self.flush()
        return waiter

    def add_source(self, source: Callable[[], list[Write]]) -> None:
        """``source()`` is asked for writes at every flush (e.g. dirty hosts)."""
        self._sources.append(source)

    def add_after_flush(self, after: Callable[[], object]) -> None:
        """``after()`` runs each time a batch has settled (committed, or kept for a retry),
        its rows no longer held: the garbage collector's moment (server.collector)."""
        self._after_flush.append(after)

    def add_maintenance(self, task: Callable[[Tables, float], None]) -> None:
        """``task(tables, now)`` runs on the writer every ``maintenance_interval`` (retention)."""
        self._maintenance.append(task)

    @property
    def backlog(self) -> int:
        """Rows kept for a retry (a recorder counts them against its own bound, at every PLG:
        nothing kept is answered without a walk)."""
        if not self._kept:
            return 0
        return sum(len(e.write) if isinstance(e.write, Rows) else 1 for e in self._kept)

    def _take(self) -> list[_Entry] | None:
        """The next batch (None: wait for the backoff): kept writes first, then the queued;
        the sources only once nothing is kept, so a failing disk grows no batch."""
        if self._kept and not self._stopping and self._clock.seconds() < self._retry_at \
                and not any(e.waiter is not None for e in self._pending):
            return None
        kept = self._kept
        batch, self._kept, self._pending = kept + self._pending, [], []
        if not kept:
            for source in self._sources:
                batch.extend(_Entry(write) for write in source())
        return batch

    def flush(self) -> Deferred[None]:
        """Commit everything queued so far; fires when it is on disk (or kept for a retry,
        which is logged and counted, never raised)."""
        done: Deferred[None] = Deferred()
        self._waiting.append(done)
        if not self._busy:
            self._next()
        return done

    def _next(self) -> None:
        waiting, self._waiting = self._waiting, []
        batch = self._take()
        self._busy = True
        if not batch:
            d: Deferred[Any] = self._worker.run(lambda: None)
        else:
            taken = self._clock.seconds()
            d = self._worker.run(self._write, batch)
            d.addCallback(self._settle, taken)
            del batch  # held by the write alone: freed once it settled (server.collector)
        d.addErrback(lambda f: log.failure("store: settling a batch failed", f))

        def finished(_: object) -> None:
            self._busy = False
            for after in self._after_flush:
                after()
            for w in waiting:
                w.callback(None)
            if self._waiting:
                self._next()

        d.addBoth(finished)

    def _write(self, batch: list[_Entry]) -> _Outcome:
        """On the writer thread: the batch whole, else write by write (see the class)."""
        backend = self.backend
        try:
            backend.transaction(_run_all([e.write for e in batch]))
            return _Outcome(committed=batch)
        except Exception as e:
            if backend.transient(e):
                return _Outcome(kept=batch, error=e)
        outcome = _Outcome(whole_failed=True)
        for i, entry in enumerate(batch):
            write = entry.write
            parts: list[Write] = (list(write.split()) if isinstance(write, Rows)
                                  and entry.waiter is None else [write])
            refused: BaseException | None = None
            lost = 0
            for j, part in enumerate(parts):
                try:
                    backend.transaction(part)
                except Exception as e:
                    if not backend.transient(e):
                        refused, lost = e, lost + (len(part) if isinstance(part, Rows) else 1)
                        continue
                    rest = (_Entry(dataclasses.replace(write, rows=write.rows[j:]))
                            if isinstance(write, Rows) and j else entry)
                    if refused is not None:
                        outcome.lost.append((_Entry(write), lost, refused))
                    outcome.kept = [rest, *batch[i + 1:]]
                    outcome.error = e
                    return outcome
            if refused is None:
                outcome.committed.append(entry)
            else:
                outcome.lost.append((entry, lost, refused))
        return outcome

    def _settle(self, outcome: _Outcome, taken: float) -> None:
        for entry in outcome.committed:
            if entry.waiter is not None:
                entry.waiter.callback(None)
        for entry, rows, error in outcome.lost:
            self.isolated_rows += rows
            log.error("store: the database refused {rows} row(s) ({error}); left out, the "
                      "rest of the batch committed", rows=rows, error=_one_line(error))
            if entry.waiter is not None:
                entry.waiter.errback(StoreUnavailable(f"the store refused it: {_one_line(error)}"))
        if outcome.whole_failed:
            self.failures += 1
        if outcome.error is None:
            self.commits += 1
            self.last_commit = taken
            self.last_error = None
            if self._attempts:
                log.info("store: writing again after {n} failed attempt(s)", n=self._attempts)
            self._attempts = 0
            return
        if not outcome.whole_failed:
            self.failures += 1
        self._attempts += 1
        self.last_error = _one_line(outcome.error)
        delay = self._backoff.delay(self._attempts)
        self._retry_at = self._clock.seconds() + delay
        refused = [e for e in outcome.kept if e.waiter is not None]
        self._kept = [e for e in outcome.kept if e.waiter is None] + self._kept
        for entry in refused:
            assert entry.waiter is not None
            entry.waiter.errback(StoreUnavailable(f"the store cannot write: {self.last_error}"))
        log.error("store: a write batch failed ({error}); {rows} row(s) kept, retried in "
                  "{delay:.0f}s", error=self.last_error, rows=self.backlog, delay=delay)

    def behind(self) -> float:
        """How far (s) the store is behind memory: since the last commit (since it was
        made, before the first) while the last attempt failed or a batch is kept for a
        retry (the database out of reach), else 0. A retry in flight holds the kept rows,
        so ``_kept`` alone would read 0 meanwhile."""
        if self.last_error is None and not self._kept:
            return 0.0
        since = self._made if self.last_commit is None else self.last_commit
        return max(0.0, self._clock.seconds() - since)

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend.kind, "integrity": self.backend.integrity,
                "commits": self.commits,
                "behind_seconds": round(self.behind(), 3),
                "failures": self.failures, "last_commit": self.last_commit,
                "last_error": self.last_error, "backlog": self.backlog,
                "isolated_rows": self.isolated_rows,
                "dropped_rows": self.dropped_rows, "queued": len(self._pending)}

    def read(self, fn: Read[T]) -> Deferred[T]:
        """Run ``fn(tables)`` on the backend after every write queued before it."""
        flushed = self.flush()
        reader = self._reader
        if reader is None:
            return flushed.addCallback(lambda _: self._worker.run(self.backend.read, fn))
        return flushed.addCallback(lambda _: reader.run(self.backend.read, fn))

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
        for begin in self._on_start:
            begin()

    def on_start(self, begin: Callable[[], object]) -> None:
        """Call ``begin`` once the store runs (its threads started), before the services
        after it in the tree: reads start-up need not wait for, queued ahead of any datagram."""
        self._on_start.append(begin)

    def stopService(self) -> Deferred[None]:
        """The last commit (after a flush in progress), then the connections and threads."""
        super().stopService()
        d = stop_timers(self._timers)

        def last(_: object) -> Deferred[None]:
            self._stopping = True
            return self.flush()

        def lost(_: object) -> None:
            if self._kept:
                log.error("store: stopping with {rows} row(s) the database would not take",
                          rows=self.backlog)

        d.addCallback(last)
        d.addCallback(lost)
        if self._reader is not None:
            reader = self._reader
            d.addCallback(lambda _: reader.stop())
        d.addCallback(lambda _: self._worker.run(self.backend.close))
        d.addErrback(lambda f: log.failure("store: closing the database failed", f))
        d.addBoth(lambda _: self._worker.stop())
        return d


def _run_all(batch: list[Write]) -> Callable[[Tables], None]:
    def run(tables: Tables) -> None:
        for write in batch:
            write(tables)

    return run


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


class HostRecorder:
    """Keeps the store in step with the registry: host rows, latest and history.

    History is trimmed to ``max_samples`` per host by the periodic maintenance
    and, for a host that sends faster than that, as soon as it has added
    ``max_samples`` rows since its last trim: no host holds more than twice its
    cap at the end of a batch, however hard it floods between two maintenance runs.
    While the store is behind (or failing: its ``backlog`` counts), at most
    ``max_pending`` history rows wait in memory; later ones are counted in
    ``dropped_rows`` (the latest data of each plugin is still kept).

    History is bounded in bytes too, as stored: a host holds at most
    :meth:`host_cap` bytes, the
    smaller of ``max_host_bytes`` and an equal share of ``max_bytes`` among the
    hosts holding history, so all of it stays within ``max_bytes``. A host past
    its cap is trimmed (oldest rows first, to nine tenths of it) in the batch
    that takes it there; the periodic maintenance trims from the store's own
    count. The bytes held are counted from the store at start-up
    (:meth:`restore_bytes`) and kept as an upper bound in between: a message
    counts as its inflated text, never less than it takes stored, so a small
    datagram that inflates far is charged what it inflates to.
    """

    def __init__(
        self, registry: Registry, store: StoreService, retention: float, max_samples: int,
        max_pending: int = 100_000, *, max_host_bytes: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self._registry = registry
        self._store = store
        self._retention = retention
        self._max_samples = max_samples
        self._max_pending = max_pending
        self._max_host_bytes = max_host_bytes
        self._max_bytes = max_bytes
        self._bytes: dict[str, int] = {}
        """Bytes of history each host holds (or is about to), at most."""
        self._bytes_due: set[str] = set()
        self.trimmed_for_bytes = 0
        """Trims of a host's history to its cap in bytes."""
        self._history: list[tuple[str, float, str, bytes, int | None, float | None]] = []
        self._newest: dict[str, tuple[float, dict[str, Any]]] = {}
        """Each host's newest PLG since the last flush: its time and plugins."""
        self._older: dict[str, dict[str, tuple[float, Any]]] = {}
        """Plugins of a host's earlier PLGs since the last flush that its newest one does not
        carry (rare: a host's PLGs carry the same plugins), with their time and data."""
        self._added: dict[str, int] = {}
        self._trim_due: set[str] = set()
        self._cap = self.host_cap()
        self._cap_hosts = 0
        """How many hosts held history when ``_cap`` was worked out."""
        store.add_source(self._statements)
        store.add_maintenance(self.prune)

    def on_received(self, event: Event) -> None:
        """A ``message``: a PLG's text is queued for the history, and the PLG is kept as its
        host's newest, whose plugins' data (encoded at the flush on the writer thread) go
        to ``plugin_data``. No row a plugin is made here, the flush makes them: a PLG
        leaves fewer objects for the young garbage collections to walk until then."""
        message = event.data["message"]
        if message["ID"] != "PLG" or not message["plugins"]:
            return
        raw = event.raw if event.raw is not None else json_bytes(message)
        plugins = message["plugins"]
        host = event.host
        if len(self._history) + self._store.backlog < self._max_pending:
            self._history.append((host, event.ts, f",{','.join(plugins)},",
                                  raw if event.packed is None else event.packed,
                                  *message_key(message)))
            held_bytes = self._bytes
            held = held_bytes[host] = held_bytes.get(host, 0) + len(raw)
            if len(held_bytes) != self._cap_hosts:  # a share of max_bytes: one more host
                self._cap, self._cap_hosts = self.host_cap(), len(held_bytes)
            if held > self._cap:
                self._bytes_due.add(host)
        else:
            self._store.dropped_rows += 1
        newest = self._newest.get(host)
        if newest is not None and not newest[1].keys() <= plugins.keys():
            self._keep_older(host, newest, plugins)
        elif host in self._older:
            self._keep_older(host, None, plugins)
        self._newest[host] = (event.ts, plugins)
        added = self._added.get(host, 0) + 1
        if added >= self._max_samples:
            added = 0
            self._trim_due.add(host)
        self._added[host] = added

    def _keep_older(self, host: str, newest: tuple[float, dict[str, Any]] | None,
                    plugins: dict[str, Any]) -> None:
        """Before ``plugins`` become ``host``'s newest: the data of the plugins ``newest``
        (the PLG they replace) carries and they do not are kept, and what was kept of the
        plugins they carry is forgotten."""
        older = self._older.setdefault(host, {})
        if newest is not None:
            ts, data = newest
            older.update((name, (ts, value)) for name, value in data.items()
                         if name not in plugins)
        for name in plugins:
            older.pop(name, None)
        if not older:
            del self._older[host]

    def _latest_rows(self) -> list[tuple[str, str, float, Any]]:
        """The ``plugin_data`` rows of every PLG since the last flush: each host's newest,
        and of its earlier ones the plugins the newest does not carry."""
        rows = [(host, name, ts, value) for host, (ts, data) in self._newest.items()
                for name, value in data.items()]
        rows += [(host, name, ts, value) for host, older in self._older.items()
                 for name, (ts, value) in older.items()]
        self._newest, self._older = {}, {}
        return rows

    def host_cap(self) -> float:
        """The bytes of history one host may hold now (see the class)."""
        cap = float("inf") if self._max_host_bytes is None else self._max_host_bytes
        if self._max_bytes is not None:
            cap = min(cap, self._max_bytes // max(1, len(self._bytes)))
        return cap

    def restore_bytes(self, held: dict[str, int]) -> None:
        """The bytes of history each host held in the store when start-up read it (once
        running: compose.restore_history_bytes), added to what came since, which the read,
        queued before it, did not see."""
        since, self._bytes = self._bytes, dict(held)
        for host, size in since.items():
            self._bytes[host] = self._bytes.get(host, 0) + size
        cap = self.host_cap()
        self._bytes_due |= {host for host, size in self._bytes.items() if size > cap}

    def on_removed(self, event: Event) -> None:
        self._newest.pop(event.host, None)
        self._older.pop(event.host, None)
        self._added.pop(event.host, None)
        self._trim_due.discard(event.host)
        self._bytes.pop(event.host, None)
        self._bytes_due.discard(event.host)
        self._store.submit(lambda tables: _forget_host(tables, event.host))

    def _statements(self) -> list[Write]:
        writes: list[Write] = []
        hosts, beaten = self._registry.take_dirty()
        if hosts:
            writes.append(Rows("put", HOSTS, [_host_row(h) for h in hosts], encode=_host_text))
        if beaten:
            writes.append(Rows("refresh", HOSTS, [_host_row(h) for h in beaten], BEAT_FIELDS,
                               encode=_host_text))
        commanded = self._registry.take_commands_dirty()
        if commanded:
            cleared, commands = _command_rows(commanded)
            writes.append(Rows("delete", COMMANDS, cleared, ("host",)))
            writes.append(Rows("add", COMMANDS, commands))
        if self._history:
            history, self._history = self._history, []
            writes.append(Rows("add", PLUGIN_HISTORY, history, encode=_packed))
        if self._newest:
            writes.append(Rows("put", PLUGIN_DATA, self._latest_rows(), encode=_data_text))
        if self._trim_due:
            due, self._trim_due = self._trim_due, set()
            writes.append(lambda tables: self._trim_all(tables, due))
        if self._bytes_due:
            over, self._bytes_due = self._bytes_due, set()
            keep = int(self.host_cap() * 0.9)
            for host in over:
                self._bytes[host] = min(self._bytes.get(host, 0), keep)
            self.trimmed_for_bytes += len(over)
            writes.append(lambda tables: _trim_bytes(tables, sorted(over), keep))
        return writes

    def _trim_all(self, tables: Tables, hosts: Iterable[str]) -> None:
        for host in hosts:
            tables.trim_history(host, self._max_samples)

    def prune(self, tables: Tables, now: float) -> None:
        """Drop history past the retention age, the per-host message cap and the per-host
        byte cap (counted by the store here)."""
        tables.delete_before(PLUGIN_HISTORY, "ts", now - self._retention)
        self._trim_all(tables, tables.history_over(self._max_samples))
        if self._max_host_bytes is None and self._max_bytes is None:
            return
        cap = self.host_cap()
        over = [host for host, size in tables.history_bytes().items() if size > cap]
        _trim_bytes(tables, over, int(cap * 0.9))


def _trim_bytes(tables: Tables, hosts: Iterable[str], keep: int) -> None:
    for host in hosts:
        tables.trim_history_bytes(host, keep)


_SEQ_LIMIT = 1 << 62


def message_key(message: dict[str, Any]) -> tuple[int | None, float | None]:
    """A message's own ``seq`` and ``ts``: with its host, what it is known by in the history
    of every server that heard it (None for one missing or out of any column's range)."""
    seq, sent = message.get("seq"), message.get("ts")
    if type(seq) is not int:  # a plain int and a float, the common case, asked first
        seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
    if seq is not None and not -_SEQ_LIMIT < seq < _SEQ_LIMIT:
        seq = None
    if type(sent) is not float:
        sent = float(sent) if isinstance(sent, int | float) and not isinstance(sent, bool) \
            else None
    return seq, sent if sent is not None and math.isfinite(sent) else None


def _forget_host(tables: Tables, host: str) -> None:
    """A removed host's rows, every table."""
    tables.delete(HOSTS, [(host,)])
    for table in (PLUGIN_DATA, PLUGIN_HISTORY, COMMANDS):
        tables.delete(table, [(host,)], by=("host",))


def read_history(
    host: str, plugin: str, limit: int, since: float | None = None
) -> Read[list[dict[str, Any]]]:
    """A store read returning the newest ``limit`` samples of one plugin, newest first.

    ``since``: only samples received at or after that time (a chart's range).
    """

    def run(tables: Tables) -> list[dict[str, Any]]:
        samples = []
        for ts, stored in tables.history(host, plugin, limit, since):
            plugins = json.loads(history_text(stored))["plugins"]
            if plugin in plugins:  # a name with a comma could match another's list
                samples.append({"ts": ts, "data": plugins[plugin]})
        return samples

    return run


def read_latest(host: str) -> Read[dict[str, dict[str, Any]]]:
    """A store read: each plugin's latest ``{"ts", "data"}`` of ``host``, by plugin name."""

    def run(tables: Tables) -> dict[str, dict[str, Any]]:
        rows = sorted(tables.rows(PLUGIN_DATA, host=host))
        return {plugin: {"ts": ts, "data": read_json(data.encode())}
                for _, plugin, ts, data in rows}

    return run


def read_latest_all(tables: Tables, plugins: Container[str] | None = None
                    ) -> dict[str, dict[str, Any]]:
    """A store read: every host's latest data of each plugin (of ``plugins`` only, when
    given: the others are not decoded), ``{host: {plugin: data}}``."""
    found: dict[str, dict[str, Any]] = {}
    for host, plugin, _, data in tables.rows(PLUGIN_DATA):
        if plugins is None or plugin in plugins:
            found.setdefault(host, {})[plugin] = read_json(data.encode())
    return found
