"""The live WebSocket feed: snapshot first, then events, in memory and on the real server."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    connectWS,
)
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.test import iosim

from heartbeat.config.server import ServerConfig
from heartbeat.events import HOST_DOWN, HOST_PLUGINS, HOST_UP, Event
from heartbeat.server.registry import Host, Registry
from heartbeat.server.thresholds.engine import ThresholdEngine
from heartbeat.server.thresholds.rulebook import RuleBook
from heartbeat.server.web.app import ConnectionBudget, ConnectionLimit
from heartbeat.server.web.hostview import DEFAULTS
from heartbeat.server.web.websocket import (
    FLUSH_INTERVAL,
    MAX_CLIENT_MESSAGE,
    MAX_FEED_MESSAGE,
    OVERDUE_CHECK,
    SNAPSHOT_LOW_WATER,
    SNAPSHOT_PAGE,
    SNAPSHOT_WAIT,
    EventHub,
    FeedFactory,
    FeedProtocol,
    raw_connection,
    text_frame,
    unsent_bytes,
)
from tests.support import ServerProcess, eventually, wait_until

QUIET = {"autoPingInterval": 0, "openHandshakeTimeout": 0, "closeHandshakeTimeout": 0}


class Collector(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.messages.put(json.loads(payload))

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.factory.closed.callback(wasClean)


def _client_factory(url: str) -> WebSocketClientFactory:
    factory = WebSocketClientFactory(url)
    factory.protocol = Collector
    factory.setProtocolOptions(serverConnectionDropTimeout=0, **QUIET)
    factory.opened = Deferred()
    factory.closed = Deferred()
    factory.messages = DeferredQueue()
    return factory


def _connect_in_memory(hub: EventHub, url: str = "ws://localhost/"
                       ) -> tuple[Any, list[Any], Any]:
    server_factory = FeedFactory(hub, "ws://localhost/")
    server_factory.setProtocolOptions(**QUIET)
    server = server_factory.buildProtocol(None)
    client_factory = _client_factory(url)
    got: list[Any] = []
    client_factory.messages.put = got.append  # type: ignore[method-assign]
    client = client_factory.buildProtocol(None)
    pump = iosim.connect(server, iosim.makeFakeServer(server), client,
                         iosim.makeFakeClient(client), greet=False)
    pump.flush()
    return pump, got, server


def _fleet(hosts: int, page_size: int) -> tuple[Registry, Clock, EventHub]:
    """A registry of ``hosts`` UP hosts and a hub paced by a Clock."""
    registry = Registry(grace=1, default_interval=1)
    for n in range(hosts):
        registry.apply({"ID": "HTB", "name": f"h{n:03d}"}, ("10.0.0.1", 1), 5.0)
    clock = Clock()
    return registry, clock, EventHub(registry, clock=clock, page_size=page_size)


def _snapshot_turns(keeps_up: bool) -> tuple[int, int, list[Any], int]:
    """A 3,000-host snapshot to a client whose connection writes 128 KiB in the reactor
    turn between two snapshot turns (``keeps_up``) or nothing: how many turns waited
    SNAPSHOT_WAIT, the turns (at most 200), the messages and the bytes left unsent."""
    _, clock, hub = _fleet(3000, SNAPSHOT_PAGE)
    pump, got, server = _connect_in_memory(hub)
    unsent = [0]
    real_send, real_turn = server.sendMessage, hub._pump

    def send(payload: bytes, *args: Any, **kwargs: Any) -> None:
        unsent[0] += len(payload)
        real_send(payload, *args, **kwargs)

    def turn(client: Any) -> None:
        if keeps_up:
            unsent[0] = max(0, unsent[0] - 128 * 1024)
        real_turn(client)

    server.sendMessage = send  # type: ignore[method-assign]
    server.backlog = lambda: unsent[0]  # type: ignore[method-assign]
    hub._pump = turn  # type: ignore[method-assign]
    waits = turns = 0
    while server.snapshot is not None and turns < 200:
        (call,) = clock.getDelayedCalls()
        wait = call.getTime() - clock.seconds()
        assert wait == 0 or wait == pytest.approx(SNAPSHOT_WAIT)
        waits += wait > 0
        clock.advance(wait)
        turns += 1
    pump.flush()
    hub.leave(server)
    return waits, turns, got, unsent[0]


class HubTests:
    def test_snapshot_then_events(self) -> None:
        """A new subscriber gets a snapshot of all hosts, then each event once."""
        registry = Registry(grace=1, default_interval=1)
        registry.apply({"ID": "HTB", "name": "web1"}, ("10.0.0.1", 1), 5.0)
        hub = EventHub(registry)
        pump, got, _ = _connect_in_memory(hub)
        assert got == [{"type": "snapshot", "total": 1, "more": False,
                        "hosts": [hub.views.json(registry.hosts["web1"])]}]
        hub.publish(Event(HOST_DOWN, "web1", 9.0, {"reason": "timeout"}))
        pump.flush()
        assert got[1:] == [{"type": "host.down", "host": "web1", "ts": 9.0,
                            "reason": "timeout"}]
        assert hub.to_json() == {"clients": 1, "sent": 1, "dropped_clients": 0,
                                 "snapshot_pages": 1}

    def test_a_compact_snapshot_leaves_out_the_defaults(self) -> None:
        """With ?compact=1 the host objects leave out the fields at DEFAULTS, which the
        first page carries: filled in again, the same objects, in a third of the bytes."""
        registry, clock, hub = _fleet(300, 4096)
        registry.apply({"ID": "MSG", "name": "h007", "text": "hello"}, ("10.0.0.2", 1), 6.0)
        registry.expire(9.0)  # all DOWN: a reason, a since
        registry.apply({"ID": "HTB", "name": "h001", "rtt": 2.5}, ("10.0.0.2", 1), 9.5)
        expected = [hub.views.json(host) for host in registry]
        whole: list[Any] = []
        for url, got in (("ws://localhost/", whole), ("ws://localhost/?compact=1", [])):
            pump, received, _ = _connect_in_memory(hub, url)
            while clock.getDelayedCalls():
                clock.advance(1)
                pump.flush()
            got.extend(received)
        compact = got
        assert "defaults" not in whole[0]
        assert compact[0]["defaults"] == DEFAULTS
        filled = [{**DEFAULTS, **host} for page in compact for host in page["hosts"]]
        assert sorted(filled, key=lambda h: h["name"]) == expected
        assert [h["name"] for h in filled] == [h["name"] for p in whole for h in p["hosts"]]
        assert len(json.dumps(compact)) * 2.5 < len(json.dumps(whole))
        first = compact[0]["hosts"][0]  # h000, DOWN: its reason is no default
        assert first == {k: v for k, v in expected[0].items()
                         if k not in DEFAULTS or v != DEFAULTS[k]}
        assert first["down_reason"] == "timeout" and "latest_message" not in first

    def test_snapshot_in_pages_under_the_limit(self) -> None:
        """Many hosts go out in pages of at most page_size bytes, paced by the clock,
        with every host once; events sent meanwhile come before the pages built after."""
        registry, clock, hub = _fleet(500, 4096)
        pump, got, _ = _connect_in_memory(hub)
        sizes = []
        hub.publish(Event(HOST_DOWN, "h499", 6.0, {"reason": "timeout"}))
        registry.hosts["h499"].down_reason = "timeout"
        while not got or got[-1].get("more", True):
            before = len(got)
            clock.advance(0)
            pump.flush()
            assert len(got) > before
        pages = [m for m in got if m["type"].startswith("snapshot")]
        assert [m["type"] for m in pages] == ["snapshot"] + ["snapshot.more"] * (len(pages) - 1)
        assert [m["more"] for m in pages] == [True] * (len(pages) - 1) + [False]
        assert (pages[0]["total"], len(pages) > 10) == (500, True)
        names = [h["name"] for m in pages for h in m["hosts"]]
        assert names == [f"h{n:03d}" for n in range(500)]
        for m in pages:
            sizes.append(len(json.dumps(m["hosts"], separators=(",", ":"))))
        assert max(sizes) <= 4096
        down = next(i for i, m in enumerate(got) if m["type"] == "host.down")
        assert got[down] == {"type": "host.down", "host": "h499", "ts": 6.0, "reason": "timeout"}
        assert pages[-1]["hosts"][-1]["down_reason"] == "timeout"
        assert got.index(pages[-1]) > down
        assert clock.getDelayedCalls() == []

    def test_a_client_that_keeps_up_is_never_made_to_wait(self) -> None:
        """A client taking a connection's 128 KiB a reactor turn gets the whole snapshot
        in turns that follow at once (no SNAPSHOT_WAIT pause: they once cost 1 s of the
        2 s a 10,000-host snapshot took), while one that takes nothing is looked at
        again only after SNAPSHOT_WAIT, its backlog held near the low water."""
        waits, turns, got, _ = _snapshot_turns(keeps_up=True)
        assert (waits, got[-1]["more"], len(got) > 10) == (0, False, True)
        assert sum(len(m["hosts"]) for m in got) == 3000
        waits, turns, _, unsent = _snapshot_turns(keeps_up=False)
        assert (turns, waits) == (200, 199)  # all but the turn right after joining
        assert SNAPSHOT_LOW_WATER < unsent <= SNAPSHOT_LOW_WATER + SNAPSHOT_PAGE

    @given(st.lists(st.one_of(st.integers(1, 200_000), st.just(0)), max_size=40))
    def test_unsent_bytes_are_what_the_kernel_has_not_taken(self, steps: list[int]) -> None:
        """A transport's backlog as Twisted keeps it (writes queued behind the buffer being
        written, which a turn sends 128 KiB of by moving its offset): after any writes
        (n > 0) and turns (0), the bytes written less the bytes sent. Counting the whole
        buffer, as once, made a client that kept up look stalled: every other snapshot
        turn waited SNAPSHOT_WAIT, 1.2 of the 1.4 s a 10,000-host snapshot took."""

        class Socket(FileDescriptor):
            sent = 0

            def writeSomeData(self, data: bytes) -> int:  # as tcp.Connection's
                taken = len(memoryview(data)[:self.SEND_LIMIT])
                self.sent += taken
                return taken

        transport = Socket(MemoryReactor())
        transport.connected = True
        written = 0
        for step in steps:
            if step:
                transport.write(b"x" * step)
                written += step
            else:
                transport.doWrite()
            assert unsent_bytes(transport) == written - transport.sent

    def test_snapshot_sends_problems_first(self) -> None:
        """The snapshot comes in /live's default order (problems first): DOWN hosts and
        CRITICAL alerts, then UNREACHABLE-like and UNKNOWN alert levels, then WARNING,
        then hosts not heard from yet, then the UP hosts by name, each rank by name, so
        the page's first screen is in its first page."""
        config = ServerConfig(thresholds={"cpu_monitor": {"cpu_percent": {
            "warning": 80.0, "critical": 90.0}}})
        engine = ThresholdEngine(RuleBook.from_config(config, "test.yaml"))
        registry = Registry(grace=1, default_interval=1)
        for n in range(8):
            registry.apply({"ID": "HTB", "name": f"h{n}"}, ("10.0.0.1", 1), 5.0)
        for n in (0, 1, 2, 3, 4):
            registry.apply({"ID": "HTB", "name": f"h{n}"}, ("10.0.0.1", 1), 20.0)
        registry.expire(20.0)  # h5, h6, h7 DOWN
        registry.restore([Host("configured")], 20.0)  # not heard from: UNKNOWN
        engine.evaluate_plugins("h4", {"cpu_monitor": {"cpu_percent": 95.0}}, 20.0)
        engine.evaluate_plugins("h1", {"cpu_monitor": {"cpu_percent": 85.0}}, 20.0)
        hub = EventHub(registry, alerts=engine)
        _, got, _ = _connect_in_memory(hub)
        assert [h["name"] for h in got[0]["hosts"]] == [
            "h4", "h5", "h6", "h7", "h1", "configured", "h0", "h2", "h3"]
        assert [h["state"] for h in got[0]["hosts"]][:6] == [
            "UP", "DOWN", "DOWN", "DOWN", "UP", "UNKNOWN"]

    def test_a_client_leaving_mid_snapshot_stops_it(self) -> None:
        """A client that goes away during its snapshot leaves no timer behind."""
        _, clock, hub = _fleet(300, 2048)
        pump, _, server = _connect_in_memory(hub)
        assert len(clock.getDelayedCalls()) == 1
        server.dropConnection(abort=True)
        pump.flush()
        assert (hub.clients, clock.getDelayedCalls()) == (set(), [])

    def test_an_event_over_the_limit_goes_out_as_a_stub(self) -> None:
        """An event larger than MAX_FEED_MESSAGE is replaced by a stub naming its size."""
        hub = EventHub(Registry(grace=1, default_interval=1))
        pump, got, _ = _connect_in_memory(hub)
        big = Event(HOST_PLUGINS, "h", 3.0, {"plugins": {"x": "y" * MAX_FEED_MESSAGE}})
        hub.publish(big)
        pump.flush()
        assert got[1:] == [{"type": "host.plugins", "host": "h", "ts": 3.0,
                            "omitted": len(big.to_bytes())}]

    def test_closed_client_leaves(self) -> None:
        """A disconnected client is forgotten by the hub."""
        hub = EventHub(Registry(grace=1, default_interval=1))
        pump, _, server = _connect_in_memory(hub)
        server.dropConnection(abort=True)
        pump.flush()
        assert hub.clients == set()

    def test_stalled_client_is_dropped(self) -> None:
        """A client whose unsent backlog passes the limit is disconnected, not buffered."""
        hub = EventHub(Registry(grace=1, default_interval=1), max_backlog=10)
        _, _, server = _connect_in_memory(hub)
        server.backlog = lambda: 11  # type: ignore[method-assign]
        hub.publish(Event(HOST_DOWN, "h", 1.0))
        assert hub.to_json() == {"clients": 0, "sent": 0, "dropped_clients": 1,
                                 "snapshot_pages": 1}

    def test_events_batched_per_flush_one_frame_each(self) -> None:
        """With a clock, events wait for one flush and reach each client in one write,
        every event its own frame, in order; the first of a quiet spell goes at once,
        later ones FLUSH_INTERVAL after the previous write."""
        _, clock, hub = _fleet(1, 4096)
        clients = [_connect_in_memory(hub) for _ in range(3)]
        clock.advance(0)
        writes: list[list[bytes]] = []
        for _, _, server in clients:
            sent: list[bytes] = []
            writes.append(sent)
            real = server.transport.write
            server.transport.write = lambda data, sent=sent, real=real: (sent.append(data),
                                                                         real(data))
        for n in range(3):
            hub.publish(Event(HOST_DOWN, f"h{n}", float(n)))
        assert writes == [[], [], []]
        clock.advance(0)
        assert [len(w) for w in writes] == [1, 1, 1]
        hub.publish(Event(HOST_DOWN, "later", 9.0))
        clock.advance(FLUSH_INTERVAL / 2)
        assert [len(w) for w in writes] == [1, 1, 1]
        clock.advance(FLUSH_INTERVAL / 2)
        assert [len(w) for w in writes] == [2, 2, 2]
        for pump, got, _ in clients:
            pump.flush()
            assert [(m["type"], m["host"]) for m in got[1:]] == [
                ("host.down", "h0"), ("host.down", "h1"), ("host.down", "h2"),
                ("host.down", "later")]
        assert (hub.sent, clock.getDelayedCalls()) == (12, [])

    def test_events_go_during_a_long_turn_once_overdue(self) -> None:
        """Events published during one long reactor turn (the clock moves, no timed call
        runs) go out once the oldest has waited FLUSH_INTERVAL, at the next
        OVERDUE_CHECK-th event, without waiting for the turn's end; in order, each once."""
        _, clock, hub = _fleet(1, 4096)
        pump, got, server = _connect_in_memory(hub)
        clock.advance(0)
        pump.flush()
        writes: list[bytes] = []
        real = server.transport.write
        server.transport.write = lambda data: (writes.append(data), real(data))
        clock.advance(1)  # a quiet spell
        for n in range(OVERDUE_CHECK - 1):
            hub.publish(Event(HOST_DOWN, f"h{n}", 1.0))
            clock.rightNow += FLUSH_INTERVAL / 4  # the turn goes on; no timed call runs
        assert writes == []  # overdue, but not yet at an OVERDUE_CHECK-th event
        hub.publish(Event(HOST_DOWN, f"h{OVERDUE_CHECK - 1}", 1.0))
        assert len(writes) == 1 and clock.getDelayedCalls() == []
        for n in range(OVERDUE_CHECK, 2 * OVERDUE_CHECK):
            hub.publish(Event(HOST_DOWN, f"h{n}", 1.0))
        assert len(writes) == 1  # the clock did not move: none overdue at the check
        clock.advance(FLUSH_INTERVAL)
        pump.flush()
        assert len(writes) == 2
        assert [m["host"] for m in got[1:]] == [f"h{n}" for n in range(2 * OVERDUE_CHECK)]

    def test_a_joining_client_starts_with_its_snapshot(self) -> None:
        """Events waiting for a flush when a client joins were caused before it: they go
        to the clients already there, and the newcomer's first message is its snapshot
        (which shows them), never those older events."""
        registry, clock, hub = _fleet(1, 4096)
        first = _connect_in_memory(hub)
        clock.advance(0)
        registry.apply({"ID": "HTB", "name": "new"}, ("10.0.0.2", 1), 6.0)
        hub.publish(Event(HOST_DOWN, "h000", 6.0, {"reason": "timeout"}))
        pump, got, _ = _connect_in_memory(hub)
        clock.advance(FLUSH_INTERVAL)
        pump.flush()
        first[0].flush()
        assert [m["type"] for m in got] == ["snapshot"]
        assert [h["name"] for h in got[0]["hosts"]] == ["h000", "new"]
        assert [m["type"] for m in first[1]] == ["snapshot", "host.down"]

    def test_text_frame_lengths(self) -> None:
        """Frames use the 7-bit, 16-bit and 64-bit length forms at their boundaries."""
        assert text_frame(b"x" * 125)[:2] == b"\x81\x7d"
        assert text_frame(b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
        assert text_frame(b"x" * 65536)[:10] == b"\x81\x7f" + (65536).to_bytes(8, "big")

    def test_large_client_message_closes_the_feed(self) -> None:
        """A client message past the feed's small limit drops the connection before the
        server buffers it (incoming messages are ignored anyway); a small one does not."""
        hub = EventHub(Registry(grace=1, default_interval=1))
        pump, _, server = _connect_in_memory(hub)
        client = pump.client
        client.sendMessage(b"x" * MAX_CLIENT_MESSAGE, isBinary=True)
        pump.flush()
        assert hub.clients == {server}
        client.sendMessage(b"x" * (MAX_CLIENT_MESSAGE + 1), isBinary=True)
        pump.flush()
        assert (server.failedByMe, hub.clients) == (True, set())


@pytest.mark.parametrize("path", ["ws_port", "/ws"])
@pytest_twisted.ensureDeferred
async def test_real_server_feed(server: ServerProcess, path: str) -> None:
    """Both ws_port and /ws on the HTTP port stream the snapshot and live events."""
    server.send({"ID": "HTB", "name": "early"})
    server.receive()
    port = server.ws_port if path == "ws_port" else server.http_port
    url = f"ws://127.0.0.1:{port}{'' if path == 'ws_port' else '/ws'}"
    factory = _client_factory(url)
    connector = connectWS(factory, timeout=5)
    try:
        client = await factory.opened
        snapshot = await factory.messages.get()
        assert (snapshot["type"], [h["name"] for h in snapshot["hosts"]]) == (
            "snapshot", ["early"])
        server.send({"ID": "MSG", "name": "early", "text": "hello"})
        seen = [await factory.messages.get() for _ in range(2)]
        assert [m["type"] for m in seen] == ["message", "host.msg"]
        assert seen[0]["message"] == {"ID": "MSG", "name": "early", "text": "hello"}
        assert seen[1]["text"] == "hello"
        client.sendClose()
        assert await factory.closed is True
    finally:
        connector.disconnect()


class Pages(Collector):
    """Collects raw snapshot pages (size and hosts) until the last one."""

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        if message["type"].startswith("snapshot"):
            self.factory.pages.append((len(payload), message))
            if not message["more"]:
                self.factory.done.callback(None)


@pytest_twisted.ensureDeferred
async def test_real_server_snapshot_of_a_thousand_hosts(server: ServerProcess) -> None:
    """1,000 hosts (a 300 KB snapshot, once refused by the 64 KiB limit) arrive in pages
    of under 64 KiB each on the real server, every host once, with no error logged."""
    for n in range(1000):
        server.send({"ID": "HTB", "name": f"fleet{n:04d}", "interval": 300})
    assert wait_until(lambda: server.get("/api/0/status")["hosts"]["total"] == 1000)
    factory = _client_factory(f"ws://127.0.0.1:{server.ws_port}")
    factory.protocol = Pages
    factory.pages = []
    factory.done = Deferred()
    connector = connectWS(factory, timeout=5)
    try:
        client = await factory.opened
        await factory.done
        names = [h["name"] for _, m in factory.pages for h in m["hosts"]]
        assert names == [f"fleet{n:04d}" for n in range(1000)]
        assert max(size for size, _ in factory.pages) < MAX_CLIENT_MESSAGE
        assert factory.pages[0][1]["total"] == 1000
        client.sendClose()
        await factory.closed
    finally:
        connector.disconnect()
    assert "PayloadExceeded" not in server.log()


@pytest_twisted.ensureDeferred
async def test_wss_port_serves_tls(server_factory, tmp_path) -> None:
    """With cert files present, wss_port serves the feed over TLS (and logfile gets the log)."""
    from twisted.internet.ssl import Certificate, optionsForClientTLS

    from tests.certs import write_self_signed
    from tests.support import free_port

    cert, _ = write_self_signed(tmp_path / "ssl")
    wss = free_port()
    server = server_factory(wss_port=wss, cert_path=str(tmp_path / "ssl"),
                            logfile=str(tmp_path / "server.log"))
    factory = _client_factory(f"wss://localhost:{wss}")
    trust = Certificate.loadPEM(cert.read_bytes())
    connector = connectWS(factory, optionsForClientTLS("localhost", trustRoot=trust), timeout=5)
    try:
        client = await factory.opened
        snapshot = await factory.messages.get()
        assert snapshot == {"type": "snapshot", "total": 0, "more": False, "hosts": []}
        # Events go through the TLS layer's own write, never to the socket underneath.
        server.send({"ID": "MSG", "name": "tls1", "text": "over TLS"})
        seen = [await factory.messages.get() for _ in range(3)]
        assert [m["type"] for m in seen] == ["message", "host.new", "host.msg"]
        client.sendClose()
        await factory.closed
    finally:
        connector.disconnect()
    assert "heartbeat 0.1.0: config" in (tmp_path / "server.log").read_text()
    assert "WSS" not in server.log()


@pytest_twisted.ensureDeferred
async def test_frames_reach_the_socket_in_the_flush() -> None:
    """On a plain TCP connection, served as ws_port serves it (under ConnectionLimit's
    wrapper), a flush hands each client's frames to the kernel in the call: nothing left
    in the transport's buffer, no writer registered. Bytes already waiting there (a ping)
    keep the frames behind them, so the order on the wire never changes."""
    from twisted.internet import reactor

    registry = Registry(grace=1, default_interval=1)
    registry.apply({"ID": "HTB", "name": "h"}, ("10.0.0.1", 1), 5.0)
    hub = EventHub(registry, clock=reactor)
    feed = FeedFactory(hub, "ws://127.0.0.1/")
    feed.setProtocolOptions(**QUIET)
    port = reactor.listenTCP(0, ConnectionLimit(feed, ConnectionBudget(10, 10)),
                             interface="127.0.0.1")
    factory = _client_factory(f"ws://127.0.0.1:{port.getHost().port}/")
    connector = connectWS(factory, timeout=5)
    try:
        client = await factory.opened
        assert (await factory.messages.get())["type"] == "snapshot"
        (server,) = hub.clients
        connection = raw_connection(server.transport)
        assert connection is not None
        assert await eventually(lambda: server.backlog() == 0)

        hub.publish(Event(HOST_DOWN, "h", 6.0))
        hub.flush()
        assert (connection.dataBuffer, connection._tempDataLen) == (b"", 0)
        assert connection not in reactor.getWriters()
        assert (await factory.messages.get())["type"] == "host.down"

        pings: list[bytes] = []
        client.onPing = pings.append  # type: ignore[method-assign]
        server.sendPing(b"first")
        waiting = server.backlog()
        assert waiting > 0 and waiting == unsent_bytes(connection)
        hub.publish(Event(HOST_UP, "h", 7.0))
        hub.flush()
        assert server.backlog() > waiting  # queued behind the ping, not sent past it
        assert (await factory.messages.get())["type"] == "host.up"
        assert pings == [b"first"]

        class Full:  # the kernel's buffer full: send refuses, as a non-blocking socket does
            def __init__(self, real: Any) -> None:
                self.real = real

            def send(self, data: bytes) -> int:
                raise BlockingIOError(11, "Resource temporarily unavailable")

            def __getattr__(self, name: str) -> Any:
                return getattr(self.real, name)

        assert await eventually(lambda: server.backlog() == 0)
        real = connection.socket
        connection.socket = Full(real)
        hub.publish(Event(HOST_DOWN, "h", 8.0))
        hub.flush()
        assert server.backlog() > 0  # kept in the transport's buffer, in order
        connection.socket = real
        assert (await factory.messages.get())["type"] == "host.down"
        client.sendClose()
        await factory.closed
    finally:
        connector.disconnect()
        await port.stopListening()


def test_raw_connection_only_under_plain_wrappers() -> None:
    """Under TLS (or any transport that is not a TCP connection) frames are never written
    to a socket directly."""
    from twisted.internet.ssl import CertificateOptions
    from twisted.internet.testing import StringTransport
    from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

    hub = EventHub(Registry(grace=1, default_interval=1))
    factory = TLSMemoryBIOFactory(CertificateOptions(), False, FeedFactory(hub))
    assert raw_connection(TLSMemoryBIOProtocol(factory, FeedProtocol())) is None
    assert raw_connection(StringTransport()) is None
