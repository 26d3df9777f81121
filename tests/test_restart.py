"""Sessions survive a server restart (``serve --state-dir``): real servers, real containers, real clients.

``kill -9`` of the server mid-episode, then a new server on the same state directory and port: the
Docker sandboxes are adopted (their workers connect again) and every client, through ``connect()``
and ``multiplex()``, finishes its episode with exact step counts; a step in flight at the kill is
applied once. A graceful ``--handoff`` restart loses nothing. A connection cut while the server is
down resumes with the answer the old server persisted. A sandbox that died meanwhile is replayed, or
its client gets ``sandbox_lost`` saying why. The subprocess backend's sessions are replayed.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path

import anyio
import pytest

from openenv_ws import connect
from openenv_ws.client import multiplex
from openenv_ws.errors import SandboxLostError
from openenv_ws.server.local import free_port

from .conftest import ServerProcess
from .proxy import CuttableProxy

pytest_plugins = ["tests.docker_fixtures"]

RESUME = {"reconnect_attempts": 200, "backoff": 0.05, "max_backoff": 0.25}
"""Clients that keep trying while the server restarts (tens of seconds on a loaded machine)."""


def counting(sleep: float = 0.0) -> dict:
    """An ExecEnv step that counts the steps its worker process applied, and names its container."""
    code = (
        "import builtins, socket, time\n"
        "builtins.n = getattr(builtins, 'n', 0) + 1\n"
        f"time.sleep({sleep})\n"
        "result = [builtins.n, socket.gethostname()]"
    )
    return {"code": code}


class Restartable:
    """``openenv-ws serve --state-dir DIR`` on one port, started again as often as a test wants."""

    def __init__(self, state: Path, *args: str) -> None:
        self.port = free_port()
        self.args = [*args, "--state-dir", str(state)]
        self.started: list[ServerProcess] = []
        self.url = f"ws://127.0.0.1:{self.port}"
        self.start()

    @property
    def current(self) -> ServerProcess:
        return self.started[-1]

    def start(self) -> ServerProcess:
        self.started.append(ServerProcess(*self.args, port=self.port, log_level="info"))
        return self.current

    def kill9(self) -> None:
        self.current.proc.kill()
        self.current.proc.wait(10)

    def stop(self) -> None:
        for server in self.started:
            server.stop()


@pytest.fixture
def restartable(tmp_path, engine):
    servers: list[Restartable] = []
    instances: set[str] = set()

    def make(*args: str) -> Restartable:
        server = Restartable(tmp_path / "state", *args)
        servers.append(server)
        return server

    yield make, instances
    for server in servers:
        for process in server.started:
            if process.proc.poll() is None:
                try:
                    instances.add(process.health()["backend"].get("instance", ""))
                except Exception:
                    pass
        server.stop()
    for instance in instances - {""}:
        engine.remove(engine.managed(server=instance))


def _docker(image: str) -> tuple[str, ...]:
    return ("echo", "tests.docker_envs:ExecEnv", "--sandbox", "docker", "--image", image)


async def _count(session, sleep: float = 0.0) -> tuple[int, str]:
    n, host = (await session.step(counting(sleep))).observation["result"]
    return n, host


def _split(engine, instance: str, sessions) -> tuple[set[str], set[str]]:
    """The instance's containers: those holding one of ``sessions``, and the others (its warm pool)."""
    ids = {s.session_id for s in sessions}
    mine = engine.managed(server=instance)
    return {c.id for c in mine if c.labels.get("openenv-ws.session") in ids}, {
        c.id for c in mine if c.labels.get("openenv-ws.session") not in ids
    }


async def _pooled(engine, instance: str, sessions, n: int, gone: set[str] = frozenset()) -> tuple[set[str], set[str]]:
    """Wait (10 s at most) until the instance's warm pool holds ``n`` containers, none of ``gone``."""
    deadline = time.monotonic() + 10
    while True:
        held, pooled = await anyio.to_thread.run_sync(_split, engine, instance, sessions)
        if (len(pooled) == n and not pooled & gone) or time.monotonic() > deadline:
            return held, pooled
        await anyio.sleep(0.1)


async def test_kill_9_mid_episode_docker_sessions_are_adopted_and_finish_exactly(restartable, sandbox_image, engine):
    make, instances = restartable
    # A warm pool of one per env (two envs, not sized by demand): the predecessor's pooled containers
    # are not adopted but removed, and the new server's pools fill again.
    srv = make(*_docker(sandbox_image), "--pool", "1", "-B", "pool_demand=0")
    instance = srv.current.health()["backend"]["instance"]
    instances.add(instance)
    async with (
        connect(srv.url, env="exec", **RESUME) as solo,
        multiplex(srv.url, connections=2, **RESUME) as mux,
        contextlib.AsyncExitStack() as stack,
    ):
        muxed = [await stack.enter_async_context(mux.connect(env="exec")) for _ in range(2)]
        sessions = [solo, *muxed]
        hosts = {}
        for session in sessions:
            await session.reset()
            for expected in (1, 2, 3):
                n, hosts[session.session_id] = await _count(session)
                assert n == expected
        containers, pooled = await _pooled(engine, instance, sessions, 2)
        assert len(containers) == 3 and len(pooled) == 2
        answers: dict[str, tuple[int, str]] = {}

        async def slow(session) -> None:
            answers[session.session_id] = await _count(session, sleep=2.0)

        async with anyio.create_task_group() as tg:
            for session in sessions[:2]:  # two steps in flight at the kill: each applied once
                tg.start_soon(slow, session)
            await anyio.sleep(0.8)
            srv.kill9()
            killed = time.monotonic()
            await anyio.to_thread.run_sync(srv.start)
        restarted = srv.current.health()
        assert restarted["restart"]["adopted"] == 3, restarted
        assert restarted["backend"]["instance"] == instance
        for session in sessions[:2]:
            assert answers[session.session_id] == (4, hosts[session.session_id])
        n, host = await _count(sessions[2])
        assert (n, host) == (4, hosts[sessions[2].session_id])
        print(f"kill -9 to the first resumed answer: {time.monotonic() - killed:.2f}s")
        for session in sessions:
            for expected in (5, 6):
                assert await _count(session) == (expected, hosts[session.session_id])  # the same container
        after, refilled = await _pooled(engine, instance, sessions, 2, gone=pooled)
        assert after == containers  # adopted, none started for them or left over
        assert len(refilled) == 2 and not refilled & pooled  # the old pooled ones removed, the pools refilled
    srv.current.stop()
    assert await anyio.to_thread.run_sync(lambda: engine.managed(server=instance)) == []


async def test_graceful_handoff_loses_nothing(restartable, sandbox_image, engine):
    make, instances = restartable
    srv = make(*_docker(sandbox_image), "--handoff")
    instance = srv.current.health()["backend"]["instance"]
    instances.add(instance)
    async with (
        connect(srv.url, env="exec", **RESUME) as solo,
        multiplex(srv.url, connections=1, **RESUME) as mux,
        mux.connect(env="exec") as muxed,
        mux.connect(env="echo") as echo,
    ):
        await echo.reset()
        for session in (solo, muxed):
            await session.reset()
            assert (await _count(session))[0] == 1
        containers, _ = await anyio.to_thread.run_sync(_split, engine, instance, (solo, muxed, echo))
        answers: dict[str, int] = {}

        async def slow(session) -> None:
            answers[session.session_id] = (await _count(session, sleep=1.0))[0]

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow, solo)
            tg.start_soon(slow, muxed)
            await anyio.sleep(0.4)
            old = srv.current
            old.proc.send_signal(signal.SIGTERM)  # the steps in flight finish first, then the hand-off
            assert await anyio.to_thread.run_sync(old.proc.wait, 60) == 0
            # the sessions' containers are left to the next server, its warm pool (sized by demand) is not
            assert {c.id for c in await anyio.to_thread.run_sync(lambda: engine.managed(server=instance))} == containers
            await anyio.to_thread.run_sync(srv.start)
        assert answers == {solo.session_id: 2, muxed.session_id: 2}
        assert srv.current.health()["restart"]["adopted"] == 3
        for session in (solo, muxed):
            assert (await _count(session))[0] == 3
        for i in range(3):
            await echo.step({"message": f"m{i}"})
        assert (await echo.state())["step_count"] == 3


class HoldingProxy(CuttableProxy):
    """A proxy that can also hold back what the server sends (the client then never sees a reply)."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.holding = False

    async def _pump_down(self, src, dst, scope) -> None:
        try:
            async for chunk in src:
                while self.holding:
                    await anyio.sleep(0.01)
                await dst.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        scope.cancel()


async def test_a_connection_cut_during_the_restart_resumes_with_the_persisted_answer(
    restartable, sandbox_image, engine
):
    make, instances = restartable
    srv = make(*_docker(sandbox_image))
    instances.add(srv.current.health()["backend"]["instance"])
    proxy = HoldingProxy(srv.port)
    async with anyio.create_task_group() as outer:
        await outer.start(proxy.run)
        async with connect(f"ws://127.0.0.1:{proxy.port}", env="exec", **RESUME) as session:
            await session.reset()
            assert (await _count(session))[0] == 1
            proxy.holding = True  # the answer of the next step is persisted and sent, but never arrives
            answer: list[tuple[int, str]] = []

            async def step() -> None:
                answer.append(await _count(session, sleep=0.3))

            async with anyio.create_task_group() as tg:
                tg.start_soon(step)
                await anyio.sleep(1.5)  # applied and answered by now
                srv.kill9()
                proxy.cut()  # the client's connection drops while no server runs
                proxy.holding = False
                await anyio.sleep(0.5)  # its first attempts to resume fail
                await anyio.to_thread.run_sync(srv.start)
            assert answer[0][0] == 2  # the persisted answer, not a second application
            assert (await _count(session))[0] == 3
        outer.cancel_scope.cancel()


async def test_a_sandbox_that_died_meanwhile_is_replayed_or_says_why(restartable, sandbox_image, engine):
    make, instances = restartable
    srv = make(*_docker(sandbox_image))
    instance = srv.current.health()["backend"]["instance"]
    instances.add(instance)
    async with connect(srv.url, env="echo", **RESUME) as echo, connect(srv.url, env="exec", **RESUME) as exec_:
        await echo.reset()
        await exec_.reset()
        for i in range(4):
            await echo.step({"message": f"m{i}"})
        await _count(exec_)
        srv.kill9()
        for session in (echo, exec_):  # the sandboxes die while no server runs
            boxes = await anyio.to_thread.run_sync(lambda s=session: engine.managed(session=s.session_id))
            await anyio.to_thread.run_sync(engine.remove, boxes)
        await anyio.to_thread.run_sync(srv.start)
        assert srv.current.health()["restart"] | {"seconds": 0} == {
            "adopted": 0,
            "replayed": 1,
            "lost": 1,
            "seconds": 0,
        }
        await echo.step({"message": "m4"})  # replayed in a new container: the episode goes on exactly
        assert (await echo.state())["step_count"] == 5
        with pytest.raises(SandboxLostError) as lost:
            await _count(exec_)  # its answers name its container: a replay elsewhere diverges
        message = str(lost.value)
        assert "did not survive the server restart" in message
        assert "its container was removed" in message and "diverged" in message
        assert lost.value.fatal
    live = await anyio.to_thread.run_sync(lambda: engine.managed(server=instance))
    assert len(live) <= 1  # the replayed echo's (closing); nothing unclaimed is left


async def test_subprocess_sessions_are_replayed_after_kill_9(tmp_path):
    srv = Restartable(tmp_path / "state", "echo", "--sandbox", "subprocess")
    try:
        async with (
            connect(srv.url, env="echo", **RESUME) as solo,
            multiplex(srv.url, **RESUME) as mux,
            mux.connect(env="echo") as other,
        ):
            for session in (solo, other):
                await session.reset()
                for i in range(3):
                    await session.step({"message": f"m{i}"})
            srv.kill9()
            await anyio.to_thread.run_sync(srv.start)
            assert srv.current.health()["restart"]["replayed"] == 2
            for session in (solo, other):
                for i in range(3, 5):
                    await session.step({"message": f"m{i}"})
                assert (await session.state())["step_count"] == 5
    finally:
        srv.stop()


async def test_a_plain_sigterm_closes_the_sessions_and_the_next_server_has_none(tmp_path):
    srv = Restartable(tmp_path / "state", "echo", "--sandbox", "subprocess")
    try:
        async with connect(srv.url, env="echo", reconnect_attempts=0) as session:
            await session.reset()
            await session.step({"message": "x"})
            assert srv.current.terminate() == 0
        srv.start()
        assert srv.current.health()["sessions"] == 0
    finally:
        srv.stop()
