"""``serve --token``: every route but /healthz wants ``Authorization: Bearer``; what each client then says."""

# ruff: noqa: E402
from __future__ import annotations

import subprocess
import sys

sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]  # see tests/openenv_envs.py

import anyio
import httpx
import pytest
from openenv.core import GenericEnvClient

from openenv_ws import AuthError, connect, multiplex
from openenv_ws.tools.inspector import follow

TOKEN = "s3cret-Token-42"


@pytest.fixture(scope="module")
def guarded(request):
    """A server that wants TOKEN, logging at debug level (request headers included) to check for leaks."""
    from .conftest import ServerProcess

    server = ServerProcess("echo", "--sandbox", "inprocess", "--token", TOKEN, log_level="debug")
    yield server
    server.stop()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_http_routes_want_the_token(guarded):
    url = guarded.http
    for path in ("/v1/sessions", "/v1/envs", "/metrics", "/schema", "/health"):
        missing = httpx.get(url + path, timeout=5)
        assert missing.status_code == 401, path
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.json() == {
            "detail": "unauthorized: missing bearer token (send 'Authorization: Bearer <token>')",
            "code": "unauthorized",
        }
        wrong = httpx.get(url + path, headers=bearer("wrong"), timeout=5)
        assert wrong.status_code == 401 and wrong.json()["detail"].startswith("unauthorized: wrong")
        assert httpx.get(url + path, headers=bearer(), timeout=5).status_code == 200, path
    assert httpx.post(url + "/reset", json={}, timeout=5).status_code == 401  # OpenEnv's HTTP API too
    assert httpx.get(url + "/healthz", timeout=5).status_code == 200  # open, for probes
    assert httpx.get(url + "/v1/sessions", headers={"Authorization": f"bearer {TOKEN}"}, timeout=5).status_code == 200


async def test_our_client_gets_a_typed_error_and_works_with_the_token(guarded, monkeypatch):
    monkeypatch.delenv("OPENENV_WS_TOKEN", raising=False)
    for token in (None, "wrong"):
        with pytest.raises(AuthError) as info:
            async with connect(guarded.url, "echo", token=token):
                pass
        assert info.value.code == "unauthorized" and "HTTP 401" in info.value.message
    async with connect(guarded.url, "echo", token=TOKEN) as env:
        assert (await env.reset()).observation["message_length"] == 0
    monkeypatch.setenv("OPENENV_WS_TOKEN", TOKEN)  # read by every client
    async with connect(guarded.url, "echo") as env, connect(guarded.url, "echo", protocol="openenv") as compat:
        await env.reset()
        await compat.reset()
        assert (await compat.step({"message": "via /ws"})).reward == 0.7


async def test_multiplexed_and_inspector_sockets_want_it_too(guarded, monkeypatch):
    monkeypatch.delenv("OPENENV_WS_TOKEN", raising=False)
    with pytest.raises(AuthError):
        async with multiplex(guarded.url, connections=1):
            pass
    async with multiplex(guarded.url, connections=1, token=TOKEN) as mux, mux.connect("echo") as env:
        await env.reset()
        with pytest.raises(AuthError):
            await follow(guarded.url, env.session_id, out=print)
        lines: list[str] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: follow(guarded.url, env.session_id, token=TOKEN, out=lines.append))
            with anyio.fail_after(10):
                while not lines:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert lines[0].startswith("-- session:")


def test_the_inspector_command_says_what_is_missing(guarded):
    cmd = [sys.executable, "-m", "openenv_ws", "sessions", "--url", guarded.http, "--json"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert refused.returncode == 1 and "wants a token: pass --token or set OPENENV_WS_TOKEN" in refused.stderr
    allowed = subprocess.run([*cmd, "--token", TOKEN], capture_output=True, text=True, timeout=30)
    assert allowed.returncode == 0 and '"sessions"' in allowed.stdout


async def test_openenv_clients_are_refused_with_401_and_work_with_the_header(guarded):
    with pytest.raises(Exception) as info:  # whatever OpenEnv raises: we check what it says
        async with GenericEnvClient(base_url=guarded.http) as env:
            await env.reset()
    # OpenEnv 0.10.0 raises ConnectionError("Failed to connect to ws://.../ws: server rejected ...: HTTP 401")
    assert "rejected WebSocket connection: HTTP 401" in str(info.value)
    async with GenericEnvClient(base_url=guarded.http, headers=bearer()) as env:
        result = await env.reset()
        assert result.observation is not None


def test_the_token_never_reaches_the_log(guarded):
    # Even where a client puts it in a URL (it is not read from there) and at debug level, where
    # uvicorn logs request headers.
    httpx.get(guarded.http + f"/v1/sessions?token={TOKEN}", timeout=5)
    httpx.get(guarded.http + "/v1/sessions", headers=bearer(), timeout=5)
    httpx.get(guarded.http + "/v1/sessions", headers=bearer(TOKEN + "x"), timeout=5)
    log = guarded.output()
    assert "refused http /v1/sessions" in log and "authorization: Bearer ***" in log
    assert TOKEN not in log
