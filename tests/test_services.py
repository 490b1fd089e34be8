"""Ingest, monitor, journal and store services, driven by Clock and in-memory transports."""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport

from heartbeat.events import HOST_DOWN, HOST_UP, RECEIVED, Event, EventBus
from heartbeat.protocol import Limits
from heartbeat.server.compose import wire
from heartbeat.server.ingest import IngestProtocol, IngestStats, source_address
from heartbeat.server.journal import JournalFile, JournalService, read_backwards
from heartbeat.server.monitor import MonitorService
from heartbeat.server.registry import Registry
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.store import (
    HostRecorder,
    StoreService,
    load_hosts,
    maintenance_period,
    open_database,
    read_history,
)


class Recorder:
    def __init__(self, bus: EventBus) -> None:
        self.events: list[Event] = []
        bus.subscribe(self.events.append)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def make_bus() -> EventBus:
    def fail(subscriber: Any, event: Event, error: BaseException) -> None:
        raise AssertionError(f"subscriber failed: {error!r}")

    return EventBus(on_error=fail)


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1000.0)
    return clock


@pytest.fixture
def ingest(clock: Clock) -> tuple[IngestProtocol, FakeDatagramTransport, Recorder]:
    bus = make_bus()
    recorder = Recorder(bus)
    protocol = IngestProtocol(Registry(grace=5, default_interval=10), bus, clock, Limits(),
                              IngestStats())
    transport = FakeDatagramTransport()
    protocol.makeConnection(transport)
    return protocol, transport, recorder


class IngestTests:
    def test_heartbeat_acked_to_its_source(self, ingest: Any) -> None:
        """An HTB is published as received, applied, and ACKed to the sender's address."""
        protocol, transport, recorder = ingest
        payload = b'{"ID":"HTB","name":"h","seq":1,"ts":5.0}'
        protocol.datagramReceived(payload, ("::ffff:10.1.2.3", 999, 0, 0))
        assert transport.written == [
            (b'{"ID":"ACK","server_ts":1000.0,"seq":1,"ts":5.0}', ("::ffff:10.1.2.3", 999, 0, 0))]
        received = recorder.events[0]
        assert (received.kind, received.raw, received.data) == (RECEIVED, payload, {
            "message": {"ID": "HTB", "name": "h", "seq": 1, "ts": 5.0},
            "source_ip": "10.1.2.3", "source_port": 999})
        assert recorder.kinds()[1:] == ["host.new", "host.address", HOST_UP]

    def test_bad_datagrams_counted_by_reason(self, ingest: Any) -> None:
        """Bad datagrams are dropped and counted per reason; the listener carries on."""
        protocol, transport, recorder = ingest
        for payload in (b"junk", b"{bad", b'{"ID":"HTB"}', b"{bad", zlib.compress(b"x")):
            protocol.datagramReceived(payload, ("10.0.0.1", 1))
        protocol.datagramReceived(b'{"ID":"ODD","name":"h"}', ("10.0.0.1", 1))
        assert protocol.stats.to_json() == {
            "received": 6, "accepted": 1, "replies": 0, "reply_errors": 0,
            "dropped": {"bad_format": 1, "json": 3, "missing_name": 1}, "dropped_total": 5,
            "unknown_ids": {"ODD": 1}}
        assert transport.written == []
        assert recorder.kinds() == [RECEIVED]

    def test_bad_text_is_its_own_drop_reason(self, ingest: Any) -> None:
        """A lone surrogate or a NUL in a key is dropped as bad_text: no host, no event."""
        protocol, transport, recorder = ingest
        for payload in (rb'{"ID":"HTB","name":"x","interval":30,"version":"\ud800"}',
                        zlib.compress(rb'{"ID":"PLG","name":"x","plugins":{"a\u0000":1}}')):
            protocol.datagramReceived(payload, ("10.0.0.1", 1))
        assert (protocol.stats.dropped, protocol.stats.accepted) == ({"bad_text": 2}, 0)
        assert (len(protocol.registry), transport.written, recorder.events) == (0, [], [])

    def test_reply_failure_is_counted(self, ingest: Any) -> None:
        """A reply the kernel refuses is counted, not raised into the reactor."""
        protocol, transport, _ = ingest

        def refuse(data: bytes, addr: Any) -> None:
            raise OSError("network unreachable")

        transport.write = refuse
        protocol.datagramReceived(b'{"ID":"HTB","name":"h"}', ("10.0.0.1", 1))
        assert (protocol.stats.replies, protocol.stats.reply_errors) == (0, 1)

    def test_source_address(self) -> None:
        """IPv4-mapped addresses become plain IPv4; real IPv6 stays as it is."""
        assert source_address(("::ffff:192.0.2.1", 5, 0, 0)) == ("192.0.2.1", 5)
        assert source_address(("2001:db8::1", 5, 0, 0)) == ("2001:db8::1", 5)
        assert source_address(("192.0.2.1", 5)) == ("192.0.2.1", 5)


class MonitorTests:
    def test_down_published_by_timer(self, clock: Clock) -> None:
        """The monitor turns a silent host DOWN on the tick after interval + grace."""
        bus = make_bus()
        recorder = Recorder(bus)
        registry = Registry(grace=5, default_interval=10)
        registry.apply({"ID": "HTB", "name": "h"}, ("10.0.0.1", 1), clock.seconds())
        monitor = MonitorService(registry, bus, clock, period=1.0)
        monitor.startService()
        clock.pump([1.0] * 15)
        assert recorder.kinds() == []
        clock.advance(1.0)
        assert recorder.kinds() == [HOST_DOWN]
        monitor.stopService()
        assert clock.getDelayedCalls() == []

    def test_tick_survives_a_failure(self, clock: Clock) -> None:
        """An exception in one check is logged and the next tick still runs (the first tick
        is at start)."""
        calls: list[float] = []

        class Flaky(Registry):
            def expire(self, now: float) -> list[Event]:
                calls.append(now)
                if len(calls) == 1:
                    raise RuntimeError("transient")
                return []

        monitor = MonitorService(Flaky(grace=1, default_interval=1), make_bus(), clock, 1.0)
        monitor.startService()
        clock.pump([1.0, 1.0])
        monitor.stopService()
        assert calls == [1000.0, 1001.0, 1002.0]
        assert clock.getDelayedCalls() == []


def _entry(ts: float, name: str = "h", n: int = 0) -> Any:
    message = {"ID": "HTB", "name": name, "n": n}
    return (ts, "10.0.0.1", 5000, json.dumps(message).encode(), message, None)


@pytest.fixture
def journal_file(tmp_path: Path) -> Any:
    """JournalFile factory in tmp_path; every file is closed at teardown."""
    opened: list[JournalFile] = []

    def make(max_size: int = 10_000, max_backups: int = 2, name: str = "j") -> JournalFile:
        journal = JournalFile(tmp_path, name, max_size, max_backups)
        opened.append(journal)
        return journal

    yield make
    for journal in opened:
        journal.close()


class JournalFileTests:
    def test_reference_line_format(self, tmp_path: Path, journal_file: Any) -> None:
        """A message line has the reference's five fields and the message verbatim."""
        journal = journal_file(name="messages.journal")
        raw = b'{"ID":"HTB", "name":"web1","interval":30}'
        journal.write([(1711234567.123, "192.168.1.100", 50003, raw, json.loads(raw), None)])
        journal.close()
        line = (tmp_path / "messages.journal").read_bytes()
        assert line.endswith(b',"message":' + raw + b"}\n")
        entry = json.loads(line)
        assert set(entry) == {"timestamp", "datetime", "source_ip", "source_port", "message"}
        assert (entry["timestamp"], entry["source_ip"], entry["source_port"]) == (
            1711234567.123, "192.168.1.100", 50003)
        assert len(entry["datetime"]) == 19 and entry["datetime"][10] == "T"

    def test_multiline_raw_is_reencoded(self, tmp_path: Path, journal_file: Any) -> None:
        """Pretty-printed JSON from a sender is written re-encoded on one line."""
        journal = journal_file()
        message = {"ID": "MSG", "name": "h", "text": "a"}
        journal.write([(1.0, "::1", 1, json.dumps(message, indent=2).encode(), message, None)])
        lines = (tmp_path / "j").read_text().splitlines()
        assert [json.loads(x)["message"] for x in lines] == [message]

    def test_lone_surrogates_do_not_fail_the_batch(self, tmp_path: Path,
                                                   journal_file: Any) -> None:
        """A lone surrogate that reached the journal anyway (decode refuses them) is written
        as U+FFFD: every line stays strict UTF-8 JSON and the batch is written."""
        journal = journal_file()
        message = {"ID": "MSG", "name": "h", "text": "\ud800"}
        event = Event("host.msg", "h", 1.0, {"text": message["text"]})
        journal.write([(1.0, None, None, None, None, event),
                       (1.0, "::1", 1, None, message, None)])
        lines = [json.loads(x) for x in (tmp_path / "j").read_bytes().decode().splitlines()]
        assert [line.get("message", line.get("event"))["text"] for line in lines] == [
            "\ufffd"] * 2
        assert json.loads(event.to_bytes())["text"] == "\ufffd"

    def test_event_lines(self, tmp_path: Path, journal_file: Any) -> None:
        """Events (DOWN, alerts...) are journaled as {"timestamp","datetime","event"}."""
        journal = journal_file()
        event = Event(HOST_DOWN, "h", 5.0, {"reason": "timeout"})
        journal.write([(5.0, None, None, None, None, event)])
        entry = json.loads((tmp_path / "j").read_text())
        assert entry["event"] == {"type": "host.down", "host": "h", "ts": 5.0,
                                  "reason": "timeout"}

    def test_rotation_keeps_every_line_whole(self, journal_file: Any) -> None:
        """Rotation happens between lines; no line is lost, split or reordered."""
        journal = journal_file(1000, 50)
        for batch in range(20):
            journal.write([_entry(float(batch), n=batch * 10 + i) for i in range(10)])
        files = journal.files_newest_first()
        assert len(files) > 5 and journal.rotations == len(files) - 1
        numbers = []
        for path in reversed(files):
            text = path.read_bytes()
            assert len(text) <= 1000 and text.endswith(b"\n")
            numbers += [json.loads(x)["message"]["n"] for x in text.splitlines()]
        assert numbers == list(range(200))

    def test_backups_are_capped(self, tmp_path: Path, journal_file: Any) -> None:
        """Only journal_max_backups rotated files are kept; the oldest go first."""
        journal = journal_file(300, 2)
        journal.write([_entry(float(i), n=i) for i in range(30)])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["j", "j.1", "j.2"]
        kept = [json.loads(x)["message"]["n"] for name in ("j.2", "j.1", "j")
                for x in (tmp_path / name).read_text().splitlines()]
        assert kept == list(range(30 - len(kept), 30))

    def test_no_backups_means_truncate(self, tmp_path: Path, journal_file: Any) -> None:
        """journal_max_backups 0 starts the file afresh instead of keeping a copy."""
        journal = journal_file(300, 0)
        journal.write([_entry(float(i), n=i) for i in range(10)])
        assert [p.name for p in tmp_path.iterdir()] == ["j"]

    def test_torn_last_line_is_closed_off(self, tmp_path: Path, journal_file: Any) -> None:
        """A torn line left by a killed process is ended, so new lines start clean."""
        (tmp_path / "j").write_bytes(b'{"timestamp":1,"message":{"ID":"HTB"}}\n{"timest')
        journal = journal_file()
        journal.write([_entry(2.0, n=7)])
        lines = (tmp_path / "j").read_bytes().split(b"\n")
        assert lines[1] == b'{"timest'
        assert json.loads(lines[2])["message"]["n"] == 7
        assert journal.torn_lines_closed == 1

    def test_read_backwards_across_blocks(self, tmp_path: Path) -> None:
        """Lines come back last first, whole, even when they straddle read blocks."""
        path = tmp_path / "f"
        lines = [(b"%05d" % i) * (i % 50 + 1) for i in range(3000)]
        path.write_bytes(b"\n".join(lines) + b"\n")
        assert list(read_backwards(path)) == list(reversed(lines))


class JournalServiceTests:
    def test_buffered_then_flushed_and_read(self, tmp_path: Path, clock: Clock) -> None:
        """Entries wait in memory until the timer, and recent() sees unflushed ones too."""
        bus = make_bus()
        journal = JournalFile(tmp_path, "j", 10_000, 2)
        service = JournalService(journal, ImmediateWorker(), clock, flush_interval=0.5)
        wire(bus, journal=service)
        service.startService()
        for n, name in enumerate(["a", "b", "a"]):
            message = {"ID": "MSG", "name": name, "text": str(n)}
            bus.publish(Event(RECEIVED, name, 1000.0 + n, {
                "message": message, "source_ip": "::1", "source_port": 1},
                json.dumps(message).encode()))
        bus.publish(Event(HOST_UP, "a", 1003.0, {}))
        assert (tmp_path / "j").read_bytes() == b""
        clock.advance(0.5)
        assert len((tmp_path / "j").read_bytes().splitlines()) == 4
        bus.publish(Event(RECEIVED, "a", 1004.0, {
            "message": {"ID": "MSG", "name": "a", "text": "3"}, "source_ip": "::1",
            "source_port": 1}))
        got: list[Any] = []
        service.recent(10, "a").addCallback(got.append)
        assert [e["message"]["text"] for e in got[0]] == ["3", "2", "0"]
        service.stopService()
        assert clock.getDelayedCalls() == []


class StoreTests:
    def _store(self, tmp_path: Path, clock: Clock, retention: float = 100.0,
               max_samples: int = 3) -> tuple[StoreService, Registry, EventBus]:
        conn = open_database(tmp_path / "s.sqlite3")
        registry = Registry(grace=5, default_interval=10)
        bus = make_bus()
        store = StoreService(conn, ImmediateWorker(), clock, flush_interval=0.5)
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

    def test_hosts_and_plugins_written_in_batches(self, tmp_path: Path, clock: Clock) -> None:
        """Host rows and plugin samples reach SQLite on the flush timer, and load back."""
        store, registry, bus = self._store(tmp_path, clock)
        store.startService()
        self._apply(registry, bus, {"ID": "HTB", "name": "h", "interval": 7}, 1000.0)
        self._apply(registry, bus, {"ID": "PLG", "name": "h",
                                    "plugins": {"cpu": {"v": 1}}}, 1000.0)
        reader = sqlite3.connect(tmp_path / "s.sqlite3")
        assert reader.execute("SELECT COUNT(*) FROM hosts").fetchone() == (0,)
        clock.advance(0.5)
        assert reader.execute("SELECT name, state, interval FROM hosts").fetchall() == [
            ("h", "UP", 7.0)]
        hosts = load_hosts(reader)
        assert [(h.name, h.state.value, {p: s.data for p, s in h.plugins.items()})
                for h in hosts] == [("h", "UP", {"cpu": {"v": 1}})]
        store.stopService()
        assert clock.getDelayedCalls() == []

    def test_history_newest_first_and_capped(self, tmp_path: Path, clock: Clock) -> None:
        """History reads are newest first, per plugin; maintenance trims age and count."""
        store, registry, bus = self._store(tmp_path, clock, max_samples=7)
        self._apply(registry, bus, {"ID": "PLG", "name": "h", "plugins": {"cpu": {"v": -1}}},
                    850.0)
        for i in range(6):
            plugins: dict[str, Any] = {"cpu": {"v": i}}
            if i % 2:
                plugins["mem"] = {"m": i}
            self._apply(registry, bus, {"ID": "PLG", "name": "h", "plugins": plugins},
                        900.0 + i * 20)
        got: list[Any] = []
        store.read(read_history("h", "cpu", 2)).addCallback(got.append)
        assert got[0] == [{"ts": 1000.0, "data": {"v": 5}}, {"ts": 980.0, "data": {"v": 4}}]
        store.read(read_history("h", "mem", 10)).addCallback(got.append)
        assert got[1] == [{"ts": 1000.0, "data": {"m": 5}}, {"ts": 960.0, "data": {"m": 3}},
                          {"ts": 920.0, "data": {"m": 1}}]
        store.read(read_history("h", "cpu", 10)).addCallback(got.append)
        assert [s["data"]["v"] for s in got[2]] == [5, 4, 3, 2, 1, 0, -1]
        store.startService()  # maintenance runs at start: retention 100 s, cap 7 messages
        store.read(read_history("h", "cpu", 10)).addCallback(got.append)
        assert [s["data"]["v"] for s in got[3]] == [5, 4, 3, 2, 1, 0]
        HostRecorder(registry, store, retention=100.0, max_samples=2).prune(store.conn, 1000.0)
        store.read(read_history("h", "cpu", 10)).addCallback(got.append)
        assert [s["data"]["v"] for s in got[4]] == [5, 4]  # e.g. a lowered history_max_samples
        store.stopService()

    def test_flooding_host_trimmed_before_maintenance(self, tmp_path: Path,
                                                      clock: Clock) -> None:
        """A host sending faster than its cap is trimmed with its next batch, not 10 min later."""
        store, registry, bus = self._store(tmp_path, clock, max_samples=3)
        counts = []
        for i in range(10):
            self._apply(registry, bus, {"ID": "PLG", "name": "h", "plugins": {"cpu": {"v": i}}},
                        900.0 + i)
            store.flush()
            counts.append(store.conn.execute("SELECT COUNT(*) FROM plugin_history").fetchone()[0])
        assert counts == [1, 2, 3, 4, 5, 3, 4, 5, 3, 4]
        got: list[Any] = []
        store.read(read_history("h", "cpu", 10)).addCallback(got.append)
        assert [s["data"]["v"] for s in got[0]] == [9, 8, 7, 6]

    def test_latest_survives_reload_per_plugin(self, tmp_path: Path, clock: Clock) -> None:
        """Each plugin's newest sample loads back even when later messages lack it."""
        store, registry, bus = self._store(tmp_path, clock)
        self._apply(registry, bus, {"ID": "PLG", "name": "h",
                                    "plugins": {"os": {"s": 1}, "cpu": {"v": 1}}}, 10.0)
        self._apply(registry, bus, {"ID": "PLG", "name": "h", "plugins": {"cpu": {"v": 2}}}, 20.0)
        store.flush()
        (host,) = load_hosts(store.conn)
        assert {p: (s.ts, s.data) for p, s in host.plugins.items()} == {
            "os": (10.0, {"s": 1}), "cpu": (20.0, {"v": 2})}

    def test_queued_commands_survive_reload(self, tmp_path: Path, clock: Clock) -> None:
        """A queued CMD/UPD and its sends so far load back; once answered it is gone."""
        store, registry, bus = self._store(tmp_path, clock)
        self._apply(registry, bus, {"ID": "HTB", "name": "h", "interval": 7}, 10.0)
        cmd, _ = registry.queue_command("h", "CMD", {"cmd": "restart", "args": ["-q"]}, 11.0,
                                        by="alice")
        upd, _ = registry.queue_command("h", "UPD", {"version": "2.0"}, 12.0)
        self._apply(registry, bus, {"ID": "HTB", "name": "h", "interval": 7}, 13.0)
        store.flush()
        (host,) = load_hosts(store.conn)
        assert [c.to_json() for c in host.pending.values()] == [
            {"cmd_id": cmd.cmd_id, "kind": "CMD", "queued": 11.0, "attempts": 1, "by": "alice",
             "cmd": "restart", "args": ["-q"]},
            {"cmd_id": upd.cmd_id, "kind": "UPD", "queued": 12.0, "attempts": 1, "by": None,
             "version": "2.0"}]
        self._apply(registry, bus, {"ID": "RES", "name": "h", "cmd_id": cmd.cmd_id, "rc": 0},
                    14.0)
        store.flush()
        (host,) = load_hosts(store.conn)
        assert list(host.pending) == [upd.cmd_id]
        bus.publish(registry.remove("h", 15.0))  # type: ignore[arg-type]
        store.flush()
        assert store.conn.execute("SELECT COUNT(*) FROM commands").fetchone() == (0,)

    def test_failed_batch_is_rolled_back_and_counted(self, tmp_path: Path,
                                                     clock: Clock) -> None:
        """A failing write rolls its whole batch back and is counted, not raised."""
        store, _registry, _bus = self._store(tmp_path, clock)
        store.write("INSERT INTO hosts (name, state) VALUES (?, ?)", ("a", "UP"))
        store.write("INSERT INTO nowhere VALUES (1)")
        store.flush()
        assert (store.failures, store.commits) == (1, 0)
        rows = store.conn.execute("SELECT COUNT(*) FROM hosts").fetchone()
        assert rows == (0,)

    def test_removed_host_deleted(self, tmp_path: Path, clock: Clock) -> None:
        """Removing a host deletes its rows."""
        store, registry, bus = self._store(tmp_path, clock)
        self._apply(registry, bus, {"ID": "PLG", "name": "h", "plugins": {"p": {}}}, 1.0)
        store.flush()
        removed = registry.remove("h", 2.0)
        assert removed is not None
        bus.publish(removed)
        store.flush()
        counts = [store.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                  for t in ("hosts", "plugin_latest", "plugin_history")]
        assert counts == [0, 0, 0]

    def test_corrupt_database_refused(self, tmp_path: Path) -> None:
        """A file that is not an SQLite database stops start-up with an error."""
        (tmp_path / "bad.sqlite3").write_bytes(b"this is not sqlite" * 100)
        with pytest.raises(sqlite3.DatabaseError):
            open_database(tmp_path / "bad.sqlite3")


def test_maintenance_period_follows_a_short_retention() -> None:
    """Retention runs every 10 min, a tenth of a shorter retention, never under 1 s."""
    assert [maintenance_period(r) for r in (7 * 86400.0, 6000.0, 60.0, 1.0)] == [
        600.0, 600.0, 6.0, 1.0]
