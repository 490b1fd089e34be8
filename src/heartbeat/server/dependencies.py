"""Host dependencies: which hosts are reached through which (``parents:`` under ``hosts:``).

Pure code: no reactor, no clock. When a router goes down, the hosts behind it
fall silent too; they are UNREACHABLE, not DOWN, and only the router's own notice
goes out (listing them). A heartbeat monitor cannot ask a parent how it is, so
it reads what it has: the parents' states and when each host was last heard.

A host that has fallen silent is, by :func:`verdict`:

- **DOWN** when it has no parent that reports (parents never heard from are left
  out), or when a parent that is UP was heard after the host missed its heartbeat:
  the way to it was open, the host itself is silent;
- **UNREACHABLE** when every parent that reports is DOWN or UNREACHABLE (as Nagios:
  one parent still up is a way through);
- **undecided** (:data:`WAIT`) while a parent is UP but has not been heard since the
  host missed its heartbeat: the parent's own deadline decides it soon, one way or
  the other, so the host is not called DOWN until then.

Cycles make no sense and are refused when the configuration is loaded, naming the
cycle (:func:`find_cycle`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["DOWN", "UNREACHABLE", "WAIT", "DependencyGraph", "ParentView", "find_cycle",
           "verdict"]

DOWN: Final = "DOWN"
UNREACHABLE: Final = "UNREACHABLE"
WAIT: Final = "WAIT"
UP: Final = "UP"
UNKNOWN: Final = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class ParentView:
    """What :func:`verdict` needs to know of one parent."""

    state: str
    last_seen: float | None


def verdict(last_seen: float | None, interval: float,
            parents: Iterable[ParentView]) -> str:
    """DOWN, UNREACHABLE or WAIT for a host silent since ``last_seen`` (its heartbeat
    every ``interval`` s), given its parents."""
    known = [p for p in parents if p.state != UNKNOWN]
    if not known:
        return DOWN
    missed = (last_seen or 0.0) + interval
    waiting = False
    for parent in known:
        if parent.state == UP:
            if parent.last_seen is not None and parent.last_seen >= missed:
                return DOWN
            waiting = True
    return WAIT if waiting else UNREACHABLE


def find_cycle(parents: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as the path that closes it (``[a, b, c, a]``), or None."""
    done: set[str] = set()
    for root in sorted(parents):
        if root in done:
            continue
        path: list[str] = []
        on_path: dict[str, int] = {}
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(parents.get(root, ())))]
        path.append(root)
        on_path[root] = 0
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                del on_path[node]
                done.add(node)
                continue
            if child in on_path:
                return [*path[on_path[child]:], child]
            if child in done:
                continue
            on_path[child] = len(path)
            path.append(child)
            stack.append((child, iter(parents.get(child, ()))))
    return None


class DependencyGraph:
    """Parents and children of every host that has either (from the checked config)."""

    def __init__(self, parents: Mapping[str, Sequence[str]] | None = None) -> None:
        self._parents: dict[str, tuple[str, ...]] = {
            host: tuple(dict.fromkeys(names)) for host, names in (parents or {}).items()
            if names}
        children: dict[str, list[str]] = {}
        for host, names in self._parents.items():
            for parent in names:
                children.setdefault(parent, []).append(host)
        self._children = {parent: tuple(sorted(kids)) for parent, kids in children.items()}

    def __bool__(self) -> bool:
        return bool(self._parents)

    def parents_of(self, host: str) -> tuple[str, ...]:
        return self._parents.get(host, ())

    def children_of(self, host: str) -> tuple[str, ...]:
        return self._children.get(host, ())

    def descendants(self, host: str) -> list[str]:
        """Every host behind ``host``, nearest first."""
        seen: dict[str, None] = {}
        queue = deque(self.children_of(host))
        while queue:
            child = queue.popleft()
            if child in seen or child == host:
                continue
            seen[child] = None
            queue.extend(self.children_of(child))
        return list(seen)
