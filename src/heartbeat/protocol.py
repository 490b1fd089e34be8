"""The heartbeat wire protocol, version 1 (docs/PROTOCOL.md).

Pure code: bytes in, validated dicts out, and back. No reactor, no I/O, so the
server, the agent, tests and fuzzers all share exactly one reading of the
contract. Every way a datagram can be wrong raises :class:`DecodeError` with a
short machine-readable ``reason`` that the server counts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import struct
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import orjson

from heartbeat.text import json_bytes, may_break_policy, text_problem

__all__ = [
    "CLIENT_IDS",
    "COMPRESS_ABOVE",
    "DEFAULT_LIMITS",
    "JOB_PINGS",
    "MAX_OUTPUT",
    "MSG_LEVELS",
    "SERVER_IDS",
    "SIGNED_MAGIC",
    "DecodeError",
    "Keyring",
    "Limits",
    "Signed",
    "decode",
    "decode_datagram",
    "decode_received",
    "decode_reply",
    "decode_signed_reply",
    "decode_with_text",
    "encode",
    "next_seq",
    "read_json",
    "seal",
    "unseal",
    "valid_host_name",
    "valid_key_id",
]

CLIENT_IDS: Final = frozenset({"HTB", "BOOT", "SHUT", "MSG", "PLG", "RES", "JOB"})
SERVER_IDS: Final = frozenset({"ACK", "CMD", "UPD"})
MSG_LEVELS: Final = ("info", "warning", "error")
COMPRESS_ABOVE: Final = 512
MAX_OUTPUT: Final = 4096
JOB_PINGS: Final = ("start", "success", "fail", "exit")
"""What a ``JOB`` datagram says about a run (docs/PROTOCOL.md, docs/JOBS.md)."""
_JOB_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")

_NAME = re.compile(r"[A-Za-z0-9._-]{1,253}")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


# NaN/Infinity (also 1e400, which overflows to inf) would parse, but could never be
# sent on to a strict JSON reader: the standard library's reader refuses them here.
_JSON = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constants)

# Every datagram's scans of bytes ask ``data.find(part)``, not ``part in data``: in CPython
# 3.11 ``in`` first tries ``part`` as an integer and builds a TypeError message it throws
# away, which made such checks about 6 % of a PLG's instructions and 13 % of a heartbeat's.

_DIGITS: Final = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER: Final = b"0" * 19
"""19 digits in a row: what an integer orjson would read as a float may need."""


def read_json(text: bytes) -> Any:
    """The JSON value of ``text``, read as docs/PROTOCOL.md says, or ValueError.

    orjson reads it (3-4 times faster than ``json``) whenever it reads it as the
    standard library does: it refuses NaN, the infinities, numbers that overflow
    to one and lone surrogate escapes itself. It would read an integer outside
    64 bits as a float (every such integer has 19 digits or more), so a text
    with 19 digits in a row is read by ``json``, which keeps it an integer; and
    whatever orjson refuses is read by ``json`` too, so a refusal keeps its old
    reason (``too_deep``, ``bad_text`` for a lone surrogate, ``json``) and a
    value orjson cannot hold is still read. tests/test_protocol.py holds the
    two readings equal.
    """
    if text.translate(_DIGITS).find(_LONG_NUMBER) < 0:  # find, not in: see above
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return _JSON.decode(text.decode("utf-8"))


@dataclass(frozen=True, slots=True)
class Limits:
    """What the server accepts; each is a config key (``max_inflated``, ``max_depth``)."""

    max_inflated: int = 256 * 1024
    max_depth: int = 16


DEFAULT_LIMITS: Final = Limits()


class DecodeError(ValueError):
    """A datagram that breaks the protocol; ``reason`` is the counter it lands in."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


SIGNED_MAGIC: Final = b"HBS1"
"""First bytes of a signed datagram (docs/PROTOCOL.md, "Signed datagrams")."""
MAC_SIZE: Final = 32
MAX_KEY_ID: Final = 64
_SEQ = struct.Struct(">Q")
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class Signed(NamedTuple):
    """How a datagram was signed: the key's id and the envelope's seq (microseconds)."""

    key_id: str
    seq: int


@dataclass(frozen=True)
class Keyring:
    """The shared keys a receiver verifies with, and how old a signed datagram may be.

    ``window`` (``sign_window``) bounds the difference between the envelope's
    seq, which is the sender's clock in microseconds, and the receiver's clock.
    """

    keys: Mapping[str, bytes] = field(default_factory=dict)
    window: float = 120.0
    _macs: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A keyed HMAC made once per key and copied per datagram costs a third less.
        object.__setattr__(self, "_macs", {
            key_id: hmac.new(key, digestmod=hashlib.sha256) for key_id, key in self.keys.items()})

    def mac(self, key_id: str) -> Any:
        """A fresh HMAC-SHA256 keyed with ``key_id``'s key, or None for an unknown id."""
        prepared = self._macs.get(key_id)
        return None if prepared is None else prepared.copy()


def valid_key_id(key_id: object) -> bool:
    """Whether ``key_id`` can name a key in an envelope (1-64 of ``[A-Za-z0-9._-]``)."""
    return isinstance(key_id, str) and _KEY_ID.fullmatch(key_id) is not None


def next_seq(last: int, now: float) -> int:
    """A signer's next seq: its clock in microseconds, and always above the last one."""
    return max(last + 1, int(now * 1_000_000))


def seal(payload: bytes, key_id: str, key: bytes | Keyring, seq: int) -> bytes:
    """Sign ``payload`` (an ordinary datagram, text or zlib) into an envelope.

    ``HBS1``, the key id's length (one byte) and the id, the seq (8 bytes, big
    endian), then HMAC-SHA256 of all the bytes before it and of the payload,
    then the payload unchanged. ``key`` is the secret, or a keyring holding it.
    """
    head = SIGNED_MAGIC + bytes((len(key_id),)) + key_id.encode("ascii") + _SEQ.pack(seq)
    mac = key.mac(key_id) if isinstance(key, Keyring) else hmac.new(key, None, hashlib.sha256)
    mac.update(head)
    mac.update(payload)
    return head + mac.digest() + payload


def unseal(data: bytes, keyring: Keyring | None, now: float | None) -> tuple[bytes, Signed]:
    """The payload inside a signed datagram and how it was signed, once it checks out.

    The MAC is checked before anything of the payload is inflated or parsed.
    """
    length = data[4] if len(data) > 4 else 0
    body = 5 + length + 8 + MAC_SIZE
    if not 1 <= length <= MAX_KEY_ID or len(data) < body:
        raise DecodeError("bad_envelope", f"{len(data)} bytes, key id length {length}")
    try:
        key_id = data[5:5 + length].decode("ascii")
    except UnicodeDecodeError:
        key_id = ""
    if not valid_key_id(key_id):
        raise DecodeError("bad_envelope", f"key id {data[5:5 + length]!r:.80}")
    mac = keyring.mac(key_id) if keyring is not None else None
    if mac is None:
        raise DecodeError("unknown_key", key_id)
    mac.update(data[:5 + length + 8])
    mac.update(data[body:])
    if not hmac.compare_digest(mac.digest(), data[5 + length + 8:body]):
        raise DecodeError("bad_signature", f"key {key_id}")
    (seq,) = _SEQ.unpack_from(data, 5 + length)
    if now is not None and keyring is not None and abs(now - seq / 1_000_000) > keyring.window:
        raise DecodeError("stale", f"signed {seq / 1_000_000 - now:+.0f} s from now")
    return data[body:], Signed(key_id, seq)


def valid_host_name(name: object) -> bool:
    """Whether ``name`` is a host name the protocol allows (1-253 of ``[A-Za-z0-9._-]``)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def _inflate(payload: bytes, limit: int) -> tuple[bytes, bytes | None]:
    """Inflate a zlib stream, giving up as soon as the output passes ``limit``; and the
    stream itself when it is all of ``payload`` (no bytes after its end) and starts with
    ``x`` (as every stream with zlib's default window does), else None.

    ``max_length`` stops the inflater itself, so a decompression bomb costs at
    most ``limit`` bytes of memory and the time to produce them.
    """
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(payload, limit + 1)
    except zlib.error as e:
        raise DecodeError("zlib", str(e)) from None
    if len(text) > limit or inflater.unconsumed_tail:
        raise DecodeError("too_large", f"inflates past {limit} bytes")
    if not inflater.eof:
        raise DecodeError("zlib", "truncated stream")
    return text, None if inflater.unused_data or payload[0] != 0x78 else payload


def _depth_exceeds(value: object, limit: int) -> bool:
    """Whether containers nest deeper than ``limit``, walking one level at a time.

    Level by level with list comprehensions keeps this iterative (no recursion
    limit) and a fraction of the cost of a per-child stack on the hot path.
    """
    level: list[Any] = [value]
    depth = 1
    while True:
        below: list[Any] = []
        for item in level:
            children = item.values() if type(item) is dict else item
            below += [c for c in children if type(c) is dict or type(c) is list]
        if not below:
            return False
        depth += 1
        if depth > limit:
            return True
        level = below


_BRACKETS: Final = bytes.maketrans(b"[]", b"{}")
_NOT_SHAPE: Final = bytes(b for b in range(256) if b not in b'{}[]"\\')


def _shape(text: bytes) -> bytes:
    """The brackets (lists' made braces), quotes and backslashes of ``text``, in order:
    what :func:`_nests_deeper` and the text policy's scan need, from one pass over it."""
    return text.translate(_BRACKETS, _NOT_SHAPE)


def _nests_deeper(text: bytes, value: object, limit: int, shape: bytes | None = None) -> bool:
    """:func:`_depth_exceeds` of ``value``, read from its JSON ``text`` where it can be.

    Of a text whose strings hold no bracket and no escaped quote, the brackets
    alone are its containers: with lists' brackets made braces and every ``""``
    (an emptied string) taken out, each ``{}`` left is a container holding none,
    and taking all of them out once takes one level off every branch. No branch
    is deeper than the containers left, so it stops once they are few enough: a
    PLG, its leaves taken out once, holds far fewer than ``limit``. A text in
    which that cannot be seen (rare) is walked. A third of the walk's time on a
    1.5 KB PLG; tests/test_protocol.py holds the two equal. ``shape``: the text's
    :func:`_shape`, when the caller has it; the scans run over it, not the text.
    """
    if shape is None:
        shape = _shape(text)
    if shape.count(b"{") <= limit:  # every bracket of the text, strings' too
        return False
    if 92 in shape:  # a backslash
        if b'\\"' in text:
            return _depth_exceeds(value, limit)
        shape = shape.replace(b"\\", b"")
    shape = shape.replace(b'""', b"")
    if 34 not in shape:  # no quote
        for taken in range(1, limit + 1):
            shape = shape.replace(b"{}", b"")
            if shape.count(b"{") <= limit - taken:
                return False
        return True
    return _depth_exceeds(value, limit)


_FLOAT_MAX: Final = sys.float_info.max


def _number(value: object) -> bool:
    """A JSON number a float can hold: decoded floats are finite, an integer may be huge."""
    return type(value) is float or (type(value) is int and -_FLOAT_MAX <= value <= _FLOAT_MAX)


def _check_optional(message: Mapping[str, Any], key: str, ok: bool) -> None:
    if key in message and not ok:
        raise DecodeError("bad_field", f"{key}: {message[key]!r:.40}")


def _bad_field(key: str, value: object) -> DecodeError:
    return DecodeError("bad_field", f"{key}: {value!r:.40}")


def _validate(message: dict[str, Any]) -> dict[str, Any]:
    # What _check_optional says, written out for the fields every datagram may carry: a
    # heartbeat's checks are a tenth of its decode (tests/test_protocol.py keeps them).
    kind = message.get("ID")
    if not isinstance(kind, str) or not kind:
        raise DecodeError("missing_id")
    if "name" not in message:
        raise DecodeError("missing_name")
    name = message["name"]
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise DecodeError("bad_name", f"{name!r:.60}")
    if "seq" in message:
        seq = message["seq"]
        if type(seq) is not int and (not isinstance(seq, int) or isinstance(seq, bool)):
            raise _bad_field("seq", seq)
    if "ts" in message:
        ts = message["ts"]
        if type(ts) is not float and not _number(ts):
            raise _bad_field("ts", ts)
    if "version" in message and not isinstance(message["version"], str):
        raise _bad_field("version", message["version"])
    if kind == "HTB":
        interval = message.get("interval")
        if interval is not None and not (  # an int this small is a number: no _number
                (type(interval) is float or type(interval) is int) and 0 < interval <= 86400 * 7):
            raise DecodeError("bad_field", f"interval: {interval!r:.40}")
        if "rtt" in message:
            rtt = message["rtt"]
            if not ((type(rtt) is float or _number(rtt)) and rtt >= 0):
                raise _bad_field("rtt", rtt)
    elif kind == "BOOT":
        _check_optional(message, "boot_time", _number(message.get("boot_time")))
    elif kind == "MSG":
        if not isinstance(message.get("text"), str):
            raise DecodeError("bad_field", "text: a string is required")
        _check_optional(message, "level", message.get("level") in MSG_LEVELS)
    elif kind == "PLG":
        if not isinstance(message.get("plugins"), dict):
            raise DecodeError("bad_field", "plugins: an object is required")
    elif kind == "RES":
        if not isinstance(message.get("cmd_id"), str | int) or isinstance(
            message.get("cmd_id"), bool
        ):
            raise DecodeError("bad_field", "cmd_id: required")
        rc = message.get("rc")
        if not isinstance(rc, int) or isinstance(rc, bool):
            raise DecodeError("bad_field", "rc: an integer is required")
        output = message.get("output", "")
        if not isinstance(output, str):
            raise DecodeError("bad_field", "output: a string is required")
        if len(output) > MAX_OUTPUT:
            message["output"] = output[:MAX_OUTPUT]
            message["truncated"] = True
    elif kind == "JOB":
        _validate_job(message)
    return message


def _validate_job(message: dict[str, Any]) -> None:
    """A cron job's ping: its name, what happened, the exit code; the log's tail is kept."""
    job = message.get("job")
    if not isinstance(job, str) or _JOB_NAME.fullmatch(job) is None:
        raise DecodeError("bad_field", f"job: {job!r:.40}")
    ping = message.get("ping")
    if ping not in JOB_PINGS:
        raise DecodeError("bad_field", f"ping: {ping!r:.40}")
    rc = message.get("rc")
    if ping == "exit" and rc is None:
        raise DecodeError("bad_field", "rc: required with ping exit")
    _check_optional(message, "rc", type(rc) is int and 0 <= rc <= 255)
    _check_optional(message, "uuid", isinstance(message.get("uuid"), str))
    log = message.get("log", "")
    if not isinstance(log, str):
        raise DecodeError("bad_field", "log: a string is required")
    if len(log) > MAX_OUTPUT:
        message["log"] = log[-MAX_OUTPUT:]  # the tail: what explains a failure
        message["truncated"] = True


def decode(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Turn one datagram into a validated message dict, or raise :class:`DecodeError`.

    Unknown ``ID`` values pass (the server journals and counts them); unknown
    fields are kept as they are.
    """
    return decode_with_text(payload, limits)[0]


def _validate_reply(message: dict[str, Any]) -> dict[str, Any]:
    kind = message.get("ID")
    if not isinstance(kind, str) or kind not in SERVER_IDS:
        raise DecodeError("bad_id", f"{kind!r:.40}")
    _check_optional(message, "seq", isinstance(message.get("seq"), int)
                    and not isinstance(message.get("seq"), bool))
    _check_optional(message, "ts", _number(message.get("ts")))
    _check_optional(message, "server_ts", _number(message.get("server_ts")))
    if kind in ("CMD", "UPD"):
        cmd_id = message.get("cmd_id")
        if not isinstance(cmd_id, str | int) or isinstance(cmd_id, bool):
            raise DecodeError("bad_field", "cmd_id: required")
    if kind == "CMD":
        if not isinstance(message.get("cmd"), str):
            raise DecodeError("bad_field", "cmd: a string is required")
        args = message.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise DecodeError("bad_field", "args: a list of strings is required")
    if kind == "UPD":
        _check_optional(message, "version", isinstance(message.get("version"), str))
    return message


def _datagram_text(payload: bytes, limits: Limits) -> tuple[bytes, bytes | None]:
    """The JSON text of a datagram: as it is (first byte ``{``) or inflated from zlib; and
    the zlib stream, when it is one :func:`_inflate` says can be kept as it came."""
    if not payload:
        raise DecodeError("empty")
    first = payload[0]
    if first == 0x7B:  # "{"
        if len(payload) > limits.max_inflated:
            raise DecodeError("too_large", f"{len(payload)} bytes")
        return payload, None
    if first & 0x0F == 8 and (first << 8 | (payload[1] if len(payload) > 1 else 0)) % 31 == 0:
        return _inflate(payload, limits.max_inflated)
    if payload.startswith(SIGNED_MAGIC):
        raise DecodeError("unknown_key", "a signed datagram, and no keys to check it with")
    raise DecodeError("bad_format", f"first byte 0x{first:02x}")


def _parse_object(text: bytes, limits: Limits, escapes: bool,
                  shape: bytes | None = None) -> dict[str, Any]:
    """One JSON object within the nesting limit, or a :class:`DecodeError`; ``escapes``:
    :func:`~heartbeat.text.may_break_policy` of ``text`` (its caller asks it too);
    ``shape``: its :func:`_shape`, when the caller has it."""
    try:
        message = read_json(text)
    except RecursionError:
        raise DecodeError("too_deep") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise DecodeError("json", str(e)[:80]) from None
    if not isinstance(message, dict):
        raise DecodeError("not_object")
    if (shape is None or shape.count(b"{") > limits.max_depth) and _nests_deeper(
            text, message, limits.max_depth, shape):
        raise DecodeError("too_deep", f"nesting over {limits.max_depth}")
    if escapes:
        problem = text_problem(message)
        if problem is not None:
            raise DecodeError("bad_text", problem)
    return message


def decode_reply(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Turn one server-to-client datagram (``ACK``, ``CMD``, ``UPD``) into a checked dict.

    The agent's side of the contract: same framing and limits as :func:`decode`;
    any other ``ID`` or a malformed field raises :class:`DecodeError`.
    """
    text = _datagram_text(payload, limits)[0]
    return _validate_reply(_parse_object(text, limits, may_break_policy(text)))


def decode_signed_reply(
    payload: bytes, keyring: Keyring | None, now: float | None,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[dict[str, Any], Signed | None]:
    """:func:`decode_reply` of a datagram that may be signed, and how it was signed."""
    signed = None
    if payload.startswith(SIGNED_MAGIC):
        payload, signed = unseal(payload, keyring, now)
    return decode_reply(payload, limits), signed


def decode_datagram(
    payload: bytes, limits: Limits = DEFAULT_LIMITS, keyring: Keyring | None = None,
    now: float | None = None,
) -> tuple[dict[str, Any], bytes, Signed | None]:
    """The server's reading of one datagram: message, JSON text, and its signature.

    An unsigned datagram decodes as with :func:`decode_with_text` (signature
    None). A signed one must name a key of ``keyring``, carry a valid MAC and
    be within ``keyring.window`` of ``now``; then its payload decodes the same
    way. Whether an unsigned datagram is acceptable, and replays, are the
    caller's to judge: they depend on the host and on what came before.
    """
    if payload.startswith(SIGNED_MAGIC):
        inner, signed = unseal(payload, keyring, now)
        return (*decode_with_text(inner, limits), signed)
    return (*decode_with_text(payload, limits), None)


def decode_with_text(
    payload: bytes, limits: Limits = DEFAULT_LIMITS
) -> tuple[dict[str, Any], bytes]:
    """Like :func:`decode`, also returning the (inflated) JSON text as received."""
    return decode_received(payload, limits)[:2]


def decode_received(
    payload: bytes, limits: Limits = DEFAULT_LIMITS
) -> tuple[dict[str, Any], bytes, bytes | None]:
    """Like :func:`decode_with_text`, also returning the zlib stream the text came in,
    when it came in one that holds exactly that text (None otherwise: a text datagram,
    a text re-encoded from the message, a stream with bytes after its end)."""
    if payload[:1] == b"{" and len(payload) <= limits.max_inflated:  # a heartbeat: no call
        text, packed = payload, None
    else:
        text, packed = _datagram_text(payload, limits)
    shape = text.translate(_BRACKETS, _NOT_SHAPE)  # _shape(text)
    escapes = 92 in shape and may_break_policy(text)  # no backslash (92), no escape
    message = _validate(_parse_object(text, limits, escapes, shape))
    if message.get("truncated") is True or (escapes and _says_a_key_twice(text)):
        return message, json_bytes(message), None
    return message, text, packed


class _KeyTwice(Exception):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _KeyTwice
    return value


def _says_a_key_twice(text: bytes) -> bool:
    """Whether an object of ``text`` (already parsed once) repeats a key.

    The last value wins, and the policy checked only that one: a shadowed
    ``"\\ud800"`` would still be in the text as received. Such a text is
    re-encoded from the message, so it never reaches the journal or the store.
    Asked only behind :func:`~heartbeat.text.may_break_policy`'s scan.
    """
    try:
        json.loads(text, object_pairs_hook=_unique_pairs)
    except _KeyTwice:
        return True
    return False


def encode(message: Mapping[str, Any], compress_above: int = COMPRESS_ABOVE) -> bytes:
    """Serialise a message; zlib it when the text is larger than ``compress_above`` bytes."""
    text = json_bytes(message)
    if len(text) > compress_above:
        return zlib.compress(text, 6)
    return text
