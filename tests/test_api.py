"""The read API under /api/0, in memory through treq's StubTreq."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from heartbeat.events import EventBus
from heartbeat.server.access import Directory
from heartbeat.server.auth import AuthService, PasswordHasher
from heartbeat.server.compose import wire
from heartbeat.server.journal import JournalFile, JournalService
from heartbeat.server.registry import Registry
from heartbeat.server.serial import ImmediateWorker
from heartbeat.server.store import HostRecorder, StoreService, open_sqlite
from heartbeat.server.web.api import HeartbeatAPI
from heartbeat.server.web.app import WebRoot
from heartbeat.server.web.auth import WebAuth
from heartbeat.server.web.websocket import EventHub, FeedFactory

BASE = "http://heartbeat.test"


def result(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "Deferred did not fire"
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


class Server:
    """The API wired as tap.py does, over in-memory workers and a Clock."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.bus = EventBus(on_error=lambda s, e, x: None)
        self.registry = Registry(grace=5, default_interval=10)
        self.store = StoreService(open_sqlite(tmp_path / "s.sqlite3"),
                                  ImmediateWorker(), self.clock)
        recorder = HostRecorder(self.registry, self.store, 1e9, 100)
        self.journal_file = JournalFile(tmp_path, "j", 1_000_000, 1)
        self.journal = JournalService(self.journal_file, ImmediateWorker(), self.clock)
        wire(self.bus, recorder=recorder, journal=self.journal)
        no_users = AuthService(Directory({}, {}), self.store, PasswordHasher(ImmediateWorker()),
                               self.clock, idle_timeout=3600.0)
        self.api = HeartbeatAPI(self.registry, self.store, self.journal, self.clock,
                                {"extra": lambda: {"answer": 42}}, auth=WebAuth(no_users),
                                bus=self.bus)
        hub = EventHub(self.registry)
        self.treq = StubTreq(WebRoot(self.api, FeedFactory(hub)).app.resource())

    def receive(self, message: dict[str, Any], addr: str = "10.0.0.1") -> None:
        from heartbeat.events import RECEIVED, Event

        now = self.clock.seconds()
        self.bus.publish(Event(RECEIVED, message["name"], now, {
            "message": message, "source_ip": addr, "source_port": 4000}))
        self.bus.publish_all(self.registry.apply(message, (addr, 4000), now).events)

    def get(self, path: str) -> tuple[int, Any, str]:
        response = result(self.treq.get(BASE + path))
        body = result(self.treq.content(response))
        content_type = response.headers.getRawHeaders(b"content-type", [b""])[0].decode()
        return response.code, json.loads(body), content_type


@pytest.fixture
def server(tmp_path: Path) -> Any:
    server = Server(tmp_path)
    yield server
    server.journal_file.close()


class HostsTests:
    def test_empty(self, server: Server) -> None:
        """No hosts yet: an empty JSON list."""
        assert server.get("/api/0/hosts") == (200, {"hosts": []}, "application/json")

    def test_list_sorted_with_reference_fields(self, server: Server) -> None:
        """Hosts are listed by name with the documented fields."""
        server.receive({"ID": "HTB", "name": "b", "interval": 5, "rtt": 1.0, "version": "9"})
        server.receive({"ID": "MSG", "name": "a", "text": "x"})
        _status, body, _ = server.get("/api/0/hosts")
        assert [h["name"] for h in body["hosts"]] == ["a", "b"]
        assert body["hosts"][1] == {
            "name": "b", "state": "UP", "addr": "10.0.0.1", "port": 4000, "last_seen": 1000.0,
            "since": 1000.0, "first_seen": 1000.0, "interval": 5.0, "rtt": 1.0, "version": "9",
            "boot_time": None, "down_reason": None, "watch": True, "plugins": [],
            "pending_commands": 0, "signed": False, "key_id": None, "role": "owner",
            "description": "", "tags": [], "latest_message": None, "parents": [],
            "flapping": False, "recovering": None, "in_maintenance": False, "maintenance": [],
            "silenced_by": None, "acknowledged": None, "markers": [],
            "alerts": {"CRITICAL": 0, "WARNING": 0, "UNKNOWN": 0}, "alert_level": None}
        assert body["hosts"][0]["latest_message"] == {
            "ts": 1000.0, "message": {"ID": "MSG", "text": "x"}}

    def test_unknown_host_is_json_404(self, server: Server) -> None:
        """An unknown host answers 404 with a JSON error."""
        assert server.get("/api/0/hosts/nope") == (
            404, {"error": "not_found", "detail": "no host named 'nope'"}, "application/json")

    def test_detail_has_commands_and_results(self, server: Server) -> None:
        """Host detail adds pending commands and recent results."""
        server.receive({"ID": "HTB", "name": "h"})
        command, _ = server.registry.queue_command("h", "CMD", {"cmd": "x", "args": []}, 1.0)
        _, body, _ = server.get("/api/0/hosts/h")
        assert body["pending"] == [command.to_json()]
        assert body["results"] == []


class PluginTests:
    def test_latest_and_history(self, server: Server) -> None:
        """Latest data per plugin with its time; history newest first, limited."""
        for n in range(3):
            server.receive({"ID": "PLG", "name": "h", "plugins": {"cpu": {"v": n}}})
            server.clock.advance(10)
        _, latest, _ = server.get("/api/0/hosts/h/plugins")
        assert latest == {"host": "h", "plugins": {"cpu": {"ts": 1020.0, "data": {"v": 2}}}}
        _, history, _ = server.get("/api/0/hosts/h/plugins/cpu?limit=2")
        assert history == {"host": "h", "plugin": "cpu", "samples": [
            {"ts": 1020.0, "data": {"v": 2}}, {"ts": 1010.0, "data": {"v": 1}}]}

    @pytest.mark.parametrize("query", ["limit=0", "limit=x", "limit=10001"])
    def test_bad_limit_is_400(self, server: Server, query: str) -> None:
        """A limit that is not an integer in range is a 400 naming it."""
        server.receive({"ID": "PLG", "name": "h", "plugins": {"cpu": {}}})
        status, body, _ = server.get(f"/api/0/hosts/h/plugins/cpu?{query}")
        assert (status, body["error"]) == (400, "bad_request")
        assert "limit" in body["detail"]

    def test_unknown_plugin_is_404(self, server: Server) -> None:
        """A plugin the host never sent is a 404."""
        server.receive({"ID": "HTB", "name": "h"})
        assert server.get("/api/0/hosts/h/plugins/zfs")[0] == 404


class MessagesAndStatusTests:
    def test_messages_newest_first_filtered(self, server: Server) -> None:
        """Recent journaled messages, newest first, optionally for one host."""
        for n, name in enumerate(["a", "b", "a"]):
            server.receive({"ID": "MSG", "name": name, "text": str(n)})
        _, body, _ = server.get("/api/0/messages?host=a&limit=5")
        assert [m["message"]["text"] for m in body["messages"]] == ["2", "0"]
        _, body, _ = server.get("/api/0/messages?limit=1")
        assert [m["message"]["text"] for m in body["messages"]] == ["2"]

    def test_messages_filtered_by_type(self, server: Server) -> None:
        """?types= keeps only messages of those IDs (case-insensitive); others are a 400."""
        server.receive({"ID": "BOOT", "name": "a"})
        for n in range(3):
            server.receive({"ID": "HTB", "name": "a", "rtt": 1.0})
            server.receive({"ID": "PLG", "name": "a", "plugins": {"MSG": {"x": n}}})
        server.receive({"ID": "MSG", "name": "b", "text": "HTB"})
        server.receive({"ID": "HTB", "name": "b"})
        _, body, _ = server.get("/api/0/messages?types=MSG,boot&types=SHUT")
        assert [(m["message"]["name"], m["message"]["ID"]) for m in body["messages"]] == [
            ("b", "MSG"), ("a", "BOOT")]
        _, body, _ = server.get("/api/0/messages?types=MSG&host=a")
        assert body["messages"] == []
        assert server.get("/api/0/messages?types=ALERT")[:2] == (400, {
            "error": "bad_request",
            "detail": "types must be one or more of BOOT, HTB, JOB, MSG, PLG, RES, SHUT"})

    def test_status(self, server: Server) -> None:
        """Status has version, uptime, host counts and each service's section."""
        server.receive({"ID": "HTB", "name": "a"})
        server.clock.advance(5)
        _, body, _ = server.get("/api/0/status")
        assert (body["uptime"], body["hosts"], body["extra"]) == (
            5.0, {"total": 1, "UP": 1, "DOWN": 0, "UNKNOWN": 0, "UNREACHABLE": 0}, {"answer": 42})

    def test_unknown_api_path_is_json_404(self, server: Server) -> None:
        """Unknown paths under /api answer a JSON 404."""
        status, body, _ = server.get("/api/0/nothing/here")
        assert (status, body["error"]) == (404, "not_found")
