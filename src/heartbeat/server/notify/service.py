"""NotifierService: bus events in, notifications out on every channel, never blocking ingest.

The bus subscriber only formats, routes and queues. Each channel has its own retry
lane (heartbeat.server.retry, shared with DNS): a bounded queue
(``notify_queue_limit``; a counted, logged, journaled drop beyond), a few sends in
flight (one at a time per host and recipients, so they arrive in order), a timeout
per send (``notify_timeout``), bounded retries with exponential backoff on the
clock (``notify_retries``); in front of it a storm guard: once more than
``notify_burst`` different hosts were notified within ``notify_window`` on a
channel, further notifications are held and sent as one digest per window until a
window holds no more than ``notify_burst`` hosts. Every outcome is an event on the
bus (``notify.sent``, ``notify.failed``, ``notify.dropped``), so the journal records it.

Before any of that, the one :class:`~heartbeat.server.suppression.Suppression` decides
whether the event notifies now: maintenance windows, silences, acknowledgements and
flapping hold notices back (counted under ``suppressed`` by their reason); the
operations service publishes ``problem.still`` for a held problem that outlasts them.

With servers sharing a store, only the leader sends (``leader``, a
``heartbeat.server.leader.LeaderService``): a follower remembers what it would
have sent in the :class:`~heartbeat.server.notices.NoticeLedger`; a new leader
reads the marks of what was sent (``marks``), sends what they do not cover, and
then marks what it sends once it is sent or given up on (docs/HA.md).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from heartbeat.config.server import ServerConfig
from heartbeat.events import Event, EventBus
from heartbeat.server.notices import Notice, NoticeLedger, notice_of
from heartbeat.server.notify.base import Channel, DeliveryError, Notification, redact
from heartbeat.server.notify.message import (
    NOTIFIED_KINDS,
    Overflow,
    Skip,
    digest,
    notification_for,
)
from heartbeat.server.notify.routing import Router
from heartbeat.server.retry import Backoff, Failed, RetryLane, Try
from heartbeat.server.suppression import Suppression

if TYPE_CHECKING:  # Twisted's HTTP client is imported only when a web channel is used
    from twisted.web.client import HTTPConnectionPool

__all__ = [
    "NOTIFIED_KINDS",
    "NOTIFY_DROPPED",
    "NOTIFY_FAILED",
    "NOTIFY_SENT",
    "NotifierService",
    "NotifySettings",
]

log = Logger()

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


def _event_host(note: Notification) -> str:
    return note.hosts[0] if len(note.hosts) == 1 else ""


def _sequence(note: Notification) -> tuple[str, tuple[str, ...]] | None:
    """The notices of one host to one set of recipients go in the order they happened
    (DOWN before UP, however the sends and their retries fall); a digest goes when it can."""
    host = _event_host(note)
    return (host, tuple(note.recipients)) if host else None


class _Lane:
    """One channel: the storm guard and digests in front of its retry lane.

    The queue, sends in flight, timeouts, retries and give-up are a
    :class:`RetryLane` (heartbeat.server.retry, shared with DNS); this class
    decides what reaches it (storms become digests) and words the outcomes.
    """

    def __init__(self, service: NotifierService, channel: Channel) -> None:
        self.service = service
        self.channel = channel
        self.settings = settings = service.settings
        self.clock = service.clock
        self.retry: RetryLane[Notification] = RetryLane(
            self.clock, self._send, self, retries=settings.retries, timeout=settings.timeout,
            backoff=settings.backoff, max_in_flight=settings.max_in_flight,
            queue_limit=settings.queue_limit, order=_sequence)
        self.recent: deque[tuple[float, str]] = deque()
        self.held: list[Notification] | None = None  # not None while a storm lasts
        self.overflow: dict[tuple[str, ...], Overflow] = {}  # past queue_limit, per recipients
        self.overflow_dropped = 0
        self.digest_call: IDelayedCall | None = None
        self.digests = 0
        self.digested = 0
        self.last_error: str | None = None
        self.last_error_ts: float | None = None

    def _send(self, note: Notification) -> Deferred[None]:
        return self.channel.send(note)

    # -- storm guard
    def offer(self, note: Notification) -> None:
        if self.held is not None:
            if len(self.held) < self.settings.queue_limit:
                self.held.append(note)
            else:
                beyond = self.overflow.get(note.recipients)
                if beyond is None:
                    beyond = self.overflow[note.recipients] = Overflow(note.recipients)
                beyond.add(note)
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
        overflow = self.overflow
        if overflow:
            self.drop_overflow()
        groups: dict[tuple[str, ...], list[Notification]] = {}
        for note in held:
            groups.setdefault(note.recipients, []).append(note)
        for recipients in overflow:
            groups.setdefault(recipients, [])
        for recipients, group in groups.items():
            beyond = overflow.get(recipients)
            if len(group) + (beyond.count if beyond else 0) > 1:
                self.digests += 1
                self.digested += len(group)
            self.enqueue(digest(group, beyond=beyond), bounded=False)
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

    def enqueue(self, note: Notification, *, bounded: bool = True) -> None:
        """Into the retry lane, split to the channel's recipients per send.

        A storm's digests are not ``bounded`` by ``notify_queue_limit``: a window makes
        at most one per set of recipients, and it is all each set hears of the storm
        (a fleet's fall with 2,000 owners queued 2,000 at once, and the limit of 1,000
        left 996 owners without a word)."""
        size, recipients = self.channel.max_recipients, note.recipients
        chunks = [recipients[i:i + size] for i in range(0, len(recipients), size)] or [()]
        for part in chunks:
            self.retry.offer(replace(note, recipients=part), bounded=bounded)

    def drop_overflow(self) -> None:
        """One log line and one event for a window's worth of notifications beyond the limit."""
        dropped, self.overflow = list(self.overflow.values()), {}
        count = sum(beyond.count for beyond in dropped)
        self.overflow_dropped += count
        for beyond in dropped:
            self.service.settled_notices(beyond.notices)
        hosts = sorted({host for beyond in dropped for host in beyond.hosts})
        reason = (f"{count} notification(s) beyond the digest's limit of "
                  f"{self.settings.queue_limit}")
        log.warn("notify: {channel}: dropped {reason}", channel=self.channel.name, reason=reason)
        self.service.publish(NOTIFY_DROPPED, "", {
            "channel": self.channel.name, "title": "storm overflow", "hosts": hosts,
            "reason": reason})

    # -- what the retry lane reports
    def reason(self, failure: Failure, attempt: Try[Notification]) -> tuple[str, bool]:
        # Not the error: cancelling an HTTP request at the timeout fails with
        # ResponseNeverReceived, not CancelledError; the lane remembers the timeout.
        if attempt.timed_out:
            return f"timed out after {self.settings.timeout:g}s", False
        error = failure.value
        if isinstance(error, DeliveryError):
            text, permanent = error.reason, error.permanent
        else:
            text, permanent = f"{type(error).__name__}: {error}", False
        return redact(text, self.channel.secrets), permanent

    def succeeded(self, attempt: Try[Notification]) -> None:
        note = attempt.item
        self.service.settled(note)
        self.service.publish(NOTIFY_SENT, _event_host(note), {
            "channel": self.channel.name, "title": note.title, "kind": note.kind,
            "hosts": list(note.hosts), "recipients": len(note.recipients),
            "attempts": attempt.attempts})

    def failed(self, attempt: Try[Notification], outcome: Failed) -> None:
        note = attempt.item
        self.last_error, self.last_error_ts = outcome.reason, self.clock.seconds()
        if outcome.final:
            self.service.settled(note)
            log.error("notify: {channel}: gave up on {title!r} after {attempts} attempt(s): "
                      "{reason}", channel=self.channel.name, title=note.title,
                      attempts=outcome.attempt, reason=outcome.reason)
        else:
            log.warn("notify: {channel}: sending {title!r} failed (attempt {attempt}): "
                     "{reason}; retrying in {delay:g}s", channel=self.channel.name,
                     title=note.title, attempt=outcome.attempt, reason=outcome.reason,
                     delay=outcome.retry_in)
        self.service.publish(NOTIFY_FAILED, _event_host(note), {
            "channel": self.channel.name, "title": note.title, "hosts": list(note.hosts),
            "reason": outcome.reason, "attempt": outcome.attempt, "final": outcome.final,
            "retry_in": outcome.retry_in})

    def dropped(self, note: Notification, reason: str) -> None:
        self.service.settled(note)
        log.warn("notify: {channel}: dropped {title!r}: {reason}", channel=self.channel.name,
                 title=note.title, reason=reason)
        self.service.publish(NOTIFY_DROPPED, _event_host(note), {
            "channel": self.channel.name, "title": note.title, "hosts": list(note.hosts),
            "reason": reason})

    def abandoned(self, attempts: list[Try[Notification]]) -> None:
        log.warn("notify: {channel}: {count} notification(s) waiting for a retry "
                 "abandoned at shutdown", channel=self.channel.name, count=len(attempts))

    # -- stopping
    def close(self) -> Deferred[None]:
        """Send what is queued or held (no cap), drop pending retries; fires when the sends
        in flight have ended (cancelled after ``stop_timeout``)."""
        if self.digest_call is not None and self.digest_call.active():
            self.digest_call.cancel()
        if self.held:
            self.send_digest(again=False)
        self.held = None
        return self.retry.close(send_queued=True, within=self.settings.stop_timeout)

    def to_json(self) -> dict[str, Any]:
        stats = self.retry.stats
        return {"sent": stats.succeeded, "failed_attempts": stats.failed_attempts,
                "retries": stats.retries, "gave_up": stats.gave_up,
                "dropped_queue_full": stats.dropped + self.overflow_dropped,
                "abandoned_at_stop": stats.abandoned, "digests": self.digests,
                "digested": self.digested, "last_error": self.last_error,
                "last_error_ts": self.last_error_ts, **self.retry.to_json(),
                "storm": self.held is not None}


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
        suppression: Suppression | None = None,
        leader: Any = None,
        ledger: NoticeLedger | None = None,
        marks: Callable[[], Deferred[Mapping[str, tuple[str, float]]]] | None = None,
    ) -> None:
        self.router = router
        self.suppression = suppression
        """What holds notices back (None: nothing, as in tests of the channels alone)."""
        self.clock = clock
        self.settings = settings or NotifySettings()
        self.pool = pool
        self.lanes = {channel.name: _Lane(self, channel) for channel in channels}
        self.counters = _Counters()
        self.bus = bus
        self.leader = leader
        """Whether this server leads (``.leading``); None: it is the only one."""
        self.ledger = ledger
        self._marks = marks
        self.caught_up = False
        """Leading, with the marks read and what they did not cover sent."""
        self.caught_up_sent = 0

    @property
    def speaking(self) -> bool:
        """Whether this server sends now: the only one, or the leader caught up."""
        return self.leader is None or (self.leader.leading and self.caught_up)

    def lead(self, leading: bool) -> Deferred[None] | None:
        """This server became (or stopped being) the leader: catch up (or be silent).
        Fires when caught up (fails if the marks cannot be read: the leader retries)."""
        self.caught_up = False
        if not leading or self._marks is None:
            return None
        return self._marks().addCallback(self._catch_up)

    def _catch_up(self, marks: Mapping[str, tuple[str, float]]) -> None:
        if self.ledger is None or self.leader is None or not self.leader.leading:
            return
        due = self.ledger.catch_up(marks, self.clock.seconds())
        self.caught_up = True
        self.caught_up_sent += len(due)
        log.info("notify: leading; {count} notification(s) the last leader had not sent",
                 count=len(due))
        for event in due:  # let through when the follower heard them: not asked again
            self._route(event, notice_of(event))

    def settled(self, note: Notification) -> None:
        """A notification sent or given up on: its marks are written with the next batch."""
        self.settled_notices(note.notices)

    def settled_notices(self, notices: Sequence[Notice]) -> None:
        if self.ledger is not None and notices:
            self.ledger.settled(notices, self.clock.seconds())

    def publish(self, kind: str, host: str, data: dict[str, Any]) -> None:
        self.bus.publish(Event(kind, host, self.clock.seconds(), data))

    def on_event(self, event: Event) -> None:
        """A notified kind (NOTIFIED_KINDS): formatted, routed and queued per channel."""
        if not self.running:
            return
        self.counters.events += 1
        notice = notice_of(event) if self.ledger is not None else None
        if self.suppression is not None:
            # Asked first, notified or not: a held problem's events keep its level current.
            hold = self.suppression.decide(event, self.clock.seconds())
            if hold is not None:
                self.counters.suppressed[hold.reason] += 1
                if self.speaking:
                    self._silent(notice)  # held, not notified: still the key's state
                return
        if not self.speaking:
            if notice is not None and self.ledger is not None:
                self.ledger.seen(notice, event)
            self.counters.suppressed["not_leader"] += 1
            return
        self._route(event, notice)

    def _route(self, event: Event, notice: Notice | None) -> None:
        """An event the suppression let through, routed to the lanes by the leader."""
        note = notification_for(event)
        reason = note.reason if isinstance(note, Skip) else None
        if reason is None and not self.router.watched(event.host):
            reason = "watch_false"
        routes = self.router.route(event.host) if reason is None else {}
        if reason is None and not routes:
            reason = "no_recipients"
        if reason is not None or isinstance(note, Skip):
            self.counters.suppressed[reason or "skipped"] += 1
            self._silent(notice)
            return
        if notice is not None and self.ledger is not None:
            if not self.ledger.due(notice):
                self.counters.suppressed["already_notified"] += 1
                return
            self.ledger.sending(notice)
            note = replace(note, notices=(notice,))
        for channel, recipients in routes.items():
            lane = self.lanes.get(channel)
            if lane is not None:
                lane.offer(replace(note, recipients=recipients))

    def _silent(self, notice: Notice | None) -> None:
        """A state change that notifies nobody: still the key's state from now on."""
        if notice is None or self.ledger is None or notice.one_shot:
            return
        if self.ledger.marks.get(notice.key, notice.resting) != notice.state:
            self.ledger.sending(notice)
            self.ledger.settled((notice,), self.clock.seconds())

    def startService(self) -> None:
        super().startService()
        for lane in self.lanes.values():
            lane.retry.start()

    def stopService(self) -> Deferred[None]:
        """Send what is queued, wait for the sends in flight (at most ``stop_timeout``),
        then close the HTTP pool; every outcome is published before it fires."""
        super().stopService()
        waited: Deferred[Any] = DeferredList([lane.close() for lane in self.lanes.values()])
        return waited.addBoth(self._close_pool)

    def _close_pool(self, _: object) -> Deferred[None]:
        if self.pool is None:
            return succeed(None)
        closing: Deferred[None] = self.pool.closeCachedConnections()
        return closing

    def to_json(self) -> dict[str, Any]:
        shown = {"events": self.counters.events,
                 "suppressed": dict(self.counters.suppressed),
                 "channels": {name: lane.to_json() for name, lane in self.lanes.items()}}
        if self.ledger is not None:
            shown["one_voice"] = {"speaking": self.speaking, "caught_up_sent": self.caught_up_sent,
                                  **self.ledger.to_json()}
        return shown
