"""Public status pages, their live feed and the badges: what anyone may see, and no more.

``/status/<slug>`` is rendered on the server (it works without JavaScript and
reloads itself every minute then); ``status.js`` keeps it current over
``/status/<slug>/feed``, a WebSocket that sends only the names and states of
the page's hosts and whether a maintenance window covers each, never their
addresses, data, messages, nor anything about the window. ``/status/<slug>.json``
is the same for scripts, and ``/badge/<token>.svg`` a badge for a host or a
page. None of it needs a login; all of it reads the registry, the one truth
about host states, and asks what covers a host of the object the API asks
(``OperationsService.in_maintenance``).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from heartbeat.config.server import StatusPageConfig
from heartbeat.events import Event
from heartbeat.server.badges import COLOURS, render_badge
from heartbeat.server.registry import Registry
from heartbeat.server.status_pages import (
    Badge,
    BadgeBook,
    PageSummary,
    Row,
    StatusPage,
    page_rows,
)
from heartbeat.server.store import StoreService
from heartbeat.server.tables import BADGES, Rows, Tables
from heartbeat.server.web.errors import ApiError, json_response
from heartbeat.server.web.pages import Templates
from heartbeat.server.web.websocket import unsent_bytes
from heartbeat.text import json_bytes

__all__ = ["MAX_FEED_CLIENTS", "StatusBoard", "StatusFeedFactory", "load_badges"]

log = Logger()
MAX_FEED_CLIENTS: Final = 1000
"""Open status feeds at most (they need no login): more are refused with 503."""
MAX_BACKLOG: Final = 256 * 1024
"""A status feed client that leaves this much unsent is dropped."""
ROWS_FOR: Final = 1.0
"""Seconds a page's rows and summary are kept when no event changed them: what a host's
tags (a window may name them) or its configuration change shows this late at most."""
STATUS_CSP: Final = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                     "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                     "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
BADGE_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; sandbox"


def load_badges(tables: Tables) -> list[Badge]:
    return [Badge(token, kind, target, created) for token, kind, target, created in
            sorted(tables.rows(BADGES), key=lambda row: (row[3], row[0]))]


def _when(ts: float | None) -> tuple[str, str]:
    """(ISO time, short text) for a ``<time>`` element."""
    if ts is None:
        return "", "\N{EN DASH}"
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.isoformat(timespec="seconds"), moment.strftime("%Y-%m-%d %H:%M UTC")


class StatusBoard(Service):
    """Every public page, the badges, and the feeds of the pages' open viewers."""

    name = "status-pages"

    def __init__(self, registry: Registry, pages: Mapping[str, StatusPageConfig],
                 store: StoreService, clock: IReactorTime, templates: Templates, *,
                 version: str, in_maintenance: Callable[[str], bool] | None = None,
                 in_maintenance_of: Callable[[Iterable[str]], set[str]] | None = None) -> None:
        self.registry = registry
        self.in_maintenance = in_maintenance or (lambda host: False)
        """Whether an open maintenance window covers a host now (the API's answer:
        ``OperationsService.in_maintenance``)."""
        self.in_maintenance_of = in_maintenance_of or (lambda hosts: set())
        """The same for many hosts at once (``OperationsService.in_maintenance_of``)."""
        self.pages = {slug: StatusPage(slug, page.title, page.hosts, page.description)
                      for slug, page in pages.items()}
        self.store = store
        self.clock = clock
        self.templates = templates
        self.version = version
        self.badges = BadgeBook()
        self.clients: dict[str, set[StatusFeedProtocol]] = {slug: set() for slug in self.pages}
        self._members: dict[str, set[str]] = {}
        self._rows: dict[str, tuple[float, list[Row], PageSummary]] = {}
        self._summaries: dict[str, IDelayedCall] = {}
        self._snapshots: dict[str, IDelayedCall] = {}
        self.views = 0
        self.sent = 0
        self.dropped_clients = 0

    def restore(self, badges: Iterable[Badge]) -> None:
        """The stored badges; each page gets one the first time it is configured."""
        self.badges.restore(badges)
        for slug in self.pages:
            if self.badges.of("page", slug) is None:
                badge = self.badges.make("page", slug, self.clock.seconds())
                for write in _badge_writes(badge):
                    self.store.submit(write)

    # What a page shows
    def page(self, slug: str) -> StatusPage:
        found = self.pages.get(slug)
        if found is None:
            raise ApiError(404, "not_found", f"no status page {slug!r}")
        return found

    def members(self, slug: str) -> set[str]:
        """The names page ``slug`` shows, kept up to date by :meth:`on_host`."""
        found = self._members.get(slug)
        if found is None:
            page = self.pages[slug]
            names = set(self.registry.host_config) | {h.name for h in self.registry}
            found = self._members[slug] = {n for n in names if page.shows(n)}
        return found

    def states(self, slug: str) -> dict[str, tuple[str, float | None, bool]]:
        """The page's hosts, reported or only configured: name -> (state, since, in
        maintenance)."""
        members = self.members(slug)
        covered = self.in_maintenance_of(members)
        hosts = self.registry.hosts
        found: dict[str, tuple[str, float | None, bool]] = {}
        for name in members:
            host = hosts.get(name)
            found[name] = ("UNKNOWN", None, name in covered) if host is None else (
                host.state.value, host.since, name in covered)
        return found

    def rows(self, slug: str) -> tuple[list[Row], PageSummary]:
        """The rows and the summary of page ``slug``: made again after a host or window
        event that may change them, else at most every :data:`ROWS_FOR` seconds. The
        pages are public: a page of 100,000 hosts costs some 0.2 s of the reactor, which
        requests from anyone, however many, must not make more often than that."""
        now = self.clock.seconds()
        kept = self._rows.get(slug)
        if kept is not None and 0 <= now - kept[0] < ROWS_FOR:
            return kept[1], kept[2]
        rows, summary = page_rows(self.states(slug))
        self._rows[slug] = (now, rows, summary)
        return rows, summary

    def snapshot(self, slug: str) -> dict[str, Any]:
        page = self.page(slug)
        rows, summary = self.rows(slug)
        return {"type": "snapshot", "slug": slug, "title": page.title,
                "description": page.description, "summary": summary.to_json(),
                "hosts": [{"name": n, "state": s, "since": t, "maintenance": m}
                          for n, s, t, m in rows],
                "ts": self.clock.seconds()}

    # Events (subscribed in heartbeat.server.compose)
    def on_host(self, event: Event) -> None:
        """A host appeared, changed state or was removed: keep the pages' lists, and tell
        their viewers (the state at once; the page's counts at most once a second)."""
        host = self.registry.get(event.host)
        known = host is not None or event.host in self.registry.host_config
        for slug, page in self.pages.items():
            if not page.shows(event.host):
                continue
            self._rows.pop(slug, None)
            members = self._members.get(slug)
            if members is not None:
                if known:
                    members.add(event.host)
                else:
                    members.discard(event.host)
            if not self.clients[slug]:
                continue
            payload = json_bytes({
                "type": "state", "host": event.host,
                "state": None if not known else "UNKNOWN" if host is None
                else str(host.state.value),
                "since": None if host is None else host.since,
                "maintenance": known and self.in_maintenance(event.host), "ts": event.ts})
            for client in list(self.clients[slug]):
                self._send(slug, client, payload)
            if slug not in self._summaries:
                self._summaries[slug] = self.clock.callLater(1.0, self._send_summary, slug)

    def on_maintenance(self, event: Event) -> None:
        """A window was made, changed, ended or opened: the viewers of every page it may
        touch get a new snapshot (once per page however many hosts the window names)."""
        for slug, page in self.pages.items():
            if event.host and not page.shows(event.host):
                continue  # a window of globs or tags has no host: every page looks again
            self._rows.pop(slug, None)
            if not self.clients[slug] or slug in self._snapshots:
                continue
            self._snapshots[slug] = self.clock.callLater(0, self._send_snapshot, slug)

    def _send_snapshot(self, slug: str) -> None:
        self._snapshots.pop(slug, None)
        payload = json_bytes(self.snapshot(slug))
        for client in list(self.clients[slug]):
            self._send(slug, client, payload)

    def _send_summary(self, slug: str) -> None:
        self._summaries.pop(slug, None)
        _, summary = self.rows(slug)
        payload = json_bytes({"type": "summary", "summary": summary.to_json(),
                              "ts": self.clock.seconds()})
        for client in list(self.clients[slug]):
            self._send(slug, client, payload)

    def stopService(self) -> None:
        super().stopService()
        for calls in (self._summaries, self._snapshots):
            for call in calls.values():
                if call.active():
                    call.cancel()
            calls.clear()

    def _send(self, slug: str, client: StatusFeedProtocol, payload: bytes) -> None:
        if client.backlog() > MAX_BACKLOG:
            self.dropped_clients += 1
            self.clients[slug].discard(client)
            client.dropConnection(abort=True)
            return
        client.sendMessage(payload)
        self.sent += 1

    def join(self, slug: str, client: StatusFeedProtocol) -> None:
        self.clients[slug].add(client)
        client.sendMessage(json_bytes(self.snapshot(slug)))
        self.sent += 1

    def leave(self, slug: str, client: StatusFeedProtocol) -> None:
        self.clients.get(slug, set()).discard(client)

    def feed_count(self) -> int:
        return sum(len(clients) for clients in self.clients.values())

    # Badges
    def make_badge(self, kind: str, target: str) -> Deferred[Badge]:
        """A new badge for ``target`` once it is on disk (StoreUnavailable: the old one
        goes on)."""
        assert kind in ("host", "page")
        badge = self.badges.new(kind, target, self.clock.seconds())  # type: ignore[arg-type]

        def made(_: None) -> Badge:
            self.badges.put(badge)
            log.info("status: a new {kind} badge for {target}", kind=kind, target=target)
            return badge

        return self.store.commit(*_badge_writes(badge)).addCallback(made)

    def revoke_badge(self, kind: str, target: str) -> Deferred[Badge | None]:
        """Revoke ``target``'s badge once its row is gone (None: it had none)."""
        badge = self.badges.of(kind, target)
        if badge is None:
            return succeed(None)
        return self.store.commit(Rows("delete", BADGES, [(badge.token,)])).addCallback(
            lambda _: self.badges.revoke(kind, target))

    def badge_svg(self, token: str) -> tuple[int, str]:
        """(status, SVG) of ``/badge/<token>.svg``: what it shows now, or 404 'unknown'."""
        badge = self.badges.get(token)
        if badge is None:
            return 404, render_badge("badge", "unknown")
        if badge.kind == "page":
            page = self.pages.get(badge.target)
            if page is None:
                return 404, render_badge("status page", "gone")
            _, summary = self.rows(badge.target)
            return 200, render_badge(page.title, summary.badge_text,
                                     COLOURS[summary.overall])
        host = self.registry.get(badge.target)
        if host is None and badge.target not in self.registry.host_config:
            return 404, render_badge(badge.target, "gone")
        state = "UNKNOWN" if host is None else str(host.state.value)
        if self.in_maintenance(badge.target):
            return 200, render_badge(badge.target, f"{state} \N{MIDDLE DOT} maintenance",
                                     COLOURS["maintenance"])
        return 200, render_badge(badge.target, state)

    def to_json(self) -> dict[str, Any]:
        return {"pages": len(self.pages), "views": self.views, "feeds": self.feed_count(),
                "sent": self.sent, "dropped_clients": self.dropped_clients,
                "badges": len(self.badges)}

    # Web
    def render_page(self, request: IRequest, slug: str) -> bytes:
        page = self.page(slug)
        self.views += 1
        rows, summary = self.rows(slug)
        cells = []
        for name, state, since, covered in rows:
            iso, text = _when(since)
            marker = ' data-maintenance="true"' if covered else ""
            tag = ' <span class="tag marker marker-maintenance">maintenance</span>' \
                if covered else ""
            cells.append(
                f'<tr data-host="{html.escape(name)}" data-state="{state}"{marker}>'
                f'<td data-label="Host">{html.escape(name)}</td>'
                f'<td data-label="State"><span class="state state-{state.lower()}">{state}'
                f'</span>{tag}</td><td data-label="Since"><time datetime="{iso}">{text}'
                f"</time></td></tr>")
        badge = self.badges.of("page", slug)
        iso, text = _when(self.clock.seconds())
        body = self.templates.render(
            "status", {"rows": "\n".join(cells)}, title=page.title,
            description=page.description, slug=slug, version=self.version,
            overall=summary.overall, overall_text=_OVERALL_TEXT[summary.overall],
            counts=_counts(summary),
            badge="" if badge is None else f"/badge/{badge.token}.svg",
            updated_iso=iso, updated=text,
            more="" if summary.total <= len(rows) else
            f"Listing the {len(rows)} worst of {summary.total} hosts.")
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"Content-Security-Policy", STATUS_CSP.encode())
        return body.encode("utf-8")

    def render_json(self, request: IRequest, slug: str) -> bytes:
        self.page(slug)
        self.views += 1
        return json_response(request, self.snapshot(slug))

    def render_badge(self, request: IRequest, token: str) -> bytes:
        status, svg = self.badge_svg(token)
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"image/svg+xml; charset=utf-8")
        request.setHeader(b"Cache-Control", b"max-age=30")
        request.setHeader(b"Content-Security-Policy", BADGE_CSP.encode())
        return svg.encode("utf-8")


_OVERALL_TEXT: Final = {"operational": "All systems operational",
                        "maintenance": "Maintenance in progress",
                        "degraded": "Some systems are down",
                        "outage": "Major outage", "no hosts": "No hosts to show yet"}


def _counts(summary: PageSummary) -> str:
    """``2 up, 1 down, 0 unknown, 1 in maintenance of 4`` (as status.js writes it)."""
    maintenance = f", {summary.maintenance} in maintenance" if summary.maintenance else ""
    return (f"{summary.up} up, {summary.down} down, {summary.unknown} unknown"
            f"{maintenance} of {summary.total}")


class StatusFeedProtocol(WebSocketServerProtocol):
    """One viewer of one public page; incoming messages are ignored."""

    factory: StatusFeedFactory
    slug: str | None = None

    def onConnect(self, request: ConnectionRequest) -> None:
        parts = request.path.strip("/").split("/")
        board = self.factory.board
        slug = parts[1] if len(parts) == 3 and parts[0] == "status" else ""
        if slug not in board.pages:
            raise ConnectionDeny(404, "no such status page")
        if board.feed_count() >= MAX_FEED_CLIENTS:
            raise ConnectionDeny(503, "too many status viewers")
        self.slug = slug

    def onOpen(self) -> None:
        if self.slug is not None:
            self.factory.board.join(self.slug, self)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.slug is not None:
            self.factory.board.leave(self.slug, self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        pass

    def backlog(self) -> int:
        return unsent_bytes(self.transport)


class StatusFeedFactory(WebSocketServerFactory):
    protocol = StatusFeedProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, board: StatusBoard) -> None:
        super().__init__()
        self.board = board
        self.setProtocolOptions(webStatus=False, autoPingInterval=30, autoPingTimeout=15,
                                maxFramePayloadSize=4096, maxMessagePayloadSize=4096)


def _badge_writes(badge: Badge) -> list[Rows]:
    """``badge``'s row in place of its target's old one."""
    return [Rows("delete", BADGES, [(badge.kind, badge.target)], ("kind", "target")),
            Rows("add", BADGES, [(badge.token, badge.kind, badge.target, badge.created)])]
