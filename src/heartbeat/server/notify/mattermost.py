"""Mattermost: a JSON POST to an incoming webhook, one per target channel."""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import Deferred

from heartbeat.config.server import MattermostConfig
from heartbeat.server.notify._http import post_json
from heartbeat.server.notify.base import Notification

__all__ = ["MattermostChannel"]

TEXT_MAX = 16000  # Mattermost refuses posts over 16383 characters


class MattermostChannel:
    """Recipients are channel names or ``@user``; an empty one means the webhook's own channel.

    The webhook URL carries its key, so it is a secret: logs never show it.
    """

    name = "mattermost"
    max_recipients = 1

    def __init__(self, http: HTTPClient, config: MattermostConfig) -> None:
        if not config.url:
            raise ValueError("mattermost.url is not set")
        self._http = http
        self._url = config.url
        self._username = config.username
        self.secrets: tuple[str, ...] = (config.url, config.url.rsplit("/", 1)[-1])

    def payload(self, note: Notification) -> dict[str, Any]:
        body: dict[str, Any] = {"text": f"**{note.title}**\n{note.body}"[:TEXT_MAX]}
        if self._username:
            body["username"] = self._username
        target = note.recipients[0] if note.recipients else ""
        if target:
            body["channel"] = target
        return body

    def send(self, notification: Notification) -> Deferred[None]:
        return post_json(self._http, self._url, self.payload(notification)).addCallback(
            lambda _: None)
