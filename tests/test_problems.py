"""Problems from host states and alert states, with plain values."""

from __future__ import annotations

from typing import Any

from heartbeat.server.problems import problems, state_level, summary
from heartbeat.server.thresholds.engine import AlertState
from heartbeat.server.thresholds.rules import Level


def _alert(host: str, level: Level, path: str = "cpu_monitor.cpu_percent") -> AlertState:
    return AlertState(host, "cpu_monitor", path, level, 95.0, 90.0, ">", "", 10.0, None)


def _host(name: str, state: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "state": state, "since": 5.0, "down_reason": None, **fields}


def test_state_levels_cover_states_added_later() -> None:
    """UP and UNKNOWN are quiet, DOWN is CRITICAL, any other state is a problem (UNKNOWN)."""
    assert [state_level(s) for s in ("UP", "UNKNOWN", "DOWN", "UNREACHABLE", "FLAPPING")] == [
        None, None, Level.CRITICAL, Level.UNKNOWN, Level.UNKNOWN]


def test_order_current_before_stale_worst_first() -> None:
    """Current problems first, worst first, a host before its metrics; stale ones last."""
    found = problems(
        [_host("a", "UP"), _host("b", "DOWN", down_reason="shutdown"),
         _host("c", "UNREACHABLE", markers=[{"kind": "maintenance"}])],
        [_alert("a", Level.WARNING), _alert("b", Level.CRITICAL), _alert("a", Level.UNKNOWN, "x"),
         _alert("c", Level.WARNING)])
    assert [(p["kind"], p["host"], p["level"], p["stale"], p["markers"]) for p in found] == [
        ("host", "b", "CRITICAL", False, []),
        ("host", "c", "UNKNOWN", False, [{"kind": "maintenance"}]),
        ("metric", "a", "UNKNOWN", False, []),
        ("metric", "a", "WARNING", False, []),
        ("metric", "b", "CRITICAL", True, []),
        ("metric", "c", "WARNING", True, [{"kind": "maintenance"}]),
    ]
    assert found[0]["message"] == "CRITICAL: b is DOWN (shutdown)"
    assert summary(found) == {"CRITICAL": 1, "WARNING": 1, "UNKNOWN": 2, "stale": 2}
