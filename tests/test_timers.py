"""heartbeat.server.timers: every service's periodic work on one TimerService helper."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from heartbeat.server.timers import periodic, start_timers, stop_timers
from tests.apistack import fired


def test_ticks_at_start_then_every_period_and_survives_failures() -> None:
    """The first tick is at start; a tick that raises or fails is logged and the next runs."""
    clock = Clock()
    ticks: list[float] = []

    def tick() -> object:
        ticks.append(clock.seconds())
        if len(ticks) == 2:
            raise RuntimeError("a raising tick")
        if len(ticks) == 3:
            return fail(RuntimeError("a failing Deferred"))
        return None

    timer = periodic("test timer", 2.0, tick, clock)
    start_timers([timer])
    clock.pump([2.0] * 4)
    assert (ticks, timer.running, timer.name) == ([0.0, 2.0, 4.0, 6.0, 8.0], True, "test timer")
    assert fired(stop_timers([timer])) is None
    assert (timer.running, clock.getDelayedCalls()) == (False, [])


def test_waits_for_a_slow_tick_and_stop_waits_for_it_too() -> None:
    """A tick's Deferred is waited for before the next tick, and by stop."""
    clock = Clock()
    pending: list[Deferred[None]] = []

    def tick() -> Deferred[None]:
        pending.append(Deferred())
        return pending[-1]

    timer = periodic("slow", 1.0, tick, clock)
    start_timers([timer])
    clock.pump([1.0] * 3)
    assert len(pending) == 1
    stopped = stop_timers([timer])
    assert not stopped.called
    pending[0].callback(None)
    assert (fired(stopped), len(pending), clock.getDelayedCalls()) == (None, 1, [])
