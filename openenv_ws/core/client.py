"""The rules of one session on the client, as a plain state machine: no I/O, no event loop.

Every request gets the next sequence number (:meth:`ClientState.call`) and is matched to
its reply by that number (:meth:`receive`), so a call that timed out never hands its late
reply to the next call, and the events a request streams reach that request only, each
once even when a resume makes the server send them again. When the connection is lost,
:meth:`begin_resume` gives the ``open`` frame that resumes the session (with the highest
number whose reply the client holds), and :meth:`resumed` the calls to send again, in
order, on the new connection; the server applies each number once, so nothing is lost
and nothing is applied twice. Another driver of the same session (an MCP client calling
tools, :mod:`openenv_ws.server.mcp`) takes numbers too: the replies to its requests, and the
``last_applied`` of a resume, move this client's numbering past them.

The adapter (:class:`openenv_ws.client.session.EnvSession`) owns the sockets, the waiting
and the timeouts: ``tests/unit/test_core_client.py`` tests these rules without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import OpenEnvWSError, SessionLostError, from_frame
from ..protocol import Closed, Error, Event, Open, Opened, Pong, ServerFrame


@dataclass(eq=False, slots=True)
class Call:
    """One numbered request waiting for its reply."""

    seq: int
    data: bytes | str
    """What goes on the wire (kept to send again after a resume)."""
    on_event: Any = None
    """The caller's callback for streamed events (the adapter calls it)."""
    waiter: Any = None
    """The adapter's wake-up object (an event it sets when the call ends)."""
    sent_on: int = -1
    """The connection generation it was last sent on."""
    events_seen: int = 0
    reply: ServerFrame | None = None
    error: OpenEnvWSError | None = None
    deadline: float | None = None
    """When the adapter stops waiting for it (its clock), if it watches one."""

    @property
    def ended(self) -> bool:
        return self.reply is not None or self.error is not None


# ---------------------------------------------------------------- what receive() decides
# One is made per frame received: plain slotted classes (a frozen dataclass's __init__ costs twice).


@dataclass(slots=True)
class EventFor:
    """A new streamed event of a pending call: hand ``data`` to its callback."""

    call: Call
    event: Event


@dataclass(slots=True)
class Answered:
    """A pending call got its reply (``call.reply``): wake its caller."""

    call: Call


@dataclass(slots=True)
class Ended:
    """The server ended the session on its own; ``calls`` failed with ``error``: wake them."""

    error: OpenEnvWSError
    calls: list[Call]


Dispatch = EventFor | Answered | Ended | None
"""None: nothing to do (a repeat, a late reply to a call that gave up)."""


class ClientState:
    """Numbering, pending calls and what to resend, for one client session."""

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.resume_token = ""
        self.seq = 0
        """The last number given."""
        self.last_seen = 0
        """The highest number whose final reply arrived."""
        self.pending: dict[int, Call] = {}
        self.failure: OpenEnvWSError | None = None
        self.generation = 0
        """Counts connections: a call is sent at most once on each."""
        self.resumes = 0

    # ------------------------------------------------------------ requests out

    def call(self, encode: Any, on_event: Any = None, waiter: Any = None) -> Call:
        """Number a new request. ``encode(seq)`` returns its wire form for that number.

        Numbers follow the order of this method's calls: the adapter sends each request
        before it numbers the next, so the server sees them in order.
        """
        self.seq += 1
        call = Call(self.seq, encode(self.seq), on_event, waiter)
        self.pending[call.seq] = call
        return call

    def forget(self, call: Call) -> None:
        """The caller stopped waiting (answered, failed or gave up)."""
        self.pending.pop(call.seq, None)

    def should_send(self, call: Call) -> bool:
        """Whether ``call`` still has to go out on the current connection (marks it sent)."""
        if call.sent_on == self.generation:
            return False
        call.sent_on = self.generation
        return True

    # ------------------------------------------------------------ frames in

    def opened(self, frame: Opened) -> None:
        self.session_id = frame.session_id
        self.resume_token = frame.resume_token
        self.seq = max(self.seq, frame.last_applied)  # another driver (MCP) may have applied requests meanwhile

    def receive(self, frame: ServerFrame) -> Dispatch:
        """Match a frame from the server to what it answers."""
        if isinstance(frame, Event):
            call = self.pending.get(frame.seq)
            if call is None or frame.index < call.events_seen:
                return None  # sent again after a resume, or for a call that gave up
            call.events_seen = frame.index + 1
            return EventFor(call, frame)
        if frame.seq == 0:  # not an answer: the server ended the session (crash, shutdown, idle)
            if isinstance(frame, Error):
                error = from_frame(frame)
            elif isinstance(frame, Closed):
                error = SessionLostError(f"session closed by the server: {frame.reason}")
            else:
                return None
            return Ended(error, self.fail(error))
        call = self.pending.get(frame.seq)
        if call is None and frame.seq > self.seq and not isinstance(frame, Pong):
            # The reply to a request another driver of this session made (a tool call over MCP): our
            # numbering continues after it, so our next request is not taken for a repeat of it.
            self.seq = self.last_seen = frame.seq
            return None
        if call is None or call.ended:
            return None  # a late reply to a call that timed out, or a repeat
        call.reply = frame
        if not isinstance(frame, Pong):
            self.last_seen = max(self.last_seen, frame.seq)
        return Answered(call)

    def fail(self, error: OpenEnvWSError) -> list[Call]:
        """The session is over (the first error is kept); returns the calls it ended."""
        if self.failure is None:
            self.failure = error
        ended = [call for call in self.pending.values() if not call.ended]
        for call in ended:
            call.error = error
        return ended

    # ------------------------------------------------------------ resuming

    def begin_resume(self) -> Open:
        """The frame that resumes this session on a new connection."""
        return Open(session_id=self.session_id, resume_token=self.resume_token, last_seen=self.last_seen)

    def resumed(self) -> list[Call]:
        """A new connection holds the session: the calls to send on it, in order."""
        self.generation += 1
        self.resumes += 1
        return sorted(self.pending.values(), key=lambda call: call.seq)
