"""What OpenEnv's clients and its ``validate`` command ask of a server besides episodes.

``/health`` reports the server's real health, ``/schema`` and ``/metadata`` describe the
environment, and ``/openapi.json`` answers enough for ``openenv validate`` to tell the API
version and mode. (``/mcp`` is :mod:`openenv_ws.openenv.mcp`.)
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import anyio
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response

from ..registry import EnvSpec
from ..server.sessions import SessionManager
from .http import answers_errors, json_response, requested_env


class ServerInfo:
    """``/health``, ``/schema`` and ``/metadata`` of one server; the endpoints are its methods."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self._metadata: dict[str, Any] = {}  # an adapted env's get_metadata(), asked once

    async def health(self, request: HTTPRequest) -> Response:
        """``healthy`` (200), ``degraded`` at capacity (200: no new session now), ``unhealthy`` while draining (503)."""
        health = self.manager.health()
        if health["status"] != "ok":
            return json_response({"status": "unhealthy"}, 503)
        return json_response({"status": "healthy" if health["capacity_left"] > 0 else "degraded"})

    @answers_errors
    async def schema(self, request: HTTPRequest) -> Response:
        schemas = self.manager.spec(requested_env(request)).schemas
        return json_response(
            {
                "action": schemas["action"],
                "observation": schemas["observation"],
                "state": schemas["state"],
                "reset_observation": schemas["observation"],  # reset answers the same observation type
            }
        )

    @answers_errors
    async def metadata(self, request: HTTPRequest) -> Response:
        """OpenEnv's ``EnvironmentMetadata``: an adapted environment's own ``get_metadata()``; for ours,
        its name, its docstring's first paragraph, the README beside it and its ``version`` (if any)."""
        spec = self.manager.spec(requested_env(request))
        own = getattr(spec.cls, "openenv_metadata", None)
        if own is not None:
            found = self._metadata.get(spec.name)
            if found is None:
                found = self._metadata[spec.name] = await anyio.to_thread.run_sync(own)
            return json_response(found)
        doc = inspect.getdoc(spec.cls) or ""
        description = doc.split("\n\n")[0].replace("\n", " ").strip() or f"{spec.name} environment"
        version = getattr(spec.cls, "version", None)
        return json_response(
            {
                "name": spec.name,
                "description": description,
                "readme_content": _readme(spec),
                "version": version if isinstance(version, str) else "1.0.0",
                "author": None,
                "documentation_url": None,
            }
        )


def _readme(spec: EnvSpec, limit: int = 1 << 16) -> str | None:
    """The README.md beside the environment's module, if there is one."""
    try:
        path = Path(inspect.getfile(spec.cls)).parent / "README.md"
        return path.read_text(errors="replace")[:limit] if path.is_file() else None
    except (OSError, TypeError):
        return None


OPENAPI_PATHS = {
    "/reset": ("post", "Reset the episode (opens a session when no X-Session-Id is sent)"),
    "/step": ("post", "Apply one action in the session named by X-Session-Id"),
    "/state": ("get", "The state of the session named by X-Session-Id"),
    "/close": ("post", "End the session named by X-Session-Id"),
    "/health": ("get", "Health: healthy, degraded (at capacity) or unhealthy (draining)"),
    "/schema": ("get", "JSON Schemas of action, observation and state"),
    "/metadata": ("get", "Name and description of the environment"),
    "/mcp": ("post", "JSON-RPC 2.0 (MCP): openenv/session/create and close, tools/list, tools/call"),
}


async def openapi(request: HTTPRequest) -> Response:
    """Enough of an OpenAPI document for OpenEnv's ``validate`` to tell the API version and mode."""
    paths = {
        path: {method: {"summary": summary, "responses": {"200": {"description": "OK"}}}}
        for path, (method, summary) in OPENAPI_PATHS.items()
    }
    info = {"title": "openenv-ws: OpenEnv-compatible API", "version": "1.0.0"}
    return json_response({"openapi": "3.1.0", "info": info, "paths": paths})
