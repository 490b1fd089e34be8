"""Roles per host from the config and the API's changes (pure, plain values)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from heartbeat.config.server import HostConfig, ServerConfig, UserConfig
from heartbeat.server.access import Directory, HostAccess, Role, Viewer, user_json
from heartbeat.server.notify.routing import Router

USERS = {
    "ann": UserConfig(admin=True),
    "olga": UserConfig(),
    "mike": UserConfig(),
    "nina": UserConfig(),
    "zoe": UserConfig(admin=True),
}
HOSTS = {"web1": HostConfig(owner="olga", managers=["mike"], monitors=["nina"]),
         "db1": HostConfig(managers=["olga"])}


def test_roles_from_config() -> None:
    """owner/managers/monitors give their roles; admins own all; others have none."""
    directory = Directory(USERS, HOSTS)
    table = {(u, h): directory.role(u, h) for u in ["ann", "olga", "mike", "nina", "ghost"]
             for h in ["web1", "db1", "new1"]}
    assert table == {
        ("ann", "web1"): Role.OWNER, ("ann", "db1"): Role.OWNER, ("ann", "new1"): Role.OWNER,
        ("olga", "web1"): Role.OWNER, ("olga", "db1"): Role.MANAGER, ("olga", "new1"): None,
        ("mike", "web1"): Role.MANAGER, ("mike", "db1"): None, ("mike", "new1"): None,
        ("nina", "web1"): Role.MONITOR, ("nina", "db1"): None, ("nina", "new1"): None,
        ("ghost", "web1"): None, ("ghost", "db1"): None, ("ghost", "new1"): None,
    }


def test_default_owner_falls_back_to_first_admin() -> None:
    """Without default_owner, hosts lacking an owner belong to the first admin listed."""
    directory = Directory(USERS, HOSTS)
    assert directory.default_owner == "ann"
    assert directory.access("db1") == HostAccess("ann", ("olga",), ())
    assert directory.access("new1") == HostAccess("ann")
    chosen = Directory(USERS, HOSTS, default_owner="mike")
    assert (chosen.default_owner, chosen.role("mike", "new1")) == ("mike", Role.OWNER)


def test_default_owner_moves_on_when_deleted() -> None:
    """A deleted default owner (or first admin) hands the default to the next admin."""
    directory = Directory(USERS, HOSTS, default_owner="mike")
    directory.delete_user("mike")
    assert directory.default_owner == "ann"
    directory.delete_user("ann")
    assert directory.default_owner == "zoe"


def test_api_access_wins_until_reset() -> None:
    """An API access list replaces the config's for that host until it is reset."""
    directory = Directory(USERS, HOSTS)
    saved = directory.set_access("web1", HostAccess("mike", (), ("olga",)))
    assert saved == HostAccess("mike", (), ("olga",), "api")
    assert (directory.role("olga", "web1"), directory.role("mike", "web1")) == (
        Role.MONITOR, Role.OWNER)
    assert directory.reset_access("web1") is True
    assert directory.access("web1") == HostAccess("olga", ("mike",), ("nina",), "config")
    assert directory.reset_access("web1") is False


def test_users_changed_and_deleted() -> None:
    """API users lie over the config's; deleting a config user leaves a tombstone."""
    directory = Directory(USERS, HOSTS)
    directory.put_user("carl", UserConfig(full_name="Carl"))
    directory.put_user("olga", UserConfig(full_name="Olga", admin=True))
    assert directory.delete_user("nina") is True
    assert directory.delete_user("nobody") is False
    assert list(directory.users) == ["ann", "olga", "mike", "zoe", "carl"]
    assert (directory.user_source("carl"), directory.user_source("mike")) == ("api", "config")
    assert directory.user_change("nina") == (True, None)
    assert directory.role("nina", "web1") is None
    assert directory.role("olga", "db1") is Role.OWNER  # now an admin
    directory.delete_user("carl")
    assert directory.user_change("carl") == (False, None)  # API-only: simply gone


def test_restore_replays_stored_changes() -> None:
    """Stored user and access changes come back on top of the same config."""
    directory = Directory(USERS, HOSTS)
    directory.restore({"nina": None, "carl": UserConfig()},
                      {"db1": HostAccess("carl", (), ())})
    assert "nina" not in directory.users
    assert directory.access("db1") == HostAccess("carl", (), (), "api")
    assert directory.role("carl", "db1") is Role.OWNER


def test_enabled_only_with_users() -> None:
    """No users at all is the unauthenticated mode."""
    assert Directory({}, HOSTS).enabled is False
    assert Directory(USERS, HOSTS).enabled is True


def test_viewer_of_unauthenticated_mode_may_do_everything() -> None:
    """The anonymous viewer (no users configured) is admin and owner of every host."""
    viewer = Viewer(Directory({}, {}))
    assert (viewer.admin, viewer.role("any"), viewer.may(Role.OWNER, "any")) == (
        True, Role.OWNER, True)


def test_viewer_checks_roles() -> None:
    """A user's viewer sees and may act per their role on each host."""
    viewer = Viewer(Directory(USERS, HOSTS), "mike", "bearer")
    assert (viewer.admin, viewer.sees("web1"), viewer.sees("db1")) == (False, True, False)
    assert (viewer.may(Role.MANAGER, "web1"), viewer.may(Role.OWNER, "web1")) == (True, False)


def test_user_json_hides_the_hash() -> None:
    """The API shape of a user says whether a password is set, never the hash."""
    body = user_json("olga", UserConfig(full_name="Olga", password="pbkdf2:sha256:1$s$h"))
    assert body == {"name": "olga", "full_name": "Olga", "avatar": None, "admin": False,
                    "email": None, "notification_channels": [], "pushover_user": None,
                    "mattermost_user": None,
                    "signal_number": None, "has_password": True}


def test_deleted_owner_hands_host_to_default_owner() -> None:
    """When a host's owner (config or API) is deleted, the default owner owns it."""
    directory = Directory(USERS, HOSTS)
    directory.set_access("db1", HostAccess("mike", ("olga",), ()))
    directory.delete_user("olga")
    directory.delete_user("mike")
    assert directory.access("web1") == HostAccess("ann", ("mike",), ("nina",), "config")
    assert directory.access("db1") == HostAccess("ann", ("olga",), (), "api")


def test_reload_replaces_the_stored_changes_whole() -> None:
    """Another server changed users and access lists: what the store holds now replaces
    what this one held (a user it deleted is gone, an access list it reset is the
    config's again), unlike a restart's restore, which only adds."""
    directory = Directory(USERS, HOSTS)
    directory.put_user("carl", UserConfig(full_name="Carl"))
    directory.set_access("web1", HostAccess("carl", (), ()))
    assert directory.role("carl", "web1") is Role.OWNER
    directory.reload({"dora": UserConfig(), "nina": None},
                     {"db1": HostAccess("dora", (), (), "api")})
    assert (directory.user("carl"), directory.user("nina")) == (None, None)
    assert directory.access("web1") == HostAccess("olga", ("mike",), ("nina",), "config")
    assert (directory.role("dora", "db1"), directory.user_source("dora")) == (Role.OWNER, "api")


def _every_role(directory: Directory, user: str, hosts: list[str]) -> dict[str, Role | None]:
    """``user``'s role on each of ``hosts`` as :meth:`Directory.roles` tells it."""
    default, differs = directory.roles(user, set(hosts).__contains__)
    return {host: differs.get(host, default) if host in differs else default for host in hosts}


NAMES = st.sampled_from(["ann", "olga", "mike", "nina", "zoe", "carl"])
HOST_NAMES = st.sampled_from(["web1", "db1", "new1", "new2", "mail1"])
ACCESS = st.builds(lambda owner, managers, monitors: HostAccess(owner, tuple(managers),
                                                                tuple(monitors)),
                   st.none() | NAMES, st.lists(NAMES, max_size=2), st.lists(NAMES, max_size=2))


@settings(max_examples=300, deadline=None)
@given(default_owner=st.none() | NAMES,
       config=st.dictionaries(HOST_NAMES, ACCESS, max_size=3),
       changes=st.dictionaries(HOST_NAMES, ACCESS, max_size=3),
       deleted=st.lists(NAMES, max_size=3), known=st.lists(HOST_NAMES, max_size=5),
       user=NAMES)
def test_roles_tell_every_hosts_role(*, default_owner: str | None,
                                     config: dict[str, HostAccess],
                                     changes: dict[str, HostAccess], deleted: list[str],
                                     known: list[str], user: str) -> None:
    """The default role and the hosts where it differs give, for every known host, the
    role :meth:`Directory.role` gives: admins, the default owner, a deleted owner's
    hosts, API lists over the config's, hosts no list names; and the hosts a viewer sees
    are those it would see asking each host."""
    hosts = {name: HostConfig(owner=a.owner, managers=list(a.managers),
                              monitors=list(a.monitors)) for name, a in config.items()}
    directory = Directory(USERS | {"carl": UserConfig()}, hosts, default_owner=default_owner)
    for host, access in changes.items():
        directory.set_access(host, access)
    for name in deleted:
        directory.delete_user(name)
    everyone = sorted(set(known))
    assert _every_role(directory, user, everyone) == {
        host: directory.role(user, host) for host in everyone}
    default, differs = directory.roles(user, set(known).__contains__)
    assert set(differs) <= set(known) & (config.keys() | changes.keys())
    assert all(role is not default for role in differs.values())
    viewer = Viewer(directory, user, "bearer")
    assert list(viewer.visible(everyone, set(known).__contains__)) == [
        host for host in everyone if viewer.sees(host)]


def test_roles_name_no_host_for_an_admin_and_few_for_the_default_owner() -> None:
    """At any fleet size an admin's roles are "owner" and no host, and the default
    owner's name only the hosts whose lists give them another role."""
    fleet = {f"host{n:05d}" for n in range(10_000)} | {"web1", "db1", "mail1"}
    hosts = {**HOSTS, "mail1": HostConfig(owner="olga"), "gone1": HostConfig(owner="olga")}
    directory = Directory(USERS, hosts, default_owner="mike")
    assert directory.roles("ann", fleet.__contains__) == (Role.OWNER, {})
    assert directory.roles("mike", fleet.__contains__) == (
        Role.OWNER, {"mail1": None, "web1": Role.MANAGER})
    assert directory.roles("olga", fleet.__contains__) == (
        None, {"db1": Role.MANAGER, "mail1": Role.OWNER, "web1": Role.OWNER})
    assert directory.roles("ghost", fleet.__contains__) == (None, {})
    assert Viewer(Directory({}, {})).roles(fleet.__contains__) == (Role.OWNER, {})


def _privileged_by_walk(directory: Directory, config: dict[str, HostConfig], user: str) -> bool:
    """:meth:`Directory.privileged` as a walk of every list in force."""
    found = directory.user(user)
    if found is None:
        return False
    if found.admin or user == directory.default_owner:
        return True
    hosts = set(config) | {h for h in HOST_NAME_LIST if directory.access_change(h)}
    lists = [directory.access_change(h) or HostAccess(config[h].owner, tuple(config[h].managers))
             for h in hosts]
    return any(user == a.owner or user in a.managers for a in lists)


HOST_NAME_LIST = ["web1", "db1", "new1", "new2", "mail1"]
OPERATION = st.one_of(
    st.tuples(st.just("set"), HOST_NAMES, ACCESS),
    st.tuples(st.just("reset"), HOST_NAMES, st.none()),
    st.tuples(st.just("delete"), NAMES, st.none()),
    st.tuples(st.just("put"), NAMES, st.booleans()))


@settings(max_examples=300, deadline=None)
@given(default_owner=st.none() | NAMES,
       config=st.dictionaries(HOST_NAMES, ACCESS, max_size=4),
       operations=st.lists(OPERATION, max_size=8))
def test_roles_privilege_and_recipients_follow_every_change(
        *, default_owner: str | None, config: dict[str, HostAccess],
        operations: list[tuple[str, str, Any]]) -> None:
    """Asked between changes of lists and users, each user's roles, whether they are
    privileged and who hears of each host are what a walk of the lists in force and of
    the users gives: what the directory keeps of them follows every change."""
    hosts = {name: HostConfig(owner=a.owner, managers=list(a.managers),
                              monitors=list(a.monitors)) for name, a in config.items()}
    directory = Directory(USERS | {"carl": UserConfig()}, hosts, default_owner=default_owner)
    router = Router(ServerConfig(hosts=hosts), ["email"], directory)
    everyone = HOST_NAME_LIST
    for op, name, arg in [("ask", "", None), *operations]:
        if op == "set":
            directory.set_access(name, arg)
        elif op == "reset":
            directory.reset_access(name)
        elif op == "delete":
            directory.delete_user(name)
        elif op == "put":
            directory.put_user(name, UserConfig(admin=arg))
        for user in ["ann", "olga", "mike", "nina", "zoe", "carl"]:
            assert _every_role(directory, user, everyone) == {
                host: directory.role(user, host) for host in everyone}
            assert directory.privileged(user) is _privileged_by_walk(directory, hosts, user)
        for host in everyone:
            access = directory.access(host)
            assert router.concerned(host) == [
                n for n, u in directory.users.items()
                if u.admin or n == access.owner or n in access.managers]
