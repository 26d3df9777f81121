"""Deadlines that hold: a step that never returns, a busy session whose client left, a drain with stuck
steps. Real servers on loopback ports."""

from __future__ import annotations

import signal
import time

import anyio
import pytest

from openenv_ws import connect
from openenv_ws.client.transport import WebSocket
from openenv_ws.errors import RequestTimeoutError
from openenv_ws.protocol import Open, Opened, Reset, Step, decode_server, encode, pack, unpack

from .probes import left_after, neighbour


@pytest.mark.parametrize("sandbox", ["inprocess", "subprocess"])
async def test_a_step_that_never_returns_meets_its_deadline(start_server, sandbox):
    srv = start_server("tests.helper_envs:FlakyEnv", "--sandbox", sandbox, "--step-timeout", "1")
    async with neighbour(srv.url) as other, connect(srv.url) as env:
        await env.reset()
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError) as info:
            await env.step({"op": "sleep", "seconds": 3600})
        assert time.monotonic() - started < 5  # deadline 1 s, enforced within the reaper's interval
        assert info.value.fatal and "took longer than 1s" in str(info.value)
        await other.steps_on()
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
    assert await left_after([pid], timeout=10) == []
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
