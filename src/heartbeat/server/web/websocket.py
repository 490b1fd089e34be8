"""The live WebSocket feed: a snapshot of every host, then every event as it happens.

Protocol objects hold no state of their own but their viewer; the
:class:`EventHub` keeps the set of subscribers, serialises each event once and
hands the same bytes to every client allowed to see its host. A client whose
send buffer passes ``max_backlog`` is dropped rather than letting a stalled
browser grow the server's memory. With users configured, a connection must
authenticate in its opening handshake (session cookie or ``?token=``) and is
closed when its session ends.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.logger import Logger

from heartbeat.events import HOST_RTT, Event, EventBus
from heartbeat.server.access import Viewer
from heartbeat.server.registry import Registry
from heartbeat.server.sessions import Session
from heartbeat.server.web.auth import WebAuth
from heartbeat.server.web.errors import ApiError

__all__ = ["MAX_CLIENT_MESSAGE", "EventHub", "FeedFactory", "FeedProtocol"]

log = Logger()
MAX_CLIENT_MESSAGE = 64 * 1024
"""Bytes a feed client may send in one message or frame; the feed reads nothing from
clients, and without a limit the WebSocket layer would buffer any message whole."""


class EventHub:
    """Fans events out to the connected feed clients."""

    def __init__(self, registry: Registry, max_backlog: int = 4 * 1024 * 1024) -> None:
        self.registry = registry
        self.max_backlog = max_backlog
        self.clients: set[FeedProtocol] = set()
        self.sent = 0
        self.dropped_clients = 0

    def attach(self, bus: EventBus) -> None:
        bus.subscribe(self.publish, exclude=[HOST_RTT])  # the message carries it

    def snapshot(self, viewer: Viewer | None = None) -> bytes:
        """Every host ``viewer`` may see (None: all), as the feed's first message."""
        hosts = [self.registry.host_json(h) for h in sorted(self.registry, key=lambda h: h.name)
                 if viewer is None or viewer.sees(h.name)]
        return json.dumps({"type": "snapshot", "hosts": hosts},
                          separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def join(self, client: FeedProtocol) -> None:
        self.clients.add(client)
        client.sendMessage(self.snapshot(client.viewer))

    def session_ended(self, session: Session) -> None:
        """Close the feeds opened with a session that was logged out, expired or revoked."""
        for client in list(self.clients):
            if client.viewer is not None and client.viewer.session == session.key:
                self.clients.discard(client)
                client.sendClose(code=4001, reason="session ended")

    def leave(self, client: FeedProtocol) -> None:
        self.clients.discard(client)

    def publish(self, event: Event) -> None:
        if not self.clients:
            return
        payload = event.to_bytes()
        for client in list(self.clients):
            if client.viewer is not None and not client.viewer.sees(event.host):
                continue
            if client.backlog() > self.max_backlog:
                self.dropped_clients += 1
                self.clients.discard(client)
                log.warn("websocket: dropping {peer}: {size} bytes unsent", peer=client.peer,
                         size=client.backlog())
                client.dropConnection(abort=True)
                continue
            client.sendMessage(payload)
            self.sent += 1

    def to_json(self) -> dict[str, Any]:
        return {"clients": len(self.clients), "sent": self.sent,
                "dropped_clients": self.dropped_clients}


class FeedProtocol(WebSocketServerProtocol):
    """One feed subscriber; incoming messages are ignored."""

    factory: FeedFactory
    viewer: Viewer | None = None
    """Who is watching; None when the factory checks no one (all events)."""

    def onConnect(self, request: ConnectionRequest) -> None:
        auth = self.factory.auth
        if auth is None:
            return
        try:
            self.viewer = auth.feed_viewer(request.headers, request.params, request.host)
        except ApiError as e:
            log.info("websocket: refused {peer}: {detail}", peer=self.peer, detail=e.detail)
            raise ConnectionDeny(e.status, e.detail) from None

    def onOpen(self) -> None:
        try:
            self.factory.hub.join(self)
        except Exception:
            log.failure("websocket: cannot start the feed for {peer}", peer=self.peer)
            self.dropConnection(abort=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.hub.leave(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        pass

    def backlog(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        transport: Any = self.transport
        size = 0
        for name in ("dataBuffer", "_tempDataLen"):
            value = getattr(transport, name, 0)
            size += len(value) if isinstance(value, bytes | bytearray) else int(value or 0)
        return size


class FeedFactory(WebSocketServerFactory):
    protocol = FeedProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, hub: EventHub, url: str | None = None, auth: WebAuth | None = None
                 ) -> None:
        super().__init__(url)
        self.hub = hub
        self.auth = auth
        self.setProtocolOptions(webStatus=False, autoPingInterval=30, autoPingTimeout=15,
                                maxFramePayloadSize=MAX_CLIENT_MESSAGE,
                                maxMessagePayloadSize=MAX_CLIENT_MESSAGE)
