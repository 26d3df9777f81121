"""The Docker backend against the real engine: episodes, confinement, escapes, crashes, pool, orphans.

Never skipped: CI runs ``scripts/setup_docker.sh`` before the tests. The test image is built
once per test session by ``openenv-ws build`` (see ``docker_fixtures``).
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import anyio
import pytest

from openenv_ws import CapacityError, RequestTimeoutError, SandboxCrashedError, SandboxStartError, connect

pytest_plugins = ["tests.docker_fixtures"]

NETWORK_ESCAPE = """
import os, socket
result = {"interfaces": sorted(os.listdir("/sys/class/net"))}
for host in ("172.17.0.1", "example.com"):  # the engine's bridge on this host; a name to resolve
    try:
        socket.create_connection((host, 80), timeout=2).close()
        result[host] = "connected"
    except OSError as exc:
        result[host] = type(exc).__name__ + ": " + str(exc)
"""

WRITE_ESCAPE = """
result = {}
for path in ("/evil", "/etc/evil", "/opt/venv/evil", "/ipc/evil", "/tmp/scratch"):
    try:
        with open(path, "w") as f:
            f.write("x")
        result[path] = "written"
    except OSError as exc:
        result[path] = exc.strerror
try:
    with open("/tmp/big", "wb") as f:
        for _ in range(64):
            f.write(b"x" * (1 << 20))  # 64 MiB into a 16 MiB scratch
    result["big"] = "written"
except OSError as exc:
    result["big"] = exc.strerror
"""

FORK_BOMB = """
import os, time
forked, refused = 0, 0
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        time.sleep(0.001)
        continue
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    forked += 1
result = {"forked": forked, "refused": refused}
"""

MEMORY_BOMB = """
hoard = []
while True:
    hoard.append(b"x" * (16 << 20))
"""


async def eventually(predicate, timeout: float = 10.0):
    """Poll a blocking predicate (Docker calls) off the loop until it holds; bounded."""
    with anyio.fail_after(timeout):
        while not (value := await anyio.to_thread.run_sync(predicate)):
            await anyio.sleep(0.05)
    return value


async def container_of(engine, session_id: str):
    (container,) = await anyio.to_thread.run_sync(lambda: engine.managed(session=session_id))
    return container


async def run_code(env, code: str) -> dict:
    return (await env.step({"code": code})).observation


def started_at(container) -> float:
    text = container.attrs["State"]["StartedAt"]  # 2026-01-02T03:04:05.123456789Z
    whole, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (fraction or "0"))


async def test_whole_echo_episode_runs_in_its_own_container(docker_server, engine):
    async with connect(docker_server.url, env="echo", options={"max_steps": 2}) as env:
        container = await container_of(engine, env.session_id)
        assert container.status == "running"
        assert container.labels["openenv-ws.env"] == "echo"
        assert (await env.reset()).observation == {"echoed_message": "", "message_length": 0}
        events = []
        r = await env.step({"message": "hello docker", "stream": True}, on_event=events.append)
        assert r.observation["echoed_message"] == "hello docker" and r.reward == 1.2
        assert events == [{"word": "hello"}, {"word": "docker"}]
        assert (await env.step({"message": "end"})).truncated
        assert (await env.state())["step_count"] == 2
        (listed,) = [s for s in docker_server.process.sessions() if s["id"] == env.session_id]
        assert listed["backend"] == "docker" and listed["sandbox"] == container.id[:12]
    await eventually(lambda: not engine.managed(session=env.session_id), timeout=5)


async def test_the_container_is_shut_by_default(docker_server, engine):
    async with connect(docker_server.url, env="exec") as env:
        assert (await env.reset()).observation["uid"] == 65534
        attrs = (await container_of(engine, env.session_id)).attrs
        host = attrs["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["ReadonlyRootfs"] is True
        assert host["Tmpfs"] == {"/tmp": "size=16m"}
        assert host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert attrs["Config"]["User"] == "65534:65534"
        assert host["Memory"] == host["MemorySwap"] == 128 << 20
        assert host["PidsLimit"] == 64
        assert host["NanoCpus"] == 500_000_000
        assert host["Init"] is True
        assert host["AutoRemove"] is False  # the exit status (OOM) must outlive the exit
        (bind,) = host["Binds"]
        assert bind.endswith(":/ipc:ro")
        labels = attrs["Config"]["Labels"]
        assert labels["openenv-ws.managed"] == "1"
        assert labels["openenv-ws.server"] == docker_server.instance
        assert labels["openenv-ws.session"] == env.session_id  # the id the client sees
        assert labels["openenv-ws.pid"] == str(docker_server.process.proc.pid)
        assert float(labels["openenv-ws.lease-expires"]) > time.time() + 3600
        status = await run_code(
            env, "result = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)"
        )
        assert status["result"]["CapEff"] == "0000000000000000"
        assert status["result"]["NoNewPrivs"] == "1"


async def test_the_sandbox_has_no_network(docker_server):
    async with connect(docker_server.url, env="exec") as env:
        await env.reset()
        result = (await run_code(env, NETWORK_ESCAPE))["result"]
    assert result["interfaces"] == ["lo"]
    assert "unreachable" in result["172.17.0.1"].lower()
    assert result["example.com"].startswith("gaierror")


async def test_nothing_outside_the_scratch_tmpfs_is_writable(docker_server):
    async with connect(docker_server.url, env="exec") as env:
        await env.reset()
        result = (await run_code(env, WRITE_ESCAPE))["result"]
    for path in ("/evil", "/etc/evil", "/opt/venv/evil", "/ipc/evil"):
        assert result[path] == "Read-only file system", path
    assert result["/tmp/scratch"] == "written"
    assert result["big"] == "No space left on device"  # the scratch is size-limited too


async def test_a_fork_bomb_is_held_by_the_pids_limit_and_others_go_on(docker_server):
    async with connect(docker_server.url, env="exec") as bomber, connect(docker_server.url, env="echo") as other:
        await bomber.reset()
        await other.reset()
        latencies = []

        async def keep_stepping() -> None:
            for i in range(15):
                started = time.monotonic()
                r = await other.step({"message": f"still here {i}"})
                latencies.append(time.monotonic() - started)
                assert r.observation["echoed_message"] == f"still here {i}"
                await anyio.sleep(0.2)

        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_stepping)
            result = (await run_code(bomber, FORK_BOMB))["result"]
        assert result["forked"] < 64 and result["refused"] > 100
        assert max(latencies) < 3  # answered throughout (the bound is loose: CI machines are busy)
        health = docker_server.process.health()
        assert health["status"] == "ok"
        assert health["backend"]["engine_reachable"] == 1 and health["capacity_left"] > 0  # still takes sessions
        assert (await run_code(bomber, "result = 'survived'"))["result"] == "survived"


async def test_a_memory_bomb_ends_its_session_with_an_out_of_memory_error(docker_server):
    async with connect(docker_server.url, env="exec") as bomber, connect(docker_server.url, env="echo") as other:
        await bomber.reset()
        await other.reset()
        started = time.monotonic()
        with pytest.raises(SandboxCrashedError) as info:
            await run_code(bomber, MEMORY_BOMB)
        assert time.monotonic() - started < 10
        assert "out of memory" in info.value.message and "128m" in info.value.message
        assert info.value.fatal
        assert (await other.step({"message": "fine"})).observation["echoed_message"] == "fine"


async def test_a_container_killed_from_outside_is_reported_within_two_seconds(docker_server, engine):
    async with connect(docker_server.url, env="flaky") as victim, connect(docker_server.url, env="echo") as other:
        await victim.reset()
        await other.reset()
        container = await container_of(engine, victim.session_id)
        await anyio.to_thread.run_sync(container.kill)
        started = time.monotonic()
        with anyio.fail_after(5):  # told promptly, before it even asks
            while victim.failed is None:
                await anyio.sleep(0.02)
        assert time.monotonic() - started < 2
        assert "killed" in str(victim.failed)
        with pytest.raises(SandboxCrashedError):
            await victim.step({"op": "ok"})
        assert (await other.step({"message": "fine"})).reward == 0.4
    await eventually(lambda: not engine.managed(session=victim.session_id), timeout=5)


async def test_an_env_that_kills_itself_mid_step_gives_a_typed_error(docker_server):
    async with connect(docker_server.url, env="flaky") as env:
        await env.reset()
        with pytest.raises(SandboxCrashedError) as info:
            await env.step({"op": "crash"})
    assert "SIGKILL" in info.value.message


async def test_a_step_past_its_timeout_removes_the_container(docker_serve, engine):
    srv = docker_serve("tests.helper_envs:FlakyEnv", "--step-timeout", "1")
    async with connect(srv.url) as env:
        await env.reset()
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError) as info:
            await env.step({"op": "sleep", "seconds": 30})
        assert time.monotonic() - started < 5 and info.value.fatal
        await eventually(lambda: not engine.managed(session=env.session_id), timeout=3)


async def test_twenty_concurrent_sessions_each_get_their_own_container(docker_server, engine):
    containers: dict[str, str] = {}

    async def episode(i: int) -> None:
        async with connect(docker_server.url, env="echo") as env:
            await env.reset()
            containers[env.session_id] = (await container_of(engine, env.session_id)).id
            for j in range(5):
                r = await env.step({"message": f"{i}-{j}"})
                assert r.observation["echoed_message"] == f"{i}-{j}"

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(episode, i)
    assert len(containers) == 20 and len(set(containers.values())) == 20
    # each session's container is removed with it (the warm pool may hold new ones meanwhile)
    await eventually(lambda: not any(engine.managed(session=s) for s in containers), timeout=10)


async def test_the_first_reset_is_served_by_a_warm_container(docker_serve, engine):
    srv = docker_serve("echo", "--pool", "2")
    await eventually(lambda: srv.backend()["pools"]["echo"]["ready"] == 2)
    before = time.time()
    async with connect(srv.url, env="echo") as env:
        await env.reset()
        container = await container_of(engine, env.session_id)
        assert started_at(container) < before  # running before the client even asked
    pool = srv.backend()["pools"]["echo"]
    assert pool["warm"] == 1 and pool["cold"] == 0
    await eventually(lambda: srv.backend()["pools"]["echo"]["ready"] == 2)  # refilled in the background


async def test_containers_starting_at_once_stay_under_the_cap(docker_serve):
    srv = docker_serve("echo", "-B", "max_starting=2")
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            backend = await anyio.to_thread.run_sync(srv.backend)
            peak = max(peak, backend["starting"])
            await anyio.sleep(0.02)

    async def episode() -> None:
        async with connect(srv.url, env="echo") as env:
            await env.reset()
            await env.step({"message": "hi"})

    async with anyio.create_task_group() as outer:
        outer.start_soon(watch)
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(episode)
        outer.cancel_scope.cancel()
    assert 1 <= peak <= 2


async def test_a_start_that_waits_past_its_deadline_gets_a_capacity_error(docker_serve):
    srv = docker_serve("echo", "-B", "max_starting=1", "-B", "start_timeout=0.3")
    outcomes: list[str] = []

    async def episode() -> None:
        try:
            async with connect(srv.url, env="echo", reconnect_attempts=0) as env:
                await env.reset()
                outcomes.append("ok")
        except CapacityError as exc:
            assert "no sandbox became ready within 0.3s" in exc.message and exc.retry_after
            outcomes.append("capacity")

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(episode)
    assert "capacity" in outcomes


async def test_a_missing_image_says_how_to_build_it(docker_serve):
    srv = docker_serve("tests.docker_envs:MissingImageEnv", image=None)
    with pytest.raises(SandboxStartError) as info:
        async with connect(srv.url, reconnect_attempts=0):
            pass
    assert "openenv-ws-test/does-not-exist:0" in info.value.message
    assert "openenv-ws build tests.docker_envs:MissingImageEnv" in info.value.message


async def test_a_new_server_removes_what_a_killed_one_left(docker_serve, engine):
    old = docker_serve("tests.helper_envs:FlakyEnv", "--pool", "1")
    sessions = []
    async with anyio.create_task_group() as tg:

        async def open_one() -> None:
            async with connect(old.url, reconnect_attempts=0) as env:
                await env.reset()
                sessions.append(env.session_id)
                await anyio.sleep(1.5)  # mid-episode when the server dies

        for _ in range(3):
            tg.start_soon(open_one)
        await eventually(lambda: len(sessions) == 3)
        old.process.proc.kill()  # SIGKILL: no drain, no cleanup
        await anyio.to_thread.run_sync(old.process.proc.wait)
        tg.cancel_scope.cancel()
    left = await anyio.to_thread.run_sync(lambda: engine.managed(server=old.instance))
    assert {c.labels["openenv-ws.session"] for c in left} >= set(sessions)
    assert (Path("/tmp/openenv-ws") / old.instance).exists()

    docker_serve("echo")  # its start sweeps before it answers
    assert await anyio.to_thread.run_sync(lambda: engine.managed(server=old.instance)) == []
    assert not (Path("/tmp/openenv-ws") / old.instance).exists()
