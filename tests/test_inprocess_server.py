"""The real makeService tree in process (memory reactor, fake sockets, no threads): datagrams
in, store, journal, feed and API out; the subscription table as documented; ordered stop."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from heartbeat.events import HOST_PLUGINS
from heartbeat.server.compose import SUBSCRIPTIONS, subscription_table
from tests.memserver import START, InProcessServer

ROOT = Path(__file__).resolve().parent.parent


def test_datagrams_flow_through_the_whole_tree(tmp_path: Path) -> None:
    """A heartbeat, plugin data and a message reach the ACK, the feed, the API, the store and
    the journal of the tree twistd runs; stopping it leaves nothing scheduled."""
    server = InProcessServer(tmp_path)
    feed, pump = server.feed()
    server.send({"ID": "HTB", "name": "web1", "interval": 30, "rtt": 1.5})
    server.send({"ID": "PLG", "name": "web1", "plugins": {"cpu_monitor": {"cpu_percent": 5}}})
    server.send({"ID": "MSG", "name": "web1", "text": "hello"})
    assert server.udp_transport.written == [
        (b'{"ID":"ACK","server_ts":%.1f}' % START, ("192.0.2.1", 40000))]
    server.reactor.advance(0)  # the feed's flush: events go out in one write per turn
    pump.flush()
    assert [(m["type"], m.get("host")) for m in feed] == [
        ("snapshot", None), ("message", "web1"), ("host.new", "web1"),
        ("host.address", "web1"), ("host.up", "web1"), ("message", "web1"),
        ("host.plugins", "web1"), ("message", "web1"), ("host.msg", "web1")]
    status, body = server.http("GET", "/api/0/hosts")
    assert (status, [(h["name"], h["state"], h["rtt"], h["plugins"]) for h in body["hosts"]]) \
        == (200, [("web1", "UP", 1.5, ["cpu_monitor"])])

    server.reactor.advance(1.0)  # past the store's and the journal's flush intervals
    with sqlite3.connect(server.store_path) as db:
        assert db.execute("SELECT name, state FROM hosts").fetchall() == [("web1", "UP")]
        assert db.execute("SELECT host, plugins FROM plugin_history").fetchall() == [
            ("web1", ",cpu_monitor,")]
    journal = Path(server.config.journal_dir) / server.config.journal_file
    lines = [json.loads(line) for line in journal.read_bytes().splitlines()]
    assert [line["message"]["ID"] if "message" in line else line["event"]["type"]
            for line in lines] == ["HTB", "host.new", "host.address", "host.up", "PLG", "MSG",
                                   "host.msg"]

    server.stop()
    assert server.service.stopped == [  # type: ignore[attr-defined]
        "hangup", "websocket-0", "web", "ingest", "status-pages", "jobs", "monitor",
        "operations", "alerting",
        "journal", "auth", "store", "collector"]
    assert [c for c in server.reactor.getDelayedCalls() if c.active()] == []


def test_subscriptions_follow_the_table(tmp_path: Path) -> None:
    """The bus is subscribed by SUBSCRIPTIONS and nothing else: each kind's subscribers are
    the table's rows for it, in the table's order (parts the config leaves out skipped)."""
    server = InProcessServer(tmp_path, keys={"fleet": "k" * 32})
    parts = server.parts
    rows = [row for row in SUBSCRIPTIONS if row.part not in ("notifier", "dns")]
    assert [name for name, _ in parts.subscribed] == [f"{r.part}.{r.handler}" for r in rows]
    routes = [(kind, None) for kind in ("message", "host.new", "host.removed", HOST_PLUGINS,
                                        "alert", "notify.sent")]
    routes += [("message", message_id) for message_id in ("HTB", "PLG", "JOB", "MSG", "XYZ")]
    for kind, message_id in routes:
        assert parts.bus.subscribers(kind, message_id) == [
            getattr(getattr(parts, row.part), row.handler) for row in rows
            if (kind in row.kinds if row.kinds is not None else kind not in row.exclude)
            and (row.ids is None or message_id in row.ids)]
    server.stop()


def test_architecture_document_shows_the_table() -> None:
    """docs/ARCHITECTURE.md holds the subscription table exactly as the code has it."""
    assert subscription_table() in (ROOT / "docs" / "ARCHITECTURE.md").read_text()
