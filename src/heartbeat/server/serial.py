"""One dedicated thread that runs blocking work in submission order.

The store (SQLite) and the journal (file writes, rotation) each own one, so
their I/O never runs on the reactor thread and never reorders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

__all__ = ["ImmediateWorker", "SerialWorker", "Worker"]

P = ParamSpec("P")
T = TypeVar("T")


class Worker(Protocol):
    def start(self) -> None: ...
    def stop(self) -> Deferred[None]: ...
    def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Deferred[T]: ...


class SerialWorker:
    """A one-thread pool: ``run`` calls happen one at a time, in order."""

    def __init__(self, reactor: IReactorFromThreads, name: str) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=name)

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> Deferred[None]:
        """End the thread once the work queued so far is done; fires when it has ended.

        The reactor thread only waits on a Deferred: the thread is joined when it
        is idle (its last work has returned), so joining it takes no time.
        """
        if not self._pool.started:
            return succeed(None)
        idle = self.run(lambda: None)
        return idle.addBoth(lambda _: self._pool.stop())

    def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)


class ImmediateWorker:
    """Runs the work inline: for tools and tests that want no thread."""

    def start(self) -> None:
        pass

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        try:
            return succeed(fn(*args, **kwargs))
        except BaseException:
            failed: Deferred[Any] = Deferred()
            failed.errback(Failure())
            return failed
