"""The stack on the 3-node swarm lab: 1, 2 and 3 nodes, then failovers. Prints markdown rows.

    python scripts/bench_swarm.py                      # builds the images, lab up, deploy, measure, lab down
    python scripts/bench_swarm.py --sessions 90 --steps 100 --nodes 1,2,3 --failover

For each node count (the other nodes drained with ``docker node update --availability drain``):
``--sessions`` sessions are opened at once through one URL (multiplexed, one connection per
node) and each answers a first reset (the burst: its latency, open to first reset answered);
all are held; then each does ``--steps`` steps at once (steps/s, step latency); the CPU the
node's containers used meanwhile (cgroup ``cpuacct.usage``: the server's container, and all of
the node's containers with the sandboxes) is divided by the steps the node served. The three
nodes share this machine's cores, so more nodes do not add CPU: read the per-node figures.

``--failover`` then measures, with all three nodes: a node cut off (client's NodeLostError,
its neighbours' sessions going on, back in rotation after heal), its server container killed,
and its engine killed and restarted. The lab is ``scripts/swarm-lab.sh`` (or
``$OPENENV_WS_SWARM_LAB``); traffic goes only to its addresses (10.77.0.x).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openenv_ws.client.routing import multiplex  # noqa: E402
from openenv_ws.errors import OpenEnvWSError  # noqa: E402
from openenv_ws.ids import node_of  # noqa: E402
from tests.swarm_lab import (  # noqa: E402
    NODES,
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

CPUACCT = Path("/sys/fs/cgroup/cpuacct")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def cpu_seconds(n: int) -> tuple[float, float]:
    """(the server container's, all of node n's containers') CPU seconds so far."""
    node = CPUACCT / f"oe-n{n}"
    total = int((node / "cpuacct.usage").read_text()) / 1e9
    server = int((node / server_container(n) / "cpuacct.usage").read_text()) / 1e9
    return server, total


def steps_served(n: int) -> int:
    metrics = get(n, "/metrics").text
    return int(re.search(r"^openenv_ws_steps_total (\d+)$", metrics, re.M).group(1))


def use_nodes(count: int) -> None:
    """Exactly nodes 1..count active; the others drained (their servers stop)."""
    for n in NODES:
        availability = "active" if n <= count else "drain"
        on_node(1, "node", "update", "--availability", availability, f"oe-n{n}")
    wait_serving(tuple(range(1, count + 1)))
    for n in NODES[count:]:
        wait(lambda n=n: health(n) is None, 60, f"node {n} drained")


def client_cpu() -> float:
    """This process's CPU seconds (the client: placement, checks, every session's frames)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(nodes: int) -> tuple[dict[int, int], dict[int, tuple[float, float]], dict[int, int]]:
    """Per node: sessions held, CPU seconds (server, all containers), steps served."""
    serving = range(1, nodes + 1)
    held = {n: (health(n) or {}).get("sessions", 0) for n in serving}
    return held, {n: cpu_seconds(n) for n in serving}, {n: steps_served(n) for n in serving}


async def burst_hold_step(sessions: int, steps: int, nodes: int) -> dict[str, Any]:
    first_reset: list[float] = []
    latencies: list[float] = []
    held_on: dict[str, int] = {}
    opened = anyio.Event()
    go = anyio.Event()
    finished: list[float] = []
    failures: list[str] = []
    count = {"held": 0}

    async def one(mux: Any) -> None:
        started = time.perf_counter()
        try:
            async with mux.connect("echo", connect_timeout=120, request_timeout=120) as env:
                await env.reset()
                first_reset.append(time.perf_counter() - started)
                name = node_of(env.session_id or "") or "?"
                held_on[name] = held_on.get(name, 0) + 1
                count["held"] += 1
                if count["held"] + len(failures) == sessions:
                    opened.set()
                await go.wait()
                for _ in range(steps):
                    t = time.perf_counter()
                    await env.step({"message": "x"})
                    latencies.append(time.perf_counter() - t)
                finished.append(time.perf_counter())
        except OpenEnvWSError as exc:
            failures.append(f"{type(exc).__name__}: {exc}"[:160])
            if count["held"] + len(failures) == sessions:
                opened.set()

    async with multiplex(node_url(1), connections=1) as mux, anyio.create_task_group() as tg:
        burst_started = time.perf_counter()
        for _ in range(sessions):
            tg.start_soon(one, mux)
        with anyio.fail_after(600):
            await opened.wait()
        burst_seconds = time.perf_counter() - burst_started
        held, cpu_before, steps_before = await anyio.to_thread.run_sync(measure, nodes)
        client_before = client_cpu()
        step_started = time.perf_counter()
        go.set()
    step_seconds = max(finished) - step_started if finished else float("nan")
    client_seconds = client_cpu() - client_before
    _, cpu_after, steps_after = await anyio.to_thread.run_sync(measure, nodes)
    per_node = {}
    for n in range(1, nodes + 1):
        served = steps_after[n] - steps_before[n]
        server = cpu_after[n][0] - cpu_before[n][0]
        total = cpu_after[n][1] - cpu_before[n][1]
        per_node[n] = {
            "steps": served,
            "server_us": 1e6 * server / max(served, 1),
            "node_us": 1e6 * total / max(served, 1),
        }
    return {
        "nodes": nodes,
        "sessions": sessions,
        "failures": failures,
        "held": held,
        "burst_s": burst_seconds,
        "first_reset": first_reset,
        "steps": len(latencies),
        "steps_per_s": len(latencies) / step_seconds,
        "latencies": latencies,
        "per_node": per_node,
        "client_us": 1e6 * client_seconds / max(len(latencies), 1),
    }


def row(result: dict[str, Any]) -> str:
    reset = result["first_reset"]
    lat = result["latencies"]
    held = " / ".join(str(result["held"][n]) for n in sorted(result["held"]))
    server = " / ".join(f"{p['server_us']:.0f}" for p in result["per_node"].values())
    node = " / ".join(f"{p['node_us']:.0f}" for p in result["per_node"].values())
    return (
        f"| {result['nodes']} | {sum(result['held'].values())} ({held}) | {result['burst_s']:.1f} s "
        f"| {1000 * statistics.median(reset):.0f} / {1000 * percentile(reset, 0.9):.0f} / {1000 * max(reset):.0f} ms "
        f"| {result['steps_per_s']:,.0f} | {1000 * statistics.median(lat):.1f} / {1000 * percentile(lat, 0.99):.1f} ms "
        f"| {result['client_us']:.0f} | {server} | {node} | {len(result['failures'])} |"
    )


# ---------------------------------------------------------------- failovers


async def failover(kind: str) -> dict[str, Any]:
    """Sessions stepping on all 3 nodes; the fault on node 3 (cut, kill its server, kill its engine); the repair.

    Times are seconds from the fault (from the repair for what follows it).
    """
    stepped: dict[str, list[float]] = {}
    failed: list[tuple[float, str]] = []
    stop = anyio.Event()

    async def stepper(mux: Any) -> None:
        try:
            async with mux.connect("echo") as env:
                await env.reset()
                name = node_of(env.session_id or "") or "?"
                while not stop.is_set():
                    await env.step({"message": "x"})
                    stepped.setdefault(name, []).append(time.monotonic())
                    await anyio.sleep(0.05)
        except OpenEnvWSError as exc:
            failed.append((time.monotonic(), type(exc).__name__))

    async with multiplex(node_url(1), connections=1) as mux, anyio.create_task_group() as tg:
        for _ in range(9):
            tg.start_soon(stepper, mux)
        with anyio.fail_after(120):
            while not all(stepped.get(f"oe-n{n}") for n in NODES):
                await anyio.sleep(0.1)
        before = await anyio.to_thread.run_sync(lambda: (health(3) or {})["backend"]["instance"])

        def replaced() -> bool:
            now = health(3) or {}
            return now.get("status") == "ok" and now["backend"]["instance"] != before

        replaced_at: list[float] = []

        async def watch_for_a_new_server() -> None:
            await anyio.to_thread.run_sync(lambda: wait(replaced, 300, "a new server on node 3", interval=0.5))
            replaced_at.append(time.monotonic())

        fault = time.monotonic()
        tg.start_soon(watch_for_a_new_server)
        if kind == "cut":
            await anyio.to_thread.run_sync(lambda: lab("cut", "3"))
        elif kind == "server":
            await anyio.to_thread.run_sync(lambda: on_node(3, "kill", server_container(3)))
        else:
            await anyio.to_thread.run_sync(lambda: lab("kill", "3"))
        await anyio.sleep(8)
        window = {n: sum(1 for t in stepped.get(f"oe-n{n}", []) if t > fault) for n in NODES}
        repair = time.monotonic()
        if kind == "cut":
            await anyio.to_thread.run_sync(lambda: lab("heal", "3"))
        elif kind == "engine":
            await anyio.to_thread.run_sync(lambda: lab("start", "3"))

        with anyio.fail_after(300):
            while not replaced_at:
                await anyio.sleep(0.1)
        stop.set()
    return {
        "n3 sessions failed (s after the fault)": sorted({round(t - fault, 1) for t, _ in failed}),
        "errors": sorted({name for _, name in failed}),
        "steps in the 8 s after the fault, n1/n2/n3": "/".join(str(window[n]) for n in NODES),
        "a new server on node 3 answers (s after the fault)": round(replaced_at[0] - fault, 1),
        "... after the repair (heal, engine start)": round(max(0.0, replaced_at[0] - repair), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=60, help="sessions opened at once and held (default 60)")
    parser.add_argument("--steps", type=int, default=50, help="steps of each held session (default 50)")
    parser.add_argument("--nodes", default="1,2,3", help="node counts to measure (default 1,2,3)")
    parser.add_argument("--pool", default="2", help="warm sandboxes per node (default 2)")
    parser.add_argument("--failover", action="store_true", help="also measure failovers (3 nodes)")
    parser.add_argument("--no-build", action="store_true", help="use the images already built")
    parser.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    args = parser.parse_args(argv)
    if not args.no_build:
        build_images()
    print(f"load average before: {os.getloadavg()}", flush=True)
    left: list[str] = []
    try:
        up()
        deploy(OPENENV_WS_POOL=args.pool)
        print(
            "| nodes | sessions held (per node) | burst: all open + reset | first reset p50 / p90 / max "
            "| steps/s | step p50 / p99 | client CPU/step (us) | server CPU/step (us, per node) "
            "| node CPU/step (us, per node) | failed |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for count in (int(c) for c in args.nodes.split(",")):
            use_nodes(count)
            result = anyio.run(burst_hold_step, args.sessions, args.steps, count)
            print(row(result), flush=True)
            for error in sorted(set(result["failures"])):
                print(f"  failed: {error}", file=sys.stderr)
        if args.failover:
            use_nodes(3)
            for kind in ("cut", "server", "engine"):
                result = anyio.run(failover, kind)
                print(f"failover {kind}: {result}", flush=True)
                wait_serving(NODES)
        print(f"load average after: {os.getloadavg()}")
    finally:
        if not args.keep:
            left = down()
    if left:
        print(f"the lab left: {left}", file=sys.stderr)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
