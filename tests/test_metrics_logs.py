"""GET /metrics (Prometheus text format) and structured JSON logs, on real servers."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import anyio
import httpx
import pytest

from openenv_ws import SandboxCrashedError, ValidationError, connect
from openenv_ws.server.metrics import _backend_lines

from .conftest import ROOT
from .proxy import CuttableProxy

SAMPLE = re.compile(r'^([a-z_:][a-z0-9_:]*)(\{([a-z_]+="[^"]*",?)*\})? (-?[0-9.e+-]+|\+Inf|NaN)$')


def parse(text: str) -> dict[str, float]:
    """Every sample as ``name{labels}`` -> value; checks the exposition format on the way."""
    samples: dict[str, float] = {}
    described: set[str] = set()
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            described.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge", "histogram"), line
            typed.add(name)
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            base = re.sub(r"_(bucket|sum|count)$", "", match.group(1))
            assert match.group(1) in typed or base in typed, f"no TYPE for {line!r}"
            samples[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
    assert described == typed
    return samples


def metrics(server) -> dict[str, float]:
    response = httpx.get(server.http + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


async def test_metrics_count_what_happened(start_server):
    server = start_server("echo", "tests.helper_envs:FlakyEnv", "--sandbox", "subprocess")
    before = metrics(server)
    assert before["openenv_ws_sessions_opened_total"] == 0 and before['openenv_ws_sessions{state="active"}'] == 0
    async with anyio.create_task_group() as tg:
        proxy = CuttableProxy(server.port)
        port = await tg.start(proxy.run)
        async with connect(f"ws://127.0.0.1:{port}", "echo", backoff=0.01) as env:
            await env.reset()
            for _ in range(5):
                await env.step({"message": "hi"})
            with pytest.raises(ValidationError):
                await env.step({"message": 1})
            held = metrics(server)
            assert held['openenv_ws_sessions{state="active"}'] == 1
            proxy.cut()  # the client resumes on a new connection
            await env.step({"message": "after the cut"})
            await env.state()
        tg.cancel_scope.cancel()
    async with connect(server.url, "flaky") as env:
        await env.reset()
        with pytest.raises(SandboxCrashedError):
            await env.step({"op": "crash"})
    with pytest.raises(Exception):  # noqa: B017  # a bad option: the sandbox starts, its env does not
        async with connect(server.url, "echo", options={"nope": 1}):
            pass
    after = metrics(server)
    assert after["openenv_ws_sessions_opened_total"] == 2
    assert after["openenv_ws_sessions_closed_total"] == 2
    assert after['openenv_ws_sessions{state="active"}'] == 0
    assert after["openenv_ws_resumes_total"] == 1
    assert after['openenv_ws_requests_total{kind="step"}'] == 8
    assert after['openenv_ws_requests_total{kind="reset"}'] == 2
    assert after["openenv_ws_steps_total"] == 6
    assert after['openenv_ws_errors_total{code="validation"}'] == 1
    assert after['openenv_ws_errors_total{code="sandbox_crashed"}'] == 1
    assert after["openenv_ws_sandbox_crashes_total"] == 1
    assert after["openenv_ws_sandbox_starts_total"] == 2
    assert after["openenv_ws_sandbox_start_failures_total"] == 1
    assert after["openenv_ws_step_seconds_count"] == 8 and after["openenv_ws_step_seconds_sum"] > 0
    buckets = [v for k, v in after.items() if k.startswith("openenv_ws_step_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == 8  # cumulative, +Inf last
    assert after['openenv_ws_info{version="0.1.0",backend="subprocess"}'] == 1
    assert after["process_resident_memory_bytes"] > 10e6 and after["process_open_fds"] > 0


def test_metrics_can_be_turned_off(start_server):
    server = start_server("echo", "--sandbox", "inprocess", "--no-metrics")
    response = httpx.get(server.http + "/metrics", timeout=5)
    assert response.status_code == 404 and "--no-metrics" in response.json()["detail"]


def test_backend_numbers_become_gauges():
    """What a backend's describe() reports (the Docker backend's warm pools) is exported as it is."""
    docker_like = {
        "name": "docker",
        "instance": "srv-1",
        "containers": 5,
        "starting": 1,
        "pools": {
            "echo": {"target": "openenv_ws_envs.echo:EchoEnvironment", "ready": 3, "waiting": 0, "warm": 7, "cold": 2}
        },
    }
    samples = parse("\n".join(_backend_lines(docker_like)))
    assert samples == {
        'openenv_ws_backend_containers{backend="docker"}': 5,
        'openenv_ws_backend_starting{backend="docker"}': 1,
        'openenv_ws_pool_cold{env="echo"}': 2,
        'openenv_ws_pool_ready{env="echo"}': 3,
        'openenv_ws_pool_waiting{env="echo"}': 0,
        'openenv_ws_pool_warm{env="echo"}': 7,
    }


def test_json_logs(start_server):
    server = start_server(
        "echo", "--sandbox", "inprocess", "--log-format", "json", log_level="info", env={"OPENENV_WS_TOKEN": "t0k"}
    )
    assert httpx.get(server.http + "/v1/sessions", timeout=5).status_code == 401

    async def episode() -> None:
        async with connect(server.url, "echo", token="t0k") as env:
            await env.reset()

    anyio.run(episode)
    server.terminate()
    lines = [line for line in server.output().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object, uvicorn's included
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert all(r["time"].endswith("Z") for r in records)
    (refused,) = [r for r in records if "refused" in r["message"]]
    assert refused["level"] == "warning" and refused["logger"] == "openenv_ws.server"
    assert refused["message"].startswith("refused http /v1/sessions from 127.0.0.1:")
    ours = [r["message"] for r in records if r["logger"] == "openenv_ws.server"]
    assert any(message.endswith("closed: closed by client") for message in ours)
    assert any(r["logger"] == "uvicorn.access" and "GET /v1/sessions" in r["message"] for r in records)
    assert "t0k" not in server.output()


def test_the_counting_benchmark_runs():
    """scripts/bench_metrics.py (docs/benchmarks.md, section f) still measures both ways."""
    cmd = [sys.executable, "scripts/bench_metrics.py", "--calls", "2000", "--repeat", "1", "--scrapes", "20"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith("plain counters (Metrics.applied)") for line in lines)
    assert any(line.strip().startswith("prometheus_client Counter + Histogram") for line in lines)
    assert "one scrape, the whole /metrics body" in result.stdout
