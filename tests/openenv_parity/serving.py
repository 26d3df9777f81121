"""How OpenEnv's own integration tests reach our server: the one part of them that is changed.

The tests in this folder are adapted from OpenEnv's repository (meta-pytorch/OpenEnv; each file
names its source). Where OpenEnv's tests start its server (uvicorn on an OpenEnv ``create_app``,
or a FastAPI ``TestClient`` on an in-memory app), these start ours: a real ``openenv-ws serve``
on 127.0.0.1 (:class:`tests.conftest.ServerProcess`), on the in-process and the subprocess
backends, serving the same OpenEnv environment classes through ``from_openenv``.
:class:`ServerClient` stands in for ``TestClient``, with the same calls, over real HTTP and
WebSocket connections to that server. The test bodies are OpenEnv's; ``conftest.py`` only adds
or takes away marks: xfail where OpenEnv's own server fails too, and OpenEnv's skip of two
concurrency tests, whose condition our server meets.

OpenEnv's example environments (``echo_env``, ``connect4_env``) are not on PyPI: the tests that
use them take OpenEnv's own from ``$OPENENV_SRC/envs`` when ``OPENENV_SRC`` names a copy of
OpenEnv's repository, and otherwise our stand-ins with the same API (``stand_ins/``; see
:mod:`tests.openenv_parity.example_envs`), so that they run in CI.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect as ws_connect

from tests.conftest import ServerProcess

from .example_envs import put_example_envs_on_path

sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]  # see tests/openenv_envs.py

BACKENDS = ("inprocess", "subprocess")


def need_openenv_envs() -> Path:
    """Put ``echo_env`` and ``connect4_env`` on the path: OpenEnv's (``$OPENENV_SRC/envs``) or the stand-ins."""
    return put_example_envs_on_path()


@contextmanager
def our_server(target: str, backend: str, *args: str) -> Iterator[ServerProcess]:
    """``openenv-ws serve TARGET`` on 127.0.0.1; stopped (by its PID) on exit."""
    server = ServerProcess(target, "--sandbox", backend, "--max-sessions", "64", *args)
    try:
        yield server
    finally:
        server.stop()


class _Socket:
    """What ``TestClient.websocket_connect`` yields: text in, text out."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def send_text(self, text: str) -> None:
        self.connection.send(text)

    def send_json(self, value: Any) -> None:
        self.connection.send(json.dumps(value))

    def receive_text(self) -> str:
        message = self.connection.recv(timeout=60)
        return message if isinstance(message, str) else message.decode()

    def receive_json(self) -> Any:
        return json.loads(self.receive_text())


class ServerClient:
    """``TestClient``'s calls (``get``, ``post``, ``websocket_connect``) on a real server at ``base``."""

    __test__ = False  # imported as TestClient: not a test class

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.http = httpx.Client(base_url=self.base, timeout=60)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.post(path, **kw)

    @contextmanager
    def websocket_connect(self, path: str) -> Iterator[_Socket]:
        url = self.base.replace("http://", "ws://", 1) + path
        with ws_connect(url, open_timeout=60, max_size=None) as connection:
            yield _Socket(connection)
