"""Signed datagrams: the envelope, the server's policy, ingest and replies (docs/SECURITY.md)."""

from __future__ import annotations

import hashlib
import hmac
import json
import zlib
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport

from heartbeat.config.loader import ConfigError, parse_config
from heartbeat.config.server import HostConfig, ServerConfig
from heartbeat.events import RECEIVED, Event, EventBus
from heartbeat.protocol import (
    DecodeError,
    Keyring,
    Signed,
    decode,
    decode_datagram,
    decode_signed_reply,
    next_seq,
    seal,
)
from heartbeat.server.compose import make_ingest
from heartbeat.server.registry import Registry
from heartbeat.server.signing import SignaturePolicy

FLEET = b"0123456789abcdef0123456789abcdef"
WEB1 = b"web1-only-secret-0123456789"
KEYRING = Keyring({"fleet": FLEET, "web1": WEB1}, window=120.0)
NOW = 1711234567.5
SEQ = 1711234567100000

VECTOR_PAYLOAD = b'{"ID":"HTB","name":"webserver1","interval":30,"seq":17,"ts":1711234567.1}'
VECTOR = bytes.fromhex(
    "48425331"  # HBS1
    "05" "666c656574"  # key id length 5, "fleet"
    "0006145bd87fd660"  # seq 1711234567100000, 8 bytes big endian
    "bb68811b4ab55c456a0b7ba7a59d1466a2b8eba15d9fe5c8f68e7b9e341ec56a"  # HMAC-SHA256
) + VECTOR_PAYLOAD


class EnvelopeTests:
    def test_vector_of_docs_protocol(self) -> None:
        """The worked example of docs/PROTOCOL.md, byte for byte, and what it verifies to."""
        assert seal(VECTOR_PAYLOAD, "fleet", FLEET, SEQ) == VECTOR
        head = VECTOR[:18]
        assert VECTOR[18:50] == hmac.new(FLEET, head + VECTOR_PAYLOAD, hashlib.sha256).digest()
        assert decode_datagram(VECTOR, keyring=KEYRING, now=NOW) == (
            json.loads(VECTOR_PAYLOAD), VECTOR_PAYLOAD, Signed("fleet", SEQ))

    def test_unsigned_datagrams_decode_as_before(self) -> None:
        """An unsigned datagram decodes unchanged, with no signature, keys or not."""
        payload = b'{"ID":"HTB","name":"h"}'
        assert decode_datagram(payload, keyring=KEYRING, now=NOW) == (
            {"ID": "HTB", "name": "h"}, payload, None)
        assert decode_datagram(payload) == ({"ID": "HTB", "name": "h"}, payload, None)

    def test_signed_zlib_payload(self) -> None:
        """A compressed payload is signed as it is sent (the zlib bytes)."""
        text = json.dumps({"ID": "PLG", "name": "h", "plugins": {"p": "x" * 900}}).encode()
        sealed = seal(zlib.compress(text), "fleet", FLEET, SEQ)
        assert decode_datagram(sealed, keyring=KEYRING, now=NOW)[1:] == (
            text, Signed("fleet", SEQ))

    @pytest.mark.parametrize(("datagram", "reason"), [
        (VECTOR[:-1] + b"X", "bad_signature"),
        (VECTOR[:12] + bytes([VECTOR[12] ^ 1]) + VECTOR[13:], "bad_signature"),  # seq
        (VECTOR[:30] + bytes([VECTOR[30] ^ 1]) + VECTOR[31:], "bad_signature"),  # MAC
        (VECTOR.replace(b"fleet", b"other"), "unknown_key"),
        (VECTOR.replace(b"fleet", b"web1!", 1), "bad_envelope"),
        (b"HBS1", "bad_envelope"),
        (b"HBS1\x00" + bytes(60), "bad_envelope"),
        (b"HBS1\x41" + bytes(60), "bad_envelope"),
        (VECTOR[:49], "bad_envelope"),
        (seal(b"junk", "fleet", FLEET, SEQ), "bad_format"),
        (seal(zlib.compress(b'{"a":' + b"1" * 400_000 + b"}"), "fleet", FLEET, SEQ),
         "too_large"),
    ])
    def test_refusals(self, datagram: bytes, reason: str) -> None:
        """Every way an envelope is wrong is a DecodeError with its own reason."""
        with pytest.raises(DecodeError) as info:
            decode_datagram(datagram, keyring=KEYRING, now=NOW)
        assert info.value.reason == reason

    def test_mac_checked_before_inflating(self) -> None:
        """A forged envelope around a decompression bomb fails on its MAC, unread."""
        bomb = zlib.compress(b"{" + b" " * 50_000_000 + b"}")
        forged = seal(bomb, "fleet", b"not-the-fleet-key-at-all", SEQ)
        with pytest.raises(DecodeError) as info:
            decode_datagram(forged, keyring=KEYRING, now=NOW)
        assert info.value.reason == "bad_signature"

    @pytest.mark.parametrize("skew", [-121.0, 121.0])
    def test_outside_the_window_is_stale(self, skew: float) -> None:
        """A seq more than sign_window from the receiver's clock either way is refused."""
        with pytest.raises(DecodeError) as info:
            decode_datagram(VECTOR, keyring=KEYRING, now=SEQ / 1e6 + skew)
        assert info.value.reason == "stale"
        decode_datagram(VECTOR, keyring=KEYRING, now=SEQ / 1e6 + skew * 0.99)

    def test_plain_decode_names_the_missing_keys(self) -> None:
        """decode() without keys refuses a signed datagram as unknown_key, not bad_format."""
        with pytest.raises(DecodeError) as info:
            decode(VECTOR)
        assert info.value.reason == "unknown_key"

    def test_signed_reply(self) -> None:
        """The agent's side: a signed CMD decodes with its signature; unsigned is None."""
        cmd = b'{"ID":"CMD","cmd_id":"7","cmd":"restart","args":[]}'
        assert decode_signed_reply(seal(cmd, "web1", WEB1, SEQ), KEYRING, NOW) == (
            json.loads(cmd), Signed("web1", SEQ))
        assert decode_signed_reply(cmd, KEYRING, NOW) == (json.loads(cmd), None)
        with pytest.raises(DecodeError):
            decode_signed_reply(seal(cmd, "web1", FLEET, SEQ), KEYRING, NOW)

    def test_next_seq_follows_the_clock_and_never_repeats(self) -> None:
        """Microseconds of the clock, or one more than the last when the clock lags."""
        assert next_seq(0, 1711234567.1) == 1711234567100000
        assert next_seq(1711234567100000, 1711234567.1) == 1711234567100001
        assert next_seq(1711234567100005, 1711234566.0) == 1711234567100006


class PolicyTests:
    def _policy(self, require: bool = False) -> SignaturePolicy:
        return SignaturePolicy({
            "web1": HostConfig(key="web1", require_signed=True),
            "open": HostConfig(require_signed=False),
            "plain": HostConfig(),
        }, require)

    def test_required_globally_and_per_host(self) -> None:
        """Unsigned is refused where signing is required: per host, else the global setting."""
        relaxed, strict = self._policy(), self._policy(require=True)
        assert [relaxed.refusal(n, None) for n in ("web1", "open", "plain", "new")] == [
            "unsigned", None, None, None]
        assert [strict.refusal(n, None) for n in ("web1", "open", "plain", "new")] == [
            "unsigned", None, "unsigned", "unsigned"]

    def test_keys_bound_to_hosts(self) -> None:
        """A host's own key is its alone; a host with a key must use it; fleet keys fit the rest."""
        policy = self._policy()
        assert policy.refusal("web1", Signed("web1", 1)) is None
        assert policy.refusal("web1", Signed("fleet", 1)) == "wrong_key"
        assert policy.refusal("plain", Signed("web1", 1)) == "wrong_key"
        assert policy.refusal("plain", Signed("fleet", 1)) is None

    def test_replayed_seq_refused(self) -> None:
        """Each host's seq must grow, per host."""
        policy = self._policy()
        assert policy.refusal("plain", Signed("fleet", 10)) is None
        policy.accepted("plain", Signed("fleet", 10))
        assert [policy.refusal("plain", Signed("fleet", s)) for s in (9, 10, 11)] == [
            "replayed", "replayed", None]
        assert policy.refusal("open", Signed("fleet", 5)) is None  # per host

    def test_a_removed_hosts_seq_outlives_it_for_the_window(self) -> None:
        """After a host is removed its captured datagrams stay replays while they could
        pass the window; the record goes once it is older than the window (bounded)."""
        policy = SignaturePolicy({}, False, window=120.0)
        signed_at = 1_800_000_000.0
        policy.accepted("plain", Signed("fleet", int(signed_at * 1e6)))
        policy.accepted("other", Signed("fleet", int((signed_at + 100) * 1e6)))
        policy.forget("plain", signed_at + 5)
        assert policy.refusal("plain", Signed("fleet", int(signed_at * 1e6))) == "replayed"
        assert policy.refusal("plain", Signed("fleet", int(signed_at * 1e6) + 1)) is None
        policy.forget("other", signed_at + 121)  # plain's record is past the window now
        assert (policy.refusal("plain", Signed("fleet", 1)),
                policy.refusal("other", Signed("fleet", 1))) == (None, "replayed")
        assert sorted(policy._last) == ["other"]


CONFIG = """
keys: {fleet: 0123456789abcdef0123456789abcdef, web1: web1-only-secret-0123456789}
hosts:
  web1: {key: web1, require_signed: true}
source_rate: 100000
"""


class Rig:
    """make_ingest's protocol on a Clock, with the bus recorded."""

    def __init__(self, config: str = CONFIG) -> None:
        self.config = parse_config(ServerConfig, config, "test.yaml")
        self.clock = Clock()
        self.clock.advance(NOW)
        self.bus = EventBus(on_error=lambda s, e, x: pytest.fail(f"subscriber failed: {x!r}"))
        self.events: list[Event] = []
        self.bus.subscribe(self.events.append)
        self.registry = Registry(grace=10, default_interval=30,
                                 host_config=self.config.hosts)
        self.ingest = make_ingest(self.config, self.registry, self.bus, self.clock)
        self.transport = FakeDatagramTransport()
        self.ingest.makeConnection(self.transport)
        self.seq = int(NOW * 1e6)

    def send(self, message: dict[str, Any], key_id: str | None = None,
             key: bytes | None = None, seq: int | None = None) -> None:
        data = json.dumps(message).encode()
        if key_id is not None:
            self.seq = seq if seq is not None else self.seq + 1
            data = seal(data, key_id, key or KEYRING.keys[key_id], self.seq)
        self.ingest.datagramReceived(data, ("192.0.2.5", 4000))

    def replies(self) -> list[tuple[dict[str, Any], Signed | None]]:
        out = [decode_signed_reply(data, KEYRING, self.clock.seconds())
               for data, _ in self.transport.written]
        self.transport.written.clear()
        return out


class IngestSigningTests:
    def test_signed_heartbeat_accepted_and_answered_signed(self) -> None:
        """A signed HTB is taken, recorded as signed, and its ACK is signed with its key."""
        rig = Rig()
        rig.send({"ID": "HTB", "name": "db1", "seq": 4, "ts": 5.0}, "fleet")
        ((ack, signature),) = rig.replies()
        assert ack == {"ID": "ACK", "server_ts": NOW, "seq": 4, "ts": 5.0}
        assert signature is not None and signature.key_id == "fleet"
        host = rig.registry.host_json(rig.registry.hosts["db1"])
        assert (host["signed"], host["key_id"]) == (True, "fleet")
        received = next(e for e in rig.events if e.kind == RECEIVED)
        assert received.data["key_id"] == "fleet"

    def test_unsigned_still_works_where_not_required(self) -> None:
        """An old sender without a key is taken and answered unsigned."""
        rig = Rig()
        rig.send({"ID": "HTB", "name": "old"})
        assert [signature for _, signature in rig.replies()] == [None]
        host = rig.registry.host_json(rig.registry.hosts["old"])
        assert (host["signed"], host["key_id"]) == (False, None)

    def test_refusals_counted_by_reason(self) -> None:
        """Each refusal lands in ingest.dropped under its reason; nothing reaches the registry."""
        rig = Rig()
        rig.send({"ID": "HTB", "name": "web1"})  # required for web1
        rig.send({"ID": "HTB", "name": "web1"}, "fleet")  # web1 has its own key
        rig.send({"ID": "HTB", "name": "db1"}, "web1")  # web1's key is web1's alone
        rig.send({"ID": "HTB", "name": "db1"}, "fleet", key=b"guessed-key-0123456789")
        rig.send({"ID": "HTB", "name": "db1"}, "stolen", key=FLEET)
        rig.send({"ID": "HTB", "name": "db1"}, "fleet", seq=int((NOW - 500) * 1e6))
        rig.send({"ID": "HTB", "name": "db1"}, "fleet", seq=int(NOW * 1e6) + 100)
        rig.send({"ID": "HTB", "name": "db1"}, "fleet", seq=int(NOW * 1e6) + 100)  # again
        rig.send({"ID": "HTB", "name": "web1"}, "web1")
        assert sorted(rig.registry.hosts) == ["db1", "web1"]
        status = rig.ingest.status()
        assert status["dropped"] == {"unsigned": 1, "wrong_key": 2, "bad_signature": 1,
                                     "unknown_key": 1, "stale": 1, "replayed": 1}
        assert status["signing"] == {"keys": 2, "required": True, "signed_accepted": 2}

    def test_queued_command_goes_out_signed(self) -> None:
        """A CMD queued for a host that signs is sent after its HTB, signed with its key."""
        rig = Rig()
        rig.send({"ID": "HTB", "name": "web1"}, "web1")
        rig.replies()
        rig.registry.queue_command("web1", "CMD", {"cmd": "restart", "args": []}, NOW)
        rig.send({"ID": "HTB", "name": "web1"}, "web1")
        assert [(m["ID"], s.key_id if s else None) for m, s in rig.replies()] == [
            ("ACK", "web1"), ("CMD", "web1")]

    def test_reply_seqs_grow(self) -> None:
        """The server's own seqs grow, so an agent can refuse a replayed reply."""
        rig = Rig()
        for _ in range(3):
            rig.send({"ID": "HTB", "name": "db1"}, "fleet")
        seqs = [s.seq for _, s in rig.replies() if s is not None]
        assert len(seqs) == 3 and seqs == sorted(set(seqs))


class KeyConfigTests:
    @pytest.mark.parametrize(("text", "key", "problem"), [
        ("keys: {fleet: short}", "keys.fleet", "too short"),
        ("keys: {'bad id': 0123456789abcdef0123}", "keys.bad id", "key id"),
        ("hosts: {web1: {key: nope}}", "hosts.web1.key", "no key 'nope'"),
        ("require_signed: true", "require_signed", "needs at least one key"),
        ("hosts: {web1: {require_signed: true}}", "hosts.web1.require_signed",
         "needs at least one key"),
    ])
    def test_server_keys_checked(self, text: str, key: str, problem: str) -> None:
        """Bad keys stop start-up with one line naming the key."""
        with pytest.raises(ConfigError) as info:
            parse_config(ServerConfig, text, "hb.yaml")
        assert (info.value.key, problem in info.value.problem) == (key, True)


class HbcMiniEnvelopeTests:
    """hbc_mini's stdlib envelope is the package's, byte for byte."""

    def test_same_bytes_as_the_package(self) -> None:
        """The docs' test vector comes out of hbc_mini's seal too."""
        from tests.test_hbc_mini import mini

        assert mini.seal(VECTOR_PAYLOAD, "fleet", FLEET, SEQ) == VECTOR
        assert mini.next_seq(SEQ, 0.0) == SEQ + 1

    def test_unseal_checks_like_the_server(self) -> None:
        """Its own key, a valid MAC and the window: else None and why."""
        from tests.test_hbc_mini import mini

        assert mini.unseal(VECTOR, "fleet", FLEET, 120.0, NOW) == (VECTOR_PAYLOAD, SEQ, "")
        assert mini.unseal(VECTOR[:-1] + b"X", "fleet", FLEET, 120.0, NOW)[2] == \
            "a bad signature"
        assert mini.unseal(VECTOR, "web1", WEB1, 120.0, NOW)[2] == "signed with another key"
        assert mini.unseal(VECTOR[:40], "fleet", FLEET, 120.0, NOW)[2] == "a broken envelope"
        assert mini.unseal(VECTOR, "fleet", FLEET, 120.0, NOW + 500)[2].startswith(
            "signed -500 s from now")
