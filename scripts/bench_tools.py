"""What a tool call costs beside a plain step, over our protocol and over MCP.

Starts ``openenv-ws serve`` (a subprocess, ``--sandbox inprocess`` by default) with two tiny
environments, the same but for tools (``PingEnv`` has a tool, ``PlainPingEnv`` none), and times
one session doing, one request at a time:

- plain steps on the environment without tools, then on the one with tools (what recognising a
  tool call costs the other actions);
- tool calls as steps (``{"tool": "ping", "arguments": {...}}``);
- tool calls over the session's MCP endpoint: bare JSON-RPC posts on one keep-alive HTTP
  connection (beside ``GET /healthz`` on the same connection: what HTTP itself costs), then
  through the official ``mcp`` client (``ClientSession.call_tool``).

Prints the minimum, median, mean and 99th percentile latency of each, in microseconds. On a
busy machine compare the minimums.

    python scripts/bench_tools.py --calls 2000
    python scripts/bench_tools.py --calls 2000 --sandbox subprocess
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from openenv_ws import connect
from openenv_ws.env import Action, Environment, Observation, StepResult
from openenv_ws.server.local import free_port
from openenv_ws.toolbox import tool

ROOT = Path(__file__).resolve().parent.parent


class PingAction(Action):
    n: int


class PingObservation(Observation):
    n: int


class PlainPingEnv(Environment):
    """Answers the number it was given: the cheapest step there is."""

    action_type = PingAction
    observation_type = PingObservation

    async def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        return StepResult(observation=PingObservation(n=0))

    async def step(self, action: PingAction) -> StepResult:
        return StepResult(observation=PingObservation(n=action.n), reward=0.0)


class PingEnv(PlainPingEnv):
    """The same, with the same answer as a tool."""

    @tool
    async def ping(self, n: int) -> StepResult[PingObservation]:
        """Answer ``n``."""
        return StepResult(observation=PingObservation(n=n), reward=0.0)


def summary(name: str, seconds: list[float]) -> str:
    us = sorted(s * 1e6 for s in seconds)
    p99 = us[min(len(us) - 1, int(len(us) * 0.99))]
    return (
        f"{name:<44} min {us[0]:7.0f}   median {us[len(us) // 2]:7.0f}   mean {statistics.fmean(us):7.0f}"
        f"   p99 {p99:7.0f}  (us)"
    )


async def timed(calls: int, once: Any) -> list[float]:
    for i in range(min(100, calls)):  # warm up
        await once(i)
    out = []
    for i in range(calls):
        started = time.perf_counter()
        await once(i)
        out.append(time.perf_counter() - started)
    return out


async def run(url: str, http_url: str, calls: int) -> None:
    async with connect(url, "PlainPingEnv") as plain:
        await plain.reset()
        print(summary("plain step, env without tools", await timed(calls, lambda i: plain.step({"n": i}))))
    async with connect(url, "PingEnv") as env:
        await env.reset()
        print(summary("plain step, env with tools", await timed(calls, lambda i: env.step({"n": i}))))
        print(summary("tool call as a step", await timed(calls, lambda i: env.call_tool("ping", {"n": i}))))
        headers = {**env.mcp_headers, "Accept": "application/json, text/event-stream"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:

            async def post(i: int) -> None:
                params = {"name": "ping", "arguments": {"n": i}}
                body = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": params}
                answer = (await http.post(env.mcp_url, json=body)).json()
                assert answer["result"]["structuredContent"] == {"n": i}, answer

            async def health(i: int) -> None:
                assert (await http.get(http_url + "/healthz")).status_code == 200

            print(summary("GET /healthz (HTTP alone, same connection)", await timed(calls, health)))
            print(summary("tool call over MCP (bare JSON-RPC posts)", await timed(calls, post)))
        try:
            from mcp import ClientSession
            from mcp.client.streamable_http import streamable_http_client
        except ImportError:
            print("(the mcp client is not installed: pip install 'openenv-ws[test]')")
            return
        async with (
            httpx.AsyncClient(headers=env.mcp_headers, timeout=30) as http,
            streamable_http_client(env.mcp_url, http_client=http) as (read, write, _),
            ClientSession(read, write) as mcp,
        ):
            await mcp.initialize()
            seconds = await timed(calls, lambda i: mcp.call_tool("ping", {"n": i}))
            print(summary("tool call over MCP (the mcp SDK's client)", seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sandbox", default="inprocess", choices=["inprocess", "subprocess"])
    args = parser.parse_args()
    port = free_port()
    envs = ["scripts.bench_tools:PlainPingEnv", "scripts.bench_tools:PingEnv"]
    cmd = [sys.executable, "-m", "openenv_ws", "serve", *envs, "--sandbox", args.sandbox, "--port", str(port)]
    server = subprocess.Popen([*cmd, "--log-level", "warning", "--no-metrics"], cwd=ROOT)
    http_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(http_url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.05)
        print(f"{args.calls} calls each, one at a time, --sandbox {args.sandbox}")
        anyio.run(run, f"ws://127.0.0.1:{port}", http_url, args.calls)
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
