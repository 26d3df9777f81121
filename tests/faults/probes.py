"""What a fault test watches from outside the server: its memory, the processes it leaves behind, its log,
and a neighbour session that must keep stepping, exactly, while another session is hurt.

Everything here reads /proc or talks to the server as a client would: no hooks inside the server.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from openenv_ws import EnvSession, connect

from ..conftest import ServerProcess

NEIGHBOUR_ACTIONS: dict[str, dict[str, Any]] = {"flaky": {"op": "ok"}, "echo": {"message": "neighbour"}}
"""A harmless step of each test environment a neighbour may run."""


# ---------------------------------------------------------------- memory


def rss_mib(pid: int) -> float:
    """Resident memory of a process (``VmRSS`` of /proc/PID/status), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class PeakRss:
    """The highest resident memory of a process seen while a fault ran (sampled, so a peak freed
    again before the fault ends still counts)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = self.peak = rss_mib(pid)

    @property
    def growth_mib(self) -> float:
        return self.peak - self.before

    def sample(self) -> None:
        try:
            self.peak = max(self.peak, rss_mib(self.pid))
        except (FileNotFoundError, ProcessLookupError):
            pass  # the process is gone (a kill test): its last sample stands

    async def _run(self, interval: float) -> None:
        while True:
            self.sample()
            await anyio.sleep(interval)


@asynccontextmanager
async def peak_rss(pid: int, interval: float = 0.02) -> AsyncIterator[PeakRss]:
    """Sample a process's RSS in the background while the body runs."""
    peak = PeakRss(pid)
    async with anyio.create_task_group() as tg:
        tg.start_soon(peak._run, interval)
        try:
            yield peak
        finally:
            tg.cancel_scope.cancel()
    peak.sample()


# ---------------------------------------------------------------- processes


def alive(pid: int) -> bool:
    """Running or stopped; a zombie (dead, not yet reaped by its parent) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None


def forkservers(server) -> set[int]:
    """The subprocess backend's fork-servers: they live as long as the server, not as a session."""
    described = server.health()["backend"].get("forkservers") or {}
    return {fs["pid"] for fs in described.values() if fs.get("pid")}


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``: its children, theirs, and so on."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (parent := _parent(int(entry))) is not None:
            children.setdefault(parent, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and alive(child):
                found.add(child)
                todo.append(child)
    return found


def describe(pids: Iterable[int]) -> list[str]:
    """``pid: command line`` of each process still alive, for an assertion's message."""
    lines = []
    for pid in sorted(pids):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except FileNotFoundError:
            continue
        lines.append(f"{pid}: {cmdline.strip()}")
    return lines


async def left_after(pids: Iterable[int], timeout: float) -> list[str]:
    """Wait up to ``timeout`` s for every process of ``pids`` to end; the ones still alive, described."""
    pids = set(pids)
    with anyio.move_on_after(timeout):
        while any(alive(pid) for pid in pids):
            await anyio.sleep(0.05)
    return describe(pid for pid in pids if alive(pid))


# ---------------------------------------------------------------- the server's log


def log_mark(server: ServerProcess) -> int:
    """Where the server's output ends now: ``tracebacks(server, since=mark)`` looks only past it."""
    return len(server.output())


def tracebacks(server: ServerProcess, since: int = 0) -> str:
    """What of the server's output (past ``since``) belongs to a traceback ('' when there is none)."""
    output = server.output()[since:]
    start = output.find("Traceback")
    return "" if start < 0 else output[max(0, start - 300) : start + 3000]


# ---------------------------------------------------------------- a neighbour that must not notice


class Neighbour:
    """A session of the same server stepping in the background (every ``interval`` s) while a fault hits
    another session. Any error of its own fails the test; at the end its step count must be exact."""

    def __init__(self, session: EnvSession, action: dict[str, Any], interval: float) -> None:
        self.session = session
        self.action = action
        self.interval = interval
        self.steps = 0
        self._stop = anyio.Event()

    async def _run(self) -> None:
        while not self._stop.is_set():
            with anyio.fail_after(30):  # a neighbour held up this long is affected
                await self.session.step(self.action)
            self.steps += 1
            with anyio.move_on_after(self.interval):
                await self._stop.wait()

    async def steps_on(self, count: int = 3, timeout: float = 10.0) -> None:
        """Wait until it has stepped ``count`` more times: it is live now, not only before the fault."""
        target = self.steps + count
        with anyio.fail_after(timeout):
            while self.steps < target:
                await anyio.sleep(0.01)


@asynccontextmanager
async def neighbour(url: str, env: str = "flaky", interval: float = 0.02) -> AsyncIterator[Neighbour]:
    """A session on ``url`` that steps until the body ends; then its environment must count exactly the
    steps it answered (nothing lost, nothing applied twice)."""
    async with connect(url, env=env) as session:
        await session.reset()
        stepping = Neighbour(session, NEIGHBOUR_ACTIONS[env], interval)
        async with anyio.create_task_group() as tg:
            tg.start_soon(stepping._run)
            yield stepping
            stepping._stop.set()
        assert stepping.steps > 0
        assert (await session.state())["step_count"] == stepping.steps
