"""Time-based one-time passwords (RFC 6238) and recovery codes. Pure: time comes in as ``now``.

A user's second factor is a random 160-bit secret shared with their
authenticator app once, at enrolment, through an ``otpauth://`` URI (shown as
a QR code). A code is HMAC-SHA1 of the 30-second time step, truncated to six
digits (RFC 4226). :func:`match_step` accepts the step before and after the
current one for clock drift, and only a step later than the last one used,
so every code works once.

Recovery codes are for a lost phone: ten random codes of 80 bits each, shown
once, kept only as SHA-256 digests (at 80 bits nothing can be guessed from a
digest, so no slow hash is needed), each usable once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote, urlencode

__all__ = [
    "DIGITS",
    "PERIOD",
    "POLICIES",
    "RECOVERY_CODES",
    "Enrolment",
    "Match",
    "check_code",
    "code_at",
    "match_step",
    "new_recovery_codes",
    "new_secret",
    "normalise_code",
    "provisioning_uri",
    "recovery_digest",
    "recovery_match",
    "required",
    "step_at",
]

PERIOD: Final = 30
DIGITS: Final = 6
DRIFT: Final = 1
"""Steps accepted either side of the current one (a phone's clock a little off)."""
RECOVERY_CODES: Final = 10
_RECOVERY_ALPHABET: Final = "abcdefghjkmnpqrstuvwxyz23456789"
"""No 0/o, 1/l/i: the codes are read off paper."""
_RECOVERY_LENGTH: Final = 16  # 31**16 is about 2**79


def new_secret() -> str:
    """A fresh shared secret: 20 random bytes (RFC 4226's length), base32 without padding."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").rstrip("=")


def _key(secret: str) -> bytes:
    padded = secret.upper() + "=" * (-len(secret) % 8)
    return base64.b32decode(padded)


def step_at(now: float) -> int:
    return int(now // PERIOD)


def code_at(secret: str, step: int, digits: int = DIGITS) -> str:
    """The code for time step ``step`` (RFC 4226 dynamic truncation)."""
    mac = hmac.new(_key(secret), struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def normalise_code(code: str) -> str:
    """A code as typed (spaces, dashes, any case) in the form it is compared in."""
    return "".join(ch for ch in code.lower() if ch.isalnum())


def match_step(secret: str, code: str, now: float, last_step: int | None) -> int | None:
    """The time step ``code`` belongs to, if it is valid now and newer than ``last_step``.

    None for a wrong code and for a code already used (or older than one used):
    the caller records the step returned as the new ``last_step``.
    """
    typed = normalise_code(code)
    if len(typed) != DIGITS or not typed.isdigit():
        return None
    current = step_at(now)
    found = None
    for step in range(current - DRIFT, current + DRIFT + 1):
        # Compare every candidate: the time taken does not say which one matched.
        if hmac.compare_digest(code_at(secret, step), typed) and found is None:
            found = step
    if found is None or (last_step is not None and found <= last_step):
        return None
    return found


def provisioning_uri(secret: str, account: str, issuer: str = "heartbeat") -> str:
    """The ``otpauth://`` URI an authenticator app reads from the QR code."""
    label = quote(f"{issuer}:{account}", safe="")
    query = urlencode({"secret": secret, "issuer": issuer, "algorithm": "SHA1",
                       "digits": DIGITS, "period": PERIOD})
    return f"otpauth://totp/{label}?{query}"


def new_recovery_codes(count: int = RECOVERY_CODES) -> list[str]:
    """``count`` fresh codes, written ``xxxx-xxxx-xxxx-xxxx`` for reading off paper."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append("-".join(raw[i:i + 4] for i in range(0, _RECOVERY_LENGTH, 4)))
    return codes


def recovery_digest(code: str) -> str:
    """What is kept of a recovery code: SHA-256 of its normalised form."""
    return hashlib.sha256(normalise_code(code).encode("utf-8")).hexdigest()


def recovery_match(code: str, digests: Iterable[str]) -> str | None:
    """The stored digest ``code`` matches, if any (the caller then removes it)."""
    typed = recovery_digest(code)
    found = None
    for digest in digests:
        if hmac.compare_digest(digest, typed):
            found = digest
    return found


POLICIES: Final = ("off", "privileged", "all")
"""Who must have a second factor: nobody, admins and owners/managers of hosts, everyone."""


def required(policy: str, privileged: bool) -> bool:
    """Whether ``policy`` asks a user (``privileged``: admin, owner or manager) for TOTP."""
    return policy == "all" or (policy == "privileged" and privileged)


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A user's confirmed second factor, as the store keeps it."""

    secret: str
    enrolled: float
    last_step: int | None
    recovery: tuple[str, ...]
    """Digests of the recovery codes not yet used."""


@dataclass(frozen=True, slots=True)
class Match:
    """How a code was accepted: a TOTP code of ``step``, or the recovery code ``digest``."""

    kind: Literal["totp", "recovery"]
    step: int | None = None
    digest: str | None = None


def check_code(enrolment: Enrolment, code: str, now: float,
               last_step: int | None = None) -> Match | None:
    """Whether ``code`` (six digits, or a recovery code) opens ``enrolment`` now.

    ``last_step`` is a step already used that the enrolment may not know yet (a
    login a moment ago): codes of it and before are refused.
    """
    known = [s for s in (enrolment.last_step, last_step) if s is not None]
    typed = normalise_code(code)
    if len(typed) == DIGITS and typed.isdigit():
        step = match_step(enrolment.secret, typed, now, max(known) if known else None)
        return None if step is None else Match("totp", step=step)
    digest = recovery_match(typed, enrolment.recovery)
    return None if digest is None else Match("recovery", digest=digest)
