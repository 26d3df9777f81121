"""One cgroup per session for the subprocess backend, where the server may make them.

A worker joins its session's cgroup before it does anything else, so every process the session
starts is in it, whatever it does (double-fork, ``setsid``, a worker killed with SIGKILL). Closing
the session kills the cgroup's members in one sweep: cgroup v2's ``cgroup.kill``, or on cgroup v1
the freezer (freeze, kill every member, thaw), so no process forks past the sweep.

Available when the server runs as root on a host with a writable cgroup v2 hierarchy (kernel >= 5.14)
or a v1 ``freezer`` hierarchy; elsewhere :meth:`SessionCgroups.find` returns None and the backend
relies on the worker's own sweep (``descendants.py``). Each server keeps its sessions' cgroups under
``openenv-ws/srv-<pid>-<start time>/``; a server that starts removes what dead ones left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "openenv-ws"
FREEZE_WAIT_S = 1.0
"""How long a v1 freeze may take before the members are killed anyway."""
EMPTY_WAIT_S = 2.0
"""How long killed members may take to leave the cgroup before it is left behind (and swept later)."""


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()[19].decode()


def _instance_name(pid: int) -> str:
    return f"srv-{pid}-{_start_time(pid)}"


def _alive(name: str) -> bool:
    """Whether the server that named a directory ``srv-<pid>-<start time>`` still runs."""
    _, pid, start = [*name.split("-", 2), "", ""][:3]
    return pid.isdigit() and _start_time(int(pid)) == start


class SessionCgroups:
    def __init__(self, parent: Path, v2: bool) -> None:
        self.parent = parent
        self.v2 = v2
        self.base = parent / _instance_name(os.getpid())

    @classmethod
    def find(cls) -> SessionCgroups | None:
        """This server's cgroups, or None where it cannot make them."""
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            parent, v2 = CGROUP_ROOT / PARENT, True
        elif (CGROUP_ROOT / "freezer").is_dir():
            parent, v2 = CGROUP_ROOT / "freezer" / PARENT, False
        else:
            return None
        cgroups = cls(parent, v2)
        try:
            cgroups.base.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        if v2 and not (cgroups.base / "cgroup.kill").exists():  # a kernel before 5.14
            cgroups.base.rmdir()
            return None
        return cgroups

    @property
    def kind(self) -> str:
        return "cgroup v2" if self.v2 else "cgroup v1 freezer"

    def create(self, session_id: str) -> Path:
        path = self.base / session_id
        path.mkdir()
        return path

    def kill(self, path: Path) -> None:
        """Kill every member of a session's cgroup and remove it (blocking: run it in a thread)."""
        if not path.is_dir():
            return
        if self.v2:
            (path / "cgroup.kill").write_text("1")
        else:
            self._kill_frozen(path)
        deadline = time.monotonic() + EMPTY_WAIT_S
        while _members(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        with contextlib.suppress(OSError):
            path.rmdir()

    def _kill_frozen(self, path: Path) -> None:
        state = path / "freezer.state"
        state.write_text("FROZEN")
        deadline = time.monotonic() + FREEZE_WAIT_S
        while state.read_text().strip() != "FROZEN" and time.monotonic() < deadline:
            time.sleep(0.005)
        for pid in _members(path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        state.write_text("THAWED")  # a killed process dies once it runs again

    def sweep(self) -> int:
        """Kill and remove the cgroups of servers that are gone; how many sessions' cgroups were removed."""
        removed = 0
        for server in self.parent.iterdir() if self.parent.is_dir() else ():
            if not server.is_dir() or server == self.base or _alive(server.name):
                continue
            for session in [p for p in server.iterdir() if p.is_dir()]:
                self.kill(session)
                removed += 1
            with contextlib.suppress(OSError):
                server.rmdir()
        return removed

    def close(self) -> None:
        """Remove this server's (empty) directory; what is left is swept by the next server."""
        for session in [p for p in self.base.iterdir() if p.is_dir()] if self.base.is_dir() else ():
            self.kill(session)
        with contextlib.suppress(OSError):
            self.base.rmdir()


def join(path: str) -> None:
    """Move the calling process into the cgroup at ``path`` (the worker does, first thing)."""
    Path(path, "cgroup.procs").write_text(str(os.getpid()))


def _members(path: Path) -> list[int]:
    try:
        return [int(line) for line in (path / "cgroup.procs").read_text().split()]
    except OSError:
        return []
