"""Schema versions: new stores at the newest, older ones upgraded, newer or foreign refused.

The fixture ``tests/fixtures/store/v1.sqlite3`` is a real store written by the
release before schema versions (tests/fixtures/store/make_store_fixture.py made
it); every upgrade must keep what it holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import fail, succeed

from heartbeat.config.server import UserConfig
from heartbeat.server.access import HostAccess
from heartbeat.server.alerting import load_alert_states
from heartbeat.server.auth import StoredAuth, load_auth
from heartbeat.server.migrations import (
    NEWEST,
    STEPS,
    SchemaError,
    Step,
    StoreVersion,
    inspect_store,
    statements,
    upgrade,
)
from heartbeat.server.registry import Host, HostState, PendingCommand, PluginSample
from heartbeat.server.sessions import Session
from heartbeat.server.store import (
    check_integrity,
    load_hosts,
    open_database,
    open_sqlite,
    read_history,
    read_latest,
    stopped_cleanly,
)
from heartbeat.server.tables import SqliteTables
from heartbeat.server.thresholds.engine import AlertState
from heartbeat.server.thresholds.rules import Level

FIXTURES = Path(__file__).parent / "fixtures" / "store"
V1_TABLES = ["alert_states", "commands", "host_access", "hosts", "plugin_history",
             "plugin_latest", "sessions", "users"]
"""The tables of the release before versions (step 7 replaced plugin_latest)."""
V2_TABLES = ["acknowledgements", "flap_states", "held_problems", "maintenance_windows",
             "operation_ids", "silences"]
V3_TABLES = ["api_keys"]
V4_TABLES = ["auth_settings", "totp"]
V5_TABLES = ["badges"]
V7_TABLES = ["job_runs", "jobs"]
V8_TABLES = ["notices"]
V9_TABLES = ["plugin_data"]
V14_TABLES = ["clean_stop"]
TABLES = sorted([t for t in V1_TABLES if t != "plugin_latest"] + V2_TABLES + V3_TABLES
                + V4_TABLES + V5_TABLES + V7_TABLES + V8_TABLES + V9_TABLES + V14_TABLES)
"""The tables of a store at the newest version."""


def _copy(tmp_path: Path, name: str = "v1.sqlite3") -> Path:
    path = tmp_path / "heartbeat.sqlite3"
    shutil.copyfile(FIXTURES / name, path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _schema(conn: sqlite3.Connection) -> list[tuple[str, str, str, str]]:
    return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"
                        " ORDER BY type, name").fetchall()


def _tables(conn: sqlite3.Connection) -> list[str]:
    return [name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]


def _version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        return version
    finally:
        conn.close()


# What release 0.1.0 (main at ba5d8a4) stored, as the loaders read it.
WEB1, DB1 = 1796245014.9777393, 1796245014.9807208
HOSTS = [
    Host("db1", HostState.UP, "127.0.0.1", 45182, DB1, DB1, DB1, 60.0, None, "0.1.0",
         expected_by=1796245114.9807208,
         plugins={"cpu_monitor": PluginSample(1796245015.0527763),
                  "memory_monitor": PluginSample(1796245015.0527763)},
         pending={"6b108619-2": PendingCommand("6b108619-2", "UPD", {"version": "0.2.0"},
                                               1796245017.3092902, "alice", 0)}),
    Host("web1", HostState.UP, "127.0.0.1", 45182, WEB1, WEB1, WEB1, 30.0, 1.5, "0.1.0",
         expected_by=1796245084.9777393,
         plugins={"cpu_monitor": PluginSample(1796245015.0085928),
                  "disk_monitor": PluginSample(1796245015.0325847),
                  "os_info": PluginSample(1796245015.0085928)},
         pending={"6b108619-1": PendingCommand(
             "6b108619-1", "CMD", {"cmd": "restart_nginx", "args": ["--graceful"]},
             1796245017.2950323, "alice", 0)}),
    Host("mail1", HostState.DOWN, "127.0.0.1", 45182, 1796245014.981243, 1796245014.981243,
         1796245015.0534017, 30.0, down_reason="shutdown"),
]
LATEST = {
    "db1": {"cpu_monitor": {"ts": 1796245015.0527763, "data": {"cpu_percent": 99.0}},
            "memory_monitor": {"ts": 1796245015.0527763, "data": {"percent": 40}}},
    "web1": {"cpu_monitor": {"ts": 1796245015.0085928,
                             "data": {"cpu_percent": 85.0, "load_1min": 3.1}},
             "disk_monitor": {"ts": 1796245015.0325847,
                              "data": {"partitions": {"/": {"percent": 95.0, "free_gb": 1.5}}}},
             "os_info": {"ts": 1796245015.0085928,
                         "data": {"system": "Linux", "note": "Grüße ✓"}}},
    "mail1": {},
}
"""Each host's latest data per plugin (the release kept it as whole messages, step 7 per
plugin)."""
HISTORY = {
    ("web1", "cpu_monitor"): [
        {"ts": 1796245015.0085928, "data": {"cpu_percent": 85.0, "load_1min": 3.1}},
        {"ts": 1796245014.9814749, "data": {"cpu_percent": 12.5, "load_1min": 0.4}}],
    ("web1", "os_info"): [
        {"ts": 1796245015.0085928, "data": {"system": "Linux", "note": "Grüße ✓"}}],
    ("web1", "disk_monitor"): [
        {"ts": 1796245015.0325847,
         "data": {"partitions": {"/": {"percent": 95.0, "free_gb": 1.5}}}}],
    ("db1", "cpu_monitor"): [{"ts": 1796245015.0527763, "data": {"cpu_percent": 99.0}}],
    ("db1", "memory_monitor"): [{"ts": 1796245015.0527763, "data": {"percent": 40}}],
}
AUTH = StoredAuth(
    users={
        "bob": UserConfig(full_name="Bob API", password=(
            "pbkdf2:sha256:600000$sVVIkOgMN2uiL4kl$"
            "7200b7528a48740ca1732cbc03710e8bfc77da0c510095d44143da91d8699be0")),
        "carol": UserConfig(admin=True, email="carol@example.org",
                            notification_channels=["email"]),
        "erin": UserConfig(full_name="Erin Changed", password=(
            "pbkdf2:sha256:600000$nPOtnYuAoq6ZK4SB$"
            "a3f66fb8bcffa3b4bd56d3e9adaaf3c7ffc20b500608892e306851192ac7feca")),
        "dave": None,
    },
    access={"db1": HostAccess("bob", ("carol",), ("erin",), "api")},
    sessions=[
        Session("1efd104753eda5a5b08dd0d63865bb1a5750fc67f91dcfef25a6fe5d963a1474", "alice",
                1796245015.848589, 1796245015.848589, "2ywdosTGgzLxHgOA0M7Fb0TFcjJ-AgGK",
                "127.0.0.1", 1796245015.848589),
        Session("f93b8277eacd3f9abbcff8809e79fc8c76d3fe4821c958253e33bee9e31fa7bc", "erin",
                1796245016.4845748, 1796245016.4845748, "kh7MIT0Qdl3sbUjol5GqlfRLmJUG12fy",
                "127.0.0.1", 1796245016.4845748),
    ],
)
ALERTS = [
    AlertState("web1", "disk_monitor", "disk_monitor.partitions./.percent", Level.CRITICAL,
               95.0, 90, ">", "", 1796245015.0325847, 1796245015.0325847),
    AlertState("db1", "cpu_monitor", "cpu_monitor.cpu_percent", Level.CRITICAL, 99.0, 90, ">",
               "", 1796245015.0527763, 1796245015.0527763),
    AlertState("web1", "cpu_monitor", "cpu_monitor.cpu_percent", Level.WARNING, 85.0, 80, ">",
               "", 1796245015.0085928, 1796245015.0085928),
]


def _assert_release_rows(conn: sqlite3.Connection) -> None:
    tables = SqliteTables(conn)
    hosts = load_hosts(tables)
    for host in hosts:
        assert host.results is None
    assert sorted(hosts, key=lambda h: h.name) == sorted(HOSTS, key=lambda h: h.name)
    assert {key: read_history(*key, 100)(tables) for key in HISTORY} == HISTORY
    assert {name: read_latest(name)(tables) for name in LATEST} == LATEST
    assert load_auth(tables) == AUTH
    assert load_alert_states(tables) == ALERTS


class StepListTests:
    def test_steps_are_numbered_from_one_without_gaps(self) -> None:
        """Step N brings a store to version N; NEWEST is the last one's."""
        assert [step.version for step in STEPS] == list(range(1, len(STEPS) + 1))
        assert len(STEPS) == NEWEST

    def test_statements_keep_semicolons_inside_quotes_and_triggers(self) -> None:
        """A script is cut at statement ends only, not at every semicolon."""
        trigger = ("CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN\n"
                   "  UPDATE t SET x = 'c;' WHERE rowid = new.rowid; SELECT 1;\nEND;")
        script = (f"INSERT INTO t VALUES ('a;b');\n{trigger}\n"
                  "-- a comment; with a semicolon\nDROP TABLE u;\n")
        assert statements(script) == [
            "INSERT INTO t VALUES ('a;b');", trigger,
            "-- a comment; with a semicolon\nDROP TABLE u;"]


class NewStoreTests:
    def test_new_store_is_made_at_the_newest_version_in_one_transaction(
            self, tmp_path: Path) -> None:
        """Every step runs inside one BEGIN ... COMMIT that also records the version."""
        path = tmp_path / "new.sqlite3"
        conn = _connect(path)
        seen: list[str] = []
        conn.set_trace_callback(seen.append)
        done = upgrade(conn, path)
        conn.set_trace_callback(None)
        assert (done.found, done.version, done.changed) == (StoreVersion(0), NEWEST, True)
        assert [s.split()[0] for s in seen] == (
            ["PRAGMA", "SELECT", "BEGIN"] + ["CREATE"] * 18 + ["ALTER"] + ["CREATE"] * 2
            + ["ALTER"] * 2 + ["CREATE"] + ["CREATE"] * 3 + ["CREATE"]
            + ["CREATE"] * 2 + ["ALTER"] * 2 + ["SELECT", "DROP"] + ["DROP"]
            + ["ALTER", "SELECT"] + ["CREATE"] + ["PRAGMA", "COMMIT"])
        assert seen[-2:] == [f"PRAGMA user_version = {NEWEST}", "COMMIT"]
        assert _tables(conn) == TABLES
        conn.close()
        assert _version(path) == NEWEST

    def test_open_database_makes_the_store_once(self, tmp_path: Path) -> None:
        """A second open finds the newest version and runs nothing."""
        path = tmp_path / "s" / "heartbeat.sqlite3"
        open_database(path).close()
        conn = open_database(path)
        seen: list[str] = []
        conn.set_trace_callback(seen.append)
        assert upgrade(conn, path).changed is False
        assert seen == ["PRAGMA user_version"]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        conn.close()


class ReleaseFixtureTests:
    def test_fixture_is_as_the_release_left_it(self) -> None:
        """The committed fixture has no version and every table of the release, filled."""
        conn = sqlite3.connect(f"{(FIXTURES / 'v1.sqlite3').as_uri()}?mode=ro&immutable=1",
                               uri=True)
        assert conn.execute("PRAGMA user_version").fetchone() == (0,)
        counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                  for t in _tables(conn)}
        assert counts == {"alert_states": 3, "commands": 2, "host_access": 1, "hosts": 3,
                          "plugin_history": 4, "plugin_latest": 5, "sessions": 2, "users": 4}
        conn.close()

    def test_release_store_upgrades_keeping_every_row(self, tmp_path: Path) -> None:
        """The release's store opens at the newest version with all it held, read back alike."""
        path = _copy(tmp_path)
        conn = open_database(path)
        _assert_release_rows(conn)
        conn.close()
        assert _version(path) == NEWEST
        conn = open_database(path)  # and again, now that it is recorded
        _assert_release_rows(conn)
        conn.close()

    def test_upgraded_schema_is_that_of_a_new_store(self, tmp_path: Path) -> None:
        """Upgrading the release's store gives exactly the tables and indexes of a new one."""
        upgraded = open_database(_copy(tmp_path))
        new = open_database(tmp_path / "new.sqlite3")
        assert _schema(upgraded) == _schema(new)
        upgraded.close()
        new.close()

    def test_release_store_missing_later_tables_is_completed(self, tmp_path: Path) -> None:
        """A store of a release before users and alerts gets their tables, its rows kept."""
        path = _copy(tmp_path)
        conn = _connect(path)
        for table in ("users", "host_access", "sessions", "alert_states"):
            conn.execute(f"DROP TABLE {table}")
        conn.close()
        conn = open_database(path)
        assert _tables(conn) == TABLES
        assert sorted(h.name for h in load_hosts(SqliteTables(conn))) == ["db1", "mail1", "web1"]
        assert load_auth(SqliteTables(conn)) == StoredAuth()
        conn.close()
        assert _version(path) == NEWEST



class Step12Tests:
    def test_plugin_data_loses_its_index_of_times_keeping_every_row(
            self, tmp_path: Path) -> None:
        """A store at version 11 has ``plugin_data_times``; at 12 it is gone, and start-up
        reads the same hosts and plugin times from the table itself."""
        path = _copy(tmp_path)
        conn = _connect(path)
        upgrade(conn, path, STEPS[:11])
        assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND"
                            " tbl_name = 'plugin_data'").fetchall() == [("plugin_data_times",)]
        conn.close()
        conn = open_database(path)
        assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND"
                            " tbl_name = 'plugin_data'").fetchall() == []
        _assert_release_rows(conn)
        conn.close()
        assert _version(path) == NEWEST


class Step13Tests:
    def test_hosts_rows_list_their_plugins_and_times(self, tmp_path: Path) -> None:
        """A store at version 12 knows its plugins' times only from ``plugin_data``; at 13
        each host's row lists them (exactly: 17 digits where a time needs them), and
        start-up reads the same hosts and times without reading ``plugin_data``."""
        path = _copy(tmp_path)
        conn = _connect(path)
        upgrade(conn, path, STEPS[:12])
        odd = 0.1 + 0.2 + 1796245015  # a time whose shortest repr has 17 digits
        conn.execute("INSERT INTO hosts (name, state) VALUES ('lab1', 'UP')")
        conn.execute("INSERT INTO plugin_data VALUES ('lab1', 'os', ?, '\"Linux\"'),"
                     " ('lab1', 'net,eth0', ?, '{}'), ('lab1', 'cpu', 5.0, '{}')", (odd, odd))
        conn.close()
        conn = open_database(path)
        (lab1,) = conn.execute("SELECT plugins FROM hosts WHERE name = 'lab1'").fetchone()
        assert sorted(json.loads(lab1)) == [[5.0, "cpu"], [odd, "net,eth0", "os"]]
        conn.execute("DELETE FROM plugin_data")  # start-up does not read it
        hosts = {h.name: h for h in load_hosts(SqliteTables(conn))}
        lab = hosts.pop("lab1").plugins
        assert {name: sample.ts for name, sample in lab.items()} == {
            "os": odd, "net,eth0": odd, "cpu": 5.0}
        assert lab["os"] is lab["net,eth0"]
        assert sorted(hosts.values(), key=lambda h: h.name) == sorted(
            HOSTS, key=lambda h: h.name)
        conn.close()
        assert _version(path) == NEWEST

class LaterStepTests:
    """How a later step runs, with two steps after the newest made up for the test."""

    NEXT = NEWEST + 1
    STEPS = (*STEPS,
             Step(NEXT, "hosts get a note", sqlite="ALTER TABLE hosts ADD COLUMN note TEXT",
                  postgresql=""),
             Step(NEXT + 1, "each host's note says how many plugins it had",
                  sqlite=lambda conn: conn.execute(
                      "UPDATE hosts SET note = (SELECT COUNT(*) FROM plugin_data"
                      " WHERE plugin_data.host = hosts.name)"), postgresql=""))

    def test_older_store_gets_the_steps_it_lacks_in_order(self, tmp_path: Path) -> None:
        """A store at the newest version runs the two later steps (SQL, then a function)
        in one transaction."""
        path = _copy(tmp_path)
        open_database(path).close()
        conn = _connect(path)
        seen: list[str] = []
        conn.set_trace_callback(seen.append)
        done = upgrade(conn, path, self.STEPS)
        assert (done.found, done.version) == (StoreVersion(NEWEST), self.NEXT + 1)
        assert seen == [
            "PRAGMA user_version", "BEGIN IMMEDIATE", "ALTER TABLE hosts ADD COLUMN note TEXT;",
            "UPDATE hosts SET note = (SELECT COUNT(*) FROM plugin_data"
            " WHERE plugin_data.host = hosts.name)",
            f"PRAGMA user_version = {self.NEXT + 1}", "COMMIT"]
        assert conn.execute("SELECT name, note FROM hosts ORDER BY name").fetchall() == [
            ("db1", "2"), ("mail1", "0"), ("web1", "3")]
        conn.close()
        assert _version(path) == self.NEXT + 1

    def test_unversioned_store_runs_every_step(self, tmp_path: Path) -> None:
        """The release's store (version 1, unrecorded) goes through every step, rows kept."""
        path = _copy(tmp_path)
        conn = _connect(path)
        done = upgrade(conn, path, self.STEPS)
        assert (done.found, done.version) == (StoreVersion(1, recorded=False), self.NEXT + 1)
        _assert_release_rows(conn)
        conn.close()

    def test_failing_step_leaves_the_store_untouched(self, tmp_path: Path) -> None:
        """A step that fails rolls back every step before it: same bytes, same version."""
        path = _copy(tmp_path)
        open_database(path).close()
        before = _digest(path)
        mistake = "CREATE TABLE later (x); INSERT INTO nowhere VALUES (1)"
        broken = (*self.STEPS, Step(self.NEXT + 2, "a step with a mistake", sqlite=mistake,
                                            postgresql=""))
        conn = _connect(path)
        with pytest.raises(SchemaError) as refused:
            upgrade(conn, path, broken)
        assert str(refused.value) == (
            f"cannot upgrade the store {path} from schema version {NEWEST} to {self.NEXT + 2}: "
            f"step {self.NEXT + 2} (a step with a mistake) failed: no such table: nowhere; the "
            f"file is unchanged")
        assert conn.in_transaction is False
        assert "later" not in _tables(conn)
        assert conn.execute("PRAGMA table_info(hosts)").fetchall()[-1][1] == "plugins"
        conn.close()
        assert (_digest(path), _version(path)) == (before, NEWEST)
        conn = open_database(path)  # the code it belongs to still opens it
        _assert_release_rows(conn)
        conn.close()


def _refusal(path: Path, *sql: str) -> str:
    """The SchemaError of opening the file ``sql`` makes; the file must stay as it was."""
    conn = _connect(path)
    for statement in sql:
        conn.execute(statement)
    conn.close()
    before = _digest(path)
    with pytest.raises(SchemaError) as refused:
        open_database(path)
    assert _digest(path) == before
    return str(refused.value)


class RefusalTests:
    def test_store_newer_than_the_code_is_refused_untouched(self, tmp_path: Path) -> None:
        """A store at a later version stops start-up with one line and is not written."""
        path = tmp_path / "heartbeat.sqlite3"
        open_database(path).close()
        assert _refusal(path, f"PRAGMA user_version = {NEWEST + 5}") == (
            f"the store {path} is at schema version {NEWEST + 5}, newer than this heartbeat "
            f"(0.1.0) knows (up to {NEWEST}): run the release that made it, or restore the "
            f"backup taken before upgrading")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["heartbeat.sqlite3"]

    def test_unversioned_file_without_heartbeat_tables_is_refused(self, tmp_path: Path) -> None:
        """An SQLite file of something else is not taken over."""
        path = tmp_path / "other.sqlite3"
        assert _refusal(path, "CREATE TABLE notes (text TEXT)") == (
            f"{path} is not a heartbeat store: it has no schema version and none of its "
            f"tables (notes)")

    def test_unversioned_store_with_other_columns_is_refused(self, tmp_path: Path) -> None:
        """A ``hosts`` table heartbeat did not make is named, and the file left as it was."""
        path = tmp_path / "other.sqlite3"
        assert _refusal(path, "CREATE TABLE hosts (name TEXT, owner TEXT)") == (
            f"{path}: table hosts has the columns (name, owner), not those heartbeat made "
            f"(name, state, addr, port, first_seen, last_seen, since, interval, rtt, version, "
            f"boot_time, down_reason, expected_by): not a heartbeat store, or damaged")
        assert _version(path) == 0


class InspectTests:
    def test_versions_as_check_reports_them(self, tmp_path: Path) -> None:
        """--check's words for no store, the release's store, a recorded and an older one."""
        path = tmp_path / "heartbeat.sqlite3"
        assert inspect_store(path) == StoreVersion(0)
        assert StoreVersion(0).describe(1) == (
            "not created yet (schema version 1 at the first start)")
        shutil.copyfile(FIXTURES / "v1.sqlite3", path)
        assert inspect_store(path) == StoreVersion(1, recorded=False)
        assert StoreVersion(1, recorded=False).describe(1) == (
            "schema version 1 (made before schema versions), current; start-up records it")
        assert StoreVersion(1, recorded=False).describe(3) == (
            "schema version 1 (made before schema versions), upgrade to 3 due at the next "
            "start (back the file up first)")
        open_database(path).close()
        assert inspect_store(path) == StoreVersion(NEWEST)
        assert StoreVersion(1).describe(1) == "schema version 1, current"
        assert StoreVersion(2).describe(3) == (
            "schema version 2, upgrade to 3 due at the next start (back the file up first)")

    def test_inspecting_writes_nothing(self, tmp_path: Path) -> None:
        """Reading the version makes no -wal or -shm file (--check may run as another user)."""
        path = _copy(tmp_path)
        before = _digest(path)
        assert inspect_store(path) == StoreVersion(1, recorded=False)
        assert (sorted(p.name for p in tmp_path.iterdir()), _digest(path)) == (
            ["heartbeat.sqlite3"], before)

    def test_inspecting_a_store_in_use_reads_its_wal(self, tmp_path: Path) -> None:
        """With a server's connection open, the version committed to the WAL is the one read."""
        path = tmp_path / "heartbeat.sqlite3"
        conn = open_database(path)
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute(f"PRAGMA user_version = {NEWEST + 1}")
        with pytest.raises(SchemaError, match=f"at schema version {NEWEST + 1}, newer"):
            inspect_store(path)
        conn.close()

    def test_inspecting_a_damaged_file_is_one_line(self, tmp_path: Path) -> None:
        """A file that is no database is reported, not raised as a traceback."""
        path = tmp_path / "heartbeat.sqlite3"
        path.write_bytes(b"not a database at all" * 100)
        with pytest.raises(SchemaError) as refused:
            inspect_store(path)
        assert str(refused.value) == f"cannot read the store {path}: file is not a database"



class CleanStopTests:
    """An SQLite store's quick_check runs before anything is read unless the server that
    last closed it stopped cleanly having found it sound; then it runs once the server runs."""

    def test_a_clean_stop_lets_the_next_start_check_later(self, tmp_path: Path) -> None:
        path = tmp_path / "s.sqlite3"
        backend = open_sqlite(path)
        assert (backend.integrity, stopped_cleanly(path)) == ("ok", False)  # checked first
        backend.close()
        assert stopped_cleanly(path)
        backend = open_sqlite(path)
        assert backend.integrity == "pending"
        assert not stopped_cleanly(path)  # killed now, the next start checks first
        checked = check_integrity(backend, lambda fn: succeed(fn()))
        assert (checked.called, backend.integrity) == (True, "ok")
        backend.close()
        assert stopped_cleanly(path)

    def test_a_file_not_found_sound_is_not_marked(self, tmp_path: Path) -> None:
        """Closed before its check ran, or with the check unable to run: not marked."""
        path = tmp_path / "s.sqlite3"
        open_sqlite(path).close()
        open_sqlite(path).close()  # pending: never checked while it ran
        assert not stopped_cleanly(path)
        assert open_sqlite(path).integrity == "ok"  # checked first again
        backend = open_sqlite(path)
        backend.close()
        backend = open_sqlite(path)
        check_integrity(backend, lambda fn: fail(sqlite3.OperationalError("disk I/O error")))
        assert backend.integrity == "quick_check could not run: disk I/O error"
        backend.close()
        assert not stopped_cleanly(path)

    def test_anything_but_a_heartbeat_store_is_not_stopped_cleanly(self, tmp_path: Path) -> None:
        assert stopped_cleanly(tmp_path / "none.sqlite3") is False
        (tmp_path / "junk.sqlite3").write_bytes(b"not a database" * 100)
        assert stopped_cleanly(tmp_path / "junk.sqlite3") is False
        assert stopped_cleanly(_copy(tmp_path)) is False  # made before version 14

    @pytest.mark.skipif(sys.platform != "linux", reason="a thread's own nice value is Linux's")
    def test_the_later_check_runs_at_the_lowest_cpu_priority(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The check a clean stop left runs on a thread of its own at nice 19 (it shares a
        busy core with the server answering); the calling thread keeps its own."""
        path = tmp_path / "s.sqlite3"
        open_sqlite(path).close()
        backend = open_sqlite(path)
        seen: list[tuple[int, int]] = []
        connect = sqlite3.connect

        def watched(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            seen.append((threading.get_native_id(),
                         os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
            return connect(*args, **kwargs)

        monkeypatch.setattr(sqlite3, "connect", watched)
        before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert backend.quick_check() == "ok"
        assert [nice for _, nice in seen] == [19]
        assert seen[0][0] != threading.get_native_id()
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
        monkeypatch.undo()
        backend.close()
