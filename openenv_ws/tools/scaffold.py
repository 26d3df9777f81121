"""``openenv-ws init NAME``: a new environment package that works, and whose test passes, at once.

The package (``NAME/``, flat like the ones in ``envs/``) holds its typed models, an
environment (a seeded number-guessing game to replace with yours), a test that plays it and
runs ``openenv-ws validate``'s checks on it, a sandbox Dockerfile, and a README saying how
to serve, test, validate and build it.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from ..version import __version__

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class ScaffoldError(ValueError):
    pass


def package_name(name: str) -> str:
    """``my-env`` -> ``my_env``: the Python package a name becomes."""
    if not _NAME.fullmatch(name):
        raise ScaffoldError(f"{name!r}: use letters, digits, '-' and '_', starting with a letter")
    package = name.replace("-", "_").lower()
    if keyword.iskeyword(package):
        raise ScaffoldError(f"{name!r} is a Python keyword")
    return package


def class_prefix(package: str) -> str:
    return "".join(part.capitalize() for part in package.split("_") if part)


def files(name: str) -> dict[str, str]:
    """The scaffold's files, by path relative to the package directory."""
    package = package_name(name)
    values = {
        "name": package,
        "cls": class_prefix(package),
        "version": __version__,
        "target": f"{package}.environment:{class_prefix(package)}Environment",
    }
    return {path.format(**values): template.format(**values) for path, template in _TEMPLATES.items()}


def scaffold(name: str, parent: str | Path = ".", *, force: bool = False) -> Path:
    """Write the package into ``parent/<package>``; refuses to overwrite unless ``force``."""
    package = package_name(name)
    root = Path(parent) / package
    if root.exists() and any(root.iterdir()) and not force:
        raise ScaffoldError(f"{root} exists and is not empty (use --force to overwrite the scaffold's files)")
    root.mkdir(parents=True, exist_ok=True)
    for relative, text in files(name).items():
        (root / relative).write_text(text)
    return root


_MODELS = '''"""The typed models of {name}: what an agent sends, sees, and what the episode's state holds."""

from __future__ import annotations

from openenv_ws import Action, Observation, State


class {cls}Action(Action):
    guess: int
    """The number the agent guesses."""


class {cls}Observation(Observation):
    hint: str = ""
    """``higher``, ``lower`` or ``correct`` after a guess; the rules after a reset."""
    tries_left: int = 0


class {cls}State(State):
    tries: int = 0
    solved: bool = False
'''

_ENVIRONMENT = '''"""The {name} environment. Replace the game with yours; keep reset/step/state and the typed models."""

from __future__ import annotations

import random
import uuid
from typing import Any

from openenv_ws import Environment, StepResult

from .models import {cls}Action, {cls}Observation, {cls}State


class {cls}Environment(Environment):
    """Guess a secret number from 1 to ``high`` in at most ``max_tries`` guesses; the seed picks it.

    Reward 1 for the right guess (the episode terminates), 0 otherwise; truncated when the
    tries run out.
    """

    name = "{name}"
    action_type = {cls}Action
    observation_type = {cls}Observation
    state_type = {cls}State
    # Differs between two runs with the same seed and actions: replays and validate ignore it.
    nondeterministic_fields = ("state.episode_id",)

    def __init__(self, high: int = 100, max_tries: int = 10) -> None:  # session options
        if high < 1 or max_tries < 1:
            raise ValueError("high and max_tries must be at least 1")
        self.high = high
        self.max_tries = max_tries
        self._secret = 0
        self._state = {cls}State()

    async def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        self._secret = random.Random(seed).randint(1, self.high)
        self._state = {cls}State(episode_id=uuid.uuid4().hex)
        hint = f"guess a number from 1 to {{self.high}}"
        return StepResult(observation={cls}Observation(hint=hint, tries_left=self.max_tries))

    async def step(self, action: {cls}Action) -> StepResult:
        self._state.tries += 1
        self._state.step_count += 1
        if action.guess == self._secret:
            self._state.solved = True
            hint = "correct"
        else:
            hint = "higher" if action.guess < self._secret else "lower"
        tries_left = self.max_tries - self._state.tries
        return StepResult(
            observation={cls}Observation(hint=hint, tries_left=tries_left),
            reward=1.0 if self._state.solved else 0.0,
            terminated=self._state.solved,
            truncated=not self._state.solved and tries_left <= 0,
        )

    async def state(self) -> {cls}State:
        return self._state
'''

_INIT = '''"""{name}: an openenv-ws environment.

Serve it with ``openenv-ws serve {target}``; see README.md.
"""

from .environment import {cls}Environment
from .models import {cls}Action, {cls}Observation, {cls}State

__all__ = ["{cls}Action", "{cls}Environment", "{cls}Observation", "{cls}State"]
'''

_TEST = '''"""Tests of {name}: the game itself, then openenv-ws's conformance checks through a real server."""

from __future__ import annotations

import anyio
from openenv_ws.tools.validate import check_environment

from .environment import {cls}Environment
from .models import {cls}Action


def test_binary_search_wins():
    async def play() -> tuple[float, int]:
        env = {cls}Environment(high=100, max_tries=10)
        await env.reset(seed=7)
        low, high = 1, 100
        for _ in range(10):
            guess = (low + high) // 2
            result = await env.step({cls}Action(guess=guess))
            if result.terminated:
                return result.reward, (await env.state()).tries
            low, high = (guess + 1, high) if result.observation.hint == "higher" else (low, guess - 1)
        raise AssertionError("binary search did not find the number in 10 tries")

    reward, tries = anyio.run(play)
    assert reward == 1.0 and tries <= 7


def test_conformance():
    """Schemas, reset/step/state, a bad action's validation error, determinism for a seed."""
    report = check_environment("{target}")
    assert report.ok, report.text()
'''

_DOCKERFILE = """# The sandbox image of {name}: an openenv-ws sandbox image with this package on PYTHONPATH.
#
# The simplest way, from the directory that holds this package (it builds the base sandbox
# image from the openenv-ws source tree with wheels from this host, adds this package, and
# checks that the environment imports inside):
#   openenv-ws build {target} --with-path {name}
#
# Or by hand, on top of any openenv-ws sandbox image (`openenv-ws build echo` makes
# openenv-ws/echo:{version}), from this directory:
#   docker build --force-rm --build-arg SANDBOX_IMAGE=openenv-ws/echo:{version} -t openenv-ws/{name}:{version} .
ARG SANDBOX_IMAGE=openenv-ws/echo:{version}
FROM ${{SANDBOX_IMAGE}}

USER 0:0
COPY . /opt/openenv-ws/extra/{name}
# The root filesystem is read-only when the sandbox runs: compile now.
RUN python -m compileall -q /opt/openenv-ws/extra
ENV PYTHONPATH=/opt/openenv-ws/extra
USER 65534:65534
"""

_README = """# {name}

An openenv-ws environment: guess a secret number from 1 to `high`
(the seed picks it) in at most `max_tries` guesses.

| | |
|---|---|
| action | `{{"guess": int}}` |
| observation | `{{"hint": "higher" \\| "lower" \\| "correct", "tries_left": int}}` |
| reward | 1 for the right guess (terminates), else 0; truncated when the tries run out |
| options | `high` (default 100), `max_tries` (default 10) |

Replace the game in `environment.py` and the models in `models.py` with yours.

## Use it

From the directory that holds this package:

```bash
python -m pytest {name}                            # the game, then openenv-ws's conformance checks
openenv-ws validate {target}
openenv-ws serve {target} --port 8000
```

```python
import anyio
from openenv_ws import connect


async def main():
    async with connect("ws://127.0.0.1:8000", env="{name}", options={{"high": 10}}) as env:
        await env.reset(seed=1)
        print((await env.step({{"guess": 5}})).observation)


anyio.run(main)
```

## Sandbox image (Docker backend)

```bash
openenv-ws build {target} --with-path {name}
openenv-ws serve {target} --sandbox docker
```

`Dockerfile` does the same by hand on top of any openenv-ws sandbox image (see its header).
Declare what the sandbox may do (network, memory, extra packages) with
`sandbox = SandboxSettings(...)` on the environment class.
"""

_TEMPLATES = {
    "__init__.py": _INIT,
    "models.py": _MODELS,
    "environment.py": _ENVIRONMENT,
    "test_{name}.py": _TEST,
    "Dockerfile": _DOCKERFILE,
    "README.md": _README,
}
