"""OpenEnv's WebSocket endpoint ``/ws``: its JSON messages in, one of our sessions behind, its JSON out.

An OpenEnv client (``EnvClient``, ``GenericEnvClient``, their ``.sync()`` wrappers) sends
``reset``/``step``/``state``/``close`` messages and reads ``observation``/``state``/``error``
ones. Each socket is one of our sessions, opened with the socket (OpenEnv sends no open
message): it gets its own sandbox, counts against ``--max-sessions``, is reaped when idle,
and ends with its socket (an OpenEnv client cannot resume, so nothing is kept for it).
Requests are numbered here, so :meth:`Session.submit` applies them exactly as it applies ours.
"""

from __future__ import annotations

import logging

import anyio
import msgspec
from starlette.websockets import WebSocket

from ..errors import OpenEnvWSError
from ..protocol import Error, ErrorCode, Open, ServerFrame, encode
from ..server.access import open_as
from ..server.connection import CLOSE_POLICY, CLOSE_TRY_AGAIN_LATER
from ..server.sessions import Session, SessionManager
from .http import peer, requested_env
from .wire import BadMessage, json_object, openenv_message, request_frame, takes_metadata

log = logging.getLogger("openenv_ws.server")

_json_encoder = msgspec.json.Encoder()


class OpenEnvLink:
    """The :class:`FrameSink` of one ``/ws`` socket: our frames out as OpenEnv's JSON text messages."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.peer = peer(websocket)
        self._open = True
        self._send_lock = anyio.Lock(fast_acquire=True)

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
        message = openenv_message(frame)
        if message is None or not self._open:
            return
        async with self._send_lock:
            try:
                await self.websocket.send({"type": "websocket.send", "text": _json_encoder.encode(message).decode()})
            except Exception:
                self._open = False

    def slow_request(self) -> None:
        pass  # an OpenEnv session ends with its socket; the deadline bounds a stuck request

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self._open:
            return
        self._open = False
        async with self._send_lock:
            try:
                await self.websocket.close(code, reason)
            except Exception:
                pass


async def serve_socket(manager: SessionManager, websocket: WebSocket) -> None:
    """Serve one ``/ws`` client: a session for the socket's lifetime."""
    env = requested_env(websocket)
    spec = manager.specs.get(env or manager.default_env)  # unknown: the open below says so
    metadata = takes_metadata(spec.schemas["action"] if spec is not None else None)
    limit = manager.config.max_frame_bytes
    link = OpenEnvLink(websocket)
    await websocket.accept()
    session = await _open(link, env)
    if session is None:
        return
    seq = 0
    try:
        while not session.closed:
            message = await link.receive()
            if message is None:
                break
            try:
                frame = request_frame(json_object(message, limit, "a message"), metadata)
            except BadMessage as exc:
                error = exc.to_frame()
                await link.send(error, encode(error))
                continue
            seq += 1
            frame.seq = seq
            await session.submit(frame, link)
    finally:
        await session.close("client disconnected", notify=False)


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
