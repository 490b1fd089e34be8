"""Pushover: one form POST to the messages API per notification (up to 50 user keys)."""

from __future__ import annotations

from treq.client import HTTPClient
from twisted.internet.defer import Deferred

from heartbeat.config.server import PushoverConfig
from heartbeat.server.notify._http import post
from heartbeat.server.notify.base import Notification

__all__ = ["PushoverChannel"]

TITLE_MAX = 250
MESSAGE_MAX = 1024


class PushoverChannel:
    """``priority`` 1 (high: bypasses quiet hours) for critical, 0 otherwise."""

    name = "pushover"
    max_recipients = 50

    def __init__(self, http: HTTPClient, config: PushoverConfig) -> None:
        if not config.token:
            raise ValueError("pushover.token is not set")
        self._http = http
        self._token = config.token
        self._url = config.url
        self.secrets: tuple[str, ...] = (config.token,)

    def form(self, note: Notification) -> dict[str, str]:
        return {
            "token": self._token,
            "user": ",".join(note.recipients),
            "title": note.title[:TITLE_MAX],
            "message": note.body[:MESSAGE_MAX] or note.title[:MESSAGE_MAX],
            "priority": "1" if note.level == "critical" else "0",
            "timestamp": str(int(note.ts)),
        }

    def send(self, notification: Notification) -> Deferred[None]:
        return post(self._http, self._url, data=self.form(notification)).addCallback(
            lambda _: None)
