"""The protocol module alone: no sockets, no event loop."""

from __future__ import annotations

import msgspec
import pytest

from openenv_ws import protocol as p
from openenv_ws.errors import CapacityError, SandboxCrashedError, ValidationError, from_frame
from openenv_ws_envs.echo import EchoAction


@pytest.mark.parametrize(
    "frame",
    [
        p.Open(seq=0, env="echo", options={"max_steps": 3}),
        p.Open(session_id="s-1", resume_token="tok", last_seen=7),
        p.Reset(seq=1, seed=42),
        p.Step(seq=2, action=p.pack({"message": "hi"})),
        p.GetState(seq=3),
        p.Close(seq=4),
        p.Ping(seq=5),
    ],
)
def test_client_frames_round_trip_in_msgpack_and_json(frame):
    data = p.encode(frame)
    assert p.decode_client(data) == frame
    assert p.decode_client(p.json_to_msgpack(p.msgpack_to_json(data))) == frame


@pytest.mark.parametrize(
    "frame",
    [
        p.Opened(seq=0, session_id="s", resume_token="t", env="echo", action_schema=p.pack({"type": "object"})),
        p.Event(seq=2, index=0, data=p.pack({"word": "a"})),
        p.Result(seq=2, observation=p.pack({"x": 1}), reward=0.5, truncated=True, info=p.pack({"k": "v"})),
        p.StateReply(seq=3, state=p.pack({"step_count": 1})),
        p.Error(seq=2, code=p.ErrorCode.VALIDATION, message="bad", path="$.message"),
        p.Closed(seq=4, reason="closed by client"),
        p.Pong(seq=5),
    ],
)
def test_server_frames_round_trip_in_msgpack_and_json(frame):
    data = p.encode(frame)
    assert p.decode_server(data) == frame
    assert p.decode_server(p.json_to_msgpack(p.msgpack_to_json(data))) == frame


def test_payloads_stay_raw_bytes_through_decoding():
    payload = p.pack({"message": "hello", "nested": [1, 2, {"a": None}]})
    frame = p.decode_client(p.encode(p.Step(seq=1, action=payload)))
    assert isinstance(frame.action, msgspec.Raw)
    assert bytes(frame.action) == bytes(payload)


def test_frames_are_tagged_and_json_text_is_readable():
    text = p.msgpack_to_json(p.encode(p.Step(seq=9, action=p.pack({"message": "x"}))))
    assert msgspec.json.decode(text) == {"t": "step", "seq": 9, "action": {"message": "x"}}


@pytest.mark.parametrize(
    "data",
    [b"\xff\x00garbage", p.encode({"t": "result", "seq": 1, "observation": 1}), p.encode({"t": "step", "seq": "one"})],
)
def test_garbage_and_wrong_frames_raise_protocol_violation(data):
    with pytest.raises(p.ProtocolViolation):
        p.decode_client(data)


def test_invalid_json_raises_protocol_violation():
    with pytest.raises(p.ProtocolViolation):
        p.json_to_msgpack("{not json")


def test_validation_error_names_the_field_path():
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.msgpack.decode(p.pack({"message": 12}), type=EchoAction)
    message, path = p.split_validation_error(info.value)
    assert path == "$.message"
    assert "Expected `str`" in message


def test_guess_seq_reads_the_number_of_a_half_valid_frame():
    assert p.guess_seq(p.encode({"t": "nonsense", "seq": 17})) == 17
    assert p.guess_seq('{"t": "nonsense", "seq": 4}') == 4
    assert p.guess_seq(b"\xff") == 0


def test_error_frames_map_to_typed_exceptions():
    exc = from_frame(p.Error(code=p.ErrorCode.CAPACITY, message="full", retry_after=2.0, fatal=True))
    assert isinstance(exc, CapacityError) and exc.retry_after == 2.0 and exc.fatal
    exc = from_frame(p.Error(code=p.ErrorCode.VALIDATION, message="bad", path="$.a"))
    assert isinstance(exc, ValidationError) and exc.path == "$.a"
    assert isinstance(from_frame(p.Error(code=p.ErrorCode.SANDBOX_CRASHED, message="x")), SandboxCrashedError)
