"""One retry lane for the services that talk to flaky peers (notification channels, DNS).

A :class:`RetryLane` is one peer's queue and the whole life of each item in it:
a bounded queue (a counted drop beyond ``queue_limit``), at most
``max_in_flight`` attempts at once, a timeout per attempt (by default the
attempt's Deferred is cancelled; ``expire`` may end it otherwise, as DNS kills
its process and waits for it to end), bounded retries with exponential :class:`Backoff` on
the clock, and a final give-up. Items with the same ``key`` coalesce: a newer
one replaces the one queued or waiting for its retry (and runs at once), and
an attempt that fails while a newer one waits is superseded rather than
retried. Items with the same ``order`` go one at a time, in the order offered:
a later one waits while an earlier one is in flight or waiting for its retry,
so a peer never hears a host's UP before its DOWN. With ``batch`` above 1 (items
without an ``order``), queued items go up to ``batch`` at a time in one attempt
(``attempt_batch``), as DNS sends many records in one nsupdate: a batch that
fails is split in two, each half retried after the backoff, down to single items,
and only a single item's failures count towards the give-up, so one item the
peer refuses does not take its neighbours with it. The lane decides; the
service that owns it says what an attempt is and reports every outcome
through a :class:`LaneReport` (its log lines and its bus events), so
notifications and DNS retry, give up and report alike.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["Backoff", "LaneReport", "LaneStats", "RetryLane", "Try"]

T = TypeVar("T")
log = Logger()


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``first`` s after the first failure, doubling, at most ``cap`` s."""

    first: float = 2.0
    cap: float = 300.0

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.first * 2 ** (attempt - 1), self.cap))


@dataclass(eq=False)
class Try(Generic[T]):
    """One item in the lane and how its attempts went."""

    item: T
    key: Hashable
    order: Hashable | None = None
    attempts: int = 0
    timed_out: bool = False
    limit: int = 1
    """The largest batch it may go in: halved by each failed batch it was in."""
    splits: int = 0
    """How many failed batches it was in (their backoff; they count no attempt)."""


@dataclass
class LaneStats:
    """A lane's counters (each service shows them under its own names)."""

    succeeded: int = 0
    failed_attempts: int = 0
    retries: int = 0
    gave_up: int = 0
    timeouts: int = 0
    dropped: int = 0
    coalesced: int = 0
    abandoned: int = 0


@dataclass(frozen=True)
class Failed:
    """What the lane made of a failed attempt, for the report."""

    reason: str
    attempt: int
    final: bool
    retry_in: float | None
    superseded: bool = field(default=False)
    """Final because a newer item with the same key is waiting (not a give-up)."""


class LaneReport(Protocol[T]):
    """What the owning service says about its items (wording, logs, bus events)."""

    def reason(self, failure: Failure, attempt: Try[T]) -> tuple[str, bool]:
        """Why an attempt failed (timed-out attempts too), and whether retrying is useless."""
        ...

    def succeeded(self, attempt: Try[T]) -> None: ...

    def failed(self, attempt: Try[T], outcome: Failed) -> None: ...

    def dropped(self, item: T, reason: str) -> None: ...

    def abandoned(self, attempts: list[Try[T]]) -> None:
        """At close: items waiting for a retry (or queued, when not sent) left unsent."""
        ...


class RetryLane(Generic[T]):
    """Queue, attempts, timeouts, backoff, give-up and report for one peer (see the module)."""

    def __init__(
        self,
        clock: IReactorTime,
        attempt: Callable[[T], Deferred[Any]],
        report: LaneReport[T],
        *,
        retries: int,
        timeout: float,
        backoff: Backoff | None = None,
        max_in_flight: int = 1,
        queue_limit: int | None = None,
        key: Callable[[T], Hashable] | None = None,
        order: Callable[[T], Hashable | None] | None = None,
        expire: Callable[[Deferred[Any]], object] = Deferred.cancel,
        batch: int = 1,
        attempt_batch: Callable[[list[T]], Deferred[Any]] | None = None,
    ) -> None:
        if batch > 1 and (attempt_batch is None or order is not None):
            raise ValueError("a batch needs attempt_batch, and items without an order")
        self.clock = clock
        self._attempt = attempt
        self.report = report
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self.max_in_flight = max_in_flight
        self.queue_limit = queue_limit
        self._key = key
        self._order = order
        self._expire = expire
        self.batch = batch
        self._attempt_batch = attempt_batch
        self.queue: deque[Try[T]] = deque()
        self.in_flight: dict[Deferred[Any], Try[T]] = {}
        self.waiting: dict[Try[T], IDelayedCall] = {}
        self._batch_calls: set[IDelayedCall] = set()
        """The retries of failed batches: one call brings a whole batch back."""
        self._keyed: dict[Hashable, Try[T]] = {}
        """Queued or waiting items by key (not those in flight)."""
        self._turn: dict[Hashable, Try[T]] = {}
        """The item whose turn it is, per ``order``: in flight or waiting for its retry."""
        self.stats = LaneStats()
        self.running = False
        self.closing = False
        self._pumping = False

    # -- queue
    def offer(self, item: T, *, bounded: bool = True) -> bool:
        """Queue ``item`` (replacing a queued or waiting one with its key); False if the
        queue is full and it was dropped (reported). ``bounded=False`` queues it past
        ``queue_limit``, for an item its owner bounds otherwise."""
        key = self._key(item) if self._key is not None else object()
        older = self._keyed.pop(key, None)
        if older is not None:
            self.stats.coalesced += 1
            call = self.waiting.pop(older, None)
            if call is not None:
                if call not in self._batch_calls:  # a batch's retry skips what left it
                    call.cancel()
                self._done(older)
            else:
                self.queue.remove(older)
        elif bounded and self.queue_limit is not None and self.pending >= self.queue_limit:
            self.stats.dropped += 1
            self.report.dropped(item, f"queue full ({self.queue_limit} waiting)")
            return False
        entry = Try(item, key, self._order(item) if self._order is not None else None,
                    limit=self.batch)
        self.queue.append(entry)
        self._keyed[key] = entry
        self.pump()
        return True

    @property
    def pending(self) -> int:
        """Items queued or waiting for a retry (not in flight)."""
        return len(self.queue) + len(self.waiting)

    def start(self) -> None:
        self.running = True
        self.closing = False
        self.pump()

    def pump(self) -> None:
        if self._pumping or not self.running:
            return
        self._pumping = True
        try:
            while self.queue and (self.closing or len(self.in_flight) < self.max_in_flight):
                entry = self._next()
                if entry is None:
                    break
                del self._keyed[entry.key]
                if entry.limit > 1:
                    self._run_batch(self._batch_with(entry))
                else:
                    self._run(entry)
        finally:
            self._pumping = False

    def _next(self) -> Try[T] | None:
        """The first queued item whose turn it is (closing: the first), taken off the queue."""
        for entry in self.queue:
            if self.closing or entry.order is None \
                    or self._turn.setdefault(entry.order, entry) is entry:
                self.queue.remove(entry)
                return entry
        return None

    def _batch_with(self, first: Try[T]) -> list[Try[T]]:
        """``first`` and the items next in the queue that may share its batch, taken off
        it: as many as the smallest ``limit`` among them allows (the queue's head only,
        so a batch costs its own size however long the queue)."""
        entries = [first]
        size = first.limit
        queue = self.queue
        while queue and len(entries) < size and queue[0].limit > len(entries):
            entry = queue.popleft()
            del self._keyed[entry.key]
            entries.append(entry)
            size = min(size, entry.limit)
        return entries

    def _done(self, entry: Try[T]) -> None:
        """``entry`` is over (sent, given up, replaced): the next with its order may go."""
        if entry.order is not None and self._turn.get(entry.order) is entry:
            del self._turn[entry.order]

    # -- attempts
    def _run(self, entry: Try[T]) -> None:
        entry.attempts += 1
        entry.timed_out = False
        d = maybeDeferred(self._attempt, entry.item)
        timer = self.clock.callLater(self.timeout, self._time_out, entry, d)
        self.in_flight[d] = entry
        d.addBoth(self._settle, d, timer)
        d.addCallbacks(self._succeeded, self._failed, callbackArgs=(entry,),
                       errbackArgs=(entry,))
        d.addErrback(lambda f: log.failure("retry lane: reporting an outcome failed", f))
        d.addCallback(lambda _: self.pump())

    def _run_batch(self, entries: list[Try[T]]) -> None:
        assert self._attempt_batch is not None
        for entry in entries:
            entry.attempts += 1
            entry.timed_out = False
        d = maybeDeferred(self._attempt_batch, [entry.item for entry in entries])
        timer = self.clock.callLater(self.timeout, self._time_out_batch, entries, d)
        self.in_flight[d] = entries[0]
        d.addBoth(self._settle, d, timer)
        d.addCallbacks(self._batch_succeeded, self._batch_failed, callbackArgs=(entries,),
                       errbackArgs=(entries,))
        d.addErrback(lambda f: log.failure("retry lane: reporting an outcome failed", f))
        d.addCallback(lambda _: self.pump())

    def _time_out_batch(self, entries: list[Try[T]], d: Deferred[Any]) -> None:
        for entry in entries:
            entry.timed_out = True
        self.stats.timeouts += 1
        self._expire(d)

    def _batch_succeeded(self, _: object, entries: list[Try[T]]) -> None:
        for entry in entries:
            self._succeeded(None, entry)

    def _batch_failed(self, failure: Failure, entries: list[Try[T]]) -> None:
        """A failed batch of one is a failed attempt; of more, it is split: each half
        is retried after the backoff, and the attempt counts for none of its items."""
        if len(entries) == 1:
            entries[0].limit = 1
            self._failed(failure, entries[0])
            return
        reason, _ = self.report.reason(failure, entries[0])
        self.stats.failed_attempts += 1
        limit = (len(entries) + 1) // 2
        splits = max(entry.splits for entry in entries) + 1
        retry_in = self.backoff.delay(splits)
        ending = self.closing or not self.running
        call = None
        if not ending and any(entry.key not in self._keyed for entry in entries):
            call = self.clock.callLater(retry_in, self._retry_batch, entries)
            self._batch_calls.add(call)
        for entry in entries:
            entry.attempts -= 1
            superseded = entry.key in self._keyed
            final = superseded or ending
            if final or call is None:
                self._done(entry)
                if not superseded:
                    self.stats.gave_up += 1
            else:
                entry.limit, entry.splits = limit, splits
                self.stats.retries += 1
                self.waiting[entry] = call
                self._keyed[entry.key] = entry
            self.report.failed(entry, Failed(reason, entry.attempts, final,
                                             None if final else retry_in, superseded))

    def _retry_batch(self, entries: list[Try[T]]) -> None:
        """A failed batch's items back at the head of the queue, in their order, at once:
        its halves go as batches (those replaced or given up meanwhile stay out)."""
        self._batch_calls = {call for call in self._batch_calls if call.active()}
        back = [entry for entry in entries if self.waiting.pop(entry, None) is not None]
        self.queue.extendleft(reversed(back))
        self.pump()

    def _time_out(self, entry: Try[T], d: Deferred[Any]) -> None:
        entry.timed_out = True
        self.stats.timeouts += 1
        self._expire(d)

    def _settle(self, result: object, d: Deferred[Any], timer: IDelayedCall) -> object:
        if timer.active():
            timer.cancel()
        self.in_flight.pop(d, None)
        return result

    def _succeeded(self, _: object, entry: Try[T]) -> None:
        self._done(entry)
        self.stats.succeeded += 1
        self.report.succeeded(entry)

    def _failed(self, failure: Failure, entry: Try[T]) -> None:
        reason, permanent = self.report.reason(failure, entry)
        self.stats.failed_attempts += 1
        superseded = entry.key in self._keyed
        final = (permanent or superseded or self.closing or not self.running
                 or entry.attempts > self.retries)
        retry_in = None
        if final:
            self._done(entry)
            if not superseded:
                self.stats.gave_up += 1
        else:
            retry_in = self.backoff.delay(entry.attempts)
            self.stats.retries += 1
            self.waiting[entry] = self.clock.callLater(retry_in, self._retry, entry)
            self._keyed[entry.key] = entry
        self.report.failed(entry, Failed(reason, entry.attempts, final, retry_in, superseded))

    def _retry(self, entry: Try[T]) -> None:
        del self.waiting[entry]
        self.queue.appendleft(entry)
        self.pump()

    # -- stopping
    def close(self, *, send_queued: bool, within: float | None = None) -> Deferred[None]:
        """Stop retrying: waiting retries are abandoned; queued items are attempted at
        once (``send_queued``) or abandoned. Fires when the attempts in flight have settled;
        after ``within`` seconds those still in flight are cancelled."""
        self.closing = True
        abandoned = list(self.waiting)
        for call in set(self.waiting.values()) | self._batch_calls:
            if call.active():
                call.cancel()
        self.waiting.clear()
        self._batch_calls.clear()
        if not send_queued:
            abandoned += self.queue
            self.queue.clear()
        self.stats.abandoned += len(abandoned)
        if abandoned:
            self.report.abandoned(abandoned)
        self._keyed = {k: e for k, e in self._keyed.items() if e in self.queue}
        self._turn.clear()
        self.pump()
        self.running = False
        if not self.in_flight:
            return succeed(None)
        waited: Deferred[Any] = DeferredList(list(self.in_flight))
        if within is not None:
            timer = self.clock.callLater(within, self.cancel_all)
            waited.addBoth(lambda result: timer.cancel() if timer.active() else None)
        return waited.addCallback(lambda _: None)

    def cancel_all(self) -> None:
        for d in list(self.in_flight):
            d.cancel()

    def to_json(self) -> dict[str, int]:
        return {"queued": len(self.queue), "in_flight": len(self.in_flight),
                "waiting_retry": len(self.waiting)}
