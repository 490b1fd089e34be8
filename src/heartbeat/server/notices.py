"""Which notifications servers sharing a store have sent: one voice across a failover.

Servers sharing a PostgreSQL store all evaluate the same events; only the
leader (``heartbeat.server.leader``) sends. The :class:`NoticeLedger` is what
lets a new leader send what the old one had not sent, and nothing it had:

- every notified event has a **notice key** that every server derives alike
  (:func:`notice_of`): a host's state (``host:<name>`` = ``down``/``up``), a
  metric's level (``alert:<host>:<path>`` = its level), or a one-shot
  (``boot:<host>:<boot_time>``, ``message:<host>:<level>:<text>:<10 s bucket>``);
- the leader records a **mark** (the key's last notified state) once a
  notification was sent (or finally failed); marks are rows of the store's
  ``notices`` table, written with the store's next batch;
- a follower remembers the recent notified events it saw per key (:meth:`seen`);
  when it becomes the leader it reads the marks and sends, per key, the
  remembered events after the mark that change its state (:meth:`catch_up`): a
  host that went DOWN and came back while nobody led gets both notices;
- a state key's notification is sent only when its state differs from the
  mark (a host DOWN the old leader had notified is not notified again).

Send first, mark after: a leader that dies between a send and the write of its
mark (at most one store flush, ``store_flush_interval``) has that notification
sent again by the next leader, once. Nothing is lost and nothing is sent more
than twice. docs/HA.md.

Pure: no reactor, no store; times are given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from heartbeat.events import ALERT, HOST_BOOT, HOST_DOWN, HOST_MESSAGE, HOST_UP, JOB, Event
from heartbeat.server.tables import NOTICES, Tables, Write

__all__ = ["ONE_SHOT", "Notice", "NoticeLedger", "notice_of", "prune_marks", "read_marks",
           "write_marks"]

ONE_SHOT: Final = "sent"
"""The state of a one-shot key (a boot, a message): sent or not."""
RESTING: Final = {"host": "up", "alert": "OK", "job": "OK"}
"""The state a key has when it has no mark: a host that was never notified is up."""
MESSAGE_BUCKET: Final = 10.0
"""A message heard by several servers a few ms apart has one key (its 10 s bucket)."""


@dataclass(frozen=True, slots=True)
class Notice:
    """What a notified event is about (``key``) and what it says about it (``state``)."""

    key: str
    state: str

    @property
    def one_shot(self) -> bool:
        return self.state == ONE_SHOT

    @property
    def resting(self) -> str | None:
        return RESTING.get(self.key.split(":", 1)[0])


def notice_of(event: Event) -> Notice | None:
    """The notice key and state of a notified event; None for one not deduplicated across
    servers (a reminder: only the leader sends it, from the alert states in the store)."""
    host, data = event.host, event.data
    if event.kind == HOST_DOWN:
        return Notice(f"host:{host}", "down")
    if event.kind == HOST_UP:
        return Notice(f"host:{host}", "up")
    if event.kind == ALERT:
        if data.get("reminder"):
            return None
        return Notice(f"alert:{host}:{data.get('metric_path', '')}", str(data.get("level")))
    if event.kind == HOST_BOOT:
        return Notice(f"boot:{host}:{data.get('boot_time')}", ONE_SHOT)
    if event.kind == HOST_MESSAGE:
        bucket = int(event.ts // MESSAGE_BUCKET)
        return Notice(f"message:{host}:{data.get('level')}:{data.get('text')}:{bucket}",
                      ONE_SHOT)
    if event.kind == JOB:
        return Notice(f"job:{data.get('job', '')}", str(data.get("level")))
    return None


class NoticeLedger:
    """The marks this server knows and the events it saw while it did not lead.

    ``keep``: how long (s) a follower remembers a one-shot event for a catch-up;
    ``limit``: for how many keys at most (the least recently heard go first), each
    with its last ``PER_KEY`` events.
    """

    PER_KEY: Final = 16

    def __init__(self, *, keep: float = 600.0, limit: int = 10_000) -> None:
        self.keep = keep
        self.limit = limit
        self.marks: dict[str, str] = {}
        self._seen: dict[str, list[tuple[Notice, Event]]] = {}
        self._dirty: dict[str, tuple[str, float]] = {}
        self.duplicates_skipped = 0

    # -- as a follower
    def seen(self, notice: Notice, event: Event) -> None:
        """A notified event this server did not send (it did not lead): kept for a catch-up."""
        heard = self._seen.pop(notice.key, [])
        heard.append((notice, event))
        del heard[:-self.PER_KEY]
        self._seen[notice.key] = heard
        while len(self._seen) > self.limit:
            del self._seen[next(iter(self._seen))]

    # -- becoming the leader
    def catch_up(self, marks: Mapping[str, tuple[str, float]], now: float) -> list[Event]:
        """Take the store's ``marks`` (key -> state, when it was marked); the remembered
        events they do not cover, oldest first.

        Of a state key's events, those after its mark are due, less a first run saying
        what the mark says (the old leader sent that change; this server heard it a little
        later). No mark: the resting state, and every event is after it. A one-shot is due
        when unmarked and not older than ``keep``. The caller sends what is due as the
        leader does any event.
        """
        self.marks = {key: state for key, (state, _at) in marks.items()}
        due: list[Event] = []
        for key, heard in self._seen.items():
            notice = heard[-1][0]
            if notice.one_shot:
                due.extend(event for _, event in heard[-1:]
                           if event.ts >= now - self.keep and key not in self.marks)
                continue
            state, at = marks.get(key, (notice.resting or "", float("-inf")))
            after = [(n, e) for n, e in heard if e.ts > at]
            while after and after[0][0].state == state:
                del after[0]
            self.duplicates_skipped += len(heard) - len(after)
            due.extend(event for _, event in after)
        self._seen.clear()
        due.sort(key=lambda event: event.ts)
        return due

    # -- as the leader
    def due(self, notice: Notice) -> bool:
        """Whether the leader sends ``notice``: a one-shot always (a catch-up checks its mark
        first), a state when it is not the key's marked one."""
        if notice.one_shot:
            return True
        known = self.marks.get(notice.key, notice.resting)
        if known == notice.state:
            self.duplicates_skipped += 1
            return False
        return True

    def sending(self, notice: Notice) -> None:
        """The leader hands ``notice`` to its channels: this server will not send it again."""
        if not notice.one_shot:
            self.marks[notice.key] = notice.state

    def settled(self, notices: Iterable[Notice], now: float) -> None:
        """Sent (or given up on): the marks of ``notices`` go to the store with its next
        batch."""
        for notice in notices:
            self._dirty[notice.key] = (notice.state, now)

    def take_dirty(self) -> list[tuple[str, str, float]]:
        """The marks to write: (key, state, at)."""
        dirty, self._dirty = self._dirty, {}
        return [(key, state, at) for key, (state, at) in dirty.items()]

    def to_json(self) -> dict[str, Any]:
        return {"marks": len(self.marks),
                "remembered": sum(len(heard) for heard in self._seen.values()),
                "duplicates_skipped": self.duplicates_skipped,
                "marks_unwritten": len(self._dirty)}


def read_marks(tables: Tables) -> dict[str, tuple[str, float]]:
    """Every mark in the store: key -> the state last notified, and when it was marked."""
    return {key: (state, at) for key, state, at, _node in tables.rows(NOTICES)}


def write_marks(ledger: NoticeLedger, node: str) -> list[Write]:
    """The ledger's new marks as one write of the store's next batch (a store source)."""
    rows = [(key, state, at, node) for key, state, at in ledger.take_dirty()]
    if not rows:
        return []
    return [lambda tables: tables.put(NOTICES, rows)]


def prune_marks(keep: float) -> Callable[[Tables, float], None]:
    """A store maintenance task: one-shot marks older than ``keep`` go (state marks stay:
    they are the last state of their subject, however old)."""

    def prune(tables: Tables, now: float) -> None:
        old = [(key,) for key, state, at, _node in tables.rows(NOTICES, state=ONE_SHOT)
               if at < now - keep]
        tables.delete(NOTICES, old)

    return prune
