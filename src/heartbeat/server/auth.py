"""Users, sessions and logins at the edge: the store behind them, hashing off the reactor.

:class:`AuthService` owns the live state of authentication: the
:class:`~heartbeat.server.access.Directory` (config users and per-host access
with the API's changes on top), the :class:`~heartbeat.server.sessions.SessionBook`
and the :class:`~heartbeat.server.sessions.LoginThrottle`. Every change is
committed to the store before it is made in memory and answered (a store that
cannot take it fails the change whole: StoreUnavailable, and nothing changed),
and :func:`load_auth` reads them back at start-up, so a restart neither forgets
an access change nor logs anyone out. Changes to users and access lists are
made one at a time (decided, committed, applied), so the user policy's rules
hold however requests interleave. Password
hashing runs on its own worker thread: at 600,000 iterations one check costs a
few hundred milliseconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from heartbeat.config.loader import ConfigError, parse_section
from heartbeat.config.server import UserConfig
from heartbeat.passwords import (
    ITERATIONS,
    PasswordHash,
    hash_password,
    parse_hash,
    verify_password,
)
from heartbeat.server.access import Directory, HostAccess
from heartbeat.server.apikeys import ApiKey, ApiKeyBook, Scope
from heartbeat.server.limits import address_key
from heartbeat.server.second_factor import SecondFactor, load_second_factor
from heartbeat.server.serial import Worker
from heartbeat.server.sessions import (
    TOUCH_PERSIST,
    LoginThrottle,
    Session,
    SessionBook,
    session_key,
)
from heartbeat.server.store import StoreService, StoreUnavailable
from heartbeat.server.tables import API_KEYS, HOST_ACCESS, SESSIONS, USERS, Rows, Tables, Write
from heartbeat.server.timers import periodic, start_timers, stop_timers
from heartbeat.server.totp import Enrolment
from heartbeat.server.user_policy import Refused, UserChange, decide
from heartbeat.text import json_bytes

__all__ = [
    "AuthService",
    "HasherBusy",
    "HasherClosed",
    "LoginRefused",
    "LoginThrottled",
    "PasswordHasher",
    "SecondFactorNeeded",
    "SecondFactorRefused",
    "StoredAuth",
    "load_auth",
    "load_session",
    "load_sessions",
]

log = Logger()

@dataclass
class StoredAuth:
    users: dict[str, UserConfig | None] = field(default_factory=dict)
    access: dict[str, HostAccess] = field(default_factory=dict)
    sessions: list[Session] = field(default_factory=list)
    keys: list[ApiKey] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    """Hosts whose stored access row could not be read (they are given to admins only)."""
    totp: dict[str, Enrolment] = field(default_factory=dict)
    totp_policy: str | None = None


def _stored_name(value: object, column: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{column}: {value!r:.40} is not a user name")


def _stored_names(text: object, column: str) -> tuple[str, ...]:
    """A JSON list of user names as the API stored it; ValueError naming the column."""
    try:
        names = json.loads(text) if isinstance(text, str | bytes) else None
    except ValueError as e:
        raise ValueError(f"{column}: not JSON: {e}") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{column}: {text!r:.40} is not a list of user names")
    return tuple(names)


def load_auth(tables: Tables) -> StoredAuth:
    """The API's user and access changes and the live sessions, for start-up."""
    stored = StoredAuth()
    for name, data in tables.rows(USERS):
        if data is None:
            stored.users[name] = None
            continue
        try:
            fields = json.loads(data)
            password = fields.pop("password", None)
            if password is not None:
                parse_hash(password, min_iterations=1)  # our own, whatever cost it was made at
            user = parse_section(UserConfig, fields, f"store: users.{name}")
            stored.users[name] = dataclasses.replace(user, password=password)
        except (ValueError, ConfigError) as e:
            log.error("auth: ignoring the stored user {name}: {error}", name=name, error=e)
    for host, owner, managers, monitors in tables.rows(HOST_ACCESS):
        try:
            stored.access[host] = HostAccess(_stored_name(owner, "owner"),
                                             _stored_names(managers, "managers"),
                                             _stored_names(monitors, "monitors"), "api")
        except ValueError as e:
            # Fail closed: the config's list could grant what the API took away.
            stored.access[host] = HostAccess(None, (), (), "api")
            stored.damaged.append(host)
            log.error("auth: the stored access list of host {host!r} is damaged ({error}): "
                      "only admins reach it until one sets its access again "
                      "(PUT /api/0/hosts/{host}/access)", host=host, error=e)
    stored.sessions = load_sessions(tables)
    for (key_id, digest, *rest) in sorted(tables.rows(API_KEYS),
                                          key=lambda row: (row[5], row[0])):
        stored.keys.append(ApiKey(digest, key_id, *rest))
    stored.totp, stored.totp_policy = load_second_factor(tables)
    return stored


def _session(row: tuple[Any, ...]) -> Session:
    key, user, created, last_used, csrf, address, restricted = row
    return Session(key, user, created, last_used, csrf, address, last_used, bool(restricted))


def load_sessions(tables: Tables) -> list[Session]:
    """Every stored session."""
    return [_session(row) for row in tables.rows(SESSIONS)]


def load_session(key: str) -> Callable[[Tables], Session | None]:
    """A store read: the stored session of ``key``, if any."""

    def read(tables: Tables) -> Session | None:
        rows = tables.rows(SESSIONS, key=key)
        return _session(rows[0]) if rows else None

    return read


def _delete_session(key: str) -> Write:
    return lambda tables: tables.delete(SESSIONS, [(key,)])


def _unrestrict_session(key: str) -> Write:
    return lambda tables: tables.update(SESSIONS, ("restricted",), [(0, key)])


class LoginRefused(Exception):
    """Wrong user name or password; deliberately never says which."""


class SecondFactorNeeded(Exception):
    """The password was right; now the code (``challenge`` names this login for the page)."""

    def __init__(self, challenge: str) -> None:
        super().__init__("a second-factor code is needed")
        self.challenge = challenge


class SecondFactorRefused(Exception):
    """A wrong, used or expired second-factor code."""


def _throttle_keys(username: str, address: str) -> list[str]:
    """A login attempt counts against the account and the client (an IPv6 client by /64)."""
    return [f"user:{username.casefold()}", f"address:{address_key(address)}"]


class LoginThrottled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after:.0f}s")
        self.retry_after = max(1, math.ceil(retry_after))


class HasherClosed(Exception):
    """The server is stopping: no more hashing."""


class HasherBusy(Exception):
    """Hashing for anything but a login is at its bound (that user's, or everyone's)."""


@dataclass(eq=False)
class _Hashing:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    done: Deferred[Any]
    owner: str | None


class PasswordHasher:
    """Hashes and checks passwords on ``worker``'s thread, one at a time, logins first.

    Logins have their own queue of at most ``max_pending``; every other hash (a new
    password, checking one's current password) waits behind them, at most
    ``max_other`` in all and one per user: a user changing their password over
    and over delays nobody's login by more than the one hash in progress.
    :meth:`close` (at shutdown) refuses new work, drops the queued work that has
    not begun and ends the thread once the hash in progress returns; the reactor
    waits for that on a Deferred, never in a join.
    """

    def __init__(self, worker: Worker, iterations: int = ITERATIONS, max_pending: int = 16,
                 max_other: int = 4) -> None:
        self.worker = worker
        self.iterations = iterations
        self.max_pending = max_pending
        self.max_other = max_other
        self._logins: deque[_Hashing] = deque()
        self._others: deque[_Hashing] = deque()
        self._running: _Hashing | None = None
        self.closing = False
        # Checked when the user does not exist, so that costs as long as a real check.
        self._dummy = str(PasswordHash(iterations, "no-such-user-hb", "0" * 64))

    @property
    def pending(self) -> int:
        return len(self._logins) + len(self._others) + (self._running is not None)

    @property
    def busy(self) -> bool:
        """Whether a login must wait (its own queue is full)."""
        return len(self._logins) >= self.max_pending

    def _run(self, fn: Callable[..., Any], *args: Any, login: bool = True,
             owner: str | None = None) -> Deferred[Any]:
        if self.closing:
            return fail(HasherClosed())
        if not login:
            mine = [h for h in (self._running, *self._others) if h is not None
                    and h.owner is not None and h.owner == owner]
            if mine or len(self._others) >= self.max_other:
                return fail(HasherBusy(
                    "a password of this user is being hashed already" if mine
                    else "the server is hashing other passwords: try again in a moment"))
        entry = _Hashing(fn, args, Deferred(), owner if not login else None)
        (self._logins if login else self._others).append(entry)
        self._pump()
        return entry.done

    def _pump(self) -> None:
        if self._running is not None or not (self._logins or self._others):
            return
        entry = self._logins.popleft() if self._logins else self._others.popleft()
        self._running = entry
        d = self.worker.run(self._unless_closing, entry.fn, *entry.args)

        def finished(result: Any) -> None:
            self._running = None
            if isinstance(result, Failure):
                entry.done.errback(result)
            else:
                entry.done.callback(result)
            self._pump()

        d.addBoth(finished)

    def _unless_closing(self, fn: Callable[..., Any], *args: Any) -> Any:
        """On the worker thread: work queued before a close is dropped, not done."""
        if self.closing:
            raise HasherClosed()
        return fn(*args)

    def close(self) -> Deferred[None]:
        """Stop hashing; fires once the thread has ended (see the class)."""
        self.closing = True
        queued = [*self._logins, *self._others]
        self._logins.clear()
        self._others.clear()
        for entry in queued:
            entry.done.errback(HasherClosed())
        return self.worker.stop()

    def hash(self, password: str, owner: str | None = None) -> Deferred[str]:
        """A new password's hash (not a login's: HasherBusy past the bounds)."""
        return self._run(hash_password, password, self.iterations, login=False, owner=owner)

    def verify(self, password: str, encoded: str | None, *, login: bool = True,
               owner: str | None = None) -> Deferred[bool]:
        """Whether ``password`` matches; ``encoded`` None (no user) costs the same and fails."""
        if encoded is None:
            return self._run(verify_password, password, self._dummy, login=login,
                             owner=owner).addCallback(lambda _: False)
        return self._run(verify_password, password, encoded, login=login, owner=owner)


class AuthService(Service):
    """Logins, sessions, users and access lists, persisted through the store."""

    name = "auth"

    def __init__(
        self,
        directory: Directory,
        store: StoreService,
        hasher: PasswordHasher,
        clock: IReactorTime,
        *,
        idle_timeout: float,
        throttle: LoginThrottle | None = None,
        totp_required: str = "off",
    ) -> None:
        self.directory = directory
        self.store = store
        self.hasher = hasher
        self.clock = clock
        self.sessions = SessionBook(idle_timeout)
        self.keys = ApiKeyBook()
        self.second = SecondFactor(store, clock, directory, totp_required)
        self.throttle = throttle or LoginThrottle()
        self._touched: dict[str, Session] = {}
        self._keys_touched: dict[str, ApiKey] = {}
        self._revoke_listeners: list[Callable[[Session], None]] = []
        self._changes = DeferredLock()
        """Held from deciding a user or access change to applying it after its commit."""
        self.sweep_interval = min(60.0, idle_timeout / 4)
        self._timers = [periodic("auth session sweep", self.sweep_interval,
                                 self.expire_sessions, clock)]
        self.logins = 0
        self.failed_logins = 0
        self.throttled_logins = 0
        self.shared = False
        """Servers share the store (docs/HA.md): a session unknown here is looked up in it
        (:meth:`read_through`), one idle here is only forgotten (the store deletes those
        idle everywhere), and changes made elsewhere are reloaded (:meth:`reload`)."""
        self.reloads = 0
        self.read_through_hits = 0
        self._misses: dict[str, float] = {}
        store.add_source(self._touch_writes)
        store.add_maintenance(self._prune)

    def restore(self, stored: StoredAuth) -> None:
        self.directory.restore(stored.users, stored.access)
        self.sessions.restore(stored.sessions, self.clock.seconds())
        self.keys.restore(stored.keys)
        self.second.restore(stored.totp, stored.totp_policy)

    @property
    def enabled(self) -> bool:
        return self.directory.enabled

    # Sessions
    def session(self, token: str) -> Session | None:
        """The live session of ``token`` whose user still exists, marked used now."""
        session = self.sessions.lookup(token, self.clock.seconds())
        if session is None:
            return None
        if self.directory.user(session.user) is None:
            if self.shared:  # this server may not know the user yet: the store decides
                self.sessions.revoke(session.key)
                self._ended([session])
            else:
                self._revoke([session])
            return None
        if self.sessions.needs_persisting(session):
            self._touched[session.key] = session
        return session

    def _touch_writes(self) -> list[Write]:
        writes: list[Write] = []
        if self._touched:
            touched, self._touched = self._touched, {}
            rows = []
            for session in touched.values():
                session.persisted_use = session.last_used
                rows.append((session.last_used, session.key))
            writes.append(lambda tables: tables.update(SESSIONS, ("last_used",), rows))
        if self._keys_touched:
            keys, self._keys_touched = self._keys_touched, {}
            key_rows = []
            for key in keys.values():
                key.persisted_use = key.last_used
                key_rows.append((key.last_used, key.last_address, key.key_id))
            writes.append(lambda tables: tables.update(
                API_KEYS, ("last_used", "last_address"), key_rows))
        return writes

    # API keys
    def api_key(self, token: str, address: str | None = None) -> ApiKey | None:
        """The live key of ``token`` whose user still exists, marked used now."""
        key = self.keys.lookup(token, self.clock.seconds(), address)
        if key is None or self.directory.user(key.user) is None:
            return None
        if self.keys.needs_persisting(key):
            self._keys_touched[key.key_id] = key
        return key

    def create_key(self, user: str, name: str, scope: Scope,
                   expires: float | None = None) -> Deferred[tuple[str, ApiKey]]:
        """A new key for ``user`` once committed: (its token, shown once; the key).
        KeyLimitReached at once; StoreUnavailable (no key) if the store cannot take it."""
        token, key = self.keys.create(user, name, scope, self.clock.seconds(), expires)
        row = (key.key_id, key.digest, key.user, key.name, key.scope, key.created, key.expires,
               None, None)

        def made(_: None) -> tuple[str, ApiKey]:
            log.info("auth: API key {key_id} ({scope}) created for {user}", key_id=key.key_id,
                     scope=scope, user=user)
            return token, key

        def lost(failure: Any) -> Any:
            self.keys.revoke(key.key_id)
            return failure

        return self.store.commit(Rows("add", API_KEYS, [row])).addCallbacks(made, lost)

    def revoke_key(self, key_id: str) -> Deferred[ApiKey | None]:
        """Revoke ``key_id`` once its row is gone from the store (StoreUnavailable: kept)."""
        if self.keys.get(key_id) is None:
            return succeed(None)

        def gone(_: None) -> ApiKey | None:
            key = self._forget_key(key_id)
            if key is not None:
                log.info("auth: API key {key_id} of {user} revoked", key_id=key_id,
                         user=key.user)
            return key

        return self.store.commit(Rows("delete", API_KEYS, [(key_id,)])).addCallback(gone)

    def _forget_key(self, key_id: str) -> ApiKey | None:
        self._keys_touched.pop(key_id, None)
        return self.keys.revoke(key_id)

    def _prune(self, tables: Tables, now: float) -> None:
        """Drop stored sessions that ended idle (whether or not this process saw them end)."""
        oldest = now - self.sessions.idle_timeout - TOUCH_PERSIST  # the row may lag memory
        tables.delete_before(SESSIONS, "last_used", oldest)

    def add_revoke_listener(self, listener: Callable[[Session], None]) -> None:
        """``listener(session)`` is told of every session that ends (e.g. to close feeds)."""
        self._revoke_listeners.append(listener)

    def _revoke(self, sessions: list[Session]) -> None:
        """Forget ``sessions`` (already out of the book or not), in memory and in the store."""
        for session in sessions:
            self.sessions.revoke(session.key)
            self.store.submit(_delete_session(session.key))
        self._ended(sessions)

    def _ended(self, sessions: list[Session]) -> None:
        """Tell the listeners of ``sessions`` that ended (their rows deleted or going)."""
        for session in sessions:
            self._touched.pop(session.key, None)
            for listener in self._revoke_listeners:
                try:
                    listener(session)
                except Exception:
                    log.failure("auth: a session-end listener failed")

    def logout(self, key: str) -> Deferred[bool]:
        """End the session ``key`` once its row is gone (StoreUnavailable: it goes on)."""
        session = self.sessions.sessions.get(key)
        if session is None:
            return succeed(False)

        def gone(_: None) -> bool:
            self._revoke([session])
            log.info("auth: {user} logged out", user=session.user)
            return True

        return self.store.commit(_delete_session(key)).addCallback(gone)

    def revoke_user(self, user: str, keep: str | None = None) -> int:
        """End every session of ``user`` but ``keep`` (the session making the change)."""
        gone = self.sessions.revoke_user(user, keep)
        self._revoke(gone)
        return len(gone)

    def expire_sessions(self) -> None:
        try:
            idle = self.sessions.expire(self.clock.seconds())
            if self.shared:  # used on another server, maybe: forgotten here only
                self._ended(idle)
            else:
                self._revoke(idle)
        except Exception:
            log.failure("auth: expiring sessions failed; retrying next period")

    # Servers sharing the store
    def read_through(self, token: str) -> Deferred[bool]:
        """A token unknown here: its session read from the store (started on another
        server) and held from now on; fires whether one was found. A token missed within
        the last second is not looked up again (nor is any, but for a shared store)."""
        key = session_key(token)
        now = self.clock.seconds()
        if not self.shared or key in self.sessions.sessions or now - self._misses.get(
                key, float("-inf")) < 1.0:
            return succeed(False)

        def found(session: Session | None) -> Deferred[bool] | bool:
            if session is None:
                if len(self._misses) >= 10_000:
                    self._misses.clear()
                self._misses[key] = now
                return False
            if self.directory.user(session.user) is None:  # a user made there just now
                return self.store.read(load_auth).addCallback(
                    self.reload).addCallback(lambda _: adopt(session))
            return adopt(session)

        def adopt(session: Session) -> bool:
            adopted = self.sessions.adopt(session, self.clock.seconds())
            self.read_through_hits += adopted
            return adopted

        return self.store.read(load_session(key)).addCallback(found)

    def reload(self, stored: StoredAuth) -> None:
        """Users, access lists, API keys, second factors and sessions as the store has
        them (another server sharing it changed some): the one Directory reloads; the
        sessions the store no longer has end here too."""
        self.reloads += 1
        self.directory.reload(stored.users, stored.access)
        self.keys.reload(stored.keys)
        self.second.restore(stored.totp, stored.totp_policy)
        self._ended(self.sessions.sync(stored.sessions, self.clock.seconds()))

    # Logins
    def login(self, username: str, password: str, address: str,
              code: str | None = None) -> Deferred[tuple[str, Session]]:
        """A new session (token, session); or LoginRefused, LoginThrottled, or for a user
        with a second factor SecondFactorNeeded (no ``code``) / SecondFactorRefused.

        An unknown user and a wrong password fail alike, after the same hashing
        work; both count against the name and the address, as a wrong code does.
        """
        keys, throttled = self._attempt(username, address)
        if throttled is not None:
            return throttled
        user = self.directory.user(username)
        d = self.hasher.verify(password, user.password if user is not None else None)

        def checked(ok: bool) -> Deferred[tuple[str, Session]]:
            if ok and self.directory.user(username) is not None:
                return self.second.read(username).addCallback(second_factor)
            self._failed(keys, username, address, "login")
            raise LoginRefused()

        def second_factor(enrolment: Enrolment | None) -> Deferred[tuple[str, Session]]:
            if enrolment is None:
                return self._start_session(keys, username, address,
                                           restricted=self.second.required(username))
            if code is None:
                self.throttle.succeeded(keys, [], self.clock.seconds())
                raise SecondFactorNeeded(self.second.challenge(username, address))
            return self._second_step(keys, username, address, enrolment, code)

        def broken(failure: Any) -> Any:
            if not failure.check(LoginRefused, SecondFactorNeeded, SecondFactorRefused):
                self.throttle.succeeded(keys, [], self.clock.seconds())
            return failure

        return d.addCallback(checked).addErrback(broken)

    def second_step(self, challenge: str, code: str, address: str
                    ) -> Deferred[tuple[str, Session]]:
        """The code for a login that got SecondFactorNeeded: a session, or as login() fails."""
        pending = self.second.pending(challenge)
        if pending is None:
            return fail(LoginRefused())
        username = pending.user
        keys, throttled = self._attempt(username, address)
        if throttled is not None:
            return throttled

        def got(enrolment: Enrolment | None) -> Deferred[tuple[str, Session]]:
            if enrolment is None or self.directory.user(username) is None:
                # Reset or deleted meanwhile (heartbeat passwd --reset-totp): log in again.
                self.second.done(challenge)
                self.throttle.succeeded(keys, [], self.clock.seconds())
                raise LoginRefused()
            session = self._second_step(keys, username, address, enrolment, code)

            def ended(result: Any) -> Any:
                # A store that could not take the session keeps the challenge: the same
                # code, given back by _second_step, is taken once the store can write.
                if not (isinstance(result, Failure) and result.check(StoreUnavailable)):
                    self.second.done(challenge)
                return result

            return session.addBoth(ended)

        def broken(failure: Any) -> Any:
            if not failure.check(LoginRefused, SecondFactorRefused):
                self.throttle.succeeded(keys, [], self.clock.seconds())
            return failure

        return self.second.read(username).addCallback(got).addErrback(broken)

    def check_password(self, username: str, password: str, address: str) -> Deferred[None]:
        """Whether ``password`` is ``username``'s (a change of one's own password asks for
        it): LoginRefused or LoginThrottled as a login, and counted as one."""
        keys, throttled = self._attempt(username, address)
        if throttled is not None:
            return throttled
        user = self.directory.user(username)

        def checked(ok: bool) -> None:
            if not ok or self.directory.user(username) is None:
                self._failed(keys, username, address, "current password")
                raise LoginRefused()
            self.throttle.succeeded(keys, keys[:1], self.clock.seconds())

        def broken(failure: Any) -> Any:
            if not failure.check(LoginRefused):
                self.throttle.succeeded(keys, [], self.clock.seconds())
            return failure

        return self.hasher.verify(password, user.password if user is not None else None,
                                  login=False, owner=username
                                  ).addCallback(checked).addErrback(broken)

    def rotate_session(self, key: str) -> Deferred[tuple[str, Session]]:
        """A new session (token, session) in place of ``key``'s, for its user and address;
        the old one ends. Committed first (StoreUnavailable: the old one goes on)."""
        old = self.sessions.sessions.get(key)
        if old is None:
            return fail(LoginRefused())
        token, session = self.sessions.create(old.user, self.clock.seconds(), old.address,
                                              old.restricted)
        self.sessions.revoke(session.key)  # not usable until it is on disk
        row = (session.key, session.user, session.created, session.last_used, session.csrf,
               session.address, int(session.restricted))

        def rotated(_: None) -> tuple[str, Session]:
            self.sessions.sessions[session.key] = session
            self._revoke([old])
            log.info("auth: a new session for {user} in place of the one that changed its "
                     "password", user=old.user)
            return token, session

        return self.store.commit(Rows("put", SESSIONS, [row]), _delete_session(key)
                                 ).addCallback(rotated)

    def _second_step(self, keys: list[str], username: str, address: str,
                     enrolment: Enrolment, code: str) -> Deferred[tuple[str, Session]]:
        before, spent = self.second.enrolments.get(username), self.second.spent(username)
        if self.second.check(username, enrolment, code) is None:
            self._failed(keys, username, address, "second-factor code")
            raise SecondFactorRefused()

        def refused(failure: Failure) -> Failure:
            if failure.check(StoreUnavailable):  # no session: the code is not spent either
                self.second.unspend(username, before, spent)
            return failure

        return self._start_session(keys, username, address).addErrback(refused)

    def _attempt(self, username: str, address: str) -> tuple[list[str], Deferred[Any] | None]:
        """The throttle's keys for an attempt to log in, and a LoginThrottled failure if it
        must wait; else the attempt counts as in flight until it succeeds or fails."""
        now = self.clock.seconds()
        keys = _throttle_keys(username, address)
        wait = self.throttle.retry_after(keys, now)
        if wait > 0 or self.hasher.busy:
            self.throttled_logins += 1
            log.warn("auth: login for {user!r} from {address} throttled ({wait:.0f}s)",
                     user=username, address=address, wait=wait)
            return keys, fail(LoginThrottled(wait))
        self.throttle.begin(keys, now)
        return keys, None

    def _failed(self, keys: list[str], username: str, address: str, what: str) -> None:
        blocked = self.throttle.failed(keys, self.clock.seconds())
        self.failed_logins += 1
        log.warn("auth: failed {what} for {user!r} from {address} ({failures} failures"
                 " for the name{blocked})", what=what, user=username, address=address,
                 failures=self.throttle.failures(keys[0]),
                 blocked=f", blocked {blocked:.0f}s" if blocked else "")

    def _start_session(self, keys: list[str], username: str, address: str,
                       restricted: bool = False) -> Deferred[tuple[str, Session]]:
        """A new session, answered once its row is committed (StoreUnavailable: none)."""
        now = self.clock.seconds()
        self.throttle.succeeded(keys, keys[:1], now)
        token, session = self.sessions.create(username, now, address, restricted)
        row = (session.key, session.user, session.created, session.last_used, session.csrf,
               session.address, int(restricted))

        def started(_: None) -> tuple[str, Session]:
            self.logins += 1
            log.info("auth: {user} logged in from {address}{restricted}", user=username,
                     address=address,
                     restricted=" (must enrol a second factor first)" if restricted else "")
            return token, session

        def lost(failure: Any) -> Any:
            self.sessions.revoke(session.key)
            return failure

        return self.store.commit(Rows("put", SESSIONS, [row])).addCallbacks(started, lost)

    # Second factor
    def confirm_second_factor(self, user: str, code: str) -> Deferred[list[str] | None]:
        """Keep the started enrolment if ``code`` matches: the recovery codes, once on disk.
        The user's sessions that waited for it are no longer restricted."""

        def confirmed(codes: list[str] | None) -> list[str] | None:
            if codes is not None:
                for session in self.sessions.sessions.values():
                    if session.user == user and session.restricted:
                        session.restricted = False
                        self.store.submit(_unrestrict_session(session.key))
            return codes

        return self.second.confirm(user, code).addCallback(confirmed)

    # Users
    def change_user(self, actor: str | None, change: UserChange,
                    keep: str | None = None) -> Deferred[UserConfig | None]:
        """Make ``change`` as ``actor`` (None: nobody, unauthenticated) if the user policy allows.

        The user after it (None: deleted), or a failure with
        :class:`~heartbeat.server.user_policy.Refused`, or
        :class:`~heartbeat.server.store.StoreUnavailable` (nothing changed). A
        new password is hashed off the reactor first; then, one change at a
        time, the policy is asked again against the user list as it is then,
        the change (with the sessions and keys it ends) is committed, and only
        then made in memory. The user's sessions end as the policy says, except
        ``keep`` (the session making a password change).
        """
        if change.password is None:
            return self._changes.run(self._apply_user, actor, change, None, keep)
        try:
            decide(self.directory.users, actor, change)  # no hashing for a refused change
        except Refused:
            return fail()
        return self.hasher.hash(change.password, owner=actor).addCallback(
            lambda encoded: self._changes.run(self._apply_user, actor, change, encoded, keep))

    def _apply_user(self, actor: str | None, change: UserChange, encoded: str | None,
                    keep: str | None) -> Deferred[UserConfig | None]:
        decision = decide(self.directory.users, actor, change)
        name, user = decision.name, decision.user
        if user is not None and encoded is not None:
            user = dataclasses.replace(user, password=encoded)
        row: tuple[str, str | None] | None
        if user is None:
            row = (name, None) if self.directory.in_config(name) else None
        else:
            row = (name, json_bytes(dataclasses.asdict(user)).decode())
        writes: list[Write] = [Rows("put", USERS, [row]) if row is not None
                               else Rows("delete", USERS, [(name,)])]
        ending: list[Session] = []
        keys: list[ApiKey] = []
        if decision.end_sessions:
            kept = keep if user is not None else None
            ending = [s for s in self.sessions.sessions.values()
                      if s.user == name and s.key != kept]
            writes.append(Rows("delete", SESSIONS, [(s.key,) for s in ending]))
        if user is None:
            keys = self.keys.of_user(name)
            writes.append(Rows("delete", API_KEYS, [(k.key_id,) for k in keys]))

        def committed(_: None) -> UserConfig | None:
            if user is None:
                self.directory.delete_user(name)
            else:
                self.directory.put_user(name, user)
            for key in keys:
                self._forget_key(key.key_id)
            for session in ending:
                self.sessions.revoke(session.key)
            self._ended(ending)
            return user

        return self.store.commit(*writes).addCallback(committed)

    # Access
    def set_access(self, host: str, access: HostAccess) -> Deferred[HostAccess]:
        """Set ``host``'s list once committed (StoreUnavailable: unchanged)."""
        return self._changes.run(self._set_access, host, access)

    def _set_access(self, host: str, access: HostAccess) -> Deferred[HostAccess]:
        row = (host, access.owner, json_bytes(access.managers).decode(),
               json_bytes(access.monitors).decode())
        return self.store.commit(Rows("put", HOST_ACCESS, [row])).addCallback(
            lambda _: self.directory.set_access(host, access))

    def reset_access(self, host: str) -> Deferred[HostAccess]:
        """Back to the config's list once committed (StoreUnavailable: unchanged)."""
        return self._changes.run(self._reset_access, host)

    def _reset_access(self, host: str) -> Deferred[HostAccess]:
        def reset(_: None) -> HostAccess:
            self.directory.reset_access(host)
            return self.directory.access(host)

        if self.directory.access_change(host) is None:
            return succeed(self.directory.access(host))
        return self.store.commit(Rows("delete", HOST_ACCESS, [(host,)])).addCallback(reset)

    def to_json(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "users": len(self.directory.users),
                "sessions": len(self.sessions), "api_keys": len(self.keys),
                "logins": self.logins,
                "failed_logins": self.failed_logins, "throttled_logins": self.throttled_logins}

    def startService(self) -> None:
        super().startService()
        self.hasher.worker.start()
        start_timers(self._timers)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return stop_timers(self._timers).addCallback(lambda _: self.hasher.close())
