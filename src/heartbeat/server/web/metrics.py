"""``GET /metrics`` on hbd_port: who may scrape, and the answer in the format asked for.

A scrape is allowed from an address in ``metrics.allow`` without credentials;
otherwise it must authenticate like an API call, as an admin (session or API
key) or with an API key of another user, who then sees only their own hosts
and none of the server's own numbers. Everything else is 401 or 403, as JSON.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from heartbeat.server.metrics import MetricsExporter
from heartbeat.server.web.auth import WebAuth
from heartbeat.server.web.errors import ApiError

__all__ = ["MetricsPage", "parse_networks"]

log = Logger()
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or networks (``10.0.0.0/8``, ``::1``); ValueError names a bad one."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


class MetricsPage:
    """Answers ``/metrics`` for one :class:`MetricsExporter`."""

    def __init__(self, exporter: MetricsExporter, auth: WebAuth,
                 allow: Iterable[Network] = ()) -> None:
        self.exporter = exporter
        self.auth = auth
        self.allow = tuple(allow)
        self.refused = 0

    def _allowed_address(self, request: IRequest) -> bool:
        try:
            address = ipaddress.ip_address(self.auth.client_address(request).split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.allow)

    def scope(self, request: IRequest) -> Callable[[str], bool] | None:
        """None: the scraper sees everything; else which hosts. ApiError: refused."""
        if self._allowed_address(request):
            return None
        viewer = self.auth.viewer(request)
        if viewer.admin:
            return None
        if viewer.via == "key":
            return viewer.sees
        raise ApiError(403, "forbidden", "metrics are for admins, API keys and the "
                                         "addresses listed in metrics.allow")

    def render(self, request: IRequest) -> bytes | Deferred[bytes]:
        try:
            sees = self.scope(request)
        except ApiError as e:
            self.refused += 1
            return e.respond(request)
        accept = request.getHeader("accept")

        def answer(result: tuple[bytes, str]) -> bytes:
            body, content_type = result
            request.setHeader(b"Content-Type", content_type.encode("ascii"))
            request.setHeader(b"Cache-Control", b"no-store")
            return body

        def failed(failure: Failure) -> bytes:
            log.failure("metrics: a scrape failed", failure)
            return ApiError(500, "metrics_failed", "the metrics could not be rendered: see "
                                                    "the server log").respond(request)

        return self.exporter.render(accept, sees).addCallbacks(answer, failed)

    def to_json(self) -> dict[str, Any]:
        return {"scrapes": self.exporter.scrapes, "shared": self.exporter.shared,
                "refused": self.refused}
