"""What every fuzz target raises when the code under test breaks its contract."""

from __future__ import annotations

__all__ = ["Escape", "check"]


class Escape(AssertionError):
    """A parser, or the whole server, broke its contract on some input."""


def check(condition: bool, what: str) -> None:
    """Raise :class:`Escape` saying ``what`` unless ``condition`` holds."""
    if not condition:
        raise Escape(what)
