"""Fixtures for the Docker tests: the test image (built once per session), servers, cleanup.

The Docker tests run against the real engine and are never skipped: CI runs
``scripts/setup_docker.sh`` first. Every container a test causes is labelled with the server
instance that started it, and removed by that label when the test ends, even if it failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest

from .conftest import ROOT, ServerProcess
from .docker_envs import TEST_IMAGE

BASE_IMAGE = os.environ.get("OPENENV_WS_BASE_IMAGE", "openenv-ws/python-base:3.11")
LIBRARY_IMAGE = os.environ.get("OPENENV_WS_TEST_LIBRARY_IMAGE", "openenv-ws-test/library:dev")
"""The whole environment library (the gym env's image adds gymnasium and numpy); set per checkout like TEST_IMAGE."""


class Engine:
    """The Docker engine, as the tests look at it: the containers a server labelled."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def managed(self, **labels: str) -> list[Any]:
        """Containers with ``openenv-ws.managed=1`` and the given labels (``session=...``, ``server=...``)."""
        filters = ["openenv-ws.managed=1"] + [f"openenv-ws.{k.replace('_', '-')}={v}" for k, v in labels.items()]
        return self.client.containers.list(all=True, filters={"label": filters}, ignore_removed=True)

    def remove(self, containers: list[Any]) -> None:
        for container in containers:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: a server's sweep is removing it already
                    raise


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    client = docker.from_env()
    client.ping()
    yield Engine(client)
    client.close()


@pytest.fixture(scope="session")
def sandbox_image(engine: Engine) -> str:
    """The test image, built by ``openenv-ws build`` with the tests package inside (test envs live there)."""
    cmd = [sys.executable, "-m", "openenv_ws", "build", "tests.docker_envs:ExecEnv", "--with-path", "tests"]
    cmd += ["--tag", TEST_IMAGE, "--base-image", BASE_IMAGE]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"openenv-ws build failed:\n{result.stdout}\n{result.stderr}"
    return TEST_IMAGE


@pytest.fixture(scope="session")
def library_image(engine: Engine) -> str:
    """The environment library's image (``openenv-ws build gym``), built once per test run."""
    cmd = [sys.executable, "-m", "openenv_ws", "build", "gym", "--tag", LIBRARY_IMAGE, "--base-image", BASE_IMAGE]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"openenv-ws build failed:\n{result.stdout}\n{result.stderr}"
    return LIBRARY_IMAGE


class DockerServer:
    """A real ``openenv-ws serve --sandbox docker`` and the backend instance that labels its containers."""

    def __init__(self, *args: str, image: str | None) -> None:
        extra = ["--image", image] if image else []
        self.process = ServerProcess(*args, "--sandbox", "docker", *extra)
        self.url = self.process.url
        self.instance = self.process.health()["backend"]["instance"]

    def backend(self) -> dict[str, Any]:
        return self.process.health()["backend"]

    def stop(self, engine: Engine) -> None:
        """Stop the server, then remove whatever of its containers is left (none should be)."""
        self.process.stop()
        engine.remove(engine.managed(server=self.instance))


@pytest.fixture
def docker_serve(sandbox_image: str, engine: Engine) -> Iterator[Callable[..., DockerServer]]:
    """Start Docker-backed servers running the test image; afterwards stop them and remove their containers."""
    servers: list[DockerServer] = []

    def serve(*args: str, image: str | None = sandbox_image) -> DockerServer:
        server = DockerServer(*args, image=image)
        servers.append(server)
        return server

    yield serve
    for server in servers:
        server.stop(engine)


@pytest.fixture(scope="module")
def docker_server(sandbox_image: str, engine: Engine) -> Iterator[DockerServer]:
    """One server for the tests that need nothing special: echo, the exec env and the flaky env."""
    server = DockerServer("echo", "tests.docker_envs:ExecEnv", "tests.helper_envs:FlakyEnv", image=sandbox_image)
    yield server
    server.stop(engine)
