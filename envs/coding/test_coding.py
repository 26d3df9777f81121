"""The coding environment on its own, without a server (its interpreter is a real child process)."""

from __future__ import annotations

import anyio
import pytest

from openenv_ws.errors import ValidationError
from openenv_ws.toolbox import call_tool
from openenv_ws_envs._lib.child import ChildProcess, running
from openenv_ws_envs.coding import CodeAction, CodingEnvironment


@pytest.fixture
async def env(start_env):
    return await start_env(CodingEnvironment(timeout_s=5), seed=7)


async def run(env: CodingEnvironment, code: str, **kw):
    return (await env.step(CodeAction(code=code, **kw))).observation


async def test_the_namespace_persists_across_steps_and_values_come_back(env):
    obs = await run(env, "def double(x):\n    return 2 * x\nprint('defined')")
    assert obs.status == "ok" and obs.stdout == "defined\n" and obs.value is None
    obs = await run(env, "double(21)")
    assert obs.value == "42" and obs.stdout == "" and obs.exception is None
    assert env.events == [{"stream": "stdout", "text": "defined\n"}]


async def test_exceptions_are_reported_and_the_interpreter_goes_on(env):
    obs = await run(env, "x = 5\n1 / 0")
    assert obs.status == "error" and obs.exception == "ZeroDivisionError: division by zero"
    assert 'File "<cell-1>", line 2' in obs.stderr and "driver.py" not in obs.stderr
    obs = await run(env, "raise SystemExit(3)")
    assert obs.status == "error" and obs.exception == "SystemExit: 3"
    assert (await run(env, "x")).value == "5"
    assert (await run(env, "def broken(:")).exception.startswith("SyntaxError")


async def test_output_is_streamed_while_the_code_runs(env):
    code = "import sys, time\nfor i in range(3):\n    print(i)\n    time.sleep(0.05)\nprint('oops', file=sys.stderr)"
    obs = await run(env, code)
    assert obs.stdout == "0\n1\n2\n" and obs.stderr == "oops\n"
    assert env.events == [{"stream": "stdout", "text": f"{i}\n"} for i in range(3)] + [
        {"stream": "stderr", "text": "oops\n"}
    ]


async def test_a_cell_past_its_timeout_is_interrupted_and_the_state_survives(env):
    await run(env, "kept = 'yes'")
    obs = await run(env, "while True:\n    pass", timeout_s=0.3)
    assert obs.status == "timeout" and not obs.interpreter_restarted and 0.3 <= obs.duration_s < 2
    assert (await run(env, "kept")).value == "'yes'"


async def test_an_uninterruptible_cell_costs_the_interpreter(env, monkeypatch):
    monkeypatch.setattr(ChildProcess, "grace_s", 0.1)
    stubborn = (
        "import time\n"
        "def stubborn():\n"
        "    while True:\n"
        "        try:\n"
        "            time.sleep(1)\n"
        "        except KeyboardInterrupt:\n"
        "            pass"
    )
    await run(env, f"kept = 1\n{stubborn}")
    obs = await run(env, "stubborn()", timeout_s=0.3)
    assert obs.status == "timeout" and obs.interpreter_restarted and obs.exit_code == -9
    obs = await run(env, "kept")
    assert obs.status == "error" and obs.exception.startswith("NameError")
    assert (await env.state()).interpreter_restarts == 1


async def test_a_dying_interpreter_is_reported_and_replaced(env):
    obs = await run(env, "import os\nos._exit(3)")
    assert obs.status == "crashed" and obs.exit_code == 3 and obs.interpreter_restarted
    assert (await run(env, "1 + 1")).value == "2"


async def test_the_seed_fixes_random_and_hash(start_env):
    values = []
    for _ in range(2):
        env = await start_env(CodingEnvironment(), seed=11)
        values.append(await run(env, "import random\n(random.random(), hash('abc'))"))
    assert values[0].value == values[1].value and values[0].value is not None


async def test_output_past_the_limit_keeps_head_and_tail(start_env):
    env = await start_env(CodingEnvironment(max_output_chars=1000))
    obs = await run(env, "print('start'); print('x' * 100000); print('end')")
    assert obs.output_truncated and len(obs.stdout) < 1100
    assert obs.stdout.startswith("start\n") and obs.stdout.endswith("end\n")


async def test_the_interpreter_sees_its_workspace_not_the_servers_environment(env, monkeypatch):
    obs = await run(env, "import os\n(os.getcwd(), sorted(k for k in os.environ if 'OPENENV' in k or 'PYTEST' in k))")
    assert obs.value == repr((env.workspace.path, []))


async def test_close_ends_the_interpreter(env):
    pid = int((await run(env, "import os\nos.getpid()")).value)
    await env.close()
    with anyio.fail_after(5):
        while running(pid):
            await anyio.sleep(0.02)


async def test_a_task_rewards_the_fraction_of_hidden_tests_passed():
    env = CodingEnvironment(task="fizzbuzz")
    first = (await env.reset()).observation
    assert first.task == "fizzbuzz" and "fizzbuzz(n)" in first.prompt and first.tests_total == 5
    # Only right for numbers below 3: passes the n=0 and n=1 tests.
    r = await env.step(CodeAction(code="def fizzbuzz(n):\n    return [str(i) for i in range(1, n + 1)]"))
    assert r.observation.tests_passed == 2 and r.reward == pytest.approx(0.4) and not r.terminated
    assert r.info == {"scores": {"tests_passed": pytest.approx(0.4)}}  # the rubric's component
    # An object equal to everything does not fool the tests: results are compared as JSON.
    r = await env.step(CodeAction(code="class Any:\n    __eq__ = lambda s, o: True\nfizzbuzz = lambda n: Any()"))
    assert r.reward == 0.0
    solution = (
        "def fizzbuzz(n):\n"
        "    return ['FizzBuzz' if i % 15 == 0 else 'Fizz' if i % 3 == 0 else 'Buzz' if i % 5 == 0 else str(i)"
        " for i in range(1, n + 1)]"
    )
    r = await env.step(CodeAction(code=solution))
    await env.close()
    assert r.reward == 1.0 and r.terminated and r.observation.tests_passed == 5


async def test_tasks_are_chosen_by_name_or_seed_and_bad_options_fail_early():
    env = CodingEnvironment()
    picked = [(await env.reset(seed=3, options={"task": "random"})).observation.task for _ in range(2)]
    await env.close()
    assert picked[0] == picked[1] and picked[0] is not None
    with pytest.raises(ValidationError, match="unknown task"):
        CodingEnvironment(task="nope")
    with pytest.raises(ValidationError, match="timeout_s"):
        CodingEnvironment(timeout_s=0)


async def test_the_tools_run_cells_and_submit_ends_the_episode():
    env = CodingEnvironment(task="fizzbuzz")
    await env.reset()
    code = "def fizzbuzz(n):\n    return [str(i) for i in range(1, n + 1)]\nprint('ok')"
    r = await call_tool(env, "run_python", {"code": code, "timeout_s": 5})
    assert r.observation.stdout == "ok\n" and r.reward == pytest.approx(0.4) and not r.terminated
    with pytest.raises(ValidationError) as bad:
        await call_tool(env, "run_python", {"code": "1", "timeout_s": 0})
    assert bad.value.path == "$.arguments.timeout_s"
    r = await call_tool(env, "submit", {})
    await env.close()
    assert r.terminated and r.reward == pytest.approx(0.4) and r.observation.tests_passed == 2
    assert (await env.state()).step_count == 2


async def test_without_a_task_there_is_nothing_to_submit(env):
    r = await call_tool(env, "submit", {"code": "x = 1"})
    assert r.info["tool_error"].startswith("this episode has no task") and not r.done and r.reward is None
    r = await call_tool(env, "run_python", {"code": "1 + 1"})
    assert r.observation.value == "2" and r.reward == 0.0 and r.info == {}
