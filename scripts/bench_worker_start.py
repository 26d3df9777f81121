"""What a sandbox start costs before the environment runs: the worker's imports and its start-up.

Every session of the subprocess and Docker backends starts ``python -m openenv_ws.sandbox.worker``,
which imports the worker and then the environment's module. This prints, over fresh interpreters:

- the imports of the worker plus the environment's module (``python -X importtime``: the sum of
  the top-level imports' cumulative times), and the wall and CPU time of that ``python -c``;
- which client modules those imports pulled in (a worker needs none);
- a real start through the subprocess backend: open -> ``opened``, open + first reset, and the
  CPU the worker process used for it (all of its life: start-up, imports, open, one reset).

Wall times move with the machine's load; CPU times much less: compare those on a busy machine.

    python scripts/bench_worker_start.py --runs 20            # the gym env, CartPole-v1
    python scripts/bench_worker_start.py --env echo --runs 20
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

import anyio

from openenv_ws.protocol import Reset
from openenv_ws.registry import resolve
from openenv_ws.sandbox.subprocess import SubprocessBackend

CLIENT_CHECK = (
    "import sys; print(sorted(m for m in sys.modules if m.startswith('openenv_ws.client') or m == 'websockets'))"
)


def imports_ms(code: str) -> float:
    """The summed cumulative time of the top-level imports of ``code`` in a fresh interpreter (ms)."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True)
    total = 0
    for line in err.stderr.splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            _self, cumulative, name = line.removeprefix("import time:").split("|")
            if not name.startswith("  "):  # nested imports are in their parent's cumulative time
                total += int(cumulative)
    return total / 1000


def children_cpu_s() -> float:
    """CPU (user + system) of this process's children that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_ms(code: str) -> tuple[float, float]:
    """Wall and CPU time of ``python -c code`` (ms)."""
    cpu, start = children_cpu_s(), time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return (time.perf_counter() - start) * 1000, (children_cpu_s() - cpu) * 1000


async def starts_ms(env: str, options: dict[str, object], runs: int) -> tuple[list[float], ...]:
    """Per start: open -> opened, open + first reset, and the worker's CPU (ms)."""
    spec, backend = resolve(env), SubprocessBackend()
    opened, reset, cpu = [], [], []
    async with anyio.create_task_group() as tg:
        await tg.start(backend.run, [spec])
        for _ in range(runs):
            cpu_before, start = children_cpu_s(), time.perf_counter()
            sandbox = await backend.open(spec, options)
            opened.append((time.perf_counter() - start) * 1000)
            await sandbox.request(Reset(seq=1), None)
            reset.append((time.perf_counter() - start) * 1000)
            await sandbox.close()  # kills and waits for the worker: its CPU is counted now
            cpu.append((children_cpu_s() - cpu_before) * 1000)
        tg.cancel_scope.cancel()
    return opened, reset, cpu


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):6.0f} ms   min {min(values):6.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--env", default="gym", help="a registered env name (default gym)")
    parser.add_argument("--runs", type=int, default=20, help="fresh interpreters / sandbox starts per figure")
    args = parser.parse_args()
    module = resolve(args.env).target.partition(":")[0]
    options: dict[str, object] = {"env_id": "CartPole-v1"} if args.env == "gym" else {}
    code = f"import openenv_ws.sandbox.worker; import {module}"
    print(f"{sys.executable} -c {code!r}")
    print("  imports (-X importtime)   ", summary([imports_ms(code) for _ in range(args.runs)]))
    wall, cpu = zip(*(run_ms(code) for _ in range(args.runs)), strict=True)
    print("  python -c wall time       ", summary(list(wall)))
    print("  python -c CPU time        ", summary(list(cpu)))
    loaded = subprocess.run([sys.executable, "-c", f"{code}; {CLIENT_CHECK}"], capture_output=True, text=True)
    print("  client modules imported   ", loaded.stdout.strip() or loaded.stderr.strip())
    opened, reset, cpu = anyio.run(starts_ms, args.env, options, args.runs)
    print(f"subprocess backend, {args.env} {options or ''}")
    print("  open -> opened            ", summary(opened))
    print("  open + first reset        ", summary(reset))
    print("  worker CPU, whole life    ", summary(cpu))


if __name__ == "__main__":
    main()
