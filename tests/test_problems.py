"""Problems from host states and alert states, with plain values."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from heartbeat.server.problems import (
    KINDS,
    Rank,
    alert_ranks,
    first,
    host_ranks,
    problem,
    state_level,
    summary,
)
from heartbeat.server.thresholds.engine import AlertState
from heartbeat.server.thresholds.rules import SEVERITY, Level


def _alert(host: str, level: Level, path: str = "cpu_monitor.cpu_percent") -> AlertState:
    return AlertState(host, "cpu_monitor", path, level, 95.0, 90.0, ">", "", 10.0, None)


def _host(name: str, state: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "state": state, "since": 5.0, "down_reason": None, **fields}


def ranks(states: dict[str, str], alerts: list[AlertState]) -> list[Rank]:
    """The problems of the hosts of ``states`` and of ``alerts``, as the API makes them."""
    return [*(rank for name, state in states.items() for rank in host_ranks(state, (name,))),
            *alert_ranks(alerts, states.get)]


def problems(hosts: list[dict[str, Any]], alerts: list[AlertState]) -> list[dict[str, Any]]:
    """The API objects of every problem of ``hosts`` (API host objects) and ``alerts``."""
    by_name = {host["name"]: host for host in hosts}
    states = {name: str(host.get("state")) for name, host in by_name.items()}
    return [problem(rank, by_name.get(rank.host)) for rank in first(ranks(states, alerts))]


def test_state_levels_cover_states_added_later() -> None:
    """UP and UNKNOWN are quiet, DOWN is CRITICAL, any other state is a problem (UNKNOWN)."""
    assert [state_level(s) for s in ("UP", "UNKNOWN", "DOWN", "UNREACHABLE", "FLAPPING")] == [
        None, None, Level.CRITICAL, Level.UNKNOWN, Level.UNKNOWN]


def test_order_current_before_stale_worst_first() -> None:
    """Current problems first, worst first, a host before its metrics; stale ones last."""
    hosts = [_host("a", "UP"), _host("b", "DOWN", down_reason="shutdown"),
             _host("c", "UNREACHABLE", markers=[{"kind": "maintenance"}])]
    alerts = [_alert("a", Level.WARNING), _alert("b", Level.CRITICAL),
              _alert("a", Level.UNKNOWN, "x"), _alert("c", Level.WARNING)]
    found = problems(hosts, alerts)
    assert [(p["kind"], p["host"], p["level"], p["stale"], p["markers"]) for p in found] == [
        ("host", "b", "CRITICAL", False, []),
        ("host", "c", "UNKNOWN", False, [{"kind": "maintenance"}]),
        ("metric", "a", "UNKNOWN", False, []),
        ("metric", "a", "WARNING", False, []),
        ("metric", "b", "CRITICAL", True, []),
        ("metric", "c", "WARNING", True, [{"kind": "maintenance"}]),
    ]
    assert found[0]["message"] == "CRITICAL: b is DOWN (shutdown)"
    states = {host["name"]: host["state"] for host in hosts}
    assert summary(Counter(states.values()), alerts, states.get) == {
        "CRITICAL": 1, "WARNING": 1, "UNKNOWN": 2, "stale": 2, "hosts": 2}


_states = st.dictionaries(st.sampled_from([f"h{n}" for n in range(12)]),
                          st.sampled_from(["UP", "UNKNOWN", "DOWN", "UNREACHABLE", "NEW"]))
_alerts = st.lists(st.tuples(st.sampled_from([f"h{n}" for n in range(14)]),
                             st.sampled_from([Level.WARNING, Level.CRITICAL, Level.UNKNOWN]),
                             st.sampled_from(["cpu.a", "cpu.b", "disk./"])),
                   unique_by=lambda a: (a[0], a[2]), max_size=20)


@given(_states, _alerts, st.integers(0, 40))
def test_the_first_n_are_the_head_of_the_whole_order(
        states: dict[str, str], alert_rows: list[tuple[str, Level, str]], limit: int) -> None:
    """/api/0/alerts?limit=N (a heap's N smallest) gives the head of the whole sorted list,
    and the whole list is in the documented order: current before stale, most severe
    first, a host's own problem before its metrics', then host and metric path."""
    alerts = [_alert(host, level, path) for host, level, path in alert_rows]
    whole = first(ranks(states, alerts))
    assert first(ranks(states, alerts), limit) == whole[:limit]
    keys = [(r.stale, -SEVERITY[Level(r.level)], KINDS.index(["host", "metric"][r.kind]),
             r.host, r.metric_path) for r in whole]
    assert keys == sorted(keys)
    assert len(whole) == sum(state not in ("UP", "UNKNOWN") for state in states.values()) \
        + len(alerts)
    counted = summary(Counter(states.values()), alerts, states.get)  # no problem made
    assert counted == {
        **{level: sum(r.level == level and not r.stale for r in whole)
           for level in ("CRITICAL", "WARNING", "UNKNOWN")},
        "stale": sum(r.stale for r in whole), "hosts": sum(r.alert is None for r in whole)}
