"""One client WebSocket: frame decoding at the edge, the reply encoding, ordered sends."""

from __future__ import annotations

import anyio
from starlette.websockets import WebSocket

from ..errors import OpenEnvWSError
from ..protocol import (
    ClientFrame,
    ErrorCode,
    Frame,
    ProtocolViolation,
    decode_client,
    encode,
    guess_seq,
    json_to_msgpack,
    msgpack_to_json,
)

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
    def __init__(self, websocket: WebSocket, max_frame_bytes: int) -> None:
        self.websocket = websocket
        self.max_frame_bytes = max_frame_bytes
        self.json = False  # answer in the encoding the client last used
        self.open = True
        client = websocket.client
        self.peer = f"{client.host}:{client.port}" if client else "?"
        self._send_lock = anyio.Lock(fast_acquire=True)

    async def receive(self) -> ClientFrame:
        message = await self.websocket.receive()
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

    async def send(self, data: bytes) -> None:
        """Send one canonical (MessagePack) frame; a closed socket is silently skipped."""
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

    async def send_frame(self, frame: Frame) -> None:
        await self.send(encode(frame))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.open:
            return
        self.open = False
        async with self._send_lock:
            try:
                await self.websocket.close(code, reason)
            except Exception:
                pass
