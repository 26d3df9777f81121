"""What OpenEnv's clients and its ``validate`` command ask of a server besides episodes.

``/health`` reports the server's real health, ``/schema`` and ``/metadata`` describe the
environment, and ``/openapi.json`` and ``/mcp`` answer just enough for ``openenv validate``
to tell the API version and mode.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from starlette.requests import Request as HTTPRequest
from starlette.responses import Response

from ..protocol import ProtocolViolation, json_value
from ..registry import EnvSpec
from ..server.sessions import SessionManager
from .http import answers_errors, json_response, requested_env


class ServerInfo:
    """``/health``, ``/schema`` and ``/metadata`` of one server; the endpoints are its methods."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager

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
            {"action": schemas["action"], "observation": schemas["observation"], "state": schemas["state"]}
        )

    @answers_errors
    async def metadata(self, request: HTTPRequest) -> Response:
        spec = self.manager.spec(requested_env(request))
        doc = inspect.getdoc(spec.cls) or ""
        description = doc.split("\n\n")[0].replace("\n", " ").strip() or f"{spec.name} environment"
        return json_response({"name": spec.name, "description": description, "readme_content": _readme(spec)})


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
    "/mcp": ("post", "JSON-RPC 2.0 (MCP): openenv-ws environments expose no tools"),
}


async def openapi(request: HTTPRequest) -> Response:
    """Enough of an OpenAPI document for OpenEnv's ``validate`` to tell the API version and mode."""
    paths = {
        path: {method: {"summary": summary, "responses": {"200": {"description": "OK"}}}}
        for path, (method, summary) in OPENAPI_PATHS.items()
    }
    info = {"title": "openenv-ws: OpenEnv-compatible API", "version": "1.0.0"}
    return json_response({"openapi": "3.1.0", "info": info, "paths": paths})


def _rpc_error(code: int, message: str, request_id: Any = None, status: int = 200) -> Response:
    return json_response({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": request_id}, status)


async def mcp(request: HTTPRequest) -> Response:
    """JSON-RPC 2.0 as OpenEnv's ``/mcp`` answers it; ``tools/list`` is empty (our envs have no MCP tools).

    A body that is not JSON at all gets HTTP 400 (as MCP's HTTP transport allows); JSON that is
    no valid request gets its JSON-RPC error with 200, as OpenEnv answers (``openenv validate``
    posts ``{}`` and wants a 200).
    """
    try:
        body = json_value(await request.body())
    except ProtocolViolation as exc:
        return _rpc_error(-32700, f"Parse error: {exc}", status=400)
    if not isinstance(body, dict) or body.get("jsonrpc") != "2.0" or not isinstance(body.get("method"), str):
        return _rpc_error(-32600, "Invalid Request", body.get("id") if isinstance(body, dict) else None)
    if body["method"] == "tools/list":
        return json_response({"jsonrpc": "2.0", "result": {"tools": []}, "id": body.get("id")})
    return _rpc_error(-32601, f"Method not found: {body['method']}", body.get("id"))
