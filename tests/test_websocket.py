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
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.test import iosim

from heartbeat.events import HOST_DOWN, Event
from heartbeat.server.registry import Registry
from heartbeat.server.web.websocket import MAX_CLIENT_MESSAGE, EventHub, FeedFactory
from tests.support import ServerProcess

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


def _connect_in_memory(hub: EventHub) -> tuple[Any, list[Any], Any]:
    server_factory = FeedFactory(hub, "ws://localhost/")
    server_factory.setProtocolOptions(**QUIET)
    server = server_factory.buildProtocol(None)
    client_factory = _client_factory("ws://localhost/")
    got: list[Any] = []
    client_factory.messages.put = got.append  # type: ignore[method-assign]
    client = client_factory.buildProtocol(None)
    pump = iosim.connect(server, iosim.makeFakeServer(server), client,
                         iosim.makeFakeClient(client), greet=False)
    pump.flush()
    return pump, got, server


class HubTests:
    def test_snapshot_then_events(self) -> None:
        """A new subscriber gets a snapshot of all hosts, then each event once."""
        registry = Registry(grace=1, default_interval=1)
        registry.apply({"ID": "HTB", "name": "web1"}, ("10.0.0.1", 1), 5.0)
        hub = EventHub(registry)
        pump, got, _ = _connect_in_memory(hub)
        assert got == [{"type": "snapshot", "hosts": [registry.host_json(registry.hosts["web1"])]}]
        hub.publish(Event(HOST_DOWN, "web1", 9.0, {"reason": "timeout"}))
        pump.flush()
        assert got[1:] == [{"type": "host.down", "host": "web1", "ts": 9.0,
                            "reason": "timeout"}]
        assert hub.to_json() == {"clients": 1, "sent": 1, "dropped_clients": 0}

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
        assert hub.to_json() == {"clients": 0, "sent": 0, "dropped_clients": 1}

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
        assert snapshot == {"type": "snapshot", "hosts": []}
        client.sendClose()
        await factory.closed
    finally:
        connector.disconnect()
    assert "heartbeat 0.1.0: config" in (tmp_path / "server.log").read_text()
    assert "WSS" not in server.log()
