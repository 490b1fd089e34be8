"""One dedicated thread that runs blocking work in submission order.

The store (SQLite) and the journal (file writes, rotation) each own one, so
their I/O never runs on the reactor thread and never reorders. Their writers run
at a lower scheduling priority than the reactor's (``WORKER_NICE``): the work
they do can wait a few milliseconds, the reactor's cannot.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any, ParamSpec, Protocol, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

__all__ = ["WORKER_NICE", "ImmediateWorker", "SerialWorker", "Worker", "WorkerFactory"]

WORKER_NICE = 10
"""The nice value the writers' threads ask for (the store's and the journal's); every
other worker, and the reactor's thread, stays at the process's priority.

Where the worker and the reactor share a core, the scheduler gives the reactor the core
whenever both can run (a nice 10 thread weighs about a tenth of a nice 0 one), and a
worker woken when the reactor lets go of the GIL in a system call no longer preempts it
and takes the GIL first, leaving the reactor to wait for it after the call
(docs/PERFORMANCE.md, "WebSocket fan-out, 2026-12-03 afternoon"). With a core to
itself, a worker runs as before. Raising a thread's own nice needs no privilege."""

P = ParamSpec("P")
T = TypeVar("T")


class Worker(Protocol):
    def start(self) -> None: ...
    def stop(self) -> Deferred[None]: ...
    def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Deferred[T]: ...


class WorkerFactory(Protocol):
    """Makes the server's workers: ``WORKER_NICE`` only for a writer, whose work nobody
    but the reactor waits for (not password hashes, API reads or the leader's lease)."""

    def __call__(self, name: str, nice: int = 0) -> Worker: ...


class SerialWorker:
    """A one-thread pool: ``run`` calls happen one at a time, in order."""

    def __init__(self, reactor: IReactorFromThreads, name: str, nice: int = 0) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=name)
        self._nice = nice

    def start(self) -> None:
        self._pool.start()
        if self._nice:
            self._pool.callInThread(_lower_priority, self._nice)

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


def _lower_priority(nice: int) -> None:
    """The calling thread (on Linux a task of its own) ``nice`` steps below the process."""
    # Without per-thread priority (not Linux), the thread keeps the process's, as before.
    with suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                       os.getpriority(os.PRIO_PROCESS, 0) + nice)


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
