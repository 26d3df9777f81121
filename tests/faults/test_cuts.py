"""Connections cut during open and during steps. Opening is exactly-once: an open whose connection drops
is sent again with the same key and lands on the same session and sandbox; steps cut mid-flight are
applied exactly once. Real servers on loopback, cut by a proxy the test controls. (More cuts during
steps: ``tests/test_resume.py``, ``tests/test_mux.py``.)"""

from __future__ import annotations

import anyio
import httpx

from openenv_ws import connect, multiplex, run_episodes

from ..proxy import CuttableProxy
from .probes import neighbour, peak_rss


def _metric(http: str, name: str) -> float:
    for line in httpx.get(http + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


async def _cut_soon(proxy: CuttableProxy, delay: float) -> None:
    await anyio.sleep(delay)
    proxy.cut()


async def test_an_open_cut_while_its_sandbox_starts_lands_on_one_session(start_server):
    # Spawned workers (no fork-server): a start then takes an interpreter's start, ~0.2-0.4 s, so the
    # cut lands while the sandbox starts; a forked one can be ready before the cut.
    srv = start_server("tests.helper_envs:FlakyEnv", "--sandbox", "subprocess", "-B", "forkserver=0")
    proxy = CuttableProxy(srv.port)
    async with anyio.create_task_group() as tg:
        port = await tg.start(proxy.run)
        for _ in range(3):
            async with anyio.create_task_group() as cutter:
                cutter.start_soon(_cut_soon, proxy, 0.05)  # a subprocess sandbox takes ~0.2-0.4 s to start
                async with connect(f"ws://127.0.0.1:{port}") as env:
                    pid = (await env.reset()).observation["pid"]
                    assert (await env.step({"op": "pid"})).observation["pid"] == pid
        tg.cancel_scope.cancel()
    assert proxy.cuts >= 1
    assert _metric(srv.http, "openenv_ws_sandbox_starts_total") == 3  # one sandbox per open, cuts or not
    assert srv.health()["sessions"] == 0


async def test_an_open_cut_on_a_multiplexed_connection_lands_on_one_session(start_server):
    srv = start_server("tests.helper_envs:FlakyEnv", "--sandbox", "subprocess")
    proxy = CuttableProxy(srv.port)
    async with anyio.create_task_group() as tg:
        port = await tg.start(proxy.run)
        async with multiplex(f"ws://127.0.0.1:{port}", connections=1) as mux, anyio.create_task_group() as cutter:
            cutter.start_soon(_cut_soon, proxy, 0.05)
            async with mux.connect() as env:
                await env.reset()
                assert (await env.step({"op": "ok"})).reward == 1.0
        tg.cancel_scope.cancel()
    assert _metric(srv.http, "openenv_ws_sandbox_starts_total") == 1


async def test_fifty_episodes_with_connections_cut_every_second_all_complete_exactly(start_server):
    srv = start_server("echo", "--sandbox", "subprocess", "--max-starting", "8")
    proxy = CuttableProxy(srv.port)
    async with (
        peak_rss(srv.proc.pid) as rss,
        neighbour(srv.url, env="echo", interval=0.1) as other,  # connected directly: never cut
        anyio.create_task_group() as tg,
    ):
        port = await tg.start(proxy.run)

        async def keep_cutting() -> None:
            for _ in range(120):  # bounded: at most two minutes of cuts
                await anyio.sleep(1.0)
                proxy.cut()

        tg.start_soon(keep_cutting)
        with anyio.fail_after(240):
            records = await run_episodes(
                f"ws://127.0.0.1:{port}",
                "echo",
                lambda obs: {"message": "hi", "delay_s": 0.05},
                episodes=50,
                concurrency=25,
                max_steps=20,
                retries=0,  # no second chance: every episode must survive the cuts on its own
                progress=False,
                # Cuts come every second; on a loaded machine a handshake can take about as long, so
                # a reconnect may be cut several times in a row: a budget that outlasts that.
                reconnect_attempts=40,
                max_backoff=0.5,
            )
        await other.steps_on()
        tg.cancel_scope.cancel()
    assert proxy.cuts >= 5
    assert rss.growth_mib < 60  # 50 sessions, their workers in processes of their own
    assert [r.error for r in records if r.error] == [], srv.output()[-20000:]  # an internal error: its traceback
    assert all(r.length == 20 and r.attempts == 1 for r in records)
    assert _metric(srv.http, "openenv_ws_sandbox_starts_total") == 50 + 1  # the neighbour's, and no second for any open
    assert _metric(srv.http, "openenv_ws_steps_total") == 50 * 20 + other.steps  # exactly once, cuts or not
