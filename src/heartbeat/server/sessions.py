"""Login sessions and the brake on password guessing. Pure: time comes in as ``now``.

A session is known by a random token the client holds; the server keeps only
the token's SHA-256 (the session's *key*), so a copy of the store gives no
working token. A session ends when it has been idle past ``idle_timeout``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

__all__ = ["TOUCH_PERSIST", "LoginThrottle", "Session", "SessionBook", "session_key",
           "token_digest"]

TOUCH_PERSIST: Final = 60.0
"""``last_used`` is written back at most this often per session (seconds)."""


def token_digest(token: str) -> str:
    """What the store keeps of a bearer token (a session's, an API key's): its SHA-256.

    Tokens carry 256 random bits, so a fast hash is enough: nothing can be
    guessed from the digest.
    """
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


session_key = token_digest


@dataclass(slots=True)
class Session:
    key: str
    user: str
    created: float
    last_used: float
    csrf: str
    address: str | None = None
    persisted_use: float = 0.0
    """``last_used`` as last written to the store."""
    restricted: bool = False
    """May only enrol a second factor (its user must have one and has none yet)."""


class SessionBook:
    """Every live session by key."""

    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self.sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self.sessions)

    def create(self, user: str, now: float, address: str | None = None,
               restricted: bool = False) -> tuple[str, Session]:
        """A new session for ``user``: (the token to hand out, the session)."""
        token = secrets.token_urlsafe(32)
        session = Session(session_key(token), user, now, now, secrets.token_urlsafe(24),
                          address, now, restricted)
        self.sessions[session.key] = session
        return token, session

    def restore(self, sessions: Iterable[Session], now: float) -> None:
        for session in sessions:
            if not self._expired(session, now):
                self.sessions[session.key] = session

    def adopt(self, session: Session, now: float) -> bool:
        """A session another server sharing the store started (read on a miss)."""
        if self._expired(session, now):
            return False
        self.sessions.setdefault(session.key, session)
        return True

    def sync(self, stored: Iterable[Session], now: float) -> list[Session]:
        """Keep only the sessions the store still has (another server ended the others),
        with their stored ``restricted``; returns the ones ended."""
        kept = {session.key: session for session in stored}
        gone = [s for s in self.sessions.values() if s.key not in kept]
        for session in gone:
            del self.sessions[session.key]
        for key, session in self.sessions.items():
            session.restricted = kept[key].restricted
        return gone

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_used > self.idle_timeout

    def lookup(self, token: str, now: float) -> Session | None:
        """The live session of ``token``, marked used at ``now``; None if unknown or idle."""
        session = self.sessions.get(session_key(token))
        if session is None:
            return None
        if self._expired(session, now):
            del self.sessions[session.key]
            return None
        session.last_used = max(session.last_used, now)
        return session

    def needs_persisting(self, session: Session) -> bool:
        return session.last_used - session.persisted_use >= TOUCH_PERSIST

    def revoke(self, key: str) -> Session | None:
        return self.sessions.pop(key, None)

    def revoke_user(self, user: str, keep: str | None = None) -> list[Session]:
        """End every session of ``user`` except ``keep`` (a session key)."""
        gone = [s for s in self.sessions.values() if s.user == user and s.key != keep]
        for session in gone:
            del self.sessions[session.key]
        return gone

    def expire(self, now: float) -> list[Session]:
        """Drop every idle session; returns them."""
        gone = [s for s in self.sessions.values() if self._expired(s, now)]
        for session in gone:
            del self.sessions[session.key]
        return gone


@dataclass(slots=True)
class _Record:
    failures: int = 0
    in_flight: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0


@dataclass
class LoginThrottle:
    """Slows down repeated failed logins per key (a user name, an address).

    The failure that reaches ``free_attempts`` blocks the key for ``base_delay``;
    each further failure blocks it for twice as long as the one before, up to
    ``max_delay``. Attempts still being checked count against the key too,
    so a burst of parallel guesses is refused rather than all checked at once.
    A key is forgotten ``forget_after`` seconds after its last failure.
    """

    free_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 300.0
    forget_after: float = 900.0
    max_in_flight: int = 2
    max_keys: int = 20000
    _records: OrderedDict[str, _Record] = field(default_factory=OrderedDict)

    def _record(self, key: str, now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and record.in_flight == 0 \
                and now - record.last_failure > self.forget_after \
                and now >= record.blocked_until:
            del self._records[key]
            return None
        return record

    def retry_after(self, keys: Iterable[str], now: float) -> float:
        """Seconds until an attempt for ``keys`` is allowed; 0 when it is now."""
        wait = 0.0
        for key in keys:
            record = self._record(key, now)
            if record is None:
                continue
            if record.blocked_until > now:
                wait = max(wait, record.blocked_until - now)
            elif record.in_flight >= self.max_in_flight:
                wait = max(wait, self.base_delay)
        return wait

    def begin(self, keys: Iterable[str], now: float) -> None:
        """An attempt for ``keys`` is being checked."""
        for key in keys:
            record = self._record(key, now)
            if record is None:
                record = self._records[key] = _Record(last_failure=now)
            self._records.move_to_end(key)
            record.in_flight += 1
        while len(self._records) > self.max_keys:
            self._records.popitem(last=False)

    def failed(self, keys: Iterable[str], now: float) -> float:
        """The attempt failed: returns how long the keys are now blocked (0: not yet)."""
        blocked = 0.0
        for key in keys:
            record = self._records.get(key)
            if record is None:
                record = self._records[key] = _Record()
            record.in_flight = max(0, record.in_flight - 1)
            record.failures += 1
            record.last_failure = now
            over = record.failures - self.free_attempts
            if over >= 0:
                delay = min(self.max_delay, self.base_delay * 2.0 ** min(over, 62))
                record.blocked_until = max(record.blocked_until, now + delay)
                blocked = max(blocked, record.blocked_until - now)
        return blocked

    def succeeded(self, keys: Iterable[str], reset: Iterable[str], now: float) -> None:
        """The attempt succeeded: ``reset`` keys start afresh, the others are released."""
        cleared = set(reset)
        for key in keys:
            record = self._records.get(key)
            if record is None:
                continue
            record.in_flight = max(0, record.in_flight - 1)
            if key in cleared:
                del self._records[key]

    def failures(self, key: str) -> int:
        record = self._records.get(key)
        return 0 if record is None else record.failures
