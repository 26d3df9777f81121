"""Web environment figures: cold start to the first observation, step latency, memory per session.

Starts its own ``openenv-ws serve web`` on a free loopback port for each backend asked for, runs
sessions on the shipped shop through the real client, prints one JSON object per phase, and stops
the server (and, for Docker, removes whatever container of it is left, by its instance label).
Every loop is bounded by a count and by ``--deadline`` seconds.

    python scripts/bench_web.py                                   # subprocess and docker, all phases
    python scripts/bench_web.py --sandbox subprocess --samples 10
    python scripts/bench_web.py --sandbox docker --image openenv-ws/web:0.1.0

Phases:
  cold    open a session and reset it, one session at a time: the time to the first observation
          (a new sandbox, a new Chromium, the shop's home page loaded and listed)
  steps   per kind of step on one session: noop (list the page), click without a load (focus the
          search box), type 10 characters, click a link (a page load, then back: two loads), a noop
          with a 1280x720 PNG screenshot; median and p90, client to client
  memory  hold N sessions on the shop's home page; memory per session: the worker and its browser
          (the PSS of the whole process tree) on the subprocess backend, the container's memory as
          ``docker stats`` shows it (cgroup usage less page cache) on Docker
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
import urllib.request
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
from serve_process import ServeProcess

from openenv_ws import EnvSession, connect


class Server(ServeProcess):
    """``openenv-ws serve web`` on a free port; stopped by PID, its containers removed by label."""

    def __init__(self, sandbox: str, image: str | None) -> None:
        super().__init__("web", "--sandbox", sandbox, *(["--image", image] if image else []))


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": round(statistics.median(ordered) * 1e3, 1),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * 1e3, 1),
    }


def find(observation: dict[str, Any], role: str, name: str) -> int:
    m = re.search(rf"\[(\d+)\] {role} {re.escape(json.dumps(name))}", observation["page"])
    assert m, f"no {role} {name!r} on {observation['url']}"
    return int(m[1])


async def cold(url: str, samples: int, deadline: float) -> dict:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        with anyio.fail_after(deadline):
            async with connect(url, "web", connect_timeout=deadline, request_timeout=deadline) as env:
                await env.reset(seed=1)
                times.append(time.perf_counter() - started)
        await anyio.sleep(0.3)  # let the previous sandbox go
    return {"phase": "cold", "samples": samples, **summary(times)}


async def steps(url: str, samples: int, deadline: float) -> dict:
    async with connect(url, "web", request_timeout=deadline) as env:
        home = (await env.reset(seed=1)).observation
        box = find(home, "textbox", "Search products")

        async def timed(action: dict) -> list[float]:
            out = []
            for _ in range(samples):
                with anyio.fail_after(deadline):
                    started = time.perf_counter()
                    await env.step(action)
                    out.append(time.perf_counter() - started)
            return out

        figures = {
            "noop": summary(await timed({"action": "noop"})),
            "click, no load": summary(await timed({"action": "click", "id": box})),
            "type 10 chars": summary(await timed({"action": "type", "id": box, "text": "blue mug 2"})),
            "noop + 1280x720 screenshot": summary(await timed({"action": "noop", "screenshot": True})),
        }
        loads = []  # a link to another page, then back: every page is a new document with new ids
        for _ in range(samples):
            with anyio.fail_after(deadline):
                started = time.perf_counter()
                mugs = (await env.step({"action": "click", "id": find(home, "link", "Mugs")})).observation
                loads.append(time.perf_counter() - started)
                home = (await env.step({"action": "back"})).observation
                assert mugs["url"] == "/category/mugs" and home["url"] == "/"
        figures["click a link (a page load)"] = summary(loads)
    return {"phase": "steps", "samples": samples, **figures}


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _pss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += int(re.search(r"^Pss:\s+(\d+) kB", text, flags=re.MULTILINE)[1])
    return total / 1024


def container_mib(container_id: str) -> float:
    """A container's memory as ``docker stats`` shows it: its cgroup's usage less the page cache."""
    import docker

    client = docker.from_env()
    try:
        stats = client.api.stats(container_id, stream=False)["memory_stats"]
    finally:
        client.close()
    cache = stats.get("stats", {}).get("cache", stats.get("stats", {}).get("inactive_file", 0))
    return (stats["usage"] - cache) / 2**20


async def memory(url: str, port: int, sandbox: str, sessions: int, deadline: float) -> dict:
    async with AsyncExitStack() as stack:
        envs: list[EnvSession] = []
        for _ in range(sessions):
            env = await stack.enter_async_context(connect(url, "web", request_timeout=deadline))
            await env.reset(seed=1)
            envs.append(env)
        await anyio.sleep(2)  # let the browsers settle after the first paint
        sandboxes = sandboxes_of(port)
        per_session = []
        for env in envs:
            if sandbox == "subprocess":
                per_session.append(_pss_mib(_tree(int(sandboxes[env.session_id].removeprefix("pid:")))))
            else:
                per_session.append(await anyio.to_thread.run_sync(container_mib, sandboxes[env.session_id]))
    return {
        "phase": "memory",
        "sessions": sessions,
        "measure": "PSS of worker + browser tree" if sandbox == "subprocess" else "container usage less cache",
        "per_session_mib": round(statistics.median(per_session), 1),
        "max_mib": round(max(per_session), 1),
    }


def sandboxes_of(port: int) -> dict[str, str]:
    """Each session's sandbox id, as the server's inspector lists it (``pid:N``, or a container id)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/sessions", timeout=5) as r:
        return {s["id"]: s["sandbox"] for s in json.loads(r.read())["sessions"]}


async def bench(args: argparse.Namespace) -> None:
    for sandbox in args.sandbox:
        server = Server(sandbox, args.image if sandbox == "docker" else None)
        try:
            print(json.dumps({"sandbox": sandbox, **await cold(server.url, args.samples, args.deadline)}))
            print(json.dumps({"sandbox": sandbox, **await steps(server.url, args.steps, args.deadline)}))
            figures = await memory(server.url, server.port, sandbox, args.sessions, args.deadline)
            print(json.dumps({"sandbox": sandbox, **figures}))
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandbox", nargs="+", default=["subprocess", "docker"], choices=["subprocess", "docker"])
    parser.add_argument("--image", default=None, help="the web image for Docker (default: the env's own tag)")
    parser.add_argument("--samples", type=int, default=5, help="cold starts")
    parser.add_argument("--steps", type=int, default=30, help="samples of each kind of step")
    parser.add_argument("--sessions", type=int, default=4, help="sessions held for the memory figure")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds any one wait may take")
    anyio.run(bench, parser.parse_args())


if __name__ == "__main__":
    main()
