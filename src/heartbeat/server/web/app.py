"""The HTTP site on hbd_port: the API, ``/ws``, the pages and ``/static``, in one Klein tree."""

from __future__ import annotations

import io
import json
from functools import partial
from typing import Any, cast

from autobahn.twisted.resource import WebSocketResource
from klein import Klein
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Request, Site
from werkzeug.exceptions import MethodNotAllowed, NotFound

from heartbeat.server.web.api import HeartbeatAPI
from heartbeat.server.web.errors import routing_error
from heartbeat.server.web.pages import Pages
from heartbeat.server.web.websocket import FeedFactory

__all__ = ["BoundedRequest", "HeartbeatSite", "WebRoot"]


class WebRoot:
    """Mounts the API, the same-port WebSocket feed and (when given) the web UI's pages."""

    app = Klein()

    def __init__(self, api: HeartbeatAPI, feed: FeedFactory, pages: Pages | None = None) -> None:
        self.api = api
        self.pages = pages
        self._ws = WebSocketResource(feed)

    def _pages(self) -> Pages:
        if self.pages is None:
            raise NotFound()
        return self.pages

    @app.handle_errors(NotFound, MethodNotAllowed)
    def _no_route(self, request: IRequest, failure: Failure) -> bytes:
        return routing_error(request, failure)

    @app.route("/ws")
    def ws(self, request: IRequest) -> IResource:
        return self._ws

    @app.route("/static/<name>", methods=["GET", "HEAD"])
    def static(self, request: IRequest, name: str) -> bytes:
        return self._pages().static.render(request, name)

    @app.route("/login", methods=["GET", "HEAD"])
    def login_form(self, request: IRequest) -> Any:
        return self._pages().login_form(request)

    @app.route("/login", methods=["POST"])
    def login(self, request: IRequest) -> Any:
        return self._pages().login(request)

    @app.route("/live", methods=["GET", "HEAD"])
    def live(self, request: IRequest) -> Any:
        return self._pages().page(request, "live")

    @app.route("/alerts", methods=["GET", "HEAD"])
    def alerts(self, request: IRequest) -> Any:
        return self._pages().page(request, "alerts")

    @app.route("/settings", methods=["GET", "HEAD"])
    def settings(self, request: IRequest) -> Any:
        return self._pages().page(request, "settings")

    @app.route("/plugins/<name>", methods=["GET", "HEAD"])
    def host(self, request: IRequest, name: str) -> Any:
        return self._pages().host(request, name)

    @app.route("/", branch=True)
    def everything_else(self, request: IRequest) -> Any:
        if request.path == b"/" and self.pages is not None:
            return self.pages.home(request)
        return self.api.app.resource()


class BoundedRequest(Request):
    """A request whose body is dropped, not buffered, past ``max_body`` bytes: 413."""

    max_body = 1024 * 1024

    def __init__(self, *args: Any, max_body: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if max_body is not None:
            self.max_body = max_body
        self._received = 0
        self._too_large = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body:
            self._too_large = True
            self.content = io.BytesIO()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._too_large:
            return
        self._received += len(data)
        if self._received > self.max_body:
            self._too_large = True
            if self.content is not None:
                self.content.close()
            self.content = io.BytesIO()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if not self._too_large:
            super().process()
            return
        self.site = cast(Any, self.channel).site
        body = json.dumps({"error": "body_too_large",
                           "detail": f"the body is larger than {self.max_body} bytes"})
        self.setResponseCode(413)
        self.setHeader(b"Content-Type", b"application/json")
        self.setHeader(b"Connection", b"close")
        self.write(body.encode())
        self.finish()


class HeartbeatSite(Site):
    """A Site that bounds request bodies, closes idle connections, keeps its log quiet."""

    noisy = False

    def __init__(self, resource: IResource, idle_timeout: float = 60.0,
                 max_body: int = 1024 * 1024) -> None:
        super().__init__(resource, requestFactory=partial(BoundedRequest, max_body=max_body),
                         timeout=idle_timeout)
        self.displayTracebacks = False

    def log(self, request: Any) -> None:
        pass
