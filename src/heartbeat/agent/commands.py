"""Answering the server's ``CMD`` and ``UPD``: allow-listed programs only, never a shell.

A ``CMD`` names a command; only names in the agent's own ``allowed_commands``
run, as the configured argv plus the server's ``args`` as separate arguments.
``UPD`` runs ``update_command``. Each ends in one ``RES`` with the exit code and
the output's last 4 KiB. The server resends a request until it sees the RES,
so a repeat of a running request is ignored and a repeat of a finished one is
answered again from memory instead of running twice.
"""

from __future__ import annotations

import os
import shlex
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.logger import Logger

from heartbeat.agent.process import ProcessResult, run_process
from heartbeat.protocol import MAX_OUTPUT

__all__ = ["NOT_ALLOWED", "CommandRunner", "output_tail"]

log = Logger()
NOT_ALLOWED = 126
REMEMBERED = 64
MAX_RUNNING = 4
"""Children run at once; a flood of CMDs waits its turn instead of forking hundreds."""
MAX_WAITING = 64
"""Requests waiting for a slot; more are ignored (the server resends after each HTB)."""

Reply = Callable[[dict[str, Any]], None]


def output_tail(result: ProcessResult, limit: int = MAX_OUTPUT) -> str:
    """stdout then stderr, with a note when the child did not simply exit, cut to the end."""
    parts = [result.text("stdout"), result.text("stderr")]
    if result.error is not None or result.timed_out or result.signal is not None:
        parts.append(f"[{result.describe()}]")
    text = "\n".join(p.rstrip("\n") for p in parts if p.strip())
    if len(text) > limit:
        text = "..." + text[-(limit - 3):]
    return text


class CommandRunner:
    """Runs allow-listed CMDs and the update command, answering each with a RES."""

    def __init__(
        self,
        reactor: Any,
        allowed: Mapping[str, Sequence[str]],
        update_command: Sequence[str] | str | None,
        command_timeout: float,
        update_timeout: float,
    ) -> None:
        self.reactor = reactor
        self.allowed = {name: list(argv) for name, argv in allowed.items()}
        self.update_command = shlex.split(update_command) \
            if isinstance(update_command, str) else \
            (list(update_command) if update_command is not None else None)
        self.command_timeout = command_timeout
        self.update_timeout = update_timeout
        self.running: set[str] = set()
        """cmd_ids started or waiting for a slot: their resends are ignored."""
        self.waiting: deque[tuple[str, list[str], float, dict[str, str] | None, Reply, Any]] = \
            deque()
        self.children = 0
        self.finished: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def handle(self, message: Mapping[str, Any], reply: Reply) -> None:
        """React to one decoded CMD or UPD; ``reply`` sends a RES to where it came from."""
        cmd_id = message["cmd_id"]
        key = str(cmd_id)
        if key in self.running:
            return
        if key in self.finished:
            reply(self.finished[key])
            return
        if message["ID"] == "UPD":
            if self.update_command is None:
                self._answer(key, reply, cmd_id, NOT_ALLOWED,
                             "no update_command is configured on this host")
                return
            argv, timeout = self.update_command, self.update_timeout
            env = dict(os.environ)
            if isinstance(message.get("version"), str):
                env["HEARTBEAT_VERSION"] = message["version"]
        else:
            name = message["cmd"]
            if name not in self.allowed:
                log.warn("command {cmd!r} ({cmd_id}) refused: not in allowed_commands",
                         cmd=name, cmd_id=key)
                self._answer(key, reply, cmd_id, NOT_ALLOWED,
                             f"command {name!r} is not in this host's allowed_commands")
                return
            argv = [*self.allowed[name], *message.get("args", [])]
            timeout, env = self.command_timeout, None
        if self.children >= MAX_RUNNING and len(self.waiting) >= MAX_WAITING:
            log.warn("{kind} {cmd_id} ignored for now: {n} commands running and {m} waiting; "
                     "the server sends it again", kind=message["ID"], cmd_id=key,
                     n=self.children, m=len(self.waiting))
            return
        self.running.add(key)
        self.waiting.append((key, argv, timeout, env, reply, cmd_id))
        self._start_waiting()

    def _start_waiting(self) -> None:
        while self.waiting and self.children < MAX_RUNNING:
            key, argv, timeout, env, reply, cmd_id = self.waiting.popleft()
            log.info("running {cmd_id}: {argv}", cmd_id=key, argv=argv)
            self.children += 1
            run_process(self.reactor, argv, timeout, env=env).addCallback(
                self._done, key, reply, cmd_id).addErrback(self._crashed, key)

    def _crashed(self, failure: Any, key: str) -> None:
        log.failure("command {cmd_id} failed", failure, cmd_id=key)

    def _done(self, result: ProcessResult, key: str, reply: Reply, cmd_id: Any) -> None:
        self.children -= 1
        self.running.discard(key)
        self._start_waiting()
        log.info("command {cmd_id} ended: rc {rc}", cmd_id=key, rc=result.rc)
        self._answer(key, reply, cmd_id, result.rc, output_tail(result))

    def _answer(self, key: str, reply: Reply, cmd_id: Any, rc: int, output: str) -> None:
        res = {"ID": "RES", "cmd_id": cmd_id, "rc": rc, "output": output}
        self.finished[key] = res
        while len(self.finished) > REMEMBERED:
            self.finished.popitem(last=False)
        reply(res)
