"""The server's configuration checked whole: its keys and the rule book they make.

Loading a server config is one call, :func:`load_settings`, used by ``twistd
heartbeat`` (and its ``--check``), ``make run`` and the tests alike: it checks
every key (heartbeat.config.server) and builds the threshold rule book from them
(heartbeat.server.thresholds.rulebook), so a bad rule is a config error at load
time like any other bad key, and nothing builds the rule book again later.
Pure code: the config package knows nothing of the server's engines; this
module, on the server's side, joins the two.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from heartbeat.config.loader import load_config, parse_config
from heartbeat.config.server import ServerConfig
from heartbeat.server.thresholds.rulebook import RuleBook

__all__ = ["DEFAULTS_SOURCE", "ServerSettings", "load_settings", "parse_settings"]

DEFAULTS_SOURCE = "<defaults>"
"""How errors name the built-in defaults (no file)."""


@dataclass(frozen=True)
class ServerSettings:
    """A checked server config: its keys, the rule book of its thresholds, its file."""

    config: ServerConfig
    rules: RuleBook
    path: str | None
    """The file it came from; None: the built-in defaults."""

    @classmethod
    def from_config(cls, config: ServerConfig, path: str | None = None) -> ServerSettings:
        """Check what the keys alone do not say (the threshold rules) for ``config``;
        a :class:`~heartbeat.config.loader.ConfigError` names ``path`` and the key."""
        return cls(config, RuleBook.from_config(config, path or DEFAULTS_SOURCE), path)


def load_settings(path: str | os.PathLike[str] | None) -> ServerSettings:
    """Load and check a server config file; ``None`` gives the built-in defaults."""
    return ServerSettings.from_config(load_config(ServerConfig, path),
                                      None if path is None else str(path))


def parse_settings(text: str, source: str) -> ServerSettings:
    """Check a server config's YAML ``text``; ``source`` names it in errors."""
    return ServerSettings.from_config(parse_config(ServerConfig, text, source), source)
