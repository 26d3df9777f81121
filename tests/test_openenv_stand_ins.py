"""The stand-ins for OpenEnv's ``echo_env`` and ``connect4_env`` (tests/openenv_parity/stand_ins/).

OpenEnv's integration tests in tests/openenv_parity/ run on them in CI, so they must behave as
OpenEnv's packages do, beyond the little those tests assert. The rules are checked here always;
with ``OPENENV_SRC`` naming a copy of OpenEnv's repository, the same games and tool calls are also
played on OpenEnv's own packages and every observation and state compared.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]  # see tests/openenv_envs.py

import pytest  # noqa: E402
from openenv.core.env_server.mcp_types import (  # noqa: E402
    CallToolAction,
    CallToolObservation,
    ListToolsAction,
    ListToolsObservation,
)
from openenv.core.env_server.types import Action  # noqa: E402

from .openenv_parity.example_envs import NAMES, STAND_INS  # noqa: E402


def load(folder: Path, name: str, alias: str, module: str) -> ModuleType:
    """``name.module`` from ``folder``, imported as the package ``alias``: both copies in one process."""
    if alias not in sys.modules:
        init = folder / name / "__init__.py"
        spec = importlib.util.spec_from_file_location(alias, init, submodule_search_locations=[str(init.parent)])
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules[alias] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{alias}.{module}")


def openenv_envs() -> Path:
    src = os.environ.get("OPENENV_SRC")
    envs = Path(src or "/nonexistent") / "envs"
    if not all((envs / name).is_dir() for name in NAMES):
        pytest.skip("set OPENENV_SRC to a copy of OpenEnv's repository to compare the stand-ins with it")
    return envs


def connect4(folder: Path, alias: str) -> tuple[Any, Any]:
    environment = load(folder, "connect4_env", alias, "server.connect4_environment")
    models = load(folder, "connect4_env", alias, "models")
    return environment.Connect4Environment, models.Connect4Action


def echo(folder: Path, alias: str) -> Any:
    return load(folder, "echo_env", alias, "server.echo_environment").EchoEnvironment


def play(columns: list[int], folder: Path = STAND_INS, alias: str = "stand_in_connect4_env") -> list[tuple]:
    """Each move's (observation, state without the episode id), until the game ends."""
    environment, action = connect4(folder, alias)
    env = environment()
    seen = [(env.reset().model_dump(), env.state.model_dump(exclude={"episode_id"}))]
    for column in columns:
        observation = env.step(action(column=column))
        seen.append((observation.model_dump(), env.state.model_dump(exclude={"episode_id"})))
        if observation.done:
            break
    return seen


def test_connect4_pieces_fall_and_turns_alternate():
    (start, _), (first, state) = play([3])
    assert start["board"] == [[0] * 7 for _ in range(6)] and start["legal_actions"] == list(range(7))
    assert first["board"][5][3] == 1 and sum(map(sum, first["board"])) == 1
    assert (first["reward"], first["done"], first["metadata"]) == (0.0, False, {"next_player": -1})
    assert (state["next_player"], state["step_count"], state["board"]) == (-1, 1, first["board"])


@pytest.mark.parametrize(
    "columns",
    [
        [0, 6, 1, 6, 2, 6, 3],
        [0, 6, 0, 5, 0, 4, 0],
        [0, 1, 1, 2, 2, 3, 2, 3, 3, 6, 3],
        [3, 2, 2, 1, 6, 1, 1, 0, 0, 0, 0],
    ],
    ids=["across", "down", "diagonal", "antidiagonal"],
)
def test_connect4_four_in_a_row_wins(columns):
    seen = play(columns)
    assert len(seen) == len(columns) + 1, "the game ended early"
    last, state = seen[-1]
    assert (last["reward"], last["done"]) == (1.0, True)
    assert state["step_count"] == len(columns)


def test_connect4_a_move_into_a_full_or_missing_column_ends_the_game():
    for columns in ([0] * 7, [7], [-1]):
        (before, _), (after, state) = play(columns)[-2:]
        assert (after["reward"], after["done"]) == (-1, True)
        assert after["board"] == before["board"] and state["next_player"] == after["metadata"]["next_player"]


def test_connect4_a_full_board_is_a_draw():
    columns = [1, 4, 5, 3, 1, 5, 3, 4, 6, 0, 1, 6, 6, 4, 4, 2, 5, 0, 6, 6, 0, 3, 0, 0, 3, 4, 3, 1, 0, 6, 4, 3, 1, 1]
    seen = play([*columns, 2, 5, 2, 2, 5, 5, 2, 2])
    last, _ = seen[-1]
    assert len(seen) == 43 and (last["reward"], last["done"], last["legal_actions"]) == (0.0, True, [])


def test_echo_is_mcp_only_and_counts_every_step():
    env = echo(STAND_INS, "stand_in_echo_env")()
    assert env.reset().metadata["status"] == "ready"
    tools = env.step(ListToolsAction())
    assert isinstance(tools, ListToolsObservation)
    assert sorted(t.name for t in tools.tools) == ["echo_message", "echo_with_length"]
    called = env.step(CallToolAction(tool_name="echo_with_length", arguments={"message": "four"}))
    assert isinstance(called, CallToolObservation) and called.error is None
    assert called.result.data == {"message": "four", "length": 4}
    assert "Unknown action type" in env.step(Action()).metadata["error"]
    assert env.state.step_count == 3
    env.reset(episode_id="e2")
    assert (env.state.episode_id, env.state.step_count) == ("e2", 0)
    env.close()


def test_connect4_plays_as_openenvs():
    theirs = openenv_envs()
    rng = random.Random(17)
    for game in range(200):
        columns = [rng.randrange(-1, 8) if rng.random() < 0.02 else rng.randrange(7) for _ in range(42)]
        assert play(columns) == play(columns, theirs, "openenv_connect4_env"), f"game {game}: {columns}"


def shape(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's input schema without the descriptions, which are each one's own prose."""
    properties = {name: {k: v for k, v in p.items() if k != "description"} for name, p in schema["properties"].items()}
    return {**schema, "properties": properties}


def test_echo_answers_as_openenvs():
    def session(environment: Any) -> list[Any]:
        env = environment()
        seen: list[Any] = [env.reset().model_dump()]
        tools = env.step(ListToolsAction())
        seen.append(sorted((t.name, shape(t.input_schema)) for t in tools.tools))
        for tool, arguments in [
            ("echo_message", {"message": "Hello"}),
            ("echo_with_length", {"message": "Hello World!"}),
            ("nonexistent_tool", {}),
            ("echo_message", {}),
        ]:
            called = env.step(CallToolAction(tool_name=tool, arguments=arguments))
            result = called.result
            seen.append((called.done, called.reward, called.error is None, getattr(result, "data", result)))
        seen.append(env.step(Action()).model_dump())
        seen.append(env.state.model_dump(exclude={"episode_id"}))
        env.close()
        return seen

    assert session(echo(STAND_INS, "stand_in_echo_env")) == session(echo(openenv_envs(), "openenv_echo_env"))
