"""The client's view of one episode: ``connect()`` and :class:`EnvSession`.

The rules (numbering, matching replies to calls, events, what to resend on resume) are
:class:`openenv_ws.core.client.ClientState`'s; :class:`EnvSession` adds the waiting, the
timeouts and the socket. When its own socket drops, its reader reconnects (the policy of
:mod:`openenv_ws.client.backoff`), resumes the session with its token, and sends again
every request still unanswered; the server applies each number once, so nothing is lost
and nothing is applied twice. A multiplexed connection (:mod:`openenv_ws.client.mux`)
carries sessions through the transport methods at the end of the class.
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from os import PathLike
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import sniffio

from ..core.client import Answered, Call, ClientState, Ended, EventFor
from ..env import StepResult
from ..errors import (
    OpenEnvWSError,
    ProtocolError,
    RequestTimeoutError,
    SessionLostError,
    from_frame,
)
from ..protocol import (
    MCP_PATH,
    RESUME_TOKEN_HEADER,
    Checkpoint,
    Checkpointed,
    Close,
    Closed,
    Error,
    Fork,
    Forked,
    Frame,
    GetState,
    Open,
    Opened,
    Ping,
    Pong,
    ProtocolViolation,
    Reset,
    Result,
    ServerFrame,
    StateReply,
    Step,
    decode_server,
    encode,
    json_to_msgpack,
    msgpack_to_json,
    pack,
    unpack,
)
from ..record import EpisodeRecorder, client_recorder
from .backoff import Backoff, GaveUp
from .transport import ConnectionLost, WebSocket, auth_headers

SESSIONS_PATH = "/v1/sessions"

EventCallback = Callable[[Any], Any]


class Link(Protocol):
    """What a session sends through: its own WebSocket, or a channel of a shared one."""

    async def send(self, data: bytes | str) -> None: ...

    async def aclose(self) -> None: ...


Carrier = Callable[["EnvSession"], Awaitable[None]]
"""Starts carrying an existing session (a fork's child) on the transport of its parent."""


async def _carry_on_own_socket(task_group: anyio.abc.TaskGroup, child: EnvSession) -> None:
    await child._start_resumed(task_group)


def sessions_url(url: str) -> str:
    """Accept ``ws://host:port``, ``http://host:port`` or a full socket URL."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else SESSIONS_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _running_on_asyncio() -> bool:
    try:
        return sniffio.current_async_library() == "asyncio"
    except sniffio.AsyncLibraryNotFoundError:
        return False


class EnvSession:
    """One remote episode. Create it with :func:`connect` (or ``Multiplexer.connect``)."""

    def __init__(
        self,
        url: str,
        env: str | None = None,
        *,
        options: dict[str, Any] | None = None,
        encoding: str = "msgpack",
        observation_type: Any = None,
        state_type: Any = None,
        request_timeout: float | None = 300.0,
        connect_timeout: float = 30.0,
        reconnect_attempts: int = 8,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        max_in_flight: int = 8,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        record: str | PathLike[str] | None = None,
        checkpoint: str | None = None,
    ) -> None:
        if encoding not in ("msgpack", "json"):
            raise ValueError("encoding must be 'msgpack' or 'json'")
        self._settings: dict[str, Any] = {
            "options": options,
            "encoding": encoding,
            "observation_type": observation_type,
            "state_type": state_type,
            "request_timeout": request_timeout,
            "connect_timeout": connect_timeout,
            "reconnect_attempts": reconnect_attempts,
            "backoff": backoff,
            "max_backoff": max_backoff,
            "max_in_flight": max_in_flight,
            "headers": headers,
            "token": token,
        }
        """What a child of this session (a fork) is made with."""
        self.url = sessions_url(url)
        self.env = env
        self.options = options or {}
        self.json = encoding == "json"
        self.observation_type = observation_type if observation_type is not None else Any
        self.state_type = state_type if state_type is not None else Any
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.reconnect = Backoff(reconnect_attempts, backoff, max_backoff)
        self.headers = auth_headers(headers, token)  # token: serve --token (default $OPENENV_WS_TOKEN)
        self.record = record  # a file (every episode of the session) or a directory (one file each)
        self.checkpoint_id = checkpoint  # open the episode this checkpoint holds instead of a fresh one
        self.carrier: Carrier | None = None
        """How a child of this session (a fork) is carried: set by the transport that carries this one."""
        self.forks: list[EnvSession] = []
        self._recorder: EpisodeRecorder | None = None
        self.env_name: str | None = None
        self.backend: str | None = None
        self.action_schema: dict[str, Any] = {}
        self.observation_schema: dict[str, Any] = {}
        self.tools: list[dict[str, Any]] = []
        """The environment's tools (``name``, ``description``, ``input_schema``); empty when it has none."""
        self._core = ClientState()
        self._open_key = secrets.token_urlsafe(16)  # the same on every attempt: opening is exactly-once
        self._link: Link | None = None
        self._reader_scope: anyio.CancelScope | None = None
        self._closed = False
        self._closing = False
        self._ready: Any = anyio.Event()
        self.max_in_flight = max_in_flight
        self._in_flight = 0
        self._slot_free: Any = None
        # Events of the running backend: asyncio's are cheaper to make than portable ones.
        self._asyncio = _running_on_asyncio()
        self._new_event: Callable[[], Any] = asyncio.Event if self._asyncio else anyio.Event
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        """The deadline timer of its requests (asyncio; see :meth:`_watch`), and when it fires."""
        self._timer_at = 0.0

    # ------------------------------------------------------------ public API

    @property
    def session_id(self) -> str | None:
        return self._core.session_id

    @property
    def reconnects(self) -> int:
        """How many times the session was resumed on a new connection."""
        return self._core.resumes

    async def reset(
        self,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> StepResult:
        return self._result(await self._request(Reset(seed=seed, options=options), timeout))

    async def step(
        self, action: Any, *, timeout: float | None = None, on_event: EventCallback | None = None
    ) -> StepResult:
        """Apply one action (a dict or the env's Action Struct). ``on_event`` gets streamed events."""
        return self._result(await self._request(Step(action=pack(action)), timeout, on_event))

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        on_event: EventCallback | None = None,
    ) -> StepResult:
        """Call one of the environment's tools: a step whose action is ``{"tool": name, "arguments": ...}``."""
        return await self.step({"tool": name, "arguments": arguments or {}}, timeout=timeout, on_event=on_event)

    @property
    def mcp_url(self) -> str:
        """This session's MCP endpoint (streamable HTTP): its tools for any MCP client."""
        parts = urlsplit(self.url)
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        path = MCP_PATH.format(session_id=self.session_id)
        return urlunsplit((scheme, parts.netloc, path, "", ""))

    @property
    def mcp_headers(self) -> dict[str, str]:
        """The headers an MCP client sends to :attr:`mcp_url`: the session's credential (and the server's token)."""
        return {**self.headers, RESUME_TOKEN_HEADER: self._core.resume_token}

    async def state(self, *, timeout: float | None = None) -> Any:
        reply = await self._request(GetState(), timeout)
        assert isinstance(reply, StateReply)
        return unpack(reply.state, self.state_type)

    async def ping(self, *, timeout: float | None = None) -> None:
        await self._request(Ping(), timeout)

    async def fork(self, *, at_step: int | None = None, n: int | None = None, timeout: float | None = None) -> Any:
        """Copy this episode into a new session in a sandbox of its own, as it was after step ``at_step``
        (default: now); ``n=8`` makes eight and returns a list. Exactly-once like a step.

        The children are ordinary sessions on the same transport; they close when this session
        closes (or earlier, with their own ``close()``).
        """
        reply = await self._request(Fork(at_step=at_step, count=1 if n is None else n), timeout)
        assert isinstance(reply, Forked)
        assert self.carrier is not None, "the session is not open"
        children = []
        for forked in reply.sessions:
            child = EnvSession(self.url, self.env, **self._settings)
            child._core.opened(Opened(session_id=forked.session_id, resume_token=forked.resume_token, env=""))
            await self.carrier(child)
            children.append(child)
            self.forks.append(child)
        return children[0] if n is None else children

    async def checkpoint(self, *, timeout: float | None = None) -> str:
        """Save the episode as it is now (server ``--checkpoint-dir``); open it again later with
        ``connect(url, checkpoint=id)``, on this server or another that reads the same directory."""
        reply = await self._request(Checkpoint(), timeout)
        assert isinstance(reply, Checkpointed)
        return reply.checkpoint_id

    async def close(self, *, timeout: float = 10.0) -> None:
        """End the episode on the server (its sandbox is stopped) and close the socket; forks too."""
        if self._closed:
            return
        self._closing = True
        for child in self.forks:
            await child.close(timeout=timeout)
        try:
            if self._core.failure is None and self.session_id is not None:
                await self._request(Close(), timeout)
        except OpenEnvWSError:
            pass
        finally:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._recorder is not None:  # the file is complete when close() returns
                failure = self._core.failure
                await self._recorder.aclose("closed by client" if failure is None else str(failure))
            if self._reader_scope is not None:
                self._reader_scope.cancel()
            if self._link is not None:
                await self._link.aclose()

    @property
    def failed(self) -> OpenEnvWSError | None:
        """The error that ended this session, if one did."""
        return self._core.failure

    @property
    def finished(self) -> bool:
        """Closed or failed: nothing more can be sent (a transport stops carrying it)."""
        return self._closed or self._core.failure is not None

    # ------------------------------------------------------------ requests

    def _encode(self, frame: Frame) -> bytes | str:
        data = encode(frame)
        if self._recorder is not None:
            self._recorder.request(frame, data)
        return msgpack_to_json(data) if self.json else data

    def _decode(self, message: bytes | str) -> ServerFrame:
        try:
            data = json_to_msgpack(message) if isinstance(message, str) else message
            return decode_server(data)
        except ProtocolViolation as exc:
            raise ProtocolError(f"server sent a malformed frame: {exc}") from None

    async def _request(self, frame: Frame, timeout: float | None, on_event: EventCallback | None = None) -> ServerFrame:
        if self._core.failure is not None:
            raise self._core.failure
        if self._closed:
            raise SessionLostError("the session is closed")
        timeout = self.request_timeout if timeout is None else timeout
        try:
            if self._asyncio and timeout is not None and self._ready.is_set() and self._in_flight < self.max_in_flight:
                # Nothing to wait for before it is sent: its deadline is watched by the session's
                # one timer (see _watch), not by a cancel scope of its own (~5 us per request).
                call = await self._exchange(frame, on_event, timeout)
                if not call.ended:
                    raise TimeoutError
            elif self._asyncio:  # asyncio's own timeout costs a fraction of a portable cancel scope
                async with asyncio.timeout(timeout):
                    call = await self._exchange(frame, on_event)
            else:
                with anyio.fail_after(timeout):
                    call = await self._exchange(frame, on_event)
        except TimeoutError:
            what = type(frame).__name__.lower()
            raise RequestTimeoutError(f"no reply to {what} (seq {frame.seq}) within {timeout}s") from None
        if call.error is not None:
            raise call.error
        reply = call.reply
        if isinstance(reply, Error):
            exc = from_frame(reply)
            if exc.fatal:
                self.fail(exc)
            raise exc
        if isinstance(reply, Closed) and not isinstance(frame, Close):
            exc = SessionLostError(f"session closed by the server: {reply.reason}")
            self.fail(exc)
            raise exc
        return reply  # type: ignore[return-value]

    async def _exchange(self, frame: Frame, on_event: EventCallback | None, timeout: float | None = None) -> Call:
        """Number, send and await one request. Numbers are given in the order requests are sent:
        nothing awaits between taking a number and queueing its bytes on the (FIFO) link.

        With ``timeout`` (asyncio only), the call is woken unanswered once it has waited that long.
        """
        core = self._core
        while not self._ready.is_set() or self._in_flight >= self.max_in_flight:
            if core.failure is not None:
                raise core.failure
            if not self._ready.is_set():
                await self._ready.wait()  # resuming
            else:
                if self._slot_free is None:
                    self._slot_free = self._new_event()
                await self._slot_free.wait()
        if core.failure is not None:
            raise core.failure

        def wire(seq: int) -> bytes | str:
            frame.seq = seq
            return self._encode(frame)

        call = core.call(wire, on_event, self._new_event())
        if timeout is not None:
            self._watch(call, timeout)
        self._in_flight += 1
        try:
            await self._send(call)
            await call.waiter.wait()
        finally:
            core.forget(call)
            self._in_flight -= 1
            if self._slot_free is not None:
                self._slot_free.set()
                self._slot_free = None
        return call

    def _watch(self, call: Call, timeout: float) -> None:
        """Wake ``call`` unanswered ``timeout`` seconds from now, by the session's one deadline timer.

        The timer is set for the earliest deadline it knows; when it fires it wakes the calls
        past theirs and sets itself for the next. A session whose requests are answered in time
        moves it once per ``timeout``, not once per request. A send held up by a full socket is
        not interrupted: the connection's loss (its keepalive) ends it, then the call is woken.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        deadline = call.deadline = loop.time() + timeout
        timer = self._timer
        if timer is None or deadline < self._timer_at:
            if timer is not None:
                timer.cancel()
            self._timer_at = deadline
            self._timer = loop.call_at(deadline, self._deadlines_due)

    def _deadlines_due(self) -> None:
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        earliest: float | None = None
        for call in self._core.pending.values():
            deadline = call.deadline
            if deadline is None or call.ended:
                continue
            if deadline <= now:
                call.deadline = None
                call.waiter.set()  # woken unanswered: the caller raises RequestTimeoutError
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._timer_at = earliest
            self._timer = self._loop.call_at(earliest, self._deadlines_due)

    async def _send(self, call: Call) -> None:
        """Send on the current connection unless already sent there; a lost socket is the reader's job."""
        link = self._link
        if link is None or not self._core.should_send(call):
            return
        try:
            await link.send(call.data)
        except ConnectionLost:
            pass

    def _result(self, reply: ServerFrame) -> StepResult:
        assert isinstance(reply, Result)
        return StepResult(
            observation=unpack(reply.observation, self.observation_type),
            reward=reply.reward,
            terminated=reply.terminated,
            truncated=reply.truncated,
            info=unpack(reply.info) or {},
        )

    # ------------------------------------------------------------ its own connection and reader

    async def _handshake(self, open_frame: Open) -> tuple[WebSocket, Opened]:
        ws = await WebSocket.connect(self.url, headers=self.headers)
        try:
            await ws.send(self._encode(open_frame))
            while True:
                reply = self._decode(await ws.receive())
                if isinstance(reply, Opened):
                    return ws, reply
                if isinstance(reply, Error):
                    raise from_frame(reply)
        except BaseException:
            await ws.aclose()
            raise

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Open the session on a socket of its own and start its reader in ``task_group``.

        A connection lost before ``opened`` (a sandbox start can take seconds) is retried with the
        client's reconnect policy; every attempt carries the same open key, so the server hands
        back the session the first attempt made instead of starting a second sandbox.
        """
        frame = self.open_frame()
        policy = self.reconnect if self.reconnect.attempts > 0 else replace(self.reconnect, attempts=1)
        try:
            ws, opened = await policy.retry(lambda: self._handshake(frame), self.connect_timeout)
        except GaveUp as exc:
            if isinstance(exc.last, TimeoutError):
                raise RequestTimeoutError(f"no session opened within {self.connect_timeout}s") from None
            raise SessionLostError(f"cannot open a session at {self.url}: {exc.last}") from None
        self.adopt(opened, ws)
        self.carrier = partial(_carry_on_own_socket, task_group)
        task_group.start_soon(self._read_until_closed)

    async def _start_resumed(self, task_group: anyio.abc.TaskGroup) -> None:
        """Take over a session that exists on the server (a fork's child) on a socket of its own."""

        async def attempt() -> WebSocket:
            ws, opened = await self._handshake(self.begin_resume())
            self.adopt(opened, ws)
            return ws

        try:
            await self.reconnect.retry(attempt, self.connect_timeout)
        except GaveUp as exc:
            raise SessionLostError(f"cannot take over session {self.session_id}: {exc.last}") from None
        self.carrier = partial(_carry_on_own_socket, task_group)
        task_group.start_soon(self._read_until_closed)

    async def _read_until_closed(self) -> None:
        # Shielded: when the caller is cancelled, close() still needs the reader to get its
        # reply; close() ends the reader itself.
        with anyio.CancelScope(shield=True) as self._reader_scope:
            try:
                await self._read()
            except Exception as exc:  # a bug or a callback's error: the caller sees a typed failure
                self.fail(SessionLostError(f"the session's reader failed: {exc!r}"))

    async def _read(self) -> None:
        while True:
            ws = self._link
            assert ws is not None
            try:
                message = await ws.receive()  # type: ignore[union-attr]
            except ConnectionLost:
                if self._closing:
                    # Closing anyway: no resume, and a close() in flight learns it now
                    # instead of waiting out its timeout.
                    self.fail(SessionLostError("the connection closed while the session was closing"))
                    return
                if self._core.failure is not None:
                    return
                if not await self._reconnect():
                    return
                continue
            try:
                frame = self._decode(message)
            except ProtocolError as exc:
                self.fail(exc)
                return
            pending = self.deliver(frame)
            if pending is not None:
                await pending

    async def _reconnect(self) -> bool:
        """Resume on a new socket of its own (the client's reconnect policy)."""

        async def attempt() -> WebSocket:
            ws, _ = await self._handshake(self.begin_resume())
            return ws

        try:
            ws = await self.reconnect.retry(attempt, self.connect_timeout)
        except GaveUp as exc:
            self.fail(SessionLostError(f"could not resume after {exc.attempts} attempts: {exc.last}"))
            return False
        except OpenEnvWSError as exc:
            self.fail(exc)
            return False
        await self.resumed(ws)
        return True

    # ------------------------------------------------------------ what a transport calls
    #
    # A transport (its own socket above, or a multiplexed connection) opens the session with
    # ``open_frame()``, hands it over with ``adopt()``, passes every frame from the server to
    # ``deliver()``, and on a lost connection resumes it: ``begin_resume()``, then ``resumed()``
    # on the new link, or ``fail()``.

    def open_frame(self) -> Open:
        """The frame that opens this (new) session."""
        return Open(env=self.env, options=self.options, open_key=self._open_key, checkpoint=self.checkpoint_id)

    def adopt(self, opened: Opened, link: Link) -> None:
        """Take the session ``opened`` describes, reached through ``link``."""
        self._link = link
        self._core.opened(opened)
        self.env_name = opened.env
        self.backend = opened.backend
        self.action_schema = unpack(opened.action_schema) or {}
        self.observation_schema = unpack(opened.observation_schema) or {}
        self.tools = unpack(opened.tools) or []
        if self.record is not None and self._recorder is None:
            self._recorder = client_recorder(self.record, opened, self.options)
        self._ready.set()

    def deliver(self, frame: ServerFrame) -> Awaitable[Any] | None:
        """A frame from the server for this session.

        Returns what an event callback returned when it is awaitable: the reader awaits it
        before the next frame, so events keep their order. Plain, not a coroutine: it runs for
        every frame received, and almost none needs awaiting.
        """
        if self._recorder is not None and not isinstance(frame, Pong):
            self._recorder.reply(encode(frame))
        dispatch = self._core.receive(frame)
        kind = type(dispatch)
        if kind is Answered:
            dispatch.call.waiter.set()
        elif kind is EventFor:
            callback = dispatch.call.on_event
            if callback is not None:
                outcome = callback(unpack(dispatch.event.data))
                if inspect.isawaitable(outcome):
                    return outcome
        elif kind is Ended:
            self._wake(dispatch.calls)
        return None

    def fail(self, exc: OpenEnvWSError) -> None:
        """End the session with ``exc`` (the first error stays): every waiting call raises it."""
        self._wake(self._core.fail(exc))

    def _wake(self, calls: list[Call]) -> None:
        for call in calls:
            call.waiter.set()
        self._ready.set()  # waiters wake up and see the failure

    def begin_resume(self) -> Open:
        """Hold new requests until resumed; the frame that asks the server to resume."""
        if self._ready.is_set():
            self._ready = self._new_event()
        return self._core.begin_resume()

    async def resumed(self, link: Link) -> None:
        """Switch to ``link`` and resend every unanswered request there, in order."""
        old, self._link = self._link, link
        if old is not None and old is not link:
            await old.aclose()
        for call in self._core.resumed():
            await self._send(call)
        self._ready.set()


@asynccontextmanager
async def connect(url: str, env: str | None = None, **options: Any) -> AsyncIterator[EnvSession]:
    """Open a session on the server at ``url`` and close it (and its sandbox) on exit.

    Options are :class:`EnvSession`'s: ``options`` (the env's), ``encoding``
    (``"msgpack"`` or ``"json"``), ``observation_type``, ``request_timeout``,
    ``reconnect_attempts``... ``protocol="openenv"`` speaks OpenEnv's JSON protocol to an
    OpenEnv server instead, with the same API (see :mod:`openenv_ws.openenv.client`).
    """
    protocol = options.pop("protocol", "openenv-ws")
    if protocol == "openenv":
        from ..openenv.client import connect_openenv

        async with connect_openenv(url, env, **options) as openenv_session:
            yield openenv_session  # type: ignore[misc]
        return
    if protocol != "openenv-ws":
        raise ValueError(f"protocol must be 'openenv-ws' or 'openenv', not {protocol!r}")
    session = EnvSession(url, env, **options)
    try:
        async with anyio.create_task_group() as tg:
            await session.start(tg)
            try:
                yield session
            finally:
                with anyio.CancelScope(shield=True):
                    await session.close()
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise single_exception(group) from None


def single_exception(group: BaseExceptionGroup) -> BaseException:
    """The one exception inside (nested) groups of one, so callers catch what was raised."""
    while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
        group = group.exceptions[0]
    return group
