"""How the web console authenticates its sockets (a token as a subprotocol), and where that is accepted."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from openenv_ws.server.browser_auth import (
    CONSOLE_SUBPROTOCOL,
    TOKEN_SUBPROTOCOL_PREFIX,
    encode_token,
    is_console_socket,
    subprotocol_token,
)

from .conftest import ServerProcess

TOKEN = "s3cret/Token+42="


@pytest.fixture(scope="module")
def guarded():
    """At debug level, where the handshake's headers are logged: the token must not be."""
    started = ServerProcess("echo", "--sandbox", "inprocess", "--token", TOKEN, log_level="debug")
    yield started
    started.stop()


OPERATOR, TRAINER, OBSERVER = "op-Token-1", "trainer-Token-2", "observer-Token-3"


@pytest.fixture(scope="module")
def scoped(tmp_path_factory):
    """Scoped tokens: the console is an operator's tool there."""
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text(f"{OPERATOR} operator ops\n{TRAINER} trainer alice\n{OBSERVER} observer watcher\n")
    started = ServerProcess("echo", "--sandbox", "inprocess", "--token-file", str(path))
    yield started
    started.stop()


def offered(token: str = TOKEN) -> list[str]:
    return [CONSOLE_SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + encode_token(token)]


def status_of(url: str, subprotocols: list[str]) -> int:
    try:
        with ws_connect(url, subprotocols=subprotocols, open_timeout=5):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_a_console_socket_is_let_in_with_the_token_as_a_subprotocol(guarded):
    with ws_connect(guarded.url + "/v1/sessions", subprotocols=offered(), open_timeout=5) as ws:
        assert ws.subprotocol == CONSOLE_SUBPROTOCOL  # a browser drops a socket answered with none
        ws.send(json.dumps({"t": "open", "env": "echo"}))
        opened = json.loads(ws.recv(timeout=5))
        assert opened["t"] == "opened"
        with ws_connect(
            guarded.url + f"/v1/sessions/{opened['session_id']}/watch", subprotocols=offered(), open_timeout=5
        ) as watch:
            assert json.loads(watch.recv(timeout=5))["kind"] == "session"
        ws.send(json.dumps({"t": "close", "seq": 1}))
        assert json.loads(ws.recv(timeout=5))["t"] == "closed"
    log = guarded.output()
    assert TOKEN not in log and encode_token(TOKEN) not in log


def test_the_subprotocol_token_is_refused_when_wrong_and_elsewhere(guarded):
    assert status_of(guarded.url + "/v1/sessions", offered("wrong")) == 401
    assert status_of(guarded.url + "/v1/sessions", [CONSOLE_SUBPROTOCOL]) == 401
    assert status_of(guarded.url + "/v1/sessions", [CONSOLE_SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + "!!"]) == 401
    # Only the console's sockets read it: the multiplexed socket and OpenEnv's want the header.
    assert status_of(guarded.url + "/v1/mux", offered()) == 401
    assert status_of(guarded.url + "/ws", offered()) == 401


def test_the_console_subprotocol_is_answered_on_a_server_without_a_token(start_server):
    server = start_server("echo", "--sandbox", "inprocess")
    with ws_connect(server.url + "/v1/sessions", subprotocols=offered("stale"), open_timeout=5) as ws:
        assert ws.subprotocol == CONSOLE_SUBPROTOCOL
        ws.send(json.dumps({"t": "open", "env": "echo"}))
        assert json.loads(ws.recv(timeout=5))["t"] == "opened"


def test_serve_prints_the_console_url(start_server):
    server = start_server("echo", "--sandbox", "inprocess", log_level="info")
    assert f"web console: http://127.0.0.1:{server.port}/ui/" in server.output()


@pytest.mark.parametrize(
    ("path", "console"),
    [
        ("/v1/sessions", True),
        ("/v1/sessions/s-0123/watch", True),
        ("/v1/sessions/a/b/watch", False),
        ("/v1/sessions/watch", False),
        ("/v1/mux", False),
        ("/ws", False),
    ],
)
def test_which_sockets_are_the_consoles(path, console):
    assert is_console_socket(path) is console
    scope = {"type": "websocket", "path": path, "subprotocols": offered()}
    assert subprotocol_token(scope) == (TOKEN.encode() if console else None)


def console_get(server, path: str, token: str, console: bool = True) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"}
    if console:
        headers["x-openenv-ws-console"] = "1"
    return httpx.get(server.http + path, headers=headers, timeout=10)


def test_the_console_is_for_operators_where_tokens_have_scopes(scoped):
    assert console_get(scoped, "/v1/sessions", OPERATOR).status_code == 200
    for token, scope in ((TRAINER, "trainer"), (OBSERVER, "observer")):
        refused = console_get(scoped, "/v1/sessions", token)
        assert refused.status_code == 403
        body = refused.json()
        assert body["code"] == "forbidden"
        assert "the console is for operators" in body["detail"] and f"the {scope} scope" in body["detail"]
        assert console_get(scoped, "/v1/envs", token).status_code == 403
        # The API is not the console: the same token, without the console's header, is served as its scope allows.
        assert console_get(scoped, "/v1/sessions", token, console=False).status_code == 200
    # The console's sockets: an operator's token is let in, the others are refused at the handshake.
    assert status_of(scoped.url + "/v1/sessions", offered(TRAINER)) == 403
    assert status_of(scoped.url + "/v1/sessions/s-0/watch", offered(OBSERVER)) == 403
    with ws_connect(scoped.url + "/v1/sessions", subprotocols=offered(OPERATOR), open_timeout=5) as ws:
        assert ws.subprotocol == CONSOLE_SUBPROTOCOL
        ws.send(json.dumps({"t": "open", "env": "echo"}))
        assert json.loads(ws.recv(timeout=5))["t"] == "opened"
    # A trainer's own client still opens sessions over the same socket path.
    with ws_connect(
        scoped.url + "/v1/sessions", additional_headers={"authorization": f"Bearer {TRAINER}"}, open_timeout=5
    ) as ws:
        ws.send(json.dumps({"t": "open", "env": "echo"}))
        assert json.loads(ws.recv(timeout=5))["t"] == "opened"
