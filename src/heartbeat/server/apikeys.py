"""API keys: long-lived bearer tokens for scripts. Pure: time comes in as ``now``.

A key belongs to one user and acts with that user's roles, read-only or
read-write. Its token is shown once, at creation, and reads
``hbk_ro_<id>_<secret>`` or ``hbk_rw_<id>_<secret>``: the prefix says what it
is (secret scanners and people can tell), the public ``id`` names it in lists
and logs, the secret is 256 random bits. The server keeps only the token's
SHA-256, as it does for sessions: a copy of the store holds no working key.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from heartbeat.server.sessions import TOUCH_PERSIST
from heartbeat.server.sessions import token_digest as key_digest

__all__ = [
    "KEY_PREFIX",
    "MAX_KEYS_PER_USER",
    "SCOPES",
    "TOUCH_PERSIST",
    "ApiKey",
    "ApiKeyBook",
    "KeyLimitReached",
    "key_digest",
]

Scope = Literal["ro", "rw"]
SCOPES: Final[tuple[Scope, ...]] = ("ro", "rw")
KEY_PREFIX: Final = "hbk_"
MAX_KEYS_PER_USER: Final = 50


@dataclass(slots=True)
class ApiKey:
    digest: str
    key_id: str
    user: str
    name: str
    scope: Scope
    created: float
    expires: float | None = None
    last_used: float | None = None
    last_address: str | None = None
    persisted_use: float | None = None
    """``last_used`` as last written to the store."""

    @property
    def read_only(self) -> bool:
        return self.scope == "ro"

    @property
    def hint(self) -> str:
        """How the key is shown once its token is gone: ``hbk_rw_<id>_…``."""
        return f"{KEY_PREFIX}{self.scope}_{self.key_id}_\u2026"

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def to_json(self, now: float) -> dict[str, Any]:
        return {"id": self.key_id, "name": self.name, "user": self.user, "scope": self.scope,
                "created": self.created, "expires": self.expires, "last_used": self.last_used,
                "last_address": self.last_address, "expired": self.expired(now),
                "hint": self.hint}


class KeyLimitReached(Exception):
    """The user already holds :data:`MAX_KEYS_PER_USER` keys."""


def _split(token: str) -> tuple[Scope, str] | None:
    """(scope, id) of a well-formed token, else None."""
    if not token.startswith(KEY_PREFIX):
        return None
    scope, _, rest = token[len(KEY_PREFIX):].partition("_")
    key_id, _, secret = rest.partition("_")
    if scope not in SCOPES or not key_id or not secret:
        return None
    return scope, key_id


class ApiKeyBook:
    """Every API key by digest, and by id for the API's routes."""

    def __init__(self, max_per_user: int = MAX_KEYS_PER_USER) -> None:
        self.max_per_user = max_per_user
        self._by_digest: dict[str, ApiKey] = {}
        self._by_id: dict[str, ApiKey] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    @staticmethod
    def looks_like_key(token: str) -> bool:
        return token.startswith(KEY_PREFIX)

    def create(self, user: str, name: str, scope: Scope, now: float,
               expires: float | None = None) -> tuple[str, ApiKey]:
        """A new key for ``user``: (the token, shown once; the key)."""
        if len(self.of_user(user)) >= self.max_per_user:
            raise KeyLimitReached(f"{user!r} already holds {self.max_per_user} keys")
        key_id = secrets.token_hex(4)
        while key_id in self._by_id:
            key_id = secrets.token_hex(4)
        token = f"{KEY_PREFIX}{scope}_{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey(key_digest(token), key_id, user, name, scope, now, expires)
        self._add(key)
        return token, key

    def _add(self, key: ApiKey) -> None:
        self._by_digest[key.digest] = key
        self._by_id[key.key_id] = key

    def restore(self, keys: Iterable[ApiKey]) -> None:
        for key in keys:
            key.persisted_use = key.last_used
            self._add(key)

    def reload(self, keys: Iterable[ApiKey]) -> None:
        """The stored keys, whole, in place of those held (another server made or revoked
        some); a key held keeps its last use if later than the stored one."""
        held = dict(self._by_id)
        self._by_digest.clear()
        self._by_id.clear()
        for key in keys:
            old = held.get(key.key_id)
            if old is not None and (old.last_used or 0.0) > (key.last_used or 0.0):
                key.last_used, key.last_address = old.last_used, old.last_address
            key.persisted_use = key.last_used if old is None else old.persisted_use
            self._add(key)

    def lookup(self, token: str, now: float, address: str | None = None) -> ApiKey | None:
        """The live key of ``token``, marked used at ``now``; None if unknown or expired."""
        if _split(token) is None:
            return None
        key = self._by_digest.get(key_digest(token))
        if key is None or key.expired(now):
            return None
        key.last_used = max(key.last_used or now, now)
        key.last_address = address
        return key

    def needs_persisting(self, key: ApiKey) -> bool:
        if key.last_used is None:
            return False
        return key.persisted_use is None or key.last_used - key.persisted_use >= TOUCH_PERSIST

    def get(self, key_id: str) -> ApiKey | None:
        return self._by_id.get(key_id)

    def of_user(self, user: str) -> list[ApiKey]:
        """``user``'s keys, oldest first."""
        return sorted((k for k in self._by_id.values() if k.user == user),
                      key=lambda k: (k.created, k.key_id))

    def revoke(self, key_id: str) -> ApiKey | None:
        key = self._by_id.pop(key_id, None)
        if key is not None:
            del self._by_digest[key.digest]
        return key

    def revoke_user(self, user: str) -> list[ApiKey]:
        gone = self.of_user(user)
        for key in gone:
            self.revoke(key.key_id)
        return gone
