"""Taking over the containers of a previous server on the same state directory (``serve --state-dir``).

A server with a state directory starts its workers with ``--reconnect``: when the server goes
away (``kill -9``, or a graceful hand-off) the worker keeps its environment and keeps connecting
to ``/ipc/sock``. The next server continues the same backend instance (the same host directory,
so the same bind mounts, and the same ``openenv-ws.server`` label), listens on each session's
socket path again and takes the worker's connection: the episode goes on in the same container.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import docker.errors

from ...errors import SandboxStartError
from ..channel import FrameChannel
from .containers import SOCKET_NAME, Container, DockerOps, _accept, exit_reason
from .exits import ExitMonitor


async def reattach(
    ops: DockerOps, monitor: ExitMonitor, container_id: str, ipc_dir: Path, session_id: str, timeout: float
) -> Container:
    """The container ``container_id`` with its worker connected again; raises with why it cannot be."""
    try:
        state = (await ops.call(ops.api.inspect_container, container_id))["State"]
    except docker.errors.NotFound:
        raise SandboxStartError("its container was removed", fatal=True) from None
    watch = monitor.watch(container_id)
    if not state.get("Running"):
        monitor.forget(container_id)
        code = state.get("ExitCode")
        oom = " (out of memory)" if state.get("OOMKilled") else ""
        raise SandboxStartError(f"its container exited with code {code}{oom}", fatal=True)
    if not await anyio.Path(ipc_dir).is_dir():
        monitor.forget(container_id)
        raise SandboxStartError(f"its socket directory {ipc_dir} is gone", fatal=True)
    path = ipc_dir / SOCKET_NAME
    path.unlink(missing_ok=True)
    listener = await anyio.create_unix_listener(path)
    os.chmod(path, 0o666)
    try:
        stream = await _accept(listener, watch, timeout)
    finally:
        with anyio.CancelScope(shield=True):
            await listener.aclose()
        path.unlink(missing_ok=True)
    if stream is None:
        reason = (
            await exit_reason(ops, container_id, watch)
            if watch.exited.is_set()
            else f"its worker did not connect again within {timeout:g}s"
        )
        monitor.forget(container_id)
        raise SandboxStartError(reason, fatal=True)
    return Container(container_id, session_id, ipc_dir, watch, FrameChannel(stream))
