"""Deadlines that hold and output that stays bounded: a stuck step, a client that left, a drain with stuck
steps, a sandbox that floods events or sends a frame over the limit. Real servers on loopback ports."""

from __future__ import annotations

import os
import signal
import time

import anyio
import pytest

from openenv_ws import connect
from openenv_ws.client.transport import WebSocket
from openenv_ws.errors import OutputLimitError, RequestTimeoutError, SandboxCrashedError
from openenv_ws.protocol import Open, Opened, Reset, Step, decode_server, encode, pack, unpack


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
