from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from openenv_ws.env import Action, Observation, SandboxSettings, State, StepResult
from openenv_ws.rubrics import Scoring, check
from openenv_ws.toolbox import error_result, tool

from .._lib.child import ChildProcess, Reply, base_environ, ended
from .._lib.process_env import ProcessEnvironment
from .._lib.tasks import load_tasks

DRIVER = str(Path(__file__).with_name("driver.py"))

Status = Literal["ready", "ok", "error", "timeout", "crashed"]
Seconds = Annotated[float, msgspec.Meta(gt=0)]


class CodeAction(Action):
    code: str
    timeout_s: Seconds | None = None
    """Seconds the code may run (default: the ``timeout_s`` option; capped by ``max_timeout_s``)."""


class CodeObservation(Observation):
    stdout: str = ""
    stderr: str = ""
    value: str | None = None
    """``repr()`` of the cell's final expression, when it has one whose value is not None."""
    exception: str | None = None
    """``"ZeroDivisionError: division by zero"``; the traceback is in ``stderr``."""
    status: Status = "ready"
    """``ok``, ``error`` (raised), ``timeout`` (interrupted at its deadline), ``crashed`` (the interpreter died)."""
    exit_code: int | None = None
    """The interpreter's exit code when it ended (negative: killed by that signal)."""
    interpreter_restarted: bool = False
    """The interpreter died or had to be killed; a fresh one (empty namespace) runs the next cell."""
    output_truncated: bool = False
    duration_s: float = 0.0
    task: str | None = None
    prompt: str = ""
    tests_passed: int = 0
    tests_total: int = 0


class CodeState(State):
    task: str | None = None
    interpreter_restarts: int = 0
    tests_passed: int = 0
    tests_total: int = 0


@check
def tests_passed(turn: Any) -> float:
    """The fraction of the task's hidden tests that pass after the step."""
    observation = turn.observation
    return observation.tests_passed / observation.tests_total if observation.tests_total else 0.0


class _CellReply(msgspec.Struct):
    """The driver's answer to a cell (``driver.py``)."""

    status: Literal["ok", "error", "interrupted"]
    value: str | None = None
    exception: str | None = None


class _CheckReply(msgspec.Struct):
    """The driver's answer to the hidden tests: each call's result as canonical JSON (None: it raised)."""

    results: list[str | None]


_FORGED = "the interpreter's answer was not the driver's (did the cell write an end marker?)"


class CodingEnvironment(ProcessEnvironment):
    """Multi-turn Python: each step runs a cell in a persistent interpreter (a child process).

    With a task, every step also calls the task's function in the interpreter with each hidden test's
    arguments: reward = the fraction of results equal to the expected ones, ``terminated`` once all
    are. The expected results never leave the worker, and the comparison runs there; the call itself
    is the agent's code, so it runs as the agent (``docs/security.md``).
    Tools: ``run_python`` (a step's cell) and ``submit`` (a final answer: the episode ends); the reward
    is the rubric ``tests_passed``.
    """

    name = "coding"
    action_type = CodeAction
    observation_type = CodeObservation
    state_type = CodeState
    # Skipped by replays and validate: ids, timings, and how output happened to be cut into streamed events.
    nondeterministic_fields = ("state.episode_id", "observation.duration_s", "events")
    # The worker, its interpreter and whatever the code starts (threads count as pids).
    # The agent's code runs as a uid of its own; the hidden tests are readable by root only.
    sandbox = SandboxSettings(pids=256, memory="512m", agent_user="65534:65534", private_files=("tasks.json",))
    rubric = tests_passed
    """Applied when a task is set; without one the reward is 0."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._state = CodeState()
        self.scoring = Scoring(None)

    def _tasks(self) -> dict[str, dict[str, Any]]:
        return load_tasks(__file__)

    async def _spawn(self) -> ChildProcess:
        env = base_environ(self.workspace.path, PYTHONDONTWRITEBYTECODE="1")
        if self.seed is not None:
            env.update(PYTHONHASHSEED=str(self.seed % 2**32), OPENENV_SEED=str(self.seed))
        argv = [sys.executable, DRIVER]
        return await ChildProcess.start(
            argv, cwd=self.workspace.path, env=env, max_output_chars=self.max_output_chars, user=self.confinement.agent
        )

    async def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        await self._begin(seed, options)
        task = self.task
        self._state = CodeState(episode_id=self.episode_id, task=self.task_name)
        if task is not None:
            self._state.tests_total = len(task["tests"])
        first = CodeObservation(
            task=self.task_name, prompt=task["prompt"] if task else "", tests_total=self._state.tests_total
        )
        self.scoring = Scoring(self.rubric if task is not None else None)
        self.scoring.start(first)
        return StepResult(observation=first)

    async def step(self, action: CodeAction) -> StepResult:
        return await self.scoring.score(action, await self._run(action))

    @tool
    async def run_python(self, code: str, timeout_s: Seconds | None = None) -> StepResult[CodeObservation]:
        """Run Python code in the episode's persistent interpreter, like a notebook cell.

        Names defined by earlier calls are still there. The result has stdout, stderr, the value of the
        final expression (repr), the exception if one was raised, and with a task how many hidden tests pass.

        Args:
            code: Python source: statements, optionally ending in an expression whose value is returned.
            timeout_s: Seconds the code may run (default: the episode's timeout; capped).
        """
        action = CodeAction(code=code, timeout_s=timeout_s)
        return await self.scoring.score(action, await self._run(action))

    @tool
    async def submit(self, code: str | None = None) -> StepResult[CodeObservation]:
        """Submit the solution of the task and end the episode; the reward is the fraction of hidden tests passed.

        Args:
            code: Python source run first, e.g. the final version of the function (optional).
        """
        if self.task is None:
            self._state.step_count += 1
            message = "this episode has no task: there is nothing to submit (use run_python)"
            return error_result(message, truncated=self._truncated(self._state.step_count))
        action = CodeAction(code=code or "", timeout_s=None)
        result = await self._run(action)
        result.terminated = True
        return await self.scoring.score(action, result)

    async def _run(self, action: CodeAction) -> StepResult:
        """Run one cell, then the task's hidden tests; the result before the rubric rewards it."""
        self._state.step_count += 1
        request = json.dumps({"op": "exec", "code": action.code}).encode() + b"\n"
        timeout = self._timeout(action.timeout_s)
        reply = await self.child.request(request, timeout=timeout, on_output=self._stream)
        obs = self._observe(reply, timeout)
        if obs.interpreter_restarted:
            await self._restart()
            self._state.interpreter_restarts += 1
        terminated = False
        if self.task is not None:
            obs.tests_passed = await self._check()
            obs.tests_total = self._state.tests_total
            self._state.tests_passed = obs.tests_passed
            terminated = obs.tests_passed == obs.tests_total
        obs.task = self.task_name
        return StepResult(
            observation=obs, reward=0.0, terminated=terminated, truncated=self._truncated(self._state.step_count)
        )

    def _observe(self, reply: Reply, timeout: float) -> CodeObservation:
        out, err = reply.outputs["stdout"], reply.outputs["stderr"]
        obs = CodeObservation(
            stdout=out.text(),
            stderr=err.text(),
            output_truncated=out.truncated or err.truncated,
            duration_s=round(reply.duration_s, 6),
        )
        if reply.payload is None:  # the interpreter is gone
            obs.exit_code = reply.returncode
            obs.interpreter_restarted = True
            if reply.interrupted:
                obs.status = "timeout"
                obs.exception = f"TimeoutError: the cell ignored the interrupt at its {timeout:g}s limit and was killed"
            else:
                obs.status, obs.exception = "crashed", f"the interpreter {ended(reply.returncode)}"
            return obs
        try:
            result = msgspec.json.decode(reply.payload, type=_CellReply)
        except msgspec.DecodeError:
            obs.status, obs.exception = "error", _FORGED
            return obs
        obs.value, obs.exception = result.value, result.exception
        if result.status == "interrupted" and reply.interrupted:
            obs.status, obs.exception = "timeout", f"TimeoutError: interrupted at its {timeout:g}s limit"
        elif result.status == "interrupted":  # the code raised KeyboardInterrupt itself
            obs.status = "error"
        else:
            obs.status = result.status
        return obs

    async def _check(self) -> int:
        """Call the function on each hidden test's arguments; count the results equal to the expected ones.

        Only the arguments go to the interpreter: whatever it answers, it cannot see what it is compared to.
        """
        assert self.task is not None
        tests = self.task["tests"]
        request = {"op": "check", "function": self.task["function"], "tests": [args for args, _ in tests]}
        reply = await self.child.request(json.dumps(request).encode() + b"\n", timeout=self.check_timeout_s)
        if reply.payload is None:
            await self._restart()
            self._state.interpreter_restarts += 1
            return 0
        try:
            results = msgspec.json.decode(reply.payload, type=_CheckReply).results
        except msgspec.DecodeError:
            return 0
        expected = [json.dumps(want, sort_keys=True) for _, want in tests]
        return sum(got == want for got, want in zip(results, expected, strict=False))

    async def state(self) -> CodeState:
        return self._state
