"""Fork and checkpoint latency against episode length, by snapshot (echo) and by replay (coding).

python scripts/bench_fork.py [--sandbox subprocess] [--lengths 1,10,100]

Starts its own server (loopback, a temporary checkpoint directory), prints one line per case:
the episode length, the method, the median fork latency over a few forks, the checkpoint's
size on disk, and the time to open a session from that checkpoint.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

from openenv_ws import connect
from openenv_ws.server.local import free_port

CASES = {"echo": ({"message": "hello"}, "snapshot"), "coding": ({"code": "x = 1\nprint(x)"}, "replay")}


async def case(url: str, env: str, length: int, ckpt_dir: Path) -> dict:
    action, method = CASES[env]
    async with connect(url, env, request_timeout=600) as session:
        await session.reset(seed=1)
        for _ in range(length):
            await session.step(action)
        forks = []
        for _ in range(3):
            started = time.perf_counter()
            child = await session.fork()
            forks.append(time.perf_counter() - started)
            await child.close()
        checkpoint = await session.checkpoint()
    size = (ckpt_dir / f"{checkpoint}.ckpt").stat().st_size
    started = time.perf_counter()
    async with connect(url, checkpoint=checkpoint, request_timeout=600) as restored:
        await restored.state()
        opened = time.perf_counter() - started
    return {
        "env": env,
        "steps": length,
        "method": method,
        "fork_ms": round(statistics.median(forks) * 1e3, 1),
        "checkpoint_bytes": size,
        "open_from_checkpoint_ms": round(opened * 1e3, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandbox", default="subprocess", choices=["inprocess", "subprocess"])
    parser.add_argument("--lengths", default="1,10,100")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "openenv_ws", "serve", "echo", "coding", "--port", str(port)]
        cmd += ["--sandbox", args.sandbox, "--checkpoint-dir", tmp, "--log-level", "warning"]
        server = subprocess.Popen(cmd)
        try:
            for _ in range(300):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            print("| env | steps | method | fork (median of 3) | checkpoint size | open from checkpoint |")
            print("|---|---|---|---|---|---|")
            for env in CASES:
                for length in [int(n) for n in args.lengths.split(",")]:
                    r = anyio.run(case, f"ws://127.0.0.1:{port}", env, length, Path(tmp))
                    print(
                        f"| {r['env']} | {r['steps']} | {r['method']} | {r['fork_ms']} ms | {r['checkpoint_bytes']} B "
                        f"| {r['open_from_checkpoint_ms']} ms |",
                        flush=True,
                    )
        finally:
            server.terminate()
            server.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
