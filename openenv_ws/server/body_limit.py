"""A bound on every HTTP request body (``max_body_bytes``), before any route reads it.

A request that declares a longer body (``Content-Length``) gets 413 at once, with nothing
of it read; a chunked one is read until it passes the limit, then gets 413. Either way the
answer says ``Connection: close``: the connection closes once the client has had a moment to
read it (:data:`LINGER_SECONDS`, at most :data:`LINGER_BYTES` more read and dropped; closing
at once, with the client's data unread, would make TCP reset the connection and lose the
answer with it). Nothing past the limit is ever kept. A body within the limit is read here,
whole, and handed to the route as it came: routes never see more than the limit, whichever
route it is (ours, OpenEnv's, ``/mcp``, an unknown path).

A pure ASGI middleware. WebSocket scopes pass through: their frames are bounded by
``max_frame_bytes``.
"""

from __future__ import annotations

from typing import Any

import anyio

from ..protocol import ErrorCode
from .http_errors import error_body, error_headers

CLOSE = [(b"connection", b"close")]
LINGER_SECONDS = 1.0
"""After a 413, how long the server goes on reading, and dropping, what the client still sends."""
LINGER_BYTES = 16 << 20
"""After a 413, how much the server reads and drops at most before it closes the connection."""


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope["headers"])
        if declared is not None and declared > self.max_bytes:
            await self._refuse(receive, send, f"a request body of {declared} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body ended: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(receive, send, f"a request body of at least {size} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # http.disconnect, when the client goes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, receive: Any, send: Any, what: str) -> None:
        detail = f"{what} exceeds the limit of {self.max_bytes} bytes (max_body_bytes)"
        body = error_body(detail, ErrorCode.FRAME_TOO_LARGE)
        await send({"type": "http.response.start", "status": 413, "headers": error_headers(body, CLOSE)})
        await send({"type": "http.response.body", "body": body, "more_body": True})  # out now: the close waits
        await _linger(receive)
        await send({"type": "http.response.body", "body": b""})


async def _linger(receive: Any) -> None:
    """Read and drop what the client still sends, for a moment (bounded in time and bytes)."""
    dropped = 0
    with anyio.move_on_after(LINGER_SECONDS):
        while dropped < LINGER_BYTES:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return  # the client has stopped sending, or has gone
            dropped += len(message.get("body", b""))
