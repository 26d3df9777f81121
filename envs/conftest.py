"""Fixtures for the environments' own tests (no server)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from openenv_ws.env import Environment


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
