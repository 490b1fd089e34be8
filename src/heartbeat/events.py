"""Events and the one bus they travel on.

The registry, the alerting engine and the edges produce :class:`Event` values;
the journal, the WebSocket hub, the notifier, DNS and the store consume them.
Delivery is synchronous and in order: a subscriber must only queue work, never
do I/O inline. A subscriber that raises is reported through ``on_error`` and
never stops delivery to the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "ALERT",
    "HOST_ADDRESS",
    "HOST_BOOT",
    "HOST_COMMAND",
    "HOST_DOWN",
    "HOST_MESSAGE",
    "HOST_NEW",
    "HOST_PLUGINS",
    "HOST_REMOVED",
    "HOST_RESULT",
    "HOST_UP",
    "RECEIVED",
    "Event",
    "EventBus",
    "Subscriber",
    "json_bytes",
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


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a host at ``ts`` (Unix seconds)."""

    kind: str
    host: str
    ts: float
    data: dict[str, Any] = field(default_factory=dict)
    raw: bytes | None = field(default=None, compare=False)
    """For RECEIVED: the message's JSON text exactly as it arrived (written verbatim)."""

    def to_json(self) -> dict[str, Any]:
        """The shape sent on the WebSocket and written to the journal."""
        return {"type": self.kind, "host": self.host, "ts": self.ts, **self.data}

    def to_bytes(self) -> bytes:
        """``to_json`` as UTF-8 JSON, splicing in ``raw`` rather than re-encoding it."""
        if self.raw is not None and b"\n" not in self.raw and "message" in self.data:
            rest = {k: v for k, v in self.data.items() if k != "message"}
            head = json_bytes({"type": self.kind, "host": self.host, "ts": self.ts, **rest})
            return head[:-1] + b',"message":' + self.raw + b"}"
        return json_bytes(self.to_json())


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON of ``value``.

    JSON text may carry lone surrogates (``"\\ud800"``) that have no UTF-8 form;
    such values are written with ASCII escapes instead, which is still valid JSON.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")


Subscriber = Callable[[Event], None]


class EventBus:
    """Synchronous publish/subscribe keyed by event kind."""

    def __init__(self, on_error: Callable[[Subscriber, Event, BaseException], None]) -> None:
        self._by_kind: dict[str, list[Subscriber]] = {}
        self._all: list[Subscriber] = []
        self._on_error = on_error

    def subscribe(self, subscriber: Subscriber, kinds: Iterable[str] | None = None) -> None:
        """Deliver events of ``kinds`` (all when None) to ``subscriber``, in publish order."""
        if kinds is None:
            self._all.append(subscriber)
            for subscribers in self._by_kind.values():
                subscribers.append(subscriber)
            return
        for kind in kinds:
            self._by_kind.setdefault(kind, list(self._all)).append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._all:
            self._all.remove(subscriber)
        for subscribers in self._by_kind.values():
            if subscriber in subscribers:
                subscribers.remove(subscriber)

    def publish(self, event: Event) -> None:
        for subscriber in self._by_kind.get(event.kind, self._all):
            try:
                subscriber(event)
            except Exception as e:
                self._on_error(subscriber, event, e)

    def publish_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.publish(event)
