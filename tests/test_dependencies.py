"""Host dependencies: cycles and the DOWN / UNREACHABLE / wait verdict, with plain values."""

from __future__ import annotations

from heartbeat.server.dependencies import (
    DOWN,
    UNREACHABLE,
    WAIT,
    DependencyGraph,
    ParentView,
    find_cycle,
    verdict,
)


class CycleTests:
    def test_none_in_a_tree_or_a_diamond(self) -> None:
        """A tree, and a diamond (two ways to one host), have no cycle."""
        assert find_cycle({"web1": ["switch1"], "switch1": ["router1"]}) is None
        assert find_cycle({"db": ["sw1", "sw2"], "sw1": ["core"], "sw2": ["core"]}) is None

    def test_cycle_is_named_as_its_path(self) -> None:
        """The cycle comes back as the path that closes it."""
        assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
        assert find_cycle({"x": ["y"], "y": ["y"]}) == ["y", "y"]
        assert find_cycle({"leaf": ["a"], "a": ["b"], "b": ["a"]}) == ["a", "b", "a"]


class GraphTests:
    def test_parents_children_descendants(self) -> None:
        """Children are found from parents; descendants nearest first, each once."""
        graph = DependencyGraph({"web1": ["sw1"], "web2": ["sw1"], "sw1": ["r1"],
                                 "db": ["sw1", "sw2"], "sw2": ["r1"]})
        assert graph.parents_of("db") == ("sw1", "sw2")
        assert graph.children_of("sw1") == ("db", "web1", "web2")
        assert graph.descendants("r1") == ["sw1", "sw2", "db", "web1", "web2"]
        assert graph.descendants("web1") == [] and not DependencyGraph({})


class VerdictTests:
    def test_no_known_parent_is_down(self) -> None:
        """No parents, or only parents never heard from: plain DOWN."""
        assert verdict(100, 30, []) == DOWN
        assert verdict(100, 30, [ParentView("UNKNOWN", None)]) == DOWN

    def test_all_parents_down_is_unreachable(self) -> None:
        """Every parent that reports is DOWN or UNREACHABLE: UNREACHABLE."""
        assert verdict(100, 30, [ParentView("DOWN", 90), ParentView("UNREACHABLE", 95),
                                 ParentView("UNKNOWN", None)]) == UNREACHABLE

    def test_parent_heard_after_the_missed_heartbeat_confirms_down(self) -> None:
        """A parent heard after the host's heartbeat was due: the way was open, DOWN."""
        assert verdict(100, 30, [ParentView("UP", 130)]) == DOWN
        assert verdict(100, 30, [ParentView("DOWN", 80), ParentView("UP", 140)]) == DOWN

    def test_parent_silent_too_waits_for_it(self) -> None:
        """A parent UP but not heard since then: wait for its own deadline."""
        assert verdict(100, 30, [ParentView("UP", 110)]) == WAIT
        assert verdict(100, 30, [ParentView("DOWN", 80), ParentView("UP", 129)]) == WAIT
