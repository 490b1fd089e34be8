"""Python's cyclic garbage collector, run when there is little for it to walk.

CPython collects its youngest generation after every 700 net allocations of
containers. A server taking datagrams holds what each one left for the next
store flush (a PLG's decoded plugins: a dozen containers) until that flush has
written it, so nearly every one of those collections walks objects that are
about to be freed by their reference counts anyway, and moves them on to the
older generations, to be walked again there: 11.7 % of a PLG's CPU on the
reactor thread in process (docs/PERFORMANCE.md, issue 16).

:class:`CollectorService` turns the automatic collections off while it runs and
collects right after each store flush has settled, when what the flush held
has gone: the youngest generation every time, the middle one every
``middle_every`` times, all of them every ``full_every`` times. A timer makes
sure of one collection every ``period`` seconds whatever the store does (a
writer stuck on a slow disk still leaves garbage to collect). Stopped, it gives
the automatic collections back as it found them.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from heartbeat.server.timers import periodic

__all__ = ["CollectorService"]


class CollectorService(Service):
    """The process's garbage collections, after the store's flushes (see the module)."""

    name = "collector"

    def __init__(self, clock: IReactorTime, period: float, *, middle_every: int = 10,
                 full_every: int = 1000) -> None:
        self.clock = clock
        self.period = period
        self.middle_every = middle_every
        self.full_every = full_every
        self.collections = [0, 0, 0]
        """Collections done, by the oldest generation each took in."""
        self.collected = 0
        """Unreachable objects the collections found (cycles reference counts miss)."""
        self.last: float | None = None
        self.seconds = 0.0
        """Time the collections took (a performance counter's, not the clock's)."""
        self.longest = 0.0
        """The longest collection, in seconds: the pause it put in the reactor's work."""
        self._count = 0
        self._automatic = gc.isenabled()
        self._timer = periodic("garbage collection", period, self._due, clock)

    def startService(self) -> None:
        super().startService()
        self._automatic = gc.isenabled()
        gc.disable()
        self.last = self.clock.seconds()
        self._timer.startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._automatic:
            gc.enable()
        d: Deferred[Any] | None = self._timer.stopService()
        return d

    def after_flush(self) -> None:
        """A store flush has settled: what it held is freed, the young are few."""
        if self.running:
            self.collect()

    def _due(self) -> None:
        last = self.last
        if last is None or self.clock.seconds() - last >= self.period:
            self.collect()

    def collect(self) -> int:
        """One collection: the youngest generation, or older ones when their turn has
        come; returns the unreachable objects it found."""
        self._count += 1
        generation = (2 if self._count % self.full_every == 0
                      else 1 if self._count % self.middle_every == 0 else 0)
        began = time.perf_counter()
        found = gc.collect(generation)
        took = time.perf_counter() - began
        self.seconds += took
        self.longest = max(self.longest, took)
        self.collections[generation] += 1
        self.collected += found
        self.last = self.clock.seconds()
        return found

    def to_json(self) -> dict[str, Any]:
        """The ``collector`` section of ``/api/0/status``."""
        return {"automatic": gc.isenabled(), "collections": list(self.collections),
                "collected": self.collected, "last": self.last, "period": self.period,
                "seconds": round(self.seconds, 6), "longest": round(self.longest, 6)}
