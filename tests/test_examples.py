"""The worked examples in examples/ run, against a live server, and do what their docstrings say."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from .conftest import ROOT


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tool_calling_example_runs(start_server):
    server = start_server("coding", "--sandbox", "subprocess")
    cmd = [sys.executable, "examples/tool_calling.py", "--url", server.url]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "episode ended: reward 1.0 after 4 tool calls"
    assert "the arguments are not JSON" in done.stdout and "unknown field `source`" in done.stdout


async def test_tool_calls_go_in_as_steps_and_come_back_as_tool_messages(start_server):
    server = start_server("coding", "--sandbox", "inprocess")
    example = load("tool_calling")
    model = example.ScriptedModel()
    outcome = await example.run_episode(server.url, model)
    assert outcome["done"] and outcome["reward"] == 1.0
    tools = model.requests[0]["tools"]
    assert [t["function"]["name"] for t in tools] == ["run_python", "submit"]
    assert tools[0]["function"]["parameters"]["required"] == ["code"]
    answers = [m for m in outcome["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in answers] == ["call_1", "call_2", "call_3", "call_4"]
    assert '"tests_passed":2' in answers[0]["content"] and answers[1]["content"].startswith("error: the arguments")
    assert "(at $.arguments)" in answers[2]["content"] and '"tests_passed":5' in answers[3]["content"]
    # What the model saw before its last call: every earlier call answered, in order.
    assert [m["role"] for m in model.requests[-1]["messages"]][-2:] == ["assistant", "tool"]
