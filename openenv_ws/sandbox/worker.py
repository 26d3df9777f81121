"""The sandbox worker: the process that holds one environment inside a sandbox.

Started by the subprocess and Docker backends as ``python -m openenv_ws.sandbox.worker``
with either an inherited socket (``--fd N``) or a Unix socket path to connect to
(``--connect PATH``). Until the first :class:`Open` it answers each :class:`Ping` with a
:class:`Pong` (how a warm pool checks an idle worker). The :class:`Open` names the
environment's import path and options; it answers :class:`Opened` (or a fatal
:class:`Error`), then applies requests one at a time until :class:`Close` or until
the server goes away, and exits.

With ``--reconnect SECONDS`` (the Docker backend of a server with a state directory) the worker
outlives its server: when the connection drops it keeps its environment and connects to the same
path again, for up to that long, so a restarted server can adopt it (docs/operations.md,
"Restarts"). The new server's ``Open`` is answered ``Opened(resumed=True)`` without touching the
environment, and the first request after a reconnect that is byte for byte the last one applied
(the server resends what it never saw answered) gets the kept reply again, not a second apply.

With ``--parent PID`` (the subprocess backend) the worker first joins its session's cgroup
(``--cgroup PATH``, when the server made one) and takes hold of every process its environment
will start (``descendants.py``): it dies with ``PID``, and kills them all when it ends.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

import anyio
import anyio.abc

from ..confine import Confinement, private_paths
from ..errors import OpenEnvWSError
from ..protocol import (
    Close,
    Error,
    ErrorCode,
    Frame,
    Open,
    Opened,
    Ping,
    Pong,
    ProtocolViolation,
    decode_to_sandbox,
)
from ..registry import load_target
from .cgroups import join
from .channel import FrameChannel
from .descendants import hold, kill_descendants
from .episode import EpisodeRunner


async def _open(channel: FrameChannel) -> EpisodeRunner | None:
    frame = decode_to_sandbox(await channel.receive())
    while isinstance(frame, Ping):  # a warm pool checks that its idle worker still answers
        await channel.send(Pong(seq=frame.seq))
        frame = decode_to_sandbox(await channel.receive())
    if not isinstance(frame, Open) or not frame.env:
        await channel.send(Error(code=ErrorCode.UNEXPECTED_FRAME, message="expected open", fatal=True))
        return None
    try:
        env_cls = load_target(frame.env)
        Confinement.from_environ().check_private(private_paths(env_cls))
        runner = await EpisodeRunner.create(env_cls, frame.options)
    except OpenEnvWSError as exc:
        await channel.send(exc.to_frame(frame.seq))
        return None
    except Exception as exc:
        message = f"environment failed to start: {type(exc).__name__}: {exc}"
        await channel.send(Error(seq=frame.seq, code=ErrorCode.SANDBOX_START_FAILED, message=message, fatal=True))
        return None
    await channel.send(Opened(seq=frame.seq, session_id="", resume_token="", env=frame.env))
    return runner


_GONE = (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)

RECONNECT_PAUSE = 0.05
"""Seconds between two attempts to reach a restarted server."""


async def serve(stream: anyio.abc.ByteStream) -> None:
    channel = FrameChannel(stream)
    runner = None
    try:
        runner = await _open(channel)
        while runner is not None:
            frame = decode_to_sandbox(await channel.receive())
            reply = await runner.handle(frame, channel.send)
            await channel.send(reply)
            if isinstance(frame, Close):
                break
    except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, ProtocolViolation):
        pass  # the server went away (or spoke nonsense): end the episode
    finally:
        if runner is not None:
            await runner.close()
        await channel.aclose()


class _Link:
    """The worker's side of a connection that may drop and come back (``--reconnect``)."""

    def __init__(self, path: str, grace: float) -> None:
        self.path = path
        self.grace = grace
        self.channel: FrameChannel | None = None
        self.last: tuple[bytes, Frame] | None = None
        """The last request applied (its bytes) and its reply: answered again if the next server repeats it."""
        self.fresh = False
        """Connected again since the last request: the next one may be a repeat of ``last``."""

    async def connect(self) -> bool:
        """Reach the server at ``path``; False once ``grace`` seconds passed without one."""
        deadline = time.monotonic() + self.grace
        while True:
            try:
                self.channel = FrameChannel(await anyio.connect_unix(self.path))
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
                await anyio.sleep(RECONNECT_PAUSE)

    async def send(self, frame: Frame) -> None:
        """Send, or drop it if the server is gone: a request in flight is finished all the same."""
        channel = self.channel
        if channel is None:
            return
        try:
            await channel.send(frame)
        except _GONE:
            await self.drop()

    async def drop(self) -> None:
        channel, self.channel = self.channel, None
        if channel is not None:
            await channel.aclose()


async def serve_reconnecting(path: str, grace: float) -> None:
    """Like :func:`serve`, but the environment outlives the connection (see the module's doc)."""
    link = _Link(path, grace)
    runner = None
    try:
        if not await link.connect():
            return
        assert link.channel is not None
        runner = await _open(link.channel)
        while runner is not None:
            channel = link.channel
            if channel is None:
                if not await link.connect():
                    return  # no server came back within the grace period: end the episode
                channel = link.channel
                assert channel is not None
                link.fresh = True
            try:
                data = await channel.receive()
            except _GONE:
                await link.drop()
                continue
            frame = decode_to_sandbox(data)
            if isinstance(frame, Open):  # a restarted server adopting this worker: the episode goes on
                opened = Opened(seq=frame.seq, session_id="", resume_token="", env=frame.env or "", resumed=True)
                await link.send(opened)
                continue
            fresh, link.fresh = link.fresh, False
            if fresh and link.last is not None and link.last[0] == data:
                await link.send(link.last[1])  # the server never saw this answered: the same reply, not applied twice
                continue
            reply = await runner.handle(frame, link.send)
            link.last = (bytes(data), reply)
            await link.send(reply)
            if isinstance(frame, Close):
                break
    except ProtocolViolation:
        pass
    finally:
        if runner is not None:
            await runner.close()
        await link.drop()


async def serve_fd(fd: int) -> None:
    """Serve an inherited, connected stream socket (``--fd``; a fork-server's child)."""
    await serve(await anyio.abc.SocketStream.from_socket(socket.socket(fileno=fd)))


def preload(target: str) -> None:
    """Import ahead what serving ``target`` will import (a fork-server does, once, for all its children)."""
    import anyio._backends._asyncio  # noqa: F401  (anyio.run imports it on first use)

    skip_unused_imports()  # as a spawned worker does: its forks inherit the same modules

    try:
        load_target(target)
    except Exception:  # the child reports it on Open, as a spawned worker would
        pass


async def _main(args: argparse.Namespace) -> None:
    if args.reconnect and args.connect:
        await serve_reconnecting(args.connect, args.reconnect)
        return
    if args.fd is not None:
        await serve_fd(args.fd)
    else:
        await serve(await anyio.connect_unix(args.connect))


UNUSED_IN_A_SANDBOX = ("openenv.core.env_server.web_interface",)
"""Modules a worker never needs and that its environment's imports would load anyway: OpenEnv's web
UI (Gradio, several seconds of CPU per process when installed), which ``openenv.core.env_server``
imports when it can and does without when it cannot. A sandbox serves no web UI."""


def skip_unused_imports() -> None:
    """Make :data:`UNUSED_IN_A_SANDBOX` fail to import (as if absent), before the environment is loaded."""
    for name in UNUSED_IN_A_SANDBOX:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    skip_unused_imports()
    parser = argparse.ArgumentParser(prog="openenv_ws.sandbox.worker")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int, help="an inherited, connected stream socket")
    where.add_argument("--connect", help="a Unix socket path the server listens on")
    parser.add_argument("--parent", type=int, help="die with this process, and take the env's processes along")
    parser.add_argument("--cgroup", help="the session's cgroup directory to join first")
    parser.add_argument(
        "--reconnect", type=float, default=0.0, metavar="SECONDS", help="outlive the server: reconnect this long"
    )
    args = parser.parse_args(argv)
    if args.cgroup:
        join(args.cgroup)
    if args.parent:
        hold(args.parent)
    try:
        anyio.run(_main, args)
    finally:
        if args.parent:
            kill_descendants()
    sys.exit(0)


if __name__ == "__main__":
    main()
