"""Signed datagrams on the server: which hosts must sign, with which key, and no replays.

Pure code with ``now`` passed in. ``protocol.decode_datagram`` checks each
envelope on its own (known key, valid MAC, within ``sign_window``); this module
judges it against the host it claims to come from (docs/SECURITY.md):

- a host must sign when ``require_signed`` says so (globally, or per host);
- a key named by some hosts' ``key:`` is theirs alone; a host with ``key:``
  signs with exactly that key; other keys are fleet-wide;
- a signed datagram's seq must be above the last one accepted from its host,
  also once the host has been removed: its last seq is kept until it is older
  than ``sign_window``, when the window alone refuses anything captured before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from heartbeat.config.server import HostConfig, ServerConfig
from heartbeat.events import Event
from heartbeat.protocol import Keyring, Signed, next_seq, seal

__all__ = ["REFUSALS", "ReplySigner", "SignaturePolicy", "Signing", "keyring_for"]

REFUSALS: Final = ("unsigned", "wrong_key", "replayed")
"""Drop reasons of this module (``ingest.dropped``), beside decode's envelope reasons."""

_DEFAULT_HOST: Final = HostConfig()


def keyring_for(config: ServerConfig) -> Keyring:
    """The server's keys (``keys:``, each secret as UTF-8) and ``sign_window``."""
    return Keyring({key_id: secret.encode("utf-8") for key_id, secret in config.keys.items()},
                   config.sign_window)


class SignaturePolicy:
    """Whether a decoded datagram may count as coming from the host it names."""

    def __init__(self, hosts: Mapping[str, HostConfig], require_signed: bool,
                 window: float = 120.0) -> None:
        self._hosts = hosts
        self._require = require_signed
        self._window = window
        self._removed: dict[str, None] = {}
        """Removed hosts whose last seq is still kept (in order of removal)."""
        self._owners: dict[str, set[str]] = {}
        for name, host in hosts.items():
            if host.key is not None:
                self._owners.setdefault(host.key, set()).add(name)
        self._last: dict[str, int] = {}
        self.signed = 0
        self.any_required = require_signed or any(h.require_signed for h in hosts.values())
        """False: an unsigned datagram is never refused (the hot path skips the check)."""

    def refusal(self, name: str, signed: Signed | None) -> str | None:
        """The drop reason for a datagram for ``name`` signed as ``signed``, or None."""
        host = self._hosts.get(name, _DEFAULT_HOST)
        if signed is None:
            required = self._require if host.require_signed is None else host.require_signed
            return "unsigned" if required else None
        if host.key is not None and signed.key_id != host.key:
            return "wrong_key"
        owners = self._owners.get(signed.key_id)
        if owners is not None and name not in owners:
            return "wrong_key"
        last = self._last.get(name)
        if last is not None and signed.seq <= last:
            return "replayed"
        return None

    def accepted(self, name: str, signed: Signed) -> None:
        """Remember ``signed.seq`` as the newest of ``name`` (call once it is taken)."""
        self._last[name] = signed.seq
        self._removed.pop(name, None)
        self.signed += 1

    def on_removed(self, event: Event) -> None:
        """A removed host's last seq outlives it (see :meth:`forget`)."""
        self.forget(event.host, event.ts)

    def forget(self, name: str, now: float) -> None:
        """``name`` was removed at ``now``: its last seq is kept while a datagram it
        signed could still be taken within ``sign_window`` (a captured one sent again
        would bring the host back), then dropped with every other such record."""
        if name in self._last:
            self._removed[name] = None
        oldest = (now - self._window) * 1_000_000
        for removed in list(self._removed):
            last = self._last.get(removed)
            if last is None or last < oldest:
                self._last.pop(removed, None)
                del self._removed[removed]


class ReplySigner:
    """Signs the server's ACK/CMD/UPD with the key the host signed with.

    Its seq is the server's clock in microseconds, kept strictly increasing, so
    an agent can refuse a replayed CMD the way the server refuses a replayed HTB.
    """

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._seq = 0

    def seal(self, data: bytes, key_id: str, now: float) -> bytes:
        self._seq = next_seq(self._seq, now)
        return seal(data, key_id, self._keyring, self._seq)


@dataclass
class Signing:
    """What ingest needs for signed datagrams: the keys, the policy, the reply signer."""

    keyring: Keyring
    policy: SignaturePolicy
    signer: ReplySigner

    @classmethod
    def from_config(cls, config: ServerConfig) -> Signing:
        keyring = keyring_for(config)
        return cls(keyring, SignaturePolicy(config.hosts, config.require_signed,
                                            config.sign_window),
                   ReplySigner(keyring))

    def to_json(self) -> dict[str, Any]:
        return {"keys": len(self.keyring.keys), "required": self.policy.any_required,
                "signed_accepted": self.policy.signed}
