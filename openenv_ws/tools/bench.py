"""Load benchmark (``openenv-ws bench``, ``scripts/bench.py``): step round trips and concurrent sessions.

Starts ``openenv-ws serve echo`` itself (or uses ``--url``), then runs:

  a. one session, N steps: round-trip p50/p99 and steps/s;
  b. a grid of concurrent sessions x steps: success rate, the time until every session
     answered its first reset, step latency p50/p99/p999, aggregate steps/s, server RSS and
     RSS per session;
  c. with ``--waves W``: W waves of ``--wave-size`` sessions opened at once, ``--wave-pause``
     seconds apart (per wave: time until all answered, warm pool hit rate, host memory);
  then the stages of every sandbox start, from the server's /metrics (subprocess, docker).

Prints a Markdown summary and writes everything as JSON (``--json``). Every loop is
bounded by count and by ``--deadline`` seconds.

    openenv-ws bench                             # in-process echo, default grid
    openenv-ws bench --sandbox subprocess --grid 10,100
    openenv-ws bench --sandbox docker --image openenv-ws/echo:0.1.0 --single-steps 0 --grid 50 --waves 5 --wave-size 64
    python scripts/bench.py ...                  # the same
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from functools import partial

import anyio

from ..client.mux import multiplex as open_multiplexer
from ..client.session import connect
from ..sandbox.base import START_STAGES
from ..server.local import free_port
from ..tuning import tune_gc
from .waves import stages_markdown, start_stages, waves

LOOP = {"backend": "asyncio", "backend_options": {"use_uvloop": importlib.util.find_spec("uvloop") is not None}}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (this one when ``pid`` is None)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def health(http: str) -> dict:
    with urllib.request.urlopen(http + "/healthz", timeout=5) as r:
        return json.loads(r.read())


def connections_accepted(http: str) -> int | None:
    """WebSocket connections the server has accepted so far (None if its metrics are off)."""
    try:
        with urllib.request.urlopen(http + "/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return None
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("openenv_ws_connections_total{")
    )


async def single_session(url: str, steps: int, server_pid: int | None = None) -> dict:
    latencies = []
    async with connect(url, env="echo") as env:
        await env.reset()
        for _ in range(50):  # warm-up
            await env.step({"message": "warm"})
        started = time.perf_counter()
        cpu = (cpu_seconds(), cpu_seconds(server_pid) if server_pid else 0.0)
        for _ in range(steps):
            t = time.perf_counter()
            await env.step({"message": "hello"})
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
        client_cpu = cpu_seconds() - cpu[0]
        server_cpu = cpu_seconds(server_pid) - cpu[1] if server_pid else None
    return {
        "steps": steps,
        "client_cpu_us_per_step": round(client_cpu / steps * 1e6, 1),
        "server_cpu_us_per_step": round(server_cpu / steps * 1e6, 1) if server_cpu is not None else None,
        "steps_per_s": round(steps / elapsed, 1),
        "p50_us": round(percentile(latencies, 0.50) * 1e6, 1),
        "p99_us": round(percentile(latencies, 0.99) * 1e6, 1),
    }


async def concurrent(
    url: str, sessions: int, steps: int, delay: float, deadline: float, server_pid: int | None, multiplex: int = 0
) -> dict:
    """``sessions`` episodes held open at once, then ``steps`` steps each (all bounded by ``deadline``)."""
    latencies: list[float] = []
    durations: list[float] = []
    ok = 0
    errors: dict[str, int] = {}
    all_open = anyio.Event()
    ready = 0
    rss_during = 0
    window = {"start": 0.0, "end": 0.0}
    cpu_at_start = [0.0, 0.0]
    cpu_at_end = [0.0, 0.0]

    def count_ready() -> None:
        nonlocal ready, rss_during
        ready += 1
        if ready == sessions:
            if server_pid:
                rss_during = rss_kib(server_pid)
            window["start"] = time.perf_counter()
            cpu_at_start[:] = [cpu_seconds(), cpu_seconds(server_pid) if server_pid else 0.0]
            all_open.set()

    async def episode(open_session) -> None:
        nonlocal ok
        began = time.perf_counter()
        counted = False
        try:
            async with open_session("echo", connect_timeout=deadline, request_timeout=deadline) as env:
                await env.reset()
                counted = True
                count_ready()
                with anyio.move_on_after(deadline):
                    await all_open.wait()  # every session held at once before stepping
                for _ in range(steps):
                    t = time.perf_counter()
                    await env.step({"message": "hello", "delay_s": delay})
                    latencies.append(time.perf_counter() - t)
                if time.perf_counter() > window["end"]:
                    window["end"] = time.perf_counter()
                    cpu_at_end[:] = [cpu_seconds(), cpu_seconds(server_pid) if server_pid else 0.0]
            ok += 1
            durations.append(time.perf_counter() - began)
        except Exception as exc:  # counted, reported
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            if not counted:
                count_ready()

    started = time.perf_counter()
    with anyio.move_on_after(deadline * 3):
        async with AsyncExitStack() as stack:
            if multiplex:
                mux = await stack.enter_async_context(open_multiplexer(url, connections=multiplex))
                open_session = mux.connect
            else:
                open_session = partial(connect, url)
            async with anyio.create_task_group() as tg:
                for _ in range(sessions):
                    tg.start_soon(episode, open_session)
    elapsed = time.perf_counter() - started
    stepping = max(window["end"] - window["start"], 1e-9)
    return {
        "sessions": sessions,
        "steps_each": steps,
        "delay_s": delay,
        "multiplex": multiplex,
        "success_rate": round(ok / sessions, 5),
        "errors": errors,
        "steps_done": len(latencies),
        "agg_steps_per_s": round(len(latencies) / stepping, 1),
        "stepping_s": round(stepping, 2),
        "all_open_s": round(window["start"] - started, 2) if window["start"] else None,
        "wall_s": round(elapsed, 2),
        "p50_ms": round(percentile(latencies, 0.50) * 1e3, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1e3, 2),
        "p999_ms": round(percentile(latencies, 0.999) * 1e3, 2),
        "session_p99_s": round(percentile(durations, 0.99), 2) if durations else None,
        "server_rss_mib": round(rss_during / 1024, 1) if rss_during else None,
        "client_cpu_us_per_step": round((cpu_at_end[0] - cpu_at_start[0]) / max(len(latencies), 1) * 1e6, 1),
        "server_cpu_us_per_step": round((cpu_at_end[1] - cpu_at_start[1]) / max(len(latencies), 1) * 1e6, 1)
        if server_pid
        else None,
    }


def markdown(report: dict) -> str:
    lines = [
        f"### {report['date']} — {report['command']}",
        "",
        f"Machine: {report['machine']}. Backend: {report['sandbox']}.",
        "",
    ]
    if "single" in report:
        s = report["single"]
        lines += [
            "| one session | steps/s | p50 | p99 |",
            "|---|---|---|---|",
            f"| {s['steps']} steps | {s['steps_per_s']} | {s['p50_us']} us | {s['p99_us']} us |",
            "",
        ]
    if report.get("grid"):
        lines += [
            "| sessions x steps | mux | success | all open | connections | agg steps/s | p50 | p99 | p999 "
            "| session p99 | server RSS (idle -> loaded) | per session |",
            "|---" * 12 + "|",
        ]
        for g in report["grid"]:
            connections = g.get("connections")
            per = (
                f"{(g['server_rss_mib'] - report['idle_rss_mib']) * 1024 / g['sessions']:.0f} KiB"
                if g["server_rss_mib"]
                else "-"
            )
            lines.append(
                f"| {g['sessions']} x {g['steps_each']} | {g['multiplex'] or '-'} | {g['success_rate'] * 100:.2f}% "
                f"| {g['all_open_s']} s | {connections if connections is not None else '-'} | {g['agg_steps_per_s']} "
                f"| {g['p50_ms']} ms | {g['p99_ms']} ms | {g['p999_ms']} ms "
                f"| {g['session_p99_s']} s "
                f"| {report['idle_rss_mib']} -> {g['server_rss_mib']} MiB | {per} |"
            )
    if report.get("waves"):
        lines += [
            "",
            "| wave | sessions | answered | all answered | median | pool ready (memory) | hit rate "
            "| host memory used |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for w in report["waves"]:
            lines.append(
                f"| {w['wave']} | {w['sessions']} | {w['answered']} | {w['all_answered_s']} s "
                f"| {w['median_answered_s']} s | {w['pool_ready_before']} ({w['pool_memory_before_mib']} MiB) "
                f"| {w['pool_hit_rate']} | {w['host_mem_used_mib']} MiB |"
            )
    if report.get("stages"):
        lines += [
            "",
            "Sandbox start stages (server /metrics, whole run):",
            "",
            stages_markdown(report["stages"], START_STAGES),
        ]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="benchmark this server instead of starting one")
    parser.add_argument(
        "--sandbox",
        default="inprocess",
        choices=["inprocess", "subprocess", "docker"],
        help="backend of the server started",
    )
    parser.add_argument("--image", help="docker: the sandbox image holding the echo env (serve --image)")
    parser.add_argument("--waves", type=int, default=0, help="waves of sessions opened at once (0: none)")
    parser.add_argument("--wave-size", type=int, default=64, help="sessions per wave")
    parser.add_argument("--wave-pause", type=float, default=20.0, help="seconds between waves")
    parser.add_argument("--single-steps", type=int, default=2000, help="steps of the one-session run (0: skip it)")
    parser.add_argument("--grid", default="10,100,1000", help="comma-separated session counts")
    parser.add_argument("--steps", type=int, default=20, help="steps of each session in the grid")
    parser.add_argument("--delay", type=float, default=0.0, help="delay_s of every step (slow-env method)")
    parser.add_argument("--multiplex", type=int, default=0, help="grid over N multiplexed connections")
    parser.add_argument("--deadline", type=float, default=120.0, help="bound on each phase (s)")
    parser.add_argument("--json", help="write the full report here")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra argument for the server started, e.g. --server-arg=--record --server-arg=/tmp/rec; repeatable",
    )


def run(args: argparse.Namespace) -> int:
    tune_gc()

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = None
    url = args.url
    if url is None:
        port = free_port()
        url = f"ws://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "openenv_ws", "serve", "echo", "--port", str(port)]
        cmd += ["--sandbox", args.sandbox, "--max-sessions", "20000", "--log-level", "warning", *args.server_arg]
        cmd += ["--image", args.image] if args.image else []
        server = subprocess.Popen(cmd)
    http = url.replace("ws://", "http://")
    for _ in range(300):
        try:
            health(http)
            break
        except OSError:
            time.sleep(0.1)
    report: dict = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        "machine": f"{platform.node()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}",
        "sandbox": args.sandbox if server else "remote",
    }
    try:
        if server:
            report["idle_rss_mib"] = round(rss_kib(server.pid) / 1024, 1)
        if args.single_steps:
            report["single"] = anyio.run(single_session, url, args.single_steps, server.pid if server else None, **LOOP)
            print("single:", report["single"], flush=True)
        report["grid"] = []
        for n in [int(x) for x in args.grid.split(",") if x]:
            pid = server.pid if server else None
            accepted = connections_accepted(http)
            result = anyio.run(concurrent, url, n, args.steps, args.delay, args.deadline, pid, args.multiplex, **LOOP)
            after = connections_accepted(http)
            # More connections than sessions (or mux sockets) means clients had to reconnect.
            result["connections"] = after - accepted if accepted is not None and after is not None else None
            report["grid"].append(result)
            print("grid:", result, flush=True)
        if args.waves:
            report["waves"] = anyio.run(
                waves, url, args.waves, args.wave_size, args.wave_pause, args.deadline, "echo", print, **LOOP
            )
        report["stages"] = start_stages(http) if report["sandbox"] != "inprocess" else {}
    finally:
        if server:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    print()
    print(markdown(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    failed = any(g["success_rate"] < 1 for g in report["grid"]) or any(
        w["answered"] < w["sessions"] for w in report.get("waves", [])
    )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
