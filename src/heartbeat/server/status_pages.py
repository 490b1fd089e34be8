"""Public status pages and badges: which hosts a page shows, and how the page stands. Pure.

A page (``status_pages.<slug>`` in the config) names hosts by name or glob;
it shows each matching host's name and state, and whether a maintenance window
covers it now, nothing else, to anyone. Hosts match as the registry knows
them, and so do hosts configured under ``hosts:`` that have not reported yet
(UNKNOWN). A page lists at most ``MAX_ROWS`` hosts, the worst first; its
summary counts all of them, a host in maintenance as such (never as down).

Badges are small SVG images for a host or a page, at ``/badge/<token>.svg``:
the token is random (unguessable) and kept in the store, so a badge can be
published without publishing anything else, and revoked.
"""

from __future__ import annotations

import fnmatch
import heapq
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "MAX_ROWS",
    "Badge",
    "BadgeBook",
    "PageSummary",
    "Row",
    "StatusPage",
    "page_rows",
    "summarise",
]

MAX_ROWS: Final = 1000
"""Hosts one page lists at most (the worst first); its counts cover every match."""
_ORDER: Final = {"DOWN": 0, "UNREACHABLE": 1, "UNKNOWN": 2, "UP": 4}
_IN_MAINTENANCE: Final = 3
"""Where a host in maintenance is listed, whatever its state: after the problems, before UP."""
_DOWN: Final = frozenset({"DOWN", "UNREACHABLE"})

Row = tuple[str, str, float | None, bool]
"""One host on a page: name, state, since, whether a maintenance window covers it."""


class StatusPage:
    """One configured page: its slug, title, description and host patterns."""

    __slots__ = ("_exact", "_glob", "description", "patterns", "slug", "title")

    def __init__(self, slug: str, title: str, patterns: Iterable[str],
                 description: str = "") -> None:
        self.slug = slug
        self.title = title
        self.patterns = tuple(patterns)
        self.description = description
        self._exact = frozenset(p for p in self.patterns if not any(c in p for c in "*?["))
        regex = "|".join(fnmatch.translate(p) for p in self.patterns if p not in self._exact)
        self._glob = re.compile(regex) if regex else None

    def shows(self, host: str) -> bool:
        """Whether ``host`` is on this page (globs are case-sensitive, as host names are)."""
        return host in self._exact or (self._glob is not None
                                       and self._glob.match(host) is not None)


@dataclass(frozen=True, slots=True)
class PageSummary:
    """How a page stands: counts by state and one word for it. A host in maintenance is
    counted in ``maintenance`` only, whatever its state."""

    total: int
    up: int
    down: int
    unknown: int
    maintenance: int = 0

    @property
    def overall(self) -> str:
        """``operational``, ``maintenance`` (no problem but some hosts in maintenance),
        ``degraded``, ``outage`` or ``no hosts``."""
        if self.total == 0:
            return "no hosts"
        if self.down == 0 and self.unknown == 0:
            return "maintenance" if self.maintenance else "operational"
        if self.up == 0 and self.down > 0:
            return "outage"
        return "degraded"

    @property
    def badge_text(self) -> str:
        if self.overall == "degraded" and self.down:
            return f"{self.down}/{self.total} down"
        return self.overall

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "up": self.up, "down": self.down,
                "unknown": self.unknown, "maintenance": self.maintenance,
                "overall": self.overall}


def summarise(states: Iterable[tuple[str, bool]]) -> PageSummary:
    """The summary of (state, in maintenance) pairs."""
    total = up = down = unknown = maintenance = 0
    for state, covered in states:
        total += 1
        if covered:
            maintenance += 1
        elif state == "UP":
            up += 1
        elif state in _DOWN:
            down += 1
        else:
            unknown += 1
    return PageSummary(total, up, down, unknown, maintenance)


def page_rows(states: Mapping[str, tuple[str, float | None, bool]]
              ) -> tuple[list[Row], PageSummary]:
    """(the rows to list: worst first, hosts in maintenance just before UP, then by
    name), and the summary.

    ``states`` is the page's hosts (those :meth:`StatusPage.shows`): name -> (state,
    since, in maintenance).
    """
    matched = [(name, state, since, covered) for name, (state, since, covered)
               in states.items()]
    # Not a sort of every host (0.2 s at 100,000): the first rows of the problems and
    # the maintenance, then the first names of the hosts UP, which tuples order by name.
    listed = heapq.nsmallest(MAX_ROWS, (row for row in matched if row[3] or row[1] != "UP"),
                             key=_row_order)
    if len(listed) < MAX_ROWS:
        listed += heapq.nsmallest(MAX_ROWS - len(listed), (
            row for row in matched if not row[3] and row[1] == "UP"))
    return listed, summarise((row[1], row[3]) for row in matched)


def _row_order(row: Row) -> tuple[int, str]:
    return (_IN_MAINTENANCE if row[3] else _ORDER.get(row[1], 2), row[0])


@dataclass(frozen=True, slots=True)
class Badge:
    token: str
    kind: Literal["host", "page"]
    target: str
    created: float

    def to_json(self) -> dict[str, Any]:
        return {"token": self.token, "kind": self.kind, "target": self.target,
                "created": self.created, "url": f"/badge/{self.token}.svg"}


class BadgeBook:
    """Every badge by its token, and by what it shows (one badge per host or page)."""

    def __init__(self) -> None:
        self._by_token: dict[str, Badge] = {}
        self._by_target: dict[tuple[str, str], Badge] = {}

    def __len__(self) -> int:
        return len(self._by_token)

    def restore(self, badges: Iterable[Badge]) -> None:
        for badge in badges:
            self._add(badge)

    def _add(self, badge: Badge) -> None:
        self._by_token[badge.token] = badge
        self._by_target[(badge.kind, badge.target)] = badge

    def get(self, token: str) -> Badge | None:
        return self._by_token.get(token)

    def of(self, kind: str, target: str) -> Badge | None:
        return self._by_target.get((kind, target))

    def make(self, kind: Literal["host", "page"], target: str, now: float) -> Badge:
        """A new badge for ``target`` (replacing any it had: the old token stops working)."""
        return self.put(self.new(kind, target, now))

    @staticmethod
    def new(kind: Literal["host", "page"], target: str, now: float) -> Badge:
        """A new badge for ``target``, not in the book yet (see :meth:`put`)."""
        return Badge(secrets.token_urlsafe(18), kind, target, now)

    def put(self, badge: Badge) -> Badge:
        """``badge`` in the book, replacing its target's (whose token stops working)."""
        self.revoke(badge.kind, badge.target)
        self._add(badge)
        return badge

    def revoke(self, kind: str, target: str) -> Badge | None:
        badge = self._by_target.pop((kind, target), None)
        if badge is not None:
            del self._by_token[badge.token]
        return badge
