"""A benchmark's own ``openenv-ws serve``: on a free loopback port, stopped by its PID, its Docker
containers (if it made any) removed by its instance label. Used by bench_docker.py and bench_web.py.

Kept free of ``openenv_ws`` imports: ``bench_docker.py --server-tree`` runs servers of older trees.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class ServeProcess:
    """``openenv-ws serve ENV ARGS...`` (``tree``: from that source tree, by PYTHONPATH)."""

    def __init__(self, env: str, *args: str, tree: Path | None = None, start_timeout: float = 60.0) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "openenv_ws", "serve", env, "--port", str(self.port), "--log-level", "warning"]
        environ = dict(os.environ, PYTHONPATH=str(tree)) if tree else None
        self.proc = subprocess.Popen([*cmd, *args], cwd=tree or ROOT, env=environ)
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                self.instance: str | None = self.health()["backend"].get("instance")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 120 s), then remove whatever container of its instance is left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.instance:
            import docker  # only servers of the Docker backend have an instance label on containers

            client = docker.from_env()
            filters = {"label": [f"openenv-ws.server={self.instance}"]}
            for container in client.containers.list(all=True, filters=filters, ignore_removed=True):
                container.remove(force=True)
            client.close()
