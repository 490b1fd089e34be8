#!/usr/bin/env python3
"""hbc_mini: the single-file heartbeat client (Python 3.8+, standard library only).

Copy this one file to a host and run ``python3 hbc_mini.py SERVER``: it speaks
the heartbeat wire protocol (docs/PROTOCOL.md) like the full agent
(``twistd heartbeat-agent``, docs/AGENT.md) and sends the same plugin data,
but needs no virtualenv, no Twisted and no psutil. It exists for hosts where
installing the package is not worth it or not possible.

* ``HTB`` every ``interval`` seconds with ``seq``/``ts`` and the RTT measured
  from the last ``ACK``; ``BOOT``/``SHUT`` with ``-b``; one ``MSG`` with ``-m``.
* Compiled-in plugins (os_info, cpu_monitor, memory_monitor, disk_monitor,
  network_monitor, ping_monitor, nagios_runner), each on its own thread so a
  slow one never delays a heartbeat; their data goes out as ``PLG`` (zlib
  above 512 bytes, batched into as few datagrams as fit).
* ``CMD`` runs only names in ``allowed_commands`` (argv lists, never a shell,
  with a timeout); ``UPD`` runs ``update_command``; both answer ``RES``.
* With ``key``/``key_file`` and ``key_id``, every datagram is signed (HMAC-SHA256,
  docs/PROTOCOL.md "Signed datagrams") and only signed ``CMD``/``UPD`` are run.

Sections: configuration; wire format; subprocesses; parsers (pure functions,
unit-tested on recorded text); plugins; the client loop; daemon and logging;
the command line. docs/HBC_MINI.md is the user's guide.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import difflib
import glob
import hashlib
import hmac
import json
import logging
import math
import os
import platform
import queue
import re
import select
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

VERSION = "0.1.0"
CLIENT = "hbc_mini"
DEFAULT_CONFIG = "~/.hbc.json"
COMPRESS_ABOVE = 512  # bytes of JSON text (protocol.md)
MAX_UDP_PAYLOAD = 65000  # one plugin larger than max_datagram still goes alone up to this
MAX_INFLATED = 256 * 1024  # the server's default limit on a datagram's JSON text
MAX_OUTPUT = 4096  # characters of RES output (protocol.md)
HOST_NAME = re.compile(r"[A-Za-z0-9._-]{1,253}\Z")
KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
MIN_KEY_LENGTH = 16  # bytes of a shared key's secret
SIGNED_MAGIC = b"HBS1"
MSG_LEVELS = ("info", "warning", "error")
SETTLE = 0.1  # seconds plugin results wait, even when no plugin runs, before a PLG goes
EXIT_CONFIG = 1
EXIT_USAGE = 2

# RES codes for what happened around a command (as the agent and a shell use them).
RC_TIMEOUT = 124
RC_REFUSED = 126
MAX_COMMANDS_RUNNING = 4  # a flood of CMDs waits its turn instead of forking hundreds
MAX_COMMANDS_WAITING = 64  # more are ignored: the server resends after each HTB
RC_NOT_STARTED = 127

log = logging.getLogger(CLIENT)


# ---------------------------------------------------------------------------
# Configuration: ~/.hbc.json, the same keys as the agent's ~/.hbc.yaml
# ---------------------------------------------------------------------------


class ConfigError(Exception):
    """A bad configuration, worded as one line naming the file and the key."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        where = "{}: {}".format(source, key) if key else source
        text = "{}: {}".format(where, problem)
        # A key read from JSON may hold a newline: escape it, the message stays one line.
        super().__init__("".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text))


Check = Callable[[Any], Optional[str]]


def _shown(value: Any) -> str:
    return "{!r:.60}".format(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _argv(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(
        isinstance(v, str) for v in value) and bool(value[0])


def expect(ok: Callable[[Any], Any], words: str,
           extra: Optional[Callable[[Any], Optional[str]]] = None) -> Check:
    """A check: "expected WORDS, got VALUE" unless ``ok(value)``; then ``extra``, if any."""
    def check(value: Any) -> Optional[str]:
        if not ok(value):
            return "expected {}, got {}".format(words, _shown(value))
        return extra(value) if extra else None
    return check


check_bool = expect(lambda v: isinstance(v, bool), "true or false")
check_str = expect(lambda v: isinstance(v, str) and v, "a string")
check_mapping = expect(lambda v: isinstance(v, dict), "a mapping")
check_count = expect(lambda v: _number(v) and int(v) == v and v > 0, "a positive integer")
check_str_list = expect(lambda v: isinstance(v, list) and all(
    isinstance(x, str) and x for x in v), "a list of strings")
check_optional_str_list = expect(lambda v: v is None or check_str_list(v) is None,
                                 "a list of strings or null")
check_positive = expect(_number, "a number", lambda v: None if v > 0 else
                        "must be greater than 0, got {}".format(v))
check_not_negative = expect(_number, "a number", lambda v: None if v >= 0 else
                            "must not be negative, got {}".format(v))
check_port = expect(lambda v: _number(v) and int(v) == v, "an integer", lambda v: None if
                    1 <= v <= 65535 else "port {} is out of range 1-65535".format(v))
check_name = expect(lambda v: v is None or (isinstance(v, str) and HOST_NAME.match(v)),
                    "a host name of 1-253 characters A-Z a-z 0-9 . _ -")
check_key_id = expect(lambda v: v is None or (isinstance(v, str) and KEY_ID.match(v)),
                      "a key id of 1-64 characters A-Z a-z 0-9 . _ -")
check_optional_str = expect(lambda v: v is None or (isinstance(v, str) and v), "a string")


def key_problem(secret: str) -> Optional[str]:
    if len(secret.encode("utf-8")) < MIN_KEY_LENGTH:
        return ("too short: use at least {} characters (e.g. the output of "
                "'openssl rand -hex 32')".format(MIN_KEY_LENGTH))
    return None


def check_key(value: Any) -> Optional[str]:
    problem = check_optional_str(value)
    return problem or (key_problem(value) if value is not None else None)


def check_command_line(value: Any) -> Optional[str]:
    """An argv list, or a string split like a shell would (but never run by one)."""
    if value is None or _argv(value):
        return None
    if not isinstance(value, str):
        return "expected an argv list or a command line, got " + _shown(value)
    try:
        return None if shlex.split(value) else "must name a program (it is empty)"
    except ValueError as e:
        return "cannot split {}: {}".format(_shown(value), e)


def check_allowed(value: Any) -> Optional[str]:
    if not isinstance(value, dict):
        return "expected a mapping of name to argv list, got " + _shown(value)
    for name, argv in value.items():
        if not _argv(argv):
            return "{}: expected an argv list (no shell), got {}".format(name, _shown(argv))
    return None


# key: (default, check); mirrors heartbeat.config.agent.AgentConfig.
TOP_KEYS: Dict[str, Tuple[Any, Check]] = {
    "hb_port": (50003, check_port),
    "interval": (30.0, check_positive),
    "name": (None, check_name),
    "plugins": ({}, check_mapping),
    "plugin_dirs": ([], check_str_list),  # agent only: accepted so one config serves both
    "allowed_commands": ({}, check_allowed),
    "command_timeout": (60.0, check_positive),
    "update_command": (None, check_command_line),
    "update_timeout": (900.0, check_positive),
    "max_datagram": (1400, check_positive),
    "batch_delay": (1.0, check_not_negative),
    "resolve_interval": (600.0, check_positive),
    "key": (None, check_key),
    "key_file": (None, check_optional_str),
    "key_id": (None, check_key_id),
    "sign_window": (120.0, check_positive),
}

# Options every plugin accepts; a plugin class adds its own in ``options``.
COMMON_OPTIONS: Dict[str, Tuple[Any, Check]] = {
    "interval": (300.0, check_positive),
    "enabled": (True, check_bool),
    "timeout": (60.0, check_positive),
    "delay": (0.0, check_not_negative),
}


REPLACED_KEYS = {"server": "name the server on the command line: hbc_mini.py SERVER"}
"""Keys an old hbc config may carry, and what to do instead."""


def _suggest(key: str, known: Any, prefix: str = "") -> str:
    if not prefix and key in REPLACED_KEYS:
        return " ({})".format(REPLACED_KEYS[key])
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return " (did you mean {!r}?)".format(prefix + close[0]) if close else ""


def check_section(source: str, prefix: str, data: Any,
                  spec: Dict[str, Tuple[Any, Check]]) -> Dict[str, Any]:
    """``data`` checked against ``spec`` ({key: (default, check)}), defaults filled in."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, prefix.rstrip("."), "expected a mapping, got " + _shown(data))
    result = {}
    for key, value in data.items():
        if key not in spec:
            raise ConfigError(source, prefix + str(key),
                              "unknown key" + _suggest(str(key), spec, prefix))
        problem = spec[key][1](value)
        if problem:
            raise ConfigError(source, prefix + key, problem)
        result[key] = value
    for key, (default, _check) in spec.items():
        if key not in result:
            result[key] = default.copy() if isinstance(default, (list, dict)) else default
    return result


def plugin_options(source: str, name: str, data: Any) -> Dict[str, Any]:
    """The checked options of plugin ``name`` (``data`` is its block, or None)."""
    cls = PLUGINS[name]
    spec = dict(COMMON_OPTIONS)
    for key, default in cls.defaults.items():
        spec[key] = (default, spec[key][1])
    spec.update(cls.options)
    prefix = "plugins.{}.".format(name)
    options = check_section(source, prefix, data, spec)
    cls.check_options(source, prefix, options)
    return options


def parse_config(text: str, source: str) -> Dict[str, Any]:
    """JSON config text -> the whole config, checked, with defaults filled in."""
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as e:
        raise ConfigError(source, "", "invalid JSON: {}".format(e)) from None
    config = check_section(source, "", data, TOP_KEYS)
    if config["name"] is None:
        config["name"] = socket.gethostname().split(".")[0]
        if check_name(config["name"]):
            raise ConfigError(source, "name", "the host name {!r} is not usable; set name"
                              .format(config["name"]))
    if isinstance(config["update_command"], str):
        config["update_command"] = shlex.split(config["update_command"])
    if config["key"] is not None and config["key_file"] is not None:
        raise ConfigError(source, "key_file", "give key or key_file, not both")
    keyed = config["key"] is not None or config["key_file"] is not None
    if keyed and config["key_id"] is None:
        raise ConfigError(source, "key_id", "required with key or key_file: the id the server "
                                            "knows the key by")
    if config["key_id"] is not None and not keyed:
        raise ConfigError(source, "key", "key_id needs key or key_file")
    plugins = {}
    for name, block in config["plugins"].items():
        if name not in PLUGINS:
            raise ConfigError(source, "plugins." + str(name),
                              "unknown plugin" + _suggest(str(name), PLUGINS, "plugins."))
        plugins[name] = plugin_options(source, name, block)
    for name in PLUGINS:
        if name not in plugins:
            plugins[name] = plugin_options(source, name, None)
    config["plugins"] = plugins
    return config


def load_config(path: Optional[str]) -> Tuple[Dict[str, Any], str]:
    """Read ``path``, else ``~/.hbc.json`` if it exists, else the defaults."""
    source = os.path.expanduser(path or DEFAULT_CONFIG)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        if path:
            raise ConfigError(source, "", "no such file") from None
        return parse_config("", "<defaults>"), "<defaults>"
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(source, "", "cannot read: {}".format(e)) from None
    config = parse_config(text, source)
    if config["key_file"] is not None:
        config["key"] = read_key_file(config["key_file"], source)
    return config, source


def read_key_file(path: str, source: str) -> str:
    """The secret in ``path`` (a trailing newline dropped), checked like ``key``."""
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            secret = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(source, "key_file", "cannot read {}: {}".format(
            path, getattr(e, "strerror", None) or e)) from None
    problem = key_problem(secret)
    if problem:
        raise ConfigError(source, "key_file", "{}: {}".format(path, problem))
    return secret


# ---------------------------------------------------------------------------
# Wire format
# ---------------------------------------------------------------------------


LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(message: Dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as the server's encoder writes it (``heartbeat.text``): a lone
    surrogate (a file name that is not UTF-8) goes as U+FFFD, NaN or infinity as null."""
    try:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        return json.dumps(_repaired(message), separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")


def _repaired(value: Any) -> Any:
    if isinstance(value, str):
        return LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_repaired(k): _repaired(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_repaired(v) for v in value]
    return value


def bad_text(value: Any) -> bool:
    """Whether ``value`` holds a lone surrogate anywhere or a NUL in a key: text that has no
    UTF-8 form or breaks a name, refused as the server refuses it (docs/PROTOCOL.md, "Text")."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if LONE_SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            if any("\0" in key or LONE_SURROGATE.search(key) for key in item):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def encode(message: Dict[str, Any]) -> bytes:
    """One datagram: the JSON text, zlib-compressed when it is larger than 512 bytes."""
    text = json_text(message)
    return zlib.compress(text, 6) if len(text) > COMPRESS_ABOVE else text


def decode(data: bytes) -> Optional[Dict[str, Any]]:
    """A server datagram (text or zlib) as a dict, or None when it is not one or breaks the
    text policy."""
    try:
        if data[:1] != b"{":
            inflater = zlib.decompressobj()
            data = inflater.decompress(data, MAX_INFLATED)
            if inflater.unconsumed_tail:
                return None
        message = json.loads(data.decode("utf-8"))
    except (ValueError, zlib.error, UnicodeDecodeError, RecursionError):
        return None
    return message if isinstance(message, dict) and not bad_text(message) else None


def seal(payload: bytes, key_id: str, key: bytes, seq: int) -> bytes:
    """A signed datagram: HBS1, key id length and id, seq (8 bytes), HMAC-SHA256, payload."""
    head = SIGNED_MAGIC + bytes((len(key_id),)) + key_id.encode("ascii") + struct.pack(">Q", seq)
    return head + hmac.new(key, head + payload, hashlib.sha256).digest() + payload


def unseal(data: bytes, key_id: str, key: bytes, window: float,
           now: float) -> Tuple[Optional[bytes], int, str]:
    """(payload, seq, "") of a signed datagram that checks out, else (None, 0, why not)."""
    length = data[4] if len(data) > 4 else 0
    body = 5 + length + 8 + 32
    if not 1 <= length <= 64 or len(data) < body:
        return None, 0, "a broken envelope"
    if data[5:5 + length] != key_id.encode("ascii"):
        return None, 0, "signed with another key"
    mac = hmac.new(key, data[:5 + length + 8] + data[body:], hashlib.sha256).digest()
    if not hmac.compare_digest(mac, data[5 + length + 8:body]):
        return None, 0, "a bad signature"
    seq = struct.unpack(">Q", data[5 + length:5 + length + 8])[0]
    if abs(now - seq / 1e6) > window:
        return None, 0, "signed {:+.0f} s from now (sign_window {:g})".format(
            seq / 1e6 - now, window)
    return data[body:], seq, ""


def next_seq(last: int, now: float) -> int:
    """A signer's next seq: the clock in microseconds, always above the last one."""
    return max(last + 1, int(now * 1000000))


def plugin_batches(plugins: Dict[str, Any], envelope: Dict[str, Any],
                   max_datagram: int) -> List[Dict[str, Any]]:
    """Group plugin data into as few PLG ``plugins`` objects as fit in ``max_datagram``.

    Sizes are measured as sent (compressed when large) inside ``envelope``, the
    message's other fields. A plugin larger than ``max_datagram`` on its own
    still goes alone; one that no datagram can carry is replaced by an error,
    so the server shows why its data is missing.
    """
    def message(group: Dict[str, Any]) -> Dict[str, Any]:
        result = dict(envelope)
        result["plugins"] = group
        return result

    batches: List[Dict[str, Any]] = []
    current: Dict[str, Any] = {}
    for name in sorted(plugins):
        data = plugins[name]
        if current:
            trial = dict(current)
            trial[name] = data
            if len(encode(message(trial))) <= max_datagram:
                current = trial
                continue
            batches.append(current)
        text_size = len(json_text(message({name: data})))
        problem = None
        if text_size > MAX_INFLATED:
            problem = "data too large: {} bytes of JSON".format(text_size)
        elif len(encode(message({name: data}))) > MAX_UDP_PAYLOAD:
            problem = "data too large: over {} bytes compressed".format(MAX_UDP_PAYLOAD)
        if problem:
            log.warning("plugin %s: %s", name, problem)
            data = {"error": problem}
        current = {name: data}
    if current:
        batches.append(current)
    return batches


def output_tail(text: str, limit: int = MAX_OUTPUT) -> str:
    """``text`` cut to its last ``limit`` characters (where errors usually are)."""
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


# ---------------------------------------------------------------------------
# Subprocesses: argv only, never a shell, always a timeout
# ---------------------------------------------------------------------------

_live: Set[Any] = set()
_live_lock = threading.Lock()


class CommandResult:
    """How a child ended and what it wrote."""

    def __init__(self, argv: List[str], *, returncode: Optional[int] = None, stdout: str = "",
                 stderr: str = "", timed_out: bool = False,
                 error: Optional[str] = None) -> None:
        self.argv = argv
        self.returncode = returncode  # negative: killed by that signal
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out
        self.error = error  # set when the program could not be started

    @property
    def signal(self) -> Optional[int]:
        if self.returncode is not None and self.returncode < 0:
            return -self.returncode
        return None

    @property
    def rc(self) -> int:
        """Shell-style: 124 timed out, 127 not started, 128+N killed by signal N."""
        if self.timed_out:
            return RC_TIMEOUT
        if self.error is not None or self.returncode is None:
            return RC_NOT_STARTED
        if self.signal is not None:
            return 128 + self.signal
        return self.returncode

    def describe(self) -> Optional[str]:
        """Why the child did not simply exit, or None when it did."""
        if self.error is not None:
            return self.error
        if self.timed_out:
            return "timed out, killed: {}".format(self.argv[0])
        if self.signal is not None:
            return "killed by {}: {}".format(signal_name(self.signal), self.argv[0])
        return None


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "signal {}".format(number)


def _kill_group(process: Any) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        with contextlib.suppress(OSError):
            process.kill()


def run_command(argv: List[str], timeout: float,
                env: Optional[Dict[str, str]] = None) -> CommandResult:
    """Run ``argv`` in its own session; past ``timeout`` kill its whole process group."""
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=env, start_new_session=True)
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        return CommandResult(argv, error="cannot run {}: {}".format(argv[0], reason))
    with _live_lock:
        _live.add(process)
    timed_out = False
    try:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process)
            out, err = process.communicate()
    finally:
        with _live_lock:
            _live.discard(process)
    return CommandResult(argv, returncode=process.returncode,
                         stdout=out.decode("utf-8", "replace"),
                         stderr=err.decode("utf-8", "replace"), timed_out=timed_out)


def kill_live_processes() -> None:
    """Kill every child still running (at exit), with its process group."""
    with _live_lock:
        processes = list(_live)
    for process in processes:
        _kill_group(process)


def c_locale() -> Dict[str, str]:
    """The environment with LC_ALL=C, so tools print numbers the way parsers expect."""
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    return env


def read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def read_optional(path: str) -> Optional[str]:
    try:
        return read_text(path).strip()
    except OSError:
        return None


# ---------------------------------------------------------------------------
# Parsers: text in, data out (no I/O)
# ---------------------------------------------------------------------------


def mib(kib: float) -> float:
    return round(kib / 1024.0, 1)


def parse_proc_stat(text: str) -> Dict[str, Any]:
    """/proc/stat -> {"cpu": (busy, total), "cores": [(busy, total), ...], btime, ...}."""
    result: Dict[str, Any] = {"cores": []}
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0].startswith("cpu"):
            # user nice system idle iowait irq softirq steal [guest guest_nice]; guest
            # time is already inside user and nice, so only the first eight count.
            values = [int(v) for v in fields[1:9]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            sample = (sum(values) - idle, sum(values))
            if fields[0] == "cpu":
                result["cpu"] = sample
            else:
                result["cores"].append(sample)
        elif fields[0] in ("btime", "procs_running", "procs_blocked") and len(fields) > 1:
            result[fields[0]] = int(fields[1])
    return result


def busy_percent(before: Tuple[int, int], after: Tuple[int, int]) -> float:
    """CPU busy % between two (busy, total) samples from :func:`parse_proc_stat`."""
    total = after[1] - before[1]
    if total <= 0:
        return 0.0
    return round(max(0.0, min(100.0, 100.0 * (after[0] - before[0]) / total)), 1)


def parse_loadavg(text: str) -> Dict[str, Any]:
    """/proc/loadavg -> load_1min/5min/15min and thread_count (kernel scheduling entities)."""
    fields = text.split()
    data: Dict[str, Any] = {"load_1min": round(float(fields[0]), 2),
                            "load_5min": round(float(fields[1]), 2),
                            "load_15min": round(float(fields[2]), 2)}
    if len(fields) > 3 and "/" in fields[3]:
        data["thread_count"] = int(fields[3].split("/")[1])
    return data


def process_states(stats: List[str]) -> Dict[str, int]:
    """Texts of /proc/PID/stat -> process_count/running/sleeping/zombie (psutil's grouping)."""
    counts = {"process_count": 0, "process_running": 0, "process_sleeping": 0,
              "process_zombie": 0}
    for text in stats:
        after = text.rpartition(")")[2].split()
        if not after:
            continue
        counts["process_count"] += 1
        state = after[0]
        if state == "R":
            counts["process_running"] += 1
        elif state in ("S", "D", "I"):
            counts["process_sleeping"] += 1
        elif state == "Z":
            counts["process_zombie"] += 1
    return counts


def parse_cpuinfo(text: str) -> Dict[str, Any]:
    """/proc/cpuinfo -> cpu_model, cpu_count_physical and the average current MHz."""
    model = None
    cores = set()
    mhz = []
    physical = "0"
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep:
            continue
        if key in ("model name", "Hardware", "cpu model") and model is None:
            model = value
        elif key == "physical id":
            physical = value
        elif key == "core id":
            cores.add((physical, value))
        elif key == "cpu MHz":
            with contextlib.suppress(ValueError):
                mhz.append(float(value))
    return {"cpu_model": model, "cpu_count_physical": len(cores) or None,
            "frequency_mhz": round(sum(mhz) / len(mhz), 1) if mhz else None}


def parse_meminfo(text: str) -> Dict[str, int]:
    """/proc/meminfo -> {key: kB}."""
    table = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        fields = rest.split()
        if sep and fields and fields[0].isdigit():
            table[key.strip()] = int(fields[0])
    return table


def parse_arcstats(text: str) -> Dict[str, int]:
    """/proc/spl/kstat/zfs/arcstats ("name type data" rows) -> {name: bytes}."""
    table = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            table[fields[0]] = int(fields[2])
    return table


def memory_data(meminfo: Dict[str, int], arc: Optional[Dict[str, int]]) -> Dict[str, Any]:
    """memory_monitor's fields from /proc/meminfo (kB) and parsed arcstats (bytes), if any.

    Linux counts the ZFS ARC as used, but the ARC above ``c_min`` is handed back
    on demand, so it is added to ``available_mb``. ``used_mb`` is computed as
    psutil does (total - free - buffers - cached), like the full agent.
    """
    total = meminfo.get("MemTotal", 0)
    free = meminfo.get("MemFree", 0)
    buffers = meminfo.get("Buffers", 0)
    cached = meminfo.get("Cached", 0) + meminfo.get("SReclaimable", 0)
    available = meminfo.get("MemAvailable", free + buffers + cached)  # kernels before 3.14
    used = total - free - buffers - cached
    if used < 0:
        used = total - free
    data: Dict[str, Any] = {}
    if arc and "size" in arc:
        reclaimable = max(0, arc["size"] - arc.get("c_min", 0)) / 1024.0
        available = min(total, available + reclaimable)
        data = {"zfs_arc_mb": mib(arc["size"] / 1024.0),
                "zfs_arc_min_mb": mib(arc.get("c_min", 0) / 1024.0),
                "zfs_arc_max_mb": mib(arc.get("c_max", 0) / 1024.0),
                "zfs_arc_reclaimable_mb": mib(reclaimable)}
    swap_total = meminfo.get("SwapTotal", 0)
    swap_free = meminfo.get("SwapFree", 0)
    result = {
        "total_mb": mib(total), "available_mb": mib(available), "used_mb": mib(used),
        "free_mb": mib(free),
        "percent": round((total - available) / total * 100.0, 1) if total else 0.0,
        "buffers_mb": mib(buffers), "cached_mb": mib(cached),
        "swap_total_mb": mib(swap_total), "swap_used_mb": mib(swap_total - swap_free),
        "swap_free_mb": mib(swap_free),
        "swap_percent": round((swap_total - swap_free) / swap_total * 100.0, 1)
        if swap_total else 0.0,
    }
    result.update(data)
    return result


_DF_ROW = re.compile(r"^(?P<device>.*?)\s+(?P<size>\d+)\s+(?P<used>\d+)\s+(?P<free>\d+)"
                     r"\s+(?:\d+%|-)\s+(?P<mount>/.*)$")


def parse_df(text: str) -> Dict[str, Dict[str, Any]]:
    """``df -kP`` (or ``df -Pi``) -> {mount: {device, size, used, free}} in the header's unit.

    The first line's ``N-blocks`` (1024 with -k) gives the unit; for ``-i``
    output (``Inodes``) the numbers are inode counts. Device names may hold
    spaces; mount points start at the first ``/`` after the capacity column.
    """
    lines = text.splitlines()
    if not lines:
        return {}
    header = lines[0].split()
    unit = 1
    if len(header) > 1 and header[1].endswith("-blocks") and header[1][:-7].isdigit():
        unit = int(header[1][:-7])
    rows = {}
    for line in lines[1:]:
        m = _DF_ROW.match(line.strip())
        if m:
            rows[m.group("mount")] = {"device": m.group("device"),
                                      "size": int(m.group("size")) * unit,
                                      "used": int(m.group("used")) * unit,
                                      "free": int(m.group("free")) * unit}
    return rows


def partition_data(row: Dict[str, Any], fstype: str, inodes: Optional[Dict[str, Any]]
                   ) -> Dict[str, Any]:
    """One disk_monitor partition: ``percent`` is used / (used + free), as df and psutil."""
    used, free = row["used"], row["free"]
    gib = 1024.0 ** 3
    inodes_percent = None
    if inodes and inodes["size"]:
        inodes_percent = round(inodes["used"] / inodes["size"] * 100.0, 1)
    return {"device": row["device"], "fstype": fstype,
            "total_gb": round(row["size"] / gib, 2), "used_gb": round(used / gib, 2),
            "free_gb": round(free / gib, 2), "free_mb": round(free / 1024.0 ** 2, 1),
            "percent": round(used / (used + free) * 100.0, 1) if used + free else 0.0,
            "inodes_percent": inodes_percent}


def parse_mounts(text: str) -> Dict[str, Tuple[str, str]]:
    """/proc/mounts -> {mount point: (device, fstype)}; octal escapes (\\040) undone."""
    mounts = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
            mounts[mount] = (fields[0], fields[2])
    return mounts


def physical_fstypes(text: str) -> Set[str]:
    """/proc/filesystems -> types backed by a device (no "nodev"), plus zfs, as psutil."""
    types = {line.split()[0] for line in text.splitlines()
             if line.strip() and not line.startswith("nodev")}
    types.add("zfs")
    return types


def parse_diskstats(text: str) -> Dict[str, Dict[str, int]]:
    """/proc/diskstats -> {device: read/write bytes, counts and times} (512-byte sectors)."""
    disks = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 14 and f[3].isdigit():
            disks[f[2]] = {"read_bytes": int(f[5]) * 512, "write_bytes": int(f[9]) * 512,
                           "read_count": int(f[3]), "write_count": int(f[7]),
                           "read_time_ms": int(f[6]), "write_time_ms": int(f[10])}
    return disks


_NET_FIELDS = ("bytes_recv", "packets_recv", "errin", "dropin", None, None, None, None,
               "bytes_sent", "packets_sent", "errout", "dropout")


def parse_net_dev(text: str) -> Dict[str, Dict[str, int]]:
    """/proc/net/dev -> {interface: bytes/packets sent/recv, errin/out, dropin/out}."""
    interfaces = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        values = rest.split()
        if sep and len(values) >= 12 and all(v.isdigit() for v in values[:12]):
            interfaces[name.strip()] = {key: int(values[i]) for i, key in enumerate(_NET_FIELDS)
                                        if key is not None}
    return interfaces


_TCP_STATES = {"01": "established", "06": "time_wait", "08": "close_wait", "0A": "listen"}


def count_connections(tcp: List[str], udp: List[str]) -> Dict[str, int]:
    """/proc/net/tcp{,6} and udp{,6} texts -> {total, established, listen, time_wait,
    close_wait, other}; UDP sockets count in total and other, as in the agent."""
    counts = {"total": 0, "established": 0, "listen": 0, "time_wait": 0, "close_wait": 0,
              "other": 0}
    for texts, is_tcp in ((tcp, True), (udp, False)):
        for text in texts:
            for line in text.splitlines()[1:]:
                fields = line.split()
                if len(fields) < 4:
                    continue
                counts["total"] += 1
                state = _TCP_STATES.get(fields[3].upper()) if is_tcp else None
                counts[state or "other"] += 1
    return counts


_PING_RTT = re.compile(r"(?:rtt|round-trip) min/avg/max(?:/(?:mdev|stddev))? = "
                       r"([\d.]+)/([\d.]+)/([\d.]+)(?:/([\d.]+))? ms")


def parse_ping(text: str) -> Dict[str, Any]:
    """The summary of iputils, BSD or busybox ping -> rtt_min/avg/max/mdev (ms), loss, counts."""
    counts = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", text)
    loss = re.search(r"([\d.]+)% packet loss", text)
    rtt = _PING_RTT.search(text)
    result: Dict[str, Any] = {"loss_percent": float(loss.group(1)) if loss else 100.0,
                              "transmitted": int(counts.group(1)) if counts else 0,
                              "received": int(counts.group(2)) if counts else 0}
    for i, key in enumerate(("rtt_min", "rtt_avg", "rtt_max", "rtt_mdev"), start=1):
        value = rtt.group(i) if rtt else None
        result[key] = float(value) if value is not None else None
    result["reachable"] = 1 if result["received"] else 0
    return result


def ping_result(result: CommandResult) -> Dict[str, Any]:
    """One ping_monitor target; without a reply, ``error`` says why (ping's stderr)."""
    data = parse_ping(result.stdout)
    if not data["received"]:
        problem = result.stderr.strip() or (
            result.describe() or "exit code {}: {}".format(result.rc, result.argv[0])
            if result.rc else "no reply")
        data["error"] = problem.splitlines()[-1][:300] if problem else "no reply"
    return data


def parse_os_release(text: str) -> Dict[str, str]:
    """KEY=value lines of /etc/os-release (values optionally quoted)."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            try:
                words = shlex.split(value)
                values[key] = words[0] if words else ""
            except ValueError:
                values[key] = value.strip("\"'")
    return values


# Monitoring Plugins (Nagios) output ----------------------------------------------

NAGIOS_STATUS = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_VALUE = re.compile(r"(" + _NUMBER + r")([^\d;,.\-+][^;]*)?\Z")
_PLAIN = re.compile(_NUMBER + r"\Z")


def parse_range(text: str) -> Optional[Dict[str, Any]]:
    """A threshold range ``[@][start:][end]`` -> {"start", "end", "inside"}; "" -> None.

    ``10`` is 0..10, ``10:`` is 10..+inf, ``~:10`` is -inf..10, ``10:20`` is
    10..20; a value alerts outside the range, or inside it with ``@``. An
    infinite end is None (JSON has no infinity). Raises ValueError otherwise.
    """
    body = text.strip()
    if not body:
        return None
    inside = body.startswith("@")
    if inside:
        body = body[1:]
    if not body:
        raise ValueError("empty range")
    start: Optional[float] = 0.0
    end_text = body
    if ":" in body:
        start_text, end_text = body.split(":", 1)
        if start_text == "~":
            start = None
        elif start_text:
            if not _PLAIN.match(start_text):
                raise ValueError("bad range start {!r}".format(start_text))
            start = float(start_text)
    end = None
    if end_text:
        if not _PLAIN.match(end_text):
            raise ValueError("bad range end {!r}".format(end_text))
        end = float(end_text)
    if start is not None and end is not None and start > end:
        raise ValueError("range start {:g} is above its end {:g}".format(start, end))
    return {"start": start, "end": end, "inside": inside}


def range_alerts(rng: Dict[str, Any], value: float) -> bool:
    """Whether ``value`` alerts against a range from :func:`parse_range`."""
    start = float("-inf") if rng["start"] is None else rng["start"]
    end = float("inf") if rng["end"] is None else rng["end"]
    within = start <= value <= end
    return within if rng["inside"] else not within


_PERF_ITEM = re.compile(r"'((?:[^']|'')*)'=(\S*)|([^\s'=][^\s=]*)=(\S*)|\S+")


def _perf_items(text: str) -> List[Tuple[str, str]]:
    """perfdata text -> (label, "value;warn;crit;min;max") pairs.

    A label is ``'quoted'`` (spaces allowed, ``''`` is a quote) or runs to the
    ``=``; a token that is neither is skipped.
    """
    items = []
    for m in _PERF_ITEM.finditer(text):
        if m.group(1) is not None:
            items.append((m.group(1).replace("''", "'"), m.group(2)))
        elif m.group(3) is not None:
            items.append((m.group(3), m.group(4)))
    return items


def parse_perfdata(text: str) -> List[Tuple[str, Dict[str, Any]]]:
    """Performance data -> [(label, {value, uom, warn, crit, min, max}), ...] in order.

    Per the Monitoring Plugins guidelines: ``'label'=value[UOM];[warn];[crit];
    [min];[max]``, where trailing fields may be dropped and any may be empty,
    and ``U`` is a value that could not be measured (None). A malformed item is
    skipped; a malformed range or limit is dropped from its item.
    """
    result: List[Tuple[str, Dict[str, Any]]] = []
    for label, spec in _perf_items(text):
        fields = spec.split(";")
        head = fields[0]
        m = _VALUE.match(head)
        if head.startswith("U") and not m:
            value, uom = None, ""
        elif m and label:
            value, uom = float(m.group(1)), (m.group(2) or "")
        else:
            log.debug("perfdata: skipped %r=%r", label, spec)
            continue
        fields = ([*fields[1:], "", "", "", ""])[:4]
        item: Dict[str, Any] = {"value": value, "uom": uom}
        for key, field in zip(("warn", "crit"), fields[:2]):
            try:
                item[key] = parse_range(field)
            except ValueError:
                item[key] = None
        for key, field in zip(("min", "max"), fields[2:]):
            item[key] = float(field) if _PLAIN.match(field.strip()) else None
        result.append((label, item))
    return result


def split_output(text: str) -> Tuple[str, str, str]:
    """Plugin output -> (first line's text, long text, all perfdata text).

    Line 1 is ``TEXT | PERFDATA``; later lines are long text until one holds
    a ``|``: what follows it, and every line after it, is more perfdata.
    """
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    first, _, perf = lines[0].partition("|")
    perfs = [perf]
    long_lines = []
    for index, line in enumerate(lines[1:], start=1):
        if "|" in line:
            before, _, after = line.partition("|")
            if before.strip():
                long_lines.append(before.rstrip())
            perfs.append(after)
            perfs.extend(lines[index + 1:])
            break
        long_lines.append(line)
    return first.strip(), "\n".join(long_lines).strip("\n"), " ".join(perfs).strip()


def field_label(label: str) -> str:
    """A perfdata label as part of a field name: ``[A-Za-z0-9_]`` only, ``/`` -> root."""
    if label.strip() == "/":
        return "root"
    return re.sub(r"[^A-Za-z0-9_]+", "_", label).strip("_") or "value"


def nagios_fields(name: str, result: CommandResult, timeout: float) -> Dict[str, Any]:
    """nagios_runner's fields for check ``name``; the status comes from the exit code only.

    Exit 0-3 are OK/WARNING/CRITICAL/UNKNOWN; 4-255, a kill by a signal, a
    timeout or a program that would not start are UNKNOWN, and the output says
    which. The text is the first line of stdout, or of stderr when stdout is
    empty. A perfdata label met twice gets ``_2``, ``_3``... (as in the agent).
    """
    perf = ""
    if result.error is not None:
        code, text = 3, result.error
    elif result.timed_out:
        code, text = 3, "timed out after {:g} s, killed".format(timeout)
    else:
        raw = result.stdout if result.stdout.strip() else result.stderr
        text, _long, perf = split_output(raw) if raw.strip() else ("", "", "")
        rc = result.returncode
        if result.signal is not None:
            code, text = 3, "{}{}".format(result.describe(), ": " + text if text else "")
        else:
            code = rc if rc in (0, 1, 2, 3) else 3
            if code != rc:
                text = "exit code {}{}".format(rc, ": " + text if text else "")
    fields: Dict[str, Any] = {name + "_status_code": code, name + "_status": NAGIOS_STATUS[code],
                              name + "_output": text[:1000]}
    for label, item in parse_perfdata(perf):
        base = key = "{}_{}".format(name, field_label(label))
        n = 2
        while key in fields:
            key = "{}_{}".format(base, n)
            n += 1
        fields[key] = item["value"]
    return fields


# ---------------------------------------------------------------------------
# Plugins
# ---------------------------------------------------------------------------


class Plugin:
    """A compiled-in plugin; ``collect()`` runs on the plugin's own thread.

    ``options`` declares the plugin's own config keys as {key: (default,
    check)}; ``available()`` says whether this system has what it reads;
    ``wanted()`` whether its config gives it anything to do.
    """

    name = ""
    options: Dict[str, Tuple[Any, Check]] = {}
    defaults: Dict[str, Any] = {}  # this plugin's own defaults for COMMON_OPTIONS

    def __init__(self, options: Dict[str, Any], stop: threading.Event) -> None:
        self.config = options
        self.interval = float(options["interval"])
        self.timeout = float(options["timeout"])
        self.delay = float(options["delay"])
        self.stop = stop

    @classmethod
    def check_options(cls, source: str, prefix: str, options: Dict[str, Any]) -> None:
        """Checks across options, after each option's own check."""

    @classmethod
    def available(cls) -> bool:
        return True

    def wanted(self) -> bool:
        return True

    def collect(self) -> Dict[str, Any]:
        raise NotImplementedError


class OsInfo(Plugin):
    """What the host is: OS, kernel, distribution, hardware."""

    name = "os_info"

    def collect(self) -> Dict[str, Any]:
        uname = platform.uname()
        release: Dict[str, str] = {}
        for path in ("/etc/os-release", "/usr/lib/os-release"):
            text = read_optional(path)
            if text is not None:
                release = parse_os_release(text)
                break
        cpuinfo = parse_cpuinfo(read_optional("/proc/cpuinfo") or "")
        meminfo = parse_meminfo(read_optional("/proc/meminfo") or "")
        stat = parse_proc_stat(read_optional("/proc/stat") or "")
        return {
            "system": uname.system, "hostname": uname.node, "kernel": uname.release,
            "kernel_version": uname.version, "architecture": uname.machine,
            "distribution": release.get("PRETTY_NAME") or release.get("NAME"),
            "distribution_id": release.get("ID"),
            "distribution_version": release.get("VERSION_ID"),
            "cpu_model": cpuinfo["cpu_model"] or platform.processor() or None,
            "cpu_count": os.cpu_count(),
            "cpu_count_physical": cpuinfo["cpu_count_physical"],
            "memory_total_mb": mib(meminfo["MemTotal"]) if "MemTotal" in meminfo else None,
            "boot_time": float(stat["btime"]) if "btime" in stat else None,
            "python_version": platform.python_version(),
            "agent_version": VERSION,
            "agent": CLIENT,
        }


def _cpufreq(name: str) -> Optional[float]:
    value = read_optional("/sys/devices/system/cpu/cpu0/cpufreq/" + name)
    return round(int(value) / 1000.0, 1) if value and value.isdigit() else None


class CpuMonitor(Plugin):
    """CPU use from /proc/stat, load, frequency, process counts, uptime."""

    name = "cpu_monitor"
    options = {"per_core": (True, check_bool)}

    def __init__(self, options: Dict[str, Any], stop: threading.Event) -> None:
        super().__init__(options, stop)
        self.previous: Optional[Dict[str, Any]] = None

    @classmethod
    def available(cls) -> bool:
        return os.path.exists("/proc/stat")

    def collect(self) -> Dict[str, Any]:
        before = self.previous
        if before is None:  # first collection: a half-second sample
            before = parse_proc_stat(read_text("/proc/stat"))
            self.stop.wait(0.5)
        now = parse_proc_stat(read_text("/proc/stat"))
        self.previous = now
        data: Dict[str, Any] = {"cpu_percent": busy_percent(before["cpu"], now["cpu"])}
        if self.config["per_core"]:
            data["per_core"] = [busy_percent(b, a) for b, a in zip(before["cores"],
                                                                   now["cores"])]
        data["cpu_count"] = len(now["cores"]) or os.cpu_count()
        data.update(parse_loadavg(read_text("/proc/loadavg")))
        data["frequency_mhz"] = parse_cpuinfo(read_optional("/proc/cpuinfo") or "")[
            "frequency_mhz"] or _cpufreq("scaling_cur_freq")
        data["frequency_min_mhz"] = _cpufreq("cpuinfo_min_freq")
        data["frequency_max_mhz"] = _cpufreq("cpuinfo_max_freq")
        stats = []
        for path in glob.glob("/proc/[0-9]*/stat"):
            text = read_optional(path)  # a process may end while we look
            if text:
                stats.append(text)
        data.update(process_states(stats))
        uptime = read_optional("/proc/uptime")
        data["uptime_seconds"] = round(float(uptime.split()[0]), 1) if uptime else None
        data["boot_time"] = float(now["btime"]) if "btime" in now else None
        return data


class MemoryMonitor(Plugin):
    """RAM and swap from /proc/meminfo, ZFS ARC counted as available."""

    name = "memory_monitor"
    options = {"arcstats_path": ("/proc/spl/kstat/zfs/arcstats", check_str)}

    @classmethod
    def available(cls) -> bool:
        return os.path.exists("/proc/meminfo")

    def collect(self) -> Dict[str, Any]:
        arc_text = read_optional(self.config["arcstats_path"])
        arc = parse_arcstats(arc_text) if arc_text else None
        return memory_data(parse_meminfo(read_text("/proc/meminfo")), arc)


class DiskMonitor(Plugin):
    """Filesystem use via ``df -kP`` (a hung NFS mount cannot hang us), I/O counters."""

    name = "disk_monitor"
    options = {
        "mountpoints": (None, check_optional_str_list),
        "exclude_fstypes": (["squashfs", "tmpfs", "devtmpfs", "overlay", "iso9660"],
                            check_str_list),
        "per_disk": (False, check_bool),
    }

    def collect(self) -> Dict[str, Any]:
        result = run_command(["df", "-kP"], self.timeout, env=c_locale())
        if result.describe() or result.returncode not in (0, 1):
            return {"error": result.describe() or result.stderr.strip() or "df failed"}
        rows = parse_df(result.stdout)
        inode_rows: Dict[str, Dict[str, Any]] = {}
        if sys.platform.startswith("linux"):
            inodes = run_command(["df", "-Pi"], self.timeout, env=c_locale())
            if inodes.describe() is None:
                inode_rows = parse_df(inodes.stdout)
        mounts = parse_mounts(read_optional("/proc/mounts") or "")
        physical = physical_fstypes(read_optional("/proc/filesystems") or "")
        partitions: Dict[str, Any] = {}
        for mount in self.chosen(rows, mounts, physical):
            if mount not in rows:
                partitions[mount] = {"error": "not a mounted filesystem"}
                continue
            fstype = mounts.get(mount, ("", ""))[1]
            partitions[mount] = partition_data(rows[mount], fstype, inode_rows.get(mount))
        data: Dict[str, Any] = {"partitions": partitions, "io": None}
        diskstats = read_optional("/proc/diskstats")
        if diskstats:
            disks = parse_diskstats(diskstats)
            whole = [d for name, d in disks.items() if os.path.exists("/sys/block/" + name)]
            data["io"] = {key: sum(d[key] for d in whole) for key in (
                "read_bytes", "write_bytes", "read_count", "write_count", "read_time_ms",
                "write_time_ms")}
            if self.config["per_disk"]:
                data["disks"] = disks
        elif self.config["per_disk"]:
            data["disks"] = {}
        return data

    def chosen(self, rows: Dict[str, Any], mounts: Dict[str, Tuple[str, str]],
               physical: Set[str]) -> List[str]:
        """The configured mount points, else / and every physical, not excluded filesystem."""
        if self.config["mountpoints"] is not None:
            return list(self.config["mountpoints"])
        chosen = []
        for mount, row in rows.items():
            if mount == "/":
                chosen.append(mount)
                continue
            if mounts:
                fstype = mounts.get(mount, ("", ""))[1]
                if fstype not in physical or fstype in self.config["exclude_fstypes"]:
                    continue
            elif row["size"] == 0 or not row["device"].startswith("/"):
                continue  # no /proc/mounts (BSD, macOS): keep device-backed filesystems
            chosen.append(mount)
        return sorted(chosen)


class NetworkMonitor(Plugin):
    """Interface counters from /proc/net/dev, TCP/UDP socket counts."""

    name = "network_monitor"
    options = {"include_loopback": (False, check_bool)}

    @classmethod
    def available(cls) -> bool:
        return os.path.exists("/proc/net/dev")

    def collect(self) -> Dict[str, Any]:
        interfaces: Dict[str, Any] = {}
        for name, counters in sorted(parse_net_dev(read_text("/proc/net/dev")).items()):
            sys_dir = "/sys/class/net/{}/".format(name)
            flags_text = read_optional(sys_dir + "flags")
            flags = int(flags_text, 16) if flags_text else 0
            if (name == "lo" or flags & 0x8) and not self.config["include_loopback"]:
                continue  # 0x8: IFF_LOOPBACK
            speed = read_optional(sys_dir + "speed")
            mtu = read_optional(sys_dir + "mtu")
            info: Dict[str, Any] = dict(counters)
            info["is_up"] = bool(flags & 0x1) if flags_text else None  # IFF_UP
            info["speed_mbps"] = int(speed) if speed and speed.isdigit() and int(speed) else None
            info["mtu"] = int(mtu) if mtu and mtu.isdigit() else None
            interfaces[name] = info
        values = list(interfaces.values())
        tcp = [t for t in (read_optional("/proc/net/tcp"), read_optional("/proc/net/tcp6")) if t]
        udp = [t for t in (read_optional("/proc/net/udp"), read_optional("/proc/net/udp6")) if t]
        return {
            "interfaces": interfaces,
            "bytes_sent": sum(i["bytes_sent"] for i in values),
            "bytes_recv": sum(i["bytes_recv"] for i in values),
            "errors_total": sum(i["errin"] + i["errout"] for i in values),
            "dropped": sum(i["dropin"] + i["dropout"] for i in values),
            "connections": count_connections(tcp, udp) if tcp or udp else None,
        }


class PingMonitor(Plugin):
    """Round-trip time and loss to each configured target, via the system ping."""

    name = "ping_monitor"
    options = {
        "hosts": ([], check_str_list),
        "count": (3, check_count),
        "ping_interval": (1.0, check_positive),
        "ping_timeout": (5.0, check_positive),
        "ping_bin": ("ping", check_str),
    }

    def wanted(self) -> bool:
        return bool(self.config["hosts"])

    def argv(self, host: str) -> List[str]:
        count, wait = self.config["count"], self.config["ping_timeout"]
        ping = [self.config["ping_bin"], "-n", "-q", "-c", str(count),
                "-i", "{:g}".format(self.config["ping_interval"])]
        if sys.platform.startswith("linux"):  # -W: seconds to wait for the last reply
            return [*ping, "-W", str(math.ceil(wait)), "--", host]
        whole = count * self.config["ping_interval"] + wait  # BSD, macOS: the whole run
        return [*ping, "-t", str(int(whole + 1)), host]

    def collect(self) -> Dict[str, Any]:
        limit = min(self.timeout,
                    self.config["count"] * self.config["ping_interval"]
                    + self.config["ping_timeout"] + 5)
        results: Dict[str, Any] = {}

        def ping(host: str) -> None:
            results[host] = ping_result(run_command(self.argv(host), limit, env=c_locale()))

        threads = [threading.Thread(target=ping, args=(host,), daemon=True)
                   for host in self.config["hosts"]]
        for thread in threads:  # all targets at once: one round costs one ping run
            thread.start()
        for thread in threads:
            thread.join()
        return {"targets": {host: results[host] for host in self.config["hosts"]}}


class NagiosRunner(Plugin):
    """Runs Monitoring Plugins (Nagios checks) and reports status, text and perfdata."""

    name = "nagios_runner"
    defaults = {"timeout": 120.0}
    options = {
        "commands": ([], lambda value: None if isinstance(value, list) else
                     "expected a list of {name, command}, got " + _shown(value)),
        "command_timeout": (30.0, check_positive),
    }

    @classmethod
    def available(cls) -> bool:
        return os.name == "posix"

    @classmethod
    def check_options(cls, source: str, prefix: str, options: Dict[str, Any]) -> None:
        names: Set[str] = set()
        commands = []
        for i, block in enumerate(options["commands"]):
            key = "{}commands[{}]".format(prefix, i)
            if not isinstance(block, dict):
                raise ConfigError(source, key, "expected {name, command}, got " + _shown(block))
            entry = check_section(source, key + ".", block, {
                "name": (None, lambda v: None if isinstance(v, str) and v else
                         "expected a non-empty string, got " + _shown(v)),
                "command": (None, check_command_line)})
            if entry["name"] is None or entry["command"] is None:
                raise ConfigError(source, key, "needs both name and command")
            if entry["name"] in names:
                raise ConfigError(source, key + ".name", "duplicate name " + _shown(
                    entry["name"]))
            names.add(entry["name"])
            command = entry["command"]
            entry["argv"] = shlex.split(command) if isinstance(command, str) else command
            commands.append(entry)
        options["commands"] = commands

    def __init__(self, options: Dict[str, Any], stop: threading.Event) -> None:
        super().__init__(options, stop)
        for entry in options["commands"]:
            path = entry["argv"][0]
            if not os.path.isabs(path):
                continue
            if not os.path.isfile(path):
                log.warning("nagios_runner: %s: %s does not exist", entry["name"], path)
            elif not os.access(path, os.X_OK):
                log.warning("nagios_runner: %s: %s is not executable", entry["name"], path)

    def wanted(self) -> bool:
        return bool(self.config["commands"])

    def collect(self) -> Dict[str, Any]:
        """All checks at once, each on its own thread, each with ``command_timeout``."""
        timeout = min(float(self.config["command_timeout"]), self.timeout)
        results: Dict[str, Dict[str, Any]] = {}

        def check(entry: Dict[str, Any]) -> None:
            result = run_command(entry["argv"], timeout, env=c_locale())
            results[entry["name"]] = nagios_fields(entry["name"], result, timeout)

        threads = [threading.Thread(target=check, args=(entry,), daemon=True)
                   for entry in self.config["commands"]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        data: Dict[str, Any] = {}
        for entry in self.config["commands"]:
            data.update(results[entry["name"]])
        return data


PLUGINS: Dict[str, Any] = {cls.name: cls for cls in (
    OsInfo, CpuMonitor, MemoryMonitor, DiskMonitor, NetworkMonitor, PingMonitor, NagiosRunner)}


def make_plugins(config: Dict[str, Any], stop: threading.Event) -> List[Plugin]:
    """Every plugin that is enabled, available here, and has something to do."""
    plugins = []
    for name, cls in PLUGINS.items():
        options = config["plugins"][name]
        if not options["enabled"]:
            continue
        if not cls.available():
            log.info("plugin %s is not available on this system", name)
            continue
        plugin = cls(options, stop)
        if plugin.wanted():
            plugins.append(plugin)
    return plugins


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------

Address = Tuple[Any, ...]


def resolve(host: str, port: int) -> List[Tuple[int, Address]]:
    """Every (family, sockaddr) of ``host`` for UDP, IPv4 and IPv6; raises socket.gaierror."""
    found: List[Tuple[int, Address]] = []
    for family, _type, _proto, _name, sockaddr in socket.getaddrinfo(
            host, port, socket.AF_UNSPEC, socket.SOCK_DGRAM):
        if family in (socket.AF_INET, socket.AF_INET6) and (family, sockaddr) not in found:
            found.append((family, sockaddr))
    return found


class Client:
    """Heartbeats, plugin data and command results for this host, to every server address.

    The main thread owns the sockets and the schedule: it sends ``HTB`` on
    time, reads ``ACK``/``CMD``/``UPD`` and sends what the worker threads
    (plugins, commands) leave on ``self.results``. Workers never touch a socket.
    """

    def __init__(self, config: Dict[str, Any], servers: List[str]) -> None:
        self.config = config
        self.servers = servers
        self.port = int(config["hb_port"])
        self.interval = float(config["interval"])
        self.addresses: Dict[str, List[Tuple[int, Address]]] = {s: [] for s in servers}
        self.resolved_at: Dict[str, float] = {}
        self.unresolved: Dict[str, str] = {}
        self.looking_up: Set[str] = set()  # names with a lookup thread running
        self.sockets: Dict[int, socket.socket] = {}
        self.seq = 0
        self.rtt: Optional[float] = None
        self.stop = threading.Event()
        self.results: Any = queue.Queue()
        self.pending: Dict[str, Any] = {}
        self.pending_since: Optional[float] = None
        self.busy = 0
        self.busy_lock = threading.Lock()
        self.next_tick: Dict[str, float] = {}  # each plugin's next collection (monotonic)
        self.running_commands: Set[str] = set()  # started or waiting: resends are ignored
        self.waiting_commands: Any = collections.deque()
        self.command_children = 0
        self.finished_commands: Dict[str, Dict[str, Any]] = {}
        self.key: Optional[bytes] = (config["key"].encode("utf-8") if config["key"] is not None
                                     else None)
        self.key_id: Optional[str] = config["key_id"]
        self.signed_seq = 0
        # Per server, the seq of its last signed reply taken: replies signed before this
        # process started, or seen before, are refused (a replayed CMD is not run again).
        self.server_seq = {s: next_seq(0, time.time()) for s in servers}
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    # Addresses and sockets

    def resolve_servers(self, warn: bool = True) -> List[str]:
        """Look up servers not yet resolved or due again; return one line per failure.

        A failure is logged once (with ``warn``) until the name resolves again.
        """
        errors = []
        for server in self.servers_due():
            error = self.resolved(server, self.addresses_of(server), warn)
            if error:
                errors.append(error)
        return errors

    def servers_due(self) -> List[str]:
        """Names never resolved, failing, or resolved over ``resolve_interval`` ago."""
        now = time.monotonic()
        every = float(self.config["resolve_interval"])
        return [server for server in self.servers
                if not (self.addresses[server] and now - self.resolved_at[server] < every)]

    def resolved(self, server: str, found: Any, warn: bool = True) -> str:
        """Take a lookup's addresses (or its exception); return the failure line, or ''."""
        if not isinstance(found, Exception):
            self.addresses[server] = found
            self.resolved_at[server] = time.monotonic()
            if self.unresolved.pop(server, None):
                log.info("server %s resolved again", server)
            return ""
        reason = getattr(found, "strerror", None) or str(found)
        error = "cannot resolve server {!r}: {}".format(server, reason)
        if warn and server not in self.unresolved:
            log.warning("%s; retrying every %g s", error, self.interval)
        self.unresolved[server] = reason
        return error

    def look_up_in_background(self) -> None:
        """Start a lookup thread for each name due, one per name at a time.

        The main loop never waits on the resolver: a hanging or failing lookup
        delays no heartbeat to the addresses already known (of this or another
        server). The result comes back through ``results``.
        """
        for server in self.servers_due():
            if server in self.looking_up:
                continue
            self.looking_up.add(server)
            threading.Thread(target=self.look_up, args=(server,), daemon=True,
                             name="lookup " + server).start()

    def addresses_of(self, server: str) -> Any:
        """The addresses of ``server``, or the exception its lookup raised."""
        try:
            return resolve(server, self.port)
        except (socket.gaierror, UnicodeError) as e:
            return e

    def look_up(self, server: str) -> None:
        self.results.put(("lookup", server, self.addresses_of(server)))
        self.wake()

    def socket_for(self, family: int) -> Optional[socket.socket]:
        sock = self.sockets.get(family)
        if sock is None:
            try:
                sock = socket.socket(family, socket.SOCK_DGRAM)
            except OSError as e:
                log.debug("no socket for address family %s: %s", family, e)
                return None
            sock.setblocking(False)
            self.sockets[family] = sock
        return sock

    def is_server(self, addr: Address) -> bool:
        return self.server_of(addr) is not None

    def server_of(self, addr: Address) -> Optional[str]:
        for server, addrs in self.addresses.items():
            if any(sockaddr[:2] == addr[:2] for _family, sockaddr in addrs):
                return server
        return None

    # Sending

    def message(self, kind: str, **fields: Any) -> Dict[str, Any]:
        """A client message with the common fields; every message takes the next seq."""
        self.seq += 1
        message = {"ID": kind, "name": self.config["name"], "seq": self.seq,
                   "ts": round(time.time(), 6), "version": VERSION}
        message.update(fields)
        return message

    def send(self, message: Dict[str, Any], to: Optional[Address] = None) -> int:
        """Send to ``to``, else to every address of every server; return how many left."""
        data = encode(message)
        if to is not None:
            targets = [(socket.AF_INET6 if len(to) == 4 else socket.AF_INET, to)]
        else:
            targets = [target for addrs in self.addresses.values() for target in addrs]
        sent = 0
        for family, sockaddr in targets:
            sock = self.socket_for(family)
            if sock is None:
                continue
            datagram = data
            if self.key is not None and self.key_id is not None:
                self.signed_seq = next_seq(self.signed_seq, time.time())
                datagram = seal(data, self.key_id, self.key, self.signed_seq)
            try:
                sock.sendto(datagram, sockaddr)
                sent += 1
            except OSError as e:  # unreachable now; the next interval tries again
                log.debug("sending %s to %s failed: %s", message["ID"], sockaddr[0], e)
        log.debug("sent %s seq %d, %d bytes, to %d address(es)", message["ID"],
                  message["seq"], len(data), sent)
        return sent

    def send_heartbeat(self) -> None:
        fields: Dict[str, Any] = {"interval": self.interval}
        if self.rtt is not None:
            fields["rtt"] = self.rtt
        if not self.send(self.message("HTB", **fields)):
            log.debug("heartbeat not sent: no server address")

    def send_plugins(self) -> None:
        """Send the pending plugin data in as few PLG datagrams as fit."""
        envelope = {"ID": "PLG", "name": self.config["name"], "seq": self.seq + 1,
                    "ts": round(time.time(), 6), "version": VERSION}
        room = int(self.config["max_datagram"])
        if self.key_id is not None:
            room -= 4 + 1 + len(self.key_id) + 8 + 32  # the signed envelope
        for group in plugin_batches(self.pending, envelope, room):
            self.send(self.message("PLG", plugins=group))
        self.pending = {}
        self.pending_since = None

    def send_boot(self) -> None:
        stat = parse_proc_stat(read_optional("/proc/stat") or "")
        fields = {"boot_time": float(stat["btime"])} if "btime" in stat else {}
        self.send(self.message("BOOT", **fields))

    # Receiving

    def read_socket(self, sock: socket.socket) -> None:
        while True:
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. an ICMP error some systems report here
                log.debug("receive failed: %s", e)
                return
            server = self.server_of(addr)
            if server is None:
                log.debug("ignored a datagram from %s: not a server address", addr[0])
                continue
            signed = data.startswith(SIGNED_MAGIC)
            if signed:
                if self.key is None or self.key_id is None:
                    log.warning("ignored a signed datagram from %s: no key configured", addr[0])
                    continue
                payload, seq, problem = unseal(data, self.key_id, self.key,
                                               float(self.config["sign_window"]), time.time())
                if payload is None:
                    log.warning("ignored a datagram from %s: %s", addr[0], problem)
                    continue
                if seq <= self.server_seq.get(server, 0):
                    log.warning("ignored a replayed datagram from %s", addr[0])
                    continue
                self.server_seq[server] = seq
                data = payload
            message = decode(data)
            if message is None:
                log.debug("ignored an undecodable datagram from %s", addr[0])
                continue
            if self.key is not None and not signed and message.get("ID") in ("CMD", "UPD"):
                log.warning("ignored an unsigned %s from %s: this client signs, so its server "
                            "does too", message.get("ID"), addr[0])
                continue
            self.handle(message, addr)

    def handle(self, message: Dict[str, Any], addr: Address) -> None:
        kind = message.get("ID")
        log.debug("received %s from %s", kind, addr[0])
        if kind == "ACK":
            ts = message.get("ts")
            if _number(ts):
                rtt = (time.time() - ts) * 1000.0
                if 0 <= rtt < 3600e3:  # ignore clock steps
                    self.rtt = round(rtt, 3)
        elif kind in ("CMD", "UPD"):
            self.command(kind, message, addr)

    def command(self, kind: str, message: Dict[str, Any], addr: Address) -> None:
        """Start a CMD or UPD on a worker thread, once per cmd_id (the server resends)."""
        cmd_id = message.get("cmd_id")
        if not isinstance(cmd_id, (str, int)) or isinstance(cmd_id, bool):
            log.warning("%s without a cmd_id from %s ignored", kind, addr[0])
            return
        key = str(cmd_id)
        if key in self.running_commands:
            return  # resent while it runs: its RES follows when it ends
        if key in self.finished_commands:  # our RES was lost: answer again, do not re-run
            self.send(self.message("RES", **self.finished_commands[key]), addr)
            return
        argv, env, timeout, refusal = self.command_plan(kind, message)
        if argv is None:
            log.warning("%s %s refused: %s", kind, key, refusal)
            self.finish_command(cmd_id, RC_REFUSED, refusal or "refused", addr)
            return
        if (self.command_children >= MAX_COMMANDS_RUNNING
                and len(self.waiting_commands) >= MAX_COMMANDS_WAITING):
            log.warning("%s %s ignored for now: %d commands running and %d waiting; the "
                        "server sends it again", kind, key, self.command_children,
                        len(self.waiting_commands))
            return
        self.running_commands.add(key)
        self.waiting_commands.append((cmd_id, argv, env, timeout, addr))
        self.start_waiting_commands()

    def start_waiting_commands(self) -> None:
        while self.waiting_commands and self.command_children < MAX_COMMANDS_RUNNING:
            cmd_id, argv, env, timeout, addr = self.waiting_commands.popleft()
            log.info("running %s: %s", cmd_id, " ".join(shlex.quote(a) for a in argv))
            self.command_children += 1
            threading.Thread(target=self.command_thread,
                             args=(cmd_id, argv, env, timeout, addr), daemon=True).start()

    def command_plan(self, kind: str, message: Dict[str, Any]) -> Tuple[
            Optional[List[str]], Optional[Dict[str, str]], float, Optional[str]]:
        """(argv, env, timeout, None) for a request we run, else (None, None, 0, why not)."""
        if kind == "UPD":
            if not self.config["update_command"]:
                return None, None, 0, "no update_command is configured on this host"
            env = dict(os.environ)
            if isinstance(message.get("version"), str):
                env["HEARTBEAT_VERSION"] = message["version"]
            return (list(self.config["update_command"]), env,
                    float(self.config["update_timeout"]), None)
        name = message.get("cmd")
        allowed = self.config["allowed_commands"]
        if not isinstance(name, str) or name not in allowed:
            return None, None, 0, "command {!r} is not in this host's allowed_commands".format(
                name)
        args = message.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            return None, None, 0, "args must be a list of strings"
        return list(allowed[name]) + args, None, float(self.config["command_timeout"]), None

    def command_thread(self, cmd_id: Any, argv: List[str], env: Optional[Dict[str, str]],
                       timeout: float, addr: Address) -> None:
        result = run_command(argv, timeout, env=env)
        parts = [result.stdout, result.stderr]
        if result.describe():
            parts.append("[{}]".format(result.describe()))
        output = "\n".join(p.rstrip("\n") for p in parts if p.strip())
        self.results.put(("res", (cmd_id, result.rc, output), addr))
        self.wake()

    def finish_command(self, cmd_id: Any, rc: int, output: str, addr: Address) -> None:
        key = str(cmd_id)
        self.running_commands.discard(key)
        fields = {"cmd_id": cmd_id, "rc": rc, "output": output_tail(output)}
        self.finished_commands[key] = fields
        while len(self.finished_commands) > 64:
            del self.finished_commands[next(iter(self.finished_commands))]
        log.info("RES %s: rc %d", key, rc)
        self.send(self.message("RES", **fields), addr)

    # Plugins

    def start_plugins(self) -> None:
        plugins = make_plugins(self.config, self.stop)
        log.info("plugins: %s", ", ".join("{} every {:g} s".format(p.name, p.interval)
                                          for p in plugins) or "none")
        with self.busy_lock:  # plugins starting together share their first PLG
            self.busy = sum(1 for p in plugins if p.delay == 0)
        epoch = time.monotonic()
        for plugin in plugins:
            threading.Thread(target=self.plugin_loop, args=(plugin, epoch), name=plugin.name,
                             daemon=True).start()

    def plugin_loop(self, plugin: Plugin, epoch: float) -> None:
        """Collect at ``epoch + delay + k * interval``: plugins with the same interval stay
        in step (and share PLGs); a collection longer than the interval skips ticks."""
        counted = plugin.delay == 0  # start_plugins counted it as busy already
        tick = epoch + plugin.delay
        with self.busy_lock:
            self.next_tick[plugin.name] = tick
        while not self.stop.wait(max(0.0, tick - time.monotonic())):
            if not counted:
                with self.busy_lock:
                    self.busy += 1
            try:
                data = plugin.collect()
            except Exception as e:  # a failing plugin reports its error, the others go on
                log.warning("plugin %s failed: %s: %s", plugin.name, type(e).__name__, e)
                data = {"error": "{}: {}".format(type(e).__name__, e)}
            self.results.put(("plugin", plugin.name, data))
            tick += plugin.interval
            late = time.monotonic() - tick
            if late > 0:
                tick += plugin.interval * (int(late // plugin.interval) + 1)
            with self.busy_lock:
                self.next_tick[plugin.name] = tick
                self.busy -= 1
            counted = False
            self.wake()
        if counted:
            with self.busy_lock:
                self.busy -= 1

    def wake(self) -> None:
        # OSError: the pipe is full (the main loop is awake anyway) or closed (we stop).
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"x")

    def drain_results(self, now: float) -> None:
        while True:
            try:
                kind, key, value = self.results.get_nowait()
            except queue.Empty:
                return
            if kind == "plugin":
                if self.pending_since is None:
                    self.pending_since = now
                self.pending[key] = value
            elif kind == "lookup":
                self.looking_up.discard(key)
                self.resolved(key, value)
            else:
                cmd_id, rc, output = key
                self.command_children -= 1
                self.finish_command(cmd_id, rc, output, value)
                self.start_waiting_commands()

    def plugins_due(self) -> Optional[float]:
        """When pending plugin data goes: once no plugin runs (after SETTLE, so plugins
        woken for the same tick have started), at the latest batch_delay after the first."""
        if self.pending_since is None:
            return None
        now = time.monotonic()
        with self.busy_lock:  # a plugin whose tick has come is busy, started or not
            idle = self.busy == 0 and all(tick > now for tick in self.next_tick.values())
        return self.pending_since + min(SETTLE if idle else float(self.config["batch_delay"]),
                                        float(self.config["batch_delay"]))

    # Main loop

    def run(self, boot: bool = False) -> None:
        """Send until ``stop`` is set (SIGTERM, SIGINT, SIGHUP)."""
        self.resolve_servers()
        if boot:
            self.send_boot()
        self.start_plugins()
        next_beat = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                self.look_up_in_background()
                self.send_heartbeat()
                next_beat += self.interval
                if next_beat <= now:  # suspended or very late: no burst of heartbeats
                    next_beat = now + self.interval
            self.drain_results(now)
            due = self.plugins_due()
            if due is not None and not any(self.addresses.values()):
                due = None  # kept (latest per plugin) until a server resolves
            elif due is not None and due <= now:
                self.send_plugins()
                due = None
            wake_at = next_beat if due is None else min(next_beat, due)
            readable, _, _ = select.select([self.wake_r, *list(self.sockets.values())], [], [],
                                           max(0.0, wake_at - now))
            for source in readable:
                if source == self.wake_r:
                    try:
                        while os.read(self.wake_r, 4096):
                            pass
                    except OSError:
                        pass
                else:
                    self.read_socket(source)

    def shutdown(self, shut: bool = False) -> None:
        """Stop the workers and kill their children; send SHUT first with ``shut``."""
        self.stop.set()
        kill_live_processes()
        if shut:
            self.send(self.message("SHUT"))
        for sock in self.sockets.values():
            sock.close()
        self.sockets = {}
        for fd in (self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def request_stop(self, signum: int = 0, frame: Any = None) -> None:
        """Signal handler: end the main loop at its next turn."""
        self.stop.set()
        self.wake()


# ---------------------------------------------------------------------------
# Daemon and logging
# ---------------------------------------------------------------------------


class SyslogHandler(logging.Handler):
    """Log records to syslog, facility LOG_DAEMON (with -d)."""

    def __init__(self) -> None:
        super().__init__()
        import syslog  # Unix only: imported where it is needed

        self.syslog = syslog
        syslog.openlog(CLIENT, syslog.LOG_PID, syslog.LOG_DAEMON)
        self.priorities = {logging.DEBUG: syslog.LOG_DEBUG, logging.INFO: syslog.LOG_INFO,
                           logging.WARNING: syslog.LOG_WARNING, logging.ERROR: syslog.LOG_ERR,
                           logging.CRITICAL: syslog.LOG_CRIT}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.syslog.syslog(self.priorities.get(record.levelno, self.syslog.LOG_INFO),
                               self.format(record))
        except Exception:  # logging must never stop the client
            self.handleError(record)


def setup_logging(verbose: bool, use_syslog: bool) -> None:
    for handler in list(log.handlers):
        log.removeHandler(handler)
    if use_syslog:
        handler: logging.Handler = SyslogHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s " + CLIENT +
                                               " %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def running_pid(pidfile: str) -> Optional[int]:
    """The pid in ``pidfile`` if that process is alive."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def daemonize(pidfile: Optional[str]) -> None:
    """Detach: fork, setsid, fork again, stdio to /dev/null; the daemon writes ``pidfile``."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(0o022)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    if pidfile:
        temp = "{}.{}".format(pidfile, os.getpid())
        with open(temp, "w") as f:
            f.write("{}\n".format(os.getpid()))
        os.replace(temp, pidfile)


def remove_pidfile(pidfile: Optional[str]) -> None:
    if pidfile and running_pid(pidfile) == os.getpid():
        with contextlib.suppress(OSError):
            os.unlink(pidfile)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    words = list(sys.argv[1:] if argv is None else argv)
    command = []  # type: List[str]
    if "--" in words:  # --job NAME SERVER -- command args
        at = words.index("--")
        words, command = words[:at], words[at + 1:]
    parser = argparse.ArgumentParser(
        prog="hbc_mini.py",
        description="Single-file heartbeat client: heartbeats, plugin data and command "
                    "results over UDP to one or more heartbeat servers.")
    parser.add_argument("servers", nargs="+", metavar="SERVER",
                        help="server host name or address (every IPv4 and IPv6 address of "
                             "it gets every message)")
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="JSON config (default: ~/.hbc.json if it exists)")
    parser.add_argument("-b", "--boot", action="store_true",
                        help="send BOOT on start and SHUT on exit")
    parser.add_argument("-m", "--message", metavar="TEXT", help="send one MSG and exit")
    parser.add_argument("--level", choices=MSG_LEVELS, default="info",
                        help="level of the -m message (default: info)")
    parser.add_argument("--job", metavar="NAME",
                        help="run the command after -- as a run of the server's cron job "
                             "NAME: JOB start, exit code and the end of its output; exits "
                             "with the command's code")
    parser.add_argument("--uuid", help="with --job: the job's ping UUID (needed when this "
                                       "host is not the job's host)")
    parser.add_argument("-d", "--daemon", action="store_true",
                        help="detach and log to syslog (LOG_DAEMON)")
    parser.add_argument("--pidfile", metavar="FILE", help="with -d: the daemon's pid file")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every datagram sent and received")
    parser.add_argument("--version", action="version", version="%(prog)s " + VERSION)
    args = parser.parse_args(words)
    args.command = command
    return args


def fail(text: str, code: int) -> int:
    sys.stderr.write("{}: {}\n".format(CLIENT, text))
    return code


def send_message(client: Client, text: str, level: str) -> int:
    """-m: one MSG to every server address; 0 once it left."""
    errors = client.resolve_servers(warn=False)
    if errors:
        return fail(errors[0], EXIT_USAGE)
    sent = client.send(client.message("MSG", text=text, level=level))
    client.shutdown()
    if not sent:
        return fail("could not send to any address of " + ", ".join(client.servers), 1)
    return 0


JOB_LOG = 4096
"""Characters of a job's output its JOB datagram carries: the end (protocol's MAX_OUTPUT)."""


def run_job(client: Client, job: str, command: List[str], uuid: Optional[str]) -> int:
    """--job: JOB start, the command (its output passed through), JOB exit with its exit
    code and the end of its output; the command's own exit code."""
    if not command:
        return fail("--job needs the command to run after --", EXIT_USAGE)
    errors = client.resolve_servers(warn=False)
    if errors:
        return fail(errors[0], EXIT_USAGE)
    extra = {"uuid": uuid} if uuid else {}
    if not client.send(client.message("JOB", job=job, ping="start", **extra)):
        sys.stderr.write("{}: job {}: the start ping could not be sent\n".format(CLIENT, job))
    tail = b""
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as e:
        tail = "{}: cannot run {}: {}\n".format(CLIENT, command[0], e.strerror or e).encode()
        sys.stderr.write(tail.decode())
        code = 127 if isinstance(e, FileNotFoundError) else 126
    else:
        out = getattr(sys.stdout, "buffer", None)
        assert process.stdout is not None
        while True:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            if out is not None:
                out.write(chunk)
                out.flush()
            tail = (tail + chunk)[-4 * JOB_LOG:]
        status = process.wait()
        code = 128 - status if status < 0 else status
    log_text = tail.decode("utf-8", "replace")[-JOB_LOG:]
    sent = client.send(client.message("JOB", job=job, ping="exit", rc=min(code, 255),
                                      log=log_text, **extra))
    client.shutdown()
    if not sent:
        sys.stderr.write("{}: job {}: the exit ping could not be sent\n".format(CLIENT, job))
    return code


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose, False)
    try:
        config, source = load_config(args.config)
    except ConfigError as e:
        return fail("config error: {}".format(e), EXIT_CONFIG)
    client = Client(config, args.servers)
    if args.job is not None:
        return run_job(client, args.job, args.command, args.uuid)
    if args.command:
        return fail("a command after -- goes with --job only", EXIT_USAGE)
    if args.message is not None:
        return send_message(client, args.message, args.level)
    if args.daemon:
        if args.pidfile:
            args.pidfile = os.path.abspath(args.pidfile)
            pid = running_pid(args.pidfile)
            if pid:
                return fail("already running as pid {} ({})".format(pid, args.pidfile), 1)
        daemonize(args.pidfile)
        setup_logging(args.verbose, True)
    log.info("hbc_mini %s: %s -> %s port %d every %g s (config %s)", VERSION, config["name"],
             ", ".join(args.servers), client.port, client.interval, source)
    signal.signal(signal.SIGTERM, client.request_stop)
    signal.signal(signal.SIGINT, client.request_stop)
    signal.signal(signal.SIGHUP, client.request_stop)
    try:
        client.run(boot=args.boot)
    finally:
        client.shutdown(shut=args.boot)
        if args.daemon:
            remove_pidfile(args.pidfile)
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
