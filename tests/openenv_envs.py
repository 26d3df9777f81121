"""A small environment written against the real OpenEnv package, for the compatibility tests.

Served two ways: by OpenEnv's own app factory (``make_app``, under uvicorn) and by
openenv-ws through the adapter (``AdaptedWordEnv``).
"""

from __future__ import annotations

import sys
from typing import Any

# OpenEnv imports its optional Gradio web UI whenever gradio is installed (about 7 s on a
# small machine, per process); these tests do not use the UI, so it is kept out.
sys.modules.setdefault("gradio", None)  # type: ignore[arg-type]

from openenv.core.env_server.interfaces import Environment  # noqa: E402
from openenv.core.env_server.types import Action, Observation, State  # noqa: E402

from openenv_ws.openenv import from_openenv  # noqa: E402

MAX_STEPS = 5


class WordAction(Action):
    word: str


class WordObservation(Observation):
    echoed: str = ""
    length: int = 0


class WordEnv(Environment):
    """Echoes words. reward = word length; "stop" ends the episode; after 5 steps it is cut short."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self) -> None:
        super().__init__()
        self._state = State(episode_id=None, step_count=0)

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> WordObservation:
        self._state = State(episode_id=episode_id or f"seed-{seed}", step_count=0)
        return WordObservation(metadata={"seed": seed})

    def step(self, action: WordAction, timeout_s: float | None = None, **kwargs: Any) -> WordObservation:  # type: ignore[override]
        if action.word == "boom":
            raise RuntimeError("the env failed on purpose")
        self._state.step_count += 1
        stop = action.word == "stop"
        cut = not stop and self._state.step_count >= MAX_STEPS
        metadata: dict[str, Any] = {"step": self._state.step_count}
        if cut:
            metadata["truncated"] = True
        return WordObservation(
            echoed=action.word, length=len(action.word), reward=len(action.word), done=stop or cut, metadata=metadata
        )

    @property
    def state(self) -> State:
        return self._state


def make_app() -> Any:
    """OpenEnv's own server for WordEnv (``uvicorn --factory tests.openenv_envs:make_app``)."""
    from openenv.core.env_server import create_app

    return create_app(WordEnv, WordAction, WordObservation, env_name="words", max_concurrent_envs=8)


AdaptedWordEnv = from_openenv(WordEnv, WordAction, WordObservation, State, name="words")
"""The same environment served by openenv-ws (``openenv-ws serve tests.openenv_envs:AdaptedWordEnv``)."""
