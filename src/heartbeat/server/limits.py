"""Resource bounds of UDP ingest: per-source rate and the admission of new host names.

Pure code with ``now`` passed in, like the registry. Every table here has a
fixed ceiling, so a flood of datagrams from invented addresses or invented host
names costs the server a bounded amount of memory, never more (docs/SECURITY.md).
"""

from __future__ import annotations

import socket
from collections import deque
from typing import Final

__all__ = [
    "ADMISSION_WINDOW",
    "SOURCE_TABLE_SIZE",
    "HostAdmission",
    "SourceRateLimit",
    "source_key",
]

SOURCE_TABLE_SIZE: Final = 65536
ADMISSION_WINDOW: Final = 3600.0


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


class SourceRateLimit:
    """A token bucket per source (:func:`source_key`): ``rate`` datagrams/s, bursts of 1 s.

    The table holds at most ``max_sources`` sources. A bucket is full again
    after one second of silence, so forgetting such a source changes nothing.
    When the table is full, idle sources are swept out (at most once a second,
    so the sweep cannot be made to run per datagram); if none is idle (a flood
    from many addresses), the source that entered the table first makes room
    and starts again with a full bucket, as any new source does.
    """

    def __init__(self, rate: float, max_sources: int = SOURCE_TABLE_SIZE) -> None:
        self.rate = rate
        self.burst = max(rate, 1.0)
        self.idle = self.burst / rate
        self.max_sources = max_sources
        self._buckets: dict[str | bytes, list[float]] = {}  # source -> [tokens, at]
        self._swept = float("-inf")
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: str | bytes, now: float) -> bool:
        """Whether one more datagram from ``source`` at ``now`` is within its rate."""
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._make_room(now)
            self._buckets[source] = [self.burst - 1.0, now]
            return True
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        tokens = min(tokens, self.burst)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def _make_room(self, now: float) -> None:
        buckets = self._buckets
        if now - self._swept >= self.idle:
            self._swept = now
            idle = [key for key, (_, at) in buckets.items() if now - at >= self.idle]
            for key in idle:
                del buckets[key]
            if idle:
                return
        del buckets[next(iter(buckets))]
        self.evicted += 1

    def to_json(self) -> dict[str, float | int]:
        return {"rate": self.rate, "sources": len(self._buckets), "evicted": self.evicted}


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
