"""The one small interface every sandbox backend implements.

A :class:`Backend` is created once per server and opens one :class:`Sandbox` per
session. A sandbox takes request frames and returns reply frames (streaming events to
a sink first), whatever it runs on: the server never needs to know which backend holds
the environment.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import anyio
import anyio.abc

from ..errors import SandboxStartError
from ..ids import new_session_id
from ..protocol import SandboxReply, SandboxRequest
from ..registry import EnvSpec
from .channel import MAX_FRAME
from .episode import EventSink

__all__ = ["Backend", "Sandbox", "new_session_id"]


class Sandbox(ABC):
    #: True when the sandbox can die on its own (a process or a container); the server
    #: then watches :meth:`wait_exit` to tell the client promptly.
    isolated: ClassVar[bool] = False

    #: What the inspector shows: a pid, a container id...
    id: str = ""

    #: The id of the session this sandbox serves, chosen by the backend (see :func:`new_session_id`):
    #: a pooled container is labelled with it before any client asks for it.
    session_id: str = ""

    @abstractmethod
    async def request(self, frame: SandboxRequest, sink: EventSink) -> SandboxReply:
        """Apply one request. Raises :class:`~openenv_ws.errors.SandboxCrashedError` if it died."""

    @abstractmethod
    async def close(self) -> None:
        """Stop the sandbox and release all it holds. Idempotent; never raises."""

    def ref(self) -> dict[str, Any]:
        """What a restarted server needs to adopt this sandbox (:meth:`Backend.adopt`); empty: it cannot."""
        return {}

    async def wait_exit(self) -> str:
        """Return, with the reason, when the sandbox died on its own."""
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


START_STAGES = ("slot_wait", "pool_wait", "create", "start", "ready", "unpause", "open", "first_reset")
"""The stages of a sandbox start, in order: waiting for one of the server's start slots, waiting
in a warm pool for a container, creating and starting it, its worker connecting, unpausing a
pooled one, the environment being built in it (``open``), and the session's first reset."""
POOL_EVENTS = ("hit", "miss", "refill", "discard")
"""What a warm pool counts: sessions served at once or after a wait, containers started for the
pool, and pooled containers removed unused (dead at hand-out, aged, or beyond the pool's size)."""


class StartTimings(Protocol):
    """Where a backend reports its start stages and pool events (the server passes its metrics)."""

    def stage(self, stage: str, seconds: float) -> None: ...

    def pool_event(self, env: str, event: str) -> None: ...


class _NoTimings:
    def stage(self, stage: str, seconds: float) -> None:
        pass

    def pool_event(self, env: str, event: str) -> None:
        pass


class Backend(ABC):
    name: ClassVar[str]

    #: The largest frame a sandbox's worker may send (set by the server from its config).
    max_frame_bytes: int = MAX_FRAME

    #: The node this backend's server runs on, when it is part of a cluster (set by the session
    #: manager from ``ServerConfig.node``): the session ids it hands out name it.
    node: str = ""

    timings: StartTimings = _NoTimings()
    """Set by the server before :meth:`run`; the default drops every figure."""

    @abstractmethod
    async def open(self, spec: EnvSpec, options: dict[str, Any]) -> Sandbox:
        """Start a sandbox holding a fresh instance of ``spec`` built with ``options``.

        The returned sandbox carries the new session's id in ``session_id``.
        """

    async def run(
        self, specs: Sequence[EnvSpec], *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Do the backend's background work (warm pools, reapers) for the server's lifetime.

        Started before the first :meth:`open` with the environments the server serves, so a
        backend can warm sandboxes for them ahead of any client; cancelled after :meth:`aclose`.
        Backends with nothing to do in the background keep this default.
        """
        task_status.started()

    def can_start(self) -> bool:
        """Whether a sandbox could start now. False when what starts them is gone (the Docker engine
        does not answer): the server then reports no free capacity, so a cluster's clients place new
        sessions on other nodes while this one's running sessions go on."""
        return True

    def wanted(self, spec: EnvSpec) -> None:
        """A session of ``spec`` was asked for (called on arrival, before it waits for a start slot).

        A backend with warm pools sizes them by these; the default ignores them.
        """

    async def aclose(self) -> None:
        """Release what the backend shares between sandboxes (pools, clients)."""

    # ------------------------------------------------------------ restarts (serve --state-dir)

    #: The name this backend's sandboxes are known by (Docker: the containers' server label), kept in the
    #: state directory so the next server takes them over; None for backends whose sandboxes die with it.
    instance: str | None = None

    #: Seconds a sandbox whose server is gone waits for the next one (set by a server with a state
    #: directory); 0: sandboxes end with their server, as without one.
    adopt_grace: float = 0.0

    def take_over(self, instance: str | None) -> None:
        """Before :meth:`run`: continue the previous server's ``instance`` (its sandboxes may be adopted)."""

    async def adopt(self, spec: EnvSpec, ref: dict[str, Any], options: dict[str, Any]) -> Sandbox:
        """The sandbox a previous server left running (``ref``: :meth:`Sandbox.ref`), reconnected.

        Raises (with the reason) when it did not survive or this backend cannot adopt: the session is
        then replayed in a new sandbox.
        """
        raise SandboxStartError(f"the {self.name} backend's sandboxes do not outlive their server", fatal=True)

    async def adopted(self) -> None:
        """Every session was taken back: remove what the previous server left that no session claims."""

    async def hand_off(self, sandboxes: Sequence[Sandbox]) -> None:
        """A graceful restart: leave ``sandboxes`` running for the next server (:meth:`aclose` follows)."""

    def image_of(self, spec: EnvSpec) -> str | None:
        """The image a sandbox of ``spec`` runs (recorded in recordings); None for backends without images."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}
