"""The memory budget of the warm pools (``-B pool_memory=2g``) and what a container really uses.

Idle pooled containers are paused, so they cost no CPU, but each still holds its memory. The
budget bounds the sum over every pool of this server: a container's charge is its measured
use once it is pooled (a paused container cannot grow), and before that the largest use
measured for its environment (or :data:`FIRST_GUESS`). A refill starts only if its charge
fits; measurements that come out larger make the pool drop containers until it fits again.

What a container uses is read as the engine's CLI reads it: the cgroup's usage less its
inactive file cache. On the engine's host the cgroup files are read directly (microseconds);
elsewhere (a server in a container) through the engine's stats call (hundreds of ms).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import docker.errors
import requests.exceptions

from .containers import DockerOps

FIRST_GUESS = 32 << 20
"""What a pooled container is charged before any of its environment's was measured (bytes)."""

_CGROUP = Path("/sys/fs/cgroup")


class MemoryBudget:
    """Bytes charged to pooled containers (and reserved for refills under way), against a limit."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.charged: dict[str, int] = {}  # container id -> bytes
        self.reserved = 0
        self._largest: dict[str, int] = {}  # env -> the most any of its containers used

    @property
    def used(self) -> int:
        return sum(self.charged.values()) + self.reserved

    def estimate(self, env: str) -> int:
        return self._largest.get(env, FIRST_GUESS)

    def fits(self, env: str) -> bool:
        return self.limit is None or self.used + self.estimate(env) <= self.limit

    def reserve(self, env: str) -> int:
        amount = self.estimate(env)
        self.reserved += amount
        return amount

    def unreserve(self, amount: int) -> None:
        self.reserved -= amount

    def charge(self, container_id: str, env: str, amount: int | None = None) -> None:
        self.charged[container_id] = self.estimate(env) if amount is None else amount
        if amount is not None:
            self._largest[env] = max(self._largest.get(env, 0), amount)

    def release(self, container_id: str) -> None:
        self.charged.pop(container_id, None)

    def excess(self) -> int:
        return 0 if self.limit is None else max(0, self.used - self.limit)


def _read_cgroup(container_id: str) -> int | None:
    """Usage less inactive file cache from the cgroupfs hierarchy (v1 or v2); None if not visible here."""
    for directory, usage_file, inactive_key in (
        (_CGROUP / "memory" / "docker" / container_id, "memory.usage_in_bytes", "total_inactive_file"),
        (_CGROUP / "system.slice" / f"docker-{container_id}.scope", "memory.current", "inactive_file"),
        (_CGROUP / "docker" / container_id, "memory.current", "inactive_file"),
    ):
        try:
            usage = int((directory / usage_file).read_text())
            stat = (directory / "memory.stat").read_text()
        except (OSError, ValueError):
            continue
        inactive = 0
        for line in stat.splitlines():
            key, _, value = line.partition(" ")
            if key == inactive_key:
                inactive = int(value)
        return max(0, usage - inactive)
    return None


async def container_memory(ops: DockerOps, container_id: str) -> int | None:
    """Bytes a container uses now, or None if the engine would not say."""
    measured = await anyio.to_thread.run_sync(_read_cgroup, container_id)
    if measured is not None:
        return measured
    try:
        stats = await ops.call(ops.api.stats, container_id, stream=False, one_shot=True)
    except (docker.errors.DockerException, requests.exceptions.RequestException, ValueError):
        return None  # no answer, or not JSON (seen from an engine busy with a swarm node's comings and goings)
    if not isinstance(stats, dict):
        return None
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage")
    if not isinstance(usage, int):
        return None
    detail = memory.get("stats") or {}
    inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    return max(0, usage - int(inactive))
