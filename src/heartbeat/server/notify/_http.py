"""POST helper shared by the HTTP channels: 2xx or a DeliveryError, and cancellable."""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from heartbeat.server.notify.base import DeliveryError
from heartbeat.text import json_bytes

__all__ = ["post", "post_json"]

BODY_MAX = 64 * 1024
_RETRYABLE_4XX = (408, 425, 429)


class _Body(Protocol):
    """Collects up to BODY_MAX bytes of a response body.

    Cancelling ``done`` stops the transport (closes the connection): a body that
    never ends cannot hold a send past its timeout. (twisted's readBody would do
    this too, but warns on the Agent's own transport.)
    """

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.done: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, _: Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.size < BODY_MAX:
            self.chunks.append(data[:BODY_MAX - self.size])
            self.size += len(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)


def _judge(body: bytes, code: int) -> bytes:
    if 200 <= code < 300:
        return body
    text = body[:200].decode("utf-8", "replace").strip()
    permanent = 400 <= code < 500 and code not in _RETRYABLE_4XX
    raise DeliveryError(f"HTTP {code}{': ' + text if text else ''}", permanent)


def _read(response: IResponse) -> Deferred[bytes]:
    body = _Body()
    response.deliverBody(body)
    return body.done.addCallback(_judge, response.code)


def post(client: HTTPClient, url: str, **kwargs: Any) -> Deferred[bytes]:
    """POST to ``url``; the body of a 2xx answer, else a DeliveryError naming the status."""
    d: Deferred[Any] = client.post(url, **kwargs)
    return d.addCallback(_read)


def post_json(client: HTTPClient, url: str, body: Any) -> Deferred[bytes]:
    """:func:`post` of ``body`` as JSON, written by the server's one encoder."""
    return post(client, url, data=json_bytes(body),
                headers={b"Content-Type": [b"application/json; charset=UTF-8"]})
