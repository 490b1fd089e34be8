"""The web UI: server-rendered page shells whose data comes from ``/api/0`` and ``/ws``.

A page is ``layout.html`` around ``<page>.html``, filled with a few values that
are all HTML-escaped. Everything a host, a datagram or a user supplies reaches
the browser only as JSON from the API and is put into the page by the scripts
under ``/static`` with ``textContent``, never as markup; no page has inline
script or style, so a Content-Security-Policy without ``unsafe-inline`` holds.

Pages share the API's authentication: a browser without a session is sent to
``/login`` and back afterwards; with no users configured no login is needed.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Any, Final
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from heartbeat.server.access import Role, Viewer
from heartbeat.server.auth import (
    LoginRefused,
    LoginThrottled,
    SecondFactorNeeded,
    SecondFactorRefused,
)
from heartbeat.server.registry import Registry
from heartbeat.server.store import StoreUnavailable
from heartbeat.server.web.auth import LOGIN_PAGE, WebAuth

__all__ = ["PACKAGED_STATIC", "PACKAGED_TEMPLATES", "Pages", "StaticFiles", "Templates"]

log = Logger()
HERE: Final = Path(__file__).parent
PACKAGED_TEMPLATES: Final = HERE / "templates"
PACKAGED_STATIC: Final = HERE / "static"
HOME: Final = "/live"
ENROL: Final = "/settings#account-section"
"""Where a session that must enrol a second factor first is sent."""
PAGE_CSP: Final = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                   "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                   "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
TITLES: Final = {"live": "Live", "alerts": "Problems", "jobs": "Cron jobs",
                 "operations": "Maintenance and silences", "settings": "Settings",
                 "host": "Host overview", "login": "Log in"}


class Templates:
    """The page templates: ``templates_dir`` first, then the packaged ones; read once."""

    def __init__(self, override: Path | None = None) -> None:
        if override is not None and not override.is_dir():
            raise ValueError(f"{override} is not a directory")
        self._texts: dict[str, Template] = {}
        for packaged in sorted(PACKAGED_TEMPLATES.glob("*.html")):
            chosen = packaged
            if override is not None and (override / packaged.name).is_file():
                chosen = override / packaged.name
            self._texts[packaged.stem] = Template(chosen.read_text(encoding="utf-8"))

    def render(self, name: str, markup: Mapping[str, str] | None = None, **text: str) -> str:
        """Template ``name`` with ``text`` values escaped and ``markup`` values as they are."""
        values = {k: html.escape(v, quote=True) for k, v in text.items()}
        values.update(markup or {})
        return self._texts[name].safe_substitute(values)


class StaticFiles:
    """The UI's scripts, styles and images, read once at start-up and served from memory.

    A flat folder of small files: nothing is read from disk per request (no blocking,
    no path to traverse), and an ETag lets browsers revalidate cheaply.
    """

    TYPES: Final = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                    ".svg": "image/svg+xml", ".png": "image/png",
                    ".txt": "text/plain; charset=utf-8"}

    def __init__(self, directory: Path) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        for path in sorted(directory.iterdir()):
            kind = self.TYPES.get(path.suffix)
            if kind is not None and path.is_file():
                body = path.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                self.files[path.name] = (body, kind, etag)

    def render(self, request: IRequest, name: str) -> bytes:
        found = self.files.get(name)
        if found is None:
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"no such file\n"
        body, kind, etag = found
        request.setHeader(b"Content-Type", kind.encode())
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"ETag", etag.encode())
        if request.getHeader("if-none-match") == etag:
            request.setResponseCode(304)
            return b""
        return body


def safe_next(target: str | None) -> str:
    """A same-site path to return to after the login; anything else is the home page."""
    if not target or not target.startswith("/") or target.startswith("//") \
            or "\\" in target or any(ord(c) < 0x20 for c in target):
        return HOME
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.path.startswith(LOGIN_PAGE):
        return HOME
    return target


class Pages:
    """Renders the pages; the routes are in :class:`heartbeat.server.web.app.WebRoot`."""

    def __init__(self, auth: WebAuth, registry: Registry, templates: Templates,
                 version: str, static_dir: Path = PACKAGED_STATIC) -> None:
        self.auth = auth
        self.registry = registry
        self.templates = templates
        self.version = version
        self.static = StaticFiles(static_dir)

    # Helpers
    def _html(self, request: IRequest, body: str, status: int = 200) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Security-Policy", PAGE_CSP.encode())
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Referrer-Policy", b"same-origin")
        return body.encode("utf-8")

    @staticmethod
    def redirect(request: IRequest, location: str) -> bytes:
        request.setResponseCode(303)
        request.setHeader(b"Location", location.encode("utf-8"))
        request.setHeader(b"Cache-Control", b"no-store")
        return b""

    def _layout(self, request: IRequest, viewer: Viewer | None, page: str, content: str, *,
                status: int = 200, host: str = "", title: str | None = None) -> bytes:
        user = "" if viewer is None or viewer.name is None else viewer.name
        body = self.templates.render(
            "layout", {"content": content}, page=page, title=title or TITLES.get(page, page),
            host=host, user=user, auth="on" if self.auth.service.enabled else "off",
            version=self.version)
        return self._html(request, body, status)

    def _message(self, request: IRequest, viewer: Viewer, status: int, heading: str,
                 detail: str) -> bytes:
        content = self.templates.render("message", heading=heading, detail=detail)
        return self._layout(request, viewer, "message", content, status=status,
                            title=f"{status} {heading}")

    # Pages
    def home(self, request: IRequest) -> bytes:
        return self.redirect(request, HOME)

    def page(self, request: IRequest, name: str) -> bytes:
        """One of the host-independent pages (live, alerts, jobs, operations, settings)."""
        viewer = self.auth.page_viewer(request)
        if viewer is None:
            return self.auth.redirect_to_login(request)
        if viewer.restricted and name != "settings":
            return self.redirect(request, ENROL)
        return self._layout(request, viewer, name, self.templates.render(name))

    def host(self, request: IRequest, name: str) -> bytes:
        """A host's overview: for its owners and managers (admins: every host)."""
        viewer = self.auth.page_viewer(request)
        if viewer is None:
            return self.auth.redirect_to_login(request)
        if viewer.restricted:
            return self.redirect(request, ENROL)
        role = viewer.role(name)
        known = self.registry.get(name) is not None or name in self.registry.host_config
        if not known or role is None:
            return self._message(request, viewer, 404, "No such host",
                                 f"There is no host named {name!r} that you can see.")
        if role < Role.MANAGER:
            return self._message(
                request, viewer, 403, "Not yours to inspect",
                f"The overview of {name} is for its owner and managers; you are "
                f"{role.label}. Its state is on the live page.")
        return self._layout(request, viewer, "host", self.templates.render("host", host=name),
                            host=name, title=name)

    # Login
    def login_form(self, request: IRequest) -> bytes:
        target = safe_next(_arg(request, "next"))
        if not self.auth.service.enabled:
            return self.redirect(request, target)
        viewer = self.auth.page_viewer(request)
        if viewer is not None and viewer.via == "cookie":
            return self.redirect(request, target)
        return self._login_page(request, target, "")

    def _login_page(self, request: IRequest, target: str, error: str, name: str = "",
                    status: int = 200) -> bytes:
        content = self.templates.render("login", next=target, error=error, username=name,
                                        hidden="" if error else "hidden")
        return self._layout(request, None, "login", content, status=status)

    def login(self, request: IRequest) -> bytes | Deferred[bytes]:
        """The form's POST: a session cookie and back to ``next``, or the form again.

        A user with a second factor gets a second form for the code; it names this
        login by a challenge, so the password is not sent twice.
        """
        target = safe_next(_arg(request, "next"))
        if not self.auth.service.enabled:
            return self.redirect(request, target)
        origin = request.getHeader("origin")
        if origin is not None and not self.auth.same_origin(request, origin):
            return self._login_page(request, target, "This form must be sent from this site.",
                                    status=403)
        address = self.auth.client_address(request)
        challenge = _arg(request, "challenge")
        if challenge is not None:
            code = (_arg(request, "code") or "").strip()
            if not code:
                return self._code_page(request, target, challenge,
                                       "Enter the code from your app.", 400)
            d = self.auth.service.second_step(challenge, code, address)
            return d.addCallbacks(self._logged_in(request, target),
                                  self._refused(request, target, "", challenge))
        name = _arg(request, "username") or ""
        password = _arg(request, "password") or ""
        if not name or not password:
            return self._login_page(request, target, "Enter your user name and password.",
                                    name, 400)
        d = self.auth.service.login(name, password, address)
        return d.addCallbacks(self._logged_in(request, target),
                              self._refused(request, target, name, None))

    def _code_page(self, request: IRequest, target: str, challenge: str, error: str = "",
                   status: int = 200) -> bytes:
        content = self.templates.render("login_totp", next=target, challenge=challenge,
                                        error=error, hidden="" if error else "hidden")
        return self._layout(request, None, "login", content, status=status)

    def _logged_in(self, request: IRequest, target: str) -> Any:
        def logged_in(result: Any) -> bytes:
            token, session = result
            self.auth.start_session(request, token)
            return self.redirect(request, ENROL if session.restricted else target)
        return logged_in

    def _refused(self, request: IRequest, target: str, name: str,
                 challenge: str | None) -> Any:
        def refused(failure: Failure) -> bytes:
            if failure.check(LoginThrottled):
                error = failure.value
                assert isinstance(error, LoginThrottled)
                request.setHeader(b"Retry-After", str(error.retry_after).encode())
                text = f"Too many failed logins: try again in {error.retry_after} s."
                if challenge is not None:
                    return self._code_page(request, target, challenge, text, 429)
                return self._login_page(request, target, text, name, 429)
            if failure.check(SecondFactorNeeded):
                needed = failure.value
                assert isinstance(needed, SecondFactorNeeded)
                return self._code_page(request, target, needed.challenge)
            if failure.check(SecondFactorRefused):
                assert challenge is not None
                return self._code_page(request, target, challenge,
                                       "That code is wrong, used or expired.", 401)
            if failure.check(StoreUnavailable):
                text = "The server cannot save a login just now: try again in a moment."
                if challenge is not None:
                    return self._code_page(request, target, challenge, text, 503)
                return self._login_page(request, target, text, name, 503)
            failure.trap(LoginRefused)
            if challenge is not None:
                return self._login_page(request, target,
                                        "That login has expired: log in again.", "", 401)
            return self._login_page(request, target, "Wrong user name or password.", name, 401)
        return refused


def _arg(request: IRequest, name: str) -> str | None:
    """A query or form field as text (the first one given)."""
    raw = (request.args or {}).get(name.encode(), [None])[0]
    return None if raw is None else raw.decode("utf-8", "replace")
