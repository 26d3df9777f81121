"""The identities an environment gives the processes it starts for the agent's code, and for its graders.

An environment that runs the agent's code in processes of its own (the coding env's interpreter,
the shell env's bash) starts them as the *agent* identity, and its graders (checker scripts) as the
*grader* identity, when the sandbox provides them. The kernel then keeps the agent's processes away
from the worker that speaks for the sandbox and from the graders (no ptrace, no signals, no
``/proc/<pid>/mem``, ``environ`` or ``fd``), and file modes keep the environment's private files
(hidden tests, checkers: ``SandboxSettings.private_files``) out of their reach.

The sandbox names the identities in two variables of the worker's environment,
``OPENENV_WS_AGENT_USER`` and ``OPENENV_WS_GRADER_USER`` (``uid:gid``). The Docker backend sets them
for an env whose ``SandboxSettings.agent_user`` is set, and starts that worker as root with only the
capabilities to take those identities and to signal them. Without them (the subprocess and in-process
backends) every process runs as the worker: :attr:`Confinement.separate` is False, and the env's
processes are no security boundary (``docs/security.md``).
"""

from __future__ import annotations

import inspect
import os
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from .errors import SandboxStartError

AGENT_USER_VAR = "OPENENV_WS_AGENT_USER"
GRADER_USER_VAR = "OPENENV_WS_GRADER_USER"

HELPER_TIMEOUT_S = 10.0
"""Seconds a helper run as the agent (make or remove a workspace, kill the agent's processes) may take."""
SHELL = "/bin/sh"
"""What runs those helpers: a POSIX shell starts in a millisecond, Python in ten or more."""

# Run as the agent: kill(-1) from an unprivileged process signals every process of its uid but itself,
# in one pass of the kernel over the process table (a forking daemon cannot slip through). gVisor answers
# ESRCH when there was none: not a failure.
KILL_ALL = "kill -9 -1 2>/dev/null; true"


@dataclass(frozen=True)
class Identity:
    """A ``uid:gid`` the sandbox lets the worker give to the processes it starts (no supplementary groups)."""

    uid: int
    gid: int

    @classmethod
    def parse(cls, text: str) -> Identity:
        uid, sep, gid = text.partition(":")
        if not (uid.isdigit() and gid.isdigit() and sep):
            raise ValueError(f"expected uid:gid (numbers), got {text!r}")
        return cls(int(uid), int(gid))

    def spawn_options(self) -> dict[str, Any]:
        """Keyword arguments of ``subprocess.Popen`` / ``anyio.open_process`` that start a process as this identity."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def can_read(self, path: Path) -> bool:
        """Whether this identity may read ``path`` by its own mode bits (its directories aside: conservative)."""
        st = path.stat()
        if self.uid == 0:
            return True
        if st.st_uid == self.uid:
            return bool(st.st_mode & stat.S_IRUSR)
        if st.st_gid == self.gid:
            return bool(st.st_mode & stat.S_IRGRP)
        return bool(st.st_mode & stat.S_IROTH)


@dataclass(frozen=True)
class Confinement:
    """Who the processes an environment starts run as: ``None`` means the worker's own uid."""

    agent: Identity | None = None
    grader: Identity | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Confinement:
        agent, grader = environ.get(AGENT_USER_VAR), environ.get(GRADER_USER_VAR)
        return cls(Identity.parse(agent) if agent else None, Identity.parse(grader) if grader else None)

    @property
    def separate(self) -> bool:
        """True when the agent's processes run under a uid of their own (a boundary the kernel enforces)."""
        return self.agent is not None

    def as_agent(self) -> dict[str, Any]:
        return self.agent.spawn_options() if self.agent else {}

    def as_grader(self) -> dict[str, Any]:
        return self.grader.spawn_options() if self.grader else {}

    def check_private(self, paths: list[Path]) -> None:
        """Refuse to run the agent's code where it could read a private file (an image built without hiding them)."""
        if self.agent is None:
            return
        exposed = [str(p) for p in paths if p.exists() and self.agent.can_read(p)]
        if exposed:
            raise SandboxStartError(
                f"private files are readable by the agent's uid {self.agent.uid}: {', '.join(exposed)}; "
                "rebuild the image with `openenv-ws build` (it makes them readable by root only)",
                fatal=True,
            )

    async def run_as_agent(self, script: str, *args: str) -> str:
        """Run a small shell script (``$1``... are ``args``) as the agent and return what it printed.

        Raises ``subprocess.CalledProcessError`` if it fails, ``TimeoutError`` past :data:`HELPER_TIMEOUT_S`.
        """
        with anyio.fail_after(HELPER_TIMEOUT_S):
            done = await anyio.run_process(
                [SHELL, "-c", script, "sh", *args],
                stdin=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                check=True,
                **self.as_agent(),
            )
        return done.stdout.decode(errors="replace")

    async def kill_agent_processes(self) -> None:
        """Kill every process of the agent's uid (daemons that left their group or session included)."""
        if self.agent is not None:
            await self.run_as_agent(KILL_ALL)


def private_paths(env_cls: type) -> list[Path]:
    """The files an environment class declares private (``SandboxSettings.private_files``), beside its module."""
    names: tuple[str, ...] = env_cls.sandbox.private_files  # type: ignore[attr-defined]
    if not names:
        return []
    folder = Path(inspect.getfile(env_cls)).resolve().parent
    return [folder / name for name in names]
