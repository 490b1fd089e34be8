"""The agent's UDP side: heartbeats, plugin data, ACK round trips and server requests.

Every server name is resolved to all its addresses and every message goes to
each of them. A send that fails is retried on every interval, forever for
IPv4; an IPv6 address that has never worked since start-up is dropped after
three heartbeats in a row whose HTB failed (a host without IPv6 routing stops trying).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

import heartbeat
from heartbeat.agent.batching import pack_plugins
from heartbeat.agent.keys import SigningKey
from heartbeat.protocol import DecodeError, decode_signed_reply, encode, next_seq

__all__ = [
    "IPV6_GIVE_UP",
    "Destination",
    "HeartbeatSender",
    "host_boot_time",
    "resolve_addresses",
    "thread_resolver",
]

log = Logger()
IPV6_GIVE_UP = 3
MAX_RTT_MS = 3_600_000.0

Address = tuple[int, str]  # (socket family, ip)
Resolver = Callable[[str, int], "Deferred[list[Address]]"]
RequestHandler = Callable[[dict[str, Any], Callable[[dict[str, Any]], None]], None]


def resolve_addresses(host: str, port: int) -> list[Address]:
    """Every IPv4 and IPv6 address of ``host`` (blocking: run it in a thread)."""
    seen: list[Address] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM):
        if family in (socket.AF_INET, socket.AF_INET6):
            address = (int(family), str(sockaddr[0]))
            if address not in seen:
                seen.append(address)
    return seen


def host_boot_time() -> float | None:
    """When this host booted (blocking: read once at start-up), for BOOT's ``boot_time``."""
    try:
        return float(psutil.boot_time())
    except (OSError, RuntimeError):
        return None


def thread_resolver(reactor: Any) -> Resolver:
    """:func:`resolve_addresses` on the reactor's thread pool."""
    def resolve(host: str, port: int) -> Deferred[list[Address]]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), resolve_addresses, host, port)
    return resolve


@dataclass
class Destination:
    """One address of one server, and how sending to it has gone."""

    server: str
    family: int
    ip: str
    worked: bool = False
    failures: int = 0
    failed_beats: int = 0
    """Heartbeats in a row whose HTB could not be sent here (BOOT, PLG do not count)."""
    rtt: float | None = None
    last_error: OSError | None = None

    @property
    def ipv6(self) -> bool:
        return self.family == socket.AF_INET6


@dataclass
class _Server:
    name: str
    resolved_at: float | None = None
    destinations: list[Destination] = field(default_factory=list)
    boot_sent: bool = False
    failing: bool = False
    resolving: bool = False


class _Listener(DatagramProtocol):
    noisy = False

    def __init__(self, sender: HeartbeatSender) -> None:
        self.sender = sender

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.sender.datagram_received(data, addr)


class HeartbeatSender(Service):
    """Owns the agent's UDP sockets; sends HTB/PLG/BOOT/SHUT/RES, reads ACK/CMD/UPD."""

    def __init__(
        self,
        servers: Sequence[str],
        port: int,
        name: str,
        interval: float,
        reactor: Any,
        *,
        resolve: Resolver,
        on_request: RequestHandler | None = None,
        max_datagram: int = 1400,
        batch_delay: float = 1.0,
        resolve_interval: float = 600.0,
        boot: bool = False,
        verbose: bool = False,
        on_boot: Callable[[], None] | None = None,
        key: SigningKey | None = None,
        boot_time: float | None = None,
    ) -> None:
        self.servers = [_Server(s) for s in servers]
        self.port = port
        self.host_name = name  # not ``name``: that is the Service's own name
        self.interval = interval
        self.reactor = reactor
        self.resolve = resolve
        self.on_request = on_request
        self.max_datagram = max_datagram
        self.batch_delay = batch_delay
        self.resolve_interval = resolve_interval
        self.boot = boot
        self.verbose = verbose
        self.on_boot = on_boot
        self.key = key
        self.boot_time = boot_time
        self.seq = 0
        self._signed_seq = 0
        self._server_seq: dict[str, int] = {}
        """Per server, the seq of its last signed reply taken (replays are refused)."""
        self.refused_replies = 0
        self.pending: dict[str, dict[str, Any]] = {}
        self.dropped: set[str] = set()
        self.sent = 0
        self.send_errors = 0
        self._flush_call: Any = None
        self._ports: dict[int, Any] = {}
        self._loop: LoopingCall | None = None

    # life cycle
    def startService(self) -> None:
        super().startService()
        # Replies signed before this process started cannot be for it: a replayed
        # CMD from an earlier run is refused.
        started = next_seq(0, self.reactor.seconds())
        self._server_seq = {server.name: started for server in self.servers}
        self._ports[socket.AF_INET] = self.reactor.listenUDP(0, _Listener(self),
                                                             interface="0.0.0.0")
        try:
            self._ports[socket.AF_INET6] = self.reactor.listenUDP(0, _Listener(self),
                                                                  interface="::")
        except CannotListenError as e:
            log.info("sender: no IPv6 socket ({error}); IPv6 addresses will fail", error=e)
        self._loop = LoopingCall(self._beat)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True).addErrback(
            lambda failure: log.failure("sender: the heartbeat schedule stopped", failure))

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self.flush()
        if self.boot:
            self.send({"ID": "SHUT"})
        stopping = [defer.maybeDeferred(port.stopListening) for port in self._ports.values()]
        self._ports.clear()
        return defer.gatherResults(stopping, consumeErrors=True)

    # heartbeats and resolution
    def _beat(self) -> Deferred[None] | None:
        # A name with addresses is looked up again in the background: a DNS outage must
        # not hold back heartbeats to the addresses it had. Only the first lookup waits.
        now = self.reactor.seconds()
        due = [s for s in self.servers if not s.resolving and (
            s.resolved_at is None or now - s.resolved_at >= self.resolve_interval)]
        first = [self._resolve(server) for server in due if not server.destinations]
        for server in due:
            if server.destinations:
                self._resolve(server)
        if not first:
            self._heartbeat()
            return None
        return defer.gatherResults(first, consumeErrors=True).addCallback(
            lambda _: self._heartbeat())

    def _resolve(self, server: _Server) -> Deferred[None]:
        def resolved(addresses: list[Address]) -> None:
            server.resolved_at = self.reactor.seconds()
            if server.failing:
                log.info("sender: {server} resolves again", server=server.name)
            server.failing = False
            known = {d.ip: d for d in server.destinations}
            server.destinations = [known.get(ip) or Destination(server.name, family, ip)
                                   for family, ip in addresses if ip not in self.dropped]
            if self.verbose:
                log.info("sender: {server} is {ips}", server=server.name,
                         ips=[d.ip for d in server.destinations])

        def failed(failure: Any) -> None:
            if not server.failing:
                log.warn("sender: cannot resolve {server}: {error}; retrying every interval",
                         server=server.name, error=failure.getErrorMessage())
            server.failing = True

        def done(result: None) -> None:
            server.resolving = False

        server.resolving = True
        try:
            started = self.resolve(server.name, self.port)
        except Exception:
            started = defer.fail()
        return started.addCallbacks(resolved, failed).addBoth(done)

    def _heartbeat(self) -> None:
        for server in self.servers:
            if self.boot and not server.boot_sent and server.destinations:
                server.boot_sent = True
                boot = {"ID": "BOOT"} if self.boot_time is None else \
                    {"ID": "BOOT", "boot_time": self.boot_time}
                self._send_to(server.destinations, self._message(boot))
                if self.on_boot is not None:
                    self.on_boot()
        self.seq += 1
        base = {"ID": "HTB", "interval": self.interval, "seq": self.seq}
        for destination in self.destinations():
            message = self._message(base)
            if destination.rtt is not None:
                message["rtt"] = round(destination.rtt, 3)
            if self._send_one(destination, encode(message)):
                destination.failed_beats = 0
            else:
                destination.failed_beats += 1
                self._drop_if_never_worked(destination)
        if self.pending and self._flush_call is None:
            self.flush()

    def destinations(self) -> list[Destination]:
        return [d for server in self.servers for d in server.destinations]

    # sending
    def _message(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        return {**fields, "name": self.host_name, "ts": self.reactor.seconds(),
                "version": heartbeat.__version__}

    def send(self, fields: Mapping[str, Any]) -> None:
        """Send one message (``ID`` and its fields) to every known address."""
        self._send_to(self.destinations(), self._message(fields))

    def _send_to(self, destinations: Sequence[Destination], message: dict[str, Any]) -> None:
        data = encode(message)
        for destination in destinations:
            self._send_one(destination, data)

    def _send_one(self, destination: Destination, data: bytes) -> bool:
        port = self._ports.get(destination.family)
        if self.key is not None:
            self._signed_seq = next_seq(self._signed_seq, self.reactor.seconds())
            data = self.key.seal(data, self._signed_seq)
        try:
            if port is None:
                raise OSError("no socket for this address family")
            port.write(data, (destination.ip, self.port))
        except OSError as e:
            self.send_errors += 1
            self._failed(destination, e)
            return False
        self.sent += 1
        if destination.failures and destination.worked:
            log.info("sender: sending to {ip} works again", ip=destination.ip)
        destination.worked = True
        destination.failures = 0
        if self.verbose:
            log.info("sent {size} bytes to {ip}", size=len(data), ip=destination.ip)
        return True

    def _failed(self, destination: Destination, error: OSError) -> None:
        destination.failures += 1
        destination.last_error = error
        if destination.failures == 1:
            log.warn("sender: sending to {ip} ({server}) failed: {error}; retrying every "
                     "interval", ip=destination.ip, server=destination.server, error=error)

    def _drop_if_never_worked(self, destination: Destination) -> None:
        """Counted per heartbeat, not per datagram: BOOT, HTB and PLG failing in the
        first second (network not up yet at boot) must not drop an address at once."""
        if destination.ipv6 and not destination.worked \
                and destination.failed_beats >= IPV6_GIVE_UP:
            log.warn("sender: dropping {ip} ({server}): IPv6 never worked, {n} heartbeats "
                     "in a row failed: {error}", ip=destination.ip, server=destination.server,
                     n=destination.failed_beats, error=destination.last_error)
            self.dropped.add(destination.ip)
            for server in self.servers:
                server.destinations = [d for d in server.destinations if d is not destination]

    # plugin data
    def queue_plugin(self, name: str, data: dict[str, Any]) -> None:
        """Send ``data`` for plugin ``name`` soon, batched with others due at the same time."""
        self.pending[name] = data
        if self._flush_call is None or not self._flush_call.active():
            self._flush_call = self.reactor.callLater(self.batch_delay, self.flush)

    def flush(self) -> None:
        """Send every queued plugin result now (kept for later while no address is known)."""
        self._flush_call = None
        destinations = self.destinations()
        if not self.pending or not destinations:
            return
        plugins, self.pending = self.pending, {}
        header = {"name": self.host_name, "ts": self.reactor.seconds(),
                  "version": heartbeat.__version__}
        room = self.max_datagram - (self.key.overhead if self.key is not None else 0)
        for datagram in pack_plugins(header, plugins, room):
            for destination in destinations:
                self._send_one(destination, datagram)

    # replies
    def _destination_for(self, addr: Any) -> Destination | None:
        ip = addr[0]
        if ip.startswith("::ffff:") and "." in ip:
            ip = ip[7:]
        for destination in self.destinations():
            if destination.ip == ip or destination.ip.split("%")[0] == ip.split("%")[0]:
                return destination
        return None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        destination = self._destination_for(addr)
        if destination is None:
            log.debug("sender: ignored a datagram from {addr}, not a server", addr=addr)
            return
        keyring = self.key.keyring if self.key is not None else None
        try:
            message, signed = decode_signed_reply(data, keyring, self.reactor.seconds())
        except DecodeError as e:
            self.refused_replies += 1
            log.warn("sender: bad datagram from {ip}: {error}", ip=destination.ip, error=e)
            return
        if signed is not None:
            if signed.seq <= self._server_seq.get(destination.server, 0):
                self.refused_replies += 1
                log.warn("sender: ignored a replayed {kind} from {ip}", kind=message["ID"],
                         ip=destination.ip)
                return
            self._server_seq[destination.server] = signed.seq
        elif self.key is not None and message["ID"] != "ACK":
            self.refused_replies += 1
            log.warn("sender: ignored an unsigned {kind} from {ip}: this agent signs, so "
                     "its server does too", kind=message["ID"], ip=destination.ip)
            return
        if self.verbose:
            log.info("received {kind} from {ip}", kind=message["ID"], ip=destination.ip)
        destination.worked = True
        if message["ID"] == "ACK":
            if "ts" in message:
                rtt = (self.reactor.seconds() - message["ts"]) * 1000.0
                if 0 <= rtt <= MAX_RTT_MS:
                    destination.rtt = rtt
            return
        if self.on_request is None:
            return

        def reply(fields: dict[str, Any]) -> None:
            self._send_to([destination], self._message(fields))

        try:
            self.on_request(message, reply)
        except Exception:
            log.failure("sender: handling {kind} from {ip} failed", kind=message["ID"],
                        ip=destination.ip)
