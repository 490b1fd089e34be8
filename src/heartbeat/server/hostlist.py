"""Which hosts a list shows, a page at a time: the filters and cursors of ``GET /api/0/hosts``.

Pure code over the registry's sorted names: a page starts just after its cursor
(a host name, found by bisection) and walks forward until it has ``limit``
hosts that pass the filters, so a page of 100 from a fleet of 100,000 costs a
few hundred checks, not a sort of the fleet. ``total`` counts every match, from
the registry's running state counts when it can and by one walk otherwise. A
text filter (``q=``) walks only the hosts a :class:`TextIndex` finds: one
``str.find`` per match over the fleet's names, addresses and descriptions kept
as one text, not a casefold of every host per request.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from heartbeat.server.registry import Host, Registry

__all__ = ["HostFilter", "HostPage", "TextIndex", "iter_hosts", "page"]


@dataclass(frozen=True, slots=True)
class HostFilter:
    """What a host must be to be listed; None (or empty text) lets everything through.

    ``states``: its state is one of them. ``levels``: its worst active alert is at
    one of them (``levels_of`` gives every host's worst level). ``text``: a
    case-insensitive substring of its name, address or description.
    """

    states: frozenset[str] | None = None
    levels: frozenset[str] | None = None
    text: str | None = None

    @property
    def only_states(self) -> bool:
        """Whether the state (or nothing) is all that is asked: totals come from counts."""
        return self.levels is None and not self.text

    def matcher(self, registry: Registry, levels_of: Mapping[str, str],
                text_done: bool = False) -> Callable[[Host], bool] | None:
        """A predicate for hosts (None: every host passes); ``text_done``: the hosts it is
        asked about already contain the text (a :class:`TextIndex` found them)."""
        states, levels = self.states, self.levels
        text = "" if text_done else (self.text or "").casefold()
        if states is None and levels is None and not text:
            return None
        config_for = registry.config_for

        def match(host: Host) -> bool:
            if states is not None and host.state.value not in states:
                return False
            if levels is not None and levels_of.get(host.name) not in levels:
                return False
            if text:
                return (text in host.name.casefold()
                        or (host.addr is not None and text in host.addr)
                        or text in config_for(host.name).description.casefold())
            return True

        return match


@dataclass(frozen=True, slots=True)
class HostPage:
    """One page: its hosts in name order, the cursor of the next page (None: the last
    page) and how many hosts match in all."""

    hosts: list[Host]
    next: str | None
    total: int


BLOCK: Final = 1024
"""Hosts per block of a :class:`TextIndex`: a change rebuilds its block (about a
millisecond), never the fleet's index (a tenth of a second at 100,000 hosts)."""


@dataclass(slots=True)
class _Block:
    """A run of hosts in name order, from ``bound`` (inclusive) to the next block's."""

    bound: str
    names: list[str]
    text: str
    starts: list[int]


class TextIndex:
    """Every host's casefolded name, address and casefolded description, one line each
    in name order, as texts of :data:`BLOCK` hosts: a search is ``str.find`` over them,
    match by match.

    Kept in step with the registry on the next search: the blocks of the hosts that
    came, went or changed address since (``Registry.changed_since``) are built
    again; the whole index only when the registry cannot say (a restore, more changes
    than it remembers) or the config changed (descriptions come from it). About 60
    bytes a host. :meth:`warm` builds it ahead of the first search.
    """

    def __init__(self) -> None:
        self._key: tuple[int, int] | None = None
        self._blocks: list[_Block] = []
        self._bounds: list[str] = []

    @staticmethod
    def usable(text: str) -> bool:
        """Whether a search for ``text`` can use the index (it cannot span two fields)."""
        return "\x00" not in text

    @staticmethod
    def _block(registry: Registry, bound: str, names: list[str]) -> _Block:
        config_for, hosts = registry.config_for, registry.hosts
        lines = [f"{name.casefold()}\x00{hosts[name].addr or ''}\x00"
                 f"{config_for(name).description.casefold()}\x00" for name in names]
        starts, position = [], 0
        for line in lines:
            starts.append(position)
            position += len(line)
        return _Block(bound, names, "".join(lines), starts)

    def _build(self, registry: Registry) -> None:
        self._key = None
        for _ in self.warming(registry):
            pass

    def _update(self, registry: Registry, changed: list[str]) -> None:
        """Build again the blocks ``changed`` names fall in (a block grown past twice
        :data:`BLOCK` is split in two)."""
        names, bounds = registry.names(), self._bounds
        due = sorted({max(0, bisect_right(bounds, name) - 1) for name in changed},
                     reverse=True)  # from the last, so a split leaves earlier indexes be
        for at in due:
            low = bisect_left(names, bounds[at])
            high = bisect_left(names, bounds[at + 1]) if at + 1 < len(bounds) else len(names)
            run = list(names[low:high])
            if len(run) > 2 * BLOCK:
                half = len(run) // 2
                parts = [self._block(registry, bounds[at], run[:half]),
                         self._block(registry, run[half], run[half:])]
            else:
                parts = [self._block(registry, bounds[at], run)]
            self._blocks[at:at + 1] = parts
            bounds[at:at + 1] = [part.bound for part in parts]

    def _current(self, registry: Registry) -> None:
        key = (registry.generation, id(registry.host_config))
        if key == self._key:
            return
        changed = None
        if self._key is not None and self._key[1] == key[1]:
            changed = registry.changed_since(self._key[0])
        if changed is None or len(changed) * BLOCK > len(registry):
            self._build(registry)
        else:
            self._update(registry, changed)
            self._key = key

    def warming(self, registry: Registry) -> Iterator[None]:
        """Build the index a block a step (for ``task.cooperate`` once the server runs), so
        the first search finds it built and no reactor turn holds the fleet's build. Given
        up if the hosts change meanwhile: the next search builds what it needs."""
        key = (registry.generation, id(registry.host_config))
        names = registry.names()
        blocks = []
        for at in range(0, max(1, len(names)), BLOCK):
            if (registry.generation, id(registry.host_config)) != key:
                return
            blocks.append(self._block(registry, "" if at == 0 else names[at],
                                      list(names[at:at + BLOCK])))
            yield None
        if self._key is None and (registry.generation, id(registry.host_config)) == key:
            self._blocks, self._bounds, self._key = blocks, [b.bound for b in blocks], key

    def search(self, registry: Registry, text: str) -> list[str]:
        """The names, in order, of the hosts whose name, address or description contains
        ``text`` (casefolded; see :meth:`usable`)."""
        self._current(registry)
        found: list[str] = []
        for block in self._blocks:
            haystack, starts, names = block.text, block.starts, block.names
            end = len(starts)
            at = haystack.find(text)
            while at >= 0:
                line = bisect_right(starts, at) - 1
                found.append(names[line])
                if line + 1 >= end:
                    break
                at = haystack.find(text, starts[line + 1])
        return found


SORT_BELOW: Final = 8
"""A state filter whose hosts are under 1/SORT_BELOW of the fleet sorts just those names
(a rare state: a walk of the fleet would find few); a common one walks the fleet."""


def _names(registry: Registry, levels_of: Mapping[str, str], flt: HostFilter,
           index: TextIndex | None, within: Sequence[str] | None = None
           ) -> tuple[Sequence[str], bool]:
    """The names a listing walks, in order: ``within`` when given (the few hosts a user
    holds a role on), only alerting hosts when levels are asked, only those ``index``
    finds when text is, only the hosts of a rare state when states are, else the whole
    fleet; and whether the text is already matched."""
    if within is not None:
        return within, False
    if flt.levels is not None:
        return sorted(n for n, level in levels_of.items() if level in flt.levels), False
    text = (flt.text or "").casefold()
    if text and index is not None and index.usable(text):
        return index.search(registry, text), True
    if flt.states is not None:
        counts = registry.counts()
        if sum(counts.get(s, 0) for s in flt.states) * SORT_BELOW < len(registry):
            return sorted(n for s in flt.states for n in registry.in_state(s)), False
    return registry.names(), False


def iter_hosts(registry: Registry, flt: HostFilter, levels_of: Mapping[str, str],
               sees: Callable[[str], bool] | None, after: str | None = None, *,
               index: TextIndex | None = None,
               within: Sequence[str] | None = None) -> Iterator[Host]:
    """Every host passing ``flt`` that ``sees`` (None: everyone) allows, in name order;
    ``index`` (None: a walk of the fleet) finds the hosts a text filter matches; ``within``
    (sorted names), when given, are all the hosts ``sees`` may allow."""
    names, text_done = _names(registry, levels_of, flt, index, within)
    match = flt.matcher(registry, levels_of, text_done)
    hosts = registry.hosts
    for at in range(0 if after is None else bisect_right(names, after), len(names)):
        host = hosts.get(names[at])
        if host is not None and (sees is None or sees(host.name)) and (
                match is None or match(host)):
            yield host


def page(registry: Registry, flt: HostFilter, levels_of: Mapping[str, str],
         sees: Callable[[str], bool] | None, limit: int, *, after: str | None = None,
         index: TextIndex | None = None, within: Sequence[str] | None = None) -> HostPage:
    """The ``limit`` hosts after ``after`` passing ``flt``, with the next cursor and total.

    ``sees`` None means the caller sees every host (an admin): then the total of no
    filter or a state filter comes from the registry's counts; otherwise one walk
    over the matches gives both the page and the total.
    """
    if sees is None and flt.only_states:
        found = iter_hosts(registry, flt, levels_of, sees, after)
        hosts = [host for _, host in zip(range(limit), found, strict=False)]
        more = next(found, None) is not None
        counts = registry.counts()
        total = len(registry) if flt.states is None else sum(
            counts.get(state, 0) for state in flt.states)
        return HostPage(hosts, hosts[-1].name if more and hosts else None, total)
    names, text_done = _names(registry, levels_of, flt, index, within)
    if sees is None and flt.matcher(registry, levels_of, text_done) is None:
        # The names are the answer (a text the index found, for an admin): no walk. At
        # 100,000 hosts "q=99" finds 19,000, whose walk was half of each page's time.
        start = 0 if after is None else bisect_right(names, after)
        hosts = [registry.hosts[name] for name in names[start:start + limit]]
        more = start + limit < len(names)
        return HostPage(hosts, hosts[-1].name if more and hosts else None, len(names))
    hosts = []
    total = 0
    more = False
    for host in iter_hosts(registry, flt, levels_of, sees, index=index, within=within):
        total += 1
        if after is not None and host.name <= after:
            continue
        if len(hosts) < limit:
            hosts.append(host)
        else:
            more = True
    return HostPage(hosts, hosts[-1].name if more and hosts else None, total)
