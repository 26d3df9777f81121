"""The Docker backend: one hardened container per session, from a warm pool, and no orphans.

Each session's environment runs in its own container, started from the environment's image
(``openenv-ws build ENV``), confined by its :class:`~openenv_ws.env.SandboxSettings` (no
network, read-only root, no capabilities, a non-root user, memory/CPU/pids limits unless the
env opens them). The worker talks to the server over a Unix socket in a per-session host
directory (see :mod:`.containers`), so the frames are the same as the subprocess backend's.

Around that: warm pools and the cap on starts (:mod:`.pool`), one event stream that sees
every container die (:mod:`.exits`), and the labels and sweeps that leave no container
behind, even after a server was killed (:mod:`.reaper`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import docker
import docker.errors

from ...errors import SandboxStartError
from ...registry import EnvSpec
from ...units import parse_size
from ..base import Backend, Sandbox, new_session_id
from ..relay import RelaySandbox
from . import reaper
from .adopt import reattach
from .containers import (
    FAST_RUNTIME,
    IPC_ROOT,
    LOG_MAX_SIZE,
    Container,
    DockerOps,
    Runtime,
    exit_reason,
    launch,
    ping,
    remove_dir,
)
from .exits import ExitMonitor
from .images import build_command, image_for
from .memory import MemoryBudget, container_memory
from .pool import PoolSettings, WarmPool
from .slots import StartSlots

log = logging.getLogger("openenv_ws.sandbox.docker")

EXIT_REASON_WAIT = 3.0
"""After end-of-stream, how long to wait for the engine to report the exit (it is usually ms)."""


def _subdirs(path: Path) -> list[Path]:
    try:
        return [child for child in path.iterdir() if child.is_dir()]
    except FileNotFoundError:
        return []


class DockerSandbox(RelaySandbox):
    def __init__(self, backend: DockerBackend, container: Container, memory: str) -> None:
        super().__init__(container.channel)
        container.channel.max_frame = backend.max_frame_bytes
        self._backend = backend
        self.container = container
        self._memory = memory
        self.id = container.id[:12]
        self.session_id = container.session_id

    async def _reason(self) -> str:
        with anyio.move_on_after(EXIT_REASON_WAIT):
            await self.container.watch.exited.wait()
        return await self._backend._exit_reason(self.container, self._memory)

    def _exited(self) -> bool:
        return self.container.exited

    async def _stop(self) -> None:
        await self._backend.discard(self.container)

    async def wait_exit(self) -> str:
        await self.container.watch.exited.wait()
        return await self._backend._exit_reason(self.container, self._memory)

    def ref(self) -> dict[str, Any]:
        return {"container": self.container.id, "ipc": self.container.session_id}


class DockerBackend(Backend):
    """Sandboxes in Docker containers.

    ``image`` overrides every env's image. Each env has a warm pool of started, paused
    containers, sized by recent demand between ``pool`` (its floor) and ``pool_max``, within
    ``pool_memory`` for all pools together (``pool_demand=False``: always ``pool``). At most
    ``max_starting`` containers start at once (pool refills included, sessions first) and an
    open waits at most ``start_timeout`` for one; ``lease_s`` is how long a container may live
    when its server cannot be checked (another host). ``runtime`` is the OCI runtime of every
    container (any runtime dockerd knows, e.g. ``runsc`` for gVisor); "auto" (the default) leaves
    each env its own (``SandboxSettings.runtime``) and gives the others crun where the engine has
    it, "default" the engine's default; ``log_max_size`` is the most of a container's output the
    engine keeps.
    """

    name = "docker"

    def __init__(
        self,
        image: str | None = None,
        pool: int = 0,
        max_starting: int = 4,
        lease_s: float = 86400.0,
        *,
        pool_demand: bool = True,
        pool_max: int = 256,
        pool_memory: str | int = "4g",
        pool_window: float = 600.0,
        pool_span: float = 10.0,
        pool_running: int = 2,
        health_timeout: float = 2.0,
        start_timeout: float = 60.0,
        ready_timeout: float = 30.0,
        open_timeout: float = 30.0,
        reap_interval: float = 30.0,
        ipc_root: str | Path = IPC_ROOT,
        docker_threads: int = 16,
        runtime: str | None = None,
        log_max_size: str = LOG_MAX_SIZE,
    ) -> None:
        if pool < 0 or max_starting < 1 or pool_max < 0 or pool_running < 0:
            raise ValueError("pool, pool_max and pool_running must be >= 0 and max_starting >= 1")
        forced = None if runtime in (None, "", "auto", "default") else runtime
        self.runtime = Runtime(forced, log_max_size)
        self.runtime_option = runtime or "auto"
        self.image = image
        self.pool_settings = PoolSettings(
            floor=pool,
            ceiling=max(pool, pool_max),
            demand=bool(pool_demand),
            window=pool_window,
            span=pool_span,
            running=pool_running,
            health_timeout=health_timeout,
            max_age=lease_s / 2,
        )
        self.pool_memory = parse_size(pool_memory) if pool_memory else None
        self.max_starting = max_starting
        self.lease_s = lease_s
        self.start_timeout = start_timeout
        self.ready_timeout = ready_timeout
        self.open_timeout = open_timeout
        self.reap_interval = reap_interval
        self.owner = reaper.Owner.current("srv-" + secrets.token_hex(6))
        self.ipc_root = Path(ipc_root)
        self.ipc_dir = self.ipc_root / self.owner.instance
        self._threads = docker_threads
        self._ops: DockerOps | None = None
        self._monitor: ExitMonitor | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._slots: StartSlots | None = None
        self._budget = MemoryBudget(self.pool_memory)
        self._pools: dict[str, WarmPool] = {}
        self._live: dict[str, Container] = {}  # every container this server holds, pooled or in a session
        self._launching = 0  # containers starting right now (never above max_starting)
        self._starting: set[str] = set()  # their sessions: not yet in _live, and not a predecessor's
        self._stopped = anyio.Event()
        self._closing = False
        self.orphans_removed = 0
        self._kept: set[str] = set()
        self._kept_dirs: set[str] = set()
        """Containers handed to the next server (``hand_off``): left running when this one stops."""

    # ------------------------------------------------------------ lifetime

    async def run(
        self, specs: Sequence[EnvSpec], *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            self._ops = await DockerOps.connect(self._threads)
            self.owner = await reaper.with_engine(self.owner, self._ops)
            await self._check_runtimes(specs)
            monitor = ExitMonitor(docker.from_env, f"{reaper.SERVER}={self.owner.instance}")
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._slots = StartSlots(self.max_starting, tg)
                await tg.start(monitor.run)
                self._monitor = monitor
                if self.adopt_grace:  # serve --state-dir: the containers belong to the instance, not to this process
                    self.owner = dataclasses.replace(self.owner, adopt_dir=str(self.ipc_dir))
                await anyio.to_thread.run_sync(reaper.write_owner, self.ipc_dir, self.owner, self.adopt_grace)
                await self._sweep()  # what a crashed predecessor left, before anything new starts
                for spec in specs:
                    await self._warn_if_missing(spec)
                    self._pool(spec)
                tg.start_soon(self._reap_forever)
                settings = self.pool_settings
                log.info(
                    "docker backend %s: runtime %s; pool per env %s, %d-%d, within %s; %d starting at once",
                    self.owner.instance,
                    self.runtime.name or self.runtime.default or "(the engine's default)",
                    "by demand" if settings.demand else "fixed",
                    settings.floor,
                    settings.ceiling if settings.demand else settings.floor,
                    f"{self.pool_memory >> 20} MiB" if self.pool_memory else "no memory budget",
                    self.max_starting,
                )
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                await self._cleanup()
                self._stopped.set()

    async def _check_runtimes(self, specs: Sequence[EnvSpec]) -> None:
        """Refuse to start on a runtime the engine does not know: every session there would fail."""
        assert self._ops is not None
        known = (await self._ops.call(self._ops.api.info)).get("Runtimes") or {}
        if self.runtime_option == "auto" and FAST_RUNTIME in known:
            self.runtime = dataclasses.replace(self.runtime, default=FAST_RUNTIME)
        wanted = {name for spec in specs if (name := self.runtime.for_env(spec.cls.sandbox))}
        unknown = sorted(wanted - set(known))
        if unknown:
            raise SandboxStartError(
                f"the Docker engine knows no runtime {unknown[0]!r} (it knows: {', '.join(sorted(known))}); "
                "scripts/setup_docker.sh registers runsc (gVisor)",
                fatal=True,
            )

    async def aclose(self) -> None:
        """Remove every container and directory of this server (pooled ones too)."""
        self._closing = True
        if self._tg is None:
            return
        self._tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(60):
            await self._stopped.wait()

    async def _cleanup(self) -> None:
        self._closing = True
        ops = self._ops
        if ops is None:
            return
        try:
            for pool in self._pools.values():
                for container in pool.close():
                    await container.channel.aclose()
            for container in self._live.values():
                if container.id in self._kept:
                    await container.channel.aclose()  # its worker waits for the next server
            mine = await reaper.managed_containers(ops, self.owner.instance)
            leftovers = [(info, "server shutting down") for info in mine if info["Id"] not in self._kept]
            removed = await reaper.remove_all(ops, leftovers)
            if removed:
                log.info("docker backend %s: removed %d containers", self.owner.instance, len(removed))
        except docker.errors.DockerException as exc:
            log.warning("docker backend %s: cleanup failed: %s", self.owner.instance, exc)
        self._live.clear()
        if self._kept:  # a hand-off: the kept containers' socket directories stay (they are bind-mounted)
            for directory in await anyio.to_thread.run_sync(_subdirs, self.ipc_dir):
                if directory.name not in self._kept_dirs:
                    await remove_dir(directory)
        else:
            await remove_dir(self.ipc_dir)
        await ops.aclose()

    async def _sweep(self) -> None:
        assert self._ops is not None
        running = await reaper.running_containers(self._ops)
        removed = await reaper.sweep(self._ops, self.owner, set(self._live), running)
        for item in removed:
            log.info("removed orphan sandbox container %s", item)
        self.orphans_removed += len(removed)
        await reaper.sweep_dirs(self.ipc_root, self.owner, running)

    async def _reap_forever(self) -> None:
        while True:
            await anyio.sleep(min(self.reap_interval, self.adopt_grace / 3) if self.adopt_grace else self.reap_interval)
            try:
                if self.adopt_grace:  # renew how long a successor may take these containers over
                    await anyio.to_thread.run_sync(reaper.write_owner, self.ipc_dir, self.owner, self.adopt_grace)
                await self._sweep()
            except Exception as exc:  # best effort, again next round: an engine's odd answer must not stop the backend
                log.warning("sweeping orphan containers failed: %s", exc)

    async def _warn_if_missing(self, spec: EnvSpec) -> None:
        assert self._ops is not None
        image = image_for(spec, self.image)
        try:
            await self._ops.call(self._ops.api.inspect_image, image)
        except docker.errors.ImageNotFound:
            log.warning(
                "sandbox image %r of env %s is missing: build it with `%s`", image, spec.name, build_command(spec)
            )

    # ------------------------------------------------------------ sessions

    def _pool(self, spec: EnvSpec) -> WarmPool:
        pool = self._pools.get(spec.target)
        if pool is None:
            assert self._tg is not None and self._slots is not None
            pool = WarmPool(
                spec.name,
                functools.partial(self._launch, spec),
                self,
                self.pool_settings,
                slots=self._slots,
                budget=self._budget,
                timings=self.timings,
                task_group=self._tg,
            )
            self._pools[spec.target] = pool
            self._tg.start_soon(pool.maintain)
        return pool

    def wanted(self, spec: EnvSpec) -> None:
        if self._tg is not None and not self._closing:
            self._pool(spec).wanted()

    async def open(self, spec: EnvSpec, options: dict[str, Any]) -> Sandbox:
        if self._tg is None or self._closing:
            raise RuntimeError("the docker backend is not running (create_app starts it with the server)")
        container, _ = await self._pool(spec).acquire(self.start_timeout)
        sandbox = DockerSandbox(self, container, spec.cls.sandbox.memory)
        began = time.perf_counter()
        await sandbox.handshake(spec.target, options, self.open_timeout)
        self.timings.stage("open", time.perf_counter() - began)
        return sandbox

    async def _launch(self, spec: EnvSpec) -> Container:
        assert self._ops is not None and self._monitor is not None
        session_id = new_session_id(self.node)  # labelled now: a pooled container already knows its session
        labels = {
            **self.owner.labels(),
            reaper.SESSION: session_id,
            reaper.ENV: spec.name,
            reaper.LEASE: str(int(time.time() + self.lease_s)),
        }
        self._launching += 1
        self._starting.add(session_id)
        try:
            try:
                container = await self._launch_with(spec, labels, session_id)
            except docker.errors.APIError as exc:
                runtime = self.runtime
                picked = runtime.default is not None and runtime.name is None and spec.cls.sandbox.runtime is None
                if not (picked and "OCI runtime" in str(exc)):
                    raise
                # Picked, not asked for: a runtime that cannot start containers on this host
                # (crun on a hybrid cgroup layout) gives way to the engine's default.
                log.warning("runtime %s cannot start sandboxes here, the default will: %s", runtime.default, exc)
                self.runtime = dataclasses.replace(runtime, default=None)
                container = await self._launch_with(spec, labels, session_id)
        finally:
            self._launching -= 1
            self._starting.discard(session_id)
        self._live[container.id] = container
        return container

    async def _launch_with(self, spec: EnvSpec, labels: dict[str, str], session_id: str) -> Container:
        assert self._ops is not None and self._monitor is not None
        return await launch(
            self._ops,
            self._monitor,
            image=image_for(spec, self.image),
            settings=spec.cls.sandbox,
            labels=labels,
            ipc_dir=self.ipc_dir / session_id,
            session_id=session_id,
            ready_timeout=self.ready_timeout,
            build_hint=build_command(spec),
            runtime=self.runtime,
            worker_args=("--reconnect", f"{self.adopt_grace:g}") if self.adopt_grace else (),
        )

    # ------------------------------------------------------------ what a pool asks (PoolEngine)

    async def pause(self, container: Container) -> None:
        assert self._ops is not None
        await self._ops.call(self._ops.api.pause, container.id)

    async def unpause(self, container: Container) -> None:
        assert self._ops is not None
        await self._ops.call(self._ops.api.unpause, container.id)

    async def alive(self, container: Container, timeout: float) -> bool:
        return not container.exited and await ping(container.channel, timeout)

    async def memory(self, container: Container) -> int | None:
        assert self._ops is not None
        return await container_memory(self._ops, container.id)

    async def discard(self, container: Container) -> None:
        """A container is used once: kill and remove it, its channel and its directory."""
        assert self._ops is not None
        with anyio.CancelScope(shield=True):
            await container.channel.aclose()
            try:
                await self._ops.remove(container.id)
            except Exception as exc:  # best effort: it is labelled, so a sweep removes it later
                log.warning("could not remove container %s (the reaper will): %s", container.id[:12], exc)
            self._live.pop(container.id, None)
            if self._monitor is not None:
                self._monitor.forget(container.id)
            await remove_dir(container.ipc_dir)

    # ------------------------------------------------------------ restarts (serve --state-dir: adopt.py)

    @property
    def instance(self) -> str | None:  # type: ignore[override]
        return self.owner.instance

    def take_over(self, instance: str | None) -> None:
        if instance and self._tg is None:
            self.owner = dataclasses.replace(self.owner, instance=instance)
            self.ipc_dir = self.ipc_root / instance

    async def adopt(self, spec: EnvSpec, ref: dict[str, Any], options: dict[str, Any]) -> Sandbox:
        assert self._ops is not None and self._monitor is not None
        container_id, ipc = ref.get("container"), ref.get("ipc")
        if not container_id or not ipc:
            raise SandboxStartError("no container was recorded for it", fatal=True)
        # Not a start: no start slot taken (the Docker calls are bounded by the ops' threads).
        container = await reattach(self._ops, self._monitor, container_id, self.ipc_dir / ipc, ipc, self.ready_timeout)
        self._live[container.id] = container
        sandbox = DockerSandbox(self, container, spec.cls.sandbox.memory)
        await sandbox.handshake(spec.target, options, self.open_timeout)  # the worker answers opened(resumed)
        return sandbox

    async def adopted(self) -> None:
        """Remove this instance's containers that no session took back (a predecessor's pool, dead ones)."""
        assert self._ops is not None
        mine = await reaper.managed_containers(self._ops, self.owner.instance)
        doomed = [
            (info, "no session claims it after the restart")
            for info in mine
            if info["Id"] not in self._live  # a predecessor's pool, or a session the journal lost
            and (info.get("Labels") or {}).get(reaper.SESSION) not in self._starting  # our own pool, filling
        ]
        for item in await reaper.remove_all(self._ops, doomed):
            log.info("removed unclaimed sandbox container %s", item)
            await remove_dir(self.ipc_dir / item.session)

    async def hand_off(self, sandboxes: Sequence[Sandbox]) -> None:
        kept = [s.container for s in sandboxes if isinstance(s, DockerSandbox) and not s.container.exited]
        self._kept = {c.id for c in kept}
        self._kept_dirs = {c.ipc_dir.name for c in kept}

    async def _exit_reason(self, container: Container, memory: str) -> str:
        assert self._ops is not None
        return await exit_reason(self._ops, container.id, container.watch, memory)

    def image_of(self, spec: EnvSpec) -> str | None:
        return image_for(spec, self.image)

    @property
    def engine_reachable(self) -> bool:
        """The engine answers: the exit monitor is subscribed to its events."""
        return self._monitor is not None and self._monitor.connected

    def can_start(self) -> bool:
        return self.engine_reachable and not self._closing

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "instance": self.owner.instance,
            "engine_reachable": int(self.engine_reachable),
            "runtime": self.runtime.name,
            "default_runtime": self.runtime.default,
            "containers": len(self._live),
            "max_starting": self.max_starting,
            "starting": self._launching,
            "pools": {pool.name: pool.describe() for pool in self._pools.values()},
            "pool_memory_bytes": self._budget.used,
            **({"pool_memory_limit_bytes": self.pool_memory} if self.pool_memory else {}),
            "orphans_removed": self.orphans_removed,
        }
