"""A server's Docker engine going away and coming back (a node's dockerd killed and restarted).

The server reaches the real engine here through a Unix-socket proxy the test can stop: what the
server sees when its node's engine dies. Its exit monitor must not fail (that used to end the
server's lifespan and every session with it); it must pick up again when the engine is back.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import anyio
import anyio.abc
import docker

from openenv_ws.sandbox.docker.exits import ExitMonitor

pytest_plugins = ["tests.docker_fixtures"]

ENGINE = "/var/run/docker.sock"
BASE_IMAGE = os.environ.get("OPENENV_WS_BASE_IMAGE", "openenv-ws/python-base:3.11")


class EngineProxy:
    """The engine's socket at another path, which the test can take away and bring back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._scope: anyio.CancelScope | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.path.unlink(missing_ok=True)
        listener = await anyio.create_unix_listener(self.path)
        with anyio.CancelScope() as self._scope:
            task_status.started()
            async with listener, anyio.create_task_group() as tg:
                while True:
                    client = await listener.accept()
                    tg.start_soon(self._link, client)

    async def _link(self, client: anyio.abc.SocketStream) -> None:
        async with client, await anyio.connect_unix(ENGINE) as upstream, anyio.create_task_group() as tg:

            async def pump(src: anyio.abc.ByteStream, dst: anyio.abc.ByteStream) -> None:
                try:
                    async for chunk in src:
                        await dst.send(chunk)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(pump, client, upstream)
            tg.start_soon(pump, upstream, client)

    def stop(self) -> None:
        """The engine is gone: every connection to it drops, and new ones are refused."""
        assert self._scope is not None
        self._scope.cancel()
        self.path.unlink(missing_ok=True)


async def test_the_exit_monitor_outlives_its_engine_and_sees_exits_once_it_is_back(engine, tmp_path, caplog):
    proxy = EngineProxy(tmp_path / "engine.sock")
    label = f"openenv-ws.test-engine-loss={secrets.token_hex(4)}"
    container = None
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.run)
        monitor = ExitMonitor(lambda: docker.DockerClient(base_url=f"unix://{proxy.path}"), label)
        await tg.start(monitor.run)

        proxy.stop()  # the engine dies under the subscribed monitor
        with anyio.fail_after(20):
            while "docker events: ConnectionError" not in caplog.text:  # it tried again, and failed
                await anyio.sleep(0.1)
        await tg.start(proxy.run)  # the engine is back

        key, value = label.split("=")
        container = await anyio.to_thread.run_sync(
            lambda: engine.client.containers.create(BASE_IMAGE, ["true"], labels={key: value}, network_mode="none")
        )
        watch = monitor.watch(container.id)
        await anyio.to_thread.run_sync(container.start)
        try:
            with anyio.fail_after(30):
                await watch.exited.wait()  # seen through the new subscription (or the reconcile after it)
            assert watch.exit_code == 0
        finally:
            await monitor.aclose()
            tg.cancel_scope.cancel()
            await anyio.to_thread.run_sync(lambda: container.remove(force=True))
