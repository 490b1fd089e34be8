"""``twistd heartbeat-agent`` options and wiring, without a real reactor."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from twisted.python import usage

from heartbeat.agent.plugin import PluginScheduler
from heartbeat.agent.sender import HeartbeatSender
from heartbeat.agent.tap import Options, makeService
from heartbeat.config.agent import AgentConfig
from tests.agent_fakes import AgentReactor


def test_options_parse_servers_and_flags(tmp_path: Path) -> None:
    """Positional servers, -c, -b, -v and --syslog parse into the expected options."""
    config = tmp_path / "agent.yaml"
    config.write_text("interval: 5\nname: box1\nplugins: {cpu_monitor: {interval: 7}}\n")
    options = Options()
    options.parseOptions(["-c", str(config), "-b", "-v", "--syslog", "mon1", "mon2"])
    assert {k: options[k] for k in ("config", "boot", "verbose", "syslog", "servers",
                                    "config_path")} == {
        "config": str(config), "boot": 1, "verbose": 1, "syslog": 1,
        "servers": ["mon1", "mon2"], "config_path": str(config)}
    assert options["settings"] == AgentConfig(interval=5.0, name="box1",
                                              plugins={"cpu_monitor": {"interval": 7}})
    assert len(options["plugin_classes"]) == 9


def test_default_config_is_home_hbc_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """Without -c the agent reads ~/.hbc.yaml when it exists."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".hbc.yaml").write_text("hb_port: 51000\n")
    options = Options()
    options.parseOptions(["mon"])
    assert (options["config_path"], options["settings"].hb_port) == (
        str(tmp_path / ".hbc.yaml"), 51000)


def test_no_server_is_a_usage_error() -> None:
    """At least one SERVER is required."""
    with pytest.raises(usage.UsageError, match="name at least one SERVER"):
        Options().parseOptions([])


def test_make_service_wires_sender_and_scheduler(tmp_path: Path) -> None:
    """makeService composes the sender and a scheduler that hands results to it."""
    config = tmp_path / "agent.yaml"
    config.write_text("interval: 5\nname: box1\nhb_port: 51001\n"
                      "plugins: {cpu_monitor: {interval: 7}, zfs_monitor: {enabled: false}}\n")
    options = Options()
    options.parseOptions(["-c", str(config), "-b", "mon"])
    top = makeService(options, reactor=AgentReactor())
    sender = top.getServiceNamed("sender")
    scheduler = top.getServiceNamed("plugins")
    assert isinstance(sender, HeartbeatSender) and isinstance(scheduler, PluginScheduler)
    assert (sender.host_name, sender.port, sender.interval, sender.boot, sender.boot_time,
            [s.name for s in sender.servers]) == ("box1", 51001, 5.0, True,
                                                  psutil.boot_time(), ["mon"])
    assert {p.name: p.interval for p in scheduler.plugins} == {
        "os_info": 300.0, "cpu_monitor": 7.0, "memory_monitor": 300.0,
        "disk_monitor": 300.0, "network_monitor": 300.0, "filesystem_info": 300.0}
    assert scheduler.deliver == sender.queue_plugin
    assert sender.on_boot == scheduler.resend_info


def test_invalid_default_name_stops_startup(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    """A host name the protocol rejects stops start-up, asking for a name: key."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("socket.gethostname", lambda: "bad host")
    with pytest.raises(SystemExit) as e:
        Options().parseOptions(["mon"])
    assert str(e.value) == ("heartbeat-agent: config error: <defaults>: name: this host's "
                            "name 'bad host' is not a valid host name; set one")


@pytest.mark.parametrize(("text", "message"), [
    ('update_command: "/bin/echo \\"x"\n',
     "update_command: cannot be split into words: No closing quotation"),
    ('plugins:\n  nagios_runner: {commands: [{name: a, command: "/bin/echo \'x"}]}\n',
     "plugins.nagios_runner.commands: entry 0: cannot be split into words: "
     "No closing quotation"),
])
def test_unsplittable_command_string_is_a_config_error(tmp_path: Path, text: str,
                                                       message: str) -> None:
    """A command string with an unclosed quote stops start-up with one line naming the key."""
    config = tmp_path / "agent.yaml"
    config.write_text(text)
    with pytest.raises(SystemExit) as e:
        Options().parseOptions(["-c", str(config), "mon"])
    assert str(e.value) == f"heartbeat-agent: config error: {config}: {message}"


def test_version_names_heartbeat_and_twisted(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the agent's version, then Twisted's and Python's, and exits 0."""
    import platform

    import twisted

    with pytest.raises(SystemExit) as e:
        Options().parseOptions(["--version"])
    assert (e.value.code, capsys.readouterr().out) == (
        0, f"heartbeat-agent 0.1.0 (Twisted {twisted.__version__}, "
           f"Python {platform.python_version()})\n")


def test_check_summarises_config_plugins_and_servers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check prints what would run and where each SERVER resolves; 1 if one does not."""
    config = tmp_path / "agent.yaml"
    config.write_text("interval: 5\nname: box1\nhb_port: 51001\nkey: 0123456789abcdef0123\n"
                      "key_id: fleet\nplugins: {cpu_monitor: {interval: 7}, "
                      "zfs_monitor: {enabled: false}, filesystem_info: {enabled: false}}\n")
    with pytest.raises(SystemExit) as e:
        Options().parseOptions(["-c", str(config), "--check", "127.0.0.1", "nope.invalid"])
    lines = capsys.readouterr().out.splitlines()
    assert (e.value.code, lines[:3]) == (1, [
        f"heartbeat-agent: {config}: OK; host box1, heartbeat every 5 s to UDP port 51001, "
        "signed with key 'fleet'",
        "  plugins: os_info (300 s), cpu_monitor (7 s), memory_monitor (300 s), "
        "disk_monitor (300 s), network_monitor (300 s)",
        "  server 127.0.0.1: 127.0.0.1"])
    assert lines[3].startswith("  server nope.invalid: cannot resolve: ") and len(lines) == 4


def test_check_without_servers_is_fine_and_bad_config_is_one_line(tmp_path: Path) -> None:
    """--check needs no SERVER; a bad key still stops with the config error line."""
    good = tmp_path / "good.yaml"
    good.write_text("name: box1\n")
    with pytest.raises(SystemExit) as e:
        Options().parseOptions(["-c", str(good), "--check"])
    assert e.value.code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("intervall: 5\n")
    with pytest.raises(SystemExit) as e:
        Options().parseOptions(["-c", str(bad), "--check"])
    assert str(e.value) == (f"heartbeat-agent: config error: {bad}: intervall: unknown key "
                            "(did you mean 'interval'?)")
