"""Seeing sandbox containers die, at once, with one stream for all of them.

One ``docker events`` subscription, filtered to this server's containers, replaces a blocking
``wait`` thread per container: a server holding hundreds of sessions keeps one thread and one
engine connection for exits. Each watched container gets an :class:`ExitWatch` whose event is
set when the engine reports it dead, with what preceded it (an OOM kill, a signal sent from
outside).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import docker
import docker.errors

log = logging.getLogger("openenv_ws.sandbox.docker")

RECONNECT_DELAY = (0.5, 5.0)
"""First and longest pause before re-subscribing after the engine dropped the stream."""


@dataclass(eq=False)
class ExitWatch:
    exited: anyio.Event = field(default_factory=anyio.Event)
    exit_code: int | None = None
    oom: bool = False
    kill_signal: str | None = None
    """Set when something sent the container a signal (``docker kill``/``stop``/``rm -f``)."""


class ExitMonitor:
    def __init__(self, make_client: Callable[[], docker.DockerClient], label: str) -> None:
        self._make_client = make_client
        self._filters = {"type": "container", "label": [label], "event": ["die", "kill", "oom"]}
        self._watches: dict[str, ExitWatch] = {}
        self._stream: Any = None
        self._closed = False
        self._since: int | None = None
        self.connected = False
        """Subscribed to the engine's events now: False from the stream's end until a new subscription
        (the engine is down or restarting, so no container can start either)."""

    def watch(self, container_id: str) -> ExitWatch:
        """Start watching (before the container starts, so no exit can be missed)."""
        return self._watches.setdefault(container_id, ExitWatch())

    def forget(self, container_id: str) -> None:
        self._watches.pop(container_id, None)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Subscribe (ready once the engine accepted), then dispatch events until cancelled."""
        client = await anyio.to_thread.run_sync(self._make_client)
        limiter = anyio.CapacityLimiter(1)
        delay = RECONNECT_DELAY[0]
        try:
            await self._subscribe(client, limiter)
            task_status.started()
            while not self._closed:
                await anyio.to_thread.run_sync(self._read, limiter=limiter, abandon_on_cancel=True)
                self.connected = False
                if self._closed:
                    break
                log.warning("docker event stream ended; re-subscribing in %.1fs", delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, RECONNECT_DELAY[1])
                try:
                    await self._subscribe(client, limiter)
                    delay = RECONNECT_DELAY[0]
                    await self._reconcile(client, limiter)
                except Exception as exc:  # the engine is gone (a refused socket is no DockerException): retry
                    log.warning("docker events: %s: %s", type(exc).__name__, exc)
        finally:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await self._close_stream()
                await anyio.to_thread.run_sync(client.close)

    async def _subscribe(self, client: docker.DockerClient, limiter: anyio.CapacityLimiter) -> None:
        def subscribe() -> Any:
            return client.api.events(filters=self._filters, since=self._since, decode=True)

        self._stream = await anyio.to_thread.run_sync(subscribe, limiter=limiter)
        self.connected = True

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            # Closing the response ends the blocked read in the reader thread.
            await anyio.to_thread.run_sync(stream.close)

    def _read(self) -> None:
        """In a worker thread: hand each event to the loop until the stream ends."""
        try:
            for event in self._stream:
                anyio.from_thread.run_sync(self._dispatch, event)
        except Exception as exc:  # the engine went away, or the stream was closed under us
            if not self._closed:
                log.warning("docker event stream failed: %s", exc)

    def _dispatch(self, event: dict[str, Any]) -> None:
        self._since = int(event.get("time", 0)) or self._since
        watch = self._watches.get(event.get("id", ""))
        if watch is None:
            return
        attributes = event.get("Actor", {}).get("Attributes", {})
        action = event.get("Action") or event.get("status")
        if action == "oom":
            watch.oom = True
        elif action == "kill":
            watch.kill_signal = attributes.get("signal")
        elif action == "die":
            try:
                watch.exit_code = int(attributes.get("exitCode", ""))
            except ValueError:
                pass
            watch.exited.set()

    async def _reconcile(self, client: docker.DockerClient, limiter: anyio.CapacityLimiter) -> None:
        """After a gap in the stream: mark containers that ended meanwhile (replayed events may not cover it)."""
        for container_id, watch in list(self._watches.items()):
            if watch.exited.is_set():
                continue
            try:
                state = await anyio.to_thread.run_sync(client.api.inspect_container, container_id, limiter=limiter)
                ended = state["State"].get("Status") in ("exited", "dead")
            except docker.errors.NotFound:
                ended = True
            if ended:
                watch.exited.set()

    async def aclose(self) -> None:
        self._closed = True
        await self._close_stream()
