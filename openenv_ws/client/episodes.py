"""Running many episodes at once from one process: ``run_episodes()``.

Retry policy (stated, so results can be trusted): an episode that fails because of the
infrastructure (the session was lost, its sandbox crashed, the server was at capacity,
a request timed out) is run again from the start — a new session, the same seed — up
to ``retries`` more times, waiting ``retry_after`` (or a growing backoff) first. An
episode that fails because of the policy or the environment (a validation error, an
environment exception, a protocol error) is not retried: running it again would fail
the same way. Every attempt is counted in the record, and listed in ``tries``. Against a
cluster, an episode whose node was lost (:class:`~openenv_ws.errors.NodeLostError`, a
:class:`~openenv_ws.errors.SessionLostError`) is run again on a node that answers.

Cancellation (Ctrl-C, a cancelled task group) closes every open session on the server
before ``run_episodes`` returns, because each episode lives inside ``connect()``.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TextIO

import anyio

from ..errors import (
    CapacityError,
    RequestTimeoutError,
    SandboxCrashedError,
    SandboxStartError,
    SessionLostError,
)
from .progress import EpisodeProgress
from .routing import connect, session_options
from .routing import multiplex as multiplex_sessions

Policy = Callable[[Any], Awaitable[Any] | Any]

RETRYABLE = (CapacityError, SessionLostError, SandboxCrashedError, SandboxStartError, RequestTimeoutError, OSError)


@dataclass
class Attempt:
    """One try at an episode: its session (None if none opened) and how it ended."""

    session_id: str | None
    error: str | None
    ended_at: float
    """Wall-clock time (``time.time()``) when it ended."""


@dataclass
class EpisodeRecord:
    index: int
    seed: int | None
    session_id: str | None = None
    episode_return: float = 0.0
    length: int = 0
    ended: str = ""  # terminated | truncated | max_steps | error
    error: str | None = None
    attempts: int = 0
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    tries: list[Attempt] = field(default_factory=list)
    """Every attempt, in order (the last is the one reported above)."""

    @property
    def ok(self) -> bool:
        return self.error is None


async def _call_policy(policy: Policy, observation: Any) -> Any:
    action = policy(observation)
    if inspect.isawaitable(action):
        action = await action
    return action


async def run_episodes(
    url: str,
    env: str | None,
    policy: Policy,
    *,
    episodes: int,
    concurrency: int = 64,
    seeds: list[int | None] | None = None,
    options: dict[str, Any] | None = None,
    reset_options: dict[str, Any] | None = None,
    max_steps: int | None = None,
    retries: int = 2,
    backoff: float = 0.5,
    progress: bool | TextIO | None = None,
    on_episode: Callable[[EpisodeRecord], Any] | None = None,
    multiplex: int = 0,
    **connect_options: Any,
) -> list[EpisodeRecord]:
    """Run ``episodes`` episodes of ``env``, ``concurrency`` at a time; one record each, in order.

    ``policy(observation)`` (sync or async) returns the next action. ``max_steps`` stops
    an episode that neither terminates nor truncates. ``progress`` shows a progress bar with
    rate and ETA on a terminal (default: when stderr is one; ``True`` or a stream: there, as
    plain lines when it is no terminal; see :mod:`openenv_ws.client.progress`). ``multiplex=N``
    carries all sessions over N shared connections (N per node of a cluster) instead of one
    socket each. Extra keyword arguments go to ``connect()``. ``url`` may name any node of a
    cluster (see :mod:`.routing`).
    """
    if seeds is not None and len(seeds) != episodes:
        raise ValueError("seeds must have one entry per episode")
    stream = sys.stderr if progress is None or progress is True else (progress or None)
    if progress is None and not (stream is not None and stream.isatty()):
        stream = None
    state = EpisodeProgress(total=episodes, stream=stream)
    records = [EpisodeRecord(index=i, seed=seeds[i] if seeds else i) for i in range(episodes)]
    queue = iter(records)

    async def attempt(record: EpisodeRecord) -> None:
        record.info, record.session_id = {}, None
        record.episode_return, record.length, record.ended = 0.0, 0, ""
        async with open_session(env, options=options or {}) as session:
            record.session_id = session.session_id
            result = await session.reset(seed=record.seed, options=reset_options)
            while True:
                action = await _call_policy(policy, result.observation)
                result = await session.step(action)
                record.length += 1
                state.steps += 1
                record.episode_return += result.reward or 0.0
                if result.terminated or result.truncated:
                    record.ended = "terminated" if result.terminated else "truncated"
                    break
                if max_steps is not None and record.length >= max_steps:
                    record.ended = "max_steps"
                    break
            record.info = result.info

    async def worker() -> None:
        for record in queue:  # shared iterator: each record is taken by one worker
            await run_one(record)

    async def run_one(record: EpisodeRecord) -> None:
        state.running += 1
        started = time.monotonic()
        try:
            for number in range(retries + 1):
                record.attempts = number + 1
                wait: float | None = None  # set when the failure is worth another attempt
                try:
                    await attempt(record)
                    record.error = None
                except RETRYABLE as exc:
                    record.error = f"{type(exc).__name__}: {exc}"
                    if number < retries:
                        wait = getattr(exc, "retry_after", None) or backoff * 2**number
                except Exception as exc:  # the policy's or the env's failure: not retried
                    record.error = f"{type(exc).__name__}: {exc}"
                finally:
                    record.tries.append(Attempt(record.session_id, record.error, time.time()))
                if wait is None:
                    break
                state.retried += 1
                await anyio.sleep(wait)
        finally:
            state.running -= 1
            record.seconds = round(time.monotonic() - started, 6)
        if record.error is not None:
            record.ended = "error"
            state.failed += 1
        else:
            state.finished += 1
        if on_episode is not None:
            on_episode(record)

    async with AsyncExitStack() as stack:
        if multiplex:
            mux = await stack.enter_async_context(multiplex_sessions(url, connections=multiplex, **connect_options))
            open_session = partial(mux.connect, **session_options(connect_options))
        else:
            open_session = partial(connect, url, **connect_options)
        async with anyio.create_task_group() as tg:
            if stream is not None:
                tg.start_soon(state.show)
            async with anyio.create_task_group() as workers:
                for _ in range(min(concurrency, episodes)):
                    workers.start_soon(worker)
            tg.cancel_scope.cancel()  # the progress display ends with the final state
    return records
