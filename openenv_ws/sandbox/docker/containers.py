"""Starting, describing and removing one sandbox container (Docker backend).

The worker inside a container reaches the server through a Unix socket: the server listens
on ``<ipc dir>/sock`` on the host, the directory is bind-mounted read-only at ``/ipc``, and
the worker runs ``--connect /ipc/sock``. The container therefore needs no network at all, and
the accepted connection is the readiness signal (no polling).

Every Docker call is blocking (the SDK speaks HTTP over the engine's socket), so each one
runs on a worker thread through :class:`DockerOps`, never on the event loop.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import docker
import docker.errors

from ...confine import AGENT_USER_VAR, GRADER_USER_VAR
from ...env import SandboxSettings
from ...errors import SandboxStartError
from ...protocol import Ping, Pong, ProtocolViolation, decode_from_sandbox
from ..channel import FrameChannel
from ..relay import CHANNEL_GONE, signal_name
from .exits import ExitMonitor, ExitWatch

T = TypeVar("T")

IPC_ROOT = Path("/tmp/openenv-ws")
"""Where each server instance keeps its sessions' socket directories (``<root>/<instance>/<session>``)."""
IPC_MOUNT = "/ipc"
SOCKET_NAME = "sock"
LOG_TAIL = 20
"""Lines of a container's output quoted when it failed to start."""
LOG_MAX_SIZE = "1m"
"""Default of the backend's ``log_max_size``: the most a container's output takes in the engine's log (json-file)."""
WORKER_CAPABILITIES = ("SETUID", "SETGID", "KILL")
"""All the worker holds when its env runs the agent's code as a uid of its own (``SandboxSettings.agent_user``):
enough to start processes as the agent and the grader and to signal them, nothing else."""


class DockerOps:
    """The engine client, used only from worker threads, a bounded number at once."""

    def __init__(self, client: docker.DockerClient, threads: int) -> None:
        self.client = client
        self.api = client.api
        self.limiter = anyio.CapacityLimiter(threads)

    @classmethod
    async def connect(cls, threads: int = 16) -> DockerOps:
        """Reach the engine named by the environment (``DOCKER_HOST``...); the API version is negotiated."""

        def make() -> docker.DockerClient:
            # One pooled HTTP connection per thread that may use it (urllib3 otherwise drops extras).
            return docker.from_env(max_pool_size=threads + 2, timeout=120)

        try:
            client = await anyio.to_thread.run_sync(make)
        except docker.errors.DockerException as exc:
            raise SandboxStartError(
                f"cannot reach the Docker engine ({exc}); start it (e.g. scripts/setup_docker.sh) or set DOCKER_HOST",
                fatal=True,
            ) from None
        return cls(client, threads)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self.limiter)

    async def remove(self, container_id: str) -> None:
        """Kill (if running) and remove; a container already gone is fine."""
        try:
            await self.call(self.api.remove_container, container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: a removal is already in progress
                raise

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.client.close)


FAST_RUNTIME = "crun"
"""What ``runtime=auto`` gives the envs that name no runtime, where the engine has it: it starts
containers faster than runc (docs/benchmarks.md, section p) and passes every confinement test."""


@dataclass(frozen=True)
class Runtime:
    """How the backend runs every container, whatever the env: the OCI runtime and the log cap."""

    name: str | None = None
    """An OCI runtime dockerd knows (``runc``, ``runsc``...) for every container; None: each env's choice
    (``SandboxSettings.runtime``), else ``default``."""
    log_max_size: str = LOG_MAX_SIZE
    default: str | None = None
    """The runtime of an env that names none, when none is forced (``runtime=auto`` sets it to
    :data:`FAST_RUNTIME` where the engine has it); None: the engine's default."""

    def for_env(self, settings: SandboxSettings) -> str | None:
        return self.name or settings.runtime or self.default


def host_config(ops: DockerOps, settings: SandboxSettings, ipc_dir: Path, runtime: Runtime) -> dict[str, Any]:
    """The confinement of a sandbox container: shut by default, opened only by the env's settings."""
    return ops.api.create_host_config(
        binds={str(ipc_dir): {"bind": IPC_MOUNT, "mode": "ro"}},
        network_mode="bridge" if settings.network else "none",
        read_only=settings.read_only,
        tmpfs={"/tmp": f"size={settings.tmpfs_size}{',exec' if settings.tmpfs_exec else ''}"},
        shm_size=settings.shm_size,
        cap_drop=["ALL"],
        cap_add=list(WORKER_CAPABILITIES) if settings.agent_user else None,
        security_opt=["no-new-privileges"],
        mem_limit=settings.memory,
        memswap_limit=settings.memory,  # no swap on top of the memory limit
        nano_cpus=int(settings.cpus * 1e9),
        pids_limit=settings.pids,
        init=True,  # docker-init as PID 1: signals work, so a stop takes ~0.1 s, not 10
        runtime=runtime.for_env(settings),
        log_config={"type": "json-file", "config": {"max-size": runtime.log_max_size, "max-file": "1"}},
    )


def worker_identity(settings: SandboxSettings) -> tuple[str, dict[str, str]]:
    """The container's user and the worker's environment: root holding only :data:`WORKER_CAPABILITIES` and
    told the agent's and the grader's uids when the env runs the agent's code apart, else ``settings.user``."""
    if not settings.agent_user:
        return settings.user, {}
    return "0:0", {AGENT_USER_VAR: settings.agent_user, GRADER_USER_VAR: settings.grader_user}


@dataclass(eq=False)
class Container:
    """A started sandbox container whose worker has connected and waits for ``Open``."""

    id: str
    session_id: str
    ipc_dir: Path
    watch: ExitWatch
    channel: FrameChannel
    ready_at: float = field(default_factory=time.monotonic)
    stages: dict[str, float] = field(default_factory=dict)
    """Seconds each stage of its start took (``create``, ``start``, ``ready``)."""
    paused: bool = False
    """Frozen by the engine (``docker pause``) while it waits in a pool."""
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    """Held while it is being paused or unpaused."""

    @property
    def exited(self) -> bool:
        return self.watch.exited.is_set()


async def ping(channel: FrameChannel, timeout: float) -> bool:
    """True if the worker at the other end of ``channel`` answers a ``Ping`` within ``timeout`` seconds."""
    try:
        with anyio.fail_after(timeout):
            await channel.send(Ping())
            return isinstance(decode_from_sandbox(await channel.receive()), Pong)
    except (TimeoutError, ProtocolViolation, *CHANNEL_GONE):
        return False


async def launch(
    ops: DockerOps,
    monitor: ExitMonitor,
    *,
    image: str,
    settings: SandboxSettings,
    labels: dict[str, str],
    ipc_dir: Path,
    session_id: str,
    ready_timeout: float,
    build_hint: str,
    runtime: Runtime,
    worker_args: tuple[str, ...] = (),
) -> Container:
    """Create and start a container and wait until its worker connects (or it dies, or time runs out).

    ``worker_args``: more arguments of the worker (``--reconnect SECONDS``: it outlives its server).
    """
    await anyio.Path(ipc_dir).mkdir(mode=0o755, parents=True)
    path = ipc_dir / SOCKET_NAME
    listener = await anyio.create_unix_listener(path)
    os.chmod(path, 0o666)  # whatever uid the env runs as may connect
    container_id = ""
    try:
        began = time.perf_counter()
        container_id = await _create(ops, image, settings, labels, ipc_dir, build_hint, runtime, worker_args)
        exit_watch = monitor.watch(container_id)  # before start: no exit can be missed
        created = time.perf_counter()
        await ops.call(ops.api.start, container_id)
        started = time.perf_counter()
        stream = await _accept(listener, exit_watch, ready_timeout)
        if stream is None:
            raise SandboxStartError(await _start_failure(ops, container_id, exit_watch, ready_timeout), fatal=True)
        stages = {"create": created - began, "start": started - created, "ready": time.perf_counter() - started}
        return Container(container_id, session_id, ipc_dir, exit_watch, FrameChannel(stream), stages=stages)
    except BaseException:
        with anyio.CancelScope(shield=True):
            if container_id:
                monitor.forget(container_id)
                try:
                    await ops.remove(container_id)
                except docker.errors.DockerException:
                    pass  # the reaper removes it (it is labelled)
            await remove_dir(ipc_dir)
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await listener.aclose()
        path.unlink(missing_ok=True)  # one connection per container: nobody else may connect later


async def _create(
    ops: DockerOps,
    image: str,
    settings: SandboxSettings,
    labels: dict[str, str],
    ipc_dir: Path,
    build_hint: str,
    runtime: Runtime,
    worker_args: tuple[str, ...] = (),
) -> str:
    user, environment = worker_identity(settings)
    try:
        created = await ops.call(
            ops.api.create_container,
            image,
            command=["--connect", f"{IPC_MOUNT}/{SOCKET_NAME}", *worker_args],
            user=user,
            environment=environment,
            labels=labels,
            host_config=host_config(ops, settings, ipc_dir, runtime),
            use_config_proxy=False,
        )
    except docker.errors.ImageNotFound:
        message = f"sandbox image {image!r} not found: build it with `{build_hint}`"
        raise SandboxStartError(message, fatal=True) from None
    except docker.errors.APIError as exc:
        raise SandboxStartError(f"docker could not create the sandbox: {exc.explanation or exc}", fatal=True) from None
    return created["Id"]


async def _accept(
    listener: anyio.abc.Listener[anyio.abc.SocketStream], watch: ExitWatch, timeout: float
) -> anyio.abc.SocketStream | None:
    """The worker's connection; None if the container exited first or time ran out."""
    accepted: list[anyio.abc.SocketStream] = []

    async def accept_one() -> None:
        accepted.append(await listener.accept())  # type: ignore[attr-defined]
        tg.cancel_scope.cancel()

    async def until_exit() -> None:
        await watch.exited.wait()
        tg.cancel_scope.cancel()

    with anyio.move_on_after(timeout):
        async with anyio.create_task_group() as tg:
            tg.start_soon(accept_one)
            tg.start_soon(until_exit)
    return accepted[0] if accepted else None


async def _start_failure(ops: DockerOps, container_id: str, watch: ExitWatch, timeout: float) -> str:
    if watch.exited.is_set():
        reason = await exit_reason(ops, container_id, watch)
        what = f"the sandbox container exited before its worker connected ({reason})"
    else:
        what = f"the sandbox worker did not connect within {timeout}s"
    try:
        logs = await ops.call(ops.api.logs, container_id, tail=LOG_TAIL)
        tail = logs.decode(errors="replace").strip()
    except docker.errors.DockerException:
        tail = ""
    return f"{what}; its output:\n{tail}" if tail else what


async def exit_reason(ops: DockerOps, container_id: str, watch: ExitWatch, memory: str = "") -> str:
    """Why a container ended, in words a client can act on: out of memory, killed, exited."""
    try:
        state = (await ops.call(ops.api.inspect_container, container_id))["State"]
    except docker.errors.NotFound:
        return "the sandbox container was removed from outside (killed)"
    except Exception as exc:  # the engine is unreachable (or the server is shutting down): say so
        return f"the sandbox stopped answering (its container could not be inspected: {exc})"
    code = state.get("ExitCode")
    if state.get("Running"):
        return "the sandbox stopped answering"
    if state.get("OOMKilled") or watch.oom:
        limit = f" {memory}" if memory else ""
        return f"the sandbox ran out of memory (killed at its{limit} memory limit; exit code {code})"
    if isinstance(code, int) and code > 128:
        name = signal_name(code - 128)
        if watch.kill_signal:
            return f"the sandbox container was killed from outside (signal {name}, exit code {code})"
        return f"the sandbox process was killed by signal {name} (exit code {code})"
    return f"the sandbox worker exited with code {code}"


async def remove_dir(path: Path) -> None:
    await anyio.to_thread.run_sync(functools.partial(shutil.rmtree, path, ignore_errors=True))
