"""A ``gymnasium.Env`` whose ``reset`` and ``step`` run on a remote, sandboxed session.

``make(url, env, **options)`` returns a :class:`RemoteEnv`, so existing Gymnasium code runs unchanged::

    from openenv_ws.client.gym import make

    env = make("ws://127.0.0.1:8000", "gym", env_id="CartPole-v1")
    obs, info = env.reset(seed=0)  # obs: a float32 numpy array, as from gymnasium.make
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    env.close()

Spaces and values cross the wire in the form of :mod:`openenv_ws.spaces`. Needs the ``gym`` extra:
``pip install "openenv-ws[gym]"`` (gymnasium and numpy).
"""

from __future__ import annotations

from typing import Any, SupportsFloat

try:
    import gymnasium
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError('openenv_ws.client.gym needs gymnasium and numpy: pip install "openenv-ws[gym]"') from exc

from ..spaces import build_space, decode, encode
from .sync import SyncEnvSession, connect_sync

__all__ = ["RemoteEnv", "make"]


class RemoteEnv(gymnasium.Env):
    """A ``gymnasium.Env`` backed by one remote session.

    For the ``gym`` environment it rebuilds ``observation_space`` and ``action_space`` from the
    session's state and turns observations back into numpy values; for any other environment
    observations and actions are the environment's own dicts and the spaces stay unset.
    """

    metadata = {"render_modes": []}

    def __init__(self, url: str, env: str = "gym", *, options: dict[str, Any] | None = None, **connect: Any) -> None:
        self._session: SyncEnvSession | None = connect_sync(url, env, options=options or {}, **connect)
        try:
            state = self._session.state()
            self._spaced = isinstance(state, dict) and "action_space" in state and "observation_space" in state
            if self._spaced:
                self.observation_space = build_space(state["observation_space"])
                self.action_space = build_space(state["action_space"])
        except BaseException:
            self.close()
            raise

    @property
    def session(self) -> SyncEnvSession:
        if self._session is None:
            raise RuntimeError("the environment is closed")
        return self._session

    def _observation(self, observation: Any) -> Any:
        if self._spaced:
            return decode(observation["observation"], self.observation_space)
        return observation

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        result = self.session.reset(seed=seed, options=options)
        return self._observation(result.observation), decode(result.info or {})

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        payload = {"action": encode(action, self.action_space)} if self._spaced else action
        result = self.session.step(payload)
        reward = float(result.reward) if result.reward is not None else 0.0
        info = decode(result.info or {})
        return self._observation(result.observation), reward, result.terminated, result.truncated, info

    def close(self) -> None:
        """End the remote session (its sandbox stops). Idempotent."""
        if self._session is not None:
            session, self._session = self._session, None
            session.close()
        super().close()


def make(url: str, env: str = "gym", *, connect_options: dict[str, Any] | None = None, **options: Any) -> RemoteEnv:
    """Open a remote session of ``env`` built with ``options`` and wrap it as a ``gymnasium.Env``.

    ``connect_options`` go to :func:`openenv_ws.connect` (``encoding``, ``request_timeout``...).
    """
    return RemoteEnv(url, env, options=options, **(connect_options or {}))
