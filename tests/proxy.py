"""A TCP proxy the test controls: it forwards to a server and can cut every connection at once."""

from __future__ import annotations

import anyio
import anyio.abc


class CuttableProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self._links: set[anyio.CancelScope] = set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started(self.port)
        await listener.serve(self._link)

    async def _link(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", self.target_port)
            except OSError:
                return
            async with upstream:
                with anyio.CancelScope() as scope:
                    self._links.add(scope)
                    try:
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(self._pump, client, upstream, tg.cancel_scope)
                            tg.start_soon(self._pump_down, upstream, client, tg.cancel_scope)
                    finally:
                        self._links.discard(scope)

    async def _pump_down(self, src: anyio.abc.ByteStream, dst: anyio.abc.ByteStream, scope: anyio.CancelScope) -> None:
        """What the server sends to the client (a subclass may hold it back)."""
        await self._pump(src, dst, scope)

    @staticmethod
    async def _pump(src: anyio.abc.ByteStream, dst: anyio.abc.ByteStream, scope: anyio.CancelScope) -> None:
        try:
            async for chunk in src:
                await dst.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        scope.cancel()

    def cut(self) -> int:
        """Drop every open connection abruptly (no WebSocket close handshake)."""
        links = list(self._links)
        for scope in links:
            scope.cancel()
        self.cuts += len(links)
        return len(links)
