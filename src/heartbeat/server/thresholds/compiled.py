"""Compiled rules: a host's effective :data:`Tree` turned into what the walk reads fast.

Each level of the tree becomes a :class:`Node` (exact names, the ``*`` entry,
the generic suffix rules, the names set to null), so the engine looks at a
sample's keys with dict lookups only. Pure code.
"""

from __future__ import annotations

from dataclasses import dataclass

from heartbeat.server.thresholds.rules import RTT, Rule, Tree, merge_trees, prune

__all__ = ["Node", "RuleSet"]


class Node:
    """One level of compiled rules: exact keys, the ``*`` entry, generic suffixes."""

    __slots__ = ("exact", "generic", "removed", "scan", "wildcard")

    def __init__(self, tree: Tree) -> None:
        wild = tree.get("*")
        self.exact: dict[str, Node | Rule] = {}
        self.removed = frozenset(name for name, value in tree.items() if value is None)
        """Names set to null: neither ``*`` nor a generic rule applies to them."""
        for name, value in tree.items():
            if name == "*" or value is None:
                continue
            if isinstance(value, dict):
                # A `*` mapping applies beneath its exact siblings: exact wins per metric.
                self.exact[name] = Node(merge_trees(wild, value) if isinstance(wild, dict)
                                        else value)
            else:
                self.exact[name] = value
        self.wildcard: Node | Rule | None = Node(wild) if isinstance(wild, dict) else wild
        rules = [(name, "_" + name, rule) for name, rule in self.exact.items()
                 if isinstance(rule, Rule) and rule.generic]
        self.generic = tuple(sorted(rules, key=lambda r: -len(r[0])))
        """Longest first: the first suffix that fits is the fewest segments stripped."""
        self.scan = self.wildcard is not None or bool(self.generic)
        """Whether every data key must be looked at (else only the exact ones)."""

    def child(self, key: str) -> Node | Rule | None:
        """What applies to ``key``: its exact entry, else ``*`` unless the key was set to
        null. (The engine's walk inlines this on its hot path.)"""
        found = self.exact.get(key)
        if found is None and key not in self.removed:
            return self.wildcard
        return found


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The effective rules of one host after defaults and profiles."""

    tree: Tree
    plugins: dict[str, Node]
    rtt: dict[str, Rule | None]
    """A host mapped to None was set to null: ``rtt.*`` does not apply to it."""

    @classmethod
    def compile(cls, tree: Tree) -> RuleSet:
        """Compile a merged tree (defaults, ``thresholds:``, then profiles)."""
        rtt = tree.get(RTT)
        plugins = {name: Node(value) for name, value in tree.items()
                   if name != RTT and isinstance(value, dict)}
        rtt_rules = {host: rule for host, rule in rtt.items()
                     if rule is None or isinstance(rule, Rule)} if isinstance(rtt, dict) else {}
        return cls(prune(tree), plugins, rtt_rules)

    def rtt_rule(self, host: str) -> Rule | None:
        """The RTT rule of ``host``: its own, else ``rtt.*`` (unless it was set to null)."""
        return self.rtt[host] if host in self.rtt else self.rtt.get("*")
