"""Password hashing: logins go first and have their own bound; other hashing is bounded per
user and in all, so a user's own password changes never starve anyone's login."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from heartbeat.config.server import UserConfig
from heartbeat.passwords import hash_password
from heartbeat.server.access import Directory
from heartbeat.server.auth import AuthService, HasherBusy, PasswordHasher
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.store import StoreService, open_sqlite
from heartbeat.server.user_policy import UpdateUser
from tests.apistack import Stack, user
from tests.test_user_policy import HeldWorker, outcome


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[AuthService, HeldWorker]]:
    worker = HeldWorker()
    clock = Clock()
    store = StoreService(open_sqlite(tmp_path / "s.sqlite3"), ImmediateWorker(), clock)
    users = {name: UserConfig(admin=name == "alice", password=hash_password(f"{name}-pw-1",
                                                                            1000))
             for name in ("alice", "bob", "carol", "dave", "erin", "fred", "gina")}
    service = AuthService(Directory(users, {}), store,
                          PasswordHasher(worker, iterations=1000, max_pending=16, max_other=4),
                          clock, idle_timeout=3600)
    yield service, worker
    store.backend.close()


def test_a_users_password_changes_wait_behind_logins(
        held: tuple[AuthService, HeldWorker]) -> None:
    service, worker = held
    first = service.change_user("bob", UpdateUser("bob", password="bob-new-pw-1"))
    again = [service.change_user("bob", UpdateUser("bob", password=f"bob-new-pw-{n}"))
             for n in range(2, 10)]
    for d in again:  # one at a time per user, refused at once, no hashing queued
        failure = outcome(d)
        assert isinstance(failure, Failure) and failure.check(HasherBusy)
    others = [service.change_user(name, UpdateUser(name, password=f"{name}-new-pw"))
              for name in ("carol", "dave", "erin", "fred", "gina")]
    assert isinstance(outcome(others[-1]), Failure)  # bob's runs, 4 wait: gina's refused
    login = service.login("alice", "alice-pw-1", "192.0.2.9")
    assert len(worker.jobs) == 1  # bob's hash is running; the login is next, not last
    worker.finish()
    assert len(worker.jobs) == 1
    _fn, args, _d = worker.jobs[0]
    assert args[1] == "alice-pw-1"  # the login's check, ahead of carol, dave, erin, fred
    worker.finish_all()
    token, session = outcome(login)
    assert session.user == "alice" and token
    assert [outcome(d).password is not None for d in [first, *others[:4]]] == [True] * 5


def test_over_the_api_a_second_change_in_flight_is_429(tmp_path: Path) -> None:
    stack = Stack(tmp_path, users={"alice": user("alice-password", admin=True),
                                   "bob": user("bob-password")}, hosts={})
    try:
        token = stack.token("alice")
        held_worker = HeldWorker()
        stack.hasher.worker = held_worker
        body: Any = {"password": "bob-new-password"}
        http = stack.stub()
        first = http.request("PUT", "http://heartbeat.test/api/0/users/bob",
                             json=body, headers={"Authorization": f"Bearer {token}"})
        http.flush()
        busy = stack.call("PUT", "/api/0/users/bob", body, token=token)
        assert (busy.status, busy.json["error"], busy.header("Retry-After")) == (
            429, "hashing_busy", "1")
        assert len(held_worker.jobs) == 1  # the first change's hash, held
        held_worker.finish_all()
        http.flush()
        assert first.called
    finally:
        stack.close()
