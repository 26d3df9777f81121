"""The server side of the session core: every rule of a session, with a fake clock and no sockets."""

from __future__ import annotations

import pytest

from openenv_ws.core.server import Apply, CacheEntry, Limits, Refuse, Repeat, SessionState
from openenv_ws.protocol import (
    Close,
    Closed,
    Error,
    ErrorCode,
    Event,
    GetState,
    Reset,
    Result,
    StateReply,
    Step,
    encode,
    pack,
)


def step(seq: int) -> Step:
    return Step(seq=seq, action=pack({"n": seq}))


def result(seq: int) -> tuple[Result, bytes]:
    frame = Result(seq=seq, observation=pack({"n": seq}))
    return frame, encode(frame)


def event(seq: int, index: int) -> tuple[Event, bytes]:
    frame = Event(seq=seq, index=index, data=pack(index))
    return frame, encode(frame)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self, advance: float = 0.0) -> float:
        self.now += advance
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def run_one(state: SessionState, frame, clock: Clock, reply=None) -> str | None:
    """Apply the next queued request (which must be ``frame``) and finish it."""
    assert state.next_request(clock()) is frame
    return state.finish(frame, reply or result(frame.seq), clock())


def test_a_request_is_applied_once_and_a_repeat_is_answered_from_the_cache(clock):
    state = SessionState(Limits(), clock())
    first = step(1)
    assert state.receive(first, clock()) == Apply(start=True)
    assert state.busy
    state.record(1, event(1, 0))
    assert run_one(state, first, clock) is None
    assert state.next_request(clock()) is None and not state.busy
    repeat = state.receive(step(1), clock())
    assert isinstance(repeat, Repeat)
    assert [f for f, _ in repeat.frames] == [event(1, 0)[0], result(1)[0]]
    assert state.applied == 1 and state.steps == 1
    assert state.next_request(clock()) is None  # nothing was queued by the repeat


def test_a_repeat_of_a_request_in_flight_gets_what_it_produced_so_far(clock):
    state = SessionState(Limits(), clock())
    frame = step(1)
    state.receive(frame, clock())
    assert state.next_request(clock()) is frame
    state.record(1, event(1, 0))
    repeat = state.receive(step(1), clock())
    assert isinstance(repeat, Repeat) and [f for f, _ in repeat.frames] == [event(1, 0)[0]]


def test_requests_queue_behind_the_one_in_flight_and_come_out_in_order(clock):
    state = SessionState(Limits(max_queue=4), clock())
    frames = [step(n) for n in range(1, 5)]
    decisions = [state.receive(f, clock()) for f in frames]
    assert decisions == [Apply(start=True), Apply(start=False), Apply(start=False), Apply(start=False)]
    for frame in frames:
        run_one(state, frame, clock)
    assert state.next_request(clock()) is None and not state.busy


def test_a_full_queue_refuses_with_a_retry_after_and_does_not_number_the_request(clock):
    state = SessionState(Limits(max_queue=2, retry_after=0.5), clock())
    state.receive(step(1), clock())
    assert state.next_request(clock()).seq == 1  # in flight
    assert state.receive(step(2), clock()) == Apply(start=False)
    assert state.receive(step(3), clock()) == Apply(start=False)
    refused = state.receive(step(4), clock())
    assert isinstance(refused, Refuse)
    assert refused.error.code == ErrorCode.QUEUE_FULL and refused.error.seq == 4
    assert refused.error.retry_after == 0.5 and not refused.error.fatal
    assert state.applied == 3  # 4 may be sent again later
    state.finish(step(1), result(1), clock())
    assert state.next_request(clock()).seq == 2
    assert state.receive(step(4), clock()) == Apply(start=False)


def test_a_number_older_than_the_newest_and_no_longer_cached_is_stale(clock):
    state = SessionState(Limits(reply_cache=2), clock())
    for n in range(1, 7):
        frame = step(n)
        state.receive(frame, clock())
        run_one(state, frame, clock)
    refused = state.receive(step(1), clock())
    assert isinstance(refused, Refuse) and refused.error.code == ErrorCode.STALE_SEQ
    assert not refused.error.fatal
    assert isinstance(state.receive(step(6), clock()), Repeat)  # the newest is still cached


def test_the_cache_keeps_the_newest_answered_requests_only(clock):
    state = SessionState(Limits(reply_cache=3), clock())
    for n in range(1, 21):
        frame = step(n)
        state.receive(frame, clock())
        run_one(state, frame, clock)
    # Trimmed when requests arrive: reply_cache answered ones, plus room for the one in flight.
    assert len(state.cache) <= 3 + 1
    assert max(state.cache) == 20


def test_requests_in_flight_are_never_trimmed(clock):
    state = SessionState(Limits(reply_cache=1, max_queue=8), clock())
    frames = [step(n) for n in range(1, 6)]
    for frame in frames:
        state.receive(frame, clock())
    assert sorted(state.cache) == [1, 2, 3, 4, 5]  # none answered yet: all kept
    assert all(isinstance(e, CacheEntry) and not e.done for e in state.cache.values())


def test_events_kept_per_request_are_bounded(clock):
    state = SessionState(Limits(max_cached_frames=3), clock())
    frame = step(1)
    state.receive(frame, clock())
    state.next_request(clock())
    for index in range(10):
        state.record(1, event(1, index))
    assert len(state.cache[1].frames) == 3
    state.finish(frame, result(1), clock())
    assert state.cache[1].frames[-1][0] == result(1)[0]  # the reply is always kept


def test_a_reply_produced_while_detached_is_delivered_on_resume(clock):
    state = SessionState(Limits(), clock())
    frame = step(1)
    state.receive(frame, clock())
    assert state.next_request(clock()) is frame
    state.detach(clock())
    assert state.phase == "detached"
    state.record(1, event(1, 0))
    state.finish(frame, result(1), clock())  # nobody attached: kept in the cache
    state.attach(last_seen=0, now=clock())
    assert state.phase == "active"
    repeat = state.receive(step(1), clock())  # the client resends what is unanswered
    assert isinstance(repeat, Repeat)
    assert [f for f, _ in repeat.frames] == [event(1, 0)[0], result(1)[0]]
    assert state.steps == 1


def test_resume_with_last_seen_forgets_the_replies_the_client_holds(clock):
    state = SessionState(Limits(reply_cache=8), clock())
    for n in (1, 2, 3):
        frame = step(n)
        state.receive(frame, clock())
        run_one(state, frame, clock)
    state.detach(clock())
    state.attach(last_seen=2, now=clock())
    assert sorted(state.cache) == [3]
    refused = state.receive(step(2), clock())
    assert isinstance(refused, Refuse) and refused.error.code == ErrorCode.STALE_SEQ
    assert isinstance(state.receive(step(3), clock()), Repeat)


def test_close_while_busy_drops_the_queue_and_refuses_what_comes_after(clock):
    state = SessionState(Limits(), clock())
    state.receive(step(1), clock())
    state.next_request(clock())
    state.receive(step(2), clock())
    assert state.close("server shutting down")
    assert not state.close("again")  # idempotent: the first reason stays
    assert state.close_reason == "server shutting down"
    assert state.next_request(clock()) is None and not state.busy  # 2 is never applied
    refused = state.receive(step(3), clock())
    assert isinstance(refused, Refuse)
    assert refused.error.code == ErrorCode.SESSION_CLOSED and refused.error.fatal
    assert "server shutting down" in refused.error.message


def test_a_fatal_error_or_a_close_ends_the_session(clock):
    state = SessionState(Limits(), clock())
    frame = step(1)
    state.receive(frame, clock())
    fatal = Error(seq=1, code=ErrorCode.SANDBOX_CRASHED, message="killed by signal SIGKILL", fatal=True)
    assert run_one(state, frame, clock, (fatal, encode(fatal))) == "sandbox_crashed: killed by signal SIGKILL"
    state = SessionState(Limits(), clock())
    frame = Close(seq=1)
    state.receive(frame, clock())
    closed = Closed(seq=1, reason="closed by client")
    assert run_one(state, frame, clock, (closed, encode(closed))) == "closed by client"
    state = SessionState(Limits(), clock())
    frame = step(1)
    state.receive(frame, clock())
    benign = Error(seq=1, code=ErrorCode.VALIDATION, message="bad", path="$.n")
    assert run_one(state, frame, clock, (benign, encode(benign))) is None  # the session goes on


def test_only_steps_that_return_a_result_count_as_steps(clock):
    state = SessionState(Limits(), clock())
    frames = [Reset(seq=1), step(2), GetState(seq=3), step(4)]
    replies = [result(1), result(2), None, None]
    state_reply = StateReply(seq=3, state=pack({}))
    replies[2] = (state_reply, encode(state_reply))
    error = Error(seq=4, code=ErrorCode.VALIDATION, message="bad")
    replies[3] = (error, encode(error))
    for frame, reply in zip(frames, replies, strict=True):
        state.receive(frame, clock())
        run_one(state, frame, clock, reply)
    assert state.steps == 1


def test_the_reaper_waits_out_the_resume_grace_and_the_idle_timeout_and_never_reaps_a_busy_session(clock):
    state = SessionState(Limits(), clock())
    limits = {"resume_grace": 60.0, "idle_timeout": 300.0}
    assert state.expiry(clock(), **limits) is None
    state.detach(clock())
    assert state.expiry(clock(59.0), **limits) is None
    expired = state.expiry(clock(2.0), **limits)
    assert expired is not None and expired.reason == "resume grace period expired"
    state.attach(0, clock())
    assert state.expiry(clock(299.0), **limits) is None
    idle = state.expiry(clock(2.0), **limits)
    assert idle is not None and idle.reason == "idle timeout" and idle.notify and idle.code == 1001
    state.receive(step(1), clock())  # busy from here
    assert state.expiry(clock(1000.0), **limits) is None
    state.close("done")
    assert state.expiry(clock(1000.0), **limits) is None


def test_the_shown_state_says_busy_only_while_attached(clock):
    state = SessionState(Limits(), clock())
    assert state.shown_state == "active"
    state.receive(step(1), clock())
    assert state.shown_state == "busy"
    state.detach(clock())
    assert state.shown_state == "detached"
    state.close("x")
    assert state.shown_state == "closed"


def test_a_busy_session_whose_client_left_is_reaped_after_the_grace(clock):
    state = SessionState(Limits(), clock())
    state.receive(step(1), clock())
    state.next_request(clock())  # in flight, and stays so (a step that never returns)
    state.detach(clock())
    limits = {"resume_grace": 60.0, "idle_timeout": 300.0}
    assert state.expiry(clock(59.0), **limits) is None
    expired = state.expiry(clock(2.0), **limits)
    assert expired is not None and expired.reason == "resume grace period expired"


def big_result(seq: int, size: int) -> tuple[Result, bytes]:
    frame = Result(seq=seq, observation=pack("x" * size))
    return frame, encode(frame)


def test_the_cache_is_bounded_in_bytes_dropping_the_oldest_answers_first(clock):
    state = SessionState(Limits(reply_cache=100, max_cache_bytes=10_000), clock())
    for n in range(1, 11):
        frame = step(n)
        state.receive(frame, clock())
        run_one(state, frame, clock, big_result(n, 3_000))
        assert state.cache_bytes <= 10_000 or len(state.cache) == 1
    assert state.cache_bytes == sum(e.size for e in state.cache.values())
    assert max(state.cache) == 10 and min(state.cache) >= 8  # three of ~3 KB fit
    refused = state.receive(step(1), clock())
    assert isinstance(refused, Refuse) and refused.error.code == ErrorCode.STALE_SEQ


def test_events_past_the_byte_budget_are_sent_live_only_and_the_reply_is_still_kept(clock):
    state = SessionState(Limits(max_cache_bytes=2_000), clock())
    frame = step(1)
    state.receive(frame, clock())
    state.next_request(clock())
    for index in range(100):
        state.record(1, (Event(seq=1, index=index, data=pack("y" * 100)), b"z" * 150))
    kept = len(state.cache[1].frames)
    assert 0 < kept < 100 and state.cache_bytes <= 2_000
    state.finish(frame, big_result(1, 5_000), clock())  # over the budget on its own
    assert state.cache[1].done and state.cache[1].frames[-1][0] == big_result(1, 5_000)[0]
    assert isinstance(state.receive(step(1), clock()), Repeat)


def test_a_request_not_yet_picked_up_is_not_past_its_deadline(clock):
    state = SessionState(Limits(), clock(1000.0))
    state.receive(step(1), clock())  # accepted; its worker has not run yet
    assert state.running_for(clock()) == 0.0
    assert state.expiry(clock(), resume_grace=60.0, idle_timeout=300.0, deadline=600.0) is None


def test_a_request_not_yet_picked_up_is_within_its_deadline(clock):
    """A multiplexed request is applied in a task of its own: until that task runs, the session is
    busy, and the reaper must time the request from its arrival (it once saw it 'running' since 0)."""
    state = SessionState(Limits(), clock(10_000.0))
    assert state.receive(step(1), clock()) == Apply(True)
    limits = {"resume_grace": 60.0, "idle_timeout": 300.0, "deadline": 600.0}
    assert state.expiry(clock(1.0), **limits) is None
    assert state.expiry(clock(600.0), **limits).deadline  # past the deadline, even not picked up
