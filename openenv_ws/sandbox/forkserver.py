"""The subprocess backend's fork-server: a session's worker costs a fork, not a Python start-up.

A fresh worker process spends ~0.3 s of CPU starting Python and importing the package and the
environment, so 500 sessions opened at once would take minutes on two cores. Instead, one
parent per environment is started once (``python -m openenv_ws.sandbox.forkserver``), with the
worker and the environment's module already imported, and forks a worker per session.

The parent is single-threaded and runs no event loop (so forking is safe): it waits on its
control socket, a ``SOCK_SEQPACKET`` pair with the server. A request carries the session's
socket (``SCM_RIGHTS``); the parent forks, answers with the child's pid, and reports each
child's exit status when it reaps it. The child becomes what a spawned worker is: its own
session and process group (so closing the session kills its whole tree), the environment and
limits the parent was spawned with, the parent's stdout and stderr, and it dies with its
parent (``PR_SET_PDEATHSIG``), which in turn dies with the server. Then it serves the
session's socket exactly as ``python -m openenv_ws.sandbox.worker --fd N`` would.

On the server, :class:`ForkServer` keeps the parent running: if it dies (killed, crashed), the
sessions it forked end with a typed error, opens meanwhile fall back to spawning, and it is
started again.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import logging
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from .output import OutputLimits, relay_output

log = logging.getLogger("openenv_ws.sandbox")

RESTART_DELAY = (0.2, 10.0)
"""First and longest pause before starting a fork-server that died again."""
FORK_TIMEOUT = 10.0
"""How long an open waits for the fork-server to answer before it spawns a worker instead."""
_PR_SET_PDEATHSIG = 1
_MESSAGE = 4096

# ---------------------------------------------------------------- the parent process


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent ends (Linux; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _child(
    fds: list[int], cgroup: str | None, parent: int, control: socket.socket, selector: selectors.BaseSelector
) -> None:
    """In the forked child: become what a spawned worker is, serve the session, never return."""
    code = 0
    try:
        os.setsid()
        session_fd, output_fd = fds
        os.dup2(output_fd, 1)  # its output goes to the server's log, as a spawned worker's does
        os.dup2(output_fd, 2)
        os.close(output_fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        selector.close()
        control.close()
        from .cgroups import join
        from .descendants import hold, kill_descendants
        from .worker import serve_fd

        if cgroup:
            join(cgroup)
        hold(parent)  # dies (sweeping its processes) with the fork-server, which dies with the server
        try:
            anyio.run(serve_fd, session_fd)
        finally:
            kill_descendants()
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    control.sendall(json.dumps(message).encode())


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(control, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def serve_forks(control: socket.socket, target: str) -> None:
    """The parent's loop: fork a worker per request until the server closes the control socket."""
    from . import worker  # noqa: F401  (imported once here, shared by every child)
    from .worker import preload

    preload(target)
    gc.collect()
    gc.freeze()  # what exists now is shared with every child; the collector will not touch (copy) it
    _die_with_parent()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd is written
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ, "control")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    me = os.getpid()
    while True:
        for key, _ in selector.select():
            if key.data == "child":
                os.read(wake_r, 512)
                _reap(control)
                continue
            try:
                data, fds, _flags, _addr = socket.recv_fds(control, _MESSAGE, 2)
            except InterruptedError:
                continue
            if not data:
                return  # the server is gone
            request = json.loads(data)
            if len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                _send(control, {"id": request["id"], "error": "a request needs the session's socket and an output"})
                continue
            try:
                pid = os.fork()
            except OSError as exc:
                pid = -1
                _send(control, {"id": request["id"], "error": f"fork failed: {exc}"})
            if pid == 0:
                _child(fds, request.get("cgroup"), me, control, selector)
            for fd in fds:
                os.close(fd)
            if pid > 0:
                _send(control, {"id": request["id"], "pid": pid})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="openenv_ws.sandbox.forkserver")
    parser.add_argument("--control", type=int, required=True, help="an inherited SOCK_SEQPACKET socket")
    parser.add_argument("--target", required=True, help="the environment's module:Class, imported ahead")
    args = parser.parse_args(argv)
    serve_forks(socket.socket(fileno=args.control), args.target)
    sys.exit(0)


# ---------------------------------------------------------------- the server's side


class ForkedChild:
    """A forked worker, seen as a process (what :class:`~.subprocess.SubprocessSandbox` drives).

    Its exit status comes from the fork-server, its parent; ``stdout`` is its output (stdout and
    stderr), a socket the server reads like a spawned worker's pipe.
    """

    def __init__(self, pid: int, stdout: anyio.abc.ByteReceiveStream) -> None:
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None
        self.exited = anyio.Event()

    def ended(self, returncode: int) -> None:
        self.returncode = returncode
        self.exited.set()

    async def wait(self) -> int | None:
        await self.exited.wait()
        return self.returncode

    def terminate(self) -> None:
        """SIGTERM to the worker: it kills its environment's processes, then exits."""
        if not self.exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to its whole process group (its own: it called setsid)."""
        if not self.exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)


Spawn = Callable[[list[str], tuple[int, ...]], Awaitable[anyio.abc.Process]]
"""Starts ``python -m <args>`` passing the given fds, hardened like a worker (the backend's)."""


class ForkServer:
    """One environment's fork-server, kept running for the server's lifetime."""

    def __init__(self, target: str, spawn: Spawn) -> None:
        self.target = target
        self._spawn = spawn
        self._control: socket.socket | None = None
        self._pending: dict[int, tuple[anyio.Event, dict[str, Any]]] = {}
        self._children: dict[int, ForkedChild] = {}
        self._next_id = 0
        self.pid: int | None = None
        self.restarts = 0
        self.forked = 0
        self._send_lock = anyio.Lock()

    @property
    def ready(self) -> bool:
        return self._control is not None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the parent, restart it whenever it dies, until cancelled (ready once first started)."""
        delay = RESTART_DELAY[0]
        started = False

        def running() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        while True:
            began = time.monotonic()
            try:
                await self._serve_once(running)
            except OSError as exc:
                log.warning("fork-server of %s failed to start: %s", self.target, exc)
            running()
            self.restarts += 1
            delay = RESTART_DELAY[0] if time.monotonic() - began > 60 else min(delay * 2, RESTART_DELAY[1])
            log.warning("fork-server of %s ended; starting it again in %.1fs", self.target, delay)
            await anyio.sleep(delay)

    async def _serve_once(self, running: Callable[[], None]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = await self._spawn(
                ["openenv_ws.sandbox.forkserver", "--control", str(theirs.fileno()), "--target", self.target],
                (theirs.fileno(),),
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        self._control, self.pid = ours, process.pid
        running()
        died = False  # on its own (its control socket closed); else stopped here (the server stops)
        try:
            async with anyio.create_task_group() as tg:
                if process.stdout is not None:
                    tg.start_soon(relay_output, process.stdout, f"forkserver:{self.target}", OutputLimits())
                await self._read(ours)
                died = True
                tg.cancel_scope.cancel()
        finally:
            self._control = None
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()
            ours.close()
            self._orphan_all(f"exit status {process.returncode}", died)

    async def _read(self, control: socket.socket) -> None:
        while True:
            await anyio.wait_readable(control)
            try:
                data = control.recv(_MESSAGE)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                return
            message = json.loads(data)
            if "exit" in message:
                child = self._children.pop(message["exit"], None)
                if child is not None:
                    child.ended(message["code"])
            elif message.get("id") in self._pending:
                event, reply = self._pending.pop(message["id"])
                reply.update(message)
                if "pid" in message:
                    reply["child"] = self._children[message["pid"]] = ForkedChild(message["pid"], reply["output"])
                event.set()

    def _orphan_all(self, why: str, died: bool = True) -> None:
        workers = len(self._children)
        if died:
            log.warning("fork-server of %s died (%s); its %d workers die with it", self.target, why, workers)
        else:
            log.info("fork-server of %s stopped (%d workers with it)", self.target, workers)
        for child in self._children.values():
            child.ended(-signal.SIGTERM)  # its death signal (PR_SET_PDEATHSIG); no status came
        self._children.clear()
        for event, reply in self._pending.values():
            reply["error"] = "the fork-server died"
            event.set()
        self._pending.clear()

    async def fork(self, session: socket.socket, cgroup: Path | None = None) -> ForkedChild | None:
        """A worker forked to serve ``session`` (the caller keeps its own end), in ``cgroup`` if given;
        None if the fork-server is not running or did not answer (the caller spawns instead)."""
        control = self._control
        if control is None:
            return None
        self._next_id += 1
        request_id = self._next_id
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        event, reply = anyio.Event(), {"output": await anyio.abc.SocketStream.from_socket(ours)}
        self._pending[request_id] = (event, reply)
        data = json.dumps({"id": request_id, "cgroup": str(cgroup) if cgroup else None}).encode()
        try:
            with anyio.fail_after(FORK_TIMEOUT):
                async with self._send_lock:
                    while True:
                        try:
                            socket.send_fds(control, [data], [session.fileno(), theirs.fileno()])
                            break
                        except BlockingIOError:
                            await anyio.wait_writable(control)
                theirs.close()
                await event.wait()
        except (TimeoutError, OSError) as exc:
            self._pending.pop(request_id, None)
            log.warning("fork-server of %s did not fork (%s): spawning instead", self.target, exc or "timeout")
        finally:
            theirs.close()
        if "child" not in reply:
            if "error" in reply:
                log.warning("fork-server of %s: %s; spawning instead", self.target, reply["error"])
            await reply["output"].aclose()
            return None
        self.forked += 1
        return reply["child"]

    def describe(self) -> dict[str, Any]:
        return {"pid": self.pid, "running": self.ready, "forked": self.forked, "restarts": self.restarts}


if __name__ == "__main__":
    main()
