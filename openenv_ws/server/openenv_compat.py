"""OpenEnv-compatible endpoints, served by the same sessions and sandboxes as our own protocol.

An OpenEnv client (``EnvClient``, ``GenericEnvClient``, their ``.sync()`` wrappers) talks to
``WS /ws`` in JSON: ``reset``/``step``/``state``/``close`` messages, answered by
``observation``/``state``/``error`` messages. Each such socket is one of our sessions: it
gets its own sandbox, counts against ``--max-sessions``, is reaped when idle, and ends with
its socket (an OpenEnv client cannot resume, so nothing is kept for it). Requests are
numbered here, so :meth:`Session.submit` applies them exactly as it applies ours.

The HTTP endpoints keep OpenEnv's paths and bodies, but an episode persists across calls:
``POST /reset`` without a session id opens a session and names it in the ``X-Session-Id``
response header; ``/reset``, ``/step``, ``/state`` and ``/close`` with that header (or
``?session_id=``) act on it. ``/health`` reports the server's real health, ``/schema`` and
``/metadata`` describe the environment, ``/openapi.json`` and ``/mcp`` let OpenEnv's
``validate`` command check the server. Every route also exists under ``/envs/{env}/`` for
servers with several environments (``?env=`` works too); without either, the first one.

The mapping of results and errors between the two protocols is in
:mod:`openenv_ws.adapters.openenv`; ``docs/migrating-from-openenv.md`` lists the differences.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
from starlette.requests import HTTPConnection
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from ..adapters.openenv import error_data, result_payload
from ..errors import OpenEnvWSError, SessionLostError
from ..protocol import (
    ClientFrame,
    Close,
    Closed,
    Error,
    ErrorCode,
    Event,
    Frame,
    GetState,
    Open,
    Request,
    Reset,
    Result,
    ServerFrame,
    StateReply,
    Step,
    decode_server,
    encode,
    pack,
    unpack,
)
from ..registry import EnvSpec
from .app import _manager, _open
from .connection import BadFrame, Connection, Disconnected
from .sessions import Session, SessionManager

SESSION_HEADER = "X-Session-Id"

_json_decoder = msgspec.json.Decoder()


def _env_name(conn: HTTPConnection) -> str | None:
    return conn.path_params.get("env") or conn.query_params.get("env")


def _takes_metadata(spec: EnvSpec | None) -> bool:
    """Whether the env's action declares ``metadata`` (every OpenEnv Action does; ours usually not)."""
    if spec is None:
        return True
    schema = spec.schemas["action"]
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/"):
        schema = schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
    return "metadata" in schema.get("properties", {})


def _bad(message: str, code: str = ErrorCode.VALIDATION) -> BadFrame:
    return BadFrame(message, code=code, seq=0)


def _json_object(data: bytes | str, limit: int, what: str) -> dict[str, Any]:
    """A WebSocket message or an HTTP body: JSON, an object, at most ``limit`` bytes."""
    size = len(data.encode() if isinstance(data, str) else data)
    if size > limit:
        raise _bad(f"{what} of {size} bytes exceeds the limit of {limit}", ErrorCode.FRAME_TOO_LARGE)
    try:
        value = _json_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise _bad(f"Invalid JSON: {exc}", ErrorCode.MALFORMED_FRAME) from None
    if not isinstance(value, dict):
        raise _bad(f"{what} must be a JSON object")
    return value


def _reset_frame(data: Any) -> Reset:
    """OpenEnv's reset arguments (``seed``, ``episode_id``, anything else) as our ``reset``."""
    if not isinstance(data, dict):
        raise _bad("reset 'data' must be an object")
    options = dict(data)
    seed = options.pop("seed", None)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise _bad(f"'seed' must be a non-negative integer, not {seed!r}")
    return Reset(seed=seed, options=options or None)


def _step_frame(action: Any, takes_metadata: bool) -> Step:
    """OpenEnv's action as our ``step``; an empty ``metadata`` (OpenEnv's Action base field) is
    dropped when the env's action does not declare it."""
    if not isinstance(action, dict):
        raise _bad(f"the action must be a JSON object, not {type(action).__name__}")
    if not takes_metadata and "metadata" in action and not action["metadata"]:
        action = {k: v for k, v in action.items() if k != "metadata"}
    return Step(action=pack(action))


def openenv_message(frame: ServerFrame) -> dict[str, Any] | None:
    """Our server frame as OpenEnv's WebSocket message; None for what OpenEnv has no message for."""
    match frame:
        case Result():
            data = result_payload(
                unpack(frame.observation), frame.reward, frame.terminated, frame.truncated, unpack(frame.info)
            )
            return {"type": "observation", "data": data}
        case StateReply():
            return {"type": "state", "data": unpack(frame.state)}
        case Error():
            return {"type": "error", "data": error_data(frame)}
        case Closed() if frame.seq == 0:  # the server ended the session (idle, shutdown): say so
            message = f"session closed by the server: {frame.reason}"
            ended = Error(code=ErrorCode.SESSION_CLOSED, message=message, fatal=True)
            return {"type": "error", "data": error_data(ended)}
    return None  # opened, pong, streamed events, the reply to ``close`` (OpenEnv answers none)


# ---------------------------------------------------------------- WebSocket /ws


class OpenEnvSocket(Connection):
    """One ``/ws`` client: OpenEnv JSON in, our numbered frames to the session, our replies out as OpenEnv JSON."""

    def __init__(self, websocket: WebSocket, max_frame_bytes: int, env: str | None, takes_metadata: bool) -> None:
        super().__init__(websocket, max_frame_bytes)
        self.env = env
        self.takes_metadata = takes_metadata
        self.seq = 0
        self._opened = False

    async def receive(self) -> ClientFrame:
        if not self._opened:  # the session opens with the socket, as OpenEnv's does
            self._opened = True
            return Open(env=self.env)
        return await super().receive()

    def _decode(self, original: bytes | str, canonical: Any, size: int) -> Request:
        """Connection.receive hands each message here: OpenEnv's JSON, as our numbered request."""
        message = _json_object(original, self.max_frame_bytes, "a message")
        frame: Request
        match message.get("type"):
            case "reset":
                frame = _reset_frame(message.get("data", {}))
            case "step":
                if "data" not in message:
                    raise _bad("a step message needs 'data' (the action)")
                frame = _step_frame(message["data"], self.takes_metadata)
            case "state":
                frame = GetState()
            case "close":
                frame = Close()
            case other:
                raise _bad(f"Unknown message type: {other}", ErrorCode.UNEXPECTED_FRAME)
        self.seq += 1
        frame.seq = self.seq
        return frame

    async def send(self, data: bytes) -> None:
        message = openenv_message(decode_server(data))
        if message is not None:
            self.json = True  # OpenEnv speaks JSON text frames, whatever the client sent
            await super().send(msgspec.msgpack.encode(message))


async def openenv_socket(websocket: WebSocket) -> None:
    manager = _manager(websocket.app)
    env = _env_name(websocket)
    spec = manager.specs.get(env or manager.default_env)
    conn = OpenEnvSocket(websocket, manager.config.max_frame_bytes, env, _takes_metadata(spec))
    await websocket.accept()
    session = await _open(manager, conn)  # errors (capacity...) are sent as OpenEnv errors, then the socket closes
    if session is None:
        return
    try:
        while session.state != "closed":
            try:
                frame = await conn.receive()
            except BadFrame as exc:
                await conn.send_frame(exc.to_frame())
                continue
            await session.submit(frame, conn)
    except Disconnected:
        pass
    finally:
        await session.close("client disconnected", notify=False)


# ---------------------------------------------------------------- HTTP


class _Reply:
    """Stands in for a connection during one HTTP request: keeps what the session sends."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.open = True
        self.frames: list[bytes] = []

    async def send(self, data: bytes) -> None:
        if self.open:
            self.frames.append(data)

    async def send_frame(self, frame: Frame) -> None:
        await self.send(encode(frame))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.open = False

    def final(self) -> ServerFrame:
        for data in reversed(self.frames):
            frame = decode_server(data)
            if not isinstance(frame, Event):
                return frame
        return Error(code=ErrorCode.INTERNAL, message="the session sent no reply")


def _peer(request: HTTPConnection) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


class HttpSessions:
    """The sessions opened over HTTP (only these are reachable over HTTP), each with its request lock."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self.locks: dict[str, anyio.Lock] = {}

    def find(self, request: HTTPRequest) -> Session | None:
        session_id = request.headers.get(SESSION_HEADER) or request.query_params.get("session_id")
        if not session_id:
            return None
        session = self.manager.sessions.get(session_id)
        if session is None or session_id not in self.locks:
            raise SessionLostError(f"session {session_id!r} is unknown, expired or closed: POST /reset opens another")
        return session

    def require(self, request: HTTPRequest) -> Session:
        session = self.find(request)
        if session is None:
            raise SessionLostError(
                f"no session id: POST /reset opens a session and names it in the {SESSION_HEADER} response header;"
                f" send that header (or ?session_id=) with /step, /state and /close"
            )
        return session

    async def open(self, request: HTTPRequest) -> Session:
        for session_id in [s for s in self.locks if s not in self.manager.sessions]:
            del self.locks[session_id]  # ended: closed, idle, crashed
        session = await self.manager.open(Open(env=_env_name(request)), _Reply(_peer(request)))
        self.locks[session.id] = anyio.Lock()
        return session

    async def run(self, request: HTTPRequest, session: Session, frame: Request) -> Response:
        """Apply one request, one at a time per session (later ones wait, at most ``max_queue`` of them)."""
        lock = self.locks[session.id]
        if lock.statistics().tasks_waiting >= self.manager.config.max_queue:
            waiting = lock.statistics().tasks_waiting
            raise OpenEnvWSError(
                f"{waiting} requests already wait in this session",
                code=ErrorCode.QUEUE_FULL,
                retry_after=self.manager.config.retry_after,
            )
        async with lock:
            if session.state == "closed":
                raise SessionLostError(f"session closed: {session.close_reason}", code=ErrorCode.SESSION_CLOSED)
            reply = _Reply(_peer(request))
            session.attach(reply, session.applied)  # nothing to resume over HTTP: the reply cache is dropped
            frame.seq = session.applied + 1
            try:
                await session.submit(frame, reply)
            finally:
                reply.open = False
        return _response(reply.final(), session.id)


_STATUS = {
    ErrorCode.MALFORMED_FRAME: 400,
    ErrorCode.UNEXPECTED_FRAME: 400,
    ErrorCode.FRAME_TOO_LARGE: 413,
    ErrorCode.VALIDATION: 422,
    ErrorCode.BAD_OPTIONS: 422,
    ErrorCode.NO_EPISODE: 409,
    ErrorCode.EPISODE_ENDED: 409,
    ErrorCode.UNKNOWN_ENV: 404,
    ErrorCode.SESSION_NOT_FOUND: 404,
    ErrorCode.SESSION_CLOSED: 410,
    ErrorCode.CAPACITY: 503,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.QUEUE_FULL: 503,
    ErrorCode.SANDBOX_START_FAILED: 503,
    ErrorCode.TIMEOUT: 504,
}
"""HTTP status of each error code; the others (env errors, crashed sandboxes) are 500."""


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(body), status, headers, media_type="application/json")


def _response(frame: ServerFrame, session_id: str | None = None) -> Response:
    headers = {SESSION_HEADER: session_id} if session_id else {}
    match frame:
        case Result():
            body = result_payload(
                unpack(frame.observation), frame.reward, frame.terminated, frame.truncated, unpack(frame.info)
            )
            return _json(body, headers=headers)
        case StateReply():
            return _json(unpack(frame.state), headers=headers)
        case Closed():
            return _json({"closed": True, "reason": frame.reason}, headers=headers)
        case Error():
            body = {"detail": frame.message, "code": frame.code}
            if frame.path is not None:
                body["path"] = frame.path
            if frame.retry_after is not None:
                headers["Retry-After"] = str(max(1, round(frame.retry_after)))
            return _json(body, _STATUS.get(frame.code, 500), headers)
    return _json({"detail": f"unexpected reply {type(frame).__name__}", "code": ErrorCode.INTERNAL}, 500, headers)


def _endpoint(handler: Callable[[HTTPRequest], Awaitable[Response]]) -> Callable[[HTTPRequest], Awaitable[Response]]:
    """Answer our typed errors as JSON with their HTTP status."""

    @functools.wraps(handler)
    async def endpoint(request: HTTPRequest) -> Response:
        try:
            return await handler(request)
        except OpenEnvWSError as exc:
            return _response(exc.to_frame())

    return endpoint


def _http(request: HTTPRequest) -> HttpSessions:
    sessions = getattr(request.app.state, "openenv_http", None)
    if sessions is None:
        sessions = request.app.state.openenv_http = HttpSessions(_manager(request.app))
    return sessions


async def _body(request: HTTPRequest) -> dict[str, Any]:
    raw = await request.body()
    return _json_object(raw, _manager(request.app).config.max_frame_bytes, "the body") if raw.strip() else {}


@_endpoint
async def http_reset(request: HTTPRequest) -> Response:
    """Reset the episode named by ``X-Session-Id``, or open a new session (a new sandbox) and reset it."""
    frame = _reset_frame(await _body(request))
    http = _http(request)
    session = http.find(request) or await http.open(request)
    return await http.run(request, session, frame)


@_endpoint
async def http_step(request: HTTPRequest) -> Response:
    body = await _body(request)
    http = _http(request)
    session = http.require(request)
    if "action" not in body:
        raise _bad("the body needs 'action'")
    return await http.run(request, session, _step_frame(body["action"], _takes_metadata(session.spec)))


@_endpoint
async def http_state(request: HTTPRequest) -> Response:
    http = _http(request)
    return await http.run(request, http.require(request), GetState())


@_endpoint
async def http_close(request: HTTPRequest) -> Response:
    """End the episode and stop its sandbox now (not in OpenEnv; otherwise it is reaped when idle)."""
    http = _http(request)
    session = http.require(request)
    response = await http.run(request, session, Close())
    http.locks.pop(session.id, None)
    return response


async def http_health(request: HTTPRequest) -> Response:
    """``healthy`` (200), ``degraded`` at capacity (200: no new session now), ``unhealthy`` while draining (503)."""
    health = _manager(request.app).health()
    if health["status"] != "ok":
        return _json({"status": "unhealthy"}, 503)
    return _json({"status": "healthy" if health["capacity_left"] > 0 else "degraded"})


@_endpoint
async def http_schema(request: HTTPRequest) -> Response:
    schemas = _manager(request.app)._spec(_env_name(request)).schemas
    return _json({"action": schemas["action"], "observation": schemas["observation"], "state": schemas["state"]})


@_endpoint
async def http_metadata(request: HTTPRequest) -> Response:
    spec = _manager(request.app)._spec(_env_name(request))
    doc = inspect.getdoc(spec.cls) or ""
    description = doc.split("\n\n")[0].replace("\n", " ").strip() or f"{spec.name} environment"
    return _json({"name": spec.name, "description": description, "readme_content": _readme(spec)})


def _readme(spec: EnvSpec, limit: int = 1 << 16) -> str | None:
    """The README.md beside the environment's module, if there is one."""
    try:
        path = Path(inspect.getfile(spec.cls)).parent / "README.md"
        return path.read_text(errors="replace")[:limit] if path.is_file() else None
    except (OSError, TypeError):
        return None


_OPENAPI_PATHS = {
    "/reset": ("post", "Reset the episode (opens a session when no X-Session-Id is sent)"),
    "/step": ("post", "Apply one action in the session named by X-Session-Id"),
    "/state": ("get", "The state of the session named by X-Session-Id"),
    "/close": ("post", "End the session named by X-Session-Id"),
    "/health": ("get", "Health: healthy, degraded (at capacity) or unhealthy (draining)"),
    "/schema": ("get", "JSON Schemas of action, observation and state"),
    "/metadata": ("get", "Name and description of the environment"),
    "/mcp": ("post", "JSON-RPC 2.0 (MCP): openenv-ws environments expose no tools"),
}


async def http_openapi(request: HTTPRequest) -> Response:
    """Enough of an OpenAPI document for OpenEnv's ``validate`` to tell the API version and mode."""
    paths = {
        path: {method: {"summary": summary, "responses": {"200": {"description": "OK"}}}}
        for path, (method, summary) in _OPENAPI_PATHS.items()
    }
    info = {"title": "openenv-ws: OpenEnv-compatible API", "version": "1.0.0"}
    return _json({"openapi": "3.1.0", "info": info, "paths": paths})


def _rpc_error(code: int, message: str, request_id: Any = None) -> Response:
    return _json({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": request_id})


async def http_mcp(request: HTTPRequest) -> Response:
    """JSON-RPC 2.0 as OpenEnv's ``/mcp`` answers it; ``tools/list`` is empty (our envs have no MCP tools)."""
    try:
        body = _json_decoder.decode(await request.body())
    except msgspec.DecodeError:
        return _rpc_error(-32700, "Parse error")
    if not isinstance(body, dict) or body.get("jsonrpc") != "2.0" or not isinstance(body.get("method"), str):
        return _rpc_error(-32600, "Invalid Request", body.get("id") if isinstance(body, dict) else None)
    if body["method"] == "tools/list":
        return _json({"jsonrpc": "2.0", "result": {"tools": []}, "id": body.get("id")})
    return _rpc_error(-32601, f"Method not found: {body['method']}", body.get("id"))


_HTTP_ROUTES = [
    ("/reset", http_reset, "POST"),
    ("/step", http_step, "POST"),
    ("/state", http_state, "GET"),
    ("/close", http_close, "POST"),
    ("/health", http_health, "GET"),
    ("/schema", http_schema, "GET"),
    ("/metadata", http_metadata, "GET"),
    ("/mcp", http_mcp, "POST"),
    ("/openapi.json", http_openapi, "GET"),
]


def routes() -> list[BaseRoute]:
    """OpenEnv's routes at the root (the first environment, or ``?env=``) and under ``/envs/{env}``."""
    result: list[BaseRoute] = []
    for prefix in ("", "/envs/{env}"):
        result += [Route(prefix + path, handler, methods=[method]) for path, handler, method in _HTTP_ROUTES]
        result.append(WebSocketRoute(prefix + "/ws", openenv_socket))
    return result
