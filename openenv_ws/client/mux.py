"""Many sessions over a few WebSockets: ``multiplex()``.

A trainer with thousands of episodes needs thousands of sessions, not thousands of
sockets. Each :class:`MuxLink` is one WebSocket to ``/v1/mux`` carrying many sessions,
each on its own channel; frames that are ready in the same loop turn travel as one batch.
Sessions opened through a :class:`Multiplexer` are ordinary :class:`EnvSession` objects:
same API, same numbering, exactly-once and resume. When the socket drops, the link
reconnects once and resumes every session it carried, each on a new channel.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc

from ..errors import OpenEnvWSError, ProtocolError, RequestTimeoutError, SessionLostError, from_frame
from ..protocol import (
    Error,
    Open,
    Opened,
    ProtocolViolation,
    ServerFrame,
    decode_batch,
    decode_server,
    encode,
    encode_batch,
)
from .backoff import Backoff, GaveUp
from .session import EnvSession, Link, sessions_url, single_exception
from .transport import ConnectionLost, WebSocket, auth_headers

MUX_PATH = "/v1/mux"
MAX_BATCH_BYTES = 256 * 1024
"""Outgoing bytes per message at most, well under the server's message limit."""


def mux_url(url: str) -> str:
    parts = urlsplit(sessions_url(url))
    return urlunsplit((parts.scheme, parts.netloc, MUX_PATH, parts.query, ""))


class Carried(Protocol):
    """What a multiplexed link needs of a session it carries: the transport side of :class:`EnvSession`."""

    carrier: Any

    @property
    def finished(self) -> bool: ...

    def open_frame(self) -> Open: ...

    def adopt(self, opened: Opened, link: Link) -> None: ...

    def deliver(self, frame: ServerFrame) -> Awaitable[Any] | None:
        """Take a frame; an awaitable returned is awaited before the next frame (an event callback's)."""

    def fail(self, exc: OpenEnvWSError) -> None: ...

    def begin_resume(self) -> Open: ...

    async def resumed(self, link: Link) -> None: ...


class _Dropped(Exception):
    """The socket died while a channel was being opened on it."""


_DROPPED = object()


class _Channel:
    """A session's link: its channel on the link's current socket."""

    def __init__(self, link: MuxLink, number: int) -> None:
        self.link = link
        self.number = number
        self.generation = link.generation

    async def send(self, data: bytes | str) -> None:
        if self.generation != self.link.generation or not self.link.connected:
            raise ConnectionLost("the multiplexed connection is being replaced")
        assert isinstance(data, bytes)
        self.link.enqueue(self.number, data)

    async def aclose(self) -> None:
        if self.generation == self.link.generation:
            self.link.sessions.pop(self.number, None)


class MuxLink:
    """One multiplexed WebSocket and the sessions it carries."""

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        connect_timeout: float = 30.0,
        reconnect_attempts: int = 8,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        self.url = mux_url(url)
        self.headers = headers or {}
        self.connect_timeout = connect_timeout
        self.reconnect = Backoff(reconnect_attempts, backoff, max_backoff)
        self.sessions: dict[int, Carried] = {}
        self.generation = 0
        self.connected = False
        self._up = anyio.Event()  # set while connected
        self._numbers = itertools.count(1)
        self._openings: dict[int, tuple[anyio.Event, list[Any]]] = {}
        self._ws: WebSocket | None = None
        self._outbox: list[tuple[int, bytes]] = []
        self._wake = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._failure: OpenEnvWSError | None = None
        self._to_resume: list[Carried] = []

    # ------------------------------------------------------------ sending

    def enqueue(self, number: int, data: bytes) -> None:
        self._outbox.append((number, data))
        self._wake.set()

    async def _write_loop(self, ws: WebSocket) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._outbox:
                size, cut = 0, 0
                for cut, (_, data) in enumerate(self._outbox, 1):  # noqa: B007
                    size += len(data) + 8
                    if size > MAX_BATCH_BYTES:
                        break
                batch, self._outbox = self._outbox[:cut], self._outbox[cut:]
                await ws.send(encode_batch(batch))

    # ------------------------------------------------------------ opening

    async def open(self, frame: Open, timeout: float) -> tuple[int, Opened]:
        """Open (or resume) a session on a new channel; raises the server's error."""
        if self._failure is not None:
            raise self._failure
        number = next(self._numbers)
        done = anyio.Event()
        box: list[Any] = []
        self._openings[number] = (done, box)
        try:
            self.enqueue(number, encode(frame))
            with anyio.fail_after(timeout):
                await done.wait()
        except TimeoutError:
            raise RequestTimeoutError(f"no session opened within {timeout}s") from None
        finally:
            self._openings.pop(number, None)
        reply = box[0]
        if reply is _DROPPED:
            raise _Dropped
        if isinstance(reply, OpenEnvWSError):
            raise reply
        if isinstance(reply, Error):
            raise from_frame(reply)
        return number, reply

    async def attach(self, session: Carried, timeout: float) -> None:
        """Open ``session`` (a new one) on this link.

        If the socket dies before ``opened`` arrives, the same ``open`` (same open key) is sent
        again on the next socket: the server answers it with the same session, never a second one.
        """
        await self._take(session, session.open_frame(), timeout)

    async def carry(self, child: Carried) -> None:
        """Carry ``child``, a session that exists on the server already (a fork's child)."""
        await self._take(child, child.begin_resume(), self.connect_timeout)

    async def _take(self, session: Carried, frame: Open, timeout: float) -> None:
        with anyio.fail_after(timeout):
            while True:
                try:
                    number, opened = await self.open(frame, timeout)
                    break
                except _Dropped:
                    await self._up.wait()
        self.sessions[number] = session
        session.adopt(opened, _Channel(self, number))
        session.carrier = self.carry

    # ------------------------------------------------------------ receiving

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        with anyio.fail_after(self.connect_timeout):
            self._ws = await WebSocket.connect(self.url, headers=self.headers)
        self.connected = True
        self._up.set()
        task_group.start_soon(self._run)

    async def _run(self) -> None:
        # Shielded like a session's reader: closing sessions needs replies after a cancel.
        with anyio.CancelScope(shield=True) as self._scope:
            while self._ws is not None:
                ws = self._ws
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._write_loop, ws)
                        for session in list(self._to_resume):
                            tg.start_soon(self._resume, session)
                        await self._read_loop(ws)
                except* (ConnectionLost, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    pass
                self.connected = False
                self._up = anyio.Event()
                await ws.aclose()
                if not await self._reconnect():
                    return

    async def _read_loop(self, ws: WebSocket) -> None:
        while True:
            message = await ws.receive()
            if isinstance(message, str):
                raise ConnectionLost("server sent text on a multiplexed connection")
            try:
                items = decode_batch(message)
            except ProtocolViolation as exc:
                self._fail_all(ProtocolError(str(exc)))
                raise ConnectionLost("malformed batch") from None
            for number, raw in items:
                try:
                    frame = decode_server(raw)
                except ProtocolViolation as exc:
                    self._fail_all(ProtocolError(f"server sent a malformed frame: {exc}"))
                    raise ConnectionLost("malformed frame") from None
                opening = self._openings.get(number)
                if opening is not None:
                    if isinstance(frame, Opened | Error):
                        opening[1].append(frame)
                        opening[0].set()
                    continue
                session = self.sessions.get(number)
                if session is not None:
                    pending = session.deliver(frame)
                    if pending is not None:
                        await pending

    def _fail_all(self, exc: OpenEnvWSError) -> None:
        self._failure = exc
        for session in list(self.sessions.values()):
            session.fail(exc)
        self.sessions.clear()
        for done, box in list(self._openings.values()):
            box.append(exc)
            done.set()

    async def _reconnect(self) -> bool:
        """A new socket; every live session is then resumed on a new channel of it."""
        # Sessions still waiting from an earlier round stay listed until they are resumed.
        live = [*self.sessions.values(), *(s for s in self._to_resume if s not in self.sessions.values())]
        self._to_resume = [s for s in live if not s.finished]
        for session in self._to_resume:
            session.begin_resume()
        self.sessions = {}
        for done, box in list(self._openings.values()):  # opens in flight on the dead socket
            box.append(_DROPPED)
            done.set()
        try:
            ws = await self.reconnect.retry(
                lambda: WebSocket.connect(self.url, headers=self.headers), self.connect_timeout
            )
        except GaveUp as exc:
            self._ws = None
            self._fail_all(SessionLostError(str(exc)))
            self._up.set()  # whoever waits to open again learns the failure
            for session in self._to_resume:
                session.fail(SessionLostError(str(exc)))
            return False
        self._ws = ws
        self.generation += 1
        self._outbox = []
        self._wake = anyio.Event()
        self.connected = True
        self._up.set()
        return True

    async def _resume(self, session: Carried) -> None:
        """Resume one session on the current socket; it stays listed for the next round if that dies too."""
        try:
            number, _ = await self.open(session.begin_resume(), self.connect_timeout)
        except _Dropped:
            return
        except OpenEnvWSError as exc:
            self._to_resume.remove(session)
            session.fail(exc)
            return
        self._to_resume.remove(session)
        self.sessions[number] = session
        await session.resumed(_Channel(self, number))

    @property
    def broken(self) -> bool:
        """It gave up (or was given up): it carries no session any more."""
        return self._failure is not None

    def abandon(self, exc: OpenEnvWSError) -> None:
        """Give it up at once (its server is gone): every session it carries fails with ``exc``."""
        self._fail_all(exc)
        for session in list(self._to_resume):
            session.fail(exc)
        self._up.set()  # an open waiting for the connection to come back learns the failure
        if self._scope is not None:
            self._scope.cancel()

    async def aclose(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
        if self._ws is not None:
            await self._ws.aclose()
            self._ws = None


_LINK_OPTIONS = ("headers", "connect_timeout", "reconnect_attempts", "backoff", "max_backoff")


class Multiplexer:
    """A few multiplexed connections; :meth:`connect` opens sessions spread over them."""

    def __init__(self, url: str, connections: int = 4, **session_options: Any) -> None:
        if session_options.get("encoding", "msgpack") != "msgpack":
            raise ValueError("multiplexed sessions speak MessagePack only")
        self.url = url
        self.session_options = session_options
        link_options = {k: v for k, v in session_options.items() if k in _LINK_OPTIONS}
        link_options["headers"] = auth_headers(link_options.get("headers"), session_options.get("token"))
        self.links = [MuxLink(url, **link_options) for _ in range(max(1, connections))]

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        for link in self.links:
            await link.start(task_group)

    @asynccontextmanager
    async def connect(self, env: str | None = None, **options: Any) -> AsyncIterator[EnvSession]:
        """Like :func:`openenv_ws.connect`, on the least loaded of this multiplexer's connections."""
        link = min(self.links, key=lambda lk: len(lk.sessions))
        session = EnvSession(self.url, env, **{**self.session_options, **options})
        await link.attach(session, session.connect_timeout)
        try:
            yield session
        finally:
            with anyio.CancelScope(shield=True):
                await session.close()

    @property
    def broken(self) -> bool:
        """Every connection gave up: a new session cannot be opened here."""
        return all(link.broken for link in self.links)

    def abandon(self, exc: OpenEnvWSError) -> None:
        """Give every connection up at once (the server is gone): their sessions fail with ``exc``."""
        for link in self.links:
            link.abandon(exc)

    async def aclose(self) -> None:
        for link in self.links:
            await link.aclose()


@asynccontextmanager
async def multiplex(url: str, *, connections: int = 4, **session_options: Any) -> AsyncIterator[Multiplexer]:
    """Open ``connections`` multiplexed WebSockets to the server; close them on exit.

    ``session_options`` are defaults for every session opened with ``mux.connect()``.
    """
    mux = Multiplexer(url, connections, **session_options)
    try:
        async with anyio.create_task_group() as tg:
            await mux.start(tg)
            try:
                yield mux
            finally:
                await mux.aclose()
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise single_exception(group) from None
