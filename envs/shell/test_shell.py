"""The shell environment on its own, without a server (its bash is a real child process)."""

from __future__ import annotations

import anyio
import pytest

from openenv_ws.errors import ValidationError
from openenv_ws.toolbox import call_tool
from openenv_ws_envs._lib.child import ChildProcess, running
from openenv_ws_envs.shell import ShellAction, ShellEnvironment

# A command that solves each shipped task, checked against the task's own checker.
SOLUTIONS = {
    "count_errors": "grep -c ERROR logs/app.log > answer.txt",
    "largest_file": "ls -S files | head -n 1 > answer.txt",
    "rename_ext": 'cd photos && for f in *.jpeg; do mv "$f" "${f%.jpeg}.jpg"; done',
    "hello_script": "printf '#!/bin/sh\\necho \"Hello, world!\"\\n' > hello.sh && chmod +x hello.sh",
    "csv_total": "awk -F, '$2 == \"north\" {s += $3} END {print s}' sales.csv > answer.txt",
}


@pytest.fixture
async def env(start_env):
    return await start_env(ShellEnvironment(timeout_s=5), seed=5)


async def run(env: ShellEnvironment, command: str, **kw):
    return (await env.step(ShellAction(command=command, **kw))).observation


async def test_files_variables_functions_and_cwd_persist(env):
    obs = await run(env, "mkdir -p sub && cd sub && export GREETING=hi && LOCAL=there && f() { echo in-f; }")
    assert obs.exit_code == 0 and obs.cwd == f"{env.workspace.path}/sub" and obs.output == ""
    obs = await run(env, "echo $GREETING $LOCAL; f; pwd; sh -c 'echo $GREETING'; false")
    assert obs.output == f"hi there\nin-f\n{env.workspace.path}/sub\nhi\n" and obs.exit_code == 1


async def test_stderr_is_interleaved_and_output_streamed(env):
    obs = await run(env, "echo out; echo err >&2; for i in 1 2; do sleep 0.05; echo $i; done")
    assert obs.output == "out\nerr\n1\n2\n"
    assert "".join(e["text"] for e in env.events) == obs.output
    assert {e["stream"] for e in env.events} == {"output"} and len(env.events) >= 2


async def test_commands_read_no_input_and_quoting_errors_are_reported(env):
    assert (await run(env, "cat; echo done")).output == "done\n"
    obs = await run(env, "echo 'unbalanced")
    assert obs.exit_code == 2 and "unexpected EOF" in obs.output
    assert (await run(env, "echo fine")).output == "fine\n"


@pytest.mark.parametrize("command", ["sleep 30; echo not-reached", "while true; do :; done"])
async def test_a_hanging_command_is_interrupted_and_the_shell_kept(env, command):
    await run(env, "KEPT=yes")
    obs = await run(env, command, timeout_s=0.3)
    assert obs.timed_out and obs.exit_code == 130 and not obs.shell_restarted and obs.output == ""
    assert obs.duration_s < 2
    assert (await run(env, "echo $KEPT")).output == "yes\n"


async def test_a_command_that_ignores_the_interrupt_is_killed_and_the_shell_kept(env, monkeypatch):
    monkeypatch.setattr(ChildProcess, "grace_s", 0.1)
    await run(env, "KEPT=yes")
    obs = await run(env, "bash -c \"trap '' INT; sleep 30\"", timeout_s=0.3)
    assert obs.timed_out and obs.exit_code in (130, 137) and not obs.shell_restarted
    assert (await run(env, "echo $KEPT")).output == "yes\n"


async def test_exit_starts_a_new_shell_in_the_same_workspace(env):
    await run(env, "echo data > kept.txt; cd /; X=1")
    obs = await run(env, "exit 3")
    assert obs.shell_restarted and obs.exit_code == 3 and obs.cwd == env.workspace.path
    obs = await run(env, "cat kept.txt; echo ${X:-unset}")
    assert obs.output == "data\nunset\n" and (await env.state()).shell_restarts == 1


async def test_background_jobs_survive_commands_and_die_with_the_episode(env):
    pid = int((await run(env, "sleep 30 & echo $!")).output)
    assert (await run(env, f"kill -0 {pid} && echo alive")).output == "alive\n"
    await env.close()
    with anyio.fail_after(5):
        while running(pid):
            await anyio.sleep(0.02)


async def test_the_seed_fixes_random(start_env):
    outputs = []
    for _ in range(2):
        env = await start_env(ShellEnvironment(), seed=42)
        outputs.append((await run(env, "echo $RANDOM $RANDOM")).output)
    assert outputs[0] == outputs[1] and outputs[0].strip()


async def test_output_past_the_limit_keeps_head_and_tail(start_env):
    env = await start_env(ShellEnvironment(max_output_chars=1000))
    obs = await run(env, "echo start; seq 1 100000; echo end")
    assert obs.output_truncated and len(obs.output) < 1100
    assert obs.output.startswith("start\n1\n") and obs.output.endswith("100000\nend\n")


@pytest.mark.parametrize("task", sorted(SOLUTIONS))
async def test_every_task_is_solved_by_its_reference_solution(task):
    env = ShellEnvironment()
    first = (await env.reset(seed=1, options={"task": task})).observation
    assert first.task == task and first.prompt
    wrong = await env.step(ShellAction(command="echo 0 > answer.txt"))
    assert wrong.reward == 0.0 and not wrong.terminated and not wrong.observation.solved
    right = await env.step(ShellAction(command=SOLUTIONS[task]))
    await env.close()
    assert right.reward == 1.0 and right.terminated and right.observation.solved, right.observation.output


async def test_the_checker_uses_the_setups_answer_not_the_files():
    env = ShellEnvironment(task="count_errors")
    await env.reset(seed=2)
    r = await env.step(ShellAction(command="echo ERROR > logs/app.log; echo 1 > answer.txt"))
    await env.close()
    assert r.reward == 0.0


async def test_bad_options_fail_early():
    with pytest.raises(ValidationError, match="unknown task"):
        ShellEnvironment(task="nope")
    env = ShellEnvironment()
    with pytest.raises(ValidationError, match="unknown reset options"):
        await env.reset(options={"tsak": "count_errors"})


async def test_the_tools_run_commands_and_read_and_write_files(env):
    r = await call_tool(env, "run", {"command": "mkdir sub && cd sub && echo hi > a.txt"})
    assert r.observation.exit_code == 0 and r.observation.cwd == f"{env.workspace.path}/sub"
    assert (await call_tool(env, "read_file", {"path": "a.txt"})).observation.output == "hi\n"  # from the shell's cwd
    r = await call_tool(env, "write_file", {"path": "deep/b.txt", "content": "x y"})
    assert r.observation.output == "wrote 3 bytes to deep/b.txt\n" and r.observation.exit_code == 0
    assert (await run(env, "cat deep/b.txt")).output == "x y"
    missing = await call_tool(env, "read_file", {"path": "nope.txt"})
    assert missing.observation["error"].startswith("cannot read") and "No such file" in missing.info["tool_error"]
    await run(env, "ln -s /etc etc-link")
    for path in ("/etc/hostname", "../../etc/hostname", "etc-link/hostname"):
        refused = await call_tool(env, "read_file", {"path": path})
        assert "outside the workspace" in refused.info["tool_error"], path
    assert "outside" in (await call_tool(env, "write_file", {"path": "/tmp/x", "content": ""})).info["tool_error"]
    assert (await env.state()).step_count == 10


async def test_a_long_file_keeps_its_head_and_tail(start_env):
    env = await start_env(ShellEnvironment(max_output_chars=1000))
    await run(env, "seq 1 100000 > big.txt")
    r = await call_tool(env, "read_file", {"path": "big.txt"})
    assert r.observation.output_truncated and len(r.observation.output) < 1100
    assert r.observation.output.startswith("1\n2\n") and r.observation.output.endswith("99999\n100000\n")


async def test_a_task_solved_by_writing_a_file_through_a_tool():
    env = ShellEnvironment(task="count_errors")
    await env.reset(seed=4)
    count = (await call_tool(env, "run", {"command": "grep -c ERROR logs/app.log"})).observation.output.strip()
    r = await call_tool(env, "write_file", {"path": "answer.txt", "content": count})
    await env.close()
    assert r.observation.solved and r.terminated and r.reward == 1.0 and r.info == {"scores": {"solved": 1.0}}
