"""The demand-sized warm pool against the real engine: it learns a wave, pauses what waits,
checks what it hands out, keeps to its memory budget, and leaves nothing behind a crash.

Never skipped (CI runs ``scripts/setup_docker.sh`` first). Each test starts its own server
with small numbers: a handful of containers each, so the file takes seconds, not minutes.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio
import httpx

from openenv_ws import connect

from .test_docker_backend import container_of, eventually, started_at

pytest_plugins = ["tests.docker_fixtures"]


def pool_of(server) -> dict:
    return server.backend()["pools"].get("echo", {})


async def wave(url: str, size: int, engine) -> dict[str, float]:
    """``size`` sessions opened at once, each through its first reset: when each one's container started."""
    sessions: dict[str, float] = {}

    async def one() -> None:
        async with connect(url, env="echo") as env:
            await env.reset()
            sessions[env.session_id] = started_at(await container_of(engine, env.session_id))

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for _ in range(size):
                tg.start_soon(one)
    return sessions


def metrics_of(server) -> str:
    return httpx.get(server.process.http + "/metrics", timeout=5).text


def engine_state(engine, instance: str) -> dict[str, str]:
    """Container id -> engine status (running, paused...) of one server's containers."""
    return {c.id: c.status for c in engine.managed(server=instance)}


def worker_pid(container) -> int:
    """The sandbox worker: the one child of the container's init (docker-init is PID 1 inside)."""
    init = container.attrs["State"]["Pid"]
    (child,) = Path(f"/proc/{init}/task/{init}/children").read_text().split()
    return int(child)


def container_usage(container) -> int:
    """What the engine reports the container uses (its usage less inactive file cache), read from outside."""
    memory = container.stats(stream=False, one_shot=True)["memory_stats"]
    detail = memory.get("stats") or {}
    return memory["usage"] - detail.get("total_inactive_file", detail.get("inactive_file", 0))


async def test_the_pool_grows_after_a_wave_and_the_next_wave_is_served_warm(docker_serve, engine):
    # health_timeout: a thawed worker on a 2-core machine at load 15+ missed the default 2 s ping, and a
    # healthy pooled container was replaced by a cold start (seen once in the full suite)
    srv = docker_serve("echo", "-B", "pool_running=1", "-B", "health_timeout=15")
    first = await wave(srv.url, 4, engine)
    assert pool_of(srv)["cold"] == 4  # nothing was pooled before the first wave
    await eventually(lambda: pool_of(srv)["ready"] == 4 and pool_of(srv)["paused"] == 3, timeout=60)
    pool = pool_of(srv)
    assert pool["demand"] == 4 and pool["target"] == 4
    states = await anyio.to_thread.run_sync(engine_state, engine, srv.instance)
    assert sorted(states.values()) == ["paused", "paused", "paused", "running"]  # idle ones are frozen

    before = time.time()
    second = await wave(srv.url, 4, engine)
    assert not set(first) & set(second)
    assert max(second.values()) < before  # every container was started by the pool, before the wave
    pool = pool_of(srv)
    assert pool["warm"] == 4 and pool["cold"] == 4
    metrics = metrics_of(srv)
    assert 'openenv_ws_pool_hits_total{env="echo"} 4' in metrics
    assert 'openenv_ws_pool_misses_total{env="echo"} 4' in metrics
    for stage in ("slot_wait", "pool_wait", "create", "start", "ready", "unpause", "open", "first_reset"):
        assert f'openenv_ws_sandbox_start_stage_seconds_count{{stage="{stage}"}}' in metrics, stage


async def test_the_pool_shrinks_back_to_its_floor_when_demand_falls(docker_serve, engine):
    srv = docker_serve("echo", "-B", "pool_window=20", "-B", "pool_span=10")
    await wave(srv.url, 3, engine)
    assert pool_of(srv)["demand"] == 3
    # the wave is remembered for 20 s: the pool grows toward it, then empties once it is forgotten
    await eventually(lambda: pool_of(srv)["demand"] == 0 and pool_of(srv)["target"] == 0, timeout=40)
    await eventually(lambda: pool_of(srv)["ready"] == 0 and pool_of(srv)["starting"] == 0, timeout=30)
    assert pool_of(srv)["refills"] >= 1  # it did grow
    await eventually(lambda: not engine.managed(server=srv.instance), timeout=15)


async def test_a_paused_pooled_container_whose_process_was_killed_is_never_handed_out(docker_serve, engine):
    srv = docker_serve("echo", "--pool", "2", "-B", "pool_demand=0", "-B", "pool_running=0")
    await eventually(lambda: pool_of(srv)["paused"] == 2, timeout=60)
    pooled = await anyio.to_thread.run_sync(lambda: engine.managed(server=srv.instance))
    assert {c.status for c in pooled} == {"paused"}
    for container in pooled:
        os.kill(worker_pid(container), signal.SIGKILL)  # pending until thawed: dies at hand-out

    async with connect(srv.url, env="echo") as env:
        assert (await env.reset()).observation == {"echoed_message": "", "message_length": 0}
        mine = await container_of(engine, env.session_id)
        assert mine.id not in {c.id for c in pooled}
    assert pool_of(srv)["discarded"] >= 2
    assert 'openenv_ws_pool_discarded_total{env="echo"} 2' in metrics_of(srv)


async def test_the_pool_keeps_to_its_memory_budget(docker_serve, engine):
    budget = 40 << 20  # room for two idle echo workers (~18 MiB each here), not for the floor of 6
    srv = docker_serve("echo", "--pool", "6", "-B", "pool_demand=0", "-B", "pool_memory=40m", "-B", "pool_running=0")
    await eventually(lambda: pool_of(srv)["paused"] >= 1, timeout=60)
    await anyio.sleep(3)  # time for more starts, if the budget allowed any

    def settled() -> bool:  # nothing starting or being removed: the engine holds exactly the pool
        pool = pool_of(srv)
        return pool["starting"] == 0 and len(engine.managed(server=srv.instance)) == pool["ready"]

    await eventually(settled, timeout=30)
    pool = pool_of(srv)
    assert 1 <= pool["ready"] < 6
    assert srv.backend()["pool_memory_bytes"] <= budget
    pooled = await anyio.to_thread.run_sync(lambda: engine.managed(server=srv.instance))
    used = sum(await anyio.to_thread.run_sync(lambda: [container_usage(c) for c in pooled]))
    assert 0 < used <= budget


async def test_a_killed_server_with_a_full_paused_pool_leaves_nothing_after_the_next_start(docker_serve, engine):
    old = docker_serve("echo", "--pool", "3", "-B", "pool_demand=0", "-B", "pool_running=0")
    await eventually(lambda: pool_of(old)["paused"] == 3, timeout=60)
    states = await anyio.to_thread.run_sync(engine_state, engine, old.instance)
    assert list(states.values()) == ["paused"] * 3
    old.process.proc.kill()  # SIGKILL: no drain, no cleanup; the frozen workers cannot notice
    await anyio.to_thread.run_sync(old.process.proc.wait)
    assert await anyio.to_thread.run_sync(engine_state, engine, old.instance) == states

    docker_serve("echo", "-B", "pool_demand=0")  # its start sweeps before it answers
    assert await anyio.to_thread.run_sync(engine_state, engine, old.instance) == {}
    assert not (Path("/tmp/openenv-ws") / old.instance).exists()
