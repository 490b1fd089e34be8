"""POST helper shared by the HTTP channels: 2xx or a DeliveryError, and cancellable."""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.web.client import readBody
from twisted.web.iweb import IResponse

from heartbeat.server.notify.base import DeliveryError

__all__ = ["post"]

_RETRYABLE_4XX = (408, 425, 429)


def _judge(body: bytes, code: int) -> bytes:
    if 200 <= code < 300:
        return body
    text = body[:200].decode("utf-8", "replace").strip()
    permanent = 400 <= code < 500 and code not in _RETRYABLE_4XX
    raise DeliveryError(f"HTTP {code}{': ' + text if text else ''}", permanent)


def _read(response: IResponse) -> Deferred[bytes]:
    # readBody's Deferred aborts the connection when cancelled (a body that never ends).
    return readBody(response).addCallback(_judge, response.code)


def post(client: HTTPClient, url: str, **kwargs: Any) -> Deferred[bytes]:
    """POST to ``url``; the body of a 2xx answer, else a DeliveryError naming the status."""
    d: Deferred[Any] = client.post(url, **kwargs)
    return d.addCallback(_read)
