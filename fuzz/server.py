"""The whole server as a fuzz target: datagram sequences into the real ``makeService`` tree.

:class:`WholeServer` starts what ``twistd heartbeat`` starts (every part built and
subscribed by ``heartbeat.server.compose``) on a memory reactor, blocking workers inline,
with every optional part on: signing keys (a shared one and one bound to a host that must
sign), e-mail, Pushover, Mattermost and Signal notifications (their peers fakes on the
memory reactor that answer at once: ``PEERS``), dynamic DNS (its ``nsupdate`` a fake child
that succeeds), threshold rules, and a WebSocket client listening throughout.
:meth:`WholeServer.run` feeds it one input, a sequence of steps (:func:`steps`), then
checks what must hold whatever was sent:

- nothing was logged at error level or above (a notification given up included), and
  no bus subscriber failed;
- the store committed with no failure counted, and its rows read back (``load_hosts``)
  as the hosts the registry holds, each field of each host as the registry has it (what
  a restart would find: ``tests.memserver.stored_fields``), and ``plugin_data`` holds a
  row for exactly the plugins the registry holds of each host, at the same times;
- the journal wrote every line, and every new line is strict UTF-8 JSON;
- every feed message sent so far is strict UTF-8 JSON, and a new feed client is taken
  and sent a snapshot naming every host;
- ``GET /api/0/hosts`` answers 200 and strict JSON listing every host; every 16th time
  also each host's page and plugins, the status, the messages and the alerts;
- every reply datagram is one the agent reads (``decode_reply``).

"Strict" here means what a strict reader (serde_json, Go) takes: UTF-8, no ``NaN``, no
lone surrogate escape, not even in the shadowed value of a repeated key. Then every host is
removed through the API, so each input starts from an empty fleet and a finding
reproduces from its input alone. A broken invariant raises :class:`Escape`.

The input: chunks split on byte 0x1E (ASCII RS, which JSON text never holds), at most 32.

- ``T<seconds>``: the clock moves on (up to 15 minutes): hosts fall DOWN, reminders fire
  (every 5 minutes), notifications are sent.
- ``C<host>\\0<body>``: ``POST /api/0/hosts/<host>/commands`` with that JSON body.
- ``R<object>``: a RES answering the last CMD/UPD the server sent, the object's fields
  added to ``{"ID": "RES", "name": ..., "cmd_id": ...}``.
- anything else is a datagram, framed by its leading bytes: ``4`` or ``6`` (from a
  second IPv4 or from an IPv6 source), then ``S`` (signed with the key named by the
  next byte: ``1`` the host-bound key, else the fleet key), then ``Z`` (zlib'd).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from autobahn import util as autobahn_util
from autobahn.websocket import protocol as websocket_protocol
from tests.memserver import InProcessServer, MemoryServerReactor, stored_fields
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ProcessDone
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from txaio.tx import config as txaio_config
from zope.interface import implementer

from fuzz.invariants import Escape, check
from heartbeat.config.loader import parse_config
from heartbeat.config.server import ServerConfig
from heartbeat.events import Event
from heartbeat.protocol import DecodeError, decode_reply, next_seq, seal
from heartbeat.server.compose import Seams
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.settings import ServerSettings
from heartbeat.server.store import load_hosts
from heartbeat.server.tables import PLUGIN_DATA
from heartbeat.text import may_break_policy, text_problem

__all__ = ["SEPARATOR", "Step", "WholeServer", "steps", "strict_json", "whole_server"]

SEPARATOR: Final = b"\x1e"
SURVEY: Final = ("/api/0/status", "/api/0/messages?limit=20", "/api/0/alerts")
"""Read every ``SURVEY_EVERY``-th time datagrams were accepted, with each host's page and
plugins, and when the server is closed: the costlier reads, kept off most inputs so the
fuzzer gets through 10^6 of them."""
SURVEY_EVERY: Final = 16
MAX_STEPS: Final = 32
MAX_PAUSE: Final = 900
KEYS: Final = {"fleet": "fuzz-fleet-key-0123456789abcdef", "db1": "fuzz-db1-key-0123456789abcdefgh"}
SOURCES: Final = {b"": ("192.0.2.1", 40000), b"4": ("198.51.100.7", 40001),
                  b"6": ("2001:db8::7", 40002, 0, 0)}

CONFIG: Final = f"""
hb_host: 127.0.0.1
hbd_host: 127.0.0.1
ws_port: 50005
store_flush_interval: 0.5
journal_flush_interval: 0.5
monitor_interval: 1.0
grace: 2
interval: 5
keys: {json.dumps(KEYS)}
hosts:
  db1: {{key: db1, require_signed: true}}
  web1: {{interval: 10, tags: [web]}}
pushsrv: all
email: {{smtp_host: 127.0.0.1, smtp_port: 2525, tls: none, from_addr: hb@example.com,
         to: [ops@example.com]}}
pushover: {{token: app-token, user: group-key, url: "http://127.0.0.1:2526/1/messages.json"}}
mattermost: {{url: "http://127.0.0.1:2527/hooks/x"}}
signal: {{url: "http://127.0.0.1:2528", number: "+15550000000", recipients: ["+15550000001"]}}
dyndomains: [dyn.example.com]
nsupdate_bin: {sys.executable}
journal_max_size: 4194304
journal_max_backups: 1
threshold_renotify_interval: 300
notify_retries: 0
notify_timeout: 5
notify_burst: 3
thresholds:
  cpu_monitor:
    cpu_percent: {{warning: 80, critical: 90, display: "{{value:.1f}}% on {{host}}"}}
  odd:
    "*": {{warning: 1, critical: 2, operator: ">="}}
  rtt:
    "*": {{warning: 100, critical: 500}}
"""


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def strict_json(data: bytes, what: str) -> Any:
    """``data`` as a strict reader takes it (see the module), else an :class:`Escape`.

    The walk for lone surrogates (shadowed values too) runs only when the text holds an
    escape that could decode to one (``may_break_policy``): valid UTF-8 holds none.
    """
    shadowed: list[Any] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        value = dict(pairs)
        if len(value) != len(pairs):
            shadowed.append([v for _, v in pairs])
        return value

    walk = may_break_policy(data)
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_no_constant,
                           object_pairs_hook=pairs_hook if walk else None)
    except (UnicodeDecodeError, ValueError) as e:
        raise Escape(f"{what} is not strict UTF-8 JSON ({e}): {data[:300]!r}") from None
    if walk:
        problem = text_problem([value, shadowed])
        check(problem is None, f"{what} holds {problem}: {data[:300]!r}")
    return value


@dataclass(frozen=True)
class Step:
    """One step of an input: a datagram, a pause, a command queued, or a RES."""

    kind: str  # "datagram", "pause", "command", "result"
    data: bytes = b""
    source: tuple[Any, ...] = SOURCES[b""]
    seconds: float = 0.0
    key_id: str | None = None
    compress: bool = False
    host: str = ""


def steps(data: bytes) -> Iterator[Step]:
    """The steps of one input (see the module for the format)."""
    for chunk in data.split(SEPARATOR)[:MAX_STEPS]:
        if chunk[:1] == b"T" and chunk[1:].isdigit() and len(chunk) < 8:
            yield Step("pause", seconds=float(min(int(chunk[1:]), MAX_PAUSE)))
        elif chunk[:1] == b"C" and b"\0" in chunk:
            host, _, body = chunk[1:].partition(b"\0")
            yield Step("command", body, host=host.decode("ascii", "replace"))
        elif chunk[:1] == b"R":
            yield Step("result", chunk[1:])
        else:
            yield _datagram(chunk)


def _datagram(chunk: bytes) -> Step:
    """A datagram step: its source, signing key and compression from its leading bytes."""
    source = SOURCES[b""]
    if chunk[:1] in (b"4", b"6"):
        source, chunk = SOURCES[chunk[:1]], chunk[1:]
    key_id = None
    if chunk[:1] == b"S":
        key_id, chunk = ("db1", chunk[2:]) if chunk[1:2] == b"1" else ("fleet", chunk[1:])
    compress = chunk[:1] == b"Z"
    return Step("datagram", chunk[1:] if compress else chunk, source, key_id=key_id,
                compress=compress)


class _Peer:
    """A notification service: bytes in, its answers out (the client's end: :class:`_Wire`)."""

    GREETING = b""

    def __init__(self) -> None:
        self.buffer = b""
        self.closed = False

    def received(self, data: bytes) -> bytes:
        self.buffer += data
        answers = []
        while (answer := self.answer()) is not None:
            answers.append(answer)
        return b"".join(answers)

    def answer(self) -> bytes | None:
        """The answer to the next whole command in ``buffer`` (taken off), or None."""
        raise NotImplementedError


class _SmtpPeer(_Peer):
    """An SMTP server that takes every message at once (the e-mail channel's peer)."""

    GREETING = b"220 fuzz ESMTP\r\n"
    data = False

    def answer(self) -> bytes | None:
        if self.data:
            end = self.buffer.find(b"\r\n.\r\n")
            if end < 0:
                return None
            self.buffer, self.data = self.buffer[end + 5:], False
            return b"250 queued\r\n"
        line, found, self.buffer = self.buffer.partition(b"\r\n")
        if not found:
            self.buffer = line
            return None
        verb = line[:4].upper()
        if verb == b"DATA":
            self.data = True
            return b"354 go ahead\r\n"
        if verb == b"QUIT":
            self.closed = True
            return b"221 bye\r\n"
        return b"250 ok\r\n"


class _HttpPeer(_Peer):
    """A web service that answers every request 200 with an empty JSON object (the
    Pushover, Mattermost and Signal channels' peer), over one kept-alive connection."""

    ANSWER: Final = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2\r\n\r\n{}")

    def answer(self) -> bytes | None:
        head, found, rest = self.buffer.partition(b"\r\n\r\n")
        if not found:
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(rest) < length:
            return None
        self.buffer = rest[length:]
        return self.ANSWER


PEERS: Final = {2525: _SmtpPeer, 2526: _HttpPeer, 2527: _HttpPeer, 2528: _HttpPeer}
"""The notification peers of ``CONFIG`` by port: they answer at once, as the services
would on a good day (the real clients, HTTP pool and retry lanes all run)."""


class _Connector:
    """What ``connectTCP`` returns for a connection to a peer."""

    def __init__(self, destination: IPv4Address) -> None:
        self.destination = destination

    def getDestination(self) -> IPv4Address:
        return self.destination

    def stopConnecting(self) -> None:
        pass

    def disconnect(self) -> None:
        pass

    def connect(self) -> None:
        pass


class _Wire:
    """A connection from a client on the memory reactor to a fake peer: what either side
    writes reaches the other on the reactor's next turn, as a socket would deliver it."""

    disconnecting = False

    def __init__(self, reactor: Any, connector: Any, factory: Any, peer: _Peer) -> None:
        self.reactor = reactor
        self.connector = connector
        self.factory = factory
        self.peer = peer
        self.outgoing: list[bytes] = []
        self.incoming = peer.GREETING
        self.turn: Any = None
        self.lost = False
        self.producer: Any = None
        self.protocol = factory.buildProtocol(connector.getDestination())
        if self.protocol is None:
            self.lost = True
            return
        self.protocol.makeConnection(self)
        self.schedule()

    def schedule(self) -> None:
        if self.turn is None and not self.lost:
            self.turn = self.reactor.soon(self.deliver)

    def deliver(self) -> None:
        self.turn = None
        if self.producer is not None:
            self.producer.resumeProducing()
        if self.outgoing:
            data, self.outgoing = b"".join(self.outgoing), []
            self.incoming += self.peer.received(data)
        if self.incoming:
            data, self.incoming = self.incoming, b""
            self.protocol.dataReceived(data)
        if self.peer.closed or self.disconnecting:
            self.lose()
        elif self.incoming or self.outgoing or self.producer is not None:
            self.schedule()

    def lose(self) -> None:
        if self.lost:
            return
        self.lost = True
        reason = Failure(ConnectionDone("the peer closed"))
        self.protocol.connectionLost(reason)
        self.factory.clientConnectionLost(self.connector, reason)
        self.factory.doStop()

    # ITCPTransport, as much as the clients use
    def write(self, data: bytes) -> None:
        if not self.lost and not self.disconnecting:
            self.outgoing.append(data)
            self.schedule()

    def writeSequence(self, data: list[bytes]) -> None:
        for chunk in data:
            self.write(chunk)

    def loseConnection(self) -> None:
        self.disconnecting = True
        self.schedule()

    abortConnection = stopProducing = loseConnection

    def getPeer(self) -> IPv4Address:
        return self.connector.getDestination()

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 43000)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """A pull producer (an SMTP message) is asked for more at every turn."""
        self.producer = None if streaming else producer
        self.schedule()

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def setTcpKeepAlive(self, enabled: bool) -> None:
        pass


class _Soon:
    """Something to do before the clock moves on (see :meth:`_FuzzReactor.soon`)."""

    def __init__(self, call: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.call = call
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _FuzzReactor(MemoryServerReactor):  # type: ignore[misc]
    """A memory reactor whose children (nsupdate) take their input and succeed at once,
    and whose notification peers (``PEERS``) answer at once.

    The clock jumps (up to 10 s a step, so a 1-second timer fires once per jump, not ten
    times), but the traffic with a peer is not held up by a jump: it all happens before
    the clock moves and after each timer that fires, as a reactor handles ready sockets
    between its timers. Otherwise a send made just before a jump would meet its timeout
    (due 5 s later) before its peer's second answer (due "now", after the jump).
    """

    def __init__(self) -> None:
        super().__init__()
        self.ready: deque[_Soon] = deque()

    def soon(self, call: Callable[..., object], *args: Any) -> _Soon:
        """``call(*args)`` before the clock moves on or any other timer fires."""
        entry = _Soon(call, args)
        self.ready.append(entry)
        return entry

    def settle(self) -> None:
        while self.ready:
            entry = self.ready.popleft()
            if not entry.cancelled:
                entry.call(*entry.args)

    def advance(self, amount: float) -> None:
        """``Clock.advance``, settling the traffic with the peers before each timer."""
        self.settle()
        self.rightNow += amount
        self._sortCalls()
        while self.calls and self.calls[0].getTime() <= self.rightNow:
            call = self.calls.pop(0)
            call.called = 1
            call.func(*call.args, **call.kw)
            self.settle()
            self._sortCalls()

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30,
                   bindAddress: Any = None) -> Any:
        peer = PEERS.get(port)
        if peer is None:
            return super().connectTCP(host, port, factory, timeout, bindAddress)
        connector = _Connector(IPv4Address("TCP", host, port))
        factory.doStart()
        factory.startedConnecting(connector)
        self.soon(_Wire, self, connector, factory, peer())
        return connector

    def spawnProcess(self, protocol: Any, executable: str, args: list[str],
                     *_: Any, **__: Any) -> _Child:
        child = _Child()
        protocol.makeConnection(child)
        self.callLater(0, protocol.processEnded, Failure(ProcessDone(0)))
        return child


class _Child:
    pid = 4242

    def write(self, data: bytes) -> None:
        pass

    def closeStdin(self) -> None:
        pass

    def signalProcess(self, signal: str) -> None:
        pass


@implementer(ILogObserver)
class _Errors:
    """Log events at error level or above, formatted with their tracebacks."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_level", LogLevel.info) < LogLevel.error:
            return
        failure = event.get("log_failure")
        self.found.append(formatEvent(event) + ("\n" + failure.getTraceback() if failure else ""))

    def take(self) -> list[str]:
        found, self.found = self.found, []
        return found


def _unsealed(packet: bytes) -> bytes:
    """A reply's payload: a signed one's past its envelope (the agent checks the MAC)."""
    return packet[5 + packet[4] + 8 + 32:] if packet[:4] == b"HBS1" else packet


class WholeServer:
    """The real service tree, started once and fed input after input (see the module)."""

    def __init__(self, directory: Path, survey_every: int = SURVEY_EVERY) -> None:
        """``survey_every``: how often the costlier reads run (1: after every input)."""
        self.survey_every = survey_every
        text = (CONFIG + f"state_dir: {directory / 'state'}\n"
                f"journal_dir: {directory / 'journal'}\n")
        settings = ServerSettings.from_config(parse_config(ServerConfig, text, "fuzz.yaml"),
                                              "fuzz.yaml", machine_zone="UTC")
        self.errors = _Errors()
        globalLogPublisher.addObserver(self.errors)
        reactor = _FuzzReactor()
        # The WebSocket layer's timers (pings) run on txaio's loop: the memory reactor here,
        # as the running reactor is in twistd. close() gives txaio its loop back.
        self._txaio_loop, txaio_config.loop = txaio_config.loop, reactor
        # Autobahn pretty-prints its settings for a debug line at every connection, eagerly
        # (a fifth of an input's time, two connections each): plain repr will do here.
        self._pformat, websocket_protocol.pformat = websocket_protocol.pformat, repr
        # It colours the arguments of its debug lines eagerly too (click): plain will do.
        self._click, autobahn_util._HAS_CLICK = autobahn_util._HAS_CLICK, False
        # The HTTP channels' request bodies are written by twisted's global cooperator,
        # which runs on the global reactor: here, the memory reactor.
        self._cooperator, task._theCooperator = task._theCooperator, task.Cooperator(
            scheduler=reactor.soon)
        self.server = InProcessServer(directory, settings=settings, reactor=reactor,
                                      seams=Seams(worker=lambda _: ImmediateWorker(),
                                                  on_error=self._subscriber_failed))
        self.parts = self.server.parts
        self.journal_path = Path(settings.config.journal_dir) / settings.config.journal_file
        self.journal_read = 0
        self.seq = 0
        self.last_command: dict[str, Any] | None = None
        self.listener, self.listener_pump = self.server.feed(raw=True)
        self.surveys = 0

    def close(self) -> None:
        """Stop the tree as twistd does (every check passing on the way), undo the hooks."""
        try:
            for path in SURVEY:
                self.check_get(path)
            for _, pump in list(self.server.feeds):
                self.server.close_feed(pump)
            stopped: list[Any] = []
            self.server.service.stopService().addBoth(stopped.append)
            for _ in range(120):  # notifications in flight finish
                if stopped:
                    break
                self.server.reactor.advance(1.0)
            check(stopped == [None], f"the tree did not stop cleanly: {stopped}")
            found = self.errors.take()
            check(not found, "logged an error while stopping:\n" + "\n".join(found))
        finally:
            globalLogPublisher.removeObserver(self.errors)
            txaio_config.loop = self._txaio_loop
            websocket_protocol.pformat = self._pformat
            autobahn_util._HAS_CLICK = self._click
            task._theCooperator = self._cooperator

    def _subscriber_failed(self, subscriber: Any, event: Event, error: BaseException) -> None:
        self.errors.found.append(f"bus: {getattr(subscriber, '__qualname__', subscriber)} "
                                 f"failed on {event.kind} of {event.host!r}: {error!r}")

    def run(self, data: bytes) -> None:
        """One input: its steps, a second for every timer to act on them, checks, a reset.

        When no datagram was accepted the fleet is as empty as after the last reset, so
        the checks that read the hosts back (API, feed) would see what they saw then.
        """
        stats = self.parts.ingest.stats
        before = stats.accepted
        self.last_command = None
        for step in steps(data):
            self.take(step)
        self.advance(1.0)  # past the store's and the journal's flush periods
        try:
            self.check(everything=stats.accepted != before)
        finally:
            self.reset()

    def advance(self, seconds: float) -> None:
        """Move the clock on, at most 10 s at a time, the listening feed client answering
        the server's pings between steps as a browser would."""
        while seconds > 0:
            self.server.reactor.advance(min(seconds, 10.0))
            self.listener_pump.flush()
            seconds -= 10.0

    def take(self, step: Step) -> None:
        if step.kind == "pause":
            self.advance(step.seconds)
        elif step.kind == "command":
            self.server.request("POST", f"/api/0/hosts/{quote(step.host, safe='')}/commands",
                                step.data)
        elif step.kind == "result":
            if self.last_command is None:
                return
            try:
                fields = json.loads(step.data)
            except (UnicodeDecodeError, ValueError, RecursionError):
                fields = {"output": step.data.decode("utf-8", "replace")}
            if not isinstance(fields, dict):
                fields = {"output": fields}
            self.send({**fields, **self.last_command})
        else:
            self.send(step.data, step)

    def send(self, data: bytes | dict[str, Any], step: Step = Step("datagram")) -> None:
        payload = data if isinstance(data, bytes) else json.dumps(data).encode()
        if step.compress:
            payload = zlib.compress(payload)
        if step.key_id is not None:
            self.seq = next_seq(self.seq, self.server.reactor.seconds())
            payload = seal(payload, step.key_id, KEYS[step.key_id].encode(), self.seq)
        self.server.send(payload, step.source)
        for packet, _ in self.server.udp_transport.written:
            try:
                reply = decode_reply(_unsealed(packet))
            except DecodeError as e:
                raise Escape(f"a reply the agent cannot read ({e}): {packet[:200]!r}") from None
            if reply["ID"] in ("CMD", "UPD") and isinstance(data, bytes):
                self.last_command = {"ID": "RES", "name": self._sender(data, step),
                                     "cmd_id": reply["cmd_id"]}
        self.server.udp_transport.written.clear()

    def _sender(self, data: bytes, step: Step) -> str:
        host = self.parts.registry.hosts
        return max(host.values(), key=lambda h: h.last_seen or 0).name if host else ""

    # Invariants
    def check(self, everything: bool) -> None:
        found = self.errors.take()
        check(not found, "logged an error:\n" + "\n".join(found))
        names = {host.name for host in self.parts.registry}
        store = self.parts.store
        check(store.failures == 0, f"{store.failures} store batches failed")
        store.flush()  # a timer may have changed hosts after the last flush of the second
        stored = {host.name: stored_fields(host) for host in store.load(load_hosts)}
        check(set(stored) == names, f"stored hosts {sorted(stored)} != {sorted(names)}")
        changed = sorted(host.name for host in self.parts.registry
                         if stored[host.name] != stored_fields(host))
        check(not changed, f"stored hosts differ from the registry's: {changed}")
        latest = {(host, plugin, ts) for host, plugin, ts, _ in
                  store.load(lambda tables: tables.rows(PLUGIN_DATA))}
        held = {(host.name, plugin, sample.ts) for host in self.parts.registry
                for plugin, sample in host.plugins.items()}
        check(latest == held, f"plugin_data (host, plugin, ts) differ from the registry's "
              f"plugins: stored only {sorted(latest - held)[:5]}, held only "
              f"{sorted(held - latest)[:5]}")
        self.check_journal()
        if everything:
            self.check_feed(names)
            self.check_api(names)

    def check_journal(self) -> None:
        journal = self.parts.journal
        assert journal is not None
        check((journal.write_failures, journal.dropped) == (0, 0),
               f"journal: {journal.write_failures} failed writes, {journal.dropped} dropped")
        size = self.journal_path.stat().st_size
        parts = []
        if size < self.journal_read:  # rotated: the rest of the old file, then the new one
            parts.append(journal.journal.backup(1).read_bytes()[self.journal_read:])
            self.journal_read = 0
        with open(self.journal_path, "rb") as f:
            f.seek(self.journal_read)
            parts.append(f.read())
            self.journal_read = f.tell()
        for line in b"".join(parts).splitlines():
            strict_json(line, "a journal line")

    def check_feed(self, names: set[str]) -> None:
        self.listener_pump.flush()
        for payload in self.listener:
            strict_json(payload, "a feed message")
        del self.listener[:]  # checked, dropped: kept, they grew by about 4 KB an input
        received, pump = self.server.feed(raw=True)
        seen: set[str] = set()
        for payload in received:
            message = strict_json(payload, "a message to a new feed client")
            if message["type"] not in ("snapshot", "snapshot.more"):
                break
            seen |= {host["name"] for host in message["hosts"]}
        check(received != [], "a new feed client was sent nothing")
        check(seen == names, f"the snapshot names {sorted(seen)}, not {sorted(names)}")
        self.server.close_feed(pump)

    def check_api(self, names: set[str]) -> None:
        """The host list; every ``survey_every``-th time (and at the end) each host's page
        and plugins, the status, the messages and the alerts too."""
        status, body = self.server.request("GET", "/api/0/hosts")
        check(status == 200, f"GET /api/0/hosts: {status} {body[:300]!r}")
        listed = {host["name"] for host in strict_json(body, "GET /api/0/hosts")["hosts"]}
        check(listed == names, f"GET /api/0/hosts lists {sorted(listed)}, not {sorted(names)}")
        self.surveys += 1
        if self.surveys % self.survey_every == 1 or self.survey_every == 1:
            for path in (*SURVEY, *(p for name in sorted(names) for p in (
                    f"/api/0/hosts/{name}", f"/api/0/hosts/{name}/plugins"))):
                self.check_get(path)

    def check_get(self, path: str) -> None:
        status, body = self.server.request("GET", path)
        check(status == 200, f"GET {path}: {status} {body[:300]!r}")
        strict_json(body, f"GET {path}")

    def reset(self) -> None:
        """Remove every host through the API; the store and the journal catch up."""
        hosts = [host.name for host in self.parts.registry]
        for name in hosts:
            status, body = self.server.request("DELETE", f"/api/0/hosts/{name}")
            check(status == 200, f"DELETE /api/0/hosts/{name}: {status} {body[:200]!r}")
        if hosts:
            self.parts.store.flush()
        check(not self.server.reactor.tcpClients,
              f"connected to what is not a peer: {self.server.reactor.tcpClients}")


_SERVER: list[WholeServer] = []


def whole_server(data: bytes) -> None:
    """The fuzz target: ``data`` through this process's one :class:`WholeServer`, whose
    state lives in ``$HEARTBEAT_FUZZ_WORK`` (fuzz/run.py removes it afterwards)."""
    if not _SERVER:
        work = os.environ.get("HEARTBEAT_FUZZ_WORK") or tempfile.mkdtemp(prefix="fuzz-server-")
        _SERVER.append(WholeServer(Path(work)))
    _SERVER[0].run(data)
