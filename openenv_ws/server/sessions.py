"""Sessions: one episode's state machine, its reply cache, and the manager that bounds them.

A session outlives its connection. Requests are numbered by the client; each number is
applied at most once, in order, one at a time. Every frame a request produces (its
events, then its reply) is kept in the session's reply cache and sent to whatever
connection is attached at that moment, so a request in flight when the socket drops
still completes, and a client that resumes and repeats the number gets the same frames
again instead of a second application.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict, deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from ..errors import CapacityError, OpenEnvWSError, ProtocolError, SessionLostError, UnknownEnvError
from ..protocol import (
    PROTOCOL_VERSION,
    Close,
    Closed,
    Error,
    ErrorCode,
    Event,
    Open,
    Opened,
    Reply,
    Request,
    Result,
    Step,
    encode,
    pack,
)
from ..registry import EnvSpec
from ..sandbox import Backend, Sandbox
from .config import ServerConfig
from .connection import Connection
from .metrics import Metrics
from .tap import SessionTap, recording_tap

log = logging.getLogger("openenv_ws.server")

MAX_CACHED_FRAMES = 4096
"""Frames (events + reply) kept per request for resends; later events are sent live only."""


@dataclass(slots=True)
class _Entry:
    frames: list[bytes] = field(default_factory=list)
    done: bool = False


class Session:
    def __init__(
        self,
        manager: SessionManager,
        session_id: str,
        spec: EnvSpec,
        sandbox: Sandbox,
        conn: Connection,
    ) -> None:
        self.manager = manager
        self.id = session_id
        self.token = secrets.token_urlsafe(24)
        self.spec = spec
        self.sandbox = sandbox
        self.conn: Connection | None = conn
        self.peer = conn.peer
        self.state = "active"  # active | detached | closed
        self.created = self.last_activity = time.monotonic()
        self.detached_at = 0.0
        self.steps = 0
        self.applied = 0  # highest request number accepted
        self.replies: OrderedDict[int, _Entry] = OrderedDict()
        self.queue: deque[Request] = deque()
        self.busy = False
        self.close_reason = ""
        self._watch_scope: anyio.CancelScope | None = None
        self.tap: SessionTap | None = None  # recording and live watchers; None while nothing listens

    # ------------------------------------------------------------ connection side

    def opened_frame(self, seq: int, resumed: bool) -> Opened:
        return Opened(
            seq=seq,
            session_id=self.id,
            resume_token=self.token,
            env=self.spec.name,
            backend=self.manager.backend.name,
            action_schema=self.manager.schema_payloads[self.spec.name][0],
            observation_schema=self.manager.schema_payloads[self.spec.name][1],
            resumed=resumed,
            last_applied=self.applied,
        )

    def attach(self, conn: Connection, last_seen: int) -> Connection | None:
        """Bind a new connection; returns the one it replaces, for the caller to close."""
        previous, self.conn = self.conn, conn
        self.state = "active"
        self.peer = conn.peer
        self.last_activity = time.monotonic()
        for seq in [s for s, e in self.replies.items() if s <= last_seen and e.done]:
            del self.replies[seq]
        return previous if previous is not conn else None

    def detach(self, conn: Connection) -> None:
        if self.conn is conn:
            self.conn = None
            if self.state == "active":
                self.state = "detached"
                self.detached_at = time.monotonic()

    async def submit(self, frame: Request, conn: Connection, inline: bool = True) -> None:
        """Accept a numbered request from ``conn``: apply it once, or answer a repeat from cache.

        ``inline`` applies it in the caller's task; a multiplexed connection, whose reader
        serves many sessions, passes False to have it applied in a task of its own.
        """
        self.last_activity = time.monotonic()
        entry = self.replies.get(frame.seq)
        if entry is not None:  # a repeat: same frames again, nothing applied twice
            for data in list(entry.frames):
                await conn.send(data)
            return
        if self.state == "closed":
            await conn.send_frame(
                Error(
                    seq=frame.seq,
                    code=ErrorCode.SESSION_CLOSED,
                    message=f"session closed: {self.close_reason}",
                    fatal=True,
                )
            )
            return
        if frame.seq <= self.applied:
            message = f"request {frame.seq} is older than the newest applied ({self.applied}) and no longer cached"
            await conn.send_frame(Error(seq=frame.seq, code=ErrorCode.STALE_SEQ, message=message))
            return
        if len(self.queue) >= self.manager.config.max_queue:
            await conn.send_frame(
                Error(
                    seq=frame.seq,
                    code=ErrorCode.QUEUE_FULL,
                    message=f"{len(self.queue)} requests already wait in this session",
                    retry_after=self.manager.config.retry_after,
                )
            )
            return
        self.applied = frame.seq
        self.replies[frame.seq] = _Entry()
        self._trim_cache()
        self.queue.append(frame)
        if not self.busy:
            # Applied in the caller's task (the connection's reader): no task per request. The
            # reader does not need to run meanwhile (one request at a time), and a dropped
            # socket does not cancel it, so the request completes and its reply is cached.
            self.busy = True
            if inline:
                await self._work()
            else:
                self.manager.spawn_light(self._work)

    def _trim_cache(self) -> None:
        keep = self.manager.config.reply_cache + len(self.queue) + 1
        while len(self.replies) > keep:
            seq, entry = next(iter(self.replies.items()))
            if not entry.done:
                break
            del self.replies[seq]

    # ------------------------------------------------------------ applying requests

    async def _work(self) -> None:
        try:
            while self.queue and self.state != "closed":
                await self._apply(self.queue.popleft())
        finally:
            self.busy = False
            self.last_activity = time.monotonic()

    async def _deliver(self, entry: _Entry, data: bytes) -> None:
        if len(entry.frames) < MAX_CACHED_FRAMES:
            entry.frames.append(data)
        if self.tap is not None:
            self.tap.reply(data)
        conn = self.conn
        if conn is not None:
            await conn.send(data)

    async def _apply(self, frame: Request) -> None:
        entry = self.replies.get(frame.seq) or _Entry()
        timeout = self.manager.config.step_timeout
        if self.tap is not None:
            self.tap.request(frame)
        metrics = self.manager.metrics
        started = time.perf_counter() if metrics is not None else 0.0

        async def sink(event: Event) -> None:
            await self._deliver(entry, encode(event))

        reply: Reply
        try:
            with anyio.fail_after(timeout) if timeout and not isinstance(frame, Close) else nullcontext():
                reply = await self.sandbox.request(frame, sink)
        except TimeoutError:
            reply = Error(
                seq=frame.seq,
                code=ErrorCode.TIMEOUT,
                message=f"request took longer than {timeout}s; the sandbox was stopped",
                fatal=True,
            )
        except OpenEnvWSError as exc:
            reply = exc.to_frame(frame.seq)
        except Exception as exc:
            log.exception("session %s: request %s failed", self.id, frame.seq)
            reply = Error(
                seq=frame.seq,
                code=ErrorCode.INTERNAL,
                message=f"{type(exc).__name__}: {exc}",
                fatal=True,
            )
        if isinstance(reply, Result) and isinstance(frame, Step):
            self.steps += 1
        if metrics is not None:
            metrics.applied(frame, reply, time.perf_counter() - started)
        self.last_activity = time.monotonic()
        entry.done = True
        await self._deliver(entry, encode(reply))
        if isinstance(reply, Closed):
            await self.close("closed by client", notify=False)
        elif isinstance(reply, Error) and reply.fatal:
            await self.close(f"{reply.code}: {reply.message}", notify=False)

    # ------------------------------------------------------------ ending

    async def watch_sandbox(self) -> None:
        """Tell the client promptly when its sandbox dies between requests."""
        with anyio.CancelScope() as self._watch_scope:
            reason = await self.sandbox.wait_exit()
            if self.state == "closed" or self.busy:
                return  # closing on purpose, or the request in flight reports it
            frame = Error(code=ErrorCode.SANDBOX_CRASHED, message=reason, fatal=True)
            if self.manager.metrics is not None:
                self.manager.metrics.error(frame.code)
            await self._deliver(_Entry(), encode(frame))
            await self.close(f"{ErrorCode.SANDBOX_CRASHED}: {reason}", notify=False)

    async def close(self, reason: str, notify: bool = True, code: int = 1000) -> None:
        """End the session: drop it, stop its sandbox, tell and release the client."""
        if self.state == "closed":
            return
        self.state = "closed"
        self.close_reason = reason
        self.manager.forget(self)
        if self.tap is not None:
            self.tap.close(reason)
        if self.manager.metrics is not None:
            self.manager.metrics.sessions_closed += 1
        if self._watch_scope is not None:
            self._watch_scope.cancel()
        log.info("session %s closed: %s", self.id, reason)
        with anyio.CancelScope(shield=True):
            await self.sandbox.close()
            conn = self.conn
            if conn is not None:
                if notify:
                    await conn.send_frame(Closed(reason=reason))
                await conn.close(code, reason[:120])

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        wall = time.time()
        tap = self.tap
        return {
            "id": self.id,
            "env": self.spec.name,
            "backend": self.manager.backend.name,
            "sandbox": self.sandbox.id,
            "state": "busy" if self.busy and self.state == "active" else self.state,
            "age_s": round(now - self.created, 3),
            "steps": self.steps,
            "idle_s": round(now - self.last_activity, 3),
            "client": self.peer,
            # Inspector additions: wall-clock times, requests applied, who listens.
            "created_at": round(wall - (now - self.created), 3),
            "last_activity_at": round(wall - (now - self.last_activity), 3),
            "requests": self.applied,
            "watchers": len(tap.watchers) if tap is not None else 0,
            "recording": str(tap.recorder.path) if tap is not None and tap.recorder and tap.recorder.path else None,
        }


class SessionManager:
    """Holds every session, enforces the server's bounds, and reaps what expired."""

    def __init__(self, specs: dict[str, EnvSpec], backend: Backend, config: ServerConfig) -> None:
        if not specs:
            raise ValueError("at least one environment is needed")
        self.specs = specs
        self.default_env = next(iter(specs))
        self.backend = backend
        self.config = config
        self.sessions: dict[str, Session] = {}
        self.draining = False
        self.opening = 0
        self.schema_payloads = {
            name: (pack(spec.schemas["action"]), pack(spec.schemas["observation"])) for name, spec in specs.items()
        }
        self._tg: anyio.abc.TaskGroup | None = None
        self._light_tasks: set[asyncio.Task] = set()
        self._starting: anyio.Semaphore | None = None
        self._drained = anyio.Event()
        self.metrics: Metrics | None = Metrics() if config.metrics else None  # GET /metrics; None: not counted

    # ------------------------------------------------------------ lifetime

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the sessions' tasks until cancelled; reap expired sessions meanwhile."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._starting = anyio.Semaphore(self.config.max_starting)
                task_status.started()
                while True:
                    await anyio.sleep(self.config.reap_interval)
                    self._reap()
        finally:
            for task in list(self._light_tasks):
                task.cancel()

    def spawn(self, fn: Any, *args: Any) -> None:
        assert self._tg is not None, "SessionManager.run() is not running"
        self._tg.start_soon(fn, *args)

    def spawn_light(self, fn: Any) -> None:
        """Like :meth:`spawn`, for the many short request tasks of multiplexed sessions: a plain
        asyncio task (the server runs on asyncio) costs a fraction of a task-group task. The
        manager owns them all the same, and cancels those left when it stops."""
        task = asyncio.get_running_loop().create_task(fn())
        self._light_tasks.add(task)
        task.add_done_callback(self._light_tasks.discard)

    def _reap(self) -> None:
        now = time.monotonic()
        cfg = self.config
        for session in list(self.sessions.values()):
            if session.busy:
                continue
            if session.state == "detached" and now - session.detached_at > cfg.resume_grace:
                self.spawn(session.close, "resume grace period expired")
            elif now - session.last_activity > cfg.idle_timeout:
                self.spawn(session.close, "idle timeout", True, 1001)

    async def drain(self) -> None:
        """Graceful shutdown: refuse new sessions, let in-flight requests finish, close all."""
        if self.draining:
            await self._drained.wait()
            return
        self.draining = True
        log.info("draining %d sessions", len(self.sessions))
        with anyio.move_on_after(self.config.drain_timeout):
            while any(s.busy for s in self.sessions.values()):
                await anyio.sleep(0.05)
        async with anyio.create_task_group() as tg:
            for session in list(self.sessions.values()):
                tg.start_soon(session.close, "server shutting down", True, 1001)
        await self.backend.aclose()
        self._drained.set()

    def forget(self, session: Session) -> None:
        self.sessions.pop(session.id, None)

    # ------------------------------------------------------------ opening

    def _spec(self, name: str | None) -> EnvSpec:
        spec = self.specs.get(name or self.default_env)
        if spec is None:
            served = ", ".join(self.specs)
            raise UnknownEnvError(f"unknown environment {name!r}; this server serves: {served}", fatal=True)
        return spec

    async def open(self, frame: Open, conn: Connection) -> Session:
        """Create or resume the session an :class:`Open` frame asks for."""
        if frame.version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version {frame.version} is not supported (server speaks {PROTOCOL_VERSION})",
                code=ErrorCode.UNSUPPORTED_VERSION,
                fatal=True,
            )
        if self.draining:
            raise CapacityError(
                "server is shutting down",
                code=ErrorCode.SHUTTING_DOWN,
                retry_after=self.config.retry_after,
                fatal=True,
            )
        if frame.session_id:
            return await self._resume(frame, conn)
        spec = self._spec(frame.env)
        if len(self.sessions) + self.opening >= self.config.max_sessions:
            if self.metrics is not None:
                self.metrics.capacity_rejections += 1
            raise CapacityError(
                f"server at capacity ({self.config.max_sessions} sessions)",
                retry_after=self.config.retry_after,
                fatal=True,
            )
        self.opening += 1
        try:
            sandbox = await self._start_sandbox(spec, frame.options)
        finally:
            self.opening -= 1
        session = Session(self, sandbox.session_id, spec, sandbox, conn)
        self.sessions[session.id] = session
        if self.config.record_dir:
            session.tap = recording_tap(session, frame.options, self.config.record_dir)
        if self.metrics is not None:
            self.metrics.sessions_opened += 1
        if sandbox.isolated:
            self.spawn(session.watch_sandbox)
        return session

    async def _start_sandbox(self, spec: EnvSpec, options: dict[str, Any]) -> Sandbox:
        assert self._starting is not None
        try:
            with anyio.fail_after(self.config.start_wait):
                await self._starting.acquire()
        except TimeoutError:
            raise CapacityError(
                f"too many sandboxes starting; waited {self.config.start_wait}s for a slot",
                retry_after=self.config.retry_after,
                fatal=True,
            ) from None
        started = time.perf_counter()
        try:
            sandbox = await self.backend.open(spec, options)
        except Exception:
            if self.metrics is not None:
                self.metrics.sandbox_start_failures += 1
            raise
        finally:
            self._starting.release()
        if self.metrics is not None:
            self.metrics.sandbox_started(time.perf_counter() - started)
        return sandbox

    async def _resume(self, frame: Open, conn: Connection) -> Session:
        session = self.sessions.get(frame.session_id or "")
        if session is None or not secrets.compare_digest(session.token, frame.resume_token or ""):
            raise SessionLostError(
                f"session {frame.session_id!r} cannot be resumed: unknown, expired or closed",
                fatal=True,
            )
        previous = session.attach(conn, frame.last_seen)
        if self.metrics is not None:
            self.metrics.resumes += 1
        if previous is not None:
            self.spawn(previous.close, 1000, "superseded by a resumed connection")
        return session

    def health(self) -> dict[str, Any]:
        held = len(self.sessions)
        return {
            "status": "draining" if self.draining else "ok",
            "backend": self.backend.describe(),
            "envs": list(self.specs),
            "sessions": held,
            "busy": sum(1 for s in self.sessions.values() if s.busy),
            "detached": sum(1 for s in self.sessions.values() if s.state == "detached"),
            "opening": self.opening,
            "max_sessions": self.config.max_sessions,
            "capacity_left": max(0, self.config.max_sessions - held - self.opening),
        }
