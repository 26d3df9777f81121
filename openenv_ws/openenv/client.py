"""Our client's API on OpenEnv's protocol: ``connect(url, protocol="openenv")``.

:class:`OpenEnvSession` drives any server speaking OpenEnv's WebSocket protocol (``/ws``,
JSON ``reset``/``step``/``state``/``close``): a server built with the ``openenv`` package,
or openenv-ws's own compatible endpoint. It has :class:`EnvSession`'s methods and results,
so code written for our client (``run_episodes``, recording, replay) drives OpenEnv
environments unchanged: ``done`` becomes ``terminated`` (or ``truncated`` when the
metadata says ``"truncated": true``) and ``metadata`` becomes ``info``.

What OpenEnv's protocol cannot give: a dropped socket ends the session (there is no
resume), requests go one at a time (no pipelining), steps stream no events, and the
server names no session id. Built on anyio: runs under asyncio and trio.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import anyio
import msgspec

from ..client.transport import ConnectionLost, WebSocket, auth_headers
from ..env import StepResult
from ..errors import OpenEnvWSError, ProtocolError, RequestTimeoutError, SessionLostError
from .wire import error_from_data, step_result


def openenv_url(url: str, env: str | None = None) -> str:
    """``http://host:port`` (OpenEnv's ``base_url``), ``ws://...`` or a full ``.../ws`` URL as the socket URL."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path.endswith("/ws") else parts.path.rstrip("/") + "/ws"
    query = "&".join(q for q in (parts.query, urlencode({"env": env}) if env else "") if q)
    return urlunsplit((scheme, parts.netloc, path, query, ""))


def _builtins(action: Any) -> Any:
    """A dict, a pydantic model (OpenEnv's Actions) or a msgspec Struct (ours) as JSON-ready data."""
    if isinstance(action, dict):
        return action
    if hasattr(action, "model_dump"):
        return action.model_dump()
    return msgspec.to_builtins(action)


class OpenEnvSession:
    """One episode on an OpenEnv-protocol server. Create it with ``connect(url, protocol="openenv")``."""

    def __init__(
        self,
        url: str,
        env: str | None = None,
        *,
        options: dict[str, Any] | None = None,
        observation_type: Any = None,
        state_type: Any = None,
        request_timeout: float | None = 300.0,
        connect_timeout: float = 30.0,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        encoding: str = "json",
        reconnect_attempts: int = 0,
        backoff: float = 0.0,
        max_backoff: float = 0.0,
        max_in_flight: int = 1,
    ) -> None:
        # encoding, reconnect_attempts, backoff, max_backoff, max_in_flight: accepted so that
        # EnvSession's options pass through; OpenEnv speaks JSON only, cannot resume, and
        # answers one request at a time.
        if options:
            raise ValueError("OpenEnv servers take no session options (the env is built by the server's factory)")
        self.url = openenv_url(url, env)
        self.env_name = env
        self.backend = "openenv"
        self.session_id: str | None = None
        self.action_schema: dict[str, Any] = {}
        self.observation_schema: dict[str, Any] = {}
        self.reconnects = 0
        self.observation_type = observation_type if observation_type is not None else Any
        self.state_type = state_type
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.headers = auth_headers(headers, token)
        self._ws: WebSocket | None = None
        self._lock = anyio.Lock(fast_acquire=True)
        self._failure: OpenEnvWSError | None = None
        self._closed = False

    # ------------------------------------------------------------ public API

    async def start(self) -> None:
        try:
            with anyio.fail_after(self.connect_timeout):
                self._ws = await WebSocket.connect(self.url, headers=self.headers)
        except TimeoutError:
            raise RequestTimeoutError(f"no connection to {self.url} within {self.connect_timeout}s") from None
        except (ConnectionLost, OSError) as exc:
            raise SessionLostError(f"cannot open a session at {self.url}: {exc}") from None

    async def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> StepResult:
        """``options`` travel as OpenEnv's reset keyword arguments (e.g. ``episode_id``)."""
        data = dict(options or {})
        if seed is not None:
            data["seed"] = seed
        return step_result(await self._request({"type": "reset", "data": data}, timeout), self.observation_type)

    async def step(
        self, action: Any, *, timeout: float | None = None, on_event: Callable[[Any], Any] | None = None
    ) -> StepResult:
        """Apply one action (a dict, a pydantic model or a msgspec Struct). OpenEnv streams no events."""
        message = {"type": "step", "data": _builtins(action)}
        return step_result(await self._request(message, timeout), self.observation_type)

    async def state(self, *, timeout: float | None = None) -> Any:
        state = await self._request({"type": "state"}, timeout)
        return state if self.state_type is None else msgspec.convert(state, self.state_type)

    async def close(self, *, timeout: float = 10.0) -> None:
        """Tell the server (it ends the episode; no reply comes) and close the socket."""
        if self._closed:
            return
        self._closed = True
        ws = self._ws
        if ws is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
            if self._failure is None:
                try:
                    await ws.send(json.dumps({"type": "close"}))
                except ConnectionLost:
                    pass
            await ws.aclose()

    @property
    def failed(self) -> OpenEnvWSError | None:
        """The error that ended this session, if one did."""
        return self._failure

    # ------------------------------------------------------------ requests

    async def _request(self, message: dict[str, Any], timeout: float | None) -> Any:
        timeout = self.request_timeout if timeout is None else timeout
        async with self._lock:  # one at a time: OpenEnv matches replies to requests by order only
            if self._failure is not None:
                raise self._failure
            if self._closed or self._ws is None:
                raise SessionLostError("the session is closed")
            try:
                with anyio.fail_after(timeout):
                    try:
                        await self._ws.send(json.dumps(message))
                    except ConnectionLost:
                        pass  # a refused session sends its error, then closes: the reply is read below
                    raw = await self._ws.receive()
            except TimeoutError:
                # A late reply would be taken for the next request's: the session cannot go on.
                raise self._fail(RequestTimeoutError(f"no reply to {message['type']} within {timeout}s")) from None
            except ConnectionLost as exc:
                raise self._fail(SessionLostError(f"connection lost (OpenEnv sessions cannot resume): {exc}")) from None
        try:
            reply = json.loads(raw)
        except ValueError:
            raise self._fail(ProtocolError(f"server sent a message that is not JSON: {raw[:200]!r}")) from None
        kind = reply.get("type") if isinstance(reply, dict) else None
        data = reply.get("data", {}) if isinstance(reply, dict) else None
        if kind == "error":
            exc = error_from_data(data if isinstance(data, dict) else {})
            if exc.fatal:
                self._fail(exc)
            raise exc
        expected = "state" if message["type"] == "state" else "observation"
        if kind != expected or not isinstance(data, dict):
            raise self._fail(ProtocolError(f"expected an {expected!r} message, got {str(reply)[:200]}"))
        return data

    def _fail(self, exc: OpenEnvWSError) -> OpenEnvWSError:
        if self._failure is None:
            self._failure = exc
        return exc


@asynccontextmanager
async def connect_openenv(url: str, env: str | None = None, **options: Any) -> AsyncIterator[OpenEnvSession]:
    """Open an OpenEnv-protocol session at ``url``; close it on exit. ``connect(..., protocol="openenv")`` calls it."""
    session = OpenEnvSession(url, env, **options)
    await session.start()
    try:
        yield session
    finally:
        await session.close()
