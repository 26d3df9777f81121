"""Bad input gets a typed error frame; the server and every other session go on."""

from __future__ import annotations

import anyio
import pytest
from websockets.asyncio.client import connect as raw_connect

from openenv_ws import EnvError, EpisodeStateError, UnknownEnvError, ValidationError, connect
from openenv_ws import protocol as p


@pytest.fixture
def small_frames_server(start_server):
    return start_server("echo", "tests.helper_envs:FlakyEnv", "--sandbox", "subprocess", "--max-frame-bytes", "2000")


async def _opened_socket(url: str):
    ws = await raw_connect(url + "/v1/sessions", max_size=None)
    await ws.send(p.encode(p.Open(env="echo")))
    assert isinstance(p.decode_server(await ws.recv()), p.Opened)
    await ws.send(p.encode(p.Reset(seq=1)))
    assert isinstance(p.decode_server(await ws.recv()), p.Result)
    return ws


async def _expect_error(ws, code: str) -> p.Error:
    reply = await ws.recv()
    frame = p.decode_server(p.json_to_msgpack(reply) if isinstance(reply, str) else reply)
    assert isinstance(frame, p.Error), frame
    assert frame.code == code, frame
    return frame


async def _still_works(ws, seq: int) -> None:
    await ws.send(p.encode(p.Step(seq=seq, action=p.pack({"message": "alive"}))))
    assert isinstance(p.decode_server(await ws.recv()), p.Result)


async def test_every_kind_of_bad_frame_gets_an_error_and_the_session_goes_on(small_frames_server):
    srv = small_frames_server
    async with connect(srv.url, env="echo") as bystander:
        await bystander.reset()
        ws = await _opened_socket(srv.url)
        async with ws:
            await ws.send(b"\xff\xfe garbage \x00")
            assert not (await _expect_error(ws, "malformed_frame")).fatal
            await _still_works(ws, 2)

            await ws.send("{this is not json")
            await _expect_error(ws, "malformed_frame")
            await _still_works(ws, 3)

            await ws.send(p.encode({"t": "result", "seq": 4, "observation": 1}))  # a server frame
            assert (await _expect_error(ws, "malformed_frame")).seq == 4
            await _still_works(ws, 5)

            await ws.send(p.encode(p.Step(seq=6, action=p.pack({"message": "x" * 5000}))))
            error = await _expect_error(ws, "frame_too_large")
            assert error.seq == 6 and not error.fatal
            await _still_works(ws, 7)

            await ws.send(p.encode(p.Step(seq=8, action=p.pack({"message": 12}))))
            error = await _expect_error(ws, "validation")
            assert error.path == "$.message" and not error.fatal
            await _still_works(ws, 9)

            await ws.send(p.encode(p.Step(seq=10, action=b"\xc1")))  # bytes where an object belongs
            await _expect_error(ws, "validation")
            await _still_works(ws, 11)

            await ws.send(p.encode(p.Open(env="echo")))  # a second open on the same socket
            await _expect_error(ws, "unexpected_frame")
            await _still_works(ws, 12)
        r = await bystander.step({"message": "unaffected"})
        assert r.observation["echoed_message"] == "unaffected"
    assert srv.health()["status"] == "ok"


async def test_validation_errors_name_the_field_in_the_client_exception(server):
    async with connect(server.url, env="echo") as env:
        await env.reset()
        with pytest.raises(ValidationError) as info:
            await env.step({"message": "ok", "delay_s": "slow"})
        assert info.value.path == "$.delay_s"
        with pytest.raises(ValidationError) as info:
            await env.step({"msg": "typo"})
        assert "msg" in info.value.message
        assert (await env.step({"message": "fine"})).observation["echoed_message"] == "fine"


async def test_step_before_reset(server):
    async with connect(server.url, env="echo") as env:
        with pytest.raises(EpisodeStateError) as info:
            await env.step({"message": "too early"})
        assert info.value.code == "no_episode"
        await env.reset()
        await env.step({"message": "now"})


async def test_an_env_exception_is_reported_and_the_session_goes_on(server):
    async with connect(server.url, env="flaky") as env:
        await env.reset()
        with pytest.raises(EnvError) as info:
            await env.step({"op": "raise"})
        assert "failed on purpose" in str(info.value)
        assert (await env.step({"op": "ok"})).reward == 1.0


async def test_unknown_env_and_bad_options_are_refused_at_open(server):
    with pytest.raises(UnknownEnvError) as info:
        async with connect(server.url, env="no-such-env"):
            pass
    assert "echo" in str(info.value)  # says what is served
    with pytest.raises(ValidationError) as info:
        async with connect(server.url, env="echo", options={"colour": "red"}):
            pass
    assert "colour" in str(info.value)


async def test_first_frame_must_be_open(inprocess_server):
    async with raw_connect(inprocess_server.url + "/v1/sessions") as ws:
        await ws.send(p.encode(p.Step(seq=1, action=p.pack({"message": "x"}))))
        await _expect_error(ws, "unexpected_frame")
        await ws.send(p.encode(p.Open(env="echo", version=99)))
        error = await _expect_error(ws, "unsupported_version")
        assert error.fatal


async def test_json_clients_get_json_errors(inprocess_server):
    async with raw_connect(inprocess_server.url + "/v1/sessions") as ws:
        await ws.send('{"t": "open", "env": "echo"}')
        opened = await ws.recv()
        assert isinstance(opened, str) and '"opened"' in opened
        await ws.send('{"t": "step", "seq": 1, "action": {"message": "x"}}')
        reply = await ws.recv()
        assert isinstance(reply, str) and '"no_episode"' in reply


async def test_many_garbage_connections_do_not_hurt_the_server(inprocess_server):
    async def garbage(i: int) -> None:
        async with raw_connect(inprocess_server.url + "/v1/sessions") as ws:
            await ws.send(bytes([i % 256]) * (i + 1))
            await ws.recv()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(garbage, i)
    assert inprocess_server.health()["status"] == "ok"
