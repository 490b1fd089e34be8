"""The agent's schema: every key of ``~/.hbc.yaml``, its type, its default and its checks.

Imports nothing of the server (the agent installs and runs without it). Pure
code: :func:`load_agent_config` gives an :class:`AgentConfig` or one
:class:`~heartbeat.config.loader.ConfigError` line naming file and key.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Any, ClassVar

from heartbeat.config.checks import key_problem, not_negative, port_number, positive
from heartbeat.config.loader import ConfigError, load_config, option
from heartbeat.protocol import valid_host_name, valid_key_id

__all__ = ["AgentConfig", "command_line", "load_agent_config"]


def command_line(value: Any) -> str | None:
    """A command line: a non-empty list of words, or a string shlex can split."""
    if not (value if isinstance(value, list) else str(value).strip()):
        return "must name a program (it is empty)"
    if isinstance(value, str):
        try:
            shlex.split(value)
        except ValueError as e:  # an unclosed quote: checked here, not on the first UPD
            return f"cannot be split into words: {e}"
    return None


def _each_argv(value: Any) -> str | None:
    for name, words in value.items():
        if not words:
            return f"{name}: must name a program (an empty list was given)"
    return None


@dataclass(frozen=True)
class AgentConfig:
    """Every agent key (``~/.hbc.yaml``), its type and its default."""

    REPLACED_KEYS: ClassVar[dict[str, str]] = {
        "server": "name the server on the command line: twistd heartbeat-agent SERVER"}

    hb_port: int = option(50003, port_number, doc="the servers' UDP port")
    interval: float = option(30.0, positive, doc="seconds between heartbeats")
    name: str | None = option(None, doc="the name this host reports (default: its short name)")
    plugins: dict[str, dict[str, Any]] = option(
        {}, doc="per plugin options {NAME: {interval, enabled, timeout, ...}}")
    plugin_dirs: list[str] = option([], doc="directories whose *.py files are custom plugins")
    allowed_commands: dict[str, list[str]] = option(
        {}, _each_argv, doc="CMD allow-list: name -> argv; server args are appended")
    command_timeout: float = option(60.0, positive, doc="seconds before a CMD is killed")
    update_command: list[str] | str | None = option(
        None, command_line, doc="argv run on UPD (a string is split, never run by a shell)")
    update_timeout: float = option(900.0, positive, doc="seconds before the update is killed")
    max_datagram: int = option(1400, positive, doc="PLG datagram size target (bytes)")
    batch_delay: float = option(1.0, not_negative, doc="seconds results wait to share a PLG")
    resolve_interval: float = option(600.0, positive, doc="seconds between re-resolving servers")
    key: str | None = option(None, secret=True,
                             doc="shared key: sign every datagram, verify the server's replies")
    key_file: str | None = option(None, doc="a file holding the shared key (instead of key)")
    key_id: str | None = option(None, doc="the key's id under the server's keys:")
    sign_window: float = option(
        120.0, positive, doc="accepted clock difference of the server's signed replies (s)")

    def check(self, source: str) -> None:
        """Rules beyond each key's type (run by the loader)."""
        if self.name is not None and not valid_host_name(self.name):
            raise ConfigError(source, "name", f"not a valid host name: {self.name!r:.60}")
        if self.key is not None and self.key_file is not None:
            raise ConfigError(source, "key_file", "give key or key_file, not both")
        if (self.key is not None or self.key_file is not None) and self.key_id is None:
            raise ConfigError(source, "key_id", "required with key or key_file: the id the "
                                                "server knows the key by")
        if self.key_id is not None and not valid_key_id(self.key_id):
            raise ConfigError(source, "key_id", "a key id is 1-64 of [A-Za-z0-9._-]")
        if self.key_id is not None and self.key is None and self.key_file is None:
            raise ConfigError(source, "key", "key_id needs key or key_file")
        problem = key_problem(self.key) if self.key is not None else None
        if problem:
            raise ConfigError(source, "key", problem)


def load_agent_config(path: str | os.PathLike[str] | None) -> AgentConfig:
    """Load and check an agent config; ``None`` gives the built-in defaults."""
    return load_config(AgentConfig, path)
