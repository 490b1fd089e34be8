"""A flood of invented names and sources: memory, journal and store stay within their bounds."""

from __future__ import annotations

import gc
import json
import sqlite3
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport

from heartbeat.config.server import HostConfig, ServerConfig
from heartbeat.events import RECEIVED, Event, EventBus
from heartbeat.server.compose import make_ingest, make_registry, wire
from heartbeat.server.ingest import IngestProtocol
from heartbeat.server.journal import JournalFile, JournalService
from heartbeat.server.registry import Registry
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.store import HostRecorder, StoreService, open_sqlite


class Server:
    """Ingest, journal and store wired as tap.py does, on a Clock and inline workers."""

    def __init__(self, directory: Path, config: ServerConfig, max_sources: int) -> None:
        self.config = config
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.bus = EventBus(on_error=lambda s, e, x: pytest.fail(f"subscriber failed: {x!r}"))
        self.registry = make_registry(config)
        self.journal = JournalService(
            JournalFile(directory / "journal", "messages.journal", config.journal_max_size,
                        config.journal_max_backups), ImmediateWorker(), self.clock, 0.5)
        self.store = StoreService(open_sqlite(directory / "s.sqlite3"),
                                  ImmediateWorker(), self.clock, 0.5)
        recorder = HostRecorder(self.registry, self.store, config.history_retention,
                                config.history_max_samples,
                                max_host_bytes=config.history_max_host_bytes,
                                max_bytes=config.history_max_bytes)
        wire(self.bus, journal=self.journal, recorder=recorder)
        self.ingest: IngestProtocol = make_ingest(config, self.registry, self.bus, self.clock,
                                                  max_sources)
        self.transport = FakeDatagramTransport()
        self.ingest.makeConnection(self.transport)
        self.journal.startService()
        self.store.startService()

    def flood(self, count: int, datagram: Callable[[int], tuple[bytes, str]],
              per_second: int = 5000) -> None:
        step = 1 / per_second
        for n in range(count):
            data, ip = datagram(n)
            self.ingest.datagramReceived(data, (ip, 40000))
            self.clock.advance(step)
            if n % 500 == 499:
                self.transport.written.clear()
        self.transport.written.clear()

    def stop(self) -> None:
        self.journal.stopService()
        self.store.stopService()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(max_sources: int = 65536, **overrides: Any) -> Server:
        config = ServerConfig(**{
            "journal_max_size": 200_000, "journal_max_backups": 2, "max_hosts": 300,
            "max_unconfigured_hosts": 500, "source_rate": 2000.0, "history_max_samples": 20,
            "hosts": {"web1": HostConfig()}, **overrides})
        started.append(Server(tmp_path, config, max_sources))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def _invented(n: int) -> tuple[bytes, str]:
    """An HTB from an invented name and an invented address (spoofed sources)."""
    ip = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    return json.dumps({"ID": "HTB", "name": f"fake-{n:07d}", "interval": 30}).encode(), ip


def _allocated() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_invented_names_and_sources_do_not_grow_memory(server: Callable[..., Server]) -> None:
    """Once the bounds are reached, another flood as large leaves memory where it was."""
    hb = server(max_sources=1000)  # a smaller table, filled by the first flood
    tracemalloc.start()
    try:
        before = _allocated()
        hb.flood(3000, _invented)
        filled = _allocated()
        hb.flood(3000, lambda n: _invented(n + 3000))
        again = _allocated()
    finally:
        tracemalloc.stop()
    assert len(hb.registry) == 300
    assert dict(hb.ingest.stats.dropped) == {"max_hosts": 5700}
    assert filled - before > 200_000  # the first flood did cost something...
    assert again - filled < 100_000, (before, filled, again)  # ...the second nothing more
    hb.ingest.datagramReceived(b'{"ID":"HTB","name":"web1"}', ("192.0.2.7", 1))
    assert hb.registry.hosts["web1"].state.value == "UP"


def test_one_source_is_held_to_its_rate(server: Callable[..., Server]) -> None:
    """A single address sending 5x its rate gets its rate through; the rest is counted."""
    hb = server(source_rate=1000.0)
    payload = b'{"ID":"HTB","name":"web1","interval":30}'
    hb.flood(20000, lambda n: (payload, "192.0.2.1"), per_second=5000)
    accepted = hb.ingest.stats.accepted
    assert 4000 <= accepted <= 4000 + 1000 + 100  # 4 s of rate, the first burst, rounding
    assert hb.ingest.stats.dropped["rate_limited"] == 20000 - accepted


def test_journal_and_store_bounded_under_flood(server: Callable[..., Server],
                                               tmp_path: Path) -> None:
    """Big PLGs from allowed hosts: journal files and history rows stay within their caps."""
    hb = server(max_hosts=10_000, source_rate=1e9)
    blob = "x" * 2000
    plg = [zlib.compress(json.dumps({"ID": "PLG", "name": f"h{n}", "plugins": {
        "big": {"blob": blob, "n": n}}}).encode()) for n in range(10)]
    hb.flood(3000, lambda n: (plg[n % 10], "192.0.2.1"))
    hb.clock.advance(1.0)
    journal = tmp_path / "journal"
    files = sorted(p.name for p in journal.iterdir())
    assert files == ["messages.journal", "messages.journal.1", "messages.journal.2"]
    assert all((journal / name).stat().st_size <= 200_000 for name in files)
    assert hb.journal.journal.rotations > 20
    conn = sqlite3.connect(tmp_path / "s.sqlite3")
    rows = dict(conn.execute("SELECT host, COUNT(*) FROM plugin_history GROUP BY host"))
    assert set(rows) == {f"h{n}" for n in range(10)}
    assert max(rows.values()) <= 2 * 20
    conn.close()


def test_small_zlib_plgs_fill_no_disk(server: Callable[..., Server], tmp_path: Path) -> None:
    """PLGs of a few dozen bytes on the wire inflating to 20 KB each: history is charged
    the inflated bytes, so it stays within its caps per host and in all."""
    hb = server(max_hosts=10_000, source_rate=1e9, history_max_samples=10_000,
                history_max_host_bytes=200_000, history_max_bytes=600_000)
    plg = [zlib.compress(json.dumps({"ID": "PLG", "name": f"h{n}", "plugins": {
        "big": {"blob": "x" * 20_000, "n": n}}}).encode(), 9) for n in range(10)]
    assert max(len(p) for p in plg) < 120
    hb.flood(3000, lambda n: (plg[n % 10], "192.0.2.1"))
    hb.clock.advance(1.0)
    conn = sqlite3.connect(tmp_path / "s.sqlite3")
    held = dict(conn.execute(
        "SELECT host, SUM(LENGTH(CAST(message AS BLOB))) FROM plugin_history GROUP BY host"))
    conn.close()
    sent = sum(len(plg[n % 10]) for n in range(3000))
    assert set(held) == {f"h{n}" for n in range(10)}
    assert max(held.values()) <= 60_000 + 20_100  # its share, and the message that passed it
    assert sum(held.values()) <= 600_000 + 10 * 20_100 < 20_000 * 3000 / 50
    assert sent < 360_000  # about 350 KB sent; about 60 MB inflated


class StalledWorker:
    """A worker whose thread is stuck (a hung disk) until the test lets it run."""

    def __init__(self) -> None:
        self.queued: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def run(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.queued.append((fn, args, d))
        return d

    def unstick(self) -> None:
        queued, self.queued = self.queued, []
        for fn, args, d in queued:
            d.callback(fn(*args))


def test_journal_on_a_stalled_disk_holds_bounded_memory(tmp_path: Path) -> None:
    """With the writer stuck, at most max_pending lines wait; the rest are dropped and counted."""
    clock = Clock()
    worker = StalledWorker()
    journal = JournalFile(tmp_path, "j", 10**9, 0)
    service = JournalService(journal, worker, clock, max_buffer=1000, max_pending=5000)
    bus = EventBus(on_error=lambda s, e, x: pytest.fail(f"subscriber failed: {x!r}"))
    wire(bus, journal=service)
    message = {"ID": "HTB", "name": "h"}
    for n in range(20_000):
        bus.publish(Event(RECEIVED, "h", float(n), {
            "message": message, "source_ip": "10.0.0.1", "source_port": 1}, b'{"n":%d}' % n))
    waiting = sum(len(args[0]) for fn, args, _ in worker.queued if args)
    assert (waiting, service.dropped) == (5000, 15_000)
    worker.unstick()
    bus.publish(Event(RECEIVED, "h", 1.0, {
        "message": message, "source_ip": "10.0.0.1", "source_port": 1}, b'{"n":"after"}'))
    service.flush()
    worker.unstick()
    journal.close()
    lines = (tmp_path / "j").read_bytes().splitlines()
    assert len(lines) == 5001 and lines[-1].endswith(b'"message":{"n":"after"}}')
    assert service.dropped == 15_000


def test_store_on_a_stalled_disk_holds_bounded_memory(tmp_path: Path) -> None:
    """With the store's writer stuck, one batch is in flight and waiting history is capped."""
    clock = Clock()
    worker = StalledWorker()
    store = StoreService(open_sqlite(tmp_path / "s.sqlite3"), worker, clock, 0.5)
    registry = Registry(grace=5, default_interval=10)
    bus = EventBus(on_error=lambda s, e, x: pytest.fail(f"subscriber failed: {x!r}"))
    recorder = HostRecorder(registry, store, 3600.0, 10**6, max_pending=1000)
    wire(bus, recorder=recorder)
    store.startService()
    worker.unstick()  # the start-up maintenance
    for n in range(5000):
        message = {"ID": "PLG", "name": "h", "plugins": {"p": n}}
        bus.publish(Event(RECEIVED, "h", clock.seconds(), {
            "message": message, "source_ip": "10.0.0.1", "source_port": 1},
            json.dumps(message).encode()))
        clock.advance(0.001)
    assert len(worker.queued) == 1  # the first tick's batch; the timer waits for it
    assert store.dropped_rows == 5000 - 500 - 1000
    worker.unstick()
    clock.advance(0.5)
    worker.unstick()
    rows = store.backend.conn.execute(  # type: ignore[attr-defined]
        "SELECT COUNT(*) FROM plugin_history").fetchone()[0]
    assert (rows, store.commits) == (1500, 2)
    store.stopService()
    worker.unstick()


class HangingChannel:
    """A channel whose sends never answer (a hung SMTP server, a black-holed API)."""

    max_recipients = 50
    secrets: tuple[str, ...] = ()

    def __init__(self, name: str) -> None:
        self.name = name
        self.sends = 0

    def send(self, notification: Any) -> Deferred[None]:
        self.sends += 1
        return Deferred()


class FailingChannel(HangingChannel):
    """A channel that answers every send with an error at once (HTTP 500)."""

    def send(self, notification: Any) -> Deferred[None]:
        from twisted.internet.defer import fail

        from heartbeat.server.notify.base import DeliveryError

        self.sends += 1
        return fail(DeliveryError("HTTP 500: internal error"))


def test_hung_and_failing_channels_cost_ingest_nothing_and_memory_stays_bounded() -> None:
    """Ten minutes of alerts into a hung and a failing channel: every datagram is taken
    and acknowledged, each lane stays within its limits, and memory stops growing."""
    from heartbeat.config.loader import parse_config
    from heartbeat.server.notify.routing import Router
    from heartbeat.server.notify.service import NotifierService, NotifySettings

    config = parse_config(ServerConfig, "pushsrv: pushover\nemail: {to: [ops@example.com]}\n"
                          "pushover: {token: t, user: u}\nnotify_queue_limit: 50\n"
                          "source_rate: 1000000\n", "test.yaml")
    clock = Clock()
    clock.advance(1_700_000_000)
    bus = EventBus(on_error=lambda s, e, x: pytest.fail(f"subscriber failed: {x!r}"))
    registry = Registry(grace=config.grace, default_interval=config.interval)
    ingest = make_ingest(config, registry, bus, clock)
    transport = FakeDatagramTransport()
    ingest.makeConnection(transport)
    channels = [HangingChannel("email"), FailingChannel("pushover")]
    notifier = NotifierService(channels, Router(config, ["email", "pushover"]), clock, bus,
                               settings=NotifySettings.from_config(config))
    wire(bus, notifier=notifier)
    notifier.startService()
    sent = heartbeats = acks = 0
    memory = []
    tracemalloc.start()
    try:
        for second in range(600):
            for n in range(10):
                host = f"h{(second * 10 + n) % 200}"
                kind = ("MSG", "HTB", "SHUT")[n % 3]
                message = {"ID": kind, "name": host, "text": "disk failing", "level": "error"}
                ingest.datagramReceived(json.dumps(message).encode(), ("192.0.2.1", 5000))
                sent += 1
                heartbeats += kind == "HTB"
            acks += len(transport.written)
            transport.written.clear()
            clock.advance(1.0)
            if second in (299, 599):
                memory.append(_allocated())
    finally:
        tracemalloc.stop()
    assert (ingest.stats.accepted, dict(ingest.stats.dropped)) == (sent, {})
    assert acks == heartbeats  # every HTB was acknowledged
    lanes = notifier.to_json()["channels"]
    for name in ("email", "pushover"):
        lane = lanes[name]
        assert lane["queued"] + lane["waiting_retry"] <= 50, (name, lane)
        assert lane["in_flight"] <= 4
        assert lane["dropped_queue_full"] > 0
    assert channels[0].sends <= 4 + 600 * 4 / config.notify_timeout  # hung: timed out, retried
    assert memory[1] - memory[0] < 50_000, memory
    stopped = notifier.stopService()
    clock.advance(10)
    assert stopped.called
