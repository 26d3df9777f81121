"""Docker backend figures: warm acquire, cold start, bursts and waves of sessions, idle pooled containers,
memory per container, sessions held, the step latency of the coding and shell environments; and the
stages of every sandbox start (from the server's /metrics).

Starts its own ``openenv-ws serve ENV --sandbox docker`` on a free loopback port for each
phase, and after each phase stops it and removes whatever container of it is left, by its
instance label. Every loop is bounded by a count and by ``--deadline`` seconds.

    python scripts/bench_docker.py --image openenv-ws-test/sandbox:dev        # all phases but steps
    python scripts/bench_docker.py --phases warm,cold --samples 50
    python scripts/bench_docker.py --image openenv-ws/coding:0.1.0 --phases steps --runtime runsc

Phases:
  warm   sequential sessions on a server with ``--pool``: open (acquire + handshake) and first reset
  cold   the same with no pool: each open starts a container
  burst  N sessions at once, time until every one answered its first reset (pool 0, then pool P)
  waves  W waves of B sessions at once, a pause between (per wave: all answered, pool hit rate, host memory)
  idle   P pooled containers left idle (paused): memory each (cgroup, host) and CPU over 10 s
  hold   hold up to H idle sessions; host memory and container memory per session; a step on each
  steps  the coding and shell envs (the image must hold the env library, e.g. ``openenv-ws build coding``):
         cold open + first reset of a session with a task, then steps: plain ones, and graded ones
         (a coding cell followed by the task's hidden tests; a shell command followed by the task's checker),
         then resets (a new episode in the same sandbox)

``--runtime NAME`` runs every container under that OCI runtime (``-B runtime=NAME``: runc, runsc...).

After each phase but hold, the stages of the sandbox starts it caused (count, mean, p50/p90 bucket).
``--legacy`` benchmarks a server that predates the demand-sized pool (no ``pool_demand`` option).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import anyio
import docker
from serve_process import ServeProcess

from openenv_ws import connect
from openenv_ws.sandbox.base import START_STAGES
from openenv_ws.tools.waves import burst, stages_markdown, start_stages, waves


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def ms(seconds: float) -> float:
    return round(seconds * 1e3, 1)


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def container_memory_mib(container_id: str) -> float | None:
    """The container's cgroup memory usage (v1 or v2), or None if it cannot be read here."""
    for path in (
        f"/sys/fs/cgroup/memory/docker/{container_id}/memory.usage_in_bytes",
        f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.current",
    ):
        try:
            return int(Path(path).read_text()) / 2**20
        except OSError:
            continue
    return None


class Server(ServeProcess):
    """``openenv-ws serve ENV --sandbox docker`` on a free port, stopped and cleaned by its labels."""

    tree: Path | None = None
    """Run the server from this source tree instead (``--server-tree``: before/after comparisons)."""

    def __init__(self, image: str, *args: str, env: str = "echo") -> None:
        super().__init__(env, "--sandbox", "docker", "--image", image, "--max-sessions", "1000", *args, tree=self.tree)

    def pool(self) -> dict:
        return self.health()["backend"]["pools"].get("echo", {})

    def stages(self) -> dict:
        return start_stages(f"http://127.0.0.1:{self.port}")


@contextmanager
def serving(image: str, *args: str, env: str = "echo"):
    server = Server(image, *args, env=env)
    try:
        yield server
    finally:
        server.stop()


async def wait_pool(server: Server, ready: int, deadline: float) -> None:
    with anyio.fail_after(deadline):
        while (await anyio.to_thread.run_sync(server.pool)).get("ready", 0) < ready:
            await anyio.sleep(0.05)


async def sequential_opens(server: Server, samples: int, pool: int, deadline: float) -> dict:
    """Open, reset, close one session at a time; with a pool, each open finds a warm container."""
    opens, resets = [], []
    for _ in range(samples):
        if pool:
            await wait_pool(server, pool, deadline)
        else:
            await anyio.sleep(0.2)  # let the previous container's removal finish
        started = time.perf_counter()
        async with connect(server.url, env="echo", connect_timeout=deadline) as env:
            opened = time.perf_counter()
            await env.reset()
            resets.append(time.perf_counter() - started)
            opens.append(opened - started)
    return {
        "samples": samples,
        "open_p50_ms": ms(quantile(opens, 0.5)),
        "open_p99_ms": ms(quantile(opens, 0.99)),
        "first_reset_p50_ms": ms(quantile(resets, 0.5)),
        "first_reset_p99_ms": ms(quantile(resets, 0.99)),
        "pool": server.pool(),
    }


# A session of each env with a task, and its actions: a plain one, and one whose step the task grades.
STEP_ENVS = {
    "coding": ({"task": "two_sum"}, {"code": "x = 1"}, {"code": "def two_sum(nums, target):\n    return [0, 1]"}),
    "shell": ({"task": "csv_total"}, {"command": "true"}, {"command": "echo 0 > answer.txt"}),
}


async def steps(server: Server, env_name: str, sessions: int, per_session: int, deadline: float) -> dict:
    """Cold open + first reset of ``sessions`` sessions one at a time, then ``per_session`` steps of each kind."""
    options, plain, graded = STEP_ENVS[env_name]
    opens, resets, plain_s, graded_s = [], [], [], []
    for _ in range(sessions):
        await anyio.sleep(0.2)  # let the previous container's removal finish
        started = time.perf_counter()
        async with connect(server.url, env=env_name, options=options, connect_timeout=deadline) as env:
            await env.reset(seed=1)
            opens.append(time.perf_counter() - started)
            for action, into in ((plain, plain_s), (graded, graded_s)):
                for _ in range(per_session):
                    t = time.perf_counter()
                    await env.step(action)
                    into.append(time.perf_counter() - t)
            for seed in range(max(1, per_session // 5)):  # a new episode in the same sandbox
                t = time.perf_counter()
                await env.reset(seed=seed)
                resets.append(time.perf_counter() - t)
    return {
        "sessions": sessions,
        "steps_per_kind": len(plain_s),
        "open_reset_p50_ms": ms(quantile(opens, 0.5)),
        "open_reset_p99_ms": ms(quantile(opens, 0.99)),
        "reset_p50_ms": ms(quantile(resets, 0.5)),
        "reset_p99_ms": ms(quantile(resets, 0.99)),
        "step_p50_ms": ms(quantile(plain_s, 0.5)),
        "step_p99_ms": ms(quantile(plain_s, 0.99)),
        "graded_step_p50_ms": ms(quantile(graded_s, 0.5)),
        "graded_step_p99_ms": ms(quantile(graded_s, 0.99)),
    }


async def hold(server: Server, client: docker.DockerClient, steps: list[int], deadline: float) -> list[dict]:
    """Hold idle sessions, growing to each count in ``steps``; memory and one step on each at every count."""
    base = mem_available_mib()
    envs: list = []
    release = anyio.Event()
    results = []

    async def keep_one(opened: anyio.Event) -> None:
        try:
            async with connect(server.url, env="echo", connect_timeout=deadline, request_timeout=deadline) as env:
                await env.reset()
                envs.append(env)
                opened.set()
                await release.wait()
        finally:
            opened.set()

    async with anyio.create_task_group() as tg:
        for target in steps:
            started = time.perf_counter()
            with anyio.move_on_after(deadline):
                while len(envs) < target:
                    batch = [anyio.Event() for _ in range(min(8, target - len(envs)))]
                    for event in batch:
                        tg.start_soon(keep_one, event)
                    for event in batch:
                        await event.wait()
            ramp = time.perf_counter() - started
            await anyio.sleep(2)  # settle: started containers go idle
            latencies = []
            for env in list(envs):
                t = time.perf_counter()
                await env.step({"message": "still there?"})
                latencies.append(time.perf_counter() - t)
            ids = [c.id for c in client.containers.list(filters={"label": [f"openenv-ws.server={server.instance}"]})]
            usage = [m for m in map(container_memory_mib, ids) if m is not None]
            used = base - mem_available_mib()
            results.append(
                {
                    "sessions": len(envs),
                    "ramp_s": round(ramp, 1),
                    "host_mem_used_mib": round(used),
                    "host_mem_per_session_mib": round(used / max(1, len(envs)), 1),
                    "container_cgroup_mem_p50_mib": round(quantile(usage, 0.5), 1) if usage else None,
                    "step_p50_ms": ms(quantile(latencies, 0.5)),
                    "step_p99_ms": ms(quantile(latencies, 0.99)),
                    "mem_available_mib": round(mem_available_mib()),
                }
            )
            print(json.dumps(results[-1]), flush=True)
            if mem_available_mib() < 4096:
                break  # stop early rather than push the machine into swap/OOM
        release.set()
    return results


def report_stages(out: dict, phase: str, server: Server) -> None:
    stages = server.stages()
    if stages:
        out.setdefault("stages", {})[phase] = stages
        print(f"{phase}: sandbox start stages\n{stages_markdown(stages, START_STAGES)}", flush=True)


def cgroup_cpu_seconds(container_id: str) -> float | None:
    try:
        return int(Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage").read_text()) / 1e9
    except OSError:
        return None


async def idle(server: Server, client: docker.DockerClient, pool: int, baseline: float, deadline: float) -> dict:
    """``pool`` pooled containers, idle: what each holds (cgroup, host) and the CPU they use over 10 s."""
    await wait_pool(server, pool, deadline)
    await anyio.sleep(3)  # settle: the last ones pause
    filters = {"label": [f"openenv-ws.server={server.instance}"]}
    containers = await anyio.to_thread.run_sync(lambda: client.containers.list(filters=filters))
    ids = [c.id for c in containers]
    cpu_before = [cgroup_cpu_seconds(i) for i in ids]
    await anyio.sleep(10)
    cpu_after = [cgroup_cpu_seconds(i) for i in ids]
    usage = [m for m in map(container_memory_mib, ids) if m is not None]
    used = baseline - mem_available_mib()
    cpu = [b - a for a, b in zip(cpu_before, cpu_after, strict=True) if a is not None and b is not None]
    pool_state = server.pool()
    return {
        "pooled": len(ids),
        "paused": sum(1 for c in containers if c.status == "paused"),
        "container_cgroup_mem_p50_mib": round(quantile(usage, 0.5), 1) if usage else None,
        "charged_per_container_mib": round(pool_state.get("memory_bytes", 0) / 2**20 / max(1, len(ids)), 1),
        "host_mem_per_container_mib": round(used / max(1, len(ids)), 1),
        "cpu_ms_per_container_over_10s": round(sum(cpu) / max(1, len(cpu)) * 1e3, 2) if cpu else None,
    }


async def main(args: argparse.Namespace) -> dict:
    client = docker.from_env()
    Server.tree = args.server_tree
    phases = set(args.phases.split(","))
    if args.runtime:
        args.server_args = ["-B", f"runtime={args.runtime}", *args.server_args]
    out: dict = {"machine": {"cpus": os.cpu_count(), "mem_available_mib": round(mem_available_mib())}}
    fixed = [] if args.legacy else ["-B", "pool_demand=0"]  # the pool stays at --pool: no learning
    if "warm" in phases:
        with serving(args.image, "--pool", str(args.pool), *args.server_args) as server:
            out["warm"] = await sequential_opens(server, args.samples, args.pool, args.deadline)
            print("warm", json.dumps(out["warm"]), flush=True)
            report_stages(out, "warm", server)
    if "cold" in phases:
        with serving(args.image, *fixed, *args.server_args) as server:
            out["cold"] = await sequential_opens(server, max(10, args.samples // 3), 0, args.deadline)
            print("cold", json.dumps(out["cold"]), flush=True)
            report_stages(out, "cold", server)
    if "burst" in phases:
        for pool in (0, args.pool):
            with serving(args.image, "--pool", str(pool), *args.server_args) as server:
                if pool:
                    await wait_pool(server, pool, args.deadline)
                out[f"burst_pool{pool}"] = await burst(server.url, args.burst, args.deadline)
                out[f"burst_pool{pool}"]["pool"] = server.pool()
                print(f"burst pool {pool}", json.dumps(out[f"burst_pool{pool}"]), flush=True)
                report_stages(out, f"burst_pool{pool}", server)
    if "waves" in phases:
        with serving(args.image, *args.server_args) as server:
            out["waves"] = await waves(server.url, args.waves, args.wave_size, args.wave_pause, args.deadline)
            report_stages(out, "waves", server)
    if "idle" in phases:
        baseline = mem_available_mib()
        with serving(args.image, "--pool", str(args.pool), *fixed, *args.server_args) as server:
            out["idle"] = await idle(server, client, args.pool, baseline, args.deadline)
            print("idle", json.dumps(out["idle"]), flush=True)
    if "hold" in phases:
        counts = [n for n in (50, 100, 150, 200) if n <= args.hold] or [args.hold]
        with serving(args.image, "--idle-timeout", "3600", *args.server_args) as server:
            out["hold"] = await hold(server, client, counts, args.deadline)
    if "steps" in phases:
        for name in STEP_ENVS:
            with serving(args.image, *args.server_args, env=name) as server:
                out[f"steps_{name}"] = await steps(server, name, args.step_sessions, args.steps, args.deadline)
                print(f"steps {name}", json.dumps(out[f"steps_{name}"]), flush=True)
    client.close()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="openenv-ws/echo:0.1.0", help="a sandbox image holding the echo env")
    parser.add_argument("--phases", default="warm,cold,burst,hold")
    parser.add_argument("--samples", type=int, default=100, help="sequential opens in the warm phase")
    parser.add_argument("--pool", type=int, default=8, help="warm containers per env in the warm and burst phases")
    parser.add_argument("--burst", type=int, default=50, help="sessions opened at once")
    parser.add_argument("--waves", type=int, default=5, help="waves in the waves phase")
    parser.add_argument("--wave-size", type=int, default=64, help="sessions opened at once in each wave")
    parser.add_argument("--wave-pause", type=float, default=30.0, help="seconds between waves")
    parser.add_argument("--legacy", action="store_true", help="the server predates the demand-sized pool")
    parser.add_argument("--server-tree", type=Path, help="run the server from this source tree (PYTHONPATH)")
    parser.add_argument("--hold", type=int, default=200, help="most sessions held (at most 200 here)")
    parser.add_argument("--steps", type=int, default=50, help="steps of each kind per session in the steps phase")
    parser.add_argument("--step-sessions", type=int, default=5, help="sessions per env in the steps phase")
    parser.add_argument("--runtime", help="OCI runtime of every container (-B runtime=NAME), e.g. runsc")
    parser.add_argument("--deadline", type=float, default=180.0, help="bound of each wait (s)")
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[], help="extra serve arguments")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.hold > 200:
        parser.error("--hold: at most 200 containers on this machine")
    results = anyio.run(main, args)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
