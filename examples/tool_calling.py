"""A tool-calling agent loop on openenv-ws, in the shape of OpenAI's chat API, with a scripted model.

The environment's tools become the ``tools`` of a chat request. Each entry of the ``tool_calls``
the model answers with becomes one step, ``{"tool": name, "arguments": {...}}``. Each result goes
back to the model as a ``{"role": "tool", "tool_call_id": ..., "content": ...}`` message. Errors go
back the same way (arguments that are not JSON, arguments the tool's schema refuses, a tool's own
error), so the model can read them and try again. The reward comes from the environment's rubric.

No model is called: ``ScriptedModel`` answers with the next message of a script. Any chat client
that takes ``messages`` and ``tools`` and returns an assistant message can replace it.

    python examples/tool_calling.py                            # serves the coding env in this process
    python examples/tool_calling.py --url ws://127.0.0.1:8000  # a server running `openenv-ws serve coding`
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import anyio

from openenv_ws import ValidationError, connect
from openenv_ws.toolbox import result_text

WRONG = "def fizzbuzz(n):\n    return [str(i) for i in range(1, n + 1)]"
RIGHT = (
    "def fizzbuzz(n):\n"
    "    return ['FizzBuzz' if i % 15 == 0 else 'Fizz' if i % 3 == 0 else 'Buzz' if i % 5 == 0 else str(i)\n"
    "            for i in range(1, n + 1)]"
)


def openai_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The environment's tools (``EnvSession.tools``) as the ``tools`` of an OpenAI chat request."""
    return [
        {
            "type": "function",
            "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]},
        }
        for t in tools
    ]


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


class ScriptedModel:
    """Stands in for a chat model: a first try that fails some tests, arguments that are not JSON,
    arguments the schema refuses, then the right answer, submitted."""

    def __init__(self) -> None:
        self.script = [
            [tool_call("call_1", "run_python", json.dumps({"code": WRONG}))],
            [tool_call("call_2", "run_python", '{"code": "print(fizzbuzz(15))"')],  # cut short: not JSON
            [tool_call("call_3", "run_python", json.dumps({"source": RIGHT}))],  # the wrong argument name
            [tool_call("call_4", "submit", json.dumps({"code": RIGHT}))],
        ]
        self.requests: list[dict[str, Any]] = []

    async def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
        self.requests.append({"messages": list(messages), "tools": tools})
        if not self.script:
            return {"role": "assistant", "content": "I am done."}
        return {"role": "assistant", "content": None, "tool_calls": self.script.pop(0)}


async def run_episode(url: str, model: Any, *, task: str = "fizzbuzz", max_turns: int = 10) -> dict[str, Any]:
    """One episode: the model calls tools until the episode ends, it stops calling, or ``max_turns`` pass."""
    async with connect(url, "coding", options={"task": task}) as env:
        first = await env.reset(seed=0)
        tools = openai_tools(env.tools)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": "Solve the task with the tools. Submit when the tests pass."},
            {"role": "user", "content": first.observation["prompt"]},
        ]
        reward, done, calls = 0.0, False, 0
        for _ in range(max_turns):
            reply = await model.complete(messages, tools)
            messages.append(reply)
            for call in reply.get("tool_calls") or []:
                calls += 1
                content, result = await call_tool(env, call)
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})
                print(f"{call['function']['name']:>10} -> {content[:100]!r}")
                if result is not None:
                    reward, done = result.reward or 0.0, result.done
                    print(f"{'':>10}    reward {reward:.2f}, scores {result.info.get('scores', {})}")
            if done or not reply.get("tool_calls"):
                break
    return {"reward": reward, "done": done, "tool_calls": calls, "messages": messages}


async def call_tool(env: Any, call: dict[str, Any]) -> tuple[str, Any]:
    """One OpenAI tool call as a step; what goes back to the model, and the step's result (None if refused)."""
    function = call["function"]
    try:
        arguments = json.loads(function["arguments"] or "{}")
    except json.JSONDecodeError as exc:
        return f"error: the arguments are not JSON ({exc})", None
    try:
        result = await env.step({"tool": function["name"], "arguments": arguments})
    except ValidationError as exc:  # refused before it ran: nothing happened in the episode
        return f"error: {exc.message} (at {exc.path})", None
    return result_text(result.observation), result  # a tool's own error is a result too: {"error": ...}


async def main(url: str | None) -> dict[str, Any]:
    if url is not None:
        return await run_episode(url, ScriptedModel())
    from openenv_ws.server.local import local_server

    async with local_server(["coding"]) as local:
        return await run_episode(local, ScriptedModel())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a server that serves the coding env (default: one in this process)")
    outcome = anyio.run(main, parser.parse_args().url)
    ended = "ended" if outcome["done"] else "stopped"
    print(f"episode {ended}: reward {outcome['reward']} after {outcome['tool_calls']} tool calls")
