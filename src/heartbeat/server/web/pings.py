"""``/ping/<uuid>``: a cron job tells the server about a run, over HTTP, without a login.

The UUID is the secret (docs/JOBS.md): anyone who has it may ping the job, and
nobody needs more. ``POST`` or ``GET`` (for wget and plain scripts):

- ``/ping/<uuid>``: a run ended well (exit code 0);
- ``/ping/<uuid>/start``: a run began;
- ``/ping/<uuid>/fail``: a run failed (exit code 1);
- ``/ping/<uuid>/<0-255>``: a run ended with that exit code.

A POST's body is the run's log (its tail of ``jobs.MAX_LOG_BYTES`` is kept).
An unknown UUID answers 404 as a malformed one does; every ping, known or not,
counts against ``ping_rate`` per address (an IPv6 /64 is one), so UUIDs cannot be
guessed at speed: 429 with ``Retry-After`` beyond it.
"""

from __future__ import annotations

import math
from typing import Final

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from heartbeat.server.jobs import MAX_LOG_BYTES, valid_uuid
from heartbeat.server.jobservice import JobService
from heartbeat.server.limits import SourceRateLimit, source_key
from heartbeat.server.web.auth import WebAuth
from heartbeat.server.web.errors import ApiError

__all__ = ["PingPage", "parse_action"]

_OK: Final = b"OK\n"


def parse_action(action: str | None) -> tuple[str, int | None] | None:
    """(ping kind, exit code) of the URL's last segment; None: no such action."""
    if action is None:
        return "success", None
    if action in ("start", "fail"):
        return action, None
    if action.isdigit() and action.isascii() and len(action) <= 3 and int(action) <= 255:
        return "exit", int(action)
    return None


class PingPage:
    """Takes the pings of ``/ping/...`` for the :class:`JobService`, rate-limited."""

    def __init__(self, jobs: JobService, auth: WebAuth, clock: IReactorTime,
                 rate: float) -> None:
        self.jobs = jobs
        self.auth = auth
        self.clock = clock
        self.limit = SourceRateLimit(rate)
        self.refused = 0

    def render(self, request: IRequest, uuid: str, action: str | None = None) -> bytes:
        address = self.auth.client_address(request)
        if not self.limit.allow(source_key(address), self.clock.seconds()):
            self.refused += 1
            raise ApiError(429, "too_many_pings",
                           f"more than {self.limit.rate:g} pings/s from {address}",
                           {"Retry-After": str(math.ceil(self.limit.window))})
        parsed = parse_action(action)
        job = self.jobs.job(uuid) if valid_uuid(uuid) else None
        if job is None or parsed is None:
            self.jobs.unknown_pings += 1
            raise ApiError(404, "not_found", "no job has this ping URL")
        kind, code = parsed
        text = ""
        if request.method == b"POST" and request.content is not None:
            body = request.content.read()
            text = body[-MAX_LOG_BYTES:].decode("utf-8", "replace")
        self.jobs.ping(job, kind, exit_code=code, log_text=text, source=address)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return _OK

    def to_json(self) -> dict[str, float | int]:
        return {**self.limit.to_json(), "refused": self.refused}
