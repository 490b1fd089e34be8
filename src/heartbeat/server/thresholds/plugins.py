"""What the engine knows of particular plugins: their built-in rules and sample adapters.

The walk over plugin data (engine.py) is generic: it knows no plugin by name.
A bundled plugin that needs more than rules registers here instead:

- its built-in rules in :data:`DEFAULT_THRESHOLDS`, beneath the user's
  ``thresholds:`` (``{zfs_monitor: null}`` removes them);
- a :data:`SampleAdapter` in :data:`ADAPTERS`, which the walk calls on every
  mapping it visits in that plugin's data, before looking rules up in it. An
  adapter returns the mapping itself, or a copy with derived metrics; it must
  not change the mapping it is given (the event's data is shared with the
  journal, the store and the feed). Pure code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, TypeAlias

__all__ = ["ADAPTERS", "DEFAULT_THRESHOLDS", "ZFS", "SampleAdapter", "zfs_health_ok"]

ZFS: Final = "zfs_monitor"

SampleAdapter: TypeAlias = Callable[[dict[str, Any]], dict[str, Any]]
"""One mapping of a plugin's data in, the same one or a copy with derived metrics out."""

DEFAULT_THRESHOLDS: Final[dict[str, Any]] = {
    # Pool health from every client version: older ones send only `health`,
    # and zfs_health_ok derives `health_ok` (ONLINE 1, anything else 0) for them.
    ZFS: {"pools": {"*": {
        "health_ok": {"operator": "<", "critical": 1, "hysteresis": 0, "generic": False,
                      "display": "pool health {health}"},
        "capacity": {"operator": ">=", "warning": 80, "critical": 90, "generic": False},
    }}},
    # One generic rule for every Nagios check an agent runs.
    "nagios_runner": {"status_code": {"operator": "nagios", "display": "{check_name}: {output}"}},
}
"""Built-in rules beneath the user's ``thresholds:``; ``{zfs_monitor: null}`` removes one."""


def zfs_health_ok(data: dict[str, Any]) -> dict[str, Any]:
    """A pool's ``health_ok`` (1 when ``health`` is ONLINE, else 0) where the client sent
    only ``health``, as zfs_monitor clients before ``health_ok`` did."""
    if "health_ok" not in data and isinstance(data.get("health"), str):
        return {**data, "health_ok": int(data["health"].strip().upper() == "ONLINE")}
    return data


ADAPTERS: Final[Mapping[str, SampleAdapter]] = MappingProxyType({ZFS: zfs_health_ok})
"""The adapter of each plugin that has one, by plugin name."""
