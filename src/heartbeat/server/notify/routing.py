"""Who hears about a host, on which channel, at which address (pure: config in, addresses out).

- ``pushsrv`` (pushover | mattermost | signal | all) sends every notification to the
  push services' own configured recipients, and ``email.to`` gets every one by e-mail;
- a host's owner and its managers get its notifications on their
  ``notification_channels``; admin users get all hosts';
- ``watch: false`` on a host silences all of them.

Users and access lists are asked of the one
:class:`~heartbeat.server.access.Directory` the API and the feed ask (the
config with the API's changes on top): a user deleted or demoted through the
API stops getting mail at once, one added or made owner starts.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from heartbeat.config.server import HostConfig, ServerConfig, UserConfig
from heartbeat.config.server_checks import push_services
from heartbeat.server.access import Directory

__all__ = ["CHANNELS", "PUSH_CHANNELS", "Router", "channels_in_use"]

PUSH_CHANNELS: Final = ("pushover", "mattermost", "signal")
CHANNELS: Final = ("email", *PUSH_CHANNELS)
_DEFAULT_HOST = HostConfig()


class Router:
    """Maps a host name to ``{channel: recipients}`` for the channels that exist."""

    def __init__(self, config: ServerConfig, channels: Collection[str],
                 directory: Directory | None = None) -> None:
        self._config = config
        self._directory = directory if directory is not None else Directory(
            config.users, config.hosts, config.default_owner)
        self._channels = [c for c in CHANNELS if c in channels]
        push = push_services(config)
        self._everyone: dict[str, list[str]] = {
            "email": list(config.email.to),
            "pushover": [config.pushover.user] if "pushover" in push and config.pushover.user
            else [],
            "mattermost": [config.mattermost.channel or ""] if "mattermost" in push else [],
            "signal": list(config.signal.recipients) if "signal" in push else [],
        }

    def _host(self, host: str) -> HostConfig:
        return self._config.hosts.get(host, _DEFAULT_HOST)

    def watched(self, host: str) -> bool:
        return self._host(host).watch

    def concerned(self, host: str) -> list[str]:
        """Users who get ``host``'s notifications: admins, its owner, its managers."""
        access = self._directory.access(host)
        return self._directory.in_user_order(
            [*self._directory.admins(), access.owner or "", *access.managers])

    def _address(self, user: UserConfig, channel: str) -> str | None:
        if channel == "email":
            return user.email
        if channel == "pushover":
            return user.pushover_user
        if channel == "signal":
            return user.signal_number
        if user.mattermost_user:
            return f"@{user.mattermost_user}"
        return self._config.mattermost.channel or ""

    def route(self, host: str) -> dict[str, tuple[str, ...]]:
        """``{channel: recipients}`` for ``host``; empty when it is not watched."""
        if not self.watched(host):
            return {}
        targets = {channel: dict.fromkeys(self._everyone[channel]) for channel in self._channels}
        users = self._directory.users
        for name in self.concerned(host):
            user = users[name]
            for channel in user.notification_channels:
                if channel not in targets:
                    continue
                address = self._address(user, channel)
                if address is not None:
                    targets[channel][address] = None
        return {channel: tuple(found) for channel, found in targets.items() if found}


def channels_in_use(config: ServerConfig) -> list[str]:
    """Channels that can have a recipient under ``config`` (the ones worth starting)."""
    used = {"email"} if config.email.to else set()
    used.update(push_services(config))
    for user in config.users.values():
        used.update(user.notification_channels)
    return [c for c in CHANNELS if c in used]
