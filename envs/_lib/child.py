"""A long-lived helper process owned by an environment: the coding env's interpreter, the shell env's bash.

The environment talks to its child over a socket whose descriptor the child finds in
``OPENENV_REQUEST_FD``. Each request is ``NONCE SPACE DATA``, the nonce fresh and random for that
request. The child answers by writing an end marker into each of its output streams: NUL, the
request's nonce, a space, a payload, NUL. What a stream carries before its marker is that request's
output; it is streamed to the caller as it arrives and kept (head and tail, bounded) for the
observation. The nonce is in no environment variable and no file: code the child runs can learn
the nonce of the request it runs in (it shares the child's process), so a marker it prints can cut
that request's own output short, but never end another request or stand in for a later answer.

A request past its deadline is stopped in steps, each given a short grace period: SIGINT to the
child's process group (the interpreter raises ``KeyboardInterrupt``, bash interrupts the command),
SIGKILL to the group's other members (what the command started), SIGKILL to the whole group. The
child runs in a session of its own, and on Linux it is killed when the environment's process dies
(``PR_SET_PDEATHSIG``), so a killed sandbox worker leaves no interpreter behind. Where the sandbox
gives the agent's code a uid of its own (``openenv_ws.confine``), the child and its workspace are
the agent's.

Shared by the coding and shell environments; the environment side of it is ``process_env.py``.
"""

from __future__ import annotations

import codecs
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
import anyio.abc

from openenv_ws.confine import KILL_ALL, Confinement, Identity

OutputSink = Callable[[str, str], Awaitable[None]]
"""Receives ``(stream name, text)`` while a request runs."""

_GONE = (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError)

# Exec'd first in the child: die with the parent (Linux), move descriptors into place, become the real command.
_SHIM = (
    "import ctypes,os,sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, 9)\n"  # PR_SET_PDEATHSIG, SIGKILL
    "    os.getppid() == int(sys.argv[1]) or os._exit(70)\n"  # the parent died before prctl took effect
    "for move in filter(None, sys.argv[2].split(',')):\n"
    "    os.dup2(*map(int, move.split('>')))\n"  # dup2 leaves the new descriptor inheritable
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


def die_with_parent(argv: Sequence[str], moves: Sequence[tuple[int, int]] = ()) -> list[str]:
    """``argv`` behind a shim that makes it die with this process (Linux: ``PR_SET_PDEATHSIG``) and first
    applies ``os.dup2(a, b)`` for each ``(a, b)`` of ``moves`` (a browser wants its pipe at fixed numbers).
    Without moves, elsewhere than on Linux, ``argv`` itself."""
    if not moves and not sys.platform.startswith("linux"):
        return list(argv)
    plan = ",".join(f"{a}>{b}" for a, b in moves)
    return [sys.executable, "-I", "-S", "-c", _SHIM, str(os.getpid()), plan, *argv]


def base_environ(home: str, **extra: str) -> dict[str, str]:
    """A small, explicit environment for a child: nothing of the server's own variables leaks in."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
    }
    env.update(extra)
    return env


# Run as the agent (sh). Its workspace is its own (0755: graders read it; the agent may tighten it), under a
# name the worker picked at random; it goes once every process of the agent's uid is dead.
_MAKE_WORKSPACE = 'mkdir -m 755 -- "$1" && printf %s "$1"'
_END_EPISODE = f'{KILL_ALL}; rm -rf -- "$1"; true'


class Workspace:
    """A fresh scratch directory per episode (under the sandbox's writable /tmp), removed at the end.

    Where the agent has a uid of its own, the workspace is made and removed by that uid (the worker
    holds no right over the agent's files: no CAP_DAC_OVERRIDE, no CAP_CHOWN), and removing it ends
    the episode's processes first: every process of the agent's uid is killed, daemons included,
    so nothing writes into the workspace as it goes and nothing reaches the next episode.
    """

    def __init__(self, path: str, confinement: Confinement) -> None:
        self.path = path
        self._confinement = confinement

    @classmethod
    async def create(cls, prefix: str, confinement: Confinement) -> Workspace:
        if confinement.separate:
            path = os.path.join(tempfile.gettempdir(), prefix + secrets.token_hex(6))
            await confinement.run_as_agent(_MAKE_WORKSPACE, path)
        else:
            path = tempfile.mkdtemp(prefix=prefix)
        return cls(path, confinement)

    async def remove(self) -> None:
        """Kill the agent's processes (when it has a uid of its own), then remove the directory."""
        if self._confinement.separate:
            with anyio.CancelScope(shield=True):
                await self._confinement.run_as_agent(_END_EPISODE, self.path)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


class Capture:
    """One stream's text for one request: head and tail kept, the middle dropped past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._head: list[str] = []
        self._head_len = 0
        self._tail = ""
        self.dropped = 0

    def add(self, text: str) -> None:
        room = self.limit // 2 - self._head_len
        if room > 0:
            self._head.append(text[:room])
            self._head_len += min(room, len(text))
            text = text[room:]
        if not text:
            return
        tail = self._tail + text
        keep = self.limit - self.limit // 2
        if len(tail) > keep:
            self.dropped += len(tail) - keep
            tail = tail[-keep:]
        self._tail = tail

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def text(self) -> str:
        head = "".join(self._head)
        if self.dropped:
            return f"{head}\n... [{self.dropped} characters dropped] ...\n{self._tail}"
        return head + self._tail


class MarkerSplitter:
    """Splits a byte stream at ``NUL nonce SPACE payload NUL`` markers, holding back a possible partial one.

    The nonce is the current request's (:meth:`expect`): a marker of an earlier one is plain output.
    """

    def __init__(self, nonce: str = "") -> None:
        self.expect(nonce)
        self._buf = b""

    def expect(self, nonce: str) -> None:
        self.prefix = b"\0" + nonce.encode() + b" "

    def feed(self, data: bytes) -> tuple[bytes, bytes | None]:
        """Return (output before any marker, the marker's payload if one is complete)."""
        buf = self._buf + data
        start = buf.find(self.prefix)
        if start >= 0:
            end = buf.find(b"\0", start + len(self.prefix))
            if end < 0:
                self._buf = buf[start:]
                return buf[:start], None
            self._buf = buf[end + 1 :]  # output written after the marker belongs to the next request
            return buf[:start], buf[start + len(self.prefix) : end]
        keep = next((k for k in range(min(len(buf), len(self.prefix) - 1), 0, -1) if buf.endswith(self.prefix[:k])), 0)
        self._buf = buf[len(buf) - keep :] if keep else b""
        return buf[: len(buf) - keep], None


@dataclass
class Reply:
    """How one request ended."""

    payload: bytes | None
    """The marker payload of the first stream; None when the child ended or was killed first."""
    outputs: dict[str, Capture]
    interrupted: bool = False
    """The deadline passed and the child was signalled."""
    returncode: int | None = None
    """Set when the child is gone (exited on its own, or killed)."""
    duration_s: float = 0.0
    streamed: dict[str, int] = field(default_factory=dict)


def ended(returncode: int | None) -> str:
    """How a child ended, for a message: ``exited with code 3``, ``was killed by SIGSEGV``."""
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _stat(pid: int | str) -> list[bytes]:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...); [] if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return []
    return stat[stat.rfind(b")") + 2 :].split()


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (Linux /proc)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != b"Z"


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) pids in process group ``pgid`` (Linux /proc; empty elsewhere)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    members = []
    for entry in entries:
        if entry.isdigit():
            fields = _stat(entry)
            if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
                members.append(int(entry))
    return members


class ChildProcess:
    """One helper process and the request protocol described in the module docstring."""

    #: Seconds between the steps that stop a request past its deadline.
    grace_s = 0.5
    #: Characters streamed as events per request and stream; the rest is only kept (head and tail).
    max_streamed_chars = 1 << 20

    def __init__(
        self,
        process: anyio.abc.Process,
        requests: anyio.abc.SocketStream,
        streams: dict[str, anyio.abc.ByteReceiveStream],
        max_output_chars: int,
    ) -> None:
        self.process = process
        self._requests = requests
        self._splitters = {name: MarkerSplitter() for name in streams}
        self._streams = streams
        self.max_output_chars = max_output_chars

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: str,
        env: dict[str, str],
        merge_stderr: bool = False,
        max_output_chars: int = 16384,
        user: Identity | None = None,
    ) -> ChildProcess:
        """Start ``argv`` (as ``user`` if given); its output streams are ``stdout`` and ``stderr``, or
        ``output`` when merged."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(env, OPENENV_REQUEST_FD=str(theirs.fileno()))
        argv = die_with_parent(argv)
        try:
            process = await anyio.open_process(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                cwd=cwd,
                env=env,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                **(user.spawn_options() if user else {}),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        requests = await anyio.abc.SocketStream.from_socket(ours)
        assert process.stdout is not None
        if merge_stderr:
            streams = {"output": process.stdout}
        else:
            assert process.stderr is not None
            streams = {"stdout": process.stdout, "stderr": process.stderr}
        return cls(process, requests, streams, max_output_chars)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def request(self, data: bytes, *, timeout: float, on_output: OutputSink | None = None) -> Reply:
        """Send one request and collect its output until every stream's end marker (or the child's end)."""
        started = time.monotonic()
        reply = Reply(payload=None, outputs={name: Capture(self.max_output_chars) for name in self._streams})
        first = next(iter(self._streams))
        nonce = secrets.token_hex(12)
        for splitter in self._splitters.values():
            splitter.expect(nonce)

        async def pump(name: str) -> None:
            splitter, capture = self._splitters[name], reply.outputs[name]
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            chunk = b""  # the first round flushes what the previous request left after its marker
            while True:
                out, payload = splitter.feed(chunk)
                text = decoder.decode(out, final=payload is not None)
                if text:
                    capture.add(text)
                    streamed = reply.streamed.get(name, 0)
                    if on_output is not None and streamed < self.max_streamed_chars:
                        reply.streamed[name] = streamed + len(text)
                        await on_output(name, text[: self.max_streamed_chars - streamed])
                if payload is not None:
                    if name == first:
                        reply.payload = payload
                    return
                try:
                    chunk = await self._streams[name].receive(65536)
                except _GONE:
                    capture.add(decoder.decode(b"", final=True))
                    return

        async def stop_when_late(scope: anyio.CancelScope) -> None:
            await anyio.sleep(timeout)
            reply.interrupted = True
            self.signal(signal.SIGINT)
            await anyio.sleep(self.grace_s)
            self.signal(signal.SIGKILL, spare_leader=True)
            await anyio.sleep(self.grace_s)
            self.signal(signal.SIGKILL)
            await anyio.sleep(self.grace_s)
            scope.cancel()  # a process outside the group still holds the pipes: stop reading

        try:
            async with anyio.create_task_group() as watch:
                watch.start_soon(stop_when_late, watch.cancel_scope)
                try:
                    # under the deadline too: a stuck child may not read
                    await self._requests.send(nonce.encode() + b" " + data)
                except _GONE:
                    pass  # the child is gone: its streams end at once and the reply says so
                async with anyio.create_task_group() as pumps:
                    for name in self._streams:
                        pumps.start_soon(pump, name)
                watch.cancel_scope.cancel()
        except BaseException:
            # Cancelled (or the output sink failed) mid-request: the child may still answer later and
            # would answer the next request with this one's marker. Kill it; the next request sees it gone.
            self.signal(signal.SIGKILL)
            raise
        if reply.payload is None:
            if self.alive:
                self.signal(signal.SIGKILL)  # the protocol is broken (e.g. stdout was closed): start over
            with anyio.move_on_after(2):
                await self.process.wait()
            reply.returncode = self.process.returncode
        reply.duration_s = time.monotonic() - started
        return reply

    def signal(self, sig: int, *, spare_leader: bool = False) -> None:
        """Signal the child's process group (all but the child itself with ``spare_leader``)."""
        pgid = self.process.pid
        try:
            if not spare_leader:
                os.killpg(pgid, sig)
                return
            for pid in group_members(pgid):
                if pid != pgid:
                    os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    async def close(self) -> None:
        """Kill the child and everything in its group; release the pipes. Never raises."""
        with anyio.CancelScope(shield=True):
            self.signal(signal.SIGKILL)
            with anyio.move_on_after(2):
                await self.process.wait()
            for stream in (self._requests, *self._streams.values()):
                try:
                    await stream.aclose()
                except Exception:
                    pass
