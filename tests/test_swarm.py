"""deploy/stack.yml on a real 3-node Docker Swarm: every node serves; cutting one off costs its episodes only.

A rolling update costs none.

The swarm is built on this machine by the shared lab script (``scripts/swarm-lab.sh``
beside the repository, or ``$OPENENV_WS_SWARM_LAB``): three dockerds, each in its own network and
mount namespace (10.77.0.1-3), one of them the manager, with Swarm's heartbeat at 1 s. The
server and sandbox images are built here once and loaded on every node (no registry). The
client runs on the host (10.77.0.254) and is given one URL. Traffic goes only to the lab's
addresses; ``down`` always runs at the end and must leave no namespace and no dockerd.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
import yaml

from openenv_ws import run_episodes
from openenv_ws.client.cluster import HEARTBEAT, MISSES
from openenv_ws.ids import node_of

from .cluster_episodes import nodes_seen, slow_policy
from .conftest import ROOT
from .swarm_lab import (
    NODES,
    STACK,
    build_images,
    deploy,
    down,
    get,
    health,
    lab,
    node_url,
    on_node,
    server_container,
    up,
    wait,
    wait_serving,
)

LOST_WITHIN = (MISSES + 1) * HEARTBEAT  # the client's documented bound (docs/swarm.md), default options

pytestmark = pytest.mark.timeout(900)


# ---------------------------------------------------------------- the stack file itself (no lab)


def _server_service(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())["services"]["server"]


def _defaults(text: str) -> str:
    """``text`` with every ``${VAR:-default}`` replaced by its default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)


def test_the_stack_is_the_compose_server_service_plus_what_a_swarm_needs():
    compose, stack = _server_service("docker-compose.yml"), _server_service("deploy/stack.yml")
    assert _defaults(stack["image"]) == compose["image"]  # the same image by default
    compose_cmd, stack_cmd = _defaults(compose["command"]).split(), _defaults(stack["command"]).split()
    assert stack_cmd[: compose_cmd.index("-B")] == compose_cmd[: compose_cmd.index("-B")]  # serve ... --pool N
    for key in ("init", "healthcheck"):
        assert stack[key] == compose[key]
    sockets = [v for v in stack["volumes"] if v["target"] == "/var/run/docker.sock"]
    assert sockets == [{"type": "bind", "source": "/var/run/docker.sock", "target": "/var/run/docker.sock"}]
    assert "/var/run/docker.sock:/var/run/docker.sock" in compose["volumes"]
    # and what a swarm needs on top
    assert stack["deploy"]["mode"] == "global" and stack["deploy"]["endpoint_mode"] == "dnsrr"
    assert [p["mode"] for p in stack["ports"]] == ["host"]
    assert "--cluster tasks.server" in stack["command"] and "--drain-sessions" in stack["command"]
    assert stack["environment"]["OPENENV_WS_NODE"] == "{{.Node.Hostname}}"
    grace = int(re.search(r"(\d+)s", stack["stop_grace_period"]).group(1))
    drain = [
        int(re.search(rf"--{k} \$\{{\w+:-(\d+)}}", stack["command"]).group(1))
        for k in ("drain-sessions", "drain-timeout")
    ]
    assert grace > sum(drain)  # Swarm does not kill a server while it drains


# ---------------------------------------------------------------- the lab


@dataclass
class Swarm:
    instances: dict[int, str]
    """Each node's server instance at deploy time."""

    def refresh(self) -> dict[int, str | None]:
        return {n: (health(n) or {}).get("backend", {}).get("instance") for n in NODES}


@pytest.fixture(scope="module")
def swarm() -> Iterator[Swarm]:
    build_images()
    try:
        up()
        yield Swarm(deploy())
    finally:
        assert down() == [], "the lab left something behind"


async def _once_node_3_holds_sessions() -> None:
    """Wait (bounded) until node 3 holds sessions, then half a second more: mid-episode."""
    with anyio.fail_after(60):
        while not (await anyio.to_thread.run_sync(health, 3) or {}).get("sessions"):
            await anyio.sleep(0.1)
    await anyio.sleep(0.5)


async def _episodes_in_rounds(disturb: Callable[[], Awaitable[None]], done: Callable[[], bool], **options) -> list:
    """Rounds of ``run_episodes`` from node 1 (echo, 0.1 s a step) while ``disturb()`` runs, until ``done()``."""
    records: list = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(disturb)
        with anyio.fail_after(400):
            while not done():
                records += await run_episodes(node_url(1), "echo", slow_policy(0.1), **options)
    return records


async def _episodes_with_node_3_faulted(fault: Callable[[], Any]) -> tuple[list, float]:
    """18 episodes from node 1 with ``fault()`` done to node 3 mid-episode: every episode ends well,
    only node 3's fail (within the client's bound) and run again. Returns those, and when the fault was."""
    fault_at: list[float] = []

    async def fault_node_3_mid_episode() -> None:
        await _once_node_3_holds_sessions()
        fault_at.append(time.time())
        await anyio.to_thread.run_sync(fault)

    async with anyio.create_task_group() as tg:
        tg.start_soon(fault_node_3_mid_episode)
        records = await run_episodes(
            node_url(1), "echo", slow_policy(0.1), episodes=18, concurrency=9, max_steps=40, multiplex=1
        )
    assert all(r.ok for r in records), [r.error for r in records if not r.ok]
    retried = [r for r in records if len(r.tries) > 1]
    assert retried, "no episode was running on node 3"
    for record in retried:
        first = record.tries[0]
        assert node_of(first.session_id or "") == "oe-n3" and first.error, first
        assert first.ended_at - fault_at[0] <= LOST_WITHIN + 2.0  # the bound, plus slack for 3 nodes on 2 cores
    untouched = [r for r in records if node_of(r.tries[0].session_id or "") != "oe-n3"]
    assert untouched and all(len(r.tries) == 1 for r in untouched)
    return retried, fault_at[0]


def test_every_node_serves_its_share_from_its_own_engine(swarm):
    view = get(2, "/v1/cluster").json()
    assert {e["name"]: e["url"] for e in view["nodes"]} == {f"oe-n{n}": node_url(n) for n in NODES}

    records = anyio.run(
        lambda: run_episodes(
            node_url(1), "echo", slow_policy(0.05), episodes=9, concurrency=9, max_steps=5, multiplex=1
        )
    )
    assert all(r.ok and r.attempts == 1 for r in records), [r.error for r in records]
    seen = nodes_seen(records)
    assert set(seen) == {"oe-n1", "oe-n2", "oe-n3"}, seen
    for n in NODES:
        metrics = get(n, "/metrics").text
        opened = int(re.search(r"^openenv_ws_sessions_opened_total (\d+)$", metrics, re.M).group(1))
        assert opened == seen[f"oe-n{n}"]  # the sessions whose ids name the node ran there
        # Its sandboxes run on its own engine: its warm container is there, and on no other node's.
        instance = swarm.instances[n]
        label = f"label=openenv-ws.server={instance}"
        for m in NODES:
            found = on_node(m, "ps", "-q", "--filter", label).stdout.split()
            assert bool(found) == (m == n), f"containers of {instance} (node {n}) on node {m}: {found}"


def test_a_cut_node_costs_only_its_own_episodes_and_serves_again_once_healed(swarm):
    retried, cut_at = anyio.run(_episodes_with_node_3_faulted, lambda: lab("cut", "3"))
    lost_sessions = []
    for record in retried:
        first, *later = record.tries
        assert "NodeLostError" in (first.error or ""), first
        assert all(node_of(t.session_id or "") in ("oe-n1", "oe-n2") for t in later)
        lost_sessions.append(first.session_id)
    detected = max(r.tries[0].ended_at for r in retried) - cut_at

    lab("heal", "3")
    healed = time.monotonic()
    wait(lambda: (health(3) or {}).get("status") == "ok", 120, "node 3 answering again")
    # What the cut sessions held on node 3 is gone: their sessions and their sandbox containers.
    for session_id in lost_sessions:
        label = f"label=openenv-ws.session={session_id}"
        wait(lambda label=label: not on_node(3, "ps", "-aq", "--filter", label).stdout.strip(), 120, "cleanup")

    def still_held() -> set[str] | None:
        try:
            return {s["id"] for s in get(3, "/v1/sessions").json()["sessions"]} & set(lost_sessions)
        except (httpx.HTTPError, ValueError, KeyError):
            return None  # its server is being replaced: Swarm starts a new task on a node that was down

    wait(lambda: still_held() == set(), 120, "node 3 holding none of the cut sessions")

    async def until_node_3_serves() -> list:
        with anyio.fail_after(120):
            while True:
                again = await run_episodes(node_url(1), "echo", slow_policy(0), episodes=6, concurrency=6, max_steps=2)
                assert all(r.ok for r in again), [r.tries for r in again if not r.ok]
                if "oe-n3" in nodes_seen(again):
                    return again
                await anyio.sleep(0.5)

    anyio.run(until_node_3_serves)
    back = time.monotonic() - healed
    print(
        f"\nswarm lab: cut -> NodeLostError in {detected:.1f} s (bound {LOST_WITHIN:.0f} s); "
        f"heal -> cut sessions cleaned up and a new episode served there {back:.1f} s later"
    )


def test_a_rolling_update_fails_no_episode(swarm):
    # Every node serves and lists the others first: the update is what this test disturbs.
    before = wait_serving(NODES, timeout=120)
    restarted = {n for n in NODES if before[n] != swarm.instances[n]}
    if restarted:
        print(f"\nswarm lab: servers restarted since the deploy, before the update: nodes {sorted(restarted)}")
    updated: dict[str, float] = {}

    async def update_every_server() -> None:
        await anyio.sleep(1.0)
        started = time.monotonic()
        cmd = ["docker", "-H", "unix:///run/oe-n1/docker.sock", "service", "update", "--force", "--detach=false"]
        result = await anyio.run_process([*cmd, "-q", f"{STACK}_server"], check=False)
        assert result.returncode == 0, result.stderr.decode()
        updated["seconds"] = time.monotonic() - started

    records = anyio.run(
        lambda: _episodes_in_rounds(
            update_every_server, lambda: "seconds" in updated, episodes=12, concurrency=6, max_steps=15, multiplex=1
        )
    )
    assert records and all(r.ok for r in records), [r.tries for r in records if not r.ok]
    # The update has converged; the last server replaced may still be starting (loaded machine).
    after = wait_serving(NODES, timeout=120)
    assert all(after[n] != before[n] for n in NODES), (before, after)  # every server was replaced
    handed_back = sum(len(r.tries) > 1 for r in records)
    print(
        f"\nswarm lab: rolling update of 3 nodes in {updated['seconds']:.0f} s; {len(records)} episodes, "
        f"{handed_back} run again after a hand-back"
    )


def test_a_killed_server_costs_only_its_own_episodes_and_its_replacement_removes_what_it_left(swarm):
    before = wait_serving(NODES, timeout=120)
    retried, killed_at = anyio.run(_episodes_with_node_3_faulted, lambda: on_node(3, "kill", server_container(3)))

    # Swarm starts another server on node 3; it removes the killed one's sandbox containers.
    after = wait_serving(NODES, timeout=120)
    assert after[3] != before[3] and after[1] == before[1] and after[2] == before[2], (before, after)
    label = f"label=openenv-ws.server={before[3]}"
    wait(lambda: not on_node(3, "ps", "-aq", "--filter", label).stdout.strip(), 120, "its sandboxes gone")
    detected = max(r.tries[0].ended_at for r in retried) - killed_at
    print(f"\nswarm lab: node 3's server killed -> its {len(retried)} episodes failed in {detected:.1f} s, ran again")


def _node_3_offers_nothing() -> bool:
    """Node 3's server says its engine is unreachable, and the cluster view gives it no free capacity."""
    try:
        entry = next(e for e in get(1, "/v1/cluster").json()["nodes"] if e["name"] == "oe-n3")
    except (httpx.HTTPError, ValueError, KeyError, StopIteration):
        return False
    return entry["free"] == 0 and (health(3) or {}).get("backend", {}).get("engine_reachable") == 0


def test_a_killed_engine_costs_only_its_nodes_episodes_and_the_node_serves_again_once_it_restarts(swarm):
    before = wait_serving(NODES, timeout=120)
    restarted: dict[str, float] = {}

    async def kill_node_3s_engine_then_start_it() -> None:
        await _once_node_3_holds_sessions()
        await anyio.to_thread.run_sync(lambda: lab("kill", "3"))
        killed = time.monotonic()
        # Its server sees its engine gone and offers no capacity, so clients start nothing there.
        await anyio.to_thread.run_sync(lambda: wait(_node_3_offers_nothing, 7, "node 3 offering no capacity"))
        await anyio.sleep(max(0.0, 8 - (time.monotonic() - killed)))
        await anyio.to_thread.run_sync(lambda: lab("start", "3"))
        restarted["at"] = time.monotonic()
        await anyio.to_thread.run_sync(lambda: wait_serving(NODES, timeout=180))
        restarted["serving"] = time.monotonic()

    records = anyio.run(
        lambda: _episodes_in_rounds(
            kill_node_3s_engine_then_start_it,
            lambda: "serving" in restarted,
            episodes=9,
            concurrency=9,
            max_steps=30,
            retries=5,
        )
    )
    assert records and all(r.ok for r in records), [r.tries for r in records if not r.ok]
    # Only node 3's sessions may fail (a sandbox that cannot be inspected, the server stopped by the
    # engine's restart), each with an error the client runs again; its sessions may also just go on
    # (the server and the sandboxes keep running under their shims while the engine is down).
    failed = [t for r in records for t in r.tries if t.error]
    assert all(node_of(t.session_id or "") in ("oe-n3", None) for t in failed), failed
    assert all(len(r.tries) == 1 for r in records if node_of(r.tries[0].session_id or "") in ("oe-n1", "oe-n2"))
    after = wait_serving(NODES, timeout=120)
    assert after[1] == before[1] and after[2] == before[2], (before, after)  # the other servers went on
    assert after[3] != before[3]  # the engine's restart stopped node 3's server; Swarm started another
    label = f"label=openenv-ws.server={before[3]}"
    wait(lambda: not on_node(3, "ps", "-aq", "--filter", label).stdout.strip(), 120, "its sandboxes gone")
    print(
        f"\nswarm lab: node 3's engine killed for 8 s -> {len(records)} episodes, {len(failed)} tries failed; "
        f"node 3 served again {restarted['serving'] - restarted['at']:.1f} s after its engine started"
    )
