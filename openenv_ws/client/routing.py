"""Opening sessions on one server or across a cluster: the public ``connect()`` and ``multiplex()``.

Both take the URL of a server or of any node of a cluster (:mod:`.cluster` tells which). Against
a plain server they are exactly :func:`.session.connect` and :func:`.mux.multiplex`. Against a
cluster:

- each new session goes to the node that can best take it (:meth:`.cluster.Cluster.pick`); if that
  node refuses it (full, draining) or cannot be reached, to the next one, each node once;
- the session then lives on that node: its reconnects resume it there (its id names the node;
  nothing is shared between nodes), and ``multiplex()`` keeps ``connections`` sockets per node;
- if the node is lost, the session fails with :class:`~openenv_ws.errors.NodeLostError`, which
  ``run_episodes`` retries on the nodes that still answer.

Options of their own (beside :class:`.session.EnvSession`'s): ``cluster=False`` uses the URL as it
is, without asking it for ``/v1/cluster``; ``heartbeat`` and ``heartbeat_misses`` tune how a lost
node is noticed (:data:`.cluster.HEARTBEAT`, :data:`.cluster.MISSES`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.abc

from ..errors import CapacityError, NodeLostError, RequestTimeoutError, SandboxStartError, SessionLostError
from .cluster import Cluster, Node, discover
from .mux import Multiplexer
from .mux import multiplex as multiplex_one
from .session import EnvSession, single_exception
from .session import connect as connect_one
from .transport import ConnectionLost, auth_headers

T = TypeVar("T")

REROUTED = (OSError, SessionLostError, RequestTimeoutError, CapacityError, SandboxStartError)
"""Why opening a session on one node fails where another node may take it (e.g. its engine is down)."""
ROUTING_OPTIONS = ("cluster", "heartbeat", "heartbeat_misses")
"""Options of ``connect()``/``multiplex()`` that are not a session's."""


def session_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without the routing ones: what one session of a multiplexer takes."""
    return {k: v for k, v in options.items() if k not in ROUTING_OPTIONS}


async def cluster_of(url: str, options: dict[str, Any]) -> Cluster | None:
    """The cluster behind ``url``, or None to use it as one server; takes the routing options out of ``options``."""
    tuning = {"heartbeat": options.pop("heartbeat", None), "misses": options.pop("heartbeat_misses", None)}
    if not options.pop("cluster", True) or options.get("protocol", "openenv-ws") != "openenv-ws":
        return None
    headers = auth_headers(options.get("headers"), options.get("token"))
    return await discover(url, headers, **{k: v for k, v in tuning.items() if v is not None})


async def open_on_cluster(cluster: Cluster, open_on: Callable[[Node], Awaitable[T]]) -> tuple[Node, T]:
    """``open_on(node)`` on the best node, then the next best..., each node once; the last failure is raised.

    An open still waiting when its node is lost is given up at once (it fails like the node).
    """
    tried: list[str] = []
    failure: BaseException | None = None
    while True:
        try:
            node = cluster.pick(avoid=tried)
        except CapacityError:
            if failure is not None:
                raise failure from None
            raise
        key = object()
        with anyio.CancelScope() as scope:
            cluster.hold(node, key, lambda exc: scope.cancel())
            try:
                return node, await open_on(node)
            except REROUTED as exc:
                failure = exc
            finally:
                cluster.release(node, key)
        if scope.cancelled_caught:
            failure = NodeLostError(f"node {node.name} ({node.url}) was lost while a session was being opened")
        cluster.refused(node, failure)
        tried.append(node.name)


@asynccontextmanager
async def connect(url: str, env: str | None = None, **options: Any) -> AsyncIterator[EnvSession]:
    """Open a session on the server at ``url``, or on the best node of the cluster ``url`` is a node of.

    Closed (with its sandbox) on exit. Options are :func:`.session.connect`'s, plus the routing
    options of this module.
    """
    cluster = await cluster_of(url, options)
    if cluster is None:
        async with connect_one(url, env, **options) as session:
            yield session
        return
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(cluster.keep_alive)

            async def open_on(node: Node) -> EnvSession:
                session = EnvSession(node.url, env, **options)
                await session.start(tg)  # its reader runs in this task group, like connect_one's
                return session

            try:
                node, session = await open_on_cluster(cluster, open_on)
                cluster.hold(node, session, session.fail)
                try:
                    yield session
                finally:
                    cluster.release(node, session)
                    with anyio.CancelScope(shield=True):
                        await session.close()
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise single_exception(group) from None


class ClusterMultiplexer:
    """Multiplexed connections to the nodes of a cluster, ``connections`` per node used.

    Same use as :class:`.mux.Multiplexer`: ``async with spread.connect(env) as session``.
    """

    def __init__(
        self, cluster: Cluster, task_group: anyio.abc.TaskGroup, connections: int, session_options: dict[str, Any]
    ) -> None:
        if session_options.get("encoding", "msgpack") != "msgpack":
            raise ValueError("multiplexed sessions speak MessagePack only")
        self.cluster = cluster
        self.connections = connections
        self.session_options = session_options
        self.nodes: dict[str, Multiplexer] = {}
        """The multiplexer of each node used, by node name."""
        self._tg = task_group
        self._starting: dict[str, anyio.Event] = {}

    async def _on(self, node: Node) -> Multiplexer:
        """The node's multiplexer, started on first use (one start at a time per node)."""
        while (pending := self._starting.get(node.name)) is not None:
            await pending.wait()
        mux = self.nodes.get(node.name)
        if mux is not None and not mux.broken:
            return mux
        if mux is not None:
            self._drop(node, mux)
        self._starting[node.name] = done = anyio.Event()
        try:
            mux = Multiplexer(node.url, self.connections, **self.session_options)
            try:
                await mux.start(self._tg)
            except (ConnectionLost, TimeoutError) as exc:
                await mux.aclose()
                raise SessionLostError(f"cannot reach node {node.name} ({node.url}): {exc}") from None
            except BaseException:
                await mux.aclose()
                raise
            self.nodes[node.name] = mux
            self.cluster.hold(node, mux, lambda exc: self._abandon(node, mux, exc))
            return mux
        finally:
            del self._starting[node.name]
            done.set()

    def _abandon(self, node: Node, mux: Multiplexer, exc: NodeLostError) -> None:
        """The node is lost: fail every session on its connections, and close them."""
        mux.abandon(exc)
        self._drop(node, mux)

    def _drop(self, node: Node, mux: Multiplexer) -> None:
        if self.nodes.get(node.name) is mux:
            del self.nodes[node.name]
        self.cluster.release(node, mux)
        self._tg.start_soon(mux.aclose)

    @asynccontextmanager
    async def connect(self, env: str | None = None, **options: Any) -> AsyncIterator[EnvSession]:
        """Like :func:`connect`, on a multiplexed connection to the chosen node."""
        async with AsyncExitStack() as stack:

            async def open_on(node: Node) -> EnvSession:
                mux = await self._on(node)
                return await stack.enter_async_context(mux.connect(env, **options))

            _, session = await open_on_cluster(self.cluster, open_on)
            yield session

    async def aclose(self) -> None:
        for name, mux in list(self.nodes.items()):
            node = self.cluster.nodes.get(name)
            if node is not None:
                self.cluster.release(node, mux)
            await mux.aclose()
        self.nodes.clear()


@asynccontextmanager
async def multiplex(
    url: str, *, connections: int = 4, **session_options: Any
) -> AsyncIterator[Multiplexer | ClusterMultiplexer]:
    """Multiplexed connections to the server at ``url``, or to each node used of the cluster it is a node of.

    ``connections`` sockets per server; ``session_options`` are defaults of every session opened
    with ``mux.connect()``. Closed on exit.
    """
    cluster = await cluster_of(url, session_options)
    if cluster is None:
        async with multiplex_one(url, connections=connections, **session_options) as mux:
            yield mux
        return
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(cluster.keep_alive)
            spread = ClusterMultiplexer(cluster, tg, connections, session_options)
            try:
                yield spread
            finally:
                await spread.aclose()
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise single_exception(group) from None
