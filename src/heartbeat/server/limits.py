"""Resource bounds of UDP ingest: per-source rate and the admission of new host names.

Pure code with ``now`` passed in, like the registry. Every table here has a
fixed ceiling, so a flood of datagrams from invented addresses or invented host
names costs the server a bounded amount of memory, never more (docs/SECURITY.md).
"""

from __future__ import annotations

import ipaddress
import socket
from collections import deque
from collections.abc import Hashable
from typing import Final

__all__ = [
    "ADMISSION_WINDOW",
    "SOURCE_TABLE_SIZE",
    "HostAdmission",
    "SourceRateLimit",
    "address_key",
    "source_key",
]

SOURCE_TABLE_SIZE: Final = 65536
ADMISSION_WINDOW: Final = 3600.0
NETWORK_SHARE: Final = 64
"""An IPv6 /64 may send this many times one address's rate (each address within its own):
one neighbour on a LAN uses up its own allowance, not the whole network's."""


def source_key(ip: str) -> str | bytes:
    """What one sender is: its IPv4 address, or the /64 network of its IPv6 address.

    One IPv6 host usually holds a whole /64, so limiting single IPv6 addresses
    would limit nothing.
    """
    if ":" not in ip:
        return ip
    try:
        return socket.inet_pton(socket.AF_INET6, ip.partition("%")[0])[:8]
    except OSError:
        return ip


def address_key(ip: str) -> str:
    """:func:`source_key` as text, for tables keyed by strings (the login throttle):
    an IPv4 address, or ``2001:db8:1:2::/64`` for any address of that IPv6 /64."""
    try:
        address = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class SourceRateLimit:
    """At most ``rate`` datagrams a second from one source.

    :meth:`allow` counts whatever key it is given (:func:`source_key`: an IPv6
    /64 as one). :meth:`allow_address` is UDP ingest's: an IPv4 address, or an
    IPv6 address within its own rate and its /64 within ``NETWORK_SHARE`` times
    that, so one sender of a LAN's /64 does not silence the others.

    A count per source in fixed windows of one second (of ``1 / rate`` seconds
    for a rate below one): a dictionary lookup and an increment per datagram,
    the cheapest check there is on the hot path. A source may send its whole
    allowance at once; across a window's edge, up to twice that in a moment.
    The table is emptied at each new window and holds at most ``max_sources``
    sources; once full (a flood from that many addresses in one window), new
    sources pass uncounted until the next window and are counted in ``overflow``.
    """

    def __init__(self, rate: float, max_sources: int = SOURCE_TABLE_SIZE) -> None:
        self.rate = rate
        self.window = max(1.0, 1.0 / rate)
        self.limit = max(1, round(rate * self.window))
        self.max_sources = max_sources
        self._counts: dict[Hashable, int] = {}
        self._ends = float("-inf")
        self.overflow = 0

    def __len__(self) -> int:
        return len(self._counts)

    def allow(self, source: Hashable, now: float, limit: int | None = None) -> bool:
        """Whether one more datagram from ``source`` at ``now`` is within its rate
        (``limit`` a window: another allowance than the rate's)."""
        counts = self._counts
        if now >= self._ends:
            counts.clear()
            self._ends = now + self.window
        count = counts.get(source, 0)
        if count >= (self.limit if limit is None else limit):
            return False
        if not count and len(counts) >= self.max_sources:
            self.overflow += 1
            return True
        counts[source] = count + 1
        return True

    def allow_address(self, ip: str, now: float) -> bool:
        """:meth:`allow` for a UDP sender: by IPv4 address, or by IPv6 address and /64."""
        if ":" not in ip:
            return self.allow(ip, now)
        try:
            packed = socket.inet_pton(socket.AF_INET6, ip.partition("%")[0])
        except OSError:
            return self.allow(ip, now)
        # The address first: what it sends past its own rate costs its network nothing.
        return self.allow(packed, now) and self.allow(packed[:8], now,
                                                      self.limit * NETWORK_SHARE)

    def to_json(self) -> dict[str, float | int]:
        return {"rate": self.rate, "sources": len(self._counts), "overflow": self.overflow}


class HostAdmission:
    """How many host names the server does not know yet it takes in.

    At most ``per_hour`` new names in any sliding hour (``max_hosts``), and never
    more than ``ceiling`` hosts in all (``max_unconfigured_hosts`` plus the
    configured ones). Configured hosts are not asked about: they are always
    accepted. The window holds one timestamp per admission, so it is bounded by
    ``per_hour`` too.
    """

    def __init__(self, per_hour: int, ceiling: int, window: float = ADMISSION_WINDOW) -> None:
        self.per_hour = per_hour
        self.ceiling = ceiling
        self.window = window
        self._window: deque[float] = deque()
        self.admitted = 0

    def admit(self, known_hosts: int, now: float) -> str | None:
        """None if one more new host may join ``known_hosts``; else the drop reason."""
        window = self._window
        while window and window[0] <= now - self.window:
            window.popleft()
        if len(window) >= self.per_hour:
            return "max_hosts"
        if known_hosts >= self.ceiling:
            return "max_unconfigured_hosts"
        window.append(now)
        self.admitted += 1
        return None

    def to_json(self) -> dict[str, int]:
        return {"new_hosts_admitted": self.admitted, "max_hosts": self.per_hour,
                "host_ceiling": self.ceiling}
