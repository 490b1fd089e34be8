"""What every notification channel shares: the message, the interface, the errors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from twisted.internet.defer import Deferred

if TYPE_CHECKING:
    from heartbeat.server.notices import Notice

__all__ = ["LEVELS", "Channel", "DeliveryError", "Notification", "level_rank", "redact"]

LEVELS: Final = ("info", "warning", "error", "critical")


def level_rank(level: str) -> int:
    """Order of severity; unknown levels rank as ``info``."""
    return LEVELS.index(level) if level in LEVELS else 0


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for people, ready for any channel.

    ``recipients`` are addresses in the channel's own terms (e-mail addresses,
    Pushover user keys, Mattermost channels, Signal numbers); the router fills
    them in per channel, the channel never looks them up.
    """

    title: str
    body: str
    level: str
    hosts: tuple[str, ...]
    kind: str
    ts: float
    recipients: tuple[str, ...] = ()
    notices: tuple[Notice, ...] = ()
    """What it notifies, for the marks of servers sharing a store (heartbeat.server.notices)."""


class DeliveryError(Exception):
    """A send that failed; ``permanent`` ones (a 4xx, a refused login) are not retried."""

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Channel(Protocol):
    """A way to reach people. ``send`` fires None on delivery, fails with a reason else.

    The returned Deferred must be cancellable: cancelling it aborts the connection
    (the notifier cancels sends that run past ``notify_timeout``).
    """

    name: str
    max_recipients: int
    secrets: tuple[str, ...]

    def send(self, notification: Notification) -> Deferred[None]: ...


REDACTED: Final = "[redacted]"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (tokens, passwords, webhook URLs) replaced."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
