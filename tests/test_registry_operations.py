"""The registry's dependencies (UNREACHABLE), host flapping and recover_after, with plain times."""

from __future__ import annotations

from typing import Any

import pytest

from heartbeat.config.server import HostConfig
from heartbeat.events import HOST_DOWN, HOST_FLAPPING, HOST_UNREACHABLE, HOST_UP, Event
from heartbeat.server import registry as registry_module
from heartbeat.server.dependencies import DependencyGraph
from heartbeat.server.flapping import FlapDetector
from heartbeat.server.registry import Host, HostState, Registry

SRC = ("10.0.0.5", 40000)
GRACE = 10.0
INTERVAL = 30.0


def network(**hosts: HostConfig) -> Registry:
    """router1 <- switch1 <- web1, web2; db1 behind switch1 and switch2 (two ways)."""
    parents = {"switch1": ["router1"], "web1": ["switch1"], "web2": ["switch1"],
               "db1": ["switch1", "switch2"], "switch2": ["router1"]}
    return Registry(grace=GRACE, default_interval=INTERVAL, host_config=hosts,
                    dependencies=DependencyGraph(parents), flaps=FlapDetector())


def beat(registry: Registry, now: float, *names: str) -> list[Event]:
    events = []
    for name in names:
        events.extend(registry.apply({"ID": "HTB", "name": name}, SRC, now).events)
    return events


def state(registry: Registry, name: str) -> str:
    host = registry.get(name)
    assert host is not None
    return host.state.value


def interesting(events: list[Event]) -> list[tuple[str, str, dict[str, Any]]]:
    """The state events, without the bookkeeping fields."""
    keep = {HOST_DOWN, HOST_UP, HOST_UNREACHABLE, HOST_FLAPPING}
    return [(e.kind, e.host, {k: v for k, v in e.data.items()
                              if k not in ("last_seen", "silent_for", "addr", "since")})
            for e in events if e.kind in keep]


ALL = ("router1", "switch1", "switch2", "web1", "web2", "db1")


class UnreachableTests:
    def test_router_outage_one_down_the_rest_unreachable(self) -> None:
        """Everything silent from t=0: the router is DOWN, listing every host behind it."""
        r = network()
        beat(r, 0, *ALL)
        assert interesting(r.expire(INTERVAL + GRACE + 1)) == [
            ("host.down", "router1", {"reason": "timeout", "previous": "UP",
                                      "unreachable": ["switch1", "web1", "web2", "switch2",
                                                      "db1"]}),
            ("host.unreachable", "switch1", {"previous": "UP", "parents": ["router1"],
                                             "unreachable": ["web1", "web2"]}),
            ("host.unreachable", "web1", {"previous": "UP", "parents": ["switch1"]}),
            ("host.unreachable", "web2", {"previous": "UP", "parents": ["switch1"]}),
            # db1 waits for its second way, switch2, to fall too
            ("host.unreachable", "switch2", {"previous": "UP", "parents": ["router1"],
                                             "unreachable": ["db1"]}),
            ("host.unreachable", "db1", {"previous": "UP", "parents": ["switch1", "switch2"]}),
        ]
        assert r.counts() == {"UNKNOWN": 0, "UP": 0, "DOWN": 1, "UNREACHABLE": 5}

    def test_a_large_fall_is_cut_into_passes_with_the_same_end(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A router with 5 switches of 10 hosts each behind it: with a cascade of 7 hosts
        a pass, the router's event lists the nearest 7 and says more follow; each pass
        takes at most 7 with a fall, and the passes end where one unbounded pass does."""

        def fleet() -> Registry:
            parents = {f"sw{s}": ["router1"] for s in range(5)}
            parents.update({f"h{s}-{n}": [f"sw{s}"] for s in range(5) for n in range(10)})
            r = Registry(grace=GRACE, default_interval=INTERVAL,
                         dependencies=DependencyGraph(parents), flaps=FlapDetector())
            beat(r, 0, "router1", *parents)
            return r

        whole = fleet()
        whole.expire(INTERVAL + GRACE + 1)
        monkeypatch.setattr(registry_module, "CASCADE", 7)
        cut = fleet()
        events = cut.expire(INTERVAL + GRACE + 1, ["router1"])
        router = events[0]
        assert (router.kind, router.host) == (HOST_DOWN, "router1")
        assert router.data["unreachable"] == ["sw0", "h0-0", "h0-1", "h0-2", "h0-3", "h0-4",
                                              "h0-5"]
        assert router.data["unreachable_more"] is True
        assert len(events) == 8
        passes = 1
        while (overdue := cut.overdue(INTERVAL + GRACE + 1)):
            events = cut.expire(INTERVAL + GRACE + 1, overdue[:3])
            fell = [e for e in events if e.kind == HOST_UNREACHABLE]
            assert 1 <= len(fell) <= 3 + 7
            passes += 1
        assert passes > 3
        assert {n: h.state for n, h in cut.hosts.items()} == {
            n: h.state for n, h in whole.hosts.items()}
        assert cut.counts() == {"UNKNOWN": 0, "UP": 0, "DOWN": 1, "UNREACHABLE": 55}

    def test_child_waits_for_a_silent_parent(self) -> None:
        """A child overdue before its parent waits; the parent's timeout makes it
        UNREACHABLE in the same pass."""
        r = network()
        beat(r, 0, "router1")
        beat(r, 1, "web1")
        beat(r, 2, "switch1")
        beat(r, 35, "router1")  # the router keeps going
        assert r.expire(42) == []  # web1 overdue, switch1 not heard since: wait
        assert state(r, "web1") == "UP"
        assert interesting(r.expire(43)) == [
            ("host.down", "switch1", {"reason": "timeout", "previous": "UP",
                                      "unreachable": ["web1"]}),
            ("host.unreachable", "web1", {"previous": "UP", "parents": ["switch1"]})]

    def test_parent_heard_after_the_missed_heartbeat_makes_it_down(self) -> None:
        """The switch answers after web1 missed its beat: web1 itself is DOWN."""
        r = network()
        beat(r, 0, "router1", "switch1", "web1")
        beat(r, 35, "router1", "switch1")
        assert interesting(r.expire(41)) == [
            ("host.down", "web1", {"reason": "timeout", "previous": "UP"})]

    def test_one_way_up_is_enough(self) -> None:
        """db1 has two switches; with one still up, db1 silent is DOWN (Nagios's rule)."""
        r = network()
        beat(r, 0, "router1", "switch1", "switch2", "db1")
        beat(r, 35, "router1", "switch2")
        events = interesting(r.expire(41))
        assert [(k, h) for k, h, _ in events] == [("host.down", "switch1"),
                                                  ("host.down", "db1")]

    def test_parent_back_child_still_silent_becomes_down(self) -> None:
        """When the router returns, a host still silent behind it is DOWN after a
        fresh interval + grace: now the way is open, the silence is its own."""
        r = network()
        beat(r, 0, "router1", "switch1")
        r.expire(41)
        assert state(r, "switch1") == "UNREACHABLE"
        beat(r, 100, "router1")
        beat(r, 130, "router1")
        assert r.expire(139) == []
        assert interesting(r.expire(141)) == [
            ("host.down", "switch1", {"reason": "timeout", "previous": "UNREACHABLE"})]

    def test_unreachable_host_heartbeat_is_up(self) -> None:
        """An UNREACHABLE host heard again is UP (its event says from UNREACHABLE)."""
        r = network()
        beat(r, 0, "router1", "web1", "switch1")
        r.expire(41)
        events = interesting(beat(r, 50, "router1", "switch1", "web1"))
        assert events == [
            ("host.up", "router1", {"previous": "DOWN", "down_for": 9.0,
                                    "down_reason": "timeout"}),
            ("host.up", "switch1", {"previous": "UNREACHABLE"}),
            ("host.up", "web1", {"previous": "UNREACHABLE"})]

    def test_parent_never_heard_from_is_left_out(self) -> None:
        """A parent that never reported does not make a host UNREACHABLE."""
        r = network()
        beat(r, 0, "web1")
        assert [(k, h) for k, h, _ in interesting(r.expire(41))] == [("host.down", "web1")]

    def test_shutdown_of_a_parent(self) -> None:
        """A parent that sends SHUT is DOWN; children silent past it are UNREACHABLE."""
        r = network()
        beat(r, 0, "router1", "switch1")
        r.apply({"ID": "SHUT", "name": "router1"}, SRC, 10)
        assert interesting(r.expire(41)) == [
            ("host.unreachable", "switch1", {"previous": "UP", "parents": ["router1"]})]

    def test_restart_keeps_unreachable_and_checks_again(self) -> None:
        """A restored UNREACHABLE host is looked at again after a fresh deadline."""
        r = network()
        r.restore([Host("router1", HostState.DOWN, last_seen=0.0, since=41.0),
                   Host("switch1", HostState.UNREACHABLE, last_seen=0.0, since=41.0)], 1000)
        assert r.expire(1000 + INTERVAL + GRACE + 1) == []
        assert state(r, "switch1") == "UNREACHABLE"
        r2 = network()
        r2.restore([Host("router1", HostState.UP, last_seen=990.0, since=0.0),
                    Host("switch1", HostState.UNREACHABLE, last_seen=0.0, since=41.0)], 1000)
        beat(r2, 1030, "router1")
        assert [(k, h) for k, h, _ in interesting(r2.expire(1041))] == [
            ("host.down", "switch1")]

    def test_host_json(self) -> None:
        """The API shows a host's parents and its UNREACHABLE state."""
        r = network()
        beat(r, 0, "router1", "switch1")
        r.expire(41)
        host = r.get("switch1")
        assert host is not None
        body = r.host_json(host)
        assert (body["state"], body["parents"], body["flapping"], body["recovering"]) == (
            "UNREACHABLE", ["router1"], False, None)


class RecoverAfterTests:
    def test_three_heartbeats_in_a_row_before_up(self) -> None:
        """recover_after: 3 keeps a DOWN host DOWN for two heartbeats, UP at the third."""
        r = network(web1=HostConfig(recover_after=3))
        beat(r, 0, "web1")
        r.expire(41)
        assert interesting(beat(r, 100, "web1")) == []
        host = r.get("web1")
        assert host is not None
        assert r.host_json(host)["recovering"] == {"heartbeats": 1, "needed": 3}
        assert interesting(beat(r, 130, "web1")) == []
        assert interesting(beat(r, 160, "web1")) == [
            ("host.up", "web1", {"previous": "DOWN", "down_for": 119.0,
                                 "down_reason": "timeout"})]
        assert r.host_json(host)["recovering"] is None

    def test_a_gap_starts_the_count_again(self) -> None:
        """A heartbeat more than interval + grace after the last one counts as the first."""
        r = network(web1=HostConfig(recover_after=2))
        beat(r, 0, "web1")
        r.expire(41)
        beat(r, 100, "web1")
        assert interesting(beat(r, 200, "web1")) == []
        assert [k for k, _, _ in interesting(beat(r, 220, "web1"))] == ["host.up"]

    def test_first_sight_and_up_hosts_are_not_held(self) -> None:
        """recover_after applies to a return from DOWN, not to a host's first heartbeat."""
        r = network(web1=HostConfig(recover_after=5))
        assert [k for k, _, _ in interesting(beat(r, 0, "web1"))] == ["host.up"]


class FlappingTests:
    def flap(self, r: Registry, cycles: int, start: float = 0.0) -> tuple[list[Event], float]:
        """Up for one heartbeat, down by timeout, ``cycles`` times."""
        events: list[Event] = []
        t = start
        for _ in range(cycles):
            events += beat(r, t, "web1")
            t += INTERVAL + GRACE + 1
            events += r.expire(t)
            t += 1
        return events, t

    def test_flapping_host_gets_one_start_and_transitions_marked(self) -> None:
        """A host going up and down: one host.flapping start; its transitions after that
        are marked flapping (the notifier holds them)."""
        r = network()
        events, _ = self.flap(r, 6)
        flapping = [e for e in events if e.kind == HOST_FLAPPING]
        assert [(e.data["flapping"], e.data["state"]) for e in flapping] == [(True, "UP")]
        assert r.flapping("web1")
        marked = [e.kind for e in events[events.index(flapping[0]):]
                  if e.kind in (HOST_UP, HOST_DOWN) and e.data.get("flapping")]
        assert marked == ["host.up", "host.down", "host.up", "host.down", "host.up", "host.down"]
        assert not any(e.data.get("flapping") for e in events[:events.index(flapping[0])]
                       if e.kind in (HOST_UP, HOST_DOWN))

    def test_settles_with_steady_heartbeats(self) -> None:
        """Steady heartbeats bring the percent down: one stop, with the state it settled in."""
        r = network()
        _, t = self.flap(r, 6)
        stops = []
        for i in range(25):
            stops += [e for e in beat(r, t + i * INTERVAL, "web1") if e.kind == HOST_FLAPPING]
        assert [(e.data["flapping"], e.data["state"]) for e in stops] == [(False, "UP")]
        assert not r.flapping("web1")

    def test_steady_hosts_keep_no_history(self) -> None:
        """A thousand steady hosts cost the detector nothing."""
        r = network()
        for t in range(5):
            beat(r, t * INTERVAL, *(f"h{i}" for i in range(1000)))
        assert r.flaps is not None and len(r.flaps) == 0

    def test_removed_host_forgets_its_history(self) -> None:
        """Removing a host drops its flap history."""
        r = network()
        self.flap(r, 3)
        assert r.flaps is not None and len(r.flaps) == 1
        r.remove("web1", 1000)
        assert len(r.flaps) == 0
