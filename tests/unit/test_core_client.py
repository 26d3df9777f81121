"""The client side of the session core: numbering, dispatch, resends; no sockets."""

from __future__ import annotations

from openenv_ws.core.client import Answered, ClientState, Ended, EventFor
from openenv_ws.errors import SandboxCrashedError, SessionLostError
from openenv_ws.protocol import Closed, Error, ErrorCode, Event, Opened, Pong, Result, pack


def opened(state: ClientState) -> ClientState:
    state.opened(Opened(session_id="s-1", resume_token="tok", env="echo"))
    return state


def wire(seq: int) -> bytes:
    return f"request {seq}".encode()


def reply(seq: int) -> Result:
    return Result(seq=seq, observation=pack(seq))


def test_requests_are_numbered_in_order_and_each_reply_reaches_its_own_call():
    state = opened(ClientState())
    first, second = state.call(wire), state.call(wire)
    assert (first.seq, second.seq) == (1, 2)
    assert first.data == b"request 1"
    assert state.receive(reply(2)) == Answered(second)
    assert second.reply == reply(2) and first.reply is None
    assert state.last_seen == 2
    assert state.receive(reply(1)) == Answered(first)
    assert state.last_seen == 2  # the highest answered, not the last


def test_a_late_reply_to_a_call_that_gave_up_or_a_repeat_is_ignored():
    state = opened(ClientState())
    call = state.call(wire)
    state.forget(call)  # timed out
    assert state.receive(reply(1)) is None
    again = state.call(wire)
    assert state.receive(reply(2)) == Answered(again)
    assert state.receive(reply(2)) is None  # sent twice after a resume
    assert again.reply == reply(2)


def test_a_pong_answers_its_call_but_is_no_final_reply_to_forget():
    state = opened(ClientState())
    call = state.call(wire)
    assert state.receive(Pong(seq=1)) == Answered(call)
    assert state.last_seen == 0


def test_events_reach_their_call_once_each_even_when_sent_again():
    state = opened(ClientState())
    call = state.call(wire)
    events = [Event(seq=1, index=i, data=pack(i)) for i in range(3)]
    assert [type(state.receive(e)) for e in events[:2]] == [EventFor, EventFor]
    # After a resume the server sends every frame of the request again.
    assert state.receive(events[0]) is None and state.receive(events[1]) is None
    assert state.receive(events[2]) == EventFor(call, events[2])
    assert state.receive(Event(seq=9, index=0, data=pack(0))) is None  # no such call


def test_a_frame_with_seq_0_is_the_server_ending_the_session():
    state = opened(ClientState())
    waiting = [state.call(wire), state.call(wire)]
    state.receive(reply(1))
    crash = Error(code=ErrorCode.SANDBOX_CRASHED, message="killed by signal SIGKILL", fatal=True)
    ended = state.receive(crash)
    assert isinstance(ended, Ended) and isinstance(ended.error, SandboxCrashedError)
    assert ended.calls == [waiting[1]]  # the answered call keeps its reply
    assert waiting[1].error is ended.error and state.failure is ended.error
    later = state.receive(Closed(reason="idle timeout"))
    assert isinstance(later, Ended) and later.calls == []
    assert state.failure is ended.error  # the first error stays


def test_closed_by_the_server_is_a_lost_session():
    state = opened(ClientState())
    state.call(wire)
    ended = state.receive(Closed(reason="server shutting down"))
    assert isinstance(ended, Ended) and isinstance(ended.error, SessionLostError)
    assert "server shutting down" in str(ended.error)


def test_a_call_is_sent_once_per_connection_and_every_unanswered_one_again_after_a_resume():
    state = opened(ClientState())
    calls = [state.call(wire) for _ in range(4)]
    assert all(state.should_send(c) for c in calls)
    assert not any(state.should_send(c) for c in calls)  # already on this connection
    state.receive(reply(1))
    state.receive(reply(3))
    state.forget(calls[0])
    state.forget(calls[2])
    frame = state.begin_resume()
    assert (frame.session_id, frame.resume_token, frame.last_seen) == ("s-1", "tok", 3)
    resend = state.resumed()
    assert [c.seq for c in resend] == [2, 4]  # in order
    assert all(state.should_send(c) for c in resend)
    assert state.resumes == 1


def test_fail_ends_every_waiting_call_and_keeps_the_first_error():
    state = opened(ClientState())
    calls = [state.call(wire) for _ in range(3)]
    first, second = SessionLostError("gone"), SessionLostError("later")
    assert state.fail(first) == calls
    assert state.fail(second) == []
    assert state.failure is first and all(c.error is first for c in calls)


def test_requests_another_driver_made_move_the_numbering_past_them():
    """An MCP client calling tools in this session takes numbers too (server/mcp.py)."""
    state = opened(ClientState())
    first = state.call(wire)
    assert state.receive(reply(1)) == Answered(first)
    assert state.receive(Event(seq=2, index=0, data=pack(0))) is None  # its events are not ours
    assert state.receive(reply(2)) is None and state.receive(reply(3)) is None
    assert state.call(wire).seq == 4 and state.last_seen == 3
    # Resumed after others applied more while this client was away: new numbers follow theirs.
    state.opened(Opened(session_id="s-1", resume_token="tok", env="echo", resumed=True, last_applied=9))
    assert state.call(wire).seq == 10
