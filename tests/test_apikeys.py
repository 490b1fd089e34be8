"""API keys: token shape, hashed storage, scopes, expiry, revocation, last use."""

from __future__ import annotations

import re

import pytest

from heartbeat.server.apikeys import (
    ApiKey,
    ApiKeyBook,
    KeyLimitReached,
    key_digest,
)

NOW = 1_800_000_000.0


def test_token_shape_and_only_its_digest_is_kept() -> None:
    """hbk_<scope>_<id>_<secret>; the book holds the SHA-256, never the token."""
    book = ApiKeyBook()
    token, key = book.create("alice", "grafana", "ro", NOW)
    assert re.fullmatch(r"hbk_ro_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", token)
    assert key == ApiKey(key_digest(token), token.split("_")[2], "alice", "grafana", "ro", NOW)
    assert token not in repr(vars(book)) and key.hint == f"hbk_ro_{key.key_id}_\u2026"
    rw_token, rw = book.create("alice", "deploy", "rw", NOW)
    assert rw_token.startswith("hbk_rw_") and (key.read_only, rw.read_only) == (True, False)


def test_lookup_marks_use_and_refuses_unknown_forged_and_expired() -> None:
    """A live token is found and stamped; another secret, id or scope, or expiry: None."""
    book = ApiKeyBook()
    token, key = book.create("bob", "cron", "rw", NOW, expires=NOW + 100)
    assert book.lookup(token, NOW + 5, "192.0.2.7") is key
    assert (key.last_used, key.last_address) == (NOW + 5, "192.0.2.7")
    forged_scope = token.replace("hbk_rw_", "hbk_ro_")
    forged_secret = token[:-4] + "AAAA"
    assert [book.lookup(t, NOW + 6) for t in (forged_scope, forged_secret, "hbk_rw_x", "",
                                               "not-a-key")] == [None] * 5
    assert book.lookup(token, NOW + 100) is None
    assert key.to_json(NOW + 100)["expired"] is True


def test_revoke_one_and_all_of_a_user() -> None:
    """Revoking a key makes its token unknown at once; revoking a user drops only theirs."""
    book = ApiKeyBook()
    t1, k1 = book.create("carol", "a", "ro", NOW)
    t2, _ = book.create("carol", "b", "rw", NOW + 1)
    t3, k3 = book.create("dave", "c", "ro", NOW)
    assert book.revoke(k1.key_id) is k1 and book.lookup(t1, NOW) is None
    assert [k.name for k in book.revoke_user("carol")] == ["b"]
    assert (book.lookup(t2, NOW), book.lookup(t3, NOW), len(book)) == (None, k3, 1)


def test_per_user_limit() -> None:
    """A user cannot hold more than the limit; others are unaffected."""
    book = ApiKeyBook(max_per_user=2)
    book.create("erin", "1", "ro", NOW)
    book.create("erin", "2", "ro", NOW)
    with pytest.raises(KeyLimitReached):
        book.create("erin", "3", "ro", NOW)
    book.create("frank", "1", "ro", NOW)


def test_last_use_persisted_at_most_once_a_minute() -> None:
    """needs_persisting is true for the first use, then once 60 s have passed."""
    book = ApiKeyBook()
    token, key = book.create("gina", "k", "ro", NOW)
    assert not book.needs_persisting(key)
    book.lookup(token, NOW + 1)
    assert book.needs_persisting(key)
    key.persisted_use = key.last_used
    book.lookup(token, NOW + 30)
    assert not book.needs_persisting(key)
    book.lookup(token, NOW + 61)
    assert book.needs_persisting(key)


def test_restored_keys_work_with_their_tokens() -> None:
    """Keys restored from the store answer to the same tokens."""
    book = ApiKeyBook()
    token, key = book.create("hal", "k", "rw", NOW)
    again = ApiKeyBook()
    again.restore([ApiKey(key.digest, key.key_id, "hal", "k", "rw", NOW, None, NOW + 3)])
    found = again.lookup(token, NOW + 10)
    assert found is not None and (found.user, found.scope, found.last_used) == (
        "hal", "rw", NOW + 10)
