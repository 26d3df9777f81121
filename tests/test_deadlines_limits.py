"""Deadlines that hold and output that stays bounded: a stuck step, a client that left, a drain with stuck
steps, a sandbox that floods events or sends a frame over the limit. Real servers on loopback ports."""

from __future__ import annotations

import os
import signal
import time

import anyio
import pytest

from openenv_ws import connect
from openenv_ws.client.transport import ConnectionLost, WebSocket
from openenv_ws.errors import OutputLimitError, RequestTimeoutError, SandboxCrashedError
from openenv_ws.protocol import (
    Error,
    Open,
    Opened,
    Reset,
    Step,
    decode_batch,
    decode_server,
    encode,
    encode_batch,
    pack,
    unpack,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while _alive(pid):
            await anyio.sleep(0.05)


@pytest.mark.parametrize("sandbox", ["inprocess", "subprocess"])
async def test_a_step_that_never_returns_meets_its_deadline(start_server, sandbox):
    srv = start_server("tests.helper_envs:FlakyEnv", "--sandbox", sandbox, "--step-timeout", "1")
    async with connect(srv.url) as env:
        await env.reset()
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError) as info:
            await env.step({"op": "sleep", "seconds": 3600})
        assert time.monotonic() - started < 5  # deadline 1 s, enforced within the reaper's interval
        assert info.value.fatal and "took longer than 1s" in str(info.value)
    assert srv.health()["sessions"] == 0


async def test_a_busy_session_whose_client_left_is_reaped_after_the_grace(start_server):
    srv = start_server("tests.helper_envs:FlakyEnv", "--sandbox", "subprocess", "--resume-grace", "1")
    ws = await WebSocket.connect(srv.url + "/v1/sessions")
    await ws.send(encode(Open()))
    opened = decode_server(await ws.receive())
    assert isinstance(opened, Opened)
    await ws.send(encode(Reset(seq=1)))
    pid = unpack(decode_server(await ws.receive()).observation)["pid"]
    await ws.send(encode(Step(seq=2, action=pack({"op": "sleep", "seconds": 3600}))))
    await anyio.sleep(0.2)
    await ws.aclose()  # the client is gone for good while its step runs
    # Its step never returns; after the grace the server reaps the session and stops its sandbox.
    await _wait_gone(pid, timeout=10)
    with anyio.fail_after(10):
        while srv.health()["sessions"]:
            await anyio.sleep(0.1)


@pytest.mark.parametrize("sandbox", ["inprocess", "subprocess"])
async def test_shutdown_with_stuck_steps_completes_within_the_drain_timeout(start_server, sandbox):
    srv = start_server("echo", "tests.helper_envs:FlakyEnv", "--sandbox", sandbox, "--drain-timeout", "2")
    async with connect(srv.url, env="flaky", reconnect_attempts=1) as env:
        await env.reset()
        async with anyio.create_task_group() as tg:

            async def stuck() -> None:
                with pytest.raises(Exception):  # noqa: B017 - the session ends with the server
                    await env.step({"op": "sleep", "seconds": 3600})

            tg.start_soon(stuck)
            await anyio.sleep(0.3)
            started = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(srv.proc.wait, 30)
            took = time.monotonic() - started
    assert code == 0
    assert took < 2 + 4, f"shutdown took {took:.1f}s with --drain-timeout 2"


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
    async with connect(srv.url) as flooder, connect(srv.url) as neighbour:
        pid = (await flooder.reset()).observation["pid"]
        await neighbour.reset()
        with pytest.raises(OutputLimitError) as info:
            await flooder.step({"op": "flood", "count": 100_000, "size": 10})
        assert info.value.fatal and "more than 1000 events" in str(info.value)
        await _wait_gone(pid)
        with pytest.raises(OutputLimitError):
            await flooder.step({"op": "flood", "count": 100, "size": 10_000_000})  # the session has ended
        r = await neighbour.step({"op": "flood", "count": 10, "size": 10})
        assert r.reward == 1.0
    # Bytes: 200 events of 10 KB pass the count limit but not 1 MB.
    async with connect(srv.url) as flooder:
        await flooder.reset()
        with pytest.raises(OutputLimitError):
            await flooder.step({"op": "flood", "count": 200, "size": 10_000})


async def test_a_frame_from_the_sandbox_over_the_limit_is_a_crashed_sandbox(start_server):
    srv = start_server("tests.helper_envs:FlakyEnv", "--sandbox", "subprocess", "--max-sandbox-frame-bytes", "100000")
    async with connect(srv.url) as env:
        pid = (await env.reset()).observation["pid"]
        assert len((await env.step({"op": "big", "count": 50_000})).observation["blob"]) == 50_000
        with pytest.raises(SandboxCrashedError) as info:
            await env.step({"op": "big", "count": 200_000})
        assert "over the limit of 100000" in str(info.value)
        await _wait_gone(pid)


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_multiplexed_client_that_stops_reading_is_disconnected_and_its_session_resumes(start_server):
    srv = start_server("tests.helper_envs:FlakyEnv", "--sandbox", "inprocess", "--max-mux-buffer-bytes", "4000000")
    rss_before = _rss_mib(srv.proc.pid)
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
    assert _rss_mib(srv.proc.pid) - rss_before < 150  # not the ~GB the repeats would take unbounded
    # The session was detached, not lost: it resumes on a new connection.
    async with connect(srv.url, reconnect_attempts=1) as neighbour:  # the server serves others meanwhile
        assert (await neighbour.reset()).observation["pid"] == srv.proc.pid
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
