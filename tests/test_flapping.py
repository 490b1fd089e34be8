"""Nagios-style flap detection, with plain values."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heartbeat.events import HOST_FLAPPING, Event
from heartbeat.server.flapping import HISTORY, FlapChange, FlapDetector, percent_state_change
from heartbeat.server.registry import Host, HostState, Registry


def alternating(n: int, first: str = "UP", second: str = "DOWN") -> list[str]:
    return [first if i % 2 == 0 else second for i in range(n)]


class PercentTests:
    def test_steady_is_zero_and_alternating_is_100(self) -> None:
        """No change is 0 %; a change at every step of 21 is 100 % (weights sum to 20)."""
        assert percent_state_change(["UP"] * HISTORY) == 0.0
        assert percent_state_change(alternating(HISTORY)) == pytest.approx(100.0)

    def test_weights_run_from_075_to_125(self) -> None:
        """The newest change weighs 1.25, the oldest 0.75 (of 20 changes, as Nagios)."""
        newest = ["UP"] * 20 + ["DOWN"]
        oldest = ["UP"] + ["DOWN"] * 20
        assert percent_state_change(newest) == pytest.approx(1.25 * 100 / 20)
        assert percent_state_change(oldest) == pytest.approx(0.75 * 100 / 20)

    def test_short_history_counts_as_padded(self) -> None:
        """A history shorter than 21 weighs its changes as the newest ones."""
        assert percent_state_change(["UP", "DOWN"]) == percent_state_change(
            ["UP"] * 20 + ["DOWN"])


class DetectorTests:
    def test_starts_at_high_stops_at_low_one_change_each(self) -> None:
        """Alternating states start flapping once; steady ones stop it once, at <= 20 %."""
        detector = FlapDetector()
        changes: list[FlapChange] = []
        previous = "UP"
        for i, state in enumerate(alternating(12, "DOWN", "UP")):
            change = detector.record("web1", "", state, previous, float(i))
            previous = state
            if change:
                changes.append(change)
        assert [(c.flapping, c.ts) for c in changes] == [(True, 5.0)]  # 5 changes: 29.9 %
        assert changes[0].percent >= 30 and detector.flapping("web1", "")
        for i in range(12, 40):
            change = detector.record("web1", "", "UP", "UP", float(i))
            if change:
                changes.append(change)
        assert [(c.flapping, c.state, c.since) for c in changes] == [
            (True, "UP", 5.0), (False, "UP", 5.0)]
        assert changes[1].percent <= 20 and not detector.flapping("web1", "")

    def test_in_between_keeps_the_state(self) -> None:
        """Between the thresholds nothing changes (hysteresis between 20 % and 30 %)."""
        detector = FlapDetector(low=10, high=90)
        previous = "OK"
        for i, state in enumerate(alternating(10, "CRITICAL", "OK")):
            assert detector.record("db", "rtt.db", state, previous, i) is None
            previous = state
        assert not detector.flapping("db", "rtt.db")
        assert detector.get("db", "rtt.db") is not None

    def test_steady_states_cost_nothing(self) -> None:
        """A state that does not change keeps no history; one steady 21 times is dropped."""
        detector = FlapDetector()
        for i in range(100):
            detector.record(f"h{i}", "", "UP", "UP", 0)
        assert len(detector) == 0
        detector.record("h1", "", "DOWN", "UP", 1)
        assert len(detector) == 1
        for i in range(HISTORY):
            detector.record("h1", "", "DOWN", "DOWN", 2 + i)
        assert len(detector) == 0
        changed, dropped = detector.take_dirty()
        assert (changed, dropped) == ([], [("h1", "")])

    def test_forget_restore_and_dirty(self) -> None:
        """Histories survive a restart through restore; forget drops a host's."""
        detector = FlapDetector()
        previous = "UP"
        for i, state in enumerate(alternating(8, "DOWN", "UP")):
            detector.record("web1", "", state, previous, i)
            previous = state
        changed, _ = detector.take_dirty()
        ((host, subject, history, flapping, since),) = changed
        live = detector.get("web1", "")
        assert live is not None and (history, flapping, since) == (
            tuple(live.history), live.flapping, live.since)
        again = FlapDetector()
        stored = json.loads(json.dumps(list(history)))  # as the store reads it back
        again.restore([(host, subject, stored, flapping, since)])
        assert again.get("web1", "") == detector.get("web1", "")
        restored = again.get("web1", "")
        assert restored is not None and all(  # one string per state: memory after a fall
            s is sys.intern(s) for s in restored.history)
        again.forget("web1")
        assert again.get("web1", "") is None and again.take_dirty() == ([], [("web1", "")])

    def test_thresholds_are_checked(self) -> None:
        """low above high is refused."""
        with pytest.raises(ValueError, match="0 <= low <= high <= 100"):
            FlapDetector(low=40, high=30)


class _AsksEveryTime(Registry):
    """The registry before issue 16's fast path: every evaluation goes to the detector."""

    def _flap(self, host: Host, state: HostState, now: float, events: list[Event],
              previous: HostState | None = None) -> bool:
        assert self.flaps is not None
        was = state if previous in (None, HostState.UNKNOWN) else previous
        change = self.flaps.record(host.name, "", state.value, was.value, now)
        events.extend([] if change is None else [
            Event(HOST_FLAPPING, host.name, now, change.to_json())])
        return self.flaps.flapping(host.name, "")


_steps = st.lists(st.tuples(st.sampled_from(["HTB", "SHUT", "expire", "metric"]),
                            st.sampled_from(["a", "b"]), st.floats(0.5, 100)), max_size=80)


@given(_steps)
def test_a_steady_heartbeat_skips_the_detector_and_changes_nothing(
        steps: list[tuple[str, str, float]]) -> None:
    """Heartbeats of a host with no history do not ask the detector (issue 16's fast path):
    the events, the histories and what flaps are those of asking it every time, whatever
    mix of heartbeats, shutdowns, timeouts and metric histories comes."""
    registries = [cls(grace=5, default_interval=10, flaps=FlapDetector(10, 20))
                  for cls in (Registry, _AsksEveryTime)]
    now = 1000.0
    seen: list[list[Any]] = [[], []]
    for kind, name, dt in steps:
        now += dt
        for registry, out in zip(registries, seen, strict=True):
            if kind == "expire":
                out.append(registry.expire(now))
            elif kind == "metric":  # a metric's history makes the host tracked
                assert registry.flaps is not None
                registry.flaps.record(name, "cpu.x", "CRITICAL" if dt > 50 else "OK", "OK", now)
            else:
                outcome = registry.apply({"ID": kind, "name": name}, ("192.0.2.1", 1), now)
                out.append((outcome.events, outcome.replies))
    fast, slow = registries
    assert seen[0] == seen[1]
    assert fast.flaps is not None and slow.flaps is not None
    assert [(h, s, list(f.history), f.flapping) for h, s, f in fast.flaps.items()] == \
        [(h, s, list(f.history), f.flapping) for h, s, f in slow.flaps.items()]


_detector_steps = st.lists(st.one_of(
    st.tuples(st.just("record"), st.sampled_from(["a", "b", "c"]),
              st.sampled_from(["", "cpu.load"]), st.sampled_from(["UP", "DOWN"])),
    st.tuples(st.just("forget"), st.sampled_from(["a", "b", "c"]),
              st.sampled_from([None, "", "cpu.load"]), st.just("")),
    st.tuples(st.just("restore"), st.sampled_from(["a", "b", "c"]),
              st.sampled_from(["", "cpu.load"]), st.sampled_from(["flapping", "steady"])),
), max_size=120)


@given(_detector_steps)
def test_the_flapping_count_is_that_of_a_walk(steps: list[tuple[str, str, Any, str]]) -> None:
    """``flapping_now`` (what ``/api/0/status`` and the gauge read, without walking every
    history: after a mass outage every host has one) always equals a count over
    ``items()``, whatever mix of evaluations, forgotten hosts and restores comes."""
    detector = FlapDetector()
    last: dict[tuple[str, str], str] = {}
    for now, (step, host, subject, value) in enumerate(steps):
        if step == "record":
            previous = last.get((host, subject), "UP")
            detector.record(host, subject, value, previous, float(now))
            last[(host, subject)] = value
        elif step == "forget":
            detector.forget(host, subject)
        else:
            history = alternating(HISTORY) if value == "flapping" else ["UP"] * HISTORY
            detector.restore([(host, subject, history, value == "flapping", float(now))])
        assert detector.flapping_now == sum(1 for _, _, f in detector.items() if f.flapping)
