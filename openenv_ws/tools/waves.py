"""Start storms, as RL training makes them: bursts and waves of sessions, and what each start cost.

A wave is B sessions opened at once, each held until every one has answered its first reset
(so the wave is really concurrent); W waves come with a pause between them, the way a trainer
opens a batch of episodes, runs it, updates its model and opens the next. Per wave: the time
until all answered, the warm pool's size and memory when the wave came and its hit rate over
the wave (from ``/healthz``), and the host's memory in use (other processes move it too). The
stages of every sandbox start are read from the server's ``/metrics``
(``openenv_ws_sandbox_start_stage_seconds``). Used by ``openenv-ws bench`` and
``scripts/bench_docker.py``; every wait is bounded by ``deadline``.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from ..client.session import connect

STAGE_METRIC = "openenv_ws_sandbox_start_stage_seconds"
_BUCKET = re.compile(STAGE_METRIC + r'_bucket\{stage="([^"]+)",le="([^"]+)"\} (\d+)')
_SUM_COUNT = re.compile(STAGE_METRIC + r'_(sum|count)\{stage="([^"]+)"\} ([0-9.e+-]+)')


def _get(http: str, path: str) -> str:
    with urllib.request.urlopen(http + path, timeout=10) as r:
        return r.read().decode()


def mem_used_mib() -> float:
    """Host memory in use (MemTotal - MemAvailable), MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(fields["MemTotal"].split()[0]) - int(fields["MemAvailable"].split()[0])) / 1024


def pool_counts(http: str) -> dict[str, int]:
    """Over every warm pool of the server: warm and cold acquisitions so far, containers ready now and
    the memory charged to them (all 0 without pools)."""
    pools = (json.loads(_get(http, "/healthz")).get("backend", {}).get("pools") or {}).values()
    keys = {"warm": "warm", "cold": "cold", "ready": "ready", "memory": "memory_bytes"}
    return {name: sum(p.get(key, 0) for p in pools) for name, key in keys.items()}


async def burst(url: str, sessions: int, deadline: float, env: str = "echo") -> dict[str, Any]:
    """``sessions`` opened at once; the time until every one has answered its first reset."""
    done: list[float] = []
    errors: dict[str, int] = {}
    all_reset = anyio.Event()
    started = time.perf_counter()

    def finished() -> None:
        if len(done) + sum(errors.values()) == sessions:
            all_reset.set()

    async def one() -> None:
        try:
            async with connect(url, env=env, connect_timeout=deadline, request_timeout=deadline) as session:
                await session.reset()
                done.append(time.perf_counter() - started)
                finished()
                with anyio.move_on_after(deadline):
                    await all_reset.wait()  # held until all answered: the burst is really concurrent
        except Exception as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            finished()

    with anyio.move_on_after(deadline):
        async with anyio.create_task_group() as tg:
            for _ in range(sessions):
                tg.start_soon(one)
    ordered = sorted(done)
    return {
        "sessions": sessions,
        "answered": len(done),
        "errors": errors,
        "all_answered_s": round(ordered[-1], 2) if done else None,
        "first_answered_ms": round(ordered[0] * 1e3, 1) if done else None,
        "median_answered_s": round(ordered[len(ordered) // 2], 2) if done else None,
    }


async def waves(
    url: str,
    count: int,
    size: int,
    pause: float,
    deadline: float,
    env: str = "echo",
    out: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """``count`` bursts of ``size`` sessions, ``pause`` seconds apart; per wave, hit rate and host memory."""
    http = url.replace("ws://", "http://").replace("wss://", "https://").split("/v1/")[0]
    baseline = mem_used_mib()
    results = []
    for number in range(1, count + 1):
        before = await anyio.to_thread.run_sync(pool_counts, http)
        result = await burst(url, size, deadline, env)
        after = await anyio.to_thread.run_sync(pool_counts, http)
        warm = after["warm"] - before["warm"]
        served = warm + after["cold"] - before["cold"]
        result = {
            "wave": number,
            **result,
            "pool_ready_before": before["ready"],
            "pool_memory_before_mib": round(before["memory"] / 2**20),
            "pool_hit_rate": round(warm / served, 3) if served else None,
            "host_mem_used_mib": round(mem_used_mib() - baseline),
        }
        if number < count:
            await anyio.sleep(pause)
            result["host_mem_between_waves_mib"] = round(mem_used_mib() - baseline)
        results.append(result)
        out("wave " + json.dumps(result))
    return results


def start_stages(http: str) -> dict[str, dict[str, float]]:
    """Per stage of a sandbox start, from ``/metrics``: count, mean and p50/p90 (bucket upper bounds), ms."""
    text = _get(http, "/metrics")
    buckets: dict[str, list[tuple[float, int]]] = {}
    for stage, bound, count in _BUCKET.findall(text):
        buckets.setdefault(stage, []).append((float("inf") if bound == "+Inf" else float(bound), int(count)))
    totals: dict[str, dict[str, float]] = {}
    for kind, stage, value in _SUM_COUNT.findall(text):
        totals.setdefault(stage, {})[kind] = float(value)
    stages = {}
    for stage, total in totals.items():
        count = int(total.get("count", 0))
        if not count:
            continue
        stages[stage] = {
            "count": count,
            "mean_ms": round(total.get("sum", 0.0) / count * 1e3, 1),
            "p50_le_ms": _quantile_bound(buckets.get(stage, []), count, 0.5),
            "p90_le_ms": _quantile_bound(buckets.get(stage, []), count, 0.9),
        }
    return stages


def _quantile_bound(buckets: list[tuple[float, int]], count: int, q: float) -> float | None:
    """The upper bound (ms) of the histogram bucket holding quantile ``q``."""
    for bound, cumulative in sorted(buckets):
        if cumulative >= q * count:
            return round(bound * 1e3, 1) if bound != float("inf") else None
    return None


def stages_markdown(stages: dict[str, dict[str, float]], order: tuple[str, ...]) -> str:
    lines = ["| stage | count | mean | p50 <= | p90 <= |", "|---|---|---|---|---|"]
    for stage in sorted(stages, key=lambda s: order.index(s) if s in order else len(order)):
        s = stages[stage]
        lines.append(f"| {stage} | {s['count']} | {s['mean_ms']} ms | {s['p50_le_ms']} ms | {s['p90_le_ms']} ms |")
    return "\n".join(lines) + "\n"
