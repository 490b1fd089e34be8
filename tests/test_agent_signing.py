"""The agent with a shared key: everything it sends is signed; it trusts only signed requests."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from heartbeat.agent.keys import signing_key
from heartbeat.config.agent import AgentConfig
from heartbeat.config.loader import ConfigError, parse_config
from heartbeat.protocol import Keyring, decode_datagram, seal
from tests.agent_fakes import AgentReactor
from tests.test_agent_sender import make

V4 = socket.AF_INET
SECRET = "agent-fleet-secret-0123456789"
KEY = signing_key(AgentConfig(key=SECRET, key_id="fleet"), "test.yaml")
SERVER_KEYS = Keyring({"fleet": SECRET.encode()})
SERVER = ("192.0.2.10", 50003)


def signed_sender(reactor: AgentReactor, **kwargs: Any) -> Any:
    requests: list[dict[str, Any]] = []
    sender = make(reactor, key=KEY, on_request=lambda m, reply: requests.append(m), **kwargs)
    sender.startService()
    return sender, requests


def received(reactor: AgentReactor) -> list[tuple[dict[str, Any], int | None]]:
    """What the server makes of each datagram the agent sent: message and seq."""
    out = []
    for data, _ in reactor.ports[V4].written:
        message, _, signed = decode_datagram(data, keyring=SERVER_KEYS, now=reactor.seconds())
        out.append((message, signed.seq if signed else None))
    return out


def reply(message: dict[str, Any], seq: int | None, key: bytes = SECRET.encode(),
          key_id: str = "fleet") -> bytes:
    data = json.dumps(message).encode()
    return data if seq is None else seal(data, key_id, key, seq)


def test_everything_sent_is_signed_with_growing_seqs() -> None:
    """HTB, BOOT, PLG and SHUT all go out signed; seqs are the clock and always grow."""
    reactor = AgentReactor()
    reactor.advance(1_700_000_000)
    sender, _ = signed_sender(reactor, boot=True, max_datagram=600)
    noise = "".join(hashlib.sha256(b"%d" % i).hexdigest() for i in range(40))  # ~1.3 KB zlib'd
    sender.queue_plugin("big", {"blob": noise})
    sender.queue_plugin("small", {"v": 1})
    reactor.advance(1.0)
    sender.stopService()
    messages = received(reactor)
    assert [m["ID"] for m, _ in messages] == ["BOOT", "HTB", "PLG", "PLG", "SHUT"]
    seqs = [seq for _, seq in messages]
    assert seqs[0] == 1_700_000_000_000_000 and seqs == sorted(set(seqs))
    sizes = [len(data) for data, _ in reactor.ports[V4].written]
    assert sizes[2] > 600 >= max(sizes[3:])  # the big plugin alone; the rest fit with the envelope


def test_signed_requests_taken_unsigned_ones_ignored() -> None:
    """A signed CMD reaches the command runner; an unsigned or mis-signed one never does."""
    reactor = AgentReactor()
    reactor.advance(1_700_000_000)
    sender, requests = signed_sender(reactor)
    now = 1_700_000_000_000_000
    cmd = {"ID": "CMD", "cmd_id": "1", "cmd": "uptime", "args": []}
    sender.datagram_received(reply(cmd, None), SERVER)
    sender.datagram_received(reply({**cmd, "cmd_id": "2"}, now + 5,
                                   key=b"a-forged-key-0123456789"), SERVER)
    sender.datagram_received(reply({**cmd, "cmd_id": "3"}, now + 6, key_id="other"), SERVER)
    sender.datagram_received(reply({"ID": "UPD", "cmd_id": "4"}, None), SERVER)
    assert requests == []
    sender.datagram_received(reply({**cmd, "cmd_id": "5"}, now + 10), SERVER)
    assert [r["cmd_id"] for r in requests] == ["5"]
    assert sender.refused_replies == 4
    sender.stopService()


def test_replayed_and_old_requests_ignored() -> None:
    """A signed CMD seen before, or signed before this agent started, is not run again."""
    reactor = AgentReactor()
    reactor.advance(1_700_000_000)
    sender, requests = signed_sender(reactor)
    start = 1_700_000_000_000_000
    cmd = reply({"ID": "CMD", "cmd_id": "1", "cmd": "uptime", "args": []}, start + 50)
    sender.datagram_received(cmd, SERVER)
    sender.datagram_received(cmd, SERVER)
    sender.datagram_received(reply({"ID": "CMD", "cmd_id": "0", "cmd": "uptime", "args": []},
                                   start - 1_000_000), SERVER)
    assert [r["cmd_id"] for r in requests] == ["1"]
    sender.stopService()


def test_acks_signed_or_not_give_the_rtt() -> None:
    """An ACK is only a round trip: taken signed (checked) or unsigned."""
    reactor = AgentReactor()
    reactor.advance(1_700_000_000)
    sender, _ = signed_sender(reactor)
    reactor.advance(0.25)
    ack = {"ID": "ACK", "seq": 1, "ts": 1_700_000_000.0, "server_ts": 1.0}
    sender.datagram_received(reply(ack, None), SERVER)
    assert [round(d.rtt or 0) for d in sender.destinations()] == [250]
    reactor.advance(0.25)
    sender.datagram_received(reply(ack, 1_700_000_000_400_000), SERVER)
    assert [round(d.rtt or 0) for d in sender.destinations()] == [500]
    sender.stopService()


@pytest.mark.parametrize(("text", "key", "problem"), [
    ("key: 0123456789abcdef0123", "key_id", "required with key"),
    ("key: short\nkey_id: fleet", "key", "too short"),
    ("key: 0123456789abcdef0123\nkey_file: /k\nkey_id: fleet", "key_file", "not both"),
    ("key_id: fleet", "key", "needs key or key_file"),
    ("key: 0123456789abcdef0123\nkey_id: 'no way'", "key_id", "key id"),
])
def test_agent_key_config_checked(text: str, key: str, problem: str) -> None:
    """A bad key setting stops the agent with one line naming the key."""
    with pytest.raises(ConfigError) as info:
        parse_config(AgentConfig, text, "hbc.yaml")
    assert (info.value.key, problem in info.value.problem) == (key, True)


def test_key_file(tmp_path: Path) -> None:
    """key_file is read (trailing newline dropped); unreadable or short is a config error."""
    path = tmp_path / "hb.key"
    path.write_text(SECRET + "\n")
    key = signing_key(AgentConfig(key_file=str(path), key_id="fleet"), "hbc.yaml")
    assert key is not None and key.keyring.keys == {"fleet": SECRET.encode()}
    path.write_text("short\n")
    with pytest.raises(ConfigError, match="too short"):
        signing_key(AgentConfig(key_file=str(path), key_id="fleet"), "hbc.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        signing_key(AgentConfig(key_file=str(tmp_path / "missing"), key_id="fleet"), "hbc.yaml")
