"""``kill -9`` of a sandbox worker, of a sandbox container and of the server itself.

A killed sandbox fails its own session only (``sandbox_crashed``, told promptly, mid-step or not),
while a neighbour keeps stepping and the server's memory stays flat; nothing of the killed sandbox is
left, no process and no container. A killed server leaves no worker and no process of an agent behind
(subprocess backend); the Docker backend's case, where the next server removes what the killed one
left, is ``tests/test_docker_backend.py::test_a_new_server_removes_what_a_killed_one_left``.
"""

from __future__ import annotations

import os
import signal

import anyio
import pytest

from openenv_ws import SandboxCrashedError, SessionLostError, connect
from openenv_ws.client import EnvSession

from .probes import alive, descendants, describe, forkservers, left_after, neighbour, peak_rss

pytest_plugins = ["tests.docker_fixtures"]


async def _told(session: EnvSession, timeout: float = 2.0) -> None:
    """The client learns of its sandbox's death by itself, before it asks anything."""
    with anyio.fail_after(timeout):
        while session.failed is None:
            await anyio.sleep(0.02)


async def _crashes_mid_step(session: EnvSession, action: dict, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    with pytest.raises(SandboxCrashedError) as info:
        await session.step(action)
    assert info.value.fatal


async def test_kill_9_of_a_worker_fails_only_its_session(start_server):
    srv = start_server("tests.helper_envs:FlakyEnv", "--sandbox", "subprocess")
    async with (
        peak_rss(srv.proc.pid) as rss,
        neighbour(srv.url) as other,
        connect(srv.url) as idle,
        connect(srv.url) as busy,
    ):
        idle_pid = (await idle.reset()).observation["pid"]
        busy_pid = (await busy.reset()).observation["pid"]
        assert {idle_pid, busy_pid} <= descendants(srv.proc.pid)
        async with anyio.create_task_group() as tg:
            await tg.start(_crashes_mid_step, busy, {"op": "sleep", "seconds": 3600})
            await anyio.sleep(0.3)  # the step is running in the worker
            os.kill(idle_pid, signal.SIGKILL)
            os.kill(busy_pid, signal.SIGKILL)
            await _told(idle)
        assert "SIGKILL" in str(idle.failed)
        with pytest.raises(SandboxCrashedError):
            await idle.step({"op": "ok"})
        assert await left_after([idle_pid, busy_pid], timeout=5) == []
        await other.steps_on()
    assert rss.growth_mib < 30
    workers = descendants(srv.proc.pid) - forkservers(srv)
    assert await left_after(workers, timeout=5) == []  # every session closed: no worker
    assert srv.health()["sessions"] == 0


async def test_kill_9_of_a_container_fails_only_its_session(docker_serve, engine):
    srv = docker_serve("echo", "tests.helper_envs:FlakyEnv")
    async with (
        peak_rss(srv.process.proc.pid) as rss,
        neighbour(srv.url, env="echo") as other,
        connect(srv.url, env="flaky") as idle,
        connect(srv.url, env="flaky") as busy,
    ):
        await idle.reset()
        await busy.reset()
        [idle_box] = await anyio.to_thread.run_sync(lambda: engine.managed(session=idle.session_id))
        [busy_box] = await anyio.to_thread.run_sync(lambda: engine.managed(session=busy.session_id))
        async with anyio.create_task_group() as tg:
            await tg.start(_crashes_mid_step, busy, {"op": "sleep", "seconds": 3600})
            await anyio.sleep(0.3)
            await anyio.to_thread.run_sync(busy_box.kill)  # SIGKILL, from outside
            await anyio.to_thread.run_sync(idle_box.kill)
            await _told(idle)
        with pytest.raises(SandboxCrashedError):
            await idle.step({"op": "ok"})
        with anyio.fail_after(10):
            while await anyio.to_thread.run_sync(
                lambda: engine.managed(session=idle.session_id) + engine.managed(session=busy.session_id)
            ):
                await anyio.sleep(0.1)
        await other.steps_on()
    assert rss.growth_mib < 30
    srv.process.stop()
    assert await anyio.to_thread.run_sync(lambda: engine.managed(server=srv.instance)) == []  # warm ones included


def _kill_left(pids: set[int]) -> None:
    """Kill what a test made and a failure left behind (by PID): the next tests must not inherit it."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


async def _hold(url: str, env: str, first: dict, then: dict | None, *, task_status=anyio.TASK_STATUS_IGNORED):
    """A session that takes ``first``, then runs ``then`` (or idles) until its server goes away."""
    with pytest.raises((SessionLostError, SandboxCrashedError)):
        async with connect(url, env=env, reconnect_attempts=0) as session:
            await session.reset()
            await session.step(first)
            task_status.started()
            if then is None:
                await anyio.sleep_forever()
            await session.step(then)


BACKGROUND_JOB = {"command": "sleep 3600 & echo started"}
BUSY_COMMAND = {"command": "sleep 50", "timeout_s": 55}


async def test_kill_9_of_a_worker_leaves_no_process_of_its_agent(start_server):
    srv = start_server("shell", "tests.helper_envs:FlakyEnv", "--sandbox", "subprocess")
    tree: set[int] = set()
    try:
        async with neighbour(srv.url) as other, anyio.create_task_group() as tg:
            neighbours = descendants(srv.proc.pid)
            await tg.start(_hold, srv.url, "shell", BACKGROUND_JOB, BUSY_COMMAND)
            await anyio.sleep(0.5)  # the command runs
            tree = descendants(srv.proc.pid) - neighbours  # the worker, bash, the job, the command
            # a worker: spawned (sandbox.worker) or forked from a fork-server (its command line is the fork-server's)
            kinds = ("openenv_ws.sandbox.worker", "openenv_ws.sandbox.forkserver")
            [worker] = [pid for pid in tree if any(kind in " ".join(describe([pid])) for kind in kinds)]
            os.kill(worker, signal.SIGKILL)  # the session ends with sandbox_crashed (checked by _hold)
            await other.steps_on()
        left = await left_after(tree, timeout=5)
        assert left == [], "left behind by a worker killed with SIGKILL:\n" + "\n".join(left)
    finally:
        _kill_left(tree)


async def test_kill_9_of_the_server_leaves_no_worker_or_agent_process(start_server):
    srv = start_server("tests.helper_envs:FlakyEnv", "shell", "--sandbox", "subprocess")
    tree: set[int] = set()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(_hold, srv.url, "flaky", {"op": "ok"}, None)  # an idle worker
            await tg.start(_hold, srv.url, "flaky", {"op": "ok"}, {"op": "sleep", "seconds": 3600})  # mid-step
            await tg.start(_hold, srv.url, "shell", BACKGROUND_JOB, None)  # bash and its job, idle
            await tg.start(_hold, srv.url, "shell", BACKGROUND_JOB, BUSY_COMMAND)  # the same, mid-step
            await anyio.sleep(0.5)  # the last steps run
            tree = descendants(srv.proc.pid)  # 4 workers, 2 bash, 2 jobs, 1 command; the fork-servers
            assert len(tree - forkservers(srv)) == 9, describe(tree)
            srv.proc.kill()
            await anyio.to_thread.run_sync(srv.proc.wait)
            left = await left_after(tree, timeout=5)
            tg.cancel_scope.cancel()
        assert left == [], "left behind by a server killed with SIGKILL:\n" + "\n".join(left)
    finally:
        _kill_left(tree)
