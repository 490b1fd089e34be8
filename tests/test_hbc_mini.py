"""scripts/hbc_mini.py in-process: 3.8 compatibility, config, wire format and parsers.

The parsers run on text recorded on a real Debian 12 host
(tests/fixtures/hbc_mini/) and on the ZFS arcstats of ../shared/fixtures/zfs.
"""

from __future__ import annotations

import importlib.util
import json
import random
import stat
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from heartbeat.protocol import DecodeError, decode_reply
from heartbeat.text import json_bytes
from tests.compat38 import problems

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "hbc_mini.py"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hbc_mini"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hbc_mini", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mini = _load()


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# --- Python 3.8, standard library only ------------------------------------------


def test_script_passes_the_python38_check() -> None:
    """hbc_mini.py parses as Python 3.8 and uses nothing newer nor outside the stdlib."""
    assert problems(SCRIPT.read_text(), str(SCRIPT)) == []


@pytest.mark.parametrize(("source", "expected"), [
    ("x = {1: 2} | {3: 4}", "line 1: dict | dict (3.9)"),
    ("d = {}\nd |= dict(a=1)", "line 2: dict |= dict (3.9)"),
    ("isinstance(1, int | None)", "line 1: X | Y union of types at run time (3.10)"),
    ("y = list[int]", "line 1: list[...] at run time (3.9)"),
    ("def f(x: dict[str, int]): pass", "line 1: dict[...] at run time (3.9)"),
    ("import queue\nq: queue.Queue[int]", "line 2: Queue[...] at run time (3.9)"),
    ("'abc'.removeprefix('a')", "line 1: str.removeprefix (3.9)"),
    ("import math\nmath.lcm(2, 3)", "line 2: math.lcm (3.9)"),
    ("import functools\nfunctools.cache", "line 2: functools.cache (3.9)"),
    ("list(zip([1], [2], strict=True))", "line 1: zip(strict=) (3.10)"),
    ("import yaml", "line 1: module yaml is not in the standard library"),
    ("from heartbeat import protocol", "line 1: module heartbeat is not in the standard library"),
    ("import zoneinfo", "line 1: module zoneinfo (3.9)"),
    ("from . import sibling", "line 1: relative import (a single file has no package)"),
    ("@handlers[0]\ndef f(): pass", "line 1: decorator expression (3.9)"),
])
def test_compat_check_flags_what_38_lacks(source: str, expected: str) -> None:
    """Each construct Python 3.8 cannot run is reported with its line."""
    assert problems(source) == [expected]


@pytest.mark.parametrize("source", ["match x:\n    case 1:\n        pass",
                                    "try:\n    pass\nexcept* OSError:\n    pass"])
def test_compat_check_rejects_new_syntax(source: str) -> None:
    """Syntax newer than 3.8 (match, except*) fails the 3.8 parse."""
    (problem,) = problems(source)
    assert "syntax Python 3.8 does not have" in problem


@pytest.mark.parametrize("source", [
    "from __future__ import annotations\ndef f(x: list[int]) -> dict[str, int | None]: pass",
    "from typing import Callable, Dict\nCheck = Callable[[int], Dict[str, int]]",
    "if (n := 3) > 2: pass",
    "def f(a, /, b): return f'{a=}'",
    "import os, zlib, json, socket\nflags = os.O_RDONLY | os.O_NONBLOCK",
])
def test_compat_check_accepts_38_code(source: str) -> None:
    """Valid 3.8 code (lazy annotations, typing aliases, walrus, int flags) passes."""
    assert problems(source) == []


# --- Configuration ---------------------------------------------------------------


def test_defaults_without_a_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ~/.hbc.json: the agent's defaults, every plugin at 300 s, max_datagram 1400."""
    monkeypatch.setenv("HOME", str(tmp_path))
    config, source = mini.load_config(None)
    plugins = config.pop("plugins")
    name = config.pop("name")
    assert source == "<defaults>"
    assert mini.HOST_NAME.match(name)
    assert config == {
        "hb_port": 50003, "interval": 30.0, "plugin_dirs": [], "allowed_commands": {},
        "command_timeout": 60.0, "update_command": None, "update_timeout": 900.0,
        "max_datagram": 1400, "batch_delay": 1.0, "resolve_interval": 600.0, "key": None,
        "key_file": None, "key_id": None, "sign_window": 120.0}
    assert {p: o["interval"] for p, o in plugins.items()} == {
        p: 300.0 for p in ("os_info", "cpu_monitor", "memory_monitor", "disk_monitor",
                           "network_monitor", "ping_monitor", "nagios_runner")}
    assert plugins["cpu_monitor"] == {"interval": 300.0, "enabled": True, "timeout": 60.0,
                                      "delay": 0.0, "per_core": True}
    assert plugins["nagios_runner"] == {"interval": 300.0, "enabled": True, "timeout": 120.0,
                                        "delay": 0.0, "commands": [], "command_timeout": 30.0}


def test_config_file_is_read_and_normalised(tmp_path: Path) -> None:
    """A JSON config sets keys; command strings are split (no shell), timeouts inherited."""
    path = tmp_path / "hbc.json"
    path.write_text(json.dumps({
        "hb_port": 50100, "interval": 5, "name": "web-1.example",
        "update_command": "/opt/hb/hb_install.sh --venv '/opt/hb venv'",
        "allowed_commands": {"restart_nginx": ["systemctl", "restart", "nginx"]},
        "plugins": {"nagios_runner": {"command_timeout": 10, "commands": [
            {"name": "check_load", "command": "/usr/lib/nagios/plugins/check_load -w 5,4,3"},
            {"name": "check_x", "command": ["/bin/x", "a b"]}]},
            "ping_monitor": {"hosts": ["::1"], "count": 1}}}))
    config, source = mini.load_config(str(path))
    assert source == str(path)
    assert (config["hb_port"], config["interval"], config["name"]) == (50100, 5.0, "web-1.example")
    assert config["update_command"] == ["/opt/hb/hb_install.sh", "--venv", "/opt/hb venv"]
    assert config["plugins"]["nagios_runner"]["commands"] == [
        {"name": "check_load", "command": "/usr/lib/nagios/plugins/check_load -w 5,4,3",
         "argv": ["/usr/lib/nagios/plugins/check_load", "-w", "5,4,3"]},
        {"name": "check_x", "command": ["/bin/x", "a b"], "argv": ["/bin/x", "a b"]}]
    assert config["plugins"]["ping_monitor"] == {
        "interval": 300.0, "enabled": True, "timeout": 60.0, "delay": 0.0, "hosts": ["::1"],
        "count": 1, "ping_interval": 1.0, "ping_timeout": 5.0, "ping_bin": "ping"}


@pytest.mark.parametrize(("text", "problem"), [
    ('{"hb_prot": 1}', "hb_prot: unknown key (did you mean 'hb_port'?)"),
    ('{"server": "mon.example.com"}',
     "server: unknown key (name the server on the command line: hbc_mini.py SERVER)"),
    ('{"hb_port": 70000}', "hb_port: port 70000 is out of range 1-65535"),
    ('{"interval": 0}', "interval: must be greater than 0, got 0"),
    ('{"interval": "30"}', "interval: expected a number, got '30'"),
    ('{"name": "bad name"}',
     "name: expected a host name of 1-253 characters A-Z a-z 0-9 . _ -, got 'bad name'"),
    ('{"plugins": {"cpu_monitr": {}}}',
     "plugins.cpu_monitr: unknown plugin (did you mean 'plugins.cpu_monitor'?)"),
    ('{"plugins": {"a\\nb": {}}}', "plugins.a\\nb: unknown plugin"),
    ('{"plugins": {"cpu_monitor": {"per_cor": true}}}',
     "plugins.cpu_monitor.per_cor: unknown key (did you mean 'plugins.cpu_monitor.per_core'?)"),
    ('{"plugins": {"disk_monitor": {"interval": -1}}}',
     "plugins.disk_monitor.interval: must be greater than 0, got -1"),
    ('{"plugins": {"nagios_runner": {"commands": [{"name": "a"}]}}}',
     "plugins.nagios_runner.commands[0]: needs both name and command"),
    ('{"plugins": {"nagios_runner": {"commands": [{"name": "a", "comand": "x"}]}}}',
     "plugins.nagios_runner.commands[0].comand: unknown key "
     "(did you mean 'plugins.nagios_runner.commands[0].command'?)"),
    ('{"plugins": {"nagios_runner": {"commands": [{"name": "a", "command": "x \'y"}]}}}',
     "plugins.nagios_runner.commands[0].command: cannot split \"x 'y\": No closing quotation"),
    ('{"allowed_commands": {"up": "uptime"}}',
     "allowed_commands: up: expected an argv list (no shell), got 'uptime'"),
    ('{"update_command": []}',
     "update_command: expected an argv list or a command line, got []"),
    ("[1, 2]", "expected a mapping, got [1, 2]"),
    ('{"interval": 5,}', "invalid JSON: Expecting property name enclosed in double quotes: "
                         "line 1 column 16 (char 15)"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, text: str, problem: str) -> None:
    """Every bad key stops start-up with one line: file, key, what is wrong."""
    path = tmp_path / "hbc.json"
    path.write_text(text)
    with pytest.raises(mini.ConfigError) as info:
        mini.load_config(str(path))
    assert str(info.value) == f"{path}: {problem}"


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    """-c with a file that does not exist is an error, not the defaults."""
    with pytest.raises(mini.ConfigError) as info:
        mini.load_config(str(tmp_path / "nope.json"))
    assert str(info.value) == f"{tmp_path / 'nope.json'}: no such file"


# --- Wire format -----------------------------------------------------------------


def test_small_messages_are_text_large_ones_zlib() -> None:
    """JSON text up to 512 bytes goes as is; above, as a zlib stream of the same text."""
    small = {"ID": "HTB", "name": "h", "seq": 1, "interval": 30.0}
    large = {"ID": "PLG", "name": "h", "plugins": {"x": {"text": "y" * 600}}}
    assert mini.encode(small) == b'{"ID":"HTB","name":"h","seq":1,"interval":30.0}'
    assert json.loads(zlib.decompress(mini.encode(large))) == large
    assert mini.decode(mini.encode(large)) == large
    assert mini.decode(mini.encode(small)) == small


@pytest.mark.parametrize("data", [b"", b"not json", b"[1]", b"\x78\x9c garbage",
                                  zlib.compress(b"{" + b" " * 400000 + b"}")])
def test_bad_server_datagrams_decode_to_none(data: bytes) -> None:
    """Garbage, non-objects and over-large inflations are ignored, never raised."""
    assert mini.decode(data) is None


@pytest.mark.parametrize("data", [
    rb'{"ID":"CMD","cmd_id":"\ud800","cmd":"uptime"}',
    rb'{"ID":"CMD","cmd_id":"c1","cmd":"uptime","args":["\udfff"]}',
    zlib.compress(rb'{"ID":"UPD","cmd_id":"c1","version":"1.\uDC80"}'),
    rb'{"ID":"ACK","server_ts":1.0,"\u0000":1}',
    rb'{"ID":"ACK","server_ts":1.0,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
])
def test_replies_breaking_the_text_policy_are_ignored(data: bytes) -> None:
    """A reply with a lone surrogate or a NUL in a key is ignored, as the agent's
    decode_reply refuses it (bad_text); nesting past the recursion limit too."""
    assert mini.decode(data) is None
    with pytest.raises(DecodeError) as info:
        decode_reply(data)
    assert info.value.reason in ("bad_text", "too_deep")


@pytest.mark.parametrize("value", [
    {"ID": "PLG", "name": "h", "plugins": {"disk": {"/mnt/\udcff": 1.5}}},
    {"ID": "RES", "cmd_id": "c", "output": "\ud800 and \U0001f600", "rc": float("nan")},
    {"a": [float("inf"), -float("inf"), {"\udc80": ["\x00"]}], "b": "ü"},
])
def test_json_text_is_the_servers_encoder(value: dict[str, Any]) -> None:
    """hbc_mini writes JSON byte for byte as heartbeat.text.json_bytes does, odd text too:
    never an exception, always strict UTF-8 JSON."""
    assert mini.json_text(value) == json_bytes(value)
    json.loads(mini.json_text(value).decode("utf-8"), parse_constant=_refuse)


def _refuse(name: str) -> None:
    raise ValueError(name)


def _noise(size: int, seed: int) -> str:
    return random.Random(seed).randbytes(size).hex()


def test_plugins_are_packed_into_as_few_datagrams_as_fit() -> None:
    """Batches stay under max_datagram, keep every plugin once, and fill greedily."""
    plugins = {f"p{i}": {"blob": _noise(300, i)} for i in range(6)}  # ~440 bytes zipped
    envelope = {"ID": "PLG", "name": "h", "seq": 99999, "ts": 1.5, "version": "0.1.0"}
    batches = mini.plugin_batches(plugins, envelope, 1000)  # two fit (~785), three do not
    sizes = [len(mini.encode({**envelope, "plugins": b})) for b in batches]
    assert [sorted(b) for b in batches] == [["p0", "p1"], ["p2", "p3"], ["p4", "p5"]]
    assert all(size <= 1000 for size in sizes)
    assert [sorted(b) for b in mini.plugin_batches(plugins, envelope, 1400)] == [
        ["p0", "p1", "p2"], ["p3", "p4", "p5"]]
    assert mini.plugin_batches(plugins, envelope, 60000) == [plugins]


def test_plugin_too_big_for_any_datagram_becomes_an_error() -> None:
    """One plugin larger than max_datagram goes alone; past what UDP carries, as an error."""
    envelope = {"ID": "PLG", "name": "h"}
    big = {"blob": _noise(2000, 1)}
    huge = {"blob": _noise(140000, 2)}
    batches = mini.plugin_batches({"a": {"x": 1}, "big": big, "huge": huge}, envelope, 1400)
    assert batches == [{"a": {"x": 1}}, {"big": big},
                       {"huge": {"error": "data too large: 280054 bytes of JSON"}}]


def test_res_output_keeps_the_last_4_kib() -> None:
    """RES output is cut to 4096 characters, keeping the end where errors are."""
    text = "".join(f"line {i}\n" for i in range(2000))
    tail = mini.output_tail(text)
    assert len(tail) == 4096
    assert tail.startswith("...") and text.endswith(tail[3:])
    assert mini.output_tail("short") == "short"


# --- /proc and tool parsers ------------------------------------------------------


def test_proc_stat() -> None:
    """/proc/stat: busy and total jiffies of all CPUs and each core; guest not counted twice."""
    parsed = mini.parse_proc_stat(fixture("proc-stat.txt"))
    # cpu  71113 0 14965 1370830 851 0 1337 98 0 0: idle = idle + iowait
    assert parsed == {"cpu": (87513, 1459194), "cores": [(32407, 729559), (55104, 729633)],
                      "btime": 1795525053, "procs_running": 3, "procs_blocked": 0}


def test_busy_percent_between_samples() -> None:
    """CPU % is the busy share of the jiffies between two samples, clamped to 0-100."""
    before = mini.parse_proc_stat("cpu  100 0 100 800 0 0 0 0 50 0\n")["cpu"]
    after = mini.parse_proc_stat("cpu  175 0 125 900 0 0 0 0 90 0\n")["cpu"]
    assert (before, after) == ((200, 1000), (300, 1200))
    assert mini.busy_percent(before, after) == 50.0
    assert mini.busy_percent(after, after) == 0.0


def test_loadavg_and_process_states() -> None:
    """Load from /proc/loadavg; process counts from /proc/PID/stat as psutil groups them."""
    assert mini.parse_loadavg(fixture("proc-loadavg.txt")) == {
        "load_1min": 0.92, "load_5min": 0.92, "load_15min": 0.65, "thread_count": 120}
    stats = ["1 (systemd) S 0 1 1", "42 (tmux: server) R 1 42", "43 (odd) name) Z 1 43",
             "44 (kworker/0:1) I 2 0", "45 (dd) D 1 45", "46 (gone) X 1 46", ""]
    assert mini.process_states(stats) == {"process_count": 6, "process_running": 1,
                                          "process_sleeping": 3, "process_zombie": 1}


def test_cpuinfo() -> None:
    """/proc/cpuinfo gives the model, physical cores and the average MHz."""
    assert mini.parse_cpuinfo(fixture("proc-cpuinfo.txt")) == {
        "cpu_model": "AMD EPYC", "cpu_count_physical": 2, "frequency_mhz": 2596.1}
    assert mini.parse_cpuinfo("") == {"cpu_model": None, "cpu_count_physical": None,
                                      "frequency_mhz": None}


def test_memory_without_zfs() -> None:
    """memory_monitor on recorded /proc/meminfo: the agent's fields in MiB and percent."""
    data = mini.memory_data(mini.parse_meminfo(fixture("proc-meminfo.txt")), None)
    assert data == {"total_mb": 24105.6, "available_mb": 23394.4, "used_mb": 414.6,
                    "free_mb": 22284.8, "percent": 2.9, "buffers_mb": 33.7,
                    "cached_mb": 1372.4, "swap_total_mb": 0.0, "swap_used_mb": 0.0,
                    "swap_free_mb": 0.0, "swap_percent": 0.0}


def test_memory_counts_zfs_arc_above_c_min_as_available() -> None:
    """With arcstats, ARC size - c_min is added to available (real arcstats fixture)."""
    meminfo = mini.parse_meminfo(
        "MemTotal: 65536000 kB\nMemFree: 10000000 kB\nMemAvailable: 12000000 kB\n"
        "Buffers: 0 kB\nCached: 1000000 kB\nSwapTotal: 1048576 kB\nSwapFree: 524288 kB\n")
    arc = mini.parse_arcstats(fixture("arcstats.txt"))
    assert (arc["size"], arc["c_min"], arc["c_max"]) == (14960038920, 1047890560, 32458756096)
    assert mini.memory_data(meminfo, arc) == {
        "total_mb": 64000.0, "available_mb": 24986.4, "used_mb": 53257.8, "free_mb": 9765.6,
        "percent": 61.0, "buffers_mb": 0.0, "cached_mb": 976.6, "swap_total_mb": 1024.0,
        "swap_used_mb": 512.0, "swap_free_mb": 512.0, "swap_percent": 50.0,
        "zfs_arc_mb": 14267.0, "zfs_arc_min_mb": 999.3, "zfs_arc_max_mb": 30955.1,
        "zfs_arc_reclaimable_mb": 13267.7}


def test_df_partitions_and_inodes() -> None:
    """df -kP and df -Pi rows; percent = used / (used + available), sizes in GiB/MiB."""
    rows = mini.parse_df(fixture("df-kP.txt"))
    inodes = mini.parse_df(fixture("df-Pi.txt"))
    assert sorted(rows) == ["/", "/dev", "/dev/shm", "/mnt/sandboxing/model_tools_env/v1/python",
                            "/sys/fs/cgroup"]
    assert rows["/"] == {"device": "/dev/vda", "size": 264212084 * 1024,
                         "used": 24690156 * 1024, "free": 81700756 * 1024}
    assert inodes["/"] == {"device": "/dev/vda", "size": 16777216, "used": 486211,
                           "free": 16291005}
    assert mini.partition_data(rows["/"], "ext4", inodes["/"]) == {
        "device": "/dev/vda", "fstype": "ext4", "total_gb": 251.97, "used_gb": 23.55,
        "free_gb": 77.92, "free_mb": 79785.9, "percent": 23.2, "inodes_percent": 2.9}


def test_df_rows_with_spaces_and_512_blocks() -> None:
    """Device names with spaces, mount points with spaces, and BSD's 512-byte blocks."""
    text = ("Filesystem 512-blocks Used Available Capacity Mounted on\n"
            "map auto_home 0 0 0 100% /System/Volumes/Data/home\n"
            "/dev/disk3s1 1000 250 750 25% /Volumes/My Disk\n")
    assert mini.parse_df(text) == {
        "/System/Volumes/Data/home": {"device": "map auto_home", "size": 0, "used": 0,
                                      "free": 0},
        "/Volumes/My Disk": {"device": "/dev/disk3s1", "size": 512000, "used": 128000,
                             "free": 384000}}


def test_disk_monitor_chooses_physical_filesystems() -> None:
    """Default choice: / and physical types from /proc/filesystems, minus exclude_fstypes."""
    extra = ("/dev/sdb1 /srv/my\\040data ext4 rw 0 0\n"
             "/dev/loop3 /snap/core/1 squashfs ro 0 0\n"
             "tank/home /home zfs rw 0 0\n")
    mounts = mini.parse_mounts(fixture("proc-mounts.txt") + extra)
    physical = mini.physical_fstypes(fixture("proc-filesystems.txt"))
    assert mounts["/srv/my data"] == ("/dev/sdb1", "ext4")
    assert {"ext4", "xfs", "btrfs", "squashfs", "zfs"} <= physical
    assert not {"tmpfs", "proc", "devtmpfs", "cgroup"} & physical
    rows = mini.parse_df(fixture("df-kP.txt"))
    row = {"device": "x", "size": 1, "used": 0, "free": 1}
    rows.update({"/srv/my data": row, "/snap/core/1": row, "/home": row})
    plugin = mini.DiskMonitor(mini.plugin_options("t", "disk_monitor", None), None)
    assert plugin.chosen(rows, mounts, physical) == ["/", "/home", "/srv/my data"]
    listed = mini.DiskMonitor(mini.plugin_options("t", "disk_monitor",
                                                  {"mountpoints": ["/nope"]}), None)
    assert listed.chosen(rows, mounts, physical) == ["/nope"]


def test_diskstats() -> None:
    """/proc/diskstats: bytes from 512-byte sectors, counts and milliseconds."""
    disks = mini.parse_diskstats(fixture("proc-diskstats.txt"))
    assert disks["vda"] == {"read_bytes": 5494746 * 512, "write_bytes": 12980224 * 512,
                            "read_count": 92430, "write_count": 216092,
                            "read_time_ms": 102243, "write_time_ms": 237678}
    assert sorted(disks) == [*(f"loop{i}" for i in range(8)), "vda", "zram0"]


def test_net_dev_and_connections() -> None:
    """/proc/net/dev counters per interface; TCP states and UDP sockets counted."""
    interfaces = mini.parse_net_dev(fixture("proc-net-dev.txt"))
    assert sorted(interfaces) == ["eth0", "ifb0", "ifb1", "lo"]
    assert interfaces["eth0"] == {"bytes_recv": 582115592, "packets_recv": 17782, "errin": 0,
                                  "dropin": 0, "bytes_sent": 1265956, "packets_sent": 9421,
                                  "errout": 0, "dropout": 0}
    assert mini.parse_net_dev("  eth1:1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n")["eth1"] == {
        "bytes_recv": 1, "packets_recv": 2, "errin": 3, "dropin": 4, "bytes_sent": 9,
        "packets_sent": 10, "errout": 11, "dropout": 12}
    assert mini.count_connections([fixture("proc-net-tcp.txt")], [fixture("proc-net-udp.txt")]) \
        == {"total": 10, "established": 0, "listen": 3, "time_wait": 4, "close_wait": 0,
            "other": 3}


def test_ping_output() -> None:
    """iputils, BSD and busybox summaries; total loss and an unknown host give an error."""
    assert mini.parse_ping(fixture("ping-ok.txt")) == {
        "rtt_min": 0.023, "rtt_avg": 0.032, "rtt_max": 0.039, "rtt_mdev": 0.006,
        "loss_percent": 0.0, "transmitted": 3, "received": 3, "reachable": 1}
    unknown = mini.CommandResult(["ping"], returncode=2,
                                 stderr=fixture("ping-unknown-host.txt"))
    assert mini.ping_result(unknown) == {
        "rtt_min": None, "rtt_avg": None, "rtt_max": None, "rtt_mdev": None,
        "loss_percent": 100.0, "transmitted": 0, "received": 0, "reachable": 0,
        "error": "ping: nohost.invalid: Name or service not known"}
    # Written in iputils' and FreeBSD's documented summary formats (not recorded here).
    lost = ("--- 10.9.9.9 ping statistics ---\n"
            "3 packets transmitted, 0 received, 100% packet loss, time 2036ms\n")
    assert mini.ping_result(mini.CommandResult(["ping"], returncode=1, stdout=lost)) == {
        "rtt_min": None, "rtt_avg": None, "rtt_max": None, "rtt_mdev": None,
        "loss_percent": 100.0, "transmitted": 3, "received": 0, "reachable": 0,
        "error": "exit code 1: ping"}
    bsd = ("3 packets transmitted, 2 packets received, 33.3% packet loss\n"
           "round-trip min/avg/max/stddev = 0.050/0.066/0.085/0.014 ms\n")
    assert mini.parse_ping(bsd) == {
        "rtt_min": 0.05, "rtt_avg": 0.066, "rtt_max": 0.085, "rtt_mdev": 0.014,
        "loss_percent": 33.3, "transmitted": 3, "received": 2, "reachable": 1}
    busybox = ("2 packets transmitted, 2 packets received, 0% packet loss\n"
               "round-trip min/avg/max = 0.061/0.070/0.080 ms\n")
    assert mini.parse_ping(busybox) == {
        "rtt_min": 0.061, "rtt_avg": 0.07, "rtt_max": 0.08, "rtt_mdev": None,
        "loss_percent": 0.0, "transmitted": 2, "received": 2, "reachable": 1}


def test_os_release() -> None:
    """/etc/os-release values, quoted or not; comments skipped."""
    text = '# comment\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
    assert mini.parse_os_release(text) == {
        "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)", "ID": "debian", "VERSION_ID": "12"}


# --- Monitoring Plugins output ---------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("10", {"start": 0.0, "end": 10.0, "inside": False}),
    ("10:", {"start": 10.0, "end": None, "inside": False}),
    ("~:10", {"start": None, "end": 10.0, "inside": False}),
    ("10:20", {"start": 10.0, "end": 20.0, "inside": False}),
    ("@10:20", {"start": 10.0, "end": 20.0, "inside": True}),
    (":5", {"start": 0.0, "end": 5.0, "inside": False}),
    ("", None),
])
def test_range_parsing(text: str, expected: Any) -> None:
    """[@][start:][end] with ~ for minus infinity; None stands for an infinite end."""
    assert mini.parse_range(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("abc", "bad range end 'abc'"), ("@", "empty range"), ("1:2:3", "bad range end '2:3'"),
    ("10:5", "range start 10 is above its end 5"),
    ("-5.5:-1e1", "range start -5.5 is above its end -10"), ("5%", "bad range end '5%'")])
def test_bad_ranges_raise(text: str, message: str) -> None:
    """Anything else is a ValueError saying what is wrong."""
    with pytest.raises(ValueError) as info:
        mini.parse_range(text)
    assert str(info.value) == message


@pytest.mark.parametrize(("rng", "alerting", "quiet"), [
    ("10", [-1, 10.5], [0, 5, 10]),
    ("10:", [9.9, -3], [10, 1e9]),
    ("~:10", [10.1], [-1e9, 10]),
    ("10:20", [9, 21], [10, 15, 20]),
    ("@10:20", [10, 15, 20], [9, 21]),
])
def test_range_semantics(rng: str, alerting: list[float], quiet: list[float]) -> None:
    """Alert outside the range, or inside it with @, ends included."""
    parsed = mini.parse_range(rng)
    assert [mini.range_alerts(parsed, v) for v in alerting] == [True] * len(alerting)
    assert [mini.range_alerts(parsed, v) for v in quiet] == [False] * len(quiet)


def test_perfdata_per_the_guidelines() -> None:
    """Quoted labels, '' escapes, UOMs, U, empty fields, dropped semicolons, bad items."""
    text = ("'label with spaces'=5s;1;2;0;10 'it''s'=1 time=0.5ms;;;0 load1=0.3;5;10;0; "
            "u=U pct=42%;80;90 bytes=1024B;;;0;4096 junk empty=;; comma=1,5 c=12c "
            "neg=-3.5;~:0;@-10:-5 badrange=7;x;9")
    r = {"start": 0.0, "end": None, "inside": False}
    assert dict(mini.parse_perfdata(text)) == {
        "label with spaces": {"value": 5.0, "uom": "s", "warn": {**r, "end": 1.0},
                              "crit": {**r, "end": 2.0}, "min": 0.0, "max": 10.0},
        "it's": {"value": 1.0, "uom": "", "warn": None, "crit": None, "min": None, "max": None},
        "time": {"value": 0.5, "uom": "ms", "warn": None, "crit": None, "min": 0.0, "max": None},
        "load1": {"value": 0.3, "uom": "", "warn": {**r, "end": 5.0},
                  "crit": {**r, "end": 10.0}, "min": 0.0, "max": None},
        "u": {"value": None, "uom": "", "warn": None, "crit": None, "min": None, "max": None},
        "pct": {"value": 42.0, "uom": "%", "warn": {**r, "end": 80.0},
                "crit": {**r, "end": 90.0}, "min": None, "max": None},
        "bytes": {"value": 1024.0, "uom": "B", "warn": None, "crit": None, "min": 0.0,
                  "max": 4096.0},
        "c": {"value": 12.0, "uom": "c", "warn": None, "crit": None, "min": None, "max": None},
        "neg": {"value": -3.5, "uom": "", "warn": {"start": None, "end": 0.0, "inside": False},
                "crit": {"start": -10.0, "end": -5.0, "inside": True}, "min": None,
                "max": None},
        "badrange": {"value": 7.0, "uom": "", "warn": None, "crit": {**r, "end": 9.0},
                     "min": None, "max": None},
    }


def test_long_output_with_perfdata_on_later_lines() -> None:
    """The guidelines' multi-line example: perfdata after | on line 1 and on later lines."""
    output = fixture("nagios-long-output.txt")  # the Monitoring Plugins guidelines' example
    text, long_text, perf = mini.split_output(output)
    assert text == "DISK OK - free space: / 3326 MB (56%);"
    assert long_text == "/ 15272 MB (77%);\n/boot 68 MB (69%);\n/home 69357 MB (27%);\n" \
                        "/var/log 819 MB (84%);"
    assert {k: v["value"] for k, v in mini.parse_perfdata(perf)} == {
        "/": 2643.0, "/boot": 68.0, "/home": 69357.0, "/var/log": 818.0}


@pytest.mark.parametrize(("result", "expected"), [
    ({"returncode": 0, "stdout": "OK - load 0.1|load1=0.1;5;10\n"},
     {"status_code": 0, "status": "OK", "output": "OK - load 0.1", "load1": 0.1}),
    ({"returncode": 1, "stdout": "WARN\n"}, {"status_code": 1, "status": "WARNING",
                                             "output": "WARN"}),
    ({"returncode": 2, "stdout": "OK text, status from the code\n"},
     {"status_code": 2, "status": "CRITICAL", "output": "OK text, status from the code"}),
    ({"returncode": 3, "stdout": "", "stderr": "check_x: bad option\n"},
     {"status_code": 3, "status": "UNKNOWN", "output": "check_x: bad option"}),
    ({"returncode": 4, "stdout": "odd\n"}, {"status_code": 3, "status": "UNKNOWN",
                                            "output": "exit code 4: odd"}),
    ({"returncode": 255, "stdout": ""}, {"status_code": 3, "status": "UNKNOWN",
                                         "output": "exit code 255"}),
    ({"returncode": 0, "stdout": ""}, {"status_code": 0, "status": "OK", "output": ""}),
    ({"returncode": -9, "stdout": "half a line"},
     {"status_code": 3, "status": "UNKNOWN", "output": "killed by SIGKILL: /c: half a line"}),
    ({"returncode": -9, "timed_out": True, "stdout": "partial | x=1"},
     {"status_code": 3, "status": "UNKNOWN", "output": "timed out after 30 s, killed"}),
    ({"error": "cannot run /c: No such file or directory"},
     {"status_code": 3, "status": "UNKNOWN",
      "output": "cannot run /c: No such file or directory"}),
    ({"returncode": 0, "stdout": "OK | /=10% 'a b'=1 status=5 a.b=2 a_b=3 " + "x" * 1100},
     {"status_code": 0, "status": "OK", "output": "OK", "root": 10.0, "a_b": 1.0,
      "status_2": 5.0, "a_b_2": 2.0, "a_b_3": 3.0}),
    ({"returncode": 0, "stdout": "y" * 1200}, {"status_code": 0, "status": "OK",
                                              "output": "y" * 1000}),
])
def test_nagios_fields(result: dict[str, Any], expected: dict[str, Any]) -> None:
    """Status from the exit code only, stdout else stderr, one field per perfdata label
    (a repeated field name gets _2, _3), output at most 1000 characters."""
    fields = mini.nagios_fields("chk", mini.CommandResult(["/c"], **result), 30.0)
    assert fields == {f"chk_{k}": v for k, v in expected.items()}


@pytest.mark.parametrize(("label", "field"), [
    ("/", "root"), ("/var/log", "var_log"), ("load1", "load1"), ("time taken", "time_taken"),
    ("'weird'!", "weird"), ("%", "value")])
def test_field_label(label: str, field: str) -> None:
    """Perfdata labels become [A-Za-z0-9_] field names, as in the agent."""
    assert mini.field_label(label) == field


# --- Plugins and the client, in process ------------------------------------------


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_nagios_runner_with_real_scripts(tmp_path: Path) -> None:
    """Real checks exiting 0-3 and 7, timing out, killed by a signal, stderr-only, missing;
    all at once, so the round takes as long as the slowest check."""
    checks = {
        "ok": _script(tmp_path / "ok", "echo 'OK - fine | t=0.5s;1;2;0'\n"),
        "warn": _script(tmp_path / "warn", "echo 'WARNING - meh'; exit 1\n"),
        "crit": _script(tmp_path / "crit", "echo 'CRITICAL - bad | free=5%;20;10'; exit 2\n"),
        "unknown": _script(tmp_path / "unknown", "echo 'oops' >&2; exit 3\n"),
        "seven": _script(tmp_path / "seven", "echo 'OK but exit 7'; exit 7\n"),
        "slow": _script(tmp_path / "slow", "echo 'started'; exec sleep 30\n"),
        "killed": _script(tmp_path / "killed", "echo 'dying'; kill -KILL $$\n"),
    }
    commands = [{"name": n, "command": [p]} for n, p in checks.items()]
    commands.append({"name": "missing", "command": str(tmp_path / "nope") + " -x"})
    options = mini.plugin_options("t", "nagios_runner", {"commands": commands,
                                                         "command_timeout": 0.5})
    started = mini.time.monotonic()
    data = mini.NagiosRunner(options, mini.threading.Event()).collect()
    assert mini.time.monotonic() - started < 3
    assert data == {
        "ok_status_code": 0, "ok_status": "OK", "ok_output": "OK - fine", "ok_t": 0.5,
        "warn_status_code": 1, "warn_status": "WARNING", "warn_output": "WARNING - meh",
        "crit_status_code": 2, "crit_status": "CRITICAL", "crit_output": "CRITICAL - bad",
        "crit_free": 5.0,
        "unknown_status_code": 3, "unknown_status": "UNKNOWN", "unknown_output": "oops",
        "seven_status_code": 3, "seven_status": "UNKNOWN",
        "seven_output": "exit code 7: OK but exit 7",
        "slow_status_code": 3, "slow_status": "UNKNOWN",
        "slow_output": "timed out after 0.5 s, killed",
        "killed_status_code": 3, "killed_status": "UNKNOWN",
        "killed_output": f"killed by SIGKILL: {checks['killed']}: dying",
        "missing_status_code": 3, "missing_status": "UNKNOWN",
        "missing_output": f"cannot run {tmp_path / 'nope'}: No such file or directory",
    }


def test_plugins_collect_on_this_host() -> None:
    """Every default plugin collects here with the agent's field names, no error."""
    config = mini.parse_config("", "<t>")
    plugins = mini.make_plugins(config, mini.threading.Event())
    assert [p.name for p in plugins] == ["os_info", "cpu_monitor", "memory_monitor",
                                         "disk_monitor", "network_monitor"]
    data = {p.name: p.collect() for p in plugins}
    assert set(data["cpu_monitor"]) == {
        "cpu_percent", "per_core", "cpu_count", "load_1min", "load_5min", "load_15min",
        "thread_count", "frequency_mhz", "frequency_min_mhz", "frequency_max_mhz",
        "process_count", "process_running", "process_sleeping", "process_zombie",
        "uptime_seconds", "boot_time"}
    assert set(data["memory_monitor"]) >= {"percent", "available_mb", "swap_percent"}
    assert "/" in data["disk_monitor"]["partitions"]
    assert set(data["disk_monitor"]["partitions"]["/"]) == {
        "device", "fstype", "total_gb", "used_gb", "free_gb", "free_mb", "percent",
        "inodes_percent"}
    assert set(data["network_monitor"]) == {"interfaces", "bytes_sent", "bytes_recv",
                                            "errors_total", "dropped", "connections"}
    assert "lo" not in data["network_monitor"]["interfaces"]
    assert data["os_info"]["agent"] == "hbc_mini"
    assert not any("error" in d for d in data.values())


def _client(**config: Any) -> Any:
    client = mini.Client(mini.parse_config(json.dumps(config), "<t>"), [])
    return client


def test_command_allow_list() -> None:
    """Only allow-listed names run, as argv plus the server's args; UPD needs update_command."""
    client = _client(allowed_commands={"df": ["df", "-h"]}, update_command="/opt/up --now",
                     command_timeout=5, update_timeout=99)
    try:
        assert client.command_plan("CMD", {"cmd": "df", "args": ["/"]}) == (
            ["df", "-h", "/"], None, 5.0, None)
        assert client.command_plan("CMD", {"cmd": "rm", "args": []}) == (
            None, None, 0, "command 'rm' is not in this host's allowed_commands")
        assert client.command_plan("CMD", {"cmd": "df", "args": "/; rm -rf /"}) == (
            None, None, 0, "args must be a list of strings")
        argv, env, timeout, why = client.command_plan("UPD", {"version": "0.2.0"})
        assert (argv, env["HEARTBEAT_VERSION"], timeout, why) == (
            ["/opt/up", "--now"], "0.2.0", 99.0, None)
    finally:
        client.shutdown()
    bare = _client()
    try:
        assert bare.command_plan("UPD", {}) == (
            None, None, 0, "no update_command is configured on this host")
    finally:
        bare.shutdown()


class _InlineThread:
    """threading.Thread that runs its target at start(), on the caller's thread."""

    def __init__(self, target: Any, args: tuple = (), daemon: bool = False) -> None:
        self.target, self.args = target, args

    def start(self) -> None:
        self.target(*self.args)


def test_cmd_flood_runs_a_few_at_once_and_the_rest_in_turn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A flood of CMDs starts at most 4 threads; the rest wait, beyond 64 waiting ignored."""
    monkeypatch.setattr(mini.threading, "Thread", _InlineThread)
    client = _client(allowed_commands={"up": ["uptime"]})
    started: list[Any] = []
    answered: list[Any] = []
    client.command_thread = lambda cmd_id, *rest: started.append(cmd_id)
    client.send = lambda message, to=None: answered.append(message["cmd_id"])
    server = ("127.0.0.1", 50003)
    try:
        for i in range(80):
            client.command("CMD", {"cmd_id": i, "cmd": "up"}, server)
        assert (started, len(client.waiting_commands)) == ([0, 1, 2, 3], 64)
        while len(answered) < len(started):
            client.results.put(("res", (started[len(answered)], 0, ""), server))
            client.drain_results(0.0)
        assert (answered, started) == (list(range(68)), list(range(68)))
    finally:
        client.shutdown()


def test_ack_sets_the_rtt_of_the_next_heartbeat() -> None:
    """RTT = now - the ts the ACK echoes, in ms; an ACK from the future is ignored."""
    client = _client()
    try:
        client.handle({"ID": "ACK", "ts": mini.time.time() - 0.25}, ("127.0.0.1", 1))
        assert 250 <= client.rtt < 1000
        client.handle({"ID": "ACK", "ts": mini.time.time() + 60}, ("127.0.0.1", 1))
        assert 250 <= client.rtt < 1000
    finally:
        client.shutdown()


def test_example_config_is_valid() -> None:
    """etc/hbc.example.json loads, and every top-level key and plugin is in it."""
    path = SCRIPT.parent.parent / "etc" / "hbc.example.json"
    config, source = mini.load_config(str(path))
    raw = json.loads(path.read_text())
    assert source == str(path)
    assert set(raw) == set(mini.TOP_KEYS) - {"plugin_dirs"}
    assert set(raw["plugins"]) == set(mini.PLUGINS)
    assert [c["argv"][0] for c in config["plugins"]["nagios_runner"]["commands"]] == [
        "/usr/lib/nagios/plugins/check_load", "/usr/lib/nagios/plugins/check_disk"]


def test_example_config_tuning_keys_are_the_defaults() -> None:
    """etc/hbc.example.json shows the default of each tuning key, as the YAML example does."""
    path = SCRIPT.parent.parent / "etc" / "hbc.example.json"
    raw = json.loads(path.read_text())
    tuning = ("hb_port", "interval", "command_timeout", "update_timeout", "max_datagram",
              "batch_delay", "resolve_interval", "sign_window")
    assert {k: raw[k] for k in tuning} == {k: mini.TOP_KEYS[k][0] for k in tuning}


def test_a_hanging_lookup_holds_back_no_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names due for a lookup are looked up on a thread, one per name at a time: a resolver
    that hangs for one server delays no heartbeat to another, and its answer is taken
    when it comes."""
    import socket
    import threading

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(5)
    port = sink.getsockname()[1]
    release = threading.Event()
    asked = threading.Event()
    lookups: list[str] = []

    def resolve(host: str, _port: int) -> list[Any]:
        lookups.append(host)
        if host == "slow":
            asked.set()
            release.wait(5)
        return [(socket.AF_INET, ("127.0.0.1", port))]

    monkeypatch.setattr(mini, "resolve", resolve)
    client = mini.Client(mini.parse_config(json.dumps({"hb_port": port}), "<t>"),
                         ["good", "slow"])
    try:
        client.addresses["good"] = [(socket.AF_INET, ("127.0.0.1", port))]
        client.resolved_at["good"] = mini.time.monotonic()
        client.look_up_in_background()
        client.look_up_in_background()  # still running: not started twice
        client.send_heartbeat()
        assert json.loads(sink.recv(4096))["ID"] == "HTB"
        assert asked.wait(5)
        assert lookups == ["slow"] and client.addresses["slow"] == []
        release.set()
        kind, server, found = client.results.get(timeout=5)
        client.results.put((kind, server, found))
        client.drain_results(0.0)
        assert client.addresses["slow"] == [(socket.AF_INET, ("127.0.0.1", port))]
        assert client.looking_up == set()
    finally:
        release.set()
        client.shutdown()
        sink.close()
