"""Where a session's frames go: the one interface every transport implements for a session.

A plain WebSocket connection, a channel of a multiplexed connection, an OpenEnv ``/ws``
link and an HTTP request each implement :class:`FrameSink`. The session hands over each
frame both as the object and as its canonical MessagePack bytes, encoded once: a byte pipe
sends the bytes, a translator (OpenEnv's JSON, an HTTP response) reads the object, and no
one decodes what the session has just encoded.
"""

from __future__ import annotations

from typing import Protocol

from ..protocol import ServerFrame


class FrameSink(Protocol):
    peer: str
    """Who is at the other end (``host:port``), for the inspector and the logs."""

    @property
    def open(self) -> bool:
        """False once nothing sent here can reach the client any more."""
        ...

    async def send(self, frame: ServerFrame, data: bytes) -> None:
        """Deliver ``frame`` (``data`` is its MessagePack encoding). Never raises for a gone peer."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Release the transport (or the sink's share of it). Idempotent."""
        ...

    def slow_request(self) -> None:
        """A request of this sink's session runs long. A sink that notices a lost peer only when it
        reads (the plain connection applies requests in its reader) starts reading aside now, so a
        client that left is detached without waiting for the request. Others do nothing."""
        ...
