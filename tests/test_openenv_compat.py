"""OpenEnv compatibility, both ways, with the real OpenEnv package (``openenv`` on PyPI).

- OpenEnv's own clients (``GenericEnvClient``, a typed ``EnvClient`` subclass, the
  ``.sync()`` wrapper, its ``validate`` command, its HTTP models) against our server.
- Our client (``connect(..., protocol="openenv")``, ``connect_sync``, ``run_episodes``)
  against a real OpenEnv server: OpenEnv's app factory under uvicorn.
- An OpenEnv environment class served by openenv-ws through the adapter.
"""

# ruff: noqa: E402
from __future__ import annotations

import subprocess
import sys
from typing import Any

sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]  # see tests/openenv_envs.py

import anyio
import httpx
import msgspec
import pytest
from openenv.cli._validation import validate_running_environment
from openenv.core import EnvClient, GenericEnvClient
from openenv.core.client_types import StepResult as OpenEnvStepResult
from openenv.core.env_server.types import (
    Action,
    EnvironmentMetadata,
    HealthResponse,
    Observation,
    ResetRequest,
    ResetResponse,
    SchemaResponse,
    State,
    StepRequest,
    StepResponse,
)
from websockets.sync.client import connect as ws_connect

from openenv_ws import EnvError, EpisodeStateError, SessionLostError, ValidationError, connect, connect_sync
from openenv_ws.client import run_episodes

from .conftest import ROOT, ServerProcess, free_port, wait_for

# ---------------------------------------------------------------- servers


class OpenEnvServer(ServerProcess):
    """A real OpenEnv server (its own app factory under uvicorn), stopped by PID like ours."""

    def __init__(self) -> None:
        self.port = free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        self.url = f"ws://127.0.0.1:{self.port}"
        app = ["tests.openenv_envs:make_app", "--factory", "--port", str(self.port), "--log-level", "warning"]
        self.log = open(ROOT / "tests" / f".openenv-{self.port}.log", "w+b")  # noqa: SIM115
        cmd = [sys.executable, "-m", "uvicorn", *app]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_for(self._ready, timeout=60) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"OpenEnv server did not start in 60s:\n{self.output()}")

    def _ready(self) -> bool:
        """Up, or exited (which the caller then reports)."""
        if self.proc.poll() is not None:
            return True
        try:
            return health(self).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture(scope="module")
def ours():
    """openenv-ws serving echo (one sandbox process per session) and the adapted OpenEnv env."""
    server = ServerProcess("echo", "tests.openenv_envs:AdaptedWordEnv", "--sandbox", "subprocess")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def openenv_server():
    server = OpenEnvServer()
    yield server
    server.stop()


def health(server: ServerProcess) -> httpx.Response:
    """OpenEnv's health route (ours: ``/healthz`` has the details)."""
    return httpx.get(server.http + "/health", timeout=5)


# ---------------------------------------------------------------- OpenEnv's clients -> our server


class EchoAction(Action):
    message: str


class EchoObservation(Observation):
    echoed_message: str = ""
    message_length: int = 0


class EchoClient(EnvClient[EchoAction, EchoObservation, State]):
    """A typed client written the way OpenEnv's template writes one."""

    def _step_payload(self, action: EchoAction) -> dict:
        return {"message": action.message}

    def _parse_result(self, payload: dict) -> OpenEnvStepResult[EchoObservation]:
        obs = payload.get("observation", {})
        observation = EchoObservation(**obs, done=payload.get("done", False), reward=payload.get("reward"))
        return OpenEnvStepResult(observation=observation, reward=payload.get("reward"), done=payload.get("done", False))

    def _parse_state(self, payload: dict) -> State:
        return State(**payload)


async def test_generic_client_runs_an_episode_in_its_own_sandbox(ours):
    assert wait_for(lambda: ours.sessions() == [])
    async with GenericEnvClient(base_url=ours.http) as first, GenericEnvClient(base_url=ours.http) as second:
        r = await first.reset(seed=3)
        assert r.observation == {"metadata": {}, "echoed_message": "", "message_length": 0}  # OpenEnv's shape
        assert r.reward is None and not r.done
        await second.reset()
        r = await first.step({"message": "hello"})
        assert r.observation["echoed_message"] == "hello" and r.reward == 0.5 and r.done is False
        r = await first.step(EchoAction(message="typed"))  # model_dump() adds metadata={}: accepted
        assert r.observation["message_length"] == 5
        state = await first.state()
        assert state["step_count"] == 2 and state["last_message"] == "typed"
        sessions = ours.sessions()
        assert len(sessions) == 2 and len({s["sandbox"] for s in sessions}) == 2  # a sandbox process each
        assert all(s["sandbox"].startswith("pid:") for s in sessions)
    assert wait_for(lambda: ours.sessions() == [])  # close ends the session and stops its sandbox


def test_typed_client_through_the_sync_wrapper(ours):
    with EchoClient(base_url=ours.http).sync() as env:
        r = env.reset()
        assert r.observation == EchoObservation() and not r.done
        for word in ("one", "three"):
            r = env.step(EchoAction(message=word))
            assert r.observation.echoed_message == word and r.reward == pytest.approx(0.1 * len(word))
        assert env.state().step_count == 2


async def test_errors_are_openenv_errors_and_the_session_goes_on(ours):
    async with GenericEnvClient(base_url=ours.http) as env:
        early = await env.step({"message": "early"})  # before any reset: answered as OpenEnv does (reset first)
        assert early.observation["echoed_message"] == "early"
        await env.reset()
        with pytest.raises(RuntimeError, match=r"invalid action.*VALIDATION_ERROR"):
            await env.step({"message": 42})
        r = await env.step({"message": "still here"})
        assert r.observation["echoed_message"] == "still here"


def test_malformed_messages_get_openenv_errors(ours):
    with ws_connect(ours.url + "/ws", open_timeout=10) as ws:

        def ask(text: str) -> dict:
            ws.send(text)
            return msgspec.json.decode(ws.recv(timeout=10))

        assert ask("not json")["data"]["code"] == "INVALID_JSON"
        assert ask('{"type": "dance"}')["data"] == {
            "message": "Unknown message type: dance",
            "code": "UNKNOWN_TYPE",
            "ws_code": "unexpected_frame",
            "fatal": False,
        }
        assert ask('{"type": "step"}')["data"]["code"] == "VALIDATION_ERROR"
        assert ask('{"type": "reset", "data": {"seed": -1}}')["data"]["code"] == "VALIDATION_ERROR"
        assert ask('{"type": "reset", "data": {"seed": 1}}')["type"] == "observation"
        error = ask('{"type": "step", "data": {"message": 1}}')["data"]
        assert error["code"] == "VALIDATION_ERROR" and error["path"] == "$.message" and error["ws_code"] == "validation"
        assert error["errors"] == [
            {"type": "value_error", "loc": ["message"], "msg": error["message"]}
        ]  # OpenEnv's list
        reply = ask('{"type": "step", "data": {"message": "ok"}}')
        observation = {"echoed_message": "ok", "message_length": 2, "metadata": {}}
        assert reply == {"type": "observation", "data": {"observation": observation, "reward": 0.2, "done": False}}


def test_a_dropped_socket_ends_its_session_at_once(ours):
    assert wait_for(lambda: ours.sessions() == [])
    with ws_connect(ours.url + "/ws", open_timeout=10) as ws:
        ws.send('{"type": "reset"}')
        assert msgspec.json.decode(ws.recv(timeout=10))["type"] == "observation"
        assert len(ours.sessions()) == 1
        ws.socket.close()  # no close message, no close frame: the connection just goes
        assert wait_for(lambda: ours.sessions() == [])  # no resume grace: OpenEnv clients cannot resume


async def test_capacity_is_an_openenv_error_and_health_tells(start_server):
    server = start_server("echo", "--sandbox", "inprocess", "--max-sessions", "1")
    assert health(server).json() == {"status": "healthy"}
    async with GenericEnvClient(base_url=server.http) as first:
        await first.reset()
        full = health(server)
        assert full.status_code == 200 and HealthResponse.model_validate(full.json()).status == "degraded"
        async with GenericEnvClient(base_url=server.http) as second:
            with pytest.raises(RuntimeError, match="CAPACITY_REACHED"):
                await second.reset()
    assert wait_for(lambda: health(server).json() == {"status": "healthy"})


async def test_idle_sessions_are_reaped_over_ws_and_http(start_server):
    server = start_server("echo", "--sandbox", "inprocess", "--idle-timeout", "1")
    async with GenericEnvClient(base_url=server.http) as env:
        await env.reset()
        sid = {"X-Session-Id": httpx.post(server.http + "/reset", timeout=5).headers["X-Session-Id"]}  # noqa: ASYNC210
        assert len(server.sessions()) == 2
        assert wait_for(lambda: server.sessions() == [], timeout=10)
        # The socket stays: the next request is told the episode is gone (no silent new session) ...
        with pytest.raises(RuntimeError, match=r"idle timeout\) and its episode is gone.*SESSION_ERROR"):
            await env.step({"message": "too late"})
        again = await env.reset()  # ... and a reset starts a new one on the same socket
        assert again.observation["echoed_message"] == "" and len(server.sessions()) == 1
    gone = httpx.post(server.http + "/step", json={"action": {"message": "too late"}}, headers=sid, timeout=5)  # noqa: ASYNC210
    assert gone.status_code == 404 and "expired" in gone.json()["detail"]


def test_http_episode_persists_across_calls(ours):
    with httpx.Client(base_url=ours.http, timeout=30) as http:
        first = http.post("/reset", json=ResetRequest(seed=1).model_dump(exclude_unset=True))
        assert first.status_code == 200
        observation = ResetResponse.model_validate(first.json()).observation
        assert observation == {"metadata": {}, "echoed_message": "", "message_length": 0}
        sid = {"X-Session-Id": first.headers["X-Session-Id"]}
        other = http.post("/reset").headers["X-Session-Id"]  # a second episode, in its own sandbox
        assert other != sid["X-Session-Id"]
        for word in ("a", "bb", "ccc"):
            body = StepRequest(action={"message": word}).model_dump(exclude_none=True)
            r = http.post("/step", json=body, headers=sid)
            step = StepResponse.model_validate(r.json())
            assert step.observation["echoed_message"] == word and step.reward == pytest.approx(0.1 * len(word))
        state = State.model_validate(http.get("/state", headers=sid).json())
        assert state.step_count == 3 and state.last_message == "ccc"  # type: ignore[attr-defined]
        assert http.get("/state", params={"session_id": other}).json()["step_count"] == 0  # untouched

        bad = http.post("/step", json={"action": {"message": 1}}, headers=sid)
        assert bad.status_code == 422 and bad.json()["path"] == "$.message"
        held = len(ours.sessions())
        stateless = http.post("/step", json={"action": {"message": "x"}})  # OpenEnv's simulation mode: a fresh env
        assert stateless.status_code == 200 and stateless.json()["observation"]["echoed_message"] == "x"
        assert http.get("/state").json()["step_count"] == 0
        assert len(ours.sessions()) == held  # their sessions were closed with their answers
        assert http.post("/step", json={"action": {}}, headers={"X-Session-Id": "s-nope"}).status_code == 404

        assert http.post("/close", headers=sid).json()["closed"] is True
        assert http.post("/close", params={"session_id": other}).status_code == 200
        assert http.get("/state", headers=sid).status_code == 404
    assert wait_for(lambda: ours.sessions() == [])


async def test_http_requests_to_one_session_wait_their_turn(ours):
    async with httpx.AsyncClient(base_url=ours.http, timeout=30) as http:
        sid = {"X-Session-Id": (await http.post("/reset")).headers["X-Session-Id"]}
        statuses = []

        async def step(word: str) -> None:
            r = await http.post("/step", json={"action": {"message": word, "delay_s": 0.2}}, headers=sid)
            statuses.append(r.status_code)

        async with anyio.create_task_group() as tg:
            for word in ("x", "yy", "zzz"):
                tg.start_soon(step, word)
        assert statuses == [200, 200, 200]
        assert (await http.get("/state", headers=sid)).json()["step_count"] == 3
        await http.post("/close", headers=sid)


def test_openenv_validate_passes_and_documents_are_openenv_models(ours):
    report = validate_running_environment(ours.http)
    assert report["passed"], report["criteria"]
    assert report["standard_profile"] == "openenv-http/1.x" and report["mode"] == "simulation"
    schema = SchemaResponse.model_validate(httpx.get(ours.http + "/schema").json())
    assert schema.action["$defs"]["EchoAction"]["required"] == ["message"]
    metadata = EnvironmentMetadata.model_validate(httpx.get(ours.http + "/metadata").json())
    assert metadata.name == "echo" and "0.1 x message length" in metadata.description
    assert metadata.readme_content and metadata.readme_content.startswith("# echo")
    words = httpx.get(ours.http + "/envs/words/schema").json()
    assert words["action"]["properties"]["word"] == {"title": "Word", "type": "string"}


async def test_openenv_client_reaches_a_named_env_and_sees_done(ours):
    async with GenericEnvClient(base_url=ours.http + "/envs/words") as env:
        r = await env.reset(seed=4)
        assert r.metadata == {"seed": 4} and not r.done
        r = await env.step({"word": "stop"})
        assert r.done and r.reward == 4.0 and r.metadata == {"step": 1}
        await env.reset()
        for _ in range(5):
            r = await env.step({"word": "go"})
        assert r.done and r.metadata == {"step": 5, "truncated": True}
        await env.reset(episode_id="mine")  # OpenEnv's reset keywords reach the env's reset()
        assert (await env.state())["episode_id"] == "mine"


# ---------------------------------------------------------------- our client -> a real OpenEnv server


async def word_episode(url: str, env: str | None = None) -> list[Any]:
    """One scripted episode through our client; the results, for comparison between servers."""
    seen: list[Any] = []
    async with connect(url, env, protocol="openenv", request_timeout=30) as session:
        assert session.session_id is None and session.backend == "openenv"
        first = await session.reset(seed=7)
        assert first.info == {"seed": 7} and not first.terminated
        seen.append(first)
        r = await session.step({"word": "hello"})
        assert r.reward == 5.0 and r.info == {"step": 1} and not r.done
        seen.append(r)
        with pytest.raises(ValidationError) as bad:
            await session.step({"word": 3})
        assert bad.value.path == "$.word" and not bad.value.fatal
        with pytest.raises(EnvError):
            await session.step({"word": "boom"})
        r = await session.step({"word": "stop"})
        assert r.terminated and not r.truncated and r.info == {"step": 2}
        seen.append(r)
        assert (await session.state())["step_count"] == 2
        await session.reset(seed=8)
        for _ in range(5):
            r = await session.step({"word": "go"})
        assert r.truncated and not r.terminated  # OpenEnv said so in its metadata
        seen.append(r)
    return seen


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_our_client_drives_a_real_openenv_server(openenv_server, backend):
    results = anyio.run(word_episode, openenv_server.http, backend=backend)
    assert results[1].observation["echoed"] == "hello"


def test_the_adapted_env_answers_like_openenv_itself(openenv_server, ours):
    """The same OpenEnv class, under OpenEnv's server and under ours: the same episode."""
    theirs = anyio.run(word_episode, openenv_server.url)
    mine = anyio.run(word_episode, ours.url, "words")
    for a, b in zip(theirs, mine, strict=True):
        assert a.observation == b.observation  # metadata inside the observation too, as OpenEnv sends it
        assert (a.reward, a.terminated, a.truncated, a.info) == (b.reward, b.terminated, b.truncated, b.info)


class WordObservation(msgspec.Struct):
    echoed: str = ""
    length: int = 0


def test_sync_facade_and_typed_observations(openenv_server):
    with connect_sync(openenv_server.http, protocol="openenv", observation_type=WordObservation) as env:
        env.reset()
        assert env.step({"word": "typed"}).observation == WordObservation(echoed="typed", length=5)


async def test_run_episodes_drives_openenv_episodes(openenv_server):
    records = await run_episodes(
        openenv_server.http, None, lambda obs: {"word": "go"}, episodes=4, concurrency=4, protocol="openenv"
    )
    assert all(r.ok and r.ended == "truncated" and r.length == 5 and r.episode_return == 10.0 for r in records)


async def test_a_stopped_openenv_server_is_a_lost_session():
    port = free_port()
    with pytest.raises(SessionLostError, match="cannot open a session"):
        async with connect(f"http://127.0.0.1:{port}", protocol="openenv", connect_timeout=5):
            pass


# ---------------------------------------------------------------- the adapter, natively


async def test_adapted_openenv_env_speaks_our_protocol(ours):
    async with connect(ours.url, "words") as env:
        assert env.action_schema["properties"]["word"]["type"] == "string"
        r = await env.reset(seed=2)
        assert r.observation == {"echoed": "", "length": 0} and r.info == {"seed": 2}
        with pytest.raises(ValidationError) as bad:
            await env.step({"word": ["not", "a", "word"]})
        assert bad.value.path == "$.word"
        with pytest.raises(EnvError, match="on purpose"):
            await env.step({"word": "boom"})
        r = await env.step({"word": "stop"})
        assert r.terminated and r.reward == 4.0
        with pytest.raises(EpisodeStateError):
            await env.step({"word": "after the end"})
        state = await env.state()
        assert state["step_count"] == 1 and state["episode_id"] == "seed-2"
