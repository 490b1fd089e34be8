"""SIGHUP stops the server and the agent as SIGTERM does.

twistd leaves SIGHUP at its default, which ends the process on the spot: no
journal or store flush, no SHUT from the agent, a stale pidfile. A closed
terminal or a ``kill -HUP`` from a log rotation script then loses data, so
both services treat a hangup as a request to stop cleanly (twistd rotates its
own ``--logfile`` on SIGUSR1).
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

__all__ = ["HangupService"]

log = Logger()


class HangupService(Service):
    """While running, SIGHUP stops ``reactor`` cleanly; stopping restores the old handler."""

    name = "hangup"

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._previous: Any = None

    def _hangup(self, signum: int, frame: FrameType | None) -> None:
        log.info("Received SIGHUP, shutting down (as for SIGTERM).")
        self.reactor.callFromThread(self.reactor.stop)

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None
