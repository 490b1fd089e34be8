"""SteadyClock on clocks the test moves: steps of the wall clock are made up slowly."""

from __future__ import annotations

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
