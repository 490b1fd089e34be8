"""Every endpoint against every role: allowed, refused (403) or invisible (404)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from heartbeat.config.server import HostConfig
from heartbeat.server.access import Role
from tests.apistack import Stack, user

VIEWERS = {
    "admin": Role.OWNER,  # admin flag: owner-level on every host
    "owner1": Role.OWNER,
    "mgr": Role.MANAGER,
    "mon": Role.MONITOR,
    "stranger": None,
}

# (method, path, body, role needed, status when allowed)
HOST_ENDPOINTS: list[tuple[str, str, Any, Role, int]] = [
    ("GET", "/api/0/hosts/web1", None, Role.MONITOR, 200),
    ("GET", "/api/0/hosts/web1/plugins", None, Role.MONITOR, 200),
    ("GET", "/api/0/hosts/web1/plugins/cpu_monitor?limit=5", None, Role.MONITOR, 200),
    ("GET", "/api/0/messages?host=web1", None, Role.MONITOR, 200),
    ("GET", "/api/0/hosts/web1/alerts", None, Role.MONITOR, 200),
    ("GET", "/api/0/hosts/web1/thresholds", None, Role.MONITOR, 200),
    ("POST", "/api/0/hosts/web1/commands", {"cmd": "uptime", "args": ["-p"]}, Role.MANAGER, 202),
    ("POST", "/api/0/hosts/web1/upgrade", {"version": "1.2"}, Role.MANAGER, 202),
    ("POST", "/api/0/hosts/web1/dns", None, Role.MANAGER, 202),
    ("GET", "/api/0/hosts/web1/access", None, Role.OWNER, 200),
    ("PUT", "/api/0/hosts/web1/access",
     {"owner": "owner1", "managers": ["mgr"], "monitors": ["mon", "stranger"]}, Role.OWNER, 200),
    ("DELETE", "/api/0/hosts/web1/access", None, Role.OWNER, 200),
    ("POST", "/api/0/hosts/web1/owner", {"owner": "mgr"}, Role.OWNER, 200),
    ("DELETE", "/api/0/hosts/web1", None, Role.OWNER, 200),
]

ADMIN_ENDPOINTS: list[tuple[str, str, Any, int]] = [
    ("GET", "/api/0/users", None, 200),
    ("POST", "/api/0/users", {"name": "newbie", "password": "newbie-password"}, 201),
    ("GET", "/api/0/users/mon", None, 200),
    ("PUT", "/api/0/users/mon", {"full_name": "Mona Itor"}, 200),
    ("DELETE", "/api/0/users/mon", None, 200),
]


@pytest.fixture
def stack(tmp_path: Any) -> Iterator[Stack]:
    dns_calls: list[str] = []
    stack = Stack(
        tmp_path,
        users={name: user(f"{name}-password", admin=name == "admin") for name in VIEWERS},
        hosts={"web1": HostConfig(owner="owner1", managers=["mgr"], monitors=["mon"])},
        dns_trigger=dns_calls.append,
        journal=True,
    )
    stack.dns_calls = dns_calls  # type: ignore[attr-defined]
    for name in ("web1", "db1"):
        stack.heartbeat(name)
        stack.send({"ID": "PLG", "name": name, "plugins": {"cpu_monitor": {"cpu_percent": 5}}})
    yield stack
    stack.close()


def _expected(held: Role | None, needed: Role, ok: int) -> int:
    if held is None:
        return 404
    return ok if held >= needed else 403


HOST_IDS = [f"{m} {p}" for m, p, *_ in HOST_ENDPOINTS]
ADMIN_IDS = [f"{m} {p}" for m, p, *_ in ADMIN_ENDPOINTS]


@pytest.mark.parametrize("viewer", list(VIEWERS))
@pytest.mark.parametrize("endpoint", HOST_ENDPOINTS, ids=HOST_IDS)
def test_host_endpoint_by_role(stack: Stack, viewer: str, endpoint: tuple[Any, ...]) -> None:
    """A host endpoint answers its role and above, 403 below it, 404 with no role at all."""
    method, path, body, needed, ok = endpoint
    token = stack.token(viewer)
    response = stack.call(method, path, body, token=token)
    expected = _expected(VIEWERS[viewer], needed, ok)
    assert response.status == expected, response
    if expected == 404:
        assert response.json == {"error": "not_found", "detail": "no host named 'web1'"}
    if expected == 403:
        assert response.json["error"] == "forbidden"


@pytest.mark.parametrize("endpoint", HOST_ENDPOINTS, ids=HOST_IDS)
def test_host_endpoint_refuses_anonymous(stack: Stack, endpoint: tuple[Any, ...]) -> None:
    """Without a token or cookie every host endpoint is 401 with a Bearer challenge."""
    method, path, body, *_ = endpoint
    response = stack.call(method, path, body)
    assert (response.status, response.json["error"]) == (401, "unauthenticated")
    assert response.header("WWW-Authenticate") == 'Bearer realm="heartbeat"'


@pytest.mark.parametrize("viewer", list(VIEWERS))
@pytest.mark.parametrize("endpoint", ADMIN_ENDPOINTS, ids=ADMIN_IDS)
def test_user_endpoint_by_role(stack: Stack, viewer: str, endpoint: tuple[Any, ...]) -> None:
    """User management is for admins; everyone else gets 403 (mon may edit only itself)."""
    method, path, body, ok = endpoint
    response = stack.call(method, path, body, token=stack.token(viewer))
    self_edit = viewer == "mon" and method == "PUT"
    expected = ok if viewer == "admin" or self_edit else 403
    assert response.status == expected, response


@pytest.mark.parametrize("endpoint", ADMIN_ENDPOINTS, ids=ADMIN_IDS)
def test_user_endpoint_refuses_anonymous(stack: Stack, endpoint: tuple[Any, ...]) -> None:
    """User management without a login is 401."""
    method, path, body, _ = endpoint
    assert stack.call(method, path, body).status == 401


def test_host_list_is_filtered_by_role(stack: Stack) -> None:
    """Each user lists exactly the hosts they hold a role on, with that role."""
    seen = {}
    for viewer in VIEWERS:
        hosts = stack.call("GET", "/api/0/hosts", token=stack.token(viewer)).json["hosts"]
        seen[viewer] = [(h["name"], h["role"]) for h in hosts]
    assert seen == {
        "admin": [("db1", "owner"), ("web1", "owner")],
        "owner1": [("web1", "owner")],
        "mgr": [("web1", "manager")],
        "mon": [("web1", "monitor")],
        "stranger": [],
    }


def test_default_owner_owns_unconfigured_hosts(tmp_path: Any) -> None:
    """A host with no owner in the config belongs to default_owner (here not an admin)."""
    stack = Stack(tmp_path, users={"boss": user("boss-password", admin=True),
                                   "keeper": user("keeper-password")},
                  default_owner="keeper")
    stack.heartbeat("new1")
    response = stack.call("GET", "/api/0/hosts/new1/access", token=stack.token("keeper"))
    assert response.json == {"host": "new1", "owner": "keeper", "managers": [], "monitors": [],
                             "source": "config"}
    stack.close()


def test_messages_are_filtered_by_role(stack: Stack) -> None:
    """/messages without ?host= returns only messages of hosts the user may see."""
    for viewer, names in (("admin", {"web1", "db1"}), ("mon", {"web1"}), ("stranger", set())):
        messages = stack.call("GET", "/api/0/messages", token=stack.token(viewer)).json
        assert {m["message"]["name"] for m in messages["messages"]} == names, viewer


def test_messages_of_invisible_host_is_404(stack: Stack) -> None:
    """Asking for the messages of a host one cannot see is a 404, like an unknown host."""
    response = stack.call("GET", "/api/0/messages?host=db1", token=stack.token("mon"))
    assert (response.status, response.json) == (
        404, {"error": "not_found", "detail": "no host named 'db1'"})


def test_status_counts_only_visible_hosts(stack: Stack) -> None:
    """A non-admin's status counts the hosts they can see; an admin's counts all."""
    counts = {viewer: stack.call("GET", "/api/0/status", token=stack.token(viewer))
              .json["hosts"] for viewer in ("admin", "mon", "stranger")}
    assert counts == {
        "admin": {"total": 2, "UNKNOWN": 0, "UP": 2, "DOWN": 0, "UNREACHABLE": 0},
        "mon": {"total": 1, "UNKNOWN": 0, "UP": 1, "DOWN": 0, "UNREACHABLE": 0},
        "stranger": {"total": 0, "UNKNOWN": 0, "UP": 0, "DOWN": 0, "UNREACHABLE": 0},
    }


def test_me_lists_roles(stack: Stack) -> None:
    """/me names the user, how they authenticated and their role on each visible host."""
    body = stack.call("GET", "/api/0/me", token=stack.token("mgr")).json
    assert {k: body[k] for k in ("name", "admin", "auth", "authentication", "default_role",
                                 "roles", "has_password")} == {
        "name": "mgr", "admin": False, "auth": "bearer", "authentication": True,
        "default_role": None, "roles": {"web1": "manager"}, "has_password": True}
    assert "password" not in body


def test_me_tells_each_role_in_a_size_that_does_not_grow_with_the_fleet(stack: Stack) -> None:
    """With 990 more hosts, an admin's /me names no host (owner of every one) and a
    user's names only the hosts their lists give them; what /me implies for each host is
    the role the host list shows the same user (and no role for a host it leaves out)."""
    for n in range(990):  # max_unconfigured_hosts is 1,000
        stack.heartbeat(f"host{n:05d}")
    assert len(stack.registry) == 992
    admin = stack.call("GET", "/api/0/me", token=stack.token("admin")).json
    assert (admin["default_role"], admin["roles"]) == ("owner", {})
    assert len(stack.call("GET", "/api/0/me", token=stack.token("admin")).raw) < 1000
    for name in VIEWERS:
        me = stack.call("GET", "/api/0/me", token=stack.token(name)).json
        listed = stack.call("GET", "/api/0/hosts", token=stack.token(name)).json["hosts"]
        shown = {host["name"]: host["role"] for host in listed}
        implied = {host.name: me["roles"].get(host.name, me["default_role"])
                   for host in stack.registry}
        assert {host: role for host, role in implied.items() if role is not None} == shown
        assert len(shown) in (0, 1, 992)
        status = stack.call("GET", "/api/0/status", token=stack.token(name)).json
        assert status["hosts"]["total"] == len(shown)


def test_status_and_messages_of_a_default_owner_leave_out_only_what_others_own(
        tmp_path: Any, monkeypatch: Any) -> None:
    """A non-admin default owner sees every host but those another user owns: its status
    counts and its messages say so, worked out from its roles, not by walking the fleet."""
    stack = Stack(tmp_path, users={"root": user("root-password", admin=True),
                                   "olga": user("olga-password")},
                  hosts={"mail1": HostConfig(owner="root")}, default_owner="olga",
                  journal=True)
    try:
        for n in range(40):
            stack.heartbeat(f"host{n:02d}")
            stack.send({"ID": "MSG", "name": f"host{n:02d}", "text": "hello"})
        stack.heartbeat("mail1")
        stack.send({"ID": "MSG", "name": "mail1", "text": "root's only"})
        stack.send({"ID": "SHUT", "name": "host07"})
        stack.clock.advance(2.0)
        olga = stack.token("olga")
        monkeypatch.setattr(type(stack.registry), "__iter__", lambda self: iter(()))
        status = stack.call("GET", "/api/0/status", token=olga).json["hosts"]
        assert (status["total"], status["UP"], status["DOWN"]) == (40, 39, 1)
        messages = stack.call("GET", "/api/0/messages?types=MSG&limit=500", token=olga).json
        assert {m["message"]["name"] for m in messages["messages"]} == {
            f"host{n:02d}" for n in range(40)}
        root = stack.call("GET", "/api/0/status", token=stack.token("root")).json["hosts"]
        assert root["total"] == 41
    finally:
        stack.close()


@pytest.mark.parametrize("query", ["", "?limit=10", "?limit=10&state=UP", "?q=web",
                                   "?limit=5&q=eb1&state=UP", "?alerting=CRITICAL"])
def test_a_users_host_list_looks_only_at_their_hosts(stack: Stack, monkeypatch: Any,
                                                     query: str) -> None:
    """A monitor of web1 among 500 more hosts: the list, paged or filtered, is made from
    the hosts its roles name, without a walk of the fleet's names; an admin's is not."""
    for n in range(500):
        stack.heartbeat(f"web{n + 100:04d}")
    expected = [] if "alerting" in query else ["web1"]
    monkeypatch.setattr(type(stack.registry), "names", lambda self: 1 / 0)
    body = stack.call("GET", f"/api/0/hosts{query}", token=stack.token("mon")).json
    assert [host["name"] for host in body["hosts"]] == expected
    if "limit" in query:
        assert (body["total"], body["next"]) == (len(expected), None)
    admin = stack.call("GET", f"/api/0/hosts{query or '?limit=10'}", token=stack.token("admin"))
    assert admin.status == 500 or "alerting" in query or "q=" in query
