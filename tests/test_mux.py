"""Multiplexed connections keep every guarantee of single sessions."""

from __future__ import annotations

import anyio
import msgspec
from websockets.asyncio.client import connect as raw_connect

from openenv_ws import multiplex, run_episodes
from openenv_ws import protocol as p

from .proxy import CuttableProxy


async def test_many_sessions_share_a_few_connections(inprocess_server):
    totals: dict[int, int] = {}

    async with multiplex(inprocess_server.url, connections=2) as mux:

        async def episode(i: int) -> None:
            async with mux.connect("echo") as env:
                await env.reset(seed=i)
                for k in range(10):
                    r = await env.step({"message": f"{i}:{k}"})
                    assert r.observation["echoed_message"] == f"{i}:{k}"  # in order, never crossed
                totals[i] = (await env.state())["step_count"]

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(300):
                    tg.start_soon(episode, i)
        assert sum(len(link.sessions) for link in mux.links) == 0  # all closed
    assert totals == {i: 10 for i in range(300)}


async def test_events_and_errors_stay_with_their_session(inprocess_server):
    async with (
        multiplex(inprocess_server.url, connections=1) as mux,
        mux.connect("echo") as a,
        mux.connect("flaky") as b,
    ):
        await a.reset()
        await b.reset()
        events: list = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: a.step({"message": "x y z", "stream": True}, on_event=events.append))
            tg.start_soon(lambda: _expect_env_error(b))
        assert events == [{"word": "x"}, {"word": "y"}, {"word": "z"}]
        assert (await b.step({"op": "ok"})).reward == 1.0


async def _expect_env_error(session) -> None:
    try:
        await session.step({"op": "raise"})
    except Exception as exc:
        assert type(exc).__name__ == "EnvError"
    else:
        raise AssertionError("expected an EnvError")


async def test_cuts_resume_every_session_without_loss_or_repeat(inprocess_server):
    proxy = CuttableProxy(inprocess_server.port)
    counts: dict[int, int] = {}
    async with anyio.create_task_group() as tg:
        port = await tg.start(proxy.run)
        async with multiplex(f"ws://127.0.0.1:{port}", connections=2, backoff=0.02) as mux:

            async def episode(i: int) -> None:
                async with mux.connect("echo") as env:
                    await env.reset()
                    for k in range(25):
                        r = await env.step({"message": f"{i}-{k}", "delay_s": 0.005})
                        assert r.observation["echoed_message"] == f"{i}-{k}"
                    counts[i] = (await env.state())["step_count"]

            async def keep_cutting() -> None:
                for _ in range(8):  # bounded
                    await anyio.sleep(0.1)
                    proxy.cut()

            with anyio.fail_after(90):
                async with anyio.create_task_group() as episodes:
                    episodes.start_soon(keep_cutting)
                    for i in range(40):
                        episodes.start_soon(episode, i)
        tg.cancel_scope.cancel()
    assert proxy.cuts >= 4
    assert counts == {i: 25 for i in range(40)}


async def test_a_repeated_frame_in_a_batch_is_applied_once(inprocess_server):
    async with raw_connect(inprocess_server.url + "/v1/mux") as ws:
        await ws.send(p.encode_batch([(7, p.encode(p.Open(env="echo")))]))
        [(channel, raw)] = p.decode_batch(await ws.recv())
        assert channel == 7 and isinstance(p.decode_server(raw), p.Opened)
        step = p.encode(p.Step(seq=2, action=p.pack({"message": "once"})))
        # the repeat arrives while the first is still queued: one application, one reply
        await ws.send(p.encode_batch([(7, p.encode(p.Reset(seq=1))), (7, step), (7, step)]))
        replies: list = []
        with anyio.fail_after(10):
            while len(replies) < 2:
                replies += [bytes(r) for _, r in p.decode_batch(await ws.recv())]
        await ws.send(p.encode_batch([(7, step)]))  # a repeat after the reply: answered from cache
        [(_, again)] = p.decode_batch(await ws.recv())
        assert bytes(again) == replies[1]
        await ws.send(p.encode_batch([(7, p.encode(p.GetState(seq=3)))]))
        [(_, raw)] = p.decode_batch(await ws.recv())
        assert msgspec.msgpack.decode(p.decode_server(raw).state)["step_count"] == 1


async def test_bad_frames_get_errors_on_their_channel_only(inprocess_server):
    async with raw_connect(inprocess_server.url + "/v1/mux") as ws:
        await ws.send(p.encode_batch([(1, p.encode(p.Open(env="echo"))), (2, p.encode({"t": "bogus", "seq": 4}))]))
        got = {}
        with anyio.fail_after(10):
            while len(got) < 2:
                for channel, raw in p.decode_batch(await ws.recv()):
                    got[channel] = p.decode_server(raw)
        assert isinstance(got[1], p.Opened)
        assert isinstance(got[2], p.Error) and got[2].code == "malformed_frame"
        await ws.send(b"not a batch")
        [(channel, raw)] = p.decode_batch(await ws.recv())
        assert channel == 0 and p.decode_server(raw).code == "malformed_frame"
        await ws.send(p.encode_batch([(1, p.encode(p.Reset(seq=1)))]))
        [(channel, raw)] = p.decode_batch(await ws.recv())
        assert channel == 1 and isinstance(p.decode_server(raw), p.Result)


async def test_run_episodes_over_multiplexed_connections(inprocess_server):
    records = await run_episodes(
        inprocess_server.url,
        "echo",
        lambda obs: {"message": "m"},
        episodes=200,
        concurrency=200,
        multiplex=2,
        max_steps=5,
    )
    assert all(r.ok and r.length == 5 for r in records)
