"""Down detection: a timer that asks the registry which hosts went silent."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from heartbeat.events import EventBus
from heartbeat.server.registry import Registry

__all__ = ["MonitorService"]

log = Logger()


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
        self._loop: LoopingCall | None = None

    def check(self) -> None:
        try:
            self.bus.publish_all(self.registry.expire(self.clock.seconds()))
        except Exception:
            log.failure("monitor: expiry check failed; retrying next period")

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.clock
        self._loop.start(self.period, now=False).addErrback(
            lambda f: log.failure("monitor: loop stopped", f))

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
