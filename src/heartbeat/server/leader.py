"""One voice among servers sharing a PostgreSQL store: the leader, by an advisory lock.

Every server ingests, evaluates and serves; only the leader sends
notifications, DNS updates and CMD/UPD. :class:`LeaderService` holds a
dedicated connection to the store on its own thread and, every
``leader_interval`` seconds, tries ``pg_try_advisory_lock`` on it (a follower)
or checks the connection is alive (the leader). The lock belongs to the
session: it is released when the leader's process dies, its connection
breaks, or the database stops, and another server takes it at its next try.
The connection sets short TCP keepalives on both sides, so a leader cut off
from the database (or the database from it) is noticed in about ten seconds.

Whoever needs to know asks :attr:`LeaderService.leading`; the parts that act
on a change (the notifier catching up, DNS resyncing, the registry reloading
queued commands) are given to :meth:`LeaderService.on_change` by the
composition root. With the SQLite store a server is always the leader.

Each try also reads the leader's name (the ``application_name`` of the session
holding the lock), for ``/api/0/status``. docs/HA.md.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from heartbeat.config.server import ServerConfig
from heartbeat.server.serial import Worker
from heartbeat.server.timers import periodic, start_timers, stop_timers

__all__ = ["LEADER_LOCK", "LeaderService", "LockSession", "Try", "node_name"]

log = Logger()

LEADER_LOCK: Final = 0x68625F6C65616472
"""The advisory lock key the leader holds for as long as its session lives."""
APP_PREFIX: Final = "heartbeat "
APP_SUFFIX: Final = " leader"
_HOLDER: Final = (
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s "
    "AND l.objsubid = 1")
_KEEPALIVES: Final = ("SET tcp_keepalives_idle = 5", "SET tcp_keepalives_interval = 2",
                      "SET tcp_keepalives_count = 3")


def node_name(config: ServerConfig) -> str:
    """This server's name among those sharing the store (``node_name``, else host:port)."""
    return config.node_name or f"{socket.gethostname()}:{config.hbd_port}"


@dataclass(frozen=True, slots=True)
class Try:
    """One try's outcome: whether this server holds the lock, who does, or what failed."""

    held: bool
    holder: str | None
    error: str | None = None


def _holder_name(application_name: str | None) -> str | None:
    if application_name is None:
        return None
    name = application_name
    if name.startswith(APP_PREFIX):
        name = name[len(APP_PREFIX):]
    if name.endswith(APP_SUFFIX):
        name = name[:-len(APP_SUFFIX)]
    return name


class LockSession:
    """The lock's connection, used only on the leader service's thread."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._conn: Any = None
        self._held = False

    def attempt(self) -> Try:
        import psycopg  # noqa: PLC0415 - only with a PostgreSQL store

        try:
            if self._conn is None or self._conn.closed:
                self._held = False
                self._conn = self._connect()
                for statement in _KEEPALIVES:
                    self._conn.execute(statement)
            conn = self._conn
            if not self._held:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
                self._held = bool(row[0])
            high, low = (LEADER_LOCK >> 32) & 0xFFFFFFFF, LEADER_LOCK & 0xFFFFFFFF
            found = conn.execute(_HOLDER, (high, low)).fetchone()
            return Try(self._held, _holder_name(found[0] if found else None))
        except psycopg.Error as e:
            self.close()
            return Try(False, None, " ".join(str(e).split()) or type(e).__name__)

    def close(self) -> None:
        self._held = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                conn.close()


Listener = Callable[[bool], object]
"""Told of a change; a Deferred it returns that fails while this server still leads is
logged and the listener told again after ``interval``."""


class LeaderService(Service):
    """Whether this server leads; tells the listeners when that changes.

    ``session``: the lock's connection (None: the SQLite store, always the leader);
    ``worker``: the thread its calls run on; ``before_release``: what must be done
    before a stopping leader lets another lead (the store's last commit of marks).
    """

    name = "leader"

    def __init__(self, node: str, clock: IReactorTime, *, session: LockSession | None = None,
                 worker: Worker | None = None, interval: float = 1.0,
                 before_release: Callable[[], Deferred[Any]] | None = None) -> None:
        self.node = node
        self.clock = clock
        self.session = session
        self.worker = worker
        self.interval = interval
        self.leading = session is None
        self.leader_node: str | None = node if session is None else None
        self.since: float | None = None
        self.changes = 0
        self.last_error: str | None = None
        self.before_release = before_release
        self._listeners: list[Listener] = []
        self._timers = [periodic("leader election", interval, self.tick, clock)]

    def on_change(self, listener: Listener) -> None:
        """``listener(leading)`` when this server becomes or stops being the leader."""
        self._listeners.append(listener)

    def tick(self) -> Deferred[None]:
        if self.session is None or self.worker is None:
            return succeed(None)
        d: Deferred[Try] = self.worker.run(self.session.attempt)
        return d.addCallback(self.tried)

    def tried(self, outcome: Try) -> None:
        if outcome.error is not None and outcome.error != self.last_error:
            log.warn("leader: the store is out of reach ({error}); not leading",
                     error=outcome.error)
        self.last_error = outcome.error
        self.leader_node = outcome.holder
        self._set(outcome.held)

    def _set(self, leading: bool) -> None:
        if leading == self.leading or not self.running:
            return
        self.leading = leading
        self.changes += 1
        self.since = self.clock.seconds()
        if leading:
            log.info("leader: {node} leads: it sends notifications, DNS updates and commands",
                     node=self.node)
        else:
            log.warn("leader: {node} no longer leads (following {leader})", node=self.node,
                     leader=self.leader_node or "nobody")
        for listener in self._listeners:
            self._tell(listener, leading)

    def _tell(self, listener: Listener, leading: bool) -> None:
        d: Deferred[Any] = maybeDeferred(listener, leading)
        d.addErrback(self._listener_failed, listener, leading)

    def _listener_failed(self, failure: Any, listener: Listener, leading: bool) -> None:
        log.failure("leader: acting on the change failed; trying again", failure)
        if leading:
            self.clock.callLater(self.interval, self._tell_again, listener)

    def _tell_again(self, listener: Listener) -> None:
        if self.running and self.leading:
            self._tell(listener, True)

    def startService(self) -> None:
        super().startService()
        if self.session is None:
            self.since = self.clock.seconds()
            for listener in self._listeners:
                self._tell(listener, True)
            return
        assert self.worker is not None
        self.worker.start()
        start_timers(self._timers)

    def stopService(self) -> Deferred[None]:
        """Give up the lock (closing its session), then the thread."""
        super().stopService()
        self.leading = self.session is None
        if self.session is None or self.worker is None:
            return succeed(None)
        session, worker, before = self.session, self.worker, self.before_release
        d = stop_timers(self._timers)
        if before is not None:
            d.addCallback(lambda _: before())
            d.addErrback(lambda f: log.failure("leader: before giving up the lock", f))
        d.addCallback(lambda _: worker.run(session.close))
        d.addErrback(lambda f: log.failure("leader: closing the lock's session failed", f))
        d.addBoth(lambda _: worker.stop())
        return d

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "leader": self.leading, "leader_node": self.leader_node,
                "since": self.since, "changes": self.changes, "last_error": self.last_error,
                "shared_store": self.session is not None}
