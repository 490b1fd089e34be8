"""Signal through the signal-cli REST API: ``POST {url}/v2/send``."""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import Deferred

from heartbeat.config.server import SignalConfig
from heartbeat.server.notify._http import post_json
from heartbeat.server.notify.base import Notification

__all__ = ["SignalChannel"]


class SignalChannel:
    """Sends from ``signal.number`` to the recipients (numbers or group ids)."""

    name = "signal"
    max_recipients = 50
    secrets: tuple[str, ...] = ()

    def __init__(self, http: HTTPClient, config: SignalConfig) -> None:
        if not config.number:
            raise ValueError("signal.number is not set")
        self._http = http
        self._url = config.url.rstrip("/") + "/v2/send"
        self._number = config.number

    def payload(self, note: Notification) -> dict[str, Any]:
        return {"message": f"{note.title}\n{note.body}", "number": self._number,
                "recipients": list(note.recipients)}

    def send(self, notification: Notification) -> Deferred[None]:
        return post_json(self._http, self._url, self.payload(notification)).addCallback(
            lambda _: None)
