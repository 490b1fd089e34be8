"""The real ``twistd -n heartbeat`` on a store made by the release before schema versions."""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml

from heartbeat.passwords import hash_password
from heartbeat.server.migrations import NEWEST
from heartbeat.server.store import stopped_cleanly
from tests.fixtures.store.make_store_fixture import PASSWORD, PLG_WEB1
from tests.support import TWISTD, ServerProcess, free_port, wait_until

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parent / "fixtures" / "store" / "v1.sqlite3"


def _state(tmp_path: Path) -> Path:
    """A state_dir holding a copy of the release's store."""
    state = tmp_path / "state"
    state.mkdir()
    shutil.copyfile(FIXTURE, state / "heartbeat.sqlite3")
    return state / "heartbeat.sqlite3"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _login(server: ServerProcess, name: str) -> dict[str, str]:
    status, body = server.request("POST", "/api/0/auth/login",
                                  {"username": name, "password": PASSWORD})
    assert status == 200, body
    return {"Authorization": f"Bearer {body['token']}"}


def _get(server: ServerProcess, path: str, auth: dict[str, str]) -> Any:
    status, body = server.request("GET", path, headers=auth)
    assert status == 200, body
    return body


def test_server_starts_on_the_release_store(server_factory: Any, tmp_path: Path) -> None:
    """Hosts, history, commands, users, access and alerts of the release are served as before."""
    store = _state(tmp_path)
    server = server_factory(users={"alice": {"admin": True, "password": hash_password(PASSWORD)}})
    assert (f"store: {store} (made before schema versions) upgraded from schema version 1 "
            f"to {NEWEST}") in server.log()
    alice = _login(server, "alice")
    assert [h["name"] for h in _get(server, "/api/0/hosts", alice)["hosts"]] == [
        "db1", "mail1", "web1"]
    history = _get(server, "/api/0/hosts/web1/plugins/cpu_monitor", alice)["samples"]
    assert [s["data"] for s in history] == [p["cpu_monitor"] for p in reversed(PLG_WEB1[:2])]
    assert _get(server, "/api/0/hosts/web1/plugins", alice)["plugins"]["os_info"]["data"] == (
        {"system": "Linux", "note": "Grüße ✓"})
    assert _get(server, "/api/0/hosts/db1", alice)["pending"] == [
        {"cmd_id": "6b108619-2", "kind": "UPD", "version": "0.2.0", "queued": 1796245017.3092902,
         "attempts": 0, "by": "alice"}]
    alerts = _get(server, "/api/0/alerts", alice)["alerts"]
    assert sorted((a["host"], a["metric_path"], a["level"]) for a in alerts
                  if a["kind"] == "metric") == [
        ("db1", "cpu_monitor.cpu_percent", "CRITICAL"),
        ("web1", "cpu_monitor.cpu_percent", "WARNING"),
        ("web1", "disk_monitor.partitions./.percent", "CRITICAL")]
    users = _get(server, "/api/0/users", alice)["users"]
    assert [(u["name"], u["admin"], u["source"]) for u in users] == [
        ("alice", True, "config"), ("bob", False, "api"), ("carol", True, "api"),
        ("erin", False, "api")]
    assert _get(server, "/api/0/hosts/db1/access", alice) == {
        "host": "db1", "owner": "bob", "managers": ["carol"], "monitors": ["erin"],
        "source": "api"}
    bob = _login(server, "bob")  # his password hash was only ever in the store
    assert [h["name"] for h in _get(server, "/api/0/hosts", bob)["hosts"]] == ["db1"]
    assert server.stop() in (0, -15)
    with sqlite3.connect(store) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (NEWEST,)


def _twistd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TWISTD, "-n", "--pidfile=", "heartbeat", "-c", str(config), *args],
                          capture_output=True, text=True, timeout=30, check=False,
                          cwd=config.parent)


def test_newer_store_stops_startup_with_one_line(tmp_path: Path) -> None:
    """A store of a later release ends start-up with one line naming it, and stays as it was."""
    store = _state(tmp_path)
    with sqlite3.connect(store) as conn:
        conn.execute(f"PRAGMA user_version = {NEWEST + 1}")
    conn.close()
    before = _digest(store)
    config = tmp_path / "heartbeat.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(store.parent),
                                      "journal_dir": str(tmp_path / "journal"),
                                      "hb_port": free_port(), "hbd_port": free_port(),
                                      "ws_port": None}))
    line = (f"heartbeat: state_dir: the store {store} is at schema version {NEWEST + 1}, newer "
            f"than this heartbeat (0.1.0) knows (up to {NEWEST}): run the release that made "
            f"it, or restore the backup taken before upgrading")
    for args in ((), ("--check",)):
        result = _twistd(config, *args)
        output = result.stdout + result.stderr
        assert (result.returncode != 0, output.strip().splitlines()[-1].endswith(line)) == (
            True, True), output
        assert "Traceback" not in output
    assert _digest(store) == before


def test_check_reports_the_store_version(tmp_path: Path) -> None:
    """--check says where the store stands, and creates or changes no file."""
    store = _state(tmp_path)
    before = _digest(store)
    config = tmp_path / "heartbeat.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(store.parent),
                                      "journal_dir": str(tmp_path / "journal")}))
    result = _twistd(config, "--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        f"heartbeat: store {store}: schema version 1 (made before schema versions), upgrade "
        f"to {NEWEST} due at the next start (back the file up first)"]
    assert sorted(p.name for p in store.parent.iterdir()) == ["heartbeat.sqlite3"]
    assert _digest(store) == before
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "new"),
                                      "journal_dir": str(tmp_path / "journal")}))
    result = _twistd(config, "--check")
    assert result.stdout.splitlines()[1:] == [
        f"heartbeat: store {tmp_path / 'new' / 'heartbeat.sqlite3'}: not created yet "
        f"(schema version {NEWEST} at the first start)"]
    assert not (tmp_path / "new").exists()


def _zero_history_page(store: Path) -> None:
    """Zeroes a page of ``plugin_history``: SQLite's quick_check finds it, and start-up reads
    none of it before the API answers."""
    with closing(sqlite3.connect(store)) as conn:
        (page,) = conn.execute("SELECT pageno FROM dbstat WHERE name = 'plugin_history'"
                               " LIMIT 1").fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    with store.open("r+b") as file:
        file.seek((page - 1) * size)
        file.write(bytes(size))


def test_a_clean_stop_defers_the_check_and_damage_it_finds_is_refused_next(
        server_factory: Any, tmp_path: Path) -> None:
    """A store stopped cleanly is checked once the API answers, the outcome in the status
    and the log; damage found then leaves it unmarked, and the next start refuses it."""
    store = _state(tmp_path)
    server = server_factory(users={"alice": {"admin": True, "password": hash_password(PASSWORD)}})
    alice = _login(server, "alice")
    assert _get(server, "/api/0/status", alice)["store"]["integrity"] == "ok"  # checked first
    assert "stopped cleanly" not in server.log()
    assert server.stop() in (0, -15)
    assert stopped_cleanly(store)
    _zero_history_page(store)

    server.start()
    alice = _login(server, "alice")
    assert [h["name"] for h in _get(server, "/api/0/hosts", alice)["hosts"]] == [
        "db1", "mail1", "web1"]
    found = wait_until(lambda: _get(server, "/api/0/status", alice)["store"]["integrity"]
                       not in ("pending", "checking") and server.log(), timeout=30)
    integrity = _get(server, "/api/0/status", alice)["store"]["integrity"]
    assert integrity != "ok"
    assert f"store: quick_check of {store} found damage: {integrity}; the server goes on" in found
    assert not stopped_cleanly(store)  # taken away at the start, not put back at the stop
    assert server.stop() in (0, -15)
    assert not stopped_cleanly(store)

    result = _twistd(server.config_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    last = output.strip().splitlines()[-1]  # quick_check reports the page, or fails on it
    assert re.search(rf"heartbeat: state_dir: cannot open the store {re.escape(str(store))}: "
                     r"(.+: integrity check failed: .+|database disk image is malformed)$",
                     last), output
