"""The agent's shared key: read from the config (``key``) or a file (``key_file``).

With a key, every datagram the agent (or ``heartbeat send``) sends is signed,
and the server's replies are checked with the same key (docs/SECURITY.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from heartbeat.config.agent import AgentConfig
from heartbeat.config.checks import key_problem
from heartbeat.config.loader import ConfigError
from heartbeat.protocol import Keyring, seal

__all__ = ["SigningKey", "signing_key"]


@dataclass(frozen=True)
class SigningKey:
    """The key id the server knows, and a keyring holding only that key."""

    key_id: str
    keyring: Keyring

    def seal(self, data: bytes, seq: int) -> bytes:
        return seal(data, self.key_id, self.keyring, seq)

    @property
    def overhead(self) -> int:
        """Bytes an envelope adds to a datagram."""
        return 4 + 1 + len(self.key_id) + 8 + 32


def signing_key(config: AgentConfig, source: str) -> SigningKey | None:
    """The configured key, None without one; a ConfigError names an unusable key_file."""
    if config.key_id is None:
        return None
    secret = config.key
    if secret is None and config.key_file is not None:
        try:
            secret = Path(config.key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or e
            raise ConfigError(source, "key_file",
                              f"cannot read {config.key_file}: {reason}") from None
        problem = key_problem(secret)
        if problem:
            raise ConfigError(source, "key_file", f"{config.key_file}: {problem}")
    if secret is None:
        return None
    return SigningKey(config.key_id, Keyring({config.key_id: secret.encode("utf-8")},
                                             config.sign_window))
