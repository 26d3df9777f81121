"""The subprocess backend: one child process per session runs the sandbox worker.

Frames travel over a socketpair the child inherits. The child is in its own process
group, so a crash, a kill or a hang of the environment touches only its session: the
server sees end-of-stream, reads the exit status, and reports it as a typed error.
A server killed outright leaves no orphans either: the child sees end-of-stream and exits.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Any

import anyio
import anyio.abc

from ..errors import OpenEnvWSError, SandboxCrashedError, SandboxStartError
from ..protocol import Close, Error, Event, Open, Opened, Reply, Request, decode_server
from ..registry import EnvSpec
from .base import Backend, Sandbox, new_session_id
from .channel import FrameChannel
from .runner import EventSink

_GONE = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)


def exit_reason(returncode: int | None) -> str:
    if returncode is None:
        return "the sandbox stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"sandbox process killed by signal {name}"
    return f"sandbox process exited with code {returncode}"


class SubprocessSandbox(Sandbox):
    isolated = True

    def __init__(self, process: anyio.abc.Process, channel: FrameChannel) -> None:
        self._process = process
        self._channel = channel
        self._closing = False
        self.id = f"pid:{process.pid}"

    async def _reason(self) -> str:
        with anyio.move_on_after(2):
            await self._process.wait()
        return exit_reason(self._process.returncode)

    async def request(self, frame: Request, sink: EventSink) -> Reply:
        try:
            await self._channel.send(frame)
            while True:
                reply = decode_server(await self._channel.receive())
                if isinstance(reply, Event):
                    await sink(reply)
                    continue
                return reply  # type: ignore[return-value]
        except _GONE:
            raise SandboxCrashedError(await self._reason(), fatal=True) from None

    async def wait_exit(self) -> str:
        await self._process.wait()
        return exit_reason(self._process.returncode)

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        with anyio.CancelScope(shield=True):
            if self._process.returncode is None:
                # Let the env close itself; past a short grace period, kill.
                with anyio.move_on_after(2):
                    try:
                        await self._channel.send(Close())
                        while True:
                            await self._channel.receive()
                    except _GONE:
                        pass
                    await self._process.wait()
            if self._process.returncode is None:
                self._process.kill()
                await self._process.wait()
            await self._channel.aclose()


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
        sandbox = SubprocessSandbox(process, FrameChannel(await anyio.abc.SocketStream.from_socket(parent)))
        sandbox.session_id = new_session_id()
        try:
            with anyio.fail_after(self.start_timeout):
                await sandbox._channel.send(Open(env=spec.target, options=options))
                reply = decode_server(await sandbox._channel.receive())
        except TimeoutError:
            await sandbox.close()
            raise SandboxStartError(f"sandbox did not start within {self.start_timeout}s", fatal=True) from None
        except _GONE:
            await sandbox.close()
            raise SandboxStartError(await sandbox._reason(), fatal=True) from None
        if isinstance(reply, Error):
            await sandbox.close()
            raise OpenEnvWSError(reply.message, code=reply.code, path=reply.path, fatal=True)
        if not isinstance(reply, Opened):
            await sandbox.close()
            raise SandboxStartError(f"sandbox answered {type(reply).__name__} to open", fatal=True)
        return sandbox
