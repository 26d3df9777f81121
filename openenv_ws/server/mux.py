"""Multiplexed connections: many sessions on one WebSocket (``WS /v1/mux``).

Each message is a batch of ``[channel, frame]`` pairs (see :mod:`openenv_ws.protocol`).
A :class:`Channel` stands in for a connection as far as a :class:`Session` is concerned,
so sessions keep every guarantee they have on their own sockets: numbered requests
applied once and in order, replies cached for repeats, and resume (on any channel of any
connection, multiplexed or not) within the grace period.

Requests are applied in tasks of their own (not in the reader), so one slow session never
holds up the others on the connection. Replies are queued and flushed once per loop turn
as one batch: that amortises the per-message cost that dominates a trivial step.
"""

from __future__ import annotations

import contextlib
import logging

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
    decode_batch,
    decode_client,
    encode,
    encode_batch,
    guess_seq,
)
from .access import open_as, open_failure
from .connection import CLOSE_TRY_AGAIN_LATER
from .sessions import Session, SessionManager

log = logging.getLogger("openenv_ws.server")

MAX_BATCH = 4096
"""Frames per outgoing message at most; a longer queue goes out in several."""
MAX_BATCH_BYTES = 1 << 20
"""Bytes per outgoing message, roughly (a message holds at least one frame)."""


class Channel:
    """One session's place on a multiplexed connection: a :class:`~openenv_ws.server.sink.FrameSink`."""

    def __init__(self, mux: MuxConnection, number: int) -> None:
        self.mux = mux
        self.number = number
        self.peer = mux.peer
        self.session: Session | None = None

    @property
    def open(self) -> bool:
        return self.mux.open and self.mux.channels.get(self.number) is self

    async def send(self, frame: ServerFrame, data: bytes) -> None:
        mux = self.mux
        if mux.channels.get(self.number) is self:  # enqueue() checks the connection is open
            mux.enqueue(self.number, data)

    def slow_request(self) -> None:
        pass  # its connection's reader always reads

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Release the channel; the connection and its other sessions go on."""
        if self.mux.channels.get(self.number) is self:
            del self.mux.channels[self.number]


class MuxConnection:
    def __init__(self, websocket: WebSocket, manager: SessionManager) -> None:
        self.websocket = websocket
        self.manager = manager
        self.channels: dict[int, Channel] = {}
        self.open = True
        client = websocket.client
        self.peer = f"{client.host}:{client.port}" if client else "?"
        self._outbox: list[tuple[int, bytes]] = []
        self._outbox_bytes = 0
        self._outbox_limit = manager.config.max_mux_buffer_bytes
        self._wake = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._overflowed = False

    def enqueue(self, channel: int, data: bytes) -> None:
        if not self.open:
            return
        self._outbox.append((channel, data))
        self._outbox_bytes += len(data)
        if self._outbox_bytes > self._outbox_limit:
            self._overflow()
            return
        self._wake.set()

    def _overflow(self) -> None:
        """The client does not read what it is sent: drop the connection, not the sessions."""
        log.warning(
            "multiplexed connection from %s: %d bytes wait unread (limit %d); closing it, its %d sessions can resume",
            self.peer,
            self._outbox_bytes,
            self._outbox_limit,
            len(self.channels),
        )
        self.open = False
        self._overflowed = True
        self._outbox, self._outbox_bytes = [], 0
        if self._scope is not None:
            self._scope.cancel()

    def _error(self, channel: int, code: str, message: str, seq: int = 0, fatal: bool = False) -> None:
        self.enqueue(channel, encode(Error(seq=seq, code=code, message=message, fatal=fatal)))

    async def serve(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                tg.start_soon(self._write_loop)
                try:
                    await self._read_loop()
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self.open = False
            for channel in list(self.channels.values()):
                if channel.session is not None:
                    channel.session.detach(channel)
            if self._overflowed:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await self.websocket.close(CLOSE_TRY_AGAIN_LATER, "slow reader: outgoing buffer full")

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._outbox:
                size, cut = 0, 0
                for cut, (_, data) in enumerate(self._outbox[:MAX_BATCH], 1):  # noqa: B007
                    size += len(data)
                    if size > MAX_BATCH_BYTES:
                        break
                batch, self._outbox = self._outbox[:cut], self._outbox[cut:]
                self._outbox_bytes -= size
                try:
                    await self.websocket.send({"type": "websocket.send", "bytes": encode_batch(batch)})
                except Exception:
                    self.open = False
                    return

    async def _read_loop(self) -> None:
        limit = self.manager.config.max_frame_bytes
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                self._error(0, ErrorCode.MALFORMED_FRAME, "multiplexed connections carry MessagePack batches only")
                continue
            try:
                items = decode_batch(data)
            except ProtocolViolation as exc:
                self._error(0, ErrorCode.MALFORMED_FRAME, str(exc))
                continue
            for number, raw in items:
                if len(raw) > limit:
                    message_text = f"frame of {len(raw)} bytes exceeds the limit of {limit}"
                    self._error(number, ErrorCode.FRAME_TOO_LARGE, message_text, guess_seq(bytes(raw)))
                    continue
                try:
                    frame = decode_client(raw)
                except ProtocolViolation as exc:
                    self._error(number, ErrorCode.MALFORMED_FRAME, f"malformed frame: {exc}", guess_seq(bytes(raw)))
                    continue
                await self._handle(number, frame)

    async def _handle(self, number: int, frame: ClientFrame) -> None:
        if isinstance(frame, Ping):
            self.enqueue(number, encode(Pong(seq=frame.seq)))
            return
        channel = self.channels.get(number)
        if isinstance(frame, Open):
            if channel is not None:
                self._error(number, ErrorCode.UNEXPECTED_FRAME, f"channel {number} already holds a session", frame.seq)
                return
            limit = self.manager.config.max_sessions_per_connection
            if len(self.channels) >= limit:
                error = Error(
                    seq=frame.seq,
                    code=ErrorCode.CAPACITY,
                    message=f"this connection holds {limit} sessions already: open more connections",
                    fatal=True,
                    retry_after=self.manager.config.retry_after,
                )
                self.enqueue(number, encode(error))
                return
            channel = self.channels[number] = Channel(self, number)
            self.manager.spawn(self._open, channel, frame)
            return
        if channel is None or channel.session is None:
            self._error(number, ErrorCode.UNEXPECTED_FRAME, f"no session on channel {number}: open one", frame.seq)
            return
        await channel.session.submit(frame, channel, inline=False)

    async def _open(self, channel: Channel, frame: Open) -> None:
        try:
            session = await open_as(self.websocket, frame, channel)
        except OpenEnvWSError as exc:
            exc.fatal = True
            self.enqueue(channel.number, encode(exc.to_frame(frame.seq)))
            await channel.close()
            return
        except Exception as exc:
            log.exception("opening a multiplexed session failed")
            self._error(channel.number, ErrorCode.INTERNAL, open_failure(exc), frame.seq, fatal=True)
            await channel.close()
            return
        channel.session = session
        if not self.open:
            session.detach(channel)
            return
        self.enqueue(channel.number, encode(session.opened_frame(frame.seq, resumed=bool(frame.session_id))))


async def mux_socket(websocket: WebSocket) -> None:
    manager: SessionManager = websocket.app.state.manager
    await websocket.accept()
    manager.metrics.connection_accepted("mux")
    await MuxConnection(websocket, manager).serve()
