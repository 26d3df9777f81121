"""OpenEnv's WebSocket endpoint ``/ws``: its JSON messages in, one of our sessions behind, its JSON out.

An OpenEnv client (``EnvClient``, ``GenericEnvClient``, their ``.sync()`` wrappers) sends
``reset``/``step``/``state``/``close`` messages and reads ``observation``/``state``/``error``
ones. Each socket is one of our sessions, opened with the socket (OpenEnv sends no open
message): it gets its own sandbox, counts against ``--max-sessions``, is reaped when idle,
and ends with its socket (an OpenEnv client cannot resume, so nothing is kept for it).
Requests are numbered here, so :meth:`Session.submit` applies them exactly as it applies ours.

Also as in OpenEnv:

- an ``mcp`` message carries a JSON-RPC request (``tools/list``, ``tools/call``...) for the
  socket's session, answered by an ``mcp`` message (:mod:`openenv_ws.openenv.mcp`); a tool call is
  a step of the session;
- a step before any reset is answered with an observation: an adapted OpenEnv environment is
  stepped as built, one of ours is reset first (its reset's answer is not sent).

An idle session is closed (``--idle-timeout``) but its socket is kept: OpenEnv's client would
reconnect into a new session without a word, so the next request is answered with an error saying
the episode is gone, and a ``reset`` opens a new session on the same socket.
``--openenv-ws-idle-timeout 0`` keeps sessions while their socket is open, as OpenEnv does.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import msgspec
from starlette.websockets import WebSocket

from ..errors import OpenEnvWSError
from ..protocol import Closed, Error, ErrorCode, Event, Open, Reset, ServerFrame, Step, encode
from ..server.access import open_as
from ..server.connection import CLOSE_POLICY, CLOSE_TRY_AGAIN_LATER
from ..server.mcp import RpcError
from ..server.sessions import Session, SessionManager
from .http import peer, requested_env
from .mcp import OpenEnvMCP, call_params, handshake, request_of, rpc_error, rpc_result, tool_answer, tool_step
from .wire import BadMessage, json_object, openenv_message, request_frame, takes_metadata

_PLAIN = object()
"""``mcp_id`` of a request that came as a plain message, not as an ``mcp`` one."""

IDLE = "idle timeout"
"""The reason the reaper gives a session closed for want of requests (``core/server.py``)."""

log = logging.getLogger("openenv_ws.server")

_json_encoder = msgspec.json.Encoder()


class OpenEnvLink:
    """The :class:`FrameSink` of one ``/ws`` socket: our frames out as OpenEnv's JSON text messages."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.peer = peer(websocket)
        self._open = True
        self._send_lock = anyio.Lock(fast_acquire=True)
        self.mcp_calls: dict[int, Any] = {}  # seq of a tool call sent as an ``mcp`` message -> its JSON-RPC id
        self.unanswered: set[int] = set()  # seq of an implicit reset: its reply is not sent
        self.expired: str | None = None  # why the session was closed while the socket stays (idle)

    @property
    def open(self) -> bool:
        return self._open

    async def receive(self) -> bytes | str | None:
        """The next message as sent (text or bytes); None once the client has gone."""
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            self._open = False
            return None
        data = message.get("bytes")
        return (message.get("text") or "") if data is None else data

    async def send(self, frame: ServerFrame, data: bytes) -> None:
        """Send ``frame`` as OpenEnv's message, if OpenEnv has one for it; a gone client is skipped."""
        if isinstance(frame, Closed) and frame.seq == 0 and frame.reason == IDLE:
            return  # said when the client next asks (see serve_socket): it is not reading now
        if frame.seq in self.unanswered:
            if not isinstance(frame, Event):
                self.unanswered.discard(frame.seq)
            return
        if frame.seq in self.mcp_calls:
            if isinstance(frame, Event):
                return
            request_id = self.mcp_calls.pop(frame.seq)
            try:
                answer = rpc_result(request_id, tool_answer(frame))
            except RpcError as exc:
                answer = rpc_error(request_id, exc.code, exc.message, exc.data)
            await self.send_json({"type": "mcp", "data": answer})
            return
        message = openenv_message(frame)
        if message is not None:
            await self.send_json(message)

    async def send_json(self, message: dict[str, Any]) -> None:
        if not self._open:
            return
        async with self._send_lock:
            try:
                await self.websocket.send({"type": "websocket.send", "text": _json_encoder.encode(message).decode()})
            except Exception:
                self._open = False

    def slow_request(self) -> None:
        pass  # an OpenEnv session ends with its socket; the deadline bounds a stuck request

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if reason == IDLE:
            self.expired = reason  # the session is gone, the socket stays: the next request is told
            return
        if not self._open:
            return
        self._open = False
        async with self._send_lock:
            try:
                await self.websocket.close(code, reason)
            except Exception:
                pass


class _Socket:
    """One ``/ws`` client: its session (a new one after an idle timeout and a reset), its numbering.

    A socket opened with ``?session_id=`` (OpenEnv's ``MCPToolClient`` does, after
    ``openenv/session/create``) drives that MCP session instead of a session of its own, through
    the same lock and numbering as the session's ``POST /mcp`` calls; the session outlives the socket.
    """

    def __init__(self, manager: SessionManager, link: OpenEnvLink, env: str | None, tools: OpenEnvMCP | None) -> None:
        self.manager = manager
        self.link = link
        self.env = env
        self.tools = tools
        self.session: Session | None = None
        self.shared = False
        self.seq = 0
        self.reset_seen = False

    async def join(self, session_id: str) -> bool:
        """Drive the HTTP/MCP session ``session_id``; a refusal is an OpenEnv error, then the socket closes."""
        if self.tools is None:
            return await self.open()
        try:
            self.session = self.tools.episodes.lookup(self.link.websocket, session_id)
        except OpenEnvWSError as exc:
            exc.fatal = True
            await self.error(exc)
            await self.link.close(CLOSE_POLICY, exc.code)
            return False
        self.shared = True
        return True

    async def open(self) -> bool:
        self.shared = False
        self.session = await _open(self.link, self.env)
        self.seq, self.reset_seen, self.link.expired = 0, False, None
        if self.session is not None and self.manager.config.openenv_ws_idle_timeout is not None:
            self.session.idle_timeout = self.manager.config.openenv_ws_idle_timeout or float("inf")
        return self.session is not None

    async def submit(self, frame: Any, *, answered: bool = True, mcp_id: Any = _PLAIN) -> None:
        assert self.session is not None
        if self.shared:
            assert self.tools is not None
            reply = await self.tools.episodes.apply(self.link.websocket, self.session, frame)
            if mcp_id is not _PLAIN:
                self.link.mcp_calls[reply.seq] = mcp_id
            await self.link.send(reply, b"")
            return
        if mcp_id is not _PLAIN:
            self.link.mcp_calls[self.seq + 1] = mcp_id
        self.seq += 1
        frame.seq = self.seq
        if not answered:
            self.link.unanswered.add(self.seq)
        await self.session.submit(frame, self.link)

    async def before_step(self) -> None:
        """OpenEnv steps an environment before any reset: ours gets one first (its answer not sent)."""
        assert self.session is not None
        if not self.reset_seen and not self.shared and not self.session.spec.cls.steps_before_reset:
            await self.submit(Reset(), answered=False)
        self.reset_seen = True

    async def error(self, exc: OpenEnvWSError) -> None:
        error = exc.to_frame()
        await self.link.send(error, encode(error))

    async def handle(self, message: dict[str, Any], metadata: bool) -> None:
        if message.get("type") == "mcp":
            await self.mcp(message.get("data"))
            return
        frame = request_frame(message, metadata)
        if isinstance(frame, Reset):
            self.reset_seen = True
        elif isinstance(frame, Step):
            await self.before_step()
        await self.submit(frame)

    async def mcp(self, data: Any) -> None:
        """An ``mcp`` message: JSON-RPC for this socket's session, answered by an ``mcp`` message."""
        assert self.session is not None
        request_id = data.get("id") if isinstance(data, dict) else None
        try:
            request_id, method, params = request_of(data)
            if method == "tools/call":
                name, arguments = call_params(params)
                await self.before_step()
                await self.submit(tool_step(name, arguments), mcp_id=request_id)
                return
            answered = handshake(method, params, self.session.spec)
            if answered is not None:
                answer = rpc_result(request_id, answered)
            elif self.tools is not None:
                answer = await self.tools.answer(self.link.websocket, data, self.session)
            else:
                answer = rpc_error(request_id, -32601, f"Method not found: {method}")
        except RpcError as exc:
            data = exc.data if not (isinstance(exc.data, dict) and set(exc.data) == {"id"}) else None
            answer = rpc_error(request_id, exc.code, exc.message, data)
        await self.link.send_json({"type": "mcp", "data": answer})


async def serve_socket(manager: SessionManager, websocket: WebSocket, tools: OpenEnvMCP | None = None) -> None:
    """Serve one ``/ws`` client: a session for the socket's lifetime (another after an idle timeout)."""
    env = requested_env(websocket)
    spec = manager.specs.get(env or manager.default_env)  # unknown: the open below says so
    metadata = takes_metadata(spec.schemas["action"] if spec is not None else None)
    limit = manager.config.max_frame_bytes
    link = OpenEnvLink(websocket)
    await websocket.accept()
    client = _Socket(manager, link, env, tools)
    shared = websocket.query_params.get("session_id")
    if not await (client.join(shared) if shared else client.open()):
        return
    try:
        while link.open:
            message = await link.receive()
            if message is None:
                break
            try:
                parsed = json_object(message, limit, "a message")
                if client.session is not None and client.session.closed:
                    if link.expired is None:
                        break  # closed by the server otherwise (shutdown, crash): the socket was closed too
                    if parsed.get("type") != "reset":
                        raise BadMessage(
                            f"this session was closed after {manager.config.idle_timeout:g} s without a request"
                            " (idle timeout) and its episode is gone: reset() starts a new one",
                            code=ErrorCode.SESSION_CLOSED,
                        )
                    if not await client.open():
                        return
                await client.handle(parsed, metadata)
            except BadMessage as exc:
                await client.error(exc)
    finally:
        if client.session is not None and not client.shared:
            await client.session.close("client disconnected", notify=False)


async def _open(link: OpenEnvLink, env: str | None) -> Session | None:
    """The socket's session; a refusal (capacity, unknown env...) goes as an OpenEnv error, then the socket closes."""
    try:
        return await open_as(link.websocket, Open(env=env), link)
    except OpenEnvWSError as exc:
        exc.fatal = True
        error = exc.to_frame()
        code, reason = (CLOSE_TRY_AGAIN_LATER if exc.retry_after is not None else CLOSE_POLICY), exc.code
    except Exception as exc:
        log.exception("opening a session failed")
        error = Error(code=ErrorCode.INTERNAL, message=str(exc), fatal=True)
        code, reason = 1011, "internal error"
    await link.send(error, encode(error))
    await link.close(code, reason)
    return None
