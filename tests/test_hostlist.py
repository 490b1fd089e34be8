"""Pages and filters of the host list, and the running counts they lean on (plain values)."""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heartbeat.config.server import HostConfig
from heartbeat.server import hostlist
from heartbeat.server.dependencies import DependencyGraph
from heartbeat.server.hostlist import HostFilter, HostPage, TextIndex, iter_hosts, page
from heartbeat.server.registry import Host, HostState, Registry

SRC = ("10.0.0.5", 40000)


def fleet(size: int, **config: HostConfig) -> Registry:
    """``size`` hosts named h00000...; every third one shut down, every fifth never beat."""
    registry = Registry(grace=10, default_interval=30, host_config=config)
    for n in range(size):
        name = f"h{n:05d}"
        if n % 5 == 4:
            registry.apply({"ID": "MSG", "name": name, "text": "hello"}, SRC, now=1.0)
            continue
        registry.apply({"ID": "HTB", "name": name}, (f"10.0.{n // 256}.{n % 256}", 1), now=1.0)
        if n % 3 == 0:
            registry.apply({"ID": "SHUT", "name": name}, SRC, now=2.0)
    return registry


def names(hosts: list[Host]) -> list[str]:
    return [h.name for h in hosts]


def walked_counts(registry: Registry) -> dict[str, int]:
    counts = {state.value: 0 for state in HostState}
    for host in registry:
        counts[host.state.value] += 1
    return counts


def every_page(registry: Registry, flt: HostFilter, limit: int,
               levels: dict[str, str] | None = None) -> list[HostPage]:
    pages = [page(registry, flt, levels or {}, None, limit)]
    while pages[-1].next is not None:
        pages.append(page(registry, flt, levels or {}, None, limit, after=pages[-1].next))
    return pages


class PageTests:
    @pytest.mark.parametrize("size", [1, 30, 1000])
    def test_pages_cover_the_fleet_once_in_name_order(self, size: int) -> None:
        """Following ``next`` from the first page lists every host once, sorted by name."""
        registry = fleet(size)
        pages = every_page(registry, HostFilter(), 100)
        listed = [name for p in pages for name in names(p.hosts)]
        assert listed == sorted(h.name for h in registry)
        assert [p.total for p in pages] == [size] * len(pages)
        assert [len(p.hosts) for p in pages[:-1]] == [100] * (len(pages) - 1)
        assert pages[-1].next is None

    def test_cursor_need_not_be_a_host(self) -> None:
        """``after`` is a position in name order: a name that does not exist works too."""
        registry = fleet(30)
        found = page(registry, HostFilter(), {}, None, 3, after="h00010x")
        assert found == HostPage([registry.hosts[n] for n in ("h00011", "h00012", "h00013")],
                                 "h00013", 30)

    def test_last_page_exactly_full_has_no_next(self) -> None:
        """A page that ends with the last host says so, not with an empty page after it."""
        registry = fleet(10)
        found = page(registry, HostFilter(), {}, None, 10)
        assert (len(found.hosts), found.next, found.total) == (10, None, 10)

    def test_state_filter_counts_from_the_running_totals(self) -> None:
        """``state=`` lists only hosts in those states; its total matches the listed ones."""
        registry = fleet(1000)
        for wanted in (frozenset({"DOWN"}), frozenset({"UP", "UNKNOWN"})):
            flt = HostFilter(states=wanted)
            listed = [h for p in every_page(registry, flt, 100) for h in p.hosts]
            assert {h.state.value for h in listed} == set(wanted)
            assert len(listed) == page(registry, flt, {}, None, 1).total
            assert names(listed) == sorted(h.name for h in registry if h.state.value in wanted)

    def test_text_matches_name_address_and_description(self) -> None:
        """``q`` is a case-insensitive substring of the name, the address or the description."""
        registry = fleet(30, h00007=HostConfig(description="Primary DATABASE"))
        assert names(page(registry, HostFilter(text="H0002"), {}, None, 100).hosts) == [
            f"h{n:05d}" for n in range(20, 30)]
        assert names(page(registry, HostFilter(text="database"), {}, None, 100).hosts) == [
            "h00007"]
        assert names(page(registry, HostFilter(text="10.0.0.17"), {}, None, 100).hosts) == [
            "h00017"]
        assert page(registry, HostFilter(text="nowhere"), {}, None, 100) == HostPage([], None, 0)

    @settings(max_examples=60, deadline=None)
    @given(ops=st.lists(st.tuples(st.sampled_from(["HTB", "MOVE", "SHUT", "remove"]),
                                  st.integers(0, 30)), max_size=40),
           texts=st.lists(st.sampled_from(["h0001", "1", "10.0.0.1", "STRASSE", "straße", "ss",
                                           "7\x00", "h00007\x0010", "database", "zz", "0"]),
                          min_size=1, max_size=4),
           limit=st.integers(1, 5), block=st.sampled_from([1, 2, 3, hostlist.BLOCK]))
    def test_text_index_finds_what_a_walk_finds(self, ops: list[tuple[str, int]],
                                                texts: list[str], limit: int,
                                                block: int) -> None:
        """One TextIndex kept across hosts coming, going and changing address lists and
        counts exactly what the walk without it does, page by page, for any text, whatever
        its blocks' size (blocks built again, split and emptied as hosts come and go)."""
        registry = fleet(12, h00007=HostConfig(description="Straße to the DATABASE"))
        index = TextIndex()
        with patch.object(hostlist, "BLOCK", block):
            self._follow(registry, index, ops, texts, limit)

    @staticmethod
    def _follow(registry: Registry, index: TextIndex, ops: list[tuple[str, int]],
                texts: list[str], limit: int) -> None:
        for kind, n in ops:
            name = f"h{n:05d}"
            if kind == "remove":
                registry.remove(name, 3.0)
            else:
                source = ("10.0.0.1", 1) if kind == "MOVE" else SRC
                registry.apply({"ID": "SHUT" if kind == "SHUT" else "HTB", "name": name},
                               source, 3.0)
            for text in texts:
                for states in (None, frozenset({"UP"})):
                    flt = HostFilter(states=states, text=text)
                    pages = [page(registry, flt, {}, None, limit, index=index)]
                    while pages[-1].next is not None:
                        pages.append(page(registry, flt, {}, None, limit,
                                          after=pages[-1].next, index=index))
                    walked = every_page(registry, flt, limit)
                    assert pages == walked
                    assert names(list(iter_hosts(registry, flt, {}, None, index=index))) == [
                        h.name for p in walked for h in p.hosts]

    def test_a_change_builds_only_its_block_again(self) -> None:
        """After a host comes, goes or moves, the next search builds the blocks those hosts
        fall in, not the fleet's index; a restore (the registry cannot say what changed)
        or more changes than it keeps build it all."""
        registry = fleet(1000)
        index = TextIndex()
        built: list[int] = []
        block = TextIndex._block

        def counted(registry: Registry, bound: str, names: list[str]) -> Any:
            built.append(len(names))
            return block(registry, bound, names)

        with patch.object(hostlist, "BLOCK", 100), \
                patch.object(TextIndex, "_block", staticmethod(counted)):
            assert len(index.search(registry, "h0099")) == 10
            assert built == [100] * 10
            built.clear()
            assert index.search(registry, "h0099") == [f"h0099{n}" for n in range(10)]
            assert built == []  # nothing changed
            registry.apply({"ID": "HTB", "name": "h00995x"}, SRC, now=3.0)
            registry.remove("h00010", 3.0)
            assert index.search(registry, "h00995") == ["h00995", "h00995x"]
            assert sorted(built) == [99, 101]  # the first block and the last
            built.clear()
            registry.apply({"ID": "HTB", "name": "h00500"}, ("10.9.9.9", 1), now=3.0)
            assert index.search(registry, "10.9.9.9") == ["h00500"]
            assert built == [100]
            built.clear()
            registry.restore([Host("new1", HostState.UP)], 3.0)  # 1,001 hosts now
            assert index.search(registry, "new1") == ["new1"]
            assert built == [100] * 10 + [1]
            built.clear()
            for n in range(hostlist.BLOCK * 2):  # past what it would save
                registry.apply({"ID": "HTB", "name": f"x{n:04d}"}, SRC, now=4.0)
            assert len(index.search(registry, "x0")) == 200
            assert built == [100] * 12 + [1]

    def test_warming_builds_the_index_ahead_in_slices(self) -> None:
        """``warming`` builds a block a step; the first search then builds nothing. Hosts
        changing meanwhile make it give up, and the search builds what it needs."""
        registry = fleet(50)
        index = TextIndex()
        with patch.object(hostlist, "BLOCK", 10):
            assert len(list(index.warming(registry))) == 5
            built: list[str] = []
            block = TextIndex._block
            with patch.object(TextIndex, "_block", staticmethod(
                    lambda r, bound, names: built.append(bound) or block(r, bound, names))):
                assert index.search(registry, "h0004") == [f"h0004{n}" for n in range(10)]
                assert built == []
                fresh = TextIndex()
                warming = fresh.warming(registry)
                next(warming)
                registry.apply({"ID": "HTB", "name": "h00049x"}, SRC, now=3.0)
                assert list(warming) == []
                built.clear()
                assert fresh.search(registry, "h00049") == ["h00049", "h00049x"]
                assert built == ["", "h00010", "h00020", "h00030", "h00040", "h00049x"]

    def test_alert_levels_list_only_alerting_hosts(self) -> None:
        """``alerting=`` matches a host's worst active level; hosts without alerts never."""
        registry = fleet(30)
        levels = {"h00003": "CRITICAL", "h00001": "WARNING", "h00020": "CRITICAL",
                  "gone": "CRITICAL"}
        flt = HostFilter(levels=frozenset({"CRITICAL"}))
        assert page(registry, flt, levels, None, 1) == HostPage(
            [registry.hosts["h00003"]], "h00003", 2)
        assert page(registry, flt, levels, None, 1, after="h00003") == HostPage(
            [registry.hosts["h00020"]], None, 2)

    def test_viewer_sees_only_its_hosts_and_counts_only_them(self) -> None:
        """With a ``sees`` predicate, pages and totals leave the hidden hosts out."""
        registry = fleet(30)
        mine = {"h00002", "h00011", "h00025"}
        found = page(registry, HostFilter(), {}, mine.__contains__, 2)
        assert found == HostPage([registry.hosts["h00002"], registry.hosts["h00011"]],
                                 "h00011", 3)

    @settings(max_examples=60, deadline=None)
    @given(ops=st.lists(st.tuples(st.sampled_from(["HTB", "SHUT", "MSG", "remove", "expire"]),
                                  st.integers(0, 40)), max_size=80),
           limit=st.integers(1, 7),
           states=st.none() | st.sets(st.sampled_from([s.value for s in HostState]),
                                      min_size=1).map(frozenset))
    def test_counts_and_pages_match_a_walk(self, ops: list[tuple[str, int]], limit: int,
                                           states: frozenset[str] | None) -> None:
        """After any mix of heartbeats, shutdowns, expiries (some hosts UNREACHABLE behind
        down parents), removals and a restore, the running counts equal a walk over the
        hosts and the pages list what a filter would."""
        parents = DependencyGraph({f"h{n:02d}": ["h00", "h01"] for n in range(2, 41, 3)})
        registry = Registry(grace=1, default_interval=1, dependencies=parents)
        now = 0.0
        for kind, n in ops:
            now += 0.7
            name = f"h{n:02d}"
            if kind == "remove":
                registry.remove(name, now)
            elif kind == "expire":
                registry.expire(now)
            else:
                message: dict[str, Any] = {"ID": kind, "name": name}
                if kind == "MSG":
                    message["text"] = "x"
                registry.apply(message, SRC, now)
            assert registry.counts() == walked_counts(registry)
        restored = Registry(grace=1, default_interval=1, dependencies=parents)
        restored.restore(list(registry), now)
        for r in (registry, restored):
            assert r.counts() == walked_counts(r)
            assert list(r.names()) == sorted(h.name for h in r)
            flt = HostFilter(states=states)
            listed = [h for p in every_page(r, flt, limit) for h in p.hosts]
            assert names(listed) == sorted(
                h.name for h in r if states is None or h.state.value in states)
            assert page(r, flt, {}, None, limit).total == len(listed)
            assert names(list(iter_hosts(r, flt, {}, None))) == names(listed)
