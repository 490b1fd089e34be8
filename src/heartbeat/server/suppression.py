"""Whether a notice goes out now: maintenance, silences, acknowledgements and flapping.

Pure code: no reactor, no I/O, ``now`` is an argument. The notifier asks
:meth:`Suppression.decide` about every event it could notify; the answer is None
(notify) or the :class:`Hold` that keeps it back. The same
:class:`~heartbeat.server.maintenance.MaintenanceCalendar`,
:class:`~heartbeat.server.silences.SilenceBook` and
:class:`~heartbeat.server.acks.AckBook` answer the API and the pages, so what
they show is what the notifier does.

- **Maintenance** and **silences** hold every notice about what they cover. A
  *problem* held back (a host DOWN, an alert reaching a level, a cron job on the
  host late, failed or running too long: key :func:`job_key`) is remembered; when
  nothing holds it any more and it is still there, :meth:`Suppression.released`
  names it once, for a "still" notice. Its recovery, if it comes first, is not
  notified either: nobody heard of the problem.
- **Acknowledgements** hold the reminders of the problem at the acknowledged level.
- **Flapping** transitions (marked ``flapping`` by the registry or the engine) are
  held; the start and the end of the flapping are notices of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final

from heartbeat.events import (
    ALERT,
    ALERT_FLAPPING,
    HOST_BOOT,
    HOST_DOWN,
    HOST_FLAPPING,
    HOST_MESSAGE,
    HOST_UP,
    JOB,
    Event,
)
from heartbeat.server.acks import HOST as HOST_TARGET
from heartbeat.server.acks import AckBook
from heartbeat.server.maintenance import MaintenanceCalendar
from heartbeat.server.silences import SilenceBook

__all__ = [
    "ACKNOWLEDGED",
    "DOWN_KEY",
    "FLAPPING",
    "MAINTENANCE",
    "SILENCED",
    "UNCOVERED",
    "UNNOTIFIED",
    "HeldProblem",
    "Hold",
    "Suppression",
    "job_key",
    "job_name",
]

MAINTENANCE: Final = "maintenance"
SILENCED: Final = "silenced"
ACKNOWLEDGED: Final = "acknowledged"
FLAPPING: Final = "flapping"
UNNOTIFIED: Final = "problem_not_notified"
"""A recovery of a problem that was held back and never notified."""
DOWN_KEY: Final = HOST_DOWN
"""The key of a host's own problem (DOWN) among its held problems; an alert's key is
its metric path, a job's :func:`job_key`."""
JOB_PREFIX: Final = "job:"
UNCOVERED: Final[Mapping[str, Any]] = MappingProxyType({
    "in_maintenance": False, "maintenance": [], "silenced_by": None, "acknowledged": None,
    "markers": []})
""":meth:`Suppression.annotations` of a problem nothing covers (read only: copy it)."""


def job_key(name: str) -> str:
    """A job's key among its host's held problems, and the subject its silences match
    (``job:<name>``; ``job:*`` silences every job of the host)."""
    return f"{JOB_PREFIX}{name}"


def job_name(key: str) -> str | None:
    """The job a held problem's key is about, or None (a host's DOWN, an alert)."""
    return key[len(JOB_PREFIX):] if key.startswith(JOB_PREFIX) else None


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a notice is held back: ``reason`` (counted), ``label`` (for people)."""

    reason: str
    label: str
    ref: str | None = None
    """The window's or silence's id, the acknowledging user."""


@dataclass(frozen=True, slots=True)
class HeldProblem:
    """A problem whose notice was held back, to be notified once nothing holds it."""

    host: str
    key: str
    level: str
    reason: str
    label: str
    since: float
    """When its notice was first held back."""

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "key": self.key, "level": self.level,
                "reason": self.reason, "label": self.label, "since": self.since}


class Suppression:
    """The notifier's decision, over the calendar, the silences and the acknowledgements."""

    def __init__(self, calendar: MaintenanceCalendar, silences: SilenceBook,
                 acks: AckBook) -> None:
        self.calendar = calendar
        self.silences = silences
        self.acks = acks
        self._held: dict[tuple[str, str], HeldProblem] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._walk: list[tuple[str, str]] | None = None
        """The held problems :meth:`released` has yet to look at, while a walk lasts."""
        self._walk_again = False

    # What holds a host's notices
    def hold(self, host: str, subject: str, now: float) -> Hold | None:
        """The maintenance window or silence holding notices of ``host``'s ``subject``."""
        windows = self.calendar.for_host(host, now)
        if windows:
            return Hold(MAINTENANCE, windows[0].label, windows[0].id)
        silence = self.silences.matching(host, subject, now)
        if silence is not None:
            return Hold(SILENCED, silence.label, silence.id)
        return None

    def _acknowledged(self, host: str, target: str, level: str) -> Hold | None:
        ack = self.acks.holding(host, target, level)
        if ack is None:
            return None
        by = f" by {ack.author}" if ack.author else ""
        return Hold(ACKNOWLEDGED, f"acknowledged{by}", ack.author)

    def annotations(self, host: str, key: str, now: float) -> dict[str, Any]:
        """What covers ``host``'s problem ``key`` (:data:`DOWN_KEY`: the host's own, else a
        metric path) at ``now``, as the API, the feed and the pages show it.

        ``in_maintenance`` and ``maintenance`` (the open windows' ids), ``silenced_by``
        (the silence holding it), ``acknowledged`` (who took it on), and ``markers``:
        the same as tags for the UI (``kind``, ``text``, ``by``, ``until``).
        """
        windows = self.calendar.for_host(host, now)
        silence = self.silences.matching(host, key, now)
        ack = self.acks.get(host, HOST_TARGET if key == DOWN_KEY else key)
        if not windows and silence is None and ack is None:  # most hosts: nothing to build
            return {**UNCOVERED, "maintenance": [], "markers": []}
        markers: list[dict[str, Any]] = []
        for window in windows:
            occurrence = window.timing.occurrence_at(now)
            markers.append({"kind": MAINTENANCE, "id": window.id, "text": window.label,
                            "until": None if occurrence is None else occurrence[1]})
        if silence is not None:
            markers.append({"kind": SILENCED, "id": silence.id, "text": silence.comment,
                            "by": silence.author, "until": silence.end})
        if ack is not None:
            markers.append({"kind": ACKNOWLEDGED, "text": ack.comment, "by": ack.author,
                            "level": ack.level, "at": ack.at})
        return {
            "in_maintenance": bool(windows), "maintenance": [w.id for w in windows],
            "silenced_by": None if silence is None else {
                "id": silence.id, "author": silence.author, "comment": silence.comment,
                "end": silence.end},
            "acknowledged": None if ack is None else ack.to_json(),
            "markers": markers,
        }

    # The decision
    def decide(self, event: Event, now: float) -> Hold | None:
        """None to notify ``event`` (as far as holds go), else what holds it back.

        Asked about every event the notifier gets, notified or not: the events of
        a held problem keep its remembered level up to date.
        """
        kind, host, data = event.kind, event.host, event.data
        if kind == ALERT:
            return self._alert(host, data, now)
        if kind == HOST_DOWN:
            if data.get("flapping"):
                return Hold(FLAPPING, "flapping")
            return self._problem(host, DOWN_KEY, "DOWN", HOST_DOWN, now)
        if kind == HOST_UP:
            if data.get("previous") == "DOWN" and self._forget(host, DOWN_KEY):
                return Hold(UNNOTIFIED, "its DOWN was held back and never notified")
            if data.get("flapping"):
                return Hold(FLAPPING, "flapping")
            return self.hold(host, HOST_UP, now)
        if kind in (HOST_BOOT, HOST_MESSAGE, HOST_FLAPPING):
            return self.hold(host, kind, now)
        if kind == ALERT_FLAPPING:
            return self.hold(host, str(data.get("metric_path", "")), now)
        if kind == JOB and host:  # a job on a host: its windows, silences of job:<name>
            return self._change(host, job_key(str(data.get("job", ""))), data, now)
        return None

    def _alert(self, host: str, data: dict[str, Any], now: float) -> Hold | None:
        path = str(data.get("metric_path", ""))
        level = str(data.get("level", ""))
        if data.get("cleared"):
            self._forget(host, path)
            return None
        if data.get("reminder"):
            hold = self.hold(host, path, now) or self._acknowledged(host, path, level)
            if hold is None:
                self._forget(host, path)  # notified now: nothing left to release
            return hold
        return self._change(host, path, data, now)

    def _change(self, host: str, key: str, data: dict[str, Any], now: float) -> Hold | None:
        """A problem ``key`` of ``host`` (an alert's metric path, a :func:`job_key`) changed
        level to ``data["level"]``: OK, worse (``notify``), or better but not OK."""
        level = str(data.get("level", ""))
        if level == "OK":
            if self._forget(host, key):
                return Hold(UNNOTIFIED, "the problem was held back and never notified")
            if data.get("flapping"):
                return Hold(FLAPPING, "flapping")
            return self.hold(host, key, now)
        if not data.get("notify", True):
            held = self._held.get((host, key))
            if held is not None:  # a held problem de-escalated: remember its level
                self._keep(replace(held, level=level))
            return None
        if data.get("flapping"):
            return Hold(FLAPPING, "flapping")
        return self._problem(host, key, level, key, now)

    def _problem(self, host: str, key: str, level: str, subject: str,
                 now: float) -> Hold | None:
        hold = self.hold(host, subject, now)
        if hold is None:
            self._forget(host, key)
            return None
        held = self._held.get((host, key))
        self._keep(HeldProblem(host, key, level, hold.reason, hold.label,
                               now if held is None else held.since))
        return hold

    # Held problems
    def _keep(self, held: HeldProblem) -> None:
        self._held[held.host, held.key] = held
        self._dirty.add((held.host, held.key))

    def _forget(self, host: str, key: str) -> bool:
        if self._held.pop((host, key), None) is None:
            return False
        self._dirty.add((host, key))
        return True

    def held(self, host: str | None = None) -> list[HeldProblem]:
        found = self._held.values() if host is None else (
            h for h in self._held.values() if h.host == host)
        return sorted(found, key=lambda h: (h.host, h.key))

    def released(self, now: float, current: Callable[[str, str], str | None],
                 limit: int | None = None) -> list[HeldProblem]:
        """Held problems nothing holds any more and that are still there, once each.

        ``current(host, key)`` is the problem's level now (``DOWN``, ``CRITICAL``...),
        or None when it is gone. A problem acknowledged at its level is dropped
        without a notice; one still held stays remembered.

        With ``limit``, one call looks at that many held problems at most, and the
        next goes on where it stopped (:attr:`releasing` while there are more): a
        window over a fleet that ends with 100,000 hosts DOWN released them in one
        turn of the reactor, 2.8 s without an answer. A walk looks at the problems
        held when it began; :meth:`walk_again` asks for another once it ends, for a
        change during it.
        """
        if self._walk is None:
            self._walk, self._walk_again = list(self._held), False
        walk = self._walk
        taken = len(walk) if limit is None else min(limit, len(walk))
        out = []
        for host, key in walk[:taken]:
            held = self._held.get((host, key))
            if held is None:
                continue
            level = current(host, key)
            if level is None:
                self._forget(host, key)
                continue
            subject = DOWN_KEY if key == DOWN_KEY else key
            if self.hold(host, subject, now) is not None:
                continue
            self._forget(host, key)
            target = HOST_TARGET if key == DOWN_KEY else key
            if self.acks.holding(host, target, level) is None:
                out.append(replace(held, level=level))
        del walk[:taken]
        if not walk:
            self._walk = list(self._held) if self._walk_again and self._held else None
            self._walk_again = False
        return out

    @property
    def releasing(self) -> bool:
        """A walk of :meth:`released` is unfinished: call it again."""
        return self._walk is not None

    def walk_again(self) -> None:
        """Something changed during a walk: walk every held problem again after it."""
        if self._walk is not None:
            self._walk_again = True

    def forget_host(self, host: str) -> None:
        for key in [k for h, k in self._held if h == host]:
            self._forget(host, key)

    def take_dirty(self) -> tuple[list[HeldProblem], list[tuple[str, str]]]:
        """Held problems changed since the last call (for the store), and those gone."""
        kept, gone = [], []
        for key in self._dirty:
            held = self._held.get(key)
            if held is None:
                gone.append(key)
            else:
                kept.append(held)
        self._dirty.clear()
        return kept, gone

    def restore(self, held: Iterable[HeldProblem]) -> None:
        for problem in held:
            self._held[problem.host, problem.key] = problem
