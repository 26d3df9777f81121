"""OpenEnv's routes on our server: ``create_app(..., extensions=[openenv_routes])``.

Served by the same sessions and sandboxes as our own protocol. Every route exists at the
root (the first environment, or ``?env=``) and under ``/envs/{env}/`` for servers with
several environments. ``docs/migrating-from-openenv.md`` lists what differs from OpenEnv.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from ..server.sessions import SessionManager
from . import info
from .http import HttpSessions
from .mcp import OpenEnvMCP
from .ws import serve_socket


def openenv_routes(manager: SessionManager) -> list[BaseRoute]:
    """OpenEnv's HTTP and WebSocket routes on ``manager``'s sessions (an ``Extension`` of ``create_app``)."""
    episodes = HttpSessions(manager)
    server = info.ServerInfo(manager)
    tools = OpenEnvMCP(manager, episodes)

    async def socket(websocket: WebSocket) -> None:
        await serve_socket(manager, websocket, tools)

    http = [
        ("/reset", episodes.reset, "POST"),
        ("/step", episodes.step, "POST"),
        ("/state", episodes.state, "GET"),
        ("/close", episodes.close, "POST"),
        ("/health", server.health, "GET"),
        ("/schema", server.schema, "GET"),
        ("/metadata", server.metadata, "GET"),
        ("/mcp", tools.endpoint, "POST"),
        ("/openapi.json", info.openapi, "GET"),
    ]
    routes: list[BaseRoute] = []
    for prefix in ("", "/envs/{env}"):
        routes += [Route(prefix + path, endpoint, methods=[method]) for path, endpoint, method in http]
        routes.append(WebSocketRoute(prefix + "/ws", socket))
        routes.append(WebSocketRoute(prefix + "/mcp", tools.socket))
    return routes
