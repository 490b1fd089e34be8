"""The retry lane shared by notifications and DNS: queue, attempts, backoff, give-up, report."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
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
