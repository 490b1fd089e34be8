"""NotifierService: bus events in, notifications out on every channel, never blocking ingest.

The bus subscriber only formats, routes and queues. Each channel has its own lane:
a bounded queue (``notify_queue_limit``; a counted, logged, journaled drop beyond),
a few sends in flight, a timeout per send (``notify_timeout``), bounded retries with
exponential backoff on the clock (``notify_retries``), and a storm guard: once more
than ``notify_burst`` different hosts were notified within ``notify_window`` on a
channel, further notifications are held and sent as one digest per window until a
window holds no more than ``notify_burst`` hosts. Every outcome is an event on the
bus (``notify.sent``, ``notify.failed``, ``notify.dropped``), so the journal records it.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool

from heartbeat.config.server import ServerConfig
from heartbeat.events import ALERT, HOST_BOOT, HOST_DOWN, HOST_MESSAGE, HOST_UP, Event, EventBus
from heartbeat.server.backoff import Backoff
from heartbeat.server.notify.base import Channel, DeliveryError, Notification, redact
from heartbeat.server.notify.message import Skip, digest, notification_for
from heartbeat.server.notify.routing import Router

__all__ = [
    "NOTIFIED_KINDS",
    "NOTIFY_DROPPED",
    "NOTIFY_FAILED",
    "NOTIFY_SENT",
    "ChannelStats",
    "NotifierService",
    "NotifySettings",
]

log = Logger()

NOTIFIED_KINDS: Final = (HOST_DOWN, HOST_UP, HOST_BOOT, HOST_MESSAGE, ALERT)
NOTIFY_SENT: Final = "notify.sent"
NOTIFY_FAILED: Final = "notify.failed"  # data["final"]: no more retries
NOTIFY_DROPPED: Final = "notify.dropped"  # the channel's queue was full


@dataclass(frozen=True)
class NotifySettings:
    burst: int = 10
    window: float = 30.0
    timeout: float = 15.0
    retries: int = 4
    queue_limit: int = 1000
    backoff: Backoff = field(default_factory=Backoff)
    max_in_flight: int = 4
    stop_timeout: float = 5.0
    """stopService waits this long (s) for sends in flight, then cancels them."""

    @classmethod
    def from_config(cls, config: ServerConfig) -> NotifySettings:
        return cls(burst=config.notify_burst, window=config.notify_window,
                   timeout=config.notify_timeout, retries=config.notify_retries,
                   queue_limit=config.notify_queue_limit,
                   stop_timeout=min(config.notify_timeout, 5.0))


@dataclass
class ChannelStats:
    """Counters of one channel for ``/api/0/status``."""

    sent: int = 0
    failed_attempts: int = 0
    retries: int = 0
    gave_up: int = 0
    dropped_queue_full: int = 0
    abandoned_at_stop: int = 0
    digests: int = 0
    digested: int = 0
    last_error: str | None = None
    last_error_ts: float | None = None


@dataclass(eq=False)
class _Delivery:
    note: Notification
    attempts: int = 0
    timed_out: bool = False


def _event_host(note: Notification) -> str:
    return note.hosts[0] if len(note.hosts) == 1 else ""


class _Lane:
    """One channel's queue, sends in flight, retry timers and storm digest."""

    def __init__(self, service: NotifierService, channel: Channel) -> None:
        self.service = service
        self.channel = channel
        self.settings = service.settings
        self.clock = service.clock
        self.queue: deque[_Delivery] = deque()
        self.in_flight: set[Deferred[None]] = set()
        self.waiting: dict[_Delivery, IDelayedCall] = {}
        self.recent: deque[tuple[float, str]] = deque()
        self.held: list[Notification] | None = None  # not None while a storm lasts
        self.overflow: list[Notification] = []  # held beyond queue_limit: dropped, reported once
        self.digest_call: IDelayedCall | None = None
        self.stats = ChannelStats()
        self._pumping = False
        self._closing = False

    # -- storm guard
    def offer(self, note: Notification) -> None:
        if self.held is not None:
            if len(self.held) < self.settings.queue_limit:
                self.held.append(note)
            else:
                self.overflow.append(note)
            return
        now = self.clock.seconds()
        while self.recent and self.recent[0][0] <= now - self.settings.window:
            self.recent.popleft()
        hosts = {host for _, host in self.recent} | set(note.hosts)
        if len(hosts) > self.settings.burst:
            log.warn("notify: {channel}: more than {burst} hosts within {window}s; "
                     "holding notifications for a digest", channel=self.channel.name,
                     burst=self.settings.burst, window=self.settings.window)
            self.held = [note]
            self.digest_call = self.clock.callLater(self.settings.window, self.send_digest)
            return
        self.recent.extend((now, host) for host in note.hosts)
        self.enqueue(note)

    def send_digest(self, again: bool = True) -> None:
        """Send what was held as one digest per recipient set.

        The storm ends with a window that held notifications for no more than
        ``burst`` hosts: a trickle (reminders, one flapping host) after a storm
        goes back to single messages instead of waiting for a silent window.
        """
        self.digest_call = None
        held, self.held = self.held or [], []
        if self.overflow:
            self.drop_overflow()
        groups: dict[tuple[str, ...], list[Notification]] = {}
        for note in held:
            groups.setdefault(note.recipients, []).append(note)
        for group in groups.values():
            if len(group) > 1:
                self.stats.digests += 1
                self.stats.digested += len(group)
            self.enqueue(digest(group))
        hosts = [host for note in held for host in note.hosts]
        if len(set(hosts)) <= self.settings.burst:
            self.held = None
            now = self.clock.seconds()
            self.recent = deque((now, host) for host in hosts)
            log.info("notify: {channel}: storm over, sending individually again",
                     channel=self.channel.name)
            return
        if again:
            self.digest_call = self.clock.callLater(self.settings.window, self.send_digest)

    # -- queue
    def enqueue(self, note: Notification) -> None:
        size, recipients = self.channel.max_recipients, note.recipients
        chunks = [recipients[i:i + size] for i in range(0, len(recipients), size)] or [()]
        for part in chunks:
            chunk = replace(note, recipients=part)
            if len(self.queue) + len(self.waiting) >= self.settings.queue_limit:
                self.drop(chunk)
                continue
            self.queue.append(_Delivery(chunk))
        self.pump()

    def drop(self, note: Notification) -> None:
        self.stats.dropped_queue_full += 1
        reason = f"queue full ({self.settings.queue_limit} waiting)"
        log.warn("notify: {channel}: dropped {title!r}: {reason}", channel=self.channel.name,
                 title=note.title, reason=reason)
        self.service.publish(NOTIFY_DROPPED, _event_host(note), {
            "channel": self.channel.name, "title": note.title, "hosts": list(note.hosts),
            "reason": reason})

    def drop_overflow(self) -> None:
        """One log line and one event for a window's worth of notifications beyond the limit."""
        dropped, self.overflow = self.overflow, []
        self.stats.dropped_queue_full += len(dropped)
        hosts = sorted({host for note in dropped for host in note.hosts})
        reason = (f"{len(dropped)} notification(s) beyond the digest's limit of "
                  f"{self.settings.queue_limit}")
        log.warn("notify: {channel}: dropped {reason}", channel=self.channel.name, reason=reason)
        self.service.publish(NOTIFY_DROPPED, "", {
            "channel": self.channel.name, "title": "storm overflow", "hosts": hosts,
            "reason": reason})

    def pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            while self.queue and (self._closing
                                  or len(self.in_flight) < self.settings.max_in_flight):
                self.attempt(self.queue.popleft())
        finally:
            self._pumping = False

    # -- sending
    def attempt(self, delivery: _Delivery) -> None:
        delivery.attempts += 1
        delivery.timed_out = False
        try:
            d = self.channel.send(delivery.note)
        except Exception:
            d = fail()
        # Not addTimeout: cancelling an HTTP request fails with ResponseNeverReceived, not
        # CancelledError, so the timeout is remembered here rather than read from the error.
        timer = self.clock.callLater(self.settings.timeout, self.time_out, delivery, d)
        d.addBoth(self.stop_timer, timer)
        self.in_flight.add(d)
        d.addCallbacks(self.sent, self.failed, callbackArgs=(delivery,), errbackArgs=(delivery,))
        d.addBoth(self.settled, d)

    @staticmethod
    def time_out(delivery: _Delivery, d: Deferred[None]) -> None:
        delivery.timed_out = True
        d.cancel()

    @staticmethod
    def stop_timer(result: object, timer: IDelayedCall) -> object:
        if timer.active():
            timer.cancel()
        return result

    def settled(self, _: object, d: Deferred[None]) -> None:
        self.in_flight.discard(d)
        self.pump()

    def sent(self, _: object, delivery: _Delivery) -> None:
        self.stats.sent += 1
        note = delivery.note
        self.service.publish(NOTIFY_SENT, _event_host(note), {
            "channel": self.channel.name, "title": note.title, "kind": note.kind,
            "hosts": list(note.hosts), "recipients": len(note.recipients),
            "attempts": delivery.attempts})

    def reason(self, failure: Failure, delivery: _Delivery) -> tuple[str, bool]:
        if delivery.timed_out:
            return f"timed out after {self.settings.timeout:g}s", False
        error = failure.value
        if isinstance(error, DeliveryError):
            text, permanent = error.reason, error.permanent
        else:
            text, permanent = f"{type(error).__name__}: {error}", False
        return redact(text, self.channel.secrets), permanent

    def failed(self, failure: Failure, delivery: _Delivery) -> None:
        reason, permanent = self.reason(failure, delivery)
        note = delivery.note
        now = self.clock.seconds()
        self.stats.failed_attempts += 1
        self.stats.last_error, self.stats.last_error_ts = reason, now
        final = permanent or self._closing or delivery.attempts > self.settings.retries
        data: dict[str, Any] = {
            "channel": self.channel.name, "title": note.title, "hosts": list(note.hosts),
            "reason": reason, "attempt": delivery.attempts, "final": final, "retry_in": None}
        if final:
            self.stats.gave_up += 1
            log.error("notify: {channel}: gave up on {title!r} after {attempts} attempt(s): "
                      "{reason}", channel=self.channel.name, title=note.title,
                      attempts=delivery.attempts, reason=reason)
        else:
            delay = self.settings.backoff.delay(delivery.attempts)
            data["retry_in"] = delay
            self.stats.retries += 1
            log.warn("notify: {channel}: sending {title!r} failed (attempt {attempt}): "
                     "{reason}; retrying in {delay:g}s", channel=self.channel.name,
                     title=note.title, attempt=delivery.attempts, reason=reason, delay=delay)
            self.waiting[delivery] = self.clock.callLater(delay, self.retry, delivery)
        self.service.publish(NOTIFY_FAILED, _event_host(note), data)

    def retry(self, delivery: _Delivery) -> None:
        del self.waiting[delivery]
        self.queue.appendleft(delivery)
        self.pump()

    # -- stopping
    def close(self) -> list[Deferred[None]]:
        """Send what is queued or held (no cap), drop pending retries; return sends in flight."""
        self._closing = True
        if self.digest_call is not None and self.digest_call.active():
            self.digest_call.cancel()
        if self.held:
            self.send_digest(again=False)
        self.held = None
        if self.waiting:
            self.stats.abandoned_at_stop += len(self.waiting)
            log.warn("notify: {channel}: {count} notification(s) waiting for a retry "
                     "abandoned at shutdown", channel=self.channel.name, count=len(self.waiting))
            for call in self.waiting.values():
                call.cancel()
            self.waiting.clear()
        self.pump()
        return list(self.in_flight)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self.stats), "queued": len(self.queue), "in_flight": len(self.in_flight),
                "waiting_retry": len(self.waiting), "storm": self.held is not None}


@dataclass
class _Counters:
    events: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)


class NotifierService(Service):
    """Routes notified events to channel lanes; owns the HTTP pool the channels share."""

    name = "notify"

    def __init__(
        self,
        channels: Sequence[Channel],
        router: Router,
        clock: IReactorTime,
        bus: EventBus,
        *,
        settings: NotifySettings | None = None,
        pool: HTTPConnectionPool | None = None,
    ) -> None:
        self.router = router
        self.clock = clock
        self.settings = settings or NotifySettings()
        self.pool = pool
        self.lanes = {channel.name: _Lane(self, channel) for channel in channels}
        self.counters = _Counters()
        self.bus = bus

    def publish(self, kind: str, host: str, data: dict[str, Any]) -> None:
        self.bus.publish(Event(kind, host, self.clock.seconds(), data))

    def on_event(self, event: Event) -> None:
        """A notified kind (NOTIFIED_KINDS): formatted, routed and queued per channel."""
        if not self.running:
            return
        self.counters.events += 1
        note = notification_for(event)
        if isinstance(note, Skip):
            self.counters.suppressed[note.reason] += 1
            return
        if not self.router.watched(event.host):
            self.counters.suppressed["watch_false"] += 1
            return
        routes = self.router.route(event.host)
        if not routes:
            self.counters.suppressed["no_recipients"] += 1
            return
        for channel, recipients in routes.items():
            lane = self.lanes.get(channel)
            if lane is not None:
                lane.offer(replace(note, recipients=recipients))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        pending = [d for lane in self.lanes.values() for d in lane.close()]
        if not pending:
            return self._close_pool(None)
        timer = self.clock.callLater(self.settings.stop_timeout, self._cancel_all)

        def settled(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        waited: Deferred[Any] = DeferredList(pending)
        return waited.addBoth(settled).addBoth(self._close_pool)

    def _cancel_all(self) -> None:
        for lane in self.lanes.values():
            for d in list(lane.in_flight):
                d.cancel()

    def _close_pool(self, _: object) -> Deferred[None]:
        if self.pool is None:
            return succeed(None)
        closing: Deferred[None] = self.pool.closeCachedConnections()
        return closing

    def to_json(self) -> dict[str, Any]:
        return {"events": self.counters.events,
                "suppressed": dict(self.counters.suppressed),
                "channels": {name: lane.to_json() for name, lane in self.lanes.items()}}
