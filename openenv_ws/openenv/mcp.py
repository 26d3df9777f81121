"""OpenEnv's MCP protocol on our sessions: ``POST /mcp`` (JSON-RPC), ``WS /mcp``, and the ``mcp`` message of ``/ws``.

OpenEnv's ``MCPToolClient`` opens a session with ``openenv/session/create``, lists tools with
``tools/list``, calls them with ``tools/call`` (``params.session_id`` names the session) and ends
with ``openenv/session/close``. Here:

- a session is one of ours (a sandbox), opened as OpenEnv's HTTP routes open theirs
  (:class:`~openenv_ws.openenv.http.HttpSessions`): the same lock, numbering and access checks;
- ``tools/list`` answers the environment's published tools (our ``@tool`` methods, or an OpenEnv
  MCP environment's FastMCP tools served through ``from_openenv``): no sandbox is needed for it;
- ``tools/call`` is a step of the session (applied exactly once, recorded, in order), answered
  with MCP's ``CallToolResult`` plus ``data``, the tool's value (what ``MCPToolClient`` returns).
  Without a ``session_id`` it runs in a session of its own, closed after (OpenEnv's stateless call).
  A session that has had no reset is reset first when its environment needs one (ours do; an
  adapted OpenEnv environment is called as built, as OpenEnv does).

``WS /mcp`` takes the same JSON-RPC messages over a socket that holds one session (opened at its
first ``tools/call``, closed with the socket).
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import HTTPConnection
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..errors import OpenEnvWSError
from ..protocol import ProtocolViolation, Result, ServerFrame, Step, json_value, pack, unpack
from ..registry import EnvSpec
from ..server.mcp import INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, RpcError, call_result, mcp_tool
from ..server.sessions import Session, SessionManager
from ..version import __version__
from .http import HttpSessions, json_response, requested_env

PARSE_ERROR, INTERNAL_ERROR, SERVER_ERROR = -32700, -32603, -32000

_json = msgspec.json.Encoder()


def rpc_result(request_id: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "result": result, "id": request_id}


def rpc_error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": request_id}


def tools_of(spec: EnvSpec) -> list[dict[str, Any]]:
    """An environment's tools as MCP's ``Tool`` objects (``inputSchema``; OpenEnv's client reads either spelling)."""
    return [mcp_tool(tool) for tool in spec.tools]


def tool_answer(reply: ServerFrame) -> dict[str, Any]:
    """A tool call's reply as MCP's ``CallToolResult``, with ``data`` (the tool's value) as OpenEnv adds it."""
    result = call_result(reply)
    if isinstance(reply, Result) and not result.get("isError"):
        result["data"] = unpack(reply.observation)
    return result


def call_params(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``tools/call``'s tool name and arguments, or OpenEnv's ``-32602`` error."""
    name, arguments = params.get("name"), params.get("arguments")
    if not name or not isinstance(name, str):
        raise RpcError(INVALID_PARAMS, "Missing 'name' in params")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise RpcError(INVALID_PARAMS, "'arguments' must be an object")
    return name, arguments


def tool_step(name: str, arguments: dict[str, Any]) -> Step:
    return Step(action=pack({"tool": name, "arguments": arguments}))


def request_of(message: Any) -> tuple[Any, str, dict[str, Any]]:
    """A JSON-RPC request's id, method and params, or :class:`RpcError` (raised with the id, if any, as ``data``)."""
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        request_id = message.get("id") if isinstance(message, dict) else None
        raise RpcError(INVALID_REQUEST, "Invalid Request", data={"id": request_id})
    params = message.get("params")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, "Params must be an object", data={"id": message.get("id")})
    return message.get("id"), message["method"], params


def handshake(method: str, params: dict[str, Any], spec: EnvSpec) -> dict[str, Any] | None:
    """The answers that need no session: ``initialize``, ``ping``, ``tools/list``; None for the others."""
    if method == "tools/list":
        return {"tools": tools_of(spec)}
    if method == "ping":
        return {}
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion") or "2025-06-18",
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": spec.name, "version": __version__},
        }
    return None


class OpenEnvMCP:
    """``POST /mcp`` and ``WS /mcp``; :meth:`endpoint` and :meth:`socket` are the routes."""

    def __init__(self, manager: SessionManager, episodes: HttpSessions) -> None:
        self.manager = manager
        self.episodes = episodes

    async def endpoint(self, request: HTTPRequest) -> Response:
        """One JSON-RPC request. A body that is not JSON gets HTTP 400; every other answer is a 200 with
        JSON-RPC's result or error, as OpenEnv answers (``openenv validate`` posts ``{}`` and wants a 200)."""
        try:
            message = json_value(await request.body())
        except ProtocolViolation as exc:
            return json_response(rpc_error(None, PARSE_ERROR, f"Parse error: {exc}"), 400)
        return json_response(await self.answer(request, message))

    async def answer(self, request: HTTPConnection, message: Any, session: Session | None = None) -> dict[str, Any]:
        """The JSON-RPC response to ``message``; ``session``: the one a socket holds (``/ws``'s, or ``WS /mcp``'s)."""
        request_id = message.get("id") if isinstance(message, dict) else None
        try:
            request_id, method, params = request_of(message)
            spec = session.spec if session is not None else self.manager.spec(requested_env(request))
            answered = handshake(method, params, spec)
            if answered is not None:
                return rpc_result(request_id, answered)
            if method == "openenv/session/create":
                if session is not None:
                    return rpc_result(request_id, {"session_id": session.id})
                created = await self.episodes.open(request, fresh=True)
                return rpc_result(request_id, {"session_id": created.id})
            if method == "openenv/session/close":
                return rpc_result(request_id, await self._close(request, params, session))
            if method == "tools/call":
                name, arguments = call_params(params)
                return rpc_result(request_id, await self._call(request, params, session, name, arguments))
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        except RpcError as exc:
            data = exc.data
            if isinstance(data, dict) and set(data) == {"id"}:
                data = None
            return rpc_error(request_id, exc.code, exc.message, data)
        except OpenEnvWSError as exc:  # no session (capacity, unknown id, forbidden...): said as OpenEnv's server error
            data: dict[str, Any] = {"code": exc.code}
            if exc.retry_after is not None:
                data["retry_after"] = exc.retry_after
            return rpc_error(request_id, SERVER_ERROR, str(exc), data)

    async def _close(self, request: HTTPConnection, params: dict[str, Any], held: Session | None) -> dict[str, Any]:
        session_id = params.get("session_id")
        if not session_id or not isinstance(session_id, str):
            raise RpcError(INVALID_PARAMS, "Invalid params - 'session_id' is required")
        if held is not None and held.id == session_id:
            raise RpcError(INVALID_REQUEST, "Cannot close active WebSocket-managed session via MCP method")
        if self.manager.get(session_id) is None or session_id not in self.episodes.locks:
            raise RpcError(INVALID_PARAMS, f"Unknown session_id: {session_id}")
        session = self.episodes.lookup(request, session_id)
        self.episodes.forget(session_id)
        await session.close("closed by openenv/session/close", notify=False)
        return {"session_id": session_id, "closed": True}

    async def _call(
        self,
        request: HTTPConnection,
        params: dict[str, Any],
        held: Session | None,
        name: str,
        arguments: dict[str, Any],
    ) -> dict[str, Any]:
        session_id = params.get("session_id")
        if held is not None:
            reply = await self.episodes.apply(request, held, tool_step(name, arguments))
        elif session_id:
            if self.manager.get(str(session_id)) is None or session_id not in self.episodes.locks:
                raise RpcError(INVALID_PARAMS, f"Unknown session_id: {session_id}")
            session = self.episodes.lookup(request, str(session_id))
            reply = await self.episodes.apply(request, session, tool_step(name, arguments))
        else:  # OpenEnv's stateless call: a fresh environment for this one call
            reply = await self.episodes.one_shot(request, tool_step(name, arguments))
        return tool_answer(reply)

    async def socket(self, websocket: WebSocket) -> None:
        """``WS /mcp``: JSON-RPC text messages; the socket's session is opened at its first ``tools/call``."""
        await websocket.accept()
        session: Session | None = None
        try:
            while True:
                try:
                    text = await websocket.receive_text()
                except (WebSocketDisconnect, RuntimeError, KeyError):
                    return
                try:
                    message = json_value(text)
                except ProtocolViolation as exc:
                    await websocket.send_text(
                        _json.encode(rpc_error(None, PARSE_ERROR, f"Parse error: {exc}")).decode()
                    )
                    continue
                if session is None and isinstance(message, dict) and message.get("method") == "tools/call":
                    try:
                        session = await self.episodes.open(websocket, fresh=True)
                    except OpenEnvWSError as exc:
                        answer = rpc_error(message.get("id"), SERVER_ERROR, str(exc), {"code": exc.code})
                        await websocket.send_text(_json.encode(answer).decode())
                        continue
                answer = await self.answer(websocket, message, session)
                await websocket.send_text(_json.encode(answer).decode())
        finally:
            if session is not None:
                self.episodes.forget(session.id)
                await session.close("the MCP socket closed", notify=False)
