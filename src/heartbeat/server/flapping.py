"""Flap detection, Nagios-style: one notice when a state starts flapping, one when it settles.

Pure code: no reactor, no clock. Each evaluation of a host's state (every
heartbeat is one of UP, every timeout one of DOWN) and of a metric's level (every
sample) is recorded; over the last 21 evaluations the 20 changes between
neighbours are weighted from 0.75 (oldest) to 1.25 (newest) and summed into a
percent state change, exactly as Nagios computes it. A state starts flapping when
that reaches the high threshold (30 % by default) and stops when it falls to the
low one (20 %); in between it keeps what it was. While a state flaps, its
transitions notify nobody.

Only states that changed within their last 21 evaluations have a history; a
steady one costs nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from sys import intern
from typing import Final

__all__ = ["HISTORY", "FlapChange", "FlapDetector", "FlapRow", "FlapState", "percent_state_change"]

HISTORY: Final = 21
"""Evaluations looked at (Nagios's MAX_STATE_HISTORY_ENTRIES)."""
_LOW_WEIGHT: Final = 0.75
_HIGH_WEIGHT: Final = 1.25
HOST: Final = ""
"""The subject of a host's own state (a metric's subject is its path)."""


def percent_state_change(history: Sequence[str]) -> float:
    """Nagios's weighted percent state change of ``history`` (oldest first, at most 21).

    A shorter history counts as if its oldest state had been there before it.
    """
    offset = HISTORY - len(history)
    changes = 0.0
    for i in range(1, len(history)):
        if history[i] != history[i - 1]:
            x = i + offset  # 1 (oldest change) .. 20 (newest)
            changes += (x - 1) * (_HIGH_WEIGHT - _LOW_WEIGHT) / (HISTORY - 2) + _LOW_WEIGHT
    return changes * 100.0 / (HISTORY - 1)


@dataclass(slots=True)
class FlapState:
    """One host state's or metric's recent evaluations and whether it is flapping."""

    history: deque[str]
    flapping: bool = False
    percent: float = 0.0
    since: float | None = None
    """When it started flapping."""


FlapRow = tuple[str, str, tuple[str, ...], bool, float | None]
"""A history as the store keeps it: host, subject, history, flapping, since."""


@dataclass(frozen=True, slots=True)
class FlapChange:
    """A state started (``flapping``) or stopped flapping at ``ts``; ``state`` is its
    current one (UP, DOWN, OK, CRITICAL...)."""

    host: str
    subject: str
    flapping: bool
    percent: float
    state: str
    ts: float
    since: float | None

    def to_json(self) -> dict[str, object]:
        return {"subject": self.subject, "flapping": self.flapping,
                "percent": round(self.percent, 1), "state": self.state, "since": self.since}


class FlapDetector:
    """Percent state change per host state and per metric, and which of them flap."""

    def __init__(self, low: float = 20.0, high: float = 30.0) -> None:
        if not 0 <= low <= high <= 100:
            raise ValueError(f"flapping thresholds must satisfy 0 <= low <= high <= 100, "
                             f"got low {low}, high {high}")
        self.low = low
        self.high = high
        self._states: dict[str, dict[str, FlapState]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self.flapping_now = 0
        """How many histories flap: kept as they change, for ``/api/0/status`` and the
        ``heartbeat_flapping`` gauge (after a mass outage every host has a history)."""

    def record(self, host: str, subject: str, state: str, previous: str,
               now: float) -> FlapChange | None:
        """One evaluation of ``host``'s ``subject`` at ``state`` (it was at ``previous``);
        the change in flapping it makes, if any."""
        by_subject = self._states.get(host)
        found = None if by_subject is None else by_subject.get(subject)
        if found is None:
            if state == previous:
                return None  # steady and without a history: nothing to remember
            found = FlapState(deque([previous] * (HISTORY - 1), maxlen=HISTORY))
            self._states.setdefault(host, {})[subject] = found
        found.history.append(state)
        self._dirty.add((host, subject))
        found.percent = percent_state_change(found.history)
        change = None
        if not found.flapping and found.percent >= self.high:
            found.flapping, found.since = True, now
            self.flapping_now += 1
            change = FlapChange(host, subject, True, found.percent, state, now, now)
        elif found.flapping and found.percent <= self.low:
            change = FlapChange(host, subject, False, found.percent, state, now, found.since)
            found.flapping, found.since = False, None
            self.flapping_now -= 1
        if not found.flapping and found.history.count(state) == HISTORY:
            self._drop(host, subject)
        return change

    def _drop(self, host: str, subject: str) -> None:
        self._dirty.add((host, subject))
        by_subject = self._states[host]
        if by_subject.pop(subject).flapping:
            self.flapping_now -= 1
        if not by_subject:
            del self._states[host]

    def tracks(self, host: str) -> bool:
        """Whether any state of ``host`` has a history."""
        return host in self._states

    def get(self, host: str, subject: str) -> FlapState | None:
        by_subject = self._states.get(host)
        return None if by_subject is None else by_subject.get(subject)

    def flapping(self, host: str, subject: str) -> bool:
        found = self.get(host, subject)
        return found is not None and found.flapping

    def flapping_subjects(self, host: str) -> list[str]:
        return sorted(s for s, f in self._states.get(host, {}).items() if f.flapping)

    def forget(self, host: str, subject: str | None = None) -> None:
        """Drop a removed host's histories (or one subject's, e.g. a cleared metric)."""
        if subject is None:
            dropped = self._states.pop(host, {})
            self._dirty.update((host, s) for s in dropped)
            self.flapping_now -= sum(1 for found in dropped.values() if found.flapping)
        elif self.get(host, subject) is not None:
            self._drop(host, subject)

    def items(self) -> Iterator[tuple[str, str, FlapState]]:
        """Every history."""
        for host, by_subject in self._states.items():
            for subject, found in by_subject.items():
                yield host, subject, found

    def take_dirty(self) -> tuple[list[FlapRow], list[tuple[str, str]]]:
        """Histories changed since the last call (for the store), and those dropped.

        Each changed one as a row (host, subject, history, flapping, since), the history
        a tuple: the store's writer encodes it, off the reactor's thread. When 100,000
        hosts came back at once, copying each history into a new state and encoding it
        here held one flush's turn for 0.4 s."""
        changed: list[FlapRow] = []
        dropped: list[tuple[str, str]] = []
        states = self._states
        for host, subject in self._dirty:
            by_subject = states.get(host)
            found = None if by_subject is None else by_subject.get(subject)
            if found is None:
                dropped.append((host, subject))
            else:
                changed.append((host, subject, tuple(found.history), found.flapping,
                                found.since))
        self._dirty.clear()
        return changed, dropped

    def restore(self, items: Iterable[tuple[str, str, Sequence[str], bool, float | None]]
                ) -> None:
        """Histories kept across a restart: (host, subject, history, flapping, since)."""
        for host, subject, history, flapping, since in items:
            # One string per state name, as the live histories hold: read from the store,
            # each entry was its own (21 a history, 100 MB after a fleet's fall).
            found = FlapState(deque(map(intern, history), maxlen=HISTORY), flapping,
                              percent_state_change(list(history)[-HISTORY:]), since)
            by_subject = self._states.setdefault(host, {})
            old = by_subject.get(subject)
            self.flapping_now += int(flapping) - int(old is not None and old.flapping)
            by_subject[subject] = found

    def __len__(self) -> int:
        return sum(len(by_subject) for by_subject in self._states.values())
