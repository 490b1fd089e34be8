"""Shared test support: the real ``twistd -n heartbeat`` process on loopback.

Integration tests start the server exactly as a user does, with a config file
in a temporary directory, free loopback ports, and talk to it with plain
sockets and HTTP from the test process.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

TWISTD = str(Path(sys.executable).with_name("twistd"))
HTTP_TIMEOUT = 30.0  # a bound, not a speed: a loaded machine has taken over 10 s to answer
START_TIMEOUT = 60.0  # generous: on this loaded machine a twistd has taken over 15 s to answer


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both TCP and UDP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(socket.AF_INET, other) as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def _polls(predicate: Any, timeout: float) -> Iterator[Any]:
    """``predicate()`` once per step: its value (false ones too) until it is true;
    AssertionError once ``timeout`` seconds have passed without."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        yield value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


def wait_until(predicate: Any, timeout: float = 10.0, step: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns a true value (for real processes only)."""
    for value in _polls(predicate, timeout):
        if value:
            return value
        time.sleep(step)
    return None


async def eventually(predicate: Any, timeout: float = 20.0, step: float = 0.05) -> Any:
    """:func:`wait_until` without blocking the reactor (a test's peers run on it)."""
    from twisted.internet import reactor, task

    for value in _polls(predicate, timeout):
        if value:
            return value
        await task.deferLater(reactor, step)
    return None


def encode(message: dict[str, Any], compress: bool | None = None) -> bytes:
    text = json.dumps(message).encode()
    if compress or (compress is None and len(text) > 512):
        return zlib.compress(text)
    return text


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Send ``sig``, wait up to 15 s (then SIGKILL), and return the exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


class ServerProcess:
    """A ``twistd -n heartbeat`` subprocess with its own ports, state and journal."""

    def __init__(self, directory: Path, **overrides: Any) -> None:
        self.directory = directory
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.http_port = free_port()
        self.ws_port = free_port()
        self.config: dict[str, Any] = {
            "hb_host": "127.0.0.1",
            "hb_port": self.udp_port,
            "hbd_host": "127.0.0.1",
            "hbd_port": self.http_port,
            "ws_port": self.ws_port,
            "state_dir": str(directory / "state"),
            "journal_dir": str(directory / "journal"),
            "store_flush_interval": 0.1,
            "journal_flush_interval": 0.1,
            "monitor_interval": 0.2,
        }
        self.config.update(overrides)
        self.udp_port = self.config["hb_port"]
        self.http_port = self.config["hbd_port"]
        self.ws_port = self.config["ws_port"]
        self.config_path = directory / "heartbeat.yaml"
        self.log_path = directory / "twistd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config))

    def start(self) -> ServerProcess:
        self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [TWISTD, "--nodaemon", "--pidfile=", "heartbeat", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.directory,
            env={**os.environ, "HOME": str(self.directory)},
        )
        self._log = log
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}:\n{self.log()}")
            try:
                self.get("/api/0")  # public: answers with or without users configured
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"server did not answer within {START_TIMEOUT}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.process is None:
            return None
        code = stop_process(self.process, sig)
        self.process = None
        self._log.close()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    # UDP
    @property
    def socket(self) -> socket.socket:
        if self._socket is None:
            self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._socket.bind(("127.0.0.1", 0))
            self._socket.settimeout(5)
        return self._socket

    def send(self, message: dict[str, Any] | bytes, compress: bool | None = None) -> None:
        data = message if isinstance(message, bytes) else encode(message, compress)
        self.socket.sendto(data, ("127.0.0.1", self.udp_port))

    def receive(self) -> dict[str, Any]:
        data, _ = self.socket.recvfrom(65535)
        try:
            return json.loads(data)
        except ValueError:
            return json.loads(zlib.decompress(data))

    # HTTP
    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method,
            headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as e:
            raw = e.read()
            status = e.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise AssertionError(f"GET {path} -> {status}: {body}")
        return body

    def host(self, name: str) -> dict[str, Any] | None:
        status, body = self.request("GET", f"/api/0/hosts/{name}")
        return body if status == 200 else None

    def journal_lines(self) -> Iterator[dict[str, Any]]:
        directory = Path(self.config["journal_dir"])
        for path in sorted(directory.glob("messages.journal*"), reverse=True):
            for line in path.read_text().splitlines():
                if line:
                    yield json.loads(line)


class WebSocketClient:
    """A minimal blocking WebSocket client for the feed: handshake and text frames only."""

    def __init__(self, port: int, path: str = "/ws", headers: dict[str, str] | None = None,
                 timeout: float = 5.0) -> None:
        import base64

        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.buffer = b""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13",
                 *(f"{k}: {v}" for k, v in (headers or {}).items()), "", ""]
        self.sock.sendall("\r\n".join(lines).encode())
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].decode()
        self.status = int(status_line.split()[1]) if status_line else 0
        self.reason = status_line.split(" ", 2)[2] if status_line.count(" ") >= 2 else ""

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def frame(self) -> tuple[int, bytes]:
        """The next (opcode, payload) from the server (server frames are unmasked)."""
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(self._read(2), "big")
        elif length == 127:
            length = int.from_bytes(self._read(8), "big")
        return first & 0x0F, self._read(length)

    def receive(self) -> dict[str, Any]:
        """The next JSON text message, skipping pings."""
        while True:
            opcode, payload = self.frame()
            if opcode == 1:
                return json.loads(payload)
            if opcode == 8:
                code = int.from_bytes(payload[:2], "big") if payload else None
                raise ConnectionError(f"closed by the server with code {code}")

    def close(self) -> None:
        self.sock.close()


@contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``1m``) mounted at ``where``, for a disk that fills up; the test
    is skipped unless it runs as root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill_disk(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte; the file that did it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return filler
