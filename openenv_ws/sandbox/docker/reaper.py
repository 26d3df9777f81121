"""No orphans: whose a sandbox container is, and removing those whose server is gone.

Every container carries labels naming the server instance that started it and how to check
that server is still alive: the host, the boot, the server's pid and that process's start
time (a reused pid does not look alive), and, for a server that itself runs in a container
(docker compose), that container's id. A server on the same host is checked exactly; a
containerized one by whether its container still runs; any other is trusted until the
container's lease expires. A server removes at start what a crashed predecessor left, and
again periodically; ``openenv-ws gc`` removes on demand.

A server with a state directory (``serve --state-dir``) hands its containers to the next server on
that directory, so they belong to its instance, not to one process: their labels name the
instance's host directory (``openenv-ws.adopt-dir``) instead of a pid, and the owner file there
names the process that holds the instance now and until when a successor may still take it over
(``adopt-until``, renewed while the holder lives). Such a container is removed once its holder is
gone and that time has passed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import docker.errors

from .containers import IPC_ROOT, DockerOps, remove_dir

log = logging.getLogger("openenv_ws.sandbox.docker")

PREFIX = "openenv-ws."
MANAGED = PREFIX + "managed"
SERVER = PREFIX + "server"
SESSION = PREFIX + "session"
LEASE = PREFIX + "lease-expires"
ENV = PREFIX + "env"
HOST = PREFIX + "host"
BOOT = PREFIX + "boot"
PID = PREFIX + "pid"
PID_START = PREFIX + "pid-start"
SERVER_CONTAINER = PREFIX + "server-container"
ADOPT_DIR = PREFIX + "adopt-dir"
"""On the containers of a server with a state directory: the instance's host directory (its owner file)."""
HOLDER_PID = PREFIX + "holder-pid"
HOLDER_PID_START = PREFIX + "holder-pid-start"
ADOPT_UNTIL = PREFIX + "adopt-until"
"""In such an instance's owner file: the process holding it, and until when a successor may take it over."""
ENGINE = PREFIX + "engine"

OWNER_FILE = "owner.json"
"""In each server instance's host directory: that server's labels, to judge the directory alone."""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def own_container() -> str:
    """The id of the container this process runs in ("" on a plain host): the engine bind-mounts
    ``/etc/hostname`` and friends from ``/var/lib/docker/containers/<id>/``."""
    try:
        found = re.search(r"/containers/([0-9a-f]{64})/", Path("/proc/self/mountinfo").read_text())
    except OSError:
        return ""
    return found.group(1) if found else ""


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), or None if it does not run."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if not fields or fields[0] in ("Z", "X"):
        return None  # a zombie is dead
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True)
class Owner:
    """A server instance, as its containers' labels describe it."""

    instance: str
    host: str
    boot: str
    pid: int
    pid_start: str
    container: str = ""
    engine: str = ""
    """The ID of the engine that runs ``container`` (directories may be shared by several engines)."""
    adopt_dir: str = ""
    """Set for a server with a state directory: its containers outlive it (see the module's doc)."""

    @classmethod
    def current(cls, instance: str) -> Owner:
        pid = os.getpid()
        return cls(instance, socket.gethostname(), _boot_id(), pid, process_start(pid) or "", own_container())

    def labels(self) -> dict[str, str]:
        held = {ADOPT_DIR: self.adopt_dir} if self.adopt_dir else {PID: str(self.pid), PID_START: self.pid_start}
        return {
            MANAGED: "1",
            SERVER: self.instance,
            HOST: self.host,
            BOOT: self.boot,
            **held,
            **({SERVER_CONTAINER: self.container} if self.container else {}),
            **({ENGINE: self.engine} if self.engine else {}),
        }

    def owner_file(self, adopt_grace: float) -> dict[str, str]:
        """What the instance's owner file says: its labels and, when adoptable, who holds it until when."""
        if not self.adopt_dir:
            return self.labels()
        holder = {HOLDER_PID: str(self.pid), HOLDER_PID_START: self.pid_start}
        return {**self.labels(), **holder, ADOPT_UNTIL: f"{time.time() + adopt_grace:.0f}"}

    def _judge_adoptable(self, labels: dict[str, str]) -> str | None:
        """A container (or directory) of an instance that outlives its server: judged by its owner file."""
        if labels.get(HOST) != self.host:
            return None  # another host's: its lease decides (below, in judge)
        if labels.get(BOOT) != self.boot:
            return "its server ran before this host rebooted"
        try:
            held = json.loads((Path(labels[ADOPT_DIR]) / OWNER_FILE).read_text())
        except (OSError, ValueError):
            return "its server's directory is gone"
        pid = held.get(HOLDER_PID, "")
        if pid.isdigit() and process_start(int(pid)) == held.get(HOLDER_PID_START):
            return None
        try:
            if time.time() < float(held.get(ADOPT_UNTIL, "")):
                return None  # its server is gone: a successor on the same state directory may still take it
        except ValueError:
            pass
        return "its server is gone and no successor took it over in time"

    def judge(self, labels: dict[str, str], running: frozenset[str] | None = None) -> str | None:
        """Why the server that labelled a container is gone, or None if it may be alive.

        ``running`` holds the ids of the engine's running containers, for servers that run in one.
        """
        if labels.get(SERVER) == self.instance:
            return None
        if labels.get(ADOPT_DIR) and labels.get(HOST) == self.host:
            return self._judge_adoptable(labels)
        server_container = labels.get(SERVER_CONTAINER)
        same_engine = labels.get(ENGINE, self.engine) == self.engine  # ``running`` lists this engine's only
        if server_container and same_engine and running is not None and server_container not in running:
            return f"its server's container {server_container[:12]} no longer runs"
        if labels.get(HOST) == self.host and labels.get(PID, "").isdigit():
            if labels.get(BOOT) != self.boot:
                return "its server ran before this host rebooted"
            pid = int(labels[PID])
            if process_start(pid) != labels.get(PID_START):
                return f"its server (pid {pid} on this host) is gone"
            return None
        try:
            expires = float(labels.get(LEASE, ""))
        except ValueError:
            return None
        if time.time() > expires:
            return "its lease expired"
        return None


async def with_engine(owner: Owner, ops: DockerOps) -> Owner:
    """``owner`` with the ID of the engine ``ops`` reaches (what its labels and directory then carry)."""
    info = await ops.call(ops.api.info)
    return replace(owner, engine=str(info.get("ID", "")))


@dataclass(frozen=True)
class Removed:
    id: str
    name: str
    server: str
    session: str
    status: str
    reason: str

    def __str__(self) -> str:
        return f"{self.id[:12]} {self.name} server={self.server} session={self.session} ({self.status}): {self.reason}"


async def managed_containers(ops: DockerOps, server: str | None = None) -> list[dict[str, Any]]:
    labels = [f"{MANAGED}=1"] + ([f"{SERVER}={server}"] if server else [])
    return await ops.call(ops.api.containers, all=True, filters={"label": labels})


async def running_containers(ops: DockerOps) -> frozenset[str]:
    return frozenset(info["Id"] for info in await ops.call(ops.api.containers))


async def remove_all(ops: DockerOps, doomed: list[tuple[dict[str, Any], str]]) -> list[Removed]:
    """Remove containers concurrently (the ops limiter bounds it); returns what was removed."""
    removed: list[Removed] = []

    async def remove(info: dict[str, Any], reason: str) -> None:
        try:
            await ops.remove(info["Id"])
        except docker.errors.DockerException as exc:
            log.warning("could not remove container %s: %s", info["Id"][:12], exc)
            return
        labels = info.get("Labels") or {}
        names = info.get("Names") or ["?"]
        removed.append(
            Removed(
                info["Id"],
                names[0].lstrip("/"),
                labels.get(SERVER, "?"),
                labels.get(SESSION, "?"),
                info.get("State", "?"),
                reason,
            )
        )

    async with anyio.create_task_group() as tg:
        for info, reason in doomed:
            tg.start_soon(remove, info, reason)
    return removed


async def sweep(ops: DockerOps, me: Owner, tracked: set[str], running: frozenset[str]) -> list[Removed]:
    """Remove containers whose server is gone, and this server's own exited ones it no longer tracks."""
    doomed = []
    for info in await managed_containers(ops):
        labels = info.get("Labels") or {}
        reason = me.judge(labels, running)
        mine = labels.get(SERVER) == me.instance
        if reason is None and mine and info["Id"] not in tracked and info.get("State") in ("exited", "dead"):
            reason = "left behind by this server"
        if reason is not None:
            doomed.append((info, reason))
    return await remove_all(ops, doomed)


async def gc(*, dead_only: bool = False, server: str | None = None) -> list[Removed]:
    """``openenv-ws gc``: remove every managed container (or only those whose server is gone)."""
    ops = await DockerOps.connect()
    try:
        me = await with_engine(Owner.current("gc"), ops)
        doomed = []
        running = await running_containers(ops)
        for info in await managed_containers(ops, server):
            reason = me.judge(info.get("Labels") or {}, running)
            if reason is None and dead_only:
                continue
            doomed.append((info, reason or "removed by openenv-ws gc"))
        removed = await remove_all(ops, doomed)
        await sweep_dirs(IPC_ROOT, me, running)  # the host directories of servers that are gone
    finally:
        await ops.aclose()
    return removed


def write_owner(directory: Path, owner: Owner, adopt_grace: float = 0.0) -> None:
    """Create the server instance's host directory, with the owner file that lets others judge it.

    The directory is private (0700): a container reaches its session's socket through the
    bind mount, never through this path, so no other host user can connect to a socket
    before the container does. The shared root is sticky and world-writable, like /tmp.
    """
    root = directory.parent
    if not root.exists():
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o1777)
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    tmp = directory / (OWNER_FILE + ".tmp")
    tmp.write_text(json.dumps(owner.owner_file(adopt_grace)))
    tmp.replace(directory / OWNER_FILE)  # read by other servers at any time: never half written


def dead_dirs(root: Path, me: Owner, running: frozenset[str]) -> list[Path]:
    """The host directories of server instances that are gone."""
    try:
        children = [p for p in root.iterdir() if p.is_dir() and p.name != me.instance]
    except FileNotFoundError:
        return []
    dead = []
    for directory in children:
        try:
            labels = json.loads((directory / OWNER_FILE).read_text())
        except (OSError, ValueError):
            # No owner file: a server writes it first thing, so this one is broken (or very new).
            if time.time() - directory.stat().st_mtime > 600:
                dead.append(directory)
            continue
        if me.judge(labels, running) is not None:
            dead.append(directory)
    return dead


async def sweep_dirs(root: Path, me: Owner, running: frozenset[str]) -> list[Path]:
    dead = await anyio.to_thread.run_sync(dead_dirs, root, me, running)
    for directory in dead:
        await remove_dir(directory)
    return dead
