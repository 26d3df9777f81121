"""Length-prefixed MessagePack frames over a byte stream (server <-> sandbox worker)."""

from __future__ import annotations

import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from ..protocol import Frame, encode

MAX_FRAME = 64 * 1024 * 1024
"""Default for the largest frame a peer may send (``ServerConfig.max_sandbox_frame_bytes``)."""


class FrameTooLarge(anyio.BrokenResourceError):
    """The peer announced a frame over the limit: the channel cannot be read any further."""


class FrameChannel:
    def __init__(self, stream: anyio.abc.ByteStream, max_frame: int = MAX_FRAME) -> None:
        self._stream = stream
        self._reader = BufferedByteReceiveStream(stream)
        self.max_frame = max_frame

    async def send(self, frame: Frame) -> None:
        data = encode(frame)
        await self._stream.send(len(data).to_bytes(4, "big") + data)

    async def receive(self) -> bytes:
        """One frame's bytes. Raises ``anyio.EndOfStream``/``IncompleteRead`` when the peer is gone."""
        size = int.from_bytes(await self._reader.receive_exactly(4), "big")
        if size > self.max_frame:
            raise FrameTooLarge(f"the sandbox sent a frame of {size} bytes, over the limit of {self.max_frame}")
        return await self._reader.receive_exactly(size)

    async def aclose(self) -> None:
        await self._stream.aclose()
