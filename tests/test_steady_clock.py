"""SteadyClock on clocks the test moves: steps of the wall clock are made up slowly."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from pytest import approx

from heartbeat.server.steady import SteadyClock


class Clocks:
    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 50.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def test_follows_the_wall_clock_and_makes_up_a_step_slowly() -> None:
    c = Clocks()
    clock = SteadyClock(lambda: c.wall, lambda: c.mono, slew=0.05, tolerance=1.0)
    assert clock.seconds() == c.wall
    c.advance(10.0)
    c.wall += 0.4  # NTP's small corrections are taken at once
    assert clock.seconds() == c.wall
    c.wall += 600.0  # a step: ten minutes forward
    before = clock.seconds()
    c.advance(10.0)
    assert clock.seconds() - before == approx(10.0 * 1.05)  # 10 s later, 0.5 s of the step made up
    assert clock.steps == 1
    for _ in range(2000):
        c.advance(10.0)
        clock.seconds()
    assert clock.seconds() == approx(c.wall)  # made up in 200 minutes, then followed again
    c.wall -= 3600.0  # an hour back: time never goes back, it slows by 5%
    last = clock.seconds()
    c.advance(100.0)
    assert clock.seconds() - last == approx(95.0)
    assert clock.steps == 2


class ReferenceClock:
    """The rule of the module's docstring, written plainly: the wall clock taken when
    within ``tolerance``, a step made up at ``slew`` a second, never going back."""

    def __init__(self, c: Clocks, slew: float, tolerance: float) -> None:
        self.c, self.slew, self.tolerance = c, slew, tolerance
        self.offset = c.wall - c.mono
        self.last_mono = c.mono
        self.last = c.wall
        self.stepping, self.steps = False, 0

    def seconds(self) -> float:
        elapsed = max(0.0, self.c.mono - self.last_mono)
        self.last_mono = self.c.mono
        gap = (self.c.wall - self.c.mono) - self.offset
        self.steps += abs(gap) > self.tolerance and not self.stepping
        self.stepping = abs(gap) > self.tolerance
        if abs(gap) <= self.tolerance:
            self.offset += gap
        else:
            self.offset += math.copysign(min(abs(gap), elapsed * self.slew), gap)
        self.last = max(self.last, self.c.mono + self.offset)
        return self.last


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 120.0), st.floats(-4000.0, 4000.0),
                          st.integers(1, 3)), max_size=60))
def test_seconds_keeps_to_the_rule(moves: list[tuple[float, float, int]]) -> None:
    """However the wall clock moves (small corrections, steps either way, several reads
    between moves), the clock reads what the plain rule gives, never goes back, and
    counts a step once however many reads it lasts."""
    c = Clocks()
    clock = SteadyClock(lambda: c.wall, lambda: c.mono, slew=0.05, tolerance=1.0)
    reference = ReferenceClock(c, 0.05, 1.0)
    last = clock.seconds()
    assert last == approx(reference.seconds(), abs=1e-6)
    for elapsed, wall_move, reads in moves:
        c.advance(elapsed)
        c.wall += wall_move if abs(wall_move) > 1000 else wall_move / 4000
        for _ in range(reads):
            expected = reference.seconds()
            now = clock.seconds()
            assert now == approx(expected, abs=1e-6)
            assert now >= last
            last = now
    assert clock.steps == reference.steps
