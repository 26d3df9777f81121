"""The Starlette application: health, environment listing, and the session socket."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from ..record import WRITER
from ..registry import EnvSpec, resolve
from ..sandbox import Backend, create_backend
from .auth import TokenAuth
from .browser_auth import ConsoleSockets
from .config import ServerConfig
from .connection import session_socket
from .console import console_routes
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .mux import mux_socket
from .sessions import SessionManager
from .watch import watch_socket

log = logging.getLogger("openenv_ws.server")

Extension = Callable[[SessionManager], Sequence[BaseRoute]]
"""Extra routes served beside ours, built from the session manager (e.g. OpenEnv's protocol)."""


def create_app(
    envs: str | EnvSpec | list[str | EnvSpec] = "echo",
    *,
    backend: str | Backend = "inprocess",
    config: ServerConfig | None = None,
    extensions: Sequence[Extension] = (),
) -> Starlette:
    """Build the server for one or more environments (names, ``module:Class`` paths or specs).

    ``extensions`` add routes of other protocols on the same sessions and sandboxes: the
    ``serve`` command adds OpenEnv's (:mod:`openenv_ws.openenv.server`).
    """
    config = config or ServerConfig()
    specs = [resolve(e) if isinstance(e, str) else e for e in (envs if isinstance(envs, list) else [envs])]
    sandbox_backend = create_backend(backend) if isinstance(backend, str) else backend
    manager = SessionManager({s.name: s for s in specs}, sandbox_backend, config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            await tg.start(sandbox_backend.run, specs)  # warm pools, reapers: before the first open
            await tg.start(manager.run)
            try:
                yield
            finally:
                await manager.drain()
                await anyio.to_thread.run_sync(WRITER.flush)  # recordings of the sessions just closed
                tg.cancel_scope.cancel()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/v1/envs", list_envs),
            Route("/v1/sessions", list_sessions),
            WebSocketRoute("/v1/sessions", session_socket),
            WebSocketRoute("/v1/mux", mux_socket),
            # Operator tooling: live frames of one session (inspector --follow), Prometheus metrics.
            WebSocketRoute("/v1/sessions/{session_id}/watch", watch_socket),
            Route("/metrics", metrics),
            *console_routes(),  # the web console: static files at /ui, served by the package
            *(route for extension in extensions for route in extension(manager)),
        ],
        middleware=[
            *([Middleware(TokenAuth, token=config.token, metrics=manager.metrics)] if config.token else []),
            Middleware(ConsoleSockets),
        ],
        lifespan=lifespan,
    )
    app.state.manager = manager
    app.state.config = config
    return app


def _manager(scope_app: Any) -> SessionManager:
    return scope_app.state.manager


async def healthz(request: HTTPRequest) -> JSONResponse:
    health = _manager(request.app).health()
    return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)


async def list_envs(request: HTTPRequest) -> JSONResponse:
    manager = _manager(request.app)
    return JSONResponse(
        {
            "envs": [
                {"name": name, "target": spec.target, "schemas": spec.schemas} for name, spec in manager.specs.items()
            ]
        }
    )


async def list_sessions(request: HTTPRequest) -> JSONResponse:
    manager = _manager(request.app)
    return JSONResponse({"sessions": [s.describe() for s in list(manager.sessions.values())]})


async def metrics(request: HTTPRequest) -> Response:
    manager = _manager(request.app)
    if not manager.metrics.enabled:
        return JSONResponse({"detail": "metrics are off (serve --no-metrics)"}, status_code=404)
    return Response(manager.metrics.render(manager.snapshot()), media_type=METRICS_CONTENT_TYPE)
