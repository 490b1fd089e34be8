"""Acknowledgements: "I am on it", for one alert or for a host that is down.

Pure code: no reactor, no I/O. An :class:`Acknowledgement` holds for the level it
was given at: reminders about the problem stop while the problem stays at that
level, and a change of level (worse, better, gone) ends it, so the change is
notified as usual. The :class:`AckBook` is the one object the notifier, the API
and the pages ask.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["HOST", "AckBook", "Acknowledgement"]

HOST: Final = ""
"""The target of a host's own acknowledgement (its DOWN or UNREACHABLE state); an
alert's target is its metric path."""


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """``author`` took on ``host``'s problem ``target`` at ``level``, at ``at``."""

    host: str
    target: str
    level: str
    author: str | None
    comment: str
    at: float

    def holds_for(self, level: str) -> bool:
        """Whether the acknowledgement still covers the problem at ``level``."""
        return level == self.level

    def to_json(self) -> dict[str, Any]:
        return {"by": self.author, "at": self.at, "comment": self.comment,
                "level": self.level}


class AckBook:
    """Every acknowledgement, by host and target."""

    def __init__(self) -> None:
        self._acks: dict[str, dict[str, Acknowledgement]] = {}

    def __iter__(self) -> Iterator[Acknowledgement]:
        for by_target in self._acks.values():
            yield from by_target.values()

    def __len__(self) -> int:
        return sum(len(by_target) for by_target in self._acks.values())

    def put(self, ack: Acknowledgement) -> None:
        self._acks.setdefault(ack.host, {})[ack.target] = ack

    def restore(self, acks: Iterable[Acknowledgement], *, replace: bool = False) -> None:
        """Acknowledgements kept in the store (``replace``: instead of those held now)."""
        if replace:
            self._acks.clear()
        for ack in acks:
            self.put(ack)

    def get(self, host: str, target: str) -> Acknowledgement | None:
        by_target = self._acks.get(host)
        return None if by_target is None else by_target.get(target)

    def holding(self, host: str, target: str, level: str) -> Acknowledgement | None:
        """The acknowledgement of ``host``'s ``target`` if it holds at ``level``."""
        ack = self.get(host, target)
        return ack if ack is not None and ack.holds_for(level) else None

    def for_host(self, host: str) -> dict[str, Acknowledgement]:
        return dict(self._acks.get(host, {}))

    def remove(self, host: str, target: str) -> Acknowledgement | None:
        by_target = self._acks.get(host)
        if by_target is None:
            return None
        ack = by_target.pop(target, None)
        if not by_target:
            del self._acks[host]
        return ack

    def level_changed(self, host: str, target: str, level: str) -> Acknowledgement | None:
        """``host``'s ``target`` is now at ``level`` (OK or UP when gone): the
        acknowledgement it ends, if any."""
        ack = self.get(host, target)
        if ack is None or ack.holds_for(level):
            return None
        return self.remove(host, target)

    def forget(self, host: str) -> list[Acknowledgement]:
        """Drop a removed host's acknowledgements."""
        return list(self._acks.pop(host, {}).values())
