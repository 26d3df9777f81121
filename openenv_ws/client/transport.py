"""A client WebSocket on anyio (asyncio or trio), driving websockets' sans-I/O protocol."""

from __future__ import annotations

import os
import ssl
from collections import deque

import anyio
import anyio.abc
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from ..errors import AuthError

TOKEN_ENV = "OPENENV_WS_TOKEN"

_LOST = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class ConnectionLost(Exception):
    """The socket closed or broke; ``code``/``reason`` come from the close frame if there was one."""

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


def auth_headers(headers: dict[str, str] | None, token: str | None = None) -> dict[str, str]:
    """``headers`` plus ``Authorization: Bearer <token>``: ``token``, else ``$OPENENV_WS_TOKEN`` when set."""
    result = dict(headers or {})
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    if token and not any(name.lower() == "authorization" for name in result):
        result["Authorization"] = f"Bearer {token}"
    return result


class WebSocket:
    def __init__(self, stream: anyio.abc.ByteStream, protocol: ClientProtocol) -> None:
        self._stream = stream
        self._protocol = protocol
        self._send_lock = anyio.Lock(fast_acquire=True)
        self._messages: deque[bytes | str] = deque()
        self._fragments: list[bytes] = []
        self._fragment_text = False

    @classmethod
    async def connect(cls, url: str, *, max_size: int = 64 << 20, headers: dict[str, str] | None = None) -> WebSocket:
        uri = parse_uri(url)
        tls = ssl.create_default_context() if uri.secure else None
        stream = await anyio.connect_tcp(uri.host, uri.port, tls=uri.secure, ssl_context=tls)
        protocol = ClientProtocol(uri, max_size=max_size)
        ws = cls(stream, protocol)
        try:
            await ws._handshake(headers or {})
        except BaseException:
            await stream.aclose()
            raise
        return ws

    async def _handshake(self, headers: dict[str, str]) -> None:
        request = self._protocol.connect()
        for name, value in headers.items():
            request.headers[name] = value
        self._protocol.send_request(request)
        await self._flush()
        while True:
            try:
                data = await self._stream.receive()
            except _LOST:
                raise ConnectionLost("connection closed during the WebSocket handshake") from None
            self._protocol.receive_data(data)
            events = self._protocol.events_received()
            for index, event in enumerate(events):
                if isinstance(event, Response):
                    if self._protocol.handshake_exc is not None:
                        if event.status_code == 401:  # the server's token check (serve --token)
                            detail = event.body.decode(errors="replace")[:300] if event.body else ""
                            raise AuthError(f"the server refused the connection (HTTP 401): {detail}", fatal=True)
                        raise ConnectionLost(f"WebSocket handshake failed: {self._protocol.handshake_exc}")
                    # Frames that came in the same read as the response (a server that speaks first).
                    self._collect(events[index + 1 :])
                    await self._flush()
                    return

    async def _flush(self) -> None:
        data = b"".join(self._protocol.data_to_send())
        if data:
            async with self._send_lock:
                await self._stream.send(data)

    def _collect(self, frames: list | None = None) -> None:
        for frame in self._protocol.events_received() if frames is None else frames:
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                self._fragment_text = frame.opcode is Opcode.TEXT
                self._fragments = [frame.data]
            elif frame.opcode is Opcode.CONT:
                self._fragments.append(frame.data)
            else:
                continue
            if frame.fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self._messages.append(data.decode() if self._fragment_text else data)

    async def receive(self) -> bytes | str:
        """The next message. Only one task may call it at a time."""
        while not self._messages:
            if self._protocol.state is State.CLOSED:
                raise self._lost()
            try:
                data = await self._stream.receive()
            except _LOST:
                self._protocol.receive_eof()
                raise self._lost() from None
            except Exception as exc:  # TLS errors and the like: a lost connection all the same
                raise ConnectionLost(f"connection failed: {exc!r}") from None
            self._protocol.receive_data(data)
            self._collect()
            try:
                await self._flush()  # pongs and close replies
            except _LOST:
                pass
        return self._messages.popleft()

    def _lost(self) -> ConnectionLost:
        # close_rcvd, not close_exc: the latter asserts the connection is fully CLOSED, and a
        # connection can be lost while it is still CLOSING.
        rcvd = self._protocol.close_rcvd
        code = rcvd.code if rcvd is not None else None
        reason = rcvd.reason if rcvd is not None else ""
        return ConnectionLost(
            f"connection closed ({code or 'no close frame'}{': ' + reason if reason else ''})",
            code,
            reason,
        )

    async def send(self, data: bytes | str) -> None:
        async with self._send_lock:
            if self._protocol.state is not State.OPEN:
                raise self._lost()
            if isinstance(data, str):
                self._protocol.send_text(data.encode())
            else:
                self._protocol.send_binary(data)
            try:
                await self._stream.send(b"".join(self._protocol.data_to_send()))
            except _LOST:
                raise self._lost() from None
            except Exception as exc:
                raise ConnectionLost(f"connection failed: {exc!r}") from None

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                if self._protocol.state is State.OPEN:
                    self._protocol.send_close(1000)
                    await self._flush()
            except Exception:
                pass
            await self._stream.aclose()
