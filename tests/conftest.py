"""Shared fixtures: real servers (``openenv-ws serve`` subprocesses) on free loopback ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from openenv_ws.server.local import free_port

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


class ServerProcess:
    """A real ``openenv-ws serve`` process; stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        log_level: str = "warning",
        port: int | None = None,
        wait: bool = True,
    ) -> None:
        """``wait=False``: return at once; call :meth:`wait_ready` later (to start several at a time)."""
        self.port = port or free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "openenv_ws", "serve", *args, "--port", str(self.port), "--log-level", log_level]
        self.log = open(ROOT / "tests" / f".server-{self.port}.log", "w+b")  # noqa: SIM115
        self._output = ""
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ, **(env or {}))
        )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.http + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()  # its output is kept until then: stop() closes and removes the log
        raise RuntimeError(f"server not ready in {timeout}s:\n{self._output}")

    def health(self) -> dict:
        return httpx.get(self.http + "/healthz", timeout=5).json()

    def sessions(self) -> list[dict]:
        return httpx.get(self.http + "/v1/sessions", timeout=5).json()["sessions"]

    def output(self) -> str:
        if self.log.closed:
            return self._output
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self.log.closed:
            self._output = self.output()  # what it printed, still readable after the log is gone
            self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


@pytest.fixture
def start_server() -> Iterator:
    """Start servers with arbitrary arguments; all are stopped at the end of the test."""
    started: list[ServerProcess] = []

    def start(*args: str, **kw) -> ServerProcess:
        server = ServerProcess(*args, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def inprocess_server() -> Iterator[ServerProcess]:
    server = ServerProcess("echo", "tests.helper_envs:FlakyEnv", "--sandbox", "inprocess", "--max-sessions", "4096")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def subprocess_server() -> Iterator[ServerProcess]:
    server = ServerProcess("echo", "tests.helper_envs:FlakyEnv", "--sandbox", "subprocess")
    yield server
    server.stop()


@pytest.fixture(params=["inprocess", "subprocess"])
def server(request) -> ServerProcess:
    """The same test on both backends."""
    return request.getfixturevalue(f"{request.param}_server")
