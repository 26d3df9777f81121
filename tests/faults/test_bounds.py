"""Bounded buffers: a sandbox that floods events or sends a frame over the limit, clients that stop
reading (plain and multiplexed), a client that floods its socket while its step runs, sessions per
multiplexed connection. Each heavy case holds the server's RSS under a stated bound while a neighbour
session keeps stepping. Real servers on loopback ports."""

from __future__ import annotations

import anyio
import msgspec
import pytest
from websockets.asyncio.client import connect as raw_connect

from openenv_ws import connect
from openenv_ws.client.transport import ConnectionLost, WebSocket
from openenv_ws.errors import OutputLimitError, SandboxCrashedError
from openenv_ws.protocol import (
    Error,
    Event,
    Open,
    Opened,
    Pong,
    Reset,
    Result,
    Step,
    decode_batch,
    decode_server,
    encode,
    encode_batch,
    pack,
)

from .probes import left_after, neighbour, peak_rss, tracebacks


async def test_a_sandbox_that_floods_events_is_stopped_and_its_neighbour_goes_on(start_server):
    srv = start_server(
        "tests.helper_envs:FlakyEnv",
        "--sandbox",
        "subprocess",
        "--max-events-per-request",
        "1000",
        "--max-event-bytes-per-request",
        "1000000",
    )
    async with peak_rss(srv.proc.pid) as rss, neighbour(srv.url) as other, connect(srv.url) as flooder:
        pid = (await flooder.reset()).observation["pid"]
        with pytest.raises(OutputLimitError) as info:
            await flooder.step({"op": "flood", "count": 100_000, "size": 10})
        assert info.value.fatal and "more than 1000 events" in str(info.value)
        assert await left_after([pid], timeout=10) == []
        with pytest.raises(OutputLimitError):
            await flooder.step({"op": "flood", "count": 100, "size": 10_000_000})  # the session has ended
        await other.steps_on()
    # Bytes: 200 events of 10 KB pass the count limit but not 1 MB.
    async with connect(srv.url) as flooder:
        await flooder.reset()
        with pytest.raises(OutputLimitError):
            await flooder.step({"op": "flood", "count": 200, "size": 10_000})
    assert rss.growth_mib < 50  # the limits are 1 MB of events per request


async def test_a_frame_from_the_sandbox_over_the_limit_is_a_crashed_sandbox(start_server):
    srv = start_server("tests.helper_envs:FlakyEnv", "--sandbox", "subprocess", "--max-sandbox-frame-bytes", "100000")
    async with neighbour(srv.url) as other, connect(srv.url) as env:
        pid = (await env.reset()).observation["pid"]
        assert len((await env.step({"op": "big", "count": 50_000})).observation["blob"]) == 50_000
        with pytest.raises(SandboxCrashedError) as info:
            await env.step({"op": "big", "count": 200_000})
        assert "over the limit of 100000" in str(info.value)
        assert await left_after([pid], timeout=10) == []
        await other.steps_on()


@pytest.mark.parametrize("sandbox", ["inprocess", "subprocess"])
async def test_a_client_that_stops_reading_holds_back_its_sandbox_not_the_servers_memory(start_server, sandbox):
    srv = start_server("tests.helper_envs:FlakyEnv", "--sandbox", sandbox)
    count, size = 2000, 100_000  # 200 MB of events, all for a client that does not read for a while
    async with (
        neighbour(srv.url) as other,
        peak_rss(srv.proc.pid) as rss,
        raw_connect(srv.url + "/v1/sessions", max_size=None, max_queue=1) as ws,
    ):
        await ws.send(encode(Open()))
        assert isinstance(decode_server(await ws.recv()), Opened)
        await ws.send(encode(Reset(seq=1)))
        await ws.recv()
        await ws.send(encode(Step(seq=2, action=pack({"op": "flood", "count": count, "size": size}))))
        await other.steps_on(count=20)  # a while, and the neighbour is served meanwhile
        assert rss.growth_mib < 60
        events = 0
        with anyio.fail_after(60):
            while isinstance(frame := decode_server(await ws.recv()), Event):
                assert frame.index == events
                events += 1
        assert isinstance(frame, Result) and frame.seq == 2
        assert events == count  # held back, not dropped
    assert rss.growth_mib < 100  # what reading it all took, the reply cache's 16 MiB of events among it
    assert tracebacks(srv) == ""


async def test_a_client_that_floods_its_socket_while_its_step_runs_is_held_back(start_server):
    srv = start_server("tests.helper_envs:FlakyEnv", "--sandbox", "inprocess")
    frames, size = 400, 500_000  # 200 MB of pings (padded) sent while a step sleeps
    padded = msgspec.msgpack.encode({"t": "ping", "seq": 7, "pad": "x" * size})  # unknown fields are ignored
    async with (
        neighbour(srv.url) as other,
        peak_rss(srv.proc.pid) as rss,
        raw_connect(srv.url + "/v1/sessions", max_size=None) as ws,
    ):
        await ws.send(encode(Open()))
        await ws.recv()
        await ws.send(encode(Reset(seq=1)))
        await ws.recv()
        await ws.send(encode(Step(seq=2, action=pack({"op": "sleep", "seconds": 3}))))
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for _ in range(frames):
                await ws.send(padded)
                sent += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(flood)
            await anyio.sleep(2.5)  # the step runs on; the server reads aside what it may hold
            assert sent < frames / 4, f"{sent} frames of {size} bytes taken while a step ran"
            assert rss.growth_mib < 50
            await other.steps_on()
            reply = decode_server(await ws.recv())  # the step ends; what waited is read in turn
            assert isinstance(reply, Result) and reply.seq == 2
            with anyio.fail_after(60):
                for _ in range(frames):
                    assert decode_server(await ws.recv()) == Pong(seq=7)
        await ws.send(encode(Step(seq=3, action=pack({"op": "ok"}))))
        assert isinstance(decode_server(await ws.recv()), Result)
    assert tracebacks(srv) == ""


async def test_a_multiplexed_client_that_stops_reading_is_disconnected_and_its_session_resumes(start_server):
    srv = start_server("tests.helper_envs:FlakyEnv", "--sandbox", "inprocess", "--max-mux-buffer-bytes", "4000000")
    async with neighbour(srv.url) as other, peak_rss(srv.proc.pid) as rss:
        ws = await WebSocket.connect(srv.url + "/v1/mux")
        await ws.send(encode_batch([(1, encode(Open()))]))
        [(_, raw)] = decode_batch(await ws.receive())
        opened = decode_server(raw)
        assert isinstance(opened, Opened)
        await ws.send(encode_batch([(1, encode(Reset(seq=1)))]))
        await ws.receive()
        await ws.send(encode_batch([(1, encode(Step(seq=2, action=pack({"op": "big", "count": 100_000}))))]))
        await ws.receive()  # a 100 KB reply, now cached
        repeat = encode(Step(seq=2, action=pack({"op": "big", "count": 100_000})))
        closed = False
        with anyio.fail_after(30):
            for _ in range(200):  # up to 2 GB of repeats asked for, never read: bounded in count
                try:
                    await ws.send(encode_batch([(1, repeat)] * 100))
                except ConnectionLost:
                    closed = True
                    break
                await anyio.sleep(0.01)
        if not closed:  # what is in flight may hide the close for a moment: read until it shows
            with anyio.fail_after(30), pytest.raises(ConnectionLost) as info:
                while True:
                    await ws.receive()
            assert info.value.code == 1013
        await ws.aclose()
        await other.steps_on()
    assert rss.growth_mib < 150  # not the ~GB the repeats would take unbounded
    # The session was detached, not lost: it resumes on a new connection.
    ws = await WebSocket.connect(srv.url + "/v1/mux")
    resume = Open(session_id=opened.session_id, resume_token=opened.resume_token, last_seen=2)
    await ws.send(encode_batch([(7, encode(resume))]))
    [(channel, raw)] = decode_batch(await ws.receive())
    again = decode_server(raw)
    assert channel == 7 and isinstance(again, Opened) and again.resumed and again.last_applied == 2
    await ws.aclose()


async def test_a_multiplexed_connection_holds_a_bounded_number_of_sessions(start_server):
    srv = start_server("echo", "--sandbox", "inprocess", "--max-sessions-per-connection", "3")
    ws = await WebSocket.connect(srv.url + "/v1/mux")
    await ws.send(encode_batch([(n, encode(Open(seq=n))) for n in range(1, 5)]))
    replies: dict[int, object] = {}
    with anyio.fail_after(10):
        while len(replies) < 4:
            for channel, raw in decode_batch(await ws.receive()):
                replies[channel] = decode_server(raw)
    refused = [r for r in replies.values() if isinstance(r, Error)]
    assert len(refused) == 1 and refused[0].code == "capacity" and refused[0].retry_after
    assert sum(isinstance(r, Opened) for r in replies.values()) == 3
    await ws.aclose()
