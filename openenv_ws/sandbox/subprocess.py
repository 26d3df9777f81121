"""The subprocess backend: one child process per session runs the sandbox worker.

Frames travel over a socketpair the child inherits. The child is in its own process
group, so a crash, a kill or a hang of the environment touches only its session: the
server sees end-of-stream, reads the exit status, and reports it as a typed error.

What the worker gets and what it leaves:

- an environment built from an allow-list (:data:`SANDBOX_ENV` and the ``pass_env`` option),
  never the server's own: a token or a cloud key in the server's environment is not inherited;
- its stdout and stderr go to the server's log framed and bounded (``output.py``), never raw;
- it takes hold of everything its environment starts (``descendants.py``): it is killed when the
  server dies, even by ``kill -9``, and kills every process the session started (daemons too)
  when it ends; it is stopped with SIGTERM (then SIGKILL) so it can;
- where the server may (root, a writable cgroup hierarchy), each session also has a cgroup of its
  own (``cgroups.py``), killed whole on close, whatever happened to the worker.

By default a session's worker is forked from its environment's fork-server
(:mod:`.forkserver`: Python and the environment already imported), which is spawned with the same
environment; the forked worker gets the same output relay, cgroup and hold on its processes as a
spawned one. ``forkserver=False`` spawns a fresh interpreter per session instead.

It is not a security boundary: the environment and the agent's code run as the server's uid and
can read its memory and files. Untrusted code belongs in the Docker backend (``docs/security.md``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from ..registry import EnvSpec
from .base import Backend, Sandbox, new_session_id
from .cgroups import SessionCgroups
from .channel import FrameChannel
from .forkserver import ForkedChild, ForkServer
from .output import OutputLimits, relay_output
from .relay import RelaySandbox, exit_reason

__all__ = ["SANDBOX_ENV", "SubprocessBackend", "SubprocessSandbox", "exit_reason"]

SANDBOX_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
"""The server's variables a worker gets (when set), besides ``PYTHONPATH``; ``pass_env`` adds names."""
STOP_GRACE = 1.0
"""Seconds a worker told to stop (SIGTERM) has to kill its environment's processes before SIGKILL."""
OUTPUT_DRAIN = 0.5
"""Seconds the last lines of a stopped worker's output may take to reach the log."""


class SubprocessSandbox(RelaySandbox):
    """A worker spawned (an ``anyio`` process) or forked (a :class:`ForkedChild`, which behaves as one)."""

    def __init__(
        self,
        process: anyio.abc.Process | ForkedChild,
        channel: FrameChannel,
        cgroups: SessionCgroups | None,
        cgroup: Path | None,
    ) -> None:
        super().__init__(channel)
        self._process = process
        self._cgroups = cgroups
        self._cgroup = cgroup
        self._output = anyio.CancelScope()
        self._output_done = anyio.Event()
        self.id = f"pid:{process.pid}"

    async def relay_output(self, session_id: str, limits: OutputLimits) -> None:
        """Log the worker's output until it ends (or the sandbox is stopped); run by the backend."""
        assert self._process.stdout is not None
        try:
            with self._output:
                await relay_output(self._process.stdout, session_id, limits)
        finally:
            self._output_done.set()

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
            self._process.terminate()  # the worker kills its environment's processes, then exits
            with anyio.move_on_after(STOP_GRACE):
                await self._process.wait()
            if self._process.returncode is None:
                self._process.kill()
                await self._process.wait()
        if self._cgroups is not None and self._cgroup is not None:
            await anyio.to_thread.run_sync(self._cgroups.kill, self._cgroup)
        with anyio.move_on_after(OUTPUT_DRAIN):
            await self._output_done.wait()
        self._output.cancel()

    async def wait_exit(self) -> str:
        await self._process.wait()
        return exit_reason(self._process.returncode)


class SubprocessBackend(Backend):
    """Sandboxes in child processes.

    ``pass_env`` names more of the server's environment variables the worker gets (comma-separated);
    ``log_line_chars`` and ``log_bytes`` bound what a worker's output puts in the server's log;
    ``cgroups`` (default on) puts each session in a cgroup where the server may make one;
    ``forkserver`` (default on) forks each worker from a per-environment fork-server.
    """

    name = "subprocess"

    def __init__(
        self,
        start_timeout: float = 30.0,
        pass_env: str | tuple[str, ...] = (),
        log_line_chars: int = OutputLimits.line_chars,
        log_bytes: int = OutputLimits.max_bytes,
        cgroups: bool = True,
        forkserver: bool = True,
    ) -> None:
        self.start_timeout = start_timeout
        names = pass_env.split(",") if isinstance(pass_env, str) else pass_env
        self.pass_env = tuple(name.strip() for name in names if name.strip())
        self.output_limits = OutputLimits(log_line_chars, log_bytes)
        self.use_cgroups = cgroups
        self.cgroups: SessionCgroups | None = None
        self.use_forkserver = bool(forkserver)
        self._forkservers: dict[str, ForkServer] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(
        self, specs: Sequence[EnvSpec], *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        if self.use_cgroups and sys.platform.startswith("linux"):
            self.cgroups = await anyio.to_thread.run_sync(SessionCgroups.find)
            if self.cgroups is not None:
                await anyio.to_thread.run_sync(self.cgroups.sweep)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for spec in specs if self.use_forkserver else ():
                    server = self._forkservers[spec.target] = ForkServer(spec.target, self._spawn)
                    await tg.start(server.run)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._tg = None
            if self.cgroups is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self.cgroups.close)

    def environ(self) -> dict[str, str]:
        """The worker's environment: the allow-listed variables of the server's, and the import path."""
        env = {name: os.environ[name] for name in (*SANDBOX_ENV, *self.pass_env) if name in os.environ}
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        return env

    async def _spawn(self, module_args: list[str], pass_fds: tuple[int, ...]) -> anyio.abc.Process:
        """``python -m <module_args>``: its own session, the allow-listed environment, output to the log."""
        return await anyio.open_process(
            [sys.executable, "-m", *module_args],
            pass_fds=pass_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.environ(),
            start_new_session=True,
        )

    async def open(self, spec: EnvSpec, options: dict[str, Any]) -> Sandbox:
        if self._tg is None:
            raise RuntimeError("the subprocess backend is not running (create_app starts it with the server)")
        session_id = new_session_id(self.node)
        cgroup = await anyio.to_thread.run_sync(self.cgroups.create, session_id) if self.cgroups else None
        argv = ["openenv_ws.sandbox.worker", "--parent", str(os.getpid())]
        if cgroup is not None:
            argv += ["--cgroup", str(cgroup)]
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        process: anyio.abc.Process | ForkedChild | None = None
        try:
            server = self._forkservers.get(spec.target)
            if server is not None:  # None from fork(): the fork-server is down, a fresh interpreter
                process = await server.fork(child, cgroup)
            if process is None:
                process = await self._spawn([*argv, "--fd", str(child.fileno())], (child.fileno(),))
        except BaseException:
            parent.close()
            if cgroup is not None and self.cgroups is not None:
                await anyio.to_thread.run_sync(self.cgroups.kill, cgroup)
            raise
        finally:
            child.close()
        stream = await anyio.abc.SocketStream.from_socket(parent)
        sandbox = SubprocessSandbox(process, FrameChannel(stream, self.max_frame_bytes), self.cgroups, cgroup)
        sandbox.session_id = session_id
        self._tg.start_soon(sandbox.relay_output, session_id, self.output_limits)
        await sandbox.handshake(spec.target, options, self.start_timeout)
        return sandbox

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"name": self.name, "cgroups": self.cgroups.kind if self.cgroups else None}
        if self.use_forkserver:
            described["forkservers"] = {target: fs.describe() for target, fs in self._forkservers.items()}
        return described
