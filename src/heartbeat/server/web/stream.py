"""A response body written a chunk per reactor turn, as fast as the client takes it.

The whole host list of a 100,000-host fleet is 40 MB of JSON: built at once it
held the reactor for seconds (no datagram read meanwhile) and the memory for
all of it. :class:`StreamedBody` writes one chunk, gives the reactor back, and
writes the next; while the client's connection is full (the transport pauses
its producer) nothing more is built, and a client that goes away stops it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer, IReactorTime
from zope.interface import implementer

__all__ = ["StreamedBody"]


@implementer(IPushProducer)
class StreamedBody:
    """Writes ``chunks`` to ``request`` (a Twisted request is its consumer), one per turn
    of ``clock``.

    :meth:`start` returns a Deferred that fires with ``b""`` once every chunk is
    written (Klein then finishes the request); cancelling it (Klein does when
    the client disconnects) stops the stream.
    """

    def __init__(self, request: IConsumer, chunks: Iterator[bytes], clock: IReactorTime) -> None:
        self._request = request
        self._chunks = chunks
        self._clock = clock
        self._paused = False
        self._call: IDelayedCall | None = None
        self._done: Deferred[bytes] = Deferred(self._cancel)

    def start(self) -> Deferred[bytes]:
        self._request.registerProducer(self, True)
        self._schedule()
        return self._done

    def _schedule(self) -> None:
        if self._call is None and not self._paused and not self._done.called:
            self._call = self._clock.callLater(0, self._step)

    def _step(self) -> None:
        self._call = None
        try:
            chunk = next(self._chunks, None)
        except Exception as error:
            self._finish()
            self._done.errback(error)
            return
        if chunk is None:
            self._finish()
            self._done.callback(b"")
            return
        self._request.write(chunk)
        self._schedule()

    def _finish(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._chunks = iter(())
        self._request.unregisterProducer()

    def _cancel(self, _: Any) -> None:
        self._finish()

    # IPushProducer, called by the transport
    def pauseProducing(self) -> None:
        self._paused = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def resumeProducing(self) -> None:
        self._paused = False
        self._schedule()

    def stopProducing(self) -> None:
        if not self._done.called:
            self._finish()
            self._done.errback(CancelledError("the client went away"))
