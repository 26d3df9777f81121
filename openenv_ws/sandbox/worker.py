"""The sandbox worker: the process that holds one environment inside a sandbox.

Started by the subprocess and Docker backends as ``python -m openenv_ws.sandbox.worker``
with either an inherited socket (``--fd N``) or a Unix socket path to connect to
(``--connect PATH``). Until the first :class:`Open` it answers each :class:`Ping` with a
:class:`Pong` (how a warm pool checks an idle worker). The :class:`Open` names the
environment's import path and options; it answers :class:`Opened` (or a fatal
:class:`Error`), then applies requests one at a time until :class:`Close` or until
the server goes away, and exits.

With ``--parent PID`` (the subprocess backend) the worker first joins its session's cgroup
(``--cgroup PATH``, when the server made one) and takes hold of every process its environment
will start (``descendants.py``): it dies with ``PID``, and kills them all when it ends.
"""

from __future__ import annotations

import argparse
import socket
import sys

import anyio
import anyio.abc

from ..confine import Confinement, private_paths
from ..errors import OpenEnvWSError
from ..protocol import Close, Error, ErrorCode, Open, Opened, Ping, Pong, ProtocolViolation, decode_to_sandbox
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
