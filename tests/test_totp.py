"""TOTP codes (RFC 6238 vectors), one use per code, drift, recovery codes."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import pytest

from heartbeat.server.totp import (
    POLICIES,
    Enrolment,
    Match,
    check_code,
    code_at,
    match_step,
    new_recovery_codes,
    new_secret,
    normalise_code,
    provisioning_uri,
    recovery_digest,
    recovery_match,
    required,
    step_at,
)

RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()


@pytest.mark.parametrize(("now", "code"), [
    (59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
    (1234567890, "89005924"), (2000000000, "69279037"), (20000000000, "65353130"),
])
def test_rfc_6238_sha1_vectors(now: int, code: str) -> None:
    """The eight-digit SHA-1 test vectors of RFC 6238 appendix B come out exactly."""
    assert code_at(RFC_SECRET, step_at(now), digits=8) == code


def test_code_valid_once_within_the_drift_window() -> None:
    """A code matches in its step and one either side, and never again once used."""
    secret = new_secret()
    now = 1_800_000_015.0
    step = step_at(now)
    code = code_at(secret, step)
    assert [match_step(secret, code, now + d, None) for d in (-30, 0, 30, 60)] == [
        step, step, step, None]
    assert match_step(secret, code, now, last_step=step) is None
    assert match_step(secret, code_at(secret, step + 1), now, last_step=step) == step + 1
    assert match_step(secret, code_at(secret, step - 1), now, last_step=step) is None


def test_wrong_or_malformed_codes_never_match() -> None:
    """Another step's code, letters, too short or too long: no match."""
    secret = new_secret()
    now = 1_800_000_000.0
    wrong = code_at(secret, step_at(now) + 5)
    assert [match_step(secret, c, now, None) for c in (wrong, "abcdef", "12345", "1234567", "")
            ] == [None] * 5


def test_typed_code_with_spaces_matches() -> None:
    """'123 456' as an app shows it is the same as '123456'."""
    secret = new_secret()
    now = 1_800_000_000.0
    code = code_at(secret, step_at(now))
    assert match_step(secret, f" {code[:3]} {code[3:]} ", now, None) == step_at(now)


def test_secret_is_160_bits_of_base32() -> None:
    """Fresh secrets decode to 20 bytes and differ."""
    one, two = new_secret(), new_secret()
    assert one != two and len(base64.b32decode(one + "=" * (-len(one) % 8))) == 20


def test_provisioning_uri_names_issuer_and_account() -> None:
    """The otpauth URI carries the label, secret, issuer and parameters apps expect."""
    uri = provisioning_uri("JBSWY3DPEHPK3PXP", "alice@mon.example", "heartbeat")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "otpauth", "totp", "/heartbeat%3Aalice%40mon.example")
    assert parse_qs(parts.query) == {"secret": ["JBSWY3DPEHPK3PXP"], "issuer": ["heartbeat"],
                                     "algorithm": ["SHA1"], "digits": ["6"], "period": ["30"]}


def test_recovery_codes_are_distinct_and_match_once_stored_as_digests() -> None:
    """Ten distinct codes; a typed code (any case, no dashes) finds its digest only."""
    codes = new_recovery_codes()
    assert len(set(codes)) == 10
    assert all(len(c) == 19 and c.count("-") == 3 for c in codes)
    digests = [recovery_digest(c) for c in codes]
    typed = normalise_code(codes[3]).upper()
    assert recovery_match(typed, digests) == digests[3]
    assert recovery_match(typed, digests[:3] + digests[4:]) is None


def test_check_code_takes_a_fresh_code_or_an_unused_recovery_code() -> None:
    """A TOTP code newer than both last steps, or a recovery code still listed; else None."""
    secret = new_secret()
    now = 1_800_000_000.0
    step = step_at(now)
    codes = new_recovery_codes()
    enrolment = Enrolment(secret, now - 100, step - 2, tuple(recovery_digest(c) for c in codes))
    assert check_code(enrolment, code_at(secret, step), now) == Match("totp", step=step)
    assert check_code(enrolment, code_at(secret, step), now, last_step=step) is None
    assert check_code(enrolment, codes[0].upper(), now) == Match(
        "recovery", digest=recovery_digest(codes[0]))
    used = Enrolment(secret, now - 100, None, enrolment.recovery[1:])
    assert check_code(used, codes[0], now) is None
    assert check_code(enrolment, "not a code", now) is None


def test_policy_asks_whom() -> None:
    """off: nobody; privileged: admins, owners and managers; all: everyone."""
    assert [required(p, privileged) for p in POLICIES for privileged in (False, True)] == [
        False, False, False, True, True, True]
