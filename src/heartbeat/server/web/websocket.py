"""The live WebSocket feed: a snapshot of every host, then every event as it happens.

Protocol objects hold no state of their own but their viewer and the snapshot
still being sent to them; the :class:`EventHub` keeps the set of subscribers,
serialises each event once and hands the same bytes to every client allowed to
see its host. A client whose send buffer passes ``max_backlog`` is dropped
rather than letting a stalled browser grow the server's memory. With users
configured, a connection must authenticate in its opening handshake (session
cookie or ``?token=``) and is closed when its session ends.

Events are fanned out in batches: each event is framed once, and the frames
gathered during at most ``FLUSH_INTERVAL`` go to each client in one write, the
bytes joined once per flush for every client that sees every host. With 100
subscribers at 5,000 events/s that is one write per client every few
milliseconds, not 500,000 sends a second (docs/PERFORMANCE.md, "WebSocket
fan-out"). Past ``max_backlog`` bytes its connection has not handed to the
kernel yet, a client is dropped, so a subscriber that stops reading costs a
bounded amount of memory and never slows the others.

The snapshot goes out in pages of at most ``SNAPSHOT_PAGE`` bytes (a
``snapshot`` message, then ``snapshot.more`` ones until ``more`` is false),
each built when the client has taken the previous ones, so 100,000 hosts cost
neither one huge message nor a long stop of the reactor. Events go on being
sent meanwhile; a page is built from the registry when it is sent, so it is
never older than the events before it (docs/HTTP_API.md, "WebSocket feed"),
from the JSON the host views keep of each host between its events
(:meth:`HostViews.json_bytes`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, Final

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper

from heartbeat.events import Event
from heartbeat.server.access import Viewer
from heartbeat.server.registry import Registry
from heartbeat.server.sessions import Session
from heartbeat.server.thresholds.engine import ThresholdEngine
from heartbeat.server.web.auth import WebAuth
from heartbeat.server.web.errors import ApiError
from heartbeat.server.web.hostview import DEFAULTS, HostViews
from heartbeat.text import json_bytes

__all__ = ["MAX_CLIENT_MESSAGE", "MAX_FEED_MESSAGE", "SNAPSHOT_PAGE", "EventHub",
           "FeedFactory", "FeedProtocol", "SnapshotPages", "raw_connection", "unsent_bytes"]

log = Logger()
MAX_CLIENT_MESSAGE: Final = 64 * 1024
"""Bytes a feed client may send in one message or frame; the feed reads nothing from
clients, and without a limit the WebSocket layer would buffer any message whole."""
MAX_FEED_MESSAGE: Final = 1024 * 1024
"""Bytes of one message the feed sends; a larger event goes out as a stub (``omitted``)."""
SNAPSHOT_PAGE: Final = 48 * 1024
"""Bytes of host objects in one snapshot message."""
SNAPSHOT_LOW_WATER: Final = 256 * 1024
"""A client's unsent backlog under which the next snapshot page is built."""
PAGES_PER_TURN: Final = 4
"""Snapshot pages built for one client before other work gets the reactor back."""
SNAPSHOT_WAIT: Final = 0.05
"""Seconds until a client that took less than a page since its last turn is looked at again."""
FLUSH_INTERVAL: Final = 0.004
"""Seconds events may wait to go out with the ones after them: the first of a quiet
spell goes at once (at the end of the reactor turn that published it), later ones at
most this much after the previous write. An event never waits much longer than this
for a reactor turn to end: every ``OVERDUE_CHECK`` events published during one, the
frames go at once if the oldest has waited ``FLUSH_INTERVAL``."""
OVERDUE_CHECK: Final = 8
"""Events published between two looks at the clock while a flush is waiting (a look
costs about a microsecond; 8 events of the full path take about 0.4 ms)."""


_DEFAULTS: Final = json_bytes(DEFAULTS)


def text_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked WebSocket text frame (RFC 6455 5.2), as a server
    sends it: the same bytes for every client, so an event is framed once."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


class SnapshotPages:
    """The snapshot of one client: the names to send, and the pages built from them."""

    def __init__(self, views: HostViews, names: list[str], page_size: int,
                 compact: bool = False) -> None:
        self.views = views
        self.names = names
        self.page_size = page_size
        self.compact = compact
        """Host objects without their fields at DEFAULTS, which the first page carries."""
        self.next = 0

    @property
    def done(self) -> bool:
        return self.next >= len(self.names)

    def pages(self) -> Iterator[bytes]:
        """Each page as the registry has it now; hosts removed meanwhile are skipped."""
        first = True
        while first or not self.done:
            parts: list[bytes] = []
            size = 0
            while not self.done:
                host = self.views.registry.get(self.names[self.next])
                if host is None:
                    self.next += 1
                    continue
                part = self.views.json_bytes(host, compact=self.compact)
                if parts and size + len(part) + 1 > self.page_size:
                    break
                parts.append(part)
                size += len(part) + 1
                self.next += 1
            head = (f'{{"type":"snapshot","total":{len(self.names)},'.encode() if first
                    else b'{"type":"snapshot.more",')
            if first and self.compact:
                head += b'"defaults":' + _DEFAULTS + b","
            more = b"true" if not self.done else b"false"
            yield head + b'"more":' + more + b',"hosts":[' + b",".join(parts) + b"]}"
            first = False


class EventHub:
    """Fans events out to the connected feed clients."""

    def __init__(self, registry: Registry, max_backlog: int = 4 * 1024 * 1024, *,
                 alerts: ThresholdEngine | None = None, clock: IReactorTime | None = None,
                 page_size: int = SNAPSHOT_PAGE, views: HostViews | None = None) -> None:
        self.registry = registry
        self.views = views or HostViews(registry, alerts)
        """The one maker of host objects the API uses too (its snapshot shows the same)."""
        self.max_backlog = max_backlog
        self.clock = clock
        """Paces snapshot pages; None sends them all at once (small in-memory set-ups)."""
        self.page_size = page_size
        self.clients: set[FeedProtocol] = set()
        self.sent = 0
        self.dropped_clients = 0
        self.snapshot_pages = 0
        self._frames: list[tuple[str, bytes]] = []
        """Events waiting for the next flush: (host, frame)."""
        self._flush_call: IDelayedCall | None = None
        self._last_flush = float("-inf")
        self._first_waiting = float("-inf")
        """When the oldest frame waiting for the flush was published."""

    def snapshot(self, viewer: Viewer | None = None, compact: bool = False) -> SnapshotPages:
        """The pages of every host ``viewer`` may see (None: all): problems first, as
        /live shows them by default (:meth:`HostViews.problems_first`), then by name;
        ``compact``: the host objects without their fields at ``DEFAULTS``."""
        names = self.registry.names() if viewer is None else viewer.visible(
            self.registry.names(), self.registry.hosts.__contains__)
        return SnapshotPages(self.views, self.views.problems_first(names), self.page_size,
                             compact)

    def join(self, client: FeedProtocol) -> None:
        """Events caused before the join go to the clients before it; the snapshot has them."""
        if self._frames:
            self.flush()
        self.clients.add(client)
        client.snapshot = self.snapshot(client.viewer, client.compact).pages()
        self._pump(client)

    def _pump(self, client: FeedProtocol) -> None:
        """Send the client's next snapshot pages while it keeps up; come back later."""
        client.pump_call = None
        if self._frames:
            self.flush()  # the events before a page go before it
        pages = client.snapshot
        if pages is None or client not in self.clients:
            return
        budget = PAGES_PER_TURN if self.clock is not None else None
        drained = client.pump_backlog - client.backlog()
        while budget is None or budget > 0:
            if self.clock is not None and client.backlog() > SNAPSHOT_LOW_WATER:
                break
            page = next(pages, None)
            if page is None:
                client.snapshot = None
                return
            client.send(page)
            self.snapshot_pages += 1
            if budget is not None:
                budget -= 1
        assert self.clock is not None
        client.pump_backlog = backlog = client.backlog()
        # Again at once while the client keeps up: under the low water, or taking at
        # least a page between turns (a connection writes 128 KiB a reactor turn, so a
        # fast reader is behind by a turn, not stalled). A client that takes less is
        # looked at again after SNAPSHOT_WAIT, so a slow one costs no busy loop.
        delay = 0.0 if backlog <= SNAPSHOT_LOW_WATER or drained >= self.page_size \
            else SNAPSHOT_WAIT
        client.pump_call = self.clock.callLater(delay, self._pump, client)

    def session_ended(self, session: Session) -> None:
        """Close the feeds opened with a session that was logged out, expired or revoked."""
        for client in list(self.clients):
            if client.viewer is not None and client.viewer.session == session.key:
                self.leave(client)
                client.sendClose(code=4001, reason="session ended")

    def leave(self, client: FeedProtocol) -> None:
        self.clients.discard(client)
        if not self.clients and self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
            self._flush_call = None
            self._frames.clear()
        client.snapshot = None
        if client.pump_call is not None and client.pump_call.active():
            client.pump_call.cancel()
        client.pump_call = None

    def publish(self, event: Event) -> None:
        """Frame ``event`` once for the next flush (at once without a clock)."""
        if not self.clients:
            return
        payload = event.to_bytes()
        if len(payload) > MAX_FEED_MESSAGE:
            payload = json_bytes({"type": event.kind, "host": event.host, "ts": event.ts,
                                  "omitted": len(payload)})
        frames = self._frames
        frames.append((event.host, text_frame(payload)))
        clock = self.clock
        if clock is None:
            self.flush()
        elif self._flush_call is None:
            now = clock.seconds()
            self._first_waiting = now
            wait = self._last_flush + FLUSH_INTERVAL - now
            self._flush_call = clock.callLater(max(0.0, wait), self.flush)
        elif len(frames) % OVERDUE_CHECK == 0 \
                and clock.seconds() - self._first_waiting >= FLUSH_INTERVAL:
            # A long reactor turn (a backlog of datagrams read in one go) would hold the
            # flush back until it ends: the frames go now, during the turn.
            self.flush()

    def flush(self) -> None:
        """Write the waiting frames: to each client, those of the hosts it sees, joined."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        frames, self._frames = self._frames, []
        if self.clock is not None:
            self._last_flush = self.clock.seconds()
        if not frames:
            return
        everything = b"".join(frame for _, frame in frames)
        for client in list(self.clients):
            if client.backlog() > self.max_backlog:
                self._drop(client)
                continue
            viewer = client.viewer
            if viewer is None or viewer.admin:
                chunk, count = everything, len(frames)
            else:
                seen = [frame for host, frame in frames if viewer.sees(host)]
                chunk, count = b"".join(seen), len(seen)
            if count:
                client.write_frames(chunk)
                self.sent += count

    def _drop(self, client: FeedProtocol) -> None:
        self.dropped_clients += 1
        size = client.backlog()
        self.leave(client)
        log.warn("websocket: dropping {peer}: {size} bytes unsent", peer=client.peer, size=size)
        client.dropConnection(abort=True)

    def to_json(self) -> dict[str, Any]:
        return {"clients": len(self.clients), "sent": self.sent,
                "dropped_clients": self.dropped_clients, "snapshot_pages": self.snapshot_pages}


class FeedProtocol(WebSocketServerProtocol):
    """One feed subscriber; incoming messages are ignored."""

    factory: FeedFactory
    viewer: Viewer | None = None
    """Who is watching; None when the factory checks no one (all events)."""
    snapshot: Iterator[bytes] | None = None
    """The snapshot pages still to send."""
    compact: bool = False
    """Whether the client asked for a compact snapshot (``?compact=1``)."""
    pump_call: IDelayedCall | None = None
    pump_backlog: int = 0
    """The backlog when the last snapshot turn ended: what it took since tells a client
    that keeps up from one that does not."""
    _connection: tcp.Connection | bool | None = False
    """:meth:`connection`, once found (False: not looked for yet)."""

    def onConnect(  # type: ignore[override]  # Autobahn takes a Deferred too (txaio)
            self, request: ConnectionRequest) -> Deferred[None] | None:
        self.compact = request.params.get("compact") == ["1"]
        auth = self.factory.auth
        if auth is None:
            return None
        reading = auth.feed_read_through(request.headers, request.params)
        if reading is not None:  # a session started on another server sharing the store
            return reading.addBoth(lambda _: self._authorize(request))
        self._authorize(request)
        return None

    def _authorize(self, request: ConnectionRequest) -> None:
        auth = self.factory.auth
        assert auth is not None
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

    def send(self, payload: bytes) -> None:
        """Send one text message of up to MAX_FEED_MESSAGE bytes.

        Autobahn applies ``maxMessagePayloadSize`` to outgoing messages too; it
        is kept small for what clients send and lifted for the length of this call.
        """
        limit: int = self.maxMessagePayloadSize  # type: ignore[has-type]
        self.maxMessagePayloadSize = MAX_FEED_MESSAGE
        try:
            self.sendMessage(payload)
        finally:
            self.maxMessagePayloadSize = limit

    def write_frames(self, frames: bytes) -> None:
        """Write whole frames made by :func:`text_frame` while the feed is open.

        On a plain TCP connection with nothing waiting in its buffer the bytes go
        to the socket now, in this call: a flush reaches every client in the
        reactor turn that makes it, without a writer registered and removed again
        per client (two ``epoll_ctl`` and a ``doWrite`` a flush each). What the
        kernel does not take, or any write on a TLS or otherwise wrapped
        connection, goes through the transport's buffer as usual, so the order
        of the bytes never changes and a lost connection is found the usual way.
        """
        if self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        connection = self.connection()
        if connection is not None and not connection.dataBuffer \
                and not connection._tempDataLen and connection.connected \
                and not connection.disconnecting and not connection._writeDisconnected:
            try:
                written = connection.socket.send(frames)
            except OSError:  # the kernel's buffer full, or the connection failed: the
                written = 0  # transport's own write finds out, as for any write
            if written == len(frames):
                return
            frames = frames[written:]
        self.transport.write(frames)  # type: ignore[union-attr]

    def backlog(self) -> int:
        """Bytes written but not yet taken by the kernel (:func:`unsent_bytes`; read
        straight from a plain TCP connection, as every flush asks it of every client)."""
        connection = self.connection()
        if connection is None:
            return unsent_bytes(self.transport)
        return len(connection.dataBuffer) - connection.offset + connection._tempDataLen

    def connection(self) -> tcp.Connection | None:
        """:func:`raw_connection` of this feed's transport, found once (it is asked at
        every flush: through the wrapper each attribute costs a failed lookup first)."""
        if self._connection is False:
            self._connection = raw_connection(self.transport)
        return self._connection  # type: ignore[return-value]


def raw_connection(transport: Any) -> tcp.Connection | None:
    """The TCP connection under ``transport`` when the bytes written to the one are the
    bytes sent on the other: the connection itself, or it under the plain
    :class:`ProtocolWrapper` that counts connections (``ConnectionLimit``). None
    under TLS or any other wrapper, whose writes must go through it."""
    if type(transport) is ProtocolWrapper:
        transport = transport.transport
    if isinstance(transport, tcp.Connection) and not transport.TLS:
        return transport
    return None


def unsent_bytes(transport: Any) -> int:
    """Bytes a connection's transport holds that the kernel has not taken yet: what is
    left of the buffer being written (``dataBuffer`` from ``offset``; a write of up to
    128 KiB a turn moves the offset, not the buffer) and the writes queued behind it."""
    buffer = getattr(transport, "dataBuffer", b"")
    size = len(buffer) if isinstance(buffer, bytes | bytearray) else 0
    offset = getattr(transport, "offset", 0)
    queued = getattr(transport, "_tempDataLen", 0)
    return max(0, size - (offset if isinstance(offset, int) else 0)) + \
        (queued if isinstance(queued, int) else 0)


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
