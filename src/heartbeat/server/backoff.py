"""Retry delays shared by the services that talk to flaky peers (notifications, DNS)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``first`` s after the first failure, doubling, at most ``cap`` s."""

    first: float = 2.0
    cap: float = 300.0

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.first * 2 ** (attempt - 1), self.cap))
