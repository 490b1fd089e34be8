"""Sessions and the login throttle (pure, plain `now`)."""

from __future__ import annotations

from heartbeat.server.sessions import LoginThrottle, Session, SessionBook, session_key


def test_session_lookup_touches_and_expires() -> None:
    """A session lives while used within idle_timeout and ends after that much idleness."""
    book = SessionBook(idle_timeout=100.0)
    token, session = book.create("alice", now=1000.0, address="192.0.2.7")
    assert session.key == session_key(token) and token not in session.key
    assert book.lookup(token, 1099.0) is session
    assert book.lookup(token, 1198.0) is session
    assert book.lookup(token, 1299.0) is None
    assert len(book) == 0
    assert book.lookup("made-up", 1000.0) is None


def test_tokens_and_csrf_are_unique() -> None:
    """Every session gets its own random token and CSRF token."""
    book = SessionBook(100.0)
    made = [book.create("a", 0.0) for _ in range(50)]
    assert len({t for t, _ in made}) == 50
    assert len({s.csrf for _, s in made}) == 50


def test_expire_and_revoke() -> None:
    """expire() returns idle sessions; revoke_user keeps the named session."""
    book = SessionBook(10.0)
    _, old = book.create("a", 0.0)
    _, keep = book.create("b", 5.0)
    _, other = book.create("b", 5.0)
    assert book.expire(12.0) == [old]
    assert book.revoke_user("b", keep=keep.key) == [other]
    assert list(book.sessions) == [keep.key]


def test_restore_skips_idle_sessions() -> None:
    """Sessions read back from the store are kept only if still live."""
    book = SessionBook(10.0)
    book.restore([Session("k1", "a", 0.0, 5.0, "c"), Session("k2", "a", 0.0, 20.0, "c")], 21.0)
    assert list(book.sessions) == ["k2"]


def test_needs_persisting_once_a_minute() -> None:
    """last_used is written back only when it moved a minute past the stored value."""
    book = SessionBook(1000.0)
    token, session = book.create("a", 0.0)
    book.lookup(token, 59.0)
    assert not book.needs_persisting(session)
    book.lookup(token, 60.0)
    assert book.needs_persisting(session)


def _attempt(throttle: LoginThrottle, keys: list[str], now: float, ok: bool) -> float:
    wait = throttle.retry_after(keys, now)
    if wait:
        return wait
    throttle.begin(keys, now)
    if ok:
        throttle.succeeded(keys, keys[:1], now)
        return 0.0
    throttle.failed(keys, now)
    return 0.0


def test_backoff_doubles_after_free_attempts() -> None:
    """Failures 1..n are free; then blocks of base, 2 base, 4 base... up to max_delay."""
    throttle = LoginThrottle(free_attempts=3, base_delay=1.0, max_delay=8.0)
    keys = ["user:a"]
    now = 0.0
    blocks = []
    for _ in range(8):
        throttle.begin(keys, now)
        blocks.append(throttle.failed(keys, now))
        now += blocks[-1]
    assert blocks == [0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_blocked_key_waits_then_forgets() -> None:
    """A blocked key reports its wait; forget_after past the last failure it starts afresh."""
    throttle = LoginThrottle(free_attempts=1, base_delay=5.0, forget_after=100.0)
    assert _attempt(throttle, ["k"], 0.0, ok=False) == 0.0
    assert throttle.retry_after(["k", "other"], 1.0) == 4.0
    assert throttle.retry_after(["k"], 5.0) == 0.0
    assert throttle.failures("k") == 1
    assert throttle.retry_after(["k"], 101.0) == 0.0
    assert throttle.failures("k") == 0


def test_parallel_attempts_are_limited() -> None:
    """More than max_in_flight simultaneous checks for one key must wait."""
    throttle = LoginThrottle(max_in_flight=2, base_delay=1.0)
    throttle.begin(["k"], 0.0)
    throttle.begin(["k"], 0.0)
    assert throttle.retry_after(["k"], 0.0) == 1.0
    throttle.succeeded(["k"], [], 0.0)
    assert throttle.retry_after(["k"], 0.0) == 0.0


def test_success_resets_only_the_named_keys() -> None:
    """A success clears the user key; the address key keeps its failures."""
    throttle = LoginThrottle(free_attempts=5)
    keys = ["user:a", "address:x"]
    for _ in range(3):
        _attempt(throttle, keys, 0.0, ok=False)
    _attempt(throttle, keys, 0.0, ok=True)
    assert (throttle.failures("user:a"), throttle.failures("address:x")) == (0, 3)


def test_key_count_is_bounded() -> None:
    """Random names cannot grow the throttle past max_keys."""
    throttle = LoginThrottle(max_keys=100)
    for i in range(1000):
        _attempt(throttle, [f"user:{i}"], 0.0, ok=False)
    assert len(throttle._records) == 100


def test_sessions_of_other_servers_are_adopted_and_synced() -> None:
    """With a shared store: a session read from it is held (unless idle); those the store
    no longer has (ended on another server) end here, the others take its ``restricted``."""
    book = SessionBook(10.0)
    _, mine = book.create("a", 0.0)
    assert book.adopt(Session("k2", "b", 0.0, 5.0, "c", restricted=True), 6.0)
    assert not book.adopt(Session("k3", "b", 0.0, 1.0, "c"), 20.0)
    assert sorted(book.sessions) == sorted([mine.key, "k2"])
    gone = book.sync([Session("k2", "b", 0.0, 5.0, "c", restricted=False)], 7.0)
    assert [s.key for s in gone] == [mine.key]
    assert (list(book.sessions), book.sessions["k2"].restricted) == (["k2"], False)
