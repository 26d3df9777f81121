"""A server inside the calling program, on a free loopback port: for tools that need one briefly.

``openenv-ws replay`` and ``openenv-ws validate`` without ``--url`` run the environments
they check here, in the same event loop (asyncio: uvicorn's), with no signal handlers
taken and nothing left behind when the block ends.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn

from ..registry import EnvSpec
from ..sandbox import Backend
from .app import create_app
from .config import ServerConfig
from .run import uvicorn_config

START_TIMEOUT = 30.0


def free_port() -> int:
    """A loopback port free right now (for a server started in another process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the calling program keeps its own signal handling


@asynccontextmanager
async def local_server(
    envs: list[str | EnvSpec],
    *,
    backend: str | Backend = "inprocess",
    config: ServerConfig | None = None,
    log_level: str = "warning",
) -> AsyncIterator[str]:
    """Serve ``envs`` on ``127.0.0.1:<free port>`` until the block ends; yields ``ws://...``."""
    app = create_app(list(envs), backend=backend, config=config or ServerConfig())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(uvicorn_config(app, "127.0.0.1", port, log_level=log_level, log_config=None))
    failure: list[BaseException] = []

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
            raise

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            with anyio.fail_after(START_TIMEOUT):
                while not server.started:
                    if failure or server.should_exit:
                        raise RuntimeError(f"the local server did not start: {failure[0] if failure else 'exited'}")
                    await anyio.sleep(0.01)
            try:
                yield f"ws://127.0.0.1:{port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()


def local_config(**overrides: Any) -> ServerConfig:
    """A config for a tool's own server: one client, short waits."""
    return ServerConfig(max_sessions=64, drain_timeout=5.0, **overrides)
