"""Second factors at the edge: TOTP enrolments in the store, the policy, pending logins.

The store is the one truth about who has a second factor: a login reads the
user's row before it asks for a code, so ``heartbeat passwd --reset-totp``
(which deletes the row while the server may be running) takes effect at that
user's next login. Memory holds a copy for what must be answered at once (is
this session's user enrolled, what does the policy say) and the last time step
each user spent, so a code cannot be used twice while its write is queued.

Enrolment has two steps: :meth:`SecondFactor.start` makes a secret the user
adds to their app (a QR code made here, never by a third party), and
:meth:`SecondFactor.confirm` keeps it only once a code from the app matches,
handing out ten recovery codes, once. A login with a password but no code
gets a short-lived challenge (the page's second form) instead of a session.
"""

from __future__ import annotations

import json
import secrets
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Final

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from heartbeat.server.access import Directory
from heartbeat.server.sessions import token_digest
from heartbeat.server.store import StoreService
from heartbeat.server.tables import AUTH_SETTINGS, TOTP, Read, Rows, Tables
from heartbeat.server.totp import (
    POLICIES,
    Enrolment,
    Match,
    check_code,
    match_step,
    new_recovery_codes,
    new_secret,
    provisioning_uri,
    recovery_digest,
    required,
)
from heartbeat.text import json_bytes

__all__ = ["CHALLENGE_TTL", "ENROL_TTL", "Challenge", "SecondFactor", "load_second_factor"]

log = Logger()
ENROL_TTL: Final = 900.0
"""A started enrolment must be confirmed within this (seconds)."""
CHALLENGE_TTL: Final = 300.0
"""A login waiting for its code lasts this long (seconds)."""
CHALLENGE_ATTEMPTS: Final = 5
MAX_CHALLENGES: Final = 10_000
POLICY_KEY: Final = "totp_required"


def _row_enrolment(row: tuple[Any, ...] | None) -> Enrolment | None:
    if row is None:
        return None
    secret, enrolled, last_step, recovery = row
    return Enrolment(secret, enrolled, last_step, tuple(json.loads(recovery)))


def read_enrolment(user: str) -> Read[Enrolment | None]:
    """A store read: ``user``'s enrolment or None."""
    def run(tables: Tables) -> Enrolment | None:
        rows = tables.rows(TOTP, user=user)
        return _row_enrolment(rows[0][1:] if rows else None)
    return run


def load_second_factor(tables: Tables) -> tuple[dict[str, Enrolment], str | None]:
    """Every enrolment and the policy set through the API (None: the config's), at start-up."""
    enrolments = {}
    for user, *rest in tables.rows(TOTP):
        enrolment = _row_enrolment(tuple(rest))
        assert enrolment is not None
        enrolments[user] = enrolment
    rows = tables.rows(AUTH_SETTINGS, name=POLICY_KEY)
    return enrolments, None if not rows else str(rows[0][1])


@dataclass
class Challenge:
    """A login whose password was right, waiting for the second factor."""

    user: str
    address: str | None
    created: float
    attempts: int = 0


class SecondFactor:
    """TOTP enrolments, the policy that asks for them, and logins waiting for a code."""

    def __init__(self, store: StoreService, clock: IReactorTime, directory: Directory,
                 policy: str = "off") -> None:
        self.store = store
        self.clock = clock
        self.directory = directory
        self.configured_policy = policy
        self.policy = policy
        self.policy_source = "config"
        self.enrolments: dict[str, Enrolment] = {}
        self._starting: dict[str, tuple[str, float]] = {}
        self._challenges: OrderedDict[str, Challenge] = OrderedDict()
        self._spent: dict[str, int] = {}

    def restore(self, enrolments: dict[str, Enrolment], policy: str | None) -> None:
        self.enrolments = dict(enrolments)
        if policy in POLICIES:
            self.policy, self.policy_source = policy, "api"

    # Who
    def enrolled(self, user: str) -> bool:
        return user in self.enrolments

    def required(self, user: str) -> bool:
        """Whether the policy asks ``user`` for a second factor."""
        return required(self.policy, self.directory.privileged(user))

    def status(self, user: str) -> dict[str, Any]:
        enrolment = self.enrolments.get(user)
        return {"enrolled": enrolment is not None,
                "enrolled_at": None if enrolment is None else enrolment.enrolled,
                "recovery_codes_left": None if enrolment is None else len(enrolment.recovery),
                "required": self.required(user), "policy": self.policy}

    def set_policy(self, policy: str) -> Deferred[None]:
        """Set once committed (StoreUnavailable: unchanged), as every change below."""
        if policy not in POLICIES:
            raise ValueError(f"totp_required must be one of {', '.join(POLICIES)}")

        def made(_: None) -> None:
            self.policy, self.policy_source = policy, "api"
            log.info("auth: totp_required is now {policy}", policy=policy)

        return self.store.commit(Rows("put", AUTH_SETTINGS, [(POLICY_KEY, policy)])
                                 ).addCallback(made)

    def reset_policy(self) -> Deferred[None]:
        def made(_: None) -> None:
            self.policy, self.policy_source = self.configured_policy, "config"

        return self.store.commit(Rows("delete", AUTH_SETTINGS, [(POLICY_KEY,)])
                                 ).addCallback(made)

    # Enrolment
    def start(self, user: str, issuer: str) -> dict[str, Any]:
        """A new secret for ``user`` to confirm within ENROL_TTL: secret, URI, QR code."""
        import segno  # noqa: PLC0415 - only when someone enrols

        secret = new_secret()
        now = self.clock.seconds()
        self._starting[user] = (secret, now)
        uri = provisioning_uri(secret, user, issuer)
        qr = segno.make(uri, error="m").svg_data_uri(scale=5, border=4, dark="#000",
                                                     light="#fff")
        return {"secret": secret, "uri": uri, "qr": qr, "expires": now + ENROL_TTL}

    def confirm(self, user: str, code: str) -> Deferred[list[str] | None]:
        """Keep the started secret if ``code`` matches it: the recovery codes (shown once),
        answered once the enrolment is on disk; None for a wrong or late code."""
        started = self._starting.get(user)
        now = self.clock.seconds()
        if started is None or now - started[1] > ENROL_TTL:
            self._starting.pop(user, None)
            return succeed(None)
        step = match_step(started[0], code, now, None)
        if step is None:
            return succeed(None)
        codes = new_recovery_codes()
        enrolment = Enrolment(started[0], now, step, tuple(recovery_digest(c) for c in codes))

        def saved(_: None) -> list[str]:
            self._starting.pop(user, None)
            self._spent[user] = step
            log.info("auth: {user} enrolled a second factor", user=user)
            return codes

        return self._save(user, enrolment).addCallback(saved)

    def _save(self, user: str, enrolment: Enrolment) -> Deferred[None]:
        row = (user, enrolment.secret, enrolment.enrolled, enrolment.last_step,
               json_bytes(list(enrolment.recovery)).decode())

        def saved(_: None) -> None:
            self.enrolments[user] = enrolment

        return self.store.commit(Rows("put", TOTP, [row])).addCallback(saved)

    def disable(self, user: str) -> Deferred[bool]:
        """Remove ``user``'s second factor once its row is gone (False: there was none)."""
        if user not in self.enrolments:
            self._starting.pop(user, None)
            return succeed(False)

        def removed(_: None) -> bool:
            self._starting.pop(user, None)
            self._spent.pop(user, None)
            self.enrolments.pop(user, None)
            log.info("auth: the second factor of {user} was removed", user=user)
            return True

        return self.store.commit(Rows("delete", TOTP, [(user,)])).addCallback(removed)

    def new_recovery_codes(self, user: str) -> Deferred[list[str]]:
        """Ten fresh recovery codes for an enrolled user, replacing the old ones once
        they are on disk."""
        enrolment = self.enrolments[user]
        codes = new_recovery_codes()
        return self._save(user, replace(enrolment, recovery=tuple(
            recovery_digest(c) for c in codes))).addCallback(lambda _: codes)

    # Checking codes
    def read(self, user: str) -> Deferred[Enrolment | None]:
        """``user``'s enrolment as the store has it now (the memory copy follows it)."""
        def seen(enrolment: Enrolment | None) -> Enrolment | None:
            if enrolment is None:
                self.enrolments.pop(user, None)
            else:
                self.enrolments[user] = enrolment
            return enrolment
        return self.store.read(read_enrolment(user)).addCallback(seen)

    def check(self, user: str, enrolment: Enrolment, code: str) -> Match | None:
        """Whether ``code`` opens ``enrolment`` now; a match is spent at once."""
        match = check_code(enrolment, code, self.clock.seconds(), self._spent.get(user))
        if match is None:
            return None
        if match.kind == "totp":
            assert match.step is not None
            self._spent[user] = match.step
            self.enrolments[user] = replace(enrolment, last_step=match.step)
            step = match.step
            self.store.submit(lambda tables: tables.update(TOTP, ("last_step",), [(step, user)]))
        else:
            left = tuple(d for d in enrolment.recovery if d != match.digest)
            self.enrolments[user] = replace(enrolment, recovery=left)
            codes = json_bytes(list(left)).decode()
            self.store.submit(lambda tables: tables.update(TOTP, ("recovery",), [(codes, user)]))
            log.warn("auth: {user} used a recovery code ({left} left)", user=user,
                     left=len(left))
        return match

    def unspend(self, user: str, before: Enrolment | None, spent: int | None) -> None:
        """Undo :meth:`check`'s spending for a login the store refused (no session was
        made): the code works again, as if it had never been sent. ``before`` and
        ``spent``: the enrolment and the spent step from before the check."""
        if before is None or user not in self.enrolments:
            return  # removed meanwhile: nothing to give back
        self.enrolments[user] = before
        if spent is None:
            self._spent.pop(user, None)
        else:
            self._spent[user] = spent
        step, codes = before.last_step, json_bytes(list(before.recovery)).decode()
        self.store.submit(lambda tables: tables.update(
            TOTP, ("last_step", "recovery"), [(step, codes, user)]))

    def spent(self, user: str) -> int | None:
        """The last TOTP step ``user`` logged in with (no code of it or before works)."""
        return self._spent.get(user)

    # Logins waiting for their code
    def challenge(self, user: str, address: str | None) -> str:
        now = self.clock.seconds()
        token = secrets.token_urlsafe(24)
        self._challenges[token_digest(token)] = Challenge(user, address, now)
        while len(self._challenges) > MAX_CHALLENGES:
            self._challenges.popitem(last=False)
        return token

    def pending(self, token: str) -> Challenge | None:
        """The live challenge of ``token`` (one more attempt counted), or None."""
        key = token_digest(token)
        found = self._challenges.get(key)
        if found is None:
            return None
        found.attempts += 1
        if self.clock.seconds() - found.created > CHALLENGE_TTL or \
                found.attempts > CHALLENGE_ATTEMPTS:
            del self._challenges[key]
            return None
        return found

    def done(self, token: str) -> None:
        self._challenges.pop(token_digest(token), None)
