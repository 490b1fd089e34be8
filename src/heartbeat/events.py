"""Events and the one bus they travel on.

The registry, the alerting engine and the edges produce :class:`Event` values;
the journal, the WebSocket hub, the notifier, DNS and the store consume them.
Who hears which kind is one table, in ``heartbeat.server.compose``.

Delivery is synchronous and causal: an event published while another is being
delivered (an alert raised by a subscriber of ``host.plugins``) waits until
every subscriber has had the one that caused it, so all of them see events in
the order they were caused, breadth-first, and no delivery ever nests inside
another. A subscriber must only queue work, never do I/O inline. A subscriber
that raises is reported through ``on_error`` and never stops delivery to the
others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from heartbeat.text import json_bytes

__all__ = [
    "ALERT",
    "ALERT_FLAPPING",
    "HOST_ADDRESS",
    "HOST_BOOT",
    "HOST_COMMAND",
    "HOST_DOWN",
    "HOST_FLAPPING",
    "HOST_MESSAGE",
    "HOST_NEW",
    "HOST_PLUGINS",
    "HOST_REMOVED",
    "HOST_RESULT",
    "HOST_UNREACHABLE",
    "HOST_UP",
    "JOB",
    "JOB_PING",
    "PROBLEM_STILL",
    "RECEIVED",
    "Event",
    "EventBus",
    "Subscriber",
]

RECEIVED: Final = "message"  # every accepted datagram, as received
HOST_NEW: Final = "host.new"  # first sight of a host
HOST_UP: Final = "host.up"
HOST_DOWN: Final = "host.down"  # data["reason"]: "timeout" or "shutdown"
HOST_BOOT: Final = "host.boot"
HOST_MESSAGE: Final = "host.msg"  # a MSG from the host
HOST_RESULT: Final = "host.result"  # a RES, or a command that failed after its retries
HOST_COMMAND: Final = "host.command"  # a CMD/UPD queued for a host
HOST_ADDRESS: Final = "host.address"  # first address, or a changed one
HOST_PLUGINS: Final = "host.plugins"  # new plugin data stored
HOST_REMOVED: Final = "host.removed"
ALERT: Final = "alert"  # a threshold transition or reminder
HOST_UNREACHABLE: Final = "host.unreachable"  # silent while its parents are down
HOST_FLAPPING: Final = "host.flapping"  # a host's state started or stopped flapping
ALERT_FLAPPING: Final = "alert.flapping"  # a metric's level started or stopped flapping
PROBLEM_STILL: Final = "problem.still"  # a problem held back (maintenance, silence) outlasted it
JOB: Final = "job"  # a cron job's level changed (late, failed, running too long, recovered)
JOB_PING: Final = "job.ping"  # a cron job's run started or ended (a ping); host: the job's


@dataclass(slots=True)
class Event:
    """Something that happened to a host at ``ts`` (Unix seconds).

    A value: every subscriber of its kind is handed the same one, and none changes it.
    Not ``frozen``, for speed alone: a frozen dataclass sets each field through
    ``object.__setattr__``, 3.2 µs an event against 0.8 µs on this project's
    benchmark machine, and the server makes two to four events a datagram
    (docs/PERFORMANCE.md, issue 16). It was never hashable either (``data`` is a dict).
    """

    kind: str
    host: str
    ts: float
    data: dict[str, Any] = field(default_factory=dict)
    raw: bytes | None = field(default=None, compare=False)
    """For RECEIVED: the message's JSON text exactly as it arrived (written verbatim)."""
    packed: bytes | None = field(default=None, compare=False)
    """For RECEIVED: ``raw`` as the zlib stream it arrived in, when it did (kept as is)."""

    def to_json(self) -> dict[str, Any]:
        """The shape sent on the WebSocket and written to the journal."""
        return {"type": self.kind, "host": self.host, "ts": self.ts, **self.data}

    def to_bytes(self) -> bytes:
        """``to_json`` as UTF-8 JSON, splicing in ``raw`` rather than re-encoding it."""
        if self.raw is not None and 10 not in self.raw and "message" in self.data:  # LF
            rest = {k: v for k, v in self.data.items() if k != "message"}
            head = json_bytes({"type": self.kind, "host": self.host, "ts": self.ts, **rest})
            return head[:-1] + b',"message":' + self.raw + b"}"
        return json_bytes(self.to_json())


Subscriber = Callable[[Event], None]


class EventBus:
    """Synchronous, causal publish/subscribe keyed by event kind (see the module's doc).

    A ``message`` event is routed by its message's ``ID`` as well: a subscriber that
    names ``ids`` hears only those, and a heartbeat never calls the store's PLG
    recorder or the jobs' JOB reader (two calls of a datagram's twenty, issue 16).
    """

    def __init__(self, on_error: Callable[[Subscriber, Event, BaseException], None]) -> None:
        self._rows: list[tuple[Subscriber, frozenset[str] | None, frozenset[str],
                               frozenset[str] | None]] = []
        """Every subscription in order: subscriber, kinds (None: all but the excluded),
        excluded kinds, message IDs (None: all). The routes below are made from it."""
        self._by_kind: dict[str, list[Subscriber]] = {}
        self._by_id: dict[str, list[Subscriber]] = {}
        """Who hears a ``message`` of an ID some subscription names; any other ID's route
        is the kind's (the subscribers that name no IDs)."""
        self._on_error = on_error
        self._queue: deque[Event] = deque()
        self._delivering = False

    def subscribe(self, subscriber: Subscriber, kinds: Iterable[str] | None = None, *,
                  exclude: Iterable[str] = (), ids: Iterable[str] | None = None) -> None:
        """Deliver events of ``kinds`` (all but ``exclude`` when None) to ``subscriber``;
        of ``message`` events, only those whose message's ``ID`` is one of ``ids``
        when given (then ``kinds`` must be just ``message``).

        Subscribers of one kind hear it in the order they subscribed.
        """
        wanted = None if kinds is None else frozenset(kinds)
        if ids is not None and wanted != frozenset((RECEIVED,)):
            raise ValueError(f"ids narrow {RECEIVED!r} events alone, not {kinds!r}")
        self._rows.append((subscriber, wanted, frozenset(exclude),
                           None if ids is None else frozenset(ids)))
        self._routes_changed()

    def subscribers(self, kind: str, message_id: str | None = None) -> list[Subscriber]:
        """Who hears ``kind`` (a ``message`` of ``message_id``), in delivery order (a copy)."""
        return self._route(kind, message_id)

    def _route(self, kind: str, message_id: str | None = None) -> list[Subscriber]:
        return [subscriber for subscriber, kinds, excluded, ids in self._rows
                if (kind not in excluded if kinds is None else kind in kinds)
                and (ids is None or message_id in ids)]

    def _routes_changed(self) -> None:
        self._by_kind.clear()  # in place: a delivery under way holds these dicts
        named = {message_id for *_, ids in self._rows if ids is not None for message_id in ids}
        self._by_id.clear()
        self._by_id.update((message_id, self._route(RECEIVED, message_id))
                           for message_id in named)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._rows = [row for row in self._rows if row[0] != subscriber]
        self._routes_changed()

    def publish(self, event: Event) -> None:
        """Deliver ``event`` now, or after the events already waiting when called from
        inside a delivery (a subscriber publishing what the event caused)."""
        self._queue.append(event)
        if not self._delivering:
            self._deliver()

    def publish_all(self, events: Iterable[Event]) -> None:
        self._queue.extend(events)
        if not self._delivering:
            self._deliver()

    def _deliver(self) -> None:
        queue = self._queue
        by_kind = self._by_kind
        by_id = self._by_id
        self._delivering = True
        try:
            while queue:
                event = queue.popleft()
                kind = event.kind
                subscribers = by_kind.get(kind)
                if subscribers is None:  # kinds are the module's constants: a bounded table
                    subscribers = by_kind[kind] = self._route(kind)
                if kind == RECEIVED and by_id:
                    message = event.data.get("message")
                    message_id = message.get("ID") if type(message) is dict else None
                    if type(message_id) is str:
                        subscribers = by_id.get(message_id, subscribers)
                for subscriber in subscribers:
                    try:
                        subscriber(event)
                    except Exception as e:
                        self._on_error(subscriber, event, e)
        except BaseException:
            queue.clear()  # only ``on_error`` itself raising gets here (a test's bus)
            raise
        finally:
            self._delivering = False
