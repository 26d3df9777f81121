"""One client WebSocket holding one session (``WS /v1/sessions``): a :class:`FrameSink`.

Frames are decoded at the edge (bad ones are answered here and never reach the session),
replies go out in the encoding the client last used, one send at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import MutableMapping
from typing import Any

import anyio
from starlette.websockets import WebSocket

from ..errors import OpenEnvWSError
from ..protocol import (
    ClientFrame,
    Error,
    ErrorCode,
    Open,
    Ping,
    Pong,
    ProtocolViolation,
    ServerFrame,
    decode_client,
    encode,
    guess_seq,
    json_to_msgpack,
    msgpack_to_json,
)
from .access import open_as, open_failure
from .sessions import Session, SessionManager

log = logging.getLogger("openenv_ws.server")

Message = MutableMapping[str, Any]

# WebSocket close codes the server uses.
CLOSE_POLICY = 1008  # unauthorized, no open frame, a fatal error
CLOSE_TRY_AGAIN_LATER = 1013  # capacity, shutting down


class Disconnected(Exception):
    pass


class BadFrame(OpenEnvWSError):
    """A frame that could not be accepted; ``seq`` is its best-guess request number."""

    def __init__(self, message: str, *, code: str, seq: int) -> None:
        super().__init__(message, code=code)
        self.seq = seq


class Connection:
    def __init__(self, websocket: WebSocket, max_frame_bytes: int, max_held: int) -> None:
        self.websocket = websocket
        self.max_frame_bytes = max_frame_bytes
        self.max_held = max_held
        self.json = False  # answer in the encoding the client last used
        self.open = True
        client = websocket.client
        self.peer = f"{client.host}:{client.port}" if client else "?"
        self.session: Session | None = None
        self._send_lock = anyio.Lock(fast_acquire=True)
        # Requests are applied in the reader's own task (no task per request), so while one runs
        # nobody reads. A request that runs long gets a reader aside (slow_request), which keeps
        # what arrives for the main loop and notices a client that left. It keeps at most
        # ``max_held`` messages (what the session could queue): past that it stops reading, and
        # what the client sends next waits in the socket, held back by TCP, not in our memory.
        self._aside: asyncio.Task[None] | None = None
        self._early: deque[Message] = deque()

    def slow_request(self) -> None:
        if self._aside is None and self.open:
            self._aside = asyncio.get_running_loop().create_task(self._read_aside())

    async def _read_aside(self) -> None:
        while len(self._early) < self.max_held:
            message = await self.websocket.receive()
            self._early.append(message)
            if message["type"] == "websocket.disconnect":
                self.open = False
                if self.session is not None:
                    self.session.detach(self)  # the grace period starts now, not when the request ends
                return

    async def _next_message(self) -> Message:
        aside, self._aside = self._aside, None
        if aside is not None and not aside.done():
            aside.cancel()  # safe: a message not yet taken stays in the server's queue
            with contextlib.suppress(asyncio.CancelledError):
                await aside
        if self._early:
            return self._early.popleft()
        return await self.websocket.receive()

    async def receive(self) -> ClientFrame:
        message = await self._next_message()
        if message["type"] == "websocket.disconnect":
            self.open = False
            raise Disconnected
        data = message.get("bytes")
        if data is None:
            text = message.get("text") or ""
            self.json = True
            return self._decode(text, lambda: json_to_msgpack(text), len(text.encode()))
        self.json = False
        return self._decode(data, lambda: data, len(data))

    def _decode(self, original: bytes | str, canonical, size: int) -> ClientFrame:
        if size > self.max_frame_bytes:
            raise BadFrame(
                f"frame of {size} bytes exceeds the limit of {self.max_frame_bytes}",
                code=ErrorCode.FRAME_TOO_LARGE,
                seq=guess_seq(original),
            )
        try:
            return decode_client(canonical())
        except ProtocolViolation as exc:
            message = f"malformed frame: {exc}"
            raise BadFrame(message, code=ErrorCode.MALFORMED_FRAME, seq=guess_seq(original)) from None

    async def send(self, frame: ServerFrame, data: bytes) -> None:
        """Send one frame (its canonical MessagePack bytes); a closed socket is silently skipped."""
        if not self.open:
            return
        async with self._send_lock:
            try:
                if self.json:
                    await self.websocket.send({"type": "websocket.send", "text": msgpack_to_json(data)})
                else:
                    await self.websocket.send({"type": "websocket.send", "bytes": data})
            except Exception:
                self.open = False

    async def send_frame(self, frame: ServerFrame) -> None:
        await self.send(frame, encode(frame))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.open:
            return
        self.open = False
        async with self._send_lock:
            try:
                await self.websocket.close(code, reason)
            except Exception:
                pass


async def session_socket(websocket: WebSocket) -> None:
    manager: SessionManager = websocket.app.state.manager
    conn = Connection(websocket, manager.config.max_frame_bytes, max_held=manager.config.max_queue + 1)
    await websocket.accept()
    manager.metrics.connection_accepted("session")
    session: Session | None = None
    try:
        session = await open_session(manager, conn)
        if session is None:
            return
        conn.session = session
        while not session.closed:
            try:
                frame = await conn.receive()
            except BadFrame as exc:
                await conn.send_frame(exc.to_frame(exc.seq))
                continue
            if isinstance(frame, Ping):
                await conn.send_frame(Pong(seq=frame.seq))
            elif isinstance(frame, Open):
                await conn.send_frame(
                    Error(
                        seq=frame.seq,
                        code=ErrorCode.UNEXPECTED_FRAME,
                        message="this socket already holds a session",
                    )
                )
            else:
                await session.submit(frame, conn)
    except Disconnected:
        pass
    finally:
        if session is not None:
            session.detach(conn)


async def _receive_open(conn: Connection) -> Open:
    """Read frames until one is ``open``, answering anything else with an error."""
    while True:
        try:
            frame = await conn.receive()
        except BadFrame as exc:
            await conn.send_frame(exc.to_frame(exc.seq))
            continue
        if isinstance(frame, Open):
            return frame
        if isinstance(frame, Ping):
            await conn.send_frame(Pong(seq=frame.seq))
            continue
        message = "open a session first: the first frame must be 'open'"
        await conn.send_frame(Error(seq=frame.seq, code=ErrorCode.UNEXPECTED_FRAME, message=message))


async def open_session(manager: SessionManager, conn: Connection) -> Session | None:
    """Wait (bounded) for the ``open`` frame; answer ``opened`` or a fatal error."""
    frame: Open | None = None
    with anyio.move_on_after(manager.config.open_timeout):
        frame = await _receive_open(conn)
    if frame is None:
        message = f"no 'open' frame within {manager.config.open_timeout}s"
        await conn.send_frame(Error(code=ErrorCode.TIMEOUT, message=message, fatal=True))
        await conn.close(CLOSE_POLICY, "no open frame")
        return None
    try:
        session = await open_as(conn.websocket, frame, conn)
    except OpenEnvWSError as exc:
        exc.fatal = True
        await conn.send_frame(exc.to_frame(frame.seq))
        code = CLOSE_TRY_AGAIN_LATER if exc.retry_after is not None else CLOSE_POLICY
        await conn.close(code, exc.code)
        return None
    except Exception as exc:
        log.exception("opening a session failed")
        await conn.send_frame(Error(seq=frame.seq, code=ErrorCode.INTERNAL, message=open_failure(exc), fatal=True))
        await conn.close(1011, "internal error")
        return None
    await conn.send_frame(session.opened_frame(frame.seq, resumed=bool(frame.session_id)))
    return session
