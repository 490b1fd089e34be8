"""The services' periodic work: Twisted's ``TimerService`` on the service's clock.

Every timer of the server (the store's flush and retention, the journal's
flush, the monitor's expiry check, alerting's reminders, auth's session sweep)
is made here, so they all behave alike: the first tick when the owning service
starts, one every ``period`` seconds on the clock it was given, a tick that
returns a Deferred waited for before the next, a tick that fails logged with
the timer's name while the timer goes on, and a stop that waits for the tick in
progress.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["periodic", "start_timers", "stop_timers"]

log = Logger()


def periodic(name: str, period: float, tick: Callable[[], object],
             clock: IReactorTime) -> TimerService:
    """A timer calling ``tick`` every ``period`` seconds on ``clock`` (see the module)."""

    def guarded() -> Deferred[None]:
        d: Deferred[Any] = maybeDeferred(tick)
        d.addErrback(lambda f: log.failure("{timer}: a tick failed; trying again in {period}s",
                                           f, timer=name, period=period))
        return d.addCallback(lambda _: None)

    timer = TimerService(period, guarded)
    timer.clock = clock
    timer.setName(name)
    return timer


def start_timers(timers: Iterable[TimerService]) -> None:
    for timer in timers:
        timer.startService()


def stop_timers(timers: Iterable[TimerService]) -> Deferred[None]:
    """Stop the running ``timers``; fires once their ticks in progress are done."""
    stopping = [maybeDeferred(timer.stopService) for timer in timers if timer.running]
    return gatherResults(stopping).addCallback(lambda _: None)
