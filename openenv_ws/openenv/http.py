"""OpenEnv's HTTP episode endpoints (``/reset``, ``/step``, ``/state``, ``/close``) on our sessions.

They keep OpenEnv's paths and bodies, but an episode persists across calls: ``POST /reset``
without a session id opens a session and names it in the ``X-Session-Id`` response header;
``/reset``, ``/step``, ``/state`` and ``/close`` with that header (or ``?session_id=``) act on
it. Each call is one numbered request to :meth:`Session.submit`, its reply caught by a
:class:`FrameSink` that lives for the call.

On a server with tokens a session answers its owner, an operator, or whoever sends its resume
token (``X-Resume-Token``, which the opening ``/reset`` returns); others get 403
(:mod:`openenv_ws.server.access`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import msgspec
from starlette.requests import HTTPConnection
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response

from ..errors import ForbiddenError, OpenEnvWSError, SessionLostError
from ..protocol import (
    Close,
    Closed,
    Error,
    ErrorCode,
    Event,
    GetState,
    Open,
    Request,
    Reset,
    Result,
    ServerFrame,
    StateReply,
    Step,
    unpack,
)
from ..server.access import RESUME_TOKEN_HEADER, may_act, open_as
from ..server.sessions import Session, SessionManager
from .wire import (
    HTTP_STATUS,
    BadMessage,
    error_body,
    frame_payload,
    json_object,
    reset_frame,
    step_frame,
    takes_metadata,
)

SESSION_HEADER = "X-Session-Id"


def requested_env(conn: HTTPConnection) -> str | None:
    """The environment a request (or a WebSocket handshake) names: ``/envs/{env}/...`` or ``?env=``."""
    return conn.path_params.get("env") or conn.query_params.get("env")


def peer(conn: HTTPConnection) -> str:
    return f"{conn.client.host}:{conn.client.port}" if conn.client else "?"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(body), status, headers, media_type="application/json")


def frame_response(frame: ServerFrame, session_id: str | None = None) -> Response:
    """A request's reply (or an error) as OpenEnv's HTTP response, naming the session."""
    headers = {SESSION_HEADER: session_id} if session_id else {}
    match frame:
        case Result():
            return json_response(frame_payload(frame), headers=headers)
        case StateReply():
            return json_response(unpack(frame.state), headers=headers)
        case Closed():
            return json_response({"closed": True, "reason": frame.reason}, headers=headers)
        case Error():
            if frame.retry_after is not None:
                headers["Retry-After"] = str(max(1, round(frame.retry_after)))
            return json_response(error_body(frame), HTTP_STATUS.get(frame.code, 500), headers)
    body = {"detail": f"unexpected reply {type(frame).__name__}", "code": ErrorCode.INTERNAL}
    return json_response(body, 500, headers)


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Response]])


def answers_errors(handler: Handler) -> Handler:
    """Answer our typed errors as JSON with their HTTP status."""

    @functools.wraps(handler)
    async def endpoint(*args: Any) -> Response:
        try:
            return await handler(*args)
        except OpenEnvWSError as exc:
            return frame_response(exc.to_frame())

    return endpoint  # type: ignore[return-value]


class _Reply:
    """The :class:`FrameSink` of one HTTP call: keeps what the session sends while the call lasts."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.frames: list[ServerFrame] = []
        self._open = True

    @property
    def open(self) -> bool:
        return self._open

    async def send(self, frame: ServerFrame, data: bytes) -> None:
        if self._open:
            self.frames.append(frame)

    def slow_request(self) -> None:
        pass  # one HTTP request: nothing to notice

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._open = False

    def final(self) -> ServerFrame:
        for frame in reversed(self.frames):
            if not isinstance(frame, Event):
                return frame
        return Error(code=ErrorCode.INTERNAL, message="the session sent no reply")


class HttpSessions:
    """The sessions opened over HTTP (only these are reachable over HTTP, and OpenEnv's MCP routes
    open theirs here too), each with its request lock; the endpoints are its methods.

    A session opened by ``/reset`` without an id is *unclaimed* until a request names it: when
    the server is at capacity, the oldest unclaimed one is closed to make room, so a loop of
    OpenEnv's stateless ``/reset`` calls keeps being answered. ``/step`` and ``/state`` without an
    id are OpenEnv's simulation mode: a session for that one request, closed with its answer.
    """

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self.locks: dict[str, anyio.Lock] = {}
        self.unclaimed: dict[str, None] = {}  # oldest first
        self.fresh: set[str] = set()  # opened without a reset (OpenEnv's MCP sessions): none applied yet

    # ------------------------------------------------------------ endpoints

    @answers_errors
    async def reset(self, request: HTTPRequest) -> Response:
        """Reset the episode named by ``X-Session-Id``, or open a new session (a new sandbox) and reset it."""
        frame = reset_frame(await self._body(request))
        session = self._find(request)
        if session is not None:
            self.fresh.discard(session.id)
            return await self._run(request, session, frame)
        session = await self.open(request)
        self.unclaimed[session.id] = None
        response = await self._run(request, session, frame)
        response.headers[RESUME_TOKEN_HEADER] = session.token  # the session's own credential
        return response

    @answers_errors
    async def step(self, request: HTTPRequest) -> Response:
        body = await self._body(request)
        if "action" not in body:
            raise BadMessage("the body needs 'action'")
        session = self._find(request)
        spec = session.spec if session is not None else self.manager.spec(requested_env(request))
        frame = step_frame(body["action"], takes_metadata(spec.schemas["action"]))
        if session is None:  # OpenEnv's simulation mode: a fresh environment for this one step
            return frame_response(await self.one_shot(request, frame))
        return await self._run(request, session, frame)

    @answers_errors
    async def state(self, request: HTTPRequest) -> Response:
        session = self._find(request)
        if session is None:  # OpenEnv's simulation mode: the state of a fresh environment
            return frame_response(await self.one_shot(request, GetState()))
        return await self._run(request, session, GetState())

    @answers_errors
    async def close(self, request: HTTPRequest) -> Response:
        """End the episode and stop its sandbox now (not in OpenEnv; otherwise it is reaped when idle)."""
        await self._body(request)  # none is needed; one that is there must still be a JSON object
        session = self._require(request)
        response = await self._run(request, session, Close())
        self.forget(session.id)
        return response

    # ------------------------------------------------------------ sessions

    def _find(self, request: HTTPRequest) -> Session | None:
        session_id = request.headers.get(SESSION_HEADER) or request.query_params.get("session_id")
        if not session_id:
            return None
        return self.lookup(request, session_id)

    def lookup(self, request: HTTPConnection, session_id: str) -> Session:
        """The HTTP session ``session_id``, if the caller may act on it (it is claimed from now on)."""
        session = self.manager.get(session_id)
        if session is None or session_id not in self.locks:
            raise SessionLostError(f"session {session_id!r} is unknown, expired or closed: POST /reset opens another")
        if not may_act(request, session):
            self.manager.metrics.access_denied()
            raise ForbiddenError(
                f"session {session_id!r} belongs to another client: its owner, an operator, or its"
                f" {RESUME_TOKEN_HEADER} may act on it"
            )
        self.unclaimed.pop(session_id, None)
        return session

    def _require(self, request: HTTPRequest) -> Session:
        session = self._find(request)
        if session is None:
            raise SessionLostError(
                f"no session id: POST /reset opens a session and names it in the {SESSION_HEADER} response header;"
                f" send that header (or ?session_id=) with /step, /state and /close"
            )
        return session

    def forget(self, session_id: str) -> None:
        self.locks.pop(session_id, None)
        self.unclaimed.pop(session_id, None)
        self.fresh.discard(session_id)

    async def open(self, request: HTTPConnection, *, fresh: bool = False) -> Session:
        """Open a session for HTTP (or OpenEnv's MCP); at capacity, the oldest unclaimed one makes room."""
        for session_id in [s for s in self.locks if self.manager.get(s) is None]:
            self.forget(session_id)  # ended: closed, idle, crashed
        if self.unclaimed and self.manager.health()["capacity_left"] == 0:
            oldest = next(iter(self.unclaimed))
            self.forget(oldest)
            evicted = self.manager.get(oldest)
            if evicted is not None and not evicted.busy:
                await evicted.close("closed to make room: opened by a stateless /reset and never used again")
        session = await open_as(request, Open(env=requested_env(request)), _Reply(peer(request)))
        self.locks[session.id] = anyio.Lock()
        if fresh:
            self.fresh.add(session.id)
        return session

    async def one_shot(self, request: HTTPConnection, frame: Request) -> ServerFrame:
        """``frame`` in a session of its own (a fresh environment, as OpenEnv's stateless HTTP calls get),
        reset first when the environment cannot step before a reset; the session is closed after."""
        session = await self.open(request)
        try:
            if isinstance(frame, Step | GetState) and not session.spec.cls.steps_before_reset:
                reply = await self.apply(request, session, Reset())
                if not isinstance(reply, Result):
                    return reply
            return await self.apply(request, session, frame)
        finally:
            self.forget(session.id)
            await session.close("a stateless request was answered", notify=False)

    async def apply(self, request: HTTPConnection, session: Session, frame: Request) -> ServerFrame:
        """Apply one request, one at a time per session (later ones wait, at most ``max_queue`` of them);
        a session that has had no reset yet gets one first if its environment needs it."""
        lock = self.locks[session.id]
        if lock.statistics().tasks_waiting >= self.manager.config.max_queue:
            waiting = lock.statistics().tasks_waiting
            raise OpenEnvWSError(
                f"{waiting} requests already wait in this session",
                code=ErrorCode.QUEUE_FULL,
                retry_after=self.manager.config.retry_after,
            )
        async with lock:
            if isinstance(frame, Reset):
                self.fresh.discard(session.id)
            if session.id in self.fresh and isinstance(frame, Step):
                self.fresh.discard(session.id)
                if not session.spec.cls.steps_before_reset:
                    reply = await self._submit(request, session, Reset())
                    if not isinstance(reply, Result):
                        return reply
            return await self._submit(request, session, frame)

    async def _submit(self, request: HTTPConnection, session: Session, frame: Request) -> ServerFrame:
        if session.closed:
            raise SessionLostError(f"session closed: {session.close_reason}", code=ErrorCode.SESSION_CLOSED)
        reply = _Reply(peer(request))
        session.attach(reply, session.applied)  # nothing to resume over HTTP: the reply cache is dropped
        frame.seq = session.applied + 1
        try:
            await session.submit(frame, reply)
        finally:
            await reply.close()
        return reply.final()

    async def _run(self, request: HTTPRequest, session: Session, frame: Request) -> Response:
        return frame_response(await self.apply(request, session, frame), session.id)

    async def _body(self, request: HTTPRequest) -> dict[str, Any]:
        raw = await request.body()
        return json_object(raw, self.manager.config.max_frame_bytes, "the body") if raw.strip() else {}
