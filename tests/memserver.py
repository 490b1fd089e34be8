"""The real ``makeService`` tree in process: a memory reactor, fake sockets, no threads.

:class:`InProcessServer` starts exactly what ``twistd heartbeat`` starts (every
part built and subscribed by ``heartbeat.server.compose``, every service of the
tree) on a :class:`MemoryServerReactor`, with the blocking workers run inline
(``compose.Seams``). Datagrams go straight to the UDP listener's protocol, HTTP
requests and WebSocket clients through the listening factories of the HTTP and
feed ports; time moves only when the test advances the reactor. For tests and
the whole-server fuzzer: what one datagram can do to the whole graph, in
microseconds, without a process.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.application.service import IService
from twisted.internet.address import IPv4Address
from twisted.internet.testing import (
    FakeDatagramTransport,
    MemoryReactorClock,
    StringTransportWithDisconnection,
)
from twisted.test import iosim

from heartbeat.config.server import ServerConfig
from heartbeat.server.compose import STORE_FILE, Seams, Server
from heartbeat.server.registry import Host
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.settings import ServerSettings
from heartbeat.server.tap import makeService
from tests.apistack import fired

START = 1_800_000_000.0


def stored_fields(host: Host) -> tuple[Any, ...]:
    """What of a host its row in the store keeps (what a restart finds), to compare the
    hosts loaded back with the registry's."""
    return (host.state, host.addr, host.port, host.first_seen, host.last_seen, host.since,
            host.interval, host.rtt, host.version, host.boot_time, host.down_reason,
            host.expected_by, host.latest, {p: s.ts for p, s in host.plugins.items()})


class _FakeUDPPort:
    """What ``listenUDP`` returns: a socket to tune (never bound), stopped on request."""

    def __init__(self, port: int, interface: str) -> None:
        self.port = port
        self.interface = interface
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.listening = True

    def stopListening(self) -> None:
        self.listening = False
        self.socket.close()

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", self.interface or "0.0.0.0", self.port)


class MemoryServerReactor(MemoryReactorClock):
    """MemoryReactorClock that also "listens" on UDP: the protocol gets a fake transport."""

    def __init__(self) -> None:
        super().__init__()
        self.udp: dict[int, tuple[Any, FakeDatagramTransport, _FakeUDPPort]] = {}

    def listenUDP(self, port: int, protocol: Any, interface: str = "",
                  maxPacketSize: int = 8192) -> _FakeUDPPort:
        transport = FakeDatagramTransport()
        protocol.makeConnection(transport)
        listening = _FakeUDPPort(port, interface)
        self.udp[port] = (protocol, transport, listening)
        return listening


class _FeedClient(WebSocketClientProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.received.append(payload if self.factory.raw else json.loads(payload))


class InProcessServer:
    """``makeService``'s tree for ``config`` started on a memory reactor (see the module)."""

    def __init__(self, directory: Path, *, settings: ServerSettings | None = None,
                 reactor: MemoryServerReactor | None = None, seams: Seams | None = None,
                 **config: Any) -> None:
        """``config``: keys of a ServerConfig; or whole ``settings`` (a parsed file). The
        reactor and the seams may be swapped too (the whole-server fuzzer does)."""
        self.reactor = reactor or MemoryServerReactor()
        self.reactor.advance(START)
        if settings is None:
            defaults: dict[str, Any] = {
                "state_dir": str(directory / "state"), "journal_dir": str(directory / "journal"),
                "hb_host": "127.0.0.1", "hbd_host": "127.0.0.1", "ws_port": 50005}
            settings = ServerSettings.from_config(ServerConfig(**{**defaults, **config}))
        self.config = settings.config
        self.service: IService = makeService(
            {"settings": settings}, self.reactor,
            seams=seams or Seams(worker=lambda name: ImmediateWorker()))
        parts = self.service.parts  # type: ignore[attr-defined]
        assert isinstance(parts, Server)
        self.parts: Server = parts
        self.service.privilegedStartService()
        self.service.startService()
        self.udp, self.udp_transport, _ = self.reactor.udp[self.config.hb_port]
        self.feeds: list[Any] = []

    @property
    def store_path(self) -> Path:
        return Path(self.config.state_dir) / STORE_FILE

    def send(self, message: dict[str, Any] | bytes, addr: tuple[str, int] = ("192.0.2.1", 40000),
             ) -> None:
        """One datagram to the UDP listener's protocol, as the socket would deliver it."""
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        self.udp.datagramReceived(data, addr)

    def _factory(self, port: int) -> Any:
        return next(f for p, f, _, _ in self.reactor.tcpServers if p == port)

    def http(self, method: str, path: str) -> tuple[int, Any]:
        """One HTTP/1.0 request through the HTTP port's listening factory: (status, JSON)."""
        status, body = self.request(method, path)
        return status, json.loads(body) if body else None

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """:meth:`http` with a JSON ``body``; the answer's body as it was sent."""
        protocol = self._factory(self.config.hbd_port).buildProtocol(
            IPv4Address("TCP", "127.0.0.1", 41000))
        transport = StringTransportWithDisconnection(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 41000))
        transport.protocol = protocol
        protocol.makeConnection(transport)
        head = f"{method} {path} HTTP/1.0\r\nHost: localhost\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        protocol.dataReceived(head.encode() + b"\r\n" + body)
        status, _, answer = transport.value().partition(b"\r\n\r\n")
        return int(status.split(b" ", 2)[1]), answer

    def feed(self, raw: bool = False) -> tuple[list[Any], iosim.IOPump]:
        """A WebSocket client on the feed port: (messages received so far, the pump).

        ``raw``: the messages as sent (bytes), not parsed."""
        server = self._factory(self.config.ws_port).buildProtocol(
            IPv4Address("TCP", "127.0.0.1", 42000))
        client_factory = WebSocketClientFactory(f"ws://127.0.0.1:{self.config.ws_port}/")
        client_factory.protocol = _FeedClient
        client_factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0,
                                          autoPingInterval=0)
        client_factory.received = []
        client_factory.raw = raw
        client = client_factory.buildProtocol(None)
        pump = iosim.connect(server, iosim.makeFakeServer(server), client,
                             iosim.makeFakeClient(client), greet=False)
        pump.flush()
        self.feeds.append((client, pump))
        return client_factory.received, pump

    def close_feed(self, pump: iosim.IOPump) -> None:
        """Drop the feed client of ``pump``, as a browser closing its tab."""
        client, _ = next(feed for feed in self.feeds if feed[1] is pump)
        self.feeds.remove((client, pump))
        client.dropConnection(abort=True)
        pump.flush()

    def stop(self) -> Any:
        """Close the feeds, then stop the tree as twistd does; the stop's result."""
        for client, pump in self.feeds:
            client.dropConnection(abort=True)
            pump.flush()
        return fired(self.service.stopService())
