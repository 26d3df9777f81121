"""The cluster view every server answers: ``GET /v1/cluster``.

A server of a cluster finds its peers by DNS (Swarm's ``tasks.<service>``, a Kubernetes headless
Service: one address per server) or a fixed list, asks each one for its own entry
(``GET /v1/cluster/node``: its name, the URL clients reach it at, draining or not, its free
capacity), and serves what it saw, its own entry included. So a client needs one URL of the
cluster: it learns every node from it and asks again to follow nodes joining and leaving. Nothing
else is shared between the servers; a peer that does not answer is left out of ``nodes``, listed
under ``unreachable``, logged when that changes, and counted in ``/metrics``.

The servers ask each other only while somebody asks them: the first ``GET /v1/cluster`` starts the
rounds, which run every ``refresh`` seconds until the server stops.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from ..ids import node_label
from .app import Extension
from .config import ServerConfig
from .identity import OBSERVER, OPERATOR, TRAINER
from .metrics import ExtraMetric
from .sessions import SessionManager

log = logging.getLogger("openenv_ws.server")

NODE_PATH = "/v1/cluster/node"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # peers are never behind a proxy


@dataclass(frozen=True)
class ClusterSettings:
    peers: str
    """Where every server of the cluster is: a DNS name that resolves to all of them
    (``tasks.server``), or a comma-separated list of ``host[:port]``."""
    url: str
    """This node's URL for clients (``ws://host:port``; see :mod:`.node`)."""
    port: int = 8000
    """The port of the peers that ``peers`` names without one (the port every server listens on)."""
    refresh: float = 2.0
    """Seconds between two rounds of asking the peers."""
    timeout: float = 1.0
    """How long a peer may take to answer; one that does not is left out of the view until it does."""


def peer_addresses(peers: str, port: int) -> list[tuple[str, int]]:
    """``host[:port]`` items of ``peers``; a host without a port gets ``port``."""
    found = []
    for item in filter(None, (part.strip() for part in peers.split(","))):
        if item.startswith("["):  # [v6 address]:port
            host, _, rest = item[1:].partition("]")
            given = rest.removeprefix(":")
        elif item.count(":") == 1:
            host, _, given = item.partition(":")
        else:  # a name, a v4 address, or a bare v6 address
            host, given = item, ""
        found.append((host, int(given) if given else port))
    return found


class ClusterView:
    """This server's view of the cluster: its own entry, and its peers' as they last answered."""

    def __init__(self, manager: SessionManager, settings: ClusterSettings) -> None:
        self.manager = manager
        self.settings = settings
        self.name = node_label(manager.config.node or socket.gethostname())  # as session ids name it
        self.peers: dict[str, dict[str, Any]] = {}
        """The peers' entries by node name (this server's excluded)."""
        self.unreachable: list[str] = []
        self.refreshed = 0.0
        self.probe_failures = 0
        self.resolve_failures = 0
        self._started = False
        self._first_round = anyio.Event()

    # ------------------------------------------------------------ what is served

    def entry(self) -> dict[str, Any]:
        """This node's entry: what its peers and the clients place sessions by."""
        health = self.manager.health()
        return {
            "name": self.name,
            "url": self.settings.url,
            "status": health["status"],
            "sessions": health["sessions"],
            "max_sessions": health["max_sessions"],
            "opening": health["opening"],
            "free": health["capacity_left"],
            "envs": health["envs"],
        }

    def describe(self) -> dict[str, Any]:
        nodes = sorted([*self.peers.values(), self.entry()], key=lambda e: e["name"])
        age = time.monotonic() - self.refreshed if self.refreshed else None
        return {
            "node": self.name,
            "peers": self.settings.peers,
            "refresh_s": self.settings.refresh,
            "age_s": round(age, 3) if age is not None else None,
            "nodes": nodes,
            "unreachable": self.unreachable,
        }

    async def cluster(self, request: HTTPRequest) -> JSONResponse:
        if not self._started:
            self._started = True
            self.manager.spawn(self.run)
        with anyio.move_on_after(self.settings.timeout + 1.0):  # the first answer waits for one round
            await self._first_round.wait()
        return JSONResponse(self.describe())

    async def node(self, request: HTTPRequest) -> JSONResponse:
        return JSONResponse(self.entry())

    def metrics(self) -> Iterable[ExtraMetric]:
        labels = {"node": self.name, "url": self.settings.url}
        yield "cluster_info", "gauge", "This server's node name and advertised URL.", [(labels, 1)]
        yield (
            "cluster_nodes",
            "gauge",
            "Nodes in this server's view of the cluster (itself included).",
            (len(self.peers) + 1),
        )
        yield (
            "cluster_unreachable",
            "gauge",
            "Peer addresses that did not answer the last round.",
            len(self.unreachable),
        )
        yield "cluster_probe_failures_total", "counter", "Peer probes that failed.", self.probe_failures
        yield (
            "cluster_resolve_failures_total",
            "counter",
            "Rounds whose peer names did not resolve.",
            (self.resolve_failures),
        )

    # ------------------------------------------------------------ asking the peers

    async def run(self) -> None:
        while True:
            await self.round()
            self._first_round.set()
            await anyio.sleep(self.settings.refresh)

    async def round(self) -> None:
        """Resolve the peers and ask each for its entry, all at once, each bounded by ``timeout``."""
        addresses = await self._resolve()
        answers: dict[tuple[str, int], dict[str, Any] | None] = {}

        async def ask(address: tuple[str, int]) -> None:
            answers[address] = await self._ask(*address)

        async with anyio.create_task_group() as tg:
            for address in addresses:
                tg.start_soon(ask, address)
        peers = {e["name"]: e for e in answers.values() if e is not None and e.get("name") != self.name}
        unreachable = sorted(f"{host}:{port}" for (host, port), e in answers.items() if e is None)
        for gone in set(self.unreachable) - set(unreachable):
            log.info("cluster: peer %s answers again", gone)
        for lost in set(unreachable) - set(self.unreachable):
            log.warning("cluster: peer %s does not answer", lost)
        self.peers, self.unreachable = peers, unreachable
        self.refreshed = time.monotonic()

    async def _resolve(self) -> list[tuple[str, int]]:
        addresses: set[tuple[str, int]] = set()
        for host, port in peer_addresses(self.settings.peers, self.settings.port):
            try:
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                self.resolve_failures += 1
                log.warning("cluster: cannot resolve %s: %s", host, exc)
                continue
            addresses.update((str(info[4][0]), port) for info in infos)
        return sorted(addresses)

    async def _ask(self, host: str, port: int) -> dict[str, Any] | None:
        url = f"http://[{host}]:{port}{NODE_PATH}" if ":" in host else f"http://{host}:{port}{NODE_PATH}"
        token = peer_token(self.manager.config)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = self.settings.timeout

        def get() -> dict[str, Any]:
            with _NO_PROXY.open(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
                return json.loads(response.read())

        try:
            with anyio.fail_after(timeout + 0.5):
                entry = await anyio.to_thread.run_sync(get, abandon_on_cancel=True)
        except (OSError, TimeoutError, ValueError, urllib.error.URLError):
            self.probe_failures += 1
            return None
        return entry if isinstance(entry, dict) and isinstance(entry.get("name"), str) else None


def peer_token(config: ServerConfig) -> str | None:
    """The token this server shows its peers (they share its tokens): ``--token``, else the
    token file's least-privileged grant (an observer's reads a node's entry as well as an operator's)."""
    if config.token:
        return config.token
    rank = {OBSERVER: 0, TRAINER: 1, OPERATOR: 2}
    grants = sorted(config.tokens, key=lambda grant: rank.get(grant.scope, 3))
    return grants[0].token if grants else None


def cluster_routes(settings: ClusterSettings) -> Extension:
    """The extension that makes a server a node of a cluster (``serve --cluster PEERS``)."""

    def routes(manager: SessionManager) -> Sequence[BaseRoute]:
        view = ClusterView(manager, settings)
        manager.metrics.sources.append(view.metrics)
        return [Route("/v1/cluster", view.cluster), Route(NODE_PATH, view.node)]

    return routes
