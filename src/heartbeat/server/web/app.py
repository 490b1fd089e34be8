"""The HTTP site on hbd_port: the API, ``/ws``, the pages and ``/static``, in one Klein tree.

Hardening lives here, below every route (docs/SECURITY.md): security headers on
every response, a bounded request body, a deadline for each request to arrive
in full, and a cap on connections in all and per address.
"""

from __future__ import annotations

import io
from collections import Counter
from functools import partial
from http import HTTPStatus
from typing import Any, Final, cast
from urllib.parse import unquote_to_bytes

from autobahn.twisted.resource import WebSocketResource
from klein import Klein
from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Request, Site
from werkzeug.exceptions import MethodNotAllowed, NotFound

from heartbeat.server.web.api import HeartbeatAPI
from heartbeat.server.web.auth import SAFE_METHODS, own_origin
from heartbeat.server.web.errors import ApiError, routing_error
from heartbeat.server.web.metrics import MetricsPage
from heartbeat.server.web.origin import RequestPolicy, host_name
from heartbeat.server.web.pages import PAGE_CSP, Pages
from heartbeat.server.web.pings import PingPage
from heartbeat.server.web.status import StatusBoard, StatusFeedFactory
from heartbeat.server.web.websocket import FeedFactory
from heartbeat.text import json_bytes

__all__ = [
    "SECURITY_HEADERS",
    "BoundedRequest",
    "ConnectionBudget",
    "ConnectionLimit",
    "HeartbeatChannel",
    "HeartbeatSite",
    "WebRoot",
    "reason_phrase",
]

log = Logger()
_ANY_SITE: Final = RequestPolicy(["*"])
"""For a request whose site has no policy (a bare Site in a test): no Host check."""

SECURITY_HEADERS: Final = (
    (b"Content-Security-Policy", PAGE_CSP.encode()),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"X-Frame-Options", b"DENY"),
    (b"Referrer-Policy", b"same-origin"),
    (b"Cross-Origin-Opener-Policy", b"same-origin"),
)
"""Sent with every answer, JSON and errors too: the pages' own CSP (no inline script
or style, frame-ancestors 'none') is the site's default."""


class WebRoot:
    """Mounts the API, the same-port WebSocket feed and (when given) the web UI's pages."""

    app = Klein()

    def __init__(self, api: HeartbeatAPI, feed: FeedFactory, pages: Pages | None = None, *,
                 metrics: MetricsPage | None = None, status: StatusBoard | None = None,
                 pings: PingPage | None = None) -> None:
        self.api = api
        self.pages = pages
        self.metrics = metrics
        self.status = status
        self.pings = pings
        self._status_feed = None if status is None else WebSocketResource(
            StatusFeedFactory(status))
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

    @app.route("/metrics", methods=["GET", "HEAD"])
    def metrics_page(self, request: IRequest) -> Any:
        if self.metrics is None:
            raise NotFound()
        return self.metrics.render(request)

    # Public status pages and badges: no login (heartbeat.server.web.status)
    def _board(self) -> StatusBoard:
        if self.status is None:
            raise NotFound()
        return self.status

    @app.handle_errors(ApiError)
    def _api_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, ApiError)
        return error.respond(request)

    @app.route("/status/<slug>.json", methods=["GET", "HEAD"])
    def status_json(self, request: IRequest, slug: str) -> bytes:
        return self._board().render_json(request, slug)

    @app.route("/status/<slug>", methods=["GET", "HEAD"])
    def status_page(self, request: IRequest, slug: str) -> bytes:
        return self._board().render_page(request, slug)

    @app.route("/status/<slug>/feed")
    def status_feed(self, request: IRequest, slug: str) -> IResource:
        self._board()
        assert self._status_feed is not None
        return self._status_feed

    @app.route("/badge/<token>.svg", methods=["GET", "HEAD"])
    def badge(self, request: IRequest, token: str) -> bytes:
        return self._board().render_badge(request, token)

    # Cron-job pings: no login, the UUID is the secret (heartbeat.server.web.pings)
    def _pings(self) -> PingPage:
        if self.pings is None:
            raise NotFound()
        return self.pings

    @app.route("/ping/<uuid>", methods=["GET", "POST"])
    def ping(self, request: IRequest, uuid: str) -> bytes:
        return self._pings().render(request, uuid)

    @app.route("/ping/<uuid>/<action>", methods=["GET", "POST"])
    def ping_action(self, request: IRequest, uuid: str, action: str) -> bytes:
        return self._pings().render(request, uuid, action)

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

    @app.route("/jobs", methods=["GET", "HEAD"])
    def jobs(self, request: IRequest) -> Any:
        return self._pages().page(request, "jobs")

    @app.route("/settings", methods=["GET", "HEAD"])
    def settings(self, request: IRequest) -> Any:
        return self._pages().page(request, "settings")

    @app.route("/operations", methods=["GET", "HEAD"])
    def operations(self, request: IRequest) -> Any:
        return self._pages().page(request, "operations")

    @app.route("/plugins/<name>", methods=["GET", "HEAD"])
    def host(self, request: IRequest, name: str) -> Any:
        return self._pages().host(request, name)

    @app.route("/", branch=True)
    def everything_else(self, request: IRequest) -> Any:
        if request.path == b"/" and self.pages is not None:
            return self.pages.home(request)
        return self.api.app.resource()


def reason_phrase(code: int) -> bytes:
    """The status line's phrase for ``code``: Twisted's, else the standard one (429...)."""
    phrase = RESPONSES.get(code)
    if phrase is not None:
        return phrase
    try:
        return HTTPStatus(code).phrase.encode("ascii")
    except ValueError:
        return b"Unknown Status"


class BoundedRequest(Request):
    """A request whose body is dropped, not buffered, past ``max_body`` bytes: 413.

    Its status line always has the standard reason phrase: Twisted's table lacks
    some we answer with (``429 Too Many Requests`` read ``Unknown Status``).
    """

    max_body = 1024 * 1024

    def __init__(self, *args: Any, max_body: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if max_body is not None:
            self.max_body = max_body
        self._received = 0
        self._too_large = False

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        super().setResponseCode(code, reason_phrase(code) if message is None else message)

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
        for name, value in SECURITY_HEADERS:
            self.responseHeaders.setRawHeaders(name, [value])
        policy: RequestPolicy = getattr(cast(Any, self.channel).site, "policy", _ANY_SITE)
        host = self.getHeader("host")
        if self._too_large:
            self._refuse(413, "body_too_large", f"the body is larger than {self.max_body} bytes")
        elif not _is_utf8(unquote_to_bytes(self.path)):
            # Klein would answer text and log a traceback per request.
            self._refuse(400, "bad_request", "the URL is not UTF-8 once percent-decoded")
        elif not policy.host_allowed(host):
            self._refuse(421, "unknown_host",
                         f"this server does not answer to {host_name(host)!r}: add it to "
                         f"http_hosts in its config (DNS rebinding guard, docs/SECURITY.md)")
        elif (self.method not in SAFE_METHODS and (reason := policy.cross_site(
                self.getHeader("origin"), self.getHeader("sec-fetch-site"),
                own_origin(self))) is not None):
            self._refuse(403, "csrf", f"a change sent from a page of another site is "
                                      f"refused ({reason})")
        else:
            super().process()

    def _refuse(self, status: int, error: str, detail: str) -> None:
        self.site = cast(Any, self.channel).site
        self.setResponseCode(status)
        self.setHeader(b"Content-Type", b"application/json")
        self.setHeader(b"Connection", b"close")
        self.write(json_bytes({"error": error, "detail": detail}))
        self.finish()


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class HeartbeatChannel(HTTPChannel):
    """An HTTP connection on which each request must arrive in full within ``request_timeout``.

    The idle timeout alone lets a client hold a connection for ever by sending
    one header byte just before it runs out (slowloris). The deadline starts
    with the connection, or with the first byte of the next request on a
    kept-alive one, and ends when the request's body is complete.
    """

    request_timeout: float = 30.0
    _deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None and not self._handlingRequest:
            self._arm()
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._disarm()
        super().allContentReceived()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._disarm()
        super().connectionLost(reason)

    def _arm(self) -> None:
        self._deadline = self.callLater(self.request_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        site = getattr(self, "site", None)
        if site is not None:
            site.slow_requests += 1
        peer = self.transport.getPeer() if self.transport is not None else None
        log.info("web: closing {peer}: no complete request within {timeout}s",
                 peer=str(peer), timeout=self.request_timeout)
        self.timeoutConnection()


class HeartbeatSite(Site):
    """A Site that bounds request bodies and times, closes idle connections, logs quietly,
    and answers only to the names of ``policy`` and to no change from another site."""

    noisy = False
    protocol = HeartbeatChannel  # type: ignore[assignment]  # HTTP/1.1 only: no TLS, no h2

    def __init__(self, resource: IResource, idle_timeout: float = 60.0,
                 max_body: int = 1024 * 1024, request_timeout: float = 30.0,
                 reactor: Any = None, *, policy: RequestPolicy | None = None) -> None:
        super().__init__(resource, requestFactory=partial(BoundedRequest, max_body=max_body),
                         timeout=idle_timeout, reactor=reactor)
        self.policy = policy or RequestPolicy()
        self.displayTracebacks = False
        self.request_timeout = request_timeout
        self.slow_requests = 0

    def buildProtocol(self, addr: IAddress | None) -> Any:
        channel = super().buildProtocol(addr)
        if channel is not None:
            channel.request_timeout = self.request_timeout
        return channel

    def log(self, request: Any) -> None:
        pass


class ConnectionBudget:
    """Open connections in all and per address, shared by every port it guards."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self.open = 0
        self._per: Counter[str] = Counter()
        self.refused = 0

    def take(self, host: str) -> bool:
        if self.open >= self.total or self._per[host] >= self.per_address:
            self.refused += 1
            if self.refused % 100 == 1:
                log.warn("web: refused a connection from {host}: {open} open ({here} from "
                         "there); {refused} refused so far", host=host, open=self.open,
                         here=self._per[host], refused=self.refused)
            return False
        self.open += 1
        self._per[host] += 1
        return True

    def give_back(self, host: str) -> None:
        self.open -= 1
        self._per[host] -= 1
        if self._per[host] <= 0:
            del self._per[host]

    def to_json(self) -> dict[str, int]:
        return {"open": self.open, "refused": self.refused}


class ConnectionLimit(WrappingFactory):
    """Wraps a listening port's factory so that its connections draw on a budget.

    A connection over the budget is closed as soon as it is accepted (no
    protocol is built), so a client opening thousands of idle connections
    cannot use up the process's file descriptors, which the store and the
    journal need too. Wrapping keeps the count right for a WebSocket that takes
    over its HTTP connection: the wrapper stays the transport's protocol.
    """

    noisy = False

    def __init__(self, factory: Any, budget: ConnectionBudget) -> None:
        super().__init__(factory)
        self.budget = budget
        self._address: dict[ProtocolWrapper, str] = {}

    def buildProtocol(self, addr: IAddress | None) -> Any:
        host = str(getattr(addr, "host", addr))
        if not self.budget.take(host):
            return None
        wrapper = super().buildProtocol(addr)
        if wrapper is None:
            self.budget.give_back(host)
            return None
        self._address[wrapper] = host
        return wrapper

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        super().unregisterProtocol(p)
        host = self._address.pop(p, None)
        if host is not None:
            self.budget.give_back(host)
