"""Who this server is in a cluster: its node's name, and the URL clients reach it at.

Nothing is set per node by hand. Explicit settings win (``serve --node`` / ``$OPENENV_WS_NODE``,
``--advertise`` / ``$OPENENV_WS_ADVERTISE``; Kubernetes fills the variables from the downward
API). Otherwise the node's own Docker engine says, through the socket the Docker backend uses
anyway: the node's name, its swarm address, and the host port the server's own container
publishes (a Swarm task with a host-mode port). Without an engine: the host name and the port
this server listens on.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from ..sandbox.docker.reaper import own_container

log = logging.getLogger("openenv_ws.server")

NODE_ENV = "OPENENV_WS_NODE"
ADVERTISE_ENV = "OPENENV_WS_ADVERTISE"
ENGINE_TIMEOUT = 5.0
"""Seconds the engine may take to say who this node is, once at start."""
_WILDCARDS = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class NodeIdentity:
    name: str
    """The node's name, as session ids carry it (``openenv_ws.ids.node_label``)."""
    url: str
    """``ws://host:port``: where clients outside reach this server."""


def identify(listen_host: str, port: int, *, node: str | None = None, advertise: str | None = None) -> NodeIdentity:
    """This server's identity (see the module's docstring for the order of the sources)."""
    node = node or os.environ.get(NODE_ENV) or None
    advertise = advertise or os.environ.get(ADVERTISE_ENV) or None
    facts = {} if node and advertise else engine_facts(port)
    name = node or facts.get("name") or socket.gethostname()
    if advertise is None:
        host = facts.get("address") or (listen_host if listen_host not in _WILDCARDS else socket.gethostname())
        host = f"[{host}]" if ":" in host else host
        advertise = f"ws://{host}:{facts.get('port') or port}"
    identity = NodeIdentity(name, advertise)
    log.info("cluster node %s, advertised as %s", identity.name, identity.url)
    return identity


def engine_facts(port: int) -> dict[str, Any]:
    """What the local engine knows of this node: ``name``, swarm ``address``, published ``port``."""
    try:
        client = docker.from_env(timeout=ENGINE_TIMEOUT)
    except docker.errors.DockerException:
        return {}
    try:
        info = client.info()
        facts: dict[str, Any] = {"name": info.get("Name")}
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") == "active":
            facts["address"] = swarm.get("NodeAddr")
        container = own_container()
        if container:
            ports = client.api.inspect_container(container)["NetworkSettings"].get("Ports") or {}
            bindings = ports.get(f"{port}/tcp") or []
            facts["port"] = next((int(b["HostPort"]) for b in bindings if b.get("HostPort")), None)
        return facts
    except (docker.errors.DockerException, OSError, KeyError, ValueError) as exc:
        log.warning("could not ask the Docker engine who this node is: %s", exc)
        return {}
    finally:
        client.close()
