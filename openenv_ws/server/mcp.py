"""A session's tools over MCP: ``POST /v1/sessions/{session_id}/mcp``, MCP's streamable HTTP transport.

Any MCP client (the official SDK's ``streamablehttp_client`` and ``ClientSession``) lists the
session's tools and calls them. Each ``tools/call`` is a step of that session, numbered here
and applied through :meth:`Session.submit` like any other request: counted, recorded, applied
exactly once, in order with the session's other requests. The session's own client (say a
trainer's WebSocket) stays attached: the frames of a call are passed on to it as well, and its
numbering continues after them (:mod:`openenv_ws.core.client`). One driver at a time: a
WebSocket client should not send while an MCP client calls tools in the same session.

The credential is the session's resume token, in the ``X-Resume-Token`` header (or as
``Authorization: Bearer`` on a server without tokens, where that header is free), whoever the
caller is (as in :mod:`openenv_ws.server.access`, the resume token lets any valid caller act on
its session). A call's answer is MCP's ``CallToolResult``: the observation as text and
structured content, ``isError`` for a tool's own error or a step the session refused (bad
arguments, no episode, an env failure: the model reads why), and the step's reward,
termination and ``info`` under ``_meta["openenv_ws"]``. A client that sends a ``progressToken`` and accepts SSE gets the
step's streamed events as progress notifications first.

Written on Starlette rather than with the SDK's server, so that a call is one request of the
session (its exactly-once numbering, its credential) and not a server of its own; no MCP session
(``Mcp-Session-Id``) is issued: the URL names the session.
"""

from __future__ import annotations

import logging
import secrets
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import msgspec
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response, StreamingResponse

from ..protocol import RESUME_TOKEN_HEADER, Closed, Error, ErrorCode, Event, Result, ServerFrame, Step, pack, unpack
from ..toolbox import mcp_result, result_text
from ..version import __version__
from .identity import ANONYMOUS, identity_of
from .sessions import Session, SessionManager
from .sink import FrameSink

log = logging.getLogger("openenv_ws.server")

PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
"""MCP revisions this endpoint answers (the newest is offered to a client that asks for another)."""

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, SERVER_ERROR = -32700, -32600, -32601, -32602, -32000

READABLE = frozenset(
    {
        ErrorCode.VALIDATION,
        ErrorCode.NO_EPISODE,
        ErrorCode.EPISODE_ENDED,
        ErrorCode.ENV_ERROR,
        ErrorCode.TIMEOUT,
        ErrorCode.SANDBOX_CRASHED,
    }
)
"""Step errors a call answers as a tool result the model reads (``isError``); others are JSON-RPC errors."""

_json = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()


class RpcError(Exception):
    """A JSON-RPC error to answer with (``code``, ``message``, ``data``), and the HTTP status to send it with."""

    def __init__(self, code: int, message: str, status: int = 200, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.status, self.data = code, message, status, data


def _response(body: Any, status: int = 200) -> Response:
    return Response(_json.encode(body), status, media_type="application/json")


def _error_body(request_id: Any, exc: RpcError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.data is not None:
        error["data"] = exc.data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


# ---------------------------------------------------------------- the sinks of one call


class _Collected:
    """What the session sends for one call: its events (to ``on_event``) and its final reply."""

    def __init__(self, seq: int, on_event: Callable[[Event], Awaitable[None]] | None) -> None:
        self.seq = seq
        self.on_event = on_event
        self.reply: ServerFrame | None = None
        self.ended = anyio.Event()

    async def take(self, frame: ServerFrame) -> None:
        if frame.seq != self.seq:
            return
        if isinstance(frame, Event):
            if self.on_event is not None:
                await self.on_event(frame)
        else:
            self.reply = frame
            self.ended.set()


class _Refusals:
    """The sink :meth:`Session.submit` answers a refused request on (queue full, closed): the caller only."""

    def __init__(self, collected: _Collected, peer: str) -> None:
        self.collected = collected
        self.peer = peer

    @property
    def open(self) -> bool:
        return True

    async def send(self, frame: ServerFrame, data: bytes) -> None:
        await self.collected.take(frame)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass

    def slow_request(self) -> None:
        pass


class _Tee:
    """The sink attached while a call runs: keeps the call's frames and passes every frame on to the
    session's own client (``previous``), which stays the session's connection."""

    def __init__(self, collected: _Collected, previous: FrameSink | None, peer: str) -> None:
        self.collected = collected
        self.previous = previous
        self.peer = peer
        self._open = True

    @property
    def open(self) -> bool:
        return self._open

    async def send(self, frame: ServerFrame, data: bytes) -> None:
        if self.previous is not None:
            await self.previous.send(frame, data)
        await self.collected.take(frame)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """The session ended, or a resumed connection took it over: the call's reply will not come here."""
        self._open = False
        self.collected.ended.set()
        if self.previous is not None:
            await self.previous.close(code, reason)

    def slow_request(self) -> None:
        """Nothing to do: the session's own client is not applying this call, so its reader is reading."""


# ---------------------------------------------------------------- the endpoint


class SessionTools:
    """``/v1/sessions/{session_id}/mcp`` for every session of ``manager``; :meth:`endpoint` is the route.

    :meth:`list_tools` and :meth:`call_tool` are what other routes map onto (OpenEnv's ``/mcp``):
    a session's tools in MCP's form, and one call as the session's next step. Take the server's
    one instance with :meth:`of`, so that every route's calls of a session wait for each other.
    """

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self._locks: weakref.WeakKeyDictionary[Session, anyio.Lock] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, manager: SessionManager) -> SessionTools:
        """The one :class:`SessionTools` of ``manager``'s server."""
        found = _instances.get(manager)
        if found is None:
            found = _instances[manager] = cls(manager)
        return found

    async def endpoint(self, request: HTTPRequest) -> Response:
        if request.method != "POST":
            return Response(status_code=405, headers={"Allow": "POST"})  # no server-initiated stream, no MCP session
        request_id: Any = None
        try:
            message = await self._message(request)
            request_id = message.get("id")
            session = self._session(request)
            method = message["method"]
            if "id" not in message:  # a notification (initialized, cancelled...): nothing to answer
                return Response(status_code=202)
            params = message.get("params") or {}
            if not isinstance(params, dict):
                raise RpcError(INVALID_PARAMS, "params must be an object")
            if method == "tools/call":
                return await self._call(request, session, request_id, params)
            return _response({"jsonrpc": "2.0", "id": request_id, "result": self._answer(session, method, params)})
        except RpcError as exc:
            return _response(_error_body(request_id, exc), exc.status)

    # ------------------------------------------------------------ what a request is

    def _session(self, request: HTTPRequest) -> Session:
        version = request.headers.get("mcp-protocol-version")
        if version is not None and version not in PROTOCOL_VERSIONS:
            raise RpcError(INVALID_REQUEST, f"unsupported MCP-Protocol-Version {version!r}", 400)
        given = request.headers.get(RESUME_TOKEN_HEADER)
        if given is None and identity_of(request.scope) is ANONYMOUS:  # no server tokens: Authorization is free
            scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
            given = credentials.strip() if scheme.lower() == "bearer" else None
        if not given:
            message = f"unauthorized: send the session's resume token as {RESUME_TOKEN_HEADER}"
            raise RpcError(SERVER_ERROR, message, 401)
        session = self.manager.get(request.path_params["session_id"])
        if session is None or not secrets.compare_digest(session.token.encode(), given.encode(errors="replace")):
            self.manager.metrics.access_denied()
            raise RpcError(SERVER_ERROR, "no such session (unknown, closed, or the token is wrong)", 404)
        return session

    async def _message(self, request: HTTPRequest) -> dict[str, Any]:
        body = await request.body()  # at most max_body_bytes: the server's BodyLimit refused more with 413
        try:
            message = _json_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise RpcError(PARSE_ERROR, f"parse error: {exc}", 400) from None
        if isinstance(message, list):
            raise RpcError(INVALID_REQUEST, "batches are not supported", 400)
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise RpcError(INVALID_REQUEST, "not a JSON-RPC 2.0 message", 400)
        if "method" not in message:  # a response to a request of ours: we send none
            raise RpcError(INVALID_REQUEST, "this server sends no requests to answer", 400)
        if not isinstance(message["method"], str):
            raise RpcError(INVALID_REQUEST, "method must be a string", 400)
        return message

    # ------------------------------------------------------------ answers

    def _answer(self, session: Session, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "initialize":
            asked = params.get("protocolVersion")
            return {
                "protocolVersion": asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[-1],
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": "openenv-ws", "version": __version__},
                "instructions": f"The tools of one {session.spec.name} episode (session {session.id}).",
            }
        if method == "ping":
            return {}
        if method == "tools/list":
            return {"tools": self.list_tools(session)}
        raise RpcError(METHOD_NOT_FOUND, f"method not found: {method}")

    def list_tools(self, session: Session) -> list[dict[str, Any]]:
        """The session's tools as MCP's ``Tool`` objects."""
        return [mcp_tool(tool) for tool in session.spec.tools]

    async def call_tool(
        self,
        session: Session,
        name: str,
        arguments: dict[str, Any],
        *,
        peer: str = "mcp",
        on_event: Callable[[Event], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """Call a tool as the session's next step; MCP's ``CallToolResult``, or :class:`RpcError`."""
        frame = Step(action=pack({"tool": name, "arguments": arguments}))
        return call_result(await self._apply(session, frame, on_event, peer))

    async def _call(self, request: HTTPRequest, session: Session, request_id: Any, params: dict[str, Any]) -> Response:
        name, arguments = params.get("name"), params.get("arguments") or {}
        if not isinstance(name, str) or not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, "tools/call needs 'name' (a string) and 'arguments' (an object)")
        token = (params.get("_meta") or {}).get("progressToken")
        peer = f"{request.client.host}:{request.client.port} (mcp)" if request.client else "mcp"
        if token is None or "text/event-stream" not in request.headers.get("accept", ""):
            result = await self.call_tool(session, name, arguments, peer=peer)
            return _response({"jsonrpc": "2.0", "id": request_id, "result": result})
        events = self._stream(session, name, arguments, peer, request_id, token)
        return StreamingResponse(events, media_type="text/event-stream")

    async def _stream(
        self, session: Session, name: str, arguments: dict[str, Any], peer: str, request_id: Any, token: Any
    ) -> AsyncIterator[bytes]:
        """Server-sent events: a progress notification per event the step streams, then the answer."""
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](64)

        async def progress(event: Event) -> None:
            text = result_text(unpack(event.data))
            params = {"progressToken": token, "progress": event.index + 1, "message": text}
            await send.send({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})

        async def run() -> None:
            async with send:
                try:
                    result = await self.call_tool(session, name, arguments, peer=peer, on_event=progress)
                    await send.send({"jsonrpc": "2.0", "id": request_id, "result": result})
                except RpcError as exc:
                    await send.send(_error_body(request_id, exc))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            async with receive:
                async for message in receive:
                    yield b"event: message\ndata: " + _json.encode(message) + b"\n\n"

    # ------------------------------------------------------------ one call as a step of the session

    async def _apply(
        self,
        session: Session,
        frame: Step,
        on_event: Callable[[Event], Awaitable[None]] | None,
        peer: str,
    ) -> ServerFrame:
        """Number ``frame`` after the session's last request, apply it, and wait for its reply.

        Calls of one session go one at a time (at most ``max_queue`` wait). The step runs in a task
        of the server's, not the request's: a client that hangs up does not cut a step in half.
        """
        lock = self._locks.setdefault(session, anyio.Lock())
        if lock.statistics().tasks_waiting >= self.manager.config.max_queue:
            data = {"code": ErrorCode.QUEUE_FULL, "retry_after": self.manager.config.retry_after}
            raise RpcError(SERVER_ERROR, "too many tool calls already wait in this session", data=data)
        async with lock:
            if session.closed:
                raise RpcError(SERVER_ERROR, f"session closed: {session.close_reason}", 404)
            frame.seq = session.applied + 1
            collected = _Collected(frame.seq, on_event)
            previous = session.sink
            tee = _Tee(collected, previous, peer)
            session.attach(tee, 0)  # 0: the reply cache is kept for the session's own client
            try:
                await session.submit(frame, _Refusals(collected, peer), inline=False)
                await collected.ended.wait()
            finally:
                if session.sink is tee:
                    if previous is not None and previous.open:
                        session.attach(previous, 0)
                    else:
                        session.detach(tee)
        if collected.reply is None:
            raise RpcError(SERVER_ERROR, f"the session ended during the call: {session.close_reason or 'taken over'}")
        return collected.reply


_instances: weakref.WeakKeyDictionary[SessionManager, SessionTools] = weakref.WeakKeyDictionary()


def call_result(reply: ServerFrame) -> dict[str, Any]:
    """A tool call's reply frame as MCP's ``CallToolResult``; :class:`RpcError` for what is no result."""
    meta: dict[str, Any] = {"seq": reply.seq}
    if isinstance(reply, Result):
        info = unpack(reply.info) or {}
        meta.update(reward=reply.reward, terminated=reply.terminated, truncated=reply.truncated, info=info)
        return mcp_result(unpack(reply.observation), info, {"openenv_ws": meta})
    if isinstance(reply, Error) and reply.code in READABLE:
        where = f" (at {reply.path})" if reply.path else ""
        meta["error"] = {"code": reply.code, "path": reply.path, "fatal": reply.fatal}
        text = f"{reply.code}: {reply.message}{where}"
        return {"content": [{"type": "text", "text": text}], "isError": True, "_meta": {"openenv_ws": meta}}
    if isinstance(reply, Error):
        raise RpcError(SERVER_ERROR, reply.message, data={"code": reply.code, "retry_after": reply.retry_after})
    reason = reply.reason if isinstance(reply, Closed) else type(reply).__name__
    raise RpcError(SERVER_ERROR, f"the session ended before the call was answered: {reason}")


def mcp_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A published tool (``input_schema``) as MCP's ``Tool`` (``inputSchema``, ``outputSchema``)."""
    out = {"name": tool["name"], "description": tool.get("description", ""), "inputSchema": tool["input_schema"]}
    if tool.get("output_schema") is not None:
        out["outputSchema"] = tool["output_schema"]
    return out
