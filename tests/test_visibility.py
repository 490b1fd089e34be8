"""What a user who is not an admin may learn of hosts and of the server beyond their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heartbeat.config.server import HostConfig
from tests.apistack import Stack, user

RTT_RULE = {"warning": 100, "critical": 500}
THRESHOLDS = {"rtt": {"*": RTT_RULE, "secret-db": {"warning": 5, "critical": 9},
                      "web1": {"warning": 50, "critical": 90}}}
PROFILES = {"lan": {"thresholds": {"rtt": {"secret-vault": {"warning": 1, "critical": 2}}}}}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(
        tmp_path, users={"admin": user("admin-password", admin=True),
                         "mon": user("mon-password")},
        hosts={"web1": HostConfig(monitors=["mon"], threshold_config="lan"),
               "secret-db": HostConfig(), "secret-vault": HostConfig(threshold_config="lan")},
        thresholds=THRESHOLDS, threshold_configs=PROFILES)
    for name in ("web1", "secret-db", "secret-vault"):
        stack.heartbeat(name)
    yield stack
    stack.close()


def _get(stack: Stack, path: str, who: str) -> Any:
    response = stack.call("GET", path, token=stack.login(who).json["token"])
    assert response.status == 200, response
    return response.json


def test_thresholds_name_only_hosts_the_caller_sees(stack: Stack) -> None:
    """GET /api/0/thresholds names no host a monitor cannot see, in the RTT rules by host
    of the base or of a profile, nor among the profiles' users; an admin gets them all."""
    mon = _get(stack, "/api/0/thresholds", "mon")
    admin = _get(stack, "/api/0/thresholds", "admin")
    assert (sorted(mon["thresholds"]["rtt"]), mon["profiles"]["lan"]["rtt"], mon["hosts"]) \
        == (["*", "web1"], {}, {"web1": ["lan"]})
    assert (sorted(admin["thresholds"]["rtt"]), sorted(admin["profiles"]["lan"]["rtt"]),
            admin["hosts"]) == (["*", "secret-db", "web1"], ["secret-vault"],
                                {"web1": ["lan"], "secret-vault": ["lan"]})
    assert "secret" not in repr(mon)


def test_a_hosts_thresholds_hold_only_its_own_rtt_rule(stack: Stack) -> None:
    """GET /api/0/hosts/X/thresholds shows X's RTT rule and the catch-all, never the RTT
    rules of other hosts that X's profiles or the base name (for admins neither)."""
    for who in ("mon", "admin"):
        rtt = _get(stack, "/api/0/hosts/web1/thresholds", who)["thresholds"]["rtt"]
        assert sorted(rtt) == ["*", "web1"]
    vault = _get(stack, "/api/0/hosts/secret-vault/thresholds", "admin")["thresholds"]["rtt"]
    assert sorted(vault) == ["*", "secret-vault"]


def test_status_gives_a_non_admin_only_their_hosts(stack: Stack) -> None:
    """GET /api/0/status: a non-admin gets the version, uptime, their hosts and their
    active alerts; the server's counters (users, sessions, logins, datagrams, store,
    HTTP...) are for admins."""
    mon = _get(stack, "/api/0/status", "mon")
    admin = _get(stack, "/api/0/status", "admin")
    assert sorted(mon) == ["alerting", "hosts", "started", "uptime", "version"]
    assert mon["alerting"] == {"active": {"CRITICAL": 0, "WARNING": 0, "UNKNOWN": 0}}
    assert mon["hosts"]["total"] == 1
    assert {"auth", "ingest", "store", "http", "websocket"} <= set(admin)
    assert admin["auth"]["users"] == 2
