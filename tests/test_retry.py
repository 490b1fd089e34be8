"""The retry lane shared by notifications and DNS: queue, attempts, backoff, give-up, report."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from heartbeat.server.retry import Backoff, Failed, RetryLane, Try
from tests.apistack import fired


class Peer:
    """Attempts wait for the test; outcomes are recorded as the owning service would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Deferred[None]]] = []
        self.log: list[tuple[Any, ...]] = []

    def attempt(self, item: tuple[str, str]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.calls.append((item[1], d))
        return d

    def reason(self, failure: Failure, attempt: Try[Any]) -> tuple[str, bool]:
        if attempt.timed_out:
            return "timed out", False
        text = f"{type(failure.value).__name__}: {failure.value}".rstrip(": ")
        return text, isinstance(failure.value, PermissionError)

    def succeeded(self, attempt: Try[Any]) -> None:
        self.log.append(("ok", attempt.item[1], attempt.attempts))

    def failed(self, attempt: Try[Any], outcome: Failed) -> None:
        self.log.append(("failed", attempt.item[1], outcome.reason, outcome.final,
                         outcome.retry_in, outcome.superseded))

    def dropped(self, item: Any, reason: str) -> None:
        self.log.append(("dropped", item[1], reason))

    def abandoned(self, attempts: list[Try[Any]]) -> None:
        self.log.append(("abandoned", [a.item[1] for a in attempts]))


def lane(clock: Clock, peer: Peer, **options: Any) -> RetryLane[tuple[str, str]]:
    settings: dict[str, Any] = {"retries": 2, "timeout": 10.0, "backoff": Backoff(2.0)}
    made: RetryLane[tuple[str, str]] = RetryLane(clock, peer.attempt, peer,
                                                 **{**settings, **options})
    made.start()
    return made


def test_retries_with_backoff_then_gives_up() -> None:
    """A failing item is retried after 2 s, then 4 s, then given up; a permanent failure and
    a timed-out attempt are reported as such."""
    clock, peer = Clock(), Peer()
    retry = lane(clock, peer)
    retry.offer(("k", "a"))
    peer.calls[-1][1].errback(RuntimeError("503"))
    clock.advance(2)
    clock.advance(10)  # the second attempt times out (cancelled)
    clock.advance(4)
    peer.calls[-1][1].errback(RuntimeError("503"))
    retry.offer(("j", "b"))
    peer.calls[-1][1].errback(PermissionError("401"))
    assert peer.log == [
        ("failed", "a", "RuntimeError: 503", False, 2.0, False),
        ("failed", "a", "timed out", False, 4.0, False),
        ("failed", "a", "RuntimeError: 503", True, None, False),
        ("failed", "b", "PermissionError: 401", True, None, False)]
    assert (retry.stats.gave_up, retry.stats.timeouts, retry.stats.retries,
            clock.getDelayedCalls()) == (2, 1, 2, [])


def test_same_key_coalesces_and_supersedes() -> None:
    """A newer item replaces the queued or waiting one with its key and runs at once; the
    attempt in flight when it came fails as superseded, not given up."""
    clock, peer = Clock(), Peer()
    retry = lane(clock, peer, key=lambda item: item[0])
    retry.offer(("web1", "old"))
    retry.offer(("web1", "newer"))
    retry.offer(("web1", "newest"))  # replaces "newer" in the queue
    peer.calls[0][1].errback(RuntimeError("refused"))  # "old" fails: "newest" is waiting
    assert [name for name, _ in peer.calls] == ["old", "newest"]
    peer.calls[1][1].errback(RuntimeError("refused"))  # waits for its retry
    retry.offer(("web1", "latest"))  # replaces the waiting retry and runs now
    peer.calls[2][1].callback(None)
    assert peer.log == [
        ("failed", "old", "RuntimeError: refused", True, None, True),
        ("failed", "newest", "RuntimeError: refused", False, 2.0, False),
        ("ok", "latest", 1)]
    assert (retry.stats.coalesced, retry.stats.gave_up, clock.getDelayedCalls()) == (2, 0, [])


def test_same_order_one_at_a_time_in_the_order_offered() -> None:
    """Items with the same ``order`` wait for the one before them, through its retries and
    its give-up; other items pass them. Coalescing a waiting item hands its turn on."""
    clock, peer = Clock(), Peer()
    retry = lane(clock, peer, max_in_flight=4, retries=1, order=lambda item: item[0])
    for host, name in (("web1", "DOWN1"), ("web1", "UP1"), ("db1", "DOWN2"), ("web1", "DOWN3")):
        retry.offer((host, name))
    assert [name for name, _ in peer.calls] == ["DOWN1", "DOWN2"]
    peer.calls[0][1].errback(RuntimeError("503"))  # DOWN1 waits 2 s: UP1 still waits
    peer.calls[1][1].callback(None)
    assert [name for name, _ in peer.calls] == ["DOWN1", "DOWN2"]
    clock.advance(2)
    assert [name for name, _ in peer.calls] == ["DOWN1", "DOWN2", "DOWN1"]
    peer.calls[2][1].errback(RuntimeError("503"))  # given up: UP1's turn
    peer.calls[3][1].callback(None)
    peer.calls[4][1].callback(None)
    assert [name for name, _ in peer.calls] == ["DOWN1", "DOWN2", "DOWN1", "UP1", "DOWN3"]
    assert [entry[:2] for entry in peer.log] == [
        ("failed", "DOWN1"), ("ok", "DOWN2"), ("failed", "DOWN1"), ("ok", "UP1"),
        ("ok", "DOWN3")]
    keyed = lane(clock, peer := Peer(), key=lambda item: item[1], order=lambda item: item[0])
    keyed.offer(("web1", "a"))
    keyed.offer(("web1", "b"))
    peer.calls[0][1].errback(RuntimeError("503"))  # a waits for its retry; b waits for a
    keyed.offer(("web1", "a"))  # replaces the waiting a, which hands its turn on to b
    assert [name for name, _ in peer.calls] == ["a", "b"]
    peer.calls[1][1].callback(None)
    assert [name for name, _ in peer.calls] == ["a", "b", "a"]
    peer.calls[2][1].callback(None)
    assert (keyed.stats.coalesced, clock.getDelayedCalls()) == (1, [])


def test_queue_limit_and_close() -> None:
    """Beyond queue_limit an item is dropped and reported; closing abandons waiting retries,
    sends or drops what is queued, and cancels attempts still in flight after ``within``."""
    clock, peer = Clock(), Peer()
    retry = lane(clock, peer, queue_limit=2, max_in_flight=1)
    for name in ("a", "b", "c", "d"):
        retry.offer((name, name))
    peer.calls[0][1].errback(RuntimeError("503"))  # a waits; b runs; c queued
    closed = retry.close(send_queued=True, within=5.0)
    assert [name for name, _ in peer.calls] == ["a", "b", "c"]
    clock.advance(5)
    assert fired(closed) is None
    assert peer.log == [
        ("dropped", "d", "queue full (2 waiting)"),
        ("failed", "a", "RuntimeError: 503", False, 2.0, False),
        ("abandoned", ["a"]),
        ("failed", "b", "CancelledError", True, None, False),
        ("failed", "c", "CancelledError", True, None, False)]
    assert clock.getDelayedCalls() == []
    later = lane(clock, Peer(), max_in_flight=1)
    later.offer(("x", "x"))
    later.offer(("y", "y"))
    stopping = later.close(send_queued=False)
    assert (later.stats.abandoned, stopping.called) == (1, False)


def test_an_unbounded_offer_passes_a_full_queue_and_still_counts() -> None:
    """``bounded=False`` queues past queue_limit; what it queued fills the queue for the
    bounded offers after it, and goes in its turn."""
    clock, peer = Clock(), Peer()
    retry = lane(clock, peer, queue_limit=1, max_in_flight=1)
    assert [retry.offer((name, name)) for name in ("a", "b", "c")] == [True, True, False]
    assert retry.offer(("d", "d"), bounded=False) is True
    assert retry.offer(("e", "e")) is False
    for _ in range(3):
        peer.calls[-1][1].callback(None)
    assert [name for name, _ in peer.calls] == ["a", "b", "d"]
    assert [entry for entry in peer.log if entry[0] == "dropped"] == [
        ("dropped", "c", "queue full (1 waiting)"), ("dropped", "e", "queue full (1 waiting)")]


class BatchPeer(Peer):
    """Answers at once: a batch fails while the peer is down or when it holds an item the
    peer refuses (as one DNS update message is all or nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.down = False
        self.refused: set[str] = set()

    def attempt(self, item: tuple[str, str]) -> Deferred[None]:
        return self.attempt_batch([item])

    def attempt_batch(self, items: list[tuple[str, str]]) -> Deferred[None]:
        names = [item[1] for item in items]
        self.batches.append(names)
        if self.down or self.refused & set(names):
            return fail(RuntimeError("REFUSED"))
        return succeed(None)


def batch_lane(clock: Clock, peer: BatchPeer, items: int) -> RetryLane[tuple[str, str]]:
    """A lane of batches of up to 100, ``items`` queued before it starts."""
    made: RetryLane[tuple[str, str]] = RetryLane(
        clock, peer.attempt, peer, retries=2, timeout=10.0, backoff=Backoff(2.0),
        key=lambda item: item[0], batch=100, attempt_batch=peer.attempt_batch)
    for n in range(items):
        made.offer((f"k{n}", f"i{n}"))
    made.start()
    return made


def _succeeded(peer: Peer) -> list[str]:
    return [entry[1] for entry in peer.log if entry[0] == "ok"]


def test_queued_items_go_in_batches_in_order() -> None:
    """250 items waiting: three attempts of 100, 100 and 50, in the order offered."""
    clock, peer = Clock(), BatchPeer()
    retry = batch_lane(clock, peer, 250)
    assert [len(batch) for batch in peer.batches] == [100, 100, 50]
    assert _succeeded(peer) == [f"i{n}" for n in range(250)]
    assert (retry.stats.succeeded, retry.stats.failed_attempts, retry.pending) == (250, 0, 0)


def test_a_refused_item_is_split_out_and_only_it_gives_up() -> None:
    """One item the peer refuses fails its batch; the halves are retried after the
    backoff until it stands alone: every other item gets through, and only its own
    single attempts count towards its give-up."""
    clock, peer = Clock(), BatchPeer()
    peer.refused = {"i137"}
    retry = batch_lane(clock, peer, 250)
    for _ in range(12):
        clock.advance(60)
    assert sorted(_succeeded(peer)) == sorted(f"i{n}" for n in range(250) if n != 137)
    assert len(set(_succeeded(peer))) == 249
    own = [entry for entry in peer.log if entry[0] == "failed" and entry[1] == "i137"]
    assert own[-1][3] is True  # final
    assert [batch for batch in peer.batches if batch == ["i137"]] == [["i137"]] * 3
    assert (retry.stats.gave_up, retry.pending, clock.getDelayedCalls()) == (1, 0, [])
    assert len(peer.batches) < 25  # halving: log2(100) rounds, not one attempt an item


def test_batches_ride_out_a_peer_that_is_down() -> None:
    """While the peer is down, failed batches halve at each backoff; once it is back they
    go through as batches, none given up (the batch failures count for no item)."""
    clock, peer = Clock(), BatchPeer()
    peer.down = True
    retry = batch_lane(clock, peer, 200)
    clock.advance(2)  # halves of 50 fail after 2 s
    clock.advance(4)  # quarters of 25 fail after 4 s more
    peer.down = False
    clock.advance(7.9)
    assert _succeeded(peer) == []
    clock.advance(0.1)  # batches of 13 after 8 s more: all through
    assert sorted(_succeeded(peer)) == sorted(f"i{n}" for n in range(200))
    sizes = [len(batch) for batch in peer.batches]
    assert sizes[:14] == [100, 100] + [50] * 4 + [25] * 8
    assert (sum(sizes[14:]), max(sizes[14:]), len(sizes[14:])) == (200, 13, 16)  # 13 + 12
    assert (retry.stats.gave_up, retry.stats.failed_attempts, retry.pending) == (0, 14, 0)


def test_a_newer_item_replaces_one_waiting_after_a_failed_batch() -> None:
    """An item waiting for its retry after a failed batch is replaced by a newer one with
    its key, which goes at once; the old one is never attempted again."""
    clock, peer = Clock(), BatchPeer()
    peer.down = True
    retry = batch_lane(clock, peer, 4)
    peer.down = False
    retry.offer(("k2", "i2-newer"))
    clock.advance(2)
    assert peer.batches == [["i0", "i1", "i2", "i3"], ["i2-newer"], ["i0", "i1"], ["i3"]]
    assert sorted(_succeeded(peer)) == ["i0", "i1", "i2-newer", "i3"]
    assert retry.stats.coalesced == 1


def test_a_batch_needs_its_attempt_and_no_order() -> None:
    clock, peer = Clock(), BatchPeer()
    with pytest.raises(ValueError, match="attempt_batch"):
        RetryLane(clock, peer.attempt, peer, retries=1, timeout=1.0, batch=10)
    with pytest.raises(ValueError, match="order"):
        RetryLane(clock, peer.attempt, peer, retries=1, timeout=1.0, batch=10,
                  attempt_batch=peer.attempt_batch, order=lambda item: item[0])


def test_a_batch_failing_as_the_lane_closes_leaves_nothing_behind() -> None:
    """A batch in flight at close fails: each item is given up, final, and no retry
    timer is left on the clock."""
    clock, peer = Clock(), BatchPeer()
    pending: list[Deferred[None]] = []

    def slow(items: list[tuple[str, str]]) -> Deferred[None]:
        peer.batches.append([item[1] for item in items])
        pending.append(Deferred())
        return pending[-1]

    retry: RetryLane[tuple[str, str]] = RetryLane(
        clock, peer.attempt, peer, retries=2, timeout=10.0, backoff=Backoff(2.0),
        key=lambda item: item[0], batch=100, attempt_batch=slow)
    for n in range(3):
        retry.offer((f"k{n}", f"i{n}"))
    retry.start()
    closed = retry.close(send_queued=False)
    pending[0].errback(RuntimeError("REFUSED"))
    assert fired(closed) is None
    assert peer.batches == [["i0", "i1", "i2"]]
    assert [entry[3] for entry in peer.log] == [True, True, True]
    assert (retry.stats.gave_up, retry.pending, clock.getDelayedCalls()) == (3, 0, [])
