from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Annotated, Any

import anyio
import msgspec

from openenv_ws.env import Action, Observation, SandboxSettings, State, StepResult

from .._lib.child import ChildProcess, base_environ
from .._lib.process_env import ProcessEnvironment
from .._lib.tasks import load_tasks

SESSION_SCRIPT = str(Path(__file__).with_name("session.sh"))
BASH = ["bash", "--noprofile", "--norc"]


class ShellAction(Action):
    command: str
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """Seconds the command may run (default: the ``timeout_s`` option; capped by ``max_timeout_s``)."""


class ShellObservation(Observation):
    output: str = ""
    """stdout and stderr, interleaved as a terminal shows them."""
    exit_code: int | None = None
    """The command's exit status (130 when interrupted); None when the shell itself had to be killed."""
    cwd: str = ""
    timed_out: bool = False
    shell_restarted: bool = False
    """The shell exited (``exit``) or had to be killed; a fresh one starts in the workspace (files kept,
    variables and working directory lost)."""
    output_truncated: bool = False
    duration_s: float = 0.0
    task: str | None = None
    prompt: str = ""
    solved: bool = False


class ShellState(State):
    cwd: str = ""
    workspace: str = ""
    task: str | None = None
    shell_restarts: int = 0
    solved: bool = False


class ShellEnvironment(ProcessEnvironment):
    """A persistent bash per episode, in a fresh workspace directory.

    With a task, the task's setup script fills the workspace first, and after every step its
    checker script decides: exit status 0 is solved (reward 1, ``terminated``).
    """

    name = "shell"
    action_type = ShellAction
    observation_type = ShellObservation
    state_type = ShellState
    # Skipped by replays and validate: ids, timings, the workspace (a fresh temporary directory), and how
    # output happened to be cut into streamed events (the observation's ``output`` holds all of it).
    nondeterministic_fields = (
        "events",
        "state.episode_id",
        "state.cwd",
        "state.workspace",
        "observation.cwd",
        "observation.duration_s",
    )
    sandbox = SandboxSettings(pids=256)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._expected = ""
        self._state = ShellState()

    def _tasks(self) -> dict[str, dict[str, Any]]:
        return load_tasks(__file__)

    def _environ(self, **extra: str) -> dict[str, str]:
        return base_environ(self.workspace.path, **extra)

    async def _script(self, script: str, **env: str) -> tuple[int | None, str]:
        """Run a task script (setup or checker) in the workspace; its status (None: timed out) and stdout."""
        seeded = f"RANDOM={self.seed or 0}\n{script}"
        with anyio.move_on_after(self.check_timeout_s):
            done = await anyio.run_process(
                [*BASH, "-c", seeded],
                cwd=self.workspace.path,
                env=self._environ(**env),
                check=False,
                stdin=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            return done.returncode, done.stdout.decode(errors="replace").strip()
        return None, ""

    async def _prepare(self) -> None:
        self._expected = ""
        if self.task is not None:
            status, self._expected = await self._script(self.task["setup"])
            if status != 0:
                raise RuntimeError(f"the setup of task {self.task_name!r} failed (status {status})")

    async def _spawn(self) -> ChildProcess:
        env = self._environ() if self.seed is None else self._environ(OPENENV_SEED=str(self.seed % 32768))
        argv = [*BASH, SESSION_SCRIPT]
        return await ChildProcess.start(
            argv, cwd=self.workspace.path, env=env, merge_stderr=True, max_output_chars=self.max_output_chars
        )

    async def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        await self._begin(seed, options)
        path = self.workspace.path
        self._state = ShellState(episode_id=self.episode_id, cwd=path, workspace=path, task=self.task_name)
        prompt = self.task["prompt"] if self.task else ""
        return StepResult(observation=ShellObservation(cwd=path, task=self.task_name, prompt=prompt))

    async def step(self, action: ShellAction) -> StepResult:
        self._state.step_count += 1
        request = action.command.replace("\0", "").encode() + b"\0"
        reply = await self.child.request(request, timeout=self._timeout(action.timeout_s), on_output=self._stream)
        output = reply.outputs["output"]
        obs = ShellObservation(
            output=output.text(),
            timed_out=reply.interrupted,
            output_truncated=output.truncated,
            duration_s=round(reply.duration_s, 6),
            task=self.task_name,
        )
        if reply.payload is not None:
            code, _, cwd = reply.payload.decode(errors="replace").partition(" ")
            obs.exit_code, self._state.cwd = int(code), cwd
        else:  # `exit`, or killed past its deadline: a new shell in the workspace
            obs.exit_code = None if reply.interrupted else reply.returncode
            obs.shell_restarted = True
            self._state.shell_restarts += 1
            self._state.cwd = self.workspace.path
            await self._restart()
        obs.cwd = self._state.cwd
        reward = 0.0
        if self.task is not None:
            status, _ = await self._script(self.task["check"], EXPECTED=self._expected)
            obs.solved = self._state.solved = status == 0
            reward = float(obs.solved)
        return StepResult(
            observation=obs, reward=reward, terminated=obs.solved, truncated=self._truncated(self._state.step_count)
        )

    async def state(self) -> ShellState:
        return self._state
