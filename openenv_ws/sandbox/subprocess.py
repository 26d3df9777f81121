"""The subprocess backend: one child process per session runs the sandbox worker.

Frames travel over a socketpair the child inherits. The child is in its own process
group, so a crash, a kill or a hang of the environment touches only its session: the
server sees end-of-stream, reads the exit status, and reports it as a typed error.
A server killed outright leaves no orphans either: the child sees end-of-stream and exits.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

import anyio
import anyio.abc

from ..registry import EnvSpec
from .base import Backend, Sandbox, new_session_id
from .channel import FrameChannel
from .relay import RelaySandbox, exit_reason

__all__ = ["SubprocessBackend", "SubprocessSandbox", "exit_reason"]


class SubprocessSandbox(RelaySandbox):
    def __init__(self, process: anyio.abc.Process, channel: FrameChannel) -> None:
        super().__init__(channel)
        self._process = process
        self.id = f"pid:{process.pid}"

    async def _reason(self) -> str:
        with anyio.move_on_after(2):
            await self._process.wait()
        return exit_reason(self._process.returncode)

    def _exited(self) -> bool:
        return self._process.returncode is not None

    async def _wait_exited(self) -> None:
        await self._process.wait()

    async def _stop(self) -> None:
        if self._process.returncode is None:
            self._process.kill()
            await self._process.wait()

    async def wait_exit(self) -> str:
        await self._process.wait()
        return exit_reason(self._process.returncode)


class SubprocessBackend(Backend):
    name = "subprocess"

    def __init__(self, start_timeout: float = 30.0) -> None:
        self.start_timeout = start_timeout

    async def open(self, spec: EnvSpec, options: dict[str, Any]) -> Sandbox:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        try:
            process = await anyio.open_process(
                [sys.executable, "-m", "openenv_ws.sandbox.worker", "--fd", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=None,
                env=env,
                start_new_session=True,
            )
        finally:
            child.close()
        stream = await anyio.abc.SocketStream.from_socket(parent)
        sandbox = SubprocessSandbox(process, FrameChannel(stream, self.max_frame_bytes))
        sandbox.session_id = new_session_id()
        await sandbox.handshake(spec.target, options, self.start_timeout)
        return sandbox
