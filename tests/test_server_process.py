"""The real ``twistd -n heartbeat`` process: datagrams in, API, journal and state out."""

from __future__ import annotations

import json

import pytest

from tests.support import ServerProcess, wait_until


def test_heartbeat_is_acked_and_host_listed(server: ServerProcess) -> None:
    """An HTB gets an ACK echoing seq/ts and the host shows UP in the API."""
    server.send({"ID": "HTB", "name": "web1", "interval": 30, "seq": 7, "ts": 1711234567.1,
                 "rtt": 0.42, "version": "1.2"})
    ack = server.receive()
    assert ack["ID"] == "ACK"
    assert (ack["seq"], ack["ts"]) == (7, 1711234567.1)
    assert isinstance(ack["server_ts"], float)
    host = server.get("/api/0/hosts/web1")
    assert (host["state"], host["addr"], host["interval"], host["rtt"], host["version"]) == (
        "UP", "127.0.0.1", 30.0, 0.42, "1.2")
    assert [h["name"] for h in server.get("/api/0/hosts")["hosts"]] == ["web1"]


def test_host_goes_down_after_interval_plus_grace(server_factory) -> None:
    """A host that stops sending is DOWN once interval + grace has passed."""
    server = server_factory(grace=0.3)
    server.send({"ID": "HTB", "name": "quiet", "interval": 0.2})
    server.receive()
    host = wait_until(lambda: (h := server.host("quiet")) and h["state"] == "DOWN" and h)
    assert host["down_reason"] == "timeout"


def test_journal_and_messages_api(server: ServerProcess) -> None:
    """Every accepted message is a journal line in the reference format and in the API."""
    server.send({"ID": "MSG", "name": "db1", "text": "maintenance starting", "level": "warning",
                 "extra": {"kept": True}})
    server.send({"ID": "PLG", "name": "db1", "plugins": {"cpu_monitor": {"cpu_percent": 5}}})
    messages = wait_until(lambda: server.get("/api/0/messages?host=db1")["messages"]
                          if len(server.get("/api/0/messages?host=db1")["messages"]) == 2
                          else None)
    assert [m["message"]["ID"] for m in messages] == ["PLG", "MSG"]
    first = messages[1]
    assert set(first) == {"timestamp", "datetime", "source_ip", "source_port", "message"}
    assert first["message"] == {"ID": "MSG", "name": "db1", "text": "maintenance starting",
                                "level": "warning", "extra": {"kept": True}}
    lines = [e for e in server.journal_lines() if "message" in e]
    assert [e["message"]["ID"] for e in lines] == ["MSG", "PLG"]


def test_state_survives_sigkill(server_factory, tmp_path) -> None:
    """After kill -9 and a restart, hosts come back with their state, last_seen, each
    plugin's latest data and the latest message the host list shows."""
    server = server_factory()
    server.send({"ID": "HTB", "name": "survivor", "interval": 60})
    server.receive()
    server.send({"ID": "MSG", "name": "survivor", "text": "backup done ✓", "level": "info"})
    server.send({"ID": "PLG", "name": "survivor", "plugins": {"os_info": {"system": "Linux"}}})
    before = wait_until(lambda: (h := server.host("survivor")) and h["plugins"] and h)
    assert before["latest_message"]["message"] == {"ID": "MSG", "text": "backup done ✓",
                                                   "level": "info"}
    sample = server.get("/api/0/hosts/survivor/plugins")["plugins"]["os_info"]
    wait_until(lambda: (server.get("/api/0/status")["store"]["last_commit"] or 0) > sample["ts"])
    server.kill()
    again = server_factory(tmp_path, hb_port=server.udp_port, hbd_port=server.http_port,
                           ws_port=server.ws_port)
    after = again.host("survivor")
    assert after is not None
    assert (after["state"], after["last_seen"], after["plugins"]) == (
        "UP", before["last_seen"], ["os_info"])
    assert after["latest_message"] == before["latest_message"]
    assert again.get("/api/0/hosts?limit=10")["hosts"][0]["latest_message"] == (
        before["latest_message"])
    plugins = again.get("/api/0/hosts/survivor/plugins")["plugins"]
    assert plugins["os_info"]["data"] == {"system": "Linux"}


def test_queued_command_survives_restart(server_factory, tmp_path) -> None:
    """A CMD queued through the API is still sent after the server restarts."""
    server = server_factory()
    server.send({"ID": "HTB", "name": "later", "interval": 60})
    server.receive()
    status, queued = server.request("POST", "/api/0/hosts/later/commands",
                                    {"cmd": "restart_nginx"})
    assert status == 202
    cmd_id = queued["command"]["cmd_id"]
    wait_until(lambda: (server.get("/api/0/status")["store"]["last_commit"] or 0)
               > queued["command"]["queued"])
    server.kill()
    again = server_factory(tmp_path, hb_port=server.udp_port, hbd_port=server.http_port,
                           ws_port=server.ws_port)
    assert [c["cmd_id"] for c in again.get("/api/0/hosts/later")["pending"]] == [cmd_id]
    again.send({"ID": "HTB", "name": "later", "interval": 60, "seq": 1})
    assert again.receive()["ID"] == "ACK"
    assert again.receive() == {"ID": "CMD", "cmd_id": cmd_id, "cmd": "restart_nginx",
                               "args": []}


def test_bad_config_stops_startup_naming_key(tmp_path) -> None:
    """An unknown key stops start-up with one line naming the file and suggesting the key."""
    import subprocess

    from tests.support import TWISTD

    config = tmp_path / "bad.yaml"
    config.write_text("hb_prot: 50003\n")
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "heartbeat", "-c", str(config)],
                            capture_output=True, text=True, timeout=30, check=False, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"heartbeat: config error: {config}: hb_prot: unknown key (did you mean 'hb_port'?)")
    assert json.dumps(result.stdout).count("Usage") == 0


def test_sigterm_flushes_journal_and_store(server_factory) -> None:
    """On SIGTERM, buffered journal lines and store writes reach disk before exit."""
    import sqlite3
    from pathlib import Path

    server = server_factory(journal_flush_interval=3600, store_flush_interval=3600)
    for n in range(50):
        server.send({"ID": "HTB", "name": f"h{n}"})
        server.receive()
    assert server.stop() in (0, -15)  # twistd re-raises the signal it stopped on
    assert "Server Shut Down." in server.log()
    lines = [e for e in server.journal_lines() if "message" in e]
    assert sorted(e["message"]["name"] for e in lines) == sorted(f"h{n}" for n in range(50))
    db = sqlite3.connect(Path(server.config["state_dir"]) / "heartbeat.sqlite3")
    assert db.execute("SELECT COUNT(*) FROM hosts WHERE state = 'UP'").fetchone() == (50,)
    db.close()


def test_dual_stack_listener(server_factory) -> None:
    """With hb_host '::', IPv4 senders appear with plain IPv4 addresses and IPv6 works too."""
    import socket

    import pytest

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    server = server_factory(hb_host="::")
    server.send({"ID": "HTB", "name": "v4"})
    assert server.receive()["ID"] == "ACK"
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s6:
        s6.settimeout(5)
        s6.sendto(b'{"ID":"HTB","name":"v6","seq":1}', ("::1", server.udp_port))
        assert json.loads(s6.recvfrom(1000)[0])["seq"] == 1
    assert (server.host("v4")["addr"], server.host("v6")["addr"]) == ("127.0.0.1", "::1")


def test_check_flag_and_missing_wss_certificate(server_factory, tmp_path) -> None:
    """--check validates and exits 0; WSS with missing files warns and the rest runs."""
    import subprocess

    from tests.support import TWISTD

    config = tmp_path / "ok.yaml"
    config.write_text("hb_port: 6000\n")
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "heartbeat", "-c", str(config),
                             "--check"], capture_output=True, text=True, timeout=30, check=False,
                            cwd=tmp_path)
    assert (result.returncode, result.stdout.split(":")[0]) == (0, "heartbeat")
    assert "OK; UDP [::]:6000, HTTP 127.0.0.1:50004" in result.stdout
    from tests.support import free_port

    server = server_factory(wss_port=free_port(), cert_path=str(tmp_path / "nocerts"))
    assert "WSS on port" in server.log() and "not started: missing" in server.log()
    assert server.get("/api/0/status")["version"]


@pytest.mark.parametrize(("config", "line"), [
    ("templates_dir: {tmp}/nope\n",
     "heartbeat: templates_dir: cannot read the templates: {tmp}/nope is not a directory"),
    ("wss_port: 50006\ncert_path: {tmp}\nwss_pem: bad.pem\nwss_key: bad.pem\n",
     "heartbeat: wss_pem: cannot load {tmp}/bad.pem: no PEM certificate in it"),
    ("logfile: {tmp}/nodir/hb.log\n",
     "heartbeat: logfile: cannot open {tmp}/nodir/hb.log: No such file or directory"),
], ids=["templates_dir", "wss_pem", "logfile"])
def test_check_flag_refuses_log_template_and_wss_files(tmp_path, config, line) -> None:
    """--check stops with start-up's own line for a log, template or WSS file it cannot use."""
    from heartbeat.server.tap import Options

    (tmp_path / "bad.pem").write_text("not a certificate\n")
    path = tmp_path / "hb.yaml"
    path.write_text(config.format(tmp=tmp_path))
    with pytest.raises(SystemExit) as stopped:
        Options().parseOptions(["-c", str(path), "--check"])
    assert str(stopped.value) == line.format(tmp=tmp_path)


def test_port_in_use_stops_startup_naming_the_key(tmp_path) -> None:
    """A taken HTTP or UDP port ends start-up with one line naming the key, not a half server."""
    import socket
    import subprocess

    import yaml

    from tests.support import TWISTD, free_port

    taken_tcp = socket.socket()
    taken_tcp.bind(("127.0.0.1", 0))
    taken_tcp.listen()
    taken_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken_udp.bind(("127.0.0.1", 0))
    base = {"hb_host": "127.0.0.1", "hbd_host": "127.0.0.1", "ws_port": None,
            "state_dir": str(tmp_path / "s"), "journal_dir": str(tmp_path / "j")}
    cases = [
        ({"hb_port": free_port(socket.SOCK_DGRAM), "hbd_port": taken_tcp.getsockname()[1]},
         "hbd_port", taken_tcp.getsockname()[1]),
        ({"hb_port": taken_udp.getsockname()[1], "hbd_port": free_port()},
         "hb_port", taken_udp.getsockname()[1]),
    ]
    try:
        for ports, key, port in cases:
            config = tmp_path / f"{key}.yaml"
            config.write_text(yaml.safe_dump({**base, **ports}))
            result = subprocess.run([TWISTD, "-n", "--pidfile=", "heartbeat", "-c", str(config)],
                                    capture_output=True, text=True, timeout=30, cwd=tmp_path,
                                    check=False)
            assert result.returncode != 0
            # twistd -n has already sent stderr to its log (stdout) at this point
            last = (result.stdout + result.stderr).strip().splitlines()[-1]
            assert last.endswith(
                f"heartbeat: {key}: cannot listen on 127.0.0.1:{port}: Address already in use")
    finally:
        taken_tcp.close()
        taken_udp.close()


def test_unusable_journal_dir_stops_startup_naming_the_key(tmp_path) -> None:
    """An unusable journal_dir ends start-up with one line, not a server journaling nothing."""
    import subprocess

    import yaml

    from tests.support import TWISTD, free_port

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = tmp_path / "heartbeat.yaml"
    config.write_text(yaml.safe_dump({
        "hb_host": "127.0.0.1", "hb_port": free_port(), "hbd_host": "127.0.0.1",
        "hbd_port": free_port(), "ws_port": None, "state_dir": str(tmp_path / "s"),
        "journal_dir": str(blocker / "journal")}))
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "heartbeat", "-c", str(config)],
                            capture_output=True, text=True, timeout=30, cwd=tmp_path, check=False)
    assert result.returncode != 0
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert last.endswith(f"heartbeat: journal_dir: cannot open the journal "
                         f"{blocker / 'journal' / 'messages.journal'}: "
                         f"[Errno 20] Not a directory: '{blocker / 'journal'}'")


def test_logfile_gets_each_line_once(server_factory, tmp_path) -> None:
    """`logfile` receives the start-up lines once (twistd replays them), then the rest;
    a logfile that cannot be opened stops start-up with one line naming the key."""
    import subprocess

    import yaml

    from tests.support import TWISTD, free_port

    logfile = tmp_path / "server.log"
    server = server_factory(logfile=str(logfile))
    server.send({"ID": "HTB", "name": "logged1"})
    server.receive()
    assert server.stop() in (0, -15)
    lines = logfile.read_text().splitlines()
    startup = [line for line in lines if "heartbeat.server.tap#info] heartbeat " in line]
    assert len(startup) == 1, lines
    assert sum("Server Shut Down." in line for line in lines) == 1
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({
        "hb_host": "127.0.0.1", "hb_port": free_port(), "hbd_host": "127.0.0.1",
        "hbd_port": free_port(), "ws_port": None, "state_dir": str(tmp_path / "s"),
        "journal_dir": str(tmp_path / "j"), "logfile": str(tmp_path / "no" / "x.log")}))
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "heartbeat", "-c", str(config)],
                            capture_output=True, text=True, timeout=30, cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert (result.stdout + result.stderr).strip().splitlines()[-1].endswith(
        f"heartbeat: logfile: cannot open {tmp_path / 'no' / 'x.log'}: No such file or directory")


def test_check_flag_refuses_unusable_directories(tmp_path) -> None:
    """--check refuses a state_dir or journal_dir start-up could not use, creating nothing."""
    import subprocess

    import yaml

    from tests.support import TWISTD

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    good = {"state_dir": str(tmp_path / "new" / "state"), "journal_dir": str(tmp_path / "j")}
    for key in ("state_dir", "journal_dir"):
        config = tmp_path / f"{key}.yaml"
        config.write_text(yaml.safe_dump({**good, key: str(blocker / "sub")}))
        result = subprocess.run([TWISTD, "-n", "--pidfile=", "heartbeat", "-c", str(config),
                                 "--check"], capture_output=True, text=True, timeout=30,
                                cwd=tmp_path, check=False)
        assert (result.returncode, result.stderr.strip().splitlines()[-1:]) == (1, [
            f"heartbeat: {key}: cannot use {blocker / 'sub'}: {blocker} is not a directory"])
    config = tmp_path / "good.yaml"
    config.write_text(yaml.safe_dump(good))
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "heartbeat", "-c", str(config),
                             "--check"], capture_output=True, text=True, timeout=30,
                            cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "new").exists() and not (tmp_path / "j").exists()


def test_short_history_retention_is_applied_within_seconds(server_factory) -> None:
    """history_retention: 1 prunes a sample from store and API within seconds, not 10 min."""
    server = server_factory(history_retention=1.0)
    server.send({"ID": "PLG", "name": "web1", "plugins": {"cpu": {"load": 0.5}}})
    path = "/api/0/hosts/web1/plugins/cpu"
    assert wait_until(lambda: len(server.get(path)["samples"]) == 1)
    assert wait_until(lambda: server.get(path)["samples"] == [], timeout=4.0)
    assert server.get("/api/0/hosts/web1/plugins")["plugins"]["cpu"]["data"] == {"load": 0.5}


def test_sighup_flushes_and_stops_like_sigterm(server_factory) -> None:
    """SIGHUP stops the server cleanly: buffered journal lines reach disk first."""
    import signal

    server = server_factory(journal_flush_interval=3600, store_flush_interval=3600)
    for n in range(5):
        server.send({"ID": "HTB", "name": f"hup{n}"})
        server.receive()
    assert server.stop(signal.SIGHUP) == 0
    assert "Received SIGHUP, shutting down" in server.log()
    assert "Server Shut Down." in server.log()
    names = sorted(e["message"]["name"] for e in server.journal_lines() if "message" in e)
    assert names == [f"hup{n}" for n in range(5)]


def test_version_prints_heartbeat_and_twisted(tmp_path) -> None:
    """`twistd -n heartbeat --version` prints heartbeat's version line, not only Twisted's."""
    import subprocess

    import heartbeat
    from tests.support import TWISTD

    result = subprocess.run([TWISTD, "-n", "--pidfile=", "heartbeat", "--version"],
                            capture_output=True, text=True, timeout=30, check=False,
                            cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, heartbeat.version_line() + "\n")
