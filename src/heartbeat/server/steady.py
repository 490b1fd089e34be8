"""The server's clock: seconds since the epoch that a step of the wall clock cannot jump.

Twisted's reactor reads the wall clock, for timestamps and for every timer
alike, so a wall clock set forward by ten minutes made every heartbeat
deadline pass at once (every host DOWN), and one set back an hour stalled
every periodic job (the down check included) and every rate-limit window for
that hour. :class:`SteadyClock` counts on the monotonic clock instead,
anchored to the wall clock at start: durations and deadlines never jump. The
wall clock is still followed for timestamps: a difference of up to
``tolerance`` is taken at once (time never goes back, though), a larger one
(a step) is logged and made up gradually, at most ``slew`` seconds per second
(5%: ten minutes in 200 minutes), so a 40 s deadline is off by at most 2 s
meanwhile. The twistd server installs it as its reactor's ``seconds``
(heartbeat.server.tap).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from twisted.logger import Logger

__all__ = ["SteadyClock"]

log = Logger()


class SteadyClock:
    """See the module. ``wall`` and ``monotonic`` are the clocks read (tests pass their own)."""

    def __init__(self, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, *, slew: float = 0.05,
                 tolerance: float = 1.0) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self.slew = slew
        self.tolerance = tolerance
        now = monotonic()
        self._offset = wall() - now
        self._last_monotonic = now
        self._last = now + self._offset
        self._stepping = False
        self.steps = 0
        """Steps of the wall clock seen (each logged once)."""

    def seconds(self) -> float:
        now = self._monotonic()
        offset = self._wall() - now
        gap = offset - self._offset
        if -self.tolerance <= gap <= self.tolerance:  # the wall clock as it was: no step
            self._last_monotonic = now
            self._offset = offset
            self._stepping = False
            when = now + offset
            if when > self._last:  # noqa: PLR1730 (no call: read per datagram)
                self._last = when
            return self._last
        return self._catch_up(now, gap)

    def _catch_up(self, now: float, gap: float) -> float:
        """:meth:`seconds` while the wall clock is more than ``tolerance`` from ours: the
        step is logged once and made up at ``slew`` seconds a second."""
        elapsed = max(0.0, now - self._last_monotonic)
        self._last_monotonic = now
        if not self._stepping:
            self._stepping = True
            self.steps += 1
            log.warn("clock: the wall clock stepped {gap:+.1f} s; deadlines and timers go "
                     "on unmoved, timestamps catch up at {rate:.0%} ({minutes:.0f} min)",
                     gap=gap, rate=self.slew, minutes=abs(gap) / self.slew / 60)
        self._offset += math.copysign(min(abs(gap), elapsed * self.slew), gap)
        self._last = max(self._last, now + self._offset)
        return self._last
