"""Driving the shared 3-node swarm lab: build the images, bring it up, deploy deploy/stack.yml, tear down.

Used by tests/test_swarm.py and scripts/bench_swarm.py. The lab itself is the team's lab script, kept in
``scripts/swarm-lab.sh`` (or ``$OPENENV_WS_SWARM_LAB``): node N is a dockerd in
its own namespaces at 10.77.0.N, the host is 10.77.0.254. Everything here talks only to those
addresses and to the nodes' engine sockets (``/run/oe-nN/docker.sock``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def _find_lab() -> Path:
    """``$OPENENV_WS_SWARM_LAB``, else the lab script kept in the repository (``scripts/swarm-lab.sh``,
    the team's verified lab recipe), so a fresh clone on a fresh machine has it."""
    if os.environ.get("OPENENV_WS_SWARM_LAB"):
        return Path(os.environ["OPENENV_WS_SWARM_LAB"])
    return ROOT / "scripts" / "swarm-lab.sh"


LAB = _find_lab()
BASE_IMAGE = os.environ.get("OPENENV_WS_BASE_IMAGE", "openenv-ws/python-base:3.11")
SERVER_IMAGE = "openenv-ws-test/server:swarm"
SANDBOX_IMAGE = "openenv-ws-test/sandbox:swarm"
STACK = "oews"
NODES = (1, 2, 3)
FAST = {  # the stack's variables for the lab: short waits
    "OPENENV_WS_SERVER_IMAGE": SERVER_IMAGE,
    "OPENENV_WS_SANDBOX_IMAGE": SANDBOX_IMAGE,
    "OPENENV_WS_POOL": "1",
    "OPENENV_WS_DRAIN_SESSIONS": "10",
    "OPENENV_WS_DRAIN_TIMEOUT": "5",
    "OPENENV_WS_STOP_GRACE": "30s",
    "OPENENV_WS_RESUME_GRACE": "10",
    "OPENENV_WS_PING_INTERVAL": "3",
    "OPENENV_WS_PING_TIMEOUT": "3",
    "OPENENV_WS_RESTART_DELAY": "0s",
    "OPENENV_WS_UPDATE_DELAY": "1s",
    "OPENENV_WS_UPDATE_MONITOR": "2s",
}


def node_url(n: int) -> str:
    return f"ws://10.77.0.{n}:8000"


def run(*cmd: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def lab(*args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    return run("bash", str(LAB), *args, env={**os.environ, **env}, timeout=timeout)


def on_node(n: int, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """A docker CLI command against node ``n``'s engine."""
    return run("docker", "-H", f"unix:///run/oe-n{n}/docker.sock", *args, env=env, timeout=timeout)


def get(n: int, path: str) -> httpx.Response:
    # trust_env=False: a proxy from the environment must never see the lab's addresses
    with httpx.Client(trust_env=False, timeout=5) as client:
        return client.get(f"http://10.77.0.{n}:8000{path}")


def health(n: int) -> dict[str, Any] | None:
    try:
        return get(n, "/healthz").json()
    except httpx.HTTPError:
        return None


def wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll until ``predicate()`` holds; returns the seconds it took (AssertionError after ``timeout``)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started >= timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - started


def build_images() -> None:
    """The server and sandbox images, from this tree (the wheels first, as for docker compose)."""
    run("bash", "scripts/setup_swarm_lab.sh")  # nft & co (scripts/test.sh runs it too)
    run(sys.executable, "scripts/compose_wheels.py")
    for dockerfile, tag in (("deploy/server.Dockerfile", SERVER_IMAGE), ("sandboxes/Dockerfile", SANDBOX_IMAGE)):
        build = ["docker", "build", "--force-rm", "--network", "none", "-q", "-f", dockerfile]
        run(*build, "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", tag, "deploy")


def up() -> None:
    """A fresh lab (whatever an interrupted earlier run left is torn down first), the images on every node."""
    if not LAB.is_file():
        raise AssertionError(f"the swarm lab script is missing: {LAB} (set OPENENV_WS_SWARM_LAB)")
    lab("down")
    lab("up", OE_IMAGES=f"{SERVER_IMAGE} {SANDBOX_IMAGE}", OE_SWARM_INIT_ARGS="--dispatcher-heartbeat 1s")


def deploy(nodes: tuple[int, ...] = NODES, **variables: str) -> dict[int, str]:
    """``docker stack deploy`` the stack; returns each node's server instance once all are in the cluster view."""
    env = {**os.environ, **FAST, **variables}
    env.pop("OPENENV_WS_TOKEN", None)
    on_node(1, "stack", "deploy", "--resolve-image", "never", "-c", "deploy/stack.yml", STACK, env=env)
    return wait_serving(nodes)


def wait_serving(nodes: tuple[int, ...], timeout: float = 180) -> dict[int, str]:
    """Wait until exactly ``nodes`` serve and list each other; returns their server instances."""
    names = [f"oe-n{n}" for n in nodes]
    wait(lambda: all((health(n) or {}).get("status") == "ok" for n in nodes), timeout, "a server on every node")
    instances: dict[int, str] = {}

    def serving() -> bool:
        """Every node lists the others and answers with its instance (read together: Swarm may be
        replacing a server meanwhile)."""
        try:
            if [e["name"] for e in get(nodes[0], "/v1/cluster").json()["nodes"]] != names:
                return False
            instances.update({n: (health(n) or {})["backend"]["instance"] for n in nodes})
            return True
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    wait(serving, 60, f"{names} in the cluster view, each answering")
    return instances


def server_container(n: int) -> str:
    """The id of the server container running on node ``n`` (empty while it has none)."""
    return on_node(
        n, "ps", "-q", "--no-trunc", "--filter", f"label=com.docker.swarm.service.name={STACK}_server"
    ).stdout.strip()


def down() -> list[str]:
    """Tear the lab down; returns what of it is still on this machine (nothing, when all went well)."""
    lab("down")
    return leftovers()


def leftovers() -> list[str]:
    """What of a lab is on this machine: its namespaces (the switch's bridge lives in oe-sw), the
    host veth, its engines (dockerd, containerd and shims in a node's mount namespace), its mounts
    and its directories."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    found = [name for name in netns if name.startswith("oe-")]
    if subprocess.run(["ip", "link", "show", "oe-h"], capture_output=True).returncode == 0:
        found.append("link oe-h")
    own_mnt = os.readlink("/proc/self/ns/mnt")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            mnt = os.readlink(proc / "ns" / "mnt")
        except OSError:
            continue
        if cmdline.startswith("dockerd ") and "/oe-lab/" in cmdline:
            found.append(f"dockerd pid {proc.name}")
        elif comm.startswith(("dockerd", "containerd")) and mnt != own_mnt:  # a node's engine, outlived its node
            found.append(f"{comm} pid {proc.name} (in another mount namespace)")
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    found += [f"mount {line.split()[4]}" for line in mounts if line.split()[4].startswith(_LAB_PATHS)]
    found += [f"directory {path}" for path in _LAB_DIRS if Path(path).exists()]
    return found


_LAB_DIRS = (os.environ.get("OE_LAB", "/var/lib/oe-lab"), "/run/oe-lab")
_LAB_PATHS = (*(f"{path}/" for path in _LAB_DIRS), *_LAB_DIRS, "/run/oe-n")
