"""One store suite, run against both backends: SQLite (a file) and PostgreSQL (a real server).

Every operation of the storage interface (heartbeat.server.tables) on every
table, the services' writes loading back through their loaders, the batch
semantics of StoreService, and each backend's schema against the Table specs.
PostgreSQL's own schema versioning is at the end.
"""

from __future__ import annotations

import json
import random
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from heartbeat.config.server import ServerConfig, UserConfig
from heartbeat.events import RECEIVED, Event, EventBus
from heartbeat.protocol import decode_received, read_json
from heartbeat.server.access import Directory, HostAccess
from heartbeat.server.alerting import load_alert_states
from heartbeat.server.auth import AuthService, PasswordHasher, load_auth
from heartbeat.server.compose import restore_history_bytes, wire
from heartbeat.server.migrations import NEWEST, STEPS, SchemaError, Step
from heartbeat.server.operations import load_operations
from heartbeat.server.registry import BEAT_FIELDS, Registry
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.store import (
    HostRecorder,
    StoreService,
    StoreUnavailable,
    _data_text,
    history_text,
    load_hosts,
    message_key,
    open_sqlite,
    read_history,
    read_latest,
)
from heartbeat.server.tables import (
    ACKNOWLEDGEMENTS,
    ALERT_STATES,
    API_KEYS,
    COMMANDS,
    FLAP_STATES,
    HELD_PROBLEMS,
    HOSTS,
    MAINTENANCE_WINDOWS,
    OPERATION_IDS,
    PLUGIN_DATA,
    PLUGIN_HISTORY,
    SESSIONS,
    SILENCES,
    TABLES,
    USERS,
    Backend,
    Rows,
    Table,
    Tables,
)
from heartbeat.server.user_policy import CreateUser
from tests.apistack import FAST, fired
from tests.memserver import stored_fields
from tests.test_user_policy import HeldWorker

BACKENDS = ["sqlite", "postgresql"]


def pg_config(url: str, **overrides: Any) -> ServerConfig:
    return ServerConfig(store_url=url, node_name="test", **overrides)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A new, empty store at the newest schema version on each backend."""
    if request.param == "sqlite":
        made: Backend = open_sqlite(tmp_path / "s.sqlite3")
    else:
        from heartbeat.server import postgres

        made = postgres.open_store(pg_config(request.getfixturevalue("postgres_url")))
    yield made
    made.close()


def write(backend: Backend, *work: Any) -> None:
    backend.transaction(lambda tables: [w(tables) for w in work])


def rows(backend: Backend, table: Table, **equal: Any) -> list[tuple[Any, ...]]:
    return sorted(backend.read(lambda tables: tables.rows(table, **equal)),
                  key=lambda r: tuple("" if v is None else str(v) for v in r))


def count(backend: Backend, table: Table) -> int:
    return len(backend.read(lambda tables: tables.rows(table)))


SAMPLES: dict[str, tuple[tuple[Any, ...], tuple[Any, ...]]] = {
    # table: (a row, the same key with every other column changed)
    "hosts": (("web1", "UP", "10.0.0.1", 5000, 1.5, 2.5, 1.5, 30.0, 0.01, "1.0", 100.0, None,
               42.5, 2.0, '{"ID":"MSG","text":"hi"}', '[[2.0,"cpu","os"]]'),
              ("web1", "DOWN", None, None, 1.5, 3.5, 3.5, 60.0, None, "1.1", None, "timeout",
               None, None, None, None)),
    "plugin_data": (("web1", "cpu", 1.0, '{"load":1}'), ("web1", "cpu", 2.0, "2")),
    "plugin_history": (("web1", 1.0, ",cpu,", b'{"plugins":{"cpu":1}}', 5, 9.5),
                       ("web1", 2.0, ",mem,", zlib.compress(b'{"plugins":{"mem":1}}'), 5,
                        9.5)),
    "commands": (("web1", "5f-1", "CMD", '{"cmd":"x"}', 1.0, "alice", 0),
                 ("web1", "5f-1", "UPD", '{"version":"2"}', 2.0, None, 3)),
    "users": (("alice", '{"role":"admin"}'), ("alice", None)),
    "host_access": (("web1", "alice", '["bob"]', "[]"), ("web1", None, "[]", '["carol"]')),
    "sessions": (("k1", "alice", 1.0, 2.0, "c1", "127.0.0.1", 0),
                 ("k1", "bob", 3.0, 4.0, "c2", None, 1)),
    "api_keys": (("7", "d1", "alice", "ci", "read", 1.0, None, None, None),
                 ("7", "d2", "bob", "deploy", "write", 2.0, 9.0, 3.0, "10.0.0.9")),
    "alert_states": (("web1", "cpu.load", "cpu", "warning", "2.5", "2", ">", "load {value}",
                      1.0, None),
                     ("web1", "cpu.load", "cpu", "critical", "9", "8", ">=", "load", 2.0, 3.0)),
    "maintenance_windows": (("1", '{"hosts":["web1"]}', "alice", 1.0),
                            ("1", '{"hosts":["db1"]}', None, 2.0)),
    "silences": (("1", "web1", "cpu.load", 1.0, 2.0, "alice", "noisy", 1.0, None),
                 ("1", "db*", "*", 3.0, 4.0, None, "", 3.0, "bob")),
    "acknowledgements": (("web1", "", "DOWN", "alice", "on it", 1.0),
                         ("web1", "", "UNREACHABLE", None, "", 2.0)),
    "held_problems": (("web1", "cpu.load", "warning", "maintenance", "window 1", 1.0),
                      ("web1", "cpu.load", "critical", "silence", "silence 2", 2.0)),
    "flap_states": (("web1", "", '["UP","DOWN"]', 1, 1.0),
                    ("web1", "", '["UP"]', 0, None)),
    "operation_ids": (("silence", 3), ("silence", 1)),
    "totp": (("alice", "S3CR3T", 1.0, None, '["d1"]'), ("alice", "OTHER", 2.0, 57000001, "[]")),
    "auth_settings": (("totp_required", "all"), ("totp_required", "off")),
    "badges": (("tok1", "host", "web1", 1.0), ("tok1", "page", "main", 2.0)),
    "jobs": (("backup", "0f8e6d4c-2b1a-4c3d-9e8f-7a6b5c4d3e2f", 1.0, '{"level":"OK"}'),
             ("backup", "1f8e6d4c-2b1a-4c3d-9e8f-7a6b5c4d3e2f", 2.0, '{"failed":true}')),
    "notices": (("host:web1", "down", 1.0, "one"), ("host:web1", "up", 2.0, "two")),
}


class TablesTests:
    def test_put_add_update_delete_round_trip(self, backend: Backend) -> None:
        """Every keyed table: put replaces by key, add keeps, update sets columns, delete."""
        for table in TABLES:
            if table.key:
                _round_trip(backend, table)

    def test_rows_where_and_delete_by(self, backend: Backend) -> None:
        """rows() filters on equal columns; delete(by=) removes every row of a host."""
        commands = [("a", "1-1", "CMD", "{}", 1.0, None, 0), ("a", "1-2", "CMD", "{}", 2.0,
                    None, 0), ("b", "1-3", "UPD", "{}", 3.0, "x", 1)]
        write(backend, lambda t: t.add(COMMANDS, commands))
        assert rows(backend, COMMANDS, host="a") == commands[:2]
        assert rows(backend, COMMANDS, host="b", cmd_id="1-3") == commands[2:]
        write(backend, lambda t: t.delete(COMMANDS, [("a",)], by=("host",)))
        assert rows(backend, COMMANDS) == commands[2:]

    def test_update_never_adds_a_row(self, backend: Backend) -> None:
        """Touching a session that is gone does not bring it back."""
        found: list[int] = []
        write(backend, lambda t: found.append(t.update(SESSIONS, ("last_used",),
                                                       [(5.0, "gone")])))
        assert rows(backend, SESSIONS) == [] and found == [0]

    def test_refresh_sets_its_columns_or_puts_every_row_whole(self, backend: Backend) -> None:
        """A refresh writes only its columns of rows that are there; when one is missing,
        all its rows go in whole (a host row lost or never written is written again)."""
        first, other = SAMPLES["hosts"]
        beat = {c: other[HOSTS.columns.index(c)] for c in BEAT_FIELDS}
        refreshed = tuple(beat.get(c, first[i]) for i, c in enumerate(HOSTS.columns))
        write(backend, lambda t: t.put(HOSTS, [first]))
        write(backend, Rows("refresh", HOSTS, [other], BEAT_FIELDS))
        assert rows(backend, HOSTS) == [refreshed]
        found: list[int] = []
        write(backend, lambda t: found.append(t.update(
            HOSTS, BEAT_FIELDS, [(*beat.values(), "web1"), (*beat.values(), "gone")])))
        assert found == [1]
        second = ("web2", *other[1:])
        write(backend, Rows("refresh", HOSTS, [first, second], BEAT_FIELDS))
        assert rows(backend, HOSTS) == [first, second]

    def test_raise_to_never_lowers(self, backend: Backend) -> None:
        """The last id given only goes up, whatever order the writes come in."""
        write(backend, lambda t: t.raise_to(OPERATION_IDS, [("silence", 3), ("maintenance", 1)]))
        write(backend, lambda t: t.raise_to(OPERATION_IDS, [("silence", 2), ("maintenance", 4)]))
        assert rows(backend, OPERATION_IDS) == [("maintenance", 4), ("silence", 3)]

    def test_history_by_plugin_since_and_caps(self, backend: Backend) -> None:
        """History: newest first, by plugin name (not a prefix), since a time, trimmed
        per host, pruned by age."""
        history = [("a", 10.0 + i, ",cpu,mem," if i % 2 else ",cpu,", f'{{"n":{i}}}'.encode(),
                    i, 5.0) for i in range(6)] + [("b", 1.0, ",cpux,", b"{}", None, None)]
        write(backend, lambda t: t.add(PLUGIN_HISTORY, history))
        got = backend.read(lambda t: t.history("a", "cpu", 3, None))
        assert got == [(15.0, b'{"n":5}'), (14.0, b'{"n":4}'), (13.0, b'{"n":3}')]
        assert backend.read(lambda t: t.history("a", "mem", 10, 12.0)) == [
            (15.0, b'{"n":5}'), (13.0, b'{"n":3}')]
        assert backend.read(lambda t: t.history("b", "cpu", 10, None)) == []
        assert backend.read(lambda t: t.history_over(2)) == ["a"]
        write(backend, lambda t: t.trim_history("a", 4))
        assert [r[1] for r in rows(backend, PLUGIN_HISTORY, host="a")] == [12.0, 13.0, 14.0,
                                                                           15.0]
        write(backend, lambda t: t.delete_before(PLUGIN_HISTORY, "ts", 14.0))
        assert [r[1] for r in rows(backend, PLUGIN_HISTORY)] == [14.0, 15.0]

    def test_history_of_one_message_is_kept_once(self, backend: Backend) -> None:
        """A PLG added again (another server heard it: same host, seq and ts) is kept once;
        messages without seq or ts are kept as often as they came."""
        row = ("a", 10.0, ",cpu,", b'{"n":1}', 7, 1700000000.25)
        again = ("a", 10.2, ",cpu,", b'{"n":1}', 7, 1700000000.25)  # received later, elsewhere
        other = ("a", 11.0, ",cpu,", b'{"n":2}', 7, 1700000001.25)  # a restarted sender's seq
        bare = ("a", 12.0, ",cpu,", b"{}", None, None)
        write(backend, lambda t: t.add(PLUGIN_HISTORY, [row, again, bare]))
        write(backend, lambda t: t.add(PLUGIN_HISTORY, [again, other, bare]))
        assert rows(backend, PLUGIN_HISTORY) == [row, other, bare, bare]

    def test_a_failing_write_rolls_its_transaction_back(self, backend: Backend) -> None:
        """A transaction is whole or nothing: a failing write leaves none of its batch."""
        def bad(tables: Tables) -> None:
            tables.put(USERS, [("alice", None)])
            tables.put(USERS, [("bob", None, "one column too many")])

        with pytest.raises(Exception):  # noqa: B017 - each driver raises its own
            backend.transaction(bad)
        assert rows(backend, USERS) == []
        write(backend, lambda t: t.put(USERS, [("carol", None)]))  # the connection still works
        assert rows(backend, USERS) == [("carol", None)]

    def test_every_table_matches_the_schema(self, backend: Backend) -> None:
        """Each Table names exactly its table's columns, in order, and its key."""
        for table in TABLES:
            columns, key = _schema(backend, table.name)
            assert (table.name, columns, key) == (table.name, list(table.columns),
                                                  sorted(table.key))

    def test_text_survives_exactly(self, backend: Backend) -> None:
        """Any text the protocol lets in (quotes, NUL-free unicode, % and ?) round-trips."""
        odd = "it's \"quoted\" % ? ; -- é 漢字 \U0001F600 \\ \t"
        write(backend, lambda t: t.put(USERS, [(odd, odd)]))
        assert rows(backend, USERS) == [(odd, odd)]


def _round_trip(backend: Backend, table: Table) -> None:
    first, second = SAMPLES[table.name]
    write(backend, lambda t: t.put(table, [first]))
    assert (table.name, rows(backend, table)) == (table.name, [first])
    write(backend, lambda t: t.add(table, [second]))
    assert (table.name, rows(backend, table)) == (table.name, [first])
    write(backend, lambda t: t.put(table, [second]))
    assert (table.name, rows(backend, table)) == (table.name, [second])
    key = tuple(second[table.columns.index(k)] for k in table.key)
    rest = table.rest[:1]
    if rest:
        value = first[table.columns.index(rest[0])]
        write(backend, lambda t: t.update(table, rest, [(value, *key)]))
        changed = list(second)
        changed[table.columns.index(rest[0])] = value
        assert (table.name, rows(backend, table)) == (table.name, [tuple(changed)])
    write(backend, lambda t: t.delete(table, [key]))
    assert (table.name, rows(backend, table)) == (table.name, [])


def _schema(backend: Backend, name: str) -> tuple[list[str], list[str]]:
    """A table's columns in order, and its key: the primary key, else its unique index."""
    def run(tables: Any) -> tuple[list[str], list[str]]:
        q = tables._execute
        if backend.kind == "sqlite":
            info = q(f"SELECT name, pk FROM pragma_table_info('{name}') ORDER BY cid", ())
            key = [c for c, pk in info if pk]
            for (index,) in q(f"SELECT name FROM pragma_index_list('{name}') WHERE \"unique\""
                              f" AND origin = 'c'", ()):
                key = key or [c for (c,) in q(f"SELECT name FROM pragma_index_info('{index}')",
                                              ())]
            return [c for c, _ in info], sorted(key)
        columns = q("SELECT column_name FROM information_schema.columns WHERE table_name = %s"
                    " AND table_schema = current_schema() ORDER BY ordinal_position", (name,))
        indexes = q("SELECT i.indexrelid::regclass::text, i.indisprimary, a.attname FROM"
                    " pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum ="
                    " ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisunique", (name,))
        primary = [c for _, p, c in indexes if p]
        once = [c for index, _, c in indexes if index == f"{name}_once"]
        return [c for (c,) in columns], sorted(primary or once)

    return backend.read(run)


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1000.0)
    return clock


def make_bus() -> EventBus:
    def fail(subscriber: Any, event: Event, error: BaseException) -> None:
        raise AssertionError(f"subscriber failed: {error!r}")

    return EventBus(on_error=fail)


class StoreServiceTests:
    """The store service and the host recorder over each backend (writes run inline)."""

    def _store(self, backend: Backend, clock: Clock, retention: float = 100.0,
               max_samples: int = 3) -> tuple[StoreService, Registry, EventBus]:
        registry = Registry(grace=5, default_interval=10)
        bus = make_bus()
        store = StoreService(backend, ImmediateWorker(), clock, flush_interval=0.5,
                             reader=ImmediateWorker())
        wire(bus, recorder=HostRecorder(registry, store, retention=retention,
                                        max_samples=max_samples))
        return store, registry, bus

    def _apply(self, registry: Registry, bus: EventBus, message: dict[str, Any],
               now: float) -> None:
        """What ingest does: publish the message as received, then its effects."""
        bus.publish(Event(RECEIVED, message["name"], now, {
            "message": message, "source_ip": "10.0.0.1", "source_port": 1},
            json.dumps(message).encode()))
        bus.publish_all(registry.apply(message, ("10.0.0.1", 1), now).events)

    def test_hosts_and_plugins_written_in_batches(self, backend: Backend, clock: Clock) -> None:
        """Host rows and plugin samples reach the store on the flush timer, and load back."""
        store, registry, bus = self._store(backend, clock)
        store.startService()
        self._apply(registry, bus, {"ID": "HTB", "name": "h", "interval": 7}, 1000.0)
        self._apply(registry, bus, {"ID": "PLG", "name": "h",
                                    "plugins": {"cpu": {"v": 1}}}, 1000.0)
        assert count(backend, HOSTS) == 0
        clock.advance(0.5)
        assert [(r[0], r[1], r[7]) for r in rows(backend, HOSTS)] == [("h", "UP", 7.0)]
        hosts = store.load(load_hosts)
        assert [(h.name, h.state.value, {p: s.ts for p, s in h.plugins.items()})
                for h in hosts] == [("h", "UP", {"cpu": 1000.0})]
        assert fired(store.read(read_latest("h"))) == {"cpu": {"ts": 1000.0, "data": {"v": 1}}}
        later = 1000.1 + 0.2  # 17 significant digits: the host's row keeps them all
        self._apply(registry, bus, {"ID": "PLG", "name": "h",
                                    "plugins": {"mem": {"m": 2}, "os": "Linux"}}, later)
        clock.advance(0.5)
        (host,) = store.load(load_hosts)
        assert {p: s.ts for p, s in host.plugins.items()} == {
            "cpu": 1000.0, "mem": later, "os": later}
        assert host.plugins["mem"] is host.plugins["os"]  # one sample per time
        fired(store.stopService())
        assert clock.getDelayedCalls() == []

    def test_history_newest_first_and_capped(self, backend: Backend, clock: Clock) -> None:
        """History reads are newest first, per plugin; maintenance trims age and count."""
        store, registry, bus = self._store(backend, clock, max_samples=7)
        self._apply(registry, bus, {"ID": "PLG", "name": "h", "plugins": {"cpu": {"v": -1}}},
                    850.0)
        for i in range(6):
            plugins: dict[str, Any] = {"cpu": {"v": i}}
            if i % 2:
                plugins["mem"] = {"m": i}
            self._apply(registry, bus, {"ID": "PLG", "name": "h", "plugins": plugins},
                        900.0 + i * 20)
        assert fired(store.read(read_history("h", "cpu", 2))) == [
            {"ts": 1000.0, "data": {"v": 5}}, {"ts": 980.0, "data": {"v": 4}}]
        assert fired(store.read(read_history("h", "mem", 10))) == [
            {"ts": 1000.0, "data": {"m": 5}}, {"ts": 960.0, "data": {"m": 3}},
            {"ts": 920.0, "data": {"m": 1}}]
        got = fired(store.read(read_history("h", "cpu", 10)))
        assert [s["data"]["v"] for s in got] == [5, 4, 3, 2, 1, 0, -1]
        store.startService()  # maintenance runs at start: retention 100 s, cap 7 messages
        got = fired(store.read(read_history("h", "cpu", 10)))
        assert [s["data"]["v"] for s in got] == [5, 4, 3, 2, 1, 0]
        pruner = HostRecorder(registry, store, retention=100.0, max_samples=2)
        backend.transaction(lambda tables: pruner.prune(tables, 1000.0))
        got = fired(store.read(read_history("h", "cpu", 10)))
        assert [s["data"]["v"] for s in got] == [5, 4]  # e.g. a lowered history_max_samples
        fired(store.stopService())

    def test_flooding_host_trimmed_before_maintenance(self, backend: Backend,
                                                      clock: Clock) -> None:
        """A host sending faster than its cap is trimmed with its next batch, not 10 min later."""
        store, registry, bus = self._store(backend, clock, max_samples=3)
        counts = []
        for i in range(10):
            self._apply(registry, bus, {"ID": "PLG", "name": "h", "plugins": {"cpu": {"v": i}}},
                        900.0 + i)
            store.flush()
            counts.append(count(backend, PLUGIN_HISTORY))
        assert counts == [1, 2, 3, 4, 5, 3, 4, 5, 3, 4]
        got = fired(store.read(read_history("h", "cpu", 10)))
        assert [s["data"]["v"] for s in got] == [9, 8, 7, 6]

    def test_latest_survives_reload_per_plugin(self, backend: Backend, clock: Clock) -> None:
        """Each plugin's newest sample loads back even when later messages lack it."""
        store, registry, bus = self._store(backend, clock)
        self._apply(registry, bus, {"ID": "PLG", "name": "h",
                                    "plugins": {"os": {"s": 1}, "cpu": {"v": 1}}}, 10.0)
        self._apply(registry, bus, {"ID": "PLG", "name": "h", "plugins": {"cpu": {"v": 2}}}, 20.0)
        store.flush()
        (host,) = store.load(load_hosts)
        assert {p: s.ts for p, s in host.plugins.items()} == {"os": 10.0, "cpu": 20.0}
        assert fired(store.read(read_latest("h"))) == {
            "cpu": {"ts": 20.0, "data": {"v": 2}}, "os": {"ts": 10.0, "data": {"s": 1}}}
        assert [r[:3] for r in rows(backend, PLUGIN_DATA)] == [
            ("h", "cpu", 20.0), ("h", "os", 10.0)]  # one row per plugin, its own data only
        assert sorted(r[3] for r in rows(backend, PLUGIN_DATA)) == ['{"s":1}', '{"v":2}']

    def test_history_is_stored_compressed_and_older_rows_read(self, backend: Backend,
                                                              clock: Clock) -> None:
        """A PLG's text goes to the history zlib-compressed; a row an older release wrote
        as text (PostgreSQL: its bytes, since the column became BYTEA) still reads."""
        store, registry, bus = self._store(backend, clock)
        message = {"ID": "PLG", "name": "h", "plugins": {"cpu": {"v": 1}}}
        self._apply(registry, bus, message, 10.0)
        store.flush()
        (row,) = rows(backend, PLUGIN_HISTORY)
        assert zlib.decompress(bytes(row[3])) == json.dumps(message).encode()
        older = '{"ID":"PLG","plugins":{"cpu":{"v":0}}}'
        write(backend, lambda t: t.add(PLUGIN_HISTORY, [
            ("h", 5.0, ",cpu,", older if backend.kind == "sqlite" else older.encode(), None,
             None)]))
        assert fired(store.read(read_history("h", "cpu", 10))) == [
            {"ts": 10.0, "data": {"v": 1}}, {"ts": 5.0, "data": {"v": 0}}]

    def test_history_keeps_the_zlib_stream_a_plg_came_in(self, backend: Backend,
                                                         clock: Clock) -> None:
        """A PLG that came zlib-compressed goes to the history as the very stream it came in
        (not compressed again); one with bytes after its stream is compressed by the server;
        both read back."""
        store, registry, bus = self._store(backend, clock)
        stored = []
        for n, after in enumerate((b"", b"after")):
            plugins = {"cpu": {"v": n}}
            stream = zlib.compress(json.dumps({"ID": "PLG", "name": "h", "plugins": plugins})
                                   .encode(), 9) + after
            message, text, packed = decode_received(stream)
            bus.publish(Event(RECEIVED, "h", 10.0 + n, {"message": message}, text, packed))
            bus.publish_all(registry.apply(message, ("10.0.0.1", 1), 10.0 + n).events)
            store.flush()
            stored.append((stream, bytes(rows(backend, PLUGIN_HISTORY)[-1][3])))
        assert stored[0][1] == stored[0][0]
        assert stored[1][1] != stored[1][0]
        assert zlib.decompress(stored[1][1]) == zlib.decompress(stored[1][0])
        assert fired(store.read(read_history("h", "cpu", 10))) == [
            {"ts": 11.0, "data": {"v": 1}}, {"ts": 10.0, "data": {"v": 0}}]

    def test_latest_message_survives_reload(self, backend: Backend, clock: Clock) -> None:
        """A host's latest MSG (what the host list shows) loads back; a heartbeat keeps it."""
        store, registry, bus = self._store(backend, clock)
        self._apply(registry, bus, {"ID": "MSG", "name": "h", "text": "disk é full",
                                    "level": "warning"}, 10.0)
        self._apply(registry, bus, {"ID": "HTB", "name": "h", "interval": 7}, 11.0)
        store.flush()
        (host,) = store.load(load_hosts)
        assert host.latest == (10.0, {"ID": "MSG", "text": "disk é full", "level": "warning"})

    def test_queued_commands_survive_reload(self, backend: Backend, clock: Clock) -> None:
        """A queued CMD/UPD and its sends so far load back in queue order; answered, gone."""
        store, registry, bus = self._store(backend, clock)
        self._apply(registry, bus, {"ID": "HTB", "name": "h", "interval": 7}, 10.0)
        queued = [registry.queue_command("h", "CMD", {"cmd": "restart", "args": ["-q"]}, 11.0,
                                         by="alice")[0]]
        queued += [registry.queue_command("h", "UPD", {"version": f"2.{n}"}, 12.0)[0]
                   for n in range(10)]  # ids ...-2 to ...-11: queue order is not text order
        self._apply(registry, bus, {"ID": "HTB", "name": "h", "interval": 7}, 13.0)
        store.flush()
        (host,) = store.load(load_hosts)
        assert [c.to_json() for c in host.pending.values()] == [c.to_json() for c in queued]
        assert [c.attempts for c in host.pending.values()] == [1] * 11
        cmd = queued[0]
        self._apply(registry, bus, {"ID": "RES", "name": "h", "cmd_id": cmd.cmd_id, "rc": 0},
                    14.0)
        store.flush()
        (host,) = store.load(load_hosts)
        assert list(host.pending) == [c.cmd_id for c in queued[1:]]
        bus.publish(registry.remove("h", 15.0))  # type: ignore[arg-type]
        store.flush()
        assert count(backend, COMMANDS) == 0

    def test_a_row_the_database_refuses_is_left_out_and_the_rest_commits(
            self, backend: Backend, clock: Clock) -> None:
        """One row no retry can commit (a seq out of range) is isolated, counted and logged;
        the rest of its write and of its batch commit; an API change in the batch too."""
        store, _registry, _bus = self._store(backend, clock)
        good = ("h", 1.0, ",cpu,", '{"plugins":{"cpu":1}}', 1, 1.0)
        bad = ("h", 2.0, ",cpu,", '{"plugins":{"cpu":2}}', 2 ** 70, 2.0)
        later = ("h", 3.0, ",cpu,", '{"plugins":{"cpu":3}}', 3, 3.0)
        store.submit(Rows("add", PLUGIN_HISTORY, [good, bad, later]))
        store.submit(lambda t: t.put(USERS, [("a", None)]))
        logged: list[str] = []
        observer = lambda e: logged.append(formatEvent(e))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        answered = store.commit(lambda t: t.put(USERS, [("b", None)]))  # flushes at once
        globalLogPublisher.removeObserver(observer)
        assert fired(answered) is None
        assert (store.failures, store.isolated_rows) == (1, 1)
        assert [r[4] for r in rows(backend, PLUGIN_HISTORY)] == [1, 3]
        assert [r[0] for r in rows(backend, USERS)] == ["a", "b"]
        assert any("the database refused 1 row(s)" in line for line in logged)
        store.submit(Rows("put", USERS, [("c", None)]))
        store.flush()
        assert (store.failures, store.commits) == (1, 2)

    def test_history_is_bounded_in_bytes_per_host_and_in_all(self, backend: Backend,
                                                            clock: Clock) -> None:
        """A host past its byte cap is trimmed oldest first in the batch that took it
        there; more hosts share the total, and the maintenance trims to the shares."""
        registry = Registry(grace=5, default_interval=10)
        bus = make_bus()
        store = StoreService(backend, ImmediateWorker(), clock, reader=ImmediateWorker())
        recorder = HostRecorder(registry, store, retention=1e9, max_samples=10_000,
                                max_host_bytes=3000, max_bytes=4000)
        wire(bus, recorder=recorder)
        pad = random.Random(16).randbytes(125).hex()  # 250 characters zlib keeps near 125

        def plg(host: str, n: int) -> None:
            self._apply(registry, bus, {"ID": "PLG", "name": host, "seq": n,
                                        "plugins": {"p": {"n": n, "pad": pad}}}, 1000.0 + n)

        for n in range(40):
            plg("a", n)
            store.flush()
        held = backend.read(lambda t: t.history_bytes())
        assert held["a"] <= 3000
        kept = [json.loads(history_text(r[3]))["plugins"]["p"]["n"]
                for r in rows(backend, PLUGIN_HISTORY)]
        assert kept == list(range(40 - len(kept), 40)) and len(kept) >= 8
        for host in ("b", "c", "d"):
            for n in range(100, 110):
                plg(host, n)
            store.flush()
        assert recorder.host_cap() == 1000
        fired(store._maintain())
        held = backend.read(lambda t: t.history_bytes())
        assert max(held.values()) <= 1000 and sum(held.values()) <= 4000
        assert sorted(held) == ["a", "b", "c", "d"]

    def test_history_size_read_once_running_adds_what_came_meanwhile(
            self, backend: Backend, clock: Clock) -> None:
        """After a restart the history's bytes per host are read once the server runs
        (compose.restore_history_bytes); PLGs taken before that read answered count on top
        of it, so a host past its cap with both together is trimmed at the next batch."""
        pad = random.Random(16).randbytes(125).hex()

        def plg(registry: Registry, bus: EventBus, n: int) -> None:
            self._apply(registry, bus, {"ID": "PLG", "name": "a", "seq": n,
                                        "plugins": {"p": {"n": n, "pad": pad}}}, 1000.0 + n)

        store, registry, bus = self._store(backend, clock, max_samples=10_000)
        for n in range(8):
            plg(registry, bus, n)
        store.flush()
        stored = backend.read(lambda t: t.history_bytes())["a"]
        worker = HeldWorker()  # restarted: the store's thread answers when the test says
        store = StoreService(backend, worker, clock, reader=worker)
        registry, bus = Registry(grace=5, default_interval=10), make_bus()
        recorder = HostRecorder(registry, store, retention=1e9, max_samples=10_000,
                                max_host_bytes=stored + 600)
        wire(bus, recorder=recorder)
        read = restore_history_bytes(store, recorder)
        for n in range(8, 12):  # 4 x 300 bytes: under the cap alone, over it with the rest
            plg(registry, bus, n)
        worker.finish_all()
        fired(read)
        assert backend.read(lambda t: t.history_bytes())["a"] == stored
        store.flush()
        worker.finish_all()
        held = backend.read(lambda t: t.history_bytes())["a"]
        assert held <= stored + 600
        kept = [json.loads(history_text(r[3]))["plugins"]["p"]["n"]
                for r in rows(backend, PLUGIN_HISTORY)]
        assert kept[-1] == 11 and kept == list(range(12 - len(kept), 12))

    def test_an_api_change_the_database_refuses_fails_whole(self, backend: Backend,
                                                           clock: Clock) -> None:
        store, _registry, _bus = self._store(backend, clock)
        answered = store.commit(lambda t: t.put(USERS, [("a", None)]),
                                lambda t: t.put(SESSIONS, [("k", "a", 1.0, 1.0, "c", None,
                                                            2 ** 70)]))
        with pytest.raises(StoreUnavailable, match="refused"):
            fired(answered)
        assert count(backend, USERS) == 0

    def test_two_servers_record_one_message_once(self, backend: Backend, clock: Clock) -> None:
        """Two servers (registries and recorders) on one store, each hearing the same PLGs:
        every message is in the history once, whichever server wrote it first."""
        one, registry_1, bus_1 = self._store(backend, clock, max_samples=100)
        two, registry_2, bus_2 = self._store(backend, clock, max_samples=100)
        for n in range(4):
            message = {"ID": "PLG", "name": "h", "seq": n, "ts": 5000.0 + n,
                       "plugins": {"cpu": {"v": n}}}
            self._apply(registry_1, bus_1, message, 1000.0 + n)
            self._apply(registry_2, bus_2, message, 1000.3 + n)
            (one if n % 2 else two).flush()
        one.flush()
        two.flush()
        assert sorted((r[4], r[5]) for r in rows(backend, PLUGIN_HISTORY)) == [
            (n, 5000.0 + n) for n in range(4)]
        assert [s["data"]["v"] for s in fired(one.read(read_history("h", "cpu", 10)))] == [
            3, 2, 1, 0]

    def test_message_key_takes_only_what_fits(self) -> None:
        """seq and ts are the message's own when they are numbers a column holds."""
        assert [message_key(m) for m in ({"seq": 3, "ts": 1.5}, {"seq": True, "ts": "x"},
                                         {"seq": 1 << 70, "ts": 2}, {},
                                         {"seq": -(1 << 62), "ts": float("inf")},
                                         {"seq": 1 - (1 << 62), "ts": True})] == [
            (3, 1.5), (None, None), (None, 2.0), (None, None), (None, None),
            (1 - (1 << 62), None)]

    def test_removed_host_deleted(self, backend: Backend, clock: Clock) -> None:
        """Removing a host deletes its rows from every table."""
        store, registry, bus = self._store(backend, clock)
        self._apply(registry, bus, {"ID": "PLG", "name": "h", "plugins": {"p": {}}}, 1.0)
        registry.queue_command("h", "CMD", {"cmd": "x"}, 1.5)
        store.flush()
        assert [count(backend, t) for t in (HOSTS, PLUGIN_DATA, PLUGIN_HISTORY, COMMANDS)] \
            == [1, 1, 1, 1]
        removed = registry.remove("h", 2.0)
        assert removed is not None
        bus.publish(removed)
        store.flush()
        assert [count(backend, t) for t in (HOSTS, PLUGIN_DATA, PLUGIN_HISTORY, COMMANDS)] \
            == [0, 0, 0, 0]

    def test_a_restart_finds_every_host_as_the_registry_held_it(self, backend: Backend,
                                                                clock: Clock) -> None:
        """Random heartbeats (some steady, written as beats; some moving the address, the
        version, the state), messages, PLGs of changing plugins, silences and removals:
        after each flush, the hosts loaded back equal the registry's, field for field, and
        each plugin's latest data is that of the last PLG that carried it."""
        store, registry, bus = self._store(backend, clock)
        latest: dict[str, dict[str, dict[str, Any]]] = {}
        chance = random.Random(16)
        now = 1000.0
        for step in range(400):
            name = f"h{chance.randrange(6)}"
            roll = chance.random()
            now += chance.choice((0.1, 1.0, 4.0, 30.0))
            if roll < 0.6:
                message: dict[str, Any] = {"ID": "HTB", "name": name,
                                           "interval": chance.choice((5, 10)),
                                           "version": chance.choice(("1", "1", "1", "2"))}
                if chance.random() < 0.5:
                    message["rtt"] = chance.random()
                source = (chance.choice(("10.0.0.1", "10.0.0.1", "10.0.0.2")),
                          chance.choice((1, 2)))
                bus.publish_all(registry.apply(message, source, now).events)
            elif roll < 0.7:
                self._apply(registry, bus, {"ID": chance.choice(("MSG", "BOOT", "SHUT")),
                                            "name": name, "text": f"step {step}"}, now)
            elif roll < 0.8:
                plugins = {plugin: {"step": step} for plugin in ("cpu", "disk", "net")
                           if chance.random() < 0.6} or {"os": {"step": step}}
                self._apply(registry, bus, {"ID": "PLG", "name": name, "plugins": plugins}, now)
                latest.setdefault(name, {}).update(
                    {plugin: {"ts": now, "data": data} for plugin, data in plugins.items()})
            elif roll < 0.85:
                removed = registry.remove(name, now)
                if removed is not None:
                    bus.publish(removed)
                    latest.pop(name, None)
            else:
                bus.publish_all(registry.expire(now))
            if chance.random() < 0.3:
                store.flush()
                assert {h.name: stored_fields(h) for h in store.load(load_hosts)} == \
                    {h.name: stored_fields(h) for h in registry.hosts.values()}, step
                assert {h: fired(store.read(read_latest(h))) for h in latest} == latest, step


class LoadersTests:
    """What each service writes, its loader reads back whole, on each backend."""

    def test_auth_users_access_sessions_keys(self, backend: Backend, clock: Clock) -> None:
        """Users, access lists, sessions and API keys made through auth load back."""
        store = StoreService(backend, ImmediateWorker(), clock, reader=ImmediateWorker())
        directory = Directory({"alice": UserConfig(admin=True)}, {}, None)
        auth = AuthService(directory, store, PasswordHasher(ImmediateWorker(), FAST), clock,
                           idle_timeout=3600.0)
        fired(auth.set_access("web1", HostAccess("alice", ("bob",), (), "api")))
        token, key = fired(auth.create_key("alice", "ci", "read"))
        fired(auth.change_user("alice", CreateUser("bob", password="pw-bob-123456")))
        token_b, session = fired(auth.login("bob", "pw-bob-123456", "10.0.0.2"))
        store.flush()
        stored = store.load(load_auth)
        assert stored.access == {"web1": HostAccess("alice", ("bob",), (), "api")}
        assert [(k.key_id, k.user, k.name, k.scope) for k in stored.keys] == [
            (key.key_id, "alice", "ci", "read")]
        assert [(s.key, s.user, s.csrf, s.address) for s in stored.sessions] == [
            (session.key, "bob", session.csrf, "10.0.0.2")]
        assert sorted(stored.users) == ["bob"]
        assert fired(auth.logout(session.key)) is True
        assert fired(auth.revoke_key(key.key_id)) == key
        fired(auth.reset_access("web1"))
        stored = store.load(load_auth)  # committed before they were answered
        assert (stored.sessions, stored.keys, stored.access) == ([], [], {})
        assert token and token_b

    def test_alert_states(self, backend: Backend) -> None:
        """Alert states load back with their JSON values."""
        write(backend, lambda t: t.put(ALERT_STATES, [
            ("web1", "cpu.load", "cpu", "WARNING", "2.5", "[1, 2]", ">", "load", 1.0, 5.0)]))
        (state,) = backend.read(load_alert_states)
        assert (state.host, state.metric_path, state.level.value, state.value,
                state.threshold_value, state.last_notified) == (
            "web1", "cpu.load", "WARNING", 2.5, [1, 2], 5.0)

    def test_operations(self, backend: Backend) -> None:
        """Windows, silences, acknowledgements, held problems, flaps and ids load back."""
        tables = {t.name: t for t in (MAINTENANCE_WINDOWS, SILENCES, ACKNOWLEDGEMENTS,
                                      HELD_PROBLEMS, FLAP_STATES, OPERATION_IDS)}
        write(backend, *[lambda t, table=table, row=SAMPLES[name][0]: t.put(table, [row])
                         for name, table in tables.items()])
        found = backend.read(load_operations)
        assert found.windows == [("1", {"hosts": ["web1"]}, "alice", 1.0)]
        assert [tuple(s.to_row().values()) for s in found.silences] == [SAMPLES["silences"][0]]
        assert [(a.host, a.target, a.level) for a in found.acks] == [("web1", "", "DOWN")]
        assert [(h.host, h.key, h.reason) for h in found.held] == [
            ("web1", "cpu.load", "maintenance")]
        assert found.flaps == [("web1", "", ["UP", "DOWN"], True, 1.0)]
        assert found.last_ids == {"silence": 3}

    def test_hosts_users_in_order_of_api_keys(self, backend: Backend) -> None:
        """API keys load in the order they were made (then by id), whatever the rows' order."""
        write(backend, lambda t: t.put(API_KEYS, [
            ("9", "d9", "a", "n", "read", 2.0, None, None, None),
            ("8", "d8", "a", "n", "read", 3.0, None, None, None),
            ("10", "d10", "a", "n", "read", 2.0, None, None, None)]))
        assert [k.key_id for k in backend.read(load_auth).keys] == ["10", "9", "8"]


class PostgresSchemaTests:
    """PostgreSQL's schema versions: the same steps as SQLite's, recorded in one row."""

    def test_new_database_made_at_newest_and_reopened_unchanged(self, postgres_url: str) -> None:
        """A new database gets every step; opening it again changes nothing."""
        import psycopg

        from heartbeat.server import postgres

        config = pg_config(postgres_url)
        assert postgres.inspect_postgres(config).version == 0
        postgres.open_store(config).close()
        assert postgres.inspect_postgres(config).version == NEWEST
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            assert postgres.upgrade(conn, "db").changed is False
            assert conn.execute("SELECT version FROM heartbeat_schema").fetchall() == [(NEWEST,)]

    def test_newer_database_refused_untouched(self, postgres_url: str) -> None:
        """A store of a later release stops start-up with one line; nothing is written."""
        import psycopg

        from heartbeat.server import postgres

        config = pg_config(postgres_url)
        postgres.open_store(config).close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("UPDATE heartbeat_schema SET version = %s", (NEWEST + 1,))
        with pytest.raises(SystemExit) as stop:
            postgres.open_store(config)
        assert str(stop.value).startswith(
            f"heartbeat: store_url: the store {postgres_url} is at schema version "
            f"{NEWEST + 1}, newer than this heartbeat")
        with pytest.raises(SchemaError):
            postgres.inspect_postgres(config)

    def test_failing_step_leaves_the_database_as_it_was(self, postgres_url: str) -> None:
        """An upgrade whose step fails keeps none of it and says which step failed."""
        import psycopg

        from heartbeat.server import postgres

        broken = (*STEPS[:1], Step(2, "a broken step", sqlite="",
                                   postgresql="CREATE TABLE x (a INT); SELECT 1/0"))
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            postgres.upgrade(conn, "db", STEPS[:1])
            with pytest.raises(SchemaError, match=r"from schema version 1 to 2: step 2 "
                                                  r"\(a broken step\) failed: division by zero"):
                postgres.upgrade(conn, "db", broken)
            assert conn.execute("SELECT version FROM heartbeat_schema").fetchall() == [(1,)]
            assert conn.execute("SELECT to_regclass('x')").fetchone() == (None,)

    def test_step_9_keeps_each_plugins_latest_data_on_its_own(self, postgres_url: str) -> None:
        """A database at version 8 holding whole messages per plugin gets each plugin's part
        as its own row, and hosts a latest message; plugin_latest is gone."""
        import psycopg

        from heartbeat.server import postgres

        message = json.dumps({"ID": "PLG", "name": "web1", "plugins": {
            "cpu": {"load": 1.5, "per_core": [1, 2]}, "os": "Grüße ✓", "none": None}})
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            postgres.upgrade(conn, "db", STEPS[:8])
            conn.execute("INSERT INTO hosts (name, state) VALUES ('web1', 'UP')")
            for plugin in ("cpu", "os", "none", "gone"):
                conn.execute("INSERT INTO plugin_latest VALUES ('web1', %s, 5.0, %s)",
                             (plugin, message))
            conn.execute("INSERT INTO plugin_history VALUES ('web1', 5.0, ',cpu,os,none,', %s,"
                         " 1, 4.5)", (message,))
            postgres.upgrade(conn, "db")
            assert conn.execute("SELECT to_regclass('plugin_latest')").fetchone() == (None,)
        backend = postgres.open_store(pg_config(postgres_url))
        try:
            assert backend.read(read_latest("web1")) == {
                "cpu": {"ts": 5.0, "data": {"load": 1.5, "per_core": [1, 2]}},
                "none": {"ts": 5.0, "data": None}, "os": {"ts": 5.0, "data": "Grüße ✓"}}
            (host,) = backend.read(load_hosts)
            assert (sorted(host.plugins), host.latest) == (["cpu", "none", "os"], None)
            assert backend.read(read_history("web1", "os", 10)) == [  # step 11: BYTEA
                {"ts": 5.0, "data": "Grüße ✓"}]
        finally:
            backend.close()

    def test_step_12_drops_the_index_of_plugin_times(self, postgres_url: str) -> None:
        """At version 12 plugin_data has only its key's index; its rows load as before."""
        import psycopg

        from heartbeat.server import postgres

        with psycopg.connect(postgres_url, autocommit=True) as conn:
            postgres.upgrade(conn, "db", STEPS[:11])
            conn.execute("INSERT INTO hosts (name, state) VALUES ('web1', 'UP')")
            conn.execute("INSERT INTO plugin_data VALUES ('web1', 'cpu', 5.0, '{\"load\":1}'),"
                         " ('web1', 'os', 6.0, '\"Linux\"')")
            assert conn.execute("SELECT to_regclass('plugin_data_times')").fetchone() == (
                "plugin_data_times",)
            postgres.upgrade(conn, "db")
            assert conn.execute("SELECT to_regclass('plugin_data_times')").fetchone() == (None,)
        backend = postgres.open_store(pg_config(postgres_url))
        try:
            (host,) = backend.read(load_hosts)
            assert {name: sample.ts for name, sample in host.plugins.items()} == {
                "cpu": 5.0, "os": 6.0}
            assert backend.read(read_latest("web1")) == {
                "cpu": {"ts": 5.0, "data": {"load": 1}}, "os": {"ts": 6.0, "data": "Linux"}}
        finally:
            backend.close()

    def test_step_13_lists_each_hosts_plugins_in_its_row(self, postgres_url: str) -> None:
        """At version 13 each host's row lists its plugins and their exact times, and
        start-up reads them from there, not from plugin_data."""
        import psycopg

        from heartbeat.server import postgres

        odd = 0.1 + 0.2 + 1796245015  # 17 significant digits
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            postgres.upgrade(conn, "db", STEPS[:12])
            conn.execute("INSERT INTO hosts (name, state) VALUES ('web1', 'UP'),"
                         " ('idle', 'DOWN')")
            conn.execute("INSERT INTO plugin_data VALUES ('web1', 'cpu', 5.0, '{}'),"
                         " ('web1', 'os', %s, '\"Linux\"'), ('web1', 'net,\"x\"', %s, '1')",
                         (odd, odd))
            postgres.upgrade(conn, "db")
            conn.execute("DELETE FROM plugin_data")
        backend = postgres.open_store(pg_config(postgres_url))
        try:
            hosts = {host.name: host for host in backend.read(load_hosts)}
            assert hosts["idle"].plugins == {}
            plugins = hosts["web1"].plugins
            assert {name: sample.ts for name, sample in plugins.items()} == {
                "cpu": 5.0, "os": odd, 'net,"x"': odd}
            assert plugins["os"] is plugins['net,"x"']
        finally:
            backend.close()

    def test_foreign_tables_refused(self, postgres_url: str) -> None:
        """A database with tables of heartbeat's names but no version is not taken over."""
        import psycopg

        from heartbeat.server import postgres

        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE hosts (id INT)")
        with pytest.raises(SystemExit, match="is not a heartbeat store: it has no "
                                             "heartbeat_schema table but tables of heartbeat's "
                                             "names \\(hosts\\)"):
            postgres.open_store(pg_config(postgres_url))

    def test_unreachable_database_stops_start_up(self, postgres_cluster: Any) -> None:
        """A store_url nobody answers at stops start-up with one line naming the key."""
        from heartbeat.server import postgres

        url = f"postgresql://hb@127.0.0.1:{postgres_cluster.port}/no_such_database"
        with pytest.raises(SystemExit, match=r"^heartbeat: store_url: cannot connect to "
                                             + url + ": .*no_such_database"):
            postgres.open_store(pg_config(url))

    def test_password_file(self, postgres_url: str, tmp_path: Path) -> None:
        """The password is read from store_password_file (first line); unreadable: one line."""
        from heartbeat.server import postgres

        secret = tmp_path / "pgpass"
        secret.write_text("s3cret\n")
        options = postgres.connect_options(pg_config(postgres_url,
                                                     store_password_file=str(secret)))
        assert options["password"] == "s3cret"
        with pytest.raises(SystemExit, match=r"^heartbeat: store_password_file: cannot read "):
            postgres.connect_options(pg_config(postgres_url,
                                               store_password_file=str(tmp_path / "none")))


class StoreConfigTests:
    @pytest.mark.parametrize(("url", "problem"), [
        ("postgresql://hb:secret@db/hb", "holds a password"),
        ("postgresql://hb@db/hb?password=secret", "holds a password"),
        ("mysql://hb@db/hb", "must be a postgresql:// URL"),
    ])
    def test_store_url_refused(self, url: str, problem: str) -> None:
        """A store_url with a password (shown by /settings) or not PostgreSQL stops start-up."""
        from heartbeat.config.loader import ConfigError
        from heartbeat.server.settings import parse_settings

        with pytest.raises(ConfigError, match=f"store_url: .*{problem}"):
            parse_settings(f"store_url: '{url}'\n", "h.yaml")

    def test_password_file_needs_a_store_url(self) -> None:
        """store_password_file alone is a mistake, named."""
        from heartbeat.config.loader import ConfigError
        from heartbeat.server.settings import parse_settings

        with pytest.raises(ConfigError, match="store_password_file: only used with store_url"):
            parse_settings("store_password_file: /etc/pw\n", "h.yaml")
        assert parse_settings("store_url: postgresql://hb@db/hb\n", "h.yaml").config.store_url \
            == "postgresql://hb@db/hb"


def test_a_full_database_keeps_the_batch_and_refuses_api_changes(tmp_path: Path) -> None:
    """SQLite full (max_page_count: SQLITE_FULL, as a full disk gives): the batch is kept
    and retried after a backoff, the sources wait, an API change fails whole (not kept,
    never retried); once there is room again everything kept commits, in order."""
    backend = open_sqlite(tmp_path / "s.sqlite3")
    clock = Clock()
    clock.advance(1000.0)
    registry = Registry(grace=5, default_interval=10)
    store = StoreService(backend, ImmediateWorker(), clock, retry_cap=8.0)
    recorder = HostRecorder(registry, store, retention=100.0, max_samples=1000, max_pending=3)
    bus = make_bus()
    wire(bus, recorder=recorder)
    pages = backend.conn.execute("PRAGMA page_count").fetchone()[0]
    backend.conn.execute(f"PRAGMA max_page_count = {pages}")
    big = "x" * 20_000
    store.submit(Rows("put", USERS, [("a", big)]))
    store.submit(Rows("put", USERS, [("b", big)]))
    store.flush()
    assert (store.failures, store.commits, store.backlog) == (1, 0, 2)
    assert "full" in (store.last_error or "")
    answered = store.commit(lambda t: t.put(USERS, [("api", big)]))
    with pytest.raises(StoreUnavailable, match="cannot write"):
        fired(answered)
    assert store.backlog == 2
    for n in range(5):  # PLGs while it fails: held within max_pending, the rest counted
        StoreServiceTests()._apply(registry, bus, {"ID": "PLG", "name": "h", "seq": n,
                                                   "plugins": {"cpu": {"v": n}}}, 1001.0 + n)
    assert store.dropped_rows == 4  # backlog 2 + 1 held = max_pending 3
    clock.advance(0.5)
    store.flush()  # within the backoff: nothing tried
    assert store.failures == 2  # the API change's attempt and the first
    assert store.behind() == 0.5  # since it was made: it never committed
    backend.conn.execute("PRAGMA max_page_count = 1000000")
    clock.advance(8.0)
    store.flush()
    assert [r[0] for r in rows(backend, USERS)] == ["a", "b"]
    assert store.last_error is None and store.backlog == 0
    store.flush()  # the sources, now
    assert [r[4] for r in rows(backend, PLUGIN_HISTORY)] == [0]
    backend.close()


_RECORDER_STEPS = st.lists(st.one_of(
    st.tuples(st.just("plg"), st.integers(0, 2),
              st.sets(st.sampled_from(["cpu", "disk", "net"]), min_size=1)),
    st.tuples(st.just("flush"), st.just(0), st.just(frozenset())),
    st.tuples(st.just("remove"), st.integers(0, 2), st.just(frozenset()))), max_size=25)


@given(_RECORDER_STEPS)
def test_plugin_data_is_the_last_plg_that_carried_each_plugin(
        steps: list[tuple[str, int, frozenset[str]]]) -> None:
    """Any sequence of PLGs of changing plugins, flushes and host removals: after every
    flush, ``plugin_data`` holds for each plugin of each host the data and time of the
    last PLG that carried it, and nothing of a removed host. The recorder keeps a host's
    newest PLG whole and, apart, what of its earlier ones the newest does not carry."""
    with tempfile.TemporaryDirectory() as tmp:
        backend = open_sqlite(Path(tmp) / "s.sqlite3")
        try:
            registry = Registry(grace=5, default_interval=10)
            store = StoreService(backend, ImmediateWorker(), Clock())
            bus = make_bus()
            wire(bus, recorder=HostRecorder(registry, store, retention=1e9, max_samples=100))
            expected: dict[tuple[str, str], tuple[float, Any]] = {}
            for n, (step, host, plugins) in enumerate([*steps, ("flush", 0, frozenset())]):
                name, now = f"h{host}", 1000.0 + n
                if step == "plg":
                    data = {plugin: {"n": n} for plugin in sorted(plugins)}
                    message = {"ID": "PLG", "name": name, "plugins": data}
                    bus.publish(Event(RECEIVED, name, now, {
                        "message": message, "source_ip": "10.0.0.1", "source_port": 1},
                        json.dumps(message).encode()))
                    bus.publish_all(registry.apply(message, ("10.0.0.1", 1), now).events)
                    expected.update({(name, plugin): (now, value)
                                     for plugin, value in data.items()})
                elif step == "remove":
                    removed = registry.remove(name, now)
                    if removed is not None:
                        bus.publish(removed)
                        expected = {key: v for key, v in expected.items() if key[0] != name}
                else:
                    store.flush()
                    assert {(h, p): (ts, json.loads(text)) for h, p, ts, text in
                            rows(backend, PLUGIN_DATA)} == expected, n
        finally:
            backend.close()


@pytest.mark.parametrize("value", [
    {"cpu_percent": 5.5, "ts": 1711234567.123456},
    {"big": 12345678901234567890123, "neg": -9223372036854775809},
    {"text": "caf\u00e9 \u2713", "nested": [[1, 2], {"a": None, "b": True}]},
    {"tiny": 2.5e-07, "float_max": 1.7976931348623157e308},
])
def test_stored_data_reads_back_as_written(value: dict[str, Any]) -> None:
    """What the writer stores (json_bytes) reads back equal, type for type: integers past
    64 bits stay integers (orjson would make them floats; json reads those)."""
    text = _data_text(("h", "p", 1.0, value))[3]
    assert read_json(text.encode()) == value
    assert [type(v) for v in read_json(text.encode()).values()] == [
        type(v) for v in value.values()]
