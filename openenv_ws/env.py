"""The environment API: what an environment author writes.

An environment declares its typed models as msgspec Structs and implements
``reset``/``step``/``state`` (async, or sync by subclassing :class:`SyncEnvironment`,
whose methods run on a worker thread, never on the event loop). A step may stream
events before it returns by calling :meth:`Environment.emit`.

Gymnasium semantics: ``terminated`` (the task reached an end state) and ``truncated``
(cut short, e.g. a step limit) are separate flags.

Tools an agent calls (``@tool`` methods) are in :mod:`openenv_ws.toolbox`; rewards composed
of named checks in :mod:`openenv_ws.rubrics`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Generic, TypeVar

import anyio.from_thread
import msgspec


class Action(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of an environment's action model. Unknown fields are rejected."""


class Observation(msgspec.Struct, kw_only=True):
    """Base of an environment's observation model."""


class State(msgspec.Struct, kw_only=True):
    """Base of an environment's state model; subclasses add their own fields."""

    episode_id: str = ""
    step_count: int = 0


class SandboxSettings(msgspec.Struct, kw_only=True, frozen=True):
    """How the environment's sandbox container is built and confined (Docker backend).

    Shut by default: no network, read-only root with small scratch tmpfs at /tmp and /dev/shm,
    a non-root user, and memory/CPU/pids limits. Opening any of these is a deliberate
    choice of the environment, made here.
    """

    image: str | None = None
    """Image to run; default: the one ``openenv-ws build ENV`` makes for this env."""
    extra_packages: tuple[str, ...] = ()
    """PyPI packages ``openenv-ws build`` installs into the image (as wheels from the host)."""
    system_packages: tuple[str, ...] = ()
    """Debian packages ``openenv-ws build`` installs into the image (as .debs fetched before the build)."""
    memory: str = "256m"
    cpus: float = 1.0
    pids: int = 128
    """Process and thread limit (threads count: size it for any thread pool the env uses)."""
    tmpfs_size: str = "64m"
    tmpfs_exec: bool = False
    """Whether programs may run from ``/tmp`` (mounted ``noexec`` by default)."""
    shm_size: str = "16m"
    """Size of ``/dev/shm``, the second scratch tmpfs (``nosuid,nodev,noexec``); both count towards ``memory``."""
    network: bool = False
    read_only: bool = True
    user: str = "65534:65534"
    """The worker's user when ``agent_user`` is unset."""
    agent_user: str | None = None
    """``uid:gid`` of the processes the env starts for the agent's code (see ``openenv_ws.confine``). When set,
    the worker runs as root with only the capabilities SETUID, SETGID and KILL, to start those processes as
    this user and the env's graders as ``grader_user``, and to stop them: the kernel keeps the agent's code
    away from the worker and the graders (``docs/security.md``)."""
    grader_user: str = "65533:65533"
    runtime: str | None = None
    """The OCI runtime the env asks for (e.g. ``"runsc"``: gVisor); the server's ``-B runtime=...`` overrides it."""
    private_files: tuple[str, ...] = ()
    """Files beside the env's module that the agent must never read (hidden tests, checkers): the image makes
    them readable by root only, and a worker whose agent has a uid of its own refuses the env while one is not."""


ObsT = TypeVar("ObsT")


class StepResult(msgspec.Struct, Generic[ObsT], kw_only=True):
    """What ``reset()`` and ``step()`` return, on the environment side and the client side."""

    observation: ObsT
    reward: float | None = None
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


Emitter = Callable[[Any], Awaitable[None]]


class Environment:
    """An episodic environment served one instance per session.

    Constructed with the session's options as keyword arguments, so a wrong option
    fails at open with a clear message.
    """

    #: The name clients open it by (defaults to the registry name).
    name: ClassVar[str] = ""
    action_type: ClassVar[type[msgspec.Struct]] = Action
    observation_type: ClassVar[type[msgspec.Struct]] = Observation
    state_type: ClassVar[type[msgspec.Struct]] = State
    sandbox: ClassVar[SandboxSettings] = SandboxSettings()
    #: Fields that legitimately differ between two runs of the same seed and actions (ids,
    #: timestamps, durations), which replays and ``openenv-ws validate`` ignore. Paths start at
    #: ``observation``, ``state``, ``info``, ``reward`` or ``events``; ``*`` matches any one key
    #: or index, and a path covers everything below it: ``("state.episode_id", "observation.elapsed_s")``.
    nondeterministic_fields: ClassVar[tuple[str, ...]] = ()
    #: Seconds one reset/step/state may take before the server stops the sandbox and answers
    #: ``timeout`` (None: the server's default). ``serve --step-timeout`` overrides it.
    step_timeout: ClassVar[float | None] = None
    #: Whether a step may come before the first reset (False: it is refused with ``no_episode``).
    #: OpenEnv's environments can be stepped as soon as they are built, so ``from_openenv`` says True.
    steps_before_reset: ClassVar[bool] = False

    #: How an episode can be copied (``fork``, ``checkpoint``): ``"replay"`` (default: a fresh
    #: instance is reset with the episode's seed and options and given the same actions, each answer
    #: checked against the recorded one, ``nondeterministic_fields`` skipped), or ``"none"``. An
    #: environment that implements :meth:`snapshot` and :meth:`restore` is copied by snapshot.
    state_capture: ClassVar[str] = "replay"
    #: The type :meth:`restore` receives (what :meth:`snapshot` returned, after a trip through MessagePack).
    snapshot_type: ClassVar[Any] = Any

    _emitter: Emitter | None = None

    async def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        raise NotImplementedError

    async def step(self, action: Any) -> StepResult:
        raise NotImplementedError

    async def state(self) -> msgspec.Struct:
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the environment holds. Called once, when the session ends."""

    async def snapshot(self) -> Any:
        """The episode's whole state, as bytes or any MessagePack-able value (a Struct...). Optional."""
        raise NotImplementedError

    async def restore(self, snapshot: Any) -> None:
        """Become the episode :meth:`snapshot` captured (``snapshot`` is decoded as ``snapshot_type``)."""
        raise NotImplementedError

    async def emit(self, data: Any) -> None:
        """Stream ``data`` to the client as an :class:`~openenv_ws.protocol.Event` now."""
        if self._emitter is not None:
            await self._emitter(data)


class SyncEnvironment(Environment):
    """An environment written as plain blocking code; each call runs on a worker thread."""

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:  # type: ignore[override]
        raise NotImplementedError

    def step(self, action: Any) -> StepResult:  # type: ignore[override]
        raise NotImplementedError

    def state(self) -> msgspec.Struct:  # type: ignore[override]
        raise NotImplementedError

    def close(self) -> None:  # type: ignore[override]
        pass

    def snapshot(self) -> Any:  # type: ignore[override]
        raise NotImplementedError

    def restore(self, snapshot: Any) -> None:  # type: ignore[override]
        raise NotImplementedError

    def emit(self, data: Any) -> None:  # type: ignore[override]
        """Stream ``data`` as an event; blocks this worker thread until it is queued."""
        if self._emitter is not None:
            anyio.from_thread.run(self._emitter, data)


def capture_method(env_cls: type[Environment]) -> str:
    """``snapshot`` when the environment implements snapshot/restore, else its ``state_capture``."""
    own = env_cls.snapshot not in (Environment.snapshot, SyncEnvironment.snapshot)
    return "snapshot" if own and env_cls.state_capture != "none" else env_cls.state_capture


def schemas(env_cls: type[Environment]) -> dict[str, Any]:
    """The JSON Schemas the server publishes for an environment."""
    return {
        "action": msgspec.json.schema(env_cls.action_type),
        "observation": msgspec.json.schema(env_cls.observation_type),
        "state": msgspec.json.schema(env_cls.state_type),
    }
