"""Odd datagrams against the real twistd: the store keeps committing, the feed keeps taking
clients and a host heard afterwards survives a restart (issue 12)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fuzz.odd_datagrams import ACCEPTED_HOSTS, ODD_DATAGRAMS

from heartbeat.text import text_problem
from tests.support import ServerProcess, WebSocketClient, wait_until

pytestmark = pytest.mark.integration


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not strict JSON")


def _strict(line: bytes) -> Any:
    """``line`` read as a strict reader does: UTF-8, no NaN, no lone surrogate, even in
    a repeated key's shadowed value."""
    every_value = json.loads(line.decode("utf-8"), parse_constant=_refuse_constant,
                             object_pairs_hook=lambda pairs: [v for _, v in pairs])
    assert text_problem(every_value) is None, line[:200]
    return json.loads(line)


def _snapshot_names(port: int) -> set[str]:
    """The host names a new feed client is sent in its snapshot (all of its pages)."""
    client = WebSocketClient(port)
    try:
        assert client.status == 101, client.reason
        names: set[str] = set()
        while True:
            message = client.receive()
            assert message["type"] in ("snapshot", "snapshot.more"), message
            names |= {host["name"] for host in message["hosts"]}
            if not message.get("more"):
                return names
    finally:
        client.close()


def _committed_since(server: ServerProcess, ts: float) -> dict[str, Any]:
    """Wait until the store has committed a batch taken after ``ts``; its status then."""
    return wait_until(lambda: (s := server.get("/api/0/status")["store"])
                      and (s["last_commit"] or 0) > ts and s)


def test_odd_datagrams_leave_the_server_whole(server_factory: Any, tmp_path: Path) -> None:
    """The issue's datagram and the odd battery are dropped by reason or taken whole; the
    store commits with no failure, a new WebSocket client gets the snapshot, the journal is
    strict UTF-8 JSON, and hosts heard before and after survive a restart."""
    server = server_factory()
    server.send({"ID": "HTB", "name": "before", "interval": 60})
    server.receive()
    for _, datagram, _ in ODD_DATAGRAMS:
        server.send(datagram)
    server.send({"ID": "HTB", "name": "after", "interval": 60, "version": "2.0"})
    wait_until(lambda: server.get("/api/0/status")["ingest"]["received"]
               == len(ODD_DATAGRAMS) + 2, timeout=30)
    after = server.host("after")
    assert after is not None
    store = _committed_since(server, after["last_seen"])
    assert (store["failures"], store["commits"] > 0) == (0, True)

    ingest = server.get("/api/0/status")["ingest"]
    expected = Counter(reason for _, _, reason in ODD_DATAGRAMS if reason is not None)
    assert ingest["dropped"] == dict(expected)
    names = {"before", "after", *ACCEPTED_HOSTS}
    assert {h["name"] for h in server.get("/api/0/hosts")["hosts"]} == names
    assert _snapshot_names(server.ws_port) == names
    assert server.host("nulver")["version"] == "1\x00x \U0001f600"

    server.stop()
    journal = sorted(Path(server.config["journal_dir"]).glob("messages.journal*"))
    lines = [_strict(line) for path in journal for line in path.read_bytes().splitlines()]
    journaled = Counter(e["message"]["name"] for e in lines if "message" in e)
    assert set(journaled) == names | {"u1"}

    again = server_factory(tmp_path, hb_port=server.udp_port, hbd_port=server.http_port,
                           ws_port=server.ws_port)
    assert {h["name"] for h in again.get("/api/0/hosts")["hosts"]} == names
    assert (again.host("after")["version"], again.host("shadow")["version"],
            again.host("nulver")["version"]) == ("2.0", "1.0", "1\x00x \U0001f600")
    plugins = again.get("/api/0/hosts/oddplg/plugins")["plugins"]
    assert plugins["a,b"]["data"] == {"v": 10**300, "neg": -(2**70), "tiny": 5e-324,
                                      "nul": "x\x00y"}
    assert _snapshot_names(again.ws_port) == names
    again.send({"ID": "HTB", "name": "later", "interval": 60})
    again.receive()
    later = again.host("later")
    assert _committed_since(again, later["last_seen"])["failures"] == 0
