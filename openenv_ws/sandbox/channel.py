"""Length-prefixed MessagePack frames over a byte stream (server <-> sandbox worker)."""

from __future__ import annotations

import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from ..protocol import Frame, encode

MAX_FRAME = 256 * 1024 * 1024


class FrameChannel:
    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self._reader = BufferedByteReceiveStream(stream)

    async def send(self, frame: Frame) -> None:
        data = encode(frame)
        await self._stream.send(len(data).to_bytes(4, "big") + data)

    async def receive(self) -> bytes:
        """One frame's bytes. Raises ``anyio.EndOfStream``/``IncompleteRead`` when the peer is gone."""
        size = int.from_bytes(await self._reader.receive_exactly(4), "big")
        if size > MAX_FRAME:
            raise anyio.BrokenResourceError(f"frame of {size} bytes exceeds {MAX_FRAME}")
        return await self._reader.receive_exactly(size)

    async def aclose(self) -> None:
        await self._stream.aclose()
