"""The HTTP site on hbd_port: the API, ``/ws`` and (later) the pages, in one Klein tree."""

from __future__ import annotations

from typing import Any

from autobahn.twisted.resource import WebSocketResource
from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Site

from heartbeat.server.web.api import HeartbeatAPI
from heartbeat.server.web.websocket import FeedFactory

__all__ = ["HeartbeatSite", "WebRoot"]


class WebRoot:
    """Mounts the API and the same-port WebSocket feed."""

    app = Klein()

    def __init__(self, api: HeartbeatAPI, feed: FeedFactory) -> None:
        self.api = api
        self._ws = WebSocketResource(feed)

    @app.route("/ws")
    def ws(self, request: IRequest) -> IResource:
        return self._ws

    @app.route("/", branch=True)
    def everything_else(self, request: IRequest) -> Any:
        return self.api.app.resource()


class HeartbeatSite(Site):
    """A Site that closes idle connections and keeps its access log quiet."""

    noisy = False

    def __init__(self, resource: IResource, idle_timeout: float = 60.0) -> None:
        super().__init__(resource, timeout=idle_timeout)
        self.displayTracebacks = False

    def log(self, request: Any) -> None:
        pass
