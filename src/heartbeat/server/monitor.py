"""Down detection: a timer that asks the registry which hosts went silent."""

from __future__ import annotations

from typing import Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from heartbeat.events import EventBus
from heartbeat.server.registry import Registry
from heartbeat.server.timers import periodic, start_timers, stop_timers

__all__ = ["EXPIRE_SLICE", "MonitorService"]

EXPIRE_SLICE: Final = 1000
"""Overdue hosts marked DOWN in one turn of the reactor. A host's fall and what hears
it (journal, store, alerting, feed, notices) cost some 25 us: when a whole fleet goes
silent at once (the server's own uplink, a data centre), 100,000 hosts in one turn
held every datagram, request and feed frame for 2-3 s. A slice is some 25 ms; the
rest follow in the next turns, and the next tick waits for the last of them."""


class MonitorService(Service):
    """Every ``period`` seconds, hosts past ``interval + grace`` become DOWN events."""

    name = "monitor"

    def __init__(
        self, registry: Registry, bus: EventBus, clock: IReactorTime, period: float = 1.0,
        slice_size: int = EXPIRE_SLICE,
    ) -> None:
        self.registry = registry
        self.bus = bus
        self.clock = clock
        self.period = period
        self.slice_size = slice_size
        self._timers = [periodic("monitor expiry", period, self.check, clock)]

    def check(self) -> Deferred[None] | None:
        """One tick: the hosts overdue now, marked DOWN and published a slice a turn; a
        Deferred when there is more than one slice, fired after the last."""
        names = self.registry.overdue(self.clock.seconds())
        if not self._expire(names, 0):
            return None
        done: Deferred[None] = Deferred()
        self.clock.callLater(0, self._rest, names, self.slice_size, done)
        return done

    def _expire(self, names: list[str], start: int) -> bool:
        """Publish the slice of ``names`` from ``start``; whether any are left after it."""
        end = start + self.slice_size
        self.bus.publish_all(self.registry.expire(self.clock.seconds(), names[start:end]))
        return end < len(names)

    def _rest(self, names: list[str], start: int, done: Deferred[None]) -> None:
        # Stopped between two slices: the rest is for the next start's first tick.
        try:
            more = self.running and self._expire(names, start)
        except Exception:
            done.errback()  # logged by the timer, whose next tick comes as usual
            return
        if more:
            self.clock.callLater(0, self._rest, names, start + self.slice_size, done)
        else:
            done.callback(None)

    def startService(self) -> None:
        super().startService()
        start_timers(self._timers)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return stop_timers(self._timers)
