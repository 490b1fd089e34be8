"""The user policy on plain values, and AuthService applying it as the list is when it lands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from heartbeat.config.server import UserConfig
from heartbeat.server.access import Directory
from heartbeat.server.auth import AuthService, PasswordHasher
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.store import StoreService, open_sqlite
from heartbeat.server.user_policy import (
    Action,
    CreateUser,
    Decision,
    DeleteUser,
    Refused,
    UpdateUser,
    UserChange,
    decide,
    name_problem,
    password_problem,
    permit,
)

ADMIN = UserConfig(admin=True, full_name="Alice")
PLAIN = UserConfig(full_name="Bob")
USERS = {"alice": ADMIN, "bob": PLAIN}


def refusal(users: dict[str, UserConfig], actor: str | None,
            change: UserChange) -> tuple[str, str]:
    with pytest.raises(Refused) as refused:
        decide(users, actor, change)
    return refused.value.code, refused.value.message


class PermissionTests:
    def test_admin_creates_a_user(self) -> None:
        """An admin's new user joins the list with the given fields over the defaults."""
        decision = decide(USERS, "alice", CreateUser("carol", {"email": "c@example.org"}))
        carol = UserConfig(email="c@example.org")
        assert decision == Decision("carol", carol, {**USERS, "carol": carol},
                                    end_sessions=False)

    @pytest.mark.parametrize("change", [CreateUser("carol"), DeleteUser("alice"),
                                        UpdateUser("alice", {"full_name": "A"})])
    def test_a_user_changes_nobody_else(self, change: UserChange) -> None:
        """Creating, deleting and changing others is an admin's; each refusal says so."""
        message = ("only an admin may change another user" if change.action is Action.UPDATE
                   else "only an admin may do this")
        assert refusal(USERS, "bob", change) == ("forbidden", message)

    def test_permit_answers_before_the_change_is_read(self) -> None:
        """The same refusal comes from the action alone, with no body yet."""
        with pytest.raises(Refused, match="only an admin may do this"):
            permit(USERS, "bob", Action.CREATE, None)
        permit(USERS, "bob", Action.UPDATE, "bob")
        permit(USERS, "alice", Action.DELETE, "bob")

    def test_a_user_changes_their_own_fields(self) -> None:
        """Bob's own full name and password are his to change; a new password ends sessions."""
        decision = decide(USERS, "bob", UpdateUser("bob", {"full_name": "Robert"}, "new-password"))
        robert = UserConfig(full_name="Robert")
        assert decision == Decision("bob", robert, {**USERS, "bob": robert}, end_sessions=True)

    def test_admin_flag_is_an_admins_to_change(self) -> None:
        """A user cannot make themselves admin; restating the flag they have changes nothing."""
        assert refusal(USERS, "bob", UpdateUser("bob", {"admin": True})) == (
            "forbidden", "only an admin may change the admin flag")
        assert decide(USERS, "bob", UpdateUser("bob", {"admin": False})).user == PLAIN

    def test_a_deleted_user_changes_nothing(self) -> None:
        """A caller who is no longer a user (deleted meanwhile) may not change even themselves."""
        assert refusal({"alice": ADMIN}, "bob", UpdateUser("bob", {"full_name": "B"})) == (
            "forbidden", "only an admin may change another user")

    def test_nobody_is_an_admin_only_while_there_are_no_users(self) -> None:
        """Without a login (unauthenticated mode) nothing may change once users exist."""
        assert refusal(USERS, None, CreateUser("carol", {"admin": True})) == (
            "forbidden", "only an admin may do this")


class UserListTests:
    def test_existing_and_missing_users(self) -> None:
        """Creating a user that exists is a conflict; changing or deleting a missing one 404s."""
        assert refusal(USERS, "alice", CreateUser("bob")) == (
            "exists", "there is already a user named 'bob'")
        assert refusal(USERS, "alice", UpdateUser("zed")) == ("not_found", "no user named 'zed'")
        assert refusal(USERS, "alice", DeleteUser("zed")) == ("not_found", "no user named 'zed'")

    def test_names_and_passwords_follow_the_rules(self) -> None:
        """A bad name or password is refused with the reason the CLI gives too."""
        assert refusal(USERS, "alice", CreateUser("bad name")) == ("invalid_body", (
            "'bad name' is not a user name (letters, digits, . _ @ -, up to 64, starting "
            "with a letter or digit)"))
        assert refusal(USERS, "alice", UpdateUser("bob", password="short")) == (
            "invalid_body", "a password needs at least 8 characters")
        assert [password_problem(p) for p in ("", "1234567", "12345678", "x" * 1024,
                                              "x" * 1025)] == [
            "an empty password is refused", "a password needs at least 8 characters", None,
            None, "a password may have at most 1024 characters"]
        assert [name_problem(n) for n in ("alice.b", "a@b-c_d", "x" * 64)] == [None] * 3
        assert name_problem("-x") == name_problem("-x") is not None

    def test_delete_ends_every_session(self) -> None:
        """A deleted user leaves the list and all their sessions end."""
        assert decide(USERS, "alice", DeleteUser("bob")) == Decision(
            "bob", None, {"alice": ADMIN}, end_sessions=True)

    def test_a_password_is_never_a_field(self) -> None:
        """A clear-text password in the fields would be stored as the hash: a programming error."""
        with pytest.raises(ValueError, match="password"):
            decide(USERS, "alice", UpdateUser("bob", {"password": "in-clear-text"}))


class AdminRuleTests:
    def test_last_admin_can_be_neither_deleted_nor_demoted(self) -> None:
        """The one admin stays: deleting or demoting them is refused, by themselves or not."""
        expected = ("last_admin", "'alice' is the last admin")
        assert refusal(USERS, "alice", DeleteUser("alice")) == expected
        assert refusal(USERS, "alice", UpdateUser("alice", {"admin": False})) == expected
        assert refusal({"alice": ADMIN}, "alice", DeleteUser("alice")) == expected

    def test_one_of_two_admins_may_go(self) -> None:
        """With two admins one may be demoted; then the other is the last."""
        users = {**USERS, "carol": UserConfig(admin=True)}
        after = decide(users, "alice", UpdateUser("carol", {"admin": False})).users
        assert [n for n, u in after.items() if u.admin] == ["alice"]
        assert refusal(dict(after), "alice", DeleteUser("alice")) == (
            "last_admin", "'alice' is the last admin")

    def test_first_user_must_be_an_admin(self) -> None:
        """With no users, nobody may create one, and it must be an admin (it turns logins on)."""
        assert refusal({}, None, CreateUser("root", {"full_name": "Root"})) == (
            "first_user_must_be_admin",
            "the first user switches authentication on: make it an admin")
        root = UserConfig(admin=True)
        assert decide({}, None, CreateUser("root", {"admin": True}, "root-password")) == (
            Decision("root", root, {"root": root}, end_sessions=True))

    def test_a_list_without_admins_still_lets_users_change_themselves(self) -> None:
        """Users configured without any admin may still change their own password."""
        users = {"bob": PLAIN, "dan": UserConfig()}
        assert decide(users, "bob", UpdateUser("bob", password="new-password")).users == users


class HeldWorker:
    """A hashing worker whose jobs finish only when the test says."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.jobs.append((fn, args, d))
        return d

    def finish(self) -> None:
        jobs, self.jobs = self.jobs, []
        for fn, args, d in jobs:
            d.callback(fn(*args))

    def finish_all(self) -> None:
        """Finish jobs, and those they start, until none is left."""
        while self.jobs:
            self.finish()


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[AuthService, HeldWorker]]:
    """Admins alice and carol and user bob, their new passwords hashed when the test says."""
    worker = HeldWorker()
    clock = Clock()
    store = StoreService(open_sqlite(tmp_path / "s.sqlite3"), ImmediateWorker(), clock)
    users = {"alice": ADMIN, "carol": UserConfig(admin=True), "bob": PLAIN}
    service = AuthService(Directory(users, {}), store, PasswordHasher(worker, iterations=1000),
                          clock, idle_timeout=3600)
    yield service, worker
    store.backend.close()


def outcome(d: Deferred[Any]) -> Any:
    """What ``d`` has fired with (a Failure for an error, consumed here)."""
    fired: list[Any] = []
    d.addBoth(fired.append)
    assert fired, "not fired yet"
    return fired[0]


def refused_with(d: Deferred[Any]) -> tuple[str, str]:
    failure = outcome(d)
    assert isinstance(failure, Failure) and isinstance(failure.value, Refused), failure
    return failure.value.code, failure.value.message


class ConcurrentChangeTests:
    def test_two_admins_demoting_each_other_leave_one(
            self, held: tuple[AuthService, HeldWorker]) -> None:
        """Both demotions pass the first look; one lands while hashing, so the other is refused."""
        service, worker = held
        first = service.change_user("alice", UpdateUser("carol", {"admin": False},
                                                        "carol-new-pw"))
        second = service.change_user("carol", UpdateUser("alice", {"admin": False},
                                                         "alice-new-pw"))
        assert len(worker.jobs) == 1  # hashed one at a time: the second waits its turn
        worker.finish_all()
        demoted = outcome(first)
        assert (demoted.admin, demoted.password.split("$")[0]) == (False, "pbkdf2:sha256:1000")
        assert refused_with(second) == ("forbidden", "only an admin may change another user")
        assert service.directory.admins() == ["alice"]

    def test_two_admins_demoting_themselves_at_once_leave_one(
            self, held: tuple[AuthService, HeldWorker]) -> None:
        """The second self-demotion to land finds its admin the last one."""
        service, worker = held
        first = service.change_user("alice", UpdateUser("alice", {"admin": False}, "a-new-pw"))
        second = service.change_user("carol", UpdateUser("carol", {"admin": False}, "c-new-pw"))
        worker.finish_all()
        assert outcome(first).admin is False
        assert refused_with(second) == ("last_admin", "'carol' is the last admin")
        assert service.directory.admins() == ["carol"]

    def test_user_deleted_while_their_password_hashes_stays_deleted(
            self, held: tuple[AuthService, HeldWorker]) -> None:
        """A password change landing after the user's deletion does not bring them back."""
        service, worker = held
        change = service.change_user("bob", UpdateUser("bob", password="bob-new-password"))
        assert outcome(service.change_user("alice", DeleteUser("bob"))) is None
        worker.finish_all()
        assert refused_with(change) == ("forbidden", "only an admin may change another user")
        assert service.directory.user("bob") is None

    def test_demotions_waiting_for_the_disk_leave_one_admin(self, tmp_path: Path) -> None:
        """Changes are made one at a time from decision to commit: a second demotion
        decided while the first waits for the disk would leave no admin."""
        disk = HeldWorker()
        clock = Clock()
        store = StoreService(open_sqlite(tmp_path / "s.sqlite3"), disk, clock)
        users = {"alice": ADMIN, "carol": UserConfig(admin=True)}
        service = AuthService(Directory(users, {}), store,
                              PasswordHasher(ImmediateWorker(), iterations=1000), clock,
                              idle_timeout=3600)
        first = service.change_user("alice", UpdateUser("carol", {"admin": False}))
        second = service.change_user("carol", UpdateUser("alice", {"admin": False}))
        assert service.directory.admins() == ["alice", "carol"]  # nothing before the disk
        disk.finish_all()
        assert outcome(first).admin is False
        assert refused_with(second) == ("forbidden", "only an admin may change another user")
        assert service.directory.admins() == ["alice"]
        store.backend.close()

    def test_refused_change_is_not_hashed(self, held: tuple[AuthService, HeldWorker]) -> None:
        """A change refused at once costs no hashing work."""
        service, worker = held
        refused = service.change_user("bob", UpdateUser("alice", password="whatever-pw"))
        assert worker.jobs == []
        assert refused_with(refused) == ("forbidden", "only an admin may change another user")
