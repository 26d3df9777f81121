"""Restart to first resumed step: a real server with a state directory, killed (or handed off) mid-episode.

Starts ``openenv-ws serve echo --state-dir DIR`` on a free port, opens N sessions over
``multiplex()`` and steps each, then ``kill -9`` (or SIGTERM with ``--handoff``) and starts the
server again on the same port and directory. Reports, from the kill (or the signal):

- ``up``: the new server answers ``/healthz`` (its sessions taken back: adopted, replayed or lost);
- ``first``: the first client's next step answered (it resumed transparently);
- ``all``: every session's next step answered;

and checks that every episode's step count is exact. Sandboxes: Docker (adopted) or subprocess (replayed).

    python scripts/restart_bench.py --sessions 16 --image openenv-ws-test/sandbox:dev
    python scripts/restart_bench.py --sessions 16 --image openenv-ws-test/sandbox:dev --handoff
    python scripts/restart_bench.py --sessions 16 --sandbox subprocess --steps 50
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import docker
import httpx

from openenv_ws.client import multiplex
from openenv_ws.server.local import free_port

RESUME = {"reconnect_attempts": 400, "backoff": 0.02, "max_backoff": 0.1}


def start(args: list[str], port: int, log: Path) -> tuple[subprocess.Popen, float, dict]:
    cmd = [sys.executable, "-m", "openenv_ws", "serve", *args, "--port", str(port), "--log-level", "warning"]
    began = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    while time.monotonic() - began < 120:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            if answer.status_code == 200:
                return proc, time.monotonic(), answer.json()
        time.sleep(0.02)
    proc.kill()
    raise SystemExit(f"the server did not answer within 120 s; see {log}")


async def run(opts: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="restart-bench-"))
    port = free_port()
    args = ["echo", "--sandbox", opts.sandbox, "--state-dir", str(work / "state")]
    args += ["--image", opts.image] if opts.image else []
    args += ["--handoff"] if opts.handoff else []
    log = work / "server.log"
    procs: list[subprocess.Popen] = []
    instance = None
    try:
        proc, _, health = await anyio.to_thread.run_sync(start, args, port, log)
        procs.append(proc)
        instance = health["backend"].get("instance")
        url = f"ws://127.0.0.1:{port}"
        async with (
            multiplex(url, connections=min(4, opts.sessions), **RESUME) as mux,
            contextlib.AsyncExitStack() as stack,
        ):
            sessions = [await stack.enter_async_context(mux.connect(env="echo")) for _ in range(opts.sessions)]
            async with anyio.create_task_group() as tg:
                for session in sessions:

                    async def warm(s=session) -> None:
                        await s.reset()
                        for i in range(opts.steps):
                            await s.step({"message": f"m{i}"})

                    tg.start_soon(warm)
            stopped = time.monotonic()
            if opts.handoff:
                proc.send_signal(signal.SIGTERM)
            else:
                proc.kill()
            await anyio.to_thread.run_sync(proc.wait, 120)
            gone = time.monotonic()
            proc, up, health = await anyio.to_thread.run_sync(start, args, port, log)
            procs.append(proc)
            done: list[float] = []

            async def resume(s) -> None:
                await s.step({"message": "after"})
                done.append(time.monotonic())

            async with anyio.create_task_group() as tg:
                for session in sessions:
                    tg.start_soon(resume, session)
            for session in sessions:
                count = (await session.state())["step_count"]
                assert count == opts.steps + 1, f"{session.session_id}: {count} steps, not {opts.steps + 1}"
        return {
            "sandbox": opts.sandbox,
            "mode": "handoff" if opts.handoff else "kill -9",
            "sessions": opts.sessions,
            "steps_before": opts.steps,
            "old_server_gone_s": round(gone - stopped, 3),
            "up_s": round(up - stopped, 3),
            "taken_back": health.get("restart"),
            "first_resumed_step_s": round(min(done) - stopped, 3),
            "all_resumed_s": round(max(done) - stopped, 3),
            "step_counts_exact": True,
        }
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if opts.sandbox == "docker" and instance:  # whatever the run left: the servers' own cleanup ran first
            client = docker.from_env()
            for container in client.containers.list(all=True, filters={"label": f"openenv-ws.server={instance}"}):
                container.remove(force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sandbox", default="docker", choices=["docker", "subprocess", "inprocess"])
    parser.add_argument("--image", help="the Docker image holding echo (e.g. the test image)")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="steps of each episode before the restart")
    parser.add_argument("--handoff", action="store_true", help="SIGTERM with --handoff instead of kill -9")
    opts = parser.parse_args()
    print(json.dumps(anyio.run(run, opts)))


if __name__ == "__main__":
    main()
