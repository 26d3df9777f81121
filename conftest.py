"""How pytest sees the environment library (``envs/``), and the fixture its tests share.

``envs/`` installs as ``openenv_ws_envs`` (see setup.py). Left to itself, pytest would import
``envs/echo/test_echo.py`` as ``envs.echo.test_echo`` in every import mode (it names a module
after the folders above it that hold an ``__init__.py``, and imports those folders too), so each
environment would load twice, as ``envs.echo`` and ``openenv_ws_envs.echo``, with two copies of
every class. Below ``envs/``, then, a folder is a plain directory to pytest and a test module is
imported by its installed name. (There is no ``envs/conftest.py``: pytest would import it as
``envs.conftest``.)
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from openenv_ws.env import Environment

LIBRARY = "openenv_ws_envs"
FOLDER = Path(__file__).resolve().parent / "envs"


def installed_name(path: Path) -> str | None:
    """``envs/echo/test_echo.py`` -> ``openenv_ws_envs.echo.test_echo``; None outside ``envs/``."""
    try:
        relative = path.resolve().relative_to(FOLDER)
    except ValueError:
        return None
    parts = (*relative.parent.parts, relative.stem) if relative.suffix == ".py" else relative.parts
    return ".".join((LIBRARY, *parts))


class LibraryTestModule(pytest.Module):
    """A test module of the library, imported by its installed name."""

    def _getobj(self) -> ModuleType:
        name = installed_name(self.path)
        assert name is not None
        module = importlib.import_module(name)
        if module.__file__ is None or Path(module.__file__).resolve() != self.path.resolve():
            raise self.CollectError(
                f"{name} is imported from {module.__file__}, not from {self.path}: "
                "install this checkout (pip install -e .)"
            )
        self.config.pluginmanager.consider_module(module)
        return module


def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    # A pytest.Package would import envs/__init__.py as `envs`.
    return pytest.Dir.from_parent(parent, path=path) if installed_name(path) is not None else None


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    return LibraryTestModule.from_parent(parent, path=module_path) if installed_name(module_path) else None


@pytest.fixture
async def start_env() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Reset an environment with its streamed events collected in ``env.events``; closed after the test."""
    started: list[Environment] = []

    async def start(env: Environment, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        events: list[Any] = []

        async def sink(data: Any) -> None:
            events.append(data)

        env.events = events  # type: ignore[attr-defined]
        env._emitter = sink
        started.append(env)
        await env.reset(seed=seed, options=options)
        return env

    yield start
    for env in started:
        await env.close()
