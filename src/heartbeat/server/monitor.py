"""Down detection: a timer that asks the registry which hosts went silent."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from heartbeat.events import EventBus
from heartbeat.server.registry import Registry
from heartbeat.server.timers import periodic, start_timers, stop_timers

__all__ = ["MonitorService"]


class MonitorService(Service):
    """Every ``period`` seconds, hosts past ``interval + grace`` become DOWN events."""

    name = "monitor"

    def __init__(
        self, registry: Registry, bus: EventBus, clock: IReactorTime, period: float = 1.0
    ) -> None:
        self.registry = registry
        self.bus = bus
        self.clock = clock
        self.period = period
        self._timers = [periodic("monitor expiry", period, self.check, clock)]

    def check(self) -> None:
        """One tick: the hosts overdue now, marked DOWN and published."""
        self.bus.publish_all(self.registry.expire(self.clock.seconds()))

    def startService(self) -> None:
        super().startService()
        start_timers(self._timers)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return stop_timers(self._timers)
