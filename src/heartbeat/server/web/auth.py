"""Who is asking: HTTP requests and feed connections turned into a :class:`Viewer`.

A request authenticates with ``Authorization: Bearer <token>`` or with the
session cookie a login sets. With no users configured every request is the
all-allowed viewer of the unauthenticated mode. A change (POST, PUT, DELETE...)
that relies on the cookie must also carry the session's CSRF token in
``X-CSRF-Token`` or come from a page of the same origin (``Origin`` header);
a bearer token is never sent by a browser on its own, so it needs neither.

Below every route (``heartbeat.server.web.app``) and in the feed's handshake,
in every mode, with users or without: only the names of ``http_hosts`` (and IP
addresses) are answered, and no change is taken from a page of another site
(:mod:`heartbeat.server.web.origin`).

Pages (the web UI) call :meth:`WebAuth.page_viewer` and, on None,
:meth:`WebAuth.redirect_to_login`; a login form calls
:meth:`heartbeat.server.auth.AuthService.login` and then
:meth:`WebAuth.start_session`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from http.cookies import CookieError, SimpleCookie
from typing import Any, Final, cast
from urllib.parse import quote, urlsplit

from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from heartbeat.server.access import Viewer
from heartbeat.server.auth import AuthService
from heartbeat.server.sessions import Session, token_digest
from heartbeat.server.web.errors import ApiError
from heartbeat.server.web.origin import FORWARDING_HEADERS, RequestPolicy, host_name

__all__ = ["COOKIE", "CSRF_HEADER", "LOGIN_PAGE", "SAFE_METHODS", "SessionReadThrough",
           "WebAuth", "own_origin"]

COOKIE: Final = "hb_session"
CSRF_HEADER: Final = "X-CSRF-Token"
LOGIN_PAGE: Final = "/login"
SAFE_METHODS: Final = frozenset({b"GET", b"HEAD", b"OPTIONS"})
_CACHE: Final = "_heartbeat_viewer"


def _unauthenticated(detail: str) -> ApiError:
    return ApiError(401, "unauthenticated", detail,
                    {"WWW-Authenticate": 'Bearer realm="heartbeat"'})


class WebAuth:
    """Authenticates requests and feed connections against the :class:`AuthService`."""

    def __init__(self, service: AuthService, policy: RequestPolicy | None = None) -> None:
        self.service = service
        self.policy = policy or RequestPolicy()

    def client_address(self, request: IRequest) -> str:
        """The client's address (behind a trusted proxy: the one it names), as the login
        throttle, API keys' last use and ``metrics.allow`` see it."""
        address = request.getClientAddress()
        peer = str(getattr(address, "host", None) or address)
        return self.policy.client(
            peer, request.requestHeaders.getRawHeaders("x-forwarded-for") or ())

    def local(self, request: IRequest) -> bool:
        """A request from this machine to a loopback name through no proxy (the first
        user may be created through the API only so: docs/USERS.md)."""
        address = request.getClientAddress()
        peer = str(getattr(address, "host", None) or address)
        forwarding = any(request.getHeader(name) is not None for name in FORWARDING_HEADERS)
        return self.policy.local(peer, request.getHeader("host"), forwarding)

    # HTTP
    def viewer(self, request: IRequest) -> Viewer:
        """The request's viewer, or an ApiError: 401 unauthenticated, 403 csrf."""
        cached = getattr(request, _CACHE, None)
        if isinstance(cached, Viewer):
            return cached
        viewer = self._authenticate(request)
        if viewer.restricted and request.path.startswith(b"/api/") and \
                not _enrolment_route(request.path.decode("latin-1"), viewer.name or ""):
            raise ApiError(403, "totp_enrolment_required",
                           "enrol a second factor first (POST /api/0/users/<you>/totp, then "
                           "/totp/confirm): this server requires one for you")
        setattr(request, _CACHE, viewer)
        return viewer

    def _authenticate(self, request: IRequest) -> Viewer:
        directory = self.service.directory
        if not self.service.enabled:
            return Viewer(directory)
        header = request.getHeader("authorization")
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _unauthenticated("the Authorization header must be 'Bearer <token>'")
            token = token.strip()
            if self.service.keys.looks_like_key(token):
                return self._key_viewer(token, self.client_address(request), request.method)
            session = self.service.session(token)
            if session is None:
                raise _unauthenticated("the token is unknown or has expired: log in again")
            return Viewer(directory, session.user, "bearer", session.key,
                          restricted=session.restricted)
        cookie = request.getCookie(COOKIE.encode())
        if cookie is None:
            raise _unauthenticated("log in first: POST /api/0/auth/login")
        session = self.service.session(cookie.decode("latin-1"))
        if session is None:
            raise _unauthenticated("the session has ended: log in again")
        if request.method not in SAFE_METHODS:
            self._check_csrf(request, session)
        return Viewer(directory, session.user, "cookie", session.key,
                      restricted=session.restricted)

    def _key_viewer(self, token: str, address: str | None, method: bytes | None) -> Viewer:
        """The viewer of an API key; a read-only key may not change anything (403)."""
        key = self.service.api_key(token, address)
        if key is None:
            raise _unauthenticated("the API key is unknown, revoked or expired")
        if key.read_only and method is not None and method not in SAFE_METHODS:
            raise ApiError(403, "read_only_key",
                           f"API key {key.key_id} is read-only: it cannot change anything")
        return Viewer(self.service.directory, key.user, "key", key_id=key.key_id,
                      read_only=key.read_only)

    def _check_csrf(self, request: IRequest, session: Session) -> None:
        token = request.getHeader(CSRF_HEADER)
        if token is not None and hmac.compare_digest(token.encode(), session.csrf.encode()):
            return
        origin = request.getHeader("origin")
        if origin is not None and self.same_origin(request, origin):
            return
        raise ApiError(403, "csrf", f"a change authenticated by the session cookie needs the "
                       f"{CSRF_HEADER} header or a same-origin Origin header")

    @staticmethod
    def same_origin(request: IRequest, origin: str) -> bool:
        """Whether an ``Origin`` header names this server (scheme, host and port)."""
        if request.getHeader("host") is None:
            return False
        return RequestPolicy.cross_site(origin, None, own_origin(request)) is None

    def start_session(self, request: IRequest, token: str) -> None:
        """Set the session cookie: HttpOnly, SameSite=Strict, Secure over TLS."""
        _set_cookie(request, token.encode())

    def end_session(self, request: IRequest) -> None:
        _set_cookie(request, b"", max_age=b"0", expires=b"Thu, 01 Jan 1970 00:00:00 GMT")

    # Pages
    def page_viewer(self, request: IRequest) -> Viewer | None:
        """The viewer of a page request, or None: then answer :meth:`redirect_to_login`."""
        try:
            return self.viewer(request)
        except ApiError as e:
            if e.status == 401:
                return None
            raise

    def redirect_to_login(self, request: IRequest) -> bytes:
        """A 303 to the login page that comes back to this page afterwards."""
        here = request.uri.decode("latin-1")
        request.setResponseCode(303)
        request.setHeader(b"Location", f"{LOGIN_PAGE}?next={quote(here, safe='')}".encode())
        request.setHeader(b"Cache-Control", b"no-store")
        return b""

    # WebSocket feed
    def feed_viewer(
        self, headers: Mapping[str, str], params: Mapping[str, Sequence[str]], host: str
    ) -> Viewer:
        """The viewer of a feed's opening handshake, or an ApiError (401 / 403 / 421).

        ``?token=`` works like a bearer token. Whatever the mode, a feed reached by a
        name not in ``http_hosts`` is refused (DNS rebinding), and so is one opened by
        a page of another host (any port: the feed has its own) unless it presents a
        token: the cookie, or no login at all, would let that page read the feed.
        A session that must enrol a second factor first gets no feed (403).
        """
        viewer = self._feed_viewer(headers, params, host)
        if viewer.restricted:
            raise ApiError(403, "totp_enrolment_required", "enrol a second factor first")
        return viewer

    def feed_read_through(self, headers: Mapping[str, str],
                          params: Mapping[str, Sequence[str]]) -> Deferred[bool] | None:
        """With a shared store: a feed's session this server does not hold read from the
        store first (:meth:`AuthService.read_through`); None when there is nothing to read."""
        tokens = params.get("token") or []
        token = tokens[0] if tokens else _cookie(headers.get("cookie"))
        if not self.service.shared or token is None or self.service.keys.looks_like_key(token) \
                or token_digest(token) in self.service.sessions.sessions:
            return None
        return self.service.read_through(token)

    def _feed_viewer(
        self, headers: Mapping[str, str], params: Mapping[str, Sequence[str]], host: str
    ) -> Viewer:
        directory = self.service.directory
        if not self.policy.host_allowed(host):
            raise ApiError(421, "unknown_host", f"this server does not answer to "
                                                f"{host_name(host)!r}: add it to http_hosts")
        tokens = params.get("token") or []
        origin = headers.get("origin")
        if not tokens and origin is not None \
                and host_name(urlsplit(origin).netloc or "null") != host_name(host):
            raise ApiError(403, "cross_site", "the feed is only opened by pages of this host "
                                              "(or with ?token=)")
        if not self.service.enabled:
            return Viewer(directory)
        if tokens and self.service.keys.looks_like_key(tokens[0]):
            return self._key_viewer(tokens[0], None, None)
        if tokens:
            session = self.service.session(tokens[0])
            if session is None:
                raise _unauthenticated("the token is unknown or has expired")
            return Viewer(directory, session.user, "bearer", session.key,
                          restricted=session.restricted)
        token = _cookie(headers.get("cookie"))
        if token is None:
            raise _unauthenticated("log in first, then connect with the cookie or ?token=")
        session = self.service.session(token)
        if session is None:
            raise _unauthenticated("the session has ended: log in again")
        return Viewer(directory, session.user, "cookie", session.key,
                      restricted=session.restricted)


def _enrolment_route(path: str, user: str) -> bool:
    """The API a restricted session may use: who am I, log out, enrol a second factor."""
    if path in ("/api/0/me", "/api/0/auth/logout", "/api/0", "/api/0/openapi.json"):
        return True
    mine = f"/api/0/users/{quote(user, safe='')}/totp"
    return path in (mine, mine + "/confirm")


def _scheme(request: IRequest) -> str:
    """``https`` when the request came over TLS, here or at a proxy in front of us.

    A TLS proxy (docs/SECURITY.md) speaks plain HTTP to us and says so in
    ``X-Forwarded-Proto``. Trusting it is safe: a browser never adds that header to
    a cross-site request, so a forged one cannot use it.
    """
    if request.isSecure():
        return "https"
    forwarded = (request.getHeader("x-forwarded-proto") or "").split(",")[0].strip().lower()
    return "https" if forwarded == "https" else "http"


def own_origin(request: IRequest) -> str:
    """This server's origin as the request reached it: ``scheme://Host``."""
    return f"{_scheme(request)}://{request.getHeader('host') or ''}"


def _set_cookie(request: IRequest, value: bytes, **extra: Any) -> None:
    # IRequest does not declare httpOnly/sameSite; twisted.web's Request has them.
    cast(Any, request).addCookie(COOKIE.encode(), value, path=b"/", httpOnly=True,
                                 sameSite="strict", secure=_scheme(request) == "https", **extra)


def _cookie(header: str | None) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return None if morsel is None else morsel.value


def _request_token(request: IRequest) -> str | None:
    """The session token a request carries (bearer, cookie, or a feed's ``?token=``)."""
    header = request.getHeader("authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None
    tokens = cast("Mapping[bytes, Sequence[bytes]]", request.args or {}).get(b"token")
    if tokens:
        return tokens[0].decode("latin-1")
    cookie = request.getCookie(COOKIE.encode())
    return None if cookie is None else cookie.decode("latin-1")


@implementer(IResource)
class SessionReadThrough:
    """The site's root with servers sharing a store: a request whose session this server
    does not hold (started on another) waits for it to be read from the store, then goes
    to ``inner`` as any other (docs/HA.md)."""

    isLeaf = True

    def __init__(self, inner: IResource, auth: AuthService) -> None:
        self.inner = inner
        self.auth = auth

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        return self.inner.getChildWithDefault(name, request)

    def putChild(self, path: bytes, child: IResource) -> None:
        self.inner.putChild(path, child)

    def render(self, request: IRequest) -> Any:
        token = _request_token(request)
        if token is None or self.auth.keys.looks_like_key(token) \
                or token_digest(token) in self.auth.sessions.sessions:
            return self.inner.render(request)
        gone: list[bool] = []
        request.notifyFinish().addErrback(  # type: ignore[attr-defined]
            lambda _: gone.append(True))

        def go_on(_: object) -> None:
            if not gone:
                request.render(self.inner)  # type: ignore[attr-defined]

        self.auth.read_through(token).addBoth(go_on)
        return NOT_DONE_YET
