"""UDP ingest: datagram -> protocol.decode -> Registry.apply -> events and replies.

The listener must never die: every datagram that breaks the protocol is
counted by reason and logged at a rate-limited level; an exception from a
downstream subscriber is the bus's to report, not the listener's.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from twisted.application.internet import UDPServer
from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from heartbeat.events import RECEIVED, Event, EventBus
from heartbeat.protocol import (
    CLIENT_IDS,
    SIGNED_MAGIC,
    DecodeError,
    Limits,
    Signed,
    decode_received,
    encode,
    unseal,
)
from heartbeat.server.limits import SourceRateLimit
from heartbeat.server.registry import Registry
from heartbeat.server.signing import Signing

__all__ = ["IngestProtocol", "IngestStats", "make_udp_service", "source_address"]

log = Logger()

SO_RCVBUFFORCE: int | None = getattr(socket, "SO_RCVBUFFORCE",
                                     33 if sys.platform == "linux" else None)
"""Linux's option to set a receive buffer past ``net.core.rmem_max`` (CAP_NET_ADMIN):
Python's socket module does not name it."""

UDP_TABLES: Final = ("/proc/net/udp", "/proc/net/udp6")
"""Linux's tables of UDP sockets, one line each (proc(5)): ``inode`` and ``drops``."""

MAX_DATAGRAM = 65535
READ_SLICE = 16 * 1024
"""Bytes of datagrams read in one turn of the reactor before the API, the feed and the
timers get theirs. Twisted's default (256 KiB) is some 2,600 heartbeats in one go: a
quarter of a second of work on a free core, several seconds on a loaded one, during which
no request is answered and no feed frame leaves. A slice costs one more poll per ~160
heartbeats, which the profile does not see."""
MAX_UNKNOWN_IDS = 64
"""Distinct unknown ``ID``s counted by name; any more are counted as ``(other)``."""


def source_address(addr: tuple[Any, ...]) -> tuple[str, int]:
    """(ip, port), with IPv4-mapped IPv6 addresses of a dual-stack socket as plain IPv4."""
    ip, port = addr[0], addr[1]
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    return ip, port


@dataclass
class IngestStats:
    """Counters for ``/api/0/status``; drops are logged at most once per reason per period."""

    log_period: float = 10.0
    received: int = 0
    accepted: int = 0
    replies: int = 0
    reply_errors: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    unknown_ids: Counter[str] = field(default_factory=Counter)
    _logged: dict[str, tuple[float, int]] = field(default_factory=dict)

    def drop(self, reason: str, source: tuple[str, int], detail: str, now: float) -> None:
        self.dropped[reason] += 1
        last, count_then = self._logged.get(reason, (-self.log_period, 0))
        if now - last >= self.log_period:
            suppressed = self.dropped[reason] - count_then - 1
            self._logged[reason] = (now, self.dropped[reason])
            log.warn("ingest: dropped a datagram from {ip}:{port}: {reason} {detail}"
                     "{suppressed}", ip=source[0], port=source[1], reason=reason,
                     detail=detail,
                     suppressed=f" (+{suppressed} more since last report)" if suppressed else "")

    def unknown_id(self, kind: str) -> None:
        counts = self.unknown_ids
        key = kind[:32]
        if key not in counts and len(counts) >= MAX_UNKNOWN_IDS:
            key = "(other)"
        counts[key] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "dropped": dict(self.dropped),
            "dropped_total": sum(self.dropped.values()),
            "unknown_ids": dict(self.unknown_ids),
            "replies": self.replies,
            "reply_errors": self.reply_errors,
        }


class IngestProtocol(DatagramProtocol):
    """Decodes datagrams, applies them to the registry and answers on the same socket.

    Before a datagram costs a decode it must be within its source's rate
    (``rate``; None: unbounded, for tests and tools); the registry then refuses
    what would take it past its own bounds (new hosts, plugin names and bytes).
    With ``signing``, signed datagrams are verified and judged against their
    host (docs/SECURITY.md), and the replies to a signed one are signed too. A
    signed datagram's MAC is checked first (it is cheap): one that checks out
    is counted against its sender's rate for its key, apart from whatever
    else comes from that address, so spoofed junk cannot use up a signing
    host's rate; one that does not is counted against the address.
    """

    noisy = False

    def __init__(
        self, registry: Registry, bus: EventBus, clock: IReactorTime, limits: Limits,
        stats: IngestStats, *, rate: SourceRateLimit | None = None,
        signing: Signing | None = None,
    ) -> None:
        self.registry = registry
        self.bus = bus
        self.clock = clock
        self.limits = limits
        self.stats = stats
        self.rate = rate
        self.signing = signing
        self._unsigned_refusable = signing is not None and signing.policy.any_required
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        now = self.clock.seconds()
        stats = self.stats
        stats.received += 1
        ip = addr[0]
        source = addr if ":" not in ip else source_address(addr)  # IPv4: (ip, port) as it came
        rate = self.rate
        signing = self.signing
        signed: Signed | None = None
        try:
            if signing is not None and data.startswith(SIGNED_MAGIC):
                try:
                    inner, signed = unseal(data, signing.keyring, now)
                except DecodeError:
                    if rate is not None and not rate.allow_address(source[0], now):
                        stats.drop("rate_limited", source, "", now)
                        return
                    raise
                if rate is not None and not rate.allow((signed.key_id, source[0]), now):
                    stats.drop("rate_limited", source, "", now)
                    return
                message, text, packed = decode_received(inner, self.limits)
            else:
                ip = source[0]  # an IPv4-mapped address as IPv4
                if rate is not None and not (rate.allow(ip, now) if ":" not in ip
                                             else rate.allow_address(ip, now)):
                    stats.drop("rate_limited", source, "", now)
                    return
                message, text, packed = decode_received(data, self.limits)
        except DecodeError as e:
            stats.drop(e.reason, source, e.detail, now)
            return
        name = message["name"]
        if signing is not None and (signed is not None or self._unsigned_refusable):
            refusal = signing.policy.refusal(name, signed)
            if refusal is not None:
                stats.drop(refusal, source, name, now)
                return
        outcome = self.registry.apply(message, source, now, signed=signed, size=len(text))
        if outcome.refused is not None:
            stats.drop(outcome.refused, source, name, now)
            return
        if message["ID"] not in CLIENT_IDS:
            stats.unknown_id(message["ID"])
        stats.accepted += 1
        fields = {"message": message, "source_ip": source[0], "source_port": source[1]}
        if signed is not None and signing is not None:
            signing.policy.accepted(name, signed)
            fields["key_id"] = signed.key_id
        for reply in outcome.replies:
            self.send(reply, addr, signed, now)
        # The message before what it caused: one delivery, in causal order.
        self.bus.publish_all([Event(RECEIVED, name, now, fields, text, packed),
                             *outcome.events])

    def _sendto(self, data: bytes, addr: Any) -> None:
        """``data`` to ``addr``, an address the port's own socket received from.

        Straight to the socket: Twisted's ``Port.write`` parses every address's text
        three times (half of an ACK's cost, 5-8 % of the reactor's samples at 5,000
        heartbeats a second), which an address this socket gave us cannot fail. As
        ``Port.write`` does, a refusal (ICMP port unreachable from an earlier reply)
        is no error and a datagram too long is :class:`MessageLengthError`."""
        sock = getattr(self.transport, "socket", None)
        if sock is None:  # not a real port (tests' transports)
            self.transport.write(data, addr)  # type: ignore[union-attr]
            return
        try:
            sock.sendto(data, addr)
        except OSError as e:
            if e.errno == errno.ECONNREFUSED:
                return
            if e.errno == errno.EMSGSIZE:
                raise MessageLengthError("message too long") from e
            raise

    def status(self) -> dict[str, Any]:
        """The ``ingest`` section of ``/api/0/status``: counters, the bounds' tables, the
        socket's receive buffer as the kernel reports it (Linux: twice the bytes of
        datagrams it holds, socket(7)) and what the kernel dropped of it when full
        (:func:`kernel_drops`); both None without a port."""
        body = self.stats.to_json()
        sock = getattr(self.transport, "socket", None)
        body["receive_buffer"] = None if sock is None else sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF)
        body["kernel_drops"] = None if sock is None else kernel_drops(sock)
        if self.rate is not None:
            body["sources"] = self.rate.to_json()
        body.update(self.registry.bounds_json())
        if self.signing is not None:
            body["signing"] = self.signing.to_json()
        return body

    def send(self, reply: dict[str, Any], addr: Any, signed: Signed | None = None,
             now: float = 0.0) -> None:
        """Send ``reply`` to ``addr``; signed with ``signed``'s key when it answers one."""
        data = encode(reply)
        if signed is not None and self.signing is not None:
            data = self.signing.signer.seal(data, signed.key_id, now)
        try:
            self._sendto(data, addr)
            self.stats.replies += 1
        except OSError as e:
            self.stats.reply_errors += 1
            log.debug("ingest: reply to {addr} failed: {error}", addr=addr, error=e)


def ipv6_available() -> bool:
    """Whether this kernel can open an IPv6 socket (socket.has_ipv6 only tells the build)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::", 0))
    except OSError:
        return False
    return True


def kernel_drops(sock: socket.socket, tables: tuple[str, ...] = UDP_TABLES) -> int | None:
    """Datagrams the kernel dropped for ``sock`` since it opened (its receive buffer was
    full), from the ``drops`` column of Linux's ``/proc/net/udp`` tables; None elsewhere.

    What the server never saw it cannot count among ``dropped``: without this a
    flood past the buffer left no trace but the sender's missing ACKs.
    """
    inode = str(os.fstat(sock.fileno()).st_ino)
    for table in tables:
        try:
            with open(table) as lines:
                next(lines, None)  # the header
                for line in lines:
                    fields = line.split()
                    if len(fields) > 12 and fields[9] == inode:
                        return int(fields[12])
        except (OSError, ValueError):
            continue
    return None


def set_receive_buffer(sock: socket.socket, wanted: int) -> int:
    """Give ``sock`` a receive buffer of ``wanted`` bytes, or as much of it as the kernel
    allows; return the size the kernel reports, and warn when it is short of ``wanted``.

    Past ``net.core.rmem_max`` only :data:`SO_RCVBUFFORCE` (root, CAP_NET_ADMIN) gets
    it; ``SO_RCVBUF`` is capped there without a word, so the size is read back.
    """
    try:
        if SO_RCVBUFFORCE is None:
            raise OSError("SO_RCVBUFFORCE unavailable")
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, wanted)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
        except OSError as e:
            log.warn("ingest: cannot set the UDP receive buffer: {error}", error=e)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    held = granted // 2 if sys.platform == "linux" else granted  # Linux reports it doubled
    if held < wanted:
        log.warn("ingest: udp_rcvbuf asks for a {wanted}-byte UDP receive buffer and the "
                 "kernel gave {held} (it reports {granted}): without CAP_NET_ADMIN it caps "
                 "the size at net.core.rmem_max; raise that sysctl, or start the server "
                 "as root", wanted=wanted, granted=granted, held=held)
    return granted


class _TunedUDPServer(UDPServer):
    """A UDPServer whose socket gets a larger receive buffer once it is bound, and whose
    reads yield to the rest of the reactor every :data:`READ_SLICE` bytes."""

    def __init__(self, rcvbuf: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rcvbuf = rcvbuf

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self._port is not None:
            self._port.maxThroughput = READ_SLICE
            if self._rcvbuf:
                set_receive_buffer(self._port.socket, self._rcvbuf)


def make_udp_service(
    protocol: IngestProtocol, host: str, port: int, rcvbuf: int, reactor: IReactorUDP
) -> UDPServer:
    """The heartbeat listener; ``host`` '::' listens dual-stack, falling back to IPv4."""
    if host == "::" and not ipv6_available():
        log.warn("ingest: IPv6 is not available here; listening on IPv4 only (0.0.0.0)")
        host = "0.0.0.0"
    service = _TunedUDPServer(rcvbuf, port, protocol, interface=host,
                              maxPacketSize=MAX_DATAGRAM, reactor=reactor)
    service.setName("ingest")
    return service
