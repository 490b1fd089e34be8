"""Host objects' JSON kept between events (HostViews.json_bytes): always the current object.

Every check builds each host's object afresh (``HostViews.json``, and views that keep
nothing) and compares it with the kept JSON, the feed's snapshot pages (whole and
compact) and
``GET /api/0/hosts`` (whole and paged), after the kept JSON was filled: a change that
reached no event would show as a difference.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heartbeat.config.server import HostConfig
from heartbeat.server.registry import PendingCommand
from heartbeat.server.web.hostview import HostViews
from tests.apistack import START, Stack

THRESHOLDS = {"cpu_monitor": {"cpu_percent": {"warning": 80.0, "critical": 90.0}}}
HOSTS = {"router": HostConfig(description="core router", tags=["net"]),
         "web": HostConfig(parents=["router"], description="shop front", tags=["linux"],
                           recover_after=2)}


def _stack(directory: Path, hosts: dict[str, HostConfig] | None = None) -> Stack:
    return Stack(directory, hosts=HOSTS if hosts is None else hosts, thresholds=THRESHOLDS)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = _stack(tmp_path)
    yield stack
    stack.close()


def snapshot_hosts(stack: Stack, compact: bool = False) -> dict[str, Any]:
    """The hosts of a whole snapshot as the feed sends it, by name (``compact``: with the
    first page's defaults filled in, as the pages' feed does)."""
    hosts: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    for page in stack.hub.snapshot(compact=compact).pages():
        message = orjson.loads(page)
        defaults = message.get("defaults", defaults)
        for host in message["hosts"]:
            hosts[host["name"]] = {**defaults, **host}
    assert bool(defaults) == compact
    return hosts


def assert_current(stack: Stack) -> None:
    """The kept JSON of every host, and the snapshot, equal the object built now."""
    views = stack.server.views
    fresh = HostViews(views.registry, views.alerts, views.annotations)
    assert views.kept and not fresh.kept
    expected = {host.name: fresh.json(host) for host in stack.registry}
    for host in stack.registry:
        assert orjson.loads(views.json_bytes(host)) == expected[host.name], host.name
        assert views.json(host) == expected[host.name]
        assert views.json_bytes(host) == fresh.json_bytes(host)
    assert snapshot_hosts(stack) == expected
    assert snapshot_hosts(stack, compact=True) == expected
    listed = stack.call("GET", "/api/0/hosts").json["hosts"]
    paged = stack.call("GET", "/api/0/hosts?limit=2").json["hosts"]
    assert {host.pop("role") for host in listed + paged} <= {"owner"}  # no users: all may
    assert listed == [expected[name] for name in sorted(expected)]
    assert paged == listed[:2]


def call(stack: Stack, method: str, path: str, body: Any = None) -> Any:
    response = stack.call(method, path, body)
    assert response.status < 300, response
    return response.json


def test_kept_json_follows_every_kind_of_change(stack: Stack) -> None:
    """State changes, plugin data and alerts, messages, commands, covering by maintenance,
    silence and acknowledgement (also as the clock opens and ends them), flapping,
    dependencies, delete and return: the kept JSON is the object built now, each time."""

    def flap() -> None:
        stack.heartbeat("router")
        stack.clock.advance(41)
        stack.server.monitor.check()

    steps = [
        lambda: stack.heartbeat("router", "10.0.0.1"),
        lambda: stack.send({"ID": "HTB", "name": "web", "rtt": 1.5, "interval": 30}),
        lambda: stack.heartbeat("web", "192.0.2.7"),  # host.address
        lambda: stack.send({"ID": "PLG", "name": "web",
                            "plugins": {"cpu_monitor": {"cpu_percent": 85.0}}}),  # WARNING
        lambda: stack.send({"ID": "PLG", "name": "web",
                            "plugins": {"cpu_monitor": {"cpu_percent": 95.0}}}),  # CRITICAL
        lambda: stack.send({"ID": "MSG", "name": "web", "text": "disk check done"}),
        lambda: stack.send({"ID": "BOOT", "name": "web", "boot_time": START - 100}),
        lambda: call(stack, "POST", "/api/0/hosts/web/commands", {"cmd": "uptime"}),
        lambda: stack.send({"ID": "RES", "name": "web", "rc": 0, "output": "up",
                            "cmd_id": next(iter(stack.registry.hosts["web"].pending))}),
        lambda: stack.send({"ID": "PLG", "name": "web",
                            "plugins": {"cpu_monitor": {"cpu_percent": 5.0}}}),  # recovered
        lambda: call(stack, "POST", "/api/0/maintenance",
                     {"hosts": ["web"], "start": stack.clock.seconds() + 60, "duration": 60}),
        lambda: stack.clock.advance(61),  # the window opens by the clock: no event yet
        lambda: stack.clock.advance(60),  # and ends
        lambda: call(stack, "POST", "/api/0/silences",
                     {"host": "w*", "duration": 30, "comment": "deploy"}),
        lambda: stack.clock.advance(31),  # the silence ends by the clock
        lambda: stack.send({"ID": "SHUT", "name": "web"}),  # DOWN
        lambda: call(stack, "POST", "/api/0/hosts/web/ack", {"comment": "on it"}),
        lambda: stack.heartbeat("web", "192.0.2.7"),  # 1 of recover_after 2: recovering
        lambda: stack.heartbeat("web", "192.0.2.7"),  # UP
        lambda: stack.heartbeat("router", "10.0.0.1"),
        lambda: stack.clock.advance(45),
        stack.server.monitor.check,  # both overdue: router DOWN, web UNREACHABLE
        lambda: stack.heartbeat("router", "10.0.0.1"),  # router UP
        *[flap] * 6,  # router flaps
        lambda: call(stack, "DELETE", "/api/0/hosts/web"),
        lambda: stack.heartbeat("web", "192.0.2.9"),  # back, as new
    ]
    assert_current(stack)
    for step in steps:
        step()
        assert_current(stack)
    assert stack.registry.flapping("router")  # the walk reached each kind it names
    assert any(event.kind == "host.unreachable" for event in stack.events)
    assert any(event.kind == "maintenance.created" for event in stack.events)
    assert any(event.kind == "alert" for event in stack.events)


def test_changes_without_an_event_start_again(stack: Stack) -> None:
    """A restore from the store and commands taken over from a shared store change hosts
    no event names: the kept JSON of every host is dropped (Registry.replaced)."""
    stack.heartbeat("web")
    stack.heartbeat("router")
    assert_current(stack)
    command = PendingCommand("1-1", "CMD", {"cmd": "uptime", "args": []}, START, "alice")
    stack.registry.take_over_commands({"web": {"1-1": command}})
    assert stack.server.views.json(stack.registry.hosts["web"])["pending_commands"] == 1
    assert_current(stack)
    host = stack.registry.hosts["web"]
    replaced = type(host)(host.name, state=host.state, addr="198.51.100.1")
    stack.registry.restore([replaced], stack.clock.seconds())
    assert_current(stack)


def test_a_restart_shows_the_config_it_was_given(tmp_path: Path) -> None:
    """Descriptions and tags come from the config, fixed while the server runs: a server
    started again with another config shows the new ones for the restored hosts."""
    first = _stack(tmp_path)
    first.heartbeat("web")
    assert_current(first)
    first.close()
    again = _stack(tmp_path, {"web": HostConfig(description="moved", tags=["dmz"])})
    body = orjson.loads(again.server.views.json_bytes(again.registry.hosts["web"]))
    assert (body["description"], body["tags"], body["parents"]) == ("moved", ["dmz"], [])
    assert_current(again)
    again.close()


ACTIONS = st.one_of(
    st.tuples(st.just("htb"), st.sampled_from(["router", "web", "db"]),
              st.sampled_from(["10.0.0.1", "10.0.0.2"]), st.floats(0.1, 9.9)),
    st.tuples(st.just("plg"), st.sampled_from(["router", "web", "db"]),
              st.sampled_from([5.0, 85.0, 95.0])),
    st.tuples(st.just("msg"), st.sampled_from(["router", "web", "db"])),
    st.tuples(st.just("shut"), st.sampled_from(["router", "web", "db"])),
    st.tuples(st.just("wait"), st.sampled_from([1.0, 20.0, 45.0, 100.0])),
    st.tuples(st.just("delete"), st.sampled_from(["router", "web", "db"])),
    st.tuples(st.just("command"), st.sampled_from(["router", "web", "db"])),
    st.tuples(st.just("ack"), st.sampled_from(["router", "web", "db"])),
    st.tuples(st.just("silence"), st.sampled_from(["router", "web", "db*", "*"]),
              st.sampled_from([10, 50])),
    st.tuples(st.just("window"), st.sampled_from(["router", "web", "d*"]),
              st.sampled_from([0, 15, 30]), st.sampled_from([10, 40])),
)


def _act(stack: Stack, action: tuple[Any, ...]) -> None:
    kind, *args = action
    now = stack.clock.seconds()
    if kind == "htb":
        name, addr, rtt = args
        stack.send({"ID": "HTB", "name": name, "rtt": rtt}, addr)
    elif kind == "plg":
        name, value = args
        stack.send({"ID": "PLG", "name": name, "plugins": {"cpu_monitor": {"cpu_percent": value}}})
    elif kind == "msg":
        stack.send({"ID": "MSG", "name": args[0], "text": f"at {now}"})
    elif kind == "shut":
        stack.send({"ID": "SHUT", "name": args[0]})
    elif kind == "wait":
        stack.clock.advance(args[0])
        stack.server.monitor.check()
    elif kind == "delete":
        stack.call("DELETE", f"/api/0/hosts/{args[0]}")
    elif kind == "command":
        stack.call("POST", f"/api/0/hosts/{args[0]}/commands", {"cmd": "uptime"})
    elif kind == "ack":
        stack.call("POST", f"/api/0/hosts/{args[0]}/ack", {"comment": "seen"})
    elif kind == "silence":
        stack.call("POST", "/api/0/silences", {"host": args[0], "duration": args[1],
                                                 "comment": "deploy"})
    else:
        host, start, duration = args
        stack.call("POST", "/api/0/maintenance", {"hosts": [host], "start": now + start,
                                                  "duration": duration})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTIONS, min_size=1, max_size=25))
def test_kept_json_is_current_after_any_events(actions: list[tuple[Any, ...]]) -> None:
    """Any sequence of datagrams, clock steps (expiry, windows and silences opening and
    ending), deletes, commands, acknowledgements, silences and windows: after each, every
    host's kept JSON and the snapshot equal the objects built now."""
    with tempfile.TemporaryDirectory() as tmp:
        stack = _stack(Path(tmp), {**HOSTS, "db": HostConfig(parents=["web"])})
        try:
            for action in actions:
                _act(stack, action)
                assert_current(stack)
        finally:
            stack.close()
