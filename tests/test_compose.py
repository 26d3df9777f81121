"""docker-compose.yml for real: build both images, ``up -d --wait``, the README's client, ``down``.

Needs the Docker engine (``scripts/setup_docker.sh``, which ``scripts/test.sh`` runs first). Compose
v2 is installed here when missing (``scripts/setup_compose.sh``: Debian bookworm has no package).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import docker
import httpx
import pytest

from .conftest import ROOT, free_port, wait_for

BASE_IMAGE = os.environ.get("OPENENV_WS_BASE_IMAGE", "openenv-ws/python-base:3.11")


def sh(*cmd: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def readme_client(port: int) -> str:
    """The README's quickstart client, pointed at ``port``."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    code = next(b for b in blocks if 'connect("ws://127.0.0.1:8000", env="echo")' in b)
    return code.replace("127.0.0.1:8000", f"127.0.0.1:{port}") + "\nprint('README client ok')\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[dict[str, str]]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        sh("bash", "scripts/setup_compose.sh")
    sh(sys.executable, "scripts/compose_wheels.py")
    port = free_port()
    env = dict(
        os.environ,
        COMPOSE_PROJECT_NAME=f"openenv-ws-test-{os.getpid()}",
        OPENENV_WS_BASE_IMAGE=BASE_IMAGE,
        OPENENV_WS_PORT=str(port),
        OPENENV_WS_POOL="1",
        OPENENV_WS_IPC_ROOT=str(tmp_path_factory.mktemp("ipc")),
    )
    env.pop("OPENENV_WS_TOKEN", None)
    sh("docker", "compose", "build", env=env)
    try:
        sh("docker", "compose", "up", "-d", "--wait", "--wait-timeout", "120", env=env)
        yield env
    finally:
        down = subprocess.run(["docker", "compose", "down", "--timeout", "30"], cwd=ROOT, env=env, capture_output=True)
        assert down.returncode == 0, down.stderr


def test_the_readme_client_works_against_the_stack(stack):
    port = stack["OPENENV_WS_PORT"]
    health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
    assert health["status"] == "ok" and health["backend"]["name"] == "docker" and health["envs"] == ["echo"]
    instance = health["backend"]["instance"]

    client = sh(sys.executable, "-c", readme_client(int(port)), timeout=120)
    assert "README client ok" in client.stdout

    engine = docker.from_env()
    try:
        # The session ran in a sandbox container the server started through the host's engine.
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'openenv_ws_pool_target{env="echo"} 1' in metrics
        assert re.search(r"^openenv_ws_steps_total 1$", metrics, re.M)
        labels = {"label": [f"openenv-ws.server={instance}"]}
        # The pool refills after the session took its container.
        assert wait_for(lambda: engine.containers.list(filters=labels), 30), "no sandbox container of the server"
        ps = sh("docker", "compose", "ps", "--format", "{{.Service}} {{.Health}}", env=stack).stdout
        assert "server healthy" in ps

        started = time.monotonic()
        sh("docker", "compose", "stop", "--timeout", "30", "server", env=stack)
        assert time.monotonic() - started < 15  # init: true, and the server drains on SIGTERM
        assert not engine.containers.list(all=True, filters=labels)  # it removed its sandboxes
    finally:
        engine.close()
