"""Every HTTP route answers malformed input with a 4xx and a JSON body that names the problem, never a 500.

The routes are read from the app itself (ours and OpenEnv's, at the root and under
``/envs/{env}/``), so a route added later is fuzzed too. Each gets wrong methods, and each
route that reads a body gets bad JSON, nesting thousands deep, integers past 64 bits, bad
UTF-8, wrong types and missing fields, with and without a session behind it. Then the
server's log holds no traceback and a session opened before still steps.
"""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.routing import Route, WebSocketRoute

from openenv_ws.openenv.server import openenv_routes
from openenv_ws.server import create_app

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

NOT_JSON = {
    "bad JSON": b"{nope",
    "objects nested 5,000 deep": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "arrays nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "bad UTF-8": b'{"action": {"message": "\xff\xfe"}}',
    "a number past a float": b'{"action": {"message": 1e400}}',
    "NaN": b'{"seed": NaN}',
}
"""Bodies that are not JSON at all."""

NOT_AN_OBJECT = {
    "an array": b"[1, 2, 3]",
    "a string": b'"reset"',
    "a number": b"42",
    "null": b"null",
}
"""JSON that no body may be: every body of these routes is an object."""

BAD_RESETS = {
    "a seed past 64 bits": b'{"seed": 120000000000000000000000000000}',
    "a negative seed": b'{"seed": -1}',
    "a seed of the wrong type": b'{"seed": "7"}',
    "a fractional seed": b'{"seed": 1.5}',
    "a boolean seed": b'{"seed": true}',
    "an option past 64 bits": b'{"note": 120000000000000000000000000000}',
}
"""Objects that no body of ``/reset`` may be (``/step`` refuses them too: they hold no ``action``)."""

BAD_ACTIONS = {
    "no action": b"{}",
    "an action of the wrong type": b'{"action": "step"}',
    "an action field past 64 bits": b'{"action": {"message": 12000000000000000000000000000000}}',
    "an action the schema refuses": b'{"action": {"message": 7}}',
    "an action nested deep": b'{"action": ' + b"[" * 5000 + b"]" * 5000 + b"}",
}


def http_routes() -> list[Route]:
    app = create_app("echo", extensions=[openenv_routes])
    return [route for route in app.routes if isinstance(route, Route)]


def concrete(path: str) -> str:
    return path.replace("{env}", "echo").replace("{session_id}", "s-nope")


@pytest.fixture(scope="module")
def server():
    from .conftest import ServerProcess

    server = ServerProcess("echo", "--sandbox", "inprocess", log_level="info")
    yield server
    server.stop()


def assert_named_4xx(response: httpx.Response, what: str) -> dict:
    assert 400 <= response.status_code < 500, (what, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), (what, response.text[:300])
    body = response.json()
    assert isinstance(body.get("detail"), str) and body["detail"], (what, body)
    assert isinstance(body.get("code"), str) and body["code"] != "internal", (what, body)
    return body


def test_every_route_refuses_the_wrong_methods_in_json(server):
    routes = http_routes()
    assert {concrete(r.path) for r in routes} >= {"/healthz", "/v1/sessions", "/metrics", "/mcp", "/envs/echo/step"}
    with httpx.Client(base_url=server.http, timeout=10) as http:
        for route in routes:
            for method in METHODS:
                if method in (route.methods or ()):
                    continue
                response = http.request(method, concrete(route.path))
                body = assert_named_4xx(response, f"{method} {route.path}")
                assert response.status_code == 405 and body["code"] == "method_not_allowed"
                assert method in body["detail"] and response.headers["allow"]


def test_websocket_routes_and_unknown_paths_are_json_404s(server):
    app = create_app("echo", extensions=[openenv_routes])
    sockets = [concrete(r.path) for r in app.routes if isinstance(r, WebSocketRoute)]
    assert {"/v1/sessions/s-nope/watch", "/v1/mux", "/ws", "/envs/echo/ws"} <= set(sockets)
    with httpx.Client(base_url=server.http, timeout=10) as http:
        for path in sockets:
            if path in ("/v1/sessions", "/mcp", "/envs/echo/mcp"):  # also HTTP routes (the list, MCP's POST)
                continue
            body = assert_named_4xx(http.get(path), path)
            assert body["code"] == "not_found" and "WebSocket route" in body["detail"]
        for path in ("/nope", "/envs/echo/nope", "/v1/sessions/s-nope", "/%ff%fe", "/" + "a" * 4000):
            body = assert_named_4xx(http.get(path), path)
            assert body["code"] == "not_found" and "WebSocket" not in body["detail"]


def test_malformed_bodies_get_a_4xx_naming_the_problem(server):
    with httpx.Client(base_url=server.http, timeout=30) as http:
        opened = http.post("/reset", json={})
        assert opened.status_code == 200
        session = {"X-Session-Id": opened.headers["x-session-id"]}
        for prefix in ("", "/envs/echo"):
            for headers in ({}, session):
                for name, body in {**NOT_JSON, **NOT_AN_OBJECT, **BAD_RESETS}.items():
                    for path in ("/reset", "/step") if name in BAD_RESETS else ("/reset", "/step", "/close"):
                        response = http.post(prefix + path, content=body, headers=headers)
                        problem = assert_named_4xx(response, f"{path} {name} {bool(headers)}")
                        if name in NOT_JSON:
                            assert response.status_code == 400 and problem["code"] == "malformed_frame"
                            assert "Invalid JSON" in problem["detail"]
                for name, body in BAD_ACTIONS.items():
                    response = http.post(prefix + "/step", content=body, headers=headers)
                    problem = assert_named_4xx(response, f"/step {name} {bool(headers)}")
                    if headers and name == "an action the schema refuses":
                        assert problem["code"] == "validation" and problem["path"] == "$.message"
        # Refused requests left the session as it was: open, and one step further only now.
        assert http.post("/step", json={"action": {"message": "ok"}}, headers=session).status_code == 200
        assert http.get("/state", headers=session).json()["step_count"] == 1


def test_mcp_answers_json_rpc_errors_and_400_for_what_is_not_json(server):
    with httpx.Client(base_url=server.http, timeout=30) as http:
        for name, body in NOT_JSON.items():
            response = http.post("/mcp", content=body)
            assert response.status_code == 400, (name, response.text[:200])
            error = response.json()["error"]
            assert error["code"] == -32700 and error["message"].startswith("Parse error: invalid JSON"), name
        for name, body in {**NOT_AN_OBJECT, **BAD_RESETS}.items():  # JSON, but no JSON-RPC request: as OpenEnv
            response = http.post("/mcp", content=body)
            assert response.status_code == 200 and response.json()["error"]["code"] == -32600, name


def test_bad_session_ids_and_env_names_in_headers_and_queries(server):
    with httpx.Client(base_url=server.http, timeout=10) as http:
        for session_id in (b"s-nope", "é".encode("latin-1"), b"x" * 4000, b"\xff\xfe"):
            body = assert_named_4xx(http.get("/state", headers={"X-Session-Id": session_id}), repr(session_id))
            assert body["code"] == "session_not_found"
        for query in ("session_id=%ff%fe", "session_id=%00", "session_id=" + "9" * 400):
            assert assert_named_4xx(http.get("/state?" + query), query)["code"] == "session_not_found"
        for path in ("/schema?env=%ff", "/metadata?env=nope", "/envs/nope/schema", "/envs/%00/metadata"):
            assert assert_named_4xx(http.get(path), path)["code"] == "unknown_env"
        for path in ("/envs/nope/reset", "/reset?env=%ff"):
            assert assert_named_4xx(http.post(path, json={}), path)["code"] == "unknown_env"


async def test_nothing_failed_inside_and_sessions_go_on(server):
    # The module's other tests ran first: their inputs left no traceback behind.
    from openenv_ws import connect

    async with connect(server.url, "echo") as env:
        await env.reset()
        assert (await env.step({"message": "after the fuzz"})).observation["message_length"] == 14
    log = server.output()
    assert '"POST /step HTTP/1.1" 422' in log  # the access log is there to read
    assert "Traceback" not in log and not re.search(r'HTTP/1.1" 5\d\d', log), log[-3000:]


async def test_an_unforeseen_failure_is_a_json_500_not_starlettes_text():
    def broken(manager):
        async def fail(request):
            raise RuntimeError("a bug")

        return [Route("/broken", fail)]

    app = create_app("echo", extensions=[broken])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/broken")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error: RuntimeError", "code": "internal"}
