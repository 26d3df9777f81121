from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Annotated, Any

import anyio
import msgspec

from openenv_ws.env import Action, Observation, SandboxSettings, State, StepResult
from openenv_ws.rubrics import Scoring, check
from openenv_ws.toolbox import ToolError, error_result, tool

from .._lib.child import Capture, ChildProcess, base_environ
from .._lib.process_env import ProcessEnvironment
from .._lib.tasks import load_tasks

SESSION_SCRIPT = str(Path(__file__).with_name("session.sh"))
BASH = ["bash", "--noprofile", "--norc"]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
_WRITE = 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1"'
"""How ``write_file`` writes, as the agent: the directories it needs, then the file from stdin."""
FILE_TOOL_BYTES = 1 << 20
"""What a file tool's process may print (``read_file`` asks for at most ``6 x max_output_chars``)."""
SCRIPT_OUTPUT_BYTES = 65536
"""What a task script's stdout may hold (the expected answer, a ``run`` command's output); the rest is dropped."""
# A task's script and its inputs travel NUL-separated on stdin, read into shell variables before the
# script runs with stdin from /dev/null: never on a command line (/proc/PID/cmdline is readable by
# every uid) nor in the environment (gVisor lets any uid read /proc/PID/environ).
_INPUTS = ("EXPECTED", "OUTPUT")
_LAUNCHER = "".join(f"IFS= read -r -d '' {name}; " for name in ("__openenv_script", *_INPUTS))
_LAUNCHER += 'exec </dev/null; eval "$__openenv_script"'


async def _stop_group(process: anyio.abc.Process) -> None:
    """Kill a helper's whole process group (what it started too) and reap it, even when cancelled."""
    with anyio.CancelScope(shield=True):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        await process.aclose()


class ShellAction(Action):
    command: str
    timeout_s: Seconds | None = None
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


@check
def solved(turn: Any) -> bool:
    """The task's checker script passed after the step (exit status 0)."""
    return turn.observation.solved


class ShellEnvironment(ProcessEnvironment):
    """A persistent bash per episode, in a fresh workspace directory.

    With a task, the task's setup script fills the workspace first, and after every step its
    checker script decides: exit status 0 is solved (reward 1, ``terminated``).

    The shell and the setup (which makes the agent's files) run as the agent; the checker runs as the
    grader, reads the workspace and never runs the agent's files: a task that needs the output of one
    names a ``run`` command, run as the agent before the checker, whose output the checker gets in
    ``$OUTPUT`` (``docs/security.md``).
    Tools: ``run`` (a step's command), ``read_file`` and ``write_file`` (files of the workspace); the
    reward is the rubric ``solved``.
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
    # The agent's code runs as a uid of its own; the tasks (setup and checker scripts) are readable by root only;
    # the agent may run the programs it writes in its workspace.
    sandbox = SandboxSettings(pids=256, tmpfs_exec=True, agent_user="65534:65534", private_files=("tasks.json",))
    rubric = solved
    """Applied when a task is set; without one the reward is 0."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._expected = ""
        self._state = ShellState()
        self.scoring = Scoring(None)

    def _tasks(self) -> dict[str, dict[str, Any]]:
        return load_tasks(__file__)

    def _environ(self, **extra: str) -> dict[str, str]:
        return base_environ(self.workspace.path, **extra)

    async def _script(self, script: str, spawn: dict[str, Any], **inputs: str) -> tuple[int | None, str]:
        """Run a task script in the workspace as ``spawn`` says, with ``$EXPECTED`` and ``$OUTPUT`` set (shell
        variables, not exported); its status (None: timed out) and its stdout (bounded). Whatever it started
        is killed when it ends."""
        values = [f"RANDOM={self.seed or 0}\n{script}", *(inputs.get(name, "") for name in _INPUTS)]
        stdin = b"".join(value.replace("\0", "").encode() + b"\0" for value in values)
        try:
            process = await anyio.open_process(
                [*BASH, "-c", _LAUNCHER],
                cwd=self.workspace.path,
                env=self._environ(),
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                **spawn,
            )
        except OSError:  # e.g. the agent took the workspace away from the grader (chmod 700): not solved
            return None, ""
        assert process.stdin is not None and process.stdout is not None
        out = bytearray()

        async def feed() -> None:
            try:
                await process.stdin.send(stdin)  # type: ignore[union-attr]
                await process.stdin.aclose()  # type: ignore[union-attr]
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass  # the script ended without reading it

        try:
            with anyio.move_on_after(self.check_timeout_s):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(feed)
                    async for chunk in process.stdout:
                        out += chunk[: SCRIPT_OUTPUT_BYTES - len(out)]
                return await process.wait(), out.decode(errors="replace")
            return None, ""
        finally:
            await _stop_group(process)

    async def _prepare(self) -> None:
        self._expected = ""
        if self.task is not None:
            status, expected = await self._script(self.task["setup"], self.confinement.as_agent())
            self._expected = expected.strip()
            if status != 0:
                raise RuntimeError(f"the setup of task {self.task_name!r} failed (status {status})")

    async def _solved(self) -> bool:
        """The task's checker, as the grader, after its ``run`` command (if any) as the agent."""
        assert self.task is not None
        output = ""
        if "run" in self.task:  # as bash's $(...) gives it: NULs dropped, trailing newlines removed
            _, output = await self._script(self.task["run"], self.confinement.as_agent())
            output = output.rstrip("\n")
        status, _ = await self._script(
            self.task["check"], self.confinement.as_grader(), EXPECTED=self._expected, OUTPUT=output
        )
        return status == 0

    async def _spawn(self) -> ChildProcess:
        env = self._environ() if self.seed is None else self._environ(OPENENV_SEED=str(self.seed % 32768))
        argv = [*BASH, SESSION_SCRIPT]
        return await ChildProcess.start(
            argv,
            cwd=self.workspace.path,
            env=env,
            merge_stderr=True,
            max_output_chars=self.max_output_chars,
            user=self.confinement.agent,
        )

    async def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        await self._begin(seed, options)
        path = self.workspace.path
        self._state = ShellState(episode_id=self.episode_id, cwd=path, workspace=path, task=self.task_name)
        prompt = self.task["prompt"] if self.task else ""
        first = ShellObservation(cwd=path, task=self.task_name, prompt=prompt)
        self.scoring = Scoring(self.rubric if self.task is not None else None)
        self.scoring.start(first)
        return StepResult(observation=first)

    async def step(self, action: ShellAction) -> StepResult:
        return await self._conclude(action, await self._run(action))

    @tool
    async def run(self, command: str, timeout_s: Seconds | None = None) -> StepResult[ShellObservation]:
        """Run a command line in the episode's persistent bash shell (stdout and stderr interleaved).

        The working directory, variables and functions persist between calls; commands read no input.

        Args:
            command: The bash command line to run.
            timeout_s: Seconds it may run before it is interrupted (default: the episode's timeout; capped).
        """
        action = ShellAction(command=command, timeout_s=timeout_s)
        return await self._conclude(action, await self._run(action))

    @tool
    async def read_file(self, path: str) -> StepResult[ShellObservation]:
        """Read a text file of the workspace; its text is the result's output (long files keep head and tail).

        Args:
            path: The file, relative to the shell's working directory (or absolute, inside the workspace).
        """
        self._state.step_count += 1
        try:
            text, truncated = await self._read(path)
        except ToolError as exc:
            return self._refused(exc)
        obs = ShellObservation(output=text, exit_code=0, output_truncated=truncated)
        return await self._conclude({"read_file": path}, obs)

    @tool
    async def write_file(self, path: str, content: str) -> StepResult[ShellObservation]:
        """Write a text file in the workspace (replacing it; missing directories are made).

        Args:
            path: The file, relative to the shell's working directory (or absolute, inside the workspace).
            content: The file's whole new text.
        """
        self._state.step_count += 1
        data = content.encode()
        try:
            self._inside(path)
            await self._as_agent(["bash", "-c", _WRITE, "write_file", path], data, f"cannot write {path}")
        except ToolError as exc:
            return self._refused(exc)
        obs = ShellObservation(output=f"wrote {len(data)} bytes to {path}\n", exit_code=0)
        return await self._conclude({"write_file": path}, obs)

    async def _run(self, action: ShellAction) -> ShellObservation:
        """Run one command line; the observation before the task's checker has looked."""
        self._state.step_count += 1
        request = action.command.replace("\0", "").encode() + b"\0"
        reply = await self.child.request(request, timeout=self._timeout(action.timeout_s), on_output=self._stream)
        output = reply.outputs["output"]
        obs = ShellObservation(
            output=output.text(),
            timed_out=reply.interrupted,
            output_truncated=output.truncated,
            duration_s=round(reply.duration_s, 6),
        )
        if reply.payload is not None:
            code, _, cwd = reply.payload.decode(errors="replace").partition(" ")
            obs.exit_code = int(code) if code.isdigit() else None  # not a number: printed by the command itself
            self._state.cwd = cwd
        else:  # `exit`, or killed past its deadline: a new shell in the workspace
            obs.exit_code = None if reply.interrupted else reply.returncode
            obs.shell_restarted = True
            self._state.shell_restarts += 1
            self._state.cwd = self.workspace.path
            await self._restart()
        return obs

    async def _conclude(self, action: Any, obs: ShellObservation) -> StepResult:
        """After any step: the task's checker decides whether it is solved; the rubric rewards it."""
        obs.cwd, obs.task = self._state.cwd, self.task_name
        if self.task is not None:
            obs.solved = self._state.solved = await self._solved()
        result = StepResult(
            observation=obs, reward=0.0, terminated=obs.solved, truncated=self._truncated(self._state.step_count)
        )
        return await self.scoring.score(action, result)

    def _refused(self, exc: ToolError) -> StepResult:
        """A file tool's failure, as a result the model reads; it still counts towards ``max_steps``."""
        return error_result(str(exc), truncated=self._truncated(self._state.step_count))

    def _inside(self, path: str) -> None:
        """Refuse a path that leads out of the workspace (resolved against the shell's directory).

        A courtesy to the model, not a boundary: the files are read and written by processes that
        run as the agent (:meth:`_as_agent`), which reach what the agent's own shell does, no more.
        """
        root = os.path.realpath(self.workspace.path)
        target = os.path.realpath(os.path.join(self._state.cwd or root, path))
        if target != root and not target.startswith(root + os.sep):
            raise ToolError(f"{path}: outside the workspace")

    async def _read(self, path: str) -> tuple[str, bool]:
        """The file's text; past ``4 x max_output_chars`` bytes, its head and its tail."""
        self._inside(path)
        limit = self.max_output_chars
        failed = f"cannot read {path}"
        head = await self._as_agent(["head", "-c", str(4 * limit + 1), "--", path], b"", failed)
        tail = b""
        if len(head) > 4 * limit:  # longer: keep its end too
            head = head[: 4 * limit]
            tail = await self._as_agent(["tail", "-c", str(2 * limit), "--", path], b"", failed)
        capture = Capture(limit)
        capture.add(head.decode(errors="replace"))
        if tail:
            capture.add("\n... \n" + tail.decode(errors="replace"))
        return capture.text(), capture.truncated or bool(tail)

    async def _as_agent(self, argv: list[str], data: bytes, failed: str) -> bytes:
        """Run a short file command as the agent, in the shell's directory: its stdout, or a
        :class:`ToolError` saying why it failed (the last line of its stderr) or that it hung."""
        process = await anyio.open_process(
            argv,
            cwd=self._state.cwd or self.workspace.path,
            env=self._environ(),
            start_new_session=True,
            **self.confinement.as_agent(),
        )
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        out, err = bytearray(), bytearray()

        async def feed() -> None:
            try:
                await process.stdin.send(data)  # type: ignore[union-attr]
                await process.stdin.aclose()  # type: ignore[union-attr]
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass  # it ended without reading it

        async def drain(stream: Any, into: bytearray) -> None:
            async for chunk in stream:
                into += chunk[: FILE_TOOL_BYTES - len(into)]

        try:
            with anyio.move_on_after(self.timeout_s):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(feed)
                    tg.start_soon(drain, process.stderr, err)
                    await drain(process.stdout, out)
                status = await process.wait()
                if status != 0:
                    lines = err.decode(errors="replace").strip().splitlines()
                    raise ToolError(f"{failed}: {lines[-1].rpartition(': ')[2] if lines else f'status {status}'}")
                return bytes(out)
            raise ToolError(f"{failed}: no answer within {self.timeout_s:g}s")
        finally:
            await _stop_group(process)

    async def state(self) -> ShellState:
        return self._state
