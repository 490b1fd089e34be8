"""nagios_runner: the Monitoring Plugins output grammar, and real check scripts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from heartbeat.agent.nagios import (
    CheckOutput,
    PerfValue,
    Range,
    field_label,
    parse_output,
    parse_perfdata,
    parse_range,
)
from heartbeat.agent.plugin import PluginContext, discover_plugins
from tests.agent_fakes import sync_threads

INF = math.inf


@pytest.mark.parametrize(("text", "expected"), [
    ("10", Range(0, 10)),
    ("10:", Range(10, INF)),
    ("~:10", Range(-INF, 10)),
    ("10:20", Range(10, 20)),
    ("@10:20", Range(10, 20, inside=True)),
    ("-5.5:-1e1", None),
    ("@~:0", Range(-INF, 0, inside=True)),
    ("0.5", Range(0, 0.5)),
])
def test_ranges(text: str, expected: Range | None) -> None:
    """warn/crit ranges follow [@][start:][end] with ~ for minus infinity."""
    if expected is None:
        with pytest.raises(ValueError, match="above its end"):
            parse_range(text)
    else:
        assert parse_range(text) == expected


def test_range_alerting_semantics() -> None:
    """Outside the range alerts; with @ inside alerts (guidelines' table)."""
    assert [parse_range("10").alerts(v) for v in (-1, 0, 10, 11)] == [True, False, False, True]
    assert [parse_range("10:").alerts(v) for v in (9, 10, 1e9)] == [True, False, False]
    assert [parse_range("~:10").alerts(v) for v in (-1e9, 10, 11)] == [False, False, True]
    assert [parse_range("@10:20").alerts(v) for v in (9, 10, 20, 21)] == [
        False, True, True, False]


def test_perfdata_full_grammar() -> None:
    """Quoted labels, '' quotes, UOMs, U, empty and dropped trailing fields all parse."""
    values, problems = parse_perfdata(
        "load1=0.300;5.000;10.000;0; 'C:\\ Used Space'=10.5GB;15;18;0;20 'it''s'=1 "
        "time=0.003s;;;0.000000 temp=U;50;60 b=2 c=3%;@1:2;~:4;;")
    assert problems == []
    assert values == [
        PerfValue("load1", 0.3, "", Range(0, 5), Range(0, 10), 0.0, None),
        PerfValue("C:\\ Used Space", 10.5, "GB", Range(0, 15), Range(0, 18), 0.0, 20.0),
        PerfValue("it's", 1.0),
        PerfValue("time", 0.003, "s", None, None, 0.0, None),
        PerfValue("temp", None, "", Range(0, 50), Range(0, 60)),
        PerfValue("b", 2.0),
        PerfValue("c", 3.0, "%", Range(1, 2, inside=True), Range(-INF, 4)),
    ]


def test_bad_perfdata_items_are_skipped_with_a_note() -> None:
    """A malformed item is noted and skipped; the items around it still parse."""
    values, problems = parse_perfdata("a=1 junk b=x c=2;1:0 d=4")
    assert [v.label for v in values] == ["a", "d"]
    assert problems == ["no '=' in 'junk'", "b: bad value 'x'",
                        "range start 1 is above its end 0"]


def test_long_output_with_perfdata_on_later_lines() -> None:
    """Perfdata after a | on a later line continues to the end (the guidelines' example)."""
    output = ("DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n"
              "/ 15272 MB (77%);\n"
              "/boot 68 MB (69%);\n"
              "/home 69357 MB (27%);\n"
              "/var/log 819 MB (84%); | /boot=68MB;88;93;0;98\n"
              "/home=69357MB;253404;253409;0;253414 \n"
              "/var/log=818MB;970;975;0;980\n")
    parsed = parse_output(output)
    assert parsed.text == "DISK OK - free space: / 3326 MB (56%);"
    assert parsed.long_text == ("/ 15272 MB (77%);\n/boot 68 MB (69%);\n"
                                "/home 69357 MB (27%);\n/var/log 819 MB (84%);")
    assert [(v.label, v.value, v.uom) for v in parsed.perfdata] == [
        ("/", 2643.0, "MB"), ("/boot", 68.0, "MB"), ("/home", 69357.0, "MB"),
        ("/var/log", 818.0, "MB")]
    assert [field_label(v.label) for v in parsed.perfdata] == ["root", "boot", "home",
                                                               "var_log"]


def test_output_without_perfdata() -> None:
    """Plain text has no perfdata and no problems."""
    assert parse_output("PING OK - Packet loss = 0%\n") == CheckOutput("PING OK - Packet loss = 0%")


def script(directory: Path, name: str, body: str) -> str:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def runner(commands: list[dict[str, Any]], **options: Any) -> Any:
    from twisted.internet import reactor

    cls = discover_plugins([], "x")["nagios_runner"]
    from heartbeat.config.loader import parse_section

    opts = parse_section(cls.Options, {"commands": commands, **options}, "x")
    return cls(opts, PluginContext(reactor, sync_threads))


@pytest_twisted.ensureDeferred
async def test_real_checks_exit_codes_timeout_and_signal(tmp_path: Path) -> None:
    """Real scripts: exit 0-3 map to their status, 4+ / timeout / signal are UNKNOWN."""
    commands = [
        {"name": "ok",
         "command": script(tmp_path, "ok", "echo 'LOAD OK - 0.3 | load1=0.3;5;10;0;'")},
        {"name": "warn", "command": [script(tmp_path, "warn", 'echo "WARN - $1"; exit 1'),
                                     "arg with space"]},
        {"name": "crit", "command": script(tmp_path, "crit",
                                           "echo 'DISK CRITICAL | /=98%;80;90 /boot=U'; exit 2")},
        {"name": "unknown", "command": script(tmp_path, "unk", "echo 'what?'; exit 3")},
        {"name": "odd", "command": script(tmp_path, "odd", "echo 'weird'; exit 7")},
        {"name": "stderr", "command": script(tmp_path, "err", "echo 'only on stderr' >&2; exit 2")},
        {"name": "slow", "command": script(tmp_path, "slow", "exec sleep 30")},
        {"name": "killed", "command": script(tmp_path, "killed", "echo partial; kill -9 $$")},
        {"name": "missing", "command": "/nonexistent/check_nothing -w 1"},
    ]
    plugin = runner(commands, command_timeout=1.0)
    data = await plugin.collect()
    assert data == {
        "ok_status_code": 0, "ok_status": "OK", "ok_output": "LOAD OK - 0.3", "ok_load1": 0.3,
        "warn_status_code": 1, "warn_status": "WARNING", "warn_output": "WARN - arg with space",
        "crit_status_code": 2, "crit_status": "CRITICAL", "crit_output": "DISK CRITICAL",
        "crit_root": 98.0, "crit_boot": None,
        "unknown_status_code": 3, "unknown_status": "UNKNOWN", "unknown_output": "what?",
        "odd_status_code": 3, "odd_status": "UNKNOWN", "odd_output": "exit code 7: weird",
        "stderr_status_code": 2, "stderr_status": "CRITICAL", "stderr_output": "only on stderr",
        "slow_status_code": 3, "slow_status": "UNKNOWN",
        "slow_output": "timed out after 1 s, killed",
        "killed_status_code": 3, "killed_status": "UNKNOWN",
        "killed_output": f"killed by SIGKILL: {tmp_path / 'killed'}: partial",
        "missing_status_code": 3, "missing_status": "UNKNOWN",
        "missing_output": "not found or not executable: /nonexistent/check_nothing",
    }


def test_startup_check_warns_about_missing_programs(tmp_path: Path) -> None:
    """Absolute command paths that are missing or not executable are warned about at start."""
    from twisted.logger import LogLevel, globalLogPublisher

    plain = tmp_path / "plain"
    plain.write_text("echo hi\n")
    plugin = runner([{"name": "a", "command": "/nonexistent/check_a"},
                     {"name": "b", "command": str(plain)},
                     {"name": "c", "command": "check_on_path -w 1"}])
    seen: list[str] = []

    def observe(event: dict) -> None:
        if event.get("log_level") == LogLevel.warn and "check" in event:
            seen.append(f"{event['check']}: {event['program']} {event['problem']}")

    globalLogPublisher.addObserver(observe)
    try:
        plugin.check()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert seen == ["a: /nonexistent/check_a does not exist", f"b: {plain} is not executable"]


@pytest_twisted.ensureDeferred
async def test_timeout_is_kept_when_the_check_leaves_a_child_holding_its_output(
        tmp_path: Path) -> None:
    """A timed-out check whose child still holds stdout is answered at the timeout."""
    from twisted.internet import reactor

    started = reactor.seconds()
    plugin = runner([{"name": "wrapper", "command": script(tmp_path, "wrapper", "sleep 4")}],
                    command_timeout=0.5)
    data = await plugin.collect()
    assert (data, reactor.seconds() - started < 2) == ({
        "wrapper_status_code": 3, "wrapper_status": "UNKNOWN",
        "wrapper_output": "timed out after 0.5 s, killed"}, True)


@pytest_twisted.ensureDeferred
async def test_timeout_kills_the_children_of_the_check_too(tmp_path: Path) -> None:
    """A timed-out check's own children are killed with it, not left running as orphans."""
    import psutil

    pid_file = tmp_path / "child.pid"
    body = f"sleep 30 & echo $! > {pid_file}; wait"
    plugin = runner([{"name": "wrapper", "command": script(tmp_path, "wrapper", body)}],
                    command_timeout=0.5)
    await plugin.collect()

    def status_once_killed() -> str:
        # SIGKILL is sent before collect() returns; it takes effect when the child
        # is next scheduled, which on a loaded machine can be a moment later.
        try:
            child = psutil.Process(int(pid_file.read_text()))
            child.wait(timeout=5)
        except psutil.NoSuchProcess:
            return "gone"
        except psutil.TimeoutExpired:
            status = child.status()
            child.kill()
            return str(status)
        return "gone"

    status = await deferToThread(status_once_killed)
    assert status in ("gone", psutil.STATUS_ZOMBIE)
