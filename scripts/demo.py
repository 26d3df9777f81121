"""The main job, end to end: start a server, run a few real episodes through the client, stop.

Starts ``openenv-ws serve echo`` on the default backend (subprocess: one sandbox process
per session) on a free loopback port, runs a few concurrent episodes with live progress,
prints what happened, stops the server with SIGTERM (graceful drain) and exits 0 only
if every episode completed.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
import urllib.request

import anyio

from openenv_ws import connect
from openenv_ws.server.local import free_port

WORDS = ["observe", "act", "reward", "reset", "episode", "sandbox", "resume", "stream"]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server not healthy within {timeout}s")


async def episode(url: str, number: int, steps: int, log: list[dict]) -> None:
    started = time.perf_counter()
    async with connect(url, env="echo", options={"max_steps": steps}) as env:
        await env.reset(seed=number)
        total = 0.0
        done = False
        count = 0
        while not done:
            message = " ".join(WORDS[(number + count + k) % len(WORDS)] for k in range(1 + count % 3))
            words: list[dict] = []
            result = await env.step({"message": message, "stream": True}, on_event=words.append)
            count += 1
            total += result.reward or 0.0
            done = result.terminated or result.truncated
            print(
                f"  episode {number} [{env.session_id}] step {count}/{steps}: "
                f"sent {message!r}, streamed {len(words)} events, reward {result.reward:.1f}"
                + (" -> truncated" if result.truncated else ""),
                flush=True,
            )
        state = await env.state()
    log.append(
        {
            "episode": number,
            "session": env.session_id,
            "steps": state["step_count"],
            "return": round(total, 3),
            "ended": "truncated" if result.truncated else "terminated",
            "seconds": round(time.perf_counter() - started, 3),
        }
    )


async def run_all(url: str, episodes: int, steps: int) -> list[dict]:
    log: list[dict] = []
    async with anyio.create_task_group() as tg:
        for number in range(1, episodes + 1):
            tg.start_soon(episode, url, number, steps, log)
    return sorted(log, key=lambda r: r["episode"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()

    port = free_port()
    http = f"http://127.0.0.1:{port}"
    print(f"starting: openenv-ws serve echo --port {port}  (default backend: subprocess sandboxes)", flush=True)
    server = subprocess.Popen([sys.executable, "-m", "openenv_ws", "serve", "echo", "--port", str(port)])
    try:
        health = wait_healthy(http, server)
        print(f"server healthy: backend={health['backend']['name']} envs={health['envs']}", flush=True)
        print(f"running {args.episodes} episodes of {args.steps} steps each, concurrently:", flush=True)
        log = anyio.run(run_all, f"ws://127.0.0.1:{port}", args.episodes, args.steps)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(60)
    print("\nwhat happened:")
    print(f"  {'episode':>7}  {'session':20} {'steps':>5} {'return':>7} {'ended':10} {'seconds':>7}")
    for row in log:
        print(
            f"  {row['episode']:>7}  {row['session']:20} {row['steps']:>5} {row['return']:>7.1f} "
            f"{row['ended']:10} {row['seconds']:>7.3f}"
        )
    print(f"server stopped gracefully (exit code {code})")
    ok = code == 0 and len(log) == args.episodes and all(r["steps"] == args.steps for r in log)
    print("OK: all episodes completed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
