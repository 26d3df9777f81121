"""The rules of one session on the server, as a plain state machine: no I/O, no event loop.

Requests arrive numbered by the client. :meth:`SessionState.receive` decides what each one
gets: applied (queued behind the one in flight), answered again from the reply cache (a
repeat after a resume), or refused (stale number, full queue, closed session). The adapter
that owns the session (:mod:`openenv_ws.server.sessions`) applies what is queued, one
request at a time in order (:meth:`next_request`), reports every frame a request produces
(:meth:`record` for streamed events, :meth:`finish` for the reply), and sends what this
object says to send to whatever connection is attached. Connections come and go
(:meth:`attach`, :meth:`detach`); the session and its cache outlive them, so a reply
produced while no one was attached is delivered on resume.

Time comes from the caller (``now`` arguments), so every rule can be tested with a fake
clock and no sockets: ``tests/unit/test_core_server.py``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Literal

from ..protocol import Closed, Error, ErrorCode, Request, Result, ServerFrame, Step

Delivery = tuple[ServerFrame, bytes]
"""A frame and its MessagePack bytes, encoded once by the adapter."""

Phase = Literal["active", "detached", "closed"]


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds one session enforces (the server's settings, see ``ServerConfig``)."""

    max_queue: int = 8
    """Requests waiting behind the one being applied."""
    reply_cache: int = 8
    """Answered requests kept for repeats after a resume."""
    max_cached_frames: int = 4096
    """Frames (events + reply) kept per request; later events are sent live only."""
    max_cache_bytes: int = 16 << 20
    """Bytes of frames kept per session: past it, older answered requests are dropped first and a
    request's further events are sent live only. A reply is always kept."""
    retry_after: float = 1.0
    """What a ``queue_full`` refusal suggests as the wait."""


@dataclass(slots=True)
class CacheEntry:
    """What one request produced so far: its events, then its reply (``done``)."""

    frames: list[Delivery] = field(default_factory=list)
    done: bool = False
    size: int = 0
    """Bytes of ``frames``."""


# ---------------------------------------------------------------- what receive() decides


@dataclass(frozen=True, slots=True)
class Apply:
    """The request was accepted. ``start``: no request is in flight, so the adapter starts applying."""

    start: bool


@dataclass(frozen=True, slots=True)
class Repeat:
    """A number already accepted: send these frames again (all of them so far); apply nothing."""

    frames: list[Delivery]


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer with this error; the request is not applied and not numbered."""

    error: Error


Admission = Apply | Repeat | Refuse


@dataclass(frozen=True, slots=True)
class Expiry:
    """Why the reaper should close a session, and how to tell its client."""

    reason: str
    notify: bool
    code: int
    deadline: bool = False
    """The request in flight is past its deadline: stop the sandbox, answer ``timeout``."""


class SessionState:
    """Numbering, the reply cache, the request queue and the phase of one server session."""

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self.phase: Phase = "active"
        self.applied = 0
        """The highest request number accepted."""
        self.steps = 0
        """Steps that returned a result."""
        self.busy = False
        """A request is being applied (the adapter's worker runs)."""
        self.close_reason = ""
        self.created = self.last_activity = now
        self.detached_at = 0.0
        self.request_started = 0.0
        """When the request being applied was taken from the queue."""
        self.queue: deque[Request] = deque()
        self.cache: OrderedDict[int, CacheEntry] = OrderedDict()
        self.cache_bytes = 0

    @property
    def closed(self) -> bool:
        return self.phase == "closed"

    # ------------------------------------------------------------ requests in

    def receive(self, frame: Request, now: float) -> Admission:
        """Decide what a numbered request from the client gets."""
        self.last_activity = now
        seq = frame.seq
        entry = self.cache.get(seq)
        if entry is not None:  # a repeat: the same frames again, nothing applied twice
            return Repeat(list(entry.frames))
        if self.closed:
            message = f"session closed: {self.close_reason}"
            return Refuse(Error(seq=seq, code=ErrorCode.SESSION_CLOSED, message=message, fatal=True))
        if seq <= self.applied:
            message = f"request {seq} is older than the newest applied ({self.applied}) and no longer cached"
            return Refuse(Error(seq=seq, code=ErrorCode.STALE_SEQ, message=message))
        if len(self.queue) >= self.limits.max_queue:
            message = f"{len(self.queue)} requests already wait in this session"
            error = Error(seq=seq, code=ErrorCode.QUEUE_FULL, message=message, retry_after=self.limits.retry_after)
            return Refuse(error)
        self.applied = seq
        self.cache[seq] = CacheEntry()
        self._trim()
        self.queue.append(frame)
        start = not self.busy
        if start:  # busy from now: its deadline runs from now too, before a worker picks it up
            self.request_started = now
        self.busy = True
        return Apply(start)

    def next_request(self, now: float) -> Request | None:
        """The next request to apply, in order; None when there is none (the worker stops)."""
        if self.queue and not self.closed:
            self.request_started = now
            return self.queue.popleft()
        self.busy = False
        self.last_activity = now
        return None

    # ------------------------------------------------------------ frames out

    def record(self, seq: int, delivery: Delivery) -> None:
        """A frame request ``seq`` streamed before its reply; kept for repeats (bounded)."""
        entry = self.cache.get(seq)
        if entry is None or len(entry.frames) >= self.limits.max_cached_frames:
            return
        size = len(delivery[1])
        if self.cache_bytes + size > self.limits.max_cache_bytes:
            self._trim_bytes(size)
            if self.cache_bytes + size > self.limits.max_cache_bytes:
                return  # sent live only
        entry.frames.append(delivery)
        entry.size += size
        self.cache_bytes += size

    def finish(self, request: Request, delivery: Delivery, now: float) -> str | None:
        """Request ``request`` got its final reply. Returns why the session must end now, if it must."""
        reply = delivery[0]
        entry = self.cache.get(request.seq)
        if entry is not None:
            size = len(delivery[1])
            entry.frames.append(delivery)
            entry.size += size
            entry.done = True
            self.cache_bytes += size
            self._trim_bytes(0)
        if isinstance(reply, Result) and isinstance(request, Step):
            self.steps += 1
        self.last_activity = now
        if isinstance(reply, Closed):
            return "closed by client"
        if isinstance(reply, Error) and reply.fatal:
            return f"{reply.code}: {reply.message}"
        return None

    def _trim(self) -> None:
        """Keep the newest ``reply_cache`` answered requests (plus those still queued or in flight)."""
        keep = self.limits.reply_cache + len(self.queue) + 1
        while len(self.cache) > keep:
            seq, entry = next(iter(self.cache.items()))
            if not entry.done:
                break
            self._drop(seq)

    def _trim_bytes(self, room: int) -> None:
        """Drop the oldest answered requests until ``room`` more bytes fit (the newest answer stays)."""
        budget = self.limits.max_cache_bytes - room
        while self.cache_bytes > budget and len(self.cache) > 1:
            seq, entry = next(iter(self.cache.items()))
            if not entry.done:
                break
            self._drop(seq)

    def _drop(self, seq: int) -> None:
        self.cache_bytes -= self.cache.pop(seq).size

    # ------------------------------------------------------------ connections

    def attach(self, last_seen: int, now: float) -> None:
        """A connection (new or resumed) is attached; replies up to ``last_seen`` are held by the client."""
        if self.closed:
            return
        self.phase = "active"
        self.last_activity = now
        for seq in [s for s, e in self.cache.items() if s <= last_seen and e.done]:
            self._drop(seq)

    def detach(self, now: float) -> None:
        """The attached connection went away; the session waits for a resume."""
        if self.phase == "active":
            self.phase = "detached"
            self.detached_at = now

    # ------------------------------------------------------------ ending

    def close(self, reason: str) -> bool:
        """Mark the session closed; False if it already was (the caller then does nothing)."""
        if self.closed:
            return False
        self.phase = "closed"
        self.close_reason = reason
        self.queue.clear()
        return True

    def expiry(
        self, now: float, *, resume_grace: float, idle_timeout: float, deadline: float | None = None
    ) -> Expiry | None:
        """Whether the reaper should close the session now.

        A session whose client left is closed after the grace period even while a request runs
        (the request is stopped with its sandbox: nobody waits for its answer any more). An
        attached session is never reaped while a request runs: its deadline bounds that.
        """
        if self.closed:
            return None
        if self.phase == "detached" and now - self.detached_at > resume_grace:
            return Expiry("resume grace period expired", notify=True, code=1000)
        if self.busy:
            if deadline is not None and now - self.request_started > deadline:
                return Expiry(f"request took longer than {deadline:g}s", notify=False, code=1000, deadline=True)
            return None
        if now - self.last_activity > idle_timeout:
            return Expiry("idle timeout", notify=True, code=1001)
        return None

    def running_for(self, now: float) -> float:
        """How long the request in flight has run (0 when none runs)."""
        return now - self.request_started if self.busy else 0.0

    @property
    def shown_state(self) -> str:
        """What the inspector shows: ``busy`` for an attached session applying a request."""
        return "busy" if self.busy and self.phase == "active" else self.phase
