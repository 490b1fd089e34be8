"""hbc_mini and the full agent send the same data: one corpus, both implementations.

hbc_mini cannot import the heartbeat package, so its plugins are a second
implementation of docs/AGENT.md. These tests feed both the same inputs (check
results, ping output) and compare the fields whole; for what they read from this
host (/proc through psutil versus by hand) they compare the shape and the values
that cannot move between two reads.
"""

from __future__ import annotations

from typing import Any

import pytest

from heartbeat.agent.plugins.cpu_monitor import read_cpu, sample_cpu
from heartbeat.agent.plugins.disk_monitor import DiskOptions, read_disks
from heartbeat.agent.plugins.memory_monitor import read_memory
from heartbeat.agent.plugins.nagios_runner import check_fields
from heartbeat.agent.plugins.network_monitor import read_network
from heartbeat.agent.plugins.os_info import read_os_info
from heartbeat.agent.plugins.ping_monitor import target_result
from heartbeat.agent.process import ProcessResult
from tests.test_hbc_mini import FIXTURES, fixture, mini

GUIDELINES_EXAMPLE = fixture("nagios-long-output.txt")


def _results(*, exit_code: int | None = 0, signal: int | None = None, stdout: str = "",
             stderr: str = "", timed_out: bool = False,
             error: str | None = None) -> tuple[ProcessResult, Any]:
    """The same child outcome as the agent's ProcessResult and hbc_mini's CommandResult."""
    agent = ProcessResult(("/usr/lib/nagios/plugins/check_x",), exit_code, signal,
                          stdout.encode(), stderr.encode(), timed_out, error)
    returncode = -signal if signal is not None else exit_code
    mini_result = mini.CommandResult(["/usr/lib/nagios/plugins/check_x"], returncode=returncode,
                                     stdout=stdout, stderr=stderr, timed_out=timed_out,
                                     error=error)
    return agent, mini_result


@pytest.mark.parametrize("outcome", [
    {"stdout": "OK - load average: 0.30, 0.20, 0.10|load1=0.300;5.000;10.000;0; "
               "load5=0.200;4.000;8.000;0; load15=0.100;3.000;6.000;0;\n"},
    {"exit_code": 2, "stdout": "DISK CRITICAL - free space: / 100 MB (2%);| /=4800MB;;;0;4900\n"},
    {"exit_code": 1, "stdout": GUIDELINES_EXAMPLE},
    {"exit_code": 0, "stdout": "OK | 'time taken'=5s;1;2;0;10 'it''s'=1 u=U pct=42%;80;90 "
                               "empty=;; junk c=12c neg=-3.5;~:0;@-10:-5 t=1 t=2\n"},
    {"exit_code": 3, "stderr": "check_x: invalid option\n"},
    {"exit_code": 0},
    {"exit_code": 7, "stdout": "OK but exit 7\n"},
    {"exit_code": 255},
    {"exit_code": None, "signal": 9, "stdout": "dying"},
    {"exit_code": None, "signal": 15},
    {"exit_code": None, "signal": 9, "timed_out": True, "stdout": "half"},
    {"exit_code": None, "error": "cannot run /usr/lib/nagios/plugins/check_x: No such file"},
    {"stdout": "x" * 1500},
])
def test_nagios_fields_match_the_agent(outcome: dict[str, Any]) -> None:
    """Status, output and perfdata fields are identical for the same check result."""
    agent, mini_result = _results(**outcome)
    assert mini.nagios_fields("check_x", mini_result, 30.0) == \
        check_fields("check_x", agent, 30.0)[0]


@pytest.mark.parametrize("outcome", [
    {"stdout": fixture("ping-ok.txt")},
    {"exit_code": 2, "stderr": fixture("ping-unknown-host.txt")},
    {"exit_code": 1, "stdout": "--- 10.9.9.9 ping statistics ---\n"
                               "3 packets transmitted, 0 received, 100% packet loss\n"},
    {"stdout": "3 packets transmitted, 2 packets received, 33.3% packet loss\n"
               "round-trip min/avg/max/stddev = 0.050/0.066/0.085/0.014 ms\n"},
    {"stdout": "2 packets transmitted, 2 packets received, 0% packet loss\n"
               "round-trip min/avg/max = 0.061/0.070/0.080 ms\n"},
    {"exit_code": None, "signal": 9, "timed_out": True},
    {"exit_code": None, "error": "cannot run ping: No such file or directory"},
])
def test_ping_targets_match_the_agent(outcome: dict[str, Any]) -> None:
    """One target's fields, error included, are identical for the same ping run."""
    agent, mini_result = _results(**outcome)
    assert mini.ping_result(mini_result) == target_result(agent)


def _shape(value: Any) -> Any:
    """Keys all the way down (a dict keyed by mount point or interface keeps one entry)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__ if value is not None else None


def test_os_info_matches_the_agent() -> None:
    """Same fields and the same values, but hbc_mini names itself in ``agent``."""
    mini_data = mini.OsInfo(mini.plugin_options("t", "os_info", None), None).collect()
    assert mini_data.pop("agent") == "hbc_mini"
    agent = read_os_info()
    for key in ("python_version", "memory_total_mb", "boot_time"):
        assert (key, type(mini_data.pop(key))) == (key, type(agent.pop(key)))
    assert mini_data == agent


def test_cpu_monitor_matches_the_agent() -> None:
    """Same fields; slowly moving values agree."""
    mini_data = mini.CpuMonitor(mini.plugin_options("t", "cpu_monitor", None),
                                mini.threading.Event()).collect()
    agent, _ = read_cpu(True, mini.time.time(), sample_cpu())
    assert sorted(mini_data) == sorted(agent)
    assert (mini_data["cpu_count"], len(mini_data["per_core"]), mini_data["boot_time"]) == (
        agent["cpu_count"], len(agent["per_core"]), pytest.approx(agent["boot_time"], abs=1))
    assert abs(mini_data["process_count"] - agent["process_count"]) <= 5


def test_memory_monitor_matches_the_agent() -> None:
    """Same fields (with ZFS ARC from the real arcstats fixture); totals equal."""
    arcstats = str(FIXTURES / "arcstats.txt")
    mini_data = mini.MemoryMonitor(mini.plugin_options(
        "t", "memory_monitor", {"arcstats_path": arcstats}), None).collect()
    agent = read_memory(arcstats)
    assert sorted(mini_data) == sorted(agent)
    same = ("total_mb", "swap_total_mb", "zfs_arc_mb", "zfs_arc_min_mb", "zfs_arc_max_mb",
            "zfs_arc_reclaimable_mb")
    assert {k: mini_data[k] for k in same} == {k: agent[k] for k in same}
    assert mini_data["percent"] == pytest.approx(agent["percent"], abs=1.0)


def test_disk_monitor_matches_the_agent() -> None:
    """Same partitions chosen, same fields, and sizes that agree."""
    mini_data = mini.DiskMonitor(mini.plugin_options("t", "disk_monitor", {"per_disk": True}),
                                 None).collect()
    agent = read_disks(DiskOptions(per_disk=True))
    assert sorted(mini_data["partitions"]) == sorted(agent["partitions"])
    assert _shape(mini_data) == _shape(agent)
    mine, theirs = mini_data["partitions"]["/"], agent["partitions"]["/"]
    assert {k: mine[k] for k in ("device", "fstype", "total_gb")} == {
        k: theirs[k] for k in ("device", "fstype", "total_gb")}
    assert mine["percent"] == pytest.approx(theirs["percent"], abs=0.5)


def test_network_monitor_matches_the_agent() -> None:
    """Same interfaces (loopback left out), same fields, same static values."""
    mini_data = mini.NetworkMonitor(mini.plugin_options("t", "network_monitor", None),
                                    None).collect()
    agent = read_network(False)
    assert _shape(mini_data) == _shape(agent)
    assert sorted(mini_data["interfaces"]) == sorted(agent["interfaces"])
    static = ("is_up", "speed_mbps", "mtu")
    assert {n: {k: i[k] for k in static} for n, i in mini_data["interfaces"].items()} == {
        n: {k: i[k] for k in static} for n, i in agent["interfaces"].items()}
