"""Capacity, idle reaping, sandbox crashes, step timeouts and graceful shutdown. (``kill -9`` of a sandbox, a
container or the server: ``tests/faults/test_kills.py``.)"""

from __future__ import annotations

import signal
import time

import anyio
import pytest

from openenv_ws import CapacityError, RequestTimeoutError, SandboxCrashedError, SessionLostError, connect

from .faults.probes import alive, left_after


async def test_capacity_error_carries_retry_after_and_clears_when_a_session_ends(start_server):
    srv = start_server("echo", "--sandbox", "inprocess", "--max-sessions", "2")
    async with connect(srv.url, env="echo") as a, connect(srv.url, env="echo") as b:
        await a.reset()
        await b.reset()
        with pytest.raises(CapacityError) as info:
            async with connect(srv.url, env="echo"):
                pass
        assert info.value.retry_after and info.value.retry_after > 0
        assert srv.health()["capacity_left"] == 0
    async with connect(srv.url, env="echo") as c:  # both closed: room again
        await c.reset()


async def test_idle_sessions_are_reaped_and_the_client_is_told(start_server):
    srv = start_server("echo", "--sandbox", "subprocess", "--idle-timeout", "1")
    async with connect(srv.url, env="echo") as env:
        await env.reset()
        await anyio.sleep(2.6)
        with pytest.raises(SessionLostError) as info:
            await env.step({"message": "late"})
        assert "idle" in str(info.value)
    assert srv.health()["sessions"] == 0


async def test_a_sandbox_dying_mid_step_gives_a_typed_error(subprocess_server):
    async with connect(subprocess_server.url, env="flaky") as env:
        pid = (await env.reset()).observation["pid"]
        with pytest.raises(SandboxCrashedError) as info:
            await env.step({"op": "crash"})
        assert "SIGKILL" in info.value.message
        assert await left_after([pid], timeout=10) == []
    async with connect(subprocess_server.url, env="flaky") as fresh:
        assert (await fresh.reset()).observation["pid"] != pid


async def test_closing_a_session_stops_its_sandbox_process(subprocess_server):
    async with connect(subprocess_server.url, env="flaky") as env:
        pid = (await env.reset()).observation["pid"]
        assert alive(pid)
    assert await left_after([pid], timeout=10) == []


async def test_a_step_past_its_timeout_stops_the_sandbox_and_ends_the_session(start_server):
    srv = start_server("tests.helper_envs:FlakyEnv", "--sandbox", "subprocess", "--step-timeout", "0.5")
    async with connect(srv.url) as env:
        pid = (await env.reset()).observation["pid"]
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError) as info:
            await env.step({"op": "sleep", "seconds": 30})
        assert time.monotonic() - started < 5
        assert info.value.code == "timeout" and info.value.fatal
        assert await left_after([pid], timeout=10) == []
        with pytest.raises(RequestTimeoutError):
            await env.step({"op": "ok"})  # the session ended with that error


async def test_client_side_timeout_does_not_desync_the_next_call(inprocess_server):
    async with connect(inprocess_server.url, env="echo") as env:
        await env.reset()
        with pytest.raises(RequestTimeoutError):
            await env.step({"message": "slow", "delay_s": 0.6}, timeout=0.1)
        r = await env.step({"message": "next"})
        assert r.observation["echoed_message"] == "next"  # not the late reply of "slow"
        assert (await env.state())["step_count"] == 2


async def test_each_pipelined_call_keeps_its_own_deadline(inprocess_server):
    # One timer per session watches every call's deadline: it wakes the one past its own and not
    # the one behind it, which waits for its reply (queued on the server after the slow one).
    async with connect(inprocess_server.url, env="echo") as env:
        await env.reset()
        outcomes: dict[str, object] = {}

        async def call(name: str, delay: float, timeout: float) -> None:
            started = time.monotonic()
            try:
                result = await env.step({"message": name, "delay_s": delay}, timeout=timeout)
                outcomes[name] = result.observation["echoed_message"]
            except RequestTimeoutError:
                outcomes[name] = ("timeout", time.monotonic() - started)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "slow", 0.8, 0.2)
            await anyio.sleep(0.01)  # numbered second
            tg.start_soon(call, "behind", 0.0, 5.0)
        kind, waited = outcomes["slow"]
        assert kind == "timeout" and 0.15 < waited < 0.6, outcomes
        assert outcomes["behind"] == "behind", outcomes


async def test_graceful_shutdown_finishes_in_flight_steps_then_closes_sessions(start_server):
    srv = start_server("tests.helper_envs:FlakyEnv", "--sandbox", "subprocess", "--drain-timeout", "10")
    async with connect(srv.url) as busy, connect(srv.url) as idle:
        busy_pid = (await busy.reset()).observation["pid"]
        idle_pid = (await idle.reset()).observation["pid"]
        async with anyio.create_task_group() as tg:

            async def terminate_soon() -> None:
                await anyio.sleep(0.3)
                srv.proc.send_signal(signal.SIGTERM)

            tg.start_soon(terminate_soon)
            r = await busy.step({"op": "sleep", "seconds": 1.0})  # in flight when SIGTERM lands
        assert r.observation["op"] == "sleep"
        with anyio.fail_after(15):
            while idle.failed is None:
                await anyio.sleep(0.05)
        assert "shutting down" in str(idle.failed)
        with pytest.raises(SessionLostError):
            await idle.step({"op": "ok"})
    assert await anyio.to_thread.run_sync(srv.proc.wait, 15) == 0
    assert await left_after([busy_pid, idle_pid], timeout=10) == []


async def test_close_returns_promptly_when_the_connection_drops_meanwhile(start_server):
    srv = start_server("echo", "--sandbox", "inprocess")
    async with connect(srv.url, env="echo") as env:
        await env.reset()
        async with anyio.create_task_group() as tg:

            async def slow_step() -> None:
                with pytest.raises(SessionLostError):
                    await env.step({"message": "slow", "delay_s": 5})

            tg.start_soon(slow_step)
            await anyio.sleep(0.2)

            async def kill_server_soon() -> None:
                await anyio.sleep(0.3)
                srv.proc.kill()  # the close below waits behind the slow step when this lands

            tg.start_soon(kill_server_soon)
            started = time.monotonic()
            await env.close()
            assert time.monotonic() - started < 3  # not the close timeout (10 s)
