"""Ingest, monitor, journal and store services, driven by Clock and in-memory transports."""

from __future__ import annotations

import json
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.logger import formatEvent, globalLogPublisher

from heartbeat.events import HOST_DOWN, HOST_UP, RECEIVED, Event, EventBus
from heartbeat.protocol import Limits
from heartbeat.server.compose import wire
from heartbeat.server.ingest import IngestProtocol, IngestStats, source_address
from heartbeat.server.journal import (
    MAX_SOURCES,
    RENDER_CHUNK,
    JournalFile,
    JournalService,
    read_backwards,
)
from heartbeat.server.monitor import MonitorService
from heartbeat.server.registry import Registry
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.store import (
    maintenance_period,
    open_database,
)
from heartbeat.text import json_bytes


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

    @pytest_twisted.ensureDeferred
    async def test_replies_leave_on_the_ports_own_socket(self, clock: Clock) -> None:
        """On a real port (loopback) an HTB's ACK goes straight out of the socket it
        came in on, to the sender's address, and is counted as a reply: not through
        ``Port.write``, whose checks of the address's text cost half an ACK."""
        import socket

        from twisted.internet import reactor

        from heartbeat.server.ingest import make_udp_service

        protocol = IngestProtocol(Registry(grace=5, default_interval=10), make_bus(), clock,
                                  Limits(), IngestStats())
        service = make_udp_service(protocol, "127.0.0.1", 0, 1 << 20, reactor)
        service.privilegedStartService()
        port = service._port
        try:
            reactor.removeReader(port)  # this test turns the port by hand
            address = ("127.0.0.1", port.getHost().port)

            def checked_write(data: bytes, addr: Any) -> None:
                raise AssertionError("a reply went through Port.write")

            port.write = checked_write
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.settimeout(5)
                sender.sendto(b'{"ID":"HTB","name":"h","seq":7,"ts":5.0}', address)
                port.doRead()
                ack, source = sender.recvfrom(1024)
            assert (json.loads(ack), source) == (
                {"ID": "ACK", "server_ts": 1000.0, "seq": 7, "ts": 5.0}, address)
            assert (protocol.stats.replies, protocol.stats.reply_errors) == (1, 0)
            buffer = port.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            assert protocol.status()["receive_buffer"] == buffer >= 1 << 16
            assert protocol.status()["kernel_drops"] == 0
        finally:
            await service.stopService()

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

    def test_a_silent_fleet_goes_down_a_slice_a_turn(self, clock: Clock) -> None:
        """More overdue hosts than a slice are marked DOWN a slice per turn of the reactor,
        with the same events as one pass over all of them; a host heard between two
        slices stays UP; the tick ends with the last slice."""
        bus = make_bus()
        recorder = Recorder(bus)
        names = [f"h{n:02d}" for n in range(10)]
        registry, whole = (Registry(grace=5, default_interval=10) for _ in range(2))
        for name in names:
            for each in (registry, whole):
                each.apply({"ID": "HTB", "name": name}, ("10.0.0.1", 1), clock.seconds() - 16)
        expected = [(e.kind, e.host, e.data) for e in whole.expire(clock.seconds(),
                                                                   whole.overdue(clock.seconds()))]
        monitor = MonitorService(registry, bus, clock, period=1.0, slice_size=3)
        monitor.startService()  # the first tick, now
        assert [e.host for e in recorder.events] == names[:3]
        (next_slice,) = clock.getDelayedCalls()
        assert next_slice.getTime() == clock.seconds()
        registry.apply({"ID": "HTB", "name": "h04"}, ("10.0.0.1", 1), clock.seconds())
        clock.advance(0)
        assert registry.get("h04").state.value == "UP"
        assert [(e.kind, e.host, e.data) for e in recorder.events] == [
            x for x in expected if x[1] != "h04"]
        (tick,) = clock.getDelayedCalls()
        assert tick.getTime() == clock.seconds() + 1.0
        monitor.stopService()
        assert clock.getDelayedCalls() == []

    @staticmethod
    def silent_fleet(clock: Clock, registry: Registry
                     ) -> tuple[Recorder, Registry, MonitorService]:
        """Ten hosts h0-h9 of ``registry``, past their deadline, and a monitor that marks
        four a slice."""
        bus = make_bus()
        recorder = Recorder(bus)
        for n in range(10):
            registry.apply({"ID": "HTB", "name": f"h{n}"}, ("10.0.0.1", 1), clock.seconds() - 16)
        return recorder, registry, MonitorService(registry, bus, clock, period=1.0, slice_size=4)

    def test_stopping_ends_the_slices(self, clock: Clock) -> None:
        """Stopped between two slices, the monitor marks no more hosts and leaves no call."""
        recorder, _, monitor = self.silent_fleet(clock, Registry(grace=5, default_interval=10))
        monitor.startService()
        assert len(recorder.events) == 4
        stopped = monitor.stopService()
        clock.advance(0)
        fired: list[object] = []
        stopped.addBoth(fired.append)
        assert len(recorder.events) == 4 and fired == [None]
        assert clock.getDelayedCalls() == []

    def test_a_slice_that_fails_ends_its_tick_only(self, clock: Clock) -> None:
        """An exception in a later slice is logged and the next tick still comes, and
        marks the hosts that slice left."""
        failures: list[int] = []

        class Flaky(Registry):
            def expire(self, now: float, names: Any = None) -> list[Event]:
                if names is not None and "h5" in names and not failures:
                    failures.append(1)
                    raise RuntimeError("transient")
                return super().expire(now, names)

        recorder, _, monitor = self.silent_fleet(clock, Flaky(grace=5, default_interval=10))
        logged: list[str] = []
        observe = lambda event: logged.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observe)
        try:
            monitor.startService()
            clock.advance(0)
        finally:
            globalLogPublisher.removeObserver(observe)
        assert failures == [1] and len(recorder.events) == 4
        assert any("monitor expiry: a tick failed" in line for line in logged), logged
        clock.advance(1.0)
        assert sorted(e.host for e in recorder.events) == [f"h{n}" for n in range(10)]
        monitor.stopService()
        assert clock.getDelayedCalls() == []

    def test_tick_survives_a_failure(self, clock: Clock) -> None:
        """An exception in one check is logged and the next tick still runs (the first tick
        is at start)."""
        calls: list[float] = []

        class Flaky(Registry):
            def overdue(self, now: float) -> list[str]:
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

    def test_lines_are_the_reference_format_byte_for_byte(self, tmp_path: Path,
                                                           journal_file: Any) -> None:
        """Each line is exactly the fields joined as the format says, whichever sender,
        second or kind of entry came before it (the sender's fields and the ``datetime``
        are made once and reused), in a run of plain messages (rendered by C loops) or
        of mixed entries (line by line)."""
        journal = journal_file(max_size=1 << 30)
        raw = b'{"ID":"HTB","name":"web1","interval":30}'
        senders = [("192.168.1.100", 50003), ("::1", 1), (None, None), ("10.0.0.1", 5000),
                   ("192.168.1.100", 50004)]
        entries: list[Any] = []
        for n in range(40):
            ts = 1711234567.0 + n * 0.37 - (3.0 if n == 20 else 0.0)  # one goes back
            ip, port = senders[n % len(senders)]
            if n % 7 == 3:
                entries.append((ts, None, None, None, None, Event(HOST_DOWN, "web1", ts)))
            elif n % 11 == 5:
                message = {"ID": "MSG", "name": "web1", "text": "two\nlines"}
                entries.append((ts, ip, port, json.dumps(message, indent=1).encode(), message,
                                None))
            else:
                entries.append((ts, ip, port, raw, json.loads(raw), None))
        plain = [(1711234500.0 + n * 0.013 - (2.0 if n == 300 else 0.0),
                  *senders[n % 4], raw, None, None) for n in range(2 * RENDER_CHUNK + 7)]
        plain[RENDER_CHUNK + 1] = entries[3]  # an event: that run of entries line by line
        journal.write(entries)
        journal.write(plain)
        journal.write(entries[:3])

        def reference(entry: Any) -> bytes:
            ts, ip, port, text, message, event = entry
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(int(ts)))
            head = b'{"timestamp":%.3f,"datetime":"%s"' % (ts, when.encode())
            if event is not None:
                return head + b',"event":' + json_bytes(event.to_json()) + b"}\n"
            if b"\n" in text:
                text = json_bytes(message)
            return (head + b',"source_ip":' + json_bytes(ip) + b',"source_port":'
                    + json_bytes(port) + b',"message":' + text + b"}\n")

        assert (tmp_path / "j").read_bytes() == b"".join(
            map(reference, entries + plain + entries[:3]))

    def test_senders_kept_are_bounded(self, journal_file: Any) -> None:
        """The sender fields kept between lines are bounded: past MAX_SOURCES senders
        the journal begins again, and every line is still right."""
        journal = journal_file(max_size=1 << 30)
        raw = b'{"ID":"HTB","name":"h"}'
        journal.write([(1.0, "10.0.0.1", port, raw, None, None)
                       for port in range(MAX_SOURCES + 10)])
        assert len(journal._sources) <= MAX_SOURCES
        journal.close()
        lines = [json.loads(x) for x in journal.path.read_bytes().splitlines()]
        assert [x["source_port"] for x in lines] == list(range(MAX_SOURCES + 10))

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
        assert [e["message"]["text"] for e in got[0][0]] == ["3", "2", "0"]
        assert got[0][1] is True
        service.stopService()
        assert clock.getDelayedCalls() == []


class StoreFileTests:
    def test_corrupt_database_refused(self, tmp_path: Path) -> None:
        """A file that is not an SQLite database stops start-up with an error."""
        (tmp_path / "bad.sqlite3").write_bytes(b"this is not sqlite" * 100)
        with pytest.raises(sqlite3.DatabaseError):
            open_database(tmp_path / "bad.sqlite3")


def test_maintenance_period_follows_a_short_retention() -> None:
    """Retention runs every 10 min, a tenth of a shorter retention, never under 1 s."""
    assert [maintenance_period(r) for r in (7 * 86400.0, 6000.0, 60.0, 1.0)] == [
        600.0, 600.0, 6.0, 1.0]
