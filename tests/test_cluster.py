"""A cluster of real servers on loopback: discovery, placement, resume on the owning node, node loss, drain.

Three ``openenv-ws serve --cluster`` processes that list each other (what Swarm's DNS does in
tests/test_swarm.py); the client is given one URL. The real multi-node swarm is tested in
tests/test_swarm.py.
"""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator

import anyio
import httpx
import pytest

from openenv_ws import (
    CapacityError,
    NodeLostError,
    RequestTimeoutError,
    SandboxStartError,
    SessionLostError,
    connect,
    run_episodes,
)
from openenv_ws.client.cluster import Cluster
from openenv_ws.client.session import connect as connect_one
from openenv_ws.client.transport import WebSocket
from openenv_ws.ids import node_of
from openenv_ws.protocol import Error, Open, decode_server, encode
from openenv_ws.server.cluster import peer_addresses

from .cluster_episodes import nodes_seen, slow_policy
from .conftest import ServerProcess, free_port
from .proxy import CuttableProxy

HEARTBEAT = 0.3
MISSES = 3
LOST_WITHIN = (MISSES + 1) * HEARTBEAT
"""The documented bound on noticing a lost node (docs/swarm.md), for the options the tests use."""
FAST = {"heartbeat": HEARTBEAT, "heartbeat_misses": MISSES}


def start_cluster(
    start_server: Callable[..., ServerProcess],
    *extra: str,
    nodes: int = 3,
    per_node: dict[int, tuple[str, ...]] | None = None,
    advertise: dict[int, str] | None = None,
    ports: list[int] | None = None,
) -> list[ServerProcess]:
    """``nodes`` servers n1..nN of one cluster, each listing all (ports chosen first)."""
    ports = list(ports or [])
    while len(ports) < nodes:
        port = free_port()
        if port not in ports:
            ports.append(port)
    peers = ",".join(f"127.0.0.1:{p}" for p in ports)
    servers = []
    for i, port in enumerate(ports, 1):
        url = (advertise or {}).get(i, f"ws://127.0.0.1:{port}")
        args = ("--cluster", peers, "--node", f"n{i}", "--advertise", url, "--cluster-refresh", "0.3")
        more = (per_node or {}).get(i, ())
        servers.append(start_server("echo", "--sandbox", "inprocess", *args, *extra, *more, port=port, wait=False))
    for server in servers:
        server.wait_ready()
    return servers


@pytest.fixture(scope="module")
def trio() -> Iterator[list[ServerProcess]]:
    """One cluster of three for the tests that leave it as they found it."""
    started: list[ServerProcess] = []
    try:
        yield start_cluster(lambda *args, **kw: started.append(ServerProcess(*args, **kw)) or started[-1])
    finally:
        for server in started:
            server.stop()


def restart(start_server: Callable[..., ServerProcess], old: ServerProcess) -> ServerProcess:
    """The same server again, on the same port (after it was killed)."""
    args = old.proc.args[old.proc.args.index("serve") + 1 : old.proc.args.index("--port")]
    return start_server(*args, port=old.port)


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url)


async def sessions_on(server: ServerProcess) -> int:
    return (await get(server.http + "/healthz")).json()["sessions"]


async def opened(server: ServerProcess) -> int:
    metrics = (await get(server.http + "/metrics")).text
    return int(re.search(r"^openenv_ws_sessions_opened_total (\d+)$", metrics, re.M).group(1))


async def test_every_server_answers_the_cluster_view_from_its_peers(trio):
    servers = trio
    for server in servers:
        view = (await get(server.http + "/v1/cluster")).json()
        assert [n["name"] for n in view["nodes"]] == ["n1", "n2", "n3"]
        assert view["unreachable"] == []
        by_name = {n["name"]: n for n in view["nodes"]}
        assert by_name["n2"]["free"] == by_name["n2"]["max_sessions"] == 1024
        assert [n["url"] for n in view["nodes"]] == [s.url for s in servers]
        assert all(n["status"] == "ok" for n in view["nodes"])
    metrics = (await get(servers[0].http + "/metrics")).text
    assert 'openenv_ws_cluster_info{node="n1"' in metrics and "openenv_ws_cluster_nodes 3" in metrics


async def test_servers_with_only_scoped_tokens_see_their_peers(start_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("op-secret-1 operator ops\nwatch-secret-2 observer watcher\n")
    servers = start_cluster(start_server, "--token-file", str(tokens), nodes=2)
    async with httpx.AsyncClient(timeout=10, headers={"authorization": "Bearer watch-secret-2"}) as client:
        for server in servers:
            view = (await client.get(server.http + "/v1/cluster")).json()
            assert [n["name"] for n in view["nodes"]] == ["n1", "n2"] and view["unreachable"] == []


async def test_a_plain_server_has_no_cluster_view_and_connect_uses_it_as_before(start_server):
    plain = start_server("echo", "--sandbox", "inprocess")
    assert (await get(plain.http + "/v1/cluster")).status_code == 404
    async with connect(plain.url, env="echo") as env:
        await env.reset()
        assert node_of(env.session_id or "") is None and env.url.startswith(plain.url)


@pytest.mark.parametrize("multiplex", [0, 2])
async def test_run_episodes_against_one_url_spreads_sessions_over_every_node(trio, multiplex):
    servers = trio
    opened_before = [await opened(server) for server in servers]
    records = await run_episodes(
        servers[0].url, "echo", slow_policy(0.01), episodes=30, concurrency=9, max_steps=3, multiplex=multiplex, **FAST
    )
    assert all(r.ok and r.attempts == 1 for r in records)
    seen = nodes_seen(records)
    assert set(seen) == {"n1", "n2", "n3"} and min(seen.values()) >= 5, seen  # by free capacity: about a third each
    for i, server in enumerate(servers, 1):  # each node served the sessions whose ids name it
        assert await opened(server) - opened_before[i - 1] == seen[f"n{i}"]


async def test_new_sessions_go_where_there_is_free_capacity(trio):
    servers = trio
    async with anyio.create_task_group() as tg:
        held = anyio.Event()
        release = anyio.Event()

        async def hold_ten_on_n2() -> None:
            async with anyio.create_task_group() as inner:
                opened = []

                async def one() -> None:
                    async with connect_one(servers[1].url, env="echo") as env:  # straight to n2
                        opened.append(env)
                        await release.wait()

                for _ in range(10):
                    inner.start_soon(one)
                while len(opened) < 10:
                    await anyio.sleep(0.01)
                held.set()

        tg.start_soon(hold_ten_on_n2)
        await held.wait()
        async with anyio.create_task_group() as placed:
            ids: list[str] = []
            done = anyio.Event()

            async def routed() -> None:
                async with connect(servers[0].url, env="echo", **FAST) as env:
                    ids.append(env.session_id or "")
                    await done.wait()

            for _ in range(8):
                placed.start_soon(routed)
            while len(ids) < 8:
                await anyio.sleep(0.01)
            done.set()
        release.set()
    seen = Counter(node_of(i) for i in ids)
    assert seen["n2"] == 0 and seen["n1"] + seen["n3"] == 8, seen  # n2 had 10 fewer free than the others


async def test_a_session_resumes_on_the_node_that_holds_it(start_server):
    ports = [free_port()]
    proxy = CuttableProxy(ports[0])
    async with anyio.create_task_group() as tg:
        proxy_port = await tg.start(proxy.run)
        # n1 is reached through a proxy the test can cut; n2 and n3 are nearly full, so n1 gets the session.
        servers = start_cluster(
            start_server,
            per_node={1: ("--max-sessions", "50"), 2: ("--max-sessions", "1"), 3: ("--max-sessions", "1")},
            advertise={1: f"ws://127.0.0.1:{proxy_port}"},
            ports=ports,
        )
        async with connect(servers[1].url, env="echo", **FAST) as env:
            await env.reset()
            await env.step({"message": "one"})
            assert node_of(env.session_id or "") == "n1"
            proxy.cut()
            second = await env.step({"message": "two"})  # resumed through the same node's URL
            assert env.reconnects == 1 and second.observation["echoed_message"] == "two"
            assert (await env.state())["step_count"] == 2  # nothing lost, nothing applied twice

            # A resume sent to another node is refused, naming the owner: nothing is shared between nodes.
            ws = await WebSocket.connect(servers[2].url + "/v1/sessions")
            try:
                await ws.send(encode(Open(session_id=env.session_id, resume_token="whatever")))
                reply = decode_server(await ws.receive())
            finally:
                await ws.aclose()
            assert isinstance(reply, Error) and reply.code == "session_not_found"
            assert "held by node n1, not n3" in reply.message
        tg.cancel_scope.cancel()


async def test_losing_a_node_fails_only_its_sessions_which_run_again_elsewhere(start_server):
    servers = start_cluster(start_server)
    killed_at: list[float] = []

    async def kill_n3_mid_episode() -> None:
        with anyio.fail_after(10):
            while not await sessions_on(servers[2]):
                await anyio.sleep(0.05)
        await anyio.sleep(0.3)
        killed_at.append(time.time())
        servers[2].proc.kill()  # SIGKILL: the node is gone, nothing is drained

    async with anyio.create_task_group() as tg:
        tg.start_soon(kill_n3_mid_episode)
        records = await run_episodes(
            servers[0].url, "echo", slow_policy(0.05), episodes=18, concurrency=9, max_steps=30, multiplex=2, **FAST
        )
    assert all(r.ok for r in records), [r.error for r in records if not r.ok]
    failed_first = [r for r in records if len(r.tries) > 1]
    assert failed_first, "no episode was running on the killed node"
    for record in failed_first:
        first, *later = record.tries
        assert node_of(first.session_id or "") == "n3" and "Lost" in (first.error or "")
        assert first.ended_at - killed_at[0] <= LOST_WITHIN + 1.0  # the bound, plus slack for a busy machine
        assert all(node_of(t.session_id or "") in ("n1", "n2") for t in later)
    untouched = [r for r in records if node_of(r.tries[0].session_id or "") in ("n1", "n2")]
    assert untouched and all(len(r.tries) == 1 for r in untouched)

    servers[2] = restart(start_server, servers[2])  # the node comes back: new sessions go there again
    with anyio.fail_after(10):
        while True:
            again = await run_episodes(servers[0].url, "echo", slow_policy(0), episodes=12, concurrency=6, max_steps=2)
            if "n3" in nodes_seen(again):
                break
            await anyio.sleep(0.2)
    assert all(r.ok for r in again)


async def test_a_session_on_a_lost_node_gets_a_typed_error_within_the_bound(start_server):
    servers = start_cluster(start_server, per_node={1: ("--max-sessions", "1"), 2: ("--max-sessions", "1")})
    async with connect(servers[0].url, env="echo", **FAST) as env:
        await env.reset()
        assert node_of(env.session_id or "") == "n3"
        servers[2].proc.send_signal(signal.SIGSTOP)  # hung, not dead: no reset, no refusal, just silence
        try:
            started = time.monotonic()
            with pytest.raises(NodeLostError) as lost:
                await env.step({"message": "into the void"})
            assert time.monotonic() - started <= LOST_WITHIN + 1.0
            assert "n3" in str(lost.value) and isinstance(lost.value, SessionLostError)
        finally:
            servers[2].proc.send_signal(signal.SIGCONT)


async def test_a_draining_node_lets_its_episodes_finish_and_takes_no_new_ones(start_server):
    servers = start_cluster(start_server, "--drain-sessions", "20")
    states: list[str] = []

    async def terminate_n2_mid_episode() -> None:
        with anyio.fail_after(10):
            while not await sessions_on(servers[1]):
                await anyio.sleep(0.05)
        servers[1].proc.send_signal(signal.SIGTERM)
        while servers[1].proc.poll() is None:
            try:
                states.append((await get(servers[1].http + "/healthz")).json()["status"])
            except httpx.HTTPError:
                break
            await anyio.sleep(0.05)

    async with anyio.create_task_group() as tg:
        tg.start_soon(terminate_n2_mid_episode)
        records = await run_episodes(
            servers[0].url, "echo", slow_policy(0.02), episodes=27, concurrency=9, max_steps=20, **FAST
        )
    assert all(r.ok and r.attempts == 1 for r in records), [r.tries for r in records if r.attempts > 1]
    assert "draining" in states  # /healthz said so while its episodes went on
    assert await anyio.to_thread.run_sync(servers[1].proc.wait, 30) == 0


async def test_a_node_shutting_down_hands_back_what_does_not_finish_and_those_run_elsewhere(start_server):
    servers = start_cluster(start_server, "--drain-sessions", "0.3")

    async def terminate_n2_mid_episode() -> None:
        with anyio.fail_after(10):
            while not await sessions_on(servers[1]):
                await anyio.sleep(0.05)
        servers[1].proc.send_signal(signal.SIGTERM)

    async with anyio.create_task_group() as tg:
        tg.start_soon(terminate_n2_mid_episode)
        records = await run_episodes(
            servers[0].url, "echo", slow_policy(0.05), episodes=18, concurrency=9, max_steps=40, **FAST
        )
    assert all(r.ok for r in records), [r.error for r in records if not r.ok]
    handed_back = [r for r in records if len(r.tries) > 1]
    assert handed_back and all(node_of(r.tries[0].session_id or "") == "n2" for r in handed_back)
    assert all("shutting down" in (r.tries[0].error or "") for r in handed_back)
    assert all(node_of(r.session_id or "") != "n2" for r in handed_back)


def test_peers_are_a_dns_name_or_a_list_of_host_and_port():
    assert peer_addresses("tasks.server", 8000) == [("tasks.server", 8000)]
    assert peer_addresses("a:1, b ,10.0.0.3:7", 8000) == [("a", 1), ("b", 8000), ("10.0.0.3", 7)]
    assert peer_addresses("[::1]:9,[fe80::2],::3", 80) == [("::1", 9), ("fe80::2", 80), ("::3", 80)]


async def test_a_node_that_answers_but_takes_no_session_is_not_lost():
    """Only an unreachable node counts toward being lost: one whose engine cannot start a sandbox,
    or that is full, keeps its running sessions and just gets no new one until it has room."""
    cluster = Cluster("ws://127.0.0.1:1", misses=2)
    cluster.update([{"name": f"n{i}", "url": f"ws://127.0.0.1:{i}", "status": "ok", "free": 10} for i in (1, 2)])
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    failed: list[Exception] = []
    cluster.hold(n1, "session", failed.append)
    for exc in (SandboxStartError("engine down"), CapacityError("full"), RequestTimeoutError("slow")):
        assert cluster.pick(avoid=["n2"]) is n1
        cluster.refused(n1, exc)
    assert n1.status == "ok" and n1.free == 0 and not failed
    assert cluster.pick() is n2  # the others take the new sessions meanwhile
    for _ in range(2):
        cluster.refused(n1, OSError("connection refused"))
    assert n1.status == "lost" and isinstance(failed[0], NodeLostError)
