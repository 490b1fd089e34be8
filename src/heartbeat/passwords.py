"""Password hashes: PBKDF2-HMAC-SHA256 from the standard library.

A stored hash reads ``pbkdf2:sha256:<iterations>$<salt>$<hex digest>``, the
same layout Werkzeug writes, so hashes made by either verify in the other.
The salt is random per hash; comparison is constant-time. Hashing at the
default cost takes a few hundred milliseconds on purpose: callers on a reactor
thread must run :func:`hash_password` and :func:`verify_password` elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ITERATIONS",
    "MAX_LENGTH",
    "MIN_ITERATIONS",
    "MIN_LENGTH",
    "PasswordHash",
    "hash_password",
    "parse_hash",
    "verify_password",
]

MIN_ITERATIONS: Final = 600_000
"""The least cost accepted from a configuration or a stored user (OWASP 2023)."""
ITERATIONS: Final = MIN_ITERATIONS
MIN_LENGTH: Final = 8
"""The shortest password a user may be given (API and ``heartbeat passwd``)."""
MAX_LENGTH: Final = 1024
"""The longest password a user may be given or log in with (hashing cost is per byte)."""
PREFIX: Final = "pbkdf2:sha256"
_SALT_ALPHABET: Final = string.ascii_letters + string.digits
_SALT_LENGTH: Final = 16
_DIGEST_HEX: Final = 64


@dataclass(frozen=True, slots=True)
class PasswordHash:
    iterations: int
    salt: str
    digest: str

    def __str__(self) -> str:
        return f"{PREFIX}:{self.iterations}${self.salt}${self.digest}"


def _derive(password: str, salt: str, iterations: int) -> str:
    # surrogatepass: a JSON body may carry lone surrogates ("\ud800"); they hash, not crash.
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8", "surrogatepass"),
                               salt.encode("utf-8", "surrogatepass"), iterations).hex()


def parse_hash(encoded: str, min_iterations: int = MIN_ITERATIONS) -> PasswordHash:
    """Split a stored hash, or raise ValueError saying what is wrong with it."""
    method, sep, rest = encoded.partition("$")
    salt, sep2, digest = rest.partition("$")
    if not (sep and sep2):
        raise ValueError("expected pbkdf2:sha256:<iterations>$<salt>$<hash> "
                         "(make one with `heartbeat passwd NAME`)")
    name, _, count = method.rpartition(":")
    if name != PREFIX:
        raise ValueError(f"unsupported method {method!r}: only {PREFIX} is accepted")
    if not count.isdigit():
        raise ValueError(f"iterations {count!r} is not a number")
    iterations = int(count)
    if iterations < min_iterations:
        raise ValueError(f"{iterations} iterations is below the minimum of {min_iterations}")
    if not salt or "$" in digest:
        raise ValueError("empty salt or a stray '$'")
    if len(digest) != _DIGEST_HEX or any(c not in string.hexdigits for c in digest):
        raise ValueError(f"the hash must be {_DIGEST_HEX} hex digits")
    return PasswordHash(iterations, salt, digest.lower())


def hash_password(password: str, iterations: int = ITERATIONS, salt: str | None = None) -> str:
    """A new stored hash of ``password`` with a fresh random salt."""
    if salt is None:
        salt = "".join(secrets.choice(_SALT_ALPHABET) for _ in range(_SALT_LENGTH))
    return str(PasswordHash(iterations, salt, _derive(password, salt, iterations)))


def verify_password(password: str, encoded: str, min_iterations: int = 1) -> bool:
    """Whether ``password`` matches ``encoded``; a malformed hash never matches."""
    try:
        stored = parse_hash(encoded, min_iterations)
    except ValueError:
        return False
    candidate = _derive(password, stored.salt, stored.iterations)
    return hmac.compare_digest(candidate, stored.digest)
