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

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, NamedTuple

from heartbeat.server.thresholds.engine import AlertState
from heartbeat.server.thresholds.rules import ALERT_LEVELS, SEVERITY, Level

__all__ = [
    "HOST",
    "KINDS",
    "METRIC",
    "QUIET_STATES",
    "Rank",
    "alert_ranks",
    "first",
    "host_problem",
    "host_ranks",
    "problem",
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


class Rank(NamedTuple):
    """A problem as little as orders and counts it, before its API object is made: a
    fleet's fall is 100,000 problems, of which a page shows a few hundred."""

    stale: bool
    severity: int
    """Minus the level's severity: the most severe sorts first."""
    kind: int
    """Its index in :data:`KINDS`: a host's own problem before its metrics'."""
    host: str
    metric_path: str
    level: str
    state: str | None
    """Its host's state (None: a host not given)."""
    alert: AlertState | None
    """None for a host's own problem."""


def host_ranks(state: str, names: Iterable[str]) -> Iterator[Rank]:
    """The problems of the hosts ``names``, all in ``state`` (none if it is quiet)."""
    level = state_level(state)
    if level is not None:
        severity = -SEVERITY[level]
        for name in names:
            yield Rank(False, severity, 0, name, "", level.value, state, None)


def alert_ranks(alerts: Iterable[AlertState],
                state_of: Callable[[str], str | None]) -> Iterator[Rank]:
    """The problems of ``alerts``; ``state_of`` tells their host's state (None: unknown)."""
    for alert in alerts:
        host_state = state_of(alert.host)
        yield Rank(host_state is not None and state_level(host_state) is not None,
                   -SEVERITY[alert.level], 1, alert.host, alert.metric_path, alert.level.value,
                   host_state, alert)


def first(found: Iterable[Rank], limit: int | None = None) -> list[Rank]:
    """``found`` in the order to show (current before stale, most severe first, a host's
    own problem before its metrics', then by host and metric path); its first ``limit``."""
    if limit is None:
        return sorted(found, key=_order)
    return heapq.nsmallest(limit, found, key=_order)


def _order(rank: Rank) -> tuple[bool, int, int, str, str]:
    return rank[:5]


def problem(rank: Rank, host: Mapping[str, Any] | None) -> dict[str, Any]:
    """The API object of ``rank``; ``host`` is its host's API object (its markers)."""
    if rank.alert is None:
        found = host_problem(host or {"name": rank.host, "state": rank.state})
        assert found is not None  # a rank of a host is one of a problem state
        return found
    return _metric_problem(rank.alert, rank.state, (host or {}).get("markers") or [])


def summary(state_counts: Mapping[str, int], alerts: Iterable[AlertState],
            state_of: Callable[[str], str | None]) -> dict[str, int]:
    """Current problems by level (the navigation's count), how many are stale, and how
    many current ones are hosts' own (the hosts not up), from the hosts per state and the
    alerts: no problem is made, so the count costs nothing per host."""
    counts = {level.value: 0 for level in ALERT_LEVELS}
    counts["stale"] = 0
    counts["hosts"] = 0
    for state, count in state_counts.items():
        level = state_level(state)
        if level is not None:
            counts[level.value] += count
            counts["hosts"] += count
    for alert in alerts:
        host_state = state_of(alert.host)
        if host_state is not None and state_level(host_state) is not None:
            counts["stale"] += 1
        else:
            counts[alert.level.value] += 1
    return counts
