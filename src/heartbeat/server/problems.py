"""Problems: what an operator must look at, hosts and metrics together, worst first.

A host that is DOWN is a problem in its own right (kind ``host``), not only the
cause of its metrics' silence; the threshold alerts of the metrics (kind
``metric``) of a host that is itself a problem are marked ``stale``, since their values
are the last ones the host sent before it went away. Both kinds share one
shape, so the API, the alert page and the navigation count treat them alike.

Host states are strings: a state this module does not know (one a later
engine adds) is a problem at level UNKNOWN, so it is never hidden. Pure: no
reactor, no clock; the caller passes the hosts and alert states it may show.
Markers a host carries (``markers``: maintenance, silenced, acknowledged...) are
copied to its problems as they are, for the UI to show.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from heartbeat.server.thresholds.engine import AlertState
from heartbeat.server.thresholds.rules import ALERT_LEVELS, SEVERITY, Level

__all__ = [
    "HOST",
    "KINDS",
    "METRIC",
    "QUIET_STATES",
    "host_problem",
    "problems",
    "state_level",
    "summary",
]

HOST: Final = "host"
METRIC: Final = "metric"
KINDS: Final = (HOST, METRIC)

QUIET_STATES: Final = frozenset({"UP", "UNKNOWN"})
"""Host states that are no problem: UP, and UNKNOWN (not heard from since it was
configured or first named; nothing is known to be wrong)."""

_STATE_LEVELS: Final = {"DOWN": Level.CRITICAL, "UNREACHABLE": Level.UNKNOWN}


def state_level(state: str) -> Level | None:
    """The problem level of a host state, None when the state is no problem."""
    if state in QUIET_STATES:
        return None
    return _STATE_LEVELS.get(state, Level.UNKNOWN)


def host_problem(host: Mapping[str, Any]) -> dict[str, Any] | None:
    """The problem a host (as the API shows it) is, if any."""
    state = str(host.get("state"))
    level = state_level(state)
    if level is None:
        return None
    reason = host.get("down_reason")
    name = host["name"]
    message = f"{level.value}: {name} is {state}" + (f" ({reason})" if reason else "")
    return {"kind": HOST, "host": name, "level": level.value, "state": state,
            "reason": reason, "metric_path": None, "value": None, "threshold_value": None,
            "message": message, "since": host.get("since"), "last_notified": None,
            "stale": False, "markers": list(host.get("markers") or [])}


def _metric_problem(alert: AlertState, host_state: str | None,
                    markers: Iterable[Any]) -> dict[str, Any]:
    return {"kind": METRIC, **alert.to_json(), "state": host_state,
            "stale": host_state is not None and state_level(host_state) is not None,
            "markers": list(markers)}


def _order(problem: Mapping[str, Any]) -> tuple[bool, int, int, str, str]:
    return (problem["stale"], -SEVERITY[Level(problem["level"])],
            KINDS.index(problem["kind"]), problem["host"], problem["metric_path"] or "")


def problems(hosts: Iterable[Mapping[str, Any]],
             alerts: Iterable[AlertState]) -> list[dict[str, Any]]:
    """Every problem of ``hosts`` (API host objects) and ``alerts``, in the order to show:
    current before stale, most severe first, a host's own problem before its metrics'."""
    states: dict[str, str] = {}
    markers: dict[str, list[Any]] = {}
    found: list[dict[str, Any]] = []
    for host in hosts:
        states[host["name"]] = str(host.get("state"))
        markers[host["name"]] = list(host.get("markers") or [])
        problem = host_problem(host)
        if problem is not None:
            found.append(problem)
    found.extend(_metric_problem(alert, states.get(alert.host), markers.get(alert.host, []))
                 for alert in alerts)
    found.sort(key=_order)
    return found


def summary(found: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Current problems by level (the navigation's count), and how many are stale."""
    counts = {level.value: 0 for level in ALERT_LEVELS}
    counts["stale"] = 0
    for problem in found:
        if problem["stale"]:
            counts["stale"] += 1
        else:
            counts[problem["level"]] += 1
    return counts
