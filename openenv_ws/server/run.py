"""Running the app on uvicorn with a graceful drain before uvicorn's own shutdown."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import resource
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import LOGGING_CONFIG

from ..tuning import tune_gc
from .console import console_url
from .sessions import SessionManager

log = logging.getLogger("openenv_ws.server")


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: refuse new sessions and let open ones end (``drain_sessions``), stop
    listening, drain the rest (closed frames sent), then let uvicorn finish."""

    def __init__(self, config: uvicorn.Config, manager: SessionManager) -> None:
        super().__init__(config)
        self.manager = manager

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Like uvicorn's, but a drained shutdown then exits 0 instead of re-raising the signal.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            # The port actually bound (--port 0 picks one), and the console a newcomer opens first.
            port = next((s.getsockname()[1] for server in self.servers for s in server.sockets), self.config.port)
            locked = " (it asks for the token)" if self.manager.config.token else ""
            log.info("web console: %s%s", console_url(self.config.host, port), locked)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Still listening while sessions wind down: /healthz says "draining", resumes work.
        await self.manager.wind_down(lambda: self.force_exit)
        for server in self.servers:
            server.close()
        await self.manager.drain()
        await super().shutdown(sockets)


def uvicorn_config(
    app: Starlette,
    host: str,
    port: int,
    *,
    log_level: str = "info",
    ws: str = "auto",
    log_config: dict[str, Any] | None = LOGGING_CONFIG,
) -> uvicorn.Config:
    """``log_config=None``: uvicorn's loggers go to the root logger (see :mod:`.logs`)."""
    max_frame = app.state.config.max_frame_bytes
    if ws == "auto":
        ws = "websockets-sansio"
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ws=ws,
        # Frames above our limit get a typed error from the app; far above it, uvicorn closes (1009).
        ws_max_size=max(4 * max_frame, max_frame + (1 << 20)),
        ws_per_message_deflate=False,
        ws_ping_interval=app.state.config.ws_ping_interval or None,
        ws_ping_timeout=app.state.config.ws_ping_timeout or None,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        backlog=4096,
        log_level=log_level,
        log_config=log_config,
        timeout_graceful_shutdown=app.state.config.drain_timeout + 5,  # after wind_down's drain_sessions
        lifespan="on",
    )


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one: each session holds a socket (and maybe a pipe)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def serve(app: Starlette, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Run until SIGTERM/SIGINT, then drain gracefully."""
    raise_fd_limit()
    tune_gc()
    server = DrainingServer(uvicorn_config(app, host, port, **options), app.state.manager)
    server.run()
