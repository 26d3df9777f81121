"""The client's view of a cluster: its nodes, their free capacity, and which of them answer.

:func:`discover` asks the server at a URL for ``GET /v1/cluster``. A server that is not a node of
a cluster has no such route, and the URL is used as it is. Otherwise a :class:`Cluster`:

- **places** each new session on the node that can best take it: the most free capacity as the
  node last said (sessions it can still hold), less the sessions this client placed there since,
  less the sandboxes the node is starting; draining and lost nodes get none;
- **watches** the nodes: once per ``heartbeat`` it asks every node for ``/healthz`` (each answer
  bounded by ``heartbeat``) and one node for ``/v1/cluster``, to follow nodes joining and leaving.
  A node that misses ``misses`` checks in a row is *lost*: every session this client holds there
  fails at once with :class:`~openenv_ws.errors.NodeLostError`, at most
  ``(misses + 1) * heartbeat`` seconds (8 s by default) after the node stopped answering. It is placed on again
  from its next answer.

The checks run while the client uses the cluster: every scope that does (``connect()``,
``multiplex()``) runs :meth:`Cluster.keep_alive`, and one of them at a time does the work.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.lowlevel

from ..errors import CapacityError, NodeLostError, OpenEnvWSError, SessionLostError
from ..ids import node_of

log = logging.getLogger("openenv_ws.client")

HEARTBEAT = 2.0
"""Seconds between two checks of the nodes (each check may take as long). Not shorter by default:
a node whose cores are all busy (starting many sandboxes) may take over a second to answer, and
a node wrongly found lost costs every episode it runs."""
MISSES = 3
"""Checks in a row a node may miss before it is lost."""
DISCOVERY_TTL = 10.0
"""Seconds a URL's answer (a cluster, or a plain server) is reused without asking again."""
DISCOVERY_TIMEOUT = 5.0
"""How long the first ``GET /v1/cluster`` of a URL may take (a node answers it after one round)."""

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # nodes are reached directly

Fail = Callable[[OpenEnvWSError], None]


def http_base(url: str) -> str:
    """``ws://host:port/anything`` -> ``http://host:port`` (``wss`` -> ``https``)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


async def get_json(url: str, headers: dict[str, str], timeout: float) -> tuple[int, Any]:
    """``GET url`` -> ``(status, parsed JSON body or None)``; raises OSError if nothing answered in time."""

    def get() -> tuple[int, Any]:
        request = urllib.request.Request(url, headers=headers)
        try:
            with _NO_PROXY.open(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read())
            except ValueError:
                return exc.code, None

    try:
        with anyio.fail_after(timeout + 0.5):
            return await anyio.to_thread.run_sync(get, abandon_on_cancel=True)
    except (TimeoutError, ValueError, http.client.HTTPException) as exc:  # no answer, or not HTTP
        raise OSError(f"no answer from {url}: {exc or type(exc).__name__}") from None


@dataclass(eq=False)
class Node:
    """One server of the cluster, as this client sees it."""

    name: str
    url: str
    status: str = "ok"
    """``ok``, ``draining`` (takes no new session) or ``lost`` (stopped answering)."""
    free: int = 0
    """Sessions it can still take, as it last said."""
    opening: int = 0
    """Sandboxes it was starting, as it last said."""
    placed: int = 0
    """Sessions this client placed on it since it last said."""
    misses: int = 0
    holders: dict[object, Fail] = field(default_factory=dict)
    """What this client holds there (sessions, connections), each with how to fail it."""

    @property
    def score(self) -> int:
        return self.free - self.placed - self.opening

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "status": self.status, "free": self.free, "held": len(self.holders)}


class Cluster:
    """The nodes behind one cluster URL (see the module's docstring)."""

    def __init__(
        self,
        seed: str,
        headers: dict[str, str] | None = None,
        *,
        heartbeat: float = HEARTBEAT,
        misses: int = MISSES,
    ) -> None:
        self.seed = seed
        self.headers = dict(headers or {})
        self.heartbeat = heartbeat
        self.misses = misses
        self.nodes: dict[str, Node] = {}
        self.checked = 0.0
        """When the nodes were last checked (monotonic)."""
        self.lost_total = 0
        self.unanswered: list[str] = []
        """Why the nodes asked in the last :meth:`refresh` gave no list of members."""
        self._leading = False
        self._handover = anyio.Event()

    # ------------------------------------------------------------ placing

    def pick(self, avoid: Iterable[str] = ()) -> Node:
        """The node for a new session; raises :class:`CapacityError` when no node takes one now."""
        skip = set(avoid)
        ready = [n for n in self.nodes.values() if n.status == "ok" and n.name not in skip]
        if not ready:
            states = ", ".join(f"{n.name} {n.status}" for n in self.nodes.values()) or "no nodes"
            raise CapacityError(
                f"no node of the cluster at {self.seed} takes a new session now ({states})", retry_after=self.heartbeat
            )
        best = max(n.score for n in ready)
        node = random.choice([n for n in ready if n.score == best])
        node.placed += 1
        return node

    def owner(self, session_id: str) -> Node | None:
        """The node a session id names, if this client knows it."""
        name = node_of(session_id)
        return self.nodes.get(name) if name else None

    def hold(self, node: Node, key: object, fail: Fail) -> None:
        """Register something held on ``node``; ``fail`` is called if the node is lost."""
        node.holders[key] = fail

    def release(self, node: Node, key: object) -> None:
        node.holders.pop(key, None)

    def refused(self, node: Node, exc: BaseException) -> None:
        """An open on ``node`` failed. Unreachable counts as a missed check; a node that answered
        but took no session (full, draining, no sandbox could start, too slow) gets no new one
        until it next says it has room: it is not lost, and its sessions go on."""
        node.placed = max(0, node.placed - 1)
        if isinstance(exc, NodeLostError):
            return  # already lost
        if isinstance(exc, OSError | SessionLostError):
            self._missed(node, f"an open failed: {exc}")
        else:
            node.free = 0

    # ------------------------------------------------------------ watching

    async def keep_alive(self) -> None:
        """Check the nodes for as long as the caller runs this; callers share one series of checks."""
        while True:
            if self._leading:
                await self._handover.wait()
                continue
            self._leading = True
            try:
                while True:
                    started = time.monotonic()
                    await self.check()
                    await anyio.sleep(max(0.0, self.heartbeat - (time.monotonic() - started)))
            finally:
                self._leading = False
                handover, self._handover = self._handover, anyio.Event()
                handover.set()

    async def check(self) -> None:
        """One round: every node's ``/healthz`` and one node's ``/v1/cluster``, all at once."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._refresh_within_a_heartbeat)
            for node in list(self.nodes.values()):
                tg.start_soon(self._check, node)
        self.checked = time.monotonic()

    async def _refresh_within_a_heartbeat(self) -> None:
        with anyio.move_on_after(self.heartbeat):  # a round never waits longer for the members
            await self.refresh()

    async def refresh(self, timeout: float | None = None) -> bool | None:
        """Ask one node for the members of the cluster: one that answers (any), else the seed, else any other.

        True when one listed them, False when the seed says it is no node of a cluster (no such
        route), None when no node answered at all.
        """
        answering = [http_base(n.url) for n in self.nodes.values() if n.status == "ok"]
        random.shuffle(answering)  # the question is spread over the nodes
        sources = [*answering, http_base(self.seed), *(http_base(n.url) for n in self.nodes.values())]
        self.unanswered = []
        for base in dict.fromkeys(sources):
            try:
                status, body = await get_json(base + "/v1/cluster", self.headers, timeout or self.heartbeat)
            except OSError as exc:
                self.unanswered.append(str(exc))
                continue
            if status == 200 and isinstance(body, dict) and isinstance(body.get("nodes"), list):
                self.update(body["nodes"])
                return True
            if status == 404 and base == http_base(self.seed) and not self.nodes:
                return False  # no such route: a plain server (a 503 while a node drains says nothing)
            self.unanswered.append(f"{base}/v1/cluster answered HTTP {status}")
        return None

    def update(self, entries: list[dict[str, Any]]) -> None:
        """Take the members a node listed: new ones join; one gone that this client holds nothing on leaves."""
        listed = {}
        for entry in entries:
            if not (isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry.get("url")):
                continue
            listed[entry["name"]] = entry
            node = self.nodes.get(entry["name"])
            if node is None:
                node = self.nodes[entry["name"]] = Node(entry["name"], str(entry["url"]))
                self._take(node, entry)
                log.info("cluster %s: node %s (%s) joined", self.seed, node.name, node.url)
            node.url = str(entry["url"])
        for name, node in list(self.nodes.items()):
            if name not in listed and not node.holders and node.status != "ok":
                del self.nodes[name]
                log.info("cluster %s: node %s left", self.seed, name)

    async def _check(self, node: Node) -> None:
        try:
            status, body = await get_json(http_base(node.url) + "/healthz", self.headers, self.heartbeat)
        except OSError as exc:
            self._missed(node, str(exc))
            return
        if not isinstance(body, dict) or status not in (200, 503):
            self._missed(node, f"/healthz answered HTTP {status}")
            return
        if node.status == "lost":
            log.info("cluster %s: node %s answers again", self.seed, node.name)
        node.misses = 0
        self._take(node, {**body, "free": body.get("capacity_left")})

    def _take(self, node: Node, entry: dict[str, Any]) -> None:
        node.status = "ok" if entry.get("status") == "ok" else "draining"
        node.free = int(entry.get("free") or 0)
        node.opening = int(entry.get("opening") or 0)
        node.placed = 0

    def _missed(self, node: Node, why: str) -> None:
        node.misses += 1
        if node.misses < self.misses or node.status == "lost":
            return
        node.status = "lost"
        self.lost_total += 1
        holders, node.holders = node.holders, {}
        log.warning("cluster %s: node %s lost (%s); failing %d held there", self.seed, node.name, why, len(holders))
        exc = NodeLostError(f"node {node.name} ({node.url}) stopped answering: {why}")
        for fail in holders.values():
            fail(exc)

    def describe(self) -> dict[str, Any]:
        return {"seed": self.seed, "nodes": [n.describe() for n in self.nodes.values()], "lost_total": self.lost_total}


# ---------------------------------------------------------------- discovery, once per event loop

_KNOWN: anyio.lowlevel.RunVar[dict[tuple[str, tuple[tuple[str, str], ...]], tuple[Cluster | None, float]]] = (
    anyio.lowlevel.RunVar("openenv_ws_clusters")
)
_ASKING: anyio.lowlevel.RunVar[dict[tuple[str, tuple[tuple[str, str], ...]], anyio.Event]] = anyio.lowlevel.RunVar(
    "openenv_ws_cluster_discoveries"
)


def _run_dict(var: anyio.lowlevel.RunVar[Any]) -> dict[Any, Any]:
    try:
        return var.get()
    except LookupError:
        value: dict[Any, Any] = {}
        var.set(value)
        return value


async def discover(url: str, headers: dict[str, str] | None = None, **options: Any) -> Cluster | None:
    """The cluster whose node answers at ``url``, or None for a plain server (or one that does not answer).

    Answers are kept per event loop for :data:`DISCOVERY_TTL` seconds, and concurrent callers share
    one request. ``options`` are :class:`Cluster`'s (``heartbeat``, ``misses``).
    """
    headers = dict(headers or {})
    key = (http_base(url), tuple(sorted(headers.items())))
    known, asking = _run_dict(_KNOWN), _run_dict(_ASKING)
    while True:
        cluster, expires = known.get(key, (None, 0.0))
        if time.monotonic() < expires or (cluster is not None and cluster._leading):
            return cluster
        pending = asking.get(key)
        if pending is None:
            break
        await pending.wait()
    asking[key] = done = anyio.Event()
    try:
        cluster = cluster or Cluster(url, headers, **options)
        listed = await cluster.refresh(DISCOVERY_TIMEOUT)
        if listed is None:  # nothing answers now: not kept, so the next caller asks again
            # A cluster known a moment ago is still that cluster (a rolling update, a loaded node):
            # its sessions open on whichever node answers then. Never known: a plain server, or none.
            if cluster.nodes:
                return cluster
            log.warning(
                "%s: no answer to the cluster question, used as one server (%s)", url, "; ".join(cluster.unanswered)
            )
            return None
        if not listed:
            known[key] = (None, time.monotonic() + DISCOVERY_TTL)
            return None
        await cluster.check()
        known[key] = (cluster, time.monotonic() + DISCOVERY_TTL)
        return cluster
    finally:
        del asking[key]
        done.set()
