"""Sessions: the I/O around one episode's rules, and the manager that holds and bounds them.

The rules (numbering, reply cache, queue, attach/detach/resume) are
:class:`openenv_ws.core.server.SessionState`'s; a :class:`Session` carries them out: it
applies accepted requests in its sandbox, one at a time, and sends every frame they produce
to the :class:`~openenv_ws.server.sink.FrameSink` attached at that moment, so a request in
flight when the socket drops still completes and its reply waits in the cache for the
resume. The :class:`SessionManager` owns every session and every task they run.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc

from ..core.history import EpisodeHistory
from ..core.server import APPLY_LATER, APPLY_NOW, CacheEntry, Limits, Refuse, SessionState
from ..env import capture_method
from ..errors import (
    CapacityError,
    NotCopyableError,
    OpenEnvWSError,
    ProtocolError,
    SandboxLostError,
    SandboxStartError,
    SessionLostError,
    UnknownEnvError,
)
from ..fields import FieldFilter
from ..ids import node_label, node_of
from ..protocol import (
    NIL,
    PROTOCOL_VERSION,
    Checkpoint,
    Closed,
    Error,
    ErrorCode,
    Event,
    Fork,
    Open,
    Opened,
    Raw,
    Reply,
    Request,
    Reset,
    ServerFrame,
    Step,
    encode,
    pack,
)
from ..registry import EnvSpec
from ..sandbox import Backend, Sandbox
from .config import DEFAULT_STEP_TIMEOUT, ServerConfig
from .copies import CopyLimits, EpisodeCopier, Restore, by_replay
from .metrics import Metrics, NullMetrics, ServerSnapshot
from .persist import FSYNC_INTERVAL, Journal, SavedSession, SavedState, token_hash
from .sink import FrameSink
from .tap import SessionTap, recording_tap
from .tasks import TaskOwner

log = logging.getLogger("openenv_ws.server")

MAX_CACHED_FRAMES = 4096
"""Frames (events + reply) kept per request for resends; later events are sent live only."""


@dataclass(frozen=True, slots=True)
class SessionContext:
    """What every session of a server shares: its limits, its counters, the owner of its tasks."""

    backend: str
    limits: Limits
    step_timeout: float | None
    """The server's deadline for every request (``serve --step-timeout``); None: each env's own."""
    max_events: int
    """Events one request may stream."""
    max_history_bytes: int
    """Bytes of an episode's history kept for copies by replay."""
    copier: EpisodeCopier
    max_event_bytes: int
    """Bytes of events one request may stream."""
    metrics: Metrics
    tasks: TaskOwner
    forget: Callable[[Session], None]
    """Called once when a session closes: the manager drops it."""
    journal: Journal | None = None
    """The state directory's journal (``serve --state-dir``): every answer is written there before it is sent."""


class _Opening:
    """An open in progress, which a repeat of the same open (same key) waits for."""

    def __init__(self) -> None:
        self._event: anyio.Event | None = None  # made by the first waiter: almost every open has none
        self._finished = False
        self._session: Session | None = None
        self._error: BaseException | None = None

    def done(self, session: Session) -> None:
        self._session = session
        self._finish()

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._finish()

    def _finish(self) -> None:
        self._finished = True
        if self._event is not None:
            self._event.set()

    async def wait(self, timeout: float) -> Session:
        if not self._finished:
            if self._event is None:
                self._event = anyio.Event()
            with anyio.move_on_after(timeout):
                await self._event.wait()
        if not self._finished:
            raise SandboxStartError(f"the first attempt of this open did not finish within {timeout:g}s", fatal=True)
        if self._session is None:
            error = self._error
            if isinstance(error, OpenEnvWSError):
                raise error
            raise SessionLostError(f"the first attempt of this open failed: {error!r}", fatal=True)
        return self._session


class _OutputLimit(Exception):
    """Raised into a sandbox's event stream: the request produced more than the server accepts."""


class Session:
    def __init__(
        self,
        context: SessionContext,
        session_id: str,
        spec: EnvSpec,
        sandbox: Sandbox,
        sink: FrameSink | None,
        schemas: tuple[Raw, Raw, Raw],
        options: dict[str, Any] | None = None,
        history: EpisodeHistory | None = None,
    ) -> None:
        self.context = context
        self.id = session_id
        self.token = secrets.token_urlsafe(24)
        self.token_hash = token_hash(self.token)
        """What is compared on a resume, and all the state directory keeps of the token."""
        self.spec = spec
        self.sandbox = sandbox
        self.options = options or {}
        """The environment's options the session was opened with (its copies get the same)."""
        self.history = history or EpisodeHistory(context.max_history_bytes)
        """The episode's reset and steps: what a copy by replay applies again."""
        self.sink: FrameSink | None = sink
        self.peer = sink.peer if sink is not None else ""
        self.state = SessionState(context.limits, time.monotonic())
        if sink is None:  # a copy (fork, checkpoint) waits for its client to resume it
            self.state.detach(time.monotonic())
        self.tap: SessionTap | None = None  # recording and live watchers; None while nothing listens
        self.deadline = context.step_timeout or spec.cls.step_timeout or DEFAULT_STEP_TIMEOUT
        """Seconds a request may run; the reaper stops the sandbox past it."""
        self.idle_timeout: float | None = None
        """Seconds without a request before the session is closed; None: the server's ``idle_timeout``."""
        self.owner: str | None = None  # the client that opened it (server/access.py): a token's name, or an IP
        self._first_reset = True  # its duration is the last stage of the sandbox's start (metrics)
        self._schemas = schemas
        self._watch_scope: anyio.CancelScope | None = None
        self._deadline_hit = False
        self.open_key: str | None = None
        """The client's key of the ``open`` that made it (a repeated open finds it by this)."""
        self.handed_off = False
        """The server handed the session to its successor (``serve --handoff``): this one answers nothing more."""

    # ------------------------------------------------------------ what others read

    @property
    def applied(self) -> int:
        """The highest request number accepted."""
        return self.state.applied

    @property
    def closed(self) -> bool:
        return self.state.closed

    @property
    def close_reason(self) -> str:
        return self.state.close_reason

    @property
    def busy(self) -> bool:
        return self.state.busy

    @property
    def created(self) -> float:
        return self.state.created

    def opened_frame(self, seq: int, resumed: bool) -> Opened:
        return Opened(
            seq=seq,
            session_id=self.id,
            resume_token=self.token,
            env=self.spec.name,
            backend=self.context.backend,
            action_schema=self._schemas[0],
            observation_schema=self._schemas[1],
            resumed=resumed,
            last_applied=self.state.applied,
            tools=self._schemas[2],
        )

    def holds_token(self, given: str) -> bool:
        """Whether ``given`` is this session's resume token (compared in constant time, as hashes)."""
        return secrets.compare_digest(self.token_hash, token_hash(given))

    def saved(self) -> SavedSession:
        """This session as the state directory keeps it (``persist.py``)."""
        history = self.history
        cache = self.state.cache
        return SavedSession(
            id=self.id,
            token_hash=self.token_hash,
            env=self.spec.name,
            options=self.options,
            owner=self.owner,
            sandbox=self.sandbox.ref(),
            open_key=self.open_key,
            applied=self.state.applied,
            steps=self.state.steps,
            replies={seq: (b"", e.frames[-1][1]) for seq, e in cache.items() if e.done and e.frames},
            # ``history._log``: its (request, reply) tuples (``entries`` builds an Entry for each)
            history=[(encode(request), encode(reply)) for request, reply in history._log],
            history_dropped=history.dropped,
            history_steps=history.steps,
            history_started=history.started,
        )

    def restore_state(self, saved: SavedSession) -> None:
        """Numbering and the last replies of a session kept in the state directory."""
        state = self.state
        state.applied = saved.applied
        state.steps = saved.steps
        self.token_hash = saved.token_hash
        self.token = ""  # only its hash was kept: the client's resume hands it back
        for seq, frame, data in saved.cached():
            entry = CacheEntry()
            entry.frames.append((frame, data))
            entry.done = True
            entry.size = len(data)
            state.cache[seq] = entry
            state.cache_bytes += entry.size

    # ------------------------------------------------------------ connections

    def attach(self, sink: FrameSink, last_seen: int) -> FrameSink | None:
        """Bind a new sink; returns the one it replaces, for the caller to close."""
        previous, self.sink = self.sink, sink
        self.peer = sink.peer
        self.state.attach(last_seen, time.monotonic())
        return previous if previous is not sink else None

    def detach(self, sink: FrameSink) -> None:
        if self.sink is sink:
            self.sink = None
            self.state.detach(time.monotonic())

    async def _send(self, frame: ServerFrame, data: bytes) -> None:
        if self.handed_off:
            return
        if self.tap is not None:
            self.tap.reply(data)
        sink = self.sink
        if sink is not None:
            await sink.send(frame, data)

    # ------------------------------------------------------------ requests

    async def submit(self, frame: Request, sink: FrameSink, inline: bool = True) -> None:
        """Accept a numbered request from ``sink``: apply it once, or answer a repeat from cache.

        ``inline`` applies it in the caller's task; a multiplexed connection, whose reader
        serves many sessions, passes False to have it applied in a task of its own.
        """
        if self.handed_off:
            return  # the successor answers it: the client sends it again once it has resumed there
        admission = self.state.receive(frame, time.monotonic())
        if admission is APPLY_NOW:
            # Applied in the caller's task (the connection's reader): no task per request. The
            # reader does not need to run meanwhile (one request at a time), and a dropped
            # socket does not cancel it, so the request completes and its reply is cached.
            if inline:
                await self._work()
            else:
                self.context.tasks.spawn(self._work)
        elif admission is APPLY_LATER:
            pass  # queued behind the request in flight; its worker applies it
        elif type(admission) is Refuse:
            error = admission.error
            await sink.send(error, encode(error))
        else:  # a repeat: the same frames again, nothing applied twice
            for reply, data in admission.frames:
                await sink.send(reply, data)

    async def _work(self) -> None:
        state = self.state
        try:
            while (frame := state.next_request(time.monotonic())) is not None:
                await self._apply(frame)
        except BaseException:
            state.busy = False  # cancelled (the server is stopping): nothing runs any more
            raise

    async def _apply(self, frame: Request) -> None:
        context = self.context
        if self.tap is not None:
            self.tap.request(frame)
        started = time.perf_counter()
        seq = frame.seq
        streamed = [0, 0]  # events, bytes

        async def stream(event: Event) -> None:
            data = encode(event)
            streamed[0] += 1
            streamed[1] += len(data)
            if streamed[0] > context.max_events or streamed[1] > context.max_event_bytes:
                raise _OutputLimit(
                    f"request {seq} streamed more than {context.max_events} events or"
                    f" {context.max_event_bytes} bytes of events; the sandbox was stopped"
                )
            self.state.record(seq, (event, data))
            await self._send(event, data)

        reply: Reply
        try:
            if type(frame) is Fork or type(frame) is Checkpoint:
                reply = await self._copy(frame)
            else:
                reply = await self.sandbox.request(frame, stream)  # type: ignore[assignment]
        except _OutputLimit as exc:
            await self.sandbox.close()  # mid-request: the relay cannot be trusted any more
            reply = Error(seq=seq, code=ErrorCode.OUTPUT_LIMIT, message=str(exc), fatal=True)
        except OpenEnvWSError as exc:
            if self._deadline_hit:
                message = f"request took longer than {self.deadline:g}s; the sandbox was stopped"
                reply = Error(seq=seq, code=ErrorCode.TIMEOUT, message=message, fatal=True)
            else:
                reply = exc.to_frame(seq)
        except Exception as exc:
            log.exception("session %s: request %s failed", self.id, seq)
            reply = Error(seq=seq, code=ErrorCode.INTERNAL, message=f"{type(exc).__name__}: {exc}", fatal=True)
        elapsed = time.perf_counter() - started
        context.metrics.applied(frame, reply, elapsed)
        if self._first_reset and type(frame) is Reset:
            self._first_reset = False
            context.metrics.stage("first_reset", elapsed)
        data = encode(reply)
        kind = type(frame)
        if kind is Step:
            self.history.record(frame, reply, len(frame.action) + len(data))
        elif kind is Reset:
            self.history.record(frame, reply, len(data))
        ending = self.state.finish(frame, (reply, data), time.monotonic())
        if context.journal is not None:
            context.journal.answered(self.id, frame, data)  # before it is sent: a repeat after a restart finds it
        await self._send(reply, data)
        if ending is not None:
            await self.close(ending, notify=False)

    async def _copy(self, frame: Fork | Checkpoint) -> Reply:
        """A fork or a checkpoint of this episode; its failure is an answer, never the end of this session."""
        copier = self.context.copier
        try:
            if isinstance(frame, Fork):
                return await copier.fork(self, frame)
            return await copier.checkpoint(self, frame)
        except OpenEnvWSError as exc:
            exc.fatal = False
            return exc.to_frame(frame.seq)

    # ------------------------------------------------------------ ending

    async def stop_request(self) -> None:
        """The request in flight is past its deadline: stop the sandbox; the request answers ``timeout``."""
        if self.state.closed or not self.state.busy or self._deadline_hit:
            return
        self._deadline_hit = True
        await self.sandbox.close()

    async def watch_sandbox(self) -> None:
        """Tell the client promptly when its sandbox dies between requests."""
        with anyio.CancelScope() as self._watch_scope:
            reason = await self.sandbox.wait_exit()
            if self.state.closed or self.state.busy:
                return  # closing on purpose, or the request in flight reports it
            frame = Error(code=ErrorCode.SANDBOX_CRASHED, message=reason, fatal=True)
            self.context.metrics.error(frame.code)
            await self._send(frame, encode(frame))
            await self.close(f"{ErrorCode.SANDBOX_CRASHED}: {reason}", notify=False)

    async def close(self, reason: str, notify: bool = True, code: int = 1000) -> None:
        """End the session: drop it, stop its sandbox, tell and release the client."""
        if self.handed_off or not self.state.close(reason):
            return
        self.context.forget(self)
        if self.context.journal is not None:
            self.context.journal.closed_session(self.id)
        if self.tap is not None:
            self.tap.close(reason)
        self.context.metrics.session_closed()
        if self._watch_scope is not None:
            self._watch_scope.cancel()
        log.info("session %s closed: %s", self.id, reason)
        with anyio.CancelScope(shield=True):
            await self.sandbox.close()
            sink = self.sink
            if sink is not None:
                if notify:
                    closed = Closed(reason=reason)
                    await sink.send(closed, encode(closed))
                await sink.close(code, reason[:120])

    def hand_off(self) -> None:
        """Stop answering: the session's state is written and a successor takes it (and its sandbox) over."""
        self.handed_off = True
        self.state.queue.clear()  # not applied here: the client sends them again to the successor
        if self._watch_scope is not None:
            self._watch_scope.cancel()

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        wall = time.time()
        state = self.state
        tap = self.tap
        return {
            "id": self.id,
            "env": self.spec.name,
            "backend": self.context.backend,
            "sandbox": self.sandbox.id,
            "state": state.shown_state,
            "age_s": round(now - state.created, 3),
            "steps": state.steps,
            "idle_s": round(now - state.last_activity, 3),
            "client": self.peer,
            # Inspector additions: wall-clock times, requests applied, who listens.
            "created_at": round(wall - (now - state.created), 3),
            "last_activity_at": round(wall - (now - state.last_activity), 3),
            "requests": state.applied,
            "watchers": len(tap.watchers) if tap is not None else 0,
            "recording": str(tap.recorder.path) if tap is not None and tap.recorder and tap.recorder.path else None,
        }


def _published(spec: EnvSpec) -> tuple[Raw, Raw, Raw]:
    """What every ``opened`` frame of an environment carries, encoded once: its schemas and tools."""
    tools = pack(spec.tools) if spec.tools else NIL
    return pack(spec.schemas["action"]), pack(spec.schemas["observation"]), tools


class SessionManager:
    """Owns every session and their tasks, enforces the server's bounds, and reaps what expired."""

    def __init__(self, specs: dict[str, EnvSpec], backend: Backend, config: ServerConfig) -> None:
        if not specs:
            raise ValueError("at least one environment is needed")
        self.specs = specs
        self.default_env = next(iter(specs))
        self.backend = backend
        backend.max_frame_bytes = config.max_sandbox_frame_bytes
        if config.state_dir:
            backend.adopt_grace = config.adopt_grace  # its sandboxes wait this long for the next server
        self.config = config
        backend.node = config.node or ""  # the ids it hands out name this node
        self.sessions: dict[str, Session] = {}
        self.draining = False
        self.opening = 0
        self.metrics: Metrics = Metrics() if config.metrics else NullMetrics()
        backend.timings = self.metrics  # the backend's start stages and pool events go to /metrics
        self.journal = (
            Journal(config.state_dir, reply_cache=config.reply_cache, max_history_bytes=config.max_history_bytes)
            if config.state_dir
            else None
        )
        self.lost: dict[str, tuple[str, str]] = {}
        """Sessions a restart could not restore: id -> (token hash, why), told to a client that resumes one."""
        self.restart: dict[str, Any] = {}
        """What the last start took back from the state directory (``/healthz``'s ``restart``)."""
        self.tasks = TaskOwner()
        """Short tasks that must not hold up their caller: multiplexed requests."""
        self.context = SessionContext(
            backend=backend.name,
            limits=Limits(
                max_queue=config.max_queue,
                reply_cache=config.reply_cache,
                max_cached_frames=MAX_CACHED_FRAMES,
                max_cache_bytes=config.reply_cache_bytes,
                retry_after=config.retry_after,
            ),
            step_timeout=config.step_timeout,
            max_events=config.max_events_per_request,
            max_history_bytes=config.max_history_bytes,
            copier=EpisodeCopier(
                CopyLimits(
                    max_forks=config.max_forks,
                    checkpoint_dir=config.checkpoint_dir,
                    max_checkpoint_bytes=config.max_checkpoint_bytes,
                    checkpoint_ttl=config.checkpoint_ttl,
                ),
                self._new_copy,
            ),
            max_event_bytes=config.max_event_bytes_per_request,
            metrics=self.metrics,
            tasks=self.tasks,
            forget=self._forget,
            journal=self.journal,
        )
        self._schemas = {name: _published(spec) for name, spec in specs.items()}
        self._by_open_key: dict[str, Session | _Opening] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._starting: anyio.Semaphore | None = None
        self._drained = anyio.Event()
        self._draining_started = False

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
            self.tasks.cancel()

    def spawn(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` in the manager's task group (cancelled when the server stops)."""
        assert self._tg is not None, "SessionManager.run() is not running"
        self._tg.start_soon(fn, *args)

    def _reap(self) -> None:
        now = time.monotonic()
        cfg = self.config
        for session in list(self.sessions.values()):
            state = session.state
            expiry = state.expiry(
                now,
                resume_grace=cfg.resume_grace,
                idle_timeout=cfg.idle_timeout if session.idle_timeout is None else session.idle_timeout,
                deadline=session.deadline,
            )
            if expiry is None:
                if state.running_for(now) > cfg.reap_interval and session.sink is not None:
                    session.sink.slow_request()
                continue
            if expiry.deadline:
                self.spawn(session.stop_request)
            else:
                self.spawn(session.close, expiry.reason, expiry.notify, expiry.code)

    async def wind_down(self, stop: Callable[[], bool] = lambda: False) -> None:
        """The first step of a graceful shutdown: refuse new sessions (``/healthz`` says ``draining``)
        and let open ones go on and end by themselves, for up to ``config.drain_sessions`` seconds
        or until ``stop()`` says to stop waiting. Resumes are still accepted meanwhile."""
        self.draining = True
        if self.config.drain_sessions <= 0 or not self.sessions:
            return
        log.info("draining: %d sessions may go on for up to %ss", len(self.sessions), self.config.drain_sessions)
        with anyio.move_on_after(self.config.drain_sessions):
            while self.sessions and not stop():
                await anyio.sleep(0.05)
        if self.sessions:
            log.info("draining: handing back %d sessions", len(self.sessions))

    async def drain(self) -> None:
        """Graceful shutdown: refuse new sessions, let in-flight requests finish, close all."""
        if self._draining_started:
            await self._drained.wait()
            return
        self._draining_started = True
        self.draining = True
        log.info("draining %d sessions", len(self.sessions))
        with anyio.move_on_after(self.config.drain_timeout):
            while any(s.busy for s in self.sessions.values()):
                await anyio.sleep(0.05)
        if self.config.handoff and self.journal is not None:
            await self._hand_off(self.journal)
            self._drained.set()
            return
        async with anyio.create_task_group() as tg:
            for session in list(self.sessions.values()):
                tg.start_soon(session.close, "server shutting down", True, 1001)
        await self.backend.aclose()
        self._drained.set()

    async def _hand_off(self, journal: Journal) -> None:
        """Leave every session to the next server on the state directory: state written, sandboxes left running."""
        sessions = list(self.sessions.values())
        for session in sessions:
            session.hand_off()
        saved = [session.saved() for session in sessions]
        await anyio.to_thread.run_sync(journal.write_state, self.backend.instance, saved)
        journal.stop()
        log.info("handed off %d sessions (state in %s)", len(sessions), journal.dir)
        await self.backend.hand_off([session.sandbox for session in sessions])
        await self.backend.aclose()

    # ------------------------------------------------------------ restarts (serve --state-dir)

    def load_state(self) -> SavedState | None:
        """What a previous server left in the state directory (blocking; before the backend starts).

        Waits while another server holds the directory: one started before its predecessor finished
        handing off takes over right after it.
        """
        if self.journal is None:
            return None
        saved = self.journal.load()
        if saved is not None:
            self.backend.take_over(saved.instance)
        return saved

    async def restore(self, saved: SavedState | None) -> None:
        """Take back the sessions of ``saved``: adopt their sandboxes, else replay their episodes, else say why.

        Called once the backend and :meth:`run` have started, before the server accepts
        connections. Writes a fresh state file (the sessions taken back) and starts its journal.
        """
        journal = self.journal
        if journal is None:
            return
        started = time.perf_counter()
        outcome: dict[str, str] = {}
        if saved is not None and saved.sessions:

            async def one(item: SavedSession) -> None:
                outcome[item.id] = await self._take_back(item)

            async with anyio.create_task_group() as tg:
                for item in saved.sessions.values():
                    tg.start_soon(one, item)
        await self.backend.adopted()
        kept = [session.saved() for session in self.sessions.values()]
        await anyio.to_thread.run_sync(journal.write_state, self.backend.instance, kept)
        counts = {how: list(outcome.values()).count(how) for how in ("adopted", "replayed", "lost")}
        self.restart = {**counts, "seconds": round(time.perf_counter() - started, 3)}
        if saved is not None:
            log.info("restart: sessions %s in %.2fs", counts, time.perf_counter() - started)
        self.spawn(self._sync_journal, journal)

    async def _sync_journal(self, journal: Journal) -> None:
        while not journal.closed:
            await anyio.sleep(FSYNC_INTERVAL)
            if journal.needs_compaction:
                saved = [s.saved() for s in self.sessions.values()]
                await anyio.to_thread.run_sync(journal.write_state, self.backend.instance, saved)
            elif journal.dirty:
                await anyio.to_thread.run_sync(journal.sync)

    async def _take_back(self, saved: SavedSession) -> str:
        """One session of the state directory: ``adopted``, ``replayed`` or ``lost`` (with why, for its client)."""
        spec = self.specs.get(saved.env)
        if spec is None:
            why = f"session {saved.id}: its environment {saved.env!r} is no longer served"
            self.lost[saved.id] = (saved.token_hash, why)
            return "lost"
        history = saved.episode(self.config.max_history_bytes)
        how = "adopted"
        try:
            sandbox = await self.backend.adopt(spec, saved.sandbox, saved.options)
        except Exception as exc:
            gone = f"{exc}" or type(exc).__name__
            how = "replayed"
            try:
                sandbox = await self._replayed(spec, saved, history)
            except Exception as replay_exc:
                why = (
                    f"session {saved.id} did not survive the server restart: its sandbox is gone ({gone}) and its "
                    f"episode could not be replayed in a new one: {replay_exc}"
                )
                log.warning("%s", why)
                self.lost[saved.id] = (saved.token_hash, why)
                return "lost"
            log.info("session %s: sandbox gone (%s); episode replayed (%d steps)", saved.id, gone, history.steps)
        session = Session(self.context, saved.id, spec, sandbox, None, self._schemas[spec.name], saved.options, history)
        session.owner = saved.owner
        session.open_key = saved.open_key
        session.restore_state(saved)
        self.sessions[session.id] = session
        if saved.open_key:
            self._by_open_key[saved.open_key] = session
        self.metrics.session_opened()
        if sandbox.isolated:
            self.spawn(session.watch_sandbox)
        return how

    async def _replayed(self, spec: EnvSpec, saved: SavedSession, history: EpisodeHistory) -> Sandbox:
        """A new sandbox holding the episode of ``saved``, by replay (checked step by step)."""
        if history.started:
            if capture_method(spec.cls) == "none":
                raise NotCopyableError(f"{spec.name} declares that its episodes cannot be copied")
            if history.dropped:
                raise NotCopyableError(
                    f"the episode outgrew the history a replay needs ({self.config.max_history_bytes} bytes)"
                )
        sandbox = await self._start_sandbox(spec, saved.options)
        if history.started:
            try:
                await by_replay(history.entries, FieldFilter(spec.cls.nondeterministic_fields))(sandbox)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await sandbox.close()
                raise
        return sandbox

    def _forget(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        if session.open_key is not None:
            self._by_open_key.pop(session.open_key, None)

    # ------------------------------------------------------------ finding

    def spec(self, name: str | None) -> EnvSpec:
        """The environment ``name`` (None: the first one served); raises :class:`UnknownEnvError`."""
        spec = self.specs.get(name or self.default_env)
        if spec is None:
            served = ", ".join(self.specs)
            raise UnknownEnvError(f"unknown environment {name!r}; this server serves: {served}", fatal=True)
        return spec

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    def knows_open_key(self, key: str) -> bool:
        """Whether an ``open`` with this key is under way or made a live session (a repeat opens nothing new)."""
        return key in self._by_open_key

    # ------------------------------------------------------------ opening

    async def open(self, frame: Open, sink: FrameSink, owner: str | None = None) -> Session:
        """Create or resume the session an :class:`Open` frame asks for (a new one belongs to ``owner``)."""
        if frame.version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version {frame.version} is not supported (server speaks {PROTOCOL_VERSION})",
                code=ErrorCode.UNSUPPORTED_VERSION,
                fatal=True,
            )
        if frame.session_id:  # a resume, accepted while draining too
            return self._resume(frame, sink)
        if self.draining:
            raise CapacityError(
                "server is shutting down",
                code=ErrorCode.SHUTTING_DOWN,
                retry_after=self.config.retry_after,
                fatal=True,
            )
        if frame.open_key:
            known = self._by_open_key.get(frame.open_key)
            if known is not None:
                return await self._open_again(known, sink)
            opening = self._by_open_key[frame.open_key] = _Opening()
            try:
                session = await self._open_new(frame, sink, owner)
            except BaseException as exc:
                del self._by_open_key[frame.open_key]
                opening.fail(exc)
                raise
            session.open_key = frame.open_key
            self._by_open_key[frame.open_key] = session
            if self.journal is not None:
                self.journal.keyed(session.id, frame.open_key)
            opening.done(session)
            return session
        return await self._open_new(frame, sink, owner)

    async def _open_again(self, known: Session | _Opening, sink: FrameSink) -> Session:
        """The same ``open`` again (its connection dropped before ``opened``): the same session."""
        session = await known.wait(self.config.start_wait + 60) if isinstance(known, _Opening) else known
        if session.closed:
            raise SessionLostError(
                f"session {session.id} opened by this key has ended: {session.close_reason}", fatal=True
            )
        previous = session.attach(sink, 0)
        if previous is not None:
            self.spawn(previous.close, 1000, "superseded by a repeated open")
        return session

    async def _open_new(self, frame: Open, sink: FrameSink, owner: str | None) -> Session:
        if frame.checkpoint:
            env, options, plan = await self.context.copier.load(frame.checkpoint)
            return await self._new_session(self.spec(env), options, sink, plan.restore, plan.history, owner)
        return await self._new_session(self.spec(frame.env), frame.options, sink, owner=owner)

    async def _new_copy(
        self,
        spec: EnvSpec,
        options: dict[str, Any],
        restore: Restore,
        history: EpisodeHistory,
        owner: str | None = None,
    ) -> Session:
        """A copy of an episode (a fork's child): held detached until its client resumes it."""
        return await self._new_session(spec, options, None, restore, history, owner)

    async def _new_session(
        self,
        spec: EnvSpec,
        options: dict[str, Any],
        sink: FrameSink | None,
        restore: Restore | None = None,
        history: EpisodeHistory | None = None,
        owner: str | None = None,
    ) -> Session:
        """Start a sandbox for ``spec`` (made to hold a copied episode by ``restore``) and hold it as a session."""
        if len(self.sessions) + self.opening >= self.config.max_sessions:
            self.metrics.capacity_rejected()
            raise CapacityError(
                f"server at capacity ({self.config.max_sessions} sessions)",
                retry_after=self.config.retry_after,
                fatal=True,
            )
        self.backend.wanted(spec)  # on arrival, before the start slot: how big a wave is
        self.opening += 1
        try:
            sandbox = await self._start_sandbox(spec, options)
            if restore is not None:
                try:
                    await restore(sandbox)
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await sandbox.close()
                    raise
        finally:
            self.opening -= 1
        schemas = self._schemas[spec.name]
        session = Session(self.context, sandbox.session_id, spec, sandbox, sink, schemas, options, history)
        session.owner = owner
        self.sessions[session.id] = session
        if self.journal is not None:
            self.journal.opened(session.saved())
        if self.config.record_dir:
            header = self._recording_header(session, options)
            session.tap = recording_tap(header, session.created, self.config.record_dir)
        self.metrics.session_opened()
        if sandbox.isolated:
            self.spawn(session.watch_sandbox)
        return session

    def _recording_header(self, session: Session, options: dict[str, Any]) -> dict[str, Any]:
        spec = session.spec
        return {
            "env": spec.name,
            "target": spec.target,
            "backend": self.backend.name,
            "sandbox": session.sandbox.id,
            "image": self.backend.image_of(spec),
            "session_id": session.id,
            "options": options,
            "nondeterministic_fields": list(spec.cls.nondeterministic_fields),
        }

    async def _start_sandbox(self, spec: EnvSpec, options: dict[str, Any]) -> Sandbox:
        assert self._starting is not None
        waiting = time.perf_counter()
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
        self.metrics.stage("slot_wait", started - waiting)
        try:
            sandbox = await self.backend.open(spec, options)
        except Exception:
            self.metrics.sandbox_start_failed()
            raise
        finally:
            self._starting.release()
        self.metrics.sandbox_started(time.perf_counter() - started)
        return sandbox

    def _resume(self, frame: Open, sink: FrameSink) -> Session:
        owner = node_of(frame.session_id or "")
        here = node_label(self.config.node or "")
        if owner is not None and here and owner != here:
            raise SessionLostError(
                f"session {frame.session_id!r} is held by node {owner}, not {here}: resume it there",
                fatal=True,
            )
        session = self.sessions.get(frame.session_id or "")
        given = frame.resume_token or ""
        if session is None or not session.holds_token(given):
            lost = self.lost.get(frame.session_id or "")
            if lost is not None and secrets.compare_digest(lost[0], token_hash(given)):
                raise SandboxLostError(lost[1], fatal=True)
            raise SessionLostError(
                f"session {frame.session_id!r} cannot be resumed: unknown, expired or closed",
                fatal=True,
            )
        if not session.token:
            session.token = given  # a session taken back after a restart: only the token's hash was kept
        previous = session.attach(sink, frame.last_seen)
        self.metrics.resumed()
        if previous is not None:
            self.spawn(previous.close, 1000, "superseded by a resumed connection")
        return session

    # ------------------------------------------------------------ reading

    def health(self) -> dict[str, Any]:
        held = len(self.sessions)
        return {
            "status": "draining" if self.draining else "ok",
            **({"node": self.config.node} if self.config.node else {}),
            "backend": self.backend.describe(),
            "envs": list(self.specs),
            "sessions": held,
            "busy": sum(1 for s in self.sessions.values() if s.busy),
            "detached": sum(1 for s in self.sessions.values() if s.state.phase == "detached"),
            "opening": self.opening,
            "max_sessions": self.config.max_sessions,
            "capacity_left": max(0, self.config.max_sessions - held - self.opening) if self.backend.can_start() else 0,
            **({"restart": self.restart} if self.restart else {}),
        }

    def snapshot(self) -> ServerSnapshot:
        """What ``GET /metrics`` reports beside the counters."""
        snapshot = ServerSnapshot(
            backend=self.backend.describe(), max_sessions=self.config.max_sessions, opening=self.opening
        )
        for session in list(self.sessions.values()):
            shown = session.state.shown_state
            snapshot.sessions[shown] = snapshot.sessions.get(shown, 0) + 1
            tap = session.tap
            if tap is not None:
                snapshot.watchers += len(tap.watchers)
                snapshot.watch_dropped += sum(w.dropped for w in tap.watchers)
        return snapshot
