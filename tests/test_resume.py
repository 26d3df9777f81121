"""Dropped connections: resume, exactly-once steps, and the grace period."""

from __future__ import annotations

import anyio
import msgspec
import pytest
from websockets.asyncio.client import connect as raw_connect

from openenv_ws import SessionLostError, connect
from openenv_ws import protocol as p

from .proxy import CuttableProxy


async def test_cut_mid_step_then_the_episode_finishes_with_exact_step_count(server):
    proxy = CuttableProxy(server.port)
    async with anyio.create_task_group() as tg:
        port = await tg.start(proxy.run)
        async with connect(f"ws://127.0.0.1:{port}", env="echo") as env:
            await env.reset()
            sent = 0
            for i in range(6):
                if i % 2 == 0:
                    # cut while this slow step is in flight on the server
                    async with anyio.create_task_group() as cutter:
                        cutter.start_soon(_cut_after, proxy, 0.15)
                        r = await env.step({"message": f"m{i}", "delay_s": 0.4})
                else:
                    r = await env.step({"message": f"m{i}"})
                sent += 1
                assert r.observation["echoed_message"] == f"m{i}"
            state = await env.state()
            assert env.reconnects >= 3
        tg.cancel_scope.cancel()
    assert proxy.cuts >= 3
    assert state["step_count"] == sent == 6
    assert state["last_message"] == "m5"


async def _cut_after(proxy: CuttableProxy, delay: float) -> None:
    await anyio.sleep(delay)
    assert proxy.cut() >= 1


async def test_cuts_at_random_moments_lose_and_repeat_nothing(inprocess_server):
    proxy = CuttableProxy(inprocess_server.port)
    async with anyio.create_task_group() as tg:
        port = await tg.start(proxy.run)

        async def keep_cutting() -> None:
            for _ in range(40):  # bounded
                await anyio.sleep(0.037)
                proxy.cut()

        async with connect(f"ws://127.0.0.1:{port}", env="echo") as env:
            await env.reset()
            tg.start_soon(keep_cutting)
            for i in range(60):
                r = await env.step({"message": str(i), "delay_s": 0.01})
                assert r.observation["echoed_message"] == str(i)
            state = await env.state()
        tg.cancel_scope.cancel()
    assert proxy.cuts > 5
    assert state["step_count"] == 60


async def _raw_open(url: str, **fields):
    ws = await raw_connect(url + "/v1/sessions")
    await ws.send(p.encode(p.Open(**fields)))
    return ws, p.decode_server(await ws.recv())


async def test_a_repeated_sequence_number_is_answered_from_cache_not_applied_twice(inprocess_server):
    ws, opened = await _raw_open(inprocess_server.url, env="echo")
    assert isinstance(opened, p.Opened)
    async with ws:
        await ws.send(p.encode(p.Reset(seq=1)))
        assert isinstance(p.decode_server(await ws.recv()), p.Result)
        step = p.encode(p.Step(seq=2, action=p.pack({"message": "once"})))
        await ws.send(step)
        first = await ws.recv()
        await ws.send(step)  # the same number again
        second = await ws.recv()
        assert first == second
        await ws.send(p.encode(p.GetState(seq=3)))
        state = p.decode_server(await ws.recv())
        assert msgspec.msgpack.decode(state.state)["step_count"] == 1
        await ws.send(p.encode(p.Step(seq=1, action=p.pack({"message": "old"}))))  # still cached: reset's reply
        assert isinstance(p.decode_server(await ws.recv()), p.Result)


async def test_resume_on_a_new_socket_replays_a_reply_missed_while_away(inprocess_server):
    ws, opened = await _raw_open(inprocess_server.url, env="echo")
    await ws.send(p.encode(p.Reset(seq=1)))
    await ws.recv()
    await ws.send(p.encode(p.Step(seq=2, action=p.pack({"message": "slow", "delay_s": 0.5}))))
    await ws.close()  # gone before the reply
    await anyio.sleep(0.8)  # the step completes while no one listens
    ws2, resumed = await _raw_open(
        inprocess_server.url, session_id=opened.session_id, resume_token=opened.resume_token, last_seen=1
    )
    async with ws2:
        assert isinstance(resumed, p.Opened) and resumed.resumed and resumed.last_applied == 2
        await ws2.send(p.encode(p.Step(seq=2, action=p.pack({"message": "slow", "delay_s": 0.5}))))
        reply = p.decode_server(await ws2.recv())
        assert isinstance(reply, p.Result)
        assert msgspec.msgpack.decode(reply.observation)["echoed_message"] == "slow"
        await ws2.send(p.encode(p.GetState(seq=3)))
        assert msgspec.msgpack.decode(p.decode_server(await ws2.recv()).state)["step_count"] == 1


async def test_a_wrong_resume_token_is_refused(inprocess_server):
    ws, opened = await _raw_open(inprocess_server.url, env="echo")
    async with ws:
        ws2, reply = await _raw_open(inprocess_server.url, session_id=opened.session_id, resume_token="forged")
        assert isinstance(reply, p.Error) and reply.code == "session_not_found" and reply.fatal
        await ws2.close()


async def test_a_session_expires_after_the_resume_grace_period(start_server):
    srv = start_server("echo", "--sandbox", "inprocess", "--resume-grace", "0.5")
    ws, opened = await _raw_open(srv.url, env="echo")
    await ws.close()
    with anyio.fail_after(10):
        while srv.health()["sessions"]:
            await anyio.sleep(0.1)
    ws2, reply = await _raw_open(srv.url, session_id=opened.session_id, resume_token=opened.resume_token)
    await ws2.close()
    assert isinstance(reply, p.Error) and reply.code == "session_not_found"


async def test_client_gives_up_with_session_lost_when_the_server_is_gone(start_server):
    srv = start_server("echo", "--sandbox", "inprocess")
    async with connect(srv.url, env="echo", reconnect_attempts=3, backoff=0.05) as env:
        await env.reset()
        srv.proc.kill()
        srv.proc.wait()
        with pytest.raises(SessionLostError):
            await env.step({"message": "anyone?"})
