"""Malformed input on every WebSocket route gets a typed answer, and nothing else happens: the session
goes on (a step after it works, step counts stay exact), a neighbour session keeps stepping, and the
server's log holds no traceback.

Routes: ``/v1/sessions`` (MessagePack and JSON), ``/v1/mux`` (a bad batch: an error on channel 0; a bad
frame: an error on its channel, the others go on), OpenEnv's ``/ws`` (an OpenEnv ``error`` message) and
``/v1/sessions/{id}/watch`` (what a watcher sends is ignored). HTTP routes are fuzzed in
``tests/test_http_inputs.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import anyio
import msgspec
import pytest
from websockets.asyncio.client import connect as raw_connect
from websockets.exceptions import ConnectionClosed

from openenv_ws import connect
from openenv_ws import protocol as p

from ..conftest import ServerProcess
from .probes import log_mark, neighbour, peak_rss, tracebacks

FRAME_LIMIT = 65_536
"""The servers here take frames up to 64 KiB (``--max-frame-bytes``)."""
FAR_OVER = 2 << 20
"""Past uvicorn's own limit (``max(4 x the frame limit, the frame limit + 1 MiB)``): closed with 1009 unread."""
BIG = "9" * 40  # an integer of 10**40: past what MessagePack (64 bits) can carry
DEEP_MSGPACK = b"\x91" * 20_000 + b"\xc0"  # far past any decoder's recursion limit, within the frame limit
DEEP_JSON = "[" * 20_000 + "]" * 20_000

Payload = bytes | str


@dataclass(frozen=True)
class Bad:
    """One malformed message: ``make(seq)`` builds it (numbered ``seq`` where it has a number), ``code``
    is the error it must get."""

    name: str
    make: Callable[[int], Payload]
    code: str


def _msgpack(value: object) -> bytes:
    return msgspec.msgpack.encode(value)


def _step(seq: int, action: bytes) -> bytes:
    return p.encode(p.Step(seq=seq, action=p.Raw(action)))


@pytest.fixture(scope="module", params=["inprocess", "subprocess"])
def server(request) -> Iterator[ServerProcess]:
    server = ServerProcess(
        "echo", "tests.helper_envs:FlakyEnv", "--sandbox", request.param, "--max-frame-bytes", str(FRAME_LIMIT)
    )
    yield server
    server.stop()


def _decoded(message: Payload) -> p.ServerFrame:
    return p.decode_server(p.json_to_msgpack(message) if isinstance(message, str) else message)


async def _receive(ws) -> p.ServerFrame:
    with anyio.fail_after(10):
        return _decoded(await ws.recv())


# ---------------------------------------------------------------- /v1/sessions

ON_A_SESSION = [
    Bad("not MessagePack", lambda seq: b"\xc1", "malformed_frame"),
    Bad("an empty frame", lambda seq: b"", "malformed_frame"),
    Bad("MessagePack nested 20,000 deep", lambda seq: b"\x81\xa1t" + DEEP_MSGPACK, "malformed_frame"),
    Bad("an action nested 20,000 deep", lambda seq: _step(seq, DEEP_MSGPACK), "malformed_frame"),
    Bad("bad UTF-8 in the tag", lambda seq: b"\x82\xa1t\xa4\xff\xfe\xfd\xfc\xa3seq\x05", "malformed_frame"),
    Bad("bad UTF-8 in the action", lambda seq: _step(seq, b"\x81\xa7message\xa4\xff\xfe\xfd\xfc"), "validation"),
    Bad("a seq that is a string", lambda seq: _msgpack({"t": "step", "seq": "7", "action": {}}), "malformed_frame"),
    Bad("a negative seq", lambda seq: _msgpack({"t": "step", "seq": -5, "action": {"message": "x"}}), "stale_seq"),
    Bad("a seed that is a string", lambda seq: _msgpack({"t": "reset", "seq": seq, "seed": "x"}), "malformed_frame"),
    Bad(
        "reset options that are a list",
        lambda seq: _msgpack({"t": "reset", "seq": seq, "options": [1]}),
        "malformed_frame",
    ),
    Bad("an unknown frame type", lambda seq: _msgpack({"t": "dance", "seq": seq}), "malformed_frame"),
    Bad("a frame that is a list", lambda seq: _msgpack([1, 2, 3]), "malformed_frame"),
    Bad("an action of the wrong type", lambda seq: _step(seq, _msgpack({"message": 12})), "validation"),
    Bad("an action that is not an object", lambda seq: _step(seq, _msgpack("hello")), "validation"),
    Bad("a second open", lambda seq: p.encode(p.Open(env="echo")), "unexpected_frame"),
    Bad(
        "a resume with a non-ASCII token",
        lambda seq: _msgpack({"t": "open", "session_id": "s-1", "resume_token": "é中"}),
        "unexpected_frame",
    ),
    Bad("a frame over the limit", lambda seq: _step(seq, _msgpack({"message": "x" * FRAME_LIMIT})), "frame_too_large"),
    # JSON in text frames
    Bad("text that is not JSON", lambda seq: "{this is not json", "malformed_frame"),
    Bad(
        "JSON nested 20,000 deep",
        lambda seq: '{"t": "step", "seq": 1, "action": ' + DEEP_JSON + "}",
        "malformed_frame",
    ),
    Bad("a JSON seq of 1.2e29", lambda seq: '{"t": "step", "seq": 1.2e29, "action": {}}', "malformed_frame"),
    Bad("a JSON seq of 10**40", lambda seq: '{"t": "step", "seq": ' + BIG + ', "action": {}}', "malformed_frame"),
    Bad(
        "an integer of 10**40 in the action",
        lambda seq: f'{{"t": "step", "seq": {seq}, "action": {{"message": "x", "delay_s": {BIG}}}}}',
        "malformed_frame",
    ),
    Bad(
        "a number past a float",
        lambda seq: f'{{"t": "step", "seq": {seq}, "action": {{"message": "x", "delay_s": 1e400}}}}',
        "malformed_frame",
    ),
    Bad(
        "a lone surrogate",
        lambda seq: f'{{"t": "step", "seq": {seq}, "action": {{"message": "\\ud800"}}}}',
        "malformed_frame",
    ),
    Bad("a JSON array", lambda seq: "[1, 2]", "malformed_frame"),
    Bad("a JSON string", lambda seq: '"step"', "malformed_frame"),
    Bad(
        "a text frame over the limit",
        lambda seq: '{"t": "ping", "pad": "' + "x" * FRAME_LIMIT + '"}',
        "frame_too_large",
    ),
]


async def test_every_malformed_frame_on_a_session_gets_an_error_and_the_session_goes_on(server):
    mark = log_mark(server)
    async with peak_rss(server.proc.pid) as rss, neighbour(server.url, env="echo") as other:
        async with raw_connect(server.url + "/v1/sessions", max_size=None) as ws:
            await ws.send(p.encode(p.Open(env="echo")))
            assert isinstance(await _receive(ws), p.Opened)
            await ws.send(p.encode(p.Reset(seq=1)))
            assert isinstance(await _receive(ws), p.Result)
            seq, steps = 1, 0
            for bad in ON_A_SESSION:
                seq += 1
                await ws.send(bad.make(seq))
                error = await _receive(ws)
                assert isinstance(error, p.Error) and error.code == bad.code and not error.fatal, (bad.name, error)
                seq += 1
                await ws.send(p.encode(p.Step(seq=seq, action=p.pack({"message": bad.name}))))
                reply = await _receive(ws)
                assert isinstance(reply, p.Result), (bad.name, reply)
                assert p.unpack(reply.observation)["echoed_message"] == bad.name
                steps += 1
            await ws.send(p.encode(p.GetState(seq=seq + 1)))
            assert p.unpack((await _receive(ws)).state)["step_count"] == steps
            await ws.send(p.encode(p.Close(seq=seq + 2)))
            assert isinstance(await _receive(ws), p.Closed)
        await other.steps_on()
    assert rss.growth_mib < 30
    assert tracebacks(server, since=mark) == ""


OPENS = [
    # (name, the first frame, its error code, whether the socket may still open a session after it)
    ("options that are a list", _msgpack({"t": "open", "env": "echo", "options": [1]}), "malformed_frame", True),
    (
        "options nested 20,000 deep",
        b"\x83\xa1t\xa4open\xa3env\xa4echo\xa7options\x81\xa1a" + DEEP_MSGPACK,
        "malformed_frame",
        True,
    ),
    (
        "options with 10**40 (JSON)",
        '{"t": "open", "env": "echo", "options": {"a": ' + BIG + "}}",
        "malformed_frame",
        True,
    ),
    ("bad UTF-8 in the env name", b"\x82\xa1t\xa4open\xa3env\xa4\xff\xfe\xfd\xfc", "malformed_frame", True),
    ("an env name that is a number", _msgpack({"t": "open", "env": 5}), "malformed_frame", True),
    ("a step before open", _step(1, _msgpack({"message": "x"})), "unexpected_frame", True),
    (
        "options the env does not take",
        _msgpack({"t": "open", "env": "echo", "options": {"colour": [1, {}]}}),
        "bad_options",
        False,
    ),
    (
        "a non-ASCII resume token",
        _msgpack({"t": "open", "session_id": "s-1", "resume_token": "é中"}),
        "session_not_found",
        False,
    ),
    ("a non-ASCII env name", _msgpack({"t": "open", "env": "é中"}), "unknown_env", False),
    (
        "protocol version 2**64-1",
        _msgpack({"t": "open", "env": "echo", "version": 2**64 - 1}),
        "unsupported_version",
        False,
    ),
]


async def test_every_malformed_open_gets_a_typed_error(server):
    mark = log_mark(server)
    held = server.health()["sessions"]
    async with neighbour(server.url, env="echo") as other:
        for name, first, code, goes_on in OPENS:
            async with raw_connect(server.url + "/v1/sessions", max_size=None) as ws:
                await ws.send(first)
                error = await _receive(ws)
                assert isinstance(error, p.Error) and error.code == code, (name, error)
                assert error.fatal is not goes_on, (name, error)
                if goes_on:  # the socket still waits for its open
                    await ws.send(p.encode(p.Open(env="echo")))
                    assert isinstance(await _receive(ws), p.Opened), name
                    await ws.send(p.encode(p.Reset(seq=1)))
                    assert isinstance(await _receive(ws), p.Result), name
                    await ws.send(p.encode(p.Close(seq=2)))
                    assert isinstance(await _receive(ws), p.Closed), name
                else:
                    with pytest.raises(ConnectionClosed):
                        await _receive(ws)
        await other.steps_on()
    assert server.health()["sessions"] <= held  # no session half-opened by a refused open
    assert tracebacks(server, since=mark) == ""


async def test_a_message_far_over_the_limit_closes_the_socket_and_the_session_resumes(server):
    mark = log_mark(server)
    async with connect(server.url, env="echo") as env:
        await env.reset()
        await env.step({"message": "before"})
        async with raw_connect(server.url + "/v1/sessions", max_size=None) as ws:
            await ws.send(p.encode(p.Open(env="echo")))
            opened = await _receive(ws)
            with pytest.raises(ConnectionClosed) as info:
                await ws.send(b"\xc1" * FAR_OVER)
                await _receive(ws)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        async with raw_connect(server.url + "/v1/sessions") as ws:
            await ws.send(p.encode(p.Open(session_id=opened.session_id, resume_token=opened.resume_token)))
            resumed = await _receive(ws)
            assert isinstance(resumed, p.Opened) and resumed.resumed
            await ws.send(p.encode(p.Reset(seq=1)))
            assert isinstance(await _receive(ws), p.Result)
        assert (await env.step({"message": "after"})).observation["echoed_message"] == "after"
        assert (await env.state())["step_count"] == 2
    assert tracebacks(server, since=mark) == ""


# ---------------------------------------------------------------- /v1/mux

BAD_BATCHES = [
    ("a text message", "[[1, {}]]"),
    ("an empty message", b""),
    ("a map", _msgpack({"1": {}})),
    ("a batch nested 20,000 deep", DEEP_MSGPACK),
    ("a pair of one", _msgpack([[1]])),
    ("a channel that is a string", _msgpack([["1", {"t": "ping"}]])),
    ("a frame that is not MessagePack", p.encode_batch([(1, b"\xc1")])),
    ("a frame nested 20,000 deep", p.encode_batch([(1, b"\x81\xa1t" + DEEP_MSGPACK)])),
]
"""Messages that are not a batch at all: an error on channel 0, and the connection goes on."""

BAD_FRAMES = [
    # (name, the frame on channel 3, the error it gets there)
    ("a frame that is a string", _msgpack("junk"), "malformed_frame"),
    ("bad UTF-8 in the tag", b"\x82\xa1t\xa4\xff\xfe\xfd\xfc\xa3seq\x05", "malformed_frame"),
    ("a seq that is a string", _msgpack({"t": "step", "seq": "x", "action": {}}), "malformed_frame"),
    ("an unknown frame type", _msgpack({"t": "dance"}), "malformed_frame"),
    ("a frame over the limit", _step(1, _msgpack({"message": "x" * FRAME_LIMIT})), "frame_too_large"),
    ("a step on a channel with no session", _step(1, _msgpack({"message": "x"})), "unexpected_frame"),
    (
        "an open with options the env does not take",
        _msgpack({"t": "open", "env": "echo", "options": {"x": 1}}),
        "bad_options",
    ),
    (
        "a resume with a non-ASCII token",
        _msgpack({"t": "open", "session_id": "s-1", "resume_token": "é中"}),
        "session_not_found",
    ),
]


async def _replies(ws, count: int) -> dict[int, p.ServerFrame]:
    got: dict[int, p.ServerFrame] = {}
    with anyio.fail_after(10):
        while len(got) < count:
            for channel, raw in p.decode_batch(await ws.recv()):
                assert channel not in got, (channel, got)
                got[channel] = p.decode_server(raw)
    return got


async def test_malformed_batches_and_frames_on_a_multiplexed_connection_touch_no_other_channel(server):
    mark = log_mark(server)
    async with (
        peak_rss(server.proc.pid) as rss,
        neighbour(server.url, env="echo") as other,
        raw_connect(server.url + "/v1/mux", max_size=None) as ws,
    ):
        await ws.send(p.encode_batch([(1, p.encode(p.Open(env="echo"))), (2, p.encode(p.Open(env="flaky")))]))
        assert all(isinstance(f, p.Opened) for f in (await _replies(ws, 2)).values())
        await ws.send(p.encode_batch([(1, p.encode(p.Reset(seq=1))), (2, p.encode(p.Reset(seq=1)))]))
        await _replies(ws, 2)
        seq = 1

        def steps() -> list[tuple[int, bytes]]:
            return [(1, _step(seq, _msgpack({"message": str(seq)}))), (2, _step(seq, _msgpack({"op": "ok"})))]

        for name, message in BAD_BATCHES:
            await ws.send(message)
            error = (await _replies(ws, 1))[0]
            assert isinstance(error, p.Error) and error.code == "malformed_frame", (name, error)
            seq += 1
            await ws.send(p.encode_batch(steps()))
            assert all(isinstance(f, p.Result) for f in (await _replies(ws, 2)).values()), name
        for name, frame, code in BAD_FRAMES:
            seq += 1
            first, second = steps()
            await ws.send(p.encode_batch([first, (3, frame), second]))  # the bad one between two good ones
            got = await _replies(ws, 3)
            assert isinstance(got[3], p.Error) and got[3].code == code, (name, got[3])
            assert isinstance(got[1], p.Result) and isinstance(got[2], p.Result), (name, got)
        await ws.send(p.encode_batch([(1, p.encode(p.GetState(seq=seq + 1))), (2, p.encode(p.GetState(seq=seq + 1)))]))
        states = await _replies(ws, 2)
        assert [p.unpack(states[c].state)["step_count"] for c in (1, 2)] == [seq - 1, seq - 1]
        await other.steps_on()
    assert rss.growth_mib < 30
    assert tracebacks(server, since=mark) == ""


# ---------------------------------------------------------------- OpenEnv's /ws

OPENENV_BAD = [
    # (name, the message, OpenEnv's error code)
    ("not JSON", "{nope", "INVALID_JSON"),
    ("a number past a float", '{"type": "step", "data": {"message": 1e400}}', "INVALID_JSON"),
    ("a JSON array", "[1, 2]", "VALIDATION_ERROR"),
    ("binary garbage", b"\xff\xfe\x00", "INVALID_JSON"),
    ("bad UTF-8 in a binary message", b'{"type": "step", "data": {"message": "\xff\xfe"}}', "INVALID_JSON"),
    ("a type that is a number", '{"type": 5}', "UNKNOWN_TYPE"),
    ("an action that is a list", '{"type": "step", "data": [1]}', "VALIDATION_ERROR"),
    ("an action of the wrong type", '{"type": "step", "data": {"message": 12}}', "VALIDATION_ERROR"),
    (
        "a message over the limit",
        '{"type": "step", "data": {"message": "' + "x" * FRAME_LIMIT + '"}}',
        "VALIDATION_ERROR",
    ),
]

OPENENV_DEEP_AND_WIDE = [
    ("JSON nested 20,000 deep", '{"type": "step", "data": ' + DEEP_JSON + "}", "INVALID_JSON"),
    (
        "an integer of 10**40 in the action",
        '{"type": "step", "data": {"message": "x", "n": ' + BIG + "}}",
        "VALIDATION_ERROR",
    ),
    ("a seed of 10**40", '{"type": "reset", "data": {"seed": ' + BIG + "}}", "VALIDATION_ERROR"),
]
"""What main's /ws still drops the socket on (RecursionError, OverflowError escape, with a traceback) or,
in process, takes (a seed past 64 bits): fixed by the limits work of issue #12 (``json_value``, the
64-bit checks of ``openenv/wire.py``), not yet merged when this suite was written."""


@pytest.mark.parametrize(
    "cases",
    [
        pytest.param(OPENENV_BAD, id="typed"),
        pytest.param(OPENENV_DEEP_AND_WIDE, id="nesting-and-64-bits"),
    ],
)
async def test_malformed_openenv_messages_get_openenv_errors_and_the_socket_lives_on(server, cases):
    mark = log_mark(server)
    async with (
        peak_rss(server.proc.pid) as rss,
        neighbour(server.url, env="echo") as other,
        raw_connect(server.url + "/ws", max_size=None) as ws,
    ):

        async def ask(message: Payload) -> dict:
            await ws.send(message)
            with anyio.fail_after(10):
                return msgspec.json.decode(await ws.recv())

        assert (await ask('{"type": "reset"}'))["type"] == "observation"
        for name, message, code in cases:
            reply = await ask(message)
            assert reply["type"] == "error" and reply["data"]["code"] == code, (name, reply)
            assert reply["data"]["fatal"] is False, (name, reply)
            reply = await ask(msgspec.json.encode({"type": "step", "data": {"message": name}}).decode())
            assert reply["type"] == "observation", (name, reply)
            assert reply["data"]["observation"]["echoed_message"] == name
        assert (await ask('{"type": "state"}'))["data"]["step_count"] == len(cases)
        await other.steps_on()
    assert rss.growth_mib < 30
    assert tracebacks(server, since=mark) == ""


# ---------------------------------------------------------------- /v1/sessions/{id}/watch

WATCHER_JUNK: list[Payload] = [
    "hello",
    b"\xff\x00\xc1",
    '{"t": "step", "seq": 99, "action": {"message": "from the watcher"}}',
    p.encode(p.Step(seq=99, action=p.pack({"message": "from the watcher"}))),
    "[" * 20_000,
    DEEP_MSGPACK,
]


async def test_what_a_watcher_sends_is_ignored(server):
    mark = log_mark(server)
    async with connect(server.url, env="echo") as env:
        await env.reset()
        async with raw_connect(f"{server.url}/v1/sessions/{env.session_id}/watch", max_size=None) as watcher:
            with anyio.fail_after(10):
                assert msgspec.json.decode(await watcher.recv())["kind"] == "session"
            for junk in WATCHER_JUNK:
                await watcher.send(junk)
            await env.step({"message": "watched"})
            with anyio.fail_after(10):
                seen = [msgspec.json.decode(await watcher.recv()) for _ in range(2)]
            assert [(m["dir"], m["frame"]["t"]) for m in seen] == [("c2s", "step"), ("s2c", "result")]
            assert seen[0]["frame"]["action"] == {"message": "watched"}
        assert (await env.state())["step_count"] == 1  # the watcher's step frames were not applied
        # One message past uvicorn's limit closes the watcher (1009), never the session.
        async with raw_connect(f"{server.url}/v1/sessions/{env.session_id}/watch", max_size=None) as watcher:
            await watcher.recv()
            with anyio.fail_after(10), pytest.raises(ConnectionClosed) as info:
                await watcher.send(b"\x00" * FAR_OVER)
                while True:
                    await watcher.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        assert (await env.step({"message": "still"})).observation["echoed_message"] == "still"
        assert (await env.state())["step_count"] == 2
    assert tracebacks(server, since=mark) == ""
