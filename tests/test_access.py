"""Per-session authorization: tokens with scopes; a trainer reaches only its own sessions, an operator all.

One real server with a token file (two trainers, an operator, an observer) and the legacy
``--token`` beside it; every check goes through real sockets: the session list, the watch
socket, OpenEnv's HTTP routes, a resume on the session socket and on ``/v1/mux``.
"""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.asyncio.client import connect as raw_connect

from openenv_ws import ForbiddenError, connect
from openenv_ws import protocol as p

TOKENS = {"alice": "alice-Secret-1", "bob": "bob-Secret-2", "ops": "ops-Secret-3", "scraper": "scrape-Secret-4"}
LEGACY = "legacy-Operator-5"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    from .conftest import ServerProcess

    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text(
        "# token scope name\n"
        f"{TOKENS['alice']} trainer alice\n"
        f"{TOKENS['bob']} trainer bob\n"
        f"\n{TOKENS['ops']} operator ops\n"
        f"{TOKENS['scraper']} observer\n"
    )
    server = ServerProcess("echo", "--sandbox", "inprocess", "--token-file", str(path), "--token", LEGACY)
    yield server
    server.stop()


def bearer(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS.get(who, who)}"}


def sessions(server, who: str) -> dict[str, dict]:
    """``GET /v1/sessions`` as ``who`` sees it, by id."""
    response = httpx.get(server.http + "/v1/sessions", headers=bearer(who), timeout=5)
    assert response.status_code == 200, response.text
    return {s["id"]: s for s in response.json()["sessions"]}


def listed(server, who: str) -> set[str]:
    return set(sessions(server, who))


async def open_raw(server, who: str, open_key: str | None = None) -> tuple[object, p.Opened]:
    """A session opened on a raw socket: the test sees its resume token."""
    ws = await raw_connect(server.url + "/v1/sessions", additional_headers=bearer(who))
    await ws.send(p.encode(p.Open(env="echo", open_key=open_key)))
    opened = p.decode_server(await ws.recv())
    assert isinstance(opened, p.Opened), opened
    return ws, opened


async def watch(server, session_id: str, headers: dict[str, str]) -> tuple[dict, int | None]:
    """The watch socket's first message, and its close code if it closed right after."""
    async with raw_connect(f"{server.url}/v1/sessions/{session_id}/watch", additional_headers=headers) as ws:
        first = json.loads(await ws.recv())
        if first["kind"] == "error":
            await ws.wait_closed()
            return first, ws.close_code
        return first, None


async def test_a_trainer_lists_and_watches_only_its_own_sessions(guarded):
    async with (
        connect(guarded.url, "echo", token=TOKENS["alice"]) as a,
        connect(guarded.url, "echo", token=TOKENS["bob"]) as b,
    ):
        assert listed(guarded, "alice") == {a.session_id}
        assert listed(guarded, "bob") == {b.session_id}
        assert {a.session_id, b.session_id} <= listed(guarded, "ops") == listed(guarded, "scraper")
        assert {a.session_id, b.session_id} <= listed(guarded, LEGACY)  # --token: an operator, as before
        owners = {i: s["owner"] for i, s in sessions(guarded, "ops").items()}
        assert owners[a.session_id] == "alice" and owners[b.session_id] == "bob"

        refused, code = await watch(guarded, a.session_id, bearer("bob"))
        assert code == 4403 and refused["code"] == "forbidden" and "another client" in refused["message"]
        for who in ("alice", "ops", "scraper"):
            first, code = await watch(guarded, a.session_id, bearer(who))
            assert code is None and first["kind"] == "session" and first["id"] == a.session_id, who
        await a.reset()  # the refused watcher did nothing to the session
        assert (await a.step({"message": "still mine"})).reward == pytest.approx(1.0)


def test_the_openenv_http_routes_answer_the_owner_an_operator_or_the_resume_token(guarded):
    opened = httpx.post(guarded.http + "/reset", json={}, headers=bearer("alice"), timeout=10)
    assert opened.status_code == 200
    session_id, resume_token = opened.headers["x-session-id"], opened.headers["x-resume-token"]
    own = {**bearer("alice"), "X-Session-Id": session_id}
    theirs = {**bearer("bob"), "X-Session-Id": session_id}
    step = {"action": {"message": "hi"}}

    for method, path, body in (("POST", "/step", step), ("GET", "/state", None), ("POST", "/reset", {})):
        refused = httpx.request(method, guarded.http + path, json=body, headers=theirs, timeout=10)
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["code"] == "forbidden" and "another client" in refused.json()["detail"]
    observer = {**bearer("scraper"), "X-Session-Id": session_id}
    assert httpx.post(guarded.http + "/step", json=step, headers=observer, timeout=10).status_code == 403

    assert httpx.post(guarded.http + "/step", json=step, headers=own, timeout=10).status_code == 200
    operator = {**bearer("ops"), "X-Session-Id": session_id}
    assert httpx.post(guarded.http + "/step", json=step, headers=operator, timeout=10).status_code == 200
    handed = {**theirs, "X-Resume-Token": resume_token}  # the session's own credential, handed to bob
    assert httpx.get(guarded.http + "/state", headers=handed, timeout=10).json()["step_count"] == 2
    wrong = {**theirs, "X-Resume-Token": resume_token[:-1] + "x"}
    assert httpx.get(guarded.http + "/state", headers=wrong, timeout=10).status_code == 403
    assert httpx.post(guarded.http + "/close", headers=own, timeout=10).status_code == 200


async def test_a_resume_needs_the_owner_or_an_operator_besides_the_resume_token(guarded):
    ws, opened = await open_raw(guarded, "alice")
    async with ws:
        resume = p.Open(session_id=opened.session_id, resume_token=opened.resume_token, last_seen=0)
        async with raw_connect(guarded.url + "/v1/sessions", additional_headers=bearer("bob")) as thief:
            await thief.send(p.encode(resume))
            refused = p.decode_server(await thief.recv())
            assert isinstance(refused, p.Error) and refused.code == "forbidden" and refused.fatal
        async with raw_connect(guarded.url + "/v1/mux", additional_headers=bearer("bob")) as mux:
            await mux.send(p.encode_batch([(7, p.encode(resume))]))
            [(channel, data)] = p.decode_batch(await mux.recv())
            refused = p.decode_server(data)
            assert channel == 7 and isinstance(refused, p.Error) and refused.code == "forbidden"
        assert opened.session_id in listed(guarded, "alice")  # refused twice, still alice's, still open
        handed = {**bearer("bob"), "X-Resume-Token": opened.resume_token}  # the credential lets bob watch
        first, code = await watch(guarded, opened.session_id, handed)
        assert code is None and first["kind"] == "session" and first["owner"] == "alice"
        async with raw_connect(guarded.url + "/v1/sessions", additional_headers=bearer("ops")) as operator:
            await operator.send(p.encode(resume))
            resumed = p.decode_server(await operator.recv())
            assert isinstance(resumed, p.Opened) and resumed.resumed and resumed.session_id == opened.session_id


def test_an_observer_reads_metrics_and_a_trainer_does_not(guarded):
    assert httpx.get(guarded.http + "/metrics", headers=bearer("scraper"), timeout=5).status_code == 200
    assert httpx.get(guarded.http + "/metrics", headers=bearer("ops"), timeout=5).status_code == 200
    refused = httpx.get(guarded.http + "/metrics", headers=bearer("alice"), timeout=5)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    metrics = httpx.get(guarded.http + "/metrics", headers=bearer("ops"), timeout=5).text
    denied = next(line for line in metrics.splitlines() if line.startswith("openenv_ws_access_denied_total "))
    assert int(denied.split()[1]) >= 1


async def test_an_observer_opens_no_session(guarded):
    with pytest.raises(ForbiddenError) as info:
        async with connect(guarded.url, "echo", token=TOKENS["scraper"]):
            pass
    assert "observer scope" in info.value.message and info.value.code == "forbidden"
    async with httpx.AsyncClient() as http:
        opened = await http.post(guarded.http + "/reset", json={}, headers=bearer("scraper"), timeout=10)
    assert opened.status_code == 403 and opened.json()["code"] == "forbidden"
    assert not [s for s in sessions(guarded, "ops").values() if s["owner"].startswith("observer-")]  # none opened


async def test_an_open_key_never_lands_on_another_identitys_session(guarded):
    ws_a, alices = await open_raw(guarded, "alice", open_key="the-same-key")
    async with ws_a:
        ws_b, bobs = await open_raw(guarded, "bob", open_key="the-same-key")
        async with ws_b:
            assert bobs.session_id != alices.session_id and not bobs.resumed
            owners = {i: s["owner"] for i, s in sessions(guarded, "ops").items()}
            assert owners[alices.session_id] == "alice" and owners[bobs.session_id] == "bob"
        await ws_a.send(p.encode(p.Reset(seq=1)))  # alice's socket still holds her session
        assert isinstance(p.decode_server(await ws_a.recv()), p.Result)


async def test_the_forks_of_a_trainers_session_are_its_own(guarded):
    async with connect(guarded.url, "echo", token=TOKENS["alice"]) as parent:
        await parent.reset()
        await parent.step({"message": "before"})
        child = await parent.fork()  # the child is resumed on alice's connection: hers to resume
        assert (await child.step({"message": "after"})).observation["echoed_message"] == "after"
        assert sessions(guarded, "ops")[child.session_id]["owner"] == "alice"
        assert child.session_id in listed(guarded, "alice") and child.session_id not in listed(guarded, "bob")
