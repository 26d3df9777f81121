"""The Starlette application: health, environment listing, the session socket, and each session's MCP endpoint."""

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

from ..protocol import MCP_PATH, ErrorCode
from ..record import WRITER
from ..registry import EnvSpec, resolve
from ..sandbox import Backend, create_backend
from .access import SessionAccess, described, visible
from .auth import TokenAuth
from .body_limit import BodyLimit
from .browser_auth import ConsoleRequests
from .config import ServerConfig
from .connection import session_socket
from .console import console_routes
from .http_errors import EXCEPTION_HANDLERS, json_error
from .identity import TokenGrant, TokenTable, identity_of
from .mcp import SessionTools
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
    if config.record_dir:
        WRITER.set_budget(config.record_dir, config.record_max_bytes or None)
    tools = SessionTools.of(manager)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        saved = await anyio.to_thread.run_sync(manager.load_state)  # serve --state-dir: what a restart takes back
        async with anyio.create_task_group() as tg:
            await tg.start(sandbox_backend.run, specs)  # warm pools, reapers: before the first open
            await tg.start(manager.run)
            await manager.restore(saved)  # before the first connection: its clients resume at once
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
            # A session's tools for MCP clients (streamable HTTP): server/mcp.py.
            Route(MCP_PATH, tools.endpoint, methods=["GET", "POST", "DELETE"]),
            Route("/metrics", metrics),
            *console_routes(),  # the web console: static files at /ui, served by the package
            *(route for extension in extensions for route in extension(manager)),
        ],
        middleware=_middleware(config, manager),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.manager = manager
    app.state.access = SessionAccess(manager)
    app.state.config = config
    return app


def token_table(config: ServerConfig) -> TokenTable:
    """Every token the server accepts: ``config.token`` (an operator's) and ``config.tokens``."""
    grants = [TokenGrant(config.token)] if config.token else []
    return TokenTable([*grants, *config.tokens])


def _middleware(config: ServerConfig, manager: SessionManager) -> list[Middleware]:
    """The token check first (nothing of a stranger's body is read), then the body limit."""
    tokens = token_table(config)
    checks = [Middleware(TokenAuth, tokens=tokens, metrics=manager.metrics)] if len(tokens) else []
    return [*checks, Middleware(ConsoleRequests), Middleware(BodyLimit, max_bytes=config.max_body_bytes)]


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
                {"name": name, "target": spec.target, "schemas": spec.schemas, "tools": spec.tools}
                for name, spec in manager.specs.items()
            ]
        }
    )


async def list_sessions(request: HTTPRequest) -> JSONResponse:
    """Every session for operators and observers; a trainer's own for a trainer."""
    manager = _manager(request.app)
    shown = visible(request, list(manager.sessions.values()))
    return JSONResponse({"sessions": [described(session) for session in shown]})


async def metrics(request: HTTPRequest) -> Response:
    manager = _manager(request.app)
    identity = identity_of(request.scope)
    if not identity.reads_metrics:
        manager.metrics.access_denied()
        detail = f"the {identity.scope} scope does not read /metrics (operator and observer tokens do)"
        return json_error(403, detail, ErrorCode.FORBIDDEN)
    if not manager.metrics.enabled:
        return JSONResponse({"detail": "metrics are off (serve --no-metrics)"}, status_code=404)
    return Response(manager.metrics.render(manager.snapshot()), media_type=METRICS_CONTENT_TYPE)
