"""The worker's hold on every process its environment starts (Linux; the subprocess backend's workers).

- ``PR_SET_CHILD_SUBREAPER``: a process that double-forks and calls ``setsid`` to get away is still
  the worker's: orphans are reparented to the worker, not to init, so they stay in its subtree.
- ``PR_SET_PDEATHSIG`` (SIGTERM): when the process that started the worker dies, even by
  ``kill -9``, the kernel sends the worker SIGTERM.
- On SIGTERM, and when the worker ends, :func:`kill_descendants` kills the whole subtree: every
  process the environment started, daemons included. A dying process's children are reparented to
  the worker, so the sweep repeats until nothing is left (bounded).

What this does not cover: a worker killed with SIGKILL cannot sweep (the subprocess backend stops
a worker with SIGTERM first, and puts each session in a cgroup where it can: ``cgroups.py``), and
code that runs as the worker's uid can leave on purpose (e.g. ask another process of that uid to
start it). The subprocess backend is not a boundary against hostile code (``docs/security.md``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SWEEP_ROUNDS = 50
"""Passes of :func:`kill_descendants` at most (each kills the subtree as it stands, then waits a little)."""


def _prctl(option: int, value: int) -> None:
    if ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def hold(parent_pid: int) -> None:
    """Become the subreaper of everything the environment starts; die (sweeping) with ``parent_pid``."""
    if not sys.platform.startswith("linux"):
        return
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        _on_sigterm(signal.SIGTERM, None)


def _on_sigterm(signum: int, frame: object) -> None:
    kill_descendants()
    os._exit(128 + signum)


def _children_map() -> dict[int, list[int]]:
    """Live (not zombie) processes by parent pid, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields and fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(pid: int | None = None) -> list[int]:
    """Every live process below ``pid`` (default: this process)."""
    children = _children_map()
    found, todo = [], [os.getpid() if pid is None else pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_descendants() -> int:
    """SIGKILL the subtree until it is empty (or :data:`SWEEP_ROUNDS` passes); the number of kills sent."""
    if not sys.platform.startswith("linux"):
        return 0
    sent = 0
    for _ in range(SWEEP_ROUNDS):
        found = descendants()
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                sent += 1
            except (ProcessLookupError, PermissionError):
                pass
        _reap()
        time.sleep(0.01)
    return sent


def _reap() -> None:
    """Collect the exit status of every child that has ended (the worker is about to end: nobody waits on them)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
