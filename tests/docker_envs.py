"""Test-only environments for the Docker tests; built into the test image with ``--with-path tests``.

:class:`ExecEnv` runs whatever Python code a step sends. It exists to attempt escapes from
inside a real sandbox (reach the network, write outside scratch, fork and memory bombs): a
sandbox must hold even against code that does anything. Never serve it outside tests.
"""

from __future__ import annotations

import os
import traceback
from typing import Any

from openenv_ws.env import Action, Observation, SandboxSettings, State, StepResult, SyncEnvironment

TEST_IMAGE = os.environ.get("OPENENV_WS_TEST_IMAGE", "openenv-ws-test/sandbox:dev")
"""Several checkouts sharing one engine each set their own tag, so no run swaps another's image."""
RUNTIMES = ["runc", "runsc"]
"""The OCI runtimes the isolation and environment tests run under (scripts/setup_docker.sh registers runsc)."""


class ExecAction(Action):
    code: str


class ExecObservation(Observation):
    result: Any = None
    """The value the code left in ``result``."""
    error: str = ""
    """``Type: message`` of what the code raised."""
    pid: int = 0
    uid: int = 0


class ExecEnv(SyncEnvironment):
    name = "exec"
    action_type = ExecAction
    observation_type = ExecObservation
    sandbox = SandboxSettings(memory="128m", cpus=0.5, pids=64, tmpfs_size="16m")

    def __init__(self) -> None:
        self.steps = 0

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        self.steps = 0
        return StepResult(observation=ExecObservation(pid=os.getpid(), uid=os.getuid()))

    def step(self, action: ExecAction) -> StepResult:
        self.steps += 1
        scope: dict[str, Any] = {}
        error = ""
        try:
            exec(action.code, scope)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        return StepResult(
            observation=ExecObservation(result=scope.get("result"), error=error, pid=os.getpid(), uid=os.getuid())
        )

    def state(self) -> State:
        return State(step_count=self.steps)


class MissingImageEnv(ExecEnv):
    """An env whose declared image does not exist: opening it must say how to build it."""

    name = "missing-image"
    sandbox = SandboxSettings(image="openenv-ws-test/does-not-exist:0")


class GVisorExecEnv(ExecEnv):
    """An env that asks for gVisor itself (``SandboxSettings.runtime``), whatever the server's default.

    gVisor's own host threads count against the pids limit: 64 is too few for it to start reliably.
    """

    name = "exec-gvisor"
    sandbox = SandboxSettings(memory="128m", cpus=0.5, pids=128, tmpfs_size="16m", runtime="runsc")
