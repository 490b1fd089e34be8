"""The real ``twistd -n heartbeat-agent`` process, for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support import TWISTD, stop_process

HEARTBEAT = str(Path(sys.executable).with_name("heartbeat"))


class AgentProcess:
    """A ``twistd -n heartbeat-agent`` subprocess with a config file in ``directory``."""

    def __init__(self, directory: Path, servers: list[str], config: dict[str, Any],
                 flags: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.servers = servers
        self.config = config
        self.flags = flags
        self.config_path = directory / "agent.yaml"
        self.log_path = directory / "agent.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        self.config_path.write_text(yaml.safe_dump(self.config))
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [TWISTD, "--nodaemon", "--pidfile=", "heartbeat-agent", "-c",
             str(self.config_path), *self.flags, *self.servers],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self.directory,
            env={**os.environ, "HOME": str(self.directory)})
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        if self.process is None:
            return None
        code = stop_process(self.process)
        self.process = None
        self._log.close()
        return code
